"""HTML made visible text: hidden elements dropped, blanks collapsed, tags stripped.

Not an HTML parser: a few linear regular expressions that find the lines a
reader would see at the start of an HTML part, which is all a preview
needs. Entities are left for the caller to unescape, line by line.
"""

from __future__ import annotations

import re

__all__ = ["collapse_blanks", "html_cut", "strip_hidden", "strip_markup"]

# Elements whose content is never shown: drop them with their content. An
# element that is not closed runs to the end, as in a browser.
_HIDDEN_OPEN = re.compile(r"<!--|<(script|style|title)\b", re.IGNORECASE)
_HIDDEN_CLOSE = {
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
    "title": re.compile(r"</title\s*>", re.IGNORECASE),
}
_COMMENT_CLOSE = re.compile(r"-->")
# "[^<>]*" rather than "[^>]*" keeps the scan linear on text full of "<".
# A tag starts with a letter (after "/" or "!"), as in HTML's tokenizer, so
# "a < b > c" stays text.
_BLOCK_TAG = re.compile(
    r"</?(?:br|p|div|tr|li|h[1-6]|table|blockquote|pre|hr|ul|ol|dt|dd)\b[^<>]*>",
    re.IGNORECASE,
)
_ANY_TAG = re.compile(r"<[/!?]?[A-Za-z][^<>]*>")


def strip_hidden(text: str) -> str:
    """``text`` without the elements that are never shown (see _HIDDEN_OPEN)."""
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
    return "".join(kept)


def collapse_blanks(text: str) -> str:
    """Each run of blanks made one space: ``re.sub(r"\\s+", " ", text)``, three times faster.

    str.split() splits at the same characters as the pattern's \\s (both are
    str.isspace), but drops the runs at either end, which are put back.
    """
    joined = " ".join(text.split())
    if not joined:
        return " " if text else ""
    if text[0].isspace():
        joined = " " + joined
    if text[-1].isspace():
        joined += " "
    return joined


def strip_markup(visible: str) -> str:
    """Visible HTML to text: blanks collapsed, block tags made line breaks, tags dropped."""
    text = collapse_blanks(visible)
    text = _BLOCK_TAG.sub("\n", text)
    return _ANY_TAG.sub("", text)


# Tries at finding a "<" that starts no block tag before html_cut gives up.
_HTML_CUT_TRIES = 16


def html_cut(visible: str, at: int) -> int:
    """A place at or after ``at`` where ``visible`` can be cut for strip_markup; or -1.

    At a "<" that starts no block tag, strip_markup(visible) is exactly
    strip_markup(visible[:cut]) + strip_markup(visible[cut:]): no blank run
    crosses the cut (a "<" is not blank), a tag match never contains a "<" past
    its first character, and the second half starts with a "<" that stays
    (not a line break an unclosed tag before the cut could run on through).
    """
    cut = visible.find("<", at)
    for _ in range(_HTML_CUT_TRIES):
        if cut < 0 or _BLOCK_TAG.match(visible, cut) is None:
            return cut
        cut = visible.find("<", cut + 1)
    return -1
