"""The MIME walk (smdp.mail.mime.walk) as a library, without the envelope's rules.

The envelope tests (tests/unit/test_envelope.py) cover what the walk finds in
real and broken mail; these cover what its callers choose: the top fields
returned, how attachment names are shown and how many are kept.
"""

from __future__ import annotations

import base64

from hypothesis import example, given
from hypothesis import strategies as st

from smdp.mail.mime import MAX_HEADER_OCTETS, walk_message
from smdp.mail.mime.text import part_lines
from smdp.mail.mime.walk import _find_delimiter


def _mixed(count: int) -> bytes:
    parts = [
        f'--b\r\nContent-Type: application/pdf; name="r{i},{i}.pdf"\r\n\r\nx\r\n'
        for i in range(count)
    ]
    return (
        b"From: A <a@x>\r\nSubject: s\r\nX-Other: o\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n\r\nsecond\r\n"
        + "".join(parts).encode()
        + b"--b--\r\n"
    )


def test_fields_asked_for_and_the_mime_ones_are_returned() -> None:
    walk = walk_message(_mixed(1), keep=frozenset({"subject"}))
    assert [f.key for f in walk.fields] == ["subject", "content-type"]
    assert walk.values["subject"] == b"s"


def test_names_as_given_by_default_else_as_shown() -> None:
    walk = walk_message(_mixed(3))
    assert walk.attachments == 3 and walk.names == ["r0,0.pdf", "r1,1.pdf", "r2,2.pdf"]
    hidden = walk_message(_mixed(4), show_name=lambda n: "" if n.startswith("r1") else n.upper(),
                          max_names=2)
    assert hidden.attachments == 4 and hidden.names == ["R0,0.PDF", "R2,2.PDF"]


def test_text_part_lines_as_the_caller_shows_them() -> None:
    walk = walk_message(_mixed(1))
    assert walk.plain is not None and walk.html is None
    assert part_lines(walk.data, walk.plain, 5, False, str.upper) == ["FIRST", "SECOND"]
    assert part_lines(walk.data, walk.plain, 1, False, str.strip) == ["first"]


def test_mbox_line_and_oversized_header() -> None:
    assert walk_message(b"From x\nSubject: y\n\nbody\n", keep=frozenset({"subject"})
                        ).values == {"subject": b"y"}
    huge = b"X: " + b"a" * MAX_HEADER_OCTETS + b"\r\nContent-Type: multipart/mixed\r\n\r\n"
    walk = walk_message(huge + b"--b\r\n\r\ntext\r\n")
    assert walk.parts == 0 and walk.plain is None


@given(st.lists(st.sampled_from([b"-", b"--", b"--b", b"--bb", b"x", b"\r\n", b"QUJD"]),
                max_size=30),
       st.sampled_from([b"--b", b"--bb", b"--", b"---b"]), st.integers(0, 60),
       st.integers(0, 60), st.integers(0, 12))
# A delimiter that starts just past a window after a miss.
@example([b"---b"], b"--b", 0, 4, 0)
@example([b"-xx", b"--b"], b"--b", 0, 6, 2)
def test_delimiter_search_is_bytes_find(pieces: list[bytes], delimiter: bytes, pos: int,
                                        end: int, window: int) -> None:
    """Going from "-" to "-" (and bytes.find in a window after each miss) finds
    what bytes.find finds, with any window, at any start and end."""
    data = b"".join(pieces)
    assert _find_delimiter(data, delimiter, pos, end, window) == data.find(delimiter, pos, end)


def test_a_base64_attachment_is_crossed_between_its_delimiters() -> None:
    body = base64.encodebytes(bytes(range(256)) * 400).replace(b"\n", b"\r\n")
    data = (b'Content-Type: multipart/mixed; boundary="=_b-1"\r\n\r\n'
            b"--=_b-1\r\nContent-Type: text/plain\r\n\r\nsee the - attached - file\r\n"
            b"--=_b-1\r\nContent-Type: application/pdf; name=\"a-b.pdf\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + body + b"--=_b-1--\r\n")
    walk = walk_message(data)
    assert walk.attachments == 1 and walk.names == ["a-b.pdf"] and walk.plain is not None
    assert walk.data[walk.plain.start:walk.plain.end] == b"see the - attached - file"
