"""Issue 15 item 4: 700 KB messages on the direct path, against aiosmtpd with fsync.

The 700 KB part of ``bench/e2e.py`` alone, its direct path only (sender and
recipient white-listed, so the body goes with MAIL at once), saturated: two
``smdp serve`` processes on SQLite stores (WAL, synchronous=FULL) and the
aiosmtpd+fsync baseline of ``bench/e2e.py``, in alternating rounds. Each
round reports MB/s and the CPU per message of each server process
(utime+stime from ``/proc``, until both queues are empty).

``--base SRC``: also run the servers of another version (its ``src`` folder,
e.g. a git worktree of main) in each round, in turn with this one, so that a
change is measured before and after in one run. The servers take that
version's code through PYTHONPATH; the clients and harness stay this one's.

    PYTHONPATH=. .venv/bin/python -m bench.large --messages 40 --rounds 3 \
        --base ../wt-base/src

Writes ``large.json`` into the results folder (``bench/common.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import settings_from_env, write_json
from bench.e2e import _counts, _smdp_all, _smtp_all, build_workloads


def _smdp(root: Path, loads: dict[str, Any], n: int, concurrency: int,
          src: str | None) -> dict[str, Any]:
    """One saturated direct run of 700 KB messages; ``src``: the servers'
    code (PYTHONPATH), None for this checkout's."""
    old = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *([old] if old else [])])
    try:
        out = asyncio.run(_smdp_all(root, loads, {"700k": n}, None, concurrency,
                                    paths=("direct",)))
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    sat: dict[str, Any] = out["700k"]["direct"]["saturated"]
    return sat


def _smtp(root: Path, loads: dict[str, Any], n: int, concurrency: int) -> dict[str, Any]:
    # _smtp_all also runs a paced phase; half as many, not measured here.
    out = asyncio.run(_smtp_all(root, loads, {"700k": n}, {"700k": max(1, n // 4)},
                                concurrency))
    sat: dict[str, Any] = out["700k"]["saturated"]
    return sat


def _line(name: str, r: dict[str, Any]) -> str:
    cpu = r["cpu_ms_per_msg"]
    if isinstance(cpu, dict):
        cpu_text = (f"CPU/msg origin {cpu['origin']} + destination {cpu['destination']}"
                    f" = {cpu['total']} ms")
    else:
        cpu_text = f"CPU/msg {cpu} ms"
    return f"    {name}: {r['msgs_per_s']} msgs/s, {r['mb_per_s']} MB/s, {cpu_text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="700 KB direct path (issue 15 item 4)")
    parser.add_argument("--messages", type=int, default=0,
                        help="messages per run (default: bench/e2e.py's count for the size)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", metavar="SRC", help="another version's src folder, "
                        "run in turn with this one")
    parser.add_argument("--no-baseline", action="store_true", help="SMDP only, no aiosmtpd")
    args = parser.parse_args(argv)
    settings = settings_from_env()
    counts, _paced, concurrency = _counts(settings)
    n = args.messages or counts["700k"]
    loads = {"700k": build_workloads(settings, {"4k": 1, "700k": n})["700k"]}
    print(f"700 KB direct: {n} messages ({loads['700k'].source}, mean "
          f"{round(loads['700k'].mean_octets)} octets), {concurrency} sessions", flush=True)
    contenders: list[tuple[str, str | None]] = [("smdp", None)]
    if args.base:
        contenders.append(("base", str(Path(args.base).resolve())))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in contenders}
    if not args.no_baseline:
        results["aiosmtpd"] = []
    with tempfile.TemporaryDirectory(prefix="smdp-bench-large-") as tmp:
        for k in range(args.rounds):
            for name, src in contenders:
                root = Path(tmp) / f"{name}-{k}"
                root.mkdir()
                r = _smdp(root, loads, n, concurrency, src)
                results[name].append(r)
                print(f"  round {k + 1}/{args.rounds}", _line(name, r).strip(), flush=True)
            if not args.no_baseline:
                root = Path(tmp) / f"aiosmtpd-{k}"
                root.mkdir()
                r = _smtp(root, loads, n, concurrency)
                results["aiosmtpd"].append(r)
                print(f"  round {k + 1}/{args.rounds}", _line("aiosmtpd", r).strip(),
                      flush=True)
    summary: dict[str, Any] = {}
    for name, runs in results.items():
        cpu = [r["cpu_ms_per_msg"] for r in runs]
        summary[name] = {
            "mb_per_s": [r["mb_per_s"] for r in runs],
            "cpu_ms_per_msg": cpu,
            "median_mb_per_s": statistics.median(r["mb_per_s"] for r in runs),
        }
    for name, _ in contenders:
        if "aiosmtpd" in results:
            ratios = [round(s["mb_per_s"] / a["mb_per_s"], 2)
                      for s, a in zip(results[name], results["aiosmtpd"], strict=True)]
            summary[name]["over_aiosmtpd_mb"] = ratios
            summary[name]["median_over_aiosmtpd_mb"] = statistics.median(ratios)
        summary[name]["median_cpu_total_ms"] = statistics.median(
            r["cpu_ms_per_msg"]["total"] for r in results[name])
    print("summary:")
    for name, s in summary.items():
        print(f"  {name}: {s}")
    write_json(settings.results / "large.json",
               {"messages": n, "concurrency": concurrency, "summary": summary,
                "runs": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
