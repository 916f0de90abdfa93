"""Every corpus envelope unchanged: the extractor of a git revision against
the working tree's, message by message, over the whole corpus (issue 15,
item 5). Run it before replacing the extractor:

    .venv/bin/python -m bench.envelope_check [REV]     # REV: HEAD by default

The older ``smdp/core/envelope.py`` is loaded from ``git show`` beside the
current one (both use the same ``smdp.mail`` modules); the encoded envelope
blocks must be equal octet for octet, with 0, 1, 2 and 3 headlines.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from bench.common import REPO, corpus_files, iter_corpus, settings_from_env
from smdp.core import envelope as current


def _module_at(rev: str) -> ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:src/smdp/core/envelope.py"], cwd=REPO,
                            capture_output=True, check=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="smdp-envelope-check-"))
    path = folder / "envelope_old.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("smdp_envelope_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rev = args[0] if args else "HEAD"
    old = _module_at(rev)
    corpus = settings_from_env().corpus
    checked = differ = 0
    # The malformed messages too: where a shortcut would most likely differ.
    files = corpus_files(corpus) + [("malformed", p) for p in
                                    sorted((corpus / "malformed").rglob("*"))
                                    if p.is_file() and not p.name.startswith("README")]
    for message in iter_corpus(corpus, files):
        for headlines in (0, 1, 2, 3):
            a = old.encode_envelope_block(old.extract_envelope(message.data, headlines=headlines),
                                          expires="")
            b = current.encode_envelope_block(
                current.extract_envelope(message.data, headlines=headlines), expires="")
            checked += 1
            if a != b:
                differ += 1
                if differ <= 10:
                    print(f"differs: {message.name} headlines={headlines}\n  {rev}: {a!r}\n"
                          f"  now: {b!r}")
    print(f"{checked} envelopes compared ({checked // 4} messages x 4), {differ} differ")
    return 1 if differ or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
