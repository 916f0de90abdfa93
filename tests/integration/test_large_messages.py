"""Large messages cross whole and byte for byte, and the servers never hold one
whole in memory (issue 5, item 5: server memory must not grow with message
size). Two real servers; the message is submitted, pulled, sent directly and
read back with poplib, and each server's peak resident memory (VmHWM) is
compared before and after.
"""

from __future__ import annotations

import base64
import poplib
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from smdp.protocol.framing import dot_stuff
from tests.integration.harness import (
    PeerSocket,
    Server,
    UserSocket,
    make_pair,
    running,
    wait_until,
)

ALICE, BOB = "alice@a.example", "bob@b.example"
MIB = 1024 * 1024
ATTACHMENT = 12 * MIB  # decoded; about 16 MiB on the wire


def big_message(subject: str, seed: int) -> bytes:
    """Text with lines that need dot-stuffing, then a base64 attachment."""
    rng = random.Random(seed)
    text = "".join(f"line {i}\r\n.dotted line {i}\r\n" for i in range(2000))
    data = base64.encodebytes(rng.randbytes(ATTACHMENT)).replace(b"\n", b"\r\n")
    return (
        f"To: {BOB}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="XyZ"\r\n\r\n'
        "--XyZ\r\nContent-Type: text/plain\r\n\r\n"
        f"{text}"
        "--XyZ\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="big.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + data + b"--XyZ--\r\n"


def peak_rss(server: Server) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    a, b = make_pair(tmp_path)
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        yield a, b


def submit(a: Server, msg: bytes) -> str:
    c = a.client(ALICE)
    try:
        return c.submit([BOB], msg)
    finally:
        c.quit()


def decide_last(b: Server, option: str) -> None:
    c = b.client(BOB)
    try:
        lines = c.call(wire.Envs(False)).lines or []
        entry = int(lines[-1].split()[0])
        c.call(wire.UserDecision(wire.DECISIONS_BY_VERB[option], entry))
    finally:
        c.quit()


def accepted(b: Server) -> int:
    return [env[1] for env in b.envelopes(BOB, all=True)].count("accepted")


def retrieve(b: Server, n: int) -> tuple[bytes, bytes]:
    """RETR n and TOP n 3 with poplib (which undoes the dot-stuffing)."""
    pop = poplib.POP3("127.0.0.1", b.user_port, timeout=60)
    try:
        pop.user(BOB)
        pop.pass_("secret")
        _resp, lines, _octets = pop.retr(n)
        _resp, top, _octets = pop.top(n, 3)
    finally:
        pop.quit()
    return b"\r\n".join(lines) + b"\r\n", b"\r\n".join(top) + b"\r\n"


def test_large_messages_cross_whole_without_being_held_in_memory(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    # Warm up both servers on the same paths with a small message.
    submit(a, b"To: bob@b.example\r\nSubject: warm-up\r\n\r\nhello\r\n")
    wait_until(lambda: len(b.envelopes(BOB, all=True)) == 1, what="envelope")
    decide_last(b, "ACCEPT")
    wait_until(lambda: accepted(b) == 1, what="warm-up pull")
    retrieve(b, 1)
    before = peak_rss(a), peak_rss(b)

    # The full flow: envelope, ACCEPT&AUTH, the pull of about 16 MiB.
    first = big_message("big one", seed=1)
    submit(a, first)
    wait_until(lambda: len(b.envelopes(BOB, all=True)) == 2, what="envelope")
    decide_last(b, "ACCEPT&AUTH")
    wait_until(lambda: accepted(b) == 2, timeout=60, what="the pull")
    # The direct path: the sender is now white-listed.
    second = big_message("big two", seed=2)
    assert "sent directly" in submit(a, second)
    wait_until(lambda: accepted(b) == 3, timeout=60, what="direct delivery")

    lengths = []
    for n, original in ((2, first), (3, second)):
        whole, top = retrieve(b, n)
        lengths.append(len(whole))
        # The origin added From, Date and Message-ID above the user's header.
        assert whole.endswith(original)
        assert len(whole) < len(original) + 500
        header_end = whole.index(b"\r\n\r\n") + 4
        assert top == whole[:header_end] + b"--XyZ\r\nContent-Type: text/plain\r\n\r\n"
    # ENVS shows the stored size; RETR adds Return-Path and Delivered-To
    # (protocol.md 8.4).
    delivery = len(f"Return-Path: <{ALICE}>\r\nDelivered-To: {BOB}\r\n")
    assert [int(env[3]) + delivery for env in b.envelopes(BOB, all=True)][1:] == lengths

    after = peak_rss(a), peak_rss(b)
    growth = [x - y for x, y in zip(after, before, strict=True)]
    # Each server has now received, stored, sent and served messages of
    # about 16 MiB; holding even one of them whole would show here.
    assert max(growth) < 8 * MIB, f"peak memory grew by {growth} octets"


def test_a_body_that_cannot_be_spooled_is_refused_whole_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    """A full or missing spool directory (here: removed under the running
    server) refuses the message with a temporary error on both ports, stores
    nothing, and keeps the session; with the directory back, the same
    message goes through."""
    spool = tmp_path / "spool"
    spool.mkdir()
    a, b = make_pair(tmp_path)
    for server in (a, b):
        server.store_extra = f'spool_dir = "{spool}"'
        server.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    msg = big_message("no room", seed=3)  # well past the 1 MiB kept in memory
    with running(a, b):
        spool.rmdir()
        c = a.client(ALICE)
        try:
            with pytest.raises(ClientError, match="insufficient storage"):
                c.submit([BOB], msg)
            c.call(wire.Noop())  # the session goes on
        finally:
            c.quit()
        assert a.sent(ALICE) == []
        # no command shows this: a message row stored without its recipients
        assert a.query("SELECT COUNT(*) FROM out_messages") == [(0,)]
        # The peer port: a direct MAIL from a white-listed sender.
        c = b.client(BOB)
        try:
            c.call(wire.ListAdd("in-white", ALICE, "smdp.a.example"))
        finally:
            c.quit()
        p = PeerSocket(b.peer_port)
        try:
            assert p.cmd("EHLO smdp.a.example").startswith("250")
            assert p.cmd(f"MAIL FROM:<{ALICE}> ID={'c' * 26}").startswith("250")
            assert p.cmd(f"RCPT TO:<{BOB}>").startswith("250")
            assert p.cmd(f"SIZE={len(msg)}").startswith("250")
            assert p.cmd("DATA").startswith("354")
            p.send(dot_stuff(msg))
            assert p.reply().startswith("452 4.3.1 Insufficient system storage")
            assert p.cmd("NOOP").startswith("250")
        finally:
            p.close()
        assert b.envelopes(BOB, all=True) == []
        # no command shows this: an envelope row stored for no mailbox entry
        assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]
        spool.mkdir()
        assert "queued as" in submit(a, msg)


def test_a_large_direct_body_with_odd_line_ends_and_dots_arrives_exact(
    pair: tuple[Server, Server],
) -> None:
    """Issue 15 item 4: the data readers pass pieces with no dot line and no
    bare line end through as they are, and look closer at the others. A body
    of about 700 KB with bare CRs, bare LFs and dot lines among its base64
    lines, sent on the direct path in reads cut inside a CRLF, after a line
    end before a dot, after a stuffing dot and inside the terminator, arrives
    as the submission's rules make it: every bare CR and bare LF a CRLF, one
    stuffing dot gone from each dotted line, nothing else changed."""
    a, b = pair
    c = a.client(ALICE)
    try:
        c.call(wire.ListAdd("out-white", BOB, None))
    finally:
        c.quit()
    c = b.client(BOB)
    try:
        c.call(wire.ListAdd("in-white", ALICE, "smdp.a.example"))
    finally:
        c.quit()
    rng = random.Random(4)
    base = base64.encodebytes(rng.randbytes(500_000)).replace(b"\n", b"\r\n")
    odd = [b"bare\rCR inside\r\n", b"bare LF line\n", b".dotted\r\n", b"..two dots\r\n",
           b".\r\n", b".\n", b"\n", b"x\r\r\n", b"ends with CR\r"]
    # Each odd piece at a line start, between runs of base64 lines.
    ends = [0] + [base.index(b"\r\n", k * len(base) // (len(odd) + 1)) + 2
                  for k in range(1, len(odd) + 1)]
    body = (f"To: {BOB}\r\nSubject: odd line ends\r\n\r\n".encode()
            + b"".join(base[start:end] + piece
                       for start, end, piece in zip(ends[:-1], ends[1:], odd, strict=True))
            + base[ends[-1]:])
    assert body.endswith(b"\r\n")
    # Stuffed by hand: framing.dot_stuff would make the bare LFs CRLF first.
    stuffed = body.replace(b"\n.", b"\n..")
    wire_body = stuffed + b".\r\n"
    at = stuffed.index(b"\r\n..dotted")
    cuts = sorted({at + 1, at + 2, at + 3, stuffed.index(b"\n..\n") + 1,
                   len(stuffed) + 1, len(stuffed) + 2, 70_000, 300_000})
    sock = UserSocket(a.user_port)
    try:
        sock.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert sock.cmd(f"USER {ALICE}").startswith("+OK")
        assert sock.cmd("PASS secret").startswith("+OK")
        assert sock.cmd("MAIL").startswith("+OK")
        assert sock.cmd(f"RCPT TO:<{BOB}>").startswith("+OK")
        assert sock.cmd("DATA").startswith("+OK")
        for start, end in zip([0, *cuts], [*cuts, len(wire_body)], strict=True):
            sock.sock.sendall(wire_body[start:end])
            time.sleep(0.05)  # a read of its own at the server
        assert "sent directly" in sock.line()
    finally:
        sock.close()
    wait_until(lambda: accepted(b) == 1, timeout=60, what="direct delivery")
    whole, _top = retrieve(b, 1)
    expected = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    for line in (b"\r\n.dotted\r\n", b"\r\n..two dots\r\n", b"bare\r\nCR inside\r\n",
                 b"bare LF line\r\n", b"ends with CR\r\n"):
        assert line in expected
    # The origin added From, Date and Message-ID above the user's header.
    assert whole.endswith(expected)
    assert len(whole) < len(expected) + 500
