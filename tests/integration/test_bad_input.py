"""Bad input on both ports of a real server: each gets a clear error reply, the
session goes on, and nothing half-written is left in the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import PeerSocket, Server, UserSocket, make_pair, running

ENVID = "a" * 26
LIMITS = "[limits]\nmax_message_size = 4000\nmax_recipients = 3\n"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    a, b = make_pair(tmp_path, extra_a=LIMITS, extra_b=LIMITS)
    a.add_user("alice@a.example")
    b.add_user("bob@b.example")
    b.add_user("carol@b.example")
    with running(a, b):
        yield a, b


def code(reply: str) -> int:
    return int(reply[:3])


USERS_B = ("bob@b.example", "carol@b.example")


def entries(b: Server) -> list[list[str]]:
    """ENVS ALL of every user of b.example."""
    return [env for user in USERS_B for env in b.envelopes(user, all=True)]


def no_envelope_stored(b: Server) -> None:
    assert entries(b) == []
    # no command shows this: an envelope row stored for no mailbox entry
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]


def nothing_sent(b: Server) -> None:
    assert b.sent("bob@b.example") == []
    # no command shows this: a message row stored without its recipients
    assert b.query("SELECT COUNT(*) FROM out_messages") == [(0,)]


def test_peer_port_errors_keep_the_session(pair: tuple[Server, Server]) -> None:
    _a, b = pair
    p = PeerSocket(b.peer_port)
    assert p.greeting.startswith("220 smdp.b.example ")
    assert p.cmd("RCPT To:<bob@b.example>") == (
        "503 5.5.1 Bad sequence of commands: send HELO or EHLO first")
    assert p.cmd("FROBNICATE") == "500 5.5.1 Unknown command"
    assert code(p.cmd("EHLO smdp.a.example")) == 250
    assert p.cmd("RCPT To:<bob@b.example>") == (
        "503 5.5.1 Bad sequence of commands: no transaction; send ENVELOPE or MAIL first")
    assert p.cmd("ENVELOPE From:<alice@a.example>") == (
        "501 5.5.4 ID=<envid> required: 26 characters of [a-z2-7]")
    assert p.cmd(f"ENVELOPE From:<not an address> ID={ENVID}") == (
        "501 5.5.4 Syntax: ENVELOPE From:<address> ID=<envid> [SIZE=<n>]")
    assert p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID} SIZE=999999") == (
        "552 5.3.4 Message size exceeds fixed maximum of 4000")
    p.send(b"NOOP " + b"x" * 5000 + b"\r\n")
    assert p.reply() == "500 5.5.2 Line too long"
    assert p.cmd("NOOP") == "250 2.0.0 OK"
    assert p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID}") == (
        f"250 2.1.0 Envelope {ENVID} from <alice@a.example> ok")
    assert p.cmd("RCPT To:<bob@elsewhere.example>") == (  # no relay
        "550 5.7.1 <bob@elsewhere.example>: relaying denied, elsewhere.example is not served here")
    assert p.cmd("RCPT To:<nobody@b.example>") == (
        "550 5.1.1 <nobody@b.example>: no such user here")
    # Both recipients so far were refused: DATA has nobody to deliver to.
    assert p.cmd("DATA") == "554 5.5.1 No valid recipients"
    assert p.cmd("RCPT To:<bob@b.example>") == "250 2.1.5 Recipient <bob@b.example> ok"
    assert p.cmd("RCPT To:<carol@b.example>") == "250 2.1.5 Recipient <carol@b.example> ok"
    assert p.cmd("DATA") == "503 5.5.1 SIZE required before DATA"
    assert p.cmd("SIZE=100") == "250 2.3.0 Size 100 ok"
    assert code(p.cmd("DATA")) == 354
    p.send(b"Subject: " + b"y" * 3000 + b"\r\n.\r\n")  # an over-long data line
    assert p.reply() == "500 5.5.2 Line too long"
    no_envelope_stored(b)
    assert p.cmd("QUIT") == "221 2.0.0 smdp.b.example closing"
    p.close()


def test_peer_port_oversize_block_is_refused_whole(pair: tuple[Server, Server]) -> None:
    _a, b = pair
    p = PeerSocket(b.peer_port)
    p.cmd("EHLO smdp.a.example")
    assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID} SIZE=100")) == 250
    p.cmd("RCPT To:<bob@b.example>")
    assert code(p.cmd("DATA")) == 354
    p.send(b"".join(b"Headline: %d\r\n" % i for i in range(600)) + b".\r\n")
    assert p.reply() == "552 5.3.4 Message size exceeds fixed maximum of 4000"
    no_envelope_stored(b)
    assert code(p.cmd("NOOP")) == 250
    p.close()


def test_peer_must_speak_for_the_domain(pair: tuple[Server, Server]) -> None:
    a, b = pair
    p = PeerSocket(b.peer_port)
    p.cmd("EHLO rogue.example")
    reply = p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID}")
    assert reply == "550 5.7.1 rogue.example does not speak for a.example"
    p.close()
    # Decisions too: only b.example's server may decide for bob@b.example.
    p = PeerSocket(a.peer_port)
    p.cmd("EHLO rogue.example")
    assert p.cmd(f"ACCEPT {ENVID} To:<bob@b.example>") == (
        "550 5.7.1 rogue.example does not speak for b.example")
    p.cmd("EHLO smdp.b.example")
    assert p.cmd(f"ACCEPT {ENVID} To:<bob@b.example>") == f"550 5.1.0 Unknown envelope {ENVID}"
    assert p.cmd(f"REJECT {ENVID}") == "501 5.5.4 Syntax: REJECT <envid> To:<address>"
    assert p.cmd("RECEIVED nonsense") == "501 5.5.4 Syntax: RECEIVED <envid>"
    p.close()


def test_user_port_errors_keep_the_session(pair: tuple[Server, Server]) -> None:
    _a, b = pair
    u = UserSocket(b.user_port)
    assert u.greeting.startswith("+OK")
    assert u.cmd("STAT") == "-ERR log in first"
    assert u.cmd("PASS secret") == "-ERR send USER first"
    assert u.cmd("USER nobody@b.example") == "+OK send your password"  # no hint it is absent
    assert u.cmd("PASS secret") == "-ERR authentication failed"
    assert u.cmd("USER bob@b.example") == "+OK send your password"
    assert u.cmd("PASS wrong") == "-ERR authentication failed"
    assert u.cmd("USER bob@b.example") == "+OK send your password"
    assert u.cmd("PASS secret") == (
        "+OK bob@b.example has 0 envelope(s) awaiting a decision and 0 message(s) (0 octets)")
    assert u.cmd("FROBNICATE") == "-ERR unknown command"
    assert u.cmd("RETR 99") == "-ERR no message 99"
    assert u.cmd("RETR x") == "-ERR message number must be a positive decimal integer"
    assert u.cmd("ACCEPT 12345") == "-ERR no envelope 12345 in your mailbox"
    assert u.cmd("RCPT TO:<alice@a.example>") == "-ERR send MAIL first"
    assert u.cmd(b"NOOP " + b"z" * 2000) == "-ERR line too long"
    assert u.cmd("NOOP") == "+OK"
    assert u.cmd("MAIL FROM:<alice@a.example>") == (
        "-ERR alice@a.example is not one of your identities")
    assert u.cmd("MAIL") == "+OK composing as bob@b.example"
    assert u.cmd("RCPT TO:<bad address>") == "-ERR syntax: RCPT TO:<address>"
    assert u.cmd("DATA") == "-ERR no recipient yet; send RCPT TO first"
    assert u.cmd("RCPT TO:<alice@a.example>") == "+OK recipient alice@a.example"
    assert u.cmd("DATA").startswith("+OK")
    # Lines well within max_line_length, 4,600 octets in all: over max_message_size.
    u.sock.sendall(b"Subject: big\r\n\r\n" + b"".join(b"%0900d\r\n" % i for i in range(5))
                   + b".\r\n")
    assert u.line() == "-ERR message exceeds fixed maximum of 4000 octets"
    nothing_sent(b)
    assert u.cmd("NOOP") == "+OK"  # the session goes on
    assert u.cmd("MAIL") == "+OK composing as bob@b.example"
    assert u.cmd("RCPT TO:<alice@a.example>") == "+OK recipient alice@a.example"
    assert u.cmd("DATA").startswith("+OK")
    u.sock.sendall(b"Subject: long line\r\n\r\n" + b"x" * 1200 + b"\r\n.\r\n")
    assert u.line() == "-ERR line too long; message refused"
    nothing_sent(b)
    assert u.cmd("QUIT") == "+OK smdp.b.example signing off"
    u.close()


def test_decision_by_someone_else_is_refused(pair: tuple[Server, Server]) -> None:
    a, b = pair
    c = a.client("alice@a.example")
    c.submit(["bob@b.example"], b"Subject: for bob\r\n\r\nhi\r\n")
    c.quit()
    from tests.integration.harness import wait_until

    entry = wait_until(lambda: entries(b), what="envelope")[0][0]
    u = UserSocket(b.user_port)
    u.cmd("USER carol@b.example")
    u.cmd("PASS secret")
    assert u.cmd(f"REJECT&SPAMMER {entry}") == f"-ERR no envelope {entry} in your mailbox"
    assert u.cmd(f"ENV {entry}") == f"-ERR no envelope {entry} in your mailbox"
    assert [env[1] for env in entries(b)] == ["pending"]
    assert [b.lists(user) for user in USERS_B] == [[], []]
    u.cmd("QUIT")


def test_several_envelopes_and_mails_in_one_peer_session(pair: tuple[Server, Server]) -> None:
    """Table 4, HELO/EHLO: multiple envelopes and mails in the same session."""
    _a, b = pair
    p = PeerSocket(b.peer_port)
    assert code(p.cmd("EHLO smdp.a.example")) == 250
    for i, envid in enumerate(["b" * 26, "c" * 26]):
        assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={envid}")) == 250
        assert code(p.cmd("RCPT To:<bob@b.example>")) == 250
        assert code(p.cmd("SIZE=1234")) == 250
        assert code(p.cmd("DATA")) == 354
        p.send(f"Subject: number {i}\r\nHeadline: .dotted\r\n.\r\n".encode().replace(
            b"\r\nHeadline: .", b"\r\nHeadline: .."))
        assert p.reply() == f"250 2.0.0 {envid} stored"
    # A whole message for a recipient who has not authorized the sender: 551,
    # the origin is to send an envelope instead (Table 3).
    assert code(p.cmd(f"MAIL From:<alice@a.example> ID={'d' * 26} SIZE=20")) == 250
    assert p.cmd("RCPT To:<bob@b.example>").startswith("551 5.7.1")
    assert code(p.cmd("RSET")) == 250
    assert code(p.cmd("QUIT")) == 221
    p.close()
    rows = [(env[5], int(env[3])) for env in entries(b)]
    assert rows == [("number 0", 1234), ("number 1", 1234)]
    assert [env[1] for env in entries(b)].count("pending") == 2


def test_recipient_limit_on_both_ports(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_a=LIMITS, extra_b=LIMITS)
    a.add_user("alice@a.example")
    names = ["bob", "carol", "dave", "erin"]
    for name in names:
        b.add_user(f"{name}@b.example")
    with running(a, b):
        p = PeerSocket(b.peer_port)
        p.cmd("EHLO smdp.a.example")
        p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID}")
        replies = [p.cmd(f"RCPT To:<{n}@b.example>") for n in names]
        assert [code(r) for r in replies] == [250, 250, 250, 452]
        assert replies[3] == "452 4.5.3 Too many recipients"
        p.close()
        u = UserSocket(a.user_port)
        u.cmd("USER alice@a.example")
        u.cmd("PASS secret")
        u.cmd("MAIL")
        replies = [u.cmd(f"RCPT TO:<{n}@b.example>") for n in names]
        assert replies == [f"+OK recipient {n}@b.example" for n in names[:3]] + [
            "-ERR too many recipients"]
        u.cmd("QUIT")
        u.close()


def test_idle_sessions_are_closed(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[limits]\nidle_timeout = 0.5\n")
    b.add_user("bob@b.example")
    with running(a, b):
        p = PeerSocket(b.peer_port)
        assert p.reply() == "421 4.4.2 Idle too long, closing"
        p.close()
        u = UserSocket(b.user_port)
        assert u.line() == "-ERR idle too long, closing"
        with pytest.raises(ConnectionError, match="closed"):  # the server's end is closed
            u.line()
        u.close()
