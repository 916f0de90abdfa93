"""The connection machinery both ports share, written once.

Both ports are sans-IO in the manner of h11, and their connections differ only
in grammar and in the words of their replies: the received bytes, the loop
that turns them into events, the event a reply is owed to, the state table's
bookkeeping, the dot-stuffed blocks read in (a message after DATA, a pulled
body, a listing) and sent out in pieces, and the TLS upgrade's discarding of
plaintext. That common part is here; each port's ``connection.py`` adds its
grammar (``grammar.py``), its state table (``states.py``) and its replies.

Division of labour on the server side: the connection answers by itself
everything that can be judged from the wire alone (unknown verbs, bad syntax,
commands out of sequence, over-long lines, size and recipient limits) and never
shows those to the application. Every well-formed command in a state that
allows it becomes an event, and the application must answer it before asking
for the next one; whether the answer is positive decides whether the state
moves (see each port's ``states.py``).
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, ClassVar, Final, Generic, Literal, NamedTuple, Required, TypedDict, TypeVar

from smdp.protocol._events import BlockFailed
from smdp.protocol._grammar import Refusal
from smdp.protocol._states import END_OF_BLOCK, OutOfSequence, StateTable
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
)

__all__ = [
    "MAX_REPLY_LINES",
    "MIB",
    "ClientConnection",
    "ClientLimits",
    "MultilineReply",
    "Pending",
    "ServerConnection",
    "ServerLimits",
    "Vocabulary",
    "check_text",
    "check_threshold",
]

MIB: Final = 1024 * 1024
#: The most lines one reply may have (``250-`` ... ``250 ``): a peer that
#: never ends its reply must not grow a client without bound.
MAX_REPLY_LINES: Final = 1000

E = TypeVar("E")
S = TypeVar("S", bound=enum.Enum)
R = TypeVar("R")
X = TypeVar("X", bound=enum.Enum)

Pending = Literal[Sentinel.NEED_DATA, Sentinel.CLOSED]


class Vocabulary(NamedTuple):
    """How a port's answer API names things, for its ProtocolUsageError messages."""

    answer: str  # an answer to an event: "reply", "answer"
    block: str  # a block answer sent in pieces: "body", "block"
    start: str  # the method that starts one
    end: str  # the method that ends it


class ServerLimits(TypedDict, total=False):
    """The keyword arguments of :class:`ServerConnection`, for subclasses that add theirs."""

    max_message_size: Required[int]
    max_recipients: Required[int]
    max_command_line: int | None
    max_line_length: int
    tls: bool
    stream_threshold: int | None


class ClientLimits(TypedDict, total=False):
    """The keyword arguments of :class:`ClientConnection`."""

    max_line_length: int
    max_message_size: int
    stream_threshold: int | None


def check_text(line: str, what: str) -> None:
    """Refuse reply text that would end the line early or smuggle a second one."""
    if "\r" in line or "\n" in line or "\0" in line:
        raise ProtocolUsageError(f"{what} text must not hold CR, LF or NUL: {line!r}")


def check_threshold(stream_threshold: int | None) -> int | None:
    if stream_threshold is not None and stream_threshold < 1:
        raise ValueError("stream_threshold must be None or at least 1")
    return stream_threshold


def _due_chunk(reader: DataBlockReader, threshold: int | None) -> BlockChunk | None:
    """What a block still being read hands out: a chunk once enough is held."""
    if threshold is not None and reader.held >= threshold:
        return BlockChunk(reader.take())
    return None


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


class _Received:
    """The bytes one side of a session received and has not read yet."""

    def __init__(self, max_line: int) -> None:
        self._lines = LineBuffer(max_line)
        self._eof = False

    @property
    def buffered(self) -> int:
        """Octets received and not processed yet."""
        return self._lines.buffered

    def receive_data(self, data: bytes) -> None:
        """Feed received bytes; ``b""`` means the other side closed its half."""
        if self._eof:
            raise ProtocolUsageError("receive_data() after EOF")
        if data:
            self._lines.feed(data)
        else:
            self._eof = True

    def _drop_input(self) -> None:
        """Forget every byte received and not read yet."""
        self._lines = LineBuffer(self._lines.max_line)


