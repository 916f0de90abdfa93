"""The user port (Table 5, POP3 where the commands overlap): an asyncio adapter
between sockets, the sans-IO user codec and the domain core.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from smdp.core import decisions as d
from smdp.core.decisions import Option
from smdp.core.destination import DecisionError
from smdp.core.envelope import decode_envelope_block
from smdp.core.submission import SubmissionError
from smdp.mail.addresses import AddressError, parse_address
from smdp.mail.body import CHUNK_SIZE, Body, stored_chunks
from smdp.protocol import user as wire
from smdp.protocol.framing import BlockChunk
from smdp.server.discovery import DiscoveryError
from smdp.server.session import Session
from smdp.store.records import InEnvelope, MailboxEntry, User

if TYPE_CHECKING:
    from smdp.server.app import SmdpServer

log = logging.getLogger("smdp.user")

LIST_NAMES = {"in-white", "in-black", "out-white", "out-black"}


def _clean(text: str) -> str:
    """One line of a multi-line answer: no control characters, no tabs."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


class UserSession(Session):
    conn: wire.UserServerConnection

    def __init__(self, app: SmdpServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(app.config, reader, writer)
        self.app = app
        limits = app.config.limits
        self.conn = wire.UserServerConnection(
            app.config.hostname,
            max_message_size=limits.max_message_size,
            max_recipients=limits.max_recipients,
            max_line_length=limits.max_line_length,
            tls=writer.get_extra_info("ssl_object") is not None,  # the implicit-TLS port
            stream_threshold=CHUNK_SIZE,  # submissions come in chunks, never whole
        )
        self.name: str | None = None
        self.user: User | None = None
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        # Passwords in the clear only ever from this machine, and only when the
        # configuration asks for it (the demo, the tests): issue 4, item 1.
        self.plaintext_login = app.config.allow_plaintext_login and _is_loopback(self.client)
        # POP3: message numbers are fixed for the session (RFC 1939 section 4);
        # mail that arrives later gets the next numbers.
        self.messages: list[MailboxEntry] = []
        self.deleted: set[int] = set()
        self.compose_from: str | None = None
        self.compose_to: list[str] = []

    def in_block(self) -> bool:
        return self.conn.state is wire.UserState.COMPOSE_DATA

    def closing_line(self, why: str) -> bytes:
        return f"-ERR {why}, closing\r\n".encode()

    def internal_error(self) -> None:
        self.conn.err("internal error; nothing was changed, try again")

    # -- helpers -------------------------------------------------------------------

    def _refresh(self) -> None:
        assert self.user is not None
        known = {e.id for e in self.messages}
        for entry in self.app.store.mailbox_entries(self.user.id, [d.ACCEPTED]):
            if entry.id not in known:
                self.messages.append(entry)

    def _message(self, n: int) -> MailboxEntry | None:
        if n in self.deleted:
            self.conn.err(f"message {n} already deleted")  # RFC 1939 wording
            return None
        if 1 <= n <= len(self.messages):
            return self.messages[n - 1]
        self.conn.err(f"no message {n}")
        return None

    def _chunks(self, envelope_id: int) -> Iterator[bytes]:
        return stored_chunks(lambda seq: self.app.store.in_body_chunk(envelope_id, seq))

    async def _stream(self, envelope_id: int, length: int) -> None:
        """Send the first ``length`` octets of a stored body as the block."""
        await self.stream_body(_first_octets(self._chunks(envelope_id), length), length,
                               self.conn.block_chunk, self.conn.block_end)

    def _stored(self, n: int) -> InEnvelope | None:
        """Message ``n``'s envelope when its body is here to read; else the
        -ERR (unknown number, or no body stored) is sent and None returned."""
        entry = self._message(n)
        if entry is None:
            return None
        env = self.app.store.in_envelope(entry.envelope_id)
        if env is not None and env.has_body:
            return env
        self.conn.err(f"message {n} is not stored here yet")
        return None

    def _size(self, entry: MailboxEntry) -> int:
        env = self.app.store.in_envelope(entry.envelope_id)
        return env.size if env else 0

    def _uid(self, entry: MailboxEntry) -> str:
        env = self.app.store.in_envelope(entry.envelope_id)
        return f"{env.envid if env else 'x'}.{entry.id}"

    def _live(self) -> list[tuple[int, MailboxEntry]]:
        return [(n, e) for n, e in enumerate(self.messages, 1) if n not in self.deleted]

    def _envelope_line(self, entry: MailboxEntry) -> str:
        env = self.app.store.in_envelope(entry.envelope_id)
        assert env is not None
        fields = decode_envelope_block(env.block.encode("utf-8"))
        att = fields.summary.attachments
        return _clean(f"{entry.id} {entry.state} {env.sender} {env.size} {att} {env.subject}")

    def _login_summary(self, *, listing: bool) -> tuple[str, list[str]]:
        """The login answer; the per-envelope ``listing`` only for PWD (POP3's
        PASS needs the counts alone, which keeps logins cheap in big mailboxes)."""
        assert self.user is not None
        pending = self.app.store.mailbox_entries(self.user.id, [d.PENDING])
        self._refresh()
        live = self._live()
        octets = sum(self._size(e) for _, e in live)
        text = (f"{self.user.main_address} has {len(pending)} envelope(s) awaiting a decision "
                f"and {len(live)} message(s) ({octets} octets)")
        if not listing:
            return text, []
        lines = [f"envelope {self._envelope_line(e)}" for e in pending]
        for n, e in live:
            env = self.app.store.in_envelope(e.envelope_id)
            subject = env.subject if env else ""
            lines.append(_clean(f"message {n} {self._size(e)} {subject}"))
        return text, lines

    # -- dispatch --------------------------------------------------------------------

    async def handle(self, event: object) -> None:
        app = self.app
        conn = self.conn
        match event:
            case wire.User() | wire.Pass() if not (conn.tls or self.plaintext_login):
                # Refused already at USER, so that a well-behaved client never
                # sends the password over the open connection.
                conn.err("TLS required for passwords (use STLS)")
            case wire.User(name=name):
                # Always ask for the password: the reply must not reveal whether
                # the account exists (the check happens at PASS).
                self.name = name
                conn.ok("send your password")
            case wire.Pass(password=password, verb=verb):
                user = await app.accounts.authenticate(self.name or "", password)
                if user is None:
                    # Same reply whether or not the account exists; each failure
                    # slows the next replies to this client and for this name.
                    await asyncio.sleep(self._failed_login())
                    conn.err("authentication failed")
                    return
                self.user = user
                pwd = verb.upper() == "PWD"
                text, lines = self._login_summary(listing=pwd)
                # Table 5 "pwd": on success the server answers with the envelopes
                # and messages in the mailbox; PASS stays exactly POP3.
                if pwd:
                    conn.ok(text, lines)
                else:
                    conn.ok(text)
            case wire.Capa():
                capabilities = ["USER", "UIDL", "TOP", "IMPLEMENTATION smdp",
                                "SMDP PWD ENVS ENV ACCEPT ACCEPT&AUTH REJECT REJECT&SPAM "
                                "REJECT&SPAMMER MAIL RCPT DATA SENT LISTS LISTADD LISTDEL IDENT"]
                if (app.tls.user_server_context is not None and not conn.tls
                        and self.user is None):
                    capabilities.append("STLS")  # RFC 2595: offered until in use
                conn.ok("capability list follows", capabilities)
            case wire.Stls():
                context = app.tls.user_server_context
                if context is None:
                    conn.err("TLS not available")
                    return
                conn.ok("Begin TLS negotiation")
                self.name = None  # RFC 2595 4: a USER sent in plaintext counts no more
                await self.start_tls(context)
            case wire.Stat():
                self._refresh()
                live = self._live()
                conn.ok(f"{len(live)} {sum(self._size(e) for _, e in live)}")
            case wire.ListCmd(n=n):
                self._refresh()
                if n is None:
                    live = self._live()
                    conn.ok(f"{len(live)} messages",
                            [f"{i} {self._size(e)}" for i, e in live])
                elif (entry := self._message(n)) is not None:
                    conn.ok(f"{n} {self._size(entry)}")
            case wire.Uidl(n=n):
                if n is None:
                    conn.ok("unique ids follow", [f"{i} {self._uid(e)}" for i, e in self._live()])
                elif (entry := self._message(n)) is not None:
                    conn.ok(f"{n} {self._uid(entry)}")
            case wire.Retr(n=n):
                if (env := self._stored(n)) is not None:
                    conn.ok_block_start(f"{env.size} octets")
                    await self._stream(env.id, env.size)
            case wire.Top(n=n, lines=k):
                if (env := self._stored(n)) is not None:
                    length = _top_length(self._chunks(env.id), k)
                    conn.ok_block_start("top of message follows")
                    await self._stream(env.id, length)
            case wire.Dele(n=n):
                if self._message(n) is not None:
                    self.deleted.add(n)
                    conn.ok(f"message {n} deleted")
            case wire.Rset():
                if self.compose_from is not None:
                    # RSET while composing abandons the message only.
                    self.compose_from, self.compose_to = None, []
                    conn.ok("message abandoned")
                else:
                    self.deleted.clear()  # POP3: unmark deleted messages
                    conn.ok("reset")
            case wire.Noop():
                conn.ok("")
            case wire.Quit():
                if self.user is not None and self.deleted:
                    app.store.mark_deleted([self.messages[n - 1].id for n in self.deleted])
                conn.ok(f"{app.config.hostname} signing off")
            case wire.Envs(all=show_all):
                assert self.user is not None
                states = None if show_all else [d.PENDING]
                entries = app.store.mailbox_entries(self.user.id, states)
                conn.ok(f"{len(entries)} envelope(s)", [self._envelope_line(e) for e in entries])
            case wire.EnvShow(id=entry_id):
                self._show_envelope(entry_id)
            case wire.UserDecision(option=option, id=entry_id):
                self._decide(Option[option.name], entry_id)
            case wire.MailCmd(identity=identity):
                self._mail(identity)
            case wire.RcptCmd(address=address):
                self._rcpt(address)
            case wire.DataCmd():
                conn.ok('send the message, end with "." on a line by itself')
            case BlockChunk(data=data):
                self.spool_chunk(data)
            case wire.MessageComplete(data=data):
                body = self.spooled_body(data)
                # In-flow control: wait while delivery to these domains lags.
                await app.worker.room_for_submission(
                    r.rpartition("@")[2] for r in self.compose_to)
                self._submit(body)
            case wire.MessageFailed(reason=reason):
                self.drop_spool()
                self.compose_from, self.compose_to = None, []
                log.info("submission refused: %s", reason)
            case wire.Sent(msgid=msgid):
                self._sent(msgid)
            case wire.Lists():
                assert self.user is not None
                lines = []
                for e in app.store.list_entries(self.user.id):
                    added = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.added_at))
                    server = f" {e.server}" if e.server else ""
                    lines.append(f"{e.direction}-{e.kind} {e.address}{server} {e.how} {added}")
                conn.ok(f"{len(lines)} list entries", lines)
            case wire.ListAdd() | wire.ListDel():
                await self._edit_list(event)
            case wire.Ident():
                assert self.user is not None
                ids = app.store.identities(self.user.id)
                conn.ok(f"{len(ids)} identities, main first", ids)
            case _:
                conn.err("command not implemented")

    def _failed_login(self) -> float:
        """Record a failed login; the delay before its reply (issue 4)."""
        app, abuse = self.app, self.app.config.abuse
        by_client = app.login_failures_by_client.add(self.client)
        by_account = app.login_failures_by_account.add((self.name or "").lower())
        excess = max(by_client - abuse.login_failures_per_client,
                     by_account - abuse.login_failures_per_account)
        if excess <= 0:
            return 0.2
        return float(min(abuse.login_delay_max, 0.5 * 2 ** min(excess, 16)))

    def _show_envelope(self, entry_id: int) -> None:
        assert self.user is not None
        entry = self.app.store.mailbox_entry(entry_id)
        if entry is None or entry.user_id != self.user.id:
            self.conn.err(f"no envelope {entry_id} in your mailbox")
            return
        env = self.app.store.in_envelope(entry.envelope_id)
        assert env is not None
        lines = [
            f"Id: {entry.id}", f"State: {entry.state}",
            f"Decision: {entry.decision or '-'}", f"Reason: {entry.reason or '-'}",
            f"Sender: {env.sender}", f"Server: {env.origin_server}",
            f"Recipient: {entry.recipient}", f"Size: {env.size}",
        ]
        lines += [_clean(line) for line in env.block.splitlines() if line]
        self.conn.ok(f"envelope {entry.id}", lines)

    def _decide(self, option: Option, entry_id: int) -> None:
        assert self.user is not None
        try:
            result = self.app.destination.decide(self.user, entry_id, option)
        except DecisionError as exc:
            self.conn.err(str(exc))
            return
        self.app.worker.wake()
        env = self.app.store.in_envelope(result.entry.envelope_id)
        sender = env.sender if env else "the sender"
        texts = {
            Option.ACCEPT: "accepted; the message will be fetched",
            Option.ACCEPT_AUTH: f"accepted; {sender} added to your white list",
            Option.REJECT: "rejected",
            Option.REJECT_SPAM: "rejected as spam",
            Option.REJECT_SPAMMER: f"rejected; {sender} added to your black list",
        }
        if result.entry.state == d.ACCEPTED and option in (Option.ACCEPT, Option.ACCEPT_AUTH):
            texts[Option.ACCEPT] = "accepted; the message is in your mailbox"
        suffix = f" ({result.text})" if result.text != "recorded" else ""
        self.conn.ok(f"envelope {entry_id} {texts[option]}{suffix}")

    def _mail(self, identity: str | None) -> None:
        assert self.user is not None
        identities = self.app.store.identities(self.user.id)
        if identity is None:
            chosen = identities[0]
        else:
            chosen = identity.lower()
            if chosen not in identities:
                # Assumption 3: no spoofing.
                self.conn.err(f"{identity} is not one of your identities")
                return
        self.compose_from, self.compose_to = chosen, []
        self.conn.ok(f"composing as {chosen}")

    def _rcpt(self, address: str) -> None:
        try:
            rcpt = str(parse_address(address)).lower()
        except AddressError as exc:
            self.conn.err(str(exc))
            return
        if rcpt not in self.compose_to:
            self.compose_to.append(rcpt)
        self.conn.ok(f"recipient {rcpt}")

    def _submit(self, data: Body | OSError) -> None:
        assert self.user is not None and self.compose_from is not None
        sender, rcpts = self.compose_from, self.compose_to
        self.compose_from, self.compose_to = None, []
        if isinstance(data, OSError):
            self.conn.err("insufficient storage on the server; nothing was stored, try later")
            return
        try:
            result = self.app.origin.submit(
                self.user, sender, rcpts, data, spool_dir=self.app.config.spool_dir
            )
        except SubmissionError as exc:
            self.conn.err(str(exc))
            return
        except OSError as exc:  # a full disk while spooling the rewritten message
            log.error("cannot spool a submission: %s", exc)
            self.conn.err("insufficient storage on the server; nothing was stored, try later")
            return
        self.app.worker.wake()
        text = f"queued as {result.msgid} ({len(result.queued)} recipient(s)"
        if result.direct:
            text += f"; {len(result.direct)} sent directly (white list)"
        if result.refused:
            text += f"; {len(result.refused)} refused by your black list: " + \
                ", ".join(result.refused)
        self.conn.ok(text + ")")

    def _sent(self, msgid: str | None) -> None:
        assert self.user is not None
        store = self.app.store
        if msgid is None:
            messages = store.out_messages_of(self.user.id)
        else:
            one = store.out_message_by_msgid(msgid)
            if one is None or one.user_id != self.user.id:
                self.conn.err(f"no sent message {msgid}")
                return
            messages = [one]
        lines = []
        for msg in messages:
            for r in store.out_recipients(msg.id):
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.updated_at))
                detail = f" {r.detail}" if r.detail else ""
                lines.append(_clean(f"{msg.msgid} {r.recipient} {r.state} {when}{detail}"))
        self.conn.ok(f"{len(lines)} recipient status line(s)", lines)

    async def _edit_list(self, event: wire.ListAdd | wire.ListDel) -> None:
        assert self.user is not None
        store = self.app.store
        name = event.list_name.lower()
        if name not in LIST_NAMES:
            self.conn.err(f"unknown list {event.list_name}: use one of "
                          + ", ".join(sorted(LIST_NAMES)))
            return
        try:
            address = str(parse_address(event.address)).lower()
        except AddressError as exc:
            self.conn.err(str(exc))
            return
        direction, kind = name.split("-")
        adding = isinstance(event, wire.ListAdd)
        if direction == "out":
            if event.server:
                self.conn.err("outbound lists hold addresses only (Table 2)")
                return
            with store.transaction():
                if adding:
                    store.put_outbound(self.user.id, kind, address, "manual")
                    done = True
                else:
                    done = store.drop_outbound(self.user.id, kind, address)
        else:
            server = event.server.lower() if event.server else None
            if server is None:
                # Inbound entries are (address, SMDP server) pairs: the server
                # of the address's domain, as discovery gives it.
                try:
                    server = (await self.app.discovery.resolve(
                        address.rpartition("@")[2])).hostname
                except DiscoveryError as exc:
                    self.conn.err(f"name the SMDP server of {address}: {exc}")
                    return
            with store.transaction():
                if adding:
                    store.put_inbound(self.user.id, kind, address, server, "manual")
                    done = True
                else:
                    done = store.drop_inbound(self.user.id, kind, address, server)
        if not done:
            self.conn.err(f"{address} is not on your {name} list")
            return
        self.conn.ok(f"{address} {'added to' if adding else 'removed from'} your {name} list")


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False  # a Unix socket or an unknown peer: not provably local
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket
    return ip.is_loopback


