"""Mail that tells you what happened (issue 10, item 7; docs/protocol.md,
"Notices"), through real servers and read as a POP3 user reads it (poplib
RETR): a delivery status notification in the sender's mailbox when
recipients fail for good, one per failure batch; a notice of envelopes
waiting for a decision; and no notice ever about a notice."""

from __future__ import annotations

import poplib
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

from tests.integration.faults import NXDOMAIN, StandInDns
from tests.integration.harness import Server, free_ports, make_pair, running, wait_until

ALICE, BOB = "alice@a.example", "bob@b.example"
NOBODY, NOONE = "nobody@b.example", "noone@b.example"


def submit(server: Server, rcpts: list[str], subject: str = "lunch") -> str:
    c = server.client(ALICE)
    try:
        reply = c.submit(rcpts, f"Subject: {subject}\r\n\r\nAt noon?\r\n".encode())
    finally:
        c.quit()
    return reply.split()[2]  # "queued as <msgid> ..."


def states(server: Server, msgid: str) -> dict[str, str]:
    return {row[1]: row[2] for row in server.sent(ALICE, msgid)}


def mailbox(server: Server, user: str) -> list[EmailMessage]:
    """Every message in the user's mailbox, as POP3 RETR gives it."""
    pop = poplib.POP3("127.0.0.1", server.user_port, timeout=10)
    try:
        pop.user(user)
        pop.pass_("secret")
        count, _size = pop.stat()
        out = []
        for n in range(1, count + 1):
            _resp, lines, _octets = pop.retr(n)
            msg = message_from_bytes(b"\r\n".join(lines) + b"\r\n", policy=default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out
    finally:
        pop.quit()


def failed_in(report: EmailMessage) -> dict[str, tuple[str, str | None]]:
    """recipient -> (Status, Diagnostic-Code) of a DSN."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    _text, status, _header = report.get_payload()
    blocks = status.get_payload()
    assert blocks[0]["Reporting-MTA"] == "dns; smdp.a.example"
    return {b["Final-Recipient"].removeprefix("rfc822; "): (b["Status"], b["Diagnostic-Code"])
            for b in blocks[1:]}


def test_unknown_users_at_the_peer_give_one_report_naming_each(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        one = submit(a, [NOBODY])
        two = submit(a, [NOBODY, NOONE, BOB], subject="both")
        wait_until(lambda: states(a, one) == {NOBODY: "failed"}, what="nobody fails")
        wait_until(lambda: states(a, two) == {NOBODY: "failed", NOONE: "failed",
                                              BOB: "envelope-sent"}, what="two fail")
        # By subject: the origin's concurrent peer sessions do not fix which
        # message's recipients fail first, hence the order of the reports.
        reports = {str(m["Subject"]): m for m in mailbox(a, ALICE)}
        assert sorted(reports) == ["Undelivered mail: both", "Undelivered mail: lunch"]
        first, second = reports["Undelivered mail: lunch"], reports["Undelivered mail: both"]
        # The sender's reports carry the null sender: ENVS ALL spells it <>.
        assert [row[2] for row in a.envelopes(ALICE, all=True)] == ["<>", "<>"]
        assert a.queue() == []  # nothing of them goes anywhere
    assert first["Subject"] == "Undelivered mail: lunch"
    assert first["From"] == "Mail Delivery System <MAILER-DAEMON@smdp.a.example>"
    assert first["To"] == ALICE
    assert failed_in(first) == {
        NOBODY: ("5.1.1", f"smtp; 550 5.1.1 <{NOBODY}>: no such user here")}
    assert second["Subject"] == "Undelivered mail: both"
    assert failed_in(second) == {
        NOBODY: ("5.1.1", f"smtp; 550 5.1.1 <{NOBODY}>: no such user here"),
        NOONE: ("5.1.1", f"smtp; 550 5.1.1 <{NOONE}>: no such user here")}
    assert "Subject: both" in second.get_payload()[2].get_content()


def test_a_domain_without_an_smdp_server_is_reported(tmp_path: Path) -> None:
    with StandInDns() as dns:
        dns.answers = {"b.example": NXDOMAIN}
        peer_port, user_port = free_ports(2)
        a = Server("a.example", "smdp.a.example", tmp_path, peer_port, user_port,
                   extra=dns.config)
        a.write_config()
        a.add_user(ALICE)
        with running(a):
            msgid = submit(a, [BOB])
            wait_until(lambda: states(a, msgid) == {BOB: "failed"}, what="bob fails")
            [report] = mailbox(a, ALICE)
    assert failed_in(report) == {BOB: ("5.1.2", None)}
    assert "no SMDP server for b.example" in report.get_payload()[0].get_content()


def test_a_recipient_that_expires_is_reported(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.delivery = "expire_days = 0.00002\nhousekeeping_interval = 0.2"  # 1.7 s
    a.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        msgid = submit(a, [BOB])
        wait_until(lambda: states(a, msgid) == {BOB: "expired"}, what="bob's copy expires")
        [report] = mailbox(a, ALICE)
    assert failed_in(report) == {BOB: ("5.4.7", None)}


def test_pending_envelopes_get_one_notice(tmp_path: Path) -> None:
    """A recipient who reads by POP3 learns of the envelope from a notice;
    the notice is not itself pending, so it never gets a notice."""
    a, b = make_pair(tmp_path, extra_b="[notices]\npending_interval = 3600\n")
    b.delivery = "housekeeping_interval = 0.2"
    b.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        submit(a, [BOB])
        wait_until(lambda: len(b.envelopes(BOB)) == 1, what="the envelope at b.example")
        [[entry, *_]] = b.envelopes(BOB)
        wait_until(lambda: len(mailbox(b, BOB)) == 1, what="the notice")
        [notice] = mailbox(b, BOB)
        assert [row[1] for row in b.envelopes(BOB, all=True)] == ["pending", "accepted"]
    assert notice["Subject"] == "1 envelope waits for your decision"
    text = notice.get_content().replace("\r\n", "\n")
    assert (f"  Envelope {entry}  (new)\n    From:    {ALICE}\n    Subject: lunch\n"
            "    | At noon?\n") in text
    assert f"For example: smdp client --user {BOB} accept {entry}\n" in text
