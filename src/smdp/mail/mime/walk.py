"""The MIME walk: what a message holds, read without decoding its parts (RFC 2045, 2046).

:func:`walk_message` scans the top header, then walks the MIME tree by
searching for boundaries with ``bytes.find``; each part's header is scanned
with :func:`~smdp.mail.mime.headers.scan_header` and its body is never
copied. What comes out is where the first text/plain and text/html parts
are, and how many attachments there are, with their names. Work is bounded
by :data:`MAX_DEPTH` and :data:`MAX_PARTS`.

Where a message is broken, the walk reads it as common readers show it: a
missing or wrong boundary is guessed from the delimiter lines actually
written, a multipart without any is read as text, a part without a closing
delimiter runs to the end.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from smdp.mail.mime.headers import HeaderField, first_values, mbox_line_end, scan_header
from smdp.mail.mime.parameters import param_text, parse_params

__all__ = [
    "GUESS_WINDOW",
    "MAX_DEPTH",
    "MAX_HEADER_OCTETS",
    "MAX_PARTS",
    "MIME_FIELDS",
    "TextPart",
    "Walk",
    "body_use",
    "walk_message",
]

# The largest top header read (submission refuses larger ones, so every
# stored message is read in full).
MAX_HEADER_OCTETS = 1024 * 1024
# Bounds on the MIME walk: deeper or further parts are not inspected.
MAX_DEPTH = 20
MAX_PARTS = 200
# The fields the walk reads in every header.
MIME_FIELDS = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
# Non-text parts under these are the body itself (an alternative rendering, or
# an image the HTML shows inline), not attachments, unless they are named.
_INLINE_BODY_PARENTS = frozenset({"alternative", "related"})


@dataclass(slots=True)
class TextPart:
    """A text part's body: ``data[start:end]``, still transfer-encoded."""

    start: int
    end: int
    charset: str
    encoding: str


def _as_is(name: str) -> str:
    return name


@dataclass(slots=True)
class Walk:
    """What :func:`walk_message` found in ``data``.

    ``fields`` are the top header's fields that were asked for and the MIME
    ones, ``values`` the first value of each by lower-case name. ``names`` are the first
    ``max_names`` attachment names that ``show_name`` leaves non-empty, as it
    leaves them.
    """

    data: bytes
    show_name: Callable[[str], str] = _as_is
    max_names: int = MAX_PARTS
    fields: tuple[HeaderField, ...] = ()
    values: dict[str, bytes] = field(default_factory=dict)
    parts: int = 0
    attachments: int = 0
    names: list[str] = field(default_factory=list)
    plain: TextPart | None = None
    html: TextPart | None = None


@functools.lru_cache(maxsize=16)
def _top_fields(keep: frozenset[str]) -> frozenset[str]:
    return keep | MIME_FIELDS


def walk_message(
    data: bytes,
    *,
    keep: frozenset[str] = frozenset(),
    show_name: Callable[[str], str] = _as_is,
    max_names: int = MAX_PARTS,
) -> Walk:
    """Walk the message ``data``: its top header (with the fields named in
    ``keep``, lower case) and its MIME tree.

    An mbox "From " line before the header is skipped (see mbox_line_end). A top header larger
    than :data:`MAX_HEADER_OCTETS` is read only that far, and then the body
    is not walked (where it starts is unknown).
    """
    start = mbox_line_end(data)
    block = scan_header(data, start, keep=_top_fields(keep), limit=MAX_HEADER_OCTETS)
    walk = Walk(data, show_name, max_names, block.fields, first_values(block.fields))
    if not block.truncated:
        _entity(walk, walk.values, block.body_start, len(data), 0, "")
    return walk


def _content_type(values: dict[str, bytes], parent: str) -> tuple[str, str, dict[str, str]]:
    """The main type, subtype and parameters of an entity, with RFC 2045's defaults."""
    raw_type = values.get("content-type")
    default = "message/rfc822" if parent == "digest" else "text/plain"
    mime, params = parse_params(raw_type) if raw_type is not None else (default, {})
    maintype, slash, subtype = mime.partition("/")
    if not slash or not maintype or not subtype:
        # RFC 2045 5.2: an invalid Content-Type means text/plain.
        maintype, subtype, params = "text", "plain", {}
    return maintype, subtype, params


def _disposition(values: dict[str, bytes], params: dict[str, str]) -> tuple[str, str | None]:
    """The disposition type and the file name (``filename``, else the type's ``name``)."""
    raw_disposition = values.get("content-disposition")
    disposition, disposition_params = (
        parse_params(raw_disposition) if raw_disposition is not None else ("", {})
    )
    filename = param_text(disposition_params, "filename")
    if filename is None:
        filename = param_text(params, "name")
    return disposition, filename


