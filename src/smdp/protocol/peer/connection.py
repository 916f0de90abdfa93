"""The peer port's connections (wire contract section 2, paper Table 4).

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
from typing import Unpack

from smdp.protocol._connection import (
    ClientConnection,
    ClientLimits,
    MultilineReply,
    Pending,
    ServerConnection,
    ServerLimits,
    Vocabulary,
    check_text,
)
from smdp.protocol._grammar import Refusal
from smdp.protocol.framing import (
    DataBlockReader,
    DotStuffer,
    ProtocolUsageError,
    RemoteProtocolError,
)
from smdp.protocol.peer.events import (
    LINE_TOO_LONG_REASON,
    SIZE_MISMATCH_REASON,
    TOO_BIG_REASON,
    BlockChunk,
    Data,
    DataComplete,
    DataEnd,
    DataFailed,
    DataPart,
    DataStart,
    Decision,
    EnvelopeStart,
    Helo,
    MailStart,
    PeerCommand,
    PeerEvent,
    PulledBody,
    Quit,
    Rcpt,
    Reply,
    Rset,
    SizeDecl,
    StartTls,
)
from smdp.protocol.peer.grammar import (
    format_reply,
    read_arguments,
    read_command,
    read_reply_line,
    split_command,
    too_big_line,
    write_command,
)
from smdp.protocol.peer.states import TABLE, PeerState

__all__ = ["PeerClientConnection", "PeerServerConnection"]



class PeerServerConnection(ServerConnection[PeerState, PeerEvent]):
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

    _TABLE = TABLE
    _COMMAND_LINE = 1000
    _WORDS = Vocabulary("reply", "body", "send_body_start", "send_body_end")
    _UNKNOWN_COMMAND = "500 5.5.1 Unknown command"
    _LINE_TOO_LONG = "500 5.5.2 Line too long"

    def __init__(
        self,
        hostname: str,
        *,
        max_envelope_block: int | None = None,
        **limits: Unpack[ServerLimits],
    ) -> None:
        super().__init__(hostname, **limits)
        # An ENVELOPE block describes a message in a few lines; None holds it
        # to max_message_size only (the application then checks its size).
        self.max_envelope_block = (self.max_message_size if max_envelope_block is None
                                   else min(max_envelope_block, self.max_message_size))
        # Transaction data (states.py, "Theory of operation": data, not state).
        self._txn_kind: str | None = None
        self._declared_size: int | None = None
        self._rcpts_tried = 0

    def greeting(self) -> bytes:
        return f"220 {self.hostname} SMDP ready\r\n".encode()

    def reply(self, code: int, text: str | list[str]) -> None:
        """Answer the last event; multi-line (``250-``) when ``text`` is a list."""
        cmd, event = self._require_owed()
        lines = [text] if isinstance(text, str) else list(text)
        if not lines:
            raise ProtocolUsageError("a reply needs at least one line")
        for line in lines:
            check_text(line, self._WORDS.answer)
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
        if isinstance(event, Rcpt):
            self._rcpts_tried += 1
        self._answer(cmd, event, format_reply(code, lines), positive=positive)

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
        # 150 is the one 1xx of the protocol (protocol.md 6.2): a client reads
        # a block after it and after no other code.
        if code != 150:
            raise ProtocolUsageError("the pull is answered with a 1xx code, and only 150")
        check_text(text, self._WORDS.answer)
        self._begin_block(format_reply(code, [text]))

    def send_body_chunk(self, data: bytes) -> None:
        """The next piece of the body, cut anywhere; queued dot-stuffed."""
        self._block_piece(data)

    def send_body_end(self) -> None:
        """End the body (final CRLF if missing, then "."): the pull is answered."""
        self._finish_block()

    # -- the port's part of ServerConnection -------------------------------------

    def _refuse(self, text: str) -> None:
        self._out += text.encode("utf-8") + b"\r\n"

    def _split(self, raw: bytes) -> tuple[str, str, bytes]:
        cmd, rest = split_command(raw)
        return cmd, cmd, rest

    def _read(self, verb: str, cmd: str, rest: bytes) -> PeerEvent:
        event = read_command(cmd, read_arguments(rest), max_size=self.max_message_size)
        match event:
            case Rcpt() if self._rcpts_ok >= self.max_recipients:
                raise Refusal("452 4.5.3 Too many recipients")
            case SizeDecl(size=size) if size > self.max_message_size:
                raise Refusal(too_big_line(self.max_message_size))
            case DataStart() if self._declared_size is None:
                raise Refusal("503 5.5.1 SIZE required before DATA")
            case StartTls() if self._tls:
                raise Refusal("503 5.5.1 Bad sequence of commands: TLS already active")
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

    def _end_block(self, reader: DataBlockReader) -> PeerEvent:
        kind, declared = self._txn_kind, self._declared_size
        self._reset_txn()
        if reader.too_long_line:
            self._refuse(self._LINE_TOO_LONG)
            return DataFailed(LINE_TOO_LONG_REASON)
        if kind == "MAIL" and (reader.too_big or reader.size != declared):
            self._refuse("554 5.3.4 Size mismatch")
            return DataFailed(SIZE_MISMATCH_REASON)
        if reader.too_big:
            self._refuse(too_big_line(self.max_message_size) if kind == "MAIL" or
                         self.max_envelope_block == self.max_message_size else
                         f"554 5.6.0 Envelope block exceeds {self.max_envelope_block} octets.")
            return DataFailed(TOO_BIG_REASON)
        return DataComplete(reader.result())

    def _after(self, cmd: str, event: PeerEvent) -> None:
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
                self._drop_input()
            case StartTls():
                # RFC 3207 section 4.2: drop what followed STARTTLS, and
                # forget the session; the client introduces itself again.
                self._upgraded()
                self._reset_txn()
            case _:
                pass

    def _reset_txn(self) -> None:
        self._txn_kind = None
        self._declared_size = None
        self._rcpts_ok = 0
        self._rcpts_tried = 0


class _Expect(enum.Enum):
    REPLY = "reply"
    PULL = "pull"  # a 150 answer is followed by a dot-stuffed block


class PeerClientConnection(ClientConnection[_Expect, Reply | PulledBody]):
    """The initiating side of a peer session (our delivery worker).

    ``send(command)`` returns the bytes to write. Replies are matched to commands
    in order, so the connection knows when a ``150`` brings a block (the answer to
    ACCEPT/AUTHORIZE without BODY=HELD). The first reply is the greeting.

    With ``stream_threshold=n``, that block comes as :class:`BlockChunk` events,
    one each time ``n`` octets or more are held, before its :class:`PulledBody`.
    A DATA block may be sent in pieces: :class:`DataPart` commands, then
    :class:`DataEnd`.
    """

    _UPGRADE = "STARTTLS"
    _LINE_NAME = "reply"

    def __init__(self, **limits: Unpack[ClientLimits]) -> None:
        super().__init__(**limits)
        self._expecting.append(_Expect.REPLY)  # the greeting
        # The DATA block being sent in pieces (DataPart), until DataEnd.
        self._stuffer: DotStuffer | None = None
        # The lines of a multi-line reply read so far, and its code.
        self._partial = MultilineReply()
        # The pulled body being read after its 150.
        self._pull: tuple[int, str, DataBlockReader] | None = None

    def send(self, command: PeerCommand) -> bytes:
        if self._stuffer is not None and not isinstance(command, Data | DataPart | DataEnd):
            raise ProtocolUsageError(f"{command!r} inside a DATA block; send DataEnd() first")
        match command:
            case Data(body=body):
                return self.send(DataPart(body)) + self.send(DataEnd())
            case DataPart(body=body):
                if self._stuffer is None:
                    self._stuffer = DotStuffer()
                return self._stuffer.feed(body)
            case DataEnd():
                stuffer, self._stuffer = self._stuffer or DotStuffer(), None
                self._expecting.append(_Expect.REPLY)
                return stuffer.end()
        line = write_command(command)
        pull = isinstance(command, Decision) and command.wants_body
        self._expecting.append(_Expect.PULL if pull else _Expect.REPLY)
        return line.encode("ascii") + b"\r\n"

    def _mid_answer(self) -> bool:
        return bool(self._partial) or self._pull is not None

    def _next_event(self) -> Reply | PulledBody | BlockChunk | Pending:
        while True:
            if self._pull is not None:
                code, text, reader = self._pull
                progress = self._block_progress(reader, streamed=True)
                if progress is not None:
                    return progress
                self._pull = None
                if reader.too_long_line:
                    raise RemoteProtocolError("pulled body has an over-long line")
                if reader.too_big:
                    raise RemoteProtocolError(f"pulled body exceeds {self.max_message_size} octets")
                return PulledBody(code, text, reader.result())
            line = self._next_line()
            if not isinstance(line, bytes):
                return line
            code, more, text = read_reply_line(line)
            lines = self._partial.add(code, more, text)
            if lines is None:
                continue
            if self._expected(_Expect.REPLY) is _Expect.PULL and code == 150:
                self._pull = (code, lines[-1], self._new_reader())
                continue
            return Reply(code, lines)
