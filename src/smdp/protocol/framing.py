"""Line framing shared by both ports (wire contract, section 1).

Two framing rules exist on the SMDP wire and both ports use them the same way:

- command and reply lines, ended by CRLF (a bare LF is tolerated on input);
- dot-stuffed data blocks (message bodies, envelope blocks, multi-line replies),
  ended by a line holding a single ".".

:class:`LineBuffer` owns the received bytes; :class:`DataBlockReader` borrows them
while a block is being read, so switching from commands to a block and back never
loses or duplicates a byte (pipelined commands after a block stay in the buffer).

Memory is bounded by construction: a partial line longer than the limit is dropped
as it arrives and only remembered as "too long", and a block larger than its size
limit is counted but no longer stored. Neither class ever raises on peer input.

Large blocks need not be held whole either way: :meth:`DataBlockReader.take`
hands out what was read so far (the connections turn it into :class:`BlockChunk`
events once a ``stream_threshold`` is reached), and :class:`DotStuffer` encodes a
body given in pieces.

Speed matters for blocks (a 64 MiB body is common enough), so blocks are processed
a buffer at a time with ``bytes.find``/``bytes.replace`` and regex searches, which
run in C, and never a byte at a time in Python. Most of a body needs nothing done
to it (no line starts with a dot, every line end is CRLF): one search tells, and
such a piece is handed on as it is, with no copy but the one out of the buffer.
"""

from __future__ import annotations

import enum
import re
from typing import ClassVar, Final, Literal

from smdp.protocol._events import event

__all__ = [
    "CLOSED",
    "LINE_TOO_LONG",
    "LINE_TOO_LONG_REASON",
    "NEED_DATA",
    "TOO_BIG_REASON",
    "BlockChunk",
    "DataBlockReader",
    "DotStuffer",
    "LineBuffer",
    "ProtocolUsageError",
    "RemoteProtocolError",
    "Sentinel",
    "dot_stuff",
    "dot_unstuff",
    "normalize_line_ends",
]


class Sentinel(enum.Enum):
    """Marker values returned in place of data (h11 style, one object each).

    An enum rather than bare ``object()`` so that mypy narrows ``x is NEED_DATA``.
    """

    NEED_DATA = "NEED_DATA"
    CLOSED = "CLOSED"
    LINE_TOO_LONG = "LINE_TOO_LONG"

    def __repr__(self) -> str:
        return self.value


#: ``next_event()``: nothing complete is buffered; feed more bytes.
NEED_DATA: Final = Sentinel.NEED_DATA
#: ``next_event()``: the session is over (QUIT answered, or the peer closed).
CLOSED: Final = Sentinel.CLOSED
#: ``LineBuffer.next_line()``: an over-long line was discarded up to its line end.
LINE_TOO_LONG: Final = Sentinel.LINE_TOO_LONG

#: Why a block was refused (``DataFailed.reason``, ``MessageFailed.reason``):
#: :attr:`DataBlockReader.too_long_line` and :attr:`DataBlockReader.too_big`.
LINE_TOO_LONG_REASON: Final = "line too long"
TOO_BIG_REASON: Final = "too big"


class ProtocolUsageError(Exception):
    """The application drove a connection object wrongly (a bug in our code).

    Examples: ``next_event()`` while a reply is still owed, ``reply()`` with nothing
    to answer, a reply text holding CR or LF. Never raised because of peer input.
    """


class RemoteProtocolError(Exception):
    """The remote side broke the protocol in a way a client cannot recover from.

    Raised only by the client connections (a server answers bad input with an
    error reply instead). The connection is unusable afterwards.
    """


_CRLF: Final = b"\r\n"

# What a block's octets can need beyond copying (issue 15 item 4): an LF that
# is not half of a CRLF (a line end all the same on the SMDP ports, made CRLF)
# and a line that starts with a dot (stuffed, or the terminator). Most
# pieces of a body have neither, and then go through as they are. The
# pattern starts with a literal LF, which sre skips to at C speed, and looks
# around each one: a single pass, faster than ``bytes.find(b"\n.")`` alone.
# An LF at offset 0 has nothing to look behind at: callers test
# ``startswith(b"\n")`` themselves.
_SPECIAL: Final = re.compile(rb"\n(?:(?<=[^\r]\n)|\.)")
#: An LF not preceded by a CR (not at offset 0, see above).
_BARE_LF: Final = re.compile(rb"\n(?<=[^\r]\n)")
#: A CR not followed by an LF (at the very end too).
_BARE_CR: Final = re.compile(rb"\r(?!\n)")


