"""The peer port (server to server), wire contract section 2, paper Table 4.

Sans-IO, in the manner of h11: :class:`PeerServerConnection` is fed received bytes
and hands back typed events; :class:`PeerClientConnection` turns command objects
into bytes and received bytes into replies. Neither touches a socket or a clock.

Division of labour on the server side: the connection object answers everything
that can be judged from the wire alone (unknown verbs, bad syntax, commands out of
sequence, over-long lines, size and recipient limits) and never shows those to the
application. Every well-formed command in a state that allows it becomes an event,
and the application must answer it with :meth:`PeerServerConnection.reply` before
asking for the next one; the answer's code decides whether the state moves.
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
)

__all__ = [
    "CLOSED",
    "END_OF_BLOCK",
    "LINE_TOO_LONG_REASON",
    "MIB",
    "NEED_DATA",
    "SIZE_MISMATCH_REASON",
    "TOO_BIG_REASON",
    "TRANSITIONS",
    "VERBS",
    "BlockChunk",
    "Data",
    "DataComplete",
    "DataEnd",
    "DataFailed",
    "DataPart",
    "DataStart",
    "Decision",
    "DecisionKind",
    "EnvelopeStart",
    "Helo",
    "MailStart",
    "Noop",
    "PeerClientConnection",
    "PeerCommand",
    "PeerEvent",
    "PeerServerConnection",
    "PeerState",
    "ProtocolUsageError",
    "PulledBody",
    "Quit",
    "Rcpt",
    "Received",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "SizeDecl",
    "StartTls",
    "parse_hostname",
    "parse_mailbox",
]

MIB: Final = 1024 * 1024

# ---------------------------------------------------------------------------
# Events. The server emits them; the client sends the same classes as commands.
# ---------------------------------------------------------------------------


class DecisionKind(enum.Enum):
    """A recipient's decision as it travels between servers (Table 2)."""

    ACCEPT = "ACCEPT"
    AUTHORIZE = "AUTHORIZE"
    REJECT = "REJECT"
    SPAM = "SPAM"
    SPAMMER = "SPAMMER"


@dataclass(frozen=True, slots=True)
class Helo:
    """HELO / EHLO sending-hostname (Table 4): starts the session."""

    hostname: str
    extended: bool = False


@dataclass(frozen=True, slots=True)
class EnvelopeStart:
    """ENVELOPE From:<addr> ID=<envid> [SIZE=<n>] (Table 4): starts an envelope."""

    sender: str
    envid: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class MailStart:
    """MAIL From:<addr> ID=<envid> [SIZE=<n>] (Table 4): starts a full message."""

    sender: str
    envid: str
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Rcpt:
    """RCPT To:<addr> (Table 4): one recipient."""

    recipient: str


