"""Envelope extraction and the envelope block codec.

The paper (section 5.2 step 4) has the origin send, instead of the message, an
"email envelope" holding "sender, intended recipient(s), subject, attachment
status and a couple of headlines". :func:`extract_envelope` computes it from a
stored message and :func:`encode_envelope_block` /
:func:`decode_envelope_block` carry it in the DATA block that follows
``ENVELOPE`` (wire contract section 2.3).

Extraction runs on every submitted message, including large ones, so it does
not use the :mod:`email` parser (which decodes and copies every part): it scans
the header block with :func:`scan_header`, walks the MIME tree by searching
for boundaries with ``bytes.find``, and decodes only the first few kilobytes
of the first text part. Attachment bodies are never decoded. Work is bounded
by :data:`MAX_DEPTH` and :data:`MAX_PARTS`. A message held as a
:class:`~smdp.mail.body.Body` (a large one is in a temporary file) is not read
whole either: its chunks are filtered down to a small skeleton of the message
(headers, possible delimiter lines, the start of each text part) that gives
the same envelope (see _Skeleton).

The header scanner is shared with :mod:`smdp.core.submission`, so that the
anti-spoofing check (assumption 3) and the envelope see the same header.

Everything produced here is shown to a recipient who has not yet agreed to
receive the message and is echoed on both ports, so every text value is
sanitised: control characters, bidirectional overrides and lone surrogates
go, whitespace is collapsed, and each field is capped so that its line fits
the 1000-octet line limit of wire contract section 1.
"""

from __future__ import annotations

import binascii
import functools
import html
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from smdp.mail.body import Body

__all__ = [
    "EMPTY_SUMMARY",
    "MAX_ATTACHMENT_NAMES",
    "MAX_BLOCK_OCTETS",
    "MAX_DEPTH",
    "MAX_HEADER_OCTETS",
    "MAX_HEADLINES",
    "MAX_HEADLINE_CHARS",
    "MAX_PARTS",
    "MAX_SUBJECT_CHARS",
    "EnvelopeError",
    "EnvelopeFields",
    "EnvelopeSummary",
    "HeaderBlock",
    "HeaderField",
    "decode_envelope_block",
    "decode_header_text",
    "encode_envelope_block",
    "extract_envelope",
    "scan_header",
]

_log = logging.getLogger(__name__)

# Caps (wire contract 2.3). Header-derived texts get RFC 5322's 998 characters;
# a headline is a preview, 200 characters.
MAX_SUBJECT_CHARS = 998
MAX_ADDRESS_TEXT_CHARS = 998
MAX_FROM_NAME_CHARS = 998
MAX_DATE_CHARS = 200
MAX_HEADLINE_CHARS = 200
MAX_HEADLINES = 10
MAX_ATTACHMENT_NAMES = 10
MAX_FILENAME_CHARS = 255
MAX_EXPIRES_CHARS = 64
MAX_BLOCK_OCTETS = 16 * 1024
# A data line is at most 1000 octets with its CRLF (wire contract section 1,
# RFC 5321 4.5.3.1.6). The contract counts Subject in characters, but 998
# non-ASCII characters are up to 3992 octets, so every field line is also cut
# to fit: otherwise a destination would refuse the whole envelope.
MAX_LINE_OCTETS = 998
# The largest header block read; submission refuses larger ones, so every
# stored message is read in full.
MAX_HEADER_OCTETS = 1024 * 1024
# Bounds on the MIME walk: deeper or further parts are not inspected.
MAX_DEPTH = 20
MAX_PARTS = 200
# Header values longer than this are cut before decoding; far more than any
# capped field can use, even for base64 encoded words of 4-octet characters.
_MAX_RAW_HEADER = 32 * 1024
_MAX_RAW_ADDRESS = 4 * 1024
# Body text is decoded in growing prefixes until enough headlines are found.
_TEXT_STEPS = (8 * 1024, 64 * 1024, 256 * 1024)
_HTML_STEPS = (16 * 1024, 128 * 1024)


class EnvelopeError(ValueError):
    """An envelope block cannot be accepted at all (it is over 16 KiB)."""


@dataclass(frozen=True, slots=True)
class EnvelopeSummary:
    """What the recipient sees before deciding (section 5.2 step 4)."""

    subject: str
    from_name: str
    to: str
    cc: str
    date: str
    attachments: int
    attachment_names: tuple[str, ...]
    headlines: tuple[str, ...]


EMPTY_SUMMARY = EnvelopeSummary("", "", "", "", "", 0, (), ())


@dataclass(frozen=True, slots=True)
class EnvelopeFields:
    """A decoded envelope block: the summary and the origin's expiry time."""

    summary: EnvelopeSummary
    expires: str


# ---------------------------------------------------------------------------
# Header scanning (shared with submission.py)


