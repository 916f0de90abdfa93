"""Every migration from every earlier schema version, with data in it, on
both backends (issue 16 item 5; docs/deployment.md, "Upgrades").

For each version k: a fresh store is migrated one version at a time to k,
each version's data script (tests/fixtures/migrations/NNNN.sql) running right
after its migration, so the store at k holds rows in every table and column
that exist at k, written with the schema of their day. Then it migrates to
the newest version as a server does at start (``open_store``), and:

- every row of every table at k is still there, every value unchanged, but
  for the columns a later migration says it rewrites (``-- changes:``);
- what later migrations derive from old rows is as the scripts say
  (``-- expect:``);
- the store works: it reads the old rows and writes new ones through its API.

Generic over the migrations directory: a migration without a data script
fails here, with what to write (tests/fixtures/migrations/README.md).
"""

from __future__ import annotations

import ast
import decimal
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import smdp.store.postgres
import smdp.store.sqlite
from smdp.config import parse_config
from smdp.store import SqliteStore, Store, StoreError, open_store
from smdp.store.sql import SqlStore
from smdp.store.sqlscript import split_statements

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "migrations"
VERSIONS = [v for v, _n, _s in smdp.store.sqlite.migrations()]

Row = tuple[object, ...]


@dataclass
class DataScript:
    version: int
    statements: list[str]
    expects: list[tuple[str, object]] = field(default_factory=list)
    changes: set[str] = field(default_factory=set)  # "table" or "table.column"


def data_script(version: int) -> DataScript:
    path = FIXTURES / f"{version:04d}.sql"
    if not path.is_file():
        pytest.fail(f"migration {version:04d} has no data script: write "
                    f"{path.relative_to(ROOT)} with rows for every table and column it adds "
                    f"(see {(FIXTURES / 'README.md').relative_to(ROOT)})", pytrace=False)
    text = path.read_text(encoding="utf-8")
    script = DataScript(version, split_statements(text))
    for line in text.splitlines():
        if line.startswith("-- expect:"):
            query, _, value = line.removeprefix("-- expect:").rpartition("=>")
            script.expects.append((query.strip(), ast.literal_eval(value.strip())))
        elif line.startswith("-- changes:"):
            script.changes.add(line.removeprefix("-- changes:").strip())
    return script


@dataclass
class Backend:
    name: str
    open_raw: Callable[[], SqlStore]  # connected, not migrated
    open: Callable[[], Store]  # as a server opens it: migrated to the newest


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "s.sqlite3"
        return Backend("sqlite", lambda: SqliteStore(path), lambda: open_store(str(path)))
    from smdp.store.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    config = parse_config({"server": {"hostname": "smdp.a.example", "domains": ["a.example"]},
                           "store": {"backend": "postgresql", "dsn": dsn}}, tmp_path)
    return Backend("postgresql", lambda: PostgresStore(dsn), lambda: open_store(config))


def module_of(backend: Backend) -> object:
    return smdp.store.sqlite if backend.name == "sqlite" else smdp.store.postgres


def dialect(backend: Backend, statement: str) -> str:
    """The scripts write blobs as X'hex'; PostgreSQL spells them as bytea."""
    if backend.name == "sqlite":
        return statement
    return re.sub(r"\bX'([0-9A-Fa-f]*)'", r"'\\x\1'::bytea", statement)


def query(store: SqlStore, sql: str) -> list[Row]:
    return [tuple(r) for r in store._exec(sql).fetchall()]


def tables(store: SqlStore, backend: Backend) -> dict[str, list[str]]:
    """Every table of the data model and its columns (not the migrations' own
    bookkeeping, nor SQLite's)."""
    if backend.name == "sqlite":
        names = [r[0] for r in query(store, "SELECT name FROM sqlite_master WHERE type='table' "
                                            "AND name NOT LIKE 'sqlite_%'")]
        found = {n: [str(r[1]) for r in query(store, f"PRAGMA table_info({n})")] for n in names}
    else:
        found = {}
        for table, column in query(store, "SELECT table_name, column_name FROM "
                                          "information_schema.columns WHERE table_schema = "
                                          "'public' ORDER BY table_name, ordinal_position"):
            found.setdefault(str(table), []).append(str(column))
    found.pop("schema_migrations", None)
    return found


