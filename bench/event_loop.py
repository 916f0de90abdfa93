"""Issue 15 item 3: the servers' event loop, the standard asyncio loop against uvloop.

    python -m bench.run --only event_loop          # both parts; BENCH_ROUNDS=5 for more rounds
    python -m bench.event_loop --part sessions     # one part; bench/results/event_loop-*.json

``e2e``: the SMDP half of the end-to-end benchmark (bench/e2e.py: two real
``smdp serve`` processes, SQLite stores with WAL and synchronous=FULL, corpus
ham of about 4 KB, concurrent senders at a.example and deciding recipients at
b.example), saturated, on the full flow and the direct path. ``sessions``:
bench/sessions.py's point of 300 concurrent user-port sessions (operations per
second, server CPU per operation with the queues drained).

Each with both servers on ``[server] event_loop = "asyncio"``, then on
``"uvloop"``: a fresh pair of servers each time, in alternating rounds
(``BENCH_ROUNDS``, three unless set) within one run, so that the shared
machine's busy and quiet minutes fall on both. Per round the ratios uvloop
over asyncio; reported as the rounds' median with the lowest and highest. Not
in the default ``make bench``: it decided ``[server] event_loop``'s default
once (docs/benchmarks.md section 11, "Item 3: the event loop").
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import ROUNDS, Settings, alternate, ratio, spread
from bench.e2e import _smdp_all, build_workloads
from bench.load import raise_nofile

PATHS = ("full", "direct")
LOOPS = ("asyncio", "uvloop")
PARTS = ("e2e", "sessions")
SESSIONS = 300  # bench/sessions.py's curve: past the knee on 2 cores, before overload


def _figures(one: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{path: {msgs_per_s, cpu_ms_per_msg}} of one pair's run."""
    return {path: {"msgs_per_s": one["4k"][path]["saturated"]["msgs_per_s"],
                   "cpu_ms_per_msg": one["4k"][path]["saturated"]["cpu_ms_per_msg"]["total"]}
            for path in PATHS}


def run(settings: Settings, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    if importlib.util.find_spec("uvloop") is None:
        return {"skipped": "uvloop is not installed: pip install uvloop"}
    out: dict[str, Any] = {"uvloop": version("uvloop"), "python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(prefix="smdp-bench-loop-") as tmp:
        if "e2e" in parts:
            out["e2e"] = _e2e(Path(tmp), settings)
        if "sessions" in parts:
            out["sessions"] = _sessions(Path(tmp), settings)
    return out


def _e2e(top: Path, settings: Settings) -> dict[str, Any]:
    count = settings.pick(2000, 4000)
    concurrency = settings.pick(20, 50)
    # build_workloads makes both sizes; one 700 KB message is the least it takes.
    load = build_workloads(settings, {"4k": count, "700k": 1})["4k"]

    def contender(loop: str) -> Any:
        def one(k: int) -> dict[str, dict[str, float]]:
            root = top / f"{loop}-{k}"
            root.mkdir()
            out = asyncio.run(_smdp_all(root, {"4k": load}, {"4k": count}, None,
                                        concurrency, paths=PATHS, event_loop=loop))
            return _figures(out)
        return one

    rounds = alternate(ROUNDS, [(loop, contender(loop)) for loop in LOOPS])
    per_round = []
    for k in range(ROUNDS):
        a, u = rounds["asyncio"][k], rounds["uvloop"][k]
        per_round.append({f"{path}_{key}_uvloop_over_asyncio": ratio(u[path][key], a[path][key])
                          for path in PATHS for key in ("msgs_per_s", "cpu_ms_per_msg")})
    return {"setup": {"messages": count, "concurrency": concurrency,
                      "mean_octets": round(load.mean_octets), "source": load.source},
            "rounds": ROUNDS, "per_round": rounds, "ratio_spread": spread(per_round)}


def _sessions(top: Path, settings: Settings) -> dict[str, Any]:
    """bench/sessions.py's point of SESSIONS sessions, on each loop in turn."""
    from bench.sessions import SEED, point

    duration = settings.pick(9.0, 30.0)
    raise_nofile(2 * SESSIONS + 512)

    def contender(loop: str) -> Any:
        def one(k: int) -> dict[str, Any]:
            row = point(top / f"sessions-{loop}-{k}", SESSIONS, duration, SEED,
                        drain_limit=settings.pick(60.0, 300.0), event_loop=loop)
            print(f"    {SESSIONS} sessions {loop}: {row['operations_per_s']} ops/s, "
                  f"{row['server_cpu_ms_per_op_with_drain']} ms CPU/op with drain, "
                  f"errors {row['error_count']}", flush=True)
            return {key: row[key] for key in (
                "operations_per_s", "messages_per_s", "server_cpu_ms_per_op",
                "server_cpu_ms_per_op_with_drain", "error_count", "latency")}
        return one

    rounds = alternate(ROUNDS, [(loop, contender(loop)) for loop in LOOPS])
    keys = ("operations_per_s", "server_cpu_ms_per_op", "server_cpu_ms_per_op_with_drain")
    per_round = [{f"{key}_uvloop_over_asyncio": ratio(rounds["uvloop"][k][key],
                                                      rounds["asyncio"][k][key])
                  for key in keys} for k in range(ROUNDS)]
    return {"sessions": SESSIONS, "window_s": duration, "per_round": rounds,
            "ratio_spread": spread(per_round)}


def main(argv: list[str] | None = None) -> int:
    from bench.common import settings_from_env, write_json

    parser = argparse.ArgumentParser(description="the servers on asyncio and on uvloop")
    parser.add_argument("--part", choices=PARTS, action="append",
                        help="e2e or sessions (repeatable); default both")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = settings_from_env(results=args.results)
    parts = tuple(args.part or PARTS)
    write_json(settings.results / f"event_loop-{'-'.join(parts)}.json", run(settings, parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
