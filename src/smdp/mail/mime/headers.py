"""Header scanning: the header block of a message or MIME part (RFC 5322 2.2, 3.6.8).

:func:`scan_header` finds the fields of a header block without copying the
body after it. It is shared by the MIME walk and by submission
(:mod:`smdp.core.submission`), so that the anti-spoofing check (assumption 3)
and the envelope see the same header.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

__all__ = [
    "FIELD_NAME",
    "MAX_MBOX_LINE",
    "MBOX_DECIDED",
    "HeaderBlock",
    "HeaderField",
    "first_values",
    "mbox_line_end",
    "scan_header",
]


class HeaderField(NamedTuple):
    """One header field.

    ``value`` is the unfolded field body (line ends inside it removed, RFC 5322
    2.2.3) without surrounding blanks; ``start``/``end`` delimit the raw field,
    its continuation lines and its final line end, in the scanned buffer.

    A named tuple, immutable like the frozen dataclass it was, but made four
    times as fast: every envelope builds about eight (issue 15 item 5).
    """

    name: str
    value: bytes
    start: int
    end: int

    @property
    def key(self) -> str:
        """The lower-cased name, for comparisons."""
        return self.name.lower()


class HeaderBlock(NamedTuple):
    """The result of :func:`scan_header`.

    ``end`` is where the last field ends; ``body_start`` is where the body
    starts. With ``separator`` they are apart by the blank line; without it the
    header stopped at a line that is not a header field (or at the end of the
    data) and ``end == body_start``. ``truncated`` says the scan stopped at
    its ``limit`` inside the header: the fields are only the first ones and
    where the body starts is unknown. A named tuple, as HeaderField is.
    """

    fields: tuple[HeaderField, ...]
    end: int
    body_start: int
    separator: bool
    truncated: bool = False


_LINE_BREAK = re.compile(rb"[\r\n]")
# RFC 5322 3.6.8 field name (printable ASCII but ':'), tolerating blanks
# before the colon (obs-optional, RFC 5322 4.5). Being at least as lenient as
# any reader matters for the anti-spoofing check: every line that some client
# could take for a header field must be inspected.
FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]++)[ \t]*+:")
# A whole field in one match: the name line as above, then its continuation
# lines (a line starting with a blank), each with its line end (CRLF, LF or a
# bare CR; none at the end of the data). Group 2 is the raw body: its octets
# with the line ends taken out are the unfolded value. Possessive throughout,
# so matching is linear. One match a field instead of Python steps a line
# makes scan_header several times faster on real headers (Received chains).
_FIELD_BODY = rb"[^\r\n]*+(?:\r\n|\r|\n)?+(?:[ \t][^\r\n]*+(?:\r\n|\r|\n)?+)*+"
_FIELD = re.compile(FIELD_NAME.pattern + b"(" + _FIELD_BODY + b")")
# A line end after which comes a line that is neither a field line nor a
# continuation (an empty line included, and the end of the data): after a
# field, the header's fields end there. A CR is a line end unless an LF
# follows. Two patterns, since a literal first octet is searched for much
# faster than the class [\r\n].
_NOT_FIELD_AFTER_LF = re.compile(rb"\n(?![ \t]|[\x21-\x39\x3b-\x7e]++[ \t]*+:)")
_NOT_FIELD_AFTER_CR = re.compile(rb"\r(?![\n \t]|[\x21-\x39\x3b-\x7e]++[ \t]*+:)")
_LINE_ENDS = b"\r\n"
# The longest mbox "From " line, its LF included: RFC 5322's line limit. Real
# ones are well under 200 octets.
MAX_MBOX_LINE = 1000
# mbox_line_end looks at no more than this many octets of a message: a reader
# that holds this much of its start (or all of it) decides as on the whole.
MBOX_DECIDED = 2 * MAX_MBOX_LINE


def mbox_line_end(data: bytes) -> int:
    """Where the message in ``data`` starts: past a leading mbox "From " line
    (the From_ line of RFC 4155, left on messages taken from mbox files), else 0.

    The one rule for every reader (the MIME walk and its skeleton, and
    submission, which strips the line), so that the header a user's message
    is checked by is the header the envelope shows. The first line is an mbox
    line when it starts with "From ", ends with an LF within
    :data:`MAX_MBOX_LINE` octets, and the next line starts a header field
    within as many: a message with no header whose text happens to start with
    "From " keeps that line as text. Only the first :data:`MBOX_DECIDED`
    octets are looked at.
    """
    if not data.startswith(b"From "):
        return 0
    newline = data.find(b"\n", 0, MAX_MBOX_LINE)
    if newline < 0:
        return 0
    start = newline + 1
    if FIELD_NAME.match(data, start, start + MAX_MBOX_LINE) is None:
        return 0
    return start


@functools.lru_cache(maxsize=16)
def _keep_octets(keep: frozenset[str]) -> frozenset[bytes]:
    # Field names are ASCII, so a name's lower-cased octets are in this set
    # exactly when its lower-cased text is in ``keep``.
    return frozenset(
        name.encode("ascii") for name in keep if name.isascii() and name == name.lower()
    )


# Upper-case ASCII to lower case and CR to LF, octet for octet: in a header so
# mapped, a kept field starts after each LF that is followed by a kept name.
_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\r", b"abcdefghijklmnopqrstuvwxyz\n")


@functools.lru_cache(maxsize=16)
def _kept_names(keep: frozenset[str]) -> re.Pattern[bytes] | None:
    """A kept field whole, in LF then a header mapped by _FOLD: a line end, a
    field name in ``keep``, and the field's body (group 2) with its
    continuation lines, but not its last line end; group 1 is the name.

    Searching for a literal LF is much faster than for the class [\r\n],
    hence the mapping (which also makes the match case-insensitive). In the
    fields of a header (no empty line among them), a line end mapped is one
    LF (LF, or a bare CR) or two (CRLF): so a continuation line is an LF,
    maybe another, and a blank. The body is _FIELD's, found in the same
    search rather than matched again in the header itself.
    """
    names = sorted(_keep_octets(keep))
    if not names:
        return None
    alternatives = b"|".join(re.escape(name) for name in names)
    return re.compile(rb"\n(" + alternatives + rb")[ \t]*+:([^\n]*+(?:\n\n?+[ \t][^\n]*+)*+)")


def scan_header(
    data: bytes,
    start: int = 0,
    end: int | None = None,
    *,
    keep: frozenset[str] | None = None,
    limit: int | None = None,
) -> HeaderBlock:
    """Scan the header block of ``data[start:end]`` without copying the body.

    Lines may end in CRLF, LF or a bare CR. The header ends at the first empty
    line, or at the first line that is neither a field nor a continuation
    (then there is no separator). With ``keep`` (lower-case names), only those
    fields are returned, which saves building values nobody reads. With
    ``limit``, scanning stops once that many octets of header have been read
    (see ``HeaderBlock.truncated``): at the first line end at or past
    ``start + limit``, even inside a field.
    """
    stop = len(data) if end is None else end
    give_up = stop if limit is None else min(stop, start + limit)
    if keep is not None:
        # Most fields are not kept (Received chains): find where the fields
        # end with one match, then the kept ones with one search, rather
        # than a Python step a field. A limit inside the fields takes the
        # field by field path below, which knows where to stop.
        fields_end = _fields_end(data, start, stop)
        if limit is None or fields_end < give_up:
            return _header_end(data, _kept_fields(data, start, fields_end, stop, keep),
                               fields_end, stop)
    wanted = None if keep is None else _keep_octets(keep)
    fields: list[HeaderField] = []
    pos = start
    while pos < stop:
        match = _FIELD.match(data, pos, stop)
        if match is None:
            break  # the empty line, a line that is not a field, or a continuation first
        raw_name = match.group(1)
        field_end = match.end()
        truncated = False
        if field_end >= give_up:
            # The limit falls in this field: the scan stops at the first line
            # that starts at or past it, unless that is the end of the data.
            line = _line_past(data, pos, field_end, give_up)
            truncated = line < stop
            if truncated:
                field_end = line
        if wanted is None or raw_name.lower() in wanted:
            fields.append(_header_field(data, match, field_end))
        if truncated:
            return HeaderBlock(tuple(fields), field_end, field_end, False, truncated=True)
        pos = field_end
    return _header_end(data, fields, pos, stop)


def _fields_end(data: bytes, start: int, stop: int) -> int:
    """Where the fields that start at ``start`` end (the line after them starts)."""
    if FIELD_NAME.match(data, start, stop) is None:
        return start  # not even one (an empty line, or a continuation first)
    after_lf = _NOT_FIELD_AFTER_LF.search(data, start, stop)
    # Only a bare CR before that LF matters (the LF stays visible to the
    # lookahead): a CRLF text would otherwise be searched to its end.
    after_cr = _NOT_FIELD_AFTER_CR.search(data, start, after_lf.end() if after_lf else stop)
    if after_cr is not None:
        return after_cr.start() + 1
    return stop if after_lf is None else after_lf.start() + 1


# The tuple constructor itself: a named tuple's __new__ is a Python function
# around it, a third of the cost of a field.
_new_tuple = tuple.__new__


def _header_field(data: bytes, match: re.Match[bytes], field_end: int) -> HeaderField:
    value = data[match.start(2) : field_end].translate(None, _LINE_ENDS).strip(b" \t")
    return _new_tuple(HeaderField,
                      (match.group(1).decode("ascii"), value, match.start(), field_end))


def _kept_fields(
    data: bytes, start: int, fields_end: int, stop: int, keep: frozenset[str]
) -> list[HeaderField]:
    """The fields named in ``keep`` among those in ``data[start:fields_end]``."""
    fields: list[HeaderField] = []
    if fields_end == start:
        return fields
    names = _kept_names(keep)
    if names is None:
        return fields
    # Every line of data[start:fields_end] starts a field or with a blank,
    # so each line end followed by a kept name and a colon starts a kept
    # field; the LF put first makes the first field one of them.
    base = start - 1  # where the mapped copy's offsets count from, in data
    for hit in names.finditer((b"\n" + data[start:fields_end]).translate(_FOLD)):
        name_start, name_end = hit.span(1)
        value_start, value_end = hit.span(2)
        value_end += base
        # The field's end is past its last line end, as _FIELD matches it.
        if data.startswith(b"\r\n", value_end, stop):
            field_end = value_end + 2
        elif value_end < stop and data[value_end] in _LINE_ENDS:
            field_end = value_end + 1
        else:
            field_end = value_end
        fields.append(_new_tuple(HeaderField, (
            data[base + name_start : base + name_end].decode("ascii"),
            data[base + value_start : value_end].translate(None, _LINE_ENDS).strip(b" \t"),
            base + name_start,
            field_end,
        )))
    return fields


def _header_end(data: bytes, fields: list[HeaderField], pos: int, stop: int) -> HeaderBlock:
    """The header block whose fields end at ``pos``: at the empty line, or without one."""
    if pos < stop and data[pos] in (0x0D, 0x0A):
        after = pos + 2 if data.startswith(b"\r\n", pos, stop) else pos + 1
        return HeaderBlock(tuple(fields), pos, after, True)
    return HeaderBlock(tuple(fields), pos, pos, False)


def _line_past(data: bytes, pos: int, field_end: int, give_up: int) -> int:
    """Where the first line after ``pos`` that starts at or past ``give_up`` starts
    (``field_end`` at the latest: the field at ``pos`` ends there)."""
    while pos < field_end:
        brk = _LINE_BREAK.search(data, pos, field_end)
        if brk is None:
            return field_end
        pos = brk.end()
        if data[brk.start()] == 0x0D and pos < field_end and data[pos] == 0x0A:
            pos += 1
        if pos >= give_up:
            return pos
    return field_end


def first_values(fields: tuple[HeaderField, ...]) -> dict[str, bytes]:
    """The value of the first field of each name, by lower-case name.

    Built once per header rather than searching the fields for each name.
    """
    values: dict[str, bytes] = {}
    for item in reversed(fields):  # so that the first of a name is stored last
        values[item.name.lower()] = item.value
    return values
