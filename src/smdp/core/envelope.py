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
by :data:`MAX_DEPTH` and :data:`MAX_PARTS`.

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
import html
import logging
import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

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
    (see ``HeaderBlock.truncated``); the cost is one Python step per line.
    """
    stop = len(data) if end is None else end
    give_up = stop if limit is None else min(stop, start + limit)
    fields: list[HeaderField] = []
    pos = start
    name: str | None = None
    field_start = 0
    parts: list[bytes] = []
    wanted = False

    def flush(field_end: int) -> None:
        if name is not None and wanted:
            value = b"".join(parts).strip(b" \t")
            fields.append(HeaderField(name, value, field_start, field_end))

    while pos < stop:
        match = _LINE_BREAK.search(data, pos, stop)
        if match is None:
            line_end = next_pos = stop
        else:
            line_end = match.start()
            next_pos = line_end + 1
            if data[line_end] == 0x0D and next_pos < stop and data[next_pos] == 0x0A:
                next_pos += 1
        if line_end == pos:
            flush(pos)
            return HeaderBlock(tuple(fields), pos, next_pos, True)
        first = data[pos]
        if first == 0x20 or first == 0x09:
            if name is None:
                break
            if wanted:
                parts.append(data[pos:line_end])
        else:
            field = _FIELD_NAME.match(data, pos, line_end)
            if field is None:
                break
            flush(pos)
            name = field.group(1).decode("ascii")
            wanted = keep is None or name.lower() in keep
            field_start = pos
            parts = [data[field.end() : line_end]] if wanted else []
        pos = next_pos
        if pos >= give_up and pos < stop:
            flush(pos)
            return HeaderBlock(tuple(fields), pos, pos, False, truncated=True)
    flush(pos)
    return HeaderBlock(tuple(fields), pos, pos, False)


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
    text = " ".join(_UNSAFE.sub(" ", text).split())
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
    if len(text) > max_octets // 4:
        raw = text.encode("utf-8")
        if len(raw) > max_octets:
            text = raw[:max_octets].decode("utf-8", "ignore").rstrip()
    return text


# A well-formed multi-octet UTF-8 sequence; Latin-1 text almost never has one.
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


def _bytes_to_text(raw: bytes) -> str:
    """Undeclared 8-bit text: UTF-8 when it is valid, else Windows-1252, line by line.

    Line by line because mislabelled mail often mixes both (a UTF-8 body with
    a Latin-1 signature pasted in).
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = raw.split(b"\n")
    for index, line in enumerate(lines):
        if _UTF8_SEQUENCE.search(line):
            # UTF-8 with a stray bad byte: replace that byte, keep the rest.
            lines[index] = line.decode("utf-8", "replace").encode("utf-8")
        else:
            lines[index] = line.decode("cp1252", "replace").encode("utf-8")
    return b"\n".join(lines).decode("utf-8")


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


def _first(fields: tuple[HeaderField, ...], key: str) -> bytes | None:
    for item in fields:
        if item.key == key:
            return item.value
    return None


def _entity(
    walk: _Walk,
    fields: tuple[HeaderField, ...],
    body_start: int,
    end: int,
    depth: int,
    parent: str,
) -> None:
    """Classify one MIME entity whose body is ``data[body_start:end]``."""
    raw_type = _first(fields, "content-type")
    default = "message/rfc822" if parent == "digest" else "text/plain"
    mime, params = _parse_params(raw_type) if raw_type is not None else (default, {})
    maintype, slash, subtype = mime.partition("/")
    if not slash or not maintype or not subtype:
        # RFC 2045 5.2: an invalid Content-Type means text/plain.
        maintype, subtype, params = "text", "plain", {}
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
    raw_disposition = _first(fields, "content-disposition")
    disposition, disposition_params = (
        _parse_params(raw_disposition) if raw_disposition is not None else ("", {})
    )
    filename = _param_text(disposition_params, "filename")
    if filename is None:
        filename = _param_text(params, "name")
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
    raw_encoding = _first(fields, "content-transfer-encoding")
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
    _entity(walk, block.fields, block.body_start, end, depth, parent)


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
_HTML_SPACE = re.compile(r"\s+")
# "[^<>]*" rather than "[^>]*" keeps the scan linear on text full of "<".
# A tag starts with a letter (after "/" or "!"), as in HTML's tokenizer, so
# "a < b > c" stays text.
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|tr|li|h[1-6]|table|blockquote|pre|hr|ul|ol|dt|dd)\b[^<>]*>",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[/!?]?[A-Za-z][^<>]*>")


def _html_to_text(text: str) -> str:
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
    text = _HTML_SPACE.sub(" ", "".join(kept))
    text = _BLOCK_TAG.sub("\n", text)
    return _ANY_TAG.sub("", text)


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
            text = _html_to_text(text)
        pieces = text.splitlines()
        if not complete and pieces:
            pieces.pop()  # may be cut in the middle
        lines = []
        for piece in pieces:
            if is_html:
                piece = html.unescape(piece)
            line = _clean(piece, MAX_HEADLINE_CHARS, _HEADLINE_OCTETS)
            if line:
                lines.append(line)
                if len(lines) >= wanted:
                    return lines
        if complete:
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
    texts = [decode_header_text(f.value[:_MAX_RAW_HEADER]) for f in fields if f.key == key]
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
    subject_raw = _first(fields, "subject")
    from_raw = _first(fields, "from")
    date_raw = _first(fields, "date")
    walk = _Walk(data)
    if not block.truncated:
        _entity(walk, fields, block.body_start, len(data), 0, "")
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


def extract_envelope(message: bytes, *, headlines: int = 2) -> EnvelopeSummary:
    """The envelope of ``message`` (paper section 5.2 step 4). Never raises.

    ``headlines`` (at most :data:`MAX_HEADLINES`) is how many non-empty lines
    of the first text/plain part (else of the first text/html part, tags
    stripped) are kept.
    """
    try:
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