@dataclass(frozen=True, slots=True)
class SizeDecl:
    """SIZE=<n> (Table 4): the message's size in octets."""

    size: int


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA (Table 4): the block follows once the application answered 354."""


@dataclass(frozen=True, slots=True)
class Data:
    """Client only: the block after a 354, sent dot-stuffed (one reply expected).

    The same as ``DataPart(body)`` followed by ``DataEnd()``.
    """

    body: bytes


@dataclass(frozen=True, slots=True)
class DataPart:
    """Client only: the next piece of a block sent in pieces after a 354.

    Any cut is fine (inside a line, between CR and LF). No reply is expected;
    :class:`DataEnd` ends the block.
    """

    body: bytes


@dataclass(frozen=True, slots=True)
class DataEnd:
    """Client only: the end of a block sent with :class:`DataPart` (a final CRLF
    if the body lacks one, then "."). One reply is expected."""


@dataclass(frozen=True, slots=True)
class DataComplete:
    """The block arrived whole: unstuffed, CRLF line ends, final CRLF kept.

    With ``stream_threshold`` set, :class:`BlockChunk` events came first and
    ``data`` is only the rest: the block is their ``data`` joined, then this.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class DataFailed:
    """The block was refused; the connection has already sent the error reply.

    ``reason`` is one of :data:`LINE_TOO_LONG_REASON`, :data:`TOO_BIG_REASON`,
    :data:`SIZE_MISMATCH_REASON`. No reply is owed: the application only drops
    its transaction, and any :class:`BlockChunk` data received for the block.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """ACCEPT|AUTHORIZE|REJECT|SPAM|SPAMMER <envid> To:<addr> [BODY=HELD] (Table 2)."""

    kind: DecisionKind
    envid: str
    recipient: str
    body_held: bool = False

    @property
    def wants_body(self) -> bool:
        """True when the answer is the pull: 150 and the dot-stuffed message."""
        return self.kind in _PULLING_KINDS and not self.body_held


@dataclass(frozen=True, slots=True)
class Received:
    """RECEIVED <envid> (section 2.5): the pulled body is stored durably."""

    envid: str


@dataclass(frozen=True, slots=True)
class Rset:
    """RSET: abandon the transaction."""


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT (Table 4): ends the connection once answered 221."""


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS (RFC 3207): answered 220, then both sides start TLS at once.

    The connection forgets everything it knew of the session, including any
    bytes that arrived after the command (they were sent in plaintext and may
    have been injected), and waits for a new EHLO.
    """


_PULLING_KINDS: Final = frozenset({DecisionKind.ACCEPT, DecisionKind.AUTHORIZE})

LINE_TOO_LONG_REASON: Final = "line too long"
TOO_BIG_REASON: Final = "too big"
SIZE_MISMATCH_REASON: Final = "size mismatch"

PeerEvent: TypeAlias = (
    Helo
    | EnvelopeStart
    | MailStart
    | Rcpt
    | SizeDecl
    | DataStart
    | BlockChunk
    | DataComplete
    | DataFailed
    | Decision
    | Received
    | Rset
    | Noop
    | Quit
    | StartTls
)
PeerCommand: TypeAlias = (
    Helo
    | EnvelopeStart
    | MailStart
    | Rcpt
    | SizeDecl
    | DataStart
    | Data
    | DataPart
    | DataEnd
    | Decision
    | Received
    | Rset
    | Noop
    | Quit
    | StartTls
)


# ---------------------------------------------------------------------------
# Session states and THE transition table.
# ---------------------------------------------------------------------------


class PeerState(enum.Enum):
    GREETED = "GREETED"
    READY = "READY"
    TXN_STARTED = "TXN_STARTED"
    TXN_RCPT = "TXN_RCPT"
    DATA_IN = "DATA_IN"
    CLOSED = "CLOSED"


#: Pseudo command for the end of a DATA block (it is not a verb on the wire).
END_OF_BLOCK: Final = "<end of block>"

# Theory of operation
# -------------------
#
# The server side of a peer session is a single state machine (contract 2.2). Its
# state changes only through the lookup TRANSITIONS[(state, command)] below; no
# other code decides which command is allowed when (h11's "Rule 1"). The
# connection object keeps a little transaction *data* beside the state (declared
# size, recipient counts), but never a second notion of where the session is.
#
# A command moves through three gates, in this order:
#
# 1. the verb must be known, else 500;
# 2. (state, verb) must be in the table, else 503 (with one refinement: DATA after
#    RCPTs that were all refused gets 554 "No valid recipients");
# 3. the arguments must parse and respect the limits, else 501 / 552 / 452, or 503
#    for DATA before any SIZE.
#
# A command that passes becomes an event, and the application owes a reply. The
# reply code is the second half of the transition: a positive reply (2xx, 354 to
# DATA, 150 to a pulling decision) applies TRANSITIONS[(state, command)]; a 4xx
# or 5xx leaves the state as it was (a refused RCPT is no recipient, a refused
# ENVELOPE opens no transaction). The one exception is END_OF_BLOCK: the block's
# end closes the transaction whatever the reply (RFC 5321 4.1.1.4), so that
# transition is applied as soon as the terminating "." is read.
#
# States:
#   GREETED      connected, greeting sent, no HELO/EHLO yet
#   READY        introduced; may open a transaction or speak decisions (Table 2)
#   TXN_STARTED  ENVELOPE or MAIL accepted, no recipient accepted yet
#   TXN_RCPT     at least one recipient accepted; SIZE= and DATA allowed
#   DATA_IN      reading the dot-stuffed block (no commands are parsed)
#   CLOSED       QUIT answered, or the peer went away
_G, _R, _TS, _TR, _DI, _CL = (
    PeerState.GREETED,
    PeerState.READY,
    PeerState.TXN_STARTED,
    PeerState.TXN_RCPT,
    PeerState.DATA_IN,
    PeerState.CLOSED,
)
TRANSITIONS: Final[dict[tuple[PeerState, str], PeerState]] = {
    # Table 4: HELO/EHLO starts the session; repeated, it resets it.
    (_G, "HELO"): _R,
    (_G, "EHLO"): _R,
    (_R, "HELO"): _R,
    (_R, "EHLO"): _R,
    # Table 4: ENVELOPE and MAIL open a transaction, RCPT adds recipients.
    (_R, "ENVELOPE"): _TS,
    (_R, "MAIL"): _TS,
    (_TS, "RCPT"): _TR,
    (_TR, "RCPT"): _TR,
    # Table 4: SIZE= as a command (it may also be an ENVELOPE/MAIL parameter).
    (_TR, "SIZE"): _TR,
    (_TR, "DATA"): _DI,
    (_DI, END_OF_BLOCK): _R,
    # Table 2: decisions and the pull confirmation, outside transactions.
    (_R, "ACCEPT"): _R,
    (_R, "AUTHORIZE"): _R,
    (_R, "REJECT"): _R,
    (_R, "SPAM"): _R,
    (_R, "SPAMMER"): _R,
    (_R, "RECEIVED"): _R,
    # RFC 3207: STARTTLS between transactions, after EHLO. After the handshake
    # the session starts over: the client must introduce itself again.
    (_R, "STARTTLS"): _G,
    # Housekeeping, anywhere but inside a block.
    (_G, "RSET"): _G,
    (_R, "RSET"): _R,
    (_TS, "RSET"): _R,
    (_TR, "RSET"): _R,
    (_G, "NOOP"): _G,
    (_R, "NOOP"): _R,
    (_TS, "NOOP"): _TS,
    (_TR, "NOOP"): _TR,
    (_G, "QUIT"): _CL,
    (_R, "QUIT"): _CL,
    (_TS, "QUIT"): _CL,
    (_TR, "QUIT"): _CL,
}

#: Every verb the peer port knows (Table 4, Table 2, housekeeping).
VERBS: Final = frozenset(cmd for (_, cmd) in TRANSITIONS if cmd != END_OF_BLOCK)


# ---------------------------------------------------------------------------
# Field grammar (contract section 1 and 2.1).
# ---------------------------------------------------------------------------

# RFC 5321 Mailbox restricted to a dot-atom local part and an LDH domain.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_MAILBOX_RE: Final = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@({_DOMAIN})", re.ASCII)
_DOMAIN_RE: Final = re.compile(_DOMAIN, re.ASCII)
_ENVID_RE: Final = re.compile(r"[a-z2-7]{26}")
# Decimal, no sign, bounded so that int() stays cheap on hostile input.
_NUMBER_RE: Final = re.compile(r"[0-9]{1,20}")
_FROM_RE: Final = re.compile(r"from:[ ]*<([^<> ]*)>(?:[ ]+(.*))?", re.IGNORECASE | re.DOTALL)
_TO_RE: Final = re.compile(r"to:[ ]*<([^<> ]*)>(?:[ ]+(.*))?", re.IGNORECASE | re.DOTALL)
_MAX_MAILBOX: Final = 254
_MAX_LOCAL: Final = 64
_MAX_DOMAIN: Final = 253


def parse_mailbox(text: str) -> str | None:
    """Validate ``local@domain``; return it with the domain lower-cased, or None."""
    if len(text) > _MAX_MAILBOX:
        return None
    m = _MAILBOX_RE.fullmatch(text)
    if m is None or len(m.group(1)) > _MAX_LOCAL:
        return None
    return f"{m.group(1)}@{m.group(2).lower()}"


def parse_hostname(text: str) -> str | None:
    """Validate an LDH host name; return it lower-cased, or None."""
    if len(text) > _MAX_DOMAIN or _DOMAIN_RE.fullmatch(text) is None:
        return None
    return text.lower()


def _is_envid(text: str) -> bool:
    return _ENVID_RE.fullmatch(text) is not None


class _Refusal(Exception):
    """Raised by a command parser; carries the reply line the connection sends."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


