"""Session.stream_body on a real loopback socket: a stored body that comes
out shorter than announced, or cannot be read, never reaches the client as a
whole block (no terminating "."): the session is dropped instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from smdp.protocol.framing import DotStuffer
from tests.unit.test_session_timeouts import _config, _Conn, _Echo

BODY = b"line one\r\n.dot line\r\n"


def _broken() -> Iterator[bytes]:
    yield BODY[:5]
    raise OSError("disk I/O error")


class _Sender(_Echo):
    """Answers "pull" with ``150 <size>`` and the body from ``chunks``."""

    conn: _Conn
    chunks: Iterable[bytes] = ()

    async def handle(self, event: Any) -> None:
        if event != b"pull":
            await super().handle(event)
            return
        self.conn.out += f"150 {len(BODY)} octets\r\n".encode()
        stuffer = DotStuffer()

        def send(chunk: bytes) -> None:
            self.conn.out += stuffer.feed(chunk)

        def end() -> None:
            self.conn.out += stuffer.end()

        await self.stream_body(self.chunks, len(BODY), send, end)


async def _pull(chunks: Iterable[bytes], until: bytes | None = None) -> bytes:
    """Send "pull" then "noop"; read up to ``until``, or until the server closes."""
    class Sender(_Sender):
        pass

    Sender.chunks = chunks
    server = await asyncio.start_server(
        lambda r, w: Sender(_config(60), r, w).run(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"pull\r\nnoop\r\n")
    read = reader.read() if until is None else reader.readuntil(until)
    data = await asyncio.wait_for(read, 5)
    writer.close()
    server.close()
    await server.wait_closed()
    return data


def test_a_whole_body_is_ended_and_the_session_goes_on() -> None:
    data = asyncio.run(_pull([BODY[:7], BODY[7:]], until=b"ok noop\r\n"))
    assert data == b"hello\r\n150 21 octets\r\nline one\r\n..dot line\r\n.\r\nok noop\r\n"


def test_a_body_shorter_than_announced_drops_the_session_without_the_dot() -> None:
    data = asyncio.run(_pull([BODY[:10]]))
    assert data == b"hello\r\n150 21 octets\r\nline one\r\n"  # no ".", no more replies


def test_an_unreadable_body_drops_the_session_without_the_dot() -> None:
    data = asyncio.run(_pull(_broken()))
    assert data == b"hello\r\n150 21 octets\r\nline "
