"""The MIME structure IMAP's BODYSTRUCTURE and part sections read
(``server/imap_structure.py``): the same answer however the message is cut
into chunks, part offsets at RFC 2046's places, broken messages read as
common readers do, and the bounds."""

from __future__ import annotations

import pytest

from smdp.mail.mime.walk import MAX_PARTS
from smdp.server.imap_structure import LINE_KEEP, body_structure, section_range, structure

NESTED = (
    b"Subject: nested\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n"
    b"--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n"
    b"--b\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--b--\r\n"
    b"--a\r\nContent-Type: multipart/digest; boundary=c\r\n\r\n"
    b"--c\r\n\r\nSubject: one\r\n\r\nfirst\r\n--c--\r\nepilogue\r\n--a--\r\n")


def no_envelope(header: bytes) -> bytes:
    return b"ENV"


def sections(data: bytes, names: list[str], size: int) -> dict[str, bytes | None]:
    top = structure(data[i:i + size] for i in range(0, len(data), size))
    found = {name: section_range(top, name) for name in names}
    return {name: None if r is None else data[r[0]:r[1]] for name, r in found.items()}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 100_000])
def test_parts_are_found_however_the_message_is_chunked(size: int) -> None:
    got = sections(NESTED, ["1", "1.1", "1.2", "1.2.MIME", "2", "2.1", "2.1.HEADER",
                            "2.1.TEXT", "3", "1.1.1", "1.1.TEXT", "1.MIME.X"], size)
    assert got == {
        "1": (b"--b\r\n\r\nplain\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
              b"--b--"),
        "1.1": b"plain", "1.2": b"<p>html</p>", "1.2.MIME": b"Content-Type: text/html\r\n\r\n",
        "2": b"--c\r\n\r\nSubject: one\r\n\r\nfirst\r\n--c--\r\nepilogue",
        "2.1": b"Subject: one\r\n\r\nfirst", "2.1.HEADER": b"Subject: one\r\n\r\n",
        "2.1.TEXT": b"first", "3": None, "1.1.1": None, "1.1.TEXT": None, "1.MIME.X": None}
    top = structure(NESTED[i:i + size] for i in range(0, len(NESTED), size))
    assert body_structure(top, no_envelope, extended=False) == (
        b'((("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1)'
        b'("TEXT" "HTML" NIL NIL NIL "7BIT" 11 1) "ALTERNATIVE")'
        b'(("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 21 ENV '
        b'("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1) 3) "DIGEST") "MIXED")')


def test_a_message_that_is_not_multipart() -> None:
    data = b"Subject: x\r\nContent-Type: text/plain; charset=\"\xe9t\xe9\"\r\n\r\nbody\r\nend"
    assert sections(data, ["1", "1.MIME", "1.HEADER", "2"], 7) == {
        "1": b"body\r\nend", "1.MIME": None, "1.HEADER": None, "2": None}
    # A parameter that is not ASCII goes out as a literal of its octets.
    assert b'("CHARSET" {3}\r\n\xe9t\xe9)' in body_structure(structure([data]), no_envelope)
    # No Content-Type, or one without a subtype: text/plain (RFC 2045 5.2).
    for header in (b"Subject: y\r\n", b"Content-Type: garbage\r\n"):
        assert body_structure(structure([header + b"\r\nhi"]), no_envelope,
                              extended=False).startswith(b'("TEXT" "PLAIN" ("CHARSET" "us-ascii")')


def test_broken_messages_are_read_as_common_readers_do() -> None:
    # Never closed: the last part runs to the end.
    unclosed = (b"Content-Type: multipart/mixed; boundary=z\r\n\r\n"
                b"--z\r\n\r\none\r\n--z\r\n\r\ntwo\r\n")
    assert sections(unclosed, ["1", "2"], 4) == {"1": b"one", "2": b"two\r\n"}
    # No boundary parameter: a leaf.
    flat = b"Content-Type: multipart/mixed\r\n\r\n--z\r\n\r\none\r\n"
    assert sections(flat, ["1"], 4) == {"1": b"--z\r\n\r\none\r\n"}
    # A part's header cut short by the next delimiter; a close delimiter of
    # an inner part that never opened; folded and repeated fields.
    cut = (b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\nContent-Type: text/x;\r\n"
           b" charset=a\r\nContent-Type: text/y\r\n--z\r\n\r\nlast\r\n--z--")
    top = structure([cut])
    assert sections(cut, ["1", "2"], 3) == {"1": b"", "2": b"last"}
    assert body_structure(top, no_envelope, extended=False).startswith(
        b'(("TEXT" "X" ("CHARSET" "a") NIL NIL "7BIT" 0 0)')
    # A line longer than what is kept of it is measured whole.
    long = b"Subject: x\r\n\r\n" + b"y" * (3 * LINE_KEEP) + b"\r\nend\r\n"
    assert sections(long, ["1"], 1000)["1"] == long[14:]


def test_parts_are_bounded() -> None:
    many = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n" + b"".join(
        b"--q\r\n\r\n%d\r\n" % i for i in range(MAX_PARTS + 50)) + b"--q--\r\n"
    top = structure([many])
    assert len(top.parts) == MAX_PARTS - 1  # the top is one of the parts counted
    assert section_range(top, f"{MAX_PARTS}") is None
