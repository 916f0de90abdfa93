"""A message's MIME structure for IMAP (issue 14; docs/imap.md "MIME
structure"): BODYSTRUCTURE, BODY, and where each part section (``BODY[1]``,
``BODY[1.MIME]``, ``BODY[2.HEADER]``) lies in the stored octets.

Read in one pass over the message's chunks, a line at a time: only the
line at hand (at most ``LINE_KEEP`` octets of it) and each part's header
fields of interest are held, never the message, so a 50 MB message costs
what a 5 KB one does in memory. What it finds is offsets, sizes and line
counts; a part's octets are then streamed from the store by offset.
Bounded as the MIME walk is (``MAX_DEPTH``, ``MAX_PARTS``): deeper or
further parts are read as the text of the part that holds them.

Where a message is broken, it is read as common readers do: a part without
its closing delimiter runs to the end, a multipart without a boundary
parameter is a leaf.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from smdp.mail.mime.parameters import parse_params
from smdp.mail.mime.walk import MAX_DEPTH, MAX_PARTS
from smdp.protocol.imap.grammar import write_value

#: The most of one line kept (a boundary line is at most 76 octets, RFC
#: 2046 5.1.1; a longer header line is cut, its field kept to this length).
LINE_KEEP: Final = 8192
#: The most of one part's header kept, all fields together.
HEADER_KEEP: Final = 64 * 1024
_FIELDS: Final = frozenset({b"content-type", b"content-transfer-encoding", b"content-id",
                            b"content-description", b"content-disposition",
                            b"content-language", b"content-location", b"content-md5"})
_SECTION: Final = re.compile(r"((?:[1-9][0-9]{0,8}\.)*[1-9][0-9]{0,8})"
                             r"(?:\.(MIME|HEADER|TEXT|HEADER\.FIELDS|HEADER\.FIELDS\.NOT))?")


@dataclass(slots=True)
class Part:
    """One entity of the message: where its header and body lie (offsets
    in the message's octets), its body's line count, the header fields
    that describe it, and what it holds (parts of a multipart, or the
    message of a message/rfc822). ``header``: a message's own header
    (the top one, or one a message/rfc822 part holds), at most
    HEADER_KEEP octets of it, for its ENVELOPE."""

    header_start: int
    body_start: int = 0
    body_end: int = 0
    lines: int = 0
    fields: dict[bytes, bytes] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    message: Part | None = None
    header: bytes = b""

    @property
    def media(self) -> tuple[str, str, dict[str, str]]:
        """Type, subtype and parameters (text/plain; charset=us-ascii when
        absent or unreadable, as RFC 2045 5.2 says)."""
        value = self.fields.get(b"content-type")
        if value is not None:
            main, params = parse_params(value)
            kind, _, sub = main.partition("/")
            if kind and sub:
                return kind, sub, params
        return "text", "plain", {"charset": "us-ascii"}


class _Lines:
    """The message's lines with their offsets, one of lookahead; each line
    is (offset, its first LINE_KEEP octets without the line end, the
    length of its line end). ``taken`` counts the lines taken, ``eol`` is
    the line end of the last one."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._lines = self._read(chunks)
        self._ahead: tuple[int, bytes, int] | None = None
        self._done = False
        self.size = 0
        self.taken = 0
        self.eol = 0

    def _read(self, chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes, int]]:
        offset, kept, length = 0, bytearray(), 0
        for chunk in chunks:
            self.size += len(chunk)
            pos = 0
            while pos < len(chunk):
                nl = chunk.find(b"\n", pos)
                end = len(chunk) if nl < 0 else nl + 1
                if len(kept) < LINE_KEEP + 2:
                    kept += chunk[pos:min(end, pos + LINE_KEEP + 2 - len(kept))]
                length += end - pos
                pos = end
                if nl >= 0:
                    eol = 2 if kept.endswith(b"\r\n") else 1 if kept.endswith(b"\n") else 0
                    yield offset, bytes(kept[:len(kept) - eol][:LINE_KEEP]), eol
                    offset, kept, length = offset + length, bytearray(), 0
        if length:
            yield offset, bytes(kept[:LINE_KEEP]), 0

    def peek(self) -> tuple[int, bytes, int] | None:
        if self._ahead is None and not self._done:
            self._ahead = next(self._lines, None)
            self._done = self._ahead is None
        return self._ahead

    def take(self) -> None:
        line = self.peek()
        if line is not None:
            self.taken += 1
            self.eol = line[2]
        self._ahead = None


