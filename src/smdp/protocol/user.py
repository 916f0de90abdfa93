"""The user port (user application to server), wire contract section 3, Table 5.

POP3 (RFC 1939) where the commands overlap, so a stock POP3 client can read its
mail; the SMDP commands (envelopes, decisions, composing, lists) sit beside them.
Sans-IO like :mod:`smdp.protocol.peer`: :class:`UserServerConnection` turns bytes
into events and the application's ``ok()``/``err()`` into bytes;
:class:`UserClientConnection` does the reverse for our command-line client.

The server connection answers by itself every command it can judge from the wire
alone (unknown verbs, wrong state, bad arguments, over-long lines, recipient and
size limits); the application sees only well-formed commands in a state that
allows them, and must answer each before asking for the next event.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from smdp.protocol.framing import (
    CLOSED,
    LINE_TOO_LONG,
    NEED_DATA,
    BlockChunk,
    DataBlockReader,
    DotStuffer,
    LineBuffer,
    ProtocolUsageError,
    RemoteProtocolError,
    Sentinel,
    ServerConnection,
    dot_stuff,
)
from smdp.protocol.peer import MIB, parse_hostname, parse_mailbox

__all__ = [
    "CLOSED",
    "END_OF_BLOCK",
    "FAILED_PASS",
    "LINE_TOO_LONG_REASON",
    "LIST_NAMES",
    "NEED_DATA",
    "TOO_BIG_REASON",
    "TRANSITIONS",
    "VERBS",
    "BlockChunk",
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
    "ProtocolUsageError",
    "Quit",
    "RcptCmd",
    "RemoteProtocolError",
    "Retr",
    "Rset",
    "Sent",
    "Stat",
    "Stls",
    "Top",
    "Uidl",
    "User",
    "UserClientConnection",
    "UserCommand",
    "UserDecision",
    "UserEvent",
    "UserOption",
    "UserReply",
    "UserServerConnection",
    "UserState",
    "answers_multiline",
]

# ---------------------------------------------------------------------------
# Events. The server emits them; the client sends the same classes as commands.
# ---------------------------------------------------------------------------


class UserOption(enum.Enum):
    """The user's options on an envelope (Table 1), spelled as in Table 5."""

    ACCEPT = "ACCEPT"
    ACCEPT_AUTH = "ACCEPT&AUTH"
    REJECT = "REJECT"
    REJECT_SPAM = "REJECT&SPAM"
    REJECT_SPAMMER = "REJECT&SPAMMER"


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
    """ACCEPT / ACCEPT&AUTH / REJECT / REJECT&SPAM / REJECT&SPAMMER <id> (Table 5)."""

    option: UserOption
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


LINE_TOO_LONG_REASON: Final = "line too long"
TOO_BIG_REASON: Final = "too big"

#: Inbound lists hold (address, server) pairs, outbound ones addresses (Table 2).
LIST_NAMES: Final = frozenset({"in-white", "in-black", "out-white", "out-black"})

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


def answers_multiline(command: UserEvent | Message) -> bool:
    """Whether a positive answer to ``command`` is a dot-stuffed block."""
    match command:
        case ListCmd(n=n) | Uidl(n=n):
            return n is None
        case Pass(verb=verb):
            return verb == "PWD"
        case Retr() | Top() | Capa() | Envs() | EnvShow() | Sent() | Lists() | Ident():
            return True
        case _:
            return False


# ---------------------------------------------------------------------------
# Session states and THE transition table.
# ---------------------------------------------------------------------------


