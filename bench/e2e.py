"""Issue 5 item 3: end to end on loopback, against aiosmtpd with fsync and Postfix.

Two real ``smdp serve`` processes (a.example, b.example; harness ``make_pair``,
SQLite stores with WAL and synchronous=FULL) and many concurrent users on
a.example submitting real messages (corpus ham, its author fields replaced by
the sender's account) to users of b.example, who decide. Three paths, each run
with its own sender accounts:

- ``full``: the whole flow: the envelope crosses, the recipient ACCEPTs, the
  destination pulls the message; done when it is readable in the mailbox
  (mailbox state ``accepted``: the body is stored);
- ``direct``: sender and recipient white-listed beforehand through the user
  port (LISTADD out-white at a.example, LISTADD in-white at b.example), so the
  message goes with MAIL at once; done when readable in the mailbox;
- ``reject``: the envelope crosses, the recipient REJECTs; done when the
  origin has recorded the rejection (what the sender sees with SENT).

Recipients are woken as soon as an envelope lands: the benchmark reads b's
store every few milliseconds (standing in for a push notification) and hands
the recipient's session the news; the session then asks ENVS and decides over
the user port like any client. The same reader notes when each message becomes
readable, so the latency is submit start -> readable, to within that interval.

Each path runs twice: saturated (every session submits its share back to back:
msgs/s, MB/s, CPU per message, peak memory) and paced at half the saturated
rate (open loop, latency measured from the scheduled time: p50/p99 without a
backlog). CPU per message is the sum of the two server processes' utime+stime
(``/proc/<pid>/stat``) from the start until both queues are empty, divided by
the messages; peak memory is each server's VmHWM, reset before each run.

Baselines in the same run, on the same machine:

- aiosmtpd (a separate process, so that its CPU is measured the same way)
  whose DATA handler writes each message to its own file and fsyncs it (in the
  default thread pool, so the fsyncs of concurrent sessions overlap) before the
  250; driven by an asyncio SMTP client over as many connections as SMDP has
  users, with the same messages; latency is submit start -> 250 (the message
  is on disk);
- Postfix, where it is installed and we are root: a throwaway instance in a
  temp dir (private main.cf/master.cf, queue and data directories there,
  127.0.0.1 only, no local delivery) relaying through its on-disk queue to
  ``smtp-sink``, driven by ``smtp-source -d -s <sessions> -m N -l <size>``;
  timed until smtp-sink has counted every message; latency from Postfix's log
  (``delay=``, arrival to delivery). ``smtp-source`` straight into
  ``smtp-sink`` gives the wire's ceiling, and ``smtp-source`` into aiosmtpd
  checks that our Python client is not what limits aiosmtpd.

The clients (ours, in this process) report their CPU share: CPU seconds of
this process over the wall time of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    ROUNDS,
    Settings,
    alternate,
    corpus_files,
    percentile,
    ratio,
    reset_hwm,
    spread,
    to_wire,
    vm_kib,
)

SEED = 3
A_HOST = "smdp.a.example"
PLACEHOLDER = "f0@a.example"
MAX_LINE = 990
KIB = 1024
SIZES = {"4k": 4 * KIB, "700k": 700 * KIB}
PATHS = ("full", "direct", "reject")
POLL_S = 0.005  # the store reader's interval: latency resolution, recipient wake-up
RECIPIENTS = 10
PHASE_TIMEOUT_S = 300.0

# Limits out of the way: this measures the delivery path, not the abuse
# counters (100 envelopes per hour from a new peer) or the quality verdict.
SERVER_EXTRA = """
[limits]
max_sessions = 2000
max_sessions_per_client = 2000
[quality]
min_messages = 1000000000
[abuse]
envelopes_per_peer_per_hour = 1000000000
envelopes_per_new_peer_per_hour = 1000000000
envelopes_per_recipient_per_hour = 1000000000
envelopes_per_session = 1000000000
"""

_AUTHOR_FIELDS = frozenset({"from", "sender", "resent-from", "resent-sender", "bcc"})
_MIME_FIELDS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})


class E2EError(Exception):
    pass


# ---------------------------------------------------------------------------
# The messages


@dataclass
class Workload:
    name: str  # "4k" or "700k"
    target: int  # octets
    bodies: list[bytes]  # prepared, first header line "From: f0@a.example"
    source: str  # "corpus ham" or "synthetic"

    @property
    def mean_octets(self) -> float:
        return statistics.fmean(len(b) for b in self.bodies)

    def message(self, k: int, account: str) -> bytes:
        body = self.bodies[k % len(self.bodies)]
        return body.replace(f"From: {PLACEHOLDER}\r\n".encode(),
                            f"From: {account}\r\n".encode(), 1)


def _prepare(rest: bytes) -> bytes | None:
    """``From: f0@a.example`` + ``rest`` as the origin stores it, or None if it
    would refuse it (checked with its own ``prepare_submission``)."""
    from smdp.core.submission import SubmissionError, prepare_submission

    raw = f"From: {PLACEHOLDER}\r\n".encode() + rest
    try:
        prepared = prepare_submission(raw, identities=[PLACEHOLDER], sender=PLACEHOLDER,
                                      hostname=A_HOST)
    except (SubmissionError, ValueError):
        return None
    if f"From: {PLACEHOLDER}\r\n".encode() not in prepared:
        return None
    if any(len(line) > MAX_LINE for line in prepared.split(b"\r\n")):
        return None
    return prepared


def _split_corpus(data: bytes, drop: frozenset[str]) -> tuple[bytes, bytes, dict[str, bytes]]:
    """(header without the ``drop`` fields, body, {field: value}) of a corpus message."""
    from smdp.mail.mime import scan_header

    block = scan_header(data, limit=1024 * 1024)
    if block.truncated:
        raise ValueError("header too long")
    kept = bytearray()
    pos = 0
    values: dict[str, bytes] = {}
    for f in block.fields:
        values.setdefault(f.key, f.value)
        if f.key in drop:
            kept += data[pos:f.start]
            pos = f.end
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        raise ValueError("no body")
    kept += data[pos:head_end + 2]
    return bytes(kept), data[head_end + 4:], values


def _attachment(size: int, k: int) -> bytes:
    """Base64 lines (76 characters) of deterministic random octets, about ``size`` long."""
    raw = random.Random(SEED * 1000 + k).randbytes(max(0, size) * 57 // 78)
    text = base64.b64encode(raw)
    return b"".join(text[i:i + 76] + b"\r\n" for i in range(0, len(text), 76))


def _big(header: bytes, body: bytes, content_type: bytes, cte: bytes, target: int,
         k: int) -> bytes | None:
    """A multipart/mixed message of about ``target`` octets: the text as its first
    part, a base64 attachment as its second."""
    boundary = f"=_smdp_e2e_{k}".encode()
    head = (header + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\""
            + boundary + b"\"\r\n\r\n")
    text = (b"--" + boundary + b"\r\nContent-Type: " + (content_type or b"text/plain")
            + b"\r\nContent-Transfer-Encoding: " + (cte or b"8bit") + b"\r\n\r\n" + body
            + (b"" if body.endswith(b"\r\n") else b"\r\n"))
    att_head = (b"--" + boundary + b"\r\nContent-Type: application/octet-stream; "
                b"name=\"data-" + str(k).encode() + b".bin\"\r\nContent-Transfer-Encoding: "
                b"base64\r\nContent-Disposition: attachment; filename=\"data-"
                + str(k).encode() + b".bin\"\r\n\r\n")
    tail = b"--" + boundary + b"--\r\n"
    prefix = len(f"From: {PLACEHOLDER}\r\n") + 120  # the Date and Message-ID it may add
    room = target - prefix - len(head) - len(text) - len(att_head) - len(tail)
    if room < 1024:
        return None
    return _prepare(head + text + att_head + _attachment(room, k) + tail)


def _synthetic_text(k: int, size: int) -> bytes:
    rng = random.Random(SEED * 7919 + k)
    words = ("mail", "envelope", "recipient", "decision", "server", "queue", "message",
             "delivery", "white", "list", "the", "of", "and", "to", "a", "in", "is", "for")
    lines = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(6, 12))).encode()
        lines.append(line)
        total += len(line) + 2
    return b"\r\n".join(lines) + b"\r\n"


def build_workloads(settings: Settings, counts: dict[str, int]) -> dict[str, Workload]:
    """4 KB: corpus ham of 3.0 to 5.2 KB as it is; 700 KB: corpus ham (single
    text part) with a base64 attachment. Synthetic when the corpus is absent."""
    rng = random.Random(SEED)
    ham = [p for label, p in corpus_files(settings.corpus) if label == "ham"]
    rng.shuffle(ham)
    small: list[bytes] = []
    big: list[bytes] = []
    want_small = min(counts["4k"], 2000)
    want_big = counts["700k"]
    for path in ham:
        if len(small) >= want_small and len(big) >= want_big:
            break
        data = to_wire(path.read_bytes())
        try:
            header, body, values = _split_corpus(data, _AUTHOR_FIELDS)
        except ValueError:
            continue
        if len(small) < want_small and 3000 <= len(data) <= 5400:
            prepared = _prepare(header + b"\r\n" + body)
            if prepared is not None and 3000 <= len(prepared) <= 5200:
                small.append(prepared)
                continue
        ctype = values.get("content-type", b"text/plain").strip()
        if len(big) < want_big and ctype.lower().startswith(b"text/plain") and len(data) < 20000:
            try:
                header2, body2, _ = _split_corpus(data, _AUTHOR_FIELDS | _MIME_FIELDS)
            except ValueError:
                continue
            msg = _big(header2, body2, ctype, values.get("content-transfer-encoding",
                                                         b"").strip(), SIZES["700k"], len(big))
            if msg is not None:
                big.append(msg)
    source = "corpus ham"
    if not small or not big:
        source = "synthetic (corpus absent)"
        small, big = [], []
        for k in range(want_small):
            head = (f"To: user{k % RECIPIENTS}@b.example\r\nSubject: synthetic message {k}"
                    "\r\n").encode()
            msg = _prepare(head + b"\r\n" + _synthetic_text(k, 3700))
            if msg is not None:
                small.append(msg)
        for k in range(want_big):
            head = f"To: user{k % RECIPIENTS}@b.example\r\nSubject: synthetic {k}\r\n".encode()
            msg = _big(head, _synthetic_text(k, 3000), b"text/plain; charset=us-ascii",
                       b"7bit", SIZES["700k"], k)
            if msg is not None:
                big.append(msg)
    return {"4k": Workload("4k", SIZES["4k"], small, source),
            "700k": Workload("700k", SIZES["700k"], big, source)}


# ---------------------------------------------------------------------------
# /proc


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # [0] is field 3 (state)


def cpu_s(pid: int, *, children: bool = False) -> float:
    """utime+stime of a process (all its threads), plus its reaped children's."""
    f = _stat(pid)
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / CLK_TCK


