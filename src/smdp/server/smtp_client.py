"""One outgoing SMTP session to an MX host, driven through the sans-IO SMTP
client codec (``protocol/smtp``), as ``peer_client.py`` drives the SMDP one.

It speaks SMTP and reports what the server said; what becomes of each
recipient (delivered, failed, retried, the next MX host) is decided by the
caller, ``delivery_jobs.PeerJobs.send_smtp`` (docs/smtp.md, "Outbound
delivery").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Sequence

from smdp.protocol import smtp
from smdp.server import durable_io
from smdp.server.durable_io import DurableGate
from smdp.server.tls import start_tls

__all__ = ["OutcomeUnknown", "SessionLost", "SmtpLink"]


class SessionLost(Exception):
    """The session cannot go on: no connection, a broken one, a timeout, a
    greeting that is not 220, or a server that broke the protocol. The
    message says why, naming the host."""


class OutcomeUnknown(SessionLost):
    """The session was lost after the end of data had been (partly) sent
    and before its reply came: the server may have taken the message."""


class SmtpLink:
    """One SMTP session, from the greeting to QUIT."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 where: str, timeout: float, data_timeout: float | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.where = where  # "mx.example.net [192.0.2.1]:25", for reasons
        self.timeout = timeout  # any one read or write
        # The wait for the reply to the end of data (RFC 5321 4.5.3.2.6).
        self.data_timeout = data_timeout if data_timeout is not None else timeout
        self.conn = smtp.SmtpClientConnection()
        # After STARTTLS: the plaintext writer, kept so that collecting it does
        # not close the transport under the TLS layer (see tls.start_tls).
        self._plain_writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, host: str, address: str, port: int, timeout: float,
                   data_timeout: float | None = None,
                   gate: DurableGate | None = None) -> SmtpLink:
        """Connect and read the greeting: 220, or SessionLost (a 4xx or 5xx
        greeting means: try the next host, RFC 5321 3.1 and 5.1)."""
        where = f"{host} [{address}]:{port}"
        try:
            reader, writer = await asyncio.wait_for(
                durable_io.open_connection(address, port, gate), timeout)
        except (OSError, TimeoutError) as exc:
            raise SessionLost(f"cannot connect to {where}: {exc or type(exc).__name__}") from None
        link = cls(reader, writer, where, timeout, data_timeout)
        try:
            greeting = await link.read_reply()
        except BaseException:
            link.abort()
            raise
        if greeting.code != 220:
            await link.close()
            raise SessionLost(f"{where} greeted with {greeting}")
        return link

    async def read_reply(self, timeout: float | None = None) -> smtp.Reply:
        wait = self.timeout if timeout is None else timeout
        while True:
            try:
                event = self.conn.next_event()
            except smtp.RemoteProtocolError as exc:
                raise SessionLost(f"{self.where} broke the protocol: {exc}") from None
            if event is smtp.NEED_DATA:
                try:
                    async with asyncio.timeout(wait):
                        data = await self.reader.read(65536)
                except (OSError, TimeoutError) as exc:
                    raise SessionLost(f"connection to {self.where} lost: "
                                      f"{exc or type(exc).__name__}") from None
                if not data:
                    raise SessionLost(f"{self.where} closed the connection")
                self.conn.receive_data(data)
                continue
            if event is smtp.CLOSED:
                raise SessionLost(f"{self.where} closed the connection")
            if isinstance(event, smtp.Reply):
                return event
            raise SessionLost(f"{self.where} sent something unexpected")

    async def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise SessionLost(f"connection to {self.where} lost: "
                              f"{exc or type(exc).__name__}") from None

    async def command(self, command: smtp.SmtpCommand) -> smtp.Reply:
        await self._write(self.conn.send(command))
        return await self.read_reply()

    async def pipeline(self, commands: Sequence[smtp.SmtpCommand]) -> list[smtp.Reply]:
        """RFC 2920: the group in one write, then its replies in order."""
        await self._write(self.conn.pipeline(commands))
        return [await self.read_reply() for _command in commands]

    async def hello(self, name: str) -> smtp.Capabilities | None:
        """EHLO, and HELO when EHLO is refused for good (RFC 5321 3.2): the
        capabilities, None after HELO (no extension at all). SessionLost when
        the server takes neither."""
        reply = await self.command(smtp.Helo(name, True))
        if reply.code == 250:
            return self.conn.capabilities
        if 500 <= reply.code < 600:
            reply = await self.command(smtp.Helo(name, False))
            if reply.code == 250:
                return None
        raise SessionLost(f"{self.where} refused our greeting: {reply}")

    async def starttls(self, context: ssl.SSLContext, hostname: str) -> BaseException | None:
        """RFC 3207: STARTTLS and the handshake with the server named
        ``hostname`` (the MX host name, never the address). Returns None when
        the session now runs over TLS, else what went wrong (a refused
        STARTTLS, or the handshake's error) for ``mta_sts.handshake_outcome``;
        the connection is then unusable and the caller drops it."""
        reply = await self.command(smtp.StartTls())
        if reply.code != 220:
            return ConnectionError(f"STARTTLS refused: {reply}")
        try:
            self.conn.start_tls()
        except smtp.RemoteProtocolError as exc:
            return exc
        plain = self.writer
        try:
            self.reader, self.writer = await start_tls(
                self.reader, plain, context, server_side=False, server_hostname=hostname,
                timeout=self.timeout)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            return exc
        self._plain_writer = plain
        return None

    async def send_message(self, head: bytes, chunks: Iterable[bytes],
                           size: int) -> smtp.Reply:
        """After DATA's 354: ``head`` (the DKIM-Signature field, or nothing),
        then the stored body a chunk at a time, then the end of data; the
        reply to it. A body that is not ``size`` octets (it changed while
        being sent: expiry) is never ended as if whole: the connection is
        cut instead."""
        sent = 0
        if head:
            await self._write(self.conn.send(smtp.DataPart(head)))
        for chunk in chunks:
            sent += len(chunk)
            await self._write(self.conn.send(smtp.DataPart(chunk)))
        if sent != size:
            self.abort()
            raise SessionLost(f"the stored body is {sent} octets, {size} expected")
        try:
            await self._write(self.conn.send(smtp.DataEnd()))
            return await self.read_reply(self.data_timeout)
        except SessionLost as exc:
            raise OutcomeUnknown(f"{exc}, after the end of the message was sent") from None

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.transport.abort()

    async def close(self) -> None:
        """QUIT and wait briefly for the 221 (RFC 5321 4.1.1.10); best effort."""
        with contextlib.suppress(Exception):  # the work is done; closing may fail
            if not self.writer.is_closing():
                self.writer.write(self.conn.send(smtp.Quit()))
                await asyncio.wait_for(self.writer.drain(), 2)
                await asyncio.wait_for(self.read_reply(), 2)
        with contextlib.suppress(Exception):
            self.writer.close()
