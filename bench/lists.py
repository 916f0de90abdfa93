"""Issue 5 item 2: list maintenance (white and black lists, Table 1 / Table 3).

The paper: "search an address in a 1,000-line text file, add it if absent; 20
addresses, 10 adds and 10 deletes: 9 ms for each search-and-add/delete".

Here: one user's inbound white list of n (address, SMDP server) pairs, n =
1,000, 100,000 (and 1,000,000 at the full size), in the real store
(``SqliteStore``; ``PostgresStore`` on a throwaway cluster when the PostgreSQL
binaries are there), through the methods the server calls:

- ``lookup``: ``inbound_kind`` of a listed pair (hit) and of an absent one (miss),
  as ``receive_envelope`` does for every recipient of every envelope;
- ``add``: search and add if absent, ``inbound_kind`` + ``put_inbound`` in one
  ``transaction()`` (the paper's search-and-add), committed;
- ``delete``: ``drop_inbound`` in one ``transaction()``, committed;
- ``upsert_in_txn``: ``put_inbound`` alone (one statement), what the servers
  run when a decision or a user's command lists a pair.

A committed transaction is durable (SQLite WAL with synchronous=FULL,
PostgreSQL with fsync=on), so add and delete pay a disk flush; the same
operations inside one enclosing transaction (``*_in_txn``) show the list work
without it; their difference (``commit``) is what the durable commit costs.
Big lists are filled with one bulk INSERT (COPY and a CHECKPOINT on
PostgreSQL) through the store's own connection.

PostgreSQL is measured twice on the same database, each time through a new
store (connection): over TCP to 127.0.0.1 (``postgresql``) and over the
cluster's Unix-domain socket (``postgresql_unix``). Beside each, the round trip
alone (``round_trip_us``: ``SELECT 1`` straight through libpq on the store's
connection) and, for both backends, the client's CPU time per lookup
(``lookup_client_cpu_us``): a lookup's latency is that round trip, the
client's own work, and the server's. On a small virtual machine the round trip
depends on where the scheduler puts the server process: 15 µs (socket) to
20 µs (TCP) when it runs on the client's CPU, 40 to 75 µs on another one, and
a connection can move between the two in mid-run. ``postgresql_pinned``
therefore measures the largest list again with both processes pinned, the
server's on the client's CPU and on another one, over each connection.

In the same run, the paper's method as the baseline: the list as a text file,
one pair a line, searched line by line, appended to, rewritten without the
deleted line.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Settings, ratio, summary_us
from smdp.store import SqliteStore, Store

USER = "owner@b.example"
SEED = 7


def pair(k: int) -> tuple[str, str]:
    """The k-th listed (address, server) pair; deterministic, spread over 500 domains."""
    domain = f"d{k % 500}.example"
    return f"sender{k:07d}@{domain}", f"smdp.{domain}"


def absent(k: int) -> tuple[str, str]:
    domain = f"d{k % 500}.example"
    return f"new{k:07d}@{domain}", f"smdp.{domain}"


def _fill_sqlite(store: SqliteStore, user_id: int, n: int) -> None:
    db = store._db
    now = time.time()
    with store.transaction():
        db.executemany(
            "INSERT INTO inbound_lists (user_id, kind, address, server, how, added_at) "
            "VALUES (?, 'white', ?, ?, 'bench', ?)",
            ((user_id, *pair(k), now) for k in range(n)),
        )
    db.execute("ANALYZE")


def _fill_postgres(store: Any, user_id: int, n: int) -> None:
    db = store._db
    now = time.time()
    with store.transaction(), db.cursor().copy(
        "COPY inbound_lists (user_id, kind, address, server, how, added_at) FROM STDIN"
    ) as copy:
        for k in range(n):
            copy.write_row((user_id, "white", *pair(k), "bench", now))
    db.execute("ANALYZE inbound_lists")
    # Write the bulk load out now, as SQLite's fill does when it commits: a
    # checkpoint running in the background would load the timed commits.
    db.execute("CHECKPOINT")


def _ops(store: Store, user_id: int, n: int, count: int, rng: random.Random
         ) -> dict[str, Any]:
    """Time each operation ``count`` times on a list of ``n``; the list ends as it began."""
    hits = [pair(rng.randrange(n)) for _ in range(count)]
    fresh = [absent(n + k) for k in range(count)]
    samples: dict[str, list[int]] = {k: [] for k in (
        "lookup_hit", "lookup_miss", "add", "delete", "add_in_txn", "delete_in_txn",
        "upsert_in_txn")}

    def clock(name: str, fn: Callable[[str, str], object], address: str, server: str) -> None:
        start = time.perf_counter_ns()
        fn(address, server)
        samples[name].append(time.perf_counter_ns() - start)

    def lookup(address: str, server: str) -> None:
        store.inbound_kind(user_id, address, server)

    def add_in_txn(address: str, server: str) -> None:
        if store.inbound_kind(user_id, address, server) is None:
            store.put_inbound(user_id, "white", address, server, "bench")

    def delete_in_txn(address: str, server: str) -> None:
        store.drop_inbound(user_id, "white", address, server)

    def add(address: str, server: str) -> None:
        with store.transaction():
            add_in_txn(address, server)

    def delete(address: str, server: str) -> None:
        with store.transaction():
            delete_in_txn(address, server)

    def upsert_in_txn(address: str, server: str) -> None:
        store.put_inbound(user_id, "white", address, server, "bench")

    # Warm up: the first statements prepare and cache their plans.
    for k, (address, server) in enumerate(hits[:20]):
        lookup(address, server)
        add(*absent(10 * n + k))
        delete(*absent(10 * n + k))
    cpu = time.process_time()
    for hit, new in zip(hits, fresh, strict=True):
        clock("lookup_hit", lookup, *hit)
        clock("lookup_miss", lookup, *new)
    cpu = time.process_time() - cpu
    for new in fresh:
        clock("add", add, *new)
    for new in fresh:
        clock("delete", delete, *new)
    with store.transaction():
        for new in fresh:
            clock("add_in_txn", add_in_txn, *new)
        for new in fresh:
            clock("delete_in_txn", delete_in_txn, *new)
        for new in fresh:
            clock("upsert_in_txn", upsert_in_txn, *new)
        for new in fresh:
            delete_in_txn(*new)
    out: dict[str, Any] = {name: summary_us(values) for name, values in samples.items()}
    # Whole process, timing included: an upper bound of the client's own work.
    out["lookup_client_cpu_us"] = round(cpu / (2 * count) * 1e6, 2)
    # What the durable commit adds to one list change (the disk flush, mostly).
    out["commit"] = {"median_us": round(out["add"]["median_us"]
                                        - out["add_in_txn"]["median_us"], 2)}
    return out


def _measure(open_store: Callable[[], Iterator[Store]], fill: Callable[[Any, int, int], None],
             sizes: list[int], count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in sizes:
        with contextlib.ExitStack() as stack:
            store = stack.enter_context(contextlib.contextmanager(open_store)())
            user = store.create_user(USER, "x")
            started = time.perf_counter()
            fill(store, user.id, n)
            fill_s = time.perf_counter() - started
            ops = _ops(store, user.id, n, count, random.Random(SEED + n))
        out[str(n)] = {"entries": n, "fill_s": round(fill_s, 2), "ops": ops}
    return out


def _round_trip_us(store: Any, count: int) -> float:
    """Median of ``SELECT 1`` through libpq alone on the store's connection."""
    pgconn = store._db.pgconn
    samples = []
    for _ in range(count):
        start = time.perf_counter_ns()
        pgconn.exec_(b"SELECT 1")
        samples.append(time.perf_counter_ns() - start)
    return float(summary_us(samples)["median_us"])


