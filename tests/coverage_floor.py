"""Fail ``make test`` when line or branch coverage falls below its floor.

coverage.py's own ``fail_under`` checks one figure that mixes lines and
branches; the project keeps a floor for each (pyproject.toml,
``[tool.smdp.coverage-floor]``). Reads the JSON report that ``coverage json``
wrote (default ``coverage.json``) and prints both figures.
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path


def main(argv: list[str]) -> int:
    report = Path(argv[1] if len(argv) > 1 else "coverage.json")
    totals = json.loads(report.read_text())["totals"]
    floors = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["smdp"]["coverage-floor"]
    figures = {
        "lines": (totals["percent_statements_covered"], totals["covered_lines"],
                  totals["num_statements"]),
        "branches": (totals["percent_branches_covered"], totals["covered_branches"],
                     totals["num_branches"]),
    }
    failed = False
    for name, (percent, covered, total) in figures.items():
        floor = float(floors[name])
        verdict = "ok" if percent >= floor else "BELOW THE FLOOR"
        failed |= percent < floor
        print(f"coverage: {name} {percent:.1f}% ({covered}/{total}), floor {floor:.1f}%: "
              f"{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
