"""No answer before its commit is durable: the one choke point of group commit.

With group commit (smdp.store.group_commit) a COMMIT returns before its fsync.
Every promise a server makes travels as bytes on a socket: a 250 to DATA, the
+OK to a decision, RECEIVED to an origin, an HTTP response, an IMAP tagged OK.
So every transport the server reads and writes, on every port and every
outgoing connection, is wrapped here: bytes written while commits are still
waiting for their fsync are held, in order, and handed to the real transport
once the flusher has made every commit made before the write durable. Bytes
written when nothing is waiting go straight through.

Holding at the transport rather than in each session means a new port or a
new reply cannot forget it: ``start_server`` and ``open_connection`` below
are how the server listens (``app._listen``, the web listener) and how its
worker connects to peers and SMTP servers, and ``tls.start_tls`` wraps the
transport it upgrades to. Not held, on purpose, as they promise nothing about
the store: the metrics listener, the one-click unsubscribe POST to a list's
server (sent again if its record is lost) and the MTA-STS policy fetch.

The price: a reply that follows no commit of its own still waits while
another session's commit is being flushed (one fsync, a millisecond or two),
since it cannot be told apart from one that does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from smdp.store.group_commit import WalFlusher

log = logging.getLogger(__name__)

Connected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# asyncio.start_server's default line limit.
_STREAM_LIMIT = 2**16
# Held bytes past this pause the session's writer (its ``drain()`` waits) and
# below the second resume it, as asyncio's own transports do for their
# buffers: a body streamed behind a held reply waits in the store, not in
# memory.
HELD_HIGH = 64 * 1024
HELD_LOW = 16 * 1024


class DurableGate:
    """The transports of one server, held until its store's commits are durable."""

    def __init__(self, flusher: WalFlusher) -> None:
        self.flusher = flusher
        self._loop: asyncio.AbstractEventLoop | None = None
        self._holding: set[GatedTransport] = set()
        flusher.add_listener(self._from_flusher)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the transports run in (the server's, at start)."""
        self._loop = loop

    def close(self) -> None:
        self.flusher.remove_listener(self._from_flusher)

    def protocol(self, inner: asyncio.BaseProtocol) -> GatedProtocol:
        """A protocol that hands ``inner`` the held transport instead of the real one."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return GatedProtocol(inner, self)

    # -- called by the transports and the flusher ------------------------------------

    def hold(self, transport: GatedTransport) -> None:
        self._holding.add(transport)

    def let_go(self, transport: GatedTransport) -> None:
        self._holding.discard(transport)

    def _from_flusher(self) -> None:
        """The flusher's thread: ``durable`` moved (or the flusher failed)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        failed = self.flusher.failure is not None
        durable = self.flusher.durable
        for transport in list(self._holding):
            if failed:
                transport.drop()  # the answer may promise what was lost: never send it
                continue
            try:
                transport.release(durable)
            except Exception:
                # One transport that fails (a write_eof TLS refuses) must not
                # leave the others held until some later fsync, or forever.
                log.exception("cannot release held bytes; dropping the connection")
                transport.drop()


class GatedTransport(asyncio.Transport):
    """A transport whose writes wait for the commits made before them."""

    def __init__(self, inner: asyncio.Transport, gate: DurableGate,
                 protocol: GatedProtocol) -> None:
        super().__init__()
        self.inner = inner
        self._gate = gate
        self._protocol = protocol
        # (commits that must be durable first, bytes), in the order written.
        self._held: deque[tuple[int, bytearray]] = deque()
        self._held_size = 0
        self._close_after = False
        self._abort_after = False
        self._eof_after = False
        self._flushed: list[asyncio.Future[None]] = []

    @property
    def gate(self) -> DurableGate:
        return self._gate

    # -- writing ---------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._close_after or self._abort_after or self._eof_after:
            return  # as asyncio's transports do: nothing goes after a close
        if not self._held:
            if self._gate.flusher.is_durable():
                self.inner.write(data)
                return
            if self._gate.flusher.failure is not None:
                self.drop()
                return
        target = self._gate.flusher.written
        if self._held and self._held[-1][0] == target:
            self._held[-1][1].extend(data)
        else:
            self._held.append((target, bytearray(data)))
        self._held_size += len(data)
        self._gate.hold(self)
        if self._held_size > HELD_HIGH:
            self._protocol.held_pause()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def release(self, durable: int) -> None:
        """Send what the commits durable so far allow (the loop's thread)."""
        while self._held and self._held[0][0] <= durable:
            _, data = self._held.popleft()
            self._held_size -= len(data)
            if not self.inner.is_closing():
                self.inner.write(data)
        if self._held_size <= HELD_LOW:
            self._protocol.held_resume()
        if self._held:
            return
        self._gate.let_go(self)
        if self._eof_after and not self.inner.is_closing():
            self.inner.write_eof()
        if self._abort_after:
            self.inner.abort()
        elif self._close_after:
            self.inner.close()
        self._wake(None)

    async def flushed(self) -> None:
        """Return once every byte written so far has gone to the real transport."""
        if not self._held:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._flushed.append(waiter)
        await waiter

    def _wake(self, exc: BaseException | None) -> None:
        waiters, self._flushed = self._flushed, []
        for waiter in waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def write_eof(self) -> None:
        if self._held:
            self._eof_after = True
        else:
            self.inner.write_eof()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size() + self._held_size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        if self._held:
            self._close_after = True  # after the held bytes, as a plain close would
        else:
            self.inner.close()

    def abort(self) -> None:
        """After the held bytes, as before group commit an abort came after
        the replies already written: a session that aborts because half a
        body is out (no reply can follow it) still sends the replies to the
        commands before it, once durable. Nothing more is taken."""
        if self._held and self._gate.flusher.failure is None:
            self._abort_after = True
        else:
            self.drop()

    def drop(self) -> None:
        """Abort now, held bytes unsent (an fsync failed: they may promise
        what was lost)."""
        self._held.clear()
        self._held_size = 0
        self._gate.let_go(self)
        self.inner.abort()
        self._protocol.held_resume()
        self._wake(ConnectionResetError("the connection was aborted"))

    def is_closing(self) -> bool:
        return self._close_after or self._abort_after or self.inner.is_closing()

    def connection_lost(self, exc: BaseException | None) -> None:
        """The real connection is gone: what is held can never be sent, and
        whoever waits for it (``flushed``, before a TLS upgrade) must learn
        now, as no release will come for a transport no longer held."""
        self._held.clear()
        self._held_size = 0
        self._gate.let_go(self)
        self._wake(exc if exc is not None else ConnectionResetError("the connection was lost"))

    # -- everything else is the real transport's ---------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.inner.get_protocol()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()


class GatedProtocol(asyncio.Protocol):
    """Passes everything to ``inner``, which sees the held transport.

    Writing is paused for ``inner`` while either the real transport's buffer
    or the held bytes are past their mark, and resumed when neither is (a
    protocol must not be paused twice)."""

    def __init__(self, inner: asyncio.BaseProtocol, gate: DurableGate) -> None:
        self.inner = inner
        self._gate = gate
        self.transport: GatedTransport | None = None
        self._real_paused = False
        self._held_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio's classes: cast.
        self.transport = GatedTransport(cast(asyncio.Transport, transport), self._gate, self)
        self.inner.connection_made(self.transport)

    def data_received(self, data: bytes) -> None:
        cast(asyncio.Protocol, self.inner).data_received(data)

    def eof_received(self) -> bool | None:
        return cast(asyncio.Protocol, self.inner).eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.transport.connection_lost(exc)
        self._held_paused = False  # drain() learns from the inner protocol's connection_lost
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not (self._real_paused or self._held_paused):
            self.inner.pause_writing()
        self._real_paused = True

    def resume_writing(self) -> None:
        self._real_paused = False
        if not self._held_paused:
            self.inner.resume_writing()

    def held_pause(self) -> None:
        if not (self._real_paused or self._held_paused):
            self.inner.pause_writing()
        self._held_paused = True

    def held_resume(self) -> None:
        if not self._held_paused:
            return
        self._held_paused = False
        if not self._real_paused:
            self.inner.resume_writing()


async def start_server(connected: Connected, host: str | None, port: int | None,
                       gate: DurableGate | None, **kwargs: Any) -> asyncio.Server:
    """``asyncio.start_server``, its sessions' writes held by ``gate``."""
    if gate is None:
        return await asyncio.start_server(connected, host, port, **kwargs)
    loop = asyncio.get_running_loop()
    limit = kwargs.pop("limit", _STREAM_LIMIT)

    def factory() -> asyncio.BaseProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return gate.protocol(asyncio.StreamReaderProtocol(reader, connected, loop=loop))

    return await loop.create_server(factory, host, port, **kwargs)


async def open_connection(host: str, port: int, gate: DurableGate | None,
                          ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection``, its writes held by ``gate``."""
    if gate is None:
        return await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    outer = GatedProtocol(protocol, gate)
    await loop.create_connection(lambda: outer, host, port)
    assert outer.transport is not None  # set by connection_made
    return reader, asyncio.StreamWriter(outer.transport, protocol, reader, loop)


async def unwrapped(transport: asyncio.WriteTransport,
                    ) -> tuple[asyncio.WriteTransport, DurableGate | None]:
    """Before a TLS upgrade: the real transport, once every held byte has
    gone out through it (loop.start_tls wants the loop's own transport), and
    the gate to wrap the upgraded one with."""
    if not isinstance(transport, GatedTransport):
        return transport, None
    await transport.flushed()
    return transport.inner, transport.gate


__all__ = ["Connected", "DurableGate", "GatedProtocol", "GatedTransport", "open_connection",
           "start_server", "unwrapped"]
