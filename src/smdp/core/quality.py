"""Section 5.3: the quality indicator every domain keeps per peer SMDP server.

Messages(X) counts messages received from X; Votes(X) goes up on every accept
and down on every reject by local users; Quality(X) = Votes(X) / Messages(X).
The paper leaves the thresholds to local policy; following PRIOR-ART.md
("act on it only after a minimum number of messages") nothing is decided
before ``min_messages`` messages have been counted.
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


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Standing
    reason: str


BLOCKED_BY_HAND = "blocked"
ALLOWED_BY_HAND = "allowed"


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
                                       if quality.override_reason else ""))
    q = quality.value
    if quality.messages < policy.min_messages:
        return Verdict(Standing.NEW, f"{quality.messages} of {policy.min_messages} "
                                     "messages needed before judging")
    if q < policy.block_below:
        return Verdict(Standing.BLOCKED, f"quality {q:.2f} is below the block threshold "
                                  f"{policy.block_below:.2f}")
    if q < policy.alert_below:
        return Verdict(Standing.ALERT, f"quality {q:.2f} is below the alert threshold "
                                f"{policy.alert_below:.2f}")
    return Verdict(Standing.OK, f"quality {q:.2f}")
