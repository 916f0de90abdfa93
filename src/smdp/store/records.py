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

    @property
    def value(self) -> float:
        """Section 5.3: Quality(X) = Votes(X) / Messages(X), in [-1, 1]."""
        return self.votes / self.messages if self.messages else 0.0


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
