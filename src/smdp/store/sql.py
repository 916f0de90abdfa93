"""The SQL both backends share: every statement that reads the same on SQLite
and PostgreSQL lives here once, written with ``?`` placeholders (the
PostgreSQL backend turns them into ``%s``). A backend supplies ``_exec``,
``transaction`` and what differs in its dialect (inserts that return an id,
locking, upserts that need it, migrations)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any

from smdp.mail.body import CHUNK_SIZE, Body
from smdp.store.group_commit import WalFlusher
from smdp.store.records import (
    ApiToken,
    CachedPolicy,
    Group,
    GroupDelivery,
    ImapListed,
    ImapMessage,
    ImapSent,
    InboundListing,
    InEnvelope,
    Job,
    ListEntry,
    MailboxCounts,
    MailboxEntry,
    OutEnvelope,
    OutMessage,
    OutRecipient,
    Quality,
    QueuedJob,
    Unsubscribe,
    User,
)
from smdp.terms import (
    Decision,
    DeliveryMode,
    EntryState,
    JobKind,
    ListDirection,
    ListedBy,
    ListKind,
    RecipientState,
    RouteKind,
)

_ENVID_BATCH = 200  # entries per statement of envids_of


class SqlStore:
    """Methods identical on both backends; subclasses provide the rest."""

    # What the database was asked (``Store.statements``): counted by the
    # backends' ``_exec`` and ``transaction``, plain integers so that
    # counting costs next to nothing.
    statements = 0
    transactions = 0
    commits = 0
    flusher: WalFlusher | None = None

    def start_group_commit(self) -> WalFlusher | None:
        # PostgreSQL groups concurrent backends' WAL flushes itself; a COMMIT
        # that returned is durable (docs/benchmarks.md 11, item 2).
        return None

    def _exec(self, sql: str, args: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def put_inbound(self, user_id: int, kind: str, address: str, server: str, how: str,
                    source: tuple[int, str] | None = None) -> None:
        """Add a pair; one pair sits on at most one list, so this moves it if
        needed. ``source``: the mailbox entry and the option that listed it."""
        entry, decision = source if source is not None else (None, None)
        self._exec(
            "INSERT INTO inbound_lists (user_id, kind, address, server, how, added_at, "
            "source_entry, source_decision) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, address, server) DO UPDATE "
            "SET kind=excluded.kind, how=excluded.how, added_at=excluded.added_at, uses=0, "
            "source_entry=excluded.source_entry, source_decision=excluded.source_decision",
            (user_id, kind, address, server, how, time.time(), entry, decision),
        )

    def update_out_recipient(
        self, rcpt_id: int, state: str, detail: str = "", envid: str | None = None,
        route: str | None = None,
    ) -> None:
        if envid is None:
            self._exec(
                "UPDATE out_recipients SET state=?, detail=?, updated_at=? WHERE id=?",
                (state, detail, time.time(), rcpt_id),
            )
        elif route is None:
            self._exec(
                "UPDATE out_recipients SET state=?, detail=?, envid=?, updated_at=? "
                "WHERE id=?",
                (state, detail, envid, time.time(), rcpt_id),
            )
        else:
            self._exec(
                "UPDATE out_recipients SET state=?, detail=?, envid=?, route=?, updated_at=? "
                "WHERE id=?",
                (state, detail, envid, route, time.time(), rcpt_id),
            )

    # -- quality (section 5.3; issue 16 item 1, migration 0014) ----------------

    # What the quality counters' aging reads: seconds per half-life (0: they
    # never age) and the clock (tests put a stand-in here).
    half_life: float
    clock: Callable[[], float]

    # A counter aged from ``recent_at`` to the row being written: decayed on
    # write, so it needs no history (``smdp_decay``: migration 0014 on
    # PostgreSQL, ``SqliteStore`` on SQLite).
    _AGED = "peer_quality.{0} * smdp_decay(excluded.recent_at - peer_quality.recent_at, ?)"

    def _count(self, keys: Sequence[str], messages: int, votes: int, judged: float = 0.0,
               weighed: float = 0.0, returning: bool = False) -> list[Quality]:
        """Move ``server``'s counters by ``messages`` and ``votes``, and their
        aged copies by ``judged`` messages and ``weighed`` votes. The aged
        ones count a message once it is judged (voted on), not on arrival:
        mail nobody has decided on yet is no evidence either way, and a
        blocked peer cannot dilute its votes with envelopes nobody wants
        (they count -1 when they expire).

        ``returning``: the keys' quality as it now is, read by the same
        statement (what ``quality`` would read next: the aged counters were
        just aged to now), in the keys' order; else nothing."""
        if len(set(keys)) < len(keys):  # never so far; counted as one call per key
            return [q for key in keys
                    for q in self._count((key,), messages, votes, judged, weighed, returning)]
        now = self.clock()
        # Every key in one statement: a row each (the keys differ, so no row
        # is upserted twice, which PostgreSQL would refuse).
        rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * len(keys))
        values = [v for key in keys for v in (key, messages, votes, now, judged, weighed, now)]
        tail = ""
        more: tuple[float, ...] = ()
        if returning:
            # The columns of ``_quality_select``, as the row now stands.
            half_life = float(self.half_life)
            tail = (" RETURNING server, messages, votes, override, override_reason, "
                    "override_at, recent_messages, recent_votes, "
                    "(SELECT COUNT(*) FROM quality_deciders d WHERE d.server = "
                    "peer_quality.server AND d.at >= ?), standing, standing_at")
            more = (now - half_life if half_life > 0 else float("-inf"),)
        cur = self._exec(
            "INSERT INTO peer_quality (server, messages, votes, updated_at, recent_messages, "
            f"recent_votes, recent_at) VALUES {rows} "
            "ON CONFLICT (server) DO UPDATE SET "
            "messages = peer_quality.messages + excluded.messages, "
            "votes = peer_quality.votes + excluded.votes, "
            "updated_at = excluded.updated_at, "
            f"recent_messages = {self._AGED.format('recent_messages')} "
            "+ excluded.recent_messages, "
            f"recent_votes = {self._AGED.format('recent_votes')} + excluded.recent_votes, "
            "recent_at = excluded.recent_at" + tail,
            (*values, float(self.half_life), float(self.half_life), *more),
        )
        if not returning:
            return []
        found = {q.server: q for q in map(_quality_row, cur.fetchall())}
        return [found[key] for key in keys]

    def count_messages(self, server: str, n: int, also: Sequence[str] = ()) -> None:
        # Nothing ages (half-life 0): the aged counters are the paper's own,
        # a message counted on arrival.
        self._count((server, *also), n, 0, float(n) if self.half_life <= 0 else 0.0)

    def count_forged(self, server: str, n: int) -> None:
        self._count((server,), n, -n, float(n), float(-n))

    def _vote_counts(self, user_id: int, received_at: float, keys: Sequence[str], old: int,
                     vote: int) -> list[Quality]:
        """``set_vote``'s counting: every key moves by the change. In the aged
        counters the message counts when first judged, and both it and its
        vote weigh what they would have had they counted on arrival (aged
        from ``received_at``). A rejection makes the entry's user one of each
        key's recent deciders."""
        now = self.clock()
        weight = decay(now - received_at, self.half_life)
        judged = weight if old == 0 and self.half_life > 0 else 0.0
        # The deciders first: the quality the count returns includes them.
        if vote < 0:
            self._exec(
                "INSERT INTO quality_deciders (server, user_id, at) VALUES "
                + ", ".join(["(?, ?, ?)"] * len(dict.fromkeys(keys)))
                + " ON CONFLICT (server, user_id) DO UPDATE SET at = excluded.at",
                tuple(v for key in dict.fromkeys(keys) for v in (key, user_id, now)))
        return self._count(keys, 0, vote - old, judged, (vote - old) * weight, returning=True)

    def _quality_select(self) -> tuple[str, tuple[float, ...]]:
        """The quality columns, aged to now, and their arguments."""
        now, half_life = self.clock(), float(self.half_life)
        since = now - half_life if half_life > 0 else float("-inf")
        return (
            "SELECT q.server, q.messages, q.votes, q.override, q.override_reason, "
            "q.override_at, q.recent_messages * smdp_decay(? - q.recent_at, ?), "
            "q.recent_votes * smdp_decay(? - q.recent_at, ?), "
            "(SELECT COUNT(*) FROM quality_deciders d WHERE d.server = q.server "
            "AND d.at >= ?), q.standing, q.standing_at FROM peer_quality q",
            (now, half_life, now, half_life, since))

    def quality(self, server: str) -> Quality:
        sql, args = self._quality_select()
        row = self._exec(sql + " WHERE q.server=?", (*args, server)).fetchone()
        return _quality_row(row) if row else Quality(server, 0, 0)

    def all_quality(self) -> list[Quality]:
        """Every peer's (and SMTP key's) quality; not the per-sender ones."""
        sql, args = self._quality_select()
        rows = self._exec(sql + " WHERE q.server NOT LIKE ? ORDER BY q.server",
                          (*args, "sender:%"))
        return [_quality_row(r) for r in rows.fetchall()]

    def sender_quality(self) -> list[Quality]:
        """The quality kept per sending address at a peer (``sender:`` keys)."""
        sql, args = self._quality_select()
        rows = self._exec(sql + " WHERE q.server LIKE ? ORDER BY q.server", (*args, "sender:%"))
        return [_quality_row(r) for r in rows.fetchall()]

    def set_standing(self, server: str, standing: str) -> None:
        """Remember the standing last judged (the hysteresis reads it)."""
        self._exec("UPDATE peer_quality SET standing=?, standing_at=? WHERE server=?",
                   (standing, self.clock(), server))

    def take_probation(self, server: str, per_day: int) -> bool:
        """One of ``server``'s ``per_day`` envelopes of probation today (UTC
        days by the quality clock); False when they are used."""
        day = int(self.clock() // 86400)
        cur = self._exec(
            "UPDATE peer_quality SET probation_used = CASE WHEN probation_day = ? "
            "THEN probation_used + 1 ELSE 1 END, probation_day = ? "
            "WHERE server = ? AND (probation_day <> ? OR probation_used < ?)",
            (day, day, server, day, per_day))
        return bool(cur.rowcount)

    def insert_out_message(
        self, *, msgid: str, user_id: int, sender: str, body: Body | bytes, subject: str,
        summary: str, expires_at: float,
    ) -> int:
        body = as_body(body)
        with self.transaction():
            message_id = self._insert(
                "INSERT INTO out_messages (msgid, user_id, sender, size, subject, summary, "
                "has_body, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) "
                "RETURNING id",
                (msgid, user_id, sender, body.size, subject, summary, time.time(), expires_at),
            )
            self._write_chunks(_OUT_CHUNKS, message_id, body)
        return message_id

    def insert_in_envelope(
        self, *, envid: str, origin_server: str, sender: str, size: int, block: str,
        subject: str, body: Body | bytes | None, smtp_auth: str | None = None,
        verified_domain: str | None = None, mail_from: str | None = None,
        client_prefix: str | None = None, expires_at: float | None = None,
    ) -> int:
        """``size`` is the size the envelope announced; with a body, the body's own."""
        if body is None:
            return self._insert(
                "INSERT INTO in_envelopes (envid, origin_server, sender, size, block, subject, "
                "received_at, has_body, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?) "
                "RETURNING id",
                (envid, origin_server, sender, size, block, subject, self.clock(), expires_at),
            )
        body = as_body(body)
        with self.transaction():
            # The columns of migration 0010 only for SMTP mail: an SMDP
            # arrival's statement is the same as before it.
            smtp = ("", "") if smtp_auth is None else (
                ", smtp_auth, verified_domain, mail_from, client_prefix", ", ?, ?, ?, ?")
            envelope_id = self._insert(
                "INSERT INTO in_envelopes (envid, origin_server, sender, size, block, subject, "
                f"received_at, has_body, expires_at{smtp[0]}) "
                f"VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?{smtp[1]}) RETURNING id",
                (envid, origin_server, sender, body.size, block, subject, self.clock(),
                 expires_at, *(() if smtp_auth is None
                   else (smtp_auth, verified_domain, mail_from, client_prefix))),
            )
            self._write_chunks(_IN_CHUNKS, envelope_id, body)
        return envelope_id

    # -- bodies, a chunk per row ---------------------------------------------------

    def _write_chunks(self, table: tuple[str, str], owner: int, body: Body) -> None:
        """One row per ``CHUNK_SIZE`` piece: only one piece is in memory at a time
        (a file-backed body is read a piece at a time as it is written)."""
        name, key = table
        sql = f"INSERT INTO {name} ({key}, seq, data) VALUES (?, ?, ?)"
        # Views of an in-memory body: the driver copies them into the row
        # once, with no copy of each piece before (issue 15 item 4).
        for seq, chunk in enumerate(body.views(CHUNK_SIZE)):
            self._exec(sql, (owner, seq, chunk))

    def _chunk(self, table: tuple[str, str], owner: int, seq: int) -> bytes | None:
        name, key = table
        row = self._exec(
            f"SELECT data FROM {name} WHERE {key}=? AND seq=?", (owner, seq)
        ).fetchone()
        return bytes(row[0]) if row else None

    def _whole(self, table: tuple[str, str], parent: str, owner: int) -> bytes | None:
        # One statement, so a body dropped meanwhile reads as gone, never as cut short.
        name, key = table
        rows = self._exec(
            f"SELECT c.data FROM {parent} p LEFT JOIN {name} c ON c.{key} = p.id "
            "WHERE p.id=? AND p.has_body=1 ORDER BY c.seq",
            (owner,),
        ).fetchall()
        if not rows:
            return None
        return b"".join(bytes(r[0]) for r in rows if r[0] is not None)

    def out_body_chunk(self, message_id: int, seq: int) -> bytes | None:
        """Chunk ``seq`` (from 0) of a held body; None past its end or with no body.

        Chunks may be of any size (a body migrated whole is one chunk): read
        until None and compare the octets read with ``OutMessage.size``.
        """
        return self._chunk(_OUT_CHUNKS, message_id, seq)

    def in_body_chunk(self, envelope_id: int, seq: int) -> bytes | None:
        """Chunk ``seq`` (from 0) of a stored body; None past its end or with no
        body. Compare the octets read with ``InEnvelope.size``."""
        return self._chunk(_IN_CHUNKS, envelope_id, seq)

    def in_body_heads(self, envelope_ids: Sequence[int], limit: int) -> dict[int, bytes]:
        # Batches of a few hundred: one statement each, whatever the number
        # asked for, and well inside both backends' limits on parameters.
        # ``limit`` is our own number, not the client's: written into the
        # statement, so that PostgreSQL's substr gets an integer, not a bigint.
        heads: dict[int, bytes] = {}
        for i in range(0, len(envelope_ids), 500):
            part = envelope_ids[i:i + 500]
            rows = self._exec(
                f"SELECT envelope_id, substr(data, 1, {int(limit)}) FROM in_body_chunks "
                f"WHERE seq=0 AND envelope_id IN ({', '.join('?' * len(part))})",
                tuple(part)).fetchall()
            heads.update((int(r[0]), bytes(r[1])) for r in rows)
        return heads

    def insert_mailbox_entry(
        self, user_id: int, envelope_id: int, recipient: str, state: str
    ) -> int:
        # The entry's size as RETR sends it, for the counts of migration 0017.
        return self._insert(
            "INSERT INTO mailbox (user_id, envelope_id, recipient, state, octets) "
            "SELECT ?, ?, ?, ?, e.size + smdp_delivery_octets(COALESCE(e.mail_from, e.sender), ?) "
            "FROM in_envelopes e WHERE e.id = ? RETURNING id",
            (user_id, envelope_id, recipient, state, recipient, envelope_id),
        )

    def _insert(self, sql: str, args: Sequence[object]) -> int:
        # In a transaction even when alone: a statement with RETURNING makes
        # its changes at its first step but commits (autocommit) only once its
        # last row is read, so a write counted after execute() is not yet
        # committed, nor counted by SQLite's total_changes (group commit
        # would never flush it before the answer).
        with self.transaction():
            row = self._exec(sql, args).fetchone()
        assert row is not None  # INSERT ... RETURNING id gives one row
        return int(row[0])

    def set_in_expiry(self, envelope_id: int, expires_at: float) -> None:
        self._exec(
            "UPDATE in_envelopes SET expires_at=? WHERE id=?", (expires_at, envelope_id)
        )

    def set_password(self, user_id: int, password_hash: str) -> None:
        with self.transaction():
            self._exec("UPDATE users SET password_hash=? WHERE id=?", (password_hash, user_id))

    def user_by_address(self, address: str) -> User | None:
        row = self._exec(
            "SELECT u.id, u.main_address, u.password_hash FROM identities i "
            "JOIN users u ON u.id = i.user_id WHERE i.address=?",
            (address,),
        ).fetchone()
        return User(*row) if row else None

    def user_by_id(self, user_id: int) -> User | None:
        row = self._exec(
            "SELECT id, main_address, password_hash FROM users WHERE id=?", (user_id,)
        ).fetchone()
        return User(*row) if row else None

    def identities(self, user_id: int) -> list[str]:
        rows = self._exec(
            "SELECT address FROM identities WHERE user_id=? ORDER BY is_main DESC, address",
            (user_id,),
        ).fetchall()
        return [r[0] for r in rows]

    def users(self) -> list[User]:
        rows = self._exec("SELECT id, main_address, password_hash FROM users ORDER BY id")
        return [User(*r) for r in rows.fetchall()]

    _OUT_MSG = (
        "SELECT id, msgid, user_id, sender, size, subject, summary, created_at, expires_at, "
        "has_body FROM out_messages"
    )

    def out_message(self, message_id: int) -> OutMessage | None:
        row = self._exec(self._OUT_MSG + " WHERE id=?", (message_id,)).fetchone()
        return out_message_row(row) if row else None

    def out_message_by_msgid(self, msgid: str) -> OutMessage | None:
        row = self._exec(self._OUT_MSG + " WHERE msgid=?", (msgid,)).fetchone()
        return out_message_row(row) if row else None

    def out_messages_of(self, user_id: int, limit: int = 100,
                        before: int | None = None) -> list[OutMessage]:
        if before is None:
            rows = self._exec(
                self._OUT_MSG + " WHERE user_id=? ORDER BY id DESC LIMIT ?", (user_id, limit)
            ).fetchall()
        else:
            rows = self._exec(
                self._OUT_MSG + " WHERE user_id=? AND id<? ORDER BY id DESC LIMIT ?",
                (user_id, before, limit),
            ).fetchall()
        return [out_message_row(r) for r in rows]

    def out_body(self, message_id: int) -> bytes | None:
        """The whole held body (None when not held): for tests and small uses;
        a server streams with ``out_body_chunk``."""
        return self._whole(_OUT_CHUNKS, "out_messages", message_id)

    def drop_out_body(self, message_id: int) -> None:
        """Delete the held body's chunks (the message record stays)."""
        with self.transaction():
            self._exec("DELETE FROM out_body_chunks WHERE message_id=?", (message_id,))
            self._exec("UPDATE out_messages SET has_body=0 WHERE id=?", (message_id,))

    def drop_out_body_if_done(self, message_id: int, needs_body: Collection[str]) -> bool:
        marks = ", ".join("?" * len(needs_body))
        with self.transaction():
            # The check and the mark in one statement; the chunks only when
            # it marked (a body marked gone has no chunks left).
            cur = self._exec(
                "UPDATE out_messages SET has_body=0 WHERE id=? AND has_body=1 AND NOT EXISTS "
                "(SELECT 1 FROM out_recipients r WHERE r.message_id = out_messages.id "
                f"AND r.state IN ({marks}))", (message_id, *needs_body))
            if not cur.rowcount:
                return False
            self._exec("DELETE FROM out_body_chunks WHERE message_id=?", (message_id,))
        return True

    def insert_out_envelope(self, envid: str, message_id: int, domain: str, mode: str) -> None:
        self._exec(
            "INSERT INTO out_envelopes (envid, message_id, domain, mode) VALUES (?, ?, ?, ?)",
            (envid, message_id, domain, mode),
        )

    def out_envelope_and_message(self, envid: str) -> tuple[OutEnvelope, OutMessage] | None:
        row = self._exec(
            "SELECT e.envid, e.message_id, e.domain, e.mode, m.id, m.msgid, m.user_id, "
            "m.sender, m.size, m.subject, m.summary, m.created_at, m.expires_at, m.has_body "
            "FROM out_envelopes e JOIN out_messages m ON m.id = e.message_id WHERE e.envid=?",
            (envid,)).fetchone()
        if row is None:
            return None
        return (OutEnvelope(row[0], row[1], row[2], DeliveryMode(row[3])),
                out_message_row(row[4:]))

    def out_envelope(self, envid: str) -> OutEnvelope | None:
        row = self._exec(
            "SELECT envid, message_id, domain, mode FROM out_envelopes WHERE envid=?", (envid,)
        ).fetchone()
        return OutEnvelope(row[0], row[1], row[2], DeliveryMode(row[3])) if row else None

    _OUT_RCPT = (
        "SELECT id, message_id, envid, recipient, domain, state, detail, updated_at, route "
        "FROM out_recipients"
    )

    def insert_out_recipient(
        self, message_id: int, recipient: str, domain: str, state: str, envid: str | None,
        detail: str = "", route: str = "smdp",
    ) -> None:
        self._exec(
            "INSERT INTO out_recipients (message_id, envid, recipient, domain, state, detail, "
            "updated_at, route) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (message_id, envid, recipient, domain, state, detail, time.time(), route),
        )

    def out_recipients(self, message_id: int) -> list[OutRecipient]:
        rows = self._exec(self._OUT_RCPT + " WHERE message_id=? ORDER BY id", (message_id,))
        return [out_recipient_row(r) for r in rows.fetchall()]

    def out_recipients_of_envelope(self, envid: str) -> list[OutRecipient]:
        rows = self._exec(self._OUT_RCPT + " WHERE envid=? ORDER BY id", (envid,))
        return [out_recipient_row(r) for r in rows.fetchall()]

    def add_spam_report(
        self, user_id: int, sender: str, recipient: str, kind: str, envid: str
    ) -> None:
        self._exec(
            "INSERT INTO spam_reports (user_id, sender, recipient, kind, envid, reported_at) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (envid, recipient) DO UPDATE SET kind=excluded.kind",
            (user_id, sender, recipient, kind, envid, time.time()),
        )

    def spam_reports(self) -> list[tuple[str, int]]:
        rows = self._exec(
            "SELECT sender, COUNT(*) FROM spam_reports GROUP BY sender ORDER BY 2 DESC, 1"
        )
        return [(r[0], int(r[1])) for r in rows.fetchall()]

    def set_suspension(self, user_id: int, reason: str | None) -> None:
        with self.transaction():
            self._exec("UPDATE users SET suspended=? WHERE id=?", (reason, user_id))

    def suspension(self, user_id: int) -> str | None:
        row = self._exec("SELECT suspended FROM users WHERE id=?", (user_id,)).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def suspended_users(self) -> list[tuple[str, str]]:
        rows = self._exec(
            "SELECT main_address, suspended FROM users WHERE suspended IS NOT NULL ORDER BY 1"
        )
        return [(r[0], r[1]) for r in rows.fetchall()]

    _IN_ENV = (
        "SELECT id, envid, origin_server, sender, size, block, subject, received_at, "
        "has_body, smtp_auth, verified_domain, mail_from, client_prefix FROM in_envelopes"
    )

    def in_envelope(self, envelope_id: int) -> InEnvelope | None:
        row = self._exec(self._IN_ENV + " WHERE id=?", (envelope_id,)).fetchone()
        return in_envelope_row(row) if row else None

    def in_envelope_by_envid(self, envid: str) -> InEnvelope | None:
        row = self._exec(self._IN_ENV + " WHERE envid=?", (envid,)).fetchone()
        return in_envelope_row(row) if row else None

    def set_in_body(self, envelope_id: int, body: Body | bytes) -> None:
        """Store (or replace) the envelope's body; its size becomes the body's."""
        body = as_body(body)
        with self.transaction():
            # The envelope's row first: on PostgreSQL its lock makes a second node
            # storing the same body wait, then replace the first one's chunks
            # (instead of colliding with them on the primary key).
            self._exec(
                "UPDATE in_envelopes SET has_body=1, size=? WHERE id=?", (body.size, envelope_id)
            )
            # Each entry's size as RETR sends it follows (the counts' trigger
            # moves the maildrop's octets with it: migration 0017).
            self._exec(
                "UPDATE mailbox SET octets = ? + smdp_delivery_octets((SELECT "
                "COALESCE(e.mail_from, e.sender) FROM in_envelopes e WHERE e.id = ?), recipient) "
                "WHERE envelope_id = ?", (body.size, envelope_id, envelope_id))
            self._exec("DELETE FROM in_body_chunks WHERE envelope_id=?", (envelope_id,))
            self._write_chunks(_IN_CHUNKS, envelope_id, body)

    def drop_smtp_bodies(self, keep_states: Collection[str],
                         envelope_id: int | None = None) -> int:
        """Free the bytes of SMTP arrivals (``smtp_auth`` set) none of whose
        entries is in ``keep_states`` (say pending or accepted) and not
        deleted; only ``envelope_id``'s when given. Returns the bodies freed."""
        marks = ", ".join("?" * len(keep_states))
        unneeded = (
            "SELECT e.id FROM in_envelopes e WHERE e.has_body = 1 "
            "AND e.smtp_auth IS NOT NULL AND NOT EXISTS (SELECT 1 FROM mailbox m "
            f"WHERE m.envelope_id = e.id AND m.deleted = 0 AND m.state IN ({marks}))"
        )
        args: tuple[object, ...] = tuple(keep_states)
        if envelope_id is not None:
            unneeded += " AND e.id = ?"
            args += (envelope_id,)
        with self.transaction():
            ids = [int(r[0]) for r in self._exec(unneeded, args).fetchall()]
            for owner in ids:
                self._exec("DELETE FROM in_body_chunks WHERE envelope_id=?", (owner,))
                self._exec("UPDATE in_envelopes SET has_body=0 WHERE id=?", (owner,))
        return len(ids)

    def in_body(self, envelope_id: int) -> bytes | None:
        """The whole stored body (None when there is none): for tests and small
        uses; a server streams with ``in_body_chunk``."""
        return self._whole(_IN_CHUNKS, "in_envelopes", envelope_id)

    _MAILBOX = (
        "SELECT id, user_id, envelope_id, recipient, state, decision, reason, decided_at, "
        "deleted FROM mailbox"
    )

    def mailbox_page(self, user_id: int, states: Sequence[str] | None = None, *,
                     search: str = "", before: int | None = None,
                     limit: int = 50) -> list[tuple[MailboxEntry, InEnvelope]]:
        """One page of a user's mailbox, newest first, each entry with its
        envelope (issue 13: the web app's list). ``states`` None: every
        envelope, whatever its state (not a message a client appended: no
        envelope); ``search``: a case-insensitive piece of the sender, the subject or the
        sending server; ``before``: only entries older than that entry id
        (the previous page's last). Entries removed over POP3 are left out."""
        where = ["m.user_id=?", "m.deleted=0"]
        args: list[object] = [user_id]
        if states is not None:
            where.append(f"m.state IN ({','.join('?' * len(states))})")
            args += list(states)
        else:
            where.append("m.state <> ?")
            args.append(EntryState.APPENDED)
        if before is not None:
            where.append("m.id < ?")
            args.append(before)
        if search:
            # A LIKE pattern of the user's text, its wildcards taken literally.
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%") \
                .replace("_", "\\_")
            pattern = f"%{escaped}%"
            where.append("(lower(e.sender) LIKE ? ESCAPE '\\' OR lower(e.subject) LIKE ? "
                         "ESCAPE '\\' OR lower(e.origin_server) LIKE ? ESCAPE '\\')")
            args += [pattern, pattern, pattern]
        rows = self._exec(
            "SELECT m.id, m.user_id, m.envelope_id, m.recipient, m.state, m.decision, "
            "m.reason, m.decided_at, m.deleted, e.id, e.envid, e.origin_server, e.sender, "
            "e.size, e.block, e.subject, e.received_at, e.has_body, e.smtp_auth, "
            "e.verified_domain, e.mail_from, e.client_prefix "
            "FROM mailbox m JOIN in_envelopes e ON e.id = m.envelope_id "
            f"WHERE {' AND '.join(where)} ORDER BY m.id DESC LIMIT ?",
            (*args, limit)).fetchall()
        return [(mailbox_row(r[:9]), in_envelope_row(r[9:])) for r in rows]

    def mailbox_counts(self, user_id: int) -> MailboxCounts:
        row = self._exec("SELECT pending, messages, octets, serial FROM mailbox_counts "
                         "WHERE user_id=?", (user_id,)).fetchone()
        return MailboxCounts(*(int(v) for v in row)) if row else MailboxCounts(0, 0, 0, 0)

    def mailbox_after(self, user_id: int, states: Sequence[str] | None, *, after: int,
                      limit: int) -> list[tuple[MailboxEntry, InEnvelope]]:
        where = "m.user_id=?"
        args: list[object] = [user_id]
        if states is not None:
            # One state at a time walks the (user, state, id) index in order.
            where += f" AND m.state IN ({','.join('?' * len(states))}) AND m.deleted=0"
            args += list(states)
        else:
            where += " AND m.state <> ?"  # an appended message is no envelope
            args.append(EntryState.APPENDED)
        rows = self._exec(
            "SELECT m.id, m.user_id, m.envelope_id, m.recipient, m.state, m.decision, "
            "m.reason, m.decided_at, m.deleted, e.id, e.envid, e.origin_server, e.sender, "
            "e.size, e.block, e.subject, e.received_at, e.has_body, e.smtp_auth, "
            "e.verified_domain, e.mail_from, e.client_prefix "
            "FROM mailbox m JOIN in_envelopes e ON e.id = m.envelope_id "
            f"WHERE {where} AND m.id > ? ORDER BY m.id LIMIT ?",
            (*args, after, limit)).fetchall()
        return [(mailbox_row(r[:9]), in_envelope_row(r[9:])) for r in rows]

    def maildrop(self, user_id: int, state: str) -> list[tuple[int, int]]:
        rows = self._exec(
            "SELECT id, octets FROM mailbox WHERE user_id=? AND state=? AND deleted=0 "
            "ORDER BY id", (user_id, state)).fetchall()
        return [(int(r[0]), int(r[1])) for r in rows]

    def envids_of(self, entry_ids: Sequence[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(0, len(entry_ids), _ENVID_BATCH):
            # Padded with 0 (no entry's id): one statement text, one cursor.
            batch = [*entry_ids[start:start + _ENVID_BATCH], *[0] * _ENVID_BATCH][:_ENVID_BATCH]
            rows = self._exec(
                "SELECT m.id, e.envid FROM mailbox m JOIN in_envelopes e "
                f"ON e.id = m.envelope_id WHERE m.id IN ({','.join('?' * _ENVID_BATCH)})",
                tuple(batch)).fetchall()
            found.update((int(r[0]), str(r[1])) for r in rows)
        return found

    def mailbox_entry_and_envelope(self, entry_id: int
                                   ) -> tuple[MailboxEntry, InEnvelope] | None:
        row = self._exec(
            "SELECT m.id, m.user_id, m.envelope_id, m.recipient, m.state, m.decision, "
            "m.reason, m.decided_at, m.deleted, e.id, e.envid, e.origin_server, e.sender, "
            "e.size, e.block, e.subject, e.received_at, e.has_body, e.smtp_auth, "
            "e.verified_domain, e.mail_from, e.client_prefix "
            "FROM mailbox m JOIN in_envelopes e ON e.id = m.envelope_id WHERE m.id=?",
            (entry_id,)).fetchone()
        return (mailbox_row(row[:9]), in_envelope_row(row[9:])) if row else None

    def mailbox_entry(self, entry_id: int) -> MailboxEntry | None:
        row = self._exec(self._MAILBOX + " WHERE id=?", (entry_id,)).fetchone()
        return mailbox_row(row) if row else None

    def mailbox_entry_for(self, envelope_id: int, recipient: str) -> MailboxEntry | None:
        row = self._exec(
            # The first: a local group's members share its address (migration 0019).
            self._MAILBOX + " WHERE envelope_id=? AND recipient=? ORDER BY id",
            (envelope_id, recipient)
        ).fetchone()
        return mailbox_row(row) if row else None

    def entries_from(self, user_id: int, sender: str, server: str, state: str) -> list[int]:
        rows = self._exec(
            "SELECT m.id FROM mailbox m JOIN in_envelopes e ON e.id = m.envelope_id "
            "WHERE m.user_id=? AND m.state=? AND e.sender=? AND e.origin_server=? "
            "ORDER BY m.id", (user_id, state, sender, server))
        return [int(r[0]) for r in rows.fetchall()]

    def entries_of_envelope(self, envelope_id: int) -> list[MailboxEntry]:
        rows = self._exec(self._MAILBOX + " WHERE envelope_id=? ORDER BY id", (envelope_id,))
        return [mailbox_row(r) for r in rows.fetchall()]

    def set_entries_state(self, envelope_id: int, old: str, new: str) -> int:
        cur = self._exec("UPDATE mailbox SET state=? WHERE envelope_id=? AND state=?",
                         (new, envelope_id, old))
        return int(cur.rowcount)

    def update_mailbox_entry(
        self, entry_id: int, *, state: str, decision: str | None = None, reason: str | None = None
    ) -> None:
        if decision is None:
            self._exec("UPDATE mailbox SET state=? WHERE id=?", (state, entry_id))
        else:
            self._exec(
                "UPDATE mailbox SET state=?, decision=?, reason=?, decided_at=? WHERE id=?",
                (state, decision, reason or "", time.time(), entry_id),
            )

    # -- IMAP (issue 14, migration 0013) ------------------------------------------

    def imap_assign_uids(self, user_id: int, mailbox: str, entry_ids: Sequence[int]) -> None:
        if not entry_ids:
            return
        n = len(entry_ids)
        with self.transaction():
            # One statement takes n UIDs from the counter, atomically on both
            # backends: two sessions of one user assigning at once get
            # different UIDs (an entry both assign keeps the first; the other
            # UID is simply never used, which IMAP allows).
            row = self._exec(
                "INSERT INTO imap_mailboxes (user_id, name, uidnext) VALUES (?, ?, ?) "
                "ON CONFLICT (user_id, name) DO UPDATE SET "
                "uidnext = imap_mailboxes.uidnext + excluded.uidnext - 1 RETURNING uidnext",
                (user_id, mailbox, n + 1)).fetchone()
            first = int(row[0]) - n
            for i, entry_id in enumerate(entry_ids):
                self._exec(
                    "INSERT INTO imap_messages (entry_id, user_id, mailbox, uid, flags) "
                    "VALUES (?, ?, ?, ?, 0) ON CONFLICT (entry_id, mailbox) DO NOTHING",
                    (entry_id, user_id, mailbox, first + i))

    def imap_uidnext(self, user_id: int, mailbox: str) -> int:
        row = self._exec("SELECT uidnext FROM imap_mailboxes WHERE user_id=? AND name=?",
                         (user_id, mailbox)).fetchone()
        return int(row[0]) if row else 1

    def imap_set_flags(self, user_id: int, mailbox: str,
                       flags: Sequence[tuple[int, int]]) -> None:
        if not flags:
            return
        with self.transaction():
            for entry_id, bits in flags:
                self._exec("UPDATE imap_messages SET flags=? WHERE entry_id=? AND mailbox=?",
                           (bits, entry_id, mailbox))
            self._exec("UPDATE imap_mailboxes SET modseq = modseq + 1 "
                       "WHERE user_id=? AND name=?", (user_id, mailbox))

    # -- IMAP mailboxes by state and placement (issue 14, migration 0018) ---------

    @staticmethod
    def _imap_member(states: Sequence[str]) -> tuple[str, tuple[object, ...]]:
        """The condition (over ``mailbox m`` LEFT JOIN ``imap_placements p``)
        for the entries a mailbox shows: those in ``states`` that nobody
        placed elsewhere, and those placed in it (its name is the first
        argument after the condition's own). Pending summaries are never
        placed."""
        marks = ", ".join("?" * len(states)) or "NULL"
        return (f"m.deleted=0 AND ((p.folder IS NULL AND m.state IN ({marks})) "
                "OR (p.folder=? AND m.state<>'pending'))", tuple(states))

    def imap_view(self, user_id: int, mailbox: str, states: Sequence[str]
                  ) -> list[ImapListed]:
        member, args = self._imap_member(states)
        rows = self._exec(
            "SELECT i.entry_id, i.uid, i.flags, m.envelope_id, m.recipient, e.size, "
            "e.received_at, e.has_body, e.sender, e.mail_from, m.state, p.folder, p.body "
            "FROM imap_messages i JOIN mailbox m ON m.id = i.entry_id "
            "JOIN in_envelopes e ON e.id = m.envelope_id "
            "LEFT JOIN imap_placements p ON p.entry_id = m.id "
            f"WHERE i.user_id=? AND i.mailbox=? AND {member} ORDER BY i.uid",
            (user_id, mailbox, *args, mailbox)).fetchall()
        return [ImapListed(
            ImapMessage(int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), int(r[5]),
                        float(r[6]), bool(r[7]), str(r[8]), None if r[9] is None else str(r[9])),
            str(r[10]), None if r[11] is None else str(r[11]), bool(r[12]))
            for r in rows]

    def imap_view_unassigned(self, user_id: int, mailbox: str, states: Sequence[str]
                             ) -> list[int]:
        member, args = self._imap_member(states)
        rows = self._exec(
            "SELECT m.id FROM mailbox m LEFT JOIN imap_placements p ON p.entry_id = m.id "
            f"WHERE m.user_id=? AND {member} AND NOT EXISTS (SELECT 1 FROM imap_messages i "
            "WHERE i.entry_id = m.id AND i.mailbox=?) ORDER BY m.id",
            (user_id, *args, mailbox, mailbox)).fetchall()
        return [int(r[0]) for r in rows]

    def imap_view_signature(self, user_id: int, mailbox: str, states: Sequence[str]
                            ) -> tuple[int, int, int]:
        # The entries of ``_imap_member``, counted and summed in three parts
        # that each read an index alone (migration 0020): those in the
        # mailbox's states, less those of them placed anywhere, plus those
        # placed here. The join of every entry with its placement that the
        # listing makes cost three times as much, and SELECT and each IDLE
        # poll are this query (docs/benchmarks.md, section 12).
        marks = ", ".join("?" * len(states)) or "NULL"
        count, total, modseq = self._exec(
            "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(s), 0), (SELECT modseq FROM imap_mailboxes "
            "WHERE user_id=? AND name=?) FROM ("
            "SELECT COUNT(*) AS n, COALESCE(SUM(id), 0) AS s FROM mailbox "
            f"WHERE user_id=? AND state IN ({marks}) AND deleted=0 "
            "UNION ALL SELECT -COUNT(*), -COALESCE(SUM(m.id), 0) FROM imap_placements p "
            "JOIN mailbox m ON m.id = p.entry_id "
            f"WHERE p.user_id=? AND m.deleted=0 AND m.state IN ({marks}) "
            "UNION ALL SELECT COUNT(*), COALESCE(SUM(m.id), 0) FROM imap_placements p "
            "JOIN mailbox m ON m.id = p.entry_id "
            "WHERE p.user_id=? AND p.folder=? AND m.deleted=0 AND m.state<>'pending') parts",
            (user_id, mailbox, user_id, *states, user_id, *states, user_id, mailbox)).fetchone()
        return int(count), int(total), 0 if modseq is None else int(modseq)

    def imap_place(self, user_id: int, entry_id: int, folder: str | None, body: bool,
                   leaving: str) -> None:
        with self.transaction():
            # The entry's UID in the mailbox it leaves goes: should it come
            # back, it comes as a new message, with a UID above the client's.
            self._exec("DELETE FROM imap_messages WHERE entry_id=? AND mailbox=?",
                       (entry_id, leaving))
            # A UID dropped changes the mailbox as an expunge does: its
            # signature must change, or a listing kept from before the entry
            # left would be taken for the mailbox it comes back to.
            self._bump_modseq(user_id, leaving)
            self._exec("DELETE FROM imap_placements WHERE entry_id=?", (entry_id,))
            if folder is not None:
                self._exec("INSERT INTO imap_placements (entry_id, user_id, folder, body) "
                           "VALUES (?, ?, ?, ?)", (entry_id, user_id, folder, int(body)))

    def imap_append(self, user_id: int, *, recipient: str, mailbox: str, folder: str | None,
                    envid: str, origin_server: str, block: str, subject: str, body: Body,
                    received_at: float, flags: int, reason: str) -> tuple[int, int]:
        with self.transaction():
            envelope_id = self._insert(
                "INSERT INTO in_envelopes (envid, origin_server, sender, size, block, subject, "
                "received_at, has_body) VALUES (?, ?, '', ?, ?, ?, ?, 1) RETURNING id",
                (envid, origin_server, body.size, block, subject, received_at))
            self._write_chunks(_IN_CHUNKS, envelope_id, body)
            entry_id = self.insert_mailbox_entry(user_id, envelope_id, recipient,
                                                 EntryState.APPENDED)
            self._exec("UPDATE mailbox SET reason=?, decided_at=? WHERE id=?",
                       (reason, received_at, entry_id))
            if folder is not None:
                self._exec("INSERT INTO imap_placements (entry_id, user_id, folder, body) "
                           "VALUES (?, ?, ?, 1)", (entry_id, user_id, folder))
            # Its UID now, in the same statement as every other's (the
            # counter only grows): the APPENDUID the client is told.
            row = self._exec(
                "INSERT INTO imap_mailboxes (user_id, name, uidnext) VALUES (?, ?, 2) "
                "ON CONFLICT (user_id, name) DO UPDATE SET "
                "uidnext = imap_mailboxes.uidnext + 1 RETURNING uidnext",
                (user_id, mailbox)).fetchone()
            uid = int(row[0]) - 1
            self._exec("INSERT INTO imap_messages (entry_id, user_id, mailbox, uid, flags) "
                       "VALUES (?, ?, ?, ?, ?)", (entry_id, user_id, mailbox, uid, flags))
        return entry_id, uid

    def _bump_modseq(self, user_id: int, mailbox: str) -> None:
        self._exec("UPDATE imap_mailboxes SET modseq = modseq + 1 WHERE user_id=? AND name=?",
                   (user_id, mailbox))

    def imap_folders(self, user_id: int) -> list[str]:
        rows = self._exec("SELECT name FROM imap_folders WHERE user_id=? ORDER BY name",
                          (user_id,)).fetchall()
        return [str(r[0]) for r in rows]

    def imap_create_folder(self, user_id: int, name: str) -> bool:
        with self.transaction():  # RETURNING: see _insert
            row = self._exec("INSERT INTO imap_folders (user_id, name) VALUES (?, ?) "
                             "ON CONFLICT (user_id, name) DO NOTHING RETURNING name",
                             (user_id, name)).fetchone()
        return row is not None

    def imap_rename_folder(self, user_id: int, old: str, new: str) -> None:
        with self.transaction():
            for table, column in (("imap_folders", "name"), ("imap_placements", "folder"),
                                  ("imap_messages", "mailbox"), ("imap_mailboxes", "name")):
                self._exec(f"UPDATE {table} SET {column}=? WHERE user_id=? AND {column}=?",
                           (new, user_id, old))

    def imap_delete_folder(self, user_id: int, name: str) -> None:
        with self.transaction():
            self._exec("DELETE FROM imap_folders WHERE user_id=? AND name=?", (user_id, name))
            # Its messages go with it, as an EXPUNGE would take them.
            self._exec("UPDATE mailbox SET deleted=1 WHERE id IN (SELECT entry_id "
                       "FROM imap_placements WHERE user_id=? AND folder=?)", (user_id, name))
            self._exec("DELETE FROM imap_placements WHERE user_id=? AND folder=?",
                       (user_id, name))
            self._exec("DELETE FROM imap_messages WHERE user_id=? AND mailbox=?",
                       (user_id, name))
            self._bump_modseq(user_id, name)  # as imap_place: a kept listing is stale

    def imap_sent_view(self, user_id: int) -> list[ImapSent]:
        messages = [out_message_row(r) for r in self._exec(
            self._OUT_MSG + " WHERE user_id=? ORDER BY id", (user_id,)).fetchall()]
        shown = {int(r[0]): (int(r[1]), str(r[2])) for r in self._exec(
            "SELECT message_id, uid, states FROM imap_sent WHERE user_id=?",
            (user_id,)).fetchall()}
        states: dict[int, list[str]] = {}
        for r in self._exec(
                "SELECT r.message_id, r.recipient, r.state FROM out_recipients r "
                "JOIN out_messages m ON m.id = r.message_id WHERE m.user_id=? "
                "ORDER BY r.message_id, r.recipient", (user_id,)).fetchall():
            states.setdefault(int(r[0]), []).append(f"{r[1]} {r[2]}")
        found = []
        for m in messages:
            uid, was = shown.get(m.id, (None, None))
            found.append(ImapSent(m, uid, was, "\n".join(states.get(m.id, []))))
        return found

    def imap_sent_assign(self, user_id: int, shown: Sequence[tuple[int, str]]) -> None:
        if not shown:
            return
        n = len(shown)
        with self.transaction():
            row = self._exec(
                "INSERT INTO imap_mailboxes (user_id, name, uidnext) VALUES (?, 'Sent', ?) "
                "ON CONFLICT (user_id, name) DO UPDATE SET "
                "uidnext = imap_mailboxes.uidnext + excluded.uidnext - 1 RETURNING uidnext",
                (user_id, n + 1)).fetchone()
            first = int(row[0]) - n
            for i, (message_id, states) in enumerate(shown):
                self._exec(
                    "INSERT INTO imap_sent (message_id, user_id, uid, states) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (message_id) DO UPDATE SET uid=excluded.uid, "
                    "states=excluded.states", (message_id, user_id, first + i, states))

    def set_override(self, server: str, override: str | None, reason: str = "") -> None:
        """An administrator blocks ("blocked") or allows ("allowed") ``server``
        whatever its quality, or hands it back to the formula (None)."""
        now = time.time()
        self._exec(
            "INSERT INTO peer_quality (server, messages, votes, updated_at, override, "
            "override_reason, override_at) VALUES (?, 0, 0, ?, ?, ?, ?) "
            "ON CONFLICT (server) DO UPDATE SET override=excluded.override, "
            "override_reason=excluded.override_reason, override_at=excluded.override_at",
            (server, now, override, reason if override else "", now if override else None))

    def sample_quality(self, now: float, every: float) -> int:
        """One sample of each peer's counters for the quality chart, for the
        peers whose counters changed since their last sample and that have
        none in the last ``every`` seconds; how many were taken."""
        cur = self._exec(
            "INSERT INTO quality_samples (server, at, messages, votes) "
            "SELECT q.server, ?, q.messages, q.votes FROM peer_quality q "
            "WHERE q.messages > 0 AND NOT EXISTS (SELECT 1 FROM quality_samples s "
            "  WHERE s.server = q.server AND s.at > ?) "
            "AND NOT EXISTS (SELECT 1 FROM quality_samples s WHERE s.server = q.server "
            "  AND s.messages = q.messages AND s.votes = q.votes AND s.at = "
            "  (SELECT max(l.at) FROM quality_samples l WHERE l.server = q.server))",
            (now, now - every))
        return int(cur.rowcount or 0)

    def quality_history(self, server: str, since: float) -> list[tuple[float, int, int]]:
        """(at, messages, votes) of ``server``'s samples since ``since``, oldest first."""
        rows = self._exec("SELECT at, messages, votes FROM quality_samples "
                          "WHERE server=? AND at >= ? ORDER BY at", (server, since))
        return [(float(r[0]), int(r[1]), int(r[2])) for r in rows.fetchall()]

    def drop_quality_samples(self, before: float) -> int:
        cur = self._exec("DELETE FROM quality_samples WHERE at < ?", (before,))
        return int(cur.rowcount or 0)

    def is_admin(self, user_id: int) -> bool:
        row = self._exec("SELECT is_admin FROM users WHERE id=?", (user_id,)).fetchone()
        return bool(row and row[0])

    def set_admin(self, user_id: int, admin: bool) -> None:
        self._exec("UPDATE users SET is_admin=? WHERE id=?", (1 if admin else 0, user_id))

    def inbound_listing(self, user_id: int, address: str, server: str
                        ) -> InboundListing | None:
        row = self._exec(
            "SELECT kind, how, added_at, source_entry, source_decision FROM inbound_lists "
            "WHERE user_id=? AND address=? AND server=?", (user_id, address, server),
        ).fetchone()
        if row is None:
            return None
        return InboundListing(ListKind(row[0]), ListedBy(row[1]), float(row[2]),
                              None if row[3] is None else int(row[3]),
                              None if row[4] is None else Decision(row[4]))

    def inbound_kind(self, user_id: int, address: str, server: str) -> str | None:
        row = self._exec(
            "SELECT kind FROM inbound_lists WHERE user_id=? AND address=? AND server=?",
            (user_id, address, server),
        ).fetchone()
        return str(row[0]) if row else None

    def outbound_kind(self, user_id: int, address: str) -> str | None:
        row = self._exec(
            "SELECT kind FROM outbound_lists WHERE user_id=? AND address=?", (user_id, address)
        ).fetchone()
        return str(row[0]) if row else None

    def put_outbound(self, user_id: int, kind: str, address: str, how: str) -> None:
        self._exec(
            "INSERT INTO outbound_lists (user_id, kind, address, how, added_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, address) DO UPDATE SET "
            "kind=excluded.kind, how=excluded.how, added_at=excluded.added_at, uses=0",
            (user_id, kind, address, how, time.time()),
        )

    def drop_inbound(self, user_id: int, kind: str, address: str, server: str) -> bool:
        cur = self._exec(
            "DELETE FROM inbound_lists WHERE user_id=? AND kind=? AND address=? AND server=?",
            (user_id, kind, address, server),
        )
        return bool(cur.rowcount > 0)

    def drop_outbound(self, user_id: int, kind: str, address: str) -> bool:
        cur = self._exec(
            "DELETE FROM outbound_lists WHERE user_id=? AND kind=? AND address=?",
            (user_id, kind, address),
        )
        return bool(cur.rowcount > 0)

    def touch_inbound(self, user_id: int, address: str, server: str) -> None:
        self._exec(
            "UPDATE inbound_lists SET uses=uses+1, last_used=? "
            "WHERE user_id=? AND address=? AND server=?",
            (time.time(), user_id, address, server),
        )

    def touch_outbound(self, user_id: int, address: str) -> None:
        self._exec(
            "UPDATE outbound_lists SET uses=uses+1, last_used=? WHERE user_id=? AND address=?",
            (time.time(), user_id, address),
        )

    def list_entries(self, user_id: int) -> list[ListEntry]:
        inbound = self._exec(
            "SELECT kind, address, server, how, added_at, uses, last_used FROM inbound_lists "
            "WHERE user_id=? ORDER BY kind DESC, address, server",
            (user_id,),
        ).fetchall()
        outbound = self._exec(
            "SELECT kind, address, NULL, how, added_at, uses, last_used FROM outbound_lists "
            "WHERE user_id=? ORDER BY kind DESC, address",
            (user_id,),
        ).fetchall()
        return [ListEntry(direction, ListKind(r[0]), r[1], r[2], ListedBy(r[3]), r[4], r[5],
                          None if r[6] is None else float(r[6]))
                for direction, rows in ((ListDirection.INBOUND, inbound),
                                        (ListDirection.OUTBOUND, outbound))
                for r in rows]

    # -- web API tokens (issue 13, migration 0016) ----------------------------------

    def add_api_token(self, user_id: int, name: str, digest: str, now: float) -> int:
        return self._insert(
            "INSERT INTO api_tokens (user_id, name, hash, created_at) VALUES (?, ?, ?, ?) "
            "RETURNING id", (user_id, name, digest, now))

    def api_tokens(self, user_id: int) -> list[ApiToken]:
        rows = self._exec(
            "SELECT id, user_id, name, created_at, last_used FROM api_tokens "
            "WHERE user_id=? ORDER BY id", (user_id,)).fetchall()
        return [_api_token(r) for r in rows]

    def api_token_by_hash(self, digest: str) -> ApiToken | None:
        row = self._exec(
            "SELECT id, user_id, name, created_at, last_used FROM api_tokens WHERE hash=?",
            (digest,)).fetchone()
        return _api_token(row) if row else None

    def touch_api_token(self, token_id: int, now: float) -> None:
        self._exec("UPDATE api_tokens SET last_used=? WHERE id=?", (now, token_id))

    def drop_api_token(self, user_id: int, token_id: int) -> bool:
        cur = self._exec("DELETE FROM api_tokens WHERE id=? AND user_id=?",
                         (token_id, user_id))
        return bool(cur.rowcount > 0)

    def drop_api_tokens(self, user_id: int) -> int:
        cur = self._exec("DELETE FROM api_tokens WHERE user_id=?", (user_id,))
        return int(cur.rowcount)

    def sent_changed(self, user_id: int, newest: int) -> float | None:
        """When a recipient of one of the user's ``newest`` sent messages
        last changed state (None without any): the Sent view's live event
        asks this every second, so it reads a bounded number of rows."""
        row = self._exec(
            "SELECT MAX(r.updated_at) FROM out_recipients r WHERE r.message_id IN "
            "(SELECT id FROM out_messages WHERE user_id=? ORDER BY id DESC LIMIT ?)",
            (user_id, newest)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def expire_in_envelopes(
        self, now: float, *, undecided: str, open_states: Collection[str], expired: str,
        reason: str,
    ) -> list[tuple[int, str]]:
        """Destination: entries in ``open_states`` of envelopes past their
        Expires end in state ``expired`` with ``reason``. Returns the entries
        that were ``undecided``, with their origin server."""
        marks = ", ".join("?" * len(open_states))
        with self.transaction():
            rows = [(int(r[0]), str(r[1])) for r in self._exec(
                "SELECT m.id, e.origin_server FROM mailbox m JOIN in_envelopes e "
                "ON e.id = m.envelope_id WHERE m.state = ? AND e.expires_at <= ?",
                (undecided, now),
            ).fetchall()]
            self._exec(
                f"UPDATE mailbox SET state=?, reason=? WHERE state IN ({marks}) "
                "AND envelope_id IN (SELECT id FROM in_envelopes WHERE expires_at <= ?)",
                (expired, reason, *open_states, now),
            )
        return rows

    # -- pending notices (issue 10, item 7) -------------------------------------

    def users_with_entries(self, state: str) -> list[int]:
        rows = self._exec(
            "SELECT DISTINCT user_id FROM mailbox WHERE state=? AND deleted=0 ORDER BY user_id",
            (state,))
        return [int(r[0]) for r in rows.fetchall()]

    def pending_notice(self, user_id: int) -> tuple[float, int] | None:
        row = self._exec("SELECT sent_at, last_entry FROM pending_notices WHERE user_id=?",
                         (user_id,)).fetchone()
        return (float(row[0]), int(row[1])) if row else None

    def claim_pending_notice(self, user_id: int, now: float, last_entry: int,
                             not_after: float) -> bool:
        # One statement decides: on PostgreSQL a second node's upsert waits
        # for the first one's row and then finds its condition false.
        cur = self._exec(
            "INSERT INTO pending_notices (user_id, sent_at, last_entry) VALUES (?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET sent_at=excluded.sent_at, "
            "last_entry=excluded.last_entry WHERE pending_notices.sent_at <= ? "
            "AND pending_notices.last_entry < excluded.last_entry",
            (user_id, now, last_entry, not_after))
        return int(cur.rowcount) == 1

    # -- outbound SMTP transport security (migration 0008) --------------------------

    def mta_sts_policy(self, domain: str) -> CachedPolicy | None:
        row = self._exec("SELECT domain, policy_id, policy, fetched_at, expires_at "
                         "FROM mta_sts_policies WHERE domain=?", (domain,)).fetchone()
        return CachedPolicy(row[0], row[1], row[2], float(row[3]), float(row[4])) if row else None

    def put_mta_sts_policy(self, policy: CachedPolicy) -> None:
        self._exec(
            "INSERT INTO mta_sts_policies (domain, policy_id, policy, fetched_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET "
            "policy_id=excluded.policy_id, policy=excluded.policy, "
            "fetched_at=excluded.fetched_at, expires_at=excluded.expires_at",
            (policy.domain, policy.policy_id, policy.policy, policy.fetched_at,
             policy.expires_at))

    def drop_mta_sts_policy(self, domain: str, *, expired_by: float | None = None) -> bool:
        """Forget ``domain``'s policy (only if it expired by ``expired_by``,
        when given: another node may have just refreshed it)."""
        if expired_by is None:
            cur = self._exec("DELETE FROM mta_sts_policies WHERE domain=?", (domain,))
        else:
            cur = self._exec("DELETE FROM mta_sts_policies WHERE domain=? AND expires_at <= ?",
                             (domain, expired_by))
        return int(cur.rowcount) > 0

    def set_recipients_tls(self, rcpt_ids: Sequence[int], outcome: str) -> None:
        """Record how the delivery to these recipients was protected."""
        for rcpt_id in rcpt_ids:
            self._exec("UPDATE out_recipients SET tls=? WHERE id=?", (outcome, rcpt_id))

    def recipients_tls(self, message_id: int) -> dict[int, str]:
        """Each recipient's recorded TLS outcome ('' where none is)."""
        rows = self._exec("SELECT id, tls FROM out_recipients WHERE message_id=? ORDER BY id",
                          (message_id,)).fetchall()
        return {int(r[0]): str(r[1]) for r in rows}

    def purge(self, before: float, *, expired: str) -> int:
        """Delete what nobody needs any more: origin records whose message
        expired before ``before``, and envelopes all of whose entries were deleted
        (POP3 DELE) or expired before ``before``. Quality counters stay."""
        with self.transaction():
            n = self._exec(
                "DELETE FROM out_messages WHERE has_body = 0 AND expires_at < ?", (before,)
            ).rowcount
            # The chunks first, explicitly: the foreign keys' ON DELETE CASCADE
            # would do it too, but only where they are enforced.
            unkept = (
                "SELECT e.id FROM in_envelopes e "
                "WHERE NOT EXISTS (SELECT 1 FROM mailbox m WHERE m.envelope_id = e.id "
                "AND m.deleted = 0 AND NOT (m.state = ? AND e.expires_at < ?))"
            )
            self._exec(
                f"DELETE FROM in_body_chunks WHERE envelope_id IN ({unkept})",
                (expired, before),
            )
            n += self._exec(
                f"DELETE FROM in_envelopes WHERE id IN ({unkept})", (expired, before)
            ).rowcount
        return int(n)

    def enqueue(self, kind: str, key: str, payload: str, at: float | None = None) -> None:
        now = time.time()
        self._exec(
            "INSERT INTO queue (kind, key, payload, next_attempt, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (kind, key, payload, now if at is None else at, now),
        )

    def release_claims(self, node: str) -> int:
        """Give back every claim ``node`` holds (it restarted: none is running)."""
        with self.transaction():
            cur = self._exec(
                "UPDATE queue SET claimed_by=NULL, claimed_until=NULL WHERE claimed_by=?",
                (node,),
            )
        return int(cur.rowcount)

    def finish_job(self, job_id: int) -> None:
        self._exec("DELETE FROM queue WHERE id=?", (job_id,))

    def retry_job(self, job_id: int, at: float, error: str) -> None:
        self._exec(
            "UPDATE queue SET attempts=attempts+1, next_attempt=?, last_error=?, "
            "claimed_by=NULL, claimed_until=NULL WHERE id=?",
            (at, error[:500], job_id),
        )

    def queue_schedule(self, limit: int = 1000) -> list[QueuedJob]:
        """The queue, soonest first, each job with its peer (see QueuedJob)."""
        rows = self._exec(
            "SELECT q.id, q.kind, q.key, q.attempts, q.last_error, q.next_attempt, "
            "q.created_at, q.claimed_until, COALESCE(o.domain, i.origin_server, '') "
            "FROM queue q LEFT JOIN out_envelopes o ON o.envid = q.key "
            "LEFT JOIN in_envelopes i ON i.envid = q.key "
            "ORDER BY q.next_attempt, q.id LIMIT ?", (limit,)).fetchall()
        return [QueuedJob(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4]), float(r[5]),
                          float(r[6]), None if r[7] is None else float(r[7]), str(r[8]))
                for r in rows]

    def queue_by_peer(self) -> list[tuple[str, int, float]]:
        """Per peer (as queue_schedule names it): the jobs waiting and when
        the oldest was queued; oldest first. One grouped read, for scrapes."""
        rows = self._exec(
            "SELECT COALESCE(o.domain, i.origin_server, '') AS peer, COUNT(*), "
            "MIN(q.created_at) FROM queue q LEFT JOIN out_envelopes o ON o.envid = q.key "
            "LEFT JOIN in_envelopes i ON i.envid = q.key "
            "GROUP BY COALESCE(o.domain, i.origin_server, '') ORDER BY MIN(q.created_at)"
        ).fetchall()
        return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]

    def retry_now(self, job_id: int, now: float) -> bool:
        """An administrator's "retry now": the job is due at ``now`` (its
        attempts and backoff unchanged). False when there is no such job or
        a worker holds it at this moment."""
        cur = self._exec(
            "UPDATE queue SET next_attempt=? WHERE id=? "
            "AND (claimed_until IS NULL OR claimed_until < ?)", (now, job_id, now))
        return bool(cur.rowcount)

    def jobs(self) -> list[Job]:
        rows = self._exec(
            "SELECT id, kind, key, payload, attempts, last_error FROM queue ORDER BY id"
        ).fetchall()
        return [job_row(r) for r in rows]

    # -- unsubscribing (migration 0015) ------------------------------------------

    def insert_unsubscribe(self, entry_id: int, user_id: int, method: str, target: str,
                           state: str, detail: str = "") -> Unsubscribe:
        """A new request for ``entry_id``, or the one it already has (a
        request is made once: UNSUB again shows it)."""
        now = time.time()
        self._exec(
            "INSERT INTO unsubscribes (entry_id, user_id, method, target, state, detail, "
            "requested_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (entry_id) DO NOTHING",
            (entry_id, user_id, method, target, state, detail, now, now))
        found = self.unsubscribe_of_entry(entry_id)
        assert found is not None
        return found

    def unsubscribe_of_entry(self, entry_id: int) -> Unsubscribe | None:
        row = self._exec(f"SELECT {_UNSUB_COLUMNS} FROM unsubscribes WHERE entry_id=?",
                         (entry_id,)).fetchone()
        return _unsubscribe(row) if row else None

    def unsubscribe(self, unsub_id: int) -> Unsubscribe | None:
        row = self._exec(f"SELECT {_UNSUB_COLUMNS} FROM unsubscribes WHERE id=?",
                         (unsub_id,)).fetchone()
        return _unsubscribe(row) if row else None

    def set_unsubscribe_state(self, unsub_id: int, state: str, detail: str) -> None:
        self._exec("UPDATE unsubscribes SET state=?, detail=?, updated_at=? WHERE id=?",
                   (state, detail, time.time(), unsub_id))

    # -- local lists and aliases (migration 0015) ---------------------------------

    def create_group(self, address: str, kind: str, owner_id: int | None) -> int:
        return self._insert(
            "INSERT INTO groups (address, kind, owner_id, created_at) VALUES (?, ?, ?, ?) "
            "RETURNING id", (address, kind, owner_id, time.time()))

    def drop_group(self, address: str) -> bool:
        return bool(self._exec("DELETE FROM groups WHERE address=?", (address,)).rowcount)

    def group(self, address: str) -> Group | None:
        row = self._exec(f"SELECT {_GROUP_COLUMNS} FROM groups WHERE address=?",
                         (address,)).fetchone()
        return _group(row) if row else None

    def groups(self) -> list[Group]:
        rows = self._exec(f"SELECT {_GROUP_COLUMNS} FROM groups ORDER BY address").fetchall()
        return [_group(r) for r in rows]

    def add_group_member(self, group_id: int, address: str) -> bool:
        """False when ``address`` is a member already."""
        cur = self._exec(
            "INSERT INTO group_members (group_id, address, added_at) VALUES (?, ?, ?) "
            "ON CONFLICT (group_id, address) DO NOTHING", (group_id, address, time.time()))
        return bool(cur.rowcount)

    def drop_group_member(self, group_id: int, address: str) -> bool:
        return bool(self._exec("DELETE FROM group_members WHERE group_id=? AND address=?",
                               (group_id, address)).rowcount)

    def group_members(self, group_id: int) -> list[str]:
        rows = self._exec("SELECT address FROM group_members WHERE group_id=? "
                          "ORDER BY address", (group_id,)).fetchall()
        return [str(r[0]) for r in rows]

    def add_group_post(self, message_id: int, group_id: int) -> None:
        self._exec("INSERT INTO group_posts (message_id, group_id) VALUES (?, ?) "
                   "ON CONFLICT (message_id, group_id) DO NOTHING", (message_id, group_id))

    def group_deliveries(self, group_id: int, limit: int = 20) -> list[GroupDelivery]:
        """The recipients of the group's ``limit`` newest posts, newest post
        first, each with its state (the owner's view)."""
        rows = self._exec(
            "SELECT m.msgid, m.created_at, m.subject, r.recipient, r.state, r.detail "
            "FROM (SELECT message_id FROM group_posts WHERE group_id=? "
            "      ORDER BY message_id DESC LIMIT ?) p "
            "JOIN out_messages m ON m.id = p.message_id "
            "JOIN out_recipients r ON r.message_id = m.id "
            "ORDER BY m.id DESC, r.recipient", (group_id, limit)).fetchall()
        return [GroupDelivery(str(r[0]), float(r[1]), str(r[2]), str(r[3]),
                              RecipientState(str(r[4])), str(r[5] or "")) for r in rows]