def tree_pids(root: int) -> list[int]:
    """``root`` and its direct children (Postfix: master and its daemons)."""
    pids = [root]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat(int(entry.name))[1]) == root:
                    pids.append(int(entry.name))
    return pids


def tree_cpu_s(root: int) -> float:
    total = cpu_s(root, children=True)
    for pid in tree_pids(root)[1:]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_s(pid, children=True)
    return total


def _ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"count": len(ms), "p50_ms": round(percentile(ms, 50), 1),
            "p90_ms": round(percentile(ms, 90), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1) if ms else 0.0}


# ---------------------------------------------------------------------------
# Clients: plain asyncio streams, commands pre-encoded, one reply at a time


class LineClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> LineClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def line(self) -> bytes:
        line = await self.reader.readline()
        if not line:
            raise E2EError("connection closed")
        return line

    def close(self) -> None:
        self.writer.close()


class UserSession(LineClient):
    """A user-port session (Table 5)."""

    @classmethod
    async def open(cls, port: int, user: str) -> UserSession:  # type: ignore[override]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        s = cls(reader, writer)
        await s.line()
        await s.cmd(f"USER {user}\r\n".encode())
        await s.cmd(b"PASS secret\r\n")
        return s

    async def cmd(self, data: bytes, *, check: bool = True) -> bytes:
        self.writer.write(data)
        reply = await self.line()
        if check and not reply.startswith(b"+OK"):
            raise E2EError(f"{data[:40]!r}: {reply.decode(errors='replace').strip()}")
        return reply

    async def lines(self, data: bytes) -> list[bytes]:
        await self.cmd(data)
        out = []
        while (line := await self.line()) != b".\r\n":
            out.append(line[:-2])
        return out

    async def submit(self, rcpt: str, stuffed: bytes) -> str:
        await self.cmd(b"MAIL\r\n")
        await self.cmd(f"RCPT TO:<{rcpt}>\r\n".encode())
        await self.cmd(b"DATA\r\n")
        reply = await self.cmd(stuffed)
        return reply.decode().split("queued as ")[1].split()[0]

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            await self.cmd(b"QUIT\r\n", check=False)
        self.close()


