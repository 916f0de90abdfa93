"""PIPELINING on the peer port (protocol.md 6.1), seen from a peer.

A real origin server delivers an envelope to a scripted peer on loopback (a
stand-in for another SMDP implementation). With PIPELINING in the EHLO reply
the transaction's commands arrive in one go, before any reply; without it
the origin waits for each reply before it sends the next command.
"""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

import pytest

from tests.integration.harness import facing_stand_in, running, wait_until

ALICE = "alice@a.example"
RCPTS = ["bob@b.example", "carol@b.example"]


class ScriptedPeer(threading.Thread):
    """Answers one peer session the way a minimal SMDP server would and
    records each command with what had already arrived behind it."""

    def __init__(self, pipelining: bool) -> None:
        super().__init__(daemon=True)
        self.pipelining = pipelining
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        # (command line, the command lines already received behind it, unanswered)
        self.seen: list[tuple[str, list[str]]] = []
        self.block = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _serve(self) -> None:
        self.listener.settimeout(30)
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        buf = b""

        def fill(wait: float) -> bool:
            nonlocal buf
            if not select.select([conn], [], [], wait)[0]:
                return False
            data = conn.recv(65536)
            buf += data
            return bool(data)

        def line() -> str:
            nonlocal buf
            while b"\r\n" not in buf:
                if not fill(30):
                    raise TimeoutError("no command")
            raw, buf = buf.split(b"\r\n", 1)
            return raw.decode()

        conn.sendall(b"220 smdp.b.example SMDP ready\r\n")
        assert line().startswith("EHLO")
        keywords = ["250-smdp.b.example hello", "250-SMDP 1"]
        if self.pipelining:
            keywords.append("250-PIPELINING")
        conn.sendall(("\r\n".join([*keywords, "250 SIZE 1000000"]) + "\r\n").encode())
        while True:
            command = line()
            # Whatever else arrives within a moment came without waiting for
            # this command's reply.
            fill(0.3)
            ahead = [x.decode() for x in buf.split(b"\r\n")[:-1]]
            self.seen.append((command, ahead))
            verb = command.split()[0].upper()
            if verb == "QUIT":
                conn.sendall(b"221 2.0.0 bye\r\n")
                break
            if verb == "DATA":
                conn.sendall(b"354 go ahead\r\n")
                while not buf.endswith(b"\r\n.\r\n"):
                    if not fill(30):
                        raise TimeoutError("no block")
                self.block, buf = buf, b""
                conn.sendall(b"250 2.0.0 stored\r\n")
                # The origin keeps the session a moment, then says QUIT.
                continue
            conn.sendall(b"250 2.0.0 ok\r\n")
        conn.close()
        self.listener.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
def test_the_origin_pipelines_only_when_offered(tmp_path: Path, pipelining: bool) -> None:
    peer = ScriptedPeer(pipelining)
    peer.start()
    a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
    with running(a):
        c = a.client(ALICE)
        try:
            c.submit(RCPTS, b"Subject: pipelined?\r\n\r\nhello\r\n")
        finally:
            c.quit()
        wait_until(lambda: peer.block, what="the envelope block")
        wait_until(lambda: a.queue() == [], what="job done")
        sent = sorted((row[1], row[2]) for row in a.sent(ALICE))
    peer.join(10)
    assert peer.error is None, peer.error
    def verb(command: str) -> str:
        return command.split()[0].split("=")[0]

    assert [verb(command) for command, _ in peer.seen][:5] == [
        "ENVELOPE", "RCPT", "RCPT", "SIZE", "DATA"]
    if pipelining:
        # Everything up to DATA came in the same write, before any reply.
        assert [verb(x) for x in peer.seen[0][1]] == ["RCPT", "RCPT", "SIZE", "DATA"]
    else:
        assert all(ahead == [] for _command, ahead in peer.seen)
    assert b"Subject: pipelined?" in peer.block
    assert sent == [
        (r, "envelope-sent") for r in RCPTS
    ]
