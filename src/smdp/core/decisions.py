"""Tables 1 and 2 of the paper, as data.

Table 1 lists the five options a recipient has (``smdp.terms.Decision``: the
members are the options, the values the SMDP messages they send); Table 2 says
what each SMDP message does at the recipient's server and at the origin. Both
tables read off ``TABLE_2`` below; the services in ``destination.py`` and
``origin.py`` apply these effects and nothing else decides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from smdp.store.records import MailboxEntry
from smdp.terms import Decision, EntryState, RecipientState


@dataclass(frozen=True, slots=True)
class RecipientSide:
    """Table 2, column "at the recipient's SMDP"."""

    add_to_white_list: bool  # add (sender, SMDP) to the user's inbound white list
    add_to_black_list: bool  # add (sender, SMDP) to the user's inbound black list
    vote: int  # section 5.3: Votes(X) +1 for every accept, -1 for every reject
    state: EntryState  # the mailbox entry's state once decided


@dataclass(frozen=True, slots=True)
class OriginSide:
    """Table 2, column "at the origin SMDP"."""

    send_message: bool  # send the entire message
    add_to_white_list: bool  # add the recipient to the sender's outbound white list
    add_to_black_list: bool  # add the recipient to the sender's outbound black list
    report_spam: bool  # "investigate with sender": a spam report against the sender
    state: RecipientState  # the recipient's state as the sender sees it


# Table 2, row by row. Every reject-family message also deletes the message at
# the origin (assumption 6: "the message is deleted in its origin"); the
# origin drops a body once no recipient needs it any more.
TABLE_2: dict[Decision, tuple[RecipientSide, OriginSide]] = {
    Decision.ACCEPT: (
        RecipientSide(False, False, +1, EntryState.ACCEPTED),
        OriginSide(True, False, False, False, RecipientState.ACCEPTED),
    ),
    Decision.ACCEPT_AUTH: (
        RecipientSide(True, False, +1, EntryState.ACCEPTED),
        OriginSide(True, True, False, False, RecipientState.AUTHORIZED),
    ),
    Decision.REJECT: (
        RecipientSide(False, False, -1, EntryState.REJECTED),
        OriginSide(False, False, False, False, RecipientState.REJECTED),
    ),
    Decision.REJECT_SPAM: (
        RecipientSide(False, False, -1, EntryState.SPAM),
        OriginSide(False, False, False, True, RecipientState.SPAM),
    ),
    Decision.REJECT_SPAMMER: (
        RecipientSide(False, True, -1, EntryState.SPAMMER),
        OriginSide(False, False, True, True, RecipientState.SPAMMER),
    ),
}


def recipient_side(decision: Decision) -> RecipientSide:
    return TABLE_2[decision][0]


def origin_side(decision: Decision) -> OriginSide:
    return TABLE_2[decision][1]


# Mailbox entries a reject-family decision closed: no accept may follow.
REJECTED_ENTRIES = frozenset({EntryState.REJECTED, EntryState.SPAM, EntryState.SPAMMER})
# Entries whose message can no longer be fetched.
LOST_ENTRIES = frozenset({EntryState.FAILED, EntryState.EXPIRED})
# Entries still open when their envelope expires.
OPEN_ENTRIES = frozenset({EntryState.PENDING, EntryState.FETCHING})
# Entries for which the bytes of mail that arrived by SMTP are kept (issue
# 12): undecided, or accepted. Once none is left, the bytes are freed.
KEEPS_SMTP_BODY = frozenset({EntryState.PENDING, EntryState.FETCHING, EntryState.ACCEPTED})

# Recipients who rejected: the origin refuses an accept after it.
REJECTED_RECIPIENTS = frozenset(
    {RecipientState.REJECTED, RecipientState.SPAM, RecipientState.SPAMMER}
)
# Recipients whose message is gone for good.
LOST_RECIPIENTS = frozenset({RecipientState.FAILED, RecipientState.EXPIRED})
# Recipients being pulled: RECEIVED turns them into ``delivered``.
PULLING_RECIPIENTS = frozenset({RecipientState.ACCEPTED, RecipientState.AUTHORIZED})
# States in which the origin still needs the body for this recipient
# (assumptions 4 and 6: held until every recipient has decided).
NEEDS_BODY = frozenset(
    {RecipientState.QUEUED, RecipientState.ENVELOPE_SENT} | PULLING_RECIPIENTS
)


# -- one recipient, several entries: a local group (docs/lists.md) -------------------

#: Of several rejections of one message, the one its origin hears: the one
#: whose origin side (Table 2) does most.
REJECTION_STRENGTH = {Decision.REJECT: 1, Decision.REJECT_SPAM: 2, Decision.REJECT_SPAMMER: 3}


def reported_entry(entry: MailboxEntry, decision: Decision,
                   shared: Sequence[MailboxEntry]) -> int | None:
    """The entry whose decision goes to the origin now that ``entry`` was
    decided, if any. ``shared``: every entry of the envelope under the same
    recipient, ``entry`` among them; several where a local group's members
    each have one under the group's address, which is all the origin knows.

    Each acceptance goes (the first pulls the message; the others name the
    copy held here). A rejection deletes the message at the origin
    (assumption 6), so it goes only once no other member is undecided or has
    accepted, and then as the strongest rejection among them
    (``REJECTION_STRENGTH``): the origin hears SPAM or SPAMMER if any member
    said it."""
    if decision.accepts:
        return entry.id
    if any(e.id != entry.id and (e.state is EntryState.PENDING
                                 or (e.decision is not None and e.decision.accepts))
           for e in shared):
        return None
    rejected = [e for e in shared if e.decision is not None]
    return max(rejected, key=lambda e: REJECTION_STRENGTH.get(e.decision or Decision.REJECT, 0),
               default=entry).id