class SmtpSession(LineClient):
    @classmethod
    async def open(cls, port: int, login: str | None = None,
                   ) -> SmtpSession:  # type: ignore[override]
        """Greeted and EHLO'd; ``login``: then AUTH PLAIN as that account
        (password "secret"), as a mail client submits (bench/smtp.py)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        s = cls(reader, writer)
        await s.reply(220)
        s.writer.write(b"EHLO mx.a.example\r\n")
        await s.reply(250)
        if login is not None:
            token = base64.b64encode(f"\0{login}\0secret".encode())
            s.writer.write(b"AUTH PLAIN " + token + b"\r\n")
            await s.reply(235)
        return s

    async def reply(self, want: int) -> bytes:
        line = await self.line()
        while line[3:4] == b"-":
            line = await self.line()
        if int(line[:3]) != want:
            raise E2EError(line.decode(errors="replace").strip())
        return line

    async def send(self, sender: str, rcpt: str, stuffed: bytes) -> None:
        self.writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await self.reply(250)
        self.writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
        await self.reply(250)
        self.writer.write(b"DATA\r\n")
        await self.reply(354)
        self.writer.write(stuffed)
        await self.reply(250)

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"QUIT\r\n")
            await self.line()
        self.close()


def stuffed(body: bytes) -> bytes:
    from smdp.protocol.framing import dot_stuff

    return dot_stuff(body)


@dataclass
class Submission:
    k: int
    account: str
    rcpt: str
    wire: bytes
    t_sched: float = 0.0
    t_start: float = 0.0
    t_done: float = 0.0
    msgid: str = ""


async def drive(sessions: list[Any], plan: list[list[Submission]],
                send: Callable[[Any, Submission], Awaitable[None]], t0: float,
                rate: float | None) -> None:
    """Each session sends its share: back to back, or (``rate``) at its
    scheduled times t0 + k / rate (open loop)."""

    async def one(session: Any, subs: list[Submission]) -> None:
        for sub in subs:
            if rate:
                sub.t_sched = t0 + sub.k / rate
                delay = sub.t_sched - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            sub.t_start = time.monotonic()
            if not rate:
                sub.t_sched = sub.t_start
            await send(session, sub)
            sub.t_done = time.monotonic()

    await asyncio.gather(*(one(s, p) for s, p in zip(sessions, plan, strict=True)))


# ---------------------------------------------------------------------------
# SMDP


class StoreWatcher:
    """Reads both stores (read-only) every POLL_S: when each mailbox entry of the
    run becomes readable (state accepted), when each origin recipient reaches a
    final state, and which recipients have a new pending envelope (woken)."""

    B_FINAL = frozenset({"accepted", "rejected", "spam", "spammer", "failed", "expired"})
    A_FINAL = frozenset({"delivered", "rejected", "spam", "spammer", "refused", "failed"})

    def __init__(self, a_db: Path, b_db: Path, wake: dict[int, asyncio.Event]) -> None:
        self.a = sqlite3.connect(f"file:{a_db}?mode=ro", uri=True, timeout=10,
                                 isolation_level=None)
        self.b = sqlite3.connect(f"file:{b_db}?mode=ro", uri=True, timeout=10,
                                 isolation_level=None)
        self.wake = wake
        self.readable: dict[str, float] = {}  # envid -> first seen accepted
        self.a_final: dict[int, tuple[float, str]] = {}  # out_recipients.id -> (t, state)
        self.handed: set[int] = set()
        self.b_low = self.a_low = 0
        self.watch_a = False
        self.polls = 0

    def start_run(self, watch_a: bool) -> None:
        self.b_low = self.b.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM mailbox").fetchone()[0]
        self.a_low = self.a.execute(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM out_recipients").fetchone()[0]
        self.a_low0 = self.a_low
        self.readable = {}
        self.a_final = {}
        self.watch_a = watch_a

    def poll(self) -> None:
        self.polls += 1
        now = time.monotonic()
        rows = self.b.execute(
            "SELECT m.id, m.user_id, m.state, e.envid FROM mailbox m JOIN in_envelopes e "
            "ON e.id = m.envelope_id WHERE m.id >= ? ORDER BY m.id", (self.b_low,)).fetchall()
        low = None
        for mid, uid, state, envid in rows:
            if state == "accepted" and envid not in self.readable:
                self.readable[envid] = now
            elif state == "pending" and mid not in self.handed:
                self.handed.add(mid)
                event = self.wake.get(uid)
                if event is not None:
                    event.set()
            if low is None and state not in self.B_FINAL:
                low = mid
        if rows:
            self.b_low = low if low is not None else rows[-1][0] + 1
        if not self.watch_a:
            return
        rows = self.a.execute("SELECT id, state FROM out_recipients WHERE id >= ? ORDER BY id",
                              (self.a_low,)).fetchall()
        low = None
        for rid, state in rows:
            if state in self.A_FINAL:
                self.a_final.setdefault(rid, (now, state))
            elif low is None:
                low = rid
        if rows:
            self.a_low = low if low is not None else rows[-1][0] + 1

    def queues_empty(self) -> bool:
        return all(db.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
                   for db in (self.a, self.b))

    def close(self) -> None:
        self.a.close()
        self.b.close()


@dataclass
class SmdpPair:
    a: Any
    b: Any
    watcher: StoreWatcher
    recipients: list[str]
    decisions: dict[str, int] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def _recipient(pair: SmdpPair, user: str, event: asyncio.Event) -> None:
    """Wait for news, then ENVS and decide each pending envelope by its sender:
    ACCEPT for the full-flow accounts (f*), REJECT for the others (r*)."""
    s = await UserSession.open(pair.b.user_port, user)
    try:
        while True:
            await event.wait()
            event.clear()
            for line in await s.lines(b"ENVS\r\n"):
                entry, _state, sender = line.split(b" ", 3)[:3]
                verb = b"ACCEPT" if sender.startswith(b"f") else b"REJECT"
                reply = await s.cmd(verb + b" " + entry + b"\r\n", check=False)
                if reply.startswith(b"+OK"):
                    key = verb.decode()
                    pair.decisions[key] = pair.decisions.get(key, 0) + 1
                elif b"already" not in reply:
                    raise E2EError(reply.decode(errors="replace"))
    finally:
        await s.quit()


def _plan(path: str, wl: Workload, n: int, concurrency: int, recipients: list[str],
          accounts: list[str]) -> list[list[Submission]]:
    plan: list[list[Submission]] = [[] for _ in range(concurrency)]
    for k in range(n):
        s = k % concurrency
        rcpt = recipients[(k + k // concurrency) % len(recipients)]
        plan[s].append(Submission(k, accounts[s], rcpt, stuffed(wl.message(k, accounts[s]))))
    return plan


async def smdp_run(pair: SmdpPair, path: str, wl: Workload, n: int, concurrency: int,
                   rate: float | None = None) -> dict[str, Any]:
    prefix = {"full": "f", "direct": "d", "reject": "r"}[path]
    accounts = [f"{prefix}{i}@a.example" for i in range(concurrency)]
    plan = _plan(path, wl, n, concurrency, pair.recipients, accounts)
    octets = sum(len(wl.message(k, accounts[k % concurrency])) for k in range(n))
    sessions = [await UserSession.open(pair.a.user_port, acct) for acct in accounts]
    a_pid, b_pid = pair.a.proc.pid, pair.b.proc.pid
    w = pair.watcher
    w.start_run(watch_a=True)
    done_target = (lambda: len(w.a_final)) if path == "reject" else (lambda: len(w.readable))

    async def watch() -> None:
        while done_target() < n:
            w.poll()
            await asyncio.sleep(POLL_S)

    async def send(session: UserSession, sub: Submission) -> None:
        sub.msgid = await session.submit(sub.rcpt, sub.wire)

    for pid in (a_pid, b_pid):
        reset_hwm(pid)
    store0 = await _store_counters(pair)
    cpu0 = {"origin": cpu_s(a_pid), "destination": cpu_s(b_pid)}
    client0 = time.process_time()
    t0 = time.monotonic()
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(
            asyncio.gather(drive(sessions, plan, send, t0, rate), asyncio.shield(watcher)),
            PHASE_TIMEOUT_S)
    finally:
        watcher.cancel()
    t_end = max(t for t, _ in w.a_final.values()) if path == "reject" else max(
        w.readable.values())
    client_cpu = time.process_time() - client0
    # The trailing work (RECEIVED, the origin's bookkeeping) is part of the cost.
    deadline = time.monotonic() + 60
    while not w.queues_empty() and time.monotonic() < deadline:
        w.poll()
        await asyncio.sleep(0.02)
    w.poll()
    cpu1 = {"origin": cpu_s(a_pid), "destination": cpu_s(b_pid)}
    # Counted up to the empty queues too: a run's store work ends with them.
    store1 = await _store_counters(pair)
    hwm = {"origin": vm_kib(a_pid) / KIB, "destination": vm_kib(b_pid) / KIB}
    for s in sessions:
        await s.quit()
    subs = {sub.msgid: sub for p in plan for sub in p}
    marks = ",".join("?" * len(subs))
    ends: dict[str, float] = {}
    modes: dict[str, int] = {}
    states: dict[str, int] = {}
    if path == "reject":
        for rid, msgid in w.a.execute(
                "SELECT r.id, m.msgid FROM out_recipients r JOIN out_messages m ON "
                f"m.id = r.message_id WHERE m.msgid IN ({marks})", tuple(subs)).fetchall():
            if rid in w.a_final:
                ends[msgid] = w.a_final[rid][0]
    else:
        for envid, msgid, mode in w.a.execute(
                "SELECT e.envid, m.msgid, e.mode FROM out_envelopes e JOIN out_messages m ON "
                f"m.id = e.message_id WHERE m.msgid IN ({marks})", tuple(subs)).fetchall():
            modes[mode] = modes.get(mode, 0) + 1
            if envid in w.readable:
                ends[msgid] = w.readable[envid]
    for (state,) in w.a.execute(
            "SELECT r.state FROM out_recipients r JOIN out_messages m ON m.id = r.message_id "
            f"WHERE m.msgid IN ({marks})", tuple(subs)).fetchall():
        states[state] = states.get(state, 0) + 1
    latencies = [ends[m] - sub.t_sched for m, sub in subs.items() if m in ends]
    elapsed = t_end - t0
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    return {
        "path": path, "messages": n, "octets": octets,
        "mode": "paced" if rate else "saturated",
        "offered_msgs_per_s": round(rate, 1) if rate else None,
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed, 1), "mb_per_s": round(octets / elapsed / 1e6, 2),
        "latency": _ms(latencies), "missing": n - len(latencies),
        "submit": _ms([sub.t_done - sub.t_start for p in plan for sub in p]),
        "cpu_ms_per_msg": {k: round(v / n * 1000, 2) for k, v in cpu.items()}
        | {"total": round(sum(cpu.values()) / n * 1000, 2)},
        "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        # Per message at each server (the metrics scrape's own three reads
        # included: under 0.01 per message).
        "store_per_msg": {side: {k: round((store1[side][k] - store0[side][k]) / n, 2)
                                 for k in STORE_COUNTERS} for side in store0},
        "peak_mib": {k: round(v, 1) for k, v in hwm.items()},
        "client_cpu_share": round(client_cpu / elapsed, 2),
        "origin_states": states, "send_modes": modes,
    }


STORE_COUNTERS = ("statements", "transactions", "commits", "fsyncs")


def store_counters(port: int) -> dict[str, float]:
    """A server's store counters from its metrics endpoint (issue 15 item 1:
    ``smdp_store_statements_total`` and the others; docs/operations.md)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = {}
    for line in text.splitlines():
        for name in STORE_COUNTERS:
            if line.startswith(f"smdp_store_{name}_total "):
                found[name] = float(line.split()[1])
    return found


