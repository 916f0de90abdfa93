"""MIME parameters: ``type/subtype; name=value`` (RFC 2045 5.1) and RFC 2231 values.

RFC 2231 extends parameter values with a charset and percent-encoding
(``name*=utf-8''%C3%A9``) and with continuations (``name*0``, ``name*1*``...).
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from smdp.mail.mime.charsets import bytes_to_text, decode_charset
from smdp.mail.mime.header_text import QUOTED_PAIR, decode_header_text

__all__ = ["param_text", "parse_params"]

# Values longer than this are cut before parsing; far more than any
# boundary, charset or file name needs.
_MAX_RAW_VALUE = 32 * 1024
# Possessive quantifiers and a separate skip keep parsing linear: spam has
# "Content-Type: text/html ; ; ; ..." thousands long, which made a
# backtracking pattern quadratic (0.6 s for one 24 KB message).
_PARAM_SKIP = re.compile(r"[ \t;]*+")
_PARAM_NAME = re.compile(r"([^\s=;\"]++)[ \t]*+=[ \t]*+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
_MAX_PARAMS = 64


def parse_params(value: bytes) -> tuple[str, dict[str, str]]:
    """Split ``type/sub; a=b; c="d"`` into the lower-cased first token and parameters.

    The bytes are read as Latin-1, a lossless mapping, so boundaries round-trip
    exactly and 8-bit names can be decoded later.
    """
    text = value[:_MAX_RAW_VALUE].decode("latin-1")
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
            param = QUOTED_PAIR.sub(r"\1", quoted.group(1))
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
        return decode_charset(unquote_to_bytes(pieces[2]), pieces[0])
    return bytes_to_text(unquote_to_bytes(value))


def param_text(params: dict[str, str], key: str) -> str | None:
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
        return bytes_to_text(joined) if charset is None else decode_charset(joined, charset)
    plain = params.get(key)
    if plain is None:
        return None
    # Many mailers put RFC 2047 words inside quoted parameters; decode them too.
    return decode_header_text(plain.encode("latin-1"))
