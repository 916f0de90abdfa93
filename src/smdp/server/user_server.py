"""The user port (Table 5, POP3 where the commands overlap): an asyncio adapter
between sockets, the sans-IO user codec and the domain core.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import time
from collections.abc import Iterable, Iterator

from smdp.core import unsubscribe
from smdp.core.envelope import decode_envelope_block
from smdp.core.lists import parse_list_request
from smdp.core.outcomes import Kind, Outcome
from smdp.core.submission import SubmissionError
from smdp.mail.addresses import AddressError, domain_of, parse_address
from smdp.mail.body import CHUNK_SIZE, Body, stored_chunks
from smdp.mail.trace import delivery_fields
from smdp.protocol import user as wire
from smdp.protocol.framing import BlockChunk
from smdp.server.discovery import with_inbound_server
from smdp.server.replies import decision_text
from smdp.server.services import UserPort
from smdp.server.session import Session
from smdp.store.records import InEnvelope, MailboxEntry, User
from smdp.terms import Decision, EntryState

log = logging.getLogger("smdp.user")

# The state word of an entry whose message was deleted (protocol.md 12.5); not
# a stored state: the store keeps the state and a deleted flag.
DELETED = "deleted"
SENT_PAGE = 100  # messages per SENT answer; the answer names the next page
_NO_LIMIT = 2**62  # PWD: every pending entry


def _clean(text: str) -> str:
    """One line of a multi-line answer: no control characters, no tabs."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


