"""Header values as text (smdp.mail.mime.header_text): RFC 2047 words and display names."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smdp.mail.mime.header_text import (
    _phrase_words,
    decode_header_text,
    display_name,
    phrase_text,
)


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"plain", "plain"),
        (b"=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),
        (b"=?utf-8?q?a?= x =?utf-8?q?b?=", "a x b"),
        (b"=?UTF-8?B?5pel?==?UTF-8?B?5pys?=", "日本"),
        # One character split over two words: joined before decoding.
        (b"=?utf-8?b?" + base64.b64encode("é".encode()[:1]) + b"?= =?utf-8?b?"
         + base64.b64encode("é".encode()[1:]) + b"?=", "é"),
        (b"=?utf-8*en?q?lang?=", "lang"),
        (b"=?utf-8?b?!!!?=", ""),
        (b"=?no-such-charset?q?ok?=", "ok"),
        (b"=?utf-8?q?broken", "=?utf-8?q?broken"),
        (b"=?iso-8859-1?q?=E9?= =?utf-8?q?=C3=A9?=", "éé"),
        (b"caf\xe9", "café"),
        (b"caf\xc3\xa9 \xff", "café \ufffd"),  # UTF-8 with one stray byte
    ],
)
def test_decode_header_text(raw: bytes, text: str) -> None:
    assert decode_header_text(raw) == text


@given(st.lists(st.sampled_from(['"', " ", "\t", "\x0b", "\xa0", "John", "O'Neil", ")", "<",
                                 "=?utf-8?q?J=C3=A9?=", "=?", "\\", "(c)", "caf\u00e9", ","]),
                max_size=12))
def test_plain_phrase_shortcut_reads_words_as_the_full_reader(words: list[str]) -> None:
    """An ASCII phrase without comment, quoted pair or encoded word is read by a
    shortcut: the same text as the word-by-word reader gives."""
    phrase = "".join(words)
    assert phrase_text(phrase) == _phrase_words(phrase)


def test_display_name_forms() -> None:
    for raw, name in [
        (b'"Doe, John" <j@x>', "Doe, John"),
        (b"j@x (John Doe)", "John Doe"),
        (b"j@x", ""),
        (b'"a \\" b" <x@y>', 'a " b'),
        (b"(" * 5000, ""),  # email.utils.parseaddr would raise RecursionError
        (b'"" Angles " Puglisi" <a@x>', "Angles Puglisi"),  # a phrase of several words
        (b'"John" "Smith" <j@x>', "John Smith"),
        (b'"unclosed " (comment (nested) \\) still) <x@y>', "unclosed"),
        (b'"' * 3000 + b" <x@y>", ""),
    ]:
        assert display_name(raw) == name
