"""The first lines of a text part: transfer decoding (RFC 2045 6), charset, HTML.

Only a prefix of a part is decoded, in growing steps until enough lines are
found, so a long part costs little more than a short one.
"""

from __future__ import annotations

import binascii
import html
from collections.abc import Callable

from smdp.mail.mime.charsets import decode_charset
from smdp.mail.mime.html import html_cut, strip_hidden, strip_markup
from smdp.mail.mime.walk import TextPart

__all__ = [
    "HTML_STEPS",
    "TEXT_STEPS",
    "ShowLine",
    "first_text_pieces",
    "html_lines",
    "part_lines",
    "take_lines",
]

# A line of text as it is to be shown, or "" for one not to show; an empty
# line is never shown (take_lines skips them without asking).
ShowLine = Callable[[str], str]
# Body text is decoded in growing prefixes until enough lines are found.
TEXT_STEPS = (8 * 1024, 64 * 1024, 256 * 1024)
HTML_STEPS = (16 * 1024, 128 * 1024)

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


# Markup is stripped a piece of about this many characters at a time, until
# enough lines are found: they usually come well before the end of the 16 KiB
# decoded, and stripping costs about 10 ns a character.
_HTML_PIECE = 2048


def take_lines(
    pieces: list[str], wanted: int, is_html: bool, lines: list[str], show_line: ShowLine
) -> None:
    """Add ``pieces`` as ``show_line`` leaves them, but those it leaves empty, to
    ``lines`` until it has ``wanted``."""
    for piece in pieces:
        if len(lines) >= wanted:
            return
        if not piece:
            continue  # shows nothing (ShowLine); a text has many
        if is_html:
            piece = html.unescape(piece)
        line = show_line(piece)
        if line:
            lines.append(line)


def html_lines(visible: str, wanted: int, complete: bool, show_line: ShowLine) -> list[str]:
    """The first ``wanted`` lines of strip_markup(visible).splitlines(), the last one
    dropped unless ``complete``, stripping markup a piece at a time (see html_cut);
    lines taken as by take_lines."""
    lines: list[str] = []
    carry = ""  # the stripped text after the lines taken so far
    pos = 0
    while True:
        cut = html_cut(visible, pos + _HTML_PIECE)
        if cut < 0:
            break
        # Line breaks in stripped text are all "\n" (other breaks are blanks,
        # collapsed), so split("\n") ends lines where splitlines() would.
        pieces = (carry + strip_markup(visible[pos:cut])).split("\n")
        pos = cut
        carry = pieces.pop()  # may go on in the next piece
        if not carry and pieces:
            # Nothing follows this line yet: it may be the last one, which is dropped.
            carry = pieces.pop() + "\n"
        take_lines(pieces, wanted, True, lines, show_line)
        if len(lines) >= wanted:
            return lines
    pieces = (carry + strip_markup(visible[pos:])).splitlines()
    if not complete and pieces:
        pieces.pop()  # may be cut in the middle
    take_lines(pieces, wanted, True, lines, show_line)
    return lines


def _prefix_text(data: bytes, part: TextPart, step: int) -> tuple[str, bool]:
    """The text of the first ``step`` octets of a part, cut after its last line
    end unless they are the whole part, and whether they are."""
    stop = min(part.end, part.start + step)
    complete = stop == part.end
    raw = data[part.start : stop]
    if not complete:
        cut = raw.rfind(b"\n")
        if cut > 0:
            raw = raw[: cut + 1]
    return decode_charset(_decode_body(raw, part.encoding), part.charset), complete


def first_text_pieces(data: bytes, part: TextPart) -> tuple[list[str], bool]:
    """The lines (str.splitlines) that part_lines reads of a text/plain part in
    its first step, up to the last LF of its text unless that step is the
    whole part, and whether it is.

    A later step decodes a longer prefix of the same octets: its lines begin
    with these (transfer and charset decoding go left to right, and
    bytes_to_text decides UTF-8 or Windows-1252 for each LF-ended line on
    that line alone). What follows the last LF is dropped, not just the last
    line: splitlines also ends lines at a CR, FF, NEL or U+2028, and a line
    so ended before that LF may yet decode otherwise once its LF-ended line
    is read whole (a Latin-1 line whose UTF-8 comes past the prefix). So
    whatever these lines decide about the part's first lines, a longer read
    decides the same.
    """
    text, complete = _prefix_text(data, part, TEXT_STEPS[0])
    if not complete:
        text = text[: text.rfind("\n") + 1]  # "" with no LF: nothing is known
    return text.splitlines(), complete


def part_lines(
    data: bytes, part: TextPart, wanted: int, is_html: bool, show_line: ShowLine
) -> list[str]:
    """The first ``wanted`` lines of a text part, as ``show_line`` leaves them, but
    those it leaves empty; decoding as little of the part as possible."""
    lines: list[str] = []
    for step in HTML_STEPS if is_html else TEXT_STEPS:
        text, complete = _prefix_text(data, part, step)
        if is_html:
            lines = html_lines(strip_hidden(text), wanted, complete, show_line)
        else:
            pieces = text.splitlines()
            if not complete and pieces:
                pieces.pop()  # may be cut in the middle
            lines = []
            take_lines(pieces, wanted, False, lines, show_line)
        if len(lines) >= wanted or complete:
            break
    return lines
