"""Section 5.3: the quality indicator every domain keeps per peer SMDP server.

Messages(X) counts messages received from X; Votes(X) goes up on every accept
and down on every reject by local users; Quality(X) = Votes(X) / Messages(X).
The paper leaves the thresholds to local policy; following PRIOR-ART.md
("act on it only after a minimum number of messages") nothing is decided
before ``min_messages`` messages have been counted.

Issue 16 item 1 layers four rules over the formula (docs/protocol.md 11.3),
each of which can be read off ``judge`` below:

1. the counters age (the store keeps them so: ``Quality.value`` is the
   formula over votes that weigh half as much after every half-life);
2. a worse standing needs ``min_deciders`` distinct local users who rejected
   the peer's mail recently, so one hostile or careless recipient cannot
   sink a peer;
3. hysteresis: a standing is left only once the quality is ``margin`` above
   the threshold that put the peer there (the last standing is stored);
4. a peer blocked by the formula is on probation (``Verdict.probation``):
   the destination still takes ``probation_per_day`` of its envelopes a day,
   for its recipients to judge.

The same verdicts apply to one sending address at a peer (``sender_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from smdp.config import QualityPolicy
from smdp.store.records import Quality


class Standing(StrEnum):
    NEW = "new"  # too few messages to judge
    OK = "ok"
    ALERT = "alert"  # below the alert threshold: the administrator is told
    BLOCKED = "blocked"  # below the block threshold: its envelopes are refused


# How bad each standing is: only a move to a worse one needs the deciders.
_SEVERITY = {Standing.NEW: 0, Standing.OK: 0, Standing.ALERT: 1, Standing.BLOCKED: 2}


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Standing
    reason: str
    # Blocked by the formula, not by the administrator: the destination may
    # still take a few envelopes a day to be judged (rule 4).
    probation: bool = False
    # The administrator allowed this key whatever its quality: for a peer,
    # its senders too (``Destination.sender_refusal``).
    allowed_by_hand: bool = False


BLOCKED_BY_HAND = "blocked"
ALLOWED_BY_HAND = "allowed"

# Keys of the quality kept per sending address at a peer (rule 5, issue 16):
# apart from peers' host names and the MX's ``smtp:`` keys.
SENDER_KEY_PREFIX = "sender:"


def sender_key(server: str, sender: str) -> str:
    """The key under which ``sender``'s own quality at ``server`` is kept."""
    return f"{SENDER_KEY_PREFIX}{server}/{sender}"


def judge(quality: Quality, policy: QualityPolicy) -> Verdict:
    # An administrator's word comes before the formula (issue 13 item 3):
    # a peer blocked by hand stays blocked however its votes go, and one
    # allowed by hand is never blocked or alerted on by them.
    if quality.override == BLOCKED_BY_HAND:
        return Verdict(Standing.BLOCKED, "blocked by the administrator"
                                         + (f": {quality.override_reason}"
                                            if quality.override_reason else ""))
    if quality.override == ALLOWED_BY_HAND:
        return Verdict(Standing.OK, "allowed by the administrator"
                                    + (f": {quality.override_reason}"
                                       if quality.override_reason else ""),
                       allowed_by_hand=True)
    if quality.messages < policy.min_messages:
        return Verdict(Standing.NEW, f"{quality.messages} of {policy.min_messages} "
                                     "messages needed before judging")
    # Quality(X) = Votes(X) / Messages(X), over the aged counters (rule 1).
    q = quality.value
    previous = Standing(quality.standing)
    status, reason = _thresholds(q, previous, policy)
    if worsened(previous, status) and quality.deciders < policy.min_deciders:
        # Rule 2: the evidence is one user's (or a few users'), not the domain's.
        kept = Standing.OK if previous is Standing.NEW else previous
        return Verdict(kept, f"{reason}, but only {quality.deciders} of the "
                             f"{policy.min_deciders} users needed rejected its mail")
    return Verdict(status, reason, probation=status is Standing.BLOCKED)


def worsened(before: Standing, after: Standing) -> bool:
    """Is ``after`` a worse standing than ``before`` (new and ok are alike)?"""
    return _SEVERITY[after] > _SEVERITY[before]


def _thresholds(q: float, previous: Standing, policy: QualityPolicy) -> tuple[Standing, str]:
    """Section 5.3's two thresholds, with rule 3's hysteresis: a peer stays
    blocked (alerted) until ``q`` reaches the threshold plus ``margin``."""
    if q < policy.block_below:
        return Standing.BLOCKED, (f"quality {q:.2f} is below the block threshold "
                                  f"{policy.block_below:.2f}")
    if previous is Standing.BLOCKED and q < policy.block_below + policy.margin:
        return Standing.BLOCKED, _not_yet(q, "block", policy.block_below, policy.margin)
    if q < policy.alert_below:
        return Standing.ALERT, (f"quality {q:.2f} is below the alert threshold "
                                f"{policy.alert_below:.2f}")
    if previous in (Standing.ALERT, Standing.BLOCKED) and q < policy.alert_below + policy.margin:
        return Standing.ALERT, _not_yet(q, "alert", policy.alert_below, policy.margin)
    return Standing.OK, f"quality {q:.2f}"


def _not_yet(q: float, name: str, threshold: float, margin: float) -> str:
    return (f"quality {q:.2f} has not risen to {threshold + margin:.2f} "
            f"(the {name} threshold {threshold:.2f} plus the margin {margin:.2f})")