async def _store_counters(pair: SmdpPair) -> dict[str, dict[str, float]]:
    return {side: await asyncio.to_thread(store_counters, server.metrics_port)
            for side, server in (("origin", pair.a), ("destination", pair.b))}


def _allow_plaintext_login(config: Path) -> None:
    """Passwords over plain TCP on loopback, where the server has that switch
    ([security] allow_plaintext_login) and the harness has not set it already."""
    from smdp.config import Config

    if "allow_plaintext_login" not in getattr(Config, "__dataclass_fields__", {}):
        return
    text = config.read_text()
    if "allow_plaintext_login" not in text:
        config.write_text(text.replace("[security]\n",
                                       "[security]\nallow_plaintext_login = true\n", 1))


async def _smdp_all(root: Path, loads: dict[str, Workload], counts: dict[str, int],
                    paced: dict[str, int] | None, concurrency: int, *,
                    paths: tuple[str, ...] = PATHS, event_loop: str = "",
                    group_commit: bool | None = None) -> dict[str, Any]:
    """Every path of every size, saturated then paced (``paced`` None: saturated
    only); ``event_loop``: the servers' [server] event_loop (default: theirs);
    ``group_commit``: their [store] group_commit (None: theirs)."""
    from tests.integration.harness import free_ports, make_pair, running

    a, b = make_pair(root, extra_a=SERVER_EXTRA, extra_b=SERVER_EXTRA, backend="sqlite",
                     server_extra=f'event_loop = "{event_loop}"' if event_loop else "")
    for server, port in zip((a, b), free_ports(2), strict=True):
        if group_commit is not None:
            server.store_extra = f"group_commit = {'true' if group_commit else 'false'}"
        server.metrics_port = port  # the store's counters (issue 15 item 1)
        server.write_config()
        _allow_plaintext_login(server.config_path)
    recipients = [f"user{i}@b.example" for i in range(RECIPIENTS)]
    for prefix in "fdr":
        for i in range(concurrency):
            a.add_user(f"{prefix}{i}@a.example")
    for user in recipients:
        b.add_user(user)
    mode = ("one fsync per commit" if group_commit is False
            else "group commit")
    out: dict[str, Any] = {"servers": f"2 smdp serve processes, SQLite (WAL, {mode})"}
    with running(a, b):
        # The direct path: both lists pre-set through the user port.
        direct = [f"d{i}@a.example" for i in range(concurrency)]
        for acct in direct:
            s = await UserSession.open(a.user_port, acct)
            for user in recipients:
                await s.cmd(f"LISTADD out-white {user}\r\n".encode())
            await s.quit()
        for user in recipients:
            s = await UserSession.open(b.user_port, user)
            for acct in direct:
                await s.cmd(f"LISTADD in-white {acct} {A_HOST}\r\n".encode())
            await s.quit()
        ids = dict(sqlite3.connect(f"file:{b.db_path}?mode=ro", uri=True).execute(
            "SELECT main_address, id FROM users").fetchall())
        wake = {ids[u]: asyncio.Event() for u in recipients}
        watcher = StoreWatcher(a.db_path, b.db_path, {i: e for i, e in wake.items()})
        pair = SmdpPair(a, b, watcher, recipients)
        pair.tasks = [asyncio.create_task(_recipient(pair, u, wake[ids[u]])) for u in recipients]
        try:
            for size, wl in loads.items():
                # A short warm-up of each path (first connections, caches).
                for path in paths:
                    await smdp_run(pair, path, wl, min(concurrency, counts[size]), concurrency)
                runs: dict[str, Any] = {}
                for path in paths:
                    sat = await smdp_run(pair, path, wl, counts[size], concurrency)
                    runs[path] = {"saturated": sat}
                    note = ""
                    if paced is not None:
                        rate = sat["msgs_per_s"] / 2
                        pace = await smdp_run(pair, path, wl, paced[size], concurrency, rate)
                        runs[path]["paced"] = pace
                        note = f", paced p50 {pace['latency']['p50_ms']} ms"
                    per = sat["store_per_msg"]
                    print(f"    smdp {size} {path}{' ' + event_loop if event_loop else ''}: "
                          f"{sat['msgs_per_s']} msgs/s, "
                          f"{sat['cpu_ms_per_msg']['total']} ms CPU/msg{note}; per message "
                          f"statements / commits / fsyncs: origin "
                          f"{per['origin']['statements']} / {per['origin']['commits']} / "
                          f"{per['origin'].get('fsyncs')}, destination "
                          f"{per['destination']['statements']} / "
                          f"{per['destination']['commits']} / "
                          f"{per['destination'].get('fsyncs')}", flush=True)
                out[size] = runs
        finally:
            for t in pair.tasks:
                t.cancel()
            await asyncio.gather(*pair.tasks, return_exceptions=True)
            watcher.close()
        out["decisions"] = pair.decisions
        out["watcher_polls"] = watcher.polls
    return out