class UserSession(Session):
    conn: wire.UserServerConnection

    def __init__(self, port: UserPort, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(port.core.config, reader, writer)
        self.port = port
        self.core = port.core
        self.store = port.core.store
        limits = self.config.limits
        self.conn = wire.UserServerConnection(
            self.config.hostname,
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
        self.plaintext_login = self.config.allow_plaintext_login and _is_loopback(self.client)
        # POP3: message numbers are fixed for the session (RFC 1939 section 4);
        # mail that arrives later gets the next numbers. Number n is
        # numbered[n - 1], an entry id, with its size in sizes[n - 1]; both
        # are read at the first command that needs a number, not at login,
        # which reads counts only (a million messages: one row, not a million).
        self.numbered: list[int] | None = None
        self.sizes: list[int] = []
        self.serial = -1  # the maildrop's serial when numbered was last brought up to date
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

    def _numbering(self) -> list[int]:
        """The session's message numbers, read at the first use."""
        if self.numbered is None:
            self.numbered = []
            self._refresh()
        return self.numbered

    def _refresh(self) -> None:
        """Number the messages accepted since the numbers were last brought up
        to date; the maildrop is read again only when its serial moved."""
        assert self.user is not None and self.numbered is not None
        serial = self.store.mailbox_counts(self.user.id).serial
        if serial == self.serial:
            return
        self.serial = serial
        known = set(self.numbered)
        for entry_id, octets in self.store.maildrop(self.user.id, EntryState.ACCEPTED):
            if entry_id not in known:
                self.numbered.append(entry_id)
                self.sizes.append(octets)

    def _message(self, n: int) -> int | None:
        """The entry id of message ``n``; else the -ERR is sent and None returned."""
        if n in self.deleted:
            self.conn.err(f"message {n} already deleted")  # RFC 1939 wording
            return None
        numbered = self._numbering()
        if 1 <= n <= len(numbered):
            return numbered[n - 1]
        self.conn.err(f"no message {n}")
        return None

    def _chunks(self, envelope_id: int) -> Iterator[bytes]:
        return stored_chunks(lambda seq: self.store.in_body_chunk(envelope_id, seq))

    async def _stream(self, envelope_id: int, length: int, head: bytes = b"") -> None:
        """Send ``head``, then the first ``length`` octets of a stored body, as the block."""
        chunks = itertools.chain((head,), _first_octets(self._chunks(envelope_id), length))
        await self.stream_body(chunks, len(head) + length,
                               self.conn.block_chunk, self.conn.block_end)

    def _delivery_fields(self, entry: MailboxEntry, env: InEnvelope) -> bytes:
        # Return-Path and Delivered-To (protocol.md 8.4): one stored copy
        # serves every recipient of an envelope, so the field naming the
        # mailbox is written as the message is read, not stored.
        # Mail from the MX: the Return-Path is its SMTP reverse-path, not From.
        sender = env.mail_from if env.mail_from is not None else env.sender
        return delivery_fields(sender, entry.recipient)

    def _stored(self, n: int) -> tuple[InEnvelope, bytes] | None:
        """Message ``n``'s envelope and delivery fields when its body is here to
        read; else the -ERR (unknown number, or no body stored) is sent and
        None returned."""
        entry_id = self._message(n)
        if entry_id is None:
            return None
        entry = self.store.mailbox_entry(entry_id)
        env = self.store.in_envelope(entry.envelope_id) if entry is not None else None
        if entry is not None and env is not None and env.has_body:
            return env, self._delivery_fields(entry, env)
        self.conn.err(f"message {n} is not stored here yet")
        return None

    def _live(self, after: int = 0) -> Iterator[int]:
        """The numbers above ``after`` not marked deleted, in order."""
        deleted = self.deleted
        return (n for n in range(after + 1, len(self._numbering()) + 1) if n not in deleted)

    def _page(self, verb: str, after: int | None, limit: int | None
              ) -> tuple[list[int], str]:
        """LIST's and UIDL's numbers, all or a page, and the +OK text's
        ending that names the next page (protocol.md 12.4)."""
        live = self._live(after or 0)
        if limit is None:
            return list(live), ""
        numbers = list(itertools.islice(live, limit + 1))
        if len(numbers) <= limit:
            return numbers, ""
        return numbers[:limit], f"{wire.PAGE_MORE}{verb} AFTER {numbers[limit - 1]} LIMIT {limit}"

    def _uids(self, numbers: list[int]) -> list[str]:
        assert self.numbered is not None
        ids = [self.numbered[n - 1] for n in numbers]
        envids = self.store.envids_of(ids)
        return [f"{n} {envids.get(i, 'x')}.{i}" for n, i in zip(numbers, ids, strict=True)]

    def _envelope_line(self, entry: MailboxEntry, env: InEnvelope) -> str:
        fields = decode_envelope_block(env.block.encode("utf-8"))
        att = fields.summary.attachments
        # A notice this server wrote has the null sender, spelled <> (a
        # field of its own: the line is split on spaces).
        sender = env.sender or "<>"
        return _clean(f"{entry.id} {_shown_state(entry)} {sender} {env.size} {att} "
                      f"{env.subject}")

    def _login_summary(self, *, listing: bool) -> tuple[str, list[str]]:
        """The login answer; the per-envelope ``listing`` only for PWD (POP3's
        PASS needs the counts alone, which keeps logins cheap in big mailboxes)."""
        assert self.user is not None
        if not listing:
            counts = self.store.mailbox_counts(self.user.id)
            return (f"{self.user.main_address} has {counts.pending} envelope(s) awaiting a "
                    f"decision and {counts.messages} message(s) ({counts.octets} octets)"), []
        pending = self.store.mailbox_after(self.user.id, [EntryState.PENDING], after=0,
                                           limit=_NO_LIMIT)
        numbered = self._numbering()
        live = list(self._live())
        text = (f"{self.user.main_address} has {len(pending)} envelope(s) awaiting a decision "
                f"and {len(live)} message(s) ({sum(self.sizes[n - 1] for n in live)} octets)")
        lines = [f"envelope {self._envelope_line(e, env)}" for e, env in pending]
        # An SMDP answer: each message by its entry id, the one id that names
        # it in every SMDP command and in the client (not its POP3 number).
        # The subjects in one read, not two a message.
        subjects = {e.id: env.subject for e, env in self.store.mailbox_after(
            self.user.id, [EntryState.ACCEPTED], after=0, limit=_NO_LIMIT)}
        for n in live:
            subject = subjects.get(numbered[n - 1], "")
            lines.append(_clean(f"message {numbered[n - 1]} {self.sizes[n - 1]} {subject}"))
        return text, lines

    # -- dispatch --------------------------------------------------------------------

    async def handle(self, event: object) -> None:
        port, store = self.port, self.store
        conn = self.conn
        match event:
            case (wire.User() | wire.Pass() | wire.Passwd() | wire.NewPass()
                  ) if not (conn.tls or self.plaintext_login):
                # Refused already at USER, so that a well-behaved client never
                # sends the password over the open connection.
                conn.err("TLS required for passwords (use STLS)")
            case wire.User(name=name):
                # Always ask for the password: the reply must not reveal whether
                # the account exists (the check happens at PASS).
                self.name = name
                conn.ok("send your password")
            case wire.Pass(password=password, verb=verb):
                user = await port.accounts.authenticate(self.name or "", password)
                if user is None:
                    log.info("login failed user=%s client=%s", self.name or "-", self.client)
                    # Same reply whether or not the account exists; each failure
                    # slows the next replies to this client and for this name.
                    port.core.metrics.login_failures.labels("user").inc()
                    await asyncio.sleep(port.logins.failed(self.client, self.name or ""))
                    conn.err("authentication failed")
                    return
                self.user = user
                log.info("login ok user=%s client=%s%s", user.main_address, self.client,
                         "" if self.name == user.main_address else f" as={self.name}")
                pwd = verb.upper() == "PWD"
                text, lines = self._login_summary(listing=pwd)
                # Table 5 "pwd": on success the server answers with the envelopes
                # and messages in the mailbox; PASS stays exactly POP3.
                if pwd:
                    conn.ok(text, lines)
                else:
                    conn.ok(text)
            case wire.Passwd(password=current):
                await self._prove_password(current)
            case wire.NewPass(password=new):
                assert self.user is not None
                await port.accounts.change_password(self.user, new)
                log.info("password changed user=%s client=%s", self.user.main_address,
                         self.client)
                conn.ok("password changed; use the new one from now on")
            case wire.Capa():
                capabilities = ["USER", "UIDL", "TOP", "IMPLEMENTATION smdp",
                                "SMDP PWD ENVS ENV ACCEPT ACCEPT&AUTH REJECT REJECT&SPAM "
                                "REJECT&SPAMMER UNSUB MAIL RCPT DATA SENT LISTS LISTADD LISTDEL "
                                "IDENT GROUP PASSWD"]
                if (port.tls.user_server_context is not None and not conn.tls
                        and self.user is None):
                    capabilities.append("STLS")  # RFC 2595: offered until in use
                conn.ok("capability list follows", capabilities)
            case wire.Stls():
                context = port.tls.user_server_context
                if context is None:
                    conn.err("TLS not available")
                    return
                conn.ok("Begin TLS negotiation")
                self.name = None  # RFC 2595 4: a USER sent in plaintext counts no more
                await self.start_tls(context)
            case wire.Stat():
                assert self.user is not None
                if self.numbered is None:
                    # Nothing numbered nor marked yet: the maildrop is the counts.
                    counts = store.mailbox_counts(self.user.id)
                    conn.ok(f"{counts.messages} {counts.octets}")
                    return
                self._refresh()
                live = list(self._live())
                conn.ok(f"{len(live)} {sum(self.sizes[n - 1] for n in live)}")
            case wire.ListCmd(n=n, after=after, limit=limit):
                if self.numbered is None:
                    self._numbering()
                else:
                    self._refresh()  # mail accepted since gets the next numbers
                if n is None:
                    numbers, more = self._page("LIST", after, limit)
                    conn.ok(f"{len(numbers)} messages{more}",
                            [f"{i} {self.sizes[i - 1]}" for i in numbers])
                elif self._message(n) is not None:
                    conn.ok(f"{n} {self.sizes[n - 1]}")
            case wire.Uidl(n=n, after=after, limit=limit):
                if n is None:
                    numbers, more = self._page("UIDL", after, limit)
                    conn.ok(f"unique ids follow{more}", self._uids(numbers))
                elif self._message(n) is not None:
                    conn.ok(self._uids([n])[0])
            case wire.Retr(n=n):
                if (stored := self._stored(n)) is not None:
                    env, head = stored
                    conn.ok_block_start(f"{len(head) + env.size} octets")
                    await self._stream(env.id, env.size, head)
            case wire.Top(n=n, lines=k):
                if (stored := self._stored(n)) is not None:
                    env, head = stored
                    length = _top_length(self._chunks(env.id), k)
                    conn.ok_block_start("top of message follows")
                    await self._stream(env.id, length, head)
            case wire.Dele(n=n):
                if self._message(n) is not None:
                    self.deleted.add(n)
                    conn.ok(f"message {n} deleted")
            case wire.Rset():
                if conn.state is wire.UserState.NEW_PASS:
                    conn.ok("password unchanged")
                elif self.compose_from is not None:
                    # RSET while composing abandons the message only.
                    self.compose_from, self.compose_to = None, []
                    conn.ok("message abandoned")
                else:
                    self.deleted.clear()  # POP3: unmark deleted messages
                    conn.ok("reset")
            case wire.Noop():
                conn.ok("")
            case wire.Quit():
                if self.user is not None and self.deleted and self.numbered is not None:
                    store.mark_deleted([self.numbered[n - 1] for n in self.deleted])
                conn.ok(f"{self.config.hostname} signing off")
            case wire.Envs(all=show_all, after=after, limit=limit):
                self._envs(show_all, after, limit)
            case wire.EnvShow(id=entry_id):
                self._show_envelope(entry_id)
            case wire.UserDecision(option=option, id=entry_id):
                self._decide(option, entry_id)
            case wire.Unsub(id=entry_id):
                self._unsubscribe(entry_id)
            case wire.GroupStatus(address=address):
                self._group_status(address)
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
                await port.outbox.room_for_submission(
                    domain_of(r) for r in self.compose_to)
                self._submit(body)
            case wire.MessageFailed(reason=reason):
                self.drop_spool()
                self.compose_from, self.compose_to = None, []
                log.info("submission refused user=%s client=%s reason=%s",
                         self.user.main_address if self.user else "-", self.client, reason)
            case wire.Sent(msgid=msgid, before=before):
                self._sent(msgid, before)
            case wire.Lists():
                assert self.user is not None
                lines = []
                for e in store.list_entries(self.user.id):
                    added = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.added_at))
                    server = f" {e.server}" if e.server else ""
                    lines.append(f"{e.direction}-{e.kind} {e.address}{server} {e.how} {added}")
                conn.ok(f"{len(lines)} list entries", lines)
            case wire.ListAdd() | wire.ListDel():
                await self._edit_list(event)
            case wire.Ident():
                assert self.user is not None
                ids = store.identities(self.user.id)
                conn.ok(f"{len(ids)} identities, main first", ids)
            case _:
                conn.err("command not implemented")

    def _envs(self, show_all: bool, after: int | None, limit: int | None) -> None:
        """ENVS: every entry after the cursor, or a page of them; the cursor is
        an entry id, so decisions between pages neither skip nor repeat one."""
        assert self.user is not None
        states = None if show_all else [EntryState.PENDING]
        if limit is None:
            # Every entry, read a thousand at a time: only the answer's lines
            # are held, not every entry and envelope at once.
            lines: list[str] = []
            cursor = after or 0
            while rows := self.store.mailbox_after(self.user.id, states, after=cursor,
                                                   limit=wire.MAX_PAGE):
                lines += [self._envelope_line(e, env) for e, env in rows]
                cursor = rows[-1][0].id
            self.conn.ok(f"{len(lines)} envelope(s)", lines)
            return
        rows = self.store.mailbox_after(self.user.id, states, after=after or 0,
                                        limit=limit + 1)
        more = ""
        if len(rows) > limit:
            rows = rows[:limit]
            more = (f"{wire.PAGE_MORE}ENVS{' ALL' if show_all else ''} "
                    f"AFTER {rows[-1][0].id} LIMIT {limit}")
        self.conn.ok(f"{len(rows)} envelope(s){more}",
                     [self._envelope_line(e, env) for e, env in rows])

    async def _prove_password(self, current: str) -> None:
        """PASSWD: the current password again, so that a session left open
        (or taken over) cannot change it; a wrong one is a failed login."""
        assert self.user is not None
        if not await self.port.accounts.verify(self.user, current):
            log.info("password change refused user=%s client=%s reason=wrong current password",
                     self.user.main_address, self.client)
            self.core.metrics.login_failures.labels("user").inc()
            await asyncio.sleep(self.port.logins.failed(self.client, self.name or ""))
            self.conn.err("wrong password; the password was not changed")
            return
        self.conn.ok("send the new password with NEWPASS")

    def _show_envelope(self, entry_id: int) -> None:
        assert self.user is not None
        entry = self.store.mailbox_entry(entry_id)
        if entry is None or entry.user_id != self.user.id:
            self.conn.err(f"no envelope {entry_id} in your mailbox")
            return
        env = self.store.in_envelope(entry.envelope_id)
        assert env is not None
        # The option as this port spells it (Table 5: ACCEPT&AUTH, not the
        # AUTHORIZE the peer port sends for it).
        option = wire.DECISION_VERBS[entry.decision] if entry.decision else "-"
        lines = [
            f"Id: {entry.id}", f"State: {_shown_state(entry)}",
            f"Decision: {option}", f"Reason: {entry.reason or '-'}",
            f"Sender: {env.sender or '<>'}", f"Server: {env.origin_server}",
            f"Recipient: {entry.recipient}", f"Size: {env.size}",
        ]
        if env.smtp_auth is not None:
            # Mail that arrived by SMTP at the MX (issue 12; protocol.md 12.5):
            # how it came, what was verified, and the results in full.
            lines += ["Via: SMTP", f"Verified: {env.verified_domain or 'none'}",
                      _clean(f"Authentication-Results: {env.smtp_auth}")]
        request = self.store.unsubscribe_of_entry(entry.id)
        if request is not None:
            lines.append(_clean(f"Unsubscribe: {unsubscribe.shown(request)}"))
        lines += [_clean(line) for line in env.block.splitlines() if line]
        self.conn.ok(f"envelope {entry.id}", lines)

    def _decide(self, decision: Decision, entry_id: int) -> None:
        assert self.user is not None
        result = self.core.destination.decide(self.user, entry_id, decision)
        if not result.outcome.ok or result.entry is None:
            self.conn.err(result.outcome.reason)
            return
        self.port.outbox.wake()
        env = result.envelope or self.store.in_envelope(result.entry.envelope_id)
        sender = env.sender if env else "the sender"
        if result.outcome.kind is Kind.DONE:
            log.info("decision entry=%d envid=%s user=%s decision=%s sender=%s peer=%s",
                     entry_id, env.envid if env else "-", self.user.main_address,
                     decision.value, sender, env.origin_server if env else "-")
        text = decision_text(decision, result.outcome, result.entry.state, sender)
        if (not decision.accepts and env is not None
                and decode_envelope_block(env.block.encode("utf-8")).summary.list_unsubscribe
                and self.store.unsubscribe_of_entry(entry_id) is None):
            # Issue 16 item 3: rejecting list mail offers to leave the list.
            text += f"; UNSUB {entry_id} unsubscribes you from the list"
        self.conn.ok(f"envelope {entry_id} {text}")

    def _group_status(self, address: str) -> None:
        """GROUP: the owner's view (docs/lists.md); to the owner only, and
        the same answer for a group of someone else's as for none."""
        assert self.user is not None
        group = self.store.group(address.lower())
        if group is None or group.owner_id != self.user.id:
            self.conn.err(f"no group {address} of yours")
            return
        rows = self.store.group_deliveries(group.id)
        self.conn.ok(f"{len(rows)} recipient status line(s) for {group.address}", [
            _clean(f"{d.msgid} {d.recipient} {d.state}" + (f" {d.detail}" if d.detail else ""))
            for d in rows])

    def _unsubscribe(self, entry_id: int) -> None:
        assert self.user is not None
        done = unsubscribe.request(self.store, self.core.origin, self.user, entry_id)
        if not done.ok:
            self.conn.err(done.text)
            return
        self.port.outbox.wake()
        log.info("unsubscribe entry=%d user=%s: %s", entry_id, self.user.main_address,
                 done.text)
        self.conn.ok(done.text)

    def _mail(self, identity: str | None) -> None:
        assert self.user is not None
        chosen = self.core.origin.choose_identity(self.user, identity)
        if not chosen.ok:
            self.conn.err(chosen.reason)
            return
        self.compose_from, self.compose_to = chosen.reason, []
        self.conn.ok(f"composing as {chosen.reason}")

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
            result = self.core.origin.submit(
                self.user, sender, rcpts, data, spool_dir=self.config.spool_dir,
                client=self.client,
            )
        except SubmissionError as exc:
            log.info("submission refused user=%s client=%s reason=%s",
                     self.user.main_address, self.client, exc)
            self.conn.err(str(exc))
            return
        except OSError as exc:  # a full disk while spooling the rewritten message
            log.error("cannot spool a submission: %s", exc)
            self.conn.err("insufficient storage on the server; nothing was stored, try later")
            return
        self.port.outbox.wake()
        log.info("submission msgid=%s user=%s from=%s to=%s%s%s client=%s", result.msgid,
                 self.user.main_address, sender, ",".join(result.queued) or "-",
                 f" direct={','.join(result.direct)}" if result.direct else "",
                 f" refused={','.join(result.refused)}" if result.refused else "",
                 self.client)
        text = f"queued as {result.msgid} ({len(result.queued)} recipient(s)"
        if result.direct:
            text += f"; {len(result.direct)} sent directly (white list)"
        if result.refused:
            text += f"; {len(result.refused)} refused by your black list: " + \
                ", ".join(result.refused)
        self.conn.ok(text + ")")

    def _sent(self, msgid: str | None, before: str | None = None) -> None:
        assert self.user is not None
        store = self.store
        more = None  # the msgid the next page starts before (protocol.md 12.6)
        if msgid is None:
            older_than = None
            if before is not None:
                anchor = store.out_message_by_msgid(before)
                if anchor is None or anchor.user_id != self.user.id:
                    self.conn.err(f"no sent message {before}")
                    return
                older_than = anchor.id
            # One more than a page: whether there is a next page, without a count.
            messages = store.out_messages_of(self.user.id, SENT_PAGE + 1, before=older_than)
            if len(messages) > SENT_PAGE:
                messages = messages[:SENT_PAGE]
                more = messages[-1].msgid
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
                lines.append(_clean(
                    f"{msg.msgid} {r.recipient} {r.state} {when} {r.route}{detail}"))
        text = f"{len(lines)} recipient status line(s)"
        if more is not None:
            text += f"; {wire.SENT_MORE}{more}"
        self.conn.ok(text, lines)

    async def _edit_list(self, event: wire.ListAdd | wire.ListDel) -> None:
        assert self.user is not None
        request = parse_list_request(event.list_name, event.address, event.server)
        if isinstance(request, Outcome):
            self.conn.err(request.reason)
            return
        request = await with_inbound_server(request, self.port.discovery)
        if isinstance(request, Outcome):
            self.conn.err(request.reason)
            return
        outcome = self.core.lists.edit(self.user.id, request,
                                       adding=isinstance(event, wire.ListAdd))
        if outcome.ok:
            self.conn.ok(outcome.reason)
        else:
            self.conn.err(outcome.reason)


def _shown_state(entry: MailboxEntry) -> str:
    """An entry's state as ENVS and ENV show it: ``deleted`` once a POP3
    session has removed the message (DELE, then QUIT), so that an id that
    named a message says what became of it."""
    return DELETED if entry.deleted else str(entry.state)


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


async def serve_user(port: UserPort, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        await UserSession(port, reader, writer).run()
    except Exception:
        log.exception("user session failed")
