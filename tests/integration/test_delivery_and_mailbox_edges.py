"""Edges of delivery and of the mailbox, each once a defect: an envelope to
more recipients than the peer takes, RSET and TOP in POP3, local rejections
and the quality of our own server, an origin that answers an accept without
the message, an oversized envelope block.

Two real servers on loopback (harness), separate stores.
"""

from __future__ import annotations

import poplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.protocol import user as wire
from smdp.terms import Decision
from tests.integration.harness import (
    PeerSocket,
    Server,
    UserSocket,
    facing_stand_in,
    make_pair,
    running,
    wait_until,
)

# Section 5.3 alone, as before issue 16 item 1: counters that never age, no
# rejecting users needed, no hysteresis, no probation (docs/protocol.md 11.3).
PAPER_QUALITY = ("[quality]\nhalf_life = \"never\"\nmin_deciders = 0\nmargin = 0\n"
                 "probation_per_day = 0\n")

ALICE, ANN = "alice@a.example", "ann@a.example"
BOB, CAROL, DAVE = "bob@b.example", "carol@b.example", "dave@b.example"


def message(subject: str, body: str = "Hello Bob,\r\nsee you at noon.\r\n",
            to: str = BOB) -> bytes:
    return (f"To: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def start_pair(tmp_path: Path, extra_a: str = "", extra_b: str = ""
               ) -> tuple[Server, Server]:
    a, b = make_pair(tmp_path, extra_a, extra_b)
    a.add_user(ALICE, identities=("sales@a.example",))
    a.add_user(ANN)
    for u in (BOB, CAROL, DAVE):
        b.add_user(u)
    return a, b


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    a, b = start_pair(tmp_path)
    with running(a, b):
        yield a, b


def send(a: Server, to: list[str], msg: bytes, user: str = ALICE) -> str:
    c = a.client(user)
    try:
        return c.submit(to, msg)
    finally:
        c.quit()


def msgid_of(reply: str) -> str:
    return reply.split("queued as ")[1].split()[0]


def sent_states(a: Server, msgid: str, user: str = ALICE) -> dict[str, str]:
    return {row[1]: row[2] for row in a.sent(user, msgid)}


def entries(s: Server, user: str) -> list[tuple[int, str]]:
    """(number, state) of each of ``user``'s entries, from ENVS ALL, by number."""
    return sorted((int(env[0]), env[1]) for env in s.envelopes(user, all=True))


def wait_entry(s: Server, user: str, n: int = 1) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = wait_until(
        lambda: (e := entries(s, user)) and len(e) >= n and e,
        what=f"{n} mailbox entries for {user}")
    return found


def decide(s: Server, entry: int, option: str, user: str) -> str:
    c = s.client(user)
    try:
        return c.call(wire.UserDecision(wire.DECISIONS_BY_VERB[option], entry)).text
    finally:
        c.quit()


def deliver(a: Server, b: Server, subject: str, body: str = "Hello Bob,\r\nsee you.\r\n",
            user: str = BOB) -> int:
    """alice -> user, accepted, body in the mailbox; returns the mailbox entry id."""
    msgid = msgid_of(send(a, [user], message(subject, body, to=user)))
    entry = int(wait_until(lambda: [e for e in entries(b, user) if e[1] == "pending"],
                           what="envelope")[-1][0])
    decide(b, entry, "ACCEPT", user)
    wait_until(lambda: sent_states(a, msgid) == {user: "delivered"}, what="delivered")
    wait_until(lambda: dict(entries(b, user))[entry] == "accepted", what="accepted")
    return entry


# ---------------------------------------------------------- delivery and POP3


def test_envelope_to_more_recipients_than_the_peer_takes_is_split(tmp_path: Path) -> None:
    """A destination that answers 452 Too many recipients after two RCPTs: the
    origin must deliver the envelope to the first two and send the rest in
    another transaction (RFC 5321 4.5.3.1.10). Today the whole job is retried
    with the same RCPT list until max_attempts and every recipient ends failed."""
    a, b = start_pair(tmp_path, extra_b="[limits]\nmax_recipients = 2\n")
    with running(a, b):
        msgid = msgid_of(send(a, [BOB, CAROL, DAVE], message("three of us")))
        try:
            wait_until(lambda: all(entries(b, u) for u in (BOB, CAROL, DAVE)),
                       what="an envelope for each of three recipients")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; origin says {sent_states(a, msgid)}, queue "
                                 f"{a.queue()}") from None
        assert set(sent_states(a, msgid).values()) == {"envelope-sent"}


def test_rset_abandoning_a_message_keeps_pop3_deletion_marks(
    pair: tuple[Server, Server],
) -> None:
    """RSET in COMPOSE abandons the message being composed (protocol.md 12.1);
    it must not also undo the DELE marks of the POP3 session. Today the
    user-port RSET handler clears ``deleted`` in every state, so a DELE'd
    message survives QUIT."""
    a, b = pair
    deliver(a, b, "to delete")
    u = UserSocket(b.user_port)
    try:
        assert u.cmd(f"USER {BOB}").startswith("+OK")
        assert u.cmd("PASS secret").startswith("+OK")
        assert u.cmd("DELE 1").startswith("+OK")
        assert u.cmd("MAIL").startswith("+OK")
        assert u.cmd("RSET").startswith("+OK")  # abandon the new message
        assert u.cmd("STAT") == "+OK 0 0"  # message 1 is still marked deleted
        assert u.cmd("QUIT").startswith("+OK")
    finally:
        u.close()
    pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
    try:
        pop.user(BOB)
        pop.pass_("secret")
        assert pop.stat()[0] == 0
    finally:
        pop.quit()


