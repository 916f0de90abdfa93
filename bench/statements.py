"""Issue 15 item 1: which SQL statements one message costs, by statement text.

``make bench`` (``bench/e2e.py``) gives the totals per message at each
server, under load. This tool names them: two servers in this process
(``tests/integration/inprocess.py``), SQLite's trace of every statement each
store runs, one message at a time on each path (full, direct, reject) after
a warm-up, and the statements of each server grouped by their text::

    .venv/bin/python -m bench.statements            # 20 messages per path
    .venv/bin/python -m bench.statements -n 50 --top 60

One message at a time is the worst case: under load the delivery worker
claims and finishes jobs in batches, so ``make bench`` shows fewer per
message. The recipient decides as the benchmark's do: ENVS, then ACCEPT or
REJECT, over the user port.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.e2e import SERVER_EXTRA, UserSession, stuffed


def _shape(sql: str) -> str:
    return " ".join(sql.split())[:150]


class Tally:
    """Every statement one store runs, by text; the store's own counters.

    The store's ``_exec`` is wrapped on this one object (SQLite's trace
    callback would also report each step of a trigger as its statement)."""

    def __init__(self, server: Any) -> None:
        self.seen: Counter[str] = Counter()
        self.store = server._server.store
        run, many = self.store._exec, self.store._exec_many

        def counted(sql: str, args: Any = ()) -> Any:
            self.seen[_shape(sql)] += 1
            return run(sql, args)

        def counted_many(sql: str, rows: Any) -> None:
            self.seen[_shape(sql)] += len(rows)
            many(sql, rows)

        self.store._exec, self.store._exec_many = counted, counted_many

    def snapshot(self) -> tuple[Counter[str], tuple[int, int, int]]:
        s = self.store
        return Counter(self.seen), (s.statements, s.transactions, s.commits)


def message(k: int, sender: str) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog, again and again. " * 1 + b"\r\n"
    body = line * 60
    return (f"From: {sender}\r\nTo: someone\r\nSubject: message {k}\r\n"
            f"Message-ID: <m{k}.{time.time_ns()}@a.example>\r\n\r\n").encode() + body


async def _wait(db: Path, sql: str, args: tuple[Any, ...], want: int = 1) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        deadline = time.monotonic() + 30
        while conn.execute(sql, args).fetchone()[0] < want:
            if time.monotonic() > deadline:
                raise TimeoutError(sql)
            await asyncio.sleep(0.002)
    finally:
        conn.close()


async def one(a: Any, b: Any, path: str, k: int) -> None:
    sender = {"full": "f0", "direct": "d0", "reject": "r0"}[path] + "@a.example"
    s = await UserSession.open(a.user_port, sender)
    msgid = await s.submit("user0@b.example", stuffed(message(k, sender)))
    await s.quit()
    a_db, b_db = a.config.store_path, b.config.store_path
    if path != "direct":
        await _wait(b_db, "SELECT COUNT(*) FROM mailbox WHERE state='pending'", ())
        r = await UserSession.open(b.user_port, "user0@b.example")
        for line in await r.lines(b"ENVS\r\n"):
            entry = line.split(b" ", 1)[0]
            verb = b"ACCEPT" if path == "full" else b"REJECT"
            await r.cmd(verb + b" " + entry + b"\r\n")
        await r.quit()
    final = "'rejected'" if path == "reject" else "'delivered'"
    await _wait(a_db, "SELECT COUNT(*) FROM out_recipients r JOIN out_messages m ON "
                f"m.id = r.message_id WHERE m.msgid=? AND r.state IN ({final})", (msgid,))
    for db in (a_db, b_db):
        await _wait(db, "SELECT 1 - MIN(COUNT(*), 1) FROM queue", ())


async def measure(root: Path, n: int, top: int) -> None:
    from tests.integration.inprocess import InProcessServer, peered

    extra = SERVER_EXTRA.replace("[limits]", "[limits]", 1)
    a = InProcessServer(root, "a.example", extra)
    b = InProcessServer(root, "b.example", extra)
    for prefix in "fdr":
        a.add_user(f"{prefix}0@a.example")
    b.add_user("user0@b.example")
    with peered(a, b):
        s = await UserSession.open(a.user_port, "d0@a.example")
        await s.cmd(b"LISTADD out-white user0@b.example\r\n")
        await s.quit()
        s = await UserSession.open(b.user_port, "user0@b.example")
        await s.cmd(b"LISTADD in-white d0@a.example smdp.a.example\r\n")
        await s.quit()
        tallies = {"origin": Tally(a), "destination": Tally(b)}
        for path in ("full", "direct", "reject"):
            for k in range(3):  # warm-up
                await one(a, b, path, k)
            await asyncio.sleep(0.3)
            before = {side: t.snapshot() for side, t in tallies.items()}
            for k in range(n):
                await one(a, b, path, k)
            await asyncio.sleep(0.3)  # the last batch of finished jobs
            for side, t in tallies.items():
                seen, counts = t.snapshot()
                was, counts0 = before[side]
                diff = seen - was
                st, tx, co = (x - y for x, y in zip(counts, counts0, strict=True))
                print(f"\n== {path}, {side}: per message {st / n:.2f} statements, "
                      f"{tx / n:.2f} transactions, {co / n:.2f} commits")
                for shape, count in diff.most_common(top):
                    print(f"  {count / n:5.2f}  {shape}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20, help="messages per path")
    parser.add_argument("--top", type=int, default=40, help="statements shown per server")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smdp-statements-") as tmp:
        asyncio.run(measure(Path(tmp), args.n, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
