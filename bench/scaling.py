"""Issue 5 item 5: how the costs grow (the plotted scaling curves).

- Mailbox size: one b.example user with 1,000 to 100,000 envelopes (1,000,000
  at the full size), half of them pending and half accepted messages of 2 KB,
  written straight into the server's SQLite store between runs. Measured over
  the user port of the running server: login (USER/PASS, which counts the
  mailbox), STAT, LIST and ENVS (the pending envelopes), and the server's peak
  memory.
- Message size: one message of 1 KB to 25 MB (the default size limit is 25
  MiB), text plus a base64 attachment, submitted through a.example's user port
  to a b.example user, who accepts it, so it is pulled. Measured: submit time,
  envelope arrival, accept-to-stored time, and the growth of each server's
  peak resident memory (VmHWM, reset before each message through
  /proc/<pid>/clear_refs) beside the message size.
- List size: from the list benchmark (``lists.json``).
- Concurrent sessions: ``make load`` (bench/load.py) is the load test; its
  last result, when present, is quoted in the summary.
"""

from __future__ import annotations

import base64
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.harness import Server, make_pair, running

from bench.common import Settings, ratio, reset_hwm, vm_kib
from smdp.client.session import UserClient
from smdp.core.envelope import encode_envelope_block, extract_envelope
from smdp.protocol import user as wire
from smdp.store import SqliteStore
from smdp.store.sqlite import delivery_octets
from smdp.terms import Decision