# ---------------------------------------------------------------------------
# aiosmtpd with fsync (a separate process: python -m bench.e2e --smtpd ...)


def _smtpd_main(port: int, folder: Path, ready: Path) -> None:
    from aiosmtpd.smtp import SMTP

    def store(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    class FsyncHandler:
        def __init__(self) -> None:
            self.count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.count += 1
            data = envelope.original_content or envelope.content
            path = folder / f"{self.count:08d}.eml"
            await asyncio.get_running_loop().run_in_executor(None, store, path, data)
            return "250 2.0.0 OK stored"

    handler = FsyncHandler()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname="mx.b.example", data_size_limit=64 * 1024 * 1024),
        "127.0.0.1", port))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    ready.write_text(str(port))
    try:
        loop.run_forever()
    finally:
        server.close()


class SmtpdProcess:
    def __init__(self, root: Path) -> None:
        from tests.integration.harness import free_ports

        self.port = free_ports(1)[0]
        self.folder = root / "aiosmtpd-spool"
        self.folder.mkdir()
        ready = root / "aiosmtpd.ready"
        self.log = open(root / "aiosmtpd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.e2e", "--smtpd", str(self.port), str(self.folder),
             str(ready)], stdout=self.log, stderr=self.log, cwd=REPO)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise E2EError("aiosmtpd did not start: "
                               + (root / "aiosmtpd.log").read_text()[-2000:])
            time.sleep(0.02)

    def stop(self) -> None:
        from tests.integration.harness import terminate

        terminate(self.proc, timeout=10)
        self.log.close()