def plain(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def snapshot(store: SqlStore, backend: Backend) -> dict[str, tuple[list[str], list[Row]]]:
    """Every table's columns and rows, the rows in a stable order."""
    out = {}
    for table, columns in tables(store, backend).items():
        rows = [tuple(plain(v) for v in r) for r in query(store, f"SELECT * FROM {table}")]
        out[table] = (columns, sorted(rows, key=repr))
    return out


def project(columns: list[str], rows: list[Row], keep: list[str]) -> list[Row]:
    at = [columns.index(c) for c in keep]
    return sorted((tuple(r[i] for i in at) for r in rows), key=repr)


def test_every_migration_has_a_data_script() -> None:
    missing = [f"{v:04d}" for v in VERSIONS if not (FIXTURES / f"{v:04d}.sql").is_file()]
    assert not missing, (
        f"migration(s) {', '.join(missing)} have no data script in "
        f"{FIXTURES.relative_to(ROOT)}: write one per migration, with rows for every table "
        "and column it adds (see README.md there)")
    strays = sorted(p.name for p in FIXTURES.glob("*.sql") if int(p.name[:4]) not in VERSIONS)
    assert not strays, f"data scripts without a migration: {strays}"


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: f"from-{v:04d}")
def test_migrates_to_the_newest_with_data(backend: Backend, version: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    every = smdp.store.sqlite.migrations() if backend.name == "sqlite" \
        else smdp.store.postgres.migrations()
    head = every[-1][0]
    scripts = [data_script(v) for v, _n, _s in every]
    store = backend.open_raw()
    try:
        for i, script in enumerate(scripts[:VERSIONS.index(version) + 1]):
            monkeypatch.setattr(module_of(backend), "migrations", lambda i=i: every[:i + 1])
            store.migrate()
            assert store.schema_version() == script.version
            with store.transaction():
                for statement in script.statements:
                    store._exec(dialect(backend, statement))
        before = snapshot(store, backend)
    finally:
        store.close()
        monkeypatch.undo()

    later = [s for s in scripts if s.version > version]
    changed = set().union(*(s.changes for s in later))
    migrated = backend.open()  # migrates, as `smdp serve` does at start
    try:
        assert migrated.schema_version() == head
        assert isinstance(migrated, SqlStore)
        after = snapshot(migrated, backend)
        for table, (columns, rows) in before.items():
            assert rows, f"{table} is empty at {version:04d}: give it rows in a data script"
            if table in changed:
                continue
            assert table in after, f"{table} is gone at {head:04d} (no script declares it)"
            new_columns, new_rows = after[table]
            assert len(new_rows) == len(rows), f"{table}: rows lost or added by migrating"
            gone = [c for c in columns if c not in new_columns and f"{table}.{c}" not in changed]
            assert not gone, f"{table}: columns {gone} are gone and no script declares it"
            keep = [c for c in columns if c in new_columns and f"{table}.{c}" not in changed]
            assert project(new_columns, new_rows, keep) == project(columns, rows, keep), (
                f"{table}: values changed by migrating from {version:04d} to {head:04d}")
        for script in scripts[:VERSIONS.index(version) + 1]:
            for sql, expected in script.expects:
                got = query(migrated, sql)
                assert got and plain(got[0][0]) == expected, (
                    f"{script.version:04d}.sql expects {sql} => {expected!r}, got {got}")
        works(migrated)
    finally:
        migrated.close()


def works(store: Store) -> None:
    """Reads of the oldest data (0001's) and writes, through the store's API."""
    alice = store.user_by_address("alice@a.example")
    bob = store.user_by_address("bob@a.example")
    assert alice is not None and bob is not None
    assert store.identities(alice.id) == ["alice@a.example", "sales@a.example"]
    held = store.out_message_by_msgid("m-held")
    assert held is not None and held.held
    assert store.out_body(held.id) == b"Subject: held\r\n\r\nheld body\r\n"
    assert {r.recipient for r in store.out_recipients(held.id)} >= {"carol@b.example",
                                                                    "dave@b.example"}
    env = store.in_envelope_by_envid("env-in-1")
    assert env is not None and env.has_body and env.size == 34
    assert store.in_body(env.id) == b"Subject: arrived\r\n\r\narrived body\r\n"
    states = {e.envelope_id: e.state for e in store.mailbox_entries(bob.id)}
    assert states[env.id] == "accepted"
    assert store.inbound_kind(bob.id, "carol@b.example", "smdp.b.example") == "white"
    assert store.quality("smdp.b.example").messages >= 3
    assert {j.key for j in store.jobs()} >= {"env-held-b", "env-in-1"}

    # New rows beside the old ones: new ids (PostgreSQL's sequences went on),
    # the old ones untouched.
    carol = store.create_user("carol@a.example", "h")
    assert carol.id > max(u.id for u in store.users() if u.id != carol.id)
    store.add_identity(carol.id, "c@a.example")
    with store.transaction():
        store.put_inbound(carol.id, "black", "x@x.example", "smdp.x.example", "manual")
        store.enqueue("send-envelope", "env-new", '{"envid": "env-new"}', at=0.0)
    jobs = store.claim_jobs("n1", 1e12, 100, 60.0)
    assert "env-new" in {j.key for j in jobs}
    store.finish_jobs([j.id for j in jobs if j.key == "env-new"])
    assert "env-new" not in {j.key for j in store.jobs()}
    assert store.inbound_kind(carol.id, "x@x.example", "smdp.x.example") == "black"


def test_a_store_newer_than_this_smdp_is_refused(backend: Backend) -> None:
    """No downgrades: an older smdp does not run on a schema it does not know."""
    store = backend.open()
    assert isinstance(store, SqlStore)
    store._exec("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 0)")
    store.close()
    with pytest.raises(StoreError, match=r"schema version 9999, newer than this smdp knows"):
        backend.open()
