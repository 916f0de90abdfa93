"""The outgoing peer session: one connection to another SMDP server, driven
through the sans-IO client codec (mox keeps this apart as ``smtpclient``).

It speaks Table 4 and reports what the peer said; what to do about it (retry,
give up, which recipient failed) is the queue's and the rules' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from smdp.config import Config
from smdp.core.origin import Answer
from smdp.mail.body import CHUNK_SIZE, Body, BodyWriter
from smdp.protocol import peer as wire
from smdp.protocol.framing import CLOSED, NEED_DATA, BlockChunk
from smdp.server import durable_io
from smdp.server.delivery import PermanentFailure, TemporaryFailure
from smdp.server.discovery import Discovery, DiscoveryError
from smdp.server.durable_io import DurableGate
from smdp.server.tls import TlsError, TlsPolicy, peer_certificate, start_tls


@dataclass(frozen=True, slots=True)
class PulledMessage:
    """The answer to a pulling decision, its body gathered chunk by chunk."""

    code: int
    text: str
    body: Body


class PeerLink:
    """One outgoing peer session, driven through the sans-IO client codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float, max_message_size: int, spool_dir: str | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.spool_dir = spool_dir
        self.pipelining = False  # the server listed PIPELINING in its EHLO reply
        # A pulled body comes in chunks, spooled to a file past 1 MiB.
        self.conn = wire.PeerClientConnection(
            max_message_size=max_message_size, stream_threshold=CHUNK_SIZE
        )
        # After STARTTLS: the plaintext writer, kept so that collecting it does
        # not close the transport under the TLS layer (see tls.start_tls).
        self._plain_writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, address: str, port: int, timeout: float,
                   max_message_size: int, spool_dir: str | None = None,
                   gate: DurableGate | None = None) -> PeerLink:
        try:
            reader, writer = await asyncio.wait_for(
                durable_io.open_connection(address, port, gate), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"cannot connect to {address}:{port}: {exc}",
                                   unreachable=True) from None
        link = cls(reader, writer, timeout, max_message_size, spool_dir)
        greeting = await link.read_reply()
        if not isinstance(greeting, wire.Reply) or greeting.code != 220:
            await link.close()
            raise TemporaryFailure(f"unexpected greeting from {address}:{port}")
        return link

    async def read_reply(self) -> wire.Reply | PulledMessage:
        spool = BodyWriter(directory=self.spool_dir)  # no file unless a large body comes
        try:
            return await self._read_reply(spool)
        except BaseException:
            spool.discard()
            raise

    async def _read_reply(self, spool: BodyWriter) -> wire.Reply | PulledMessage:
        while True:
            event = self.conn.next_event()
            if isinstance(event, BlockChunk):
                try:
                    spool.write(event.data)
                except OSError as exc:
                    raise TemporaryFailure(f"cannot spool the pulled body: {exc}") from None
                continue
            if isinstance(event, wire.PulledBody):
                try:
                    spool.write(event.body)
                except OSError as exc:
                    raise TemporaryFailure(f"cannot spool the pulled body: {exc}") from None
                return PulledMessage(event.code, event.text, spool.finish())
            if event is NEED_DATA:
                try:
                    async with asyncio.timeout(self.timeout):  # no task per read
                        data = await self.reader.read(65536)
                except (OSError, TimeoutError) as exc:
                    raise TemporaryFailure(f"connection lost: {exc}") from None
                if not data:
                    raise TemporaryFailure("the peer closed the connection")
                self.conn.receive_data(data)
                continue
            if event is CLOSED:
                raise TemporaryFailure("the peer closed the connection")
            assert isinstance(event, wire.Reply)
            return event

    async def command(self, command: wire.PeerCommand) -> wire.Reply | PulledMessage:
        try:
            self.writer.write(self.conn.send(command))
            await self.writer.drain()
        except (OSError, wire.RemoteProtocolError) as exc:
            raise TemporaryFailure(f"connection lost: {exc}") from None
        try:
            return await self.read_reply()
        except wire.RemoteProtocolError as exc:
            raise TemporaryFailure(f"the peer broke the protocol: {exc}") from None

    async def pipeline(self, commands: list[wire.PeerCommand]) -> list[wire.Reply]:
        """Send ``commands`` in one write, then read their replies in order."""
        try:
            self.writer.write(b"".join(self.conn.send(command) for command in commands))
            await self.writer.drain()
        except (OSError, wire.RemoteProtocolError) as exc:
            raise TemporaryFailure(f"connection lost: {exc}") from None
        replies: list[wire.Reply] = []
        try:
            for _command in commands:
                reply = await self.read_reply()
                if isinstance(reply, PulledMessage):
                    raise PermanentFailure("unexpected message body")
                replies.append(reply)
        except wire.RemoteProtocolError as exc:
            raise TemporaryFailure(f"the peer broke the protocol: {exc}") from None
        return replies

    async def send_body(self, chunks: Iterable[bytes], size: int) -> None:
        """After a 354: the stored body, a chunk at a time, then the end of data.

        A body that changed while being sent (it can only shrink: expiry) must
        not arrive cut short and ended as whole; the session is dropped instead.
        """
        sent = 0
        try:
            for chunk in chunks:
                sent += len(chunk)
                self.writer.write(self.conn.send(wire.DataPart(chunk)))
                async with asyncio.timeout(self.timeout):
                    await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"connection lost: {exc}") from None
        if sent != size:
            self.writer.transport.abort()
            raise TemporaryFailure(f"the stored body is {sent} octets, {size} expected")
        await self.expect(wire.DataEnd(), "end of data")

    async def expect(self, command: wire.PeerCommand, what: str) -> wire.Reply:
        reply = await self.command(command)
        if isinstance(reply, PulledMessage):
            raise PermanentFailure(f"{what}: unexpected message body")
        check(reply, what)
        return reply

    async def starttls(self, context: ssl.SSLContext, hostname: str, pin: str | None) -> None:
        """RFC 3207 from the client side: STARTTLS, then the handshake with
        the server named ``hostname`` (the name discovery gave, never the
        address), then the pin if the configuration has one. Any failure is
        temporary: the route waits and retries, and the sender sees why."""
        reply = await self.command(wire.StartTls())
        if not isinstance(reply, wire.Reply) or reply.code != 220:
            what = f"{reply.code} {reply.text}" if isinstance(reply, wire.Reply) else "a body"
            raise TemporaryFailure(f"STARTTLS refused by {hostname}: {what}", unreachable=True)
        try:
            self.conn.start_tls()
        except wire.RemoteProtocolError as exc:
            raise TemporaryFailure(f"STARTTLS with {hostname}: {exc}",
                                   unreachable=True) from None
        plain = self.writer
        try:
            self.reader, self.writer = await start_tls(
                self.reader, plain, context, server_side=False, server_hostname=hostname,
                timeout=self.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TemporaryFailure(f"TLS with {hostname} failed: certificate not accepted: "
                                   f"{exc.verify_message}", unreachable=True) from None
        except (OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"TLS with {hostname} failed: {exc}",
                                   unreachable=True) from None
        self._plain_writer = plain
        if pin is not None:
            cert = peer_certificate(self.writer.get_extra_info("ssl_object"), verified=False)
            try:
                TlsPolicy.check_pin(cert, pin, hostname)
            except TlsError as exc:
                raise TemporaryFailure(f"TLS with {hostname} failed: {exc}",
                                       unreachable=True) from None

    async def close(self) -> None:
        """QUIT and wait briefly for the 221 (RFC 5321 4.1.1.10); best effort."""
        with contextlib.suppress(Exception):  # the work is done; closing may fail
            if not self.writer.is_closing():
                self.writer.write(self.conn.send(wire.Quit()))
                await asyncio.wait_for(self.writer.drain(), 2)
                await asyncio.wait_for(self.read_reply(), 2)
        self.writer.close()


def check(reply: wire.Reply, what: str) -> None:
    if reply.code >= 500:
        raise PermanentFailure(f"{what}: {reply.code} {reply.text}")
    if reply.code >= 400:
        raise TemporaryFailure(f"{what}: {reply.code} {reply.text}")


def answer_of(reply: wire.Reply) -> Answer:
    """A RCPT reply as the rules read it (protocol.md 6): 2xx taken, 551 not
    authorized (a direct send falls back to an envelope), other 5xx a
    refusal, 4xx a deferral."""
    if reply.ok:
        return Answer.TAKEN
    if reply.code == 551:
        return Answer.UNAUTHORIZED
    return Answer.REFUSED if reply.code >= 500 else Answer.DEFERRED


async def open_session(domain: str, *, config: Config, tls: TlsPolicy, discovery: Discovery,
                       timeout: float, gate: DurableGate | None = None) -> PeerLink:
    """A greeted peer session to ``domain``'s SMDP server: EHLO, and STARTTLS
    whenever offered (it lets the peer verify our client certificate, the
    proof of origin of protocol.md 15)."""
    try:
        peer = await discovery.resolve(domain)
    except DiscoveryError as exc:
        if exc.transient:
            raise TemporaryFailure(str(exc), unreachable=True) from None
        # RFC 3463 X.1.2: the destination domain has no SMDP server.
        raise PermanentFailure(str(exc), status="5.1.2") from None
    link = await PeerLink.open(peer.address, peer.port, timeout,
                               config.limits.max_message_size, config.spool_dir, gate)
    ehlo = wire.Helo(config.hostname, True)
    try:
        reply = await link.expect(ehlo, "EHLO")
        if any(line.upper().split()[:1] == ["STARTTLS"] for line in reply.lines[1:]):
            context, pin = tls.client_context(domain)
            await link.starttls(context, peer.hostname, pin)
            reply = await link.expect(ehlo, "EHLO")  # RFC 3207: introduce ourselves anew
        elif tls.require:
            raise TemporaryFailure(f"{peer.hostname} does not offer STARTTLS and this "
                                   "server requires TLS ([tls] require)", unreachable=True)
        link.pipelining = any(line.upper().split()[:1] == ["PIPELINING"]
                              for line in reply.lines[1:])
    except BaseException:
        await link.close()
        raise
    return link
