"""What the rules answer: a kind and a reason, never a reply code.

The core decides; each port says it in its own words. The peer port maps an
``Outcome`` to an SMTP-style code and enhanced status (``server/replies.py``),
the user port to ``+OK``/``-ERR``, and later doors (SMTP, IMAP, the web) to
theirs, each in one table. ``reason`` is the sentence a person reads after
the code; it names what was refused and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    # Done as asked (a decision recorded, a transfer confirmed, a list edited).
    DONE = "done"
    # Nothing to do: it was already so (a decision repeated, accept after accept).
    UNCHANGED = "unchanged"
    # An accepting decision the origin answers with the whole message (step 7).
    PULL = "pull"
    # The envelope, entry, message or list entry named does not exist (for
    # the one asking: another user's entry is unknown too).
    UNKNOWN = "unknown"
    # The address named is not a recipient of the envelope named.
    NOT_A_RECIPIENT = "not-a-recipient"
    # Assumption 6: a rejected message was deleted; no accept can follow.
    ALREADY_REJECTED = "already-rejected"
    # The message is no longer held (expired, failed, dropped).
    NOT_HELD = "not-held"
    # Section 5.3: the peer's quality is below the block threshold.
    PEER_BLOCKED = "peer-blocked"
    # Assumption 3: the address is not one of the user's identities.
    NOT_YOUR_IDENTITY = "not-your-identity"
    # The request itself is malformed (unknown list, bad address...).
    INVALID = "invalid"
    # The user's sending is suspended (issue 4: reported as a spammer).
    SUSPENDED = "suspended"
    # A submitted message is over the size limit (with the fields the origin adds).
    TOO_LARGE = "too-large"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    reason: str

    @property
    def ok(self) -> bool:
        return self.kind in (Kind.DONE, Kind.UNCHANGED, Kind.PULL)


@dataclass(frozen=True, slots=True)
class DecisionOutcome(Outcome):
    """The origin's answer to a decision (Table 2, origin column). With
    ``Kind.PULL`` the stored message whose body follows, and its size: the
    adapter streams it from the store a chunk at a time (it is held until
    RECEIVED, so it stays put), and when it was submitted (the delivery
    time's start)."""

    pull_message_id: int | None = None
    pull_size: int = 0
    pull_created_at: float = 0.0
