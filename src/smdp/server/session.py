"""The read loop both ports share: feed bytes to a sans-IO connection, hand
its events to the session, write what it answers, and cut off clients that
stall (issue 4, "slow senders"):

- idle: no byte at all for ``limits.idle_timeout``;
- a command line that does not arrive whole within ``abuse.command_timeout``;
- a data block that, after ``abuse.data_grace`` seconds, has come in slower
  than ``abuse.min_data_rate`` bytes per second on average.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from smdp.config import Config
from smdp.mail.body import Body, BodyWriter
from smdp.protocol.framing import CLOSED, NEED_DATA
from smdp.server.tls import start_tls

log = logging.getLogger("smdp.session")


class SansIoServer(Protocol):
    """What the loop needs of a server-side connection (peer or user port)."""

    def greeting(self) -> bytes: ...
    def receive_data(self, data: bytes) -> None: ...
    def next_event(self) -> Any: ...
    def data_to_send(self) -> bytes: ...
    @property
    def buffered(self) -> int: ...
    @property
    def reply_owed(self) -> Any: ...


class Session:
    """Base of PeerSession and UserSession: the loop; subclasses handle events."""

    conn: SansIoServer

    def __init__(self, config: Config, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.config = config
        self.reader = reader
        self.writer = writer
        self._partial_since: float | None = None  # a command line has begun
        self._block_since: float | None = None  # a data block has begun
        self._block_bytes = 0
        # The plaintext writer after STARTTLS/STLS: kept, because collecting it
        # would close the transport under the TLS layer (see tls.start_tls).
        self._plain_writer: asyncio.StreamWriter | None = None
        # The body of the block being received, past the codec's stream
        # threshold: written to a temporary file as it comes, so that the
        # server never holds a large message whole.
        self._spool: BodyWriter | None = None
        self._spool_error: OSError | None = None

    # -- what a port says and does ---------------------------------------------------

    async def handle(self, event: Any) -> None:
        raise NotImplementedError

    def in_block(self) -> bool:
        """True while the connection reads a data block from the client."""
        raise NotImplementedError

    def closing_line(self, why: str) -> bytes:
        """The last line before the server closes the session."""
        raise NotImplementedError

    def internal_error(self) -> None:
        """Answer the owed reply after a failure in handle()."""
        raise NotImplementedError

    async def start_tls(self, context: ssl.SSLContext) -> bool:
        """Call right after answering STARTTLS/STLS positively: sends that
        answer, then takes the TLS handshake. False when it failed; the session
        then ends (the client may be half-way into TLS: no plaintext reply
        could reach it as one)."""
        self._write(self.conn.data_to_send())
        plain = self.writer
        try:
            self.reader, self.writer = await start_tls(self.reader, plain, context,
                                                       server_side=True)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.info("TLS handshake failed: %s", exc)
            self.conn.receive_data(b"")  # nothing more will be read: end the session
            return False
        self._plain_writer = plain
        self._partial_since = None
        return True

    # -- message bodies in and out, a chunk at a time ---------------------------------

    def spool_chunk(self, data: bytes) -> None:
        """A :class:`BlockChunk` of the block being received."""
        if self._spool_error is not None:
            return  # the block is read to its end and then refused
        if self._spool is None:
            self._spool = BodyWriter(directory=self.config.spool_dir)
        try:
            self._spool.write(data)
        except OSError as exc:
            log.error("cannot spool a message body: %s", exc)
            self._spool_error = exc
            self._spool.discard()

    def spooled_body(self, rest: bytes) -> Body | OSError:
        """The whole received body: what was spooled and the final event's
        ``rest``. An OSError (a full disk) means it could not be kept; the
        caller refuses the message with a temporary error."""
        spool, error = self._spool, self._spool_error
        self._spool, self._spool_error = None, None
        if error is not None:
            return error
        # Every line of a block the data readers hand out ends with CRLF
        # (framing.DataBlockReader makes a bare LF one, SMTP's refuses it):
        # the submission's line ends need not look for a bare LF again.
        if spool is None:
            return Body.of(rest, no_bare_lf=True)
        try:
            spool.write(rest)
        except OSError as exc:
            spool.discard()
            return exc
        return spool.finish(no_bare_lf=True)

    def drop_spool(self) -> None:
        """The block failed or was abandoned: forget what was spooled."""
        if self._spool is not None:
            self._spool.discard()
        self._spool, self._spool_error = None, None

    async def stream_body(
        self, chunks: Iterable[bytes], size: int,
        send_chunk: Callable[[bytes], None], end: Callable[[], None],
    ) -> None:
        """Send a stored body chunk by chunk (the start line already queued).

        ``chunks`` reads the store lazily (``mail.body.stored_chunks``). A
        body that changes while it is sent (deleted by expiry, say) must never
        reach the client cut short and ended as if whole: the connection is
        dropped instead, without the terminating ".", so the client retries.
        """
        sent = 0
        pieces = iter(chunks)
        while True:
            try:
                chunk = next(pieces, None)
            except Exception:
                # Half a body is on its way: no reply can follow it, only an
                # end to the session (the client retries).
                log.exception("cannot read a stored body; dropping the session")
                self.writer.transport.abort()
                raise ConnectionAbortedError("stored body unreadable") from None
            if chunk is None:
                break
            sent += len(chunk)
            send_chunk(chunk)
            self._write(self.conn.data_to_send())
            if not await self._drain():
                raise ConnectionAbortedError("the client stopped reading a body")
        if sent != size:
            log.error("stored body is %d octets, %d expected; dropping the session", sent, size)
            self.writer.transport.abort()
            raise ConnectionAbortedError("stored body changed while being sent")
        end()

    # -- the loop --------------------------------------------------------------------

    def _cutoff(self, now: float) -> tuple[float, str]:
        """The time this session is cut off if nothing changes, and why."""
        limits, abuse = self.config.limits, self.config.abuse
        cut, why = now + limits.idle_timeout, "idle too long"
        if self._block_since is not None:
            # The block may take as long as its bytes justify at min_data_rate.
            slow = self._block_since + max(abuse.data_grace,
                                           self._block_bytes / abuse.min_data_rate)
            if slow < cut:
                cut, why = slow, "data arriving too slowly"
        elif self._partial_since is not None:
            slow = self._partial_since + abuse.command_timeout
            if slow < cut:
                cut, why = slow, "command line arriving too slowly"
        return cut, why

    def _track(self, now: float, received: int) -> None:
        if self.in_block():
            if self._block_since is None:
                self._block_since, self._block_bytes = now, 0
            self._block_bytes += received
            self._partial_since = None
        else:
            self._block_since = None
            if self.conn.buffered == 0:
                self._partial_since = None
            elif self._partial_since is None:
                self._partial_since = now

    async def run(self) -> None:
        try:
            self._write(self.conn.greeting())
            while True:
                event = self.conn.next_event()
                if event is NEED_DATA:
                    self._write(self.conn.data_to_send())
                    if not await self._drain():
                        break
                    now = time.monotonic()
                    self._track(now, 0)
                    cut, why = self._cutoff(now)
                    try:
                        # asyncio.timeout, not wait_for: no task per read
                        # (wait_for wraps each read in one). A deadline already
                        # past cuts off at once, as wait_for(..., 0) did.
                        if cut <= now:
                            raise TimeoutError
                        async with asyncio.timeout(cut - now):
                            data = await self.reader.read(65536)
                    except TimeoutError:
                        self._write(self.closing_line(why))
                        log.info("session cut off: %s", why)
                        break
                    self.conn.receive_data(data)
                    self._track(time.monotonic(), len(data))
                    continue
                if event is CLOSED:
                    break
                try:
                    await self.handle(event)
                except ConnectionError:
                    raise  # the session is over (see stream_body)
                except Exception:
                    log.exception("%s failed", type(event).__name__)
                    if self.conn.reply_owed is not None:
                        self.internal_error()
            self._write(self.conn.data_to_send())
            await self._drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.drop_spool()
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 5.0)
            except Exception:
                self.writer.transport.abort()  # a peer that never reads is not waited for

    def _write(self, data: bytes) -> None:
        """Hand our output to the transport. A closed transport (the client
        went, a failed TLS handshake, a cut-off) ends the session: asyncio's
        own loop drops such writes and lets the next read or drain notice,
        uvloop raises RuntimeError at once; both end here, the same way."""
        if self.writer.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.writer.write(data)

    async def _drain(self) -> bool:
        """Wait for our replies to leave; a client that stops reading them is cut
        off like an idle one (it would hold its session slot forever)."""
        try:
            async with asyncio.timeout(self.config.limits.idle_timeout):
                await self.writer.drain()
        except TimeoutError:
            log.info("session cut off: the client does not read its replies")
            self.writer.transport.abort()
            return False
        return True
