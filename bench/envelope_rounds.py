"""Issue 15 item 5: a git revision's extractor, the working tree's and a full
``email`` parse, alternating message by message, in rounds.

    .venv/bin/python -m bench.envelope_rounds REV [--rounds 3] [--paper 60]

Each round goes over every SpamAssassin message of the corpus (SMDP_CORPUS):
for each message the old extractor, the new one (best of 3 each) and
``email``'s full parse (``bench.envelopes.full_parse``, once: it is the slow
one), the order turned around every message so that none always finds a
warmer cache. Printed per round: the median over messages of ``email`` time /
extractor time, and the mean time per message. Then as many rounds over
``--paper`` messages of the paper's 680 KB shape (``paper_message(i,
680_000)``), old and new alternating (best of 3 each): the mean ms per message.
Nothing is written; the figures go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from bench.common import corpus_files, iter_corpus, percentile, settings_from_env
from bench.envelopes import full_parse, paper_message
from bench.revision import module_at
from smdp.core import envelope as current

Timed = Callable[[bytes], object]


def _best(fn: Timed, data: bytes, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            fn(data)
        except Exception:  # the email package raises on a few corpus messages
            return time.perf_counter() - start
        best = min(best, time.perf_counter() - start)
    return best


def _round(messages: list[bytes], contenders: list[tuple[str, Timed, int]],
           ) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name, _fn, _r in contenders}
    for i, data in enumerate(messages):
        order = contenders if i % 2 == 0 else contenders[::-1]
        for name, fn, repeats in order:
            times[name].append(_best(fn, data, repeats))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the revision whose extractor is 'old'")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paper", type=int, default=60,
                        help="messages of the 680 KB shape a round")
    args = parser.parse_args(argv)
    old = module_at(args.rev).extract_envelope
    new = current.extract_envelope
    corpus = settings_from_env().corpus
    messages = [m.data for m in iter_corpus(corpus, corpus_files(corpus))]
    print(f"{len(messages)} corpus messages, old = {args.rev}, "
          f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%H:%M UTC', time.gmtime())}")
    contenders: list[tuple[str, Timed, int]] = [("old", old, 3), ("new", new, 3),
                                                ("email", full_parse, 1)]
    for number in range(1, args.rounds + 1):
        times = _round(messages, contenders)
        line = [f"corpus round {number}:"]
        for name in ("old", "new"):
            ratios = [e / s for s, e in zip(times[name], times["email"], strict=True) if s > 0]
            mean = sum(times[name]) / len(times[name]) * 1e6
            line.append(f"{name} median {percentile(ratios, 50):.1f}x, mean {mean:.0f} us;")
        line.append(f"email mean {sum(times['email']) / len(messages) * 1e3:.2f} ms")
        print(" ".join(line), flush=True)
    paper = [paper_message(i, 680_000) for i in range(args.paper)]
    for number in range(1, args.rounds + 1):
        times = _round(paper, [("old", old, 3), ("new", new, 3)])
        print(f"680 KB round {number}: " + ", ".join(
            f"{name} {sum(times[name]) / len(paper) * 1e3:.3f} ms" for name in ("old", "new")),
            flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