@dataclass(frozen=True, slots=True)
class HeaderField:
    """One header field.

    ``value`` is the unfolded field body (line ends inside it removed, RFC 5322
    2.2.3) without surrounding blanks; ``start``/``end`` delimit the raw field,
    its continuation lines and its final line end, in the scanned buffer.
    """

    name: str
    value: bytes
    start: int
    end: int

    @property
    def key(self) -> str:
        """The lower-cased name, for comparisons."""
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """The result of :func:`scan_header`.

    ``end`` is where the last field ends; ``body_start`` is where the body
    starts. With ``separator`` they are apart by the blank line; without it the
    header stopped at a line that is not a header field (or at the end of the
    data) and ``end == body_start``. ``truncated`` says the scan stopped at
    its ``limit`` inside the header: the fields are only the first ones and
    where the body starts is unknown.
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
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]++)[ \t]*+:")
# A whole field in one match: the name line as above, then its continuation
# lines (a line starting with a blank), each with its line end (CRLF, LF or a
# bare CR; none at the end of the data). Group 2 is the raw body: its octets
# with the line ends taken out are the unfolded value. Possessive throughout,
# so matching is linear. One match a field instead of Python steps a line
# makes scan_header several times faster on real headers (Received chains).
_FIELD_BODY = rb"[^\r\n]*+(?:\r\n|\r|\n)?+(?:[ \t][^\r\n]*+(?:\r\n|\r|\n)?+)*+"
_FIELD = re.compile(_FIELD_NAME.pattern + b"(" + _FIELD_BODY + b")")
# A line end after which comes a line that is neither a field line nor a
# continuation (an empty line included, and the end of the data): after a
# field, the header's fields end there. A CR is a line end unless an LF
# follows. Two patterns, since a literal first octet is searched for much
# faster than the class [\r\n].
_NOT_FIELD_AFTER_LF = re.compile(rb"\n(?![ \t]|[\x21-\x39\x3b-\x7e]++[ \t]*+:)")
_NOT_FIELD_AFTER_CR = re.compile(rb"\r(?![\n \t]|[\x21-\x39\x3b-\x7e]++[ \t]*+:)")
_LINE_ENDS = b"\r\n"


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
    """A line end then a field name in ``keep``, in a header mapped by _FOLD.

    Searching for a literal LF is much faster than for the class [\r\n],
    hence the mapping (which also makes the match case-insensitive).
    """
    names = sorted(_keep_octets(keep))
    if not names:
        return None
    alternatives = b"|".join(re.escape(name) for name in names)
    return re.compile(rb"\n(?:" + alternatives + rb")[ \t]*+:")


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
    if _FIELD_NAME.match(data, start, stop) is None:
        return start  # not even one (an empty line, or a continuation first)
    after_lf = _NOT_FIELD_AFTER_LF.search(data, start, stop)
    # Only a bare CR before that LF matters (the LF stays visible to the
    # lookahead): a CRLF text would otherwise be searched to its end.
    after_cr = _NOT_FIELD_AFTER_CR.search(data, start, after_lf.end() if after_lf else stop)
    if after_cr is not None:
        return after_cr.start() + 1
    return stop if after_lf is None else after_lf.start() + 1


def _header_field(data: bytes, match: re.Match[bytes], field_end: int) -> HeaderField:
    value = data[match.start(2) : field_end].translate(None, _LINE_ENDS).strip(b" \t")
    return HeaderField(match.group(1).decode("ascii"), value, match.start(), field_end)


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
    first = _FIELD.match(data, start, stop)
    assert first is not None  # data[start:fields_end] is fields
    if first.group(1).lower() in _keep_octets(keep):
        fields.append(_header_field(data, first, first.end()))
    # Every line of data[start:fields_end] starts a field or with a blank,
    # so each line end followed by a kept name and a colon starts a kept field.
    for hit in names.finditer(data[start:fields_end].translate(_FOLD)):
        match = _FIELD.match(data, start + hit.start() + 1, stop)
        assert match is not None
        fields.append(_header_field(data, match, match.end()))
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


# ---------------------------------------------------------------------------
# Text helpers

# C0 and C1 controls, DEL, bidirectional marks, overrides and isolates (they
# let "invoice\u202efdp.exe" display as "invoiceexe.pdf"), line and paragraph
# separators, the BOM and lone surrogates (they cannot be encoded as UTF-8).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff"
    "\ud800-\udfff]"
)


_CLEAN_WINDOW = 8


def _clean(text: str, max_chars: int, max_octets: int) -> str:
    """Sanitise one display value and cap it in characters and UTF-8 octets."""
    if not text:
        return ""
    if len(text) > _CLEAN_WINDOW * max_chars:
        # Bounded work on a huge line; only a line made mostly of blanks
        # would lose visible text to this cut.
        text = text[: _CLEAN_WINDOW * max_chars]
    if not text.isprintable():
        # Every character _UNSAFE matches is unprintable (a unit test checks
        # them all), so most values skip the substitution.
        text = _UNSAFE.sub(" ", text)
    text = " ".join(text.split())
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
    if len(text) > max_octets // 4:
        raw = text.encode("utf-8")
        if len(raw) > max_octets:
            text = raw[:max_octets].decode("utf-8", "ignore").rstrip()
    return text


# A well-formed multi-octet UTF-8 sequence; Latin-1 text almost never has one.
# That is [\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3},
# written to start with one class, which the regex engine scans for five times
# faster than it tries an alternation at every octet.
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xf4](?:(?<=[\xc2-\xdf])[\x80-\xbf]"
    rb"|(?<=[\xe0-\xef])[\x80-\xbf]{2}|(?<=[\xf0-\xf4])[\x80-\xbf]{3})"
)
# Each octet as "L" (may lead a sequence), "c" (a continuation octet) or ".":
# every sequence starts at an "Lc", which bytes.find finds faster still.
_UTF8_CLASSES = bytes(
    0x4C if 0xC2 <= c <= 0xF4 else 0x63 if 0x80 <= c <= 0xBF else 0x2E for c in range(256)
)


def _bytes_to_text(raw: bytes) -> str:
    """Undeclared 8-bit text: UTF-8 when it is valid, else Windows-1252, line by line.

    Line by line because mislabelled mail often mixes both (a UTF-8 body with
    a Latin-1 signature pasted in): a line with a UTF-8 sequence is read as
    UTF-8 (a stray bad octet replaced), any other as Windows-1252. Windows-1252
    is one octet a character, so the lines between two UTF-8 lines are decoded
    in one call, not one call a line (that made an 8-bit body of a few hundred
    lines cost a millisecond). No sequence spans a line end (LF is no
    continuation octet), so a search of the whole text finds the UTF-8 lines.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    pieces: list[str] = []
    classes = raw.translate(_UTF8_CLASSES)
    pos = 0  # where the text not decoded yet starts: 0 or an LF
    while True:
        candidate = classes.find(b"Lc", pos)
        sequence = None if candidate < 0 else _UTF8_SEQUENCE.search(raw, candidate)
        if sequence is None:
            pieces.append(raw[pos:].decode("cp1252", "replace"))
            return "".join(pieces)
        line_start = raw.rfind(b"\n", pos, sequence.start()) + 1
        line_end = raw.find(b"\n", sequence.end())
        if line_end < 0:
            line_end = len(raw)
        pieces.append(raw[pos:line_start].decode("cp1252", "replace"))
        pieces.append(raw[line_start:line_end].decode("utf-8", "replace"))
        pos = line_end


# Labels seen in mail that Python's codec registry does not know.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "euc-kr",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc-jp",
    "x-gbk": "gbk",
    "unicode-1-1-utf-7": "utf-7",
    "utf8mb4": "utf-8",
}
# Text codecs whose decoders are quadratic in CPython (punycode, idna) or are
# not charsets at all; falling back to UTF-8 is safer than honouring them.
_CHARSET_DENY = frozenset(
    {"punycode", "idna", "unicode_escape", "unicode-escape", "raw_unicode_escape",
     "raw-unicode-escape", "undefined", "mbcs", "oem"}
)
_ASCII_LABELS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "us", "iso646-us", ""})


def _decode_charset(raw: bytes, charset: str) -> str:
    label = charset.strip().strip('"').lower()
    label = _CHARSET_ALIASES.get(label, label)
    if label in _ASCII_LABELS or label in _CHARSET_DENY or len(label) > 40:
        return _bytes_to_text(raw)
    try:
        return raw.decode(label, "replace")
    except Exception:  # unknown or non-text codec, or a broken decoder
        return _bytes_to_text(raw)


_ENCODED_WORD = re.compile(rb"=\?([^?\s]{1,75})\?([bBqQ])\?([^?\s]*)\?=")
_BLANKS = b" \t\r\n"


def _decode_word_payload(encoding: bytes, payload: bytes) -> bytes:
    try:
        if encoding in b"bB":
            payload = payload.rstrip(b"=")
            payload += b"=" * (-len(payload) % 4)
            return binascii.a2b_base64(payload)
        return binascii.a2b_qp(payload, header=True)
    except (binascii.Error, ValueError):
        return payload


def decode_header_text(raw: bytes) -> str:
    """Decode a raw header value to text: RFC 2047 words in any charset, raw 8-bit as UTF-8.

    Adjacent encoded words in one charset are joined before decoding, since
    mailers split multi-octet characters across them. Never raises.
    """
    if b"=?" not in raw:
        return _bytes_to_text(raw)
    out: list[str] = []
    pending = b""
    pending_charset: str | None = None
    pos = 0
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        if pending_charset is None or between.strip(_BLANKS):
            if pending_charset is not None:
                out.append(_decode_charset(pending, pending_charset))
                pending, pending_charset = b"", None
            out.append(_bytes_to_text(between))
        charset = match.group(1).decode("ascii", "replace").split("*", 1)[0]
        payload = _decode_word_payload(match.group(2), match.group(3))
        if pending_charset is not None and charset.lower() != pending_charset.lower():
            out.append(_decode_charset(pending, pending_charset))
            pending = b""
        pending_charset = charset
        pending += payload
        pos = match.end()
    if pending_charset is not None:
        out.append(_decode_charset(pending, pending_charset))
    out.append(_bytes_to_text(raw[pos:]))
    return "".join(out)


def _line_cap(name: str) -> int:
    # Octets left for the value on a "Name: value" line.
    return MAX_LINE_OCTETS - len(name) - 2


_SUBJECT_OCTETS = _line_cap("Subject")
_FROM_NAME_OCTETS = _line_cap("From-Name")
_TO_OCTETS = _line_cap("To")
_CC_OCTETS = _line_cap("Cc")
_DATE_OCTETS = _line_cap("Date")
_HEADLINE_OCTETS = _line_cap("Headline")
_EXPIRES_OCTETS = _line_cap("Expires")
_ATTACHMENTS_OCTETS = _line_cap("Attachments")


