"""The IMAP server connection: bytes in, events out; answers in, bytes out.

Sans-IO like the other ports (h11's shape): feed :meth:`receive_data`, loop
on :meth:`next_event` until ``NEED_DATA``, answer each event, write
:meth:`data_to_send`. Unlike POP3 and the peer port, an IMAP command may span
several lines, joined by literals (``{n}`` then n octets). The connection
gathers a command whole, within three limits (a line, a literal, a whole
command), sends the continuation request a synchronizing literal waits for,
and answers by itself, with a tagged BAD saying why, everything it can judge
from the wire alone: syntax, unknown commands, commands the state does not
allow, limits. The application sees well-formed commands only, one at a
time, and must answer each with :meth:`ok`, :meth:`no` or :meth:`bad`
(untagged data first, as it likes) before asking for the next.

Memory is bounded whatever the client sends: a line over the limit is
dropped as it arrives, a literal over the limit is never stored (a
synchronizing one is refused before the client sends it; a non-synchronizing
one, RFC 7888, is read and thrown away), and the whole command is counted.
The one literal allowed past the literal limit is APPEND's message, once
logged in, up to ``max_append``: it is spooled (``BodyWriter``: to a
temporary file once large), never held whole, and one over ``max_append``
is answered ``NO [TOOBIG]`` (RFC 7889), like the other limits unread when
synchronizing, read and thrown away when not.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from smdp.mail.body import Body, BodyWriter
from smdp.protocol._states import OutOfSequence
from smdp.protocol.framing import CLOSED, NEED_DATA, ProtocolUsageError, Sentinel
from smdp.protocol.imap import events as ev
from smdp.protocol.imap.grammar import (
    ImapSyntaxError,
    read_command,
    read_sasl,
    read_tag,
    split_command,
    write_value,
    write_values,
)
from smdp.protocol.imap.states import TABLE, ImapState

__all__ = ["ImapServerConnection"]

_LITERAL_AT_END: Final = re.compile(rb"\{(\d{1,10})(\+?)\}\r?\n\Z")
_HEAD: Final = 128  # octets of a refused command kept to find its tag
_APPEND: Final = re.compile(rb"[^ ]+ APPEND ", re.IGNORECASE)


def _check_text(text: str, what: str) -> None:
    if not text or "\r" in text or "\n" in text or "\x00" in text:
        raise ProtocolUsageError(f"{what} must be one non-empty line: {text!r}")


def _where(state: ImapState) -> str:
    return {ImapState.NOT_AUTHENTICATED: "before you log in",
            ImapState.AUTHENTICATED: "without a selected mailbox (use SELECT)",
            ImapState.SELECTED: "once you are logged in"}.get(state, "now")


class ImapServerConnection:
    """The server side of one IMAP session.

    ``max_line`` counts a line with its CRLF; ``max_literal`` one literal;
    ``max_command`` the whole command, lines and literals together, but for
    APPEND's message, which may be up to ``max_append`` (None: no more
    than any literal); no literal of an APPEND may be longer. ``spool_dir``:
    where a large message waits as it arrives (None: the system's
    temporary directory).
    """

    def __init__(self, hostname: str, *, max_line: int = 8192, max_literal: int = 65536,
                 max_command: int = 262144, max_append: int | None = None,
                 spool_dir: str | None = None, tls: bool = False) -> None:
        self.hostname = hostname
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command
        self.max_append = max_literal if max_append is None else max_append
        self.spool_dir = spool_dir
        #: True once the session runs over TLS (implicit, or after STARTTLS).
        self.tls = tls
        self.state = TABLE.initial
        self._buf = bytearray()
        self._out = bytearray()
        self._eof = False
        # The command being gathered: its pieces so far, their size, the
        # octets of a literal still to come, and (when it is being thrown
        # away) why, with its first octets to answer under its tag.
        self._parts: list[bytes] = []
        self._size = 0
        self._literal_left = 0
        self._skip: str | None = None
        self._head = b""
        self._overlong = False  # dropping a line past max_line up to its LF
        self._tail = b""  # the end of that line: does it announce a literal?
        # APPEND's message past max_literal, as it comes; then, whole, for
        # the Append event; and the response code of a refusal (TOOBIG).
        self._spool: BodyWriter | None = None
        self._message: Body | None = None
        self._skip_code: str | None = None
        # The command the application owes an answer, its name in the table,
        # and whether it asked the client for a line with "+".
        self._owed: ev.ImapEvent | None = None
        self._owed_name = ""
        self._continued = False
        # An open FETCH response being written, and octets of its literal to come.
        self._fetch_open = False
        self._fetch_first = True
        self._literal_out = 0

    # -- the session loop's view ------------------------------------------------------

    def greeting(self) -> bytes:
        return f"* OK {self.hostname} IMAP server ready\r\n".encode()

    @property
    def buffered(self) -> int:
        """Octets of a command received but not yet whole (for command timeouts)."""
        return len(self._buf) + self._size + (1 if self._overlong or self._skip else 0)

    @property
    def receiving_message(self) -> bool:
        """Whether APPEND's message is arriving: a data block, which the
        session times by its rate as it times SMTP's DATA, not as a line."""
        return self._spool is not None and self._literal_left > 0

    @property
    def reply_owed(self) -> ev.ImapEvent | None:
        return self._owed

    def receive_data(self, data: bytes) -> None:
        """Octets from the client; ``b""`` when it closed the connection."""
        if not data:
            self._eof = True
        elif self.state is not ImapState.LOGOUT:
            self._buf += data

    @property
    def pending_output(self) -> int:
        """Octets waiting in :meth:`data_to_send` (to write long answers in batches)."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> ev.ImapEvent | Sentinel:
        if self._owed is not None and not self._continued:
            raise ProtocolUsageError(f"answer {self._owed!r} first")
        while True:
            if self.state is ImapState.LOGOUT:
                return CLOSED
            command = self._gather()
            if command is None:
                return CLOSED if self._eof else NEED_DATA
            if self._owed is not None:
                found = self._continuation_line(command)
            else:
                found = self._command(command)
            if found is not None:
                return found

    # -- answers -----------------------------------------------------------------------

    def untagged(self, *values: object) -> None:
        """``* values``: data (``3 EXISTS``, ``FLAGS (...)``), any time."""
        self._no_fetch_open()
        self._out += b"* " + write_values(values) + b"\r\n"

    def untagged_status(self, status: str, text: str, code: str | None = None) -> None:
        """``* OK [code] text`` (or NO, BAD, BYE, PREAUTH)."""
        self._no_fetch_open()
        self._out += b"* " + self._status_line(status, text, code)

    def bye(self, text: str) -> None:
        self.untagged_status("BYE", text)

    def continuation(self, text: str) -> None:
        """``+ text``: AUTHENTICATE and IDLE wait for the client's next line,
        which :meth:`next_event` hands out as :class:`~events.AuthenticateData`
        or :class:`~events.IdleDone`; the command stays owed until answered."""
        if not isinstance(self._owed, ev.Authenticate | ev.Idle) or self._continued:
            raise ProtocolUsageError("only AUTHENTICATE and IDLE ask for a continuation")
        _check_text(text, "a continuation text")
        self._out += f"+ {text}\r\n".encode()
        self._continued = True

    def ok(self, text: str, code: str | None = None) -> None:
        self._tagged("OK", text, code)

    def no(self, text: str, code: str | None = None) -> None:
        self._tagged("NO", text, code)

    def bad(self, text: str, code: str | None = None) -> None:
        self._tagged("BAD", text, code)

    # FETCH responses, written a piece at a time so that a body is never held
    # whole: fetch_open(n), any fetch_item()/fetch_literal()+literal_chunk(),
    # then fetch_close().

    def fetch_open(self, number: int) -> None:
        self._no_fetch_open()
        self._out += b"* %d FETCH (" % number
        self._fetch_open, self._fetch_first = True, True

    def fetch_item(self, name: str, value: object) -> None:
        self._fetch_sep()
        self._out += name.encode("ascii") + b" " + write_value(value)

    def fetch_raw(self, name: str, data: bytes) -> None:
        """An item whose value is already written (BODYSTRUCTURE: RFC 9051
        joins its parts without spaces, which ``write_value`` does not)."""
        self._fetch_sep()
        self._out += name.encode("ascii") + b" " + data

    def fetch_literal(self, name: str, size: int, *, binary: bool = False) -> None:
        """A literal of ``size`` octets follows (``literal_chunk``); ``binary``:
        a literal8 ``~{n}`` (RFC 3516), for BINARY data that holds a NUL."""
        self._fetch_sep()
        self._out += name.encode("ascii") + (b" ~{%d}\r\n" if binary else b" {%d}\r\n") % size
        self._literal_out = size

    def literal_chunk(self, data: bytes) -> None:
        if len(data) > self._literal_out:
            raise ProtocolUsageError("more literal octets than announced")
        self._literal_out -= len(data)
        self._out += data

    def fetch_close(self) -> None:
        if not self._fetch_open or self._literal_out:
            raise ProtocolUsageError("no FETCH response open, or its literal is not complete")
        self._out += b")\r\n"
        self._fetch_open = False

    # -- inside --------------------------------------------------------------------------

    def _fetch_sep(self) -> None:
        if not self._fetch_open or self._literal_out:
            raise ProtocolUsageError("no FETCH response open, or a literal is not complete")
        if not self._fetch_first:
            self._out += b" "
        self._fetch_first = False

    def _no_fetch_open(self) -> None:
        if self._fetch_open:
            raise ProtocolUsageError("a FETCH response is still open")

    @staticmethod
    def _status_line(status: str, text: str, code: str | None) -> bytes:
        _check_text(text, "a response text")
        if code is not None:
            _check_text(code, "a response code")
            if "]" in code:
                raise ProtocolUsageError(f"a response code may not hold ']': {code!r}")
            text = f"[{code}] {text}"
        return f"{status} {text}\r\n".encode()

    def _tagged(self, status: str, text: str, code: str | None) -> None:
        owed = self._owed
        if owed is None:
            raise ProtocolUsageError("no command is owed an answer")
        self._no_fetch_open()
        self._out += owed.tag.encode("ascii") + b" " + self._status_line(status, text, code)
        if status == "OK":
            self.state = TABLE.after(self.state, self._owed_name)
            if isinstance(owed, ev.StartTls):
                # RFC 9051 6.2.1 (and the STARTTLS injection attacks): nothing
                # sent before the handshake may count as sent over TLS.
                self.tls = True
                self._buf.clear()
        else:
            self.state = TABLE.after_refusal(self.state, self._owed_name)
        self._owed, self._owed_name, self._continued = None, "", False

    def _refuse(self, head: bytes, text: str, code: str | None = None) -> None:
        """A tagged BAD for a command the application never sees; NO with
        ``code`` for a message too large to append (RFC 7889: [TOOBIG])."""
        tag = read_tag(head)
        status = b" BAD " if code is None else b" NO [" + code.encode("ascii") + b"] "
        self._out += (tag.encode("ascii") if tag else b"*") + status + text.encode() + b"\r\n"

    def _command(self, command: bytes) -> ev.ImapEvent | None:
        try:
            _, name, _ = split_command(command)
            if name in TABLE.verbs:
                TABLE.after(self.state, name)  # OutOfSequence when not allowed here
            found = read_command(command)
        except ImapSyntaxError as exc:
            self._refuse(command, exc.text)
            return None
        except OutOfSequence as exc:
            self._refuse(command, f"{exc.command} is not allowed {_where(self.state)}")
            return None
        finally:
            message, self._message = self._message, None
        if message is not None:
            # The spooled message stands where the command had an empty
            # literal (``_gather``), which the grammar read as the message:
            # anything after it would not have parsed as an APPEND.
            assert isinstance(found, ev.Append) and found.message == b""
            found = dataclasses.replace(found, message=message)
        self._owed, self._owed_name = found, name
        return found

    def _continuation_line(self, line: bytes) -> ev.ImapEvent | None:
        owed = self._owed
        assert owed is not None
        if isinstance(owed, ev.Idle):
            if line.strip().upper() == b"DONE":
                return ev.IdleDone(owed.tag)
            self.bad("IDLE ends with DONE; the IDLE is over")
            return None
        try:
            text = line.decode("ascii")
            return ev.AuthenticateData(owed.tag, read_sasl(text))
        except (ImapSyntaxError, UnicodeDecodeError):
            self.bad("the SASL response is not base64; authentication abandoned")
            return None

    def _gather(self) -> bytes | None:
        """The next whole command (its final CRLF removed), or None for more data.

        Commands thrown away (a limit passed) are answered here with a tagged
        BAD and the loop goes on to the next.
        """
        buf = self._buf
        while True:
            if self._literal_left:
                n = min(len(buf), self._literal_left)
                if n == 0:
                    return None
                if self._skip is None:
                    if self._spool is not None:
                        self._spool.write(bytes(buf[:n]))
                    else:
                        self._parts.append(bytes(buf[:n]))
                del buf[:n]
                self._literal_left -= n
                if self._literal_left:
                    return None
                continue
            end = buf.find(b"\n")
            if end < 0:
                if self._overlong or len(buf) > self.max_line:
                    if not self._head:
                        self._head = bytes(buf[:_HEAD])
                    self._tail = (self._tail + bytes(buf))[-16:]
                    self._overlong = True
                    buf.clear()
                return None
            line = bytes(buf[:end + 1])
            del buf[:end + 1]
            if not self._head:
                self._head = line[:_HEAD]
            if self._overlong or len(line) > self.max_line:
                ending = (self._tail + line)[-16:]
                self._overlong, self._tail = False, b""
                self._skip = self._skip or f"line too long (the limit is {self.max_line} octets)"
            else:
                ending = line
            content = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if self._spool is not None and content and self._skip is None:
                # APPEND's message is its last argument (no MULTIAPPEND).
                self._skip = "nothing may follow APPEND's message"
            literal = _LITERAL_AT_END.search(ending)
            if literal is not None:
                size, plus = int(literal.group(1)), literal.group(2) == b"+"
                if (self._skip is None and self._spool is None and self._message is None
                        and self._owed is None
                        and self.state in (ImapState.AUTHENTICATED, ImapState.SELECTED)
                        and _APPEND.match(self._parts[0] if self._parts else content)):
                    if size > self.max_append:
                        self._skip = f"message too large (the limit is {self.max_append} octets)"
                        self._skip_code = "TOOBIG"
                    elif size > self.max_literal:
                        # APPEND's message: spooled, and an empty literal in
                        # its place for the grammar (``_command``).
                        self._parts.append(content[:literal.start()] + b"{0}\r\n")
                        self._size += len(line)
                        self._spool = BodyWriter(directory=self.spool_dir)
                        self._literal_left = size
                        if not plus:
                            self._out += b"+ go ahead\r\n"
                        continue
                if self._skip is None and size > self.max_literal:
                    self._skip = f"literal too large (the limit is {self.max_literal} octets)"
                if self._skip is None and self._size + len(line) + size > self.max_command:
                    self._skip = f"command too long (the limit is {self.max_command} octets)"
                if self._skip is None:
                    self._parts.append(content + b"\r\n")
                    self._size += len(line) + size
                    self._literal_left = size
                    if not plus and self._owed is None:
                        self._out += b"+ go ahead\r\n"
                    continue
                if plus:
                    self._literal_left = size  # RFC 7888: read and thrown away
                    continue
                # A synchronizing literal refused: the client sends it only
                # after "+", so the command ends here.
            elif self._skip is None:
                self._size += len(line)
                if self._size > self.max_command:
                    self._skip = f"command too long (the limit is {self.max_command} octets)"
                else:
                    self._parts.append(content)
            command, skip, head = b"".join(self._parts), self._skip, self._head
            self._parts, self._size, self._skip, self._head = [], 0, None, b""
            code, self._skip_code = self._skip_code, None
            spool, self._spool = self._spool, None
            if spool is not None:
                if skip is None:
                    self._message = spool.finish()
                else:
                    spool.discard()
            if skip is None:
                return command
            if self._owed is not None:
                self.bad(skip)
            else:
                self._refuse(head, skip, code)
