"""Backup and restore of a SQLite store (``smdp admin backup``, ``restore``).

A backup is taken while the server runs, with SQLite's online backup API, from
one read snapshot: the source connection opens a read transaction before the
first page is copied and keeps it to the last, so the copy is the database as
it was at one commit, never a mix of two. In WAL mode that read blocks no
writer: the server keeps committing (to the WAL) while the pages are copied,
a batch at a time with a short pause between batches so the copy does not
hog the disk. Without the held snapshot, SQLite would restart the copy each
time another process commits, and a busy server could keep it from ever
finishing.

The copy is written to a temporary file beside the destination, switched to
a rollback journal (one self-contained file, no ``-wal`` beside it), checked
with ``PRAGMA integrity_check`` and ``foreign_key_check``, synced, and only
then renamed to its name: a backup file that exists is a whole one.

Everything the store holds is in that one file (bodies are chunk rows, not
files; spooled bodies are anonymous temporary files). What it does not hold
is the configuration and the files it names (certificates, keys, DKIM keys):
``config_files`` lists them for the operator to copy.

Restoring (``restore``) adds three things to copying the file back: it
refuses while any process has the store open (a server writing to a file
replaced under it would corrupt it); it writes through SQLite's backup API
into the store's own path, so a ``-wal`` file left beside it by the old
database cannot be replayed onto the restored one; and it releases the queue
claims the copy holds (the jobs they name run nowhere any more).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smdp.store.base import StoreError

if TYPE_CHECKING:
    from smdp.config import Config

__all__ = ["BackupReport", "backup_sqlite", "config_files", "restore_sqlite"]

# Pages copied per step (4 MiB at SQLite's default 4 KiB page) and the pause
# between steps: the server's writes go on during the pause.
PAGES_PER_STEP = 1024
PAUSE = 0.005

# The counts a backup reports: what an operator recognises of their server.
_COUNTED = (("users", "users"), ("held messages", "out_messages"),
            ("received envelopes", "in_envelopes"), ("mailbox entries", "mailbox"),
            ("queued jobs", "queue"))


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup or restore copied."""

    path: Path
    pages: int
    page_size: int
    schema_version: int
    counts: tuple[tuple[str, int], ...]
    seconds: float

    @property
    def size(self) -> int:
        return self.pages * self.page_size

    def describe(self) -> str:
        counts = ", ".join(f"{n} {what}" for what, n in self.counts)
        return (f"{self.path}: {self.pages} pages ({self.size / 1048576:.1f} MiB), schema "
                f"version {self.schema_version}, {counts}; integrity ok; "
                f"{self.seconds:.2f} s")


def _connect(path: Path, timeout: float) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=timeout)


def _summary(db: sqlite3.Connection, path: Path, started: float) -> BackupReport:
    """Checks the database ``db`` (at ``path``) and describes it; StoreError
    if it is damaged."""
    problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    if problems != ["ok"]:
        # SQLite's report is several lines: the first problem, as one line.
        first = " ".join(problems[0].replace("*** in database main ***", "").split())
        raise StoreError(f"{path} fails SQLite's integrity check ({first[:200]})")
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreError(f"{path} has {len(broken)} broken reference(s), first in "
                         f"table {broken[0][0]}")
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "schema_migrations" not in tables:
        raise StoreError("it is not an smdp store (no schema_migrations table)")
    version = int(db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0)
    counts = tuple((what, int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]))
                   for what, table in _COUNTED if table in tables)
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    return BackupReport(path, pages, page_size, version, counts, time.monotonic() - started)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_sqlite(store_path: Path, dest: Path, *, force: bool = False,
                  pages_per_step: int = PAGES_PER_STEP, pause: float = PAUSE) -> BackupReport:
    """A consistent, checked copy of the SQLite store at ``store_path`` in
    ``dest`` (a file, or a folder to put a dated file in), taken while a
    server may be writing to it."""
    started = time.monotonic()
    if not store_path.is_file():
        raise StoreError(f"there is no store at {store_path} ([store] path)")
    if dest.is_dir():
        dest = dest / time.strftime("smdp-%Y%m%dT%H%M%SZ.sqlite3", time.gmtime())
    if dest.exists() and not force:
        raise StoreError(f"{dest} exists: give --force to replace it")
    if dest.resolve() == store_path.resolve():
        raise StoreError("the backup cannot replace the store itself")
    if not dest.parent.is_dir():
        raise StoreError(f"cannot write {dest}: there is no folder {dest.parent}")
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    source = _connect(store_path, 30.0)
    try:
        partial.unlink(missing_ok=True)  # left by a backup that died
        copy = _connect(partial, 30.0)
        try:
            # One snapshot for the whole copy (see the module's docstring).
            source.execute("BEGIN")
            source.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            # The pause goes in the progress callback, called after each step:
            # backup()'s own ``sleep`` only applies when a step finds the
            # database locked.
            source.backup(copy, pages=pages_per_step,
                          progress=lambda _status, _left, _total: time.sleep(pause))
            source.execute("COMMIT")
            # The copy inherits WAL mode from the source's header: back to a
            # rollback journal, so the backup is one file with nothing beside it.
            copy.execute("PRAGMA journal_mode=DELETE")
            report = _summary(copy, dest, started)
        finally:
            copy.close()
        _fsync(partial)
        os.replace(partial, dest)
        _fsync(dest.parent)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {store_path}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        source.close()
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return report


