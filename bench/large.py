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

``--stages``: only the CPU of each step of the body path, in process.

Writes ``large.json`` into the results folder (``bench/common.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
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


def stages(loads: dict[str, Any], repeats: int = 40) -> dict[str, float]:
    """CPU per 700 KB message of each step of the body path, in this process
    (no sockets, no store): what a port's data reader does with the wire
    (64 KiB reads, chunks handed out at CHUNK_SIZE, spooled), the origin's
    submission rules, the envelope extraction, the dot-stuffing for sending."""
    from bench.e2e import stuffed
    from smdp.core.envelope import extract_envelope
    from smdp.core.submission import prepare_submission_body
    from smdp.mail.body import CHUNK_SIZE, Body, BodyWriter
    from smdp.protocol.framing import DataBlockReader, DotStuffer, LineBuffer

    wl = loads["700k"]
    account = "d0@a.example"
    messages = [wl.message(k, account) for k in range(min(8, len(wl.bodies)))]
    wires = [stuffed(m) for m in messages]
    marks = "no_bare_lf" in Body.__slots__

    def receive(wire: bytes) -> Body:
        lines = LineBuffer(1000)
        reader = DataBlockReader(1000, 64 * 1024 * 1024)
        writer = BodyWriter()
        for i in range(0, len(wire), 65536):
            lines.feed(wire[i:i + 65536])
            done = reader.consume(lines)
            if reader.held >= CHUNK_SIZE:
                writer.write(reader.take())
            if done:
                break
        writer.write(reader.result())
        # As the version timed does it (Session.spooled_body): one that knows
        # Body.no_bare_lf marks what its data readers give.
        return writer.finish(no_bare_lf=True) if marks else writer.finish()

    def prepare(body: Body) -> Body:
        return prepare_submission_body(body, identities=[account], sender=account,
                                       hostname="a.example")

    def stuff(body: Body) -> int:
        stuffer = DotStuffer()
        return sum(len(stuffer.feed(c)) for c in body.chunks()) + len(stuffer.end())

    received = [receive(w) for w in wires]
    assert received[0].read() == messages[0]
    prepared = [prepare(b) for b in received]
    out: dict[str, float] = {}
    steps: list[tuple[str, Any, list[Any]]] = [
        ("receive", receive, wires), ("prepare_submission_body", prepare, received),
        ("extract_envelope", extract_envelope, prepared), ("dot_stuff_to_send", stuff, prepared)]
    for name, fn, args in steps:
        t0 = time.process_time()
        for k in range(repeats):
            fn(args[k % len(args)])
        out[name] = round((time.process_time() - t0) / repeats * 1000, 2)
    return out


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
    parser.add_argument("--stages", action="store_true",
                        help="only the in-process CPU of each step of the body path "
                             "(PYTHONPATH=<src>:. to time another version's)")
    args = parser.parse_args(argv)
    settings = settings_from_env()
    counts, _paced, concurrency = _counts(settings)
    n = args.messages or counts["700k"]
    loads = {"700k": build_workloads(settings, {"4k": 1, "700k": max(n, 8)})["700k"]}
    if args.stages:
        for name, ms in stages(loads).items():
            print(f"  {name}: {ms} ms CPU per message")
        return 0
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
