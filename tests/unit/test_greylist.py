"""Greylisting at the MX (server/greylist.py; docs/smtp.md, "Greylisting"),
on a clock the test moves."""

from __future__ import annotations

from smdp.server.greylist import Greylist


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_first_time_pair_waits_then_passes_and_is_remembered() -> None:
    clock = Clock()
    grey = Greylist(300.0, retry_window=3600.0, remember=86400.0, clock=clock)
    assert grey.wait("A@c.example", "192.0.2.0/24") == 300.0
    clock.now += 100
    assert grey.wait("a@c.example", "192.0.2.0/24") == 200.0  # the same pair, any case
    assert grey.wait("a@c.example", "198.51.100.0/24") == 300.0  # another network
    clock.now += 200
    assert grey.wait("a@c.example", "192.0.2.0/24") == 0.0  # retried after the delay
    clock.now += 80000
    assert grey.wait("a@c.example", "192.0.2.0/24") == 0.0  # remembered


def test_a_retry_too_late_starts_over_and_memory_is_bounded() -> None:
    clock = Clock()
    grey = Greylist(300.0, retry_window=3600.0, remember=86400.0, max_keys=2, clock=clock)
    grey.wait("a@c.example", "n")
    clock.now += 300 + 3600 + 1
    assert grey.wait("a@c.example", "n") == 300.0
    grey.wait("b@c.example", "n")
    grey.wait("c@c.example", "n")  # the oldest pair (a) is forgotten
    clock.now += 300
    assert grey.wait("a@c.example", "n") == 300.0
    assert grey.wait("c@c.example", "n") == 0.0
