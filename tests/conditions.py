"""Waiting on a condition instead of the clock.

A test that sleeps a fixed time and then looks guesses how long the code under
test takes, and the guess fails as soon as the machine is slower (coverage,
one core, a busy CI host). These helpers poll the condition itself, return as
soon as it holds, and fail with what was awaited and the last value seen.
The timeout is a bound on a failure, not a duration the test relies on: make
it generous. A sleep that *is* the behaviour under test (a slow sender, a job
that outlasts its lease) stays a sleep, with a comment saying so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0  # seconds; a bound on failure only
INTERVAL = 0.05


def wait_until(check: Callable[[], T], timeout: float = DEFAULT_TIMEOUT,
               what: str = "condition", interval: float = INTERVAL) -> T:
    """Call ``check`` until it returns a truthy value, and return that value.

    Raises AssertionError naming ``what`` (and the last value ``check``
    returned) when ``timeout`` seconds pass first. ``check`` is always called
    at least once after the deadline, so a slow poll cannot miss the end.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last seen: {value!r})")
        time.sleep(interval)


async def wait_until_async(check: Callable[[], T | Awaitable[T]],
                           timeout: float = DEFAULT_TIMEOUT, what: str = "condition",
                           interval: float = INTERVAL) -> T:
    """:func:`wait_until` inside an event loop: ``check`` may be a coroutine
    function; the loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last seen: {value!r})")
        await asyncio.sleep(interval)