def _delimiter(line: bytes, boundaries: list[bytes]) -> bool:
    """Whether ``line`` is a delimiter (or close delimiter) of one of
    ``boundaries``; trailing white space is allowed (RFC 2046 5.1.1)."""
    if not boundaries or not line.startswith(b"--"):
        return False
    text = line[2:].rstrip(b" \t")
    return any(text in (b, b + b"--") for b in boundaries)


class _Parser:
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.lines = _Lines(chunks)
        self.count = 0

    def entity(self, start: int, boundaries: list[bytes], depth: int, *,
               default: bytes | None = None, message: bool = False) -> Part:
        """The entity whose header starts at ``start``. It runs to the next
        delimiter of ``boundaries`` (not taken; the line end before it is
        the delimiter's, RFC 2046 5.1.1) or to the end of the message."""
        self.count += 1
        part = Part(start)
        if default is not None:
            part.fields[b"content-type"] = default
        self._header(part, boundaries, message)
        first = self.lines.taken
        kind, sub, params = part.media
        boundary = params.get("boundary", "").encode("latin-1")
        deeper = depth < MAX_DEPTH and self.count < MAX_PARTS
        if kind == "multipart" and boundary and deeper:
            self._multipart(part, boundary, boundaries, depth, sub == "digest")
        elif (kind, sub) in (("message", "rfc822"), ("message", "global")) and deeper:
            part.message = self.entity(part.body_start, boundaries, depth + 1, message=True)
        # What is left up to the terminating delimiter is this entity's
        # (a leaf's body, a multipart's epilogue).
        lines = self.lines
        while (line := lines.peek()) is not None and not _delimiter(line[1], boundaries):
            lines.take()
        ahead = lines.peek()
        part.body_end = (lines.size if ahead is None
                         else max(part.body_start, ahead[0] - lines.eol))
        part.lines = lines.taken - first
        return part

    def _header(self, part: Part, boundaries: list[bytes], message: bool) -> None:
        lines, kept, name = self.lines, 0, b""
        header = bytearray()
        part.body_start = part.header_start
        while (line := lines.peek()) is not None:
            offset, text, eol = line
            if _delimiter(text, boundaries):
                break  # a header cut short by the next part: no body
            lines.take()
            part.body_start = offset + len(text) + eol
            if message and len(header) < HEADER_KEEP:
                header += text + b"\r\n"
            if not text:
                break
            if text[:1] in (b" ", b"\t"):
                if name in part.fields and kept < HEADER_KEEP:
                    part.fields[name] += b" " + text.strip()
                    kept += len(text)
                continue
            key, colon, value = text.partition(b":")
            name = key.strip().lower()
            if colon and name in _FIELDS and name not in part.fields and kept < HEADER_KEEP:
                part.fields[name] = value.strip()
                kept += len(text)
        part.header = bytes(header)

    def _multipart(self, part: Part, boundary: bytes, boundaries: list[bytes], depth: int,
                   digest: bool) -> None:
        lines = self.lines
        inner = [boundary, *boundaries]
        default = b"message/rfc822" if digest else None  # RFC 2046 5.1.5
        # The preamble, up to the first delimiter.
        while (line := lines.peek()) is not None and not _delimiter(line[1], inner):
            lines.take()
        while (line := lines.peek()) is not None and _delimiter(line[1], [boundary]):
            offset, text, eol = line
            lines.take()
            if text[2:].rstrip(b" \t") != boundary or self.count >= MAX_PARTS:
                return  # the close delimiter: the epilogue follows
            part.parts.append(self.entity(offset + len(text) + eol, inner, depth + 1,
                                          default=default))


def structure(chunks: Iterable[bytes]) -> Part:
    """The MIME structure of the message ``chunks`` hold, read in one pass."""
    return _Parser(chunks).entity(0, [], 0, message=True)


# -- sections ---------------------------------------------------------------------------