def _syntax(why: str) -> _Refusal:
    return _Refusal(f"501 5.5.4 {why}")


def _split_params(text: str | None) -> dict[str, str]:
    """``KEY=VALUE`` parameters separated by spaces, keys upper-cased, no repeats."""
    params: dict[str, str] = {}
    for token in (text or "").split(" "):
        if not token:
            continue
        key, eq, value = token.partition("=")
        key = key.upper()
        if not eq or not value:
            raise _syntax(f"Bad parameter {token}")
        if key in params:
            raise _syntax(f"Repeated parameter {key}")
        params[key] = value
    return params


def _parse_number(text: str, what: str) -> int:
    if _NUMBER_RE.fullmatch(text) is None:
        raise _syntax(f"Bad {what}: {text}")
    return int(text)


def _format_reply(code: int, lines: list[str]) -> bytes:
    last = len(lines) - 1
    return "".join(
        f"{code}{'-' if i < last else ' '}{line}\r\n" for i, line in enumerate(lines)
    ).encode("utf-8")


def _check_text(line: str) -> None:
    if "\r" in line or "\n" in line or "\0" in line:
        raise ProtocolUsageError(f"reply text must not hold CR, LF or NUL: {line!r}")


def _check_threshold(stream_threshold: int | None) -> int | None:
    if stream_threshold is not None and stream_threshold < 1:
        raise ValueError("stream_threshold must be None or at least 1")
    return stream_threshold


# ---------------------------------------------------------------------------
# Server side.
# ---------------------------------------------------------------------------