async def smtp_run(server: SmtpdProcess | int, wl: Workload, n: int, concurrency: int,
                   recipients: list[str], rate: float | None = None, *,
                   pid: int = 0, cpu: Callable[[], float] | None = None,
                   login: bool = False) -> dict[str, Any]:
    """``n`` messages over ``concurrency`` SMTP sessions to aiosmtpd, or to
    any SMTP server's port (``server`` a port number: ``pid`` the process
    whose peak memory is read, ``cpu`` its CPU seconds so far, ``login``:
    each session authenticates as its account first, as for submission)."""
    accounts = [f"f{i}@a.example" for i in range(concurrency)]
    plan = _plan("full", wl, n, concurrency, recipients, accounts)
    octets = sum(len(wl.message(k, accounts[k % concurrency])) for k in range(n))
    port = server if isinstance(server, int) else server.port
    sessions = [await SmtpSession.open(port, accounts[i] if login else None)
                for i in range(concurrency)]

    async def send(session: SmtpSession, sub: Submission) -> None:
        await session.send(sub.account, sub.rcpt, sub.wire)

    if not isinstance(server, int):
        pid = server.proc.pid
    read_cpu = cpu or (lambda: cpu_s(pid))
    reset_hwm(pid)
    cpu0 = read_cpu()
    client0 = time.process_time()
    t0 = time.monotonic()
    await asyncio.wait_for(drive(sessions, plan, send, t0, rate), PHASE_TIMEOUT_S)
    subs = [sub for p in plan for sub in p]
    t_end = max(sub.t_done for sub in subs)
    client_cpu = time.process_time() - client0
    cpu_used = read_cpu() - cpu0
    hwm = vm_kib(pid) / KIB
    for s in sessions:
        await s.quit()
    elapsed = t_end - t0
    return {
        "t0": t0,
        "messages": n, "octets": octets, "mode": "paced" if rate else "saturated",
        "offered_msgs_per_s": round(rate, 1) if rate else None,
        "elapsed_s": round(elapsed, 3), "msgs_per_s": round(n / elapsed, 1),
        "mb_per_s": round(octets / elapsed / 1e6, 2),
        "latency": _ms([sub.t_done - sub.t_sched for sub in subs]),
        "cpu_ms_per_msg": round(cpu_used / n * 1000, 2), "cpu_s": round(cpu_used, 2),
        "peak_mib": round(hwm, 1), "client_cpu_share": round(client_cpu / elapsed, 2),
    }


# ---------------------------------------------------------------------------
# Postfix: a throwaway instance relaying to smtp-sink, driven by smtp-source


MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
command_directory = {command_dir}
daemon_directory = {daemon_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.a.example
mydomain = a.example
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{sink_port}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
message_size_limit = 52428800
"""


def postfix_unavailable() -> str | None:
    missing = [t for t in ("postfix", "smtp-source", "smtp-sink") if not _tool(t)]
    if missing:
        return (f"Postfix not installed ({', '.join(missing)} not found; Debian: "
                "apt-get install postfix): the Postfix baseline was not run")
    if os.geteuid() != 0:
        return "Postfix needs root to start its master process: the Postfix baseline was not run"
    try:
        import pwd

        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user: the Postfix baseline was not run"
    return None


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()),
        None)


class Sink:
    """smtp-sink with its running counters (-c) in a file."""

    def __init__(self, root: Path, port: int, name: str) -> None:
        self.out = root / f"{name}.out"
        self.handle = open(self.out, "wb")  # noqa: SIM115
        argv = [_tool("smtp-sink") or "smtp-sink", "-c"]
        if os.geteuid() == 0:
            argv += ["-u", "postfix"]
        self.proc = subprocess.Popen([*argv, f"127.0.0.1:{port}", "256"], stdout=self.handle,
                                     stderr=subprocess.STDOUT)
        self.port = port
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise E2EError(f"smtp-sink exited: {self.out.read_text(errors='replace')[-500:]}")

    def count(self) -> int:
        with open(self.out, "rb") as f:
            f.seek(max(0, self.out.stat().st_size - 200))
            found = re.findall(rb"mesg=(\d+)", f.read())
        return int(found[-1]) if found else 0

    def stop(self) -> None:
        from tests.integration.harness import terminate

        terminate(self.proc, timeout=5)
        self.handle.close()


def smtp_source(port: int, n: int, length: int, sessions: int, sink: Sink | None,
                tag: str) -> dict[str, Any]:
    """Run smtp-source; the time until it is done and (``sink``) until the sink has
    counted all ``n`` messages. Its CPU from the children's rusage."""
    before = sink.count() if sink else 0
    argv = [_tool("smtp-source") or "smtp-source", "-d", "-s", str(sessions), "-m", str(n),
            "-l", str(length), "-f", "f0@a.example", "-t", "user0@b.example",
            "-M", "client.a.example", "-S", f"e2e {tag}", f"127.0.0.1:{port}"]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, timeout=PHASE_TIMEOUT_S)
    t_sent = time.monotonic()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise E2EError(f"smtp-source: {proc.stderr.decode(errors='replace')[-500:]}")
    t_end = t_sent
    if sink is not None:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while sink.count() < before + n:
            if time.monotonic() > deadline:
                raise E2EError(f"smtp-sink counted {sink.count() - before} of {n}")
            time.sleep(0.002)
        t_end = time.monotonic()
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"t0": t0, "sent_s": t_sent - t0, "elapsed_s": t_end - t0,
            "client_cpu_s": round(client, 3)}


