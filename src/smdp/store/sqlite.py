"""The embedded default backend: one SQLite database file in WAL mode.

Durability: ``synchronous=FULL`` so a committed transaction survives a crash or
power cut; the server answers OK only after the commit that holds the data
(assumption 4: the origin holds what it accepted). A server turns on group
commit (``start_group_commit``, smdp.store.group_commit): ``synchronous=NORMAL``
and a thread that fsyncs the WAL once for many commits, every answer held
until the commits before it are durable. Every state change and the
queue entry it causes are written in one transaction (see ``transaction``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from smdp.mail.trace import delivery_fields
from smdp.store.base import StoreError, newer_than
from smdp.store.group_commit import WalFlusher
from smdp.store.records import (
    Job,
    MailboxEntry,
    Quality,
    User,
)
from smdp.store.sql import SqlStore, decay, job_row, mailbox_row
from smdp.store.sqlscript import split_statements


def migrations() -> list[tuple[int, str, str]]:
    """The numbered SQL migrations shipped in the package, in order."""
    found = []
    for item in resources.files("smdp.store.migrations").iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, item.read_text(encoding="utf-8")))
    return sorted(found)


def delivery_octets(sender: str, recipient: str) -> int:
    """The octets RETR puts before a stored message (docs/protocol.md 8.4)."""
    return len(delivery_fields(sender, recipient))


class SqliteStore(SqlStore):
    """Storage for one SMDP server. Not shared between threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        # Must precede the first table: lets compact() return freed pages.
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        # Deleted messages are overwritten, not merely unlinked from the b-tree:
        # expired and deleted mail is really gone from the file (issue 3).
        self._db.execute("PRAGMA secure_delete=ON")
        # Issue 16 item 1: the quality counters' aging (``SqlStore._count``).
        self._db.create_function("smdp_decay", 2, decay, deterministic=True)
        self.half_life = 30 * 86400.0
        self.clock = time.time
        # Migration 0017's triggers and its backfill size each mailbox entry
        # as RETR sends it; PostgreSQL has this function in SQL.
        self._db.create_function("smdp_delivery_octets", 2, delivery_octets,
                                 deterministic=True)
        self._in_txn = False
        self._lock = threading.RLock()
        self.flusher: WalFlusher | None = None

    def start_group_commit(self) -> WalFlusher:
        """From now on a COMMIT appends to the WAL without an fsync and
        ``flusher`` makes the commits durable in batches; whoever answers for
        a commit must wait for ``flusher.durable`` (smdp.server.durable_io)."""
        if self.flusher is None:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self.flusher = WalFlusher(self.path)
        return self.flusher

    def close(self) -> None:
        if self.flusher is not None:
            self.flusher.stop()
            self.flusher = None
        self._db.close()

    # -- schema ---------------------------------------------------------------

    def schema_version(self) -> int:
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        row = self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> list[str]:
        """Apply every migration newer than the database, each in its own transaction."""
        applied = []
        current = self.schema_version()
        newer_than(current, migrations())
        # Foreign keys off while the schema changes (they cannot change inside
        # a transaction): rebuilding a table (0006) drops the old one, and with
        # keys on that drop would cascade to every row referring to it. Each
        # migration's keys are checked before it commits instead.
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            for version, name, sql in migrations():
                if version <= current:
                    continue
                with self.transaction():
                    for statement in split_statements(sql):
                        self._db.execute(statement)
                    broken = self._db.execute("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise StoreError(f"migration {name} would break {len(broken)} "
                                         f"reference(s), first in table {broken[0][0]}")
                    self._db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (version, name, time.time()),
                    )
                applied.append(name)
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")
        if applied and self.flusher is not None:
            # A schema change counts no changed rows, but it wrote.
            self.flusher.note_commit()
        return applied

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: everything inside commits together or not at all."""
        with self._lock:
            if self._in_txn:
                yield  # nested: part of the enclosing transaction
                return
            self._db.execute("BEGIN IMMEDIATE")
            changes = self._db.total_changes
            self._in_txn = True
            try:
                yield
            except BaseException:
                self._in_txn = False
                self._db.execute("ROLLBACK")
                raise
            self._in_txn = False
            self._db.execute("COMMIT")
            self.transactions += 1
            # A transaction that changed no row writes no page: no fsync.
            if self._db.total_changes != changes:
                self.commits += 1
                if self.flusher is not None:
                    self.flusher.note_commit()

    def _exec(self, sql: str, args: Sequence[object] = ()) -> sqlite3.Cursor:
        self.statements += 1
        if self._in_txn:
            return self._db.execute(sql, args)
        # Outside a transaction a write is its own commit (autocommit).
        if "RETURNING" in sql.upper():
            # Its commit comes only when its last row is read, after this
            # count: a commit group commit would not know of (see _insert).
            raise StoreError("a statement with RETURNING must run inside transaction()")
        changes = self._db.total_changes
        cur = self._db.execute(sql, args)
        if self._db.total_changes != changes:
            self.commits += 1
            if self.flusher is not None:
                self.flusher.note_commit()
        return cur

    def _exec_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """``sql`` once per row, inside the caller's transaction."""
        self.statements += len(rows)
        self._db.executemany(sql, rows)

    # -- users and identities (assumptions 1 to 3) ---------------------------

    def create_user(self, main_address: str, password_hash: str) -> User:
        with self.transaction():
            if self._exec("SELECT 1 FROM identities WHERE address=?", (main_address,)).fetchone():
                raise StoreError(f"{main_address} already belongs to a user")
            cur = self._exec(
                "INSERT INTO users (main_address, password_hash, created_at) VALUES (?, ?, ?)",
                (main_address, password_hash, time.time()),
            )
            user_id = int(cur.lastrowid or 0)
            self._exec(
                "INSERT INTO identities (address, user_id, is_main) VALUES (?, ?, 1)",
                (main_address, user_id),
            )
        return User(user_id, main_address, password_hash)

    def add_identity(self, user_id: int, address: str) -> None:
        with self.transaction():
            if self._exec("SELECT 1 FROM identities WHERE address=?", (address,)).fetchone():
                raise StoreError(f"{address} already belongs to a user")
            self._exec(
                "INSERT INTO identities (address, user_id, is_main) VALUES (?, ?, 0)",
                (address, user_id),
            )

    def remove_identity(self, user_id: int, address: str) -> None:
        with self.transaction():
            row = self._exec(
                "SELECT is_main FROM identities WHERE address=? AND user_id=?", (address, user_id)
            ).fetchone()
            if row is None:
                raise StoreError(f"{address} is not an identity of this user")
            if row[0]:
                raise StoreError(f"{address} is the main identity and cannot be removed")
            self._exec("DELETE FROM identities WHERE address=?", (address,))

    # -- origin side: held messages ------------------------------------------

    def count_spam_reports(self, user_id: int, since: float) -> int:
        row = self._exec(
            "SELECT COUNT(*) FROM spam_reports WHERE user_id=? AND reported_at >= ?",
            (user_id, since),
        ).fetchone()
        return int(row[0])

    # -- destination side: envelopes and mailboxes ---------------------------

    def mailbox_entries(
        self, user_id: int, states: Sequence[str] | None = None
    ) -> list[MailboxEntry]:
        if states is None:
            rows = self._exec(self._MAILBOX + " WHERE user_id=? ORDER BY id", (user_id,))
        else:
            marks = ",".join("?" * len(states))
            rows = self._exec(
                self._MAILBOX + f" WHERE user_id=? AND state IN ({marks}) AND deleted=0 "
                "ORDER BY id",
                (user_id, *states),
            )
        return [mailbox_row(r) for r in rows.fetchall()]

    def mark_deleted(self, entry_ids: Sequence[int]) -> None:
        with self.transaction():
            self._exec_many("UPDATE mailbox SET deleted=1 WHERE id=?",
                            [(i,) for i in entry_ids])

    # -- quality (section 5.3) ------------------------------------------------

    def set_vote(self, entry_id: int, server: str, vote: int,
                 also: Sequence[str] = ()) -> list[Quality] | None:
        """Record one user's vote on one message; a changed vote replaces the old one."""
        row = self._exec("SELECT m.user_id, v.vote, e.received_at FROM mailbox m "
                         "JOIN in_envelopes e ON e.id = m.envelope_id "
                         "LEFT JOIN votes v ON v.mailbox_id = m.id WHERE m.id=?",
                         (entry_id,)).fetchone()
        old = int(row[1]) if row and row[1] is not None else 0
        if row is None or old == vote:
            return None
        self._exec(
            "INSERT INTO votes (mailbox_id, server, vote) VALUES (?, ?, ?) "
            "ON CONFLICT (mailbox_id) DO UPDATE SET vote=excluded.vote",
            (entry_id, server, vote),
        )
        return self._vote_counts(int(row[0]), float(row[2]), (server, *also), old, vote)

    # -- lists (Table 1, Table 3) ---------------------------------------------

    # -- expiry and cleanup ------------------------------------------------------

    def expire_out_messages(
        self, now: float, *, open_states: Collection[str], expired: str, detail: str,
        before_expiry: Callable[[int], None] | None = None,
    ) -> int:
        """Origin: every recipient still undecided at ``expires_at`` ends
        ``expired`` and the held body is deleted. Returns the messages expired.

        ``open_states``: the recipient states that still wait for a decision."""
        marks = ", ".join(["?"] * len(open_states))
        with self.transaction():
            ids = [r[0] for r in self._exec(
                "SELECT id FROM out_messages WHERE expires_at <= ? AND has_body = 1", (now,)
            ).fetchall()]
            for message_id in ids:
                if before_expiry is not None:
                    before_expiry(message_id)
                self._exec(
                    f"UPDATE out_recipients SET state=?, updated_at=?, detail=? "
                    f"WHERE message_id=? AND state IN ({marks})",
                    (expired, now, detail, message_id, *open_states),
                )
                self.drop_out_body(message_id)  # its chunks go in this transaction
        return len(ids)

    def compact(self) -> None:
        """Give freed pages back to the file system and empty the WAL."""
        if self._in_txn:
            raise StoreError("compact() cannot run inside a transaction")
        with self._lock:
            # incremental_vacuum frees one page per step of the statement, and
            # execute() steps a statement without result columns only once
            # (one page per call); executescript() steps it to the end.
            self._db.executescript("PRAGMA incremental_vacuum")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- the work queue ----------------------------------------------------------

    def claim_jobs(self, node: str, now: float, limit: int, lease: float) -> list[Job]:
        """Claim due jobs for ``node`` until ``now + lease``.

        Only the oldest job of each key is eligible, so work on one envelope
        runs in order and never twice at once, on this node or another.
        """
        with self.transaction():
            rows = self._exec(
                "UPDATE queue SET claimed_by=?, claimed_until=? WHERE id IN ("
                " SELECT q.id FROM queue q"
                " WHERE q.id = (SELECT MIN(q2.id) FROM queue q2 WHERE q2.key = q.key)"
                " AND q.next_attempt <= ? AND (q.claimed_until IS NULL OR q.claimed_until < ?)"
                " ORDER BY q.next_attempt, q.id LIMIT ?)"
                " RETURNING id, kind, key, payload, attempts, last_error",
                (node, now + lease, now, now, limit),
            ).fetchall()
        return sorted((job_row(r) for r in rows), key=lambda j: j.id)

    def finish_jobs(self, job_ids: Sequence[int]) -> None:
        # One statement for the batch (PostgreSQL: = ANY), its ids as a JSON array.
        self._exec("DELETE FROM queue WHERE id IN (SELECT value FROM json_each(?))",
                   (json.dumps([int(i) for i in job_ids]),))

    def queue_size(self) -> int:
        return int(self._exec("SELECT COUNT(*) FROM queue").fetchone()[0])
