"""The session loop's deadlines, kept by asyncio.timeout (no task per read):
an idle client is cut off, a client that sends in time is not, and a deadline
already past cuts off before reading."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from smdp.config import Config, Limits, Listener
from smdp.protocol.framing import CLOSED, NEED_DATA
from smdp.server.session import Session


class _Conn:
    """A line echo: each line received is answered with ``ok <line>``."""

    def __init__(self) -> None:
        self.buf = b""
        self.out = b""
        self.closed = False

    def greeting(self) -> bytes:
        return b"hello\r\n"

    def receive_data(self, data: bytes) -> None:
        if not data:
            self.closed = True
        self.buf += data

    def next_event(self) -> Any:
        if b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            return line.strip()
        return CLOSED if self.closed else NEED_DATA

    def data_to_send(self) -> bytes:
        out, self.out = self.out, b""
        return out

    @property
    def buffered(self) -> int:
        return len(self.buf)

    @property
    def reply_owed(self) -> Any:
        return None


class _Echo(Session):
    conn: _Conn

    def __init__(self, config: Config, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(config, reader, writer)
        self.conn = _Conn()

    async def handle(self, event: Any) -> None:
        self.conn.out += b"ok " + event + b"\r\n"

    def in_block(self) -> bool:
        return False

    def closing_line(self, why: str) -> bytes:
        return f"bye {why}\r\n".encode()

    def internal_error(self) -> None:
        pass


def _config(idle: float) -> Config:
    listener = Listener("127.0.0.1", 0)
    base = Config("h.example", ("h.example",), "n1", listener, listener, Path("x.db"))
    return replace(base, limits=replace(Limits(), idle_timeout=idle))


async def _talk(idle: float, lines: list[bytes], pause: float) -> list[bytes]:
    config = _config(idle)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _Echo(config, reader, writer).run()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = [await reader.readline()]
    for line in lines:
        writer.write(line + b"\r\n")
        got.append(await reader.readline())
        await asyncio.sleep(pause)  # the client's own pace: the behaviour under test
    got.append(await asyncio.wait_for(reader.readline(), 5))
    writer.close()
    server.close()
    await server.wait_closed()
    return got


def test_idle_client_is_cut_off() -> None:
    got = asyncio.run(_talk(0.3, [b"one", b"two"], 0.05))
    assert got == [b"hello\r\n", b"ok one\r\n", b"ok two\r\n", b"bye idle too long\r\n"]


def test_deadline_already_past_cuts_off_at_once() -> None:
    class Past(_Echo):
        def _cutoff(self, now: float) -> tuple[float, str]:
            return now - 1.0, "past"

    async def main() -> bytes:
        server = await asyncio.start_server(
            lambda r, w: Past(_config(60), r, w).run(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        server.close()
        await server.wait_closed()
        return data

    assert asyncio.run(main()) == b"hello\r\nbye past\r\n"
