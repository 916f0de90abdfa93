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

Twice: on the machine's disk as it is, and on a slower one: this machine's
virtual disk answers an fsync in about 0.25 ms, where a disk without a
battery-backed write cache takes 1 to 10 ms. ``bench/native/slow_fsync.c``,
built with the system's C compiler and preloaded into the servers, makes each
fsync and fdatasync take ``SLOW_FSYNC_US`` longer, in the thread that asked,
as a real disk's wait would (no compiler: that part is skipped, saying so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import ROUNDS, Settings, alternate, ratio, spread
from bench.e2e import _smdp_all, build_workloads

PATHS = ("full", "direct")
MODES = {"per_commit": False, "group": True}
SLOW_FSYNC_US = 2000
SHIM = Path(__file__).parent / "native" / "slow_fsync.c"


def build_shim(out: Path) -> Path | None:
    """The slow-disk shim as a shared object, or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    target = out / "slow_fsync.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(target), str(SHIM), "-ldl"],
                   check=True)
    return target


@contextlib.contextmanager
def preloaded(shim: Path | None) -> Iterator[None]:
    """Servers started inside see the shim (they inherit the environment)."""
    if shim is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("LD_PRELOAD", "SMDP_BENCH_FSYNC_DELAY_US")}
    os.environ["LD_PRELOAD"] = str(shim)
    os.environ["SMDP_BENCH_FSYNC_DELAY_US"] = str(SLOW_FSYNC_US)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
    out: dict[str, Any] = {"setup": {"messages": count, "concurrency": concurrency,
                                     "mean_octets": round(load.mean_octets),
                                     "source": load.source},
                           "rounds": ROUNDS}
    with tempfile.TemporaryDirectory(prefix="smdp-bench-gc-") as tmp:
        top = Path(tmp)
        shim = build_shim(top)
        for disk, with_shim in (("as_is", None), (f"fsync_plus_{SLOW_FSYNC_US}us", shim)):
            if disk != "as_is" and shim is None:
                out[disk] = {"skipped": "no C compiler (cc) to build bench/native/slow_fsync.c"}
                continue
            print(f"  disk: {disk}", flush=True)
            with preloaded(with_shim):
                out[disk] = _compare(top / disk, load, count, concurrency)
    return out


def _compare(top: Path, load: Any, count: int, concurrency: int) -> dict[str, Any]:
    top.mkdir()

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
    return {"per_round": rounds, "ratio_spread": spread(per_round)}


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
