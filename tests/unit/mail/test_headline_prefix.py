"""The one-pass headlines (envelope._plain_headlines, from the first 8 KiB
step) give what the growing-prefix scan gives: the scan below is the
extractor's before the one-pass reading (4a433bf), kept here as the reference.

The case that differed: text whose lines end at a CR (or FF, NEL, U+2028),
not an LF, and whose first LF-ended line runs past the first step. Undeclared
8-bit text is decoded UTF-8 or Windows-1252 per LF-ended line
(charsets.bytes_to_text), so the first step read a Latin-1 "café" while the
whole line, with UTF-8 later in it, reads "caf\ufffd".
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smdp.core import envelope as env
from smdp.mail.mime import walk_message


def _scan_headlines(message: bytes, wanted: int) -> tuple[str, ...]:
    """envelope._headlines as it was before the one-pass reading."""
    walk = walk_message(message)
    scan = min(env._HEADLINE_FIRST + wanted, env._HEADLINE_SCAN)
    lines = env._part_lines(walk, scan)
    if len(lines) == scan < env._HEADLINE_SCAN:
        own = env._own_lines(lines, judged=scan - 1)
        if len(own) >= wanted:
            return tuple(own[:wanted])
        lines = env._part_lines(walk, env._HEADLINE_SCAN)
    own = env._own_lines(lines)
    return tuple((own or lines)[:wanted])


def _message(lines: list[bytes], sep: bytes, head: bytes) -> bytes:
    return b"Subject: s\r\n" + head + b"\r\n" + sep.join(lines)


def test_latin1_line_before_utf8_in_one_long_cr_line() -> None:
    body = [b"caf\xe9 au lait", b"second line", b"third", b"y" * 9000, b"\xc3\xa9t\xc3\xa9"]
    for sep in (b"\r", b"\x0c"):
        message = _message(body, sep, b"")
        for wanted in (1, 2):
            got = env.extract_envelope(message, headlines=wanted).headlines
            assert got == _scan_headlines(message, wanted)
            assert got[0] == "caf\ufffd au lait"


# Lines without UTF-8 (Latin-1 or ASCII) for the first step, any after it.
_FIRST_LINES = st.sampled_from([
    b"Hello there", b"caf\xe9", b"na\xefve", b"> quoted", b"On Mon, A wrote:", b"-- ",
    b"-----Original Message-----", b"From: x", b"", b"x" * 300,
])
_LINES = _FIRST_LINES | st.sampled_from([b"\xc3\xa9t\xc3\xa9", b"\xc2\x85nel"])
_SEPARATORS = st.sampled_from([b"\n", b"\r\n", b"\r", b"\x0c", b"\x0b", b"\x1c"])
_HEADS = st.sampled_from([
    b"", b"Content-Type: text/plain; charset=utf-8\r\n",
    b"Content-Type: text/plain; charset=us-ascii\r\n",
    b"Content-Type: text/plain; charset=iso-8859-1\r\n",
])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FIRST_LINES, max_size=8), st.integers(6000, 9000), st.lists(_LINES, max_size=12),
       _SEPARATORS, _HEADS, st.integers(1, 10))
@example([b"caf\xe9 au lait", b"second line", b"third"], 9000, [b"\xc3\xa9t\xc3\xa9"],
         b"\r", b"", 1)
def test_one_pass_headlines_are_the_scan_s(first: list[bytes], long: int, rest: list[bytes],
                                           sep: bytes, head: bytes, wanted: int) -> None:
    # A few lines, one long enough to reach past the first step, then more.
    message = _message([*first, b"w" * long, *rest], sep, head)
    assert env.extract_envelope(message, headlines=wanted).headlines == \
        _scan_headlines(message, wanted)
