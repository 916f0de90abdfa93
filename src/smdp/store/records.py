"""Plain records the storage layer hands to the domain core (no SQL leaks out).

States, kinds and modes come back as the enums of ``smdp.terms``: a value the
enums do not know is a corrupt row and fails loudly where it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from smdp.terms import (
    Decision,
    DeliveryMode,
    EntryState,
    JobKind,
    ListDirection,
    ListedBy,
    ListKind,
    RecipientState,
    RouteKind,
)


@dataclass(frozen=True, slots=True)
class User:
    id: int
    main_address: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class OutMessage:
    id: int
    msgid: str
    user_id: int
    sender: str
    size: int
    subject: str
    summary: str
    created_at: float
    expires_at: float
    held: bool  # the body is still held at the origin


@dataclass(frozen=True, slots=True)
class OutEnvelope:
    envid: str
    message_id: int
    domain: str
    mode: DeliveryMode


@dataclass(frozen=True, slots=True)
class OutRecipient:
    id: int
    message_id: int
    envid: str | None
    recipient: str
    domain: str
    state: RecipientState
    detail: str
    updated_at: float
    route: RouteKind = RouteKind.SMDP  # how the mail leaves (migration 0009)


@dataclass(frozen=True, slots=True)
class InEnvelope:
    id: int
    envid: str
    origin_server: str
    sender: str
    size: int
    block: str
    subject: str
    received_at: float
    has_body: bool
    # Migration 0010: arrived by SMTP at the MX (its Authentication-Results
    # value; None for an envelope from an SMDP peer), and the From domain
    # sender authentication verified (None when nothing was verified).
    smtp_auth: str | None = None
    verified_domain: str | None = None
    mail_from: str | None = None  # the SMTP reverse-path ("" for <>)
    client_prefix: str | None = None  # the SMTP client's /24 or /48

    @property
    def via_smtp(self) -> bool:
        return self.smtp_auth is not None


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    id: int
    user_id: int
    envelope_id: int
    recipient: str
    state: EntryState
    decision: Decision | None
    reason: str
    decided_at: float | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class MailboxCounts:
    """A user's mailbox in four numbers, kept by triggers in the transaction
    of every change (migration 0017): what a login and STAT read instead of
    the mailbox."""

    pending: int  # entries awaiting a decision (not deleted)
    messages: int  # the POP3 maildrop: entries accepted, not deleted
    octets: int  # the maildrop's size as RETR sends it
    serial: int  # changes whenever the maildrop does (an entry in or out, a size)


@dataclass(frozen=True, slots=True)
class ImapMessage:
    """A mailbox entry as an IMAP mailbox shows it (migration 0013): its UID
    there and its flags, a bit set (``smdp.server.imap_server`` names them),
    with what reading it needs of the entry."""

    entry_id: int
    uid: int
    flags: int
    envelope_id: int
    recipient: str
    # Of the envelope, so that a listing (FETCH 1:* RFC822.SIZE) needs no
    # query per message: as in InEnvelope.
    size: int
    received_at: float
    has_body: bool
    sender: str
    mail_from: str | None


@dataclass(frozen=True, slots=True)
class ImapListed:
    """A message of an IMAP mailbox defined by state and placement (migration
    0018): the entry as ``ImapMessage`` has it, its state, and where the user
    placed it by hand (None when it shows by its state alone) and whether it
    shows the real message there."""

    message: ImapMessage
    state: str
    folder: str | None
    body: bool


@dataclass(frozen=True, slots=True)
class ImapSent:
    """A sent message as IMAP's Sent shows it (migration 0018): its UID
    there and the recipients' states its summary was written with (None
    before it has one), and the states now, one "recipient state" line
    each, by recipient."""

    message: OutMessage
    uid: int | None
    shown: str | None
    states: str


@dataclass(frozen=True, slots=True)
class Quality:
    server: str
    messages: int
    votes: int
    # An administrator's word on this peer, above the formula (migration
    # 0011): "blocked" or "allowed", None when the formula decides.
    override: str | None = None
    override_reason: str = ""
    override_at: float | None = None
    # Issue 16 item 1 (migration 0014). The same two counters aged: each
    # message and vote weighs half as much after every half-life, as of the
    # moment they were read. None: not aged (the counters as counted).
    recent_messages: float | None = None
    recent_votes: float | None = None
    # Distinct local users who rejected this peer's mail within the last
    # half-life (a worse standing needs ``min_deciders`` of them).
    deciders: int = 0
    # The standing last judged (core/quality.py's Standing, kept for the
    # hysteresis) and since when.
    standing: str = "new"
    standing_at: float | None = None

    @property
    def value(self) -> float:
        """Section 5.3: Quality(X) = Votes(X) / Messages(X), in [-1, 1], over
        the aged counters when there are any. Read to six decimals: the aged
        ones carry rounding errors that must not put a peer at 0.00 below a
        threshold of 0.00; and held to [-1, 1] against the same."""
        messages = self.messages if self.recent_messages is None else self.recent_messages
        votes = self.votes if self.recent_votes is None else self.recent_votes
        # (+ 0.0 turns a rounded -0.0 into 0.0, which prints without its sign.)
        return max(-1.0, min(1.0, round(votes / messages, 6) + 0.0)) if messages > 0 else 0.0


@dataclass(frozen=True, slots=True)
class InboundListing:
    """Where one (sender, server) pair stands on a user's inbound lists, and
    what put it there (migration 0012): the evidence of an automatic verdict."""

    kind: ListKind
    how: ListedBy
    added_at: float
    source_entry: int | None  # the mailbox entry whose decision listed it
    source_decision: Decision | None


@dataclass(frozen=True, slots=True)
class ListEntry:
    direction: ListDirection
    kind: ListKind
    address: str
    server: str | None  # inbound entries only
    how: ListedBy
    added_at: float
    uses: int
    last_used: float | None = None  # when Table 3 last matched it


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A named token of the web API (migration 0016); only its hash is kept."""

    id: int
    user_id: int
    name: str
    created_at: float
    last_used: float | None


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: JobKind
    key: str
    payload: str
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A queue row as the administrator sees it: when it runs next, whose
    work it is (the peer: the destination domain of an outbound envelope,
    the origin server of a decision), and how it went so far."""

    id: int
    kind: str
    key: str
    attempts: int
    last_error: str
    next_attempt: float
    created_at: float
    claimed_until: float | None
    peer: str


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A domain's MTA-STS policy as the store keeps it (migration 0008): the
    body as served, parsed again by whoever reads it."""

    domain: str
    policy_id: str
    policy: str
    fetched_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """One user's request to leave the list that sent a mailbox entry
    (UNSUB, migration 0015): how, where to, and what came of it."""

    id: int
    entry_id: int
    user_id: int
    method: str  # "one-click" (RFC 8058 POST) or "mailto" (RFC 2369)
    target: str
    state: str  # "pending", "done" or "failed"
    detail: str
    requested_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class Group:
    """An address of ours that expands to its members at submission
    (migration 0015; docs/lists.md): an alias or a list."""

    id: int
    address: str
    kind: str  # "alias" or "list"
    owner_id: int | None
    created_at: float


@dataclass(frozen=True, slots=True)
class GroupDelivery:
    """One member's recipient of one message a group expanded (the owner's
    view): the member's state as SENT shows it."""

    msgid: str
    created_at: float
    subject: str
    recipient: str
    state: RecipientState
    detail: str
