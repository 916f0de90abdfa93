"""The scale-out backend: one PostgreSQL database shared by several SMDP nodes.

Every method keeps the semantics of the SQLite reference (``sqlite.py``); this
module only says where PostgreSQL needs something different to get there:

- One connection per store, in autocommit mode, so a write outside
  ``transaction()`` commits at once exactly as SQLite's ``isolation_level=None``
  does; ``transaction()`` opens a real transaction with ``conn.transaction()``
  and nested calls join it (no savepoints: an inner failure aborts the whole
  unit, as in SQLite).
- Transactions run at READ COMMITTED. SQLite's ``BEGIN IMMEDIATE`` serialises
  every writer; here the places where a read decides a write that another node
  could race take a row or advisory lock (``set_vote``, ``claim_jobs``,
  ``migrate``, ``expire_out_messages``, ``compact``), and the check-then-insert
  paths are backed by unique keys.
- Durability is the server's (``fsync``/``synchronous_commit`` on, the defaults):
  a committed transaction survives a crash of the node or of the database.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq

from smdp.store.base import StoreError, newer_than
from smdp.store.records import (
    Job,
    MailboxEntry,
    Quality,
    User,
)
from smdp.store.sql import SqlStore, job_row, mailbox_row
from smdp.store.sqlscript import split_statements

__all__ = ["PostgresStore", "migrations"]

# Advisory lock keys (one 64-bit namespace per database, shared with any other
# application using it): "smdp" in ASCII, then a small number per purpose.
_MIGRATE_LOCK = 0x736D6470_0001
_CLAIM_LOCK = 0x736D6470_0002
_COMPACT_LOCK = 0x736D6470_0003

Row = tuple[Any, ...]

# Statements whose cursor ``_exec`` keeps; the store runs about a hundred.
_MAX_CURSORS = 256
# PostgreSQL's type oid of bytea, the type of message bodies.
_BYTEA = 17

# "?" placeholders (the shared statements of store/sql.py) turned into "%s",
# once per statement text. The same str object each time also lets a reused
# cursor recognise its query and keep its adaptation context.
_PG_QUERIES: dict[str, str] = {}


def _pg_query(sql: str) -> str:
    query = _PG_QUERIES.get(sql)
    if query is None:
        query = sql.replace("?", "%s")
        if len(_PG_QUERIES) < 4 * _MAX_CURSORS:
            _PG_QUERIES[sql] = query
    return query


def _small(result: pq.abc.PGresult | None) -> bool:
    """No row, or one row without a body column (``bytea``)."""
    if result is None or result.ntuples == 0:
        return True
    return result.ntuples == 1 and all(
        result.ftype(i) != _BYTEA for i in range(result.nfields))


def migrations() -> list[tuple[int, str, str]]:
    """The PostgreSQL dialect of the numbered migrations, in order.

    Same numbers and names as the SQLite ones (``smdp.store.sqlite.migrations``)
    so ``schema_migrations`` tells the same story in either backend.
    """
    folder = resources.files("smdp.store.migrations").joinpath("postgresql")
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, item.read_text(encoding="utf-8")))
    return sorted(found)


class PostgresStore(SqlStore):
    """Storage for one SMDP node; several nodes may share the database.

    One connection per object; not shared between threads (as ``SqliteStore``).
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # One cursor per statement text, reused (see ``_exec``); they belong
        # to ``_db`` and go with it.
        self._cursors: dict[str, psycopg.Cursor[Row]] = {}
        try:
            self._db = self._connect()
        except psycopg.Error as exc:
            # Said once, at start, in one sentence: the operator's to fix. The
            # DSN is not repeated (it may hold a password).
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise StoreError(
                f"cannot connect to PostgreSQL ({why}); check that it is running and that "
                "[store] dsn names an existing database the server may use "
                "(docs/deployment.md)") from None
        # Issue 16 item 1: the quality counters' aging (``SqlStore._count``).
        self.half_life = 30 * 86400.0
        self.clock = time.time
        self._in_txn = False
        self._txn_wrote = False
        self._lock = threading.RLock()

    def _connect(self) -> psycopg.Connection[Row]:
        self._cursors = {}
        return psycopg.connect(self.dsn, autocommit=True)

    def close(self) -> None:
        self._cursors = {}
        self._db.close()

    def _exec(
        self, sql: str, args: Sequence[object] | Mapping[str, object] = ()
    ) -> psycopg.Cursor[Row]:
        """Run one statement; the cursor returned is valid until the next ``_exec``.

        Every caller reads the result (``fetchone``, ``fetchall``, ``rowcount``)
        before it runs another statement; a statement's cursor is reused the
        next time the same statement runs.
        """
        if self._db.closed and not self._in_txn:
            # The database restarted or a network blip broke the connection:
            # the failed call already raised; the next one starts afresh
            # instead of failing forever. Never inside a transaction, whose
            # earlier statements died with the old connection.
            self._db = self._connect()
        self.statements += 1
        # No arguments: no placeholder parsing, so a literal % needs no escaping.
        if not args:
            return self._wrote(self._db.execute(sql, None))
        # psycopg's per-call work is a large part of a statement's time
        # (docs/benchmarks.md, section 2): a fresh cursor, and a fresh
        # adaptation context (psycopg's Transformer) whenever a cursor runs a
        # query object other than the one it ran last, cost 11 to 13 µs per
        # statement (a list lookup: 56 -> 45 µs over a local socket). One
        # cursor per statement text keeps both, so a statement run again only
        # binds new values to its prepared statement.
        cur = self._cursors.pop(sql, None)
        if cur is None:
            cur = self._db.cursor()
        cur.execute(_pg_query(sql), args)
        # Keep the cursor for next time only if what it holds is small: the
        # last result stays in it until the statement runs again, and a big
        # one (a listing, a body chunk) must go with the caller's copy.
        if len(self._cursors) < _MAX_CURSORS and _small(cur.pgresult):
            self._cursors[sql] = cur
        return self._wrote(cur)

    def _wrote(self, cur: psycopg.Cursor[Row]) -> psycopg.Cursor[Row]:
        """Note a statement that changed rows: outside a transaction it
        committed on its own; inside, the transaction's commit will write."""
        if cur.rowcount > 0 and not (cur.statusmessage or "").startswith("SELECT"):
            if self._in_txn:
                self._txn_wrote = True
            else:
                self.commits += 1
        return cur

    # -- schema ---------------------------------------------------------------

    def schema_version(self) -> int:
        with self.transaction():
            # Serialised with ``migrate`` on other nodes: a concurrent
            # CREATE TABLE IF NOT EXISTS can still fail on the catalog's
            # unique keys in PostgreSQL.
            self._exec("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            exists = self._exec("SELECT to_regclass('schema_migrations')").fetchone()
            if exists is None or exists[0] is None:
                self._exec(
                    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
                )
            row = self._exec("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self) -> list[str]:
        """Apply every migration newer than the database, each in its own transaction.

        Several nodes starting at once each call this: a session advisory lock
        lets the first apply the migrations while the others wait, then find
        the schema current and apply nothing.
        """
        applied = []
        with self._lock:
            self._exec("SELECT pg_advisory_lock(%s)", (_MIGRATE_LOCK,))
            try:
                current = self.schema_version()
                newer_than(current, migrations())
                for version, name, sql in migrations():
                    if version <= current:
                        continue
                    with self.transaction():
                        for statement in split_statements(sql):
                            self._exec(statement)
                        self._exec(
                            "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                            (version, name, time.time()),
                        )
                    applied.append(name)
            except pg_errors.InsufficientPrivilege as exc:
                why = " ".join(str(exc).split())
                raise StoreError(
                    f"cannot bring the database schema up to date ({why}); the role of "
                    "[store] dsn must own the database, or a superuser must run the "
                    "migrations once (docs/deployment.md)") from None
            finally:
                # A lost connection has released the lock already.
                with contextlib.suppress(psycopg.Error):
                    self._exec("SELECT pg_advisory_unlock(%s)", (_MIGRATE_LOCK,))
        return applied

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: everything inside commits together or not at all."""
        with self._lock:
            if self._in_txn:
                yield  # nested: part of the enclosing transaction
                return
            if self._db.closed:
                self._db = self._connect()
            self._in_txn = True
            self._txn_wrote = False
            try:
                with self._db.transaction():
                    yield
            finally:
                self._in_txn = False
            self.transactions += 1
            if self._txn_wrote:
                self.commits += 1

    # -- users and identities (assumptions 1 to 3) ---------------------------

    def create_user(self, main_address: str, password_hash: str) -> User:
        try:
            with self.transaction():
                if self._exec(
                    "SELECT 1 FROM identities WHERE address=%s", (main_address,)
                ).fetchone():
                    raise StoreError(f"{main_address} already belongs to a user")
                row = self._exec(
                    "INSERT INTO users (main_address, password_hash, created_at) "
                    "VALUES (%s, %s, %s) RETURNING id",
                    (main_address, password_hash, time.time()),
                ).fetchone()
                assert row is not None
                user_id = int(row[0])
                self._exec(
                    "INSERT INTO identities (address, user_id, is_main) VALUES (%s, %s, 1)",
                    (main_address, user_id),
                )
        except pg_errors.UniqueViolation:
            # Another node (or admin command) took the address between our
            # check and our insert; SQLite's serialised writers never see this.
            raise StoreError(f"{main_address} already belongs to a user") from None
        return User(user_id, main_address, password_hash)

    def add_identity(self, user_id: int, address: str) -> None:
        try:
            with self.transaction():
                if self._exec(
                    "SELECT 1 FROM identities WHERE address=%s", (address,)
                ).fetchone():
                    raise StoreError(f"{address} already belongs to a user")
                self._exec(
                    "INSERT INTO identities (address, user_id, is_main) VALUES (%s, %s, 0)",
                    (address, user_id),
                )
        except pg_errors.UniqueViolation:
            raise StoreError(f"{address} already belongs to a user") from None

    def remove_identity(self, user_id: int, address: str) -> None:
        with self.transaction():
            row = self._exec(
                "SELECT is_main FROM identities WHERE address=%s AND user_id=%s",
                (address, user_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"{address} is not an identity of this user")
            if row[0]:
                raise StoreError(f"{address} is the main identity and cannot be removed")
            self._exec("DELETE FROM identities WHERE address=%s", (address,))

    # -- origin side: held messages ------------------------------------------

    def count_spam_reports(self, user_id: int, since: float) -> int:
        row = self._exec(
            "SELECT COUNT(*) FROM spam_reports WHERE user_id=%s AND reported_at >= %s",
            (user_id, since),
        ).fetchone()
        return int(row[0]) if row else 0

    # -- destination side: envelopes and mailboxes ---------------------------

    def mailbox_entries(
        self, user_id: int, states: Sequence[str] | None = None
    ) -> list[MailboxEntry]:
        if states is None:
            rows = self._exec(self._MAILBOX + " WHERE user_id=%s ORDER BY id", (user_id,))
        else:
            rows = self._exec(
                self._MAILBOX + " WHERE user_id=%s AND state = ANY(%s) AND deleted=0 ORDER BY id",
                (user_id, list(states)),
            )
        return [mailbox_row(r) for r in rows.fetchall()]

    def mark_deleted(self, entry_ids: Sequence[int]) -> None:
        with self.transaction():
            self._exec("UPDATE mailbox SET deleted=1 WHERE id = ANY(%s)", (list(entry_ids),))

    # -- quality (section 5.3) ------------------------------------------------

    def set_vote(self, entry_id: int, server: str, vote: int,
                 also: Sequence[str] = ()) -> list[Quality] | None:
        """Record one user's vote on one message; a changed vote replaces the old one."""
        # The counter moves by (new - old), so the old vote must not change
        # under us: two nodes applying decisions on one entry at once would
        # both read the same old vote. Locking the entry's row (it exists: the
        # vote references it) serialises them, as SQLite's single writer does.
        owner = self._exec("SELECT m.user_id, e.received_at FROM mailbox m "
                           "JOIN in_envelopes e ON e.id = m.envelope_id WHERE m.id=%s "
                           "FOR UPDATE OF m", (entry_id,)).fetchone()
        row = self._exec("SELECT vote FROM votes WHERE mailbox_id=%s", (entry_id,)).fetchone()
        old = int(row[0]) if row else 0
        if owner is None or old == vote:
            return None
        self._exec(
            "INSERT INTO votes (mailbox_id, server, vote) VALUES (%s, %s, %s) "
            "ON CONFLICT (mailbox_id) DO UPDATE SET vote=excluded.vote",
            (entry_id, server, vote),
        )
        return self._vote_counts(int(owner[0]), float(owner[1]), (server, *also), old, vote)

    # -- lists (Table 1, Table 3) ---------------------------------------------

    # -- expiry and cleanup ------------------------------------------------------

    def expire_out_messages(
        self, now: float, *, open_states: Collection[str], expired: str, detail: str,
        before_expiry: Callable[[int], None] | None = None,
    ) -> int:
        """Origin: every recipient still undecided at ``expires_at`` ends
        ``expired`` and the held body is deleted. Returns the messages expired.

        ``open_states``: the recipient states that still wait for a decision."""
        marks = ", ".join(["%s"] * len(open_states))
        with self.transaction():
            # Every node runs housekeeping: SKIP LOCKED leaves a message another
            # node is expiring right now to that node, so each is counted once.
            ids = [r[0] for r in self._exec(
                "SELECT id FROM out_messages WHERE expires_at <= %s AND has_body = 1 "
                "FOR UPDATE SKIP LOCKED",
                (now,),
            ).fetchall()]
            for message_id in ids:
                if before_expiry is not None:
                    before_expiry(message_id)
                self._exec(
                    f"UPDATE out_recipients SET state=%s, updated_at=%s, detail=%s "
                    f"WHERE message_id=%s AND state IN ({marks})",
                    (expired, now, detail, message_id, *open_states),
                )
                self.drop_out_body(message_id)  # its chunks go in this transaction
        return len(ids)

    def compact(self) -> None:
        """Let PostgreSQL reclaim the space of deleted rows (plain VACUUM).

        Not VACUUM FULL: it would lock every node out of the tables while it
        rewrites them. Plain VACUUM runs beside live traffic, makes dead rows'
        space reusable, and hands trailing empty pages back to the file system;
        autovacuum does the same on its own schedule, this only makes it prompt
        after a purge. One node at a time: the others skip their turn.
        """
        if self._in_txn:
            raise StoreError("compact() cannot run inside a transaction")
        got = self._exec("SELECT pg_try_advisory_lock(%s)", (_COMPACT_LOCK,)).fetchone()
        if not got or not got[0]:
            return
        try:
            self._exec("VACUUM out_messages, out_body_chunks, out_recipients, out_envelopes, "
                       "in_envelopes, in_body_chunks, mailbox, votes, spam_reports, queue")
        finally:
            with contextlib.suppress(psycopg.Error):
                self._exec("SELECT pg_advisory_unlock(%s)", (_COMPACT_LOCK,))

    # -- the work queue ----------------------------------------------------------

    def claim_jobs(self, node: str, now: float, limit: int, lease: float) -> list[Job]:
        """Claim due jobs for ``node`` until ``now + lease``.

        Only the oldest job of each key is eligible, and never while another
        job of its key is under a live claim, so work on one envelope runs in
        order and never twice at once, on this node or another.
        """
        with self.transaction():
            # One advisory lock serialises claims across nodes (released at
            # commit, after the claims are visible). Row locks alone cannot
            # give "one job per key": two claimers whose snapshots each miss
            # the other's uncommitted claim would lock *different* rows of one
            # key (a sequence hands out ids before commit, so a lower id can
            # appear after a higher one was claimed). A lock per key
            # (pg_try_advisory_xact_lock(hashtext(key))) would still need a
            # second, fresh snapshot after locking to see claims committed
            # meanwhile; a claim is one short indexed UPDATE per poll per node,
            # so serialising them costs next to nothing while the jobs
            # themselves, the slow part, still run in parallel. The claim
            # statement runs after the lock, so its snapshot (READ COMMITTED:
            # one per statement) holds every earlier claim.
            self._exec("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
            # SKIP LOCKED: a row another node is finishing or retrying right
            # now is left for the next poll instead of stalling this claim.
            rows = self._exec(
                "WITH picked AS ("
                " SELECT q.id FROM queue q"
                " WHERE q.id = (SELECT MIN(q2.id) FROM queue q2 WHERE q2.key = q.key)"
                " AND q.next_attempt <= %(now)s"
                " AND (q.claimed_until IS NULL OR q.claimed_until < %(now)s)"
                " AND NOT EXISTS (SELECT 1 FROM queue q3 WHERE q3.key = q.key"
                "  AND q3.claimed_until >= %(now)s)"
                " ORDER BY q.next_attempt, q.id LIMIT %(limit)s"
                " FOR UPDATE OF q SKIP LOCKED)"
                " UPDATE queue SET claimed_by=%(node)s, claimed_until=%(until)s"
                " FROM picked WHERE queue.id = picked.id"
                " RETURNING queue.id, queue.kind, queue.key, queue.payload, queue.attempts,"
                " queue.last_error",
                {"now": now, "limit": limit, "node": node, "until": now + lease},
            ).fetchall()
        return sorted((job_row(r) for r in rows), key=lambda j: j.id)

    def finish_jobs(self, job_ids: Sequence[int]) -> None:
        self._exec("DELETE FROM queue WHERE id = ANY(%s)", (list(job_ids),))

    def queue_size(self) -> int:
        row = self._exec("SELECT COUNT(*) FROM queue").fetchone()
        return int(row[0]) if row else 0
