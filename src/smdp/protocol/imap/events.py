"""The IMAP port's events (RFC 9051, RFC 3501; docs/imap.md).

One small immutable class per command, as on the other ports: the server
connection (``connection.py``) emits them once a command has been read whole
(literals included) and its arguments checked, so the application never sees
a malformed command. Every command carries the client's ``tag``, which its
tagged answer repeats.

Two events are not commands but the line a command asked for with a
continuation request ("+"): :class:`AuthenticateData` (the SASL response after
AUTHENTICATE) and :class:`IdleDone` (the DONE that ends IDLE).
"""

from __future__ import annotations

from typing import TypeAlias

from smdp.mail.body import Body
from smdp.protocol._events import event

__all__ = [
    "Append",
    "Authenticate",
    "AuthenticateData",
    "Capability",
    "Check",
    "Close",
    "Copy",
    "Create",
    "Delete",
    "Enable",
    "Expunge",
    "Fetch",
    "FetchAtt",
    "Idle",
    "IdleDone",
    "ImapEvent",
    "ListCmd",
    "Login",
    "Logout",
    "Move",
    "Namespace",
    "Noop",
    "Rename",
    "Search",
    "SearchKey",
    "Select",
    "SequenceSet",
    "StartTls",
    "Status",
    "Store",
    "Subscribe",
    "Unselect",
]


@event
class SequenceSet:
    """A sequence set (RFC 9051 section 9, ``sequence-set``): ranges of message
    numbers or UIDs, each end a number or None for ``*`` (the largest in use).

    ``1:3,7,9:*`` is ``((1, 3), (7, 7), (9, None))``. Ranges keep the order and
    direction the client wrote (``5:2`` means 2 to 5); :meth:`contains` reads
    them as the RFC does.
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    #: ``$`` (RFC 5182 SEARCHRES): the messages the last ``SEARCH RETURN
    #: (SAVE)`` found; ``ranges`` is empty then, the session knows which.
    saved: bool = False

    def contains(self, value: int, largest: int) -> bool:
        """Whether ``value`` is in the set when ``*`` stands for ``largest``.

        RFC 9051 6.4.8: with ``*`` the largest UID (or message number) in use,
        ``n:*`` includes that message even when ``n`` is beyond it.
        """
        for first, last in self.ranges:
            a = largest if first is None else first
            b = largest if last is None else last
            if min(a, b) <= value <= max(a, b):
                return True
        return False


@event
class Capability:
    tag: str


@event
class Noop:
    tag: str


@event
class Logout:
    tag: str


@event
class StartTls:
    tag: str


@event
class Login:
    """LOGIN user password (both astrings: atoms, quoted strings or literals)."""

    tag: str
    user: str
    password: str


@event
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (RFC 9051 6.2.2, RFC 4959).

    ``initial`` is the decoded initial response; None when the client sent
    none and waits for a continuation request. ``b""`` is the SASL-IR ``=``.
    """

    tag: str
    mechanism: str
    initial: bytes | None = None


@event
class AuthenticateData:
    """The client's line after AUTHENTICATE's "+": decoded, or None for ``*``
    (the client cancels; RFC 9051 6.2.2 wants a tagged BAD then)."""

    tag: str
    data: bytes | None


@event
class Enable:
    tag: str
    capabilities: tuple[str, ...]


@event
class Namespace:
    tag: str


@event
class ListCmd:
    """LIST reference pattern(s), with RFC 5258's options, and LSUB
    (``subscribed_only``; an IMAP4rev1 command that many clients still send).

    ``patterns``: one, or several (``LIST "" ("INBOX" "Sent")``);
    ``selection``: the selection options, upper case (SUBSCRIBED, REMOTE,
    RECURSIVEMATCH, SPECIAL-USE); ``returns``: the return options but
    STATUS (SUBSCRIBED, CHILDREN, SPECIAL-USE); ``status``: the STATUS items
    of ``RETURN (STATUS (...))`` (RFC 5819), empty when not asked."""

    tag: str
    reference: str
    patterns: tuple[str, ...]
    subscribed_only: bool = False
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status: tuple[str, ...] = ()


@event
class Subscribe:
    """SUBSCRIBE or UNSUBSCRIBE (IMAP4rev1 clients): every mailbox we have is
    always subscribed, so the answer is OK either way."""

    tag: str
    mailbox: str
    subscribe: bool = True


@event
class Status:
    tag: str
    mailbox: str
    items: tuple[str, ...]


@event
class Select:
    """SELECT, or EXAMINE (``readonly``)."""

    tag: str
    mailbox: str
    readonly: bool = False