_OUT_CHUNKS = ("out_body_chunks", "message_id")
_IN_CHUNKS = ("in_body_chunks", "envelope_id")


def decay(elapsed: float, half_life: float) -> float:
    """What a weight keeps after ``elapsed`` seconds: half per ``half_life``
    (0: nothing ages). Migration 0014 defines the same ``smdp_decay`` for
    PostgreSQL; ``SqliteStore`` registers this one."""
    if half_life <= 0 or elapsed <= 0:
        return 1.0
    if elapsed / half_life > 1000:
        return 0.0
    return float(0.5 ** (elapsed / half_life))


def _quality_row(row: Sequence[Any]) -> Quality:
    return Quality(row[0], int(row[1]), int(row[2]), row[3], row[4], row[5],
                   float(row[6]), float(row[7]), int(row[8]), row[9], row[10])


def as_body(body: Body | bytes) -> Body:
    """Callers may still pass bytes; the store works with :class:`Body`."""
    return body if isinstance(body, Body) else Body.of(body)


def out_message_row(row: Sequence[object]) -> OutMessage:
    r = list(row)
    r[9] = bool(r[9])
    return OutMessage(*r)  # type: ignore[arg-type]


def in_envelope_row(row: Sequence[object]) -> InEnvelope:
    r = list(row)
    r[8] = bool(r[8])
    return InEnvelope(*r)  # type: ignore[arg-type]


