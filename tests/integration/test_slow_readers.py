"""Clients that stop reading: cut off, their session slot freed for others.

Each test fails while the defect it guards is present."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

from tests.integration.harness import UserSocket, make_pair, running, wait_until


def greeting(port: int) -> str:
    """The greeting a new user-port session gets: +OK, or -ERR while full."""
    other = UserSocket(port)
    try:
        return other.greeting
    finally:
        other.close()


def test_client_that_never_reads_is_cut_off_and_frees_its_session(tmp_path: Path) -> None:
    """session.py: the idle cut-off covers only reads. A client that pipelines
    commands and never reads their replies parks the session in
    ``writer.drain()`` (no timeout) and then in ``wait_closed()``: it holds its
    slot forever, so with max_sessions = 1 nobody else gets in."""
    _a, b = make_pair(tmp_path, extra_b="[limits]\nidle_timeout = 1\nmax_sessions = 1\n")
    with running(b):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", b.user_port))
        s.setblocking(False)
        chunk = b"NOOP\r\n" * 10_000
        try:
            # Send until the server stops reading (it is stuck writing the
            # replies nobody reads): the socket stays unwritable for 0.5 s.
            deadline = time.monotonic() + 60
            stalled = False
            while not stalled and time.monotonic() < deadline:
                try:
                    s.send(chunk)
                except BlockingIOError:
                    _r, writable, _x = select.select([], [s], [], 0.5)
                    stalled = not writable
            assert stalled, "the server never stopped reading"
            # The idle cut-off (1 s) must free the slot without the client
            # reading a byte: wait for that, however long the server takes.
            # It first works through the megabytes of NOOPs the kernel buffered
            # (20 s under coverage on one core), hence the wide bound.
            wait_until(lambda: greeting(b.user_port).startswith("+OK"), timeout=120,
                       what="the stuck session's slot freed by the idle cut-off")
        finally:
            s.close()