OWNER = "owner@b.example"
ALICE = "alice@a.example"
SEED = 11


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """``wait_until`` with a 5 ms step: the times measured here are tens of ms."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
    return value


def _client(server: Server, user: str, timeout: float = 900.0) -> UserClient:
    c = UserClient("127.0.0.1", server.user_port, timeout=timeout)
    c.login(user, "secret", verb="PASS")
    return c


# ---------------------------------------------------------------------------
# Mailbox size


# login, STAT, a page of ENVS and of LIST, then the whole LIST and ENVS.
OPS = ("login", "stat", "envs_page", "list_page", "list", "envs")


def _sample_message(k: int) -> bytes:
    text = "".join(f"Line {i} of message {k}: the quarterly figures are attached.\r\n"
                   for i in range(30))
    return (f"From: sender{k % 97}@peer.example\r\nTo: {OWNER}\r\n"
            f"Subject: Message number {k}\r\nDate: Mon, 1 Jun 2009 10:00:00 +0300\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{text}").encode()


def _fill_mailbox(db: Path, start: int, stop: int) -> None:
    """Envelopes ``start``..``stop`` for OWNER: even ones pending, odd ones accepted."""
    store = SqliteStore(db)
    try:
        user = store.user_by_address(OWNER)
        assert user is not None
        body = _sample_message(0)
        block = encode_envelope_block(extract_envelope(body),
                                      expires="2099-01-01T00:00:00Z").decode()
        now = time.time()
        conn = store._db
        with store.transaction():
            conn.executemany(
                "INSERT INTO in_envelopes (id, envid, origin_server, sender, size, block, "
                "subject, received_at, has_body, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((k + 1, f"bench{k:09d}", "smdp.peer.example", f"sender{k % 97}@peer.example",
                  len(body), block, f"Message number {k}", now,
                  k % 2, now + 86400 * 365) for k in range(start, stop)))
            # Accepted envelopes hold the body (one chunk: it is small).
            conn.executemany(
                "INSERT INTO in_body_chunks (envelope_id, seq, data) VALUES (?, 0, ?)",
                ((k + 1, body) for k in range(start, stop) if k % 2))
            # octets: the size RETR sends (migration 0017); the counts
            # follow by the store's triggers, as they do for the server.
            conn.executemany(
                "INSERT INTO mailbox (id, user_id, envelope_id, recipient, state, octets) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                ((k + 1, user.id, k + 1, OWNER, "accepted" if k % 2 else "pending",
                  len(body) + delivery_octets(f"sender{k % 97}@peer.example", OWNER))
                 for k in range(start, stop)))
        conn.execute("ANALYZE")
    finally:
        store.close()


def _time_call(c: UserClient, command: wire.UserCommand) -> tuple[float, int]:
    start = time.perf_counter()
    reply = c.call(command)
    return time.perf_counter() - start, len(reply.lines or [])


def mailbox_curve(root: Path, sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    _a, b = make_pair(root, backend="sqlite")  # filled through SQLite directly
    b.add_user(OWNER)
    rows: list[dict[str, Any]] = []
    filled = 0
    for n in sizes:
        _fill_mailbox(b.db_path, filled, n)
        filled = n
        with running(b):
            assert b.proc is not None
            times: dict[str, list[float]] = {op: [] for op in OPS}
            lines = 0
            middle = n // 2 - n // 2 % 2  # an even entry id: the page starts mid-mailbox
            for _ in range(repeats):
                start = time.perf_counter()
                c = _client(b, OWNER)
                times["login"].append(time.perf_counter() - start)
                times["stat"].append(_time_call(c, wire.Stat())[0])
                # Pages (issue 15 item 6): ENVS's from the middle of the
                # mailbox; LIST's first page is the session's first numbered
                # command, which reads the maildrop's ids and sizes.
                times["envs_page"].append(
                    _time_call(c, wire.Envs(False, after=middle, limit=100))[0])
                times["list_page"].append(_time_call(c, wire.ListCmd(limit=100))[0])
                times["list"].append(_time_call(c, wire.ListCmd(None))[0])
                seconds, lines = _time_call(c, wire.Envs(False))
                times["envs"].append(seconds)
                c.quit()
            row: dict[str, Any] = {"envelopes": n, "pending_listed": lines}
            for op, values in times.items():
                median = statistics.median(values)
                row[f"{op}_ms"] = round(median * 1000, 2)
                row[f"{op}_us_per_envelope"] = round(median * 1e6 / n, 2)
            row["server_vmhwm_mib"] = round(vm_kib(b.proc.pid) / 1024, 1)
            rows.append(row)
    base = rows[0]
    for row in rows:
        row["growth_vs_smallest"] = {
            op: ratio(row[f"{op}_ms"], base[f"{op}_ms"])
            for op in OPS} | {
            "size": ratio(row["envelopes"], base["envelopes"])}
    return rows


# ---------------------------------------------------------------------------
# Message size


def sized_message(size: int, rng: random.Random) -> bytes:
    """About ``size`` octets: a short text part and, past 4 KB, a base64 attachment."""
    head = (f"To: bob@b.example\r\nSubject: A message of {size} octets\r\n"
            "MIME-Version: 1.0\r\n").encode()
    text = b"".join(b"Line %d of the covering note.\r\n" % i for i in range(40))
    if size < 4096:
        filler = b"x" * 70 + b"\r\n"
        body = text + filler * max(0, (size - len(head) - len(text)) // len(filler))
        return head + b"Content-Type: text/plain\r\n\r\n" + body
    raw = rng.randbytes(max(0, (size - 1500) * 57 // 78))
    return head + (
        b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        b"--b0\r\nContent-Type: text/plain\r\n\r\n" + text +
        b'--b0\r\nContent-Type: application/octet-stream; name="data.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="data.bin"\r\n\r\n'
        + base64.encodebytes(raw).replace(b"\n", b"\r\n") + b"--b0--\r\n")


def message_curve(root: Path, sizes: list[int]) -> dict[str, Any]:
    a, b = make_pair(root, backend="sqlite")
    a.add_user(ALICE)
    b.add_user("bob@b.example")
    rng = random.Random(SEED)
    rows: list[dict[str, Any]] = []
    resettable = True
    with running(a, b):
        assert a.proc is not None and b.proc is not None
        pids = {"a": a.proc.pid, "b": b.proc.pid}
        bob = _client(b, "bob@b.example")
        sender = _client(a, ALICE)
        seen = 0

        def one(size: int) -> dict[str, Any]:
            nonlocal seen, resettable
            msg = sized_message(size, rng)
            before = {}
            for name, pid in pids.items():
                resettable = reset_hwm(pid) and resettable
                before[name] = vm_kib(pid, "VmRSS")
            start = time.perf_counter()
            sender.submit(["bob@b.example"], msg)
            submitted = time.perf_counter()
            seen += 1
            poll(lambda: b.query("SELECT COUNT(*) FROM mailbox")[0][0] >= seen, 300,
                 "the envelope")
            arrived = time.perf_counter()
            entry = b.query("SELECT MAX(id) FROM mailbox")[0][0]
            bob.call(wire.UserDecision(Decision.ACCEPT, int(entry)))
            decided = time.perf_counter()
            poll(lambda: b.query("SELECT state FROM mailbox WHERE id=?", (entry,))
                 == [("accepted",)], 300, "the pull")
            stored = time.perf_counter()
            row: dict[str, Any] = {
                "message_kib": round(len(msg) / 1024, 1),
                "submit_ms": round((submitted - start) * 1000, 1),
                "envelope_arrival_ms": round((arrived - submitted) * 1000, 1),
                "accept_to_stored_ms": round((stored - decided) * 1000, 1),
            }
            for name, pid in pids.items():
                grown = max(0, vm_kib(pid) - before[name])
                row[f"{name}_peak_growth_mib"] = round(grown / 1024, 1)
                row[f"{name}_growth_per_message_octet"] = round(grown * 1024 / len(msg), 2)
            return row

        one(2000)  # warm-up: first use of every code path
        for size in sizes:
            rows.append(one(size))
        bob.quit()
        sender.quit()
    return {"hwm_reset": resettable, "rows": rows,
            "note": "peak growth = VmHWM after the message - VmRSS before it (MiB); "
                    "a: origin (submission, envelope, pull served); b: destination"}


def run(settings: Settings) -> dict[str, Any]:
    mailbox_sizes = settings.pick([1_000, 10_000, 100_000], [1_000, 10_000, 100_000, 1_000_000])
    message_sizes = [1_000, 10_000, 100_000, 1_000_000, 5_000_000, 25_000_000]
    result: dict[str, Any] = {"aims": {"message_size": "server memory must not grow with "
                                                       "message size"}}
    with tempfile.TemporaryDirectory(prefix="smdp-bench-scaling-") as tmp:
        root = Path(tmp)
        (root / "mailbox").mkdir()
        (root / "message").mkdir()
        result["mailbox"] = mailbox_curve(root / "mailbox", mailbox_sizes,
                                          repeats=settings.pick(3, 3))
        result["message_size"] = message_curve(root / "message", message_sizes)
    return result
