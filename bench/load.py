"""Bounded load test (``make load``; issue 3, item 7).

One server under test (b.example) and its peer (a.example), both real
``smdp serve`` processes on loopback with SQLite stores. For DURATION seconds:

- CLIENTS concurrent user-port sessions: half on a.example submit messages to
  b.example users and read their SENT status; half on b.example list envelopes
  (ENVS), decide them (every option of Table 1), and read mail (STAT, LIST, RETR);
- PEERS concurrent peer-port sessions to b.example deliver envelopes as
  smdp.a.example would (ENVELOPE, RCPT, SIZE=, DATA) in a loop.

Then the load stops, the queues drain, and every submitted message is checked:
each recipient of each message must be in a final state at the origin
(delivered or rejected family) and delivered ones must be in the mailbox once.
Reported: operations per second, latency percentiles per operation, errors,
and the peak memory (VmHWM) of each server. Bounded in count and time; only
127.0.0.1 is used.

The pieces are reusable: ``bench/sessions.py`` (the 10 to 1,000 sessions
curve of ``make bench``) builds its servers with ``new_pair`` and runs the same
sessions with ``drive(..., login_first=True, probe=...)``, which logs every
session in before the measured window opens and reads the servers at its start
and end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.harness import Server, make_pair, running, wait_until

from smdp.protocol import user as uw
from smdp.protocol.framing import CLOSED, NEED_DATA
from smdp.terms import Decision

# The harness already lowers the Argon2 cost (8 KiB): 500 logins at the
# production 64 MiB each would measure the KDF, not the server.
# The abuse quotas would (rightly) stop 50 peer sessions from one host sending
# thousands of envelopes a minute; this test measures capacity, so they are
# raised out of reach (test_abuse.py proves them). So is the spam-report
# suspension: the simulated recipients report spam, and a REJECT&SPAMMER also
# settles the sender's other pending envelopes, so sender accounts would
# (rightly) be suspended within seconds.
SETTINGS = """[limits]
max_sessions = 2000
max_sessions_per_client = 2000
[abuse]
envelopes_per_peer_per_hour = 100000000
envelopes_per_new_peer_per_hour = 100000000
envelopes_per_recipient_per_hour = 100000000
envelopes_per_session = 100000000
spam_reports_per_day = 100000000
"""
USERS = 50  # accounts per domain: user0..user49@a.example and @b.example


def new_pair(root: Path, users: int = USERS, settings: str = SETTINGS,
             server_extra: str = "") -> tuple[Server, Server]:
    """a.example and b.example (SQLite stores in ``root``) with ``settings`` (and
    ``server_extra``, [server] settings) and the accounts the sessions log in to;
    not started."""
    a, b = make_pair(root, extra_a=settings, extra_b=settings, server_extra=server_extra)
    for i in range(users):
        a.add_user(f"user{i}@a.example")
        b.add_user(f"user{i}@b.example")
    b.add_user("decider@b.example")
    return a, b


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    conflicts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)  # msgids
    logins: list[float] = field(default_factory=list)  # seconds (login_first only)
    window: dict[str, Any] = field(default_factory=dict)  # drive(): start/stop readings

    def record(self, op: str, seconds: float) -> None:
        self.latencies[op].append(seconds)

    def error(self, op: str, text: str) -> None:
        if "already" in text or "can no longer be fetched" in text:
            # Two sessions of one user decided the same envelope at once, or
            # the server settled it first (a listing decision settles the
            # sender's other pending envelopes; a peer session's made-up
            # envelope then fails its pull): the server kept the first
            # decision and said so. Not an error.
            self.conflicts[op] += 1
            return
        self.errors[op] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{op}: {text}")


class UserSession:
    """A user-port session on the sans-IO client codec, over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = uw.UserClientConnection()

    @classmethod
    async def open(cls, port: int, user: str) -> UserSession:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        s = cls(reader, writer)
        await s.read()
        await s.call(uw.User(user))
        await s.call(uw.Pass("secret"))
        return s

    async def read(self) -> uw.UserReply:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                data = await asyncio.wait_for(self.reader.read(65536), 60)
                self.conn.receive_data(data)
                continue
            if event is CLOSED:
                raise ConnectionError("closed")
            assert isinstance(event, uw.UserReply)
            return event

    async def call(self, command: uw.UserCommand | uw.Message) -> uw.UserReply:
        self.writer.write(self.conn.send(command))
        reply = await self.read()
        if not reply.ok:
            raise RuntimeError(reply.text)
        return reply

    async def close(self) -> None:
        try:
            await self.call(uw.Quit())
        finally:
            self.writer.close()