def _clean_name(name: str) -> str:
    # "," and ";" delimit the Attachments field (contract 2.3), which has no
    # quoting, so they cannot survive inside a name.
    name = name.replace(",", "_").replace(";", "_")
    return _clean(name, MAX_FILENAME_CHARS, 4 * MAX_FILENAME_CHARS)


def _fit_names(count: int, names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Clean names and keep the first ones that fit on the Attachments line."""
    kept: list[str] = []
    used = len(str(count)) + 2
    for name in names:
        if len(kept) >= MAX_ATTACHMENT_NAMES:
            break
        cleaned = _clean_name(name)
        if not cleaned:
            continue
        size = len(cleaned.encode("utf-8")) + 2
        if used + size > _ATTACHMENTS_OCTETS:
            break
        kept.append(cleaned)
        used += size
    return tuple(kept)


# ---------------------------------------------------------------------------
# MIME parameters (RFC 2045 5.1, RFC 2231)

# Possessive quantifiers and a separate skip keep parsing linear: spam has
# "Content-Type: text/html ; ; ; ..." thousands long, which made a
# backtracking pattern quadratic (0.6 s for one 24 KB message).
_PARAM_SKIP = re.compile(r"[ \t;]*+")
_PARAM_NAME = re.compile(r"([^\s=;\"]++)[ \t]*+=[ \t]*+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
_MAX_PARAMS = 64


def _parse_params(value: bytes) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; a=b; c="d"`` into the lower-cased first token and parameters.

    The bytes are read as Latin-1, a lossless mapping, so boundaries round-trip
    exactly and 8-bit names can be decoded later.
    """
    text = value[:_MAX_RAW_HEADER].decode("latin-1")
    semi = text.find(";")
    main = (text if semi < 0 else text[:semi]).strip().lower()
    params: dict[str, str] = {}
    if semi < 0:
        return main, params
    pos, size = semi + 1, len(text)
    while len(params) < _MAX_PARAMS:
        skipped = _PARAM_SKIP.match(text, pos)
        if skipped is not None:
            pos = skipped.end()
        if pos >= size:
            break
        match = _PARAM_NAME.match(text, pos)
        if match is None:
            nxt = text.find(";", pos)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        key = match.group(1).lower()
        pos = match.end()
        if pos < size and text[pos] == '"':
            quoted = _QUOTED.match(text, pos)
            assert quoted is not None  # the pattern matches any text starting with '"'
            param = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
            pos = quoted.end()
            nxt = text.find(";", pos)
            pos = size if nxt < 0 else nxt + 1
        else:
            nxt = text.find(";", pos)
            param = (text[pos:] if nxt < 0 else text[pos:nxt]).strip()
            pos = size if nxt < 0 else nxt + 1
        params.setdefault(key, param)
    return main, params


def _decode_extended(value: str) -> str:
    """RFC 2231 ``charset'lang'percent-encoded`` value."""
    pieces = value.split("'", 2)
    if len(pieces) == 3:
        return _decode_charset(unquote_to_bytes(pieces[2]), pieces[0])
    return _bytes_to_text(unquote_to_bytes(value))


def _param_text(params: dict[str, str], key: str) -> str | None:
    """A parameter as text: RFC 2231 extended and continued forms, then the plain one."""
    extended = params.get(key + "*")
    if extended is not None:
        return _decode_extended(extended)
    if key + "*0" in params or key + "*0*" in params:
        charset: str | None = None
        chunks: list[bytes] = []
        for index in range(_MAX_PARAMS):
            encoded = params.get(f"{key}*{index}*")
            if encoded is not None:
                if index == 0:
                    pieces = encoded.split("'", 2)
                    if len(pieces) == 3:
                        charset, encoded = pieces[0], pieces[2]
                chunks.append(unquote_to_bytes(encoded))
                continue
            plain = params.get(f"{key}*{index}")
            if plain is None:
                break
            chunks.append(plain.encode("latin-1"))
        joined = b"".join(chunks)
        return _bytes_to_text(joined) if charset is None else _decode_charset(joined, charset)
    plain = params.get(key)
    if plain is None:
        return None
    # Many mailers put RFC 2047 words inside quoted parameters; decode them too.
    return decode_header_text(plain.encode("latin-1"))


# ---------------------------------------------------------------------------
# MIME walk

_TOP_KEEP = frozenset(
    {"subject", "from", "to", "cc", "date", "content-type",
     "content-transfer-encoding", "content-disposition"}
)
_PART_KEEP = frozenset({"content-type", "content-transfer-encoding", "content-disposition"})
# Non-text parts under these are the body itself (an alternative rendering, or
# an image the HTML shows inline), not attachments, unless they are named.
_INLINE_BODY_PARENTS = frozenset({"alternative", "related"})


@dataclass(slots=True)
class _TextPart:
    start: int
    end: int
    charset: str
    encoding: str


@dataclass(slots=True)
class _Walk:
    data: bytes
    parts: int = 0
    attachments: int = 0
    names: list[str] = field(default_factory=list)
    plain: _TextPart | None = None
    html: _TextPart | None = None


def _first_values(fields: tuple[HeaderField, ...]) -> dict[str, bytes]:
    """The value of the first field of each name, by lower-case name.

    Built once per header rather than searching the fields for each name.
    """
    values: dict[str, bytes] = {}
    for item in reversed(fields):  # so that the first of a name is stored last
        values[item.name.lower()] = item.value
    return values


def _content_type(values: dict[str, bytes], parent: str) -> tuple[str, str, dict[str, str]]:
    """The main type, subtype and parameters of an entity, with RFC 2045's defaults."""
    raw_type = values.get("content-type")
    default = "message/rfc822" if parent == "digest" else "text/plain"
    mime, params = _parse_params(raw_type) if raw_type is not None else (default, {})
    maintype, slash, subtype = mime.partition("/")
    if not slash or not maintype or not subtype:
        # RFC 2045 5.2: an invalid Content-Type means text/plain.
        maintype, subtype, params = "text", "plain", {}
    return maintype, subtype, params


def _disposition(values: dict[str, bytes], params: dict[str, str]) -> tuple[str, str | None]:
    """The disposition type and the file name (``filename``, else the type's ``name``)."""
    raw_disposition = values.get("content-disposition")
    disposition, disposition_params = (
        _parse_params(raw_disposition) if raw_disposition is not None else ("", {})
    )
    filename = _param_text(disposition_params, "filename")
    if filename is None:
        filename = _param_text(params, "name")
    return disposition, filename


def _entity(
    walk: _Walk,
    values: dict[str, bytes],
    body_start: int,
    end: int,
    depth: int,
    parent: str,
) -> None:
    """Classify one MIME entity whose body is ``data[body_start:end]``; ``values`` as
    from _first_values."""
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
        if filename is not None and len(walk.names) < MAX_ATTACHMENT_NAMES:
            cleaned = _clean_name(filename)
            if cleaned:
                walk.names.append(cleaned)
        return
    if maintype != "text" or subtype not in ("plain", "html"):
        return
    raw_encoding = values.get("content-transfer-encoding")
    encoding = raw_encoding.decode("latin-1").strip().lower() if raw_encoding else ""
    part = _TextPart(body_start, end, params.get("charset", ""), encoding)
    if subtype == "plain":
        if walk.plain is None:
            walk.plain = part
    elif walk.html is None:
        walk.html = part


_GUESS_WINDOW = 4096
# "--" then a boundary that starts with a visible character, so that a "-- "
# signature separator is never taken for one.
_GUESS_LINE = re.compile(rb"(?:\A|\n)--([\x21-\x7e][^\r\n]{0,199}?)[ \t]*\r?\n")


def _guess_boundary(data: bytes, start: int, end: int) -> bytes | None:
    """The boundary of the first delimiter-looking line near the start of a body."""
    match = _GUESS_LINE.search(data[start : min(end, start + _GUESS_WINDOW)])
    if match is None:
        return None
    boundary = match.group(1)
    return boundary[:-2] if boundary.endswith(b"--") else boundary


def _multipart(
    walk: _Walk, boundary: bytes, start: int, end: int, depth: int, subtype: str
) -> bool:
    """Walk the parts of a multipart body; False when no delimiter line is found."""
    data = walk.data
    delimiter = b"--" + boundary
    size = len(delimiter)
    pos = start
    part_start = -1
    found = False
    while True:
        index = data.find(delimiter, pos, end)
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


def _part(walk: _Walk, start: int, end: int, depth: int, parent: str) -> None:
    if walk.parts >= MAX_PARTS:
        return
    walk.parts += 1
    block = scan_header(walk.data, start, end, keep=_PART_KEEP)
    _entity(walk, _first_values(block.fields), block.body_start, end, depth, parent)


# ---------------------------------------------------------------------------
# Body text and headlines

# Everything but the base64 alphabet, padding included: line breaks and junk
# go, and the padding is recomputed so a prefix cut anywhere still decodes.
_BASE64_JUNK = bytes(
    c for c in range(256)
    if not (0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or 0x30 <= c <= 0x39 or c in b"+/")
)


def _decode_body(raw: bytes, encoding: str) -> bytes:
    try:
        if encoding == "base64":
            clean = raw.translate(None, _BASE64_JUNK)
            rest = len(clean) % 4
            if rest == 1:
                clean = clean[:-1]
            elif rest:
                clean += b"=" * (4 - rest)
            return binascii.a2b_base64(clean)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(raw)
    except (binascii.Error, ValueError):
        return b""
    return raw


# Elements whose content is never shown: drop them with their content. An
# element that is not closed runs to the end, as in a browser.
_HIDDEN_OPEN = re.compile(r"<!--|<(script|style|title)\b", re.IGNORECASE)
_HIDDEN_CLOSE = {
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
    "title": re.compile(r"</title\s*>", re.IGNORECASE),
}
_COMMENT_CLOSE = re.compile(r"-->")
# "[^<>]*" rather than "[^>]*" keeps the scan linear on text full of "<".
# A tag starts with a letter (after "/" or "!"), as in HTML's tokenizer, so
# "a < b > c" stays text.
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|tr|li|h[1-6]|table|blockquote|pre|hr|ul|ol|dt|dd)\b[^<>]*>",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[/!?]?[A-Za-z][^<>]*>")