def _growth(by_size: dict[str, Any]) -> dict[str, Any]:
    """Median latency at each size over the latency at the smallest, against log n."""
    sizes = sorted(int(k) for k in by_size if k.isdigit())
    base = sizes[0]
    out: dict[str, Any] = {}
    for n in sizes[1:]:
        out[str(n)] = {"log_n_ratio": round(math.log(n) / math.log(base), 2)} | {
            op: ratio(by_size[str(n)]["ops"][op]["median_us"],
                      by_size[str(base)]["ops"][op]["median_us"])
            for op in ("lookup_hit", "lookup_miss", "add_in_txn", "delete_in_txn", "add",
                       "delete")
        }
    return out


def _text_file_baseline(sizes: list[int], root: Path) -> dict[str, Any]:
    """The paper's method: a text file, one pair a line; 20 addresses, 10 adds, 10 deletes."""
    out: dict[str, Any] = {}
    for n in sizes:
        path = root / f"list-{n}.txt"
        path.write_text("".join(f"{a} {s}\n" for a, s in (pair(k) for k in range(n))))
        adds = [absent(n + k) for k in range(10)]
        samples: list[int] = []

        def search_and_add(address: str, server: str, path: Path = path) -> None:
            line = f"{address} {server}"
            with path.open("r+") as f:
                for existing in f:
                    if existing.rstrip("\n") == line:
                        return
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

        def delete(address: str, server: str, path: Path = path) -> None:
            line = f"{address} {server}\n"
            with path.open() as f:
                kept = [x for x in f if x != line]
            tmp = path.with_suffix(".tmp")
            with tmp.open("w") as f:
                f.writelines(kept)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)

        for address, server in adds:
            start = time.perf_counter_ns()
            search_and_add(address, server)
            samples.append(time.perf_counter_ns() - start)
        for address, server in adds:
            start = time.perf_counter_ns()
            delete(address, server)
            samples.append(time.perf_counter_ns() - start)
        out[str(n)] = {"entries": n, "search_and_add_or_delete": summary_us(samples)}
        path.unlink()
    return out