async def timed(stats: Stats, op: str, coro) -> uw.UserReply | None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    try:
        result: uw.UserReply = await coro
    except Exception as exc:
        stats.error(op, repr(exc))
        return None
    stats.record(op, time.perf_counter() - started)
    return result


async def sender(a: Server, user: str, rcpts: list[str], stats: Stats, stop: float,
                 rng: random.Random) -> None:
    await send_loop(await UserSession.open(a.user_port, user), user, rcpts, stats, stop, rng)


async def send_loop(s: UserSession, user: str, rcpts: list[str], stats: Stats, stop: float,
                    rng: random.Random) -> None:
    """Submit messages to ``rcpts`` (SENT every fifth) until ``stop``, then QUIT."""
    n = 0
    while time.monotonic() < stop:
        n += 1
        to = rng.sample(rcpts, rng.choice([1, 1, 2]))
        body = (f"To: {', '.join(to)}\r\nSubject: load {user} {n}\r\n\r\n"
                f"Hello, this is message {n} of {user}.\r\n" + "filler line\r\n" * 50).encode()

        async def submit(to: list[str] = to, body: bytes = body) -> uw.UserReply:
            await s.call(uw.MailCmd(None))
            for r in to:
                await s.call(uw.RcptCmd(r))
            await s.call(uw.DataCmd())
            return await s.call(uw.Message(body))

        reply = await timed(stats, "submit", submit())
        if reply is not None:
            stats.submitted.append(reply.text.split("queued as ")[1].split()[0])
        if n % 5 == 0:
            await timed(stats, "sent", s.call(uw.Sent(None)))
        await asyncio.sleep(rng.uniform(0.05, 0.3))
    await s.close()


OPTIONS = [Decision.ACCEPT, Decision.ACCEPT, Decision.ACCEPT_AUTH,
           Decision.REJECT, Decision.REJECT_SPAM]


async def recipient(b: Server, user: str, stats: Stats, stop: float,
                    rng: random.Random) -> None:
    await decide_loop(await UserSession.open(b.user_port, user), stats, stop, rng)


async def decide_loop(s: UserSession, stats: Stats, stop: float, rng: random.Random) -> None:
    """ENVS, decide up to five, STAT, RETR 1, until ``stop``, then QUIT."""
    while time.monotonic() < stop:
        reply = await timed(stats, "envs", s.call(uw.Envs(False)))
        for line in (reply.lines or [])[:5] if reply else []:
            entry = int(line.split()[0])
            await timed(stats, "decide",
                        s.call(uw.UserDecision(rng.choice(OPTIONS), entry)))
        stat = await timed(stats, "stat", s.call(uw.Stat()))
        if stat is not None and int(stat.text.split()[0]) > 0:
            await timed(stats, "retr", s.call(uw.Retr(1)))
        await asyncio.sleep(rng.uniform(0.1, 0.4))
    await s.close()


