"""Text from octets: a declared charset (RFC 2045 5.1, RFC 2046 4.1.2), or a guess.

Mail declares its charsets badly: labels Python does not know, codecs that
are no charsets at all, and 8-bit text that declares nothing. Every function
here gives text for any octets and never raises.
"""

from __future__ import annotations

import re

__all__ = ["bytes_to_text", "decode_charset"]

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


def bytes_to_text(raw: bytes) -> str:
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


def decode_charset(raw: bytes, charset: str) -> str:
    label = charset.strip().strip('"').lower()
    label = _CHARSET_ALIASES.get(label, label)
    if label in _ASCII_LABELS or label in _CHARSET_DENY or len(label) > 40:
        return bytes_to_text(raw)
    try:
        return raw.decode(label, "replace")
    except Exception:  # unknown or non-text codec, or a broken decoder
        return bytes_to_text(raw)
