"""The user port's connections (user application to server), wire contract
section 3, paper Table 5.

Sans-IO like the peer port: :class:`UserServerConnection` turns bytes into
events and the application's ``ok()``/``err()`` into bytes;
:class:`UserClientConnection` does the reverse for our command-line client.

The server connection answers by itself every command it can judge from the wire
alone (unknown verbs, wrong state, bad arguments, over-long lines, recipient and
size limits); the application sees only well-formed commands in a state that
allows them, and must answer each before asking for the next event.
"""

from __future__ import annotations

import enum
from typing import Unpack

from smdp.protocol._connection import (
    ClientConnection,
    ClientLimits,
    Pending,
    ServerConnection,
    Vocabulary,
    check_text,
)
from smdp.protocol._grammar import Refusal
from smdp.protocol.framing import (
    DataBlockReader,
    ProtocolUsageError,
    RemoteProtocolError,
    dot_stuff,
)
from smdp.protocol.user.events import (
    LINE_TOO_LONG_REASON,
    TOO_BIG_REASON,
    BlockChunk,
    DataCmd,
    MailCmd,
    Message,
    MessageComplete,
    MessageFailed,
    Quit,
    RcptCmd,
    Retr,
    Rset,
    Stls,
    Top,
    UserCommand,
    UserEvent,
    UserReply,
)
from smdp.protocol.user.grammar import (
    answers_multiline,
    read_arguments,
    read_command,
    read_status_line,
    split_command,
    status,
    write_command,
)
from smdp.protocol.user.states import TABLE, UserState

__all__ = ["UserClientConnection", "UserServerConnection"]


class UserServerConnection(ServerConnection[UserState, UserEvent]):
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

    _TABLE = TABLE
    _COMMAND_LINE = 512
    _WORDS = Vocabulary("answer", "block", "ok_block_start", "block_end")
    _UNKNOWN_COMMAND = "unknown command"
    _LINE_TOO_LONG = "line too long"

    def greeting(self) -> bytes:
        return f"+OK {self.hostname} SMDP user port ready\r\n".encode()

    def ok(self, text: str, lines: list[str] | None = None) -> None:
        """``+OK text``; with ``lines`` (or for a multi-line command) a block follows."""
        cmd, event = self._require_owed()
        check_text(text, self._WORDS.answer)
        multi = answers_multiline(event)
        if lines is not None and not multi:
            raise ProtocolUsageError(f"{event!r} is answered on one line")
        block = b""
        if multi:
            for line in lines or ():
                check_text(line, self._WORDS.answer)
            block = dot_stuff("".join(f"{line}\r\n" for line in lines or ()).encode())
        self._answer(cmd, event, status(True, text) + block, positive=True)

    def ok_block(self, text: str, body: bytes) -> None:
        """``+OK text`` and ``body`` dot-stuffed (RETR, TOP, or any multi-line answer)."""
        self.ok_block_start(text)
        self.block_chunk(body)
        self.block_end()

    def ok_block_start(self, text: str) -> None:
        """Start a block answer sent in pieces: ``+OK text``. The answer stays
        owed until :meth:`block_end`; only block pieces may be sent meanwhile."""
        _, event = self._require_owed()
        check_text(text, self._WORDS.answer)
        if not answers_multiline(event):
            raise ProtocolUsageError(f"{event!r} is answered on one line")
        self._begin_block(status(True, text))

    def block_chunk(self, data: bytes) -> None:
        """The next piece of the block, cut anywhere; queued dot-stuffed."""
        self._block_piece(data)

    def block_end(self) -> None:
        """End the block (final CRLF if missing, then "."): the answer is sent."""
        self._finish_block()

    def err(self, text: str) -> None:
        cmd, event = self._require_owed()
        check_text(text, self._WORDS.answer)
        self._answer(cmd, event, status(False, text), positive=False)

    # -- the port's part of ServerConnection -------------------------------------

    def _refuse(self, text: str) -> None:
        self._out += status(False, text)

    def _split(self, raw: bytes) -> tuple[str, str, bytes]:
        return split_command(raw)

    def _read(self, verb: str, cmd: str, rest: bytes) -> UserEvent:
        event = read_command(verb, cmd, read_arguments(rest))
        match event:
            case RcptCmd() if self._rcpts_ok >= self.max_recipients:
                raise Refusal("too many recipients")
            case Stls() if self._tls:
                raise Refusal("command not permitted when TLS active")  # RFC 2595 4
        return event

    def _sequence_error(self, cmd: str) -> str:
        state = self._state
        if cmd == "STLS":
            return "STLS is allowed only before login"
        if state in (UserState.AUTHORIZATION, UserState.AUTH_PASS):
            return "send USER first" if cmd == "PASS" else "log in first"
        if state is UserState.TRANSACTION:
            if cmd in ("USER", "PASS"):
                return "already logged in"
            if cmd == "NEWPASS":
                return "send PASSWD with your current password first"
            return "send MAIL first"  # RCPT, DATA
        if state is UserState.NEW_PASS:
            return "send NEWPASS with the new password, or RSET to keep the current one"
        if cmd == "DATA":
            return "no recipient yet; send RCPT TO first"
        return "finish the message with DATA or abandon it with RSET first"

    def _end_block(self, reader: DataBlockReader) -> UserEvent:
        self._rcpts_ok = 0  # the message is over (the next MAIL resets it too)
        if reader.too_long_line:
            self._refuse("line too long; message refused")
            return MessageFailed(LINE_TOO_LONG_REASON)
        if reader.too_big:
            self._refuse(f"message exceeds fixed maximum of {self.max_message_size} octets")
            return MessageFailed(TOO_BIG_REASON)
        return MessageComplete(reader.result())

    def _after(self, cmd: str, event: UserEvent) -> None:
        match event:
            case MailCmd() | Rset():
                self._rcpts_ok = 0
            case RcptCmd():
                self._rcpts_ok += 1
            case DataCmd():
                self._reader = DataBlockReader(self.max_line_length, self.max_message_size)
            case Quit():
                self._drop_input()
            case Stls():
                # RFC 2595 section 4 (and RFC 3207's injection lesson): bytes
                # that followed STLS must never be read as commands of the
                # protected session.
                self._upgraded()
            case _:
                pass