class PostfixRelay:
    def __init__(self, root: Path) -> None:
        from tests.integration.harness import free_ports

        self.root = root
        root.mkdir()
        root.chmod(0o755)
        for parent in root.parents:  # the postfix user must reach its queue
            if parent == Path("/"):
                break
            with contextlib.suppress(OSError):
                parent.chmod(parent.stat().st_mode | 0o005)
        self.port, sink_port = free_ports(2)
        self.etc = root / "etc"
        self.etc.mkdir()
        (root / "queue").mkdir()
        data = root / "data"
        data.mkdir()
        shutil.chown(data, "postfix")
        postfix = _tool("postfix") or "postfix"
        daemon_dir = subprocess.run(["postconf", "-dh", "daemon_directory"],
                                    capture_output=True, text=True).stdout.strip()
        (self.etc / "main.cf").write_text(MAIN_CF.format(
            root=root, command_dir=str(Path(postfix).parent),
            daemon_dir=daemon_dir or "/usr/lib/postfix/sbin", sink_port=sink_port))
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        self.sink = Sink(root, sink_port, "sink")
        self.postfix = postfix
        self.master = 0
        try:
            self._cmd("check")
            self._cmd("start")
            pidfile = root / "queue" / "pid" / "master.pid"
            deadline = time.monotonic() + 15
            while not (pidfile.exists() and pidfile.read_text().strip()):
                if time.monotonic() > deadline:
                    raise E2EError("Postfix did not start: " + self.log_tail())
                time.sleep(0.05)
            self.master = int(pidfile.read_text().strip())
            deadline = time.monotonic() + 15
            while not self._listening():
                if time.monotonic() > deadline:
                    raise E2EError("Postfix does not listen: " + self.log_tail())
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _listening(self) -> bool:
        import socket

        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port),
                                                                     timeout=1):
            return True
        return False

    def _cmd(self, verb: str) -> None:
        proc = subprocess.run([self.postfix, "-c", str(self.etc), verb], capture_output=True,
                              text=True, timeout=60)
        if proc.returncode != 0:
            raise E2EError(f"postfix {verb} failed ({proc.returncode}): "
                           f"{proc.stderr[-500:]} {self.log_tail()}")

    def log_tail(self) -> str:
        log = self.root / "maillog"
        return log.read_text(errors="replace")[-1500:] if log.exists() else "(no maillog)"

    def delays(self, since: int) -> list[float]:
        log = self.root / "maillog"
        with open(log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [float(x) for x in re.findall(r"delay=([\d.]+), delays=[^ ]+ .*status=sent", text)]

    def log_size(self) -> int:
        log = self.root / "maillog"
        return log.stat().st_size if log.exists() else 0

    def run(self, n: int, length: int, sessions: int, tag: str) -> dict[str, Any]:
        pids = tree_pids(self.master)
        for pid in pids:
            reset_hwm(pid)
        since = self.log_size()
        cpu0 = tree_cpu_s(self.master)
        sink0 = cpu_s(self.sink.proc.pid)
        r = smtp_source(self.port, n, length, sessions, self.sink, tag)
        cpu = tree_cpu_s(self.master) - cpu0
        sink_cpu = cpu_s(self.sink.proc.pid) - sink0
        hwm = [vm_kib(p) for p in tree_pids(self.master)]
        delays: list[float] = []
        deadline = time.monotonic() + 10
        while len(delays) < n and time.monotonic() < deadline:
            delays = self.delays(since)
            time.sleep(0.1)
        octets = n * (length + 150)
        return {
            "messages": n, "payload_octets": length, "octets_approx": octets,
            "sessions": sessions, "elapsed_s": round(r["elapsed_s"], 3),
            "msgs_per_s": round(n / r["elapsed_s"], 1),
            "mb_per_s": round(octets / r["elapsed_s"] / 1e6, 2),
            "receive_msgs_per_s": round(n / r["sent_s"], 1),
            "latency_from_log": _ms(delays),
            "cpu_ms_per_msg": round(cpu / n * 1000, 2), "cpu_s": round(cpu, 2),
            "sink_cpu_ms_per_msg": round(sink_cpu / n * 1000, 2),
            "peak_mib": {"largest_process": round(max(hwm) / KIB, 1),
                         "sum_of_processes": round(sum(hwm) / KIB, 1),
                         "processes": len(hwm)},
            "client_cpu_share": round(r["client_cpu_s"] / r["elapsed_s"], 3),
        }

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._cmd("stop")
        if self.master:
            deadline = time.monotonic() + 10
            while Path(f"/proc/{self.master}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if Path(f"/proc/{self.master}").exists():
                with contextlib.suppress(OSError):
                    os.kill(self.master, signal.SIGKILL)
        self.sink.stop()


def _postfix_all(root: Path, loads: dict[str, Workload], counts: dict[str, int],
                 concurrency: int) -> dict[str, Any]:
    why = postfix_unavailable()
    if why:
        return {"skipped": why}
    version = subprocess.run(["postconf", "-dh", "mail_version"], capture_output=True,
                             text=True).stdout.strip()
    out: dict[str, Any] = {"version": version,
                           "setup": "throwaway instance in a temp dir (private main.cf, "
                                    "master.cf, queue and data directories), 127.0.0.1 only, "
                                    "relayhost = smtp-sink, no local delivery; "
                                    "smtp-source -d (one connection per session)"}
    relay = PostfixRelay(root / "postfix")
    try:
        for size, wl in loads.items():
            length = max(1, round(wl.mean_octets) - 150)
            relay.run(min(concurrency, counts[size]), length, concurrency, f"warm {size}")
            out[size] = relay.run(counts[size], length, concurrency, size)
            print(f"    postfix {size}: {out[size]['msgs_per_s']} msgs/s", flush=True)
    finally:
        relay.stop()
    # The wire's ceiling: smtp-source straight into a fresh smtp-sink.
    from tests.integration.harness import free_ports

    sink = Sink(root, free_ports(1)[0], "ceiling-sink")
    try:
        for size, wl in loads.items():
            length = max(1, round(wl.mean_octets) - 150)
            r = smtp_source(sink.port, counts[size], length, concurrency, sink, "ceiling")
            octets = counts[size] * (length + 150)
            out[f"wire_ceiling_{size}"] = {
                "messages": counts[size], "msgs_per_s": round(counts[size] / r["elapsed_s"], 1),
                "mb_per_s": round(octets / r["elapsed_s"] / 1e6, 1)}
    finally:
        sink.stop()
    return out


# ---------------------------------------------------------------------------


def _counts(settings: Settings) -> tuple[dict[str, int], dict[str, int], int]:
    counts = {"4k": settings.pick(600, 4000), "700k": settings.pick(40, 200)}
    paced = {"4k": settings.pick(150, 800), "700k": settings.pick(15, 60)}
    concurrency = settings.pick(20, 50)
    return counts, paced, concurrency


def _ratios(result: dict[str, Any]) -> dict[str, Any]:
    smdp = result.get("smdp") or {}
    smtp = result.get("aiosmtpd") or {}
    pf = result.get("postfix") or {}
    out: dict[str, Any] = {}
    if "4k" in smdp and "4k" in pf:
        out["full_4k_over_postfix_relay_msgs"] = ratio(
            smdp["4k"]["full"]["saturated"]["msgs_per_s"], pf["4k"]["msgs_per_s"])
    for size in SIZES:
        if size not in smdp or size not in smtp:
            continue
        sd = smtp[size]["saturated"]
        for path in ("full", "direct", "reject"):
            s = smdp[size][path]["saturated"]
            out[f"{path}_{size}_over_aiosmtpd_msgs"] = ratio(s["msgs_per_s"], sd["msgs_per_s"])
            out[f"{path}_{size}_over_aiosmtpd_mb"] = ratio(s["mb_per_s"], sd["mb_per_s"])
            out[f"{path}_{size}_cpu_over_aiosmtpd"] = ratio(s["cpu_ms_per_msg"]["total"],
                                                            sd["cpu_ms_per_msg"])
        check = smtp.get(f"smtp_source_{size}")
        if check:  # against aiosmtpd as fast as the C client drives it
            out[f"direct_{size}_over_aiosmtpd_by_smtp_source_msgs"] = ratio(
                smdp[size]["direct"]["saturated"]["msgs_per_s"], check["msgs_per_s"])
        if size in pf:
            out[f"aiosmtpd_{size}_over_postfix_relay_msgs"] = ratio(sd["msgs_per_s"],
                                                                    pf[size]["msgs_per_s"])
    return out


async def _smtp_all(root: Path, loads: dict[str, Workload], counts: dict[str, int],
                    paced: dict[str, int], concurrency: int) -> dict[str, Any]:
    server = SmtpdProcess(root)
    recipients = [f"user{i}@b.example" for i in range(RECIPIENTS)]
    out: dict[str, Any] = {"server": "aiosmtpd, DATA handler: write + fsync one file per "
                                     "message (default thread pool), then 250"}
    try:
        for size, wl in loads.items():
            await smtp_run(server, wl, min(concurrency, counts[size]), concurrency, recipients)
            sat = await smtp_run(server, wl, counts[size], concurrency, recipients)
            pace = await smtp_run(server, wl, paced[size], concurrency, recipients,
                                  sat["msgs_per_s"] / 2)
            for r in (sat, pace):
                r.pop("t0")  # a monotonic clock reading: of use to bench/smtp.py only
            out[size] = {"saturated": sat, "paced": pace}
            print(f"    aiosmtpd {size}: {sat['msgs_per_s']} msgs/s, "
                  f"{sat['cpu_ms_per_msg']} ms CPU/msg", flush=True)
        if postfix_unavailable() is None:
            # Is our Python client what limits aiosmtpd? The C client on the same server.
            wl = loads["4k"]
            r = smtp_source(server.port, counts["4k"], max(1, round(wl.mean_octets) - 150),
                            concurrency, None, "client check")
            out["smtp_source_4k"] = {"messages": counts["4k"],
                                     "msgs_per_s": round(counts["4k"] / r["elapsed_s"], 1),
                                     "client_cpu_share": round(r["client_cpu_s"]
                                                               / r["elapsed_s"], 3)}
    finally:
        server.stop()
    return out


def run(settings: Settings) -> dict[str, Any]:
    counts, paced, concurrency = _counts(settings)
    loads = build_workloads(settings, counts)
    result: dict[str, Any] = {
        "aims": {"full_4k_over_postfix_relay_at_least": 1.0,
                 "direct_over_aiosmtpd_fsync_at_least": 1.0,
                 "smdp_700k_over_aiosmtpd_mb_at_least": 5.0},
        "setup": {
            "concurrency": concurrency, "recipients": RECIPIENTS,
            "store_poll_ms": POLL_S * 1000,
            "messages": {size: {"count": counts[size], "paced": paced[size],
                                "distinct": len(wl.bodies),
                                "mean_octets": round(wl.mean_octets),
                                "source": wl.source} for size, wl in loads.items()},
        },
    }
    skipped: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="smdp-bench-e2e-") as tmp:
        top = Path(tmp)

        def folder(name: str, k: int) -> Path:
            path = top / f"{name}-{k}"
            path.mkdir()
            return path

        def smdp(k: int) -> dict[str, Any]:
            return asyncio.run(_smdp_all(folder("smdp", k), loads, counts, paced, concurrency))

        def aiosmtpd(k: int) -> dict[str, Any]:
            return asyncio.run(_smtp_all(folder("smtp", k), loads, counts, paced, concurrency))

        def postfix(k: int) -> dict[str, Any] | None:
            try:
                out = _postfix_all(folder("postfix", k), loads, counts, concurrency)
            except Exception as exc:  # the environment's, not smdp's: say so, keep the rest
                out = {"skipped": f"Postfix could not be run here: {exc!r}"}
            if out.get("skipped"):
                skipped["postfix"] = out
                return None
            return out

        # SMDP and its baselines in turn, ROUNDS times (bench/common.py).
        rounds = alternate(ROUNDS, [("smdp", smdp), ("aiosmtpd", aiosmtpd),
                                    ("postfix", postfix)])
    per_round = []
    for k in range(ROUNDS):
        one = {name: runs[k] for name, runs in rounds.items() if k < len(runs)}
        per_round.append(_ratios(one))
    # The tables show the last round; the ratios are the rounds' medians.
    for name, runs in rounds.items():
        result[name] = runs[-1] if runs else skipped.get(name, {"skipped": "not run"})
    result["rounds"] = ROUNDS
    result["ratio_spread"] = spread(per_round)
    result["ratios"] = {key: s["median"] for key, s in result["ratio_spread"].items()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="end to end on loopback (issue 5 item 3)")
    parser.add_argument("--smtpd", nargs=3, metavar=("PORT", "DIR", "READY"),
                        help="internal: run the aiosmtpd+fsync baseline server")
    parser.add_argument("--smdp-only", action="store_true",
                        help="SMDP's 4 KB runs alone, once, no baselines (to compare two "
                             "versions: statements, commits, CPU); writes e2e-smdp.json")
    args = parser.parse_args(argv)
    if args.smtpd:
        _smtpd_main(int(args.smtpd[0]), Path(args.smtpd[1]), Path(args.smtpd[2]))
        return 0
    from bench.common import settings_from_env, write_json

    settings = settings_from_env()
    if args.smdp_only:
        counts, paced, concurrency = _counts(settings)
        loads = {"4k": build_workloads(settings, counts)["4k"]}
        with tempfile.TemporaryDirectory(prefix="smdp-bench-e2e-") as tmp:
            only = asyncio.run(_smdp_all(Path(tmp), loads, counts, paced, concurrency))
        write_json(settings.results / "e2e-smdp.json", only)
        return 0
    data = run(settings)
    write_json(settings.results / "e2e.json", data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