@event
class FetchAtt:
    """One FETCH data item (RFC 9051 6.4.5).

    ``name`` is upper case: ``FLAGS``, ``UID``, ``RFC822.SIZE``,
    ``INTERNALDATE``, ``ENVELOPE``, ``BODY`` (with ``section``) and the
    IMAP4rev1 names ``RFC822``, ``RFC822.HEADER``, ``RFC822.TEXT``.
    ``section`` is ``""`` (the whole message), ``"HEADER"``, ``"TEXT"``,
    ``"HEADER.FIELDS"`` or ``"HEADER.FIELDS.NOT"`` (with ``fields``, upper
    case: the header fields wanted, or not wanted); ``partial`` is
    ``(start, length)`` from ``<start.length>``. ``BINARY`` (``peek`` for
    BINARY.PEEK) and ``BINARY.SIZE`` (RFC 3516) have a part number, or
    ``""``, as ``section``.
    """

    name: str
    section: str | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False
    fields: tuple[str, ...] = ()


@event
class Fetch:
    tag: str
    messages: SequenceSet
    items: tuple[FetchAtt, ...]
    uid: bool = False


@event
class SearchKey:
    """One search criterion (RFC 9051 6.4.4) as a small tree.

    ``name`` is ``ALL``, a flag test (``SEEN``, ``UNSEEN``, ``DELETED``,
    ``UNDELETED``, ``FLAGGED``, ``UNFLAGGED``, ``ANSWERED``, ``UNANSWERED``,
    ``DRAFT``, ``UNDRAFT``), ``UID`` or ``SEQ`` (with ``messages``), ``NOT``
    (one key in ``keys``), ``OR`` (two) or ``AND`` (a parenthesised list);
    the keys that read messages carry ``text``: ``SUBJECT``, ``FROM``,
    ``TO``, ``CC``, ``BCC``, ``BODY``, ``TEXT``, ``HEADER`` (and ``field``,
    upper case), ``KEYWORD``, ``UNKEYWORD``; ``date`` (year, month, day):
    ``BEFORE``, ``ON``, ``SINCE``, ``SENTBEFORE``, ``SENTON``,
    ``SENTSINCE``; ``number``: ``LARGER``, ``SMALLER``. ``NEW``, ``OLD``,
    ``RECENT`` (IMAP4rev1) take nothing.
    """

    name: str
    messages: SequenceSet | None = None
    keys: tuple[SearchKey, ...] = ()
    text: str = ""
    field: str = ""
    date: tuple[int, int, int] | None = None
    number: int = 0


@event
class Search:
    """SEARCH, or UID SEARCH; ``returns``: the RFC 4731 result options of
    ``SEARCH RETURN (...)`` (MIN, MAX, COUNT, ALL, and RFC 5182's SAVE;
    empty means ALL), None for a plain SEARCH."""

    tag: str
    criteria: SearchKey
    uid: bool = False
    returns: tuple[str, ...] | None = None


@event
class Store:
    """STORE set [+|-]FLAGS[.SILENT] (flags); ``mode`` is ``+``, ``-`` or ``""``
    (replace)."""

    tag: str
    messages: SequenceSet
    mode: str
    flags: tuple[str, ...]
    silent: bool = False
    uid: bool = False


@event
class Expunge:
    """EXPUNGE, or UID EXPUNGE set (``messages``; RFC 4315, RFC 9051)."""

    tag: str
    messages: SequenceSet | None = None


@event
class Move:
    """MOVE set mailbox, or UID MOVE (RFC 6851)."""

    tag: str
    messages: SequenceSet
    mailbox: str
    uid: bool = False


@event
class Copy:
    """COPY set mailbox, or UID COPY (RFC 9051 6.4.7)."""

    tag: str
    messages: SequenceSet
    mailbox: str
    uid: bool = False


@event
class Append:
    """APPEND mailbox [(flags)] [date-time] message (RFC 9051 6.3.12). The
    message is its literal: ``bytes`` within the codec's literal limit, a
    :class:`~smdp.mail.body.Body` (spooled to a file once large) when it
    was longer, up to the connection's ``max_append``."""

    tag: str
    mailbox: str
    message: bytes | Body
    flags: tuple[str, ...] = ()
    date: str | None = None


@event
class Create:
    """CREATE mailbox (RFC 9051 6.3.4)."""

    tag: str
    mailbox: str


@event
class Delete:
    """DELETE mailbox (RFC 9051 6.3.5)."""

    tag: str
    mailbox: str


@event
class Rename:
    """RENAME old new (RFC 9051 6.3.6)."""

    tag: str
    old: str
    new: str


@event
class Close:
    tag: str


@event
class Unselect:
    tag: str


@event
class Check:
    tag: str


@event
class Idle:
    tag: str


@event
class IdleDone:
    """The DONE line that ends IDLE (RFC 2177); the IDLE is answered then."""

    tag: str


ImapEvent: TypeAlias = (
    Capability | Noop | Logout | StartTls | Login | Authenticate | AuthenticateData
    | Enable | Namespace | ListCmd | Subscribe | Status | Select | Fetch | Search
    | Store | Expunge | Move | Copy | Append | Create | Delete | Rename | Close | Unselect | Check
    | Idle | IdleDone
)