def _strip_hidden(text: str) -> str:
    """``text`` without the elements that are never shown (see _HIDDEN_OPEN)."""
    kept: list[str] = []
    pos = 0
    while True:
        match = _HIDDEN_OPEN.search(text, pos)
        if match is None:
            kept.append(text[pos:])
            break
        kept.append(text[pos : match.start()])
        tag = match.group(1)
        closer = _COMMENT_CLOSE if tag is None else _HIDDEN_CLOSE[tag.lower()]
        close = closer.search(text, match.end())
        if close is None:
            break
        pos = close.end()
    return "".join(kept)


def _collapse_blanks(text: str) -> str:
    """Each run of blanks made one space: ``re.sub(r"\\s+", " ", text)``, three times faster.

    str.split() splits at the same characters as the pattern's \\s (both are
    str.isspace), but drops the runs at either end, which are put back.
    """
    joined = " ".join(text.split())
    if not joined:
        return " " if text else ""
    if text[0].isspace():
        joined = " " + joined
    if text[-1].isspace():
        joined += " "
    return joined


def _strip_markup(visible: str) -> str:
    """Visible HTML to text: blanks collapsed, block tags made line breaks, tags dropped."""
    text = _collapse_blanks(visible)
    text = _BLOCK_TAG.sub("\n", text)
    return _ANY_TAG.sub("", text)


# Markup is stripped a piece of about this many characters at a time, until
# enough lines are found: they usually come well before the end of the 16 KiB
# decoded, and stripping costs about 10 ns a character.
_HTML_PIECE = 2048
_HTML_CUT_TRIES = 16


def _html_cut(visible: str, at: int) -> int:
    """A place at or after ``at`` where ``visible`` can be cut for _strip_markup; or -1.

    At a "<" that starts no block tag, _strip_markup(visible) is exactly
    _strip_markup(visible[:cut]) + _strip_markup(visible[cut:]): no blank run
    crosses the cut (a "<" is not blank), a tag match never contains a "<" past
    its first character, and the second half starts with a "<" that stays
    (not a line break an unclosed tag before the cut could run on through).
    """
    cut = visible.find("<", at)
    for _ in range(_HTML_CUT_TRIES):
        if cut < 0 or _BLOCK_TAG.match(visible, cut) is None:
            return cut
        cut = visible.find("<", cut + 1)
    return -1


def _take_lines(pieces: list[str], wanted: int, is_html: bool, lines: list[str]) -> None:
    """Add the non-empty ``pieces``, cleaned, to ``lines`` until it has ``wanted``."""
    for piece in pieces:
        if len(lines) >= wanted:
            return
        if is_html:
            piece = html.unescape(piece)
        line = _clean(piece, MAX_HEADLINE_CHARS, _HEADLINE_OCTETS)
        if line:
            lines.append(line)


def _html_lines(visible: str, wanted: int, complete: bool) -> list[str]:
    """The first ``wanted`` lines of _strip_markup(visible).splitlines(), the last one
    dropped unless ``complete``, stripping markup a piece at a time (see _html_cut)."""
    lines: list[str] = []
    carry = ""  # the stripped text after the lines taken so far
    pos = 0
    while True:
        cut = _html_cut(visible, pos + _HTML_PIECE)
        if cut < 0:
            break
        # Line breaks in stripped text are all "\n" (other breaks are blanks,
        # collapsed), so split("\n") ends lines where splitlines() would.
        pieces = (carry + _strip_markup(visible[pos:cut])).split("\n")
        pos = cut
        carry = pieces.pop()  # may go on in the next piece
        if not carry and pieces:
            # Nothing follows this line yet: it may be the last one, which is dropped.
            carry = pieces.pop() + "\n"
        _take_lines(pieces, wanted, True, lines)
        if len(lines) >= wanted:
            return lines
    pieces = (carry + _strip_markup(visible[pos:])).splitlines()
    if not complete and pieces:
        pieces.pop()  # may be cut in the middle
    _take_lines(pieces, wanted, True, lines)
    return lines


def _body_lines(data: bytes, part: _TextPart, wanted: int, is_html: bool) -> list[str]:
    """The first ``wanted`` non-empty lines, decoding as little of the part as possible."""
    lines: list[str] = []
    for step in _HTML_STEPS if is_html else _TEXT_STEPS:
        stop = min(part.end, part.start + step)
        complete = stop == part.end
        raw = data[part.start : stop]
        if not complete:
            cut = raw.rfind(b"\n")
            if cut > 0:
                raw = raw[: cut + 1]
        text = _decode_charset(_decode_body(raw, part.encoding), part.charset)
        if is_html:
            lines = _html_lines(_strip_hidden(text), wanted, complete)
        else:
            pieces = text.splitlines()
            if not complete and pieces:
                pieces.pop()  # may be cut in the middle
            lines = []
            _take_lines(pieces, wanted, False, lines)
        if len(lines) >= wanted or complete:
            break
    return lines


