"""The words of SMDP: one ``StrEnum`` per concept, and nothing else.

The five decisions, the states a mailbox entry and an outbound recipient go
through, list kinds, delivery modes and queue job kinds are spelled here once.
The rules (``smdp.core``) decide with them, the store keeps their values in
its columns, and each codec (``smdp.protocol``) maps them to its own wire
words in one table. This module sits below all of those, so it imports
nothing of ours.

The values are what the store holds: changing one is a schema migration.
"""

from __future__ import annotations

from enum import StrEnum


class Decision(StrEnum):
    """Table 1's five options, valued by the Table 2 message each one sends.

    The members are named after Table 1 (what the recipient chooses); the
    values are Table 2's SMDP messages (what travels to the origin, and what
    the store records). The user port spells them as Table 5 does
    (``ACCEPT&AUTH``...), the peer port as Table 2 does; each codec's table
    does the spelling.
    """

    ACCEPT = "ACCEPT"
    ACCEPT_AUTH = "AUTHORIZE"
    REJECT = "REJECT"
    REJECT_SPAM = "SPAM"
    REJECT_SPAMMER = "SPAMMER"

    @property
    def accepts(self) -> bool:
        return self in (Decision.ACCEPT, Decision.ACCEPT_AUTH)

    @property
    def table_1(self) -> str:
        """The option as Table 1 names it: ACCEPT&AUTH, REJECT&SPAMMER..."""
        return self.name.replace("_", "&")

    @property
    def word(self) -> str:
        """The option as a command-line argument, a JSON value or a metric
        label spells it: accept, accept-auth, reject, reject-spam, reject-spammer."""
        return self.name.lower().replace("_", "-")


class EntryState(StrEnum):
    """A mailbox entry at the destination: one recipient's copy of one envelope.

    pending -> fetching -> accepted, or pending -> rejected | spam | spammer;
    fetching -> failed when the origin no longer holds the message; pending
    -> expired when nobody decided before the envelope's Expires.
    (docs/architecture.md draws the whole machine.)
    """

    PENDING = "pending"  # an envelope waiting for the recipient's decision
    FETCHING = "fetching"  # accepted; the pull from the origin is queued
    ACCEPTED = "accepted"  # the whole message is in the mailbox
    REJECTED = "rejected"
    SPAM = "spam"
    SPAMMER = "spammer"
    FAILED = "failed"  # the origin no longer holds the message (expired or lost)
    EXPIRED = "expired"  # nobody decided before the envelope's Expires
    APPENDED = "appended"  # written in by an IMAP client (APPEND): not SMDP mail


class RecipientState(StrEnum):
    """One recipient of a sent message, as the sender sees it (``SENT``)."""

    QUEUED = "queued"  # the envelope or message is waiting to be sent
    ENVELOPE_SENT = "envelope-sent"  # waiting for the recipient's decision
    ACCEPTED = "accepted"  # accepted; the destination is pulling the message
    AUTHORIZED = "authorized"  # accepted and authorized; the pull is under way
    DELIVERED = "delivered"  # the destination holds the whole message
    REJECTED = "rejected"
    SPAM = "spam"
    SPAMMER = "spammer"
    REFUSED = "refused"  # Table 3, sender side: recipient on the outbound black list
    FAILED = "failed"  # permanent error; the detail says why
    EXPIRED = "expired"  # nobody decided before the message's hold time ended


class ListKind(StrEnum):
    WHITE = "white"
    BLACK = "black"


class ListDirection(StrEnum):
    """Inbound lists hold (sender, SMDP server) pairs at the recipient's
    server; outbound lists hold recipient addresses at the sender's."""

    INBOUND = "in"
    OUTBOUND = "out"


class ListedBy(StrEnum):
    """How a list entry was made."""

    AUTO = "auto"  # by a decision (Table 2)
    MANUAL = "manual"  # by the user (LISTADD)


class DeliveryMode(StrEnum):
    """How an outbound envelope travels (Table 3, sender side)."""

    ENVELOPE = "envelope"  # the envelope first; the body when it is pulled
    DIRECT = "direct"  # the whole message at once, to white-listed recipients
    SMTP = "smtp"  # the domain has no SMDP server: the whole message by SMTP to its MX


class JobKind(StrEnum):
    """The durable queue's jobs: every step that crosses the network."""

    SEND_ENVELOPE = "send-envelope"  # section 5.2 step 4
    SEND_DIRECT = "send-direct"  # Table 3, sender side: the whole message
    REPORT_DECISION = "report-decision"  # Table 2 to the origin, and the pull (step 7)
    SEND_SMTP = "send-smtp"  # the whole message by SMTP, to a domain without SMDP
    UNSUBSCRIBE = "unsubscribe"  # RFC 8058 one-click POST for a user (UNSUB)


class RouteKind(StrEnum):
    """How an outbound recipient's mail leaves (docs/smtp.md, Routing): by
    SMDP to its domain's SMDP server, or by SMTP to its MX hosts when the
    domain has none. ``SENT`` shows it per recipient."""

    SMDP = "smdp"
    SMTP = "smtp"
