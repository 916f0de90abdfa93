"""Issue 5 item 5: how the costs grow with the number of concurrent sessions.

For 10, 30, 100, 300 and 1,000 concurrent user-port sessions, a fresh pair of
real ``smdp serve`` processes (a.example, b.example; SQLite stores; the
settings of ``make load``, which lift the per-client session cap of 50 and the
abuse quotas out of reach, plus the spam-report quota) runs the sessions of
``make load`` (bench/load.py): half submit messages at a.example to b.example
users (SENT every fifth), half list, decide and read at b.example (ENVS, up to
five decisions, STAT, RETR).
Each session thinks 0.05 to 0.4 s between operations, so the offered load
grows with the number of sessions (a closed loop: throughput rises until a
server saturates, then latency does). No peer-port load sessions: the peer
traffic is the servers' own (envelopes, decisions, pulls).

All sessions log in first (50 at a time); then the measured window opens (quick
size 9 s, full size 30 s). Per point: operations and submitted messages per
second, latency percentiles per operation, the CPU time of both server
processes (utime + stime over the window) per operation, their peak RSS
(VmHWM; fresh processes for each point), the queues still waiting at the end of
the window, the client's CPU share, and every error.

When the origin cannot deliver as fast as the senders submit, envelopes wait in
its queue at the end of the window and their work is not in the window's CPU
time. So after the window the sessions quit, the queues are left to drain
(bounded: 60 s, 300 s at the full size), and the CPU time up to the drained
queues is reported too ("with drain"): the cost of everything the window's
operations set going, per operation and per submitted message.

Only 127.0.0.1, ports chosen by the OS; bounded in count and time.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import Server, running

from bench.common import Settings
from bench.load import (
    SETTINGS,
    USERS,
    Stats,
    cpu_seconds,
    drive,
    new_pair,
    percentiles,
    raise_nofile,
    vm_hwm_kib,
)

POINTS = (10, 30, 100, 300, 1000)
SEED = 5
# make load's settings (the abuse quotas and the spam-report suspension out of
# reach: this measures capacity; tests prove the limits).
SERVER_SETTINGS = SETTINGS
PROBLEM = re.compile(r"traceback|exception|error|fail|refus", re.IGNORECASE)


def _probe(a: Server, b: Server) -> dict[str, Any]:
    assert a.proc is not None and b.proc is not None
    return {
        "cpu_s": {"origin": cpu_seconds(a.proc.pid), "destination": cpu_seconds(b.proc.pid)},
        "queue": {"origin": a.query("SELECT COUNT(*) FROM queue")[0][0],
                  "destination": b.query("SELECT COUNT(*) FROM queue")[0][0]},
        # Envelopes (and direct messages) that reached b.example so far.
        "arrived": b.query("SELECT COUNT(*) FROM in_envelopes")[0][0],
    }


def _log_problems(*servers: Server) -> list[str]:
    """Log lines of the servers that speak of a traceback, an exception, an error or a
    failure (the log format has no level name)."""
    found = []
    for server in servers:
        path = server.root / f"{server.name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        found += [f"{server.name}: {line.strip()[:300]}" for line in text.splitlines()
                  if PROBLEM.search(line)]
    return found


def _round(d: dict[str, float], digits: int = 1) -> dict[str, float]:
    return {k: round(v, digits) for k, v in d.items()}


def point(root: Path, sessions: int, duration: float, seed: int,
          drain_limit: float, event_loop: str = "") -> dict[str, Any]:
    """One point of the curve on a fresh pair of servers (on ``[server]
    event_loop`` when given; bench/event_loop.py)."""
    root.mkdir()
    load_before = os.getloadavg()[0]
    a, b = new_pair(root, settings=SERVER_SETTINGS,
                    server_extra=f'event_loop = "{event_loop}"' if event_loop else "")
    with running(a, b):
        assert a.proc is not None and b.proc is not None
        started = time.monotonic()
        stats: Stats = asyncio.run(asyncio.wait_for(
            drive(a, b, sessions, 0, duration, seed, login_first=True,
                  probe=lambda: _probe(a, b)),
            timeout=duration + 300))
        drain_started = time.monotonic()
        drained = False
        while time.monotonic() - drain_started < drain_limit:
            queue = _probe(a, b)["queue"]
            if not (queue["origin"] or queue["destination"]):
                drained = True
                break
            time.sleep(0.1)
        drain = time.monotonic() - drain_started
        after = _probe(a, b)
        total = time.monotonic() - started
        peak = {"origin": vm_hwm_kib(a.proc.pid) / 1024,
                "destination": vm_hwm_kib(b.proc.pid) / 1024}
    problems = _log_problems(a, b)  # after the shutdown, which logs too
    w = stats.window
    elapsed = w["stop"] - w["start"]
    at_stop: dict[str, int] = w["ops_at_stop"]
    ops = sum(at_stop.values())
    cpu = {k: w["probe_stop"]["cpu_s"][k] - w["probe_start"]["cpu_s"][k]
           for k in ("origin", "destination")}
    cpu_total = sum(cpu.values())
    cpu_drain = sum(after["cpu_s"][k] - w["probe_start"]["cpu_s"][k]
                    for k in ("origin", "destination"))
    submitted = w["submitted_at_stop"]
    logins = percentiles(stats.logins)
    return {
        "sessions": sessions,
        "window_s": round(elapsed, 2),
        "operations": ops,
        "operations_per_s": round(ops / elapsed, 1),
        "operations_by_kind": dict(sorted(at_stop.items())),
        "messages_submitted": submitted,
        "messages_per_s": round(submitted / elapsed, 1),
        # How fast the origin's delivery worker kept up, inside the window.
        "arrived_at_destination_per_s": round(
            (w["probe_stop"]["arrived"] - w["probe_start"]["arrived"]) / elapsed, 1),
        # Operations finished inside the window, in the order they finished.
        "latency": {op: _round(percentiles(v[: at_stop.get(op, 0)]))
                    for op, v in sorted(stats.latencies.items()) if at_stop.get(op)},
        "login": {"sessions": len(stats.logins), "p50_ms": round(logins.get("p50_ms", 0), 1),
                  "p99_ms": round(logins.get("p99_ms", 0), 1),
                  "all_open_s": round(w["start"] - started, 2)},
        "server_cpu_s": _round(cpu, 2),
        "server_cpu_ms_per_op": round(cpu_total / ops * 1000, 3) if ops else None,
        "server_cpu_ms_per_op_by_server": {k: round(v / ops * 1000, 3) if ops else None
                                           for k, v in cpu.items()},
        "server_cpu_ms_per_message": round(cpu_total / submitted * 1000, 2)
        if submitted else None,
        "server_cores_used": round(cpu_total / elapsed, 2),
        "drain_s": round(drain, 1),
        "drained": drained,
        "server_cpu_s_with_drain": round(cpu_drain, 2),
        "server_cpu_ms_per_op_with_drain": round(cpu_drain / ops * 1000, 3) if ops else None,
        "server_cpu_ms_per_message_with_drain": round(cpu_drain / submitted * 1000, 2)
        if submitted else None,
        "client_cpu_share": round((w["client_cpu_stop"] - w["client_cpu_start"]) / elapsed, 2),
        "peak_rss_mib": _round(peak),
        "queue_at_stop": w["probe_stop"]["queue"],
        "errors": dict(stats.errors),
        "error_count": sum(stats.errors.values()),
        "error_samples": stats.error_samples,
        "decision_conflicts": dict(stats.conflicts),
        "server_log_problems": problems[:10],
        "server_log_problem_lines": len(problems),
        "loadavg_1m_before": round(load_before, 2),
        "point_s": round(total, 1),
    }


def run(settings: Settings) -> dict[str, Any]:
    duration = settings.pick(9.0, 30.0)
    # Each session is a socket in this process (and one in a server); the
    # servers, started afterwards, inherit the raised limit.
    nofile = raise_nofile(2 * max(POINTS) + 512)
    rows = []
    with tempfile.TemporaryDirectory(prefix="smdp-bench-sessions-") as tmp:
        for n in POINTS:
            row = point(Path(tmp) / f"s{n}", n, duration, SEED,
                        drain_limit=settings.pick(60.0, 300.0))
            print(f"  {n:>5} sessions: {row['operations_per_s']:,.0f} ops/s, "
                  f"{row['messages_per_s']:,.0f} msgs/s, submit p99 "
                  f"{row['latency'].get('submit', {}).get('p99_ms', 0):,.0f} ms, "
                  f"{row['server_cpu_ms_per_op']} ms CPU/op "
                  f"({row['server_cpu_ms_per_op_with_drain']} with {row['drain_s']} s of "
                  f"drain), errors {row['error_count']}",
                  flush=True)
            rows.append(row)
    return {
        "setup": {
            "points": list(POINTS), "window_s": duration,
            "drain_limit_s": settings.pick(60.0, 300.0), "peer_load_sessions": 0,
            "accounts_per_domain": USERS, "login_concurrency": 50,
            "server_settings": SERVER_SETTINGS.strip().splitlines(),
            "think_time_s": {"sender": [0.05, 0.3], "recipient": [0.1, 0.4]},
            "open_files": nofile,
            "note": "client and both servers share the machine's CPUs; half the sessions "
                    "submit at a.example, half read and decide at b.example",
        },
        "points": rows,
        "errors_total": sum(r["error_count"] for r in rows),
    }