def _line_too_long(chunk: bytes, max_content: int) -> bool:
    """Whether a line of ``chunk`` (whole lines, every one ended by CRLF)
    holds more than ``max_content`` octets before its CRLF.

    Exact without cutting the chunk into lines: from each line start ``s``,
    the last LF within the next ``max_content + 2`` octets ends a run of lines
    that all fit (each ends at or before it); none there means the line
    starting at ``s`` is too long. One step per ``max_content`` octets or so.
    """
    window = max_content + 2
    start, size = 0, len(chunk)
    while start < size:
        lf = chunk.rfind(b"\n", start, start + window)
        if lf < 0:
            return True
        start = lf + 1
    return False


def _head(buf: bytearray, end: int) -> bytes:
    """``bytes(buf[:end])`` with one copy, not two (no bytearray in between)."""
    with memoryview(buf) as view:
        return view[:end].tobytes()


@event
class BlockChunk:
    """A piece of a message body being received (only with ``stream_threshold``).

    A connection created with ``stream_threshold=n`` emits one each time it
    holds at least ``n`` octets of the body block being read: unstuffed, CRLF
    line ends, always whole lines. The body is the concatenation of every
    chunk's ``data`` and the ``data`` of the block's final event (``DataComplete``,
    ``MessageComplete``, ``PulledBody.body``, ``UserReply.body``). If the block
    fails in the end, the failure is reported as without streaming and the
    chunks received so far must be thrown away. No reply is owed to a chunk.
    """

    data: bytes


