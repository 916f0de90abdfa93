"""Issue 15 item 3: the servers' event loop, the standard asyncio loop against uvloop.

    python -m bench.run --only event_loop        # BENCH_ROUNDS=5 for more rounds

The SMDP half of the end-to-end benchmark (bench/e2e.py: two real ``smdp
serve`` processes, SQLite stores with WAL and synchronous=FULL, corpus ham of
about 4 KB, concurrent senders at a.example and deciding recipients at
b.example), saturated, on the full flow and the direct path, with both servers
on ``[server] event_loop = "asyncio"``, then on ``"uvloop"``: a fresh pair of
servers each time, in alternating rounds (``BENCH_ROUNDS``, three unless set)
within one run, so that the shared machine's busy and quiet minutes fall on
both. Per round the ratios uvloop over asyncio of messages per second and of
server CPU per message (both servers' utime+stime); reported as the rounds'
median with the lowest and highest. Not in the default ``make bench`` (it
decided ``[server] event_loop``'s default once; docs/benchmarks.md section 11).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import ROUNDS, Settings, alternate, ratio, spread
from bench.e2e import _smdp_all, build_workloads

PATHS = ("full", "direct")
LOOPS = ("asyncio", "uvloop")


def _figures(one: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{path: {msgs_per_s, cpu_ms_per_msg}} of one pair's run."""
    return {path: {"msgs_per_s": one["4k"][path]["saturated"]["msgs_per_s"],
                   "cpu_ms_per_msg": one["4k"][path]["saturated"]["cpu_ms_per_msg"]["total"]}
            for path in PATHS}


def run(settings: Settings) -> dict[str, Any]:
    if importlib.util.find_spec("uvloop") is None:
        return {"skipped": "uvloop is not installed: pip install uvloop"}
    count = settings.pick(2000, 4000)
    concurrency = settings.pick(20, 50)
    # build_workloads makes both sizes; one 700 KB message is the least it takes.
    load = build_workloads(settings, {"4k": count, "700k": 1})["4k"]
    with tempfile.TemporaryDirectory(prefix="smdp-bench-loop-") as tmp:
        top = Path(tmp)

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
                      "mean_octets": round(load.mean_octets), "source": load.source,
                      "uvloop": version("uvloop"), "python": sys.version.split()[0]},
            "rounds": ROUNDS, "per_round": rounds, "ratio_spread": spread(per_round)}


def main() -> int:
    from bench.common import settings_from_env, write_json

    settings = settings_from_env()
    write_json(settings.results / "event_loop.json", run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