def _headlines(walk: _Walk, wanted: int) -> tuple[str, ...]:
    if wanted <= 0:
        return ()
    lines: list[str] = []
    if walk.plain is not None:
        lines = _body_lines(walk.data, walk.plain, wanted, False)
    if not lines and walk.html is not None:
        lines = _body_lines(walk.data, walk.html, wanted, True)
    return tuple(lines)


# ---------------------------------------------------------------------------
# Extraction


def _joined(fields: tuple[HeaderField, ...], key: str) -> str:
    # Repeated To or Cc fields are read as one list, as most readers show them.
    texts = [decode_header_text(f.value[:_MAX_RAW_HEADER]) for f in fields
             if f.name.lower() == key]
    return ", ".join(t for t in texts if t.strip())


# The phrase before the first "<" that is not inside a quoted string.
_NAME_BEFORE_ANGLE = re.compile(r'((?:"(?:[^"\\]|\\.)*+"|[^"<])*+)<', re.DOTALL)


def _display_name(raw: bytes) -> str:
    """The display name of the first mailbox of a From value, decoded.

    Not :func:`email.utils.parseaddr`: it recurses once per nested comment
    and raises RecursionError on a From of a few thousand "(". The name is
    cut out of the raw value and decoded afterwards, since decoding first
    could turn an encoded "<" into syntax.
    """
    text = raw[:_MAX_RAW_ADDRESS].decode("latin-1")
    match = _NAME_BEFORE_ANGLE.match(text)
    if match is not None:
        name = match.group(1).strip()
    else:
        # "addr (Name)", the old comment form.
        opening, closing = text.find("("), text.rfind(")")
        name = text[opening + 1 : closing].strip() if 0 <= opening < closing else ""
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = _QUOTED_PAIR.sub(r"\1", name[1:-1])
    return decode_header_text(name.encode("latin-1"))


def _extract(message: bytes, headlines: int) -> EnvelopeSummary:
    """The extraction proper; may raise only on a bug (the public wrapper logs it)."""
    data = message
    start = 0
    if data.startswith(b"From "):
        # An mbox separator line, left on messages read from mbox files.
        newline = data.find(b"\n")
        start = len(data) if newline < 0 else newline + 1
    block = scan_header(data, start, keep=_TOP_KEEP, limit=MAX_HEADER_OCTETS)
    fields = block.fields
    values = _first_values(fields)
    subject_raw = values.get("subject")
    from_raw = values.get("from")
    date_raw = values.get("date")
    walk = _Walk(data)
    if not block.truncated:
        _entity(walk, values, block.body_start, len(data), 0, "")
    wanted = max(0, min(headlines, MAX_HEADLINES))
    attachment_names = _fit_names(walk.attachments, walk.names)
    return EnvelopeSummary(
        subject=_clean(
            decode_header_text(subject_raw[:_MAX_RAW_HEADER]) if subject_raw else "",
            MAX_SUBJECT_CHARS,
            _SUBJECT_OCTETS,
        ),
        from_name=_clean(
            _display_name(from_raw) if from_raw else "", MAX_FROM_NAME_CHARS, _FROM_NAME_OCTETS
        ),
        to=_clean(_joined(fields, "to"), MAX_ADDRESS_TEXT_CHARS, _TO_OCTETS),
        cc=_clean(_joined(fields, "cc"), MAX_ADDRESS_TEXT_CHARS, _CC_OCTETS),
        date=_clean(
            decode_header_text(date_raw[:_MAX_RAW_HEADER]) if date_raw else "",
            MAX_DATE_CHARS,
            _DATE_OCTETS,
        ),
        attachments=walk.attachments,
        attachment_names=attachment_names,
        headlines=_headlines(walk, wanted),
    )


# ---------------------------------------------------------------------------
# Bodies: extraction from a skeleton of the message
#
# A message that is a :class:`Body` (25 MiB in a temporary file, say) is never
# read whole. Its chunks pass through :class:`_Skeleton`, a filter that keeps
# what :func:`_extract` looks at and drops the rest; :func:`_extract` then runs
# on that skeleton, a few KiB for a message of text and attachments whatever
# its size. Kept:
#
# - the mbox "From " line and the top header block;
# - every "--" line that may be a delimiter, with the line end before it, and
#   the header block after it (up to the blank line or the first line that is
#   not a field, exactly where scan_header ends it), unless the line can only
#   be a closing delimiter (no part follows one). A "--" line may be a
#   delimiter when it is one of a boundary that some multipart header declared
#   before it, or of a boundary _guess_boundary could take (any "--" line in
#   the first _GUESS_WINDOW octets of a multipart body gives one): _extract
#   takes no other. Other "--" lines (signatures, diffs, SQL) are content;
#   outside windows they cost one bytes.find per boundary and chunk;
# - after a header block whose body _extract may read (text/plain or
#   text/html that is not an attachment; multipart, for its preamble; no or an
#   invalid Content-Type), a window: the body's first _TEXT_WINDOW octets,
#   more than _body_lines ever decodes. Other bodies (attachments) are dropped.
#
# Within a window everything is kept, so a text part's prefix is whole and
# contiguous. A window ends early only where its part is certainly over: at a
# delimiter of the boundary that opened the part (the only boundary that the
# opening line delimits), or, for a multipart, when the first possible
# delimiter after its header is one of its own boundary only (_multipart then
# finds a delimiter and never reads the preamble). Between kept pieces only
# whole lines are dropped, except at the end of a window, where the next kept
# octet is the line end before a delimiter. So every delimiter, part header and
# text prefix that _extract reads is in the same place relative to the others
# as in the message, and the envelope is the same.
#
# Bounds: a "--" line or part header line outside a window is cut to _LINE_CAP
# octets plus its line end (a top header line to MAX_HEADER_OCTETS; the top
# header stops past MAX_HEADER_OCTETS, as _extract does). Past _SKELETON_CAP
# octets of skeleton or _MAX_DASH_LINES possible delimiters nothing more is
# read, since nothing more is kept: on hostile input only (a message made of
# "--x" lines, or of dozens of inline text parts of 256 KiB) the attachment
# count and names may then be short of what the bytes give. Past
# _MAX_BOUNDARIES boundaries every "--" line counts as a possible delimiter and
# no window ends early: only more is kept.

# The longest prefix of a text part that _body_lines decodes, with room for
# the line end that may follow a window (the part is then still longer than
# the last step, so it is not taken as complete).
_TEXT_WINDOW = max(_TEXT_STEPS[-1], _HTML_STEPS[-1]) + 64
# Longest "--" line or part header line kept whole outside a window.
_LINE_CAP = 64 * 1024
# Largest skeleton, and most possible delimiters; past either nothing more is read.
_SKELETON_CAP = 4 * 1024 * 1024
_MAX_DASH_LINES = 10_000
# Boundaries searched for, and windows that may end early, at most.
_MAX_BOUNDARIES = 64
_MAX_WINDOWS = 16
# In-memory bodies up to this size are read whole and take the bytes path.
_STREAM_ABOVE = 1024 * 1024
# Octets read at a time: smaller than CHUNK_SIZE, since a chunk and the
# buffer made of it and the octets carried over are what the filter holds.
_READ_CHUNK = 64 * 1024
# "-" octets that start no "--" line after which the rest of a buffer is
# searched for "\n--" and "\r--" (bytes.find, about 1.5 GB/s) rather than for
# "-" (memchr, much faster, but one Python step per hit).
_FAST_MISSES = 32

# Filter states.
_MBOX = 0  # the start: is there an mbox "From " line?
_MBOX_LINE = 1  # in the mbox line (it ends at LF only, as _extract reads it)
_HEADER = 2  # in a header block (top or part)
_DASH = 3  # at a "--" line (after the line end before it, with dash_break)
_REGION = 4  # in a body: keep the windows, look for the next possible delimiter
_SKIP = 5  # dropping the rest of an over-long kept line, up to its line end
_TRUNCATED = 6  # the top header passed MAX_HEADER_OCTETS: one more octet, then done
_DONE = 7

