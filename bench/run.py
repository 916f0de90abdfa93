"""Run the benchmark suite (``make bench``; issue 5).

    python -m bench.run                      # quick size (under 10 minutes)
    BENCH_SIZE=full python -m bench.run      # the paper's sizes and the long curves
    python -m bench.run --only envelopes,lists

Writes ``bench/results/<name>.json`` for each benchmark, ``run.json`` (machine,
size, durations), ``summary.md`` (every aim beside its figure) and PNG plots.
The corpus is read from ``SMDP_CORPUS`` (default ``../shared/corpus``); its
parts are skipped with a note when it is absent. Everything runs on
127.0.0.1, bounded in count and time. Benchmarks are not tests: ``make test``
runs none of this.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS, machine, settings_from_env, write_json

# Order: the cheap in-process ones first, the servers last.
BENCHMARKS = ("envelopes", "lists", "web", "scaling", "sessions", "spam", "quality", "e2e",
              "smtp", "imap")
# Run only when named with --only: measurements that decided a setting once
# (bench/event_loop.py: [server] event_loop's default; bench/group_commit.py:
# [store] group_commit's).
OPT_IN = ("event_loop", "group_commit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="smdp benchmark suite (issue 5)")
    parser.add_argument("--size", choices=("quick", "full"), default=None,
                        help="default: $BENCH_SIZE, else quick")
    parser.add_argument("--only", default="",
                        help="comma-separated: " + ",".join(BENCHMARKS + OPT_IN))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--replot", action="store_true",
                        help="measure nothing: redraw the plots and the summary from the "
                             "JSON files of the last run")
    args = parser.parse_args(argv)
    if args.replot:
        return replot(args.results)
    settings = settings_from_env(args.size, args.results)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS + OPT_IN)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    settings.results.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "size": settings.size,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(),
        "corpus": str(settings.corpus),
        "corpus_present": (settings.corpus / "spamassassin").is_dir(),
        "durations_s": {},
    }
    print(f"smdp bench: size {settings.size}, corpus {settings.corpus}"
          + ("" if info["corpus_present"] else " (absent: corpus parts skipped)"), flush=True)
    results: dict[str, dict[str, Any]] = {}
    failed = []
    started = time.monotonic()
    for name in chosen:
        print(f"- {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            data: dict[str, Any] = module.run(settings)
        except Exception:
            data = {"error": traceback.format_exc()}
            failed.append(name)
            print(data["error"], file=sys.stderr, flush=True)
        seconds = time.monotonic() - t0
        data["size"] = settings.size
        data["elapsed_s"] = round(seconds, 1)
        info["durations_s"][name] = round(seconds, 1)
        results[name] = data
        write_json(settings.results / f"{name}.json", data)
        print(f"  {name}: {seconds:.1f} s", flush=True)
    # The summary describes this run only: benchmarks not run this time
    # (--only) are left out, not taken from an older run.
    info["elapsed_s"] = round(time.monotonic() - started, 1)
    write_json(settings.results / "run.json", info)
    finish(results, info, settings.results)
    for where, why in skipped(results):
        # A baseline not run (Postfix not installed...): say so, and how to add it.
        print(f"skipped: {where}: {why}", flush=True)
    print(f"smdp bench: {info['elapsed_s']:.0f} s; results in {settings.results}", flush=True)
    return 1 if failed else 0


def skipped(data: Any, where: str = "") -> list[tuple[str, str]]:
    """Every ``"skipped"`` note in the results, with where it was found;
    each says what was not run and why (the Postfix baseline's, how to
    install it: ``apt-get install postfix``)."""
    found: list[tuple[str, str]] = []
    if isinstance(data, dict):
        if isinstance(data.get("skipped"), str):
            found.append((where, data["skipped"]))
        for key, value in data.items():
            found += skipped(value, f"{where}.{key}" if where else str(key))
    return found


def finish(results: dict[str, dict[str, Any]], info: dict[str, Any], folder: Path) -> None:
    """Draw the plots and write summary.md."""
    load = folder / "load.json"
    if load.exists():
        with contextlib.suppress(ValueError):
            info["load"] = json.loads(load.read_text())
    try:
        from bench.plots import draw_all

        plots = draw_all(results, folder)
        info["plots"] = [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)
                         for p in plots]
    except ImportError as exc:
        info["plots"] = []
        print(f"no plots: {exc} (pip install -e '.[bench]')", file=sys.stderr)
    from bench.summary import render

    summary = render(results, info)
    (folder / "summary.md").write_text(summary + "\n")
    print(summary)


def replot(folder: Path) -> int:
    run = folder / "run.json"
    if not run.exists():
        print(f"no run.json in {folder}: run the suite first", file=sys.stderr)
        return 1
    info = json.loads(run.read_text())
    results = {name: json.loads((folder / f"{name}.json").read_text())
               for name in info.get("durations_s", {}) if (folder / f"{name}.json").exists()}
    finish(results, info, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
