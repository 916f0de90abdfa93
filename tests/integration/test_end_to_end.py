"""Two real SMDP servers (a.example, b.example), separate stores, on loopback:
section 5.2 end to end, every option of Table 1, Table 3 on both sides,
several recipients (assumption 5), reject after accept, quality.
"""

from __future__ import annotations

import poplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from tests.integration.harness import Server, make_pair, running, wait_until

# Section 5.3 alone, as before issue 16 item 1: counters that never age, no
# rejecting users needed, no hysteresis, no probation (docs/protocol.md 11.3).
PAPER_QUALITY = ("[quality]\nhalf_life = \"never\"\nmin_deciders = 0\nmargin = 0\n"
                 "probation_per_day = 0\n")

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@b.example"


def message(subject: str, body: str = "Hello Bob,\r\nsee you at noon.\r\n") -> bytes:
    return (f"To: {BOB}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


@pytest.fixture
def pair(backend: str, tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    # Every test below runs on each backend (in the default pass, see
    # conftest.py): same servers, same SQL checks, the backend in the test id.
    a, b = make_pair(tmp_path)
    assert (a.backend, b.backend) == (backend, backend)
    a.add_user(ALICE, identities=("sales@a.example",))
    b.add_user(BOB)
    b.add_user(CAROL)
    with running(a, b):
        yield a, b


def send(a: Server, to: list[str], msg: bytes, identity: str | None = None) -> str:
    c = a.client(ALICE)
    try:
        return c.submit(to, msg, identity)
    finally:
        c.quit()


def msgid_of(reply: str) -> str:
    return reply.split("queued as ")[1].split()[0]


def envelopes(b: Server, user: str = BOB) -> list[list[str]]:
    return b.envelopes(user, all=True)


def decide(b: Server, entry: str, option: str, user: str = BOB) -> str:
    c = b.client(user)
    try:
        return c.call(wire.UserDecision(wire.DECISIONS_BY_VERB[option], int(entry))).text
    finally:
        c.quit()


def sent_states(a: Server, msgid: str) -> dict[str, str]:
    return {row[1]: row[2] for row in a.sent(ALICE, msgid)}


def held(a: Server, msgid: str) -> bool:
    # no command shows this: whether the origin still holds the message body
    return a.query("SELECT has_body FROM out_messages WHERE msgid=?", (msgid,))[0][0] == 1


def list_entries(s: Server, *users: str) -> list[tuple[str, ...]]:
    """LISTS of ``users``, without when and how: (list-name, address[, server])."""
    return [tuple(row[:-2]) for user in users for row in s.lists(user)]


def entry_of(b: Server, subject: str, user: str = BOB) -> str:
    """The ENVS ALL number of ``user``'s one entry with ``subject``."""
    [entry] = [env[0] for env in envelopes(b, user) if env[5] == subject]
    return entry


def reasons(b: Server, *users: str) -> dict[str, str]:
    """Recipient -> Reason, from ENV of each entry ENVS ALL lists for ``users``."""
    shown = [b.envelope(user, env[0]) for user in users for env in envelopes(b, user)]
    return {env["Recipient"]: env["Reason"] for env in shown}


def wait_envelope(b: Server, user: str = BOB, n: int = 1) -> list[list[str]]:
    return wait_until(lambda: (e := envelopes(b, user)) and len(e) >= n and e, what="envelope")


def test_section_5_2_accept_pulls_the_message(pair: tuple[Server, Server]) -> None:
    a, b = pair
    reply = send(a, [BOB], message("Lunch?"))
    msgid = msgid_of(reply)
    # Step 4: only the envelope travels; the origin holds the message.
    [env] = wait_envelope(b)
    entry, state, sender, _size, attachments, subject = env
    assert (state, sender, attachments, subject) == ("pending", ALICE, "0", "Lunch?")
    wait_until(lambda: sent_states(a, msgid) == {BOB: "envelope-sent"}, what="envelope sent")
    assert held(a, msgid)
    # no command shows this: that the destination holds no body yet
    assert b.query("SELECT COUNT(*) FROM in_envelopes WHERE has_body = 1") == [(0,)]
    c = b.client(BOB)
    shown = c.call(wire.EnvShow(int(entry))).lines or []
    assert "Headline: Hello Bob," in shown and "Server: smdp.a.example" in shown
    assert c.call(wire.Stat()).text.startswith("0 ")
    c.quit()
    # Steps 6-7: accept; SMDP_B pulls the whole message from SMDP_A.
    assert "accepted" in decide(b, entry, "ACCEPT")
    wait_until(lambda: sent_states(a, msgid) == {BOB: "delivered"}, what="delivery")
    c = b.client(BOB)
    body = c.call(wire.Retr(1)).body or b""
    c.quit()
    assert b"Subject: Lunch?" in body and b"From: alice@a.example" in body
    assert b"see you at noon." in body
    # Every recipient decided: the origin deletes the message.
    wait_until(lambda: not held(a, msgid), what="origin drops the body")


def test_poplib_reads_accepted_mail(pair: tuple[Server, Server]) -> None:
    a, b = pair
    send(a, [BOB], message("For POP3", "Line one\r\n.starts with a dot\r\n"))
    [env] = wait_envelope(b)
    decide(b, env[0], "ACCEPT")
    wait_until(lambda: [e[1] for e in envelopes(b, BOB) + envelopes(b, CAROL)] == ["accepted"],
               what="pull")
    pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
    try:
        pop.user(BOB)
        pop.pass_("secret")
        count, size = pop.stat()
        assert count == 1 and size > 0
        _resp, lines, _octets = pop.retr(1)
        assert b"Subject: For POP3" in lines
        assert b".starts with a dot" in lines
        assert pop.uidl(1).split()[1]
        pop.dele(1)
    finally:
        pop.quit()
    pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
    pop.user(BOB)
    pop.pass_("secret")
    assert pop.stat()[0] == 0  # DELE took effect at QUIT (RFC 1939 UPDATE state)
    pop.quit()
    bad = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
    bad.user(BOB)
    with pytest.raises(poplib.error_proto, match="-ERR authentication failed"):
        bad.pass_("wrong")
    bad.quit()


# Table 1 / Table 2: each option's effect on both sides.
OPTIONS = {
    # option: (recipient's inbound list, origin's outbound list, vote, origin state, spam report)
    "ACCEPT": (None, None, 1, "delivered", 0),
    "ACCEPT&AUTH": ("white", "white", 1, "delivered", 0),
    "REJECT": (None, None, -1, "rejected", 0),
    "REJECT&SPAM": (None, None, -1, "spam", 1),
    "REJECT&SPAMMER": ("black", "black", -1, "spammer", 1),
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_option_of_table_1(pair: tuple[Server, Server], option: str) -> None:
    a, b = pair
    in_list, out_list, vote, origin_state, reports = OPTIONS[option]
    msgid = msgid_of(send(a, [BOB], message(f"Try {option}")))
    [env] = wait_envelope(b)
    decide(b, env[0], option)
    wait_until(lambda: sent_states(a, msgid) == {BOB: origin_state}, what=origin_state)
    wait_until(lambda: not held(a, msgid), what="origin drops the body")
    assert list_entries(b, BOB, CAROL) == (
        [(f"in-{in_list}", ALICE, "smdp.a.example")] if in_list else [])
    assert list_entries(a, ALICE) == ([(f"out-{out_list}", BOB)] if out_list else [])
    assert b.quality() == {"smdp.a.example": (1, vote)}
    assert sum(a.reports().values()) == reports
    # no command shows this: whether the body ever reached the destination
    has_body = b.query("SELECT has_body FROM in_envelopes")[0][0]
    assert has_body == (vote > 0)  # a rejected message never crosses the network


def test_white_lists_send_directly_and_black_lists_refuse_at_source(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    send(a, [BOB], message("first"))
    [env] = wait_envelope(b)
    decide(b, env[0], "ACCEPT&AUTH")
    wait_until(lambda: list_entries(a, ALICE) == [("out-white", BOB)], what="auth")
    # Table 3, sender side, white list: the whole message, no envelope phase.
    reply = send(a, [BOB], message("second"))
    assert "sent directly" in reply
    msgid = msgid_of(reply)
    wait_until(lambda: sent_states(a, msgid) == {BOB: "delivered"}, what="direct delivery")
    entry = entry_of(b, "second")
    shown = b.envelope(BOB, entry)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert (shown["State"], shown["Reason"]) == (
        "accepted", f"sender is on your white list since {day} (your ACCEPT&AUTH on envelope "
                    f"{env[0]}; sent directly)")
    assert not held(a, msgid)
    # Reject after accept (Table 1): the reject family works on accepted mail.
    decide(b, entry, "REJECT&SPAMMER")
    wait_until(lambda: list_entries(a, ALICE) == [("out-black", BOB)],
               what="SPAMMER reaches the origin")
    assert [e[0] for e in list_entries(b, BOB, CAROL)] == ["in-black"]
    assert b.quality() == {"smdp.a.example": (2, 0)}
    # Table 3, sender side, black list: refused at the source, nothing is sent.
    # no command shows this: envelopes stored at the destination, for any mailbox
    before = b.query("SELECT COUNT(*) FROM in_envelopes")
    reply = send(a, [BOB], message("third"))
    assert "refused by your black list" in reply
    assert sent_states(a, msgid_of(reply)) == {BOB: "refused"}
    assert not held(a, msgid_of(reply))
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == before


def test_recipient_lists_decide_automatically(pair: tuple[Server, Server]) -> None:
    a, b = pair
    c = b.client(CAROL)
    c.call(wire.ListAdd("in-black", ALICE, None))  # server found by discovery
    c.quit()
    c = b.client(BOB)
    c.call(wire.ListAdd("in-white", ALICE, "smdp.a.example"))
    c.quit()
    msgid = msgid_of(send(a, [BOB, CAROL], message("to both")))
    # Table 3, recipient side: white list accepts (and pulls), black list
    # rejects and sends SPAMMER to the origin.
    wait_until(lambda: sent_states(a, msgid) == {BOB: "delivered", CAROL: "spammer"},
               what="automatic decisions")
    assert list_entries(a, ALICE) == [("out-black", CAROL)]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert reasons(b, BOB, CAROL) == {BOB: f"sender is on your white list since {day} (you "
                                           "added it)",
                                      CAROL: f"sender is on your black list since {day} (you "
                                             "added it)"}
    # smdp admin why: the whole story of carol's envelope, one fact a line.
    [carol_entry] = [row[0] for row in b.envelopes(CAROL, all=True)]
    assert b.admin("why", carol_entry).splitlines() == [
        f"envelope {carol_entry} for {CAROL} (account {CAROL})",
        f"from {ALICE} via smdp.a.example, subject 'to both'",
        "state spammer, decision REJECT&SPAMMER",
        f"reason: sender is on your black list since {day} (you added it)",
        f"listing now: sender is on your black list since {day} (you added it)",
        "quality of smdp.a.example: new: 2 of 10 messages needed before judging; 1 distinct "
        "rejecting user(s)",
        f"quality of sender <{ALICE}> at smdp.a.example: new: 2 of 10 messages needed before "
        "judging; 1 distinct rejecting user(s)"]
    result = subprocess.run(
        [sys.executable, "-m", "smdp", "admin", "--config", str(b.config_path), "why", "99999"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no envelope 99999 here (the ids are those ENVS shows)" in result.stderr


def test_several_recipients_one_transfer(pair: tuple[Server, Server]) -> None:
    a, b = pair
    msgid = msgid_of(send(a, [BOB, CAROL], message("to both")))
    # One envelope for the destination domain, one mailbox entry per recipient.
    wait_envelope(b, BOB)
    wait_envelope(b, CAROL)
    # no command shows this: one envelope row stored for both recipients
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(1,)]
    entries = {user: env[0] for user in (BOB, CAROL) for env in envelopes(b, user)}
    assert len(entries) == 2 and len(envelopes(b, BOB)) == len(envelopes(b, CAROL)) == 1
    decide(b, entries[BOB], "ACCEPT", BOB)
    wait_until(lambda: sent_states(a, msgid)[BOB] == "delivered", what="first pull")
    assert held(a, msgid)  # carol has not decided yet
    # With the origin down, the second acceptance still delivers at once: the
    # destination uses its own copy (assumption 5), no second transfer.
    a.stop()
    assert "in your mailbox" in decide(b, entries[CAROL], "ACCEPT", CAROL)
    c = b.client(CAROL)
    assert b"to both" in (c.call(wire.Retr(1)).body or b"")
    c.quit()
    a.start()
    wait_until(lambda: sent_states(a, msgid) == {BOB: "delivered", CAROL: "delivered"},
               what="the second decision reaches the origin", timeout=30)
    wait_until(lambda: not held(a, msgid), what="origin drops the body")


def test_quality_blocks_a_bad_peer(tmp_path: Path, backend: str) -> None:
    quality = PAPER_QUALITY + "min_messages = 2\nblock_below = -0.5\n"
    a, b = make_pair(tmp_path, extra_b=quality)
    assert (a.backend, b.backend) == (backend, backend)
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        for i in range(2):
            send(a, [BOB], message(f"spam {i}"))
        envs = wait_envelope(b, n=2)
        for env in envs:
            decide(b, env[0], "REJECT&SPAM")
        wait_until(lambda: b.quality() == {"smdp.a.example": (2, -2)}, what="votes")
        msgid = msgid_of(send(a, [BOB], message("refused")))
        wait_until(lambda: sent_states(a, msgid) == {BOB: "failed"}, what="refusal")
        [detail] = [row[4] for row in a.sent(ALICE) if row[2] == "failed"]
        assert "blocked" in detail and "quality -1.00" in detail


def test_spoofed_from_is_refused_and_identities_work(pair: tuple[Server, Server]) -> None:
    a, b = pair
    c = a.client(ALICE)
    with pytest.raises(ClientError, match="not one of your identities"):
        c.call(wire.MailCmd("mallory@a.example"))
    forged = b"From: mallory@a.example\r\nSubject: forged\r\n\r\nhi\r\n"
    c.call(wire.MailCmd(None))
    c.call(wire.RcptCmd(BOB))
    c.call(wire.DataCmd())
    with pytest.raises(ClientError, match="not one of your identities"):
        c.call(wire.Message(forged))
    assert a.sent(ALICE) == []
    # no command shows this: a message row stored without its recipients
    assert a.query("SELECT COUNT(*) FROM out_messages") == [(0,)]  # nothing half-stored
    c.quit()
    # A secondary identity (assumption 1) may send; the server writes From.
    send(a, [BOB], b"Subject: from sales\r\n\r\nhello\r\n", identity="sales@a.example")
    [env] = wait_envelope(b)
    assert env[2] == "sales@a.example"