class ServerConnection(_Received, Generic[S, E]):
    """The server side of one session, less the port's grammar and replies.

    ``max_command_line`` counts a command line with its CRLF; None is the
    port's default. A port subclass names its :class:`StateTable` and fills
    in the hooks below (``_split``, ``_read``, ``_refuse``, ``_sequence_error``,
    ``_end_block``, ``_after``); the public half of the answer API
    (``reply()``, or ``ok()`` and ``err()``) is the port's too, built on
    :meth:`_answer` and the block helpers.
    """

    #: The port's state table, and its default longest command line.
    _TABLE: ClassVar[StateTable[Any]]
    _COMMAND_LINE: ClassVar[int]
    #: How the port's answer API is named, for its usage errors.
    _WORDS: ClassVar[Vocabulary]
    #: The port's refusals of an unknown verb and of an over-long line.
    _UNKNOWN_COMMAND: ClassVar[str]
    _LINE_TOO_LONG: ClassVar[str]

    def __init__(
        self,
        hostname: str,
        *,
        max_message_size: int,
        max_recipients: int,
        max_command_line: int | None = None,
        max_line_length: int = 1000,
        tls: bool = False,
        stream_threshold: int | None = None,
    ) -> None:
        check_text(hostname, self._WORDS.answer)
        super().__init__(self._COMMAND_LINE if max_command_line is None else max_command_line)
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.max_recipients = max_recipients
        self.max_line_length = max_line_length
        self.stream_threshold = check_threshold(stream_threshold)
        self._table: StateTable[S] = self._TABLE
        self._state: S = self._table.initial
        self._out = bytearray()
        # True once the session runs over TLS (implicit TLS, or after the
        # port's upgrade command): a second upgrade is refused (RFC 3207
        # section 4.2, RFC 2595 section 4).
        self._tls = tls
        # The event waiting for the application's answer, with its command name.
        self._owed: tuple[str, E] | None = None
        # The data block being read after DATA.
        self._reader: DataBlockReader | None = None
        # The block answer being sent in pieces.
        self._stuffer: DotStuffer | None = None
        # Transaction data, not state: recipients accepted so far.
        self._rcpts_ok = 0

    # -- public API ---------------------------------------------------------

    @property
    def state(self) -> S:
        return self._state

    @property
    def tls(self) -> bool:
        """True when the session runs over TLS (the application said so)."""
        return self._tls

    @property
    def reply_owed(self) -> E | None:
        """The event still waiting for its answer, if any."""
        return self._owed[1] if self._owed else None

    def receive_data(self, data: bytes) -> None:
        """Feed received bytes; ``b""`` means the peer closed its side."""
        if self._state is not self._table.closed:
            super().receive_data(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> E | BlockChunk | Pending:
        if self._owed is not None:
            raise ProtocolUsageError(f"{self._WORDS.answer} owed to {self._owed[1]!r}")
        while self._state is not self._table.closed:
            if self._reader is not None:
                event = self._read_block(self._reader)
                if event is not None:
                    return event
            else:
                line = self._lines.next_line()
                if line is LINE_TOO_LONG:
                    self._refuse(self._LINE_TOO_LONG)
                    continue
                if line is not None:
                    event = self._command(line)
                    if event is not None:
                        return event
                    continue
            if not self._eof:
                return NEED_DATA
            # EOF: a half-read command or block is simply lost with the session.
            self._state = self._table.closed
            self._reader = None
        return CLOSED

    # -- the port's part ------------------------------------------------------

    def _refuse(self, text: str) -> None:
        """Queue the port's error reply saying ``text``."""
        raise NotImplementedError

    def _split(self, raw: bytes) -> tuple[str, str, bytes]:
        """A command line's verb as sent (upper-cased), the command it names
        in the state table, and the rest of the line."""
        raise NotImplementedError

    def _read(self, verb: str, cmd: str, rest: bytes) -> E:
        """The event of an allowed command, or raise :class:`Refusal`."""
        raise NotImplementedError

    def _sequence_error(self, cmd: str) -> str:
        """The refusal of ``cmd`` in the current state."""
        raise NotImplementedError

    def _end_block(self, reader: DataBlockReader) -> E:
        """The block is over: drop the transaction, and return the block's
        event, a ``BlockComplete`` or, already refused, a ``BlockFailed``."""
        raise NotImplementedError

    def _after(self, cmd: str, event: E) -> None:
        """What a positive answer to ``event`` changes besides the state."""
        raise NotImplementedError

    # -- shared internals ---------------------------------------------------

    def _command(self, raw: bytes) -> E | None:
        """Parse one command line; queue the refusal and return None if it fails."""
        try:
            verb, cmd, rest = self._split(raw)
            if cmd not in self._table.verbs:
                raise Refusal(self._UNKNOWN_COMMAND)
            try:
                self._table.after(self._state, cmd)
            except OutOfSequence:
                raise Refusal(self._sequence_error(cmd)) from None
            event = self._read(verb, cmd, rest)
        except Refusal as refusal:
            self._refuse(refusal.text)
            return None
        self._owed = (cmd, event)
        return event

    def _read_block(self, reader: DataBlockReader) -> E | BlockChunk | None:
        if not reader.consume(self._lines):
            return _due_chunk(reader, self.stream_threshold)
        self._reader = None
        # The block's end closes the transaction whatever the answer, so its
        # transition is taken as soon as the terminating "." is read.
        self._state = self._table.after(self._state, END_OF_BLOCK)
        event = self._end_block(reader)
        if not isinstance(event, BlockFailed):
            self._owed = (END_OF_BLOCK, event)
        return event

    def _require_owed(self) -> tuple[str, E]:
        if self._owed is None:
            raise ProtocolUsageError(f"no event is waiting for {_article(self._WORDS.answer)}")
        if self._state is self._table.closed:
            raise ProtocolUsageError("the session is closed")
        if self._stuffer is not None:
            words = self._WORDS
            raise ProtocolUsageError(
                f"{_article(words.block)} is being sent; finish it with {words.end}()"
            )
        return self._owed

    def _answer(self, cmd: str, event: E, wire: bytes, *, positive: bool) -> None:
        """Queue the answer to the owed ``event`` and take its transition."""
        self._out += wire
        self._owed = None
        if cmd == END_OF_BLOCK:
            return  # applied when the block ended
        if not positive:
            self._state = self._table.after_refusal(self._state, cmd)
            return
        self._state = self._table.after(self._state, cmd)
        self._after(cmd, event)

    def _begin_block(self, head: bytes) -> None:
        """Queue the positive line of a block answer; the answer stays owed
        until :meth:`_finish_block`, and only block pieces may follow."""
        self._out += head
        self._stuffer = DotStuffer()

    def _block_piece(self, data: bytes) -> None:
        self._out += self._block_stuffer().feed(data)

    def _finish_block(self) -> None:
        tail = self._block_stuffer().end()
        self._stuffer = None
        cmd, event = self._require_owed()
        self._answer(cmd, event, tail, positive=True)

    def _block_stuffer(self) -> DotStuffer:
        if self._stuffer is None:
            words = self._WORDS
            raise ProtocolUsageError(f"no {words.block} is being sent; call {words.start}() first")
        return self._stuffer

    def _upgraded(self) -> None:
        """The TLS upgrade was answered positively: both sides start TLS now.

        Whatever followed the command in the same read arrived in plaintext,
        before the handshake; executing it afterwards would let a man in the
        middle inject commands into the protected session (RFC 3207 section
        4.2, RFC 2595 section 4; CVE-2011-0411, the "STARTTLS buffer
        injection"). It is dropped.
        """
        self._drop_input()
        self._tls = True


class MultilineReply:
    """The lines of one reply as they come (RFC 5321 4.2.1, both SMTP and the
    peer port): the same code on every line, at most MAX_REPLY_LINES."""

    __slots__ = ("_code", "_lines")

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._code: int | None = None

    def __bool__(self) -> bool:
        return bool(self._lines)

    def add(self, code: int, more: bool, text: str) -> list[str] | None:
        """Take one line; the reply's lines once its last one came, else None."""
        if self._code is not None and code != self._code:
            raise RemoteProtocolError("multi-line reply changes its code")
        self._lines.append(text)
        if more:
            if len(self._lines) >= MAX_REPLY_LINES:
                raise RemoteProtocolError("multi-line reply too long")
            self._code = code
            return None
        lines, self._lines, self._code = self._lines, [], None
        return lines


class ClientConnection(_Received, Generic[X, R]):
    """The initiating side of one session, less the port's grammar.

    Answers are matched to commands in order: ``_expecting`` holds, per
    command sent and not answered yet, what the port expects its answer to
    bring (a plain reply, or a block after it). The first answer is the
    greeting.
    """

    #: The port's TLS upgrade command (STARTTLS, STLS).
    _UPGRADE: ClassVar[str]
    #: What the port calls its reply lines, in RemoteProtocolError messages.
    _LINE_NAME: ClassVar[str]

    def __init__(
        self,
        *,
        max_line_length: int = 1000,
        max_message_size: int = 64 * MIB,
        stream_threshold: int | None = None,
    ) -> None:
        super().__init__(max_line_length)
        self.max_line_length = max_line_length
        self.max_message_size = max_message_size
        self.stream_threshold = check_threshold(stream_threshold)
        # The subclass puts its expectation of the greeting first.
        self._expecting: deque[X] = deque()
        self._broken = False

    def next_event(self) -> R | BlockChunk | Pending:
        if self._broken:
            raise RemoteProtocolError("the connection already failed")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._broken = True
            raise

    def start_tls(self) -> None:
        """Call after the positive answer to the TLS upgrade, before the handshake.

        Nothing received in plaintext may count once TLS is up (RFC 3207
        section 4.2, RFC 2595 section 4). A server that sent more after that
        answer is broken, or someone on the path injected replies meant to be
        read as TLS-protected answers; either way the session cannot be trusted.
        """
        if self._lines.buffered or self._mid_answer():
            self._broken = True
            raise RemoteProtocolError(f"the server sent data after its {self._UPGRADE} reply")
        if self._expecting:
            raise ProtocolUsageError("start_tls() with replies still outstanding")
        self._drop_input()

    # -- the port's part ------------------------------------------------------

    def _next_event(self) -> R | BlockChunk | Pending:
        raise NotImplementedError

    def _mid_answer(self) -> bool:
        """True while part of an answer was read and the rest is still due."""
        raise NotImplementedError

    # -- shared internals ---------------------------------------------------

    def _waiting(self) -> Pending:
        return CLOSED if self._eof else NEED_DATA

    def _next_line(self) -> bytes | Pending:
        """The next reply line, without its line end."""
        line = self._lines.next_line()
        if line is None:
            return self._waiting()
        if line is LINE_TOO_LONG:
            raise RemoteProtocolError(f"{self._LINE_NAME} line too long")
        return line

    def _expected(self, unasked: X) -> X:
        # A reply nobody asked for (say 421 before closing) is read as ``unasked``.
        return self._expecting.popleft() if self._expecting else unasked

    def _new_reader(self) -> DataBlockReader:
        return DataBlockReader(self.max_line_length, self.max_message_size)

    def _block_progress(
        self, reader: DataBlockReader, *, streamed: bool
    ) -> BlockChunk | Pending | None:
        """None once the block is complete; else what ``next_event()`` returns
        meanwhile (a chunk of a ``streamed`` block, or NEED_DATA/CLOSED)."""
        if reader.consume(self._lines):
            return None
        if streamed:
            chunk = _due_chunk(reader, self.stream_threshold)
            if chunk is not None:
                return chunk
        return self._waiting()