def mailbox_row(row: Sequence[object]) -> MailboxEntry:
    r = list(row)
    r[4] = EntryState(str(r[4]))
    r[5] = None if r[5] is None else Decision(str(r[5]))
    r[8] = bool(r[8])
    return MailboxEntry(*r)  # type: ignore[arg-type]


def out_recipient_row(row: Sequence[object]) -> OutRecipient:
    r = list(row)
    r[5] = RecipientState(str(r[5]))
    r[8] = RouteKind(str(r[8]))
    return OutRecipient(*r)  # type: ignore[arg-type]


def job_row(row: Sequence[object]) -> Job:
    r = list(row)
    r[1] = JobKind(str(r[1]))
    return Job(*r)  # type: ignore[arg-type]


_UNSUB_COLUMNS = ("id, entry_id, user_id, method, target, state, detail, requested_at, "
                  "updated_at")
_GROUP_COLUMNS = "id, address, kind, owner_id, created_at"


def _unsubscribe(r: Sequence[Any]) -> Unsubscribe:
    return Unsubscribe(int(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), str(r[5]),
                       str(r[6]), float(r[7]), float(r[8]))


def _group(r: Sequence[Any]) -> Group:
    return Group(int(r[0]), str(r[1]), str(r[2]), None if r[3] is None else int(r[3]),
                 float(r[4]))


def _api_token(row: Sequence[Any]) -> ApiToken:
    return ApiToken(int(row[0]), int(row[1]), str(row[2]), float(row[3]),
                    None if row[4] is None else float(row[4]))
