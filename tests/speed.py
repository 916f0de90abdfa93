"""Time bounds that follow the speed of the run.

Some unit tests bound the time of a piece of work: a hostile input must stay
linear, a large block must stay on the fast path. A fixed bound set on an idle
machine fails under coverage (whose tracer slows every Python frame about
threefold) or on a busy one-core box, though nothing went quadratic. So the
bounds are written for an idle machine and scaled by :func:`slowdown`: how much
slower than there a fixed pure-Python workload runs now (best of five, timed
once per session, never less than 1). A quadratic blow-up is still orders of
magnitude past the scaled bound.
"""

from __future__ import annotations

import functools
import time

# Seconds the workload below takes, best of five, on the idle development
# machine the bounds were set on (a 2-core VM, CPython 3.11, no coverage).
REFERENCE = 0.030


def _workload() -> int:
    total = 0
    for i in range(300_000):
        total += i % 7
    return total


@functools.cache
def slowdown() -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        _workload()
        best = min(best, time.perf_counter() - started)
    return max(1.0, best / REFERENCE)


def within(seconds: float) -> float:
    """``seconds`` on the reference machine, scaled to this run."""
    return seconds * slowdown()