def _entity(
    walk: Walk,
    values: dict[str, bytes],
    body_start: int,
    end: int,
    depth: int,
    parent: str,
) -> None:
    """Classify one MIME entity whose body is ``data[body_start:end]``; ``values`` as
    from first_values."""
    maintype, subtype, params = _content_type(values, parent)
    if maintype == "multipart":
        if depth >= MAX_DEPTH:
            return
        boundary = params.get("boundary", "")
        if boundary and _multipart(
            walk, boundary.encode("latin-1"), body_start, end, depth + 1, subtype
        ):
            return
        # A boundary that is missing or never used: mailers that get it wrong
        # still write their real delimiter lines, so try the first one seen.
        guessed = _guess_boundary(walk.data, body_start, end)
        if guessed and _multipart(walk, guessed, body_start, end, depth + 1, subtype):
            return
        # No usable boundary: read the body as text, as a reader would show it.
        maintype, subtype = "text", "plain"
    disposition, filename = _disposition(values, params)
    if (
        disposition == "attachment"
        or filename is not None
        or (maintype != "text" and parent not in _INLINE_BODY_PARENTS)
    ):
        walk.attachments += 1
        if filename is not None and len(walk.names) < walk.max_names:
            shown = walk.show_name(filename)
            if shown:
                walk.names.append(shown)
        return
    if maintype != "text" or subtype not in ("plain", "html"):
        return
    raw_encoding = values.get("content-transfer-encoding")
    encoding = raw_encoding.decode("latin-1").strip().lower() if raw_encoding else ""
    part = TextPart(body_start, end, params.get("charset", ""), encoding)
    if subtype == "plain":
        if walk.plain is None:
            walk.plain = part
    elif walk.html is None:
        walk.html = part


# A missing or unused boundary is guessed from a delimiter-looking line in
# this many octets at the start of a multipart body.
GUESS_WINDOW = 4096
# "--" then a boundary that starts with a visible character, so that a "-- "
# signature separator is never taken for one.
_GUESS_LINE = re.compile(rb"(?:\A|\n)--([\x21-\x7e][^\r\n]{0,199}?)[ \t]*\r?\n")


def _guess_boundary(data: bytes, start: int, end: int) -> bytes | None:
    """The boundary of the first delimiter-looking line near the start of a body."""
    match = _GUESS_LINE.search(data[start : min(end, start + GUESS_WINDOW)])
    if match is None:
        return None
    boundary = match.group(1)
    return boundary[:-2] if boundary.endswith(b"--") else boundary


# After a "-" that starts no delimiter, _find_delimiter searches this many
# octets with bytes.find before it goes from "-" to "-" again.
_DASH_WINDOW = 2048


def _find_delimiter(data: bytes, delimiter: bytes, pos: int, end: int,
                    window: int = _DASH_WINDOW) -> int:
    """``data.find(delimiter, pos, end)``, for a ``delimiter`` that starts with "-".

    bytes.find of a boundary line goes through a base64 attachment at about
    6 GB/s (its skip table hits on most base64 octets), a search for one
    octet (memchr) about ten times as fast, and base64 has no "-" at all: so
    search for "-". Part headers and text have many that start no delimiter
    ("Content-Type", "-----Original Message-----"); after each, the next
    _DASH_WINDOW octets are searched as before, so dashes cost at most one
    Python step a window, and a body without dashes is crossed by memchr.
    """
    size = len(delimiter)
    while True:
        index = data.find(0x2D, pos, end)
        if index < 0 or data.startswith(delimiter, index, end):
            return index
        stop = min(end, index + window + size)
        found = data.find(delimiter, index + 1, stop)
        if found >= 0 or stop == end:
            return found
        # No delimiter starts at or before stop - size (it would have fit).
        pos = stop - size + 1


def _multipart(
    walk: Walk, boundary: bytes, start: int, end: int, depth: int, subtype: str
) -> bool:
    """Walk the parts of a multipart body; False when no delimiter line is found."""
    data = walk.data
    delimiter = b"--" + boundary
    size = len(delimiter)
    pos = start
    part_start = -1
    found = False
    while True:
        index = _find_delimiter(data, delimiter, pos, end)
        if index < 0:
            break
        pos = index + 1
        if index != start and data[index - 1] not in (0x0A, 0x0D):
            continue
        # RFC 2046 5.1.1: the delimiter, "--" if it closes, blanks, line end.
        after = index + size
        closing = after + 2 <= end and data[after : after + 2] == b"--"
        if closing:
            after += 2
        while after < end and data[after] in (0x20, 0x09):
            after += 1
        if after < end and data[after] not in (0x0A, 0x0D):
            continue
        if after < end:
            after += 2 if data[after] == 0x0D and after + 1 < end and data[after + 1] == 0x0A else 1
        if part_start >= 0:
            # The line end before a delimiter belongs to the delimiter.
            part_end = index
            if part_end > part_start and data[part_end - 1] == 0x0A:
                part_end -= 1
            if part_end > part_start and data[part_end - 1] == 0x0D:
                part_end -= 1
            _part(walk, part_start, part_end, depth, subtype)
        found = True
        if closing:
            return True
        part_start = pos = after
    if part_start >= 0:
        # No closing delimiter: the last part runs to the end, as readers show it.
        _part(walk, part_start, end, depth, subtype)
    return found


def _part(walk: Walk, start: int, end: int, depth: int, parent: str) -> None:
    if walk.parts >= MAX_PARTS:
        return
    walk.parts += 1
    block = scan_header(walk.data, start, end, keep=MIME_FIELDS)
    _entity(walk, first_values(block.fields), block.body_start, end, depth, parent)


def body_use(values: dict[str, bytes]) -> tuple[bool, bool, bytes]:
    """Whether the walk may read the body after a header with ``values``, whether
    it is a multipart, and the multipart's boundary.

    Where the parent matters (a part without Content-Type is message/rfc822 in
    a digest), the answer is the one that keeps more.
    """
    maintype, subtype, params = _content_type(values, "")
    if maintype == "multipart":
        return True, True, params.get("boundary", "").encode("latin-1")
    if maintype != "text" or subtype not in ("plain", "html"):
        return False, False, b""
    disposition, filename = _disposition(values, params)
    return disposition != "attachment" and filename is None, False, b""