async def peer(b: Server, rcpts: list[str], stats: Stats, stop: float,
               rng: random.Random) -> None:
    """A peer session delivering envelopes, as smdp.a.example would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", b.peer_port)

    async def reply() -> str:
        line = await asyncio.wait_for(reader.readline(), 60)
        while line[3:4] == b"-":
            line = await asyncio.wait_for(reader.readline(), 60)
        return line.decode()

    async def cmd(text: str) -> str:
        writer.write(text.encode() + b"\r\n")
        return await reply()

    await reply()
    await cmd("EHLO smdp.a.example")
    while time.monotonic() < stop:
        envid = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26))

        async def envelope(envid: str = envid) -> str:
            for line in (f"ENVELOPE From:<loadpeer@a.example> ID={envid}",
                         f"RCPT To:<{rng.choice(rcpts)}>", "SIZE=2000", "DATA"):
                r = await cmd(line)
                if r[0] not in "23":
                    raise RuntimeError(f"{line}: {r.strip()}")
            writer.write(b"Subject: peer load\r\nHeadline: hello\r\n.\r\n")
            r = await reply()
            if not r.startswith("250"):
                raise RuntimeError(r.strip())
            return r

        await timed(stats, "peer-envelope", envelope())
        await asyncio.sleep(rng.uniform(0.05, 0.3))
    await cmd("QUIT")
    writer.close()


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (/proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(needed: int) -> dict[str, int]:
    """Raise this process's soft open-file limit to ``needed`` (at most the hard
    limit); servers started afterwards inherit it. Returns the limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return {"soft": int(soft), "hard": int(hard), "needed": needed}


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"count": len(values), "p50_ms": qs[49] * 1000, "p90_ms": qs[89] * 1000,
            "p99_ms": qs[98] * 1000, "max_ms": max(values) * 1000}


