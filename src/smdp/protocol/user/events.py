"""The user port's events (wire contract section 3, paper Table 5, POP3).

Small immutable classes, one per command: the server connection emits them,
and the client connection sends the same classes as commands (plus
:class:`Message`, the block after DATA). The client reads :class:`UserReply`.
"""

from __future__ import annotations

from typing import TypeAlias

from smdp import terms
from smdp.protocol._events import BlockComplete, BlockFailed, event
from smdp.protocol.framing import LINE_TOO_LONG_REASON, TOO_BIG_REASON, BlockChunk

__all__ = [
    "LINE_TOO_LONG_REASON",
    "TOO_BIG_REASON",
    "BlockChunk",
    "Capa",
    "DataCmd",
    "Dele",
    "EnvShow",
    "Envs",
    "GroupStatus",
    "Ident",
    "ListAdd",
    "ListCmd",
    "ListDel",
    "Lists",
    "MailCmd",
    "Message",
    "MessageComplete",
    "MessageFailed",
    "NewPass",
    "Noop",
    "Pass",
    "Passwd",
    "Quit",
    "RcptCmd",
    "Retr",
    "Rset",
    "Sent",
    "Stat",
    "Stls",
    "Top",
    "Uidl",
    "Unsub",
    "User",
    "UserCommand",
    "UserDecision",
    "UserEvent",
    "UserReply",
]


@event
class User:
    """USER <name> (Table 5, RFC 1939)."""

    name: str


@event
class Pass:
    """PASS <password>, or PWD <password> (Table 5), which wants a multi-line answer."""

    password: str
    verb: str = "PASS"


@event
class Passwd:
    """PASSWD <current password> (protocol.md 12.9): start a change of password."""

    password: str


@event
class NewPass:
    """NEWPASS <new password>, after PASSWD's +OK: the password from now on."""

    password: str


@event
class Capa:
    """CAPA (RFC 2449)."""


@event
class Stat:
    """STAT (RFC 1939)."""


@event
class ListCmd:
    """LIST [n] (Table 5, RFC 1939): multi-line without an argument; or a
    page of the scan listing, LIST [AFTER n] [LIMIT k] (protocol.md 12.4)."""

    n: int | None = None
    after: int | None = None
    limit: int | None = None


@event
class Uidl:
    """UIDL [n] (RFC 1939): multi-line without an argument; or a page,
    UIDL [AFTER n] [LIMIT k] (protocol.md 12.4)."""

    n: int | None = None
    after: int | None = None
    limit: int | None = None


@event
class Retr:
    """RETR n (Table 5, RFC 1939)."""

    n: int


@event
class Dele:
    """DELE n, alias DEL n (Table 5 "del")."""

    n: int


@event
class Top:
    """TOP n k (RFC 1939)."""

    n: int
    lines: int


@event
class Noop:
    """NOOP."""


@event
class Rset:
    """RSET: unmark deletions (TRANSACTION) or abandon the message (COMPOSE)."""


@event
class Quit:
    """QUIT (Table 5)."""


@event
class Envs:
    """ENVS [ALL] [AFTER id] [LIMIT k]: the envelopes (pending ones only
    unless ALL), all of them or a page (protocol.md 12.5)."""

    all: bool = False
    after: int | None = None
    limit: int | None = None


@event
class EnvShow:
    """ENV <id>: one envelope's fields."""

    id: int


@event
class GroupStatus:
    """GROUP <address>: the owner's view of a local list or alias (docs/lists.md)."""

    address: str


@event
class Unsub:
    """UNSUB <id>: leave the mailing list that sent the entry (docs/lists.md)."""

    id: int


@event
class UserDecision:
    """ACCEPT / ACCEPT&AUTH / REJECT / REJECT&SPAM / REJECT&SPAMMER <id> (Table 5).

    ``option`` is the user's choice (Table 1); ``grammar.DECISION_VERBS`` spells it.
    """

    option: terms.Decision
    id: int


@event
class MailCmd:
    """MAIL [FROM:<identity>] (Table 5 "mail"): the server writes From itself."""

    identity: str | None = None


@event
class RcptCmd:
    """RCPT TO:<addr> (Table 5 "rcpt to")."""

    address: str


@event
class DataCmd:
    """DATA (Table 5 "data"): the message follows once answered +OK."""


@event
class Message:
    """Client only: the message after DATA's +OK, sent dot-stuffed."""

    body: bytes


@event
class MessageComplete(BlockComplete):
    """The composed message after DATA arrived whole (see the base class)."""


@event
class MessageFailed(BlockFailed):
    """The message after DATA was refused with an -ERR (see the base class).

    ``reason`` is ``"line too long"`` or ``"too big"``.
    """


@event
class Sent:
    """SENT [<msgid>] or SENT BEFORE <msgid>: delivery status of sent mail,
    the newest messages a page at a time; ``before``: the page of messages
    sent before that one (the continuation a page's answer names)."""

    msgid: str | None = None
    before: str | None = None


@event
class Lists:
    """LISTS: the user's white and black lists (Table 3)."""


@event
class _ListEdit:
    """What LISTADD and LISTDEL both carry: the list, the address, the server."""

    list_name: str
    address: str
    server: str | None = None


@event
class ListAdd(_ListEdit):
    """LISTADD <list> <address> [<server>]."""


@event
class ListDel(_ListEdit):
    """LISTDEL <list> <address> [<server>]."""


@event
class Ident:
    """IDENT: the user's identities (section 5.1, assumption 1)."""


@event
class Stls:
    """STLS (RFC 2595): answered +OK, then both sides start TLS at once.

    Allowed only before login. The connection drops any bytes that followed
    the command (plaintext, possibly injected) and returns to AUTHORIZATION.
    """



UserCommand: TypeAlias = (
    User
    | Pass
    | Capa
    | Stat
    | ListCmd
    | Uidl
    | Retr
    | Dele
    | Top
    | Noop
    | Rset
    | Quit
    | Envs
    | EnvShow
    | UserDecision
    | Unsub
    | GroupStatus
    | MailCmd
    | RcptCmd
    | DataCmd
    | Sent
    | Lists
    | ListAdd
    | ListDel
    | Ident
    | Stls
    | Passwd
    | NewPass
)
UserEvent: TypeAlias = UserCommand | BlockChunk | MessageComplete | MessageFailed


# Client side: what the server answers.


@event
class UserReply:
    """One answer. ``lines`` for multi-line listings, ``body`` for RETR/TOP."""

    ok: bool
    text: str
    lines: list[str] | None = None
    body: bytes | None = None
