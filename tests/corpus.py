"""Where the shared real-mail corpus is, for the tests that read it.

``SMDP_CORPUS`` names the folder (a relative path is taken from the
repository root); without it, ``../shared/corpus`` beside the repository, as
for ``make bench``. A fresh clone has no corpus: the tests that need it are
then skipped with a reason that says where they looked, shown by ``-ra``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    configured = os.environ.get("SMDP_CORPUS")
    path = Path(configured) if configured else REPO.parent / "shared" / "corpus"
    return path if path.is_absolute() else REPO / path


CORPUS = corpus_dir()


def needs_corpus(part: str = "") -> pytest.MarkDecorator:
    """Skip unless ``CORPUS / part`` is a folder, saying where it was looked for."""
    folder = CORPUS / part if part else CORPUS
    return pytest.mark.skipif(
        not folder.is_dir(),
        reason=f"mail corpus not found: no folder {folder} (set SMDP_CORPUS; "
               "default ../shared/corpus beside the repository)")
