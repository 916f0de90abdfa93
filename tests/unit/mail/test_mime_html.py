"""HTML made text (smdp.mail.mime.html) and its lines, piece by piece (smdp.mail.mime.text).

The lines are taken with the envelope's headline filter, as in production.
"""

from __future__ import annotations

import random
import re

import pytest

from smdp.core.envelope import _headline
from smdp.mail.mime import text as text_module
from smdp.mail.mime.html import _ANY_TAG, _BLOCK_TAG, collapse_blanks, strip_hidden, strip_markup
from smdp.mail.mime.text import html_lines, take_lines


def test_collapse_blanks_is_the_substitution() -> None:
    rnd = random.Random(14)
    atoms = ["a", "b c", " ", "  ", "\n", "\r\n", "\t", "\x0b", "\x1c", "\x85", "\xa0",
             "\u2028", "\u3000", "\u200b", "x"]
    for _ in range(20_000):
        text = "".join(rnd.choice(atoms) for _ in range(rnd.randint(0, 12)))
        assert collapse_blanks(text) == re.sub(r"\s+", " ", text), repr(text)


_HTML_ATOMS = [
    "<br>", "<BR/>", "<p>", "</p>", "<div class=x>", "<b>", "</b>", "<a href='x'>", "<a", ">",
    "<", "<!--", "-->", "<script>", "</script>", "<style>", "</style >", "<title>", "</title>",
    "hello", "world", " ", "  ", "\n", "\r\n", "\t", "\x1c", "\x85", "\u2028", "\x0b", "&amp;",
    "&#10;", "&lt;br&gt;", "&nbsp;", "<tr", "<li>", "<h1>", "<hr/>", "<!doctype html>", "<?x?>",
    "a<b>c", "\u202e", "\x00", "é", "<br", "<p\n>", "<td>", "<TABLE>", "<pre>", "</ li>",
]


def _html_lines_whole(text: str, wanted: int, complete: bool) -> list[str]:
    """The first ``wanted`` headlines of an HTML text, stripping all markup at once."""
    stripped = strip_markup(strip_hidden(text))
    assert stripped == _ANY_TAG.sub(
        "", _BLOCK_TAG.sub("\n", re.sub(r"\s+", " ", strip_hidden(text))))
    pieces = stripped.splitlines()
    if not complete and pieces:
        pieces.pop()
    lines: list[str] = []
    take_lines(pieces, wanted, True, lines, _headline)
    return lines


def test_html_lines_piece_by_piece_match_the_whole_text(monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(15)
    for _ in range(5_000):
        text = "".join(rnd.choice(_HTML_ATOMS) for _ in range(rnd.randint(0, 60)))
        monkeypatch.setattr(text_module, "_HTML_PIECE", rnd.choice([1, 2, 5, 10, 30, 100]))
        wanted = rnd.choice([1, 2, 3, 10])
        complete = rnd.random() < 0.5
        assert html_lines(strip_hidden(text), wanted, complete, _headline) == (
            _html_lines_whole(text, wanted, complete)), (text, wanted, complete)
