"""Header values as text: RFC 2047 encoded words, raw 8-bit, and a From's display name."""

from __future__ import annotations

import binascii
import re

from smdp.mail.mime.charsets import bytes_to_text, decode_charset

__all__ = ["QUOTED_PAIR", "decode_header_text", "display_name", "phrase_text"]

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
        return bytes_to_text(raw)
    out: list[str] = []
    pending = b""
    pending_charset: str | None = None
    pos = 0
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        if pending_charset is None or between.strip(_BLANKS):
            if pending_charset is not None:
                out.append(decode_charset(pending, pending_charset))
                pending, pending_charset = b"", None
            out.append(bytes_to_text(between))
        charset = match.group(1).decode("ascii", "replace").split("*", 1)[0]
        payload = _decode_word_payload(match.group(2), match.group(3))
        if pending_charset is not None and charset.lower() != pending_charset.lower():
            out.append(decode_charset(pending, pending_charset))
            pending = b""
        pending_charset = charset
        pending += payload
        pos = match.end()
    if pending_charset is not None:
        out.append(decode_charset(pending, pending_charset))
    out.append(bytes_to_text(raw[pos:]))
    return "".join(out)


# RFC 5322 3.2.1 quoted-pair: a backslash and the character it quotes.
QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
# A From value is cut to this before its display name is looked for.
_MAX_RAW_ADDRESS = 4 * 1024
# The phrase before the first "<" that is not inside a quoted string.
_NAME_BEFORE_ANGLE = re.compile(r'((?:"(?:[^"\\]|\\.)*+"|[^"<])*+)<', re.DOTALL)


def display_name(raw: bytes) -> str:
    """The display name of the first mailbox of a From value, decoded.

    Not :func:`email.utils.parseaddr`: it recurses once per nested comment
    and raises RecursionError on a From of a few thousand "(". The name is
    cut out of the raw value and decoded afterwards, since decoding first
    could turn an encoded "<" into syntax.
    """
    text = raw[:_MAX_RAW_ADDRESS].decode("latin-1")
    match = _NAME_BEFORE_ANGLE.match(text)
    if match is not None:
        return phrase_text(match.group(1))
    # "addr (Name)", the old comment form.
    opening, closing = text.find("("), text.rfind(")")
    name = text[opening + 1 : closing].strip() if 0 <= opening < closing else ""
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = QUOTED_PAIR.sub(r"\1", name[1:-1])
    return decode_header_text(name.encode("latin-1"))


# A quoted string (RFC 5322 3.2.4), its closing quote optional: an unclosed
# one runs to the end. An atom, loosely: anything up to a blank, a quote or
# a comment (obs-phrase allows "." in it, and real names hold other specials).
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*+)"?', re.DOTALL)
_ATOM = re.compile(r'[^ \t\r\n"(]++')


def _comment_end(text: str, pos: int) -> int:
    """Where the comment that opens at ``text[pos]`` ends (past its ")", or the
    end of the text); comments nest and hold quoted pairs (RFC 5322 3.2.2)."""
    depth = 0
    size = len(text)
    while pos < size:
        char = text[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return size


def phrase_text(phrase: str) -> str:
    """A display name as RFC 5322 reads it (3.2.5 phrase, 4.1 obs-phrase),
    decoded: a sequence of words, each an atom or a quoted string; comments
    are not part of it. The words, quotes and quoted pairs undone, are joined
    with single spaces, so ``"John" "Smith"`` and ``"" Angles " Puglisi"``
    read "John Smith" and "Angles Puglisi". Encoded words (RFC 2047) are
    decoded, with no space between two adjacent ones (6.2); those inside
    quoted strings too, as most readers do. ``phrase`` is the raw value as
    latin-1 text.
    """
    if phrase.isascii() and "(" not in phrase and "\\" not in phrase and "=?" not in phrase:
        # Most names: no comment, quoted pair or encoded word, and ASCII, so
        # each word decodes to itself; the words are the text between blanks
        # and quotes, joined with single spaces as _phrase_words joins them.
        return " ".join(phrase.replace('"', " ").split())
    return _phrase_words(phrase)


def _phrase_words(phrase: str) -> str:
    """phrase_text, word by word."""
    words: list[str] = []
    encoded: list[bytes] = []  # a run of atoms that are encoded words

    def end_run() -> None:
        if encoded:
            words.append(decode_header_text(b" ".join(encoded)))
            encoded.clear()

    pos, size = 0, len(phrase)
    while pos < size:
        char = phrase[pos]
        if char in " \t\r\n":
            pos += 1
        elif char == "(":
            pos = _comment_end(phrase, pos)
        elif char == '"':
            quoted = _QUOTED.match(phrase, pos)
            assert quoted is not None  # matches any text that starts with a quote
            end_run()
            words.append(decode_header_text(
                QUOTED_PAIR.sub(r"\1", quoted.group(1)).encode("latin-1")))
            pos = quoted.end()
        else:
            atom = _ATOM.match(phrase, pos)
            assert atom is not None  # char is none of the characters it stops at
            word = atom.group().encode("latin-1")
            if _ENCODED_WORD.fullmatch(word):
                encoded.append(word)
            else:
                end_run()
                words.append(decode_header_text(word))
            pos = atom.end()
    end_run()
    return " ".join(" ".join(words).split())
