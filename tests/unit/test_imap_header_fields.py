"""BODY[HEADER.FIELDS (...)] as one regular expression (imap_server
``header_fields`` with ``keep``; docs/imap.md "Speed"): the same answer as
the field-by-field reading of ``HEADER.FIELDS.NOT``, on the shapes a header
takes, and on hostile ones; and the answers kept within their octets."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from smdp.server import imap_server
from smdp.server.imap_server import header_fields

NAMES = {"SUBJECT", "FROM", "X-A"}


def by_lines(header: bytes, names: set[str]) -> bytes:
    """The fields named, by the complement of the other fields: the loop
    HEADER.FIELDS.NOT still runs, written once more as a reference."""
    others = {line.split(b":", 1)[0].strip().decode("ascii", "replace").upper()
              for line in header.split(b"\r\n") if line and line[:1] not in (b" ", b"\t")}
    return header_fields(header, others - names, keep=False)


def test_the_shapes_of_a_header() -> None:
    cases = {
        # the first line, folded lines, a name's case, blanks before the colon
        b"subject : hi\r\n\tthere\r\nTo: b\r\nFrom: a\r\n\r\n":
            b"subject : hi\r\n\tthere\r\nFrom: a\r\n\r\n",
        # a longer name that starts with a wanted one; a name alone on its line
        b"Subject-X: no\r\nX-A\r\nX-AB: no\r\n\r\n": b"\r\n",
        # a header cut short: its last line, without CRLF, counts too
        b"To: b\r\nSubject: cut sh": b"Subject: cut sh\r\n\r\n",
        b"To: b\r\nSubject: ends\r\n": b"Subject: ends\r\n\r\n",
        # a bare LF belongs to its line, as CRLF alone ends one
        b"To: b\nSubject: inside To\r\nFrom: a\r\n\r\n": b"From: a\r\n\r\n",
        b"": b"\r\n",
    }
    for header, fields in cases.items():
        assert header_fields(header, NAMES, keep=True) == fields, header


@given(st.lists(st.sampled_from([b"Subject: s", b"from:x", b"To: t", b" folded", b"\tf",
                                 b"X-A : 1", b"X-AB: 2", b"subject", b"\n", b"\r", b":",
                                 b"", b"\xff: y"]), max_size=12),
       st.booleans())
def test_the_same_as_reading_field_by_field(lines: list[bytes], blank: bool) -> None:
    fields = b"\r\n".join(lines)
    assume(b"\r\n\r\n" not in fields)  # a header ends at its first blank line (_header)
    header = fields + (b"\r\n\r\n" if blank else b"")
    names = {"SUBJECT", "X-A"}
    # The reference keeps a line that is a wanted name alone (no colon); a
    # field has a colon (RFC 5322), and the expression asks for one.
    assume(not any(line.strip().upper() in (b"SUBJECT", b"X-A")
                   for line in header.split(b"\r\n")))
    assert header_fields(header, names, keep=True) == by_lines(header, names)


def test_kept_answers_stay_within_their_octets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imap_server, "FIELDS_KEPT_OCTETS", 10)
    kept = imap_server._FieldsKept()
    kept.put((1, "HEADER.FIELDS", ("SUBJECT",)), b"x" * 6)
    kept.put((2, "HEADER.FIELDS", ("SUBJECT",)), b"y" * 3)
    assert kept.get((1, "HEADER.FIELDS", ("SUBJECT",))) == b"x" * 6  # now the most recent
    kept.put((3, "HEADER.FIELDS", ("SUBJECT",)), b"z" * 4)  # 13 octets: the oldest goes
    assert kept.get((2, "HEADER.FIELDS", ("SUBJECT",))) is None
    assert kept.octets == 10 and len(kept.answers) == 2