_NEED = -1  # _Skeleton._line: the line end is not in the buffer yet
_LONG = -2  # _Skeleton._line: no line end yet and the line is over its cap


def _line_break(buf: bytes, start: int) -> int:
    """Where the first CR or LF at or after ``start`` is, or -1 (two memchr calls)."""
    lf = buf.find(b"\n", start)
    cr = buf.find(b"\r", start) if lf < 0 else buf.find(b"\r", start, lf)
    return cr if cr >= 0 else lf


def _body_use(values: dict[str, bytes]) -> tuple[bool, bool, bytes]:
    """Whether _entity may read the body after a header with ``values``, whether it
    is a multipart, and the multipart's boundary.

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


@dataclass(slots=True)
class _Window:
    until: int  # octets before this offset of the message are kept
    ends_at: bytes | None  # it ends at a delimiter of this boundary
    own: bytes  # a multipart's boundary
    first: bool  # no possible delimiter seen since it opened


class _Skeleton:
    """The filter described above: :meth:`feed` it chunks, then :meth:`finish`."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.kept = 0  # octets kept, the current run included
        self.capped = False
        self.state = _MBOX
        self.carry = b""  # octets not processed yet
        self.base = 0  # offset in the message of the buffer being processed
        # The kept octets run_buf[run_start:run_end], not in out yet.
        self.run_buf: bytes | None = None
        self.run_start = self.run_end = 0
        # Windows: octets before keep_until are kept; fixed_until is the same
        # for the windows that cannot end early; windows holds the others.
        self.keep_until = 0
        self.fixed_until = 0
        self.windows: list[_Window] = []
        # Possible delimiters: "--" + each boundary (declared or guessable).
        self.exact = True  # False: every "--" line is one (too many boundaries)
        self.needles: dict[bytes, bytes] = {}
        self.hold = 2  # octets held back at the end of a buffer
        self.guess_until = 0  # "--" lines before this offset give boundaries
        self.opener: bytes | None = None  # the one boundary the last delimiter is of
        self.dash_lines = 0
        self.dash_break = False
        # Header blocks.
        self.top = True
        self.header_index = 0  # where in out the header block starts
        self.header_kept = 0  # kept when the top header started
        self.seen_field = False
        self.at_line_start = False
        self.skip_lf_only = False
        self.after_skip = _HEADER
        # Finds cached for the buffer being processed (-2: not searched, -1: none).
        self.misses = 0
        self.next_lf = self.next_cr = -2
        self.next_known: dict[bytes, int] = {}
        self.not_delimiters = 0

    @property
    def done(self) -> bool:
        return self.capped or self.state == _DONE

    def feed(self, chunk: bytes, *, eof: bool = False) -> None:
        if self.done:
            return
        buf = self.carry + chunk if self.carry else chunk
        used = self._run(buf, eof)
        self._flush()
        self.base += used
        self.carry = buf[used:]

    def finish(self) -> bytes:
        self.feed(b"", eof=True)
        self._flush()
        skeleton = b"".join(self.out)
        self.out = []
        if self.capped:
            # Not a partial line at the end: a cut "--boundaryX" would read as a delimiter.
            cut = max(skeleton.rfind(b"\n"), skeleton.rfind(b"\r"))
            skeleton = skeleton[: cut + 1]
        return skeleton

    # -- output

    def _keep(self, buf: bytes, start: int, end: int) -> None:
        """Keep ``buf[start:end]``; adjacent pieces are joined into one run."""
        if end <= start or self.capped:
            return
        if self.kept + end - start > _SKELETON_CAP:
            end = start + _SKELETON_CAP - self.kept
            self.capped = True  # the state machine stops at its next step
        if self.run_buf is buf and self.run_end == start:
            self.run_end = end
        else:
            self._flush()
            self.run_buf, self.run_start, self.run_end = buf, start, end
        self.kept += end - start

    def _flush(self) -> None:
        if self.run_buf is not None:
            self.out.append(self.run_buf[self.run_start : self.run_end])
            self.run_buf = None

    def _window(self, buf: bytes, start: int, end: int) -> None:
        """Keep what of ``buf[start:end]`` is in a window."""
        self._keep(buf, start, min(end, self.keep_until - self.base))

    def _keep_line(self, buf: bytes, start: int, end: int, term: int, cap: int) -> None:
        """Keep a line: its first ``cap`` octets, the rest in a window, its line end."""
        cut = min(end, start + cap)
        self._keep(buf, start, cut)
        self._window(buf, cut, end)
        self._keep(buf, end, term)

    # -- finding lines

    def _line(self, buf: bytes, start: int, eof: bool, cap: int, lf_only: bool = False
              ) -> tuple[int, int]:
        """(line end, next line start) of the line at ``start``, or (_NEED or _LONG, 0).

        Line ends are CRLF, LF or a bare CR, as scan_header reads them (LF
        only for the mbox line, as _extract reads it).
        """
        size = len(buf)
        if lf_only:
            end = buf.find(b"\n", start)
            if end >= 0:
                return end, end + 1
        else:
            end = _line_break(buf, start)
            if end >= 0:
                if buf[end] == 0x0A:
                    return end, end + 1
                if end + 1 < size:
                    return end, end + (2 if buf[end + 1] == 0x0A else 1)
                if eof:
                    return end, end + 1
                # A CR that ends the buffer: an LF may follow.
                return (_LONG if end - start > cap else _NEED), 0
        if eof:
            return size, size
        return (_LONG if size - start > cap else _NEED), 0

    def _next_dash(self, buf: bytes, pos: int) -> int:
        """The line end before the next line that starts with "--", at or after ``pos``.

        -1 when there is none in ``buf`` (a "-" ending it may start one).
        Searching for "-" is a memchr, so a base64 body costs one call per
        chunk; after _FAST_MISSES "-" that start no "--" line (text, binary)
        the rest of the buffer is searched for "\\n--" and "\\r--" instead.
        """
        size = len(buf)
        if self.misses < _FAST_MISSES:
            dash = buf.find(b"-", pos + 1)
            while True:
                if dash < 0 or dash + 1 >= size:
                    return -1
                if buf[dash + 1] == 0x2D and buf[dash - 1] in (0x0A, 0x0D):
                    return dash - 1
                self.misses += 1
                if self.misses >= _FAST_MISSES:
                    break
                dash = buf.find(b"-", dash + 1)
            pos = max(pos, dash)  # no "--" line starts before this "-"
        if self.next_lf != -1 and self.next_lf < pos:
            self.next_lf = buf.find(b"\n--", pos)
        if self.next_cr != -1 and self.next_cr < pos:
            self.next_cr = buf.find(b"\r--", pos)
        lf, cr = self.next_lf, self.next_cr
        return lf if cr < 0 else cr if lf < 0 else min(lf, cr)

    def _next_known(self, buf: bytes, pos: int) -> int:
        """The line end before the next line that starts with "--" and a boundary."""
        best = -1
        for boundary, needle in self.needles.items():
            brk = self.next_known.get(boundary, -2)
            if brk != -1 and brk < pos:
                at = buf.find(needle, pos + 1)
                while at > 0 and buf[at - 1] not in (0x0A, 0x0D):
                    at = buf.find(needle, at + 1)
                brk = at - 1 if at > 0 else -1
                self.next_known[boundary] = brk
            if brk >= 0 and (best < 0 or brk < best):
                best = brk
        return best

    def _next_candidate(self, buf: bytes, pos: int) -> int:
        """The line end before the next "--" line to look at, at or after ``pos``; or -1.

        Any "--" line (the DASH state passes over those that cannot be
        delimiters) until _FAST_MISSES of them were not in this buffer; then
        only lines that start with "--" and a boundary, except where a "--"
        line may give a boundary (near the start of a multipart body).
        """
        if not self.exact:
            return self._next_dash(buf, pos)
        guess = self.base + pos < self.guess_until
        if not guess and not self.needles:
            return -1  # no boundary yet: no "--" line can be a delimiter
        if guess or self.not_delimiters < _FAST_MISSES:
            return self._next_dash(buf, pos)
        return self._next_known(buf, pos)

    # -- boundaries and windows

    def _add_boundary(self, boundary: bytes) -> None:
        if not self.exact or boundary in self.needles:
            return
        if len(self.needles) >= _MAX_BOUNDARIES or boundary[-1] in b" \t":
            # Too many to search for, or one _delimiters could miss.
            self.exact = False
            self.fixed_until = self.keep_until
            self.windows = []
            self.hold = 2
            return
        self.needles[boundary] = b"--" + boundary
        self.hold = max(self.hold, len(boundary) + 3)

    def _delimiters(self, line: bytes | None, at: int) -> set[bytes] | None:
        """The boundaries ``line`` (None: cut) at offset ``at`` is a delimiter of.

        None when unknown (every "--" line is then a possible delimiter). A
        delimiter as _multipart reads it: "--", the boundary, "--" if it
        closes, blanks. A "--" line near the start of a multipart body first
        adds the boundary _guess_boundary would take from it.
        """
        if not self.exact or line is None:
            return None
        rest = line[2:].rstrip(b" \t")
        if at < self.guess_until and rest and 0x21 <= rest[0] <= 0x7E and len(rest) <= 200:
            guess = rest[:-2] if rest.endswith(b"--") else rest
            if guess:
                self._add_boundary(guess)
                if not self.exact:
                    return None
        found = {rest} if rest in self.needles else set()
        if rest.endswith(b"--") and rest[:-2] in self.needles:
            found.add(rest[:-2])
        return found

    def _delimiter(self, found: set[bytes] | None, at: int) -> None:
        """A possible delimiter starts at offset ``at``; ``found`` as from _delimiters."""
        self.dash_lines += 1
        if self.dash_lines > _MAX_DASH_LINES:
            self.capped = True
            return
        self.opener = next(iter(found)) if found and len(found) == 1 else None
        if found is None:
            for window in self.windows:
                window.first = False  # it might have been anyone's delimiter
            return
        if not self.windows:
            return
        windows = []
        for window in self.windows:
            if window.until <= at:
                continue  # over: no longer matters
            if (window.ends_at is not None and window.ends_at in found) or (
                window.first and window.own and found == {window.own}
            ):
                continue  # the part (or the multipart's preamble) is over
            window.first = False
            windows.append(window)
        self.windows = windows
        self.keep_until = max([self.fixed_until, *(w.until for w in windows)])

    def _start_header(self, top: bool) -> None:
        self.state = _HEADER
        self.top = top
        self.seen_field = False
        self._flush()
        self.header_index = len(self.out)
        self.header_kept = self.kept

    def _header_line_kept(self) -> None:
        # scan_header(limit=MAX_HEADER_OCTETS) gives up on the top header once
        # a line ends past the limit and anything follows, and so does _extract.
        if self.top and self.kept - self.header_kept >= MAX_HEADER_OCTETS:
            self.state = _TRUNCATED

    def _end_header(self, region_start: int) -> None:
        """The header block ended; its body starts at ``buf[region_start]``."""
        self._flush()
        block = b"".join(self.out[self.header_index :])
        reads, multipart, boundary = _body_use(
            _first_values(scan_header(block, keep=_PART_KEEP).fields))
        self.top = False
        self.state = _REGION
        self.at_line_start = True
        if not reads:
            return
        start = self.base + region_start
        until = start + _TEXT_WINDOW
        self.keep_until = max(self.keep_until, until)
        if multipart:
            self.guess_until = max(self.guess_until, start + _GUESS_WINDOW)
            if boundary:
                self._add_boundary(boundary)
        own = boundary if boundary != self.opener else b""
        if self.exact and len(self.windows) < _MAX_WINDOWS and (own or self.opener):
            self.windows.append(_Window(until, self.opener, own, True))
        else:
            self.fixed_until = max(self.fixed_until, until)

    # -- the filter

    def _run(self, buf: bytes, eof: bool) -> int:
        """Process ``buf``; return how many octets are done with (the rest is carried)."""
        size = len(buf)
        pos = 0
        self.misses = 0
        self.next_lf = self.next_cr = -2
        self.next_known.clear()
        self.not_delimiters = 0
        while True:
            state = self.state
            if state == _DONE or self.capped:
                self.state = _DONE
                return size
            if state == _REGION:
                if self.at_line_start:
                    if pos >= size:
                        return pos
                    if buf[pos] == 0x2D:  # "-"
                        if pos + 1 >= size:
                            if not eof:
                                return pos
                        elif buf[pos + 1] == 0x2D:
                            self.state, self.dash_break = _DASH, False
                            continue
                    self.at_line_start = False
                brk = self._next_candidate(buf, pos)
                if brk < 0:
                    # Hold back what may be the start of a delimiter line.
                    stop = size if eof else max(pos, size - self.hold)
                    self._window(buf, pos, stop)
                    return stop
                self._window(buf, pos, brk)
                pos = brk
                self.state, self.dash_break = _DASH, True
            elif state == _DASH:
                start = pos + self.dash_break
                end, term = self._line(buf, start, eof, _LINE_CAP)
                if end == _NEED:
                    return pos
                line = None if end == _LONG else buf[start:end]
                found = self._delimiters(line, self.base + start)
                if found is not None and not found:
                    # Not a delimiter of anything: content.
                    self.not_delimiters += 1
                    self._window(buf, pos, term)
                    pos = term
                    self.state, self.at_line_start = _REGION, True
                    continue
                self._keep(buf, pos, start)  # the line end before it
                self._delimiter(found, self.base + start)
                if found and line is not None and line[2:].rstrip(b" \t") not in found:
                    # Only ever a closing delimiter: no part follows it.
                    self._keep(buf, start, term)
                    pos = term
                    self.state, self.at_line_start = _REGION, True
                    continue
                if end == _LONG:
                    self._keep(buf, start, start + _LINE_CAP)
                    pos = start + _LINE_CAP
                    self.state, self.skip_lf_only, self.after_skip = _SKIP, False, _DASH
                    continue
                self._keep_line(buf, start, end, term, _LINE_CAP)
                pos = term
                self._start_header(top=False)
            elif state == _HEADER:
                if pos >= size and eof:
                    self._end_header(pos)
                    continue
                cap = MAX_HEADER_OCTETS if self.top else _LINE_CAP
                end, term = self._line(buf, pos, eof, cap)
                if end == _NEED:
                    return pos
                if end == pos:  # the blank line
                    self._keep(buf, pos, term)
                    self._end_header(term)
                    pos = term
                    continue
                if buf[pos] in (0x20, 0x09):
                    field_line = self.seen_field
                else:
                    line_end = size if end == _LONG else end
                    field_line = _FIELD_NAME.match(buf, pos, line_end) is not None
                    self.seen_field = self.seen_field or field_line
                if not field_line:
                    self._end_header(pos)  # this line is the body's first
                    continue
                if end == _LONG:
                    self._keep(buf, pos, pos + cap)
                    pos += cap
                    self.state, self.skip_lf_only, self.after_skip = _SKIP, False, _HEADER
                    continue
                self._keep_line(buf, pos, end, term, cap)
                pos = term
                self._header_line_kept()
            elif state == _SKIP:
                if self.skip_lf_only:
                    end = buf.find(b"\n", pos)
                    term = end + 1
                else:
                    end = _line_break(buf, pos)
                    term = end + 1
                    if end >= 0 and buf[end] == 0x0D:
                        if end + 1 < size:
                            term += buf[end + 1] == 0x0A
                        elif not eof:
                            self._window(buf, pos, end)
                            return end  # is the CR followed by an LF?
                if end < 0:
                    self._window(buf, pos, size)
                    return size
                self._window(buf, pos, end)
                self._keep(buf, end, term)
                pos = term
                if self.after_skip == _DASH:
                    self._start_header(top=False)
                elif self.after_skip == _MBOX_LINE:
                    self._start_header(top=True)
                else:
                    self.state = _HEADER
                    self._header_line_kept()
            elif state == _MBOX:
                if size - pos < 5 and not eof:
                    return pos
                if buf.startswith(b"From ", pos):
                    self.state = _MBOX_LINE
                else:
                    self._start_header(top=True)
            elif state == _MBOX_LINE:
                end, term = self._line(buf, pos, eof, _LINE_CAP, lf_only=True)
                if end == _NEED:
                    return pos
                if end == _LONG:
                    self._keep(buf, pos, pos + _LINE_CAP)
                    pos += _LINE_CAP
                    self.state, self.skip_lf_only, self.after_skip = _SKIP, True, _MBOX_LINE
                    continue
                self._keep_line(buf, pos, end, term, _LINE_CAP)
                pos = term
                self._start_header(top=True)
            else:  # _TRUNCATED
                if pos < size:
                    self._keep(buf, pos, pos + 1)
                    self.state = _DONE
                elif eof:
                    self.state = _DONE
                else:
                    return pos


