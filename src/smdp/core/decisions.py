"""Tables 1 and 2 of the paper, as data.

Table 1 lists the five options a recipient has; Table 2 says what each SMDP
message does at the recipient's server and at the origin. Both tables read off
``OPTIONS`` and ``TABLE_2`` below; the services in ``destination.py`` and
``origin.py`` apply these effects and nothing else decides them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SmdpMessage(enum.Enum):
    """Table 2: the messages a destination sends to the origin (wire verbs)."""

    ACCEPT = "ACCEPT"
    AUTHORIZE = "AUTHORIZE"
    REJECT = "REJECT"
    SPAM = "SPAM"
    SPAMMER = "SPAMMER"

    @property
    def accepts(self) -> bool:
        return self in (SmdpMessage.ACCEPT, SmdpMessage.AUTHORIZE)


class Option(enum.Enum):
    """Table 1: the recipient's options (user-port verbs of Table 5)."""

    ACCEPT = "ACCEPT"
    ACCEPT_AUTH = "ACCEPT&AUTH"
    REJECT = "REJECT"
    REJECT_SPAM = "REJECT&SPAM"
    REJECT_SPAMMER = "REJECT&SPAMMER"


@dataclass(frozen=True, slots=True)
class RecipientSide:
    """Table 2, column "at the recipient's SMDP"."""

    add_to_white_list: bool  # add (sender, SMDP) to the user's inbound white list
    add_to_black_list: bool  # add (sender, SMDP) to the user's inbound black list
    vote: int  # section 5.3: Votes(X) +1 for every accept, -1 for every reject
    state: str  # the mailbox entry's state once decided


@dataclass(frozen=True, slots=True)
class OriginSide:
    """Table 2, column "at the origin SMDP"."""

    send_message: bool  # send the entire message
    add_to_white_list: bool  # add the recipient to the sender's outbound white list
    add_to_black_list: bool  # add the recipient to the sender's outbound black list
    report_spam: bool  # "investigate with sender": a spam report against the sender
    state: str  # the recipient's state as the sender sees it


# Table 1: option -> the SMDP message it sends.
OPTIONS: dict[Option, SmdpMessage] = {
    Option.ACCEPT: SmdpMessage.ACCEPT,
    Option.ACCEPT_AUTH: SmdpMessage.AUTHORIZE,
    Option.REJECT: SmdpMessage.REJECT,
    Option.REJECT_SPAM: SmdpMessage.SPAM,
    Option.REJECT_SPAMMER: SmdpMessage.SPAMMER,
}

# Table 2, row by row. Every reject-family message also deletes the message at
# the origin (assumption 6: "the message is deleted in its origin"); the
# origin drops a body once no recipient needs it any more.
TABLE_2: dict[SmdpMessage, tuple[RecipientSide, OriginSide]] = {
    SmdpMessage.ACCEPT: (
        RecipientSide(False, False, +1, "accepted"),
        OriginSide(True, False, False, False, "accepted"),
    ),
    SmdpMessage.AUTHORIZE: (
        RecipientSide(True, False, +1, "accepted"),
        OriginSide(True, True, False, False, "authorized"),
    ),
    SmdpMessage.REJECT: (
        RecipientSide(False, False, -1, "rejected"),
        OriginSide(False, False, False, False, "rejected"),
    ),
    SmdpMessage.SPAM: (
        RecipientSide(False, False, -1, "spam"),
        OriginSide(False, False, False, True, "spam"),
    ),
    SmdpMessage.SPAMMER: (
        RecipientSide(False, True, -1, "spammer"),
        OriginSide(False, False, True, True, "spammer"),
    ),
}


def recipient_side(message: SmdpMessage) -> RecipientSide:
    return TABLE_2[message][0]


def origin_side(message: SmdpMessage) -> OriginSide:
    return TABLE_2[message][1]


# Mailbox entry states at the destination.
PENDING = "pending"  # an envelope waiting for the recipient's decision
FETCHING = "fetching"  # accepted; the pull from the origin is queued
ACCEPTED = "accepted"  # the whole message is in the mailbox
REJECTED_STATES = frozenset({"rejected", "spam", "spammer"})
FAILED = "failed"  # the origin no longer holds the message (it expired or was lost)

# Recipient states at the origin, as the sender sees them (SENT command).
OUT_QUEUED = "queued"  # the envelope or message is waiting to be sent
OUT_ENVELOPE_SENT = "envelope-sent"  # waiting for the recipient's decision
OUT_REFUSED = "refused"  # Table 3, sender side: recipient on the outbound black list
OUT_DELIVERED = "delivered"  # the destination holds the whole message
OUT_FAILED = "failed"  # permanent error; the detail says why
# States in which the origin still needs the body for this recipient.
OUT_NEEDS_BODY = frozenset({OUT_QUEUED, OUT_ENVELOPE_SENT, "accepted", "authorized"})