def restore_sqlite(backup: Path, store_path: Path, *, head: int,
                   force: bool = False) -> BackupReport:
    """Puts the backup at ``backup`` in place of the store at ``store_path``,
    which no process may have open. ``head``: the newest schema version this
    smdp knows; a backup from a newer one is refused."""
    started = time.monotonic()
    if not backup.is_file():
        raise StoreError(f"there is no backup at {backup}")
    if store_path.exists() and not force:
        raise StoreError(f"{store_path} exists: give --force to replace the store with "
                         "the backup (what the store holds now is lost)")
    source = _connect(backup, 30.0)
    try:
        found = _summary(source, backup, started)
        if found.schema_version > head:
            raise StoreError(f"the backup is at schema version {found.schema_version}, newer "
                             f"than this smdp's {head}: restore it with the version that "
                             "made it (docs/deployment.md, \"Upgrades\")")
        store_path.parent.mkdir(parents=True, exist_ok=True)
        target = _connect(store_path, 0.5)
        try:
            # Exclusive locking mode: the first read takes the file's lock
            # and keeps it, and fails while any other connection (a server,
            # an `smdp admin`) has the file open.
            target.execute("PRAGMA locking_mode=EXCLUSIVE")
            try:
                target.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                raise StoreError(f"{store_path} is in use: stop the server (and any "
                                 "`smdp admin` on it) before restoring") from None
            source.backup(target)
            # Jobs the old server had claimed when the backup was taken are
            # running nowhere now: released, so the restored server takes
            # them at once, whatever its [server] node, rather than after
            # the lease (a server releases only the claims of its own node).
            columns = {r[1] for r in target.execute("PRAGMA table_info(queue)")}
            if "claimed_by" in columns:  # migration 0002
                target.execute("UPDATE queue SET claimed_by = NULL, claimed_until = NULL "
                               "WHERE claimed_by IS NOT NULL")
            target.execute("PRAGMA journal_mode=WAL")
            report = _summary(target, store_path, started)
        finally:
            target.close()
    except sqlite3.Error as exc:  # a damaged backup, a full disk
        raise StoreError(f"cannot restore {backup} into {store_path}: {exc}") from None
    finally:
        source.close()
    return report


def config_files(config: Config) -> list[tuple[str, Path]]:
    """Every file the configuration names that a restore needs beside the
    store, with the setting that names it."""
    found: list[tuple[str, Path]] = []
    if config.config_path is not None:
        found.append(("the configuration", config.config_path))
    for setting, path in (("tls.cert", config.tls.cert), ("tls.key", config.tls.key),
                          ("tls.ca", config.tls.ca), ("smtp.tls.ca", config.smtp_tls.ca)):
        if path is not None:
            found.append((setting, path))
    for domain, trust in sorted(config.peer_trust.items()):
        if trust.ca is not None:
            found.append((f'peers."{domain}".ca', trust.ca))
    for domain, dkim in sorted(config.dkim.items()):
        found.append((f'dkim."{domain}".key', dkim.key))
    return found
