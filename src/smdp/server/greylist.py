"""Greylisting at the MX (issue 12 item 4; docs/smtp.md, "Greylisting"):
optional, off unless ``[smtp] greylist_delay`` is set.

The first time a (MAIL FROM address, client prefix) pair is seen, its
recipients get a temporary refusal; a real MTA retries after minutes, and a
retry after the delay (within the retry window) passes the pair, which then
passes at once for ``remember`` seconds. Much bulk spam never retries. In
memory, per server process, like the abuse windows (``ratelimit.py``): a
restart forgets the pairs, and costs each sender one more delay at most.
Memory is bounded: the oldest pairs are forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

#: RFC 6647 4.2: a retry is expected within hours; later, the pair starts over.
RETRY_WINDOW = 4 * 3600.0
#: How long a pair that retried properly passes without delay.
REMEMBER = 36 * 86400.0


class Greylist:
    def __init__(self, delay: float, *, retry_window: float = RETRY_WINDOW,
                 remember: float = REMEMBER, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.retry_window = retry_window
        self.remember = remember
        self.max_keys = max_keys
        self.clock = clock
        self._first: OrderedDict[str, float] = OrderedDict()  # pair -> first attempt
        self._passed: OrderedDict[str, float] = OrderedDict()  # pair -> last pass

    def wait(self, sender: str, prefix: str) -> float:
        """Seconds the pair must still wait (0: it passes now)."""
        key = f"{sender.lower()} {prefix}"
        now = self.clock()
        passed = self._passed.get(key)
        if passed is not None and now - passed < self.remember:
            self._note(self._passed, key, now)
            return 0.0
        first = self._first.get(key)
        if first is None or now - first > self.delay + self.retry_window:
            self._note(self._first, key, now)
            return self.delay
        if now - first < self.delay:
            return self.delay - (now - first)
        del self._first[key]
        self._note(self._passed, key, now)
        return 0.0

    def _note(self, table: OrderedDict[str, float], key: str, now: float) -> None:
        table[key] = now
        table.move_to_end(key)
        while len(table) > self.max_keys:
            table.popitem(last=False)
