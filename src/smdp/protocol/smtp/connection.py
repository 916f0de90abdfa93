"""The SMTP codec's connections: the server side (submission, MX) and the client
side (outbound delivery). docs/smtp.md, "The SMTP codec".

Sans-IO, like the two SMDP ports, and built on the same machinery
(``_connection.py``): :class:`SmtpServerConnection` is fed received bytes and
hands out typed events; it answers by itself everything that can be judged
from the wire alone (unknown verbs, syntax, sequence, line lengths, size and
recipient limits, VRFY, HELP, the AUTH exchange's prompts and its base64, the
smuggling and STARTTLS rules), and the application answers every event it
hands out before asking for the next one. Pipelining (RFC 2920) needs nothing
more: pipelined commands wait in the received bytes and are read one at a
time, and each answer is queued after the one before.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, Unpack

from smdp.protocol._connection import (
    ClientConnection,
    ClientLimits,
    MultilineReply,
    Pending,
    ServerConnection,
    Vocabulary,
    check_text,
)
from smdp.protocol._grammar import Refusal
from smdp.protocol.framing import (
    DataBlockReader,
    ProtocolUsageError,
)
from smdp.protocol.smtp.data import SmtpDataReader, SmtpDotStuffer
from smdp.protocol.smtp.events import (
    BARE_LINE_END_REASON,
    LINE_TOO_LONG_REASON,
    TOO_BIG_REASON,
    Auth,
    AuthCancel,
    AuthResponse,
    BlockChunk,
    Capabilities,
    Data,
    DataComplete,
    DataEnd,
    DataFailed,
    DataPart,
    DataStart,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    SmtpCommand,
    SmtpEvent,
    StartTls,
    Vrfy,
    enhanced_status,
)
from smdp.protocol.smtp.grammar import (
    decode_base64,
    format_reply,
    parse_ehlo,
    parse_plain,
    read_arguments,
    read_helo,
    read_mail,
    read_rcpt,
    read_reply_line,
    split_command,
    too_big_line,
    write_command,
)
from smdp.protocol.smtp.states import AUTH_CHALLENGE, TABLE, SmtpState

__all__ = [
    "AUTH_LINE",
    "COMMAND_LINE",
    "MAIL_EXTENSION_ROOM",
    "MAX_RECIPIENTS",
    "SmtpClientConnection",
    "SmtpServerConnection",
]

#: RFC 5321 4.5.3.1.4: a command line, CRLF included.
COMMAND_LINE: Final = 512
#: What MAIL's parameters add to it: SIZE=n 26 (RFC 1870 section 3), AUTH=
#: 500 (RFC 4954 section 5), " BODY=8BITMIME" 14, " SMTPUTF8" 9.
MAIL_EXTENSION_ROOM: Final = 26 + 500 + 14 + 9
#: RFC 4954 section 4: an AUTH command or response line, CRLF included.
AUTH_LINE: Final = 12288
#: RFC 5321 4.5.3.1.8: at least 100 recipients must be accepted.
MAX_RECIPIENTS: Final = 100

# The two prompts of AUTH LOGIN: base64 of "Username:" and "Password:".
_LOGIN_USER: Final = "334 VXNlcm5hbWU6"
_LOGIN_PASSWORD: Final = "334 UGFzc3dvcmQ6"

_BARE_LINE_END: Final = ("554 5.6.0 Message refused: it holds a bare CR or LF; "
                         "every line must end with CRLF (RFC 5321 2.3.8)")
_HELP: Final = ("214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP "
                "STARTTLS AUTH; see RFC 5321")
_VRFY: Final = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"

#: The positive answer to each event, for :meth:`SmtpServerConnection.ok`.
_OK: Final[dict[type, tuple[int, str]]] = {
    Helo: (250, "Hello"),
    Mail: (250, "Sender OK"),
    Rcpt: (250, "Recipient OK"),
    DataStart: (354, "End data with <CR><LF>.<CR><LF>"),
    DataComplete: (250, "Message accepted for delivery"),
    Rset: (250, "Reset"),
    Noop: (250, "OK"),
    Quit: (221, "Bye"),
    StartTls: (220, "Ready to start TLS"),
    Auth: (235, "Authentication successful"),
}
# RFC 3463 / RFC 5248: the status of each positive answer.
_OK_STATUS: Final[dict[type, str]] = {
    Mail: "2.1.0", Rcpt: "2.1.5", Auth: "2.7.0",
}
# The one positive code of events that are not answered 2xx in general.
_POSITIVE: Final[dict[type, int]] = {
    Helo: 250, DataStart: 354, StartTls: 220, Auth: 235, Quit: 221,
}


class SmtpServerConnection(ServerConnection[SmtpState, SmtpEvent]):
    """The server side of one SMTP session (the submission port, the MX).

    Drive it like the SMDP ports: ``receive_data(bytes)`` (``b""`` at EOF),
    ``next_event()`` until :data:`NEED_DATA` or :data:`CLOSED`, answer every
    event with :meth:`ok` or :meth:`reply` (except :class:`DataFailed`,
    already answered), and write out ``data_to_send()``: after every answer,
    or, to batch pipelined replies (RFC 2920), whenever ``next_event()``
    returns NEED_DATA.

    What it offers is told, not guessed: ``starttls`` (offer STARTTLS until
    the session is over TLS), ``auth_mechanisms`` (of "PLAIN", "LOGIN"),
    ``auth_requires_tls`` (AUTH only over TLS: RFC 6409's and issue 11's rule;
    the application lifts it, say for loopback), ``auth_required`` (MAIL
    refused 530 until AUTH succeeded, the submission port).

    With ``stream_threshold=n`` the message comes as :class:`BlockChunk`
    events, one each time ``n`` octets or more are held, before its
    :class:`DataComplete` (or :class:`DataFailed`: then throw them away).
    """

    _TABLE = TABLE
    _COMMAND_LINE = COMMAND_LINE
    _WORDS = Vocabulary("reply", "body", "reply", "reply")
    _UNKNOWN_COMMAND = "500 5.5.1 Command unrecognized"
    _LINE_TOO_LONG = "500 5.5.2 Line too long"

    def __init__(
        self,
        hostname: str,
        *,
        max_message_size: int,
        max_recipients: int = MAX_RECIPIENTS,
        max_command_line: int | None = None,
        max_line_length: int = 1000,
        tls: bool = False,
        stream_threshold: int | None = None,
        starttls: bool = False,
        auth_mechanisms: Sequence[str] = (),
        auth_requires_tls: bool = True,
        auth_required: bool = False,
    ) -> None:
        command_line = COMMAND_LINE if max_command_line is None else max_command_line
        # The received bytes must hold the longest line any command may send
        # (an AUTH response); each verb's own limit is checked as it is read.
        super().__init__(
            hostname,
            max_message_size=max_message_size,
            max_recipients=max_recipients,
            max_command_line=max(command_line + MAIL_EXTENSION_ROOM, AUTH_LINE),
            max_line_length=max_line_length,
            tls=tls,
            stream_threshold=stream_threshold,
        )
        self.max_command_line = command_line
        for mechanism in auth_mechanisms:
            if mechanism not in ("PLAIN", "LOGIN"):
                raise ValueError(f"unknown AUTH mechanism {mechanism!r}")
        self.starttls = starttls
        self.auth_mechanisms = tuple(auth_mechanisms)
        self.auth_requires_tls = auth_requires_tls
        self.auth_required = auth_required
        # Session data, not state (states.py): forgotten at STARTTLS.
        self._extended = False
        self._authenticated: str | None = None
        # The AUTH exchange under way: its mechanism, and LOGIN's user name.
        self._auth_mechanism = ""
        self._auth_user: str | None = None
        # Transaction data.
        self._txn_utf8 = False
        self._rcpts_tried = 0

    # -- public API ---------------------------------------------------------

    def greeting(self) -> bytes:
        """The 220 banner (RFC 2034 gives the greeting no enhanced code)."""
        return f"220 {self.hostname} ESMTP ready\r\n".encode()

    @property
    def authenticated(self) -> str | None:
        """The user name AUTH proved in this session (None before, and after STARTTLS)."""
        return self._authenticated

    @property
    def auth_offered(self) -> bool:
        return bool(self.auth_mechanisms) and (self._tls or not self.auth_requires_tls)

    def capabilities(self) -> list[str]:
        """The EHLO keywords this session offers now."""
        caps = ["PIPELINING", f"SIZE {self.max_message_size}", "8BITMIME", "SMTPUTF8",
                "ENHANCEDSTATUSCODES"]
        if self.starttls and not self._tls:
            caps.append("STARTTLS")
        if self.auth_offered:
            caps.append("AUTH " + " ".join(self.auth_mechanisms))
        return caps

    def ok(self, text: str | None = None) -> None:
        """The usual positive answer to the owed event (250 2.1.5 to RCPT, 354
        to DATA, 221 to QUIT, 235 to AUTH, the EHLO keywords to EHLO...)."""
        _, event = self._require_owed()
        code, default = _OK[type(event)]
        self.reply(code, default if text is None else text, _OK_STATUS.get(type(event)))

    def reply(self, code: int, text: str | list[str], status: str | None = None) -> None:
        """Answer the owed event; multi-line when ``text`` is a list.

        ``status`` is the enhanced status code (RFC 3463), on every 2xx, 4xx
        and 5xx reply but EHLO's and HELO's (RFC 2034 section 3); None means
        the class's plain one (2.0.0, 4.0.0, 5.0.0). A positive EHLO answer
        is the first line, then this session's keywords.
        """
        cmd, event = self._require_owed()
        lines = [text] if isinstance(text, str) else list(text)
        if not lines:
            raise ProtocolUsageError("a reply needs at least one line")
        for line in lines:
            check_text(line, self._WORDS.answer)
        expected = _POSITIVE.get(type(event))
        if 400 <= code <= 599:
            positive = False
        elif expected is not None:
            if code != expected:
                raise ProtocolUsageError(f"{event!r} is answered {expected}, 4xx or 5xx")
            positive = True
        elif 200 <= code <= 299:
            positive = True
        else:
            raise ProtocolUsageError(f"reply code {code} does not fit {event!r}")
        if isinstance(event, Rcpt):
            self._rcpts_tried += 1
        if positive and isinstance(event, Helo | DataStart):
            if status is not None:
                raise ProtocolUsageError(f"{code} to {event!r} takes no enhanced status code")
            if isinstance(event, Helo):
                lines[0] = f"{self.hostname} {lines[0]}".rstrip(" ")
                if event.extended:
                    lines += self.capabilities()
        else:
            status = f"{code // 100}.0.0" if status is None else status
            if enhanced_status(code, status) != status:
                raise ProtocolUsageError(f"bad enhanced status code {status!r} for {code}")
        self._answer(cmd, event, format_reply(code, lines, status), positive=positive)

    # -- the port's part of ServerConnection -------------------------------------

    def _refuse(self, text: str) -> None:
        # The one way the shared machinery answers a line that makes no
        # event. An AUTH exchange's 334 prompt is such an answer too, and
        # moves the session into (or keeps it in) AUTH_IN; an error given
        # inside the exchange ends it (a cancel, bad base64, a line too long).
        self._out += text.encode("utf-8") + b"\r\n"
        if text.startswith("334"):
            self._state = self._table.after(self._state, AUTH_CHALLENGE)
        elif self._state is SmtpState.AUTH_IN and text.startswith("5"):
            self._state = self._table.after_refusal(self._state, "AUTH")

    def _split(self, raw: bytes) -> tuple[str, str, bytes]:
        verb, rest = split_command(raw)
        limit = {"MAIL": self.max_command_line + MAIL_EXTENSION_ROOM,
                 "AUTH": AUTH_LINE}.get(verb, self.max_command_line)
        if len(raw) + 2 > limit:
            raise Refusal(self._LINE_TOO_LONG)
        return verb, verb, rest

    def _command(self, raw: bytes) -> SmtpEvent | None:
        if self._state is not SmtpState.AUTH_IN:
            return super()._command(raw)
        # Inside an AUTH exchange a line is a response, never a command.
        try:
            event = self._auth_response(raw)
        except Refusal as refusal:
            self._refuse(refusal.text)
            return None
        self._owed = ("AUTH", event)
        return event

    def _read(self, verb: str, cmd: str, rest: bytes) -> SmtpEvent:
        text = read_arguments(rest)
        match cmd:
            case "EHLO" | "HELO":
                return read_helo(cmd, text)
            case "MAIL":
                if self.auth_required and self._authenticated is None:
                    raise Refusal("530 5.7.0 Authentication required")
                return read_mail(text, max_size=self.max_message_size,
                                 extended=self._extended, auth_offered=self.auth_offered)
            case "RCPT":
                if self._rcpts_ok >= self.max_recipients:
                    raise Refusal("452 4.5.3 Too many recipients")
                return read_rcpt(text, utf8=self._txn_utf8)
            case "AUTH":
                return self._auth_start(text)
            case "VRFY" | "HELP":
                if cmd == "VRFY" and not text.strip(" "):
                    raise Refusal("501 5.5.4 Syntax: VRFY string")
                # Answered here, positively, so it is no event; its
                # transition is still the table's (it keeps the state).
                self._state = self._table.after(self._state, cmd)
                raise Refusal(_VRFY if cmd == "VRFY" else _HELP)
            case "NOOP":
                return Noop()  # RFC 5321 4.1.1.9: its argument is ignored
        if text.strip(" "):
            raise Refusal(f"501 5.5.4 Syntax: {cmd}")
        match cmd:
            case "STARTTLS":
                if self._tls:
                    raise Refusal("503 5.5.1 Bad sequence of commands: TLS already active")
                if not self.starttls:
                    raise Refusal("502 5.5.1 STARTTLS not offered")
                return StartTls()
            case "DATA":
                return DataStart()
            case "RSET":
                return Rset()
        return Quit()

    def _auth_start(self, text: str) -> Auth:
        if self._authenticated is not None:
            raise Refusal("503 5.5.1 Bad sequence of commands: already authenticated")
        if not self.auth_mechanisms:
            raise Refusal("502 5.5.1 AUTH not offered")
        if not self.auth_offered:
            raise Refusal("538 5.7.11 Encryption required for requested authentication mechanism")
        args = text.split(" ")
        if len(args) > 2 or not args[0]:
            raise Refusal("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
        mechanism = args[0].upper()
        if mechanism not in self.auth_mechanisms:
            raise Refusal("504 5.5.4 Unrecognized authentication type")
        self._auth_mechanism = mechanism
        self._auth_user = None
        if len(args) == 2:
            return self._auth_step(self._decoded(args[1]))
        raise Refusal("334 " if mechanism == "PLAIN" else _LOGIN_USER)

    def _auth_response(self, raw: bytes) -> Auth:
        if raw == b"*":
            raise Refusal("501 5.7.0 Authentication cancelled")
        return self._auth_step(self._decoded(raw.decode("latin-1")))

    @staticmethod
    def _decoded(text: str) -> bytes:
        data = decode_base64(text)
        if data is None:
            raise Refusal("501 5.5.2 Cannot decode response (base64 expected)")
        return data

    def _auth_step(self, data: bytes) -> Auth:
        """The Auth event once the credentials are complete, else the next prompt."""
        if self._auth_mechanism == "PLAIN":
            parts = parse_plain(data)
            if parts is None:
                raise Refusal("501 5.5.2 Malformed PLAIN response (RFC 4616)")
            authzid, user, password = parts
            return Auth("PLAIN", user, password, authzid)
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal("501 5.5.2 Malformed LOGIN response (UTF-8 expected)") from None
        if self._auth_user is None:
            if not value:
                raise Refusal("501 5.5.2 Empty user name")
            self._auth_user = value
            raise Refusal(_LOGIN_PASSWORD)
        return Auth("LOGIN", self._auth_user, value)

    def _sequence_error(self, cmd: str) -> str:
        state = self._state
        if cmd == "DATA" and state is SmtpState.TXN_STARTED and self._rcpts_tried:
            return "554 5.5.1 No valid recipients"
        if state is SmtpState.GREETED:
            why = "send EHLO or HELO first"
        elif cmd == "MAIL":
            why = "nested MAIL command"
        elif state is SmtpState.READY:
            why = "send MAIL first"
        elif cmd == "DATA":
            why = "send RCPT first"
        else:
            why = f"{cmd} not allowed inside a mail transaction; send RSET first"
        return f"503 5.5.1 Bad sequence of commands: {why}"

    def _end_block(self, reader: DataBlockReader) -> SmtpEvent:
        self._reset_txn()
        assert isinstance(reader, SmtpDataReader)
        if reader.bare_line_end:
            self._refuse(_BARE_LINE_END)
            return DataFailed(BARE_LINE_END_REASON)
        if reader.too_long_line:
            self._refuse(f"554 5.6.0 Message refused: a line is longer than "
                         f"{self.max_line_length} octets (RFC 5321 4.5.3.1.6)")
            return DataFailed(LINE_TOO_LONG_REASON)
        if reader.too_big:
            self._refuse(too_big_line(self.max_message_size))
            return DataFailed(TOO_BIG_REASON)
        return DataComplete(reader.result())

    def _after(self, cmd: str, event: SmtpEvent) -> None:
        match event:
            case Helo(extended=extended):
                self._reset_txn()
                self._extended = extended
            case Mail(smtputf8=smtputf8):
                self._reset_txn()
                self._txn_utf8 = smtputf8
            case Rcpt():
                self._rcpts_ok += 1
            case DataStart():
                self._reader = SmtpDataReader(self.max_line_length, self.max_message_size)
            case Rset():
                self._reset_txn()
            case Auth(username=username):
                self._authenticated = username
            case Quit():
                self._drop_input()
            case StartTls():
                # RFC 3207 section 4.2: drop what followed STARTTLS, and
                # forget everything the client said before the handshake.
                self._upgraded()
                self._reset_txn()
                self._extended = False
                self._authenticated = None
            case _:
                pass

    def _reset_txn(self) -> None:
        self._rcpts_ok = 0
        self._rcpts_tried = 0
        self._txn_utf8 = False


class _Expect(enum.Enum):
    """What a reply answers (``Reply.to``)."""

    GREETING = "<greeting>"
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "<end of data>"
    AUTH = "AUTH"
    AUTH_RESPONSE = "<auth response>"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    STARTTLS = "STARTTLS"
    VRFY = "VRFY"
    HELP = "HELP"
    UNASKED = "<unasked>"


_EXPECT_BY_CLASS: Final[dict[type, _Expect]] = {
    Mail: _Expect.MAIL, Rcpt: _Expect.RCPT, DataStart: _Expect.DATA, Auth: _Expect.AUTH,
    AuthResponse: _Expect.AUTH_RESPONSE, AuthCancel: _Expect.AUTH_RESPONSE,
    Rset: _Expect.RSET, Noop: _Expect.NOOP, Quit: _Expect.QUIT, StartTls: _Expect.STARTTLS,
    Vrfy: _Expect.VRFY, Help: _Expect.HELP,
}
# RFC 2920 3.1: only these may stand anywhere in a pipelined group; any
# other command ends it (the client waits for its reply before going on).
_PIPELINABLE: Final = (Mail, Rcpt, Rset)


class SmtpClientConnection(ClientConnection[_Expect, Reply]):
    """The initiating side of an SMTP session (outbound delivery).

    ``send(command)`` returns the bytes to write; ``next_event()`` returns each
    :class:`Reply` in order, its ``to`` naming the command it answers. The
    first reply is the greeting. A positive EHLO answer sets
    :attr:`capabilities`, which MAIL's parameters are then held to.

    The message goes in pieces, never whole: after DATA's 354, any number of
    :class:`DataPart` (dot-stuffed, every bare CR or LF made CRLF) and one
    :class:`DataEnd`. :meth:`pipeline` sends a group of commands at once
    (RFC 2920) when the server offered PIPELINING.
    """

    _UPGRADE = "STARTTLS"
    _LINE_NAME = "reply"

    def __init__(self, **limits: Unpack[ClientLimits]) -> None:
        super().__init__(**limits)
        self._expecting.append(_Expect.GREETING)
        self._stuffer: SmtpDotStuffer | None = None
        # DATA was answered 354 and the message is not ended yet.
        self._data_go = False
        self._partial = MultilineReply()
        #: What the last positive EHLO answer offered (None before it, and
        #: again after STARTTLS: RFC 3207 4.2).
        self.capabilities: Capabilities | None = None

    def send(self, command: SmtpCommand) -> bytes:
        if isinstance(command, Data | DataPart | DataEnd):
            return self._message(command)
        if self._data_go:
            raise ProtocolUsageError(f"{command!r} inside the message; send DataEnd() first")
        if isinstance(command, Mail):
            command = self._held_to_capabilities(command)
        line = write_command(command)
        if isinstance(command, Helo):
            expect = _Expect.EHLO if command.extended else _Expect.HELO
        else:
            expect = _EXPECT_BY_CLASS[type(command)]
        self._expecting.append(expect)
        return line.encode("utf-8") + b"\r\n"

    def pipeline(self, commands: Sequence[SmtpCommand]) -> bytes:
        """Several commands at once (RFC 2920); their replies come back in order.

        Only MAIL, RCPT and RSET may come before the group's last command (say,
        MAIL, every RCPT, then DATA), and only when PIPELINING is offered.
        """
        if len(commands) > 1 and not (self.capabilities and self.capabilities.pipelining):
            raise ProtocolUsageError("the server did not offer PIPELINING")
        for command in commands[:-1]:
            if not isinstance(command, _PIPELINABLE):
                raise ProtocolUsageError(f"{command!r} must end a pipelined group (RFC 2920 3.1)")
        return b"".join(self.send(command) for command in commands)

    def send_message(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The message after DATA's 354, from ``chunks`` (say, read from the
        store a chunk at a time): its wire pieces, one per chunk, then the end.
        Nothing is held but the chunk at hand; one reply is expected."""
        for chunk in chunks:
            yield self.send(DataPart(chunk))
        yield self.send(DataEnd())

    def start_tls(self) -> None:
        super().start_tls()
        self.capabilities = None

    def _held_to_capabilities(self, mail: Mail) -> Mail:
        caps = self.capabilities
        if caps is None:
            return mail
        if mail.smtputf8 and not caps.smtputf8:
            raise ProtocolUsageError("the server did not offer SMTPUTF8")
        if mail.body == "8BITMIME" and not caps.eightbitmime:
            raise ProtocolUsageError("the server did not offer 8BITMIME")
        # SIZE and AUTH= are only sent where offered (RFC 1870, RFC 4954 5).
        if mail.size is not None and caps.size is None:
            mail = Mail(mail.sender, None, mail.body, mail.smtputf8, mail.auth, mail.route)
        if mail.auth is not None and not caps.auth:
            mail = Mail(mail.sender, mail.size, mail.body, mail.smtputf8, None, mail.route)
        return mail

    def _message(self, command: Data | DataPart | DataEnd) -> bytes:
        if not self._data_go:
            raise ProtocolUsageError("the message goes after DATA's 354 reply")
        if self._stuffer is None:
            self._stuffer = SmtpDotStuffer()
        match command:
            case Data(body=body):
                return self._message(DataPart(body)) + self._message(DataEnd())
            case DataPart(body=body):
                return self._stuffer.feed(body)
        stuffer, self._stuffer, self._data_go = self._stuffer, None, False
        self._expecting.append(_Expect.END_OF_DATA)
        return stuffer.end()

    def _mid_answer(self) -> bool:
        return bool(self._partial)

    def _next_event(self) -> Reply | BlockChunk | Pending:
        while True:
            line = self._next_line()
            if not isinstance(line, bytes):
                return line
            code, more, text = read_reply_line(line)
            lines = self._partial.add(code, more, text)
            if lines is None:
                continue
            expect = self._expected(_Expect.UNASKED)
            if expect is _Expect.EHLO and code == 250:
                self.capabilities = parse_ehlo(lines)
            elif expect is _Expect.DATA:
                self._data_go = code == 354
            return Reply(code, lines, expect.value)
