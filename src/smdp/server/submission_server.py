"""The submission port for ordinary mail clients: SMTP submission (RFC 6409)
with STARTTLS, and its implicit-TLS twin (RFC 8314). docs/smtp.md,
"Submission (ports 587 and 465)".

A sibling of the user port (``user_server.py``), on the same session loop
(``session.py``: timeouts, slow senders, spooling), with the same accounts,
the same login slow-down and the same origin: a message submitted here is
held at the origin and announced by envelopes exactly like one submitted with
the user port's MAIL/RCPT/DATA. Only the words differ: SMTP replies from the
sans-IO codec (``protocol/smtp``) instead of ``+OK``/``-ERR``.
"""

from __future__ import annotations

import asyncio
import logging

from smdp.core.outcomes import Kind
from smdp.core.submission import SubmissionError
from smdp.mail.addresses import AddressError, domain_of, parse_address
from smdp.mail.body import CHUNK_SIZE, Body
from smdp.protocol import smtp
from smdp.server.services import SubmissionPort
from smdp.server.session import Session
from smdp.server.user_server import _is_loopback
from smdp.store.records import User

log = logging.getLogger("smdp.submission")

# How each kind of refusal by the origin is said in SMTP (RFC 5321 4.2.2,
# RFC 3463); the text after the code is always the origin's own sentence.
_REFUSALS: dict[Kind, tuple[int, str]] = {
    Kind.NOT_YOUR_IDENTITY: (550, "5.7.1"),  # a spoofed From, Sender, Resent-*
    Kind.SUSPENDED: (550, "5.7.1"),  # delivery not authorized
    Kind.TOO_LARGE: (552, "5.3.4"),  # message too big for system
    Kind.INVALID: (554, "5.6.0"),  # a malformed message
}
_NO_STORAGE = (452, "insufficient storage on the server; nothing was stored, try later",
               "4.3.1")


