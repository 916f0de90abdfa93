"""The IMAP adapter's pure parts (server/imap_server.py; docs/imap.md):
ENVELOPE from a header, INTERNALDATE, slices of a streamed body, LIST
patterns, and Pending's summary message, which must read the same every
time for its UID."""

from __future__ import annotations

import base64
import binascii
import quopri
from collections.abc import Iterator

from smdp.core.envelope import EnvelopeSummary, encode_envelope_block
from smdp.server.imap_server import (
    HEADER_LIMIT,
    Content,
    ImapSession,
    _contains,
    _date_matches,
    _listed,
    _octets,
    base64_decoded,
    envelope,
    header_fields,
    internal_date,
    parse_date_time,
    pending_summary,
    qp_decoded,
)
from smdp.store.records import InEnvelope


def test_envelope_from_a_header() -> None:
    header = (b"Date: Thu, 03 Dec 2026 08:00:00 +0000\r\nSubject: a\r\n long one\r\n"
              b"From: \"Al, Ice\" <alice@a.example>\r\nTo: bob@b.example, c@c.example\r\n"
              b"Message-ID: <x@a.example>\r\n\r\n")
    assert envelope(header) == [
        "Thu, 03 Dec 2026 08:00:00 +0000", "a long one",
        [["Al, Ice", None, "alice", "a.example"]], [["Al, Ice", None, "alice", "a.example"]],
        [["Al, Ice", None, "alice", "a.example"]],
        [[None, None, "bob", "b.example"], [None, None, "c", "c.example"]],
        None, None, None, "<x@a.example>"]
    assert envelope(b"\r\n") == [None] * 10


def test_append_date_time_read_as_internal_date_writes_it() -> None:
    """APPEND's date-time (RFC 9051): the zone taken off, a space-padded
    day, any case of month; what is not a date is None."""
    for text in ("01-Jan-1970 00:00:00 +0000", " 1-jan-1970 01:00:00 +0100",
                 "31-Dec-1969 23:30:00 -0030"):
        assert parse_date_time(text) == 0.0, text
    when = parse_date_time("29-Feb-2028 12:34:56 +0000")
    assert when is not None and internal_date(when) == "29-Feb-2028 12:34:56 +0000"
    for text in ("1-Jan-1970", "01-Jnu-1970 00:00:00 +0000", "31-Feb-2026 10:00:00 +0000",
                 "01-Jan-1970 24:00:00 +0000", "01-Jan-1970 00:60:00 +0000",
                 "01-Jan-1970 00:00:61 +0000", "01-Jan-1970 00:00:00 +0060", ""):
        assert parse_date_time(text) is None, text


def test_internal_date_is_utc_and_english() -> None:
    assert internal_date(0) == "01-Jan-1970 00:00:00 +0000"
    assert internal_date(1796284800.5) == "03-Dec-2026 08:00:00 +0000"


def test_octets_slices_chunks_without_reading_past_the_end() -> None:
    read: list[bytes] = []

    def chunks() -> object:
        for c in (b"abc", b"defg", b"hi", b"NEVER"):
            read.append(c)
            yield c

    assert b"".join(_octets(chunks(), 2, 6)) == b"cdefgh"  # type: ignore[arg-type]
    assert read == [b"abc", b"defg", b"hi"]
    assert b"".join(_octets([b"abc"], 5, 3)) == b""
    assert b"".join(_octets([b"abc", b"def"], 0, 0)) == b""


def test_list_patterns() -> None:
    assert _listed("", "*", "INBOX") and _listed("", "inbox", "INBOX")
    assert _listed("", "P%", "Pending") and not _listed("", "pending", "Pending")
    assert not _listed("", "%/x", "Pending") and _listed("Pen", "d*", "Pending")


def test_pending_summary_is_stable_and_encodes_non_ascii() -> None:
    summary = EnvelopeSummary("Grüße", "Jürgen", "bob@b.example", "", "", 1, ("a.pdf",),
                              ("Hallo Bob,",))
    block = encode_envelope_block(summary, expires="2026-12-10T00:00:00Z").decode("utf-8")
    env = InEnvelope(7, "e" * 26, "smdp.a.example", "j@a.example", 1234, block, "Grüße",
                     1796284800.0, False)
    text = pending_summary(3, "bob@b.example", env, "smdp.b.example")
    assert text == pending_summary(3, "bob@b.example", env, "smdp.b.example")
    header, _, body = text.partition(b"\r\n\r\n")
    assert header.isascii() and b"Subject: =?utf-8?b?" in header
    assert b"From: =?utf-8?" in header and b"<j@a.example>" in header
    assert b"Message-ID: <pending.3@smdp.b.example>" in header
    assert b"Attachments (1):\r\n  a.pdf" in body and b"Size:    1234 octets" in body
    assert b"ACCEPT 3" in body


