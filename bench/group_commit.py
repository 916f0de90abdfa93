"""Issue 15 item 2: group commit against one fsync per commit.

    python -m bench.run --only group_commit     # BENCH_ROUNDS=5 for more rounds
    python -m bench.group_commit                # bench/results/group_commit.json

The SMDP half of the end-to-end benchmark (bench/e2e.py: two real ``smdp
serve`` processes on SQLite, corpus ham of about 4 KB, concurrent senders at
a.example and deciding recipients at b.example), saturated, on the full flow
and the direct path, with both servers on ``[store] group_commit = false``
(synchronous=FULL: each commit its own fsync, on the event loop's thread) and
then on ``true`` (a flusher thread fsyncs the WAL once for many commits; every
answer waits for the commits before it): a fresh pair each time, in
alternating rounds (``BENCH_ROUNDS``, three unless set). Per round the ratios
group commit over one fsync per commit, reported as the rounds' median with
the lowest and highest, and each server's commits and fsyncs per message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROUNDS, Settings, alternate, ratio, spread
from bench.e2e import _smdp_all, build_workloads

PATHS = ("full", "direct")
MODES = {"per_commit": False, "group": True}


def _figures(one: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for path in PATHS:
        sat = one["4k"][path]["saturated"]
        out[path] = {"msgs_per_s": sat["msgs_per_s"],
                     "cpu_ms_per_msg": sat["cpu_ms_per_msg"]["total"],
                     "p50_ms": sat["latency"]["p50_ms"],
                     "store_per_msg": sat["store_per_msg"]}
    return out


def run(settings: Settings) -> dict[str, Any]:
    count = settings.pick(2000, 4000)
    concurrency = settings.pick(20, 50)
    load = build_workloads(settings, {"4k": count, "700k": 1})["4k"]
    with tempfile.TemporaryDirectory(prefix="smdp-bench-gc-") as tmp:
        top = Path(tmp)

        def contender(mode: str) -> Any:
            def one(k: int) -> dict[str, dict[str, Any]]:
                root = top / f"{mode}-{k}"
                root.mkdir()
                out = asyncio.run(_smdp_all(root, {"4k": load}, {"4k": count}, None,
                                            concurrency, paths=PATHS,
                                            group_commit=MODES[mode]))
                figures = _figures(out)
                for path, f in figures.items():
                    per = f["store_per_msg"]
                    print(f"    {mode} {path}: {f['msgs_per_s']} msgs/s, "
                          f"{f['cpu_ms_per_msg']} ms CPU/msg, p50 {f['p50_ms']} ms; "
                          f"commits / fsyncs per msg: origin {per['origin']['commits']} / "
                          f"{per['origin']['fsyncs']}, destination "
                          f"{per['destination']['commits']} / "
                          f"{per['destination']['fsyncs']}", flush=True)
                return figures
            return one

        rounds = alternate(ROUNDS, [(mode, contender(mode)) for mode in MODES])
    per_round = []
    for k in range(ROUNDS):
        old, new = rounds["per_commit"][k], rounds["group"][k]
        per_round.append({f"{path}_{key}_group_over_per_commit": ratio(new[path][key],
                                                                       old[path][key])
                          for path in PATHS for key in ("msgs_per_s", "cpu_ms_per_msg")})
    return {"setup": {"messages": count, "concurrency": concurrency,
                      "mean_octets": round(load.mean_octets), "source": load.source},
            "rounds": ROUNDS, "per_round": rounds, "ratio_spread": spread(per_round)}


def main(argv: list[str] | None = None) -> int:
    from bench.common import settings_from_env, write_json

    parser = argparse.ArgumentParser(description="group commit against an fsync per commit")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = settings_from_env(results=args.results)
    write_json(settings.results / "group_commit.json", run(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
