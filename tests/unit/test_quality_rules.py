"""Section 5.3's verdicts as values (core/quality.py), and the rules issue 16
item 1 layers over the formula: aged counters, distinct deciders, hysteresis
and probation (docs/protocol.md 11.3). The thresholds' edges are tested with
the rest of the quality boundaries; this file checks what a verdict is."""

from __future__ import annotations

import dataclasses

import pytest

from smdp.config import QualityPolicy
from smdp.core.quality import Standing, Verdict, judge, sender_key, worsened
from smdp.store.records import Quality

POLICY = QualityPolicy(min_messages=10, alert_below=0.0, block_below=-0.5, min_deciders=3,
                       margin=0.1)


def peer(messages: int, votes: int, *, deciders: int = 3, standing: str = "new",
         recent: tuple[float, float] | None = None) -> Quality:
    """A peer's counters as the store reads them (``recent``: the aged ones)."""
    m, v = recent if recent is not None else (None, None)
    return Quality("x", messages, votes, recent_messages=m, recent_votes=v,
                   deciders=deciders, standing=standing)


def test_a_verdict_cannot_be_changed_once_made() -> None:
    verdict = judge(peer(20, -20), QualityPolicy(min_messages=10))
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = Standing.OK  # type: ignore[misc]
    assert not hasattr(verdict, "__dict__")
    assert verdict == Verdict(verdict.status, verdict.reason, verdict.probation)


def test_each_verdict_says_why() -> None:
    assert judge(peer(3, 3), POLICY) == Verdict(
        Standing.NEW, "3 of 10 messages needed before judging")
    assert judge(peer(10, -8), POLICY) == Verdict(
        Standing.BLOCKED, "quality -0.80 is below the block threshold -0.50", probation=True)
    assert judge(peer(10, -2), POLICY) == Verdict(
        Standing.ALERT, "quality -0.20 is below the alert threshold 0.00")
    assert judge(peer(10, 7), POLICY) == Verdict(Standing.OK, "quality 0.70")


def test_a_peer_past_the_minimum_is_judged_not_new() -> None:
    """Section 5.3's thresholds apply from min_messages on, not only at it."""
    assert judge(peer(11, 11), POLICY).status == Standing.OK
    assert judge(peer(400, -400), POLICY).status == Standing.BLOCKED
    assert judge(peer(10, 10), POLICY).status == Standing.OK
    assert judge(peer(9, -9), POLICY).status == Standing.NEW


def test_the_thresholds_edges() -> None:
    """Below a threshold, not at it: -0.5 is alert, 0.0 is ok."""
    assert judge(peer(10, -5), POLICY).status == Standing.ALERT
    assert judge(peer(100, -51), POLICY).status == Standing.BLOCKED
    assert judge(peer(10, 0), POLICY).status == Standing.OK
    assert judge(peer(100, -1), POLICY).status == Standing.ALERT


def test_an_administrators_word_comes_before_the_formula() -> None:
    """Issue 13 item 3: blocked by hand whatever the votes (a new peer too),
    allowed by hand however low; None hands the peer back to the formula.
    A block by hand has no probation."""
    assert judge(Quality("x", 0, 0, "blocked", "phishing wave"), POLICY) == Verdict(
        Standing.BLOCKED, "blocked by the administrator: phishing wave")
    assert judge(Quality("x", 100, 100, "blocked"), POLICY) == Verdict(
        Standing.BLOCKED, "blocked by the administrator")
    assert judge(Quality("x", 100, -100, "allowed", "our partner"), POLICY) == Verdict(
        Standing.OK, "allowed by the administrator: our partner", allowed_by_hand=True)
    assert judge(Quality("x", 100, -30, "allowed"), POLICY) == Verdict(
        Standing.OK, "allowed by the administrator", allowed_by_hand=True)
    assert judge(Quality("x", 100, -100, None, "stale words", deciders=3), POLICY).reason == (
        "quality -1.00 is below the block threshold -0.50")


# -- rule 1: aged counters --------------------------------------------------------

def test_the_formula_reads_the_aged_counters() -> None:
    """Old spam aged away, recent mail accepted: judged on the recent weight,
    while min_messages still counts every message ever (Messages(X))."""
    assert judge(peer(100, -80, recent=(4.0, 3.0)), POLICY) == Verdict(
        Standing.OK, "quality 0.75")
    assert judge(peer(100, 80, recent=(4.0, -3.0)), POLICY).status is Standing.BLOCKED
    # Few recent messages do not make a judged peer new again.
    assert judge(peer(10, 10, recent=(0.5, -0.5)), POLICY).status is Standing.BLOCKED


def test_quality_is_held_to_its_range() -> None:
    """A vote aged less than its message may outweigh it: still in [-1, 1]."""
    assert peer(10, 10, recent=(1.0, 1.5)).value == 1.0
    assert peer(10, -10, recent=(1.0, -1.5)).value == -1.0
    assert peer(10, 10, recent=(0.0, 0.0)).value == 0.0
    assert peer(0, 0).value == 0.0
    assert peer(4, -1).value == -0.25


# -- rule 2: distinct deciders ------------------------------------------------------

