"""Crash safety, proven (issue 3, item 4): SIGKILL both servers at random
moments under a mixed workload; every message ends in exactly one final state
matching its decisions. ``make soak`` runs the long version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.crashload import run

# The workload's own bound (about 20 s on an idle machine; several times that
# under coverage on one core) comes first, so a slow run fails saying what it
# was waiting for; pytest-timeout, which only kills, gets that plus time for
# starting and stopping the servers (each start may take 20 s, each stop 15 s).
WORKLOAD_TIMEOUT = 150


@pytest.mark.timeout(WORKLOAD_TIMEOUT + 90)
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    report = run(tmp_path, messages=60, seed=7, interval=(0.2, 0.7), timeout=WORKLOAD_TIMEOUT,
                 pace=0.05, min_kills=6)
    print(report)
    assert sum(report.kills.values()) >= 5, report  # the test really killed servers
    assert report.messages == 60
