"""Sliding-window counters for the abuse limits (issue 4: envelope floods,
failed logins, envelopes per peer and per recipient).

In memory, per server process: limits are about the next minutes and hours,
and a restart forgetting them costs little (several nodes behind one domain
each apply the limits to what they see). Memory is bounded: old events are
dropped as windows slide, and the number of keys is capped, forgetting the
quietest first.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class Window:
    """Counts events per key over the last ``seconds``."""

    def __init__(self, seconds: float, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.max_keys = max_keys
        self.clock = clock
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def _trim(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        horizon = now - self.seconds
        while events and events[0] <= horizon:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def count(self, key: str) -> int:
        events = self._trim(key, self.clock())
        return len(events) if events else 0

    def add(self, key: str) -> int:
        """Record one event; returns the count in the window, this one included."""
        now = self.clock()
        events = self._trim(key, now)
        if events is None:
            events = self._events[key] = deque()
            if len(self._events) > self.max_keys:
                self._events.popitem(last=False)
        events.append(now)
        self._events.move_to_end(key)
        return len(events)

    def allow(self, key: str, limit: int) -> bool:
        """Record the event if ``key`` is under ``limit`` in the window."""
        if self.count(key) >= limit:
            return False
        self.add(key)
        return True

    def clear(self, key: str) -> None:
        self._events.pop(key, None)