def find_part(top: Part, numbers: list[int]) -> Part | None:
    """The part that section numbers ``numbers`` name (RFC 9051 6.4.5): in a
    multipart, its n-th part; in a message/rfc822, the parts of the message
    it holds; part 1 of a message that is not multipart is its body."""
    part = top
    for n in numbers:
        holder = part.message if part.message is not None else part
        if holder.parts:
            if n > len(holder.parts):
                return None
            part = holder.parts[n - 1]
        elif n == 1 and (holder is top or part.message is not None):
            part = holder
        else:
            return None
    return part


def section_range(top: Part, section: str) -> tuple[int, int, str] | None:
    """Where ``section`` (``1.2``, ``1.MIME``, ``2.HEADER``, ``2.TEXT``,
    ``2.HEADER.FIELDS``...) lies: (start, end, what) where ``what`` is
    ``"header"`` when the octets are a header (HEADER.FIELDS choose from
    it), else ``"body"``; None when the message has no such part."""
    match = _SECTION.fullmatch(section)
    if match is None:
        return None
    path, suffix = match.groups()
    part = find_part(top, [int(n) for n in path.split(".")])
    if part is None:
        return None
    if suffix is None:
        return part.body_start, part.body_end, "body"
    if suffix == "MIME":
        if part is top:
            return None  # the top's own header is HEADER, not 1.MIME (RFC 9051 6.4.5)
        return part.header_start, part.body_start, "header"
    inner = part.message
    if inner is None:
        return None  # HEADER and TEXT of a part are for message/rfc822 parts only
    if suffix == "TEXT":
        return inner.body_start, inner.body_end, "body"
    return inner.header_start, inner.body_start, "header"


# -- BODYSTRUCTURE ----------------------------------------------------------------------


def _s(value: str | bytes | None) -> bytes:
    """A string of BODYSTRUCTURE: NIL, quoted, or a literal of its octets
    (header bytes are read as Latin-1, so they go out as they came)."""
    if value is None:
        return b"NIL"
    raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
    return write_value(raw.decode("ascii")) if raw.isascii() else write_value(raw)


def _params(params: dict[str, str]) -> bytes:
    if not params:
        return b"NIL"
    return b"(" + b" ".join(_s(k.upper()) + b" " + _s(v) for k, v in params.items()) + b")"


def _disposition(part: Part) -> bytes:
    value = part.fields.get(b"content-disposition")
    if value is None:
        return b"NIL"
    kind, params = parse_params(value)
    return b"(" + _s(kind.upper() or "ATTACHMENT") + b" " + _params(params) + b")"


def _field(part: Part, name: bytes) -> bytes:
    return _s(part.fields.get(name))


def _extension(part: Part) -> bytes:
    """Disposition, language and location, the tail of every body's
    extension data."""
    return b" ".join((_disposition(part), _field(part, b"content-language"),
                      _field(part, b"content-location")))


def body_structure(part: Part, envelope: Callable[[bytes], bytes], *,
                   extended: bool = True) -> bytes:
    """BODYSTRUCTURE (``extended``) or BODY of ``part`` (RFC 9051 7.5.2);
    ``envelope`` writes a message/rfc822 part's ENVELOPE from its header."""
    kind, sub, params = part.media
    if part.parts:
        out = b"".join(body_structure(p, envelope, extended=extended) for p in part.parts)
        out += b" " + _s(sub.upper())
        if extended:
            out += b" " + _params(params) + b" " + _extension(part)
        return b"(" + out + b")"
    encoding = part.fields.get(b"content-transfer-encoding", b"7BIT").upper()
    fields = [_s(kind.upper()), _s(sub.upper()), _params(params),
              _field(part, b"content-id"), _field(part, b"content-description"),
              _s(encoding), str(part.body_end - part.body_start).encode("ascii")]
    if part.message is not None:
        fields += [envelope(part.message.header),
                   body_structure(part.message, envelope, extended=extended),
                   str(part.lines).encode("ascii")]
    elif kind == "text":
        fields.append(str(part.lines).encode("ascii"))
    if extended:
        fields += [_field(part, b"content-md5"), _extension(part)]
    return b"(" + b" ".join(fields) + b")"
