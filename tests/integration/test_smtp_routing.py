"""Routing per recipient domain through real servers (issue 11, item 1;
docs/smtp.md, "Routing"): one message to an SMDP domain and to a domain
whose DNS has MX records but no SMDP server. The SMDP recipient gets the
envelope; the SMTP one is moved to a send-smtp job and SENT shows each
recipient's route. Here no SMTP server listens: the send-smtp job waits
(delivery itself: test_smtp_outbound.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from smdp.protocol import user as wire
from tests.integration.faults import NXDOMAIN, StandInDns
from tests.integration.harness import Server, make_pair, running, wait_until
from tests.integration.test_notices import failed_in, mailbox

from .inprocess import InProcessServer

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@c.example"
NULL, NOWHERE = "x@null.example", "y@nx.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def submit(server: Server, rcpts: list[str]) -> str:
    c = server.client(ALICE)
    try:
        reply = c.submit(rcpts, b"Subject: lunch\r\n\r\nAt noon?\r\n")
    finally:
        c.quit()
    return reply.split()[2]  # "queued as <msgid> ..."


def test_one_message_to_an_smdp_and_an_smtp_domain(tmp_path: Path) -> None:
    with StandInDns() as dns:
        # c.example: no SMDP server (NXDOMAIN for _smdp._tcp.c.example), mail by MX.
        dns.mx = {"c.example": [(10, "mx.c.example")]}
        dns.hosts = {"mx.c.example": ["127.0.0.1"]}
        closed = free_port()  # nothing listens there
        a, b = make_pair(tmp_path, extra_a=dns.config + "[smtp]\noutbound = true\n"
                         f"outbound_port = {closed}\n")
        a.add_user(ALICE)
        b.add_user(BOB)
        with running(a, b):
            msgid = submit(a, [BOB, CAROL])
            wait_until(lambda: a.sent_routes(ALICE, msgid) == {
                BOB: ("smdp", "envelope-sent"), CAROL: ("smtp", "queued")},
                what="bob's envelope sent by SMDP, carol routed to SMTP")
            [[_n, state, sender, *_rest]] = b.envelopes(BOB)
            assert (state, sender) == ("pending", ALICE)
            # The send-smtp job waits for the MX host to answer.
            wait_until(lambda: [(row[1], row[3].split(" last error: ")[-1].split(": ")[0])
                                for row in a.queue()] == [
                ("send-smtp", f"cannot connect to mx.c.example [127.0.0.1]:{closed}")],
                what="carol's send-smtp job waiting")
            assert ("mx.c.example" in dns.questions) and ("c.example" in dns.questions)


def sent_lines(server: InProcessServer, msgid: str) -> dict[str, list[str]]:
    """SENT <msgid>: recipient -> [state, route, detail] (the time left out)."""
    c = server.client(ALICE)
    try:
        reply = c.call(wire.Sent(msgid))
    finally:
        c.quit()
    rows = [[*line.split(" ", 5), ""] for line in reply.lines]
    return {row[1]: [row[2], row[4], row[5]] for row in rows}


def test_domains_that_take_no_mail_fail_with_their_status(tmp_path: Path) -> None:
    """A null MX (RFC 7505) fails for good with 5.1.10, a domain that does
    not exist with 5.1.2; the sender's report gives each status."""
    with StandInDns() as dns:
        dns.mx = {"null.example": [(0, ".")], "nx.example": NXDOMAIN}
        a = InProcessServer(tmp_path, "a.example",
                            extra=dns.config + "[smtp]\noutbound = true\n")
        a.add_user(ALICE)
        a.start()
        try:
            c = a.client(ALICE)
            try:
                msgid = c.submit([NULL, NOWHERE], b"Subject: lunch\r\n\r\nAt noon?\r\n")
                msgid = msgid.split()[2]
            finally:
                c.quit()
            wait_until(lambda: sent_lines(a, msgid) == {
                NULL: ["failed", "smdp", "null.example accepts no mail (null MX, RFC 7505)"],
                NOWHERE: ["failed", "smdp", "no SMDP server for nx.example, and nx.example "
                          "does not exist (NXDOMAIN)"]},
                what="both recipients failed with the routing's reason")
            # One report per domain (each is its own failure batch).
            reports = mailbox(a, ALICE)  # type: ignore[arg-type]
            assert sorted(failed_in(report).popitem() for report in reports) == [
                (NULL, ("5.1.10", None)), (NOWHERE, ("5.1.2", None))]
        finally:
            a.stop()
