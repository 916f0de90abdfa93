"""Review findings (round 2): each test fails while its defect is present."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.integration.harness import UserSocket, make_pair, running


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
        deadline = time.monotonic() + 10
        stalled_at = None
        while time.monotonic() < deadline:
            try:
                s.send(chunk)
                stalled_at = None
            except BlockingIOError:
                # The server stopped reading: it is stuck writing replies.
                if stalled_at is None:
                    stalled_at = time.monotonic()
                elif time.monotonic() - stalled_at > 0.5:
                    break
                time.sleep(0.05)
        assert stalled_at is not None, "the server never stopped reading"
        time.sleep(3)  # three idle timeouts without the client reading a byte
        other = UserSocket(b.user_port)
        try:
            assert other.greeting.startswith("+OK"), other.greeting
        finally:
            other.close()
            s.close()
