"""The peer port (Table 4): an asyncio adapter between sockets, the sans-IO
peer codec and the domain core. It decides nothing of its own beyond who the
peer may speak for (contract 2.6, and with TLS the proof of origin of
docs/protocol.md section 15); the rules live in ``smdp.core``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from smdp.core.envelope import MAX_BLOCK_OCTETS, EnvelopeError
from smdp.core.groups import Reach
from smdp.core.quality import Standing
from smdp.mail.addresses import domain_of
from smdp.mail.body import CHUNK_SIZE, Body, stored_chunks
from smdp.protocol import peer as wire
from smdp.protocol.framing import BlockChunk
from smdp.server.discovery import DiscoveryError
from smdp.server.replies import peer_reply
from smdp.server.services import PeerPort
from smdp.server.session import Session
from smdp.server.tls import peer_certificate
from smdp.terms import DeliveryMode

log = logging.getLogger("smdp.peer")


@dataclass(slots=True)
class _Transaction:
    mode: DeliveryMode  # ENVELOPE, or MAIL: the whole message (Table 3)
    sender: str
    envid: str
    size: int | None
    recipients: list[str] = field(default_factory=list)
    # Whom each recipient reaches, as looked up at RCPT: the transaction that
    # stores the envelope uses it instead of looking again.
    reached: dict[str, Reach] = field(default_factory=dict)


class PeerSession(Session):
    conn: wire.PeerServerConnection

    def __init__(self, port: PeerPort, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(port.core.config, reader, writer)
        self.port = port
        self.core = port.core
        self.store = port.core.store
        limits = self.config.limits
        ssl_object = writer.get_extra_info("ssl_object")  # set on the implicit-TLS port
        self.conn = wire.PeerServerConnection(
            self.config.hostname,
            max_message_size=limits.max_message_size,
            max_recipients=limits.max_recipients,
            max_command_line=limits.max_command_line,
            max_line_length=limits.max_line_length,
            tls=ssl_object is not None,
            stream_threshold=CHUNK_SIZE,  # bodies come in chunks, never whole
            # Refused while it arrives, not after it was read whole.
            max_envelope_block=MAX_BLOCK_OCTETS,
        )
        # The client certificate: the only thing that proves who the peer is.
        self.peer_cert = peer_certificate(ssl_object)
        # Where the connection comes from: without a certificate, the peer
        # must connect from an address of the server it names (protocol.md 10.2).
        peername = writer.get_extra_info("peername")
        self.client = str(peername[0]) if peername else "?"
        # The EHLO name; once a command proved the peer to be the server of a
        # domain, the name it proved (quality, quotas and lists use it).
        self.peer_host: str | None = None
        self.txn: _Transaction | None = None
        self.transactions = 0  # ENVELOPE/MAIL taken in this session

    def in_block(self) -> bool:
        return self.conn.state is wire.PeerState.DATA_IN

    def closing_line(self, why: str) -> bytes:
        # Peer replies are sentences, as in SMTP: "421 4.4.2 Idle too long, closing".
        return f"421 4.4.2 {why[:1].upper()}{why[1:]}, closing\r\n".encode()

    def internal_error(self) -> None:
        # A failed transaction rolled back; the peer may retry.
        self.txn = None
        self.reply(451, "4.3.0 Local error; nothing was stored, try again later")

    def reply(self, code: int, text: str | list[str]) -> None:
        self.conn.reply(code, text)

    async def handle(self, event: object) -> None:
        config = self.config
        match event:
            case wire.Helo(hostname=hostname, extended=extended):
                self.peer_host = hostname.lower()
                self.txn = None
                greeting = f"{config.hostname} hello {hostname}"
                if extended:
                    keywords = [greeting, "SMDP 1", "PIPELINING",
                                f"SIZE {config.limits.max_message_size}"]
                    if self.port.tls.peer_server_context is not None and not self.conn.tls:
                        keywords.append("STARTTLS")  # RFC 3207: offered until in use
                    self.reply(250, keywords)
                else:
                    self.reply(250, greeting)
            case wire.StartTls():
                await self._starttls()
            case wire.EnvelopeStart() | wire.MailStart():
                await self._start(event)
            case wire.Rcpt() | wire.SizeDecl() | wire.DataComplete() if self.txn is None:
                # A local error (internal_error) dropped the transaction while
                # the codec still counts it open: refuse the rest of it.
                self.drop_spool()
                self.reply(451, "4.3.0 Local error earlier in this transaction; send RSET")
            case wire.Rcpt(recipient=rcpt):
                self._recipient(rcpt)
            case wire.SizeDecl(size=size):
                assert self.txn is not None
                self.txn.size = size
                self.reply(250, f"2.3.0 Size {size} ok")
            case wire.DataStart():
                self.reply(354, "Send data, end with <CRLF>.<CRLF>")
            case BlockChunk(data=data):
                self.spool_chunk(data)
            case wire.DataComplete(data=data):
                self._complete(self.spooled_body(data))
            case wire.DataFailed():
                self.drop_spool()
                self.txn = None
            case wire.Decision():
                await self._decision(event)
            case wire.Received(envid=envid):
                env = self.store.out_envelope(envid)
                if env is not None and not await self._speaks_for(env.domain):
                    return
                confirmed = self.core.origin.on_received(envid, env)
                if confirmed.ok:
                    log.info("transfer confirmed envid=%s peer=%s", envid, self.peer_host)
                self.reply(*peer_reply(confirmed))
            case wire.Rset():
                self.txn = None
                self.reply(250, "2.0.0 Reset")
            case wire.Noop():
                self.reply(250, "2.0.0 OK")
            case wire.Quit():
                self.reply(221, f"2.0.0 {config.hostname} closing")
            case _:
                self.reply(502, "5.5.1 Command not implemented")

    async def _starttls(self) -> None:
        context = self.port.tls.peer_server_context
        if context is None:
            self.reply(454, "4.7.0 TLS not available")
            return
        self.reply(220, "2.0.0 Ready to start TLS")
        # RFC 3207 section 4.2: the session starts over; the client must EHLO
        # again, and nothing said before counts.
        self.peer_host, self.txn = None, None
        if await self.start_tls(context):
            self.peer_cert = peer_certificate(self.writer.get_extra_info("ssl_object"))

    async def _speaks_for(self, domain: str, *, announcing: bool = False) -> bool:
        """Who may say what (protocol.md 10.2 and 15): the peer is the SMDP
        server of ``domain`` only if its TLS client certificate proves it.

        The EHLO name counts only where the configuration allows peers
        without TLS (``[tls] require = false``, or no certificate) and the
        peer showed no certificate, and then only from an address of the
        server it names; a certificate, once shown, is the only identity.
        ``announcing``: an ENVELOPE or MAIL, which is a forgery if unproven.
        """
        assert self.peer_host is not None
        tls, discovery = self.port.tls, self.port.discovery
        if tls.require and not self.conn.tls:
            self.reply(530, "5.7.0 Must issue a STARTTLS command first")
            return False
        if self.peer_cert is None and not tls.require:
            return await self._named_and_placed(domain)
        try:
            proven = await tls.proven_server(self.peer_cert, domain, discovery)
        except DiscoveryError as exc:
            # DNS cannot tell now: neither a proof nor a forgery; ask again later.
            self.reply(451, f"4.4.3 Cannot check the SMDP server of {domain} now: {exc}")
            return False
        if proven is None:
            who = tls.identity(self.peer_cert, self.peer_host) or self.peer_host
            self.reply(550, f"5.7.1 {who} has not proved it is the SMDP server of {domain}")
            if announcing:
                self._count_forgery()
            return False
        self.peer_host = proven
        return True

    async def _named_and_placed(self, domain: str) -> bool:
        """A peer without certificate: its EHLO name must be one of
        ``domain``'s servers, and the connection must come from one of that
        server's addresses, lest anyone who can reach this port speak for
        any domain by naming its server."""
        assert self.peer_host is not None
        discovery = self.port.discovery
        try:
            servers = await discovery.servers_named(self.peer_host, domain)
            if not servers:
                self.reply(550, f"5.7.1 {self.peer_host} does not speak for {domain}")
                return False
            if await discovery.connects_from(servers, self.client):
                return True
        except DiscoveryError as exc:
            # DNS cannot tell now: neither a claim upheld nor a forgery.
            self.reply(451, f"4.4.3 Cannot check the SMDP server of {domain} now: {exc}")
            return False
        log.info("refused %s for %s from %s: not an address of that server",
                 self.peer_host, domain, self.client)
        self.reply(550, f"5.7.1 {self.client} is not an address of {self.peer_host}, "
                        f"the SMDP server of {domain}")
        return False

    def _count_forgery(self) -> None:
        """A forged envelope counts against the identity the forger proved, if
        any; never against the domain it claimed (PRIOR-ART.md 1)."""
        who = self.port.tls.identity(self.peer_cert, self.peer_host)
        if who is not None and who != self.config.hostname:
            with self.store.transaction():
                self.store.count_forged(who, 1)
            log.info("forged envelope from %s refused and counted against it", who)

    async def _start(self, event: wire.EnvelopeStart | wire.MailStart) -> None:
        if not await self._speaks_for(domain_of(event.sender), announcing=True):
            return
        assert self.peer_host is not None
        if self.peer_host != self.config.hostname:
            # One read of Quality(X) serves the block (section 5.3) and the quota.
            verdict = self.core.destination.peer_verdict(self.peer_host)
            refusal = (self.core.destination.peer_refusal(self.peer_host, verdict)
                       or self.core.destination.sender_refusal(self.peer_host,
                                                               event.sender.lower(), verdict))
            if refusal is not None:
                self.core.metrics.envelopes_received.labels("smdp", "refused").inc()
                self.reply(*peer_reply(refusal))
                return
            if not self._within_quota(verdict.status):
                return
        mode = (DeliveryMode.ENVELOPE if isinstance(event, wire.EnvelopeStart)
                else DeliveryMode.DIRECT)
        self.txn = _Transaction(mode, event.sender.lower(), event.envid, event.size)
        what = "Envelope" if mode is DeliveryMode.ENVELOPE else "Message"
        self.reply(250, f"2.1.0 {what} {event.envid} from <{event.sender}> ok")

    def _within_quota(self, standing: Standing) -> bool:
        """Issue 4, envelope floods: per session, per peer and hour (lower for
        a peer whose quality is not yet known)."""
        abuse = self.config.abuse
        assert self.peer_host is not None
        if self.transactions >= abuse.envelopes_per_session:
            self.reply(452, f"4.7.0 {abuse.envelopes_per_session} envelopes in one session; "
                            "start a new session")
            return False
        limit = (abuse.envelopes_per_new_peer_per_hour if standing is Standing.NEW
                 else abuse.envelopes_per_peer_per_hour)
        if not self.port.quotas.by_peer.allow(self.peer_host, limit):
            self.reply(452, f"4.7.0 {self.peer_host} sent {limit} envelopes this hour; "
                            "try again later")
            return False
        self.transactions += 1
        return True

    def _recipient(self, rcpt: str) -> None:
        config, destination = self.config, self.core.destination
        assert self.txn is not None and self.peer_host is not None
        rcpt = rcpt.lower()
        domain = domain_of(rcpt)
        if not config.is_local(domain):
            self.reply(550, f"5.7.1 <{rcpt}>: relaying denied, {domain} is not served here")
            return
        reached = destination.reach(rcpt)
        if reached.group is None and not reached.users:
            self.reply(550, f"5.1.1 <{rcpt}>: no such user here")
            return
        refusal = destination.group_refusal(reached, self.txn.sender)
        if refusal is not None:
            self.reply(550, f"{refusal.status} <{rcpt}>: {refusal.text}")
            return
        if self.txn.mode is DeliveryMode.DIRECT and reached.group is not None:
            # Table 3 is each member's: the whole message would skip the
            # decisions of those who have not authorized the sender.
            self.reply(551, f"5.7.1 <{rcpt}> is a group whose members each decide; "
                            "send an envelope")
            return
        if self.txn.mode is DeliveryMode.DIRECT and not destination.may_send_directly(
            self.peer_host, self.txn.sender, rcpt, reached.users[0] if reached.users else None
        ):
            self.reply(551, f"5.7.1 <{rcpt}> has not authorized <{self.txn.sender}>; "
                            "send an envelope")
            return
        limit = config.abuse.envelopes_per_recipient_per_hour
        if (rcpt not in self.txn.recipients and self.peer_host != config.hostname
                and not self.port.quotas.by_recipient.allow(rcpt, limit)):
            self.reply(452, f"4.7.0 <{rcpt}> received {limit} envelopes this hour; "
                            "try again later")
            return
        if rcpt not in self.txn.recipients:
            self.txn.recipients.append(rcpt)
            self.txn.reached[rcpt] = reached
        self.reply(250, f"2.1.5 Recipient <{rcpt}> ok")

    def _complete(self, data: Body | OSError) -> None:
        txn, self.txn = self.txn, None
        assert txn is not None and self.peer_host is not None
        if isinstance(data, OSError):
            self.reply(452, "4.3.1 Insufficient system storage; try again later")
            return
        if txn.mode is DeliveryMode.ENVELOPE:
            try:
                stored = self.core.destination.receive_envelope(
                    server=self.peer_host, envid=txn.envid, sender=txn.sender,
                    recipients=txn.recipients, size=txn.size or 0, block=data.read(),
                    reached=txn.reached,
                )
            except EnvelopeError as exc:
                log.info("envelope refused envid=%s peer=%s reason=%s", txn.envid,
                         self.peer_host, exc)
                self.core.metrics.envelopes_received.labels("smdp", "refused").inc()
                self.reply(554, f"5.6.0 {exc}")
                return
            if not stored:
                # A replayed envelope: said yes, stored nothing twice.
                log.info("replayed envelope %s from %s", txn.envid, self.peer_host)
            log.info("envelope received envid=%s peer=%s sender=%s to=%s size=%d", txn.envid,
                     self.peer_host, txn.sender, ",".join(txn.recipients), txn.size or 0)
            self.core.metrics.envelopes_received.labels("smdp", "stored").inc()
        else:
            # The codec has already refused a block whose size differs from SIZE.
            if not self.core.destination.receive_message(
                server=self.peer_host, envid=txn.envid, sender=txn.sender,
                recipients=txn.recipients, body=data, reached=txn.reached,
            ):
                log.info("replayed envelope %s from %s", txn.envid, self.peer_host)
            for rcpt in txn.recipients:
                log.info("message delivered envid=%s recipient=%s peer=%s sender=%s how=direct",
                         txn.envid, rcpt, self.peer_host, txn.sender)
            self.core.metrics.envelopes_received.labels("smdp", "direct").inc()
            self.core.metrics.bytes.labels("in").inc(data.size)
        self.reply(250, f"2.0.0 {txn.envid} stored")

    async def _decision(self, event: wire.Decision) -> None:
        if not await self._speaks_for(domain_of(event.recipient)):
            return
        outcome = self.core.origin.on_decision(
            event.envid, event.recipient.lower(), event.kind, event.body_held
        )
        log.info("decision received envid=%s recipient=%s decision=%s peer=%s outcome=%s",
                 event.envid, event.recipient.lower(), event.kind.value, self.peer_host,
                 outcome.kind)
        if outcome.pull_message_id is not None:
            message_id = outcome.pull_message_id
            self.conn.send_body_start(*peer_reply(outcome))
            await self.stream_body(
                stored_chunks(lambda seq: self.store.out_body_chunk(message_id, seq)),
                outcome.pull_size,
                self.conn.send_body_chunk, self.conn.send_body_end,
            )
            log.info("pull served envid=%s recipient=%s size=%d peer=%s", event.envid,
                     event.recipient.lower(), outcome.pull_size, self.peer_host)
            metrics = self.core.metrics
            metrics.pulls.labels("served").inc()
            metrics.bytes.labels("out").inc(outcome.pull_size)
            metrics.delivered(outcome.pull_created_at)
        else:
            self.reply(*peer_reply(outcome))


async def serve_peer(port: PeerPort, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        await PeerSession(port, reader, writer).run()
    except Exception:  # one broken session must never take the server down
        log.exception("peer session failed")