class LineBuffer:
    """Accumulate received bytes and cut them into lines.

    ``max_line`` counts the line *including* its CRLF, as the contract does
    (section 1), so a line's content may hold at most ``max_line - 2`` octets; the
    same limit applies to a line ended by a bare LF, because it is stored with a
    CRLF. An over-long line is dropped up to its line end and reported once, by
    returning :data:`LINE_TOO_LONG` where the line would have been.
    """

    __slots__ = ("_buf", "_discarding", "_max_content", "_scan_from", "max_line")

    def __init__(self, max_line: int) -> None:
        if max_line < 3:
            raise ValueError("max_line must leave room for at least one octet and CRLF")
        self.max_line = max_line
        self._max_content = max_line - 2
        # bytearray: deleting from the front is cheap in CPython (it moves a start
        # offset), so consumed lines are simply deleted.
        self._buf = bytearray()
        # True while the rest of an over-long line is being thrown away.
        self._discarding = False
        # Where the search for the next LF resumes: bytes before it hold none, so
        # byte-at-a-time feeding stays linear.
        self._scan_from = 0

    @property
    def buffered(self) -> int:
        """Octets received and not consumed yet (for limits and tests)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._discarding and not self._buf:
            # Drop the tail of an over-long line as it arrives, so that a peer
            # streaming a line without end cannot grow our memory.
            lf = data.find(b"\n")
            if lf < 0:
                return
            # Keep the LF: next_line() sees it and reports the discarded line.
            data = data[lf:]
        self._buf += data

    def next_line(self) -> bytes | Literal[Sentinel.LINE_TOO_LONG] | None:
        """Return the next line without its line end, or None if none is complete."""
        buf = self._buf
        lf = buf.find(b"\n", self._scan_from)
        if lf < 0:
            if self._discarding or len(buf) > self._max_content + 1:
                # Even if a CR and LF came next, the content would exceed the limit.
                self._discarding = True
                buf.clear()
                self._scan_from = 0
            else:
                self._scan_from = len(buf)
            return None
        end = lf - 1 if lf > 0 and buf[lf - 1] == 0x0D else lf
        line = bytes(buf[:end])
        del buf[: lf + 1]
        self._scan_from = 0
        if self._discarding:
            self._discarding = False
            return LINE_TOO_LONG
        if len(line) > self._max_content:
            return LINE_TOO_LONG
        return line


class DataBlockReader:
    """Read one dot-stuffed block out of a :class:`LineBuffer`.

    Call :meth:`consume` whenever new bytes were fed; it returns True once the
    terminating "." line has been read (and removed from the buffer). The block is
    unstuffed and its line ends normalised to CRLF; :meth:`result` gives it, final
    CRLF kept, terminator not included.

    A line longer than ``max_line`` (including CRLF) sets :attr:`too_long_line`; a
    block larger than ``max_size`` octets (counted unstuffed, with CRLF line ends)
    sets :attr:`too_big`. Either way the reader keeps consuming up to the
    terminator, so the session stays in step, but stops storing anything
    (contract section 1: "read to its end and refused as a whole").

    To hold less than a whole block, call :meth:`take` between :meth:`consume`
    calls: it hands out (and forgets) the complete lines read so far, in final
    form; :meth:`result` then gives only the rest. The limits keep counting the
    whole block (:attr:`size` includes what was taken), so a block that fails
    after some was taken still fails, and what was taken must be thrown away.
    """

    __slots__ = (
        "_chunks",
        "_done",
        "_held",
        "_max_content",
        "_skipping",
        "max_line",
        "max_size",
        "size",
        "too_big",
        "too_long_line",
    )

    def __init__(self, max_line: int, max_size: int) -> None:
        if max_line < 3:
            raise ValueError("max_line must leave room for at least one octet and CRLF")
        if max_size < 0:
            raise ValueError("max_size must not be negative")
        self.max_line = max_line
        self.max_size = max_size
        self._max_content = max_line - 2
        # Unstuffed block text with CRLF line ends, as take() and result() give it.
        self._chunks: list[bytes] = []
        # Octets in _chunks.
        self._held = 0
        self._done = False
        # True while the rest of an over-long line is being thrown away.
        self._skipping = False
        self.size = 0
        self.too_long_line = False
        self.too_big = False

    @property
    def done(self) -> bool:
        return self._done

    @property
    def failed(self) -> bool:
        return self.too_long_line or self.too_big

    @property
    def held(self) -> int:
        """Octets of content stored and not taken yet (in final, CRLF form)."""
        return self._held

    def consume(self, lines: LineBuffer) -> bool:
        """Take what belongs to the block from ``lines``; True once it is complete."""
        if self._done:
            return True
        buf = lines._buf
        lines._scan_from = 0
        if self._skipping:
            lf = buf.find(b"\n")
            if lf < 0:
                buf.clear()
                return False
            del buf[: lf + 1]
            self._skipping = False
        # The buffer always starts at the beginning of a line here, so the
        # terminator is either right at the start or right after some LF.
        if not buf.startswith((b".", b"\n")) and _SPECIAL.search(buf) is None:
            # No line starts with a dot and every line end is CRLF: the
            # complete lines are the content as they are (the common case).
            body_end = buf.rfind(b"\n") + 1
            if body_end:
                self._store(_head(buf, body_end))
                del buf[:body_end]
            return self._check_partial(buf)
        if buf.startswith(b".\r\n"):
            body_end, term_end = 0, 3
        elif buf.startswith(b".\n"):
            body_end, term_end = 0, 2
        else:
            crlf_term = buf.find(b"\n.\r\n")
            lf_term = buf.find(b"\n.\n")
            if crlf_term >= 0 and (lf_term < 0 or crlf_term < lf_term):
                body_end, term_end = crlf_term + 1, crlf_term + 4
            elif lf_term >= 0:
                body_end, term_end = lf_term + 1, lf_term + 3
            else:
                body_end = term_end = buf.rfind(b"\n") + 1
        if body_end:
            self._take(_head(buf, body_end))
        del buf[:term_end]
        if term_end and term_end != body_end:
            self._done = True
            return True
        return self._check_partial(buf)

    def _check_partial(self, buf: bytearray) -> bool:
        """After the complete lines were taken: False, and the block marked
        failed if what is left of ``buf`` (part of a line) is too long already."""
        if len(buf) > self._max_content + 2:
            # A partial line already over the limit (allowing for a stuffing dot
            # and a CR) cannot be the terminator.
            self.too_long_line = True
            self._forget()
            self._skipping = True
            buf.clear()
        return False

    @staticmethod
    def _unstuff(chunk: bytes) -> bytes:
        """Drop one leading "." of every line (RFC 5321 4.5.2); ``chunk``
        starts at a line start."""
        if chunk.startswith(b"."):
            chunk = chunk[1:]
        return chunk.replace(b"\n.", b"\n")

    def _take(self, chunk: bytes) -> None:
        """Account for complete lines (``chunk`` ends with LF)."""
        chunk = self._unstuff(chunk)
        # Unstuffing only drops dots, so a bare LF is found after it as before.
        if chunk.startswith(b"\n") or _BARE_LF.search(chunk) is not None:
            chunk = chunk.replace(_CRLF, b"\n").replace(b"\n", _CRLF)
        self._store(chunk)

    def _take_lines(self, chunk: bytes) -> None:
        """:meth:`_take` of complete lines whose CRLF ends are LF already."""
        chunk = self._unstuff(chunk)
        if self.failed:
            self.size += len(chunk) + chunk.count(b"\n")  # counted, not kept
            return
        self._store(chunk.replace(b"\n", _CRLF))

    def _store(self, chunk: bytes) -> None:
        """Keep complete lines of content (unstuffed, CRLF line ends), or fail
        the block if they break a limit."""
        self.size += len(chunk)
        if self.failed:
            return
        if _line_too_long(chunk, self._max_content):
            self.too_long_line = True
        elif self.size > self.max_size:
            self.too_big = True
        else:
            self._chunks.append(chunk)
            self._held += len(chunk)
            return
        self._forget()

    def _forget(self) -> None:
        self._chunks.clear()
        self._held = 0

    def take(self) -> bytes:
        """Hand out and forget the content stored so far: unstuffed, CRLF line
        ends, whole lines only. ``b""`` once the block failed (nothing is stored)."""
        data = b"".join(self._chunks)
        self._forget()
        return data

    def result(self) -> bytes:
        """The block, unstuffed, with CRLF line ends (raises unless complete and valid).

        Only the part not handed out by :meth:`take` yet.
        """
        if not self._done:
            raise ProtocolUsageError("the block is not complete yet")
        if self.failed:
            raise ProtocolUsageError("the block was refused; there is no result")
        return b"".join(self._chunks)


def normalize_line_ends(body: bytes) -> bytes:
    """CRLF line ends throughout, and a final CRLF unless the body is empty.

    This is the form in which a body is stored and in which it comes back out of
    :class:`DataBlockReader`, so ``dot_unstuff(dot_stuff(b)) == normalize_line_ends(b)``.
    """
    body = body.replace(_CRLF, b"\n").replace(b"\n", _CRLF)
    if body and not body.endswith(_CRLF):
        body += _CRLF
    return body


def dot_stuff(body: bytes) -> bytes:
    """The wire form of a block: normalised, dot-stuffed, ended by ``.\\r\\n``."""
    body = normalize_line_ends(body)
    if body.startswith(b"."):
        body = b"." + body
    return body.replace(b"\n.", b"\n..") + b".\r\n"


class DotStuffer:
    """:func:`dot_stuff` for a body given in pieces of any size.

    ``b"".join(map(s.feed, pieces)) + s.end() == dot_stuff(b"".join(pieces))``
    for every way of cutting a body into pieces. Each piece is encoded with
    ``bytes.replace`` as a whole; only a trailing CR is held back, since an LF
    at the start of the next piece makes it a line end. One stuffer encodes one
    body: :meth:`feed` or :meth:`end` after :meth:`end` raise ProtocolUsageError.
    """

    __slots__ = ("_at_line_start", "_cr", "_ended", "_started")

    def __init__(self) -> None:
        # The output so far is empty or ends with CRLF: a "." next is stuffed.
        self._at_line_start = True
        # A CR ended the last piece and has not been written out yet.
        self._cr = False
        self._started = False
        self._ended = False

    def feed(self, chunk: bytes) -> bytes:
        """The wire form of the next piece of the body (possibly ``b""``)."""
        if self._ended:
            raise ProtocolUsageError("feed() after end()")
        if not chunk:
            return b""
        self._started = True
        if self._cr:
            chunk = b"\r" + chunk
        self._cr = chunk.endswith(b"\r")
        if self._cr:
            chunk = chunk[:-1]
            if not chunk:
                return b""
        if chunk.startswith(b"\n") or not self._plain(chunk):
            chunk = self._line_ends(chunk)
            stuffed = chunk.replace(b"\n.", b"\n..")
        else:
            # Every line end CRLF and no line starting with a dot but
            # perhaps the first: the piece is its own wire form (no copy).
            stuffed = chunk
        if self._at_line_start and chunk.startswith(b"."):
            stuffed = b"." + stuffed
        self._at_line_start = chunk.endswith(b"\n")
        return stuffed

    @staticmethod
    def _plain(chunk: bytes) -> bool:
        """Whether a piece (no trailing CR, no LF first) needs no change: no
        line end but CRLF and no line after the first starting with a dot."""
        return _SPECIAL.search(chunk) is None

    @staticmethod
    def _line_ends(chunk: bytes) -> bytes:
        """A piece (no trailing CR) with every line end CRLF: here a bare LF
        is one, a bare CR stays text (the SMDP ports, section 4.1)."""
        return chunk.replace(_CRLF, b"\n").replace(b"\n", _CRLF)

    #: What a CR held back at the end becomes before the final CRLF: kept
    #: as text here (SMTP's stuffer makes it the line end itself).
    _HELD_CR: ClassVar[bytes] = b"\r"

    def end(self) -> bytes:
        """The rest: a held-back CR, a final CRLF if missing, and ``.\\r\\n``."""
        if self._ended:
            raise ProtocolUsageError("end() called twice")
        self._ended = True
        if self._cr:
            return self._HELD_CR + b"\r\n.\r\n"
        if self._started and not self._at_line_start:
            return b"\r\n.\r\n"
        return b".\r\n"


def dot_unstuff(wire: bytes, *, max_line: int, max_size: int) -> bytes:
    """Decode one complete wire block (tests and tools; the ports use the reader).

    The caller names both limits: a default "no limit" would be a number
    nothing can tell from a slightly different one. Raises ValueError if the
    block has no terminator or breaks a limit.
    """
    lines = LineBuffer(max_line)
    lines.feed(wire)
    reader = DataBlockReader(max_line, max_size)
    if not reader.consume(lines):
        raise ValueError("block has no terminating '.' line")
    if reader.failed:
        raise ValueError("block exceeds a limit")
    return reader.result()