class PeerServerConnection(ServerConnection[PeerEvent]):
    """The server side of one peer session (we are the origin or the destination).

    Drive it like h11: ``receive_data(bytes)`` (``b""`` at EOF), then call
    ``next_event()`` until it returns :data:`NEED_DATA` or :data:`CLOSED`; answer
    every event with ``reply()`` (or ``send_body()`` for a pull, see
    :attr:`Decision.wants_body`), except :class:`DataFailed`, which is already
    answered; write out ``data_to_send()`` after each step.

    Large bodies need not be held whole. With ``stream_threshold=n``, a DATA
    block (of MAIL or ENVELOPE) comes as :class:`BlockChunk` events, one each
    time ``n`` octets or more are held, before its :class:`DataComplete`; they
    need no reply. A pull may be sent in pieces: ``send_body_start()``, any
    number of ``send_body_chunk()``, then ``send_body_end()``, which settles
    the owed reply.
    """

    def __init__(
        self,
        hostname: str,
        *,
        max_message_size: int,
        max_recipients: int,
        max_command_line: int = 1000,
        max_line_length: int = 1000,
        tls: bool = False,
        stream_threshold: int | None = None,
        max_envelope_block: int | None = None,
    ) -> None:
        _check_text(hostname)
        self.hostname = hostname
        self.max_message_size = max_message_size
        # An ENVELOPE block describes a message in a few lines; None holds it
        # to max_message_size only (the application then checks its size).
        self.max_envelope_block = (max_message_size if max_envelope_block is None
                                   else min(max_envelope_block, max_message_size))
        self.max_recipients = max_recipients
        self.max_line_length = max_line_length
        self.stream_threshold = _check_threshold(stream_threshold)
        self._lines = LineBuffer(max_command_line)
        self._out = bytearray()
        # The body of a pull being sent in pieces (send_body_start() was called).
        self._stuffer: DotStuffer | None = None
        self._state = PeerState.GREETED
        self._eof = False
        # True once the session runs over TLS (implicit TLS, or after STARTTLS):
        # a second STARTTLS is refused (RFC 3207 section 4.2).
        self._tls = tls
        # The event waiting for the application's reply, with its command name.
        self._owed: tuple[str, PeerEvent] | None = None
        self._reader: DataBlockReader | None = None
        # Transaction data (see "Theory of operation": data, not state).
        self._txn_kind: str | None = None
        self._declared_size: int | None = None
        self._rcpts_ok = 0
        self._rcpts_tried = 0
        self._parsers = {
            "HELO": self._parse_helo,
            "EHLO": self._parse_helo,
            "ENVELOPE": self._parse_start,
            "MAIL": self._parse_start,
            "RCPT": self._parse_rcpt,
            "SIZE": self._parse_size,
            "DATA": self._parse_data,
            "ACCEPT": self._parse_decision,
            "AUTHORIZE": self._parse_decision,
            "REJECT": self._parse_decision,
            "SPAM": self._parse_decision,
            "SPAMMER": self._parse_decision,
            "RECEIVED": self._parse_received,
            "STARTTLS": self._parse_starttls,
            "RSET": self._parse_bare,
            "NOOP": self._parse_noop,
            "QUIT": self._parse_bare,
        }

    # -- public API ---------------------------------------------------------

    def _closed(self) -> bool:
        return self._state is PeerState.CLOSED

    @property
    def state(self) -> PeerState:
        return self._state

    def greeting(self) -> bytes:
        return f"220 {self.hostname} SMDP ready\r\n".encode()

    def next_event(self) -> PeerEvent | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if self._owed is not None:
            raise ProtocolUsageError(f"reply owed to {self._owed[1]!r}")
        while self._state is not PeerState.CLOSED:
            if self._reader is not None:
                event = self._read_block(self._reader)
                if event is not None:
                    return event
            else:
                line = self._lines.next_line()
                if line is LINE_TOO_LONG:
                    self._send_line("500 5.5.2 Line too long")
                    continue
                if line is not None:
                    event = self._command(line)
                    if event is not None:
                        return event
                    continue
            if not self._eof:
                return NEED_DATA
            # EOF: a half-read command or block is simply lost with the session.
            self._state = PeerState.CLOSED
            self._reader = None
        return CLOSED

    def reply(self, code: int, text: str | list[str]) -> None:
        """Answer the last event; multi-line (``250-``) when ``text`` is a list."""
        cmd, event = self._require_owed()
        lines = [text] if isinstance(text, str) else list(text)
        if not lines:
            raise ProtocolUsageError("a reply needs at least one line")
        for line in lines:
            _check_text(line)
        if isinstance(event, DataStart):
            positive = code == 354
            if not positive and not 400 <= code <= 599:
                raise ProtocolUsageError("DATA is answered 354, 4xx or 5xx")
        elif isinstance(event, StartTls):
            # 220 is the one answer after which both sides switch to TLS.
            positive = code == 220
            if not positive and not 400 <= code <= 599:
                raise ProtocolUsageError("STARTTLS is answered 220, 4xx or 5xx")
        elif 200 <= code <= 299:
            positive = True
        elif 400 <= code <= 599:
            positive = False
        else:
            raise ProtocolUsageError(f"reply code {code} does not fit {event!r}")
        # A pulling decision is normally answered by send_body(); a 2xx means
        # "recorded, nothing to transfer" (the destination confirmed the body
        # with RECEIVED already), which keeps a repeated decision idempotent.
        self._out += _format_reply(code, lines)
        self._owed = None
        if isinstance(event, Rcpt):
            self._rcpts_tried += 1
        if positive:
            self._apply(cmd, event)

    def send_body(self, code: int, text: str, body: bytes) -> None:
        """The pull (section 2.5): ``150 <text>`` then ``body`` dot-stuffed."""
        self.send_body_start(code, text)
        self.send_body_chunk(body)
        self.send_body_end()

    def send_body_start(self, code: int, text: str) -> None:
        """Start a pull sent in pieces: ``150 <text>``. The reply stays owed
        until :meth:`send_body_end`; only body pieces may be sent meanwhile."""
        _, event = self._require_owed()
        if not (isinstance(event, Decision) and event.wants_body):
            raise ProtocolUsageError("send_body() answers ACCEPT/AUTHORIZE without BODY=HELD")
        if not 100 <= code <= 199:
            raise ProtocolUsageError("the pull is answered with a 1xx code (150)")
        _check_text(text)
        self._out += _format_reply(code, [text])
        self._stuffer = DotStuffer()

    def send_body_chunk(self, data: bytes) -> None:
        """The next piece of the body, cut anywhere; queued dot-stuffed."""
        self._out += self._body_stuffer().feed(data)

    def send_body_end(self) -> None:
        """End the body (final CRLF if missing, then "."): the pull is answered."""
        self._out += self._body_stuffer().end()
        assert self._owed is not None  # a body is sent only while its reply is owed
        cmd, event = self._owed
        self._stuffer = None
        self._owed = None
        self._apply(cmd, event)

    # -- internals ----------------------------------------------------------

    def _body_stuffer(self) -> DotStuffer:
        if self._stuffer is None:
            raise ProtocolUsageError("no body is being sent; call send_body_start() first")
        return self._stuffer

    def _require_owed(self) -> tuple[str, PeerEvent]:
        if self._owed is None:
            raise ProtocolUsageError("no event is waiting for a reply")
        if self._state is PeerState.CLOSED:
            raise ProtocolUsageError("the session is closed")
        if self._stuffer is not None:
            raise ProtocolUsageError("a body is being sent; finish it with send_body_end()")
        return self._owed

    def _send_line(self, line: str) -> None:
        self._out += line.encode("utf-8") + b"\r\n"

    def _reset_txn(self) -> None:
        self._txn_kind = None
        self._declared_size = None
        self._rcpts_ok = 0
        self._rcpts_tried = 0

    def _apply(self, cmd: str, event: PeerEvent) -> None:
        if cmd == END_OF_BLOCK:
            return  # applied when the block ended
        self._state = TRANSITIONS[(self._state, cmd)]
        match event:
            case Helo() | Rset():
                self._reset_txn()
            case EnvelopeStart(size=size) | MailStart(size=size):
                self._reset_txn()
                self._txn_kind = cmd
                self._declared_size = size
            case Rcpt():
                self._rcpts_ok += 1
            case SizeDecl(size=size):
                self._declared_size = size
            case DataStart():
                assert self._declared_size is not None
                # A whole message must be exactly SIZE (2.4); an envelope block
                # describes the message and is only held to the server's limit.
                limit = (self._declared_size if self._txn_kind == "MAIL"
                         else self.max_envelope_block)
                self._reader = DataBlockReader(self.max_line_length, limit)
            case Quit():
                self._lines = LineBuffer(self._lines.max_line)
            case StartTls():
                # RFC 3207 section 4.2: whatever followed STARTTLS in the same
                # read arrived in plaintext, before the handshake; executing it
                # after the handshake would let a man in the middle inject
                # commands into the protected session (CVE-2011-0411, the
                # "STARTTLS buffer injection"). Drop it, and forget the session.
                self._lines = LineBuffer(self._lines.max_line)
                self._reset_txn()
                self._tls = True
            case _:
                pass

    def _read_block(self, reader: DataBlockReader) -> PeerEvent | None:
        if not reader.consume(self._lines):
            threshold = self.stream_threshold
            if threshold is not None and reader.held >= threshold:
                return BlockChunk(reader.take())
            return None
        self._reader = None
        self._state = TRANSITIONS[(self._state, END_OF_BLOCK)]
        kind, declared = self._txn_kind, self._declared_size
        self._reset_txn()
        if reader.too_long_line:
            self._send_line("500 5.5.2 Line too long")
            return DataFailed(LINE_TOO_LONG_REASON)
        if kind == "MAIL" and (reader.too_big or reader.size != declared):
            self._send_line("554 5.3.4 Size mismatch")
            return DataFailed(SIZE_MISMATCH_REASON)
        if reader.too_big:
            self._send_line(self._too_big_line() if kind == "MAIL" or
                            self.max_envelope_block == self.max_message_size else
                            f"554 5.6.0 Envelope block exceeds {self.max_envelope_block} octets.")
            return DataFailed(TOO_BIG_REASON)
        event = DataComplete(reader.result())
        self._owed = (END_OF_BLOCK, event)
        return event

    def _too_big_line(self) -> str:
        return f"552 5.3.4 Message size exceeds fixed maximum of {self.max_message_size}"

    def _command(self, raw: bytes) -> PeerEvent | None:
        """Parse one command line; queue the refusal and return None if it fails."""
        # latin-1 maps every byte to one character, so nothing can fail here;
        # the checks below refuse what is not plain ASCII.
        text = raw.decode("latin-1")
        verb, _, rest = text.partition(" ")
        rest = rest.lstrip(" ")
        if verb.isascii() and verb[:5].upper() == "SIZE=":
            # Table 4 writes the command as one token, SIZE=<n>; the parser
            # gets "=<n>" so that a bare "SIZE <n>" stays a syntax error.
            verb, rest = verb[:4], verb[4:] + (f" {rest}" if rest else "")
        cmd = verb.upper() if verb.isascii() else ""
        if cmd not in VERBS:
            self._send_line("500 5.5.1 Unknown command")
            return None
        if (self._state, cmd) not in TRANSITIONS:
            self._send_line(self._sequence_error(cmd))
            return None
        try:
            if not rest.isascii() or not rest.isprintable():
                raise _syntax("Invalid characters")
            event = self._parsers[cmd](cmd, rest)
        except _Refusal as refusal:
            self._send_line(refusal.line)
            return None
        self._owed = (cmd, event)
        return event

    def _sequence_error(self, cmd: str) -> str:
        state = self._state
        if cmd == "DATA" and state is PeerState.TXN_STARTED and self._rcpts_tried:
            return "554 5.5.1 No valid recipients"
        if state is PeerState.GREETED:
            why = "send HELO or EHLO first"
        elif state is PeerState.READY:
            why = "no transaction; send ENVELOPE or MAIL first"
        elif cmd in ("SIZE", "DATA") and state is PeerState.TXN_STARTED:
            why = "send RCPT first"
        else:
            why = f"{cmd} not allowed inside a transaction; send RSET first"
        return f"503 5.5.1 Bad sequence of commands: {why}"

    # Command parsers: (verb, rest of line) -> event, or raise _Refusal.

    def _parse_helo(self, cmd: str, rest: str) -> PeerEvent:
        args = rest.split()
        if len(args) != 1:
            raise _syntax(f"Syntax: {cmd} <hostname>")
        hostname = parse_hostname(args[0])
        if hostname is None:
            raise _syntax(f"Bad hostname {args[0]}")
        return Helo(hostname, extended=cmd == "EHLO")

    def _check_size(self, size: int) -> None:
        if size > self.max_message_size:
            raise _Refusal(self._too_big_line())

    def _parse_start(self, cmd: str, rest: str) -> PeerEvent:
        m = _FROM_RE.fullmatch(rest)
        if m is None:
            raise _syntax(f"Syntax: {cmd} From:<address> ID=<envid> [SIZE=<n>]")
        sender = parse_mailbox(m.group(1))
        if sender is None:
            raise _syntax(f"Bad address <{m.group(1)}>")
        params = _split_params(m.group(2))
        envid = params.pop("ID", None)
        if envid is None or not _is_envid(envid):
            raise _syntax("ID=<envid> required: 26 characters of [a-z2-7]")
        size = None
        if "SIZE" in params:
            size = _parse_number(params.pop("SIZE"), "SIZE")
            self._check_size(size)
        if params:
            raise _syntax(f"Unknown parameter {min(params)}")
        if cmd == "MAIL":
            return MailStart(sender, envid, size)
        return EnvelopeStart(sender, envid, size)

    def _parse_rcpt(self, cmd: str, rest: str) -> PeerEvent:
        m = _TO_RE.fullmatch(rest)
        if m is None or m.group(2):
            raise _syntax("Syntax: RCPT To:<address>")
        recipient = parse_mailbox(m.group(1))
        if recipient is None:
            raise _syntax(f"Bad address <{m.group(1)}>")
        if self._rcpts_ok >= self.max_recipients:
            raise _Refusal("452 4.5.3 Too many recipients")
        return Rcpt(recipient)

    def _parse_size(self, cmd: str, rest: str) -> PeerEvent:
        if not rest.startswith("="):
            raise _syntax("Syntax: SIZE=<n>")
        size = _parse_number(rest[1:], "SIZE")
        self._check_size(size)
        return SizeDecl(size)

    def _parse_data(self, cmd: str, rest: str) -> PeerEvent:
        if rest:
            raise _syntax("Syntax: DATA")
        if self._declared_size is None:
            raise _Refusal("503 5.5.1 SIZE required before DATA")
        return DataStart()

    def _parse_decision(self, cmd: str, rest: str) -> PeerEvent:
        kind = DecisionKind(cmd)
        envid, _, to = rest.partition(" ")
        m = _TO_RE.fullmatch(to.lstrip(" "))
        if not _is_envid(envid) or m is None:
            raise _syntax(f"Syntax: {cmd} <envid> To:<address>")
        recipient = parse_mailbox(m.group(1))
        if recipient is None:
            raise _syntax(f"Bad address <{m.group(1)}>")
        params = _split_params(m.group(2))
        body = params.pop("BODY", None)
        if params:
            raise _syntax(f"Unknown parameter {min(params)}")
        if body is not None and (body.upper() != "HELD" or kind not in _PULLING_KINDS):
            raise _syntax(f"BODY=HELD only goes with ACCEPT or AUTHORIZE, not {cmd} BODY={body}")
        return Decision(kind, envid, recipient, body_held=body is not None)

    def _parse_received(self, cmd: str, rest: str) -> PeerEvent:
        if not _is_envid(rest.rstrip(" ")):
            raise _syntax("Syntax: RECEIVED <envid>")
        return Received(rest.rstrip(" "))

    def _parse_starttls(self, cmd: str, rest: str) -> PeerEvent:
        if rest.strip(" "):
            raise _syntax("Syntax: STARTTLS")
        if self._tls:
            raise _Refusal("503 5.5.1 Bad sequence of commands: TLS already active")
        return StartTls()

    def _parse_bare(self, cmd: str, rest: str) -> PeerEvent:
        if rest.strip(" "):
            raise _syntax(f"Syntax: {cmd}")
        return Rset() if cmd == "RSET" else Quit()

    def _parse_noop(self, cmd: str, rest: str) -> PeerEvent:
        # RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        return Noop()