def run(settings: Settings) -> dict[str, Any]:
    sizes = settings.pick([1_000, 100_000], [1_000, 100_000, 1_000_000])
    count = settings.pick(1000, 2000)
    result: dict[str, Any] = {
        "aims": {"median_us_at_1m": 50.0, "growth": "like log n"},
        "paper": {"ms_per_search_and_add_or_delete": 9.0, "entries": 1000,
                  "method": "1,000-line text file"},
        "ops_per_size": count,
    }
    with tempfile.TemporaryDirectory(prefix="smdp-bench-lists-") as tmp:
        root = Path(tmp)

        def sqlite_store() -> Iterator[Store]:
            path = root / f"lists-{time.monotonic_ns()}.sqlite3"
            store = SqliteStore(path)
            store.migrate()
            try:
                yield store
            finally:
                store.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)

        result["sqlite"] = _measure(sqlite_store, _fill_sqlite, sizes, count)
        result["sqlite_growth"] = _growth(result["sqlite"])
        result["text_file"] = _text_file_baseline(settings.pick([1_000, 100_000],
                                                                [1_000, 100_000]), root)
        result.update(_postgres(sizes, count))
        if "skipped" not in result["postgresql"]:
            result["postgresql_growth"] = _growth(result["postgresql"])
            result["postgresql_unix_growth"] = _growth(result["postgresql_unix"])
    small = str(sizes[0])
    base = result["text_file"][small]["search_and_add_or_delete"]["median_us"]
    result["ratio_text_file_over_sqlite_commit"] = ratio(
        base, (result["sqlite"][small]["ops"]["add"]["median_us"]
               + result["sqlite"][small]["ops"]["delete"]["median_us"]) / 2, 1)
    return result


def _postgres(sizes: list[int], count: int) -> dict[str, dict[str, Any]]:
    try:
        from psycopg.conninfo import make_conninfo
        from tests import pg

        from smdp.store.postgres import PostgresStore
    except ImportError as exc:
        return {"postgresql": {"skipped": f"PostgreSQL not measured: {exc}"}}

    def one_pass(conninfo: str, user: int, n: int, seed: int,
                 cpus: tuple[int, int] | None = None) -> dict[str, Any]:
        """The operations through a new store; with ``cpus``, this process on
        the first CPU and the store's server process on the second."""
        store = PostgresStore(conninfo)
        mask = os.sched_getaffinity(0)
        try:
            if cpus is not None:
                row = store._db.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                os.sched_setaffinity(0, {cpus[0]})
                os.sched_setaffinity(int(row[0]), {cpus[1]})
            return {"round_trip_us": _round_trip_us(store, count),
                    "ops": _ops(store, user, n, count, random.Random(seed))}
        finally:
            os.sched_setaffinity(0, mask)
            store.close()

    server = "throwaway cluster (tests/pg.py): fsync=on, shared_buffers=16MB"
    tcp: dict[str, Any] = {"server": server, "connection": "TCP, 127.0.0.1"}
    unix: dict[str, Any] = {"server": server, "connection": "Unix-domain socket"}
    pinned: dict[str, Any] = {}
    try:
        with pg.cluster() as cluster:
            for n in sizes:
                dsn = cluster.create_database()
                try:
                    store = PostgresStore(dsn)
                    store.migrate()
                    user = store.create_user(USER, "x").id
                    started = time.perf_counter()
                    _fill_postgres(store, user, n)
                    fill_s = time.perf_counter() - started
                    store.close()
                    # The same list through each connection, in turn; each with
                    # its own draw of listed pairs, so that neither finds the
                    # other's pages in the server's cache.
                    socket = make_conninfo(dsn, host=str(cluster.root))
                    for out, conninfo, seed in ((tcp, dsn, SEED + n),
                                                (unix, socket, SEED + 2 * n + 1)):
                        out[str(n)] = {"entries": n, "fill_s": round(fill_s, 2)} | one_pass(
                            conninfo, user, n, seed)
                    if n == sizes[-1]:
                        pinned = _pinned(one_pass, {"tcp": dsn, "unix": socket}, user, n)
                finally:
                    cluster.drop_database(dsn)
    except pg.PostgresUnavailable as exc:
        return {"postgresql": {"skipped": f"PostgreSQL not measured: {exc}"}}
    return {"postgresql": tcp, "postgresql_unix": unix, "postgresql_pinned": pinned}


def _pinned(one_pass: Callable[..., dict[str, Any]], conninfos: dict[str, str], user: int,
            n: int) -> dict[str, Any]:
    """The largest list again with the scheduler's choice taken away: the
    server process pinned to this process's CPU, then to another one. Where
    the scheduler puts it is what makes the unpinned figures vary from run to
    run (the round trip shows which case a run got)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"skipped": "fewer than 2 CPUs"}
    out: dict[str, Any] = {"entries": n}
    seed = SEED + 3 * n
    try:
        for name, conninfo in conninfos.items():
            for where, other in (("same_cpu", cpus[0]), ("other_cpu", cpus[1])):
                seed += 1  # a fresh draw of pairs each time (see _postgres)
                out[f"{name}_{where}"] = one_pass(conninfo, user, n, seed, (cpus[0], other))
    except OSError as exc:  # not allowed to move the server's process
        return {"skipped": f"cannot pin: {exc}"}
    return out
