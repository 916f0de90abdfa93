"""Section 5.3's verdicts as values (core/quality.py). The thresholds' edges
are tested with the rest of the quality boundaries; this file checks what a
verdict is once made."""

from __future__ import annotations

import dataclasses

import pytest

from smdp.config import QualityPolicy
from smdp.core.quality import Standing, Verdict, judge
from smdp.store.records import Quality


def test_a_verdict_cannot_be_changed_once_made() -> None:
    verdict = judge(Quality("peer.example", 20, -20), QualityPolicy(min_messages=10))
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = Standing.OK  # type: ignore[misc]
    assert not hasattr(verdict, "__dict__")
    assert verdict == Verdict(verdict.status, verdict.reason)


def test_each_verdict_says_why() -> None:
    policy = QualityPolicy(min_messages=10, alert_below=0.0, block_below=-0.5)
    assert judge(Quality("x", 3, 3), policy) == Verdict(
        Standing.NEW, "3 of 10 messages needed before judging")
    assert judge(Quality("x", 10, -8), policy) == Verdict(
        Standing.BLOCKED, "quality -0.80 is below the block threshold -0.50")
    assert judge(Quality("x", 10, -2), policy) == Verdict(
        Standing.ALERT, "quality -0.20 is below the alert threshold 0.00")
    assert judge(Quality("x", 10, 7), policy) == Verdict(Standing.OK, "quality 0.70")


def test_a_peer_past_the_minimum_is_judged_not_new() -> None:
    """Section 5.3's thresholds apply from min_messages on, not only at it."""
    policy = QualityPolicy(min_messages=10, alert_below=0.0, block_below=-0.5)
    assert judge(Quality("x", 11, 11), policy).status == Standing.OK
    assert judge(Quality("x", 400, -400), policy).status == Standing.BLOCKED


def test_an_administrators_word_comes_before_the_formula() -> None:
    """Issue 13 item 3: blocked by hand whatever the votes (a new peer too),
    allowed by hand however low; None hands the peer back to the formula."""
    policy = QualityPolicy(min_messages=10, alert_below=0.0, block_below=-0.5)
    assert judge(Quality("x", 0, 0, "blocked", "phishing wave"), policy) == Verdict(
        Standing.BLOCKED, "blocked by the administrator: phishing wave")
    assert judge(Quality("x", 100, 100, "blocked"), policy) == Verdict(
        Standing.BLOCKED, "blocked by the administrator")
    assert judge(Quality("x", 100, -100, "allowed", "our partner"), policy) == Verdict(
        Standing.OK, "allowed by the administrator: our partner")
    assert judge(Quality("x", 100, -30, "allowed"), policy) == Verdict(
        Standing.OK, "allowed by the administrator")
    assert judge(Quality("x", 100, -100, None, "stale words"), policy).reason == (
        "quality -1.00 is below the block threshold -0.50")