def _first_octets(chunks: Iterable[bytes], length: int) -> Iterator[bytes]:
    """The first ``length`` octets of ``chunks``; the rest is never read."""
    left = length
    if left <= 0:
        return
    for chunk in chunks:
        yield chunk[:left]
        left -= len(chunk)
        if left <= 0:
            return


def _top_length(chunks: Iterable[bytes], lines: int) -> int:
    """POP3 TOP's answer is a prefix of the stored body (the header, the blank
    line and the first ``lines`` body lines; all of it when there is no blank
    line or fewer lines): its length, found a chunk at a time.

    Stored bodies have CRLF line ends, so counting LFs counts lines.
    """
    offset = 0  # octets before the current chunk
    carry = b""  # the last 3 octets of the header so far: a separator may straddle chunks
    body_start: int | None = None
    wanted = max(lines, 0)
    for chunk in chunks:
        pos = 0
        if body_start is None:
            joined = carry + chunk
            at = joined.find(b"\r\n\r\n")
            if at < 0:
                carry = joined[-3:]
                offset += len(chunk)
                continue
            pos = at + 4 - len(carry)
            body_start = offset + pos
        if wanted == 0:
            return offset + pos
        here = chunk.count(b"\n", pos)
        if here < wanted:
            wanted -= here
            offset += len(chunk)
            continue
        for _ in range(wanted):
            pos = chunk.index(b"\n", pos) + 1
        return offset + pos
    return offset


async def serve_user(app: SmdpServer, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        await UserSession(app, reader, writer).run()
    except Exception:
        log.exception("user session failed")