# ---------------------------------------------------------------------------
# Client side.
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One (possibly multi-line) reply; ``lines`` are the texts without codes."""

    code: int
    lines: list[str]

    @property
    def ok(self) -> bool:
        """Positive completion or intermediate (2xx, 3xx)."""
        return 200 <= self.code <= 399

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True, slots=True)
class PulledBody:
    """The answer to a pulling decision: ``150 <text>`` and the message.

    With ``stream_threshold`` set, :class:`BlockChunk` events came first and
    ``body`` is only the rest: the message is their ``data`` joined, then this.
    A block that fails after some chunks raises :class:`RemoteProtocolError` as
    without streaming; the chunks must then be thrown away.
    """

    code: int
    text: str
    body: bytes


_REPLY_RE: Final = re.compile(rb"([0-9]{3})(?:([ -])(.*))?", re.DOTALL)
_MAX_REPLY_LINES: Final = 1000


class _Expect(enum.Enum):
    REPLY = "reply"
    PULL = "pull"  # a 150 answer is followed by a dot-stuffed block


class PeerClientConnection:
    """The initiating side of a peer session (our delivery worker).

    ``send(command)`` returns the bytes to write. Replies are matched to commands
    in order, so the connection knows when a ``150`` brings a block (the answer to
    ACCEPT/AUTHORIZE without BODY=HELD). The first reply is the greeting.

    With ``stream_threshold=n``, that block comes as :class:`BlockChunk` events,
    one each time ``n`` octets or more are held, before its :class:`PulledBody`.
    A DATA block may be sent in pieces: :class:`DataPart` commands, then
    :class:`DataEnd`.
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
        # The DATA block being sent in pieces (DataPart), until DataEnd.
        self._stuffer: DotStuffer | None = None
        self._lines = LineBuffer(max_line_length)
        self._expecting: deque[_Expect] = deque([_Expect.REPLY])
        self._partial: list[str] = []
        self._partial_code: int | None = None
        self._pull: tuple[int, str, DataBlockReader] | None = None
        self._eof = False
        self._broken = False

    @property
    def buffered(self) -> int:
        return self._lines.buffered

    def send(self, command: PeerCommand) -> bytes:
        expect = _Expect.REPLY
        if self._stuffer is not None and not isinstance(command, Data | DataPart | DataEnd):
            raise ProtocolUsageError(f"{command!r} inside a DATA block; send DataEnd() first")
        match command:
            case Helo(hostname=hostname, extended=extended):
                line = f"{'EHLO' if extended else 'HELO'} {_checked_host(hostname)}"
            case EnvelopeStart(sender=sender, envid=envid, size=size):
                line = f"ENVELOPE {_start_args(sender, envid, size)}"
            case MailStart(sender=sender, envid=envid, size=size):
                line = f"MAIL {_start_args(sender, envid, size)}"
            case Rcpt(recipient=recipient):
                line = f"RCPT To:<{_checked_mailbox(recipient)}>"
            case SizeDecl(size=size):
                line = f"SIZE={_checked_size(size)}"
            case DataStart():
                line = "DATA"
            case Data(body=body):
                return self.send(DataPart(body)) + self.send(DataEnd())
            case DataPart(body=body):
                if self._stuffer is None:
                    self._stuffer = DotStuffer()
                return self._stuffer.feed(body)
            case DataEnd():
                stuffer, self._stuffer = self._stuffer or DotStuffer(), None
                self._expecting.append(expect)
                return stuffer.end()
            case Decision(kind=kind, envid=envid, recipient=recipient, body_held=held):
                if held and kind not in _PULLING_KINDS:
                    raise ProtocolUsageError("BODY=HELD only goes with ACCEPT or AUTHORIZE")
                line = f"{kind.value} {_checked_envid(envid)} To:<{_checked_mailbox(recipient)}>"
                if held:
                    line += " BODY=HELD"
                if command.wants_body:
                    expect = _Expect.PULL
            case Received(envid=envid):
                line = f"RECEIVED {_checked_envid(envid)}"
            case Rset():
                line = "RSET"
            case Noop():
                line = "NOOP"
            case Quit():
                line = "QUIT"
            case StartTls():
                line = "STARTTLS"
            case _:
                raise ProtocolUsageError(f"not a peer command: {command!r}")
        self._expecting.append(expect)
        return line.encode("ascii") + b"\r\n"

    def start_tls(self) -> None:
        """Call after the 220 to STARTTLS, before the handshake.

        RFC 3207 section 4.2: nothing received in plaintext may count once TLS
        is up. A server that sent more after its 220 is broken, or someone on
        the path injected replies meant to be read as TLS-protected answers;
        either way the session cannot be trusted.
        """
        if self._lines.buffered or self._partial or self._pull is not None:
            self._broken = True
            raise RemoteProtocolError("the server sent data after its STARTTLS reply")
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

    def next_event(
        self,
    ) -> Reply | PulledBody | BlockChunk | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        if self._broken:
            raise RemoteProtocolError("the connection already failed")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._broken = True
            raise

    def _next_event(
        self,
    ) -> Reply | PulledBody | BlockChunk | Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]:
        while True:
            if self._pull is not None:
                code, text, reader = self._pull
                if not reader.consume(self._lines):
                    threshold = self.stream_threshold
                    if threshold is not None and reader.held >= threshold:
                        return BlockChunk(reader.take())
                    return CLOSED if self._eof else NEED_DATA
                self._pull = None
                if reader.too_long_line:
                    raise RemoteProtocolError("pulled body has an over-long line")
                if reader.too_big:
                    raise RemoteProtocolError(f"pulled body exceeds {self.max_message_size} octets")
                return PulledBody(code, text, reader.result())
            line = self._lines.next_line()
            if line is None:
                return CLOSED if self._eof else NEED_DATA
            if line is LINE_TOO_LONG:
                raise RemoteProtocolError("reply line too long")
            m = _REPLY_RE.fullmatch(line)
            if m is None:
                raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
            code = int(m.group(1))
            if self._partial_code is not None and code != self._partial_code:
                raise RemoteProtocolError("multi-line reply changes its code")
            self._partial.append((m.group(3) or b"").decode("utf-8", "replace"))
            if m.group(2) == b"-":
                if len(self._partial) >= _MAX_REPLY_LINES:
                    raise RemoteProtocolError("multi-line reply too long")
                self._partial_code = code
                continue
            lines, self._partial, self._partial_code = self._partial, [], None
            # A reply nobody asked for (say 421 before closing) is passed on as is.
            expect = self._expecting.popleft() if self._expecting else _Expect.REPLY
            if expect is _Expect.PULL and code == 150:
                reader = DataBlockReader(self.max_line_length, self.max_message_size)
                self._pull = (code, lines[-1], reader)
                continue
            return Reply(code, lines)


def _checked_host(hostname: str) -> str:
    if parse_hostname(hostname) is None:
        raise ProtocolUsageError(f"bad hostname {hostname!r}")
    return hostname


def _checked_mailbox(address: str) -> str:
    if parse_mailbox(address) is None:
        raise ProtocolUsageError(f"bad address {address!r}")
    return address


def _checked_envid(envid: str) -> str:
    if not _is_envid(envid):
        raise ProtocolUsageError(f"bad envelope id {envid!r}")
    return envid


def _checked_size(size: int) -> int:
    if size < 0 or _NUMBER_RE.fullmatch(str(size)) is None:
        raise ProtocolUsageError(f"bad size {size!r}")
    return size


def _start_args(sender: str, envid: str, size: int | None) -> str:
    args = f"From:<{_checked_mailbox(sender)}> ID={_checked_envid(envid)}"
    if size is not None:
        args += f" SIZE={_checked_size(size)}"
    return args