async def drive(a: Server, b: Server, clients: int, peers: int, duration: float,
                seed: int, *, login_first: bool = False, login_concurrency: int = 50,
                probe: Callable[[], dict[str, Any]] | None = None) -> Stats:
    """CLIENTS user sessions (even: senders at a.example, odd: recipients at
    b.example) and PEERS peer sessions to b.example, for DURATION seconds.

    ``make load``: every session logs in on its own inside the DURATION.
    ``login_first``: all user sessions log in first (``login_concurrency`` at a
    time, each login timed in ``stats.logins``), then the DURATION starts.
    ``stats.window`` gets the window's start and stop (monotonic), the client's
    CPU time, the operation and submission counts at the stop (operations still
    running then finish afterwards and are recorded after those counts), and
    ``probe()`` read at the start and at the stop.
    """
    stats = Stats()
    a_users = [f"user{i}@a.example" for i in range(USERS)]
    b_users = [f"user{i}@b.example" for i in range(USERS)]
    tasks: list[Awaitable[None]] = []
    if login_first:
        gate = asyncio.Semaphore(login_concurrency)

        async def login(server: Server, user: str) -> UserSession:
            async with gate:
                started = time.perf_counter()
                s = await UserSession.open(server.user_port, user)
                stats.logins.append(time.perf_counter() - started)
                return s

        opened = await asyncio.gather(
            *(login(a, a_users[i % USERS]) if i % 2 == 0 else login(b, b_users[i % USERS])
              for i in range(clients)), return_exceptions=True)
        stop = _open_window(stats, duration, probe)
        for i, s in enumerate(opened):
            if isinstance(s, BaseException):
                stats.error("login", repr(s))
            elif i % 2 == 0:
                tasks.append(send_loop(s, a_users[i % USERS], b_users, stats, stop,
                                       random.Random(i)))
            else:
                tasks.append(decide_loop(s, stats, stop, random.Random(i)))
    else:
        stop = _open_window(stats, duration, probe)
        for i in range(clients):
            if i % 2 == 0:
                tasks.append(sender(a, a_users[i % USERS], b_users, stats, stop,
                                    random.Random(i)))
            else:
                tasks.append(recipient(b, b_users[i % USERS], stats, stop, random.Random(i)))
    tasks += [peer(b, b_users, stats, stop, random.Random(10_000 + i)) for i in range(peers)]

    async def close_window() -> None:
        await asyncio.sleep(max(0.0, stop - time.monotonic()))
        stats.window |= {
            "stop": time.monotonic(), "client_cpu_stop": time.process_time(),
            "ops_at_stop": {op: len(v) for op, v in stats.latencies.items()},
            "submitted_at_stop": len(stats.submitted),
            "probe_stop": probe() if probe else None,
        }

    results = await asyncio.gather(close_window(), *tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            stats.error("session", repr(r))
    _ = seed
    return stats


def _open_window(stats: Stats, duration: float, probe: Callable[[], dict[str, Any]] | None,
                 ) -> float:
    stats.window = {"probe_start": probe() if probe else None,
                    "client_cpu_start": time.process_time(), "start": time.monotonic()}
    return float(stats.window["start"] + duration)


def check_no_loss(a: Server, b: Server, stats: Stats) -> dict[str, int]:
    """Every submitted message reached a final state; delivered ones once."""
    finals = {"delivered", "rejected", "spam", "spammer", "refused"}
    states: dict[str, int] = defaultdict(int)
    marks = ",".join("?" * len(stats.submitted))
    rows = a.query(
        "SELECT m.msgid, r.recipient, r.state FROM out_recipients r JOIN out_messages m "
        f"ON m.id = r.message_id WHERE m.msgid IN ({marks})", tuple(stats.submitted))
    assert len({r[0] for r in rows}) == len(stats.submitted), "a submitted message is missing"
    for _msgid, _rcpt, state in rows:
        states[state] += 1
    return dict(states) | {"not final": sum(v for k, v in states.items() if k not in finals)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="bench/results/load.json")
    args = parser.parse_args()
    raise_nofile(2 * (args.clients + args.peers) + 256)  # the client's sockets; servers inherit
    with tempfile.TemporaryDirectory() as tmp:
        a, b = new_pair(Path(tmp))
        with running(a, b):
            # The peer sessions claim to be smdp.a.example: give b.example's
            # decisions on their envelopes somewhere to go (a.example answers
            # 550 Unknown envelope, which ends them cleanly).
            started = time.monotonic()
            stats = asyncio.run(drive(a, b, args.clients, args.peers, args.duration,
                                      args.seed))
            elapsed = time.monotonic() - started
            # Let the envelopes still queued arrive, the recipients decide what
            # is pending, and every pull and decision cross; then check.
            drain_started = time.monotonic()
            wait_until(lambda: not a.query("SELECT 1 FROM queue"), timeout=600,
                       what="the origin's queue drains")
            asyncio.run(drain_decisions(b, [f"user{i}@b.example" for i in range(USERS)]))
            wait_until(lambda: not a.query("SELECT 1 FROM queue") and
                       not b.query("SELECT 1 FROM queue"), timeout=600, what="queues drain")
            drain = time.monotonic() - drain_started
            final = check_no_loss(a, b, stats)
            assert a.proc is not None and b.proc is not None
            memory = {"a.example_vmhwm_mib": vm_hwm_kib(a.proc.pid) / 1024,
                      "b.example_vmhwm_mib": vm_hwm_kib(b.proc.pid) / 1024}
    ops = sum(len(v) for v in stats.latencies.values())
    report = {
        "clients": args.clients, "peers": args.peers, "duration_s": args.duration,
        "elapsed_s": round(elapsed, 1), "operations": ops,
        "operations_per_s": round(ops / elapsed, 1),
        "messages_submitted": len(stats.submitted),
        "messages_per_s": round(len(stats.submitted) / elapsed, 1),
        "drain_s": round(drain, 1),
        "errors": dict(stats.errors), "error_samples": stats.error_samples,
        "decision_conflicts": dict(stats.conflicts),
        "final_recipient_states": final, "memory": memory,
        "latency": {op: percentiles(v) for op, v in sorted(stats.latencies.items())},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ok = not stats.errors and final["not final"] == 0
    print("load test", "PASSED" if ok else "FAILED", file=sys.stderr)
    return 0 if ok else 1


async def drain_decisions(b: Server, users: list[str]) -> None:
    for user in users:
        s = await UserSession.open(b.user_port, user)
        for _ in range(100):
            reply = await s.call(uw.Envs(False))
            if not reply.lines:
                break
            for line in reply.lines:
                try:
                    await s.call(uw.UserDecision(Decision.ACCEPT, int(line.split()[0])))
                except RuntimeError as exc:
                    if "already" not in str(exc):
                        raise
        await s.close()


if __name__ == "__main__":
    sys.exit(main())
