"""Quality(X) over simulated days (issue 16 item 1): the four scenarios of
``tests/integration/test_quality_scenarios.py`` (a flood, a slow poisoning by
one user, here 16 rejected a day against 4 accepted, a recovering peer, a
compromised account on a good server), run longer against the same real
in-process servers, with a reading of each quality key after every simulated
step. The plot is ``quality.png``.

Settings are those of ``tests/integration/quality_sim.py``: a verdict after
6 messages and 3 distinct rejecting users, alert below 0.0 and block below
-0.5 (each left 0.1 above), a half-life of 3 days, 3 envelopes a day on
probation. The slow poisoning also shows what the paper's rule alone
(``min_deciders = 0``) would have decided on the same counters.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.quality_sim import (
    A_HOST,
    compromised_account,
    flood,
    recovery,
    slow_poisoning,
    world,
)

from bench.common import Settings
from smdp.core.quality import judge, sender_key


def run(settings: Settings) -> dict[str, Any]:
    days = 20 if settings.full else 10
    result: dict[str, Any] = {"days": days, "policy": {
        "min_messages": 6, "min_deciders": 3, "alert_below": 0.0, "block_below": -0.5,
        "margin": 0.1, "half_life_days": 3, "probation_per_day": 3}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        with world(root / "flood") as w:
            replies = flood(w, rounds=24 * 3)["replies"]
            result["flood"] = {"series": w.series(),
                               "taken_per_round": [r.count("250") for r in replies]}
        with world(root / "poison") as w:
            paper = dataclasses.replace(w.config.quality, min_deciders=0)
            standings = []
            for _ in range(days):
                slow_poisoning(w, days=1, hostile=16)
                standings.append(str(judge(w.quality(A_HOST)[0], paper).status))
            result["slow_poisoning"] = {"series": w.series(), "paper_rule": standings}
        with world(root / "recovery") as w:
            taken = recovery(w, days=days)
            result["recovery"] = {"series": w.series(), "taken_per_day": taken}
        with world(root / "compromised") as w:
            replies = compromised_account(w, days=days // 2)
            result["compromised_account"] = {
                "series": w.series(), "sender_key": sender_key(A_HOST, "mallory@a.example"),
                "next_day_replies": [r[:3] for r in replies]}
        result["elapsed_s"] = round(time.monotonic() - t0, 1)
    return result