def _skeleton(chunks: Iterable[bytes]) -> bytes:
    """The skeleton of the message made of ``chunks`` (see _Skeleton)."""
    skeleton = _Skeleton()
    for chunk in chunks:
        skeleton.feed(chunk)
        if skeleton.done:
            break
    return skeleton.finish()


def _extract_body(body: Body, headlines: int, chunk_size: int = _READ_CHUNK) -> EnvelopeSummary:
    """_extract on the skeleton of ``body``, read ``chunk_size`` octets at a time."""
    return _extract(_skeleton(body.chunks(chunk_size)), headlines)


def extract_envelope(message: bytes | Body, *, headlines: int = 2) -> EnvelopeSummary:
    """The envelope of ``message`` (paper section 5.2 step 4). Never raises.

    ``headlines`` (at most :data:`MAX_HEADLINES`) is how many non-empty lines
    of the first text/plain part (else of the first text/html part, tags
    stripped) are kept.

    A :class:`~smdp.mail.body.Body` is read a chunk at a time and never whole
    (unless it is in memory and small): the envelope is extracted from its
    skeleton (see _Skeleton), in memory bounded whatever the message size, and
    is the same as for the bytes. Only on hostile input whose skeleton passes
    _SKELETON_CAP (4 MiB) or that has over _MAX_DASH_LINES (10,000) possible
    delimiter lines is the rest not read, and the attachment count may then
    come out short.
    """
    try:
        if isinstance(message, Body):
            if message.in_memory and message.size <= _STREAM_ABOVE:
                return _extract(message.read(), headlines)
            return _extract_body(message, headlines)
        if not isinstance(message, bytes):
            message = bytes(message)
        return _extract(message, headlines)
    except Exception:
        # Robustness over precision: a bug here must not stop delivery, and an
        # empty envelope still lets the recipient decide from the sender.
        _log.exception("envelope extraction failed; sending an empty envelope")
        return EMPTY_SUMMARY


