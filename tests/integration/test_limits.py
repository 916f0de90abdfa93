"""Session caps per port and per client address, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.integration.harness import PeerSocket, make_pair, running, wait_until


def opened(stack: contextlib.ExitStack, port: int) -> socket.socket:
    """A plain connection to ``port``, closed when ``stack`` closes."""
    return stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))


def greets(port: int) -> bool:
    """A new peer session gets the 220 greeting (and is closed again at once)."""
    p = PeerSocket(port)
    try:
        return p.greeting.startswith("220")
    finally:
        p.close()


def test_session_caps_per_client_and_per_port(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[limits]\nmax_sessions = 3\n"
                                      "max_sessions_per_client = 2\n")
    with running(a, b), contextlib.ExitStack() as stack:
        first, second = PeerSocket(b.peer_port), PeerSocket(b.peer_port)
        stack.callback(first.close)
        stack.callback(second.close)
        third = opened(stack, b.peer_port)
        assert third.recv(200) == b"421 4.7.0 too many sessions from 127.0.0.1, try again later\r\n"
        assert third.recv(200) == b""  # and closed
        first.close()
        # The freed slot is usable again once the server has seen the close.
        wait_until(lambda: greets(b.peer_port), what="a free slot")
        second.close()
        # The user port has its own count, and its own reply style.
        users = [opened(stack, b.user_port) for _ in range(3)]
        assert users[0].recv(200).startswith(b"+OK")
        assert users[1].recv(200).startswith(b"+OK")
        assert users[2].recv(200) == (
            b"-ERR too many sessions from 127.0.0.1, try again later\r\n")
        assert users[2].recv(200) == b""  # and closed


def test_session_cap_per_port(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[limits]\nmax_sessions = 2\n")
    with running(a, b), contextlib.ExitStack() as stack:
        for _ in range(2):
            stack.callback(PeerSocket(b.peer_port).close)
        extra = opened(stack, b.peer_port)
        assert extra.recv(200) == b"421 4.7.0 too many sessions on this port, try again later\r\n"
        assert extra.recv(200) == b""  # and closed


def test_sigterm_abandons_a_half_sent_message_and_exits(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    b.add_user("bob@b.example")
    with running(a, b):
        p = PeerSocket(b.peer_port)
        p.cmd("EHLO smdp.a.example")
        p.cmd(f"ENVELOPE From:<alice@a.example> ID={'a' * 26}")
        p.cmd("RCPT To:<bob@b.example>")
        p.cmd("SIZE=100")
        assert p.cmd("DATA").startswith("354")
        p.send(b"Subject: half a block\r\n")  # ... and never the end
        assert b.proc is not None
        started = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        assert b.proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 15
        with pytest.raises(ConnectionRefusedError):  # nobody listens any more
            socket.create_connection(("127.0.0.1", b.peer_port), timeout=2)
        # no command shows this: the server is stopped, only its store can tell
        assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]
        # no command shows this either: no mailbox entry, and the server is stopped
        assert b.query("SELECT COUNT(*) FROM mailbox") == [(0,)]
        p.close()
        b.proc = None
