"""Issue 16 item 1 with the real servers: a flood, a slow poisoning by one
user, a recovering peer and a compromised account on a good server
(``quality_sim.py``; docs/protocol.md 11.3). b.example's quality clock is a
stand-in, so simulated days pass at once."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

from smdp.core.quality import Standing, judge, sender_key
from smdp.protocol import user as wire

from .quality_sim import (
    A_HOST,
    RECIPIENTS,
    compromised_account,
    flood,
    recovery,
    slow_poisoning,
    world,
)


def test_a_flood_is_blocked_and_held_to_its_probation(tmp_path: Path) -> None:
    """Spam to three users from three senders: blocked once six messages and
    three rejecting users are counted; then only the probation's three
    envelopes a day are taken, for the users to judge."""
    with world(tmp_path) as w:
        replies = flood(w, rounds=4)["replies"]
        assert replies[0] == ["250"] * 9  # new: not judged yet
        assert w.points[0].standing == "blocked"
        after = [code for got in replies[1:] for code in got]
        assert after.count("250") == 3 and after.count("554") == len(after) - 3
        refused = w.envelope("amy@a.example", RECIPIENTS[0])
        assert refused.startswith("554 5.7.1 smdp.a.example blocked: quality -1.00 is below "
                                  "the block threshold -0.50; its 3 envelopes of probation "
                                  "today are used")
        # A new day, a new quota.
        w.advance(1)
        assert w.envelope("amy@a.example", RECIPIENTS[0]).startswith("250")


def test_one_user_cannot_sink_a_peer(tmp_path: Path) -> None:
    """Six messages a day to one user who rejects them all, four to others
    who accept: Quality(X) falls to -0.20 and stays there, but one user is
    not a verdict. The paper's rule alone would have blocked the peer."""
    with world(tmp_path) as w:
        slow_poisoning(w, days=5)
        assert {p.standing for p in w.points} == {"ok"}
        last = w.points[-1]
        assert last.value < -0.15 and last.deciders == 1
        assert last.reason.endswith("but only 1 of the 3 users needed rejected its mail")
        quality, _ = w.quality(A_HOST)
        paper = dataclasses.replace(w.config.quality, min_deciders=0)
        assert judge(quality, paper).status is Standing.ALERT
        assert w.envelope("amy@a.example", RECIPIENTS[0]).startswith("250")


def test_a_blocked_peer_recovers_through_probation_without_flapping(tmp_path: Path) -> None:
    """Blocked by a flood, the peer then sends only wanted mail: three
    envelopes a day are taken on probation and accepted; as the flood's
    votes age, it leaves the block for an alert, then the alert, once its
    quality is the margin above each threshold, and never goes back."""
    with world(tmp_path) as w:
        taken = recovery(w, days=6)
        standings = [p.standing for p in w.points[2:]]
        assert taken[:2] == [3, 3]  # probation
        assert taken[-1] == 5  # unblocked
        assert standings[0] == "blocked"
        assert standings[-1] == "ok"
        order = {"blocked": 2, "alert": 1, "ok": 0}
        assert all(order[x] >= order[y] for x, y in itertools.pairwise(standings))
        # Hysteresis: the day it left the block its quality was above
        # block_below + margin, not merely above block_below.
        left = next(p for p in w.points[2:] if p.standing != "blocked")
        assert left.value >= -0.4


def test_a_compromised_account_is_blocked_alone(tmp_path: Path) -> None:
    """mallory's account at a good server sends spam to everyone: mallory
    is blocked, the server stays ok, and its other users' mail still goes
    through, told by a.example's own origin."""
    with world(tmp_path) as w:
        *probation, reply = compromised_account(w, days=4)
        assert [r[:3] for r in probation] == ["250"] * 3
        assert reply.startswith("554 5.7.1 <mallory@a.example> at smdp.a.example blocked: "
                                "quality -1.00 is below the block threshold -0.50")
        peers = [p for p in w.points if p.key == A_HOST]
        assert {p.standing for p in peers} == {"ok"}
        mallory = [p for p in w.points if p.key == sender_key(A_HOST, "mallory@a.example")]
        assert mallory[-1].standing == "blocked"
        # Through a.example's real origin: alice's mail is taken, mallory's
        # fails with the block (once the day's probation is used).
        for sender in ("mallory@a.example", "alice@a.example"):
            client = w.a.client(sender)
            client.submit([RECIPIENTS[4]], b"Subject: hello\r\n\r\nhi\r\n")
            client.quit()
        deadline = time.monotonic() + 20
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = {s: _sent_state(w.a, s) for s in ("mallory@a.example", "alice@a.example")}
            if "queued" not in states.values() and "" not in states.values():
                break
            time.sleep(0.1)
        assert states == {"mallory@a.example": "failed", "alice@a.example": "envelope-sent"}


def _sent_state(server: object, user: str) -> str:
    client = server.client(user)  # type: ignore[attr-defined]
    try:
        lines = client.call(wire.Sent(None)).lines or []
        return lines[-1].split()[2] if lines else ""
    finally:
        client.quit()