class SubmissionSession(Session):
    conn: smtp.SmtpServerConnection

    def __init__(self, port: SubmissionPort, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(port.core.config, reader, writer)
        self.port = port
        self.core = port.core
        limits = self.config.limits
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        tls = writer.get_extra_info("ssl_object") is not None  # the implicit-TLS port
        # Passwords in the clear only from this machine, and only when the
        # configuration asks for it: the user port's rule (issue 4, item 1).
        plaintext_login = self.config.allow_plaintext_login and _is_loopback(self.client)
        self.conn = smtp.SmtpServerConnection(
            self.config.hostname,
            max_message_size=limits.max_message_size,
            max_recipients=limits.max_recipients,
            max_line_length=limits.max_line_length,
            tls=tls,
            stream_threshold=CHUNK_SIZE,  # the message is spooled as it comes, never whole
            starttls=port.tls.user_server_context is not None,
            auth_mechanisms=("PLAIN", "LOGIN"),
            auth_requires_tls=not plaintext_login,
            auth_required=True,  # RFC 6409 4.3: MAIL before AUTH is 530 5.7.0
        )
        self.user: User | None = None
        self.sender: str | None = None
        self.recipients: list[str] = []

    def in_block(self) -> bool:
        return self.conn.state is smtp.SmtpState.DATA_IN

    def closing_line(self, why: str) -> bytes:
        return f"421 4.4.2 {self.config.hostname} {why}, closing\r\n".encode()

    def internal_error(self) -> None:
        self.conn.reply(451, "internal error; nothing was stored, try again", "4.3.0")

    def _reset(self) -> None:
        self.sender, self.recipients = None, []

    @property
    def _who(self) -> str:
        return self.user.main_address if self.user else "-"

    async def handle(self, event: object) -> None:
        conn = self.conn
        match event:
            case smtp.Helo():
                self._reset()
                conn.ok()
            case smtp.StartTls():
                context = self.port.tls.user_server_context
                assert context is not None  # the codec offers STARTTLS only with one
                conn.ok()
                self._reset()
                self.user = None  # RFC 3207 4.2: everything before the handshake is forgotten
                await self.start_tls(context)
            case smtp.Auth():
                await self._auth(event)
            case smtp.Mail(sender=sender):
                self._mail(sender)
            case smtp.Rcpt(recipient=recipient):
                self._rcpt(recipient)
            case smtp.DataStart():
                conn.ok()
            case smtp.BlockChunk(data=data):
                self.spool_chunk(data)
            case smtp.DataComplete(data=data):
                body = self.spooled_body(data)
                # In-flow control: wait while delivery to these domains lags.
                await self.port.outbox.room_for_submission(
                    domain_of(r) for r in self.recipients)
                self._submit(body)
            case smtp.DataFailed(reason=reason):
                # Already answered by the codec (size, line length, bare CR/LF).
                self.drop_spool()
                self._reset()
                log.info("submission refused user=%s client=%s reason=%s",
                         self._who, self.client, reason)
            case smtp.Rset():
                self._reset()
                conn.ok()
            case smtp.Noop() | smtp.Quit():
                conn.ok()
            case _:  # pragma: no cover - the codec hands out nothing else
                conn.reply(502, "Command not implemented", "5.5.1")

    async def _auth(self, event: smtp.Auth) -> None:
        port = self.port
        # RFC 4616: an authorization identity other than the login's own
        # would be acting as someone else; nobody may here.
        user = None
        if not event.authzid or event.authzid.lower() == event.username.lower():
            user = await port.accounts.authenticate(event.username, event.password)
        if user is None:
            log.info("login failed user=%s client=%s port=submission", event.username or "-",
                     self.client)
            # The user port's slow-down, on the same windows: failures here
            # and there add up, per client and per account name.
            port.core.metrics.login_failures.labels("submission").inc()
            await asyncio.sleep(port.logins.failed(self.client, event.username))
            self.conn.reply(535, "Authentication credentials invalid", "5.7.8")
            return
        self.user = user
        log.info("login ok user=%s client=%s port=submission%s", user.main_address,
                 self.client, "" if event.username == user.main_address
                 else f" as={event.username}")
        self.conn.ok()

    def _mail(self, sender: str) -> None:
        assert self.user is not None  # the codec refuses MAIL before AUTH (530)
        self._reset()
        if not sender:
            self.conn.reply(550, "the null sender <> is not one of your identities", "5.7.1")
            return
        # Assumption 3 (no spoofing): the envelope sender is one of the
        # user's identities; the From in the message is checked at its end.
        chosen = self.core.origin.choose_identity(self.user, sender)
        if not chosen.ok:
            self.conn.reply(550, chosen.reason, "5.7.1")
            return
        self.sender = chosen.reason
        self.conn.ok()

    def _rcpt(self, recipient: str) -> None:
        try:
            rcpt = str(parse_address(recipient)).lower()
        except AddressError as exc:
            self.conn.reply(553, f"<{recipient}>: {exc}", "5.1.3")
            return
        if rcpt not in self.recipients:
            self.recipients.append(rcpt)
        self.conn.ok()

    def _submit(self, body: Body | OSError) -> None:
        user, sender, rcpts = self.user, self.sender, self.recipients
        assert user is not None and sender is not None
        self._reset()
        if isinstance(body, OSError):
            self.conn.reply(*_NO_STORAGE)
            return
        try:
            result = self.core.origin.submit(
                user, sender, rcpts, body, spool_dir=self.config.spool_dir,
                client=self.client,
                # RFC 3848: ESMTP with AUTH, over TLS or not.
                protocol="ESMTPSA" if self.conn.tls else "ESMTPA",
            )
        except SubmissionError as exc:
            log.info("submission refused user=%s client=%s reason=%s",
                     user.main_address, self.client, exc)
            code, status = _REFUSALS.get(exc.kind, _REFUSALS[Kind.INVALID])
            self.conn.reply(code, _one_line(str(exc)), status)
            return
        except OSError as exc:  # a full disk while spooling the rewritten message
            log.error("cannot spool a submission: %s", exc)
            self.conn.reply(*_NO_STORAGE)
            return
        self.port.outbox.wake()
        log.info("submission msgid=%s user=%s from=%s to=%s%s%s client=%s port=submission",
                 result.msgid, user.main_address, sender, ",".join(result.queued) or "-",
                 f" direct={','.join(result.direct)}" if result.direct else "",
                 f" refused={','.join(result.refused)}" if result.refused else "",
                 self.client)
        # Recipients on the sender's own black list are refused at the source
        # and reported by a delivery status notification (docs/protocol.md).
        self.conn.reply(250, f"Ok: queued as {result.msgid}", "2.0.0")


def _one_line(text: str) -> str:
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


async def serve_submission(port: SubmissionPort, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
    try:
        await SubmissionSession(port, reader, writer).run()
    except Exception:
        log.exception("submission session failed")
