"""The MX: mail from the SMTP world for this server's own users (issue 12;
docs/smtp.md, "The MX").

An asyncio adapter over the same sans-IO SMTP server codec the submission
port uses (``protocol/smtp``: the strict end of data that refuses SMTP
smuggling, STARTTLS that forgets what came before the handshake, the line,
size and recipient caps), on the same session loop (``session.py``: idle and
slow-sender cut-offs, bodies spooled as they arrive). No AUTH: nobody sends
*through* the MX, and it takes mail only for existing users of its own
domains (``core/mx.py`` ``relay_refusal``).

SMDP's rules carry over as far as SMTP allows (``Destination.receive_smtp``):
a black-listed sender is refused, at RCPT when its MAIL FROM passed SPF and
otherwise at the end of data; a white-listed sender whose From is verified
goes to the mailbox; anyone else is held as an envelope the recipient
decides on with the five options. Nothing is ever sent back for a
rejection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from smdp.core.envelope import new_token
from smdp.core.mx import (
    client_prefix,
    forged_results,
    from_address,
    quality_keys,
)
from smdp.core.mx import relay_refusal as relay_problem
from smdp.core.sender_auth import (
    SpfCheck,
    authentication_results_field,
    authentication_results_header,
)
from smdp.mail.addresses import AddressError, domain_of, normalize, parse_address
from smdp.mail.body import CHUNK_SIZE, Body
from smdp.mail.mime import MAX_HEADER_OCTETS
from smdp.mail.trace import received_field
from smdp.protocol import smtp
from smdp.server.services import MxPort
from smdp.server.session import Session

log = logging.getLogger("smdp.mx")

_NO_STORAGE = (452, "insufficient storage on the server; nothing was stored, try later",
               "4.3.1")


@dataclass(slots=True)
class _Transaction:
    sender: str  # the MAIL FROM address as sent, "" for <>
    spf: SpfCheck
    recipients: list[str] = field(default_factory=list)


class MxSession(Session):
    conn: smtp.SmtpServerConnection

    def __init__(self, port: MxPort, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(port.core.config, reader, writer)
        self.port = port
        self.core = port.core
        limits = self.config.limits
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        self.prefix = client_prefix(self.client)  # its network, for quality
        self.conn = smtp.SmtpServerConnection(
            self.config.hostname,
            max_message_size=limits.max_message_size,
            max_recipients=limits.max_recipients,
            max_line_length=limits.max_line_length,
            stream_threshold=CHUNK_SIZE,  # spooled as it comes, never whole in memory
            starttls=port.tls.user_server_context is not None,
            auth_mechanisms=(),  # no AUTH on the MX: it relays nothing
        )
        self.helo = ""
        self.txn: _Transaction | None = None
        self.transactions = 0

    def in_block(self) -> bool:
        return self.conn.state is smtp.SmtpState.DATA_IN

    def closing_line(self, why: str) -> bytes:
        return f"421 4.4.2 {self.config.hostname} {why}, closing\r\n".encode()

    def internal_error(self) -> None:
        self.txn = None
        self.conn.reply(451, "internal error; nothing was stored, try again", "4.3.0")

    async def handle(self, event: object) -> None:
        conn = self.conn
        match event:
            case smtp.Helo(hostname=hostname):
                self.helo, self.txn = hostname, None
                conn.ok()
            case smtp.StartTls():
                context = self.port.tls.user_server_context
                assert context is not None  # the codec offers STARTTLS only with one
                conn.ok()
                # RFC 3207 4.2: the codec drops what was pipelined after the
                # command; the session forgets what was said before it.
                self.helo, self.txn = "", None
                await self.start_tls(context)
            case smtp.Mail(sender=sender):
                await self._mail(sender)
            case smtp.Rcpt() | smtp.DataStart() | smtp.DataComplete() if self.txn is None:
                # A local error (internal_error) dropped the transaction while
                # the codec still counts it open: refuse the rest of it.
                self.drop_spool()
                conn.reply(451, "local error earlier in this transaction; send RSET", "4.3.0")
            case smtp.Rcpt(recipient=recipient, route=route):
                self._rcpt(recipient, route)
            case smtp.DataStart():
                conn.ok()
            case smtp.BlockChunk(data=data):
                self.spool_chunk(data)
            case smtp.DataComplete(data=data):
                await self._deliver(self.spooled_body(data))
            case smtp.DataFailed(reason=reason):
                # Already answered by the codec (size, line length, bare CR/LF).
                self.drop_spool()
                self.txn = None
                log.info("mx refused client=%s helo=%s reason=%s", self.client, self.helo,
                         reason)
            case smtp.Rset():
                self.txn = None
                conn.ok()
            case smtp.Noop() | smtp.Quit():
                conn.ok()
            case _:  # pragma: no cover - AUTH is never offered, so never handed out
                conn.reply(502, "Command not implemented", "5.5.1")

    async def _mail(self, sender: str) -> None:
        abuse, quotas = self.config.abuse, self.port.quotas
        self.txn = None
        if self.transactions >= abuse.envelopes_per_session:
            self.conn.reply(452, f"{abuse.envelopes_per_session} messages in one session; "
                                 "start a new session", "4.7.0")
            return
        # Issue 4's per-sender window, keyed by the client's address: an SMTP
        # client proves no name.
        limit = abuse.envelopes_per_peer_per_hour
        if not quotas.by_peer.allow(f"smtp:{self.client}", limit):
            self.conn.reply(452, f"{self.client} sent {limit} messages this hour; "
                                 "try again later", "4.7.0")
            return
        spf = await self.port.authenticator.check_spf(self.client, self.helo, sender)
        # Section 5.3 before any byte of a message: the client's network, and
        # the MAIL FROM domain when SPF passed for it (issue 12 item 4).
        spf_domain = domain_of(sender) if self._spf_passed(_Transaction(sender, spf)) else None
        blocked = self.core.destination.smtp_refusal(quality_keys(spf_domain, self.prefix))
        if blocked is not None:
            log.info("mx blocked client=%s mailfrom=%s reason=%s", self.client,
                     sender or "<>", blocked.reason)
            self.conn.reply(554, blocked.reason, "5.7.1")
            return
        self.transactions += 1
        self.txn = _Transaction(sender, spf)
        self.conn.ok()

    def _rcpt(self, recipient: str, route: tuple[str, ...]) -> None:
        config, conn, txn = self.config, self.conn, self.txn
        assert txn is not None  # the codec refuses RCPT before MAIL
        if recipient.lower() == "postmaster" and not route:
            recipient = f"postmaster@{config.domains[0]}"  # RFC 5321 4.1.1.3
        else:
            why = relay_problem(recipient, route, config.domains)
            if why is not None:
                log.info("mx relay refused client=%s rcpt=%s", self.client, recipient)
                conn.reply(550, f"<{recipient}>: {why}", "5.7.1")
                return
        try:
            rcpt = normalize(str(parse_address(recipient)))
        except AddressError:
            rcpt = ""
        destination = self.core.destination
        reached = destination.reach(rcpt) if rcpt else None
        if reached is None or (reached.group is None and not reached.users):
            conn.reply(550, f"<{recipient}>: no such user here", "5.1.1")
            return
        # A local group (docs/lists.md): a list's policy reads the MAIL FROM
        # address; each member's black list is read at the end of data.
        refusal = destination.group_refusal(reached, txn.sender)
        if refusal is not None:
            log.info("mx group refused client=%s from=%s rcpt=%s: %s", self.client,
                     txn.sender or "<>", rcpt, refusal.text)
            conn.reply(550, f"<{rcpt}>: {refusal.text}", refusal.status)
            return
        # Table 3 at RCPT: a MAIL FROM that passed SPF is known to be the
        # sender's; when it is on the recipient's black list, refuse now.
        if self._spf_passed(txn) and destination.smtp_black_listed(rcpt, normalize(txn.sender)):
            log.info("mx black-listed client=%s from=%s rcpt=%s at=rcpt", self.client,
                     txn.sender, rcpt)
            conn.reply(550, f"<{rcpt}> does not accept mail from <{txn.sender}>", "5.7.1")
            return
        greylist = self.port.greylist
        if greylist is not None and rcpt not in txn.recipients:
            wait = greylist.wait(txn.sender, self.prefix or self.client)
            if wait > 0:
                # RFC 6647: a temporary refusal a real MTA retries.
                conn.reply(450, f"<{rcpt}>: greylisted, try again in {math.ceil(wait)} seconds",
                           "4.7.1")
                return
        limit = config.abuse.envelopes_per_recipient_per_hour
        if rcpt not in txn.recipients and not self.port.quotas.by_recipient.allow(rcpt, limit):
            conn.reply(452, f"<{rcpt}> received {limit} messages this hour; try again later",
                       "4.7.0")
            return
        if rcpt not in txn.recipients:
            txn.recipients.append(rcpt)
        conn.ok()

    @staticmethod
    def _spf_passed(txn: _Transaction) -> bool:
        return (bool(txn.sender) and txn.spf.result == "pass"
                and txn.spf.domain.lower() == domain_of(txn.sender))

    async def _deliver(self, body: Body | OSError) -> None:
        txn, self.txn = self.txn, None
        assert txn is not None
        if isinstance(body, OSError):
            self.conn.reply(*_NO_STORAGE)
            return
        sender = from_address(body.head(MAX_HEADER_OCTETS))
        # The authenticator takes the message's bytes: read back from the
        # spool once, never more than the size limit the codec enforced.
        auth = await self.port.authenticator.authenticate(
            self.client, self.helo, txn.sender, txn.spf, body.read())
        if not auth.from_domain and sender:
            auth = dataclasses.replace(auth, from_domain=domain_of(sender))
        if auth.dmarc == "fail" and auth.dmarc_policy == "reject":
            # The From domain tells receivers that mail failing DMARC is not
            # its own (RFC 7489 6.3, p=reject): refused while the sender is
            # still connected, nothing stored, no bounce from us (docs/smtp.md).
            log.info("mx dmarc-reject client=%s from=%s", self.client, sender or "-")
            self.core.metrics.envelopes_received.labels("smtp", "refused").inc()
            self.conn.reply(550, f"{auth.from_domain} does not let mail that fails DMARC "
                            "through (p=reject)", "5.7.1")
            return
        hostname = self.config.hostname
        envid = new_token()
        # Newest on top (RFC 5321 4.4): our Received, then our results.
        trace = received_field(source=self.helo or "unknown", host=hostname,
                               protocol="ESMTPS" if self.conn.tls else "ESMTP",
                               ident=envid, when=datetime.now(UTC), address=self.client)
        # RFC 8601 section 5: results a sender wrote in our name are deleted.
        kept, end = forged_results(body.head(MAX_HEADER_OCTETS), hostname)
        if end:
            body = body.tail(end).prefixed(kept)
        stored = body.prefixed(trace + authentication_results_field(hostname, auth))
        verified = auth.verified_domain if sender and auth.verified_domain else None
        if verified and sender and verified.lower() == domain_of(sender):
            blocked = self.core.destination.smtp_refusal(quality_keys(verified.lower(), None))
            if blocked is not None:
                log.info("mx blocked client=%s from=%s reason=%s", self.client, sender,
                         blocked.reason)
                self.core.metrics.envelopes_received.labels("smtp", "refused").inc()
                self.conn.reply(554, blocked.reason, "5.7.1")
                return
        arrival = self.core.destination.receive_smtp(
            envid=envid, sender=sender or "", verified_domain=verified,
            # One line for ENV (protocol.md 12.5): the field's value, unfolded.
            auth_results=authentication_results_header(hostname, auth).replace("\r\n\t", " "),
            recipients=txn.recipients, body=stored, mail_from=txn.sender,
            client_prefix=self.prefix,
            # Held as long as an SMDP origin holds a message ([delivery] expire_days).
            expires_at=time.time() + self.config.delivery.expire_days * 86400.0)
        log.info("mx envid=%s mailfrom=%s from=%s client=%s helo=%s held=%s delivered=%s "
                 "refused=%s verified=%s", envid if arrival.envelope_id else "-",
                 txn.sender or "<>", sender or "-", self.client, self.helo,
                 ",".join(arrival.held) or "-", ",".join(arrival.delivered) or "-",
                 ",".join(arrival.refused) or "-", verified or "-")
        metrics = self.core.metrics
        if arrival.envelope_id is None:
            metrics.envelopes_received.labels("smtp", "refused").inc()
        else:
            metrics.envelopes_received.labels("smtp", "stored" if arrival.held
                                              else "direct").inc()
            metrics.bytes.labels("in").inc(stored.size)
        if arrival.envelope_id is None:
            # Every recipient black-lists the sender: refused, nothing stored,
            # nothing sent back (the client, not us, may tell its user).
            self.conn.reply(550, "Message refused by the recipient", "5.7.1")
            return
        self.conn.reply(250, f"Ok: queued as {envid}", "2.0.0")


async def serve_mx(port: MxPort, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    try:
        await MxSession(port, reader, writer).run()
    except Exception:
        log.exception("mx session failed")