# ---------------------------------------------------------------------------
# Envelope block codec (wire contract 2.3)


def _summary_lines(summary: EnvelopeSummary) -> list[str]:
    count = max(0, summary.attachments)
    names = _fit_names(count, summary.attachment_names)
    attachments = str(count) + ("; " + ", ".join(names) if names else "")
    return [
        "Subject: " + _clean(summary.subject, MAX_SUBJECT_CHARS, _SUBJECT_OCTETS),
        "From-Name: " + _clean(summary.from_name, MAX_FROM_NAME_CHARS, _FROM_NAME_OCTETS),
        "To: " + _clean(summary.to, MAX_ADDRESS_TEXT_CHARS, _TO_OCTETS),
        "Cc: " + _clean(summary.cc, MAX_ADDRESS_TEXT_CHARS, _CC_OCTETS),
        "Date: " + _clean(summary.date, MAX_DATE_CHARS, _DATE_OCTETS),
        "Attachments: " + attachments,
    ]


def encode_envelope_block(summary: EnvelopeSummary, *, expires: str) -> bytes:
    """The envelope block of contract 2.3: UTF-8 lines ending in CRLF, not dot-stuffed.

    Values are sanitised and capped again (the summary may come from storage),
    so the block always fits :data:`MAX_BLOCK_OCTETS` and every line the
    1000-octet line limit.
    """
    lines = _summary_lines(summary)
    headlines = 0
    for headline in summary.headlines:
        if headlines >= MAX_HEADLINES:
            break
        cleaned = _clean(headline, MAX_HEADLINE_CHARS, _HEADLINE_OCTETS)
        if cleaned:
            lines.append("Headline: " + cleaned)
            headlines += 1
    lines.append("Expires: " + _clean(expires, MAX_EXPIRES_CHARS, _EXPIRES_OCTETS))
    return "".join(line.rstrip(" ") + "\r\n" for line in lines).encode("utf-8", "replace")


_ATTACHMENTS_VALUE = re.compile(r"([0-9]{1,9})\s*(?:;(.*))?\Z", re.DOTALL)


def decode_envelope_block(data: bytes) -> EnvelopeFields:
    """Read an envelope block from a peer; tolerant of anything but its size.

    Unknown fields are ignored, missing ones are empty, bad UTF-8 is replaced,
    a repeated field keeps its first value (Headline accumulates), and values
    are sanitised and capped as on the sending side. Raises
    :class:`EnvelopeError` only for a block over :data:`MAX_BLOCK_OCTETS`.
    """
    if len(data) > MAX_BLOCK_OCTETS:
        raise EnvelopeError(f"Envelope block exceeds {MAX_BLOCK_OCTETS} octets.")
    values: dict[str, str] = {}
    headlines: list[str] = []
    for raw_line in data.decode("utf-8", "replace").split("\n"):
        name, colon, value = raw_line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        if key == "headline":
            if len(headlines) < MAX_HEADLINES:
                cleaned = _clean(value, MAX_HEADLINE_CHARS, _HEADLINE_OCTETS)
                if cleaned:
                    headlines.append(cleaned)
        else:
            values.setdefault(key, value)
    count = 0
    names: tuple[str, ...] = ()
    match = _ATTACHMENTS_VALUE.match(values.get("attachments", "").strip())
    if match is not None:
        count = int(match.group(1))
        if match.group(2):
            names = _fit_names(count, match.group(2).split(","))
    summary = EnvelopeSummary(
        subject=_clean(values.get("subject", ""), MAX_SUBJECT_CHARS, _SUBJECT_OCTETS),
        from_name=_clean(values.get("from-name", ""), MAX_FROM_NAME_CHARS, _FROM_NAME_OCTETS),
        to=_clean(values.get("to", ""), MAX_ADDRESS_TEXT_CHARS, _TO_OCTETS),
        cc=_clean(values.get("cc", ""), MAX_ADDRESS_TEXT_CHARS, _CC_OCTETS),
        date=_clean(values.get("date", ""), MAX_DATE_CHARS, _DATE_OCTETS),
        attachments=count,
        attachment_names=names,
        headlines=tuple(headlines),
    )
    expires = _clean(values.get("expires", ""), MAX_EXPIRES_CHARS, _EXPIRES_OCTETS)
    return EnvelopeFields(summary, expires)
