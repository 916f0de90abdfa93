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


def test_peer_port_errors_keep_the_session(pair: tuple[Server, Server]) -> None:
    _a, b = pair
    p = PeerSocket(b.peer_port)
    assert code(p.greeting) == 220
    assert code(p.cmd("RCPT To:<bob@b.example>")) == 503  # before EHLO
    assert code(p.cmd("FROBNICATE")) == 500
    assert code(p.cmd("EHLO smdp.a.example")) == 250
    assert code(p.cmd("RCPT To:<bob@b.example>")) == 503  # before ENVELOPE
    assert code(p.cmd("ENVELOPE From:<alice@a.example>")) == 501  # no ID
    assert code(p.cmd(f"ENVELOPE From:<not an address> ID={ENVID}")) == 501
    assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID} SIZE=999999")) == 552
    p.send(b"NOOP " + b"x" * 5000 + b"\r\n")
    assert code(p.reply()) == 500  # line too long
    assert code(p.cmd("NOOP")) == 250
    assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID}")) == 250
    assert p.cmd("RCPT To:<bob@elsewhere.example>").startswith("550 5.7.1")  # no relay
    assert p.cmd("RCPT To:<nobody@b.example>").startswith("550 5.1.1")
    assert code(p.cmd("DATA")) in (503, 554)  # no recipient yet
    assert code(p.cmd("RCPT To:<bob@b.example>")) == 250
    assert code(p.cmd("RCPT To:<carol@b.example>")) == 250
    assert code(p.cmd("DATA")) == 503  # SIZE required first
    assert code(p.cmd("SIZE=100")) == 250
    assert code(p.cmd("DATA")) == 354
    p.send(b"Subject: " + b"y" * 3000 + b"\r\n.\r\n")  # an over-long data line
    assert code(p.reply()) >= 500
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]
    assert code(p.cmd("QUIT")) == 221
    p.close()


def test_peer_port_oversize_block_is_refused_whole(pair: tuple[Server, Server]) -> None:
    _a, b = pair
    p = PeerSocket(b.peer_port)
    p.cmd("EHLO smdp.a.example")
    assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID} SIZE=100")) == 250
    p.cmd("RCPT To:<bob@b.example>")
    assert code(p.cmd("DATA")) == 354
    p.send(b"".join(b"Headline: %d\r\n" % i for i in range(600)) + b".\r\n")
    assert code(p.reply()) == 552
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]
    assert code(p.cmd("NOOP")) == 250
    p.close()


def test_peer_must_speak_for_the_domain(pair: tuple[Server, Server]) -> None:
    a, b = pair
    p = PeerSocket(b.peer_port)
    p.cmd("EHLO rogue.example")
    reply = p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVID}")
    assert reply.startswith("550 5.7.1 rogue.example does not speak for a.example")
    p.close()
    # Decisions too: only b.example's server may decide for bob@b.example.
    p = PeerSocket(a.peer_port)
    p.cmd("EHLO rogue.example")
    assert p.cmd(f"ACCEPT {ENVID} To:<bob@b.example>").startswith("550 5.7.1")
    p.cmd("EHLO smdp.b.example")
    assert p.cmd(f"ACCEPT {ENVID} To:<bob@b.example>").startswith("550 5.1.0")
    assert p.cmd(f"REJECT {ENVID}").startswith("501")
    assert p.cmd("RECEIVED nonsense").startswith("501")
    p.close()


def test_user_port_errors_keep_the_session(pair: tuple[Server, Server]) -> None:
    a, b = pair
    u = UserSocket(b.user_port)
    assert u.greeting.startswith("+OK")
    assert u.cmd("STAT").startswith("-ERR")  # before login
    assert u.cmd("PASS secret").startswith("-ERR")  # no USER yet
    assert u.cmd("USER nobody@b.example").startswith("+OK")  # no hint the account is absent
    assert u.cmd("PASS secret") == "-ERR authentication failed"
    assert u.cmd("USER bob@b.example").startswith("+OK")
    assert u.cmd("PASS wrong") == "-ERR authentication failed"
    assert u.cmd("USER bob@b.example").startswith("+OK")
    assert u.cmd("PASS secret").startswith("+OK")
    assert u.cmd("FROBNICATE").startswith("-ERR")
    assert u.cmd("RETR 99").startswith("-ERR")
    assert u.cmd("RETR x").startswith("-ERR")
    assert u.cmd("ACCEPT 12345").startswith("-ERR no envelope")
    assert u.cmd("RCPT TO:<alice@a.example>").startswith("-ERR")  # before MAIL
    assert u.cmd(b"NOOP " + b"z" * 2000).startswith("-ERR")
    assert u.cmd("NOOP").startswith("+OK")
    assert u.cmd("MAIL FROM:<alice@a.example>").startswith("-ERR")  # not bob's identity
    assert u.cmd("MAIL").startswith("+OK")
    assert u.cmd("RCPT TO:<bad address>").startswith("-ERR")
    assert u.cmd("DATA").startswith("-ERR")  # no recipient yet
    assert u.cmd("RCPT TO:<alice@a.example>").startswith("+OK")
    assert u.cmd("DATA").startswith("+OK")
    u.sock.sendall(b"Subject: big\r\n\r\n" + b"x" * 900 + b"\r\n" * 0 +
                   b"".join(b"%0900d\r\n" % i for i in range(10)) + b".\r\n")
    assert u.line().startswith("-ERR")  # over max_message_size
    assert b.query("SELECT COUNT(*) FROM out_messages") == [(0,)]
    assert u.cmd("QUIT").startswith("+OK")
    _ = a


def test_decision_by_someone_else_is_refused(pair: tuple[Server, Server]) -> None:
    a, b = pair
    c = a.client("alice@a.example")
    c.submit(["bob@b.example"], b"Subject: for bob\r\n\r\nhi\r\n")
    c.quit()
    from tests.integration.harness import wait_until

    entry = wait_until(lambda: b.query("SELECT id FROM mailbox"), what="envelope")[0][0]
    u = UserSocket(b.user_port)
    u.cmd("USER carol@b.example")
    u.cmd("PASS secret")
    assert u.cmd(f"REJECT&SPAMMER {entry}").startswith("-ERR no envelope")
    assert u.cmd(f"ENV {entry}").startswith("-ERR no envelope")
    assert b.query("SELECT state FROM mailbox") == [("pending",)]
    assert b.query("SELECT COUNT(*) FROM inbound_lists") == [(0,)]
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
    rows = b.query("SELECT subject, size FROM in_envelopes ORDER BY id")
    assert rows == [("number 0", 1234), ("number 1", 1234)]
    assert b.query("SELECT COUNT(*) FROM mailbox WHERE state='pending'") == [(2,)]


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
        p.close()
        u = UserSocket(a.user_port)
        u.cmd("USER alice@a.example")
        u.cmd("PASS secret")
        u.cmd("MAIL")
        replies = [u.cmd(f"RCPT TO:<{n}@b.example>") for n in names]
        assert [r[:3] for r in replies] == ["+OK", "+OK", "+OK", "-ER"]
        u.cmd("QUIT")


def test_idle_sessions_are_closed(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[limits]\nidle_timeout = 0.5\n")
    b.add_user("bob@b.example")
    with running(a, b):
        p = PeerSocket(b.peer_port)
        assert p.reply().startswith("421 4.4.2")
        p.close()
        u = UserSocket(b.user_port)
        assert u.line().startswith("-ERR idle")
        with pytest.raises(ConnectionError):
            u.line()