def test_top_with_more_lines_than_the_body_equals_retr(pair: tuple[Server, Server]) -> None:
    """RFC 1939 TOP: when k exceeds the body, the whole message is sent. Today
    ``_top`` splits a CRLF-terminated body into one line too many and appends
    an empty line that RETR does not have."""
    a, b = pair
    deliver(a, b, "short", "line one\r\nline two\r\n")
    pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
    try:
        pop.user(BOB)
        pop.pass_("secret")
        _r, retr_lines, _ = pop.retr(1)
        _t, top_lines, _ = pop.top(1, 100)
        assert top_lines == retr_lines
        _t, top2, _ = pop.top(1, 2)
        assert top2 == retr_lines
    finally:
        pop.quit()


def test_local_rejections_do_not_make_the_server_block_itself(tmp_path: Path) -> None:
    """Local recipients go through the peer port over loopback, so their
    decisions count in Quality(own hostname). Once local users have rejected
    enough local mail, peer_refusal() refuses the server's own envelopes and
    all local delivery fails (554 ... blocked). A server must not judge itself
    as a peer (section 5.3 is about peer servers X)."""
    a, _b = start_pair(tmp_path, extra_a=PAPER_QUALITY + "min_messages = 2\nblock_below = -0.5\n")
    with running(a):
        for i in range(2):
            send(a, [ANN], message(f"local {i}", to=ANN))
            entry = wait_entry(a, ANN, i + 1)[i][0]
            decide(a, entry, "REJECT", ANN)
        # We are not our own peer: local mail counts towards no quality indicator.
        wait_until(lambda: [e[1] for u in (ALICE, ANN) for e in entries(a, u)]
                   == ["rejected"] * 2, what="two local rejections")
        assert a.quality() == {}
        send(a, [ANN], message("local again", to=ANN))
        try:
            wait_until(lambda: len(entries(a, ANN)) == 3, what="third local envelope")
        except AssertionError as exc:
            last = a.sent(ANN)[-1][1:]
            raise AssertionError(f"{exc}; origin says {last}") from None


# Streamed bodies and blocks: a contrary origin, a block too large.


class ContrarianOrigin(threading.Thread):
    """An origin that answers every decision 250, never with the 150 pull."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def run(self) -> None:
        self.listener.settimeout(60)
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 smdp.a.example SMDP ready\r\n")
            for line in lines:
                verb = line.split()[0].upper() if line.split() else b""
                if verb == b"QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return
                conn.sendall(b"250 2.0.0 ok\r\n")


def test_an_accept_answered_without_the_message_fails_instead_of_wedging_pop3(
    tmp_path: Path,
) -> None:
    """Destination.body_pulled(None) marked the entry accepted with no body
    stored; RETR then announced the envelope's size, found nothing and
    dropped the POP3 session at every try."""
    origin = ContrarianOrigin()
    origin.start()
    b = facing_stand_in(tmp_path, "b.example", BOB, "a.example", origin.port)
    with running(b):
        p = PeerSocket(b.peer_port)
        assert p.cmd("EHLO smdp.a.example").startswith("250")
        assert p.cmd(f"ENVELOPE FROM:<eve@a.example> ID={'a' * 26}").startswith("250")
        assert p.cmd(f"RCPT TO:<{BOB}>").startswith("250")
        assert p.cmd("SIZE=5000").startswith("250")
        assert p.cmd("DATA").startswith("354")
        assert p.cmd("Subject: hi\r\n.").startswith("250")
        p.cmd("QUIT")
        p.close()
        c = b.client(BOB)
        c.call(wire.UserDecision(Decision.ACCEPT, 1))
        c.quit()
        wait_until(lambda: [e[1] for e in entries(b, BOB)] == ["failed"],
                   what="the entry fails")
        pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
        try:
            pop.user(BOB)
            pop.pass_("secret")
            assert pop.stat()[0] == 0  # nothing readable was promised
            pop.noop()  # the session is alive
        finally:
            pop.quit()


def test_an_oversized_envelope_block_is_refused_as_it_arrives(pair: tuple[Server, Server]
                                                              ) -> None:
    """An ENVELOPE block was held to max_message_size, spooled, then read
    whole into memory before its 16 KiB cap was checked."""
    _a, b = pair
    p = PeerSocket(b.peer_port)
    try:
        assert p.cmd("EHLO smdp.a.example").startswith("250")
        assert p.cmd(f"ENVELOPE FROM:<{ALICE}> ID={'b' * 26}").startswith("250")
        assert p.cmd(f"RCPT TO:<{BOB}>").startswith("250")
        assert p.cmd("SIZE=100").startswith("250")
        assert p.cmd("DATA").startswith("354")
        reply = p.cmd(("Subject: x\r\n" + "y" * 900 + "\r\n") * 100 + ".")
        assert reply.startswith("554 5.6.0 Envelope block exceeds 16384 octets"), reply
        assert p.cmd("NOOP").startswith("250")  # the session goes on
    finally:
        p.close()
    assert b.envelopes(BOB, all=True) == []
    # no command shows this: an envelope row stored for no mailbox entry
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]
