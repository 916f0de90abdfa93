"""The envelope: what SMDP sends instead of the message, and its block codec.

The paper (section 5.2 step 4) has the origin send, instead of the message, an
"email envelope" holding "sender, intended recipient(s), subject, attachment
status and a couple of headlines". :func:`extract_envelope` computes it from a
stored message and :func:`encode_envelope_block` /
:func:`decode_envelope_block` carry it in the DATA block that follows
``ENVELOPE`` (wire contract section 2.3).

Extraction runs on every submitted message, including large ones, so it does
not use the :mod:`email` parser (which decodes and copies every part): it
reads the message with the bounded MIME reader of :mod:`smdp.mail.mime`,
which never decodes an attachment and decodes only the first few kilobytes of
the first text part. A message held as a :class:`~smdp.mail.body.Body` (a
large one is in a temporary file) is not read whole either: its chunks are
filtered down to a small skeleton of the message that reads the same
(:mod:`smdp.mail.mime.skeleton`).

Everything produced here is shown to a recipient who has not yet agreed to
receive the message and is echoed on both ports, so every text value is
sanitised: control characters, bidirectional overrides and lone surrogates
go, whitespace is collapsed, and each field is capped so that its line fits
the 1000-octet line limit of wire contract section 1.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
from dataclasses import dataclass

from smdp.mail.body import Body
from smdp.mail.mime import (
    MAX_DEPTH,
    MAX_HEADER_OCTETS,
    MAX_PARTS,
    HeaderBlock,
    HeaderField,
    Walk,
    decode_header_text,
    display_name,
    first_text_pieces,
    message_skeleton,
    part_lines,
    scan_header,
    walk_message,
)

__all__ = [
    "EMPTY_SUMMARY",
    "MAX_ATTACHMENT_NAMES",
    "MAX_BLOCK_OCTETS",
    "MAX_HEADLINES",
    "MAX_HEADLINE_CHARS",
    "MAX_SUBJECT_CHARS",
    "EnvelopeError",
    "EnvelopeFields",
    "EnvelopeSummary",
    "decode_envelope_block",
    "encode_envelope_block",
    "extract_envelope",
]
# The MIME reader's, importable from here as before it moved to smdp.mail.mime.
__all__ += [
    "MAX_DEPTH",
    "MAX_HEADER_OCTETS",
    "MAX_PARTS",
    "HeaderBlock",
    "HeaderField",
    "decode_header_text",
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
MAX_LIST_ID_CHARS = 255  # RFC 2919: a list-id is at most 255 octets
MAX_AUTO_SUBMITTED_CHARS = 64
MAX_UNSUBSCRIBE_CHARS = 500
MAX_BLOCK_OCTETS = 16 * 1024
# A data line is at most 1000 octets with its CRLF (wire contract section 1,
# RFC 5321 4.5.3.1.6). The contract counts Subject in characters, but 998
# non-ASCII characters are up to 3992 octets, so every field line is also cut
# to fit: otherwise a destination would refuse the whole envelope.
MAX_LINE_OCTETS = 998
# Header values longer than this are cut before decoding; far more than any
# capped field can use, even for base64 encoded words of 4-octet characters.
_MAX_RAW_HEADER = 32 * 1024
# The header fields the summary shows (besides those the MIME walk reads).
_SUMMARY_FIELDS = frozenset({"subject", "from", "to", "cc", "date", "list-id",
                             "auto-submitted", "list-unsubscribe", "list-unsubscribe-post"})
# In-memory bodies up to this size are read whole and take the bytes path.
_STREAM_ABOVE = 1024 * 1024
# Octets read at a time: smaller than CHUNK_SIZE, since a chunk and the
# buffer made of it and the octets carried over are what the filter holds.
_READ_CHUNK = 64 * 1024


def new_token() -> str:
    """128 random bits in lower-case base32: unguessable ids (contract 2.1)."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


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
    # Mailing lists and machines (issue 16 item 3): the list a post came
    # through (RFC 2919's list-id, lower case), RFC 3834's Auto-Submitted
    # keyword ("" when the field is absent), and how to leave the list
    # (RFC 2369 List-Unsubscribe, and RFC 8058's one-click promise).
    list_id: str = ""
    auto_submitted: str = ""
    list_unsubscribe: str = ""
    one_click_unsubscribe: bool = False