def test_one_user_cannot_sink_a_peer() -> None:
    """A worse standing needs min_deciders users who rejected its mail."""
    assert judge(peer(10, -10, deciders=2), POLICY) == Verdict(
        Standing.OK, "quality -1.00 is below the block threshold -0.50, but only 2 of the "
                     "3 users needed rejected its mail")
    assert judge(peer(10, -10, deciders=3), POLICY).status is Standing.BLOCKED
    assert judge(peer(10, -2, deciders=1), POLICY).status is Standing.OK
    assert judge(peer(10, -2, deciders=1, standing="ok"), POLICY).status is Standing.OK


def test_an_alerted_peer_needs_the_deciders_to_be_blocked() -> None:
    assert judge(peer(10, -10, deciders=2, standing="alert"), POLICY) == Verdict(
        Standing.ALERT, "quality -1.00 is below the block threshold -0.50, but only 2 of the "
                        "3 users needed rejected its mail")


def test_staying_or_improving_needs_no_deciders() -> None:
    """The deciders of a block may age out: the block stays (probation is
    the way back), and a better standing is never held back by them."""
    assert judge(peer(10, -10, deciders=0, standing="blocked"), POLICY) == Verdict(
        Standing.BLOCKED, "quality -1.00 is below the block threshold -0.50", probation=True)
    assert judge(peer(10, -2, deciders=0, standing="alert"), POLICY) == Verdict(
        Standing.ALERT, "quality -0.20 is below the alert threshold 0.00")
    assert judge(peer(10, 7, deciders=0, standing="new"), POLICY) == Verdict(
        Standing.OK, "quality 0.70")
    assert judge(peer(10, 7, deciders=0, standing="ok"), POLICY) == Verdict(
        Standing.OK, "quality 0.70")
    assert judge(peer(10, -2, deciders=0, standing="alert"), POLICY).status is Standing.ALERT
    assert judge(peer(10, -2, deciders=0, standing="blocked"), POLICY).status is Standing.ALERT
    assert judge(peer(10, 10, deciders=0, standing="blocked"), POLICY).status is Standing.OK


def test_min_deciders_one_is_the_papers_rule() -> None:
    policy = dataclasses.replace(POLICY, min_deciders=1)
    assert judge(peer(10, -10, deciders=1), policy).status is Standing.BLOCKED
    assert judge(peer(10, -10, deciders=0), policy).status is Standing.OK


# -- rule 3: hysteresis ----------------------------------------------------------------

def test_a_blocked_peer_leaves_only_above_threshold_plus_margin() -> None:
    assert judge(peer(100, -45, standing="blocked"), POLICY) == Verdict(
        Standing.BLOCKED, "quality -0.45 has not risen to -0.40 (the block threshold -0.50 "
                          "plus the margin 0.10)", probation=True)
    assert judge(peer(100, -40, standing="blocked"), POLICY) == Verdict(
        Standing.ALERT, "quality -0.40 is below the alert threshold 0.00")
    # Not blocked before: the same quality is an alert.
    assert judge(peer(100, -45, standing="alert"), POLICY).status is Standing.ALERT
    assert judge(peer(100, -45, standing="ok"), POLICY).status is Standing.ALERT


def test_an_alerted_peer_leaves_only_above_threshold_plus_margin() -> None:
    assert judge(peer(100, 5, standing="alert"), POLICY) == Verdict(
        Standing.ALERT, "quality 0.05 has not risen to 0.10 (the alert threshold 0.00 "
                        "plus the margin 0.10)")
    assert judge(peer(100, 5, standing="blocked"), POLICY).status is Standing.ALERT
    assert judge(peer(100, 10, standing="alert"), POLICY) == Verdict(Standing.OK, "quality 0.10")
    assert judge(peer(100, 5, standing="ok"), POLICY) == Verdict(Standing.OK, "quality 0.05")
    assert judge(peer(100, 5, standing="new"), POLICY).status is Standing.OK


def test_no_margin_no_hysteresis() -> None:
    policy = dataclasses.replace(POLICY, margin=0.0)
    assert judge(peer(100, -50, standing="blocked"), policy).status is Standing.ALERT
    assert judge(peer(100, 0, standing="alert"), policy).status is Standing.OK


# -- rule 4: probation -------------------------------------------------------------

def test_only_a_block_by_the_formula_is_on_probation() -> None:
    assert judge(peer(10, -10), POLICY).probation
    assert judge(peer(100, -45, standing="blocked"), POLICY).probation
    assert not judge(Quality("x", 10, -10, "blocked", deciders=3), POLICY).probation
    assert not judge(peer(10, -2), POLICY).probation
    assert not judge(peer(10, 10), POLICY).probation
    assert not judge(peer(3, -3), POLICY).probation


# -- rule 5: per sender ------------------------------------------------------------

def test_a_senders_key_is_apart_from_its_servers() -> None:
    assert sender_key("smdp.a.example", "mallory@a.example") == (
        "sender:smdp.a.example/mallory@a.example")


def test_new_and_ok_are_alike_and_alert_and_block_are_worse() -> None:
    assert not worsened(Standing.NEW, Standing.OK)
    assert not worsened(Standing.OK, Standing.NEW)
    assert not worsened(Standing.OK, Standing.OK)
    assert worsened(Standing.OK, Standing.ALERT) and worsened(Standing.NEW, Standing.ALERT)
    assert worsened(Standing.ALERT, Standing.BLOCKED) and worsened(Standing.OK, Standing.BLOCKED)
    assert not worsened(Standing.BLOCKED, Standing.ALERT)
    assert not worsened(Standing.BLOCKED, Standing.BLOCKED)
    assert not worsened(Standing.ALERT, Standing.OK)
