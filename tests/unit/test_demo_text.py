"""README.md's "Trying it" and what ``make run`` prints are one session: the
same commands, with the demo's default ports (issue 10, item 4)."""

from __future__ import annotations

import re
from pathlib import Path

from smdp.server.demo import instructions

README = Path(__file__).resolve().parents[2] / "README.md"


def commands(text: str) -> list[str]:
    """The shell commands of ``text``, a continued line joined to its first."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [line.strip() for line in joined.splitlines()
            if line.strip().startswith(("echo ", "SMDP_PASSWORD="))]


def test_the_readme_shows_the_session_the_demo_prints() -> None:
    readme = README.read_text(encoding="utf-8")
    trying = readme[readme.index("## Trying it"):readme.index("## Running a server")]
    printed = commands(instructions(2526, 2528))  # make run: base port 2525
    assert printed == commands(trying)
    assert any(" accept 1" in c for c in printed) and any(" read 1" in c for c in printed)
