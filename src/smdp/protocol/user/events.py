"""The user port's events (wire contract section 3, paper Table 5, POP3).

Small immutable classes, one per command: the server connection emits them,
and the client connection sends the same classes as commands (plus
:class:`Message`, the block after DATA). The client reads :class:`UserReply`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from smdp import terms
from smdp.protocol.framing import LINE_TOO_LONG_REASON, TOO_BIG_REASON, BlockChunk

__all__ = [
    "LINE_TOO_LONG_REASON",
    "TOO_BIG_REASON",
    "Capa",
    "DataCmd",
    "Dele",
    "EnvShow",
    "Envs",
    "Ident",
    "ListAdd",
    "ListCmd",
    "ListDel",
    "Lists",
    "MailCmd",
    "Message",
    "MessageComplete",
    "MessageFailed",
    "Noop",
    "Pass",
    "Quit",
    "RcptCmd",
    "Retr",
    "Rset",
    "Sent",
    "Stat",
    "Stls",
    "Top",
    "Uidl",
    "User",
    "UserCommand",
    "UserDecision",
    "UserEvent",
    "UserReply",
]


@dataclass(frozen=True, slots=True)
class User:
    """USER <name> (Table 5, RFC 1939)."""

    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    """PASS <password>, or PWD <password> (Table 5), which wants a multi-line answer."""

    password: str
    verb: str = "PASS"


@dataclass(frozen=True, slots=True)
class Capa:
    """CAPA (RFC 2449)."""


@dataclass(frozen=True, slots=True)
class Stat:
    """STAT (RFC 1939)."""


@dataclass(frozen=True, slots=True)
class ListCmd:
    """LIST [n] (Table 5, RFC 1939): multi-line without an argument."""

    n: int | None = None


@dataclass(frozen=True, slots=True)
class Uidl:
    """UIDL [n] (RFC 1939): multi-line without an argument."""

    n: int | None = None


@dataclass(frozen=True, slots=True)
class Retr:
    """RETR n (Table 5, RFC 1939)."""

    n: int


@dataclass(frozen=True, slots=True)
class Dele:
    """DELE n, alias DEL n (Table 5 "del")."""

    n: int


@dataclass(frozen=True, slots=True)
class Top:
    """TOP n k (RFC 1939)."""

    n: int
    lines: int


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP."""


@dataclass(frozen=True, slots=True)
class Rset:
    """RSET: unmark deletions (TRANSACTION) or abandon the message (COMPOSE)."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT (Table 5)."""


@dataclass(frozen=True, slots=True)
class Envs:
    """ENVS [ALL]: the envelopes (pending ones only unless ALL)."""

    all: bool = False


@dataclass(frozen=True, slots=True)
class EnvShow:
    """ENV <id>: one envelope's fields."""

    id: int


@dataclass(frozen=True, slots=True)
class UserDecision:
    """ACCEPT / ACCEPT&AUTH / REJECT / REJECT&SPAM / REJECT&SPAMMER <id> (Table 5).

    ``option`` is the user's choice (Table 1); ``grammar.DECISION_VERBS`` spells it.
    """

    option: terms.Decision
    id: int


@dataclass(frozen=True, slots=True)
class MailCmd:
    """MAIL [FROM:<identity>] (Table 5 "mail"): the server writes From itself."""

    identity: str | None = None


@dataclass(frozen=True, slots=True)
class RcptCmd:
    """RCPT TO:<addr> (Table 5 "rcpt to")."""

    address: str


@dataclass(frozen=True, slots=True)
class DataCmd:
    """DATA (Table 5 "data"): the message follows once answered +OK."""


@dataclass(frozen=True, slots=True)
class Message:
    """Client only: the message after DATA's +OK, sent dot-stuffed."""

    body: bytes


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The composed message: unstuffed, CRLF line ends, final CRLF kept.

    With ``stream_threshold`` set, :class:`BlockChunk` events came first and
    ``data`` is only the rest: the message is their ``data`` joined, then this.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class MessageFailed:
    """The message block was refused; the connection has already sent the -ERR.

    ``reason`` is ``"line too long"`` or ``"too big"``. No answer is owed; any
    :class:`BlockChunk` data received for the message is to be thrown away.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Sent:
    """SENT [<msgid>]: delivery status of sent mail."""

    msgid: str | None = None


@dataclass(frozen=True, slots=True)
class Lists:
    """LISTS: the user's white and black lists (Table 3)."""


@dataclass(frozen=True, slots=True)
class ListAdd:
    """LISTADD <list> <address> [<server>]."""

    list_name: str
    address: str
    server: str | None = None


@dataclass(frozen=True, slots=True)
class ListDel:
    """LISTDEL <list> <address> [<server>]."""

    list_name: str
    address: str
    server: str | None = None


@dataclass(frozen=True, slots=True)
class Ident:
    """IDENT: the user's identities (section 5.1, assumption 1)."""


@dataclass(frozen=True, slots=True)
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
    | MailCmd
    | RcptCmd
    | DataCmd
    | Sent
    | Lists
    | ListAdd
    | ListDel
    | Ident
    | Stls
)
UserEvent: TypeAlias = UserCommand | BlockChunk | MessageComplete | MessageFailed


# Client side: what the server answers.


@dataclass(frozen=True, slots=True)
class UserReply:
    """One answer. ``lines`` for multi-line listings, ``body`` for RETR/TOP."""

    ok: bool
    text: str
    lines: list[str] | None = None
    body: bytes | None = None