def test_header_fields_keep_their_folded_lines_and_order() -> None:
    header = (b"Received: x\r\n y\r\nSubject: hi\r\n there\r\nFrom: a@a.example\r\n"
              b"subject: again\r\n\r\n")
    assert header_fields(header, {"SUBJECT", "DATE"}, keep=True) == \
        b"Subject: hi\r\n there\r\nsubject: again\r\n\r\n"
    assert header_fields(header, {"SUBJECT", "RECEIVED"}, keep=False) == \
        b"From: a@a.example\r\n\r\n"
    assert header_fields(header, {"X-NONE"}, keep=True) == b"\r\n"


def test_header_is_read_up_to_its_blank_line_only() -> None:
    read: list[bytes] = []

    def content(*chunks: bytes) -> Content:
        def gen() -> Iterator[bytes]:
            for c in chunks:
                read.append(c)
                yield c
        return Content(sum(map(len, chunks)), gen, 0.0)

    # The blank line straddles two chunks; the third is never read.
    assert ImapSession._header(content(b"A: 1\r\n\r", b"\nbody", b"NEVER")) == b"A: 1\r\n\r\n"
    assert read == [b"A: 1\r\n\r", b"\nbody"]
    assert ImapSession._header(content(b"A: 1\r\nno blank line")) == b"A: 1\r\nno blank line"
    big = ImapSession._header(content(*([b"X: " + b"y" * 1000 + b"\r\n"] * 300)))
    assert len(big) == HEADER_LIMIT  # a huge header is cut, never held whole


def test_search_text_across_chunks_in_any_case() -> None:
    """SEARCH BODY and TEXT read a chunk at a time: a match cut between two
    chunks is found, ASCII letters match in any case."""
    data = b"Shall we meet at the PIZZERIA tonight?"
    for size in (1, 2, 5, 100):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert _contains(iter(chunks), b"pizzeria")
        assert _contains(iter(chunks), b"t")
        assert _contains(iter(chunks), b"")
        assert not _contains(iter(chunks), b"pizzas")


def test_search_dates_disregard_times() -> None:
    assert _date_matches("BEFORE", (2026, 2, 1), (2026, 2, 2))
    assert not _date_matches("BEFORE", (2026, 2, 2), (2026, 2, 2))
    assert _date_matches("ON", (2026, 2, 2), (2026, 2, 2))
    assert _date_matches("SINCE", (2026, 2, 2), (2026, 2, 2))
    assert not _date_matches("SINCE", (2026, 2, 1), (2026, 2, 2))


def _cut(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def test_base64_and_quoted_printable_decoded_whatever_the_chunks() -> None:
    """BINARY's decoders (RFC 3516) give what decoding the whole does, the
    encoded octets cut anywhere: a group of four, an ``=XX`` and a soft line
    break are never split."""
    data = bytes(range(256)) * 3 + b"\x00end"
    coded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    text = ("caf\u00e9 = na\u00efve " * 40 + "\r\nend\t\r\n").encode()
    qp = quopri.encodestring(text.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    assert b"=\r\n" in qp  # soft line breaks in it
    for size in (1, 2, 3, 5, 7, 76, 4096):
        assert b"".join(base64_decoded(_cut(coded, size))) == data
        assert b"".join(qp_decoded(_cut(qp, size))) == binascii.a2b_qp(qp)
    assert b"".join(base64_decoded([b"QUJD", b"RA"])) == b"ABCD"  # an unpadded tail
    assert b"".join(base64_decoded([b"QUJDR"])) == b"ABC"  # a lone character: no octet
    # A line longer than a piece is decoded in pieces, never cut in an escape.
    long_line = b"=41" * 30_000 + b"x=\r\ny"
    for size in (65_536, 65_537, 65_538, 90_001):
        assert b"".join(qp_decoded(_cut(long_line, size))) == b"A" * 30_000 + b"xy"
