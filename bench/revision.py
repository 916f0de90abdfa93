"""The ``smdp`` package of a git revision, importable beside the working tree's.

Used to compare an older extractor with the current one in one process
(bench/envelope_check.py, bench/envelope_rounds.py). The revision's
``src/smdp`` is unpacked from ``git archive`` under another top-level name
and its own imports of ``smdp`` are renamed to match, so that the old
envelope module runs on the old MIME reader too, not on the current one.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

from bench.common import REPO

# "from smdp.x import", "import smdp.x", "from smdp import": the forms our
# modules use to import each other.
_IMPORT = re.compile(rb"^(\s*(?:from|import)\s+)smdp(?=[.\s])", re.MULTILINE)


def module_at(rev: str, name: str = "smdp.core.envelope") -> ModuleType:
    """Module ``name`` of ``smdp`` as it was at ``rev`` (its package renamed)."""
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO,
                            capture_output=True, check=True, text=True).stdout.strip()
    package = f"smdp_at_{commit}"
    if package not in sys.modules:
        archive = subprocess.run(["git", "archive", "--format=tar", commit, "src/smdp"],
                                 cwd=REPO, capture_output=True, check=True).stdout
        folder = Path(tempfile.mkdtemp(prefix="smdp-rev-"))
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.endswith(".py"):
                    continue
                relative = Path(member.name).relative_to("src/smdp")
                source = tar.extractfile(member)
                assert source is not None
                target = folder / package / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_IMPORT.sub(rb"\1" + package.encode(), source.read()))
        sys.path.insert(0, str(folder))
    return importlib.import_module(package + name.removeprefix("smdp"))
