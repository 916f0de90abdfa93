"""Reading the shipped SQL migration scripts into statements, for both
backends (neither driver runs a multi-statement script inside the
transaction each migration needs)."""

from __future__ import annotations

import re

_TRIGGER_BEGIN = re.compile(r"\bBEGIN\b", re.IGNORECASE)
_TRIGGER_END = re.compile(r";\s*END$", re.IGNORECASE)


def split_statements(script: str) -> list[str]:
    """The statements of ``script``: ``--`` comment lines dropped, split at
    ``;``. The migrations hold no ``;`` inside strings, except in a body
    that a ``;`` cannot end: a ``$$``-quoted one (PostgreSQL functions) or a
    SQLite ``CREATE TRIGGER``'s, which runs to ``END``."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    statements: list[str] = []
    current = ""
    for piece in "\n".join(lines).split(";"):
        current = f"{current};{piece}" if current else piece
        text = current.strip()
        if current.count("$$") % 2 == 1:
            continue  # inside a dollar-quoted body
        if (text.upper().startswith("CREATE TRIGGER") and _TRIGGER_BEGIN.search(text)
                and _TRIGGER_END.search(text) is None):
            continue  # inside a trigger's BEGIN ... END (a CASE's END is no ";" END)
        if text:
            statements.append(text)
        current = ""
    if current.strip():
        raise ValueError(f"unterminated body in a migration: {current.strip()[:60]!r}")
    return statements