class UserState(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    AUTH_PASS = "AUTH_PASS"
    TRANSACTION = "TRANSACTION"
    COMPOSE = "COMPOSE"
    COMPOSE_RCPT = "COMPOSE_RCPT"
    COMPOSE_DATA = "COMPOSE_DATA"
    CLOSED = "CLOSED"


#: Pseudo command for the end of the message block (not a verb on the wire).
END_OF_BLOCK: Final = "<end of block>"

# Theory of operation
# -------------------
#
# One state machine per session (contract 3.1), held in TRANSITIONS below and
# nowhere else: TRANSITIONS[(state, command)] -> next state. Aliases are folded
# first (DEL is DELE, PWD is PASS), so the table speaks canonical verbs only.
#
# A line goes through: known verb (else "-ERR unknown command"), then the table
# (else "-ERR <why>", state unchanged), then its arguments and limits (else
# "-ERR <why>"). What passes becomes an event the application must answer with
# ok()/ok_block()/err(). An ok applies the transition; an err leaves the state,
# with one exception taken from RFC 1939: a failed PASS sends the session back to
# the start of AUTHORIZATION (FAILED_PASS below), so USER must be sent again.
# The end of the message block always returns to TRANSACTION, whatever the
# answer, so that transition is applied as soon as the "." line is read.
#
# States:
#   AUTHORIZATION  greeting sent, no user named
#   AUTH_PASS      USER answered +OK; PASS/PWD expected
#   TRANSACTION    logged in: POP3 mailbox commands and the SMDP commands
#   COMPOSE        MAIL answered +OK, no recipient accepted yet
#   COMPOSE_RCPT   at least one recipient accepted; DATA allowed
#   COMPOSE_DATA   reading the dot-stuffed message (no commands are parsed)
#   CLOSED         QUIT answered, or the client went away
_A, _AP, _T, _C, _CR, _CD, _CL = (
    UserState.AUTHORIZATION,
    UserState.AUTH_PASS,
    UserState.TRANSACTION,
    UserState.COMPOSE,
    UserState.COMPOSE_RCPT,
    UserState.COMPOSE_DATA,
    UserState.CLOSED,
)
TRANSITIONS: Final[dict[tuple[UserState, str], UserState]] = {
    # Table 5 "user"/"pwd", RFC 1939 USER/PASS; CAPA before login (RFC 2449).
    (_A, "USER"): _AP,
    (_AP, "USER"): _AP,
    (_AP, "PASS"): _T,
    (_A, "CAPA"): _A,
    (_AP, "CAPA"): _AP,
    (_A, "NOOP"): _A,
    (_AP, "NOOP"): _AP,
    (_A, "QUIT"): _CL,
    (_AP, "QUIT"): _CL,
    # RFC 2595 section 4: STLS in the AUTHORIZATION state (before or after
    # USER); the session stays there, and a USER sent before counts no more.
    (_A, "STLS"): _A,
    (_AP, "STLS"): _A,
    # RFC 1939 TRANSACTION state (Table 5 "list", "retr", "del").
    (_T, "STAT"): _T,
    (_T, "LIST"): _T,
    (_T, "UIDL"): _T,
    (_T, "RETR"): _T,
    (_T, "DELE"): _T,
    (_T, "TOP"): _T,
    (_T, "NOOP"): _T,
    (_T, "RSET"): _T,
    (_T, "CAPA"): _T,
    (_T, "QUIT"): _CL,
    # SMDP: envelopes and the user's options on them (Table 5, Table 1).
    (_T, "ENVS"): _T,
    (_T, "ENV"): _T,
    (_T, "ACCEPT"): _T,
    (_T, "ACCEPT&AUTH"): _T,
    (_T, "REJECT"): _T,
    (_T, "REJECT&SPAM"): _T,
    (_T, "REJECT&SPAMMER"): _T,
    # SMDP: status of sent mail, the lists (Table 3), the identities.
    (_T, "SENT"): _T,
    (_T, "LISTS"): _T,
    (_T, "LISTADD"): _T,
    (_T, "LISTDEL"): _T,
    (_T, "IDENT"): _T,
    # Table 5 "mail", "rcpt to", "data": composing.
    (_T, "MAIL"): _C,
    (_C, "RCPT"): _CR,
    (_CR, "RCPT"): _CR,
    (_CR, "DATA"): _CD,
    (_CD, END_OF_BLOCK): _T,
    (_C, "RSET"): _T,
    (_CR, "RSET"): _T,
    (_C, "NOOP"): _C,
    (_CR, "NOOP"): _CR,
    (_C, "QUIT"): _CL,
    (_CR, "QUIT"): _CL,
}

#: The one transition taken on a negative answer (RFC 1939 section 4).
FAILED_PASS: Final = {(_AP, "PASS"): _A}

#: Every verb the user port knows, with its aliases folded in.
VERBS: Final = frozenset(cmd for (_, cmd) in TRANSITIONS if cmd != END_OF_BLOCK)
_ALIASES: Final = {"DEL": "DELE", "PWD": "PASS"}

# ---------------------------------------------------------------------------
# Argument grammar.
# ---------------------------------------------------------------------------

_COUNT_RE: Final = re.compile(r"[0-9]{1,10}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_MSGID_RE: Final = re.compile(r"[\x21-\x7e]{1,255}")
_FROM_RE: Final = re.compile(r"from:[ ]*<([^<> ]*)>", re.IGNORECASE)
_TO_RE: Final = re.compile(r"to:[ ]*<([^<> ]*)>", re.IGNORECASE)
_MAX_NAME: Final = 255


class _Refusal(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _positive(token: str, what: str = "message number") -> int:
    if _COUNT_RE.fullmatch(token) is None or int(token) == 0:
        raise _Refusal(f"{what} must be a positive decimal integer")
    return int(token)


def _check_text(line: str) -> None:
    if "\r" in line or "\n" in line or "\0" in line:
        raise ProtocolUsageError(f"answer text must not hold CR, LF or NUL: {line!r}")


def _check_threshold(stream_threshold: int | None) -> int | None:
    if stream_threshold is not None and stream_threshold < 1:
        raise ValueError("stream_threshold must be None or at least 1")
    return stream_threshold


def _status(ok: bool, text: str) -> bytes:
    head = "+OK" if ok else "-ERR"
    return f"{head} {text}\r\n".encode() if text else f"{head}\r\n".encode()


# ---------------------------------------------------------------------------
# Server side.
# ---------------------------------------------------------------------------


class UserServerConnection(ServerConnection[UserEvent]):
    """The server side of one user session.

    Same shape as :class:`smdp.protocol.peer.PeerServerConnection`: feed
    ``receive_data()``, loop on ``next_event()``, answer each event with ``ok()``,
    ``ok_block()`` or ``err()`` (except :class:`MessageFailed`, already answered),
    write ``data_to_send()``. Check :func:`answers_multiline` for which events take
    ``lines`` or a block.

    Large bodies need not be held whole. With ``stream_threshold=n``, the
    message after DATA comes as :class:`BlockChunk` events, one each time ``n``
    octets or more are held, before its :class:`MessageComplete`; they need no
    answer. A block answer may be sent in pieces: ``ok_block_start()``, any
    number of ``block_chunk()``, then ``block_end()``, which settles the answer.
    """

    def __init__(
        self,
        hostname: str,
        *,
        max_message_size: int,
        max_recipients: int,
        max_command_line: int = 512,
        max_line_length: int = 1000,
        tls: bool = False,
        stream_threshold: int | None = None,
    ) -> None:
        _check_text(hostname)
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.max_line_length = max_line_length
        self.stream_threshold = _check_threshold(stream_threshold)
        # The block answer being sent in pieces (ok_block_start() was called).
        self._stuffer: DotStuffer | None = None
        self._lines = LineBuffer(max_command_line)
        self._out = bytearray()
        self._state = UserState.AUTHORIZATION
        self._eof = False
        # True once the session runs over TLS (implicit TLS, or after STLS):
        # a second STLS is refused (RFC 2595 section 4).
        self._tls = tls
        self._owed: tuple[str, UserEvent] | None = None
        self._reader: DataBlockReader | None = None
        self._rcpts_ok = 0
        self._parsers = {
            "USER": self._parse_user,
            "PASS": self._parse_pass,
            "CAPA": self._parse_bare,
            "STAT": self._parse_bare,
            "LIST": self._parse_optional_n,
            "UIDL": self._parse_optional_n,
            "RETR": self._parse_n,
            "DELE": self._parse_n,
            "TOP": self._parse_top,
            "NOOP": self._parse_bare,
            "RSET": self._parse_bare,
            "QUIT": self._parse_bare,
            "ENVS": self._parse_envs,
            "ENV": self._parse_n,
            "ACCEPT": self._parse_decision,
            "ACCEPT&AUTH": self._parse_decision,
            "REJECT": self._parse_decision,
            "REJECT&SPAM": self._parse_decision,
            "REJECT&SPAMMER": self._parse_decision,
            "MAIL": self._parse_mail,
            "RCPT": self._parse_rcpt,
            "DATA": self._parse_bare,
            "SENT": self._parse_sent,
            "LISTS": self._parse_bare,
            "LISTADD": self._parse_list_edit,
            "LISTDEL": self._parse_list_edit,
            "IDENT": self._parse_bare,
            "STLS": self._parse_stls,
        }

    # -- public API ---------------------------------------------------------

    def _closed(self) -> bool:
        return self._state is UserState.CLOSED

    @property
    def state(self) -> UserState:
        return self._state

    def greeting(self) -> bytes:
        return f"+OK {self.hostname} SMDP user port ready\r\n".encode()

    def next_event(self) -> UserEvent | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if self._owed is not None:
            raise ProtocolUsageError(f"answer owed to {self._owed[1]!r}")
        while self._state is not UserState.CLOSED:
            if self._reader is not None:
                event = self._read_block(self._reader)
                if event is not None:
                    return event
            else:
                line = self._lines.next_line()
                if line is LINE_TOO_LONG:
                    self._out += _status(False, "line too long")
                    continue
                if line is not None:
                    event = self._command(line)
                    if event is not None:
                        return event
                    continue
            if not self._eof:
                return NEED_DATA
            self._state = UserState.CLOSED
            self._reader = None
        return CLOSED

    def ok(self, text: str, lines: list[str] | None = None) -> None:
        """``+OK text``; with ``lines`` (or for a multi-line command) a block follows."""
        cmd, event = self._require_owed()
        _check_text(text)
        multi = answers_multiline(event)
        if lines is not None and not multi:
            raise ProtocolUsageError(f"{event!r} is answered on one line")
        block = b""
        if multi:
            for line in lines or ():
                _check_text(line)
            block = dot_stuff("".join(f"{line}\r\n" for line in lines or ()).encode())
        self._finish(cmd, event, _status(True, text) + block, positive=True)

    def ok_block(self, text: str, body: bytes) -> None:
        """``+OK text`` and ``body`` dot-stuffed (RETR, TOP, or any multi-line answer)."""
        self.ok_block_start(text)
        self.block_chunk(body)
        self.block_end()

    def ok_block_start(self, text: str) -> None:
        """Start a block answer sent in pieces: ``+OK text``. The answer stays
        owed until :meth:`block_end`; only block pieces may be sent meanwhile."""
        _, event = self._require_owed()
        _check_text(text)
        if not answers_multiline(event):
            raise ProtocolUsageError(f"{event!r} is answered on one line")
        self._out += _status(True, text)
        self._stuffer = DotStuffer()

    def block_chunk(self, data: bytes) -> None:
        """The next piece of the block, cut anywhere; queued dot-stuffed."""
        self._out += self._block_stuffer().feed(data)

    def block_end(self) -> None:
        """End the block (final CRLF if missing, then "."): the answer is sent."""
        tail = self._block_stuffer().end()
        self._stuffer = None
        cmd, event = self._require_owed()
        self._finish(cmd, event, tail, positive=True)

    def err(self, text: str) -> None:
        cmd, event = self._require_owed()
        _check_text(text)
        self._finish(cmd, event, _status(False, text), positive=False)

    # -- internals ----------------------------------------------------------

    def _require_owed(self) -> tuple[str, UserEvent]:
        if self._owed is None:
            raise ProtocolUsageError("no event is waiting for an answer")
        if self._stuffer is not None:
            raise ProtocolUsageError("a block is being sent; finish it with block_end()")
        return self._owed

    def _block_stuffer(self) -> DotStuffer:
        if self._stuffer is None:
            raise ProtocolUsageError("no block is being sent; call ok_block_start() first")
        return self._stuffer

    def _finish(self, cmd: str, event: UserEvent, wire: bytes, *, positive: bool) -> None:
        self._out += wire
        self._owed = None
        if cmd == END_OF_BLOCK:
            return  # applied when the block ended
        if not positive:
            self._state = FAILED_PASS.get((self._state, cmd), self._state)
            return
        self._state = TRANSITIONS[(self._state, cmd)]
        match event:
            case MailCmd() | Rset():
                self._rcpts_ok = 0
            case RcptCmd():
                self._rcpts_ok += 1
            case DataCmd():
                self._reader = DataBlockReader(self.max_line_length, self.max_message_size)
            case Quit():
                self._lines = LineBuffer(self._lines.max_line)
            case Stls():
                # RFC 2595 section 4 (and RFC 3207's injection lesson): bytes
                # that followed STLS arrived in plaintext and must never be
                # read as commands of the protected session.
                self._lines = LineBuffer(self._lines.max_line)
                self._tls = True
            case _:
                pass

    def _read_block(self, reader: DataBlockReader) -> UserEvent | None:
        if not reader.consume(self._lines):
            threshold = self.stream_threshold
            if threshold is not None and reader.held >= threshold:
                return BlockChunk(reader.take())
            return None
        self._reader = None
        self._state = TRANSITIONS[(self._state, END_OF_BLOCK)]
        self._rcpts_ok = 0
        if reader.too_long_line:
            self._out += _status(False, "line too long; message refused")
            return MessageFailed(LINE_TOO_LONG_REASON)
        if reader.too_big:
            self._out += _status(
                False, f"message exceeds fixed maximum of {self.max_message_size} octets"
            )
            return MessageFailed(TOO_BIG_REASON)
        event = MessageComplete(reader.result())
        self._owed = (END_OF_BLOCK, event)
        return event

    def _command(self, raw: bytes) -> UserEvent | None:
        verb_bytes, _, rest_bytes = raw.partition(b" ")
        verb = verb_bytes.decode("ascii", "replace").upper()
        cmd = _ALIASES.get(verb, verb)
        if cmd not in VERBS:
            self._out += _status(False, "unknown command")
            return None
        if (self._state, cmd) not in TRANSITIONS:
            self._out += _status(False, self._sequence_error(cmd))
            return None
        try:
            try:
                rest = rest_bytes.decode("utf-8").lstrip(" ")
            except UnicodeDecodeError:
                raise _Refusal("arguments must be UTF-8") from None
            if _CONTROL_RE.search(rest):
                raise _Refusal("control characters are not allowed")
            event = self._parsers[cmd](verb, rest)
        except _Refusal as refusal:
            self._out += _status(False, refusal.text)
            return None
        self._owed = (cmd, event)
        return event

    def _sequence_error(self, cmd: str) -> str:
        state = self._state
        if cmd == "STLS":
            return "STLS is allowed only before login"
        if state in (_A, _AP):
            return "send USER first" if cmd == "PASS" else "log in first"
        if state is _T:
            if cmd in ("USER", "PASS"):
                return "already logged in"
            return "send MAIL first"  # RCPT, DATA
        if cmd == "DATA":
            return "no recipient yet; send RCPT TO first"
        return "finish the message with DATA or abandon it with RSET first"

    # Argument parsers: (verb as sent, rest of line) -> event, or raise _Refusal.

    def _parse_user(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) != 1 or len(args[0]) > _MAX_NAME:
            raise _Refusal("syntax: USER <name>")
        return User(args[0])

    def _parse_pass(self, verb: str, rest: str) -> UserEvent:
        # RFC 1939 7: the password is the rest of the line and may hold spaces.
        if not rest:
            raise _Refusal(f"syntax: {verb} <password>")
        return Pass(rest, verb)

    def _parse_bare(self, verb: str, rest: str) -> UserEvent:
        if rest.strip(" "):
            raise _Refusal(f"{verb} takes no argument")
        match verb:
            case "CAPA":
                return Capa()
            case "STAT":
                return Stat()
            case "NOOP":
                return Noop()
            case "RSET":
                return Rset()
            case "QUIT":
                return Quit()
            case "DATA":
                return DataCmd()
            case "LISTS":
                return Lists()
            case _:
                return Ident()

    def _parse_stls(self, verb: str, rest: str) -> UserEvent:
        if rest.strip(" "):
            raise _Refusal("STLS takes no argument")
        if self._tls:
            raise _Refusal("command not permitted when TLS active")  # RFC 2595 4
        return Stls()

    def _parse_optional_n(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) > 1:
            raise _Refusal(f"syntax: {verb} [<n>]")
        n = _positive(args[0]) if args else None
        return ListCmd(n) if verb == "LIST" else Uidl(n)

    def _parse_n(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) != 1:
            raise _Refusal(f"syntax: {verb} <n>")
        if verb == "ENV":
            return EnvShow(_positive(args[0], "envelope id"))
        n = _positive(args[0])
        return Retr(n) if verb == "RETR" else Dele(n)

    def _parse_top(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) != 2:
            raise _Refusal("syntax: TOP <n> <lines>")
        n = _positive(args[0])
        if _COUNT_RE.fullmatch(args[1]) is None:
            raise _Refusal("line count must be a non-negative decimal integer")
        return Top(n, int(args[1]))

    def _parse_envs(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if args and (len(args) > 1 or args[0].upper() != "ALL"):
            raise _Refusal("syntax: ENVS [ALL]")
        return Envs(all=bool(args))

    def _parse_decision(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) != 1:
            raise _Refusal(f"syntax: {verb} <envelope id>")
        return UserDecision(UserOption(verb), _positive(args[0], "envelope id"))

    def _parse_mail(self, verb: str, rest: str) -> UserEvent:
        rest = rest.rstrip(" ")
        if not rest:
            return MailCmd(None)
        m = _FROM_RE.fullmatch(rest)
        if m is None:
            raise _Refusal("syntax: MAIL [FROM:<identity>]")
        identity = parse_mailbox(m.group(1))
        if identity is None:
            raise _Refusal(f"bad address <{m.group(1)}>")
        return MailCmd(identity)

    def _parse_rcpt(self, verb: str, rest: str) -> UserEvent:
        m = _TO_RE.fullmatch(rest.rstrip(" "))
        if m is None:
            raise _Refusal("syntax: RCPT TO:<address>")
        address = parse_mailbox(m.group(1))
        if address is None:
            raise _Refusal(f"bad address <{m.group(1)}>")
        if self._rcpts_ok >= self.max_recipients:
            raise _Refusal("too many recipients")
        return RcptCmd(address)

    def _parse_sent(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) > 1 or (args and _MSGID_RE.fullmatch(args[0]) is None):
            raise _Refusal("syntax: SENT [<msgid>]")
        return Sent(args[0] if args else None)

    def _parse_list_edit(self, verb: str, rest: str) -> UserEvent:
        args = rest.split()
        if len(args) not in (2, 3):
            raise _Refusal(f"syntax: {verb} <list> <address> [<server>]")
        list_name = args[0].lower()
        if list_name not in LIST_NAMES:
            raise _Refusal("list must be one of in-white, in-black, out-white, out-black")
        raw_address = args[1]
        if raw_address.startswith("<") and raw_address.endswith(">"):
            raw_address = raw_address[1:-1]
        address = parse_mailbox(raw_address)
        if address is None:
            raise _Refusal(f"bad address {args[1]}")
        server = None
        if len(args) == 3:
            if list_name.startswith("out-"):
                raise _Refusal("outbound lists hold addresses only")
            server = parse_hostname(args[2])
            if server is None:
                raise _Refusal(f"bad server name {args[2]}")
        if verb == "LISTADD":
            return ListAdd(list_name, address, server)
        return ListDel(list_name, address, server)


# ---------------------------------------------------------------------------
# Client side.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserReply:
    """One answer. ``lines`` for multi-line listings, ``body`` for RETR/TOP."""

    ok: bool
    text: str
    lines: list[str] | None = None
    body: bytes | None = None


class _Expect(enum.Enum):
    LINE = "line"
    LINES = "lines"  # +OK is followed by a block, given as text lines
    BODY = "body"  # +OK is followed by a block, given as bytes (RETR, TOP)


_STATUS_RE: Final = re.compile(rb"(\+OK|-ERR)(?: (.*))?", re.DOTALL)


class UserClientConnection:
    """The client side of a user session (our ``smdp`` command).

    ``send(command)`` returns the bytes to write; replies are matched to commands
    in order, so the connection knows which ``+OK`` brings a block. The first
    reply is the greeting.

    With ``stream_threshold=n``, the block answering RETR or TOP comes as
    :class:`BlockChunk` events, one each time ``n`` octets or more are held,
    before its :class:`UserReply` (whose ``body`` is then only the rest). A
    block that fails after some chunks raises :class:`RemoteProtocolError` as
    without streaming; the chunks must then be thrown away. Listings (``lines``)
    are never streamed.
    """

    def __init__(
        self,
        *,
        max_line_length: int = 1000,
        max_message_size: int = 64 * MIB,
        stream_threshold: int | None = None,
    ) -> None:
        self.max_line_length = max_line_length
        self.max_message_size = max_message_size
        self.stream_threshold = _check_threshold(stream_threshold)
        self._lines = LineBuffer(max_line_length)
        self._expecting: deque[_Expect] = deque([_Expect.LINE])
        self._block: tuple[str, _Expect, DataBlockReader] | None = None
        self._eof = False
        self._broken = False

    @property
    def buffered(self) -> int:
        return self._lines.buffered

    def send(self, command: UserCommand | Message) -> bytes:
        match command:
            case User(name=name):
                line = f"USER {_checked_token(name)}"
            case Pass(password=password, verb=verb):
                if verb not in ("PASS", "PWD"):
                    raise ProtocolUsageError(f"password verb is PASS or PWD, not {verb!r}")
                if not password or password.startswith(" ") or _CONTROL_RE.search(password):
                    raise ProtocolUsageError("password is empty, starts with SP or holds controls")
                line = f"{verb} {password}"
            case Capa():
                line = "CAPA"
            case Stat():
                line = "STAT"
            case ListCmd(n=n):
                line = "LIST" if n is None else f"LIST {_checked_positive(n)}"
            case Uidl(n=n):
                line = "UIDL" if n is None else f"UIDL {_checked_positive(n)}"
            case Retr(n=n):
                line = f"RETR {_checked_positive(n)}"
            case Dele(n=n):
                line = f"DELE {_checked_positive(n)}"
            case Top(n=n, lines=count):
                if count < 0:
                    raise ProtocolUsageError("TOP line count must not be negative")
                line = f"TOP {_checked_positive(n)} {count}"
            case Noop():
                line = "NOOP"
            case Rset():
                line = "RSET"
            case Quit():
                line = "QUIT"
            case Envs(all=all_):
                line = "ENVS ALL" if all_ else "ENVS"
            case EnvShow(id=envelope):
                line = f"ENV {_checked_positive(envelope)}"
            case UserDecision(option=option, id=envelope):
                line = f"{option.value} {_checked_positive(envelope)}"
            case MailCmd(identity=identity):
                line = "MAIL" if identity is None else f"MAIL FROM:<{_checked_mailbox(identity)}>"
            case RcptCmd(address=address):
                line = f"RCPT TO:<{_checked_mailbox(address)}>"
            case DataCmd():
                line = "DATA"
            case Message(body=body):
                self._expecting.append(_Expect.LINE)
                return dot_stuff(body)
            case Sent(msgid=msgid):
                if msgid is not None and _MSGID_RE.fullmatch(msgid) is None:
                    raise ProtocolUsageError(f"bad message id {msgid!r}")
                line = "SENT" if msgid is None else f"SENT {msgid}"
            case Lists():
                line = "LISTS"
            case (
                ListAdd(list_name=list_name, address=address, server=server)
                | ListDel(list_name=list_name, address=address, server=server)
            ):
                verb = "LISTADD" if isinstance(command, ListAdd) else "LISTDEL"
                if list_name not in LIST_NAMES:
                    raise ProtocolUsageError(f"unknown list {list_name!r}")
                line = f"{verb} {list_name} {_checked_mailbox(address)}"
                if server is not None:
                    if parse_hostname(server) is None:
                        raise ProtocolUsageError(f"bad server name {server!r}")
                    line += f" {server}"
            case Ident():
                line = "IDENT"
            case Stls():
                line = "STLS"
            case _:
                raise ProtocolUsageError(f"not a user command: {command!r}")
        if isinstance(command, Retr | Top):
            self._expecting.append(_Expect.BODY)
        elif answers_multiline(command):
            self._expecting.append(_Expect.LINES)
        else:
            self._expecting.append(_Expect.LINE)
        return line.encode("utf-8") + b"\r\n"

    def start_tls(self) -> None:
        """Call after the +OK to STLS, before the handshake.

        Anything the server sent after that +OK came in plaintext and could
        be an injected answer (RFC 2595 section 4): refuse to go on.
        """
        if self._lines.buffered or self._block is not None:
            self._broken = True
            raise RemoteProtocolError("the server sent data after its STLS reply")
        if self._expecting:
            raise ProtocolUsageError("start_tls() with replies still outstanding")
        self._lines = LineBuffer(self._lines.max_line)

    def receive_data(self, data: bytes) -> None:
        if self._eof:
            raise ProtocolUsageError("receive_data() after EOF")
        if data:
            self._lines.feed(data)
        else:
            self._eof = True

    def next_event(self) -> UserReply | BlockChunk | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if self._broken:
            raise RemoteProtocolError("the connection already failed")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._broken = True
            raise

    def _next_event(self) -> UserReply | BlockChunk | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        while True:
            if self._block is not None:
                text, expect, reader = self._block
                if not reader.consume(self._lines):
                    threshold = self.stream_threshold
                    if (
                        expect is _Expect.BODY
                        and threshold is not None
                        and reader.held >= threshold
                    ):
                        return BlockChunk(reader.take())
                    return CLOSED if self._eof else NEED_DATA
                self._block = None
                if reader.failed:
                    raise RemoteProtocolError("multi-line answer exceeds a limit")
                data = reader.result()
                if expect is _Expect.BODY:
                    return UserReply(True, text, body=data)
                lines = data.decode("utf-8", "replace").split("\r\n")[:-1]
                return UserReply(True, text, lines=lines)
            line = self._lines.next_line()
            if line is None:
                return CLOSED if self._eof else NEED_DATA
            if line is LINE_TOO_LONG:
                raise RemoteProtocolError("status line too long")
            m = _STATUS_RE.fullmatch(line)
            if m is None:
                raise RemoteProtocolError(f"malformed status line {line[:80]!r}")
            ok = m.group(1) == b"+OK"
            text = (m.group(2) or b"").decode("utf-8", "replace")
            expect = self._expecting.popleft() if self._expecting else _Expect.LINE
            if ok and expect is not _Expect.LINE:
                reader = DataBlockReader(self.max_line_length, self.max_message_size)
                self._block = (text, expect, reader)
                continue
            return UserReply(ok, text)


def _checked_token(text: str) -> str:
    if not text or len(text) > _MAX_NAME or " " in text or _CONTROL_RE.search(text):
        raise ProtocolUsageError(f"bad name {text!r}")
    return text


def _checked_positive(n: int) -> int:
    if n <= 0 or n >= 10**10:
        raise ProtocolUsageError(f"not a positive number in range: {n!r}")
    return n


def _checked_mailbox(address: str) -> str:
    if parse_mailbox(address) is None:
        raise ProtocolUsageError(f"bad address {address!r}")
    return address
