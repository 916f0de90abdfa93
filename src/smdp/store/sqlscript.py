"""Reading the shipped SQL migration scripts into statements, for both
backends (neither driver runs a multi-statement script inside the
transaction each migration needs)."""

from __future__ import annotations


def split_statements(script: str) -> list[str]:
    """The statements of ``script``: ``--`` comment lines dropped, split at
    ``;``. The migrations hold no ``;`` inside strings or bodies."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