EMPTY_SUMMARY = EnvelopeSummary("", "", "", "", "", 0, (), ())


@dataclass(frozen=True, slots=True)
class EnvelopeFields:
    """A decoded envelope block: the summary and the origin's expiry time."""

    summary: EnvelopeSummary
    expires: str


# ---------------------------------------------------------------------------
# Sanitising what is shown

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
    if len(text) <= max_chars and len(text) <= max_octets // 4 and text.isprintable():
        # Most values: nothing to take out and nothing to cut (the join only
        # shortens, and a character is at most 4 octets), so _clean_steps
        # comes to this one.
        return " ".join(text.split())
    return _clean_steps(text, max_chars, max_octets)


def _clean_steps(text: str, max_chars: int, max_octets: int) -> str:
    """_clean, every step taken."""
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
# A list-id is a dot-atom (RFC 2919 section 2), inside angle brackets after
# an optional description.
_LIST_ID = re.compile(r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)+)>")
_KEYWORD = re.compile(r"[A-Za-z0-9-]+")


def _list_id(raw: str) -> str:
    found = _LIST_ID.findall(raw)
    return found[-1].lower()[:MAX_LIST_ID_CHARS] if found else ""


def _auto_submitted(raw: str) -> str:
    # RFC 3834 5: a keyword, then optional parameters after ";".
    word = raw.split(";", 1)[0].strip()
    return word.lower()[:MAX_AUTO_SUBMITTED_CHARS] if _KEYWORD.fullmatch(word) else ""


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


def _headline(text: str) -> str:
    # _clean's first shortcut, without the second call: this runs on every
    # line read for headlines.
    if len(text) <= _HEADLINE_SHORT and text.isprintable():
        return " ".join(text.split())
    return _clean(text, MAX_HEADLINE_CHARS, _HEADLINE_OCTETS)