class _Expect(enum.Enum):
    LINE = "line"
    LINES = "lines"  # +OK is followed by a block, given as text lines
    BODY = "body"  # +OK is followed by a block, given as bytes (RETR, TOP)


class UserClientConnection(ClientConnection[_Expect, UserReply]):
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

    _UPGRADE = "STLS"
    _LINE_NAME = "status"

    def __init__(self, **limits: Unpack[ClientLimits]) -> None:
        super().__init__(**limits)
        self._expecting.append(_Expect.LINE)  # the greeting
        # The block being read after a +OK: its status text, and what it is.
        self._block: tuple[str, _Expect, DataBlockReader] | None = None

    def send(self, command: UserCommand | Message) -> bytes:
        if isinstance(command, Message):
            self._expecting.append(_Expect.LINE)
            return dot_stuff(command.body)
        line = write_command(command)
        if isinstance(command, Retr | Top):
            self._expecting.append(_Expect.BODY)
        elif answers_multiline(command):
            self._expecting.append(_Expect.LINES)
        else:
            self._expecting.append(_Expect.LINE)
        return line.encode("utf-8") + b"\r\n"

    def _mid_answer(self) -> bool:
        return self._block is not None

    def _next_event(self) -> UserReply | BlockChunk | Pending:
        while True:
            if self._block is not None:
                text, expect, reader = self._block
                progress = self._block_progress(reader, streamed=expect is _Expect.BODY)
                if progress is not None:
                    return progress
                self._block = None
                if reader.failed:
                    raise RemoteProtocolError("multi-line answer exceeds a limit")
                data = reader.result()
                if expect is _Expect.BODY:
                    return UserReply(True, text, body=data)
                lines = data.decode("utf-8", "replace").split("\r\n")[:-1]
                return UserReply(True, text, lines=lines)
            line = self._next_line()
            if not isinstance(line, bytes):
                return line
            ok, text = read_status_line(line)
            expect = self._expected(_Expect.LINE)
            if ok and expect is not _Expect.LINE:
                self._block = (text, expect, self._new_reader())
                continue
            return UserReply(ok, text)
