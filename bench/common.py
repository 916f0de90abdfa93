"""Shared pieces of the benchmark suite (``make bench``): settings, timing, the corpus.

Settings come from the environment:

- ``BENCH_SIZE``: ``quick`` (the default, the whole suite in under ten minutes
  on a 2-core machine) or ``full`` (the paper's sizes and the long curves);
- ``SMDP_CORPUS``: the real-mail corpus folder (default ``../shared/corpus``
  beside the repository). The corpus is read where it lies, never copied; a
  benchmark part that needs it is skipped with a note when it is absent.

Every comparison the suite reports is a ratio of two figures measured in the
same run (never an absolute time compared with another run's).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


@dataclass(frozen=True)
class Settings:
    size: str  # "quick" or "full"
    corpus: Path
    results: Path

    @property
    def full(self) -> bool:
        return self.size == "full"

    def pick(self, quick: Any, full: Any) -> Any:
        """The quick or the full value of a size parameter."""
        return full if self.full else quick


def settings_from_env(size: str | None = None, results: Path | None = None) -> Settings:
    size = (size or os.environ.get("BENCH_SIZE") or "quick").strip().lower()
    if size not in ("quick", "full"):
        raise SystemExit(f"BENCH_SIZE must be quick or full, not {size!r}")
    corpus = Path(os.environ.get("SMDP_CORPUS") or (REPO.parent / "shared" / "corpus"))
    return Settings(size, corpus, results or RESULTS)


# ---------------------------------------------------------------------------
# Timing and statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_us(samples_ns: list[int]) -> dict[str, float]:
    """Median, p90, p99 and mean of nanosecond samples, in microseconds."""
    us = [s / 1000 for s in samples_ns]
    return {
        "count": len(us),
        "median_us": round(statistics.median(us), 2) if us else 0.0,
        "p90_us": round(percentile(us, 90), 2),
        "p99_us": round(percentile(us, 99), 2),
        "mean_us": round(statistics.fmean(us), 2) if us else 0.0,
    }


def ratio(numerator: float, denominator: float, digits: int = 2) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


# Rounds of each contender in a comparison (issue 15 item 7): SMDP and each
# baseline take turns, so that the machine's busy and quiet minutes fall on
# both, and a ratio is given as the median of the rounds' with its spread.
ROUNDS = int(os.environ.get("BENCH_ROUNDS") or 3)


def alternate(rounds: int, contenders: Sequence[tuple[str, Callable[[int], Any]]]
              ) -> dict[str, list[Any]]:
    """Run each contender once per round, in turn (``fn(round)``), ``rounds``
    rounds: SMDP, baseline, SMDP, baseline... Each contender's results, in
    round order. A contender returning None (a baseline that cannot run
    here) is not run again."""
    results: dict[str, list[Any]] = {name: [] for name, _fn in contenders}
    gone: set[str] = set()
    for k in range(rounds):
        for name, fn in contenders:
            if name in gone:
                continue
            print(f"  round {k + 1}/{rounds}: {name} ...", flush=True)
            value = fn(k)
            if value is None:
                gone.add(name)
                continue
            results[name].append(value)
    return results


def spread(per_round: Sequence[dict[str, float | None]]) -> dict[str, dict[str, Any]]:
    """Per key of the rounds' ratio dicts: the median, the lowest and highest,
    and every round's value (a key missing from a round is left out there)."""
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(k for r in per_round for k in r):
        values = [v for r in per_round if (v := r.get(key)) is not None]
        if values:
            out[key] = {"median": round(statistics.median(values), 2), "min": min(values),
                        "max": max(values), "rounds": values}
    return out


class Stopwatch:
    """Wall time of a block: ``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def timed_ns(fn: Callable[[], Any]) -> int:
    start = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - start


def vm_kib(pid: int, key: str = "VmHWM") -> int:
    """A /proc/<pid>/status memory figure (VmHWM: peak resident set), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def reset_hwm(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        match = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kib = int(match.group(1)) if match else 0
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------
# The corpus (../shared/corpus, see its README)


@dataclass(frozen=True)
class CorpusMessage:
    label: str  # "ham" or "spam"
    name: str  # path relative to the corpus folder
    data: bytes  # the mbox "From " line stripped, CRLF line ends


def to_wire(raw: bytes) -> bytes:
    """As the corpus README says: strip the mbox ``From `` line, LF -> CRLF."""
    if raw.startswith(b"From "):
        newline = raw.find(b"\n")
        raw = b"" if newline < 0 else raw[newline + 1 :]
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw


def corpus_files(corpus: Path) -> list[tuple[str, Path]]:
    """(label, path) of every SpamAssassin message, sorted, or [] without the corpus."""
    base = corpus / "spamassassin"
    found: list[tuple[str, Path]] = []
    for label in ("ham", "spam"):
        folder = base / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix == ".eml":
                found.append((label, path))
    return found


def iter_corpus(corpus: Path, files: list[tuple[str, Path]] | None = None,
                ) -> Iterator[CorpusMessage]:
    for label, path in files if files is not None else corpus_files(corpus):
        yield CorpusMessage(label, str(path.relative_to(corpus)), to_wire(path.read_bytes()))


def corpus_note(corpus: Path) -> str | None:
    """None when the corpus is usable, else why the corpus parts are skipped."""
    if not (corpus / "spamassassin").is_dir():
        return (f"corpus not found at {corpus} (set SMDP_CORPUS): "
                "the parts on real mail were skipped")
    return None
