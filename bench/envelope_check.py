"""Every corpus envelope unchanged: the extractor of a git revision against
the working tree's, message by message, over the whole corpus (issue 15,
item 5). Run it before replacing the extractor:

    .venv/bin/python -m bench.envelope_check [REV]     # REV: HEAD by default

The revision's whole ``smdp`` package is loaded beside the current one
(bench/revision.py), so that a change to the MIME reader (``smdp.mail.mime``)
is compared too, not only one to ``smdp/core/envelope.py``; the encoded
envelope blocks must be equal octet for octet, with 0, 1, 2 and 3 headlines.
"""

from __future__ import annotations

import dataclasses
import sys

from bench.common import corpus_files, iter_corpus, settings_from_env
from bench.revision import module_at
from smdp.core import envelope as current


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    rev = args[0] if args else "HEAD"
    old = module_at(rev)
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
            # The summaries too, field by field: the block re-cleans them.
            a_fields = dataclasses.astuple(old.extract_envelope(message.data,
                                                                headlines=headlines))
            b_fields = dataclasses.astuple(current.extract_envelope(message.data,
                                                                    headlines=headlines))
            checked += 1
            if a != b or a_fields != b_fields:
                differ += 1
                if differ <= 10:
                    print(f"differs: {message.name} headlines={headlines}\n  {rev}: {a!r}\n"
                          f"  now: {b!r}")
    print(f"{checked} envelopes compared ({checked // 4} messages x 4), {differ} differ")
    return 1 if differ or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