_HEADLINE_SHORT = min(MAX_HEADLINE_CHARS, _HEADLINE_OCTETS // 4)


# ---------------------------------------------------------------------------
# Extraction


# Lines of the text read when looking for headlines: enough to get past the
# attribution and the quoted message of most bottom-posted replies.
_HEADLINE_SCAN = 200
# Lines read first, beyond those wanted (see _headlines).
_HEADLINE_FIRST = 4
# A reply attribution, as the common mail programs write it: "Lisi wrote:",
# "On 04/24/2010 03:20 PM, Lisi wrote:", "Le 24/04/2010 15:20, Lisi a écrit :",
# "Am 24.04.2010 15:20, schrieb Lisi:" and the like in a few more languages.
_VERBS = (r"(?:\b(?:wrote|writes|a écrit|schrieb|escribió|ha scritto|schreef|skrev|kirjoitti"
          r"|napisał)|написал[аи]?|写道)(?:\W.{0,100})?")
_ATTRIBUTION = re.compile(_VERBS + r":\Z", re.IGNORECASE)
# Some programs (KMail) end it without the colon: one only before a quote.
_ATTRIBUTION_BARE = re.compile(_VERBS + r"\Z", re.IGNORECASE)
# The first line of an attribution that its mail program wrapped before the
# verb ("On Sat, Apr 24, 2010 at 3:20 PM, Lisi Reisz <lisi@example.com>").
_ATTRIBUTION_START = re.compile(r"(?:On|Le|Am|El|Il|Op|Den|W dniu)\s", re.IGNORECASE)
# A separator: a run of 3 or more of these, alone or around a few words
# ("-----", "_____", "=====", "-----Original Message-----", "--- Sponsor ---~->").
_SEPARATOR = re.compile(r"[-_=*~#+.<>]{3,}(?:.{0,80}?[-_=*~#+.<>]{3,})?\Z")
# What a separator starts with: most lines are let through on that alone.
_SEPARATOR_FIRST = frozenset("-_=*~#+.<>")
# A separator that starts a copy of the message replied to: what follows is
# quoted, not the sender's own text.
_ORIGINAL = re.compile(r"original|ursprüngliche|d'origine", re.IGNORECASE)
_QUOTED_HEADER = re.compile(r"(?:From|De|Von|Van|Da)\s?:", re.IGNORECASE)


# What _verdict says of a line.
_OWN, _NOT_OWN, _END = 0, 1, 2


def _verdict(line: str, after: str) -> int:
    """Whether ``line``, followed by ``after`` ("" when it is the last line
    read), is the sender's own text, is not, or ends it (see _own_lines)."""
    if line == "--":
        return _END  # the signature delimiter "-- " (blanks collapsed), and the signature
    if line[:1] in _SEPARATOR_FIRST and _SEPARATOR.match(line):
        if _ORIGINAL.search(line) or _QUOTED_HEADER.match(after):
            return _END  # the earlier message, quoted whole
        return _NOT_OWN
    # _ATTRIBUTION ends in ":\Z": endswith first spares most lines its search.
    if line.startswith(">") or (line.endswith(":") and _ATTRIBUTION.search(line)):
        return _NOT_OWN
    if after.startswith(">") and _ATTRIBUTION_BARE.search(line):
        return _NOT_OWN
    if (_ATTRIBUTION_START.match(line) and after.endswith(":")
            and _ATTRIBUTION.search(after) and not _ATTRIBUTION_START.match(after)):
        return _NOT_OWN  # an attribution wrapped over two lines
    return _OWN


def _own_lines(lines: list[str], judged: int | None = None) -> list[str]:
    """The lines of ``lines`` (shown lines of a text, in order, none empty) that
    are the sender's own text: not a quoted line ("> ..."), a reply
    attribution, a separator, a signature ("-- " and what follows it), or
    the copy of an earlier message that a separator opens ("-----Original
    Message-----", or a rule and a "From:" line). ``judged``: only the
    first that many lines are judged (the others only follow them)."""
    own: list[str] = []
    count = len(lines)
    for i, line in enumerate(lines if judged is None else lines[:judged]):
        verdict = _verdict(line, lines[i + 1] if i + 1 < count else "")
        if verdict == _OWN:
            own.append(line)
        elif verdict == _END:
            break
    return own


def _plain_headlines(walk: Walk, wanted: int) -> tuple[str, ...] | None:
    """What _headlines gives from the text/plain part, read in one pass over the
    lines of part_lines' first step: each line is cleaned and judged as it
    comes (by it and the next, as _own_lines does), and reading stops as
    soon as the answer is known. That is what the 200-line scan gives, since
    its lines begin with these (first_text_pieces). None when these lines
    do not settle it: no shown line at all, or the step is not the whole
    part and ends, short of _HEADLINE_SCAN lines, before the answer."""
    part = walk.plain
    if part is None:
        return None
    pieces, complete = first_text_pieces(walk.data, part)
    own: list[str] = []
    first: list[str] = []  # the first ``wanted`` lines, for a text with no own line
    line = ""  # the last line read, judged once the next one is read
    count = 0
    ended = False  # a signature or a quoted original: no own line after it
    for piece in pieces:
        if not piece:
            continue
        shown = _headline(piece)
        if not shown:
            continue
        count += 1
        if len(first) < wanted:
            first.append(shown)
        if count > 1 and not ended:
            verdict = _verdict(line, shown)
            if verdict == _OWN:
                own.append(line)
                if len(own) == wanted:
                    return tuple(own)
            elif verdict == _END:
                ended = True
        if ended and (own or len(first) == wanted):
            return tuple((own or first)[:wanted])
        line = shown
        if count == _HEADLINE_SCAN:
            break
    else:
        if not complete or not count:
            return None
    # All the lines the scan reads are read: the last one is judged alone.
    if not ended and _verdict(line, "") == _OWN:
        own.append(line)
    return tuple((own or first)[:wanted])


def _headlines(walk: Walk, wanted: int) -> tuple[str, ...]:
    """The first ``wanted`` lines of the sender's own text (_own_lines) in the
    first text/plain part, else in the first text/html part; when the part
    has none among its first _HEADLINE_SCAN lines, its first lines as they
    are (quotes, attributions and all)."""
    if wanted <= 0:
        return ()
    # One pass over a plain text's lines, most of the time (judging, and
    # cleaning, a text's lines twice or 200 of them was about half of the
    # extraction on real mail).
    found = _plain_headlines(walk, wanted)
    if found is not None:
        return found
    # Most texts have their first own lines near the top: read a few lines
    # first. _own_lines judges a line by it and the next one only, so
    # ``wanted`` own lines among all but the last line read are the ones the
    # whole scan gives; fewer lines than asked for are the whole text.
    scan = min(_HEADLINE_FIRST + wanted, _HEADLINE_SCAN)
    lines = _part_lines(walk, scan)
    if len(lines) == scan < _HEADLINE_SCAN:
        own = _own_lines(lines, judged=scan - 1)
        if len(own) >= wanted:
            return tuple(own[:wanted])
        lines = _part_lines(walk, _HEADLINE_SCAN)
    own = _own_lines(lines)
    return tuple((own or lines)[:wanted])


def _part_lines(walk: Walk, scan: int) -> list[str]:
    """The first ``scan`` shown lines of the first text/plain part, else of the
    first text/html part."""
    lines: list[str] = []
    if walk.plain is not None:
        lines = part_lines(walk.data, walk.plain, scan, False, _headline)
    if not lines and walk.html is not None:
        lines = part_lines(walk.data, walk.html, scan, True, _headline)
    return lines


def _to_cc(fields: tuple[HeaderField, ...]) -> tuple[str, str]:
    """The To and the Cc text, in one pass over the fields. Repeated To or Cc
    fields are read as one list, as most readers show them."""
    to: list[str] = []
    cc: list[str] = []
    for f in fields:
        key = f.name.lower()
        if key == "to":
            to.append(decode_header_text(f.value[:_MAX_RAW_HEADER]))
        elif key == "cc":
            cc.append(decode_header_text(f.value[:_MAX_RAW_HEADER]))
    return (", ".join(t for t in to if t.strip()) if to else "",
            ", ".join(t for t in cc if t.strip()) if cc else "")


def _text(values: dict[str, bytes], key: str) -> str:
    raw = values.get(key)
    return decode_header_text(raw[:_MAX_RAW_HEADER]) if raw else ""


def _extract(message: bytes, headlines: int) -> EnvelopeSummary:
    """The extraction proper; may raise only on a bug (the public wrapper logs it)."""
    walk = walk_message(message, keep=_SUMMARY_FIELDS, show_name=_clean_name,
                        max_names=MAX_ATTACHMENT_NAMES)
    fields = walk.fields
    values = walk.values
    subject_raw = values.get("subject")
    from_raw = values.get("from")
    date_raw = values.get("date")
    wanted = max(0, min(headlines, MAX_HEADLINES))
    attachment_names = _fit_names(walk.attachments, walk.names)
    to, cc = _to_cc(fields)
    # The list fields are absent from most mail; each gives "" then, as
    # _list_id, _auto_submitted and _clean give for "".
    return EnvelopeSummary(
        subject=_clean(
            decode_header_text(subject_raw[:_MAX_RAW_HEADER]) if subject_raw else "",
            MAX_SUBJECT_CHARS,
            _SUBJECT_OCTETS,
        ),
        from_name=_clean(
            display_name(from_raw) if from_raw else "", MAX_FROM_NAME_CHARS, _FROM_NAME_OCTETS
        ),
        to=_clean(to, MAX_ADDRESS_TEXT_CHARS, _TO_OCTETS),
        cc=_clean(cc, MAX_ADDRESS_TEXT_CHARS, _CC_OCTETS),
        date=_clean(
            decode_header_text(date_raw[:_MAX_RAW_HEADER]) if date_raw else "",
            MAX_DATE_CHARS,
            _DATE_OCTETS,
        ),
        attachments=walk.attachments,
        attachment_names=attachment_names,
        headlines=_headlines(walk, wanted),
        list_id=_list_id(_text(values, "list-id")) if "list-id" in values else "",
        auto_submitted=(_auto_submitted(_text(values, "auto-submitted"))
                        if "auto-submitted" in values else ""),
        list_unsubscribe=_clean(" ".join(_text(values, "list-unsubscribe").split()),
                                MAX_UNSUBSCRIBE_CHARS, MAX_UNSUBSCRIBE_CHARS)
        if "list-unsubscribe" in values else "",
        one_click_unsubscribe=bool(values.get("list-unsubscribe")) and (
            "list-unsubscribe=one-click"
            in "".join(_text(values, "list-unsubscribe-post").split()).lower()),
    )


def _extract_body(body: Body, headlines: int, chunk_size: int = _READ_CHUNK) -> EnvelopeSummary:
    """_extract on the skeleton of ``body``, read ``chunk_size`` octets at a time."""
    return _extract(message_skeleton(body.chunks(chunk_size)), headlines)


def extract_envelope(message: bytes | Body, *, headlines: int = 2) -> EnvelopeSummary:
    """The envelope of ``message`` (paper section 5.2 step 4). Never raises.

    ``headlines`` (at most :data:`MAX_HEADLINES`) is how many non-empty lines
    of the first text/plain part (else of the first text/html part, tags
    stripped) are kept.

    A :class:`~smdp.mail.body.Body` is read a chunk at a time and never whole
    (unless it is in memory and small): the envelope is extracted from its
    skeleton (:mod:`smdp.mail.mime.skeleton`), in memory bounded whatever the
    message size, and is the same as for the bytes. Only on hostile input
    whose skeleton passes SKELETON_CAP (4 MiB) or that has over
    MAX_DASH_LINES (10,000) possible delimiter lines is the rest not read,
    and the attachment count may then come out short.
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
    # Only when the message has them: an ordinary message's block is as before.
    if summary.list_id:
        lines.append("List-Id: " + _list_id(f"<{summary.list_id}>"))
    if summary.auto_submitted:
        lines.append("Auto-Submitted: " + _auto_submitted(summary.auto_submitted))
    if summary.list_unsubscribe:
        lines.append("List-Unsubscribe: " + _clean(summary.list_unsubscribe,
                                                    MAX_UNSUBSCRIBE_CHARS,
                                                    MAX_UNSUBSCRIBE_CHARS))
        if summary.one_click_unsubscribe:
            lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
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
        list_id=_list_id(f"<{values.get('list-id', '').strip()}>"),
        auto_submitted=_auto_submitted(values.get("auto-submitted", "")),
        list_unsubscribe=_clean(values.get("list-unsubscribe", "").strip(),
                                MAX_UNSUBSCRIBE_CHARS, MAX_UNSUBSCRIBE_CHARS),
        one_click_unsubscribe=bool(values.get("list-unsubscribe", "").strip())
        and "list-unsubscribe=one-click" in values.get("list-unsubscribe-post", "").lower(),
    )
    expires = _clean(values.get("expires", ""), MAX_EXPIRES_CHARS, _EXPIRES_OCTETS)
    return EnvelopeFields(summary, expires)
