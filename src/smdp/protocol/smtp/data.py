"""The message after DATA, read and written under SMTP's strict line-end rule.

The SMDP ports tolerate a bare LF as a line end (``framing.DataBlockReader``).
SMTP cannot: the 2023 "SMTP smuggling" advisories (CVE-2023-51764/5/6) showed
that when two servers disagree on where a message ends (``<LF>.<CR><LF>``,
``<CR>.<LF>``, ``<LF>.<LF>``), a second, forged message can ride inside the
first. So here the end of data is exactly ``<CR><LF>.<CR><LF>`` (RFC 5321
4.1.1.4), and nothing else ends it; a CR or LF that is not part of a CRLF pair
anywhere in the message (RFC 5322 2.3: they "MUST NOT appear independently")
marks the whole message refused once its real end is read. Sending, every
bare CR and LF becomes CRLF before dot-stuffing, so we never emit what a lax
receiver could take for an end.
"""

from __future__ import annotations

from typing import ClassVar, Final

from smdp.protocol.framing import (
    _BARE_CR,
    _BARE_LF,
    _SPECIAL,
    DataBlockReader,
    DotStuffer,
    LineBuffer,
    _head,
)

__all__ = ["SmtpDataReader", "SmtpDotStuffer", "smtp_dot_stuff", "smtp_normalize"]

_CRLF: Final = b"\r\n"


class SmtpDataReader(DataBlockReader):
    """A :class:`DataBlockReader` whose lines end only at CRLF.

    The block ends at the first ``CRLF.CRLF`` (or ``.CRLF`` at its very
    start). A bare CR or LF sets :attr:`bare_line_end`, which fails the block
    like the limits do: the reader stops storing and keeps reading to the real
    end, so the session stays in step and the refusal comes after the message.
    """

    __slots__ = ("bare_line_end",)

    def __init__(self, max_line: int, max_size: int) -> None:
        super().__init__(max_line, max_size)
        self.bare_line_end = False

    @property
    def failed(self) -> bool:
        return self.too_long_line or self.too_big or self.bare_line_end

    def consume(self, lines: LineBuffer) -> bool:
        if self._done:
            return True
        buf = lines._buf
        lines._scan_from = 0
        if self._skipping:
            end = buf.find(_CRLF)
            if end < 0:
                # Keep a last CR: with the next LF it ends the long line.
                del buf[: len(buf) - 1 if buf.endswith(b"\r") else len(buf)]
                return False
            del buf[: end + 2]
            self._skipping = False
        # The buffer always starts at the beginning of a line here.
        if not buf.startswith((b".", b"\n")) and _SPECIAL.search(buf) is None:
            # No line starts with a dot (so no terminator either) and every
            # LF ends a CRLF: the complete lines are content as they are,
            # unless a bare CR refuses them (issue 15 item 4).
            body_end = term_end = buf.rfind(b"\n") + 1
            if body_end:
                chunk = _head(buf, body_end)
                if self.bare_line_end or _BARE_CR.search(chunk) is not None:
                    self._take(chunk)
                else:
                    self._store(chunk)
        else:
            if buf.startswith(b".\r\n"):
                body_end, term_end = 0, 3
            else:
                term = buf.find(b"\r\n.\r\n")
                if term >= 0:
                    body_end, term_end = term + 2, term + 5
                else:
                    last = buf.rfind(_CRLF)
                    body_end = term_end = last + 2 if last >= 0 else 0
            if body_end:
                self._take(_head(buf, body_end))
        del buf[:term_end]
        if term_end != body_end:
            self._done = True
            return True
        if len(buf) > self._max_content + 2:
            # A partial line already over the limit (allowing for a stuffing
            # dot and the CR of its CRLF) cannot be the terminator.
            self.too_long_line = True
            self._forget()
            self._skipping = True
            del buf[: len(buf) - 1 if buf.endswith(b"\r") else len(buf)]
        return False

    def _take(self, chunk: bytes) -> None:
        """Complete lines, ``chunk`` ending with CRLF."""
        # Every CR and LF must be half of a CRLF pair. The chunk starts at a
        # line start (it follows a CRLF), so an LF there is bare; the two
        # patterns find the others, each in one pass at C speed.
        if not self.bare_line_end and (
                chunk.startswith(b"\n") or _BARE_LF.search(chunk) is not None
                or _BARE_CR.search(chunk) is not None):
            self.bare_line_end = True
            self._forget()
        if self.bare_line_end:
            # Refused at its end: only counted from here on.
            self._take_lines(chunk.replace(_CRLF, b"\n"))
        else:
            self._store(self._unstuff(chunk))


def smtp_normalize(body: bytes) -> bytes:
    """Every bare CR and LF made CRLF, and a final CRLF unless the body is empty:
    what :class:`SmtpDotStuffer` sends and the server connection hands back."""
    body = body.replace(_CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", _CRLF)
    if body and not body.endswith(_CRLF):
        body += _CRLF
    return body


def smtp_dot_stuff(body: bytes) -> bytes:
    """The wire form of a whole message: normalised, dot-stuffed, ``.CRLF`` last."""
    stuffer = SmtpDotStuffer()
    return stuffer.feed(body) + stuffer.end()


class SmtpDotStuffer(DotStuffer):
    """Dot-stuff a message given in pieces of any size, bare CR/LF made CRLF.

    ``b"".join(map(s.feed, pieces)) + s.end()`` is the same for every way of
    cutting a message into pieces. The SMDP ports' stuffer, with SMTP's rule
    for line ends: a bare CR is a line end too (RFC 5321 2.3.8 allows no
    other CR), so a CR held back at the end of the last piece is one.
    """

    __slots__ = ()

    _HELD_CR: ClassVar[bytes] = b""

    @staticmethod
    def _plain(chunk: bytes) -> bool:
        # A bare CR is a line end here, to be made CRLF.
        return DotStuffer._plain(chunk) and _BARE_CR.search(chunk) is None

    @staticmethod
    def _line_ends(chunk: bytes) -> bytes:
        return chunk.replace(_CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", _CRLF)
