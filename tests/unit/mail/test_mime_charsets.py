"""Text from octets (smdp.mail.mime.charsets): the fast path against its plain definition."""

from __future__ import annotations

import random
import re

from smdp.mail.mime.charsets import _UTF8_SEQUENCE, bytes_to_text


def test_utf8_sequence_pattern_is_the_plain_alternation() -> None:
    plain = re.compile(
        rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
    )
    rnd = random.Random(12)
    octets = b"\xc1\xc2\xdf\xe0\xef\xf0\xf4\xf5\x80\xbf\xc0\x7fa\n"
    for _ in range(20_000):
        data = bytes(rnd.choice(octets) for _ in range(rnd.randint(0, 12)))
        assert [m.span() for m in _UTF8_SEQUENCE.finditer(data)] == [
            m.span() for m in plain.finditer(data)
        ], data


def _bytes_to_text_by_lines(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines = raw.split(b"\n")
    for index, line in enumerate(lines):
        if _UTF8_SEQUENCE.search(line):
            lines[index] = line.decode("utf-8", "replace").encode("utf-8")
        else:
            lines[index] = line.decode("cp1252", "replace").encode("utf-8")
    return b"\n".join(lines).decode("utf-8")


def test_bytes_to_text_matches_the_line_by_line_decoding() -> None:
    rnd = random.Random(13)
    atoms = [b"a", b"\n", b"\n\n", b"\xe9", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80",
             b"\x81", b"\x80", b"\xc3", b" ", b"\r\n", b"\xff", b"\xed\xa0\x80"]
    for _ in range(20_000):
        raw = b"".join(rnd.choice(atoms) for _ in range(rnd.randint(0, 25)))
        assert bytes_to_text(raw) == _bytes_to_text_by_lines(raw), raw
