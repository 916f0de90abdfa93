"""Submission rules at their edges (issue 17, mutation testing of core/submission.py).

Each test sits on a boundary or a case the broader tests of test_submission.py
pass over: the author field named in a refusal, the size limits of an author
field, of a refusal's text and of the header of a streamed body (to the
octet), the line-end normalisation across chunks, and the decision, while a
streamed body is read, of whether a long line is a header field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import pairwise
from types import SimpleNamespace
from unittest import mock

import pytest

from smdp.core import submission
from smdp.core.submission import SubmissionError, prepare_submission, prepare_submission_body
from smdp.mail.body import Body, BodyWriter
from smdp.mail.mime import MAX_HEADER_OCTETS, scan_header

IDS = ("alice@a.example",)
NOW = datetime(2026, 5, 5, 10, 0, 0, tzinfo=UTC)
OPTIONS: dict[str, object] = {
    "identities": IDS, "sender": "alice@a.example", "hostname": "smdp.a.example", "now": NOW,
}
SLACK = 64 * 1024  # the documented run-on past MAX_HEADER_OCTETS (prepare_submission_body)
TOO_LARGE = "The message header is larger than 1024 KiB."


def submit(raw: bytes) -> bytes:
    return prepare_submission(raw, **OPTIONS)  # type: ignore[arg-type]


def submit_body(raw: Body) -> bytes:
    return prepare_submission_body(raw, **OPTIONS).read()  # type: ignore[arg-type]


def refusal(raw: bytes) -> str:
    with pytest.raises(SubmissionError) as info:
        submit(raw)
    return str(info.value)


@contextmanager
def fixed_message_ids() -> Iterator[None]:
    fake = SimpleNamespace(token_bytes=lambda n: bytes(n))
    with mock.patch.object(submission, "secrets", fake):
        yield


@contextmanager
def small_limits() -> Iterator[None]:
    """A 128-octet header limit, 32 octets of slack, a first scan at 8 octets."""
    with ExitStack() as stack:
        for name, value in (("MAX_HEADER_OCTETS", 128), ("_HEADER_SLACK", 32),
                            ("_FIRST_SCAN", 8)):
            stack.enter_context(mock.patch.object(submission, name, value))
        yield


def pieces(*parts: bytes) -> Body:
    """A body read in exactly these chunks (each at most CHUNK_SIZE)."""
    return Body(parts)


def outcome(fn: object) -> bytes | str:
    try:
        return fn()  # type: ignore[operator,no-any-return]
    except SubmissionError as exc:
        return "refused: " + str(exc)


# ---------------------------------------------------------------------------
# The author fields


@pytest.mark.parametrize(("name", "label"), [
    (b"From", "From"), (b"FROM", "From"), (b"from", "From"),
    (b"Sender", "Sender"), (b"SENDER", "SENDER"), (b"Resent-From", "Resent-From"),
    (b"resent-sender", "resent-sender"),
])
def test_a_refusal_names_from_as_from_and_other_fields_as_spelled(name: bytes, label: str) -> None:
    assert refusal(name + b": mallory@x.example\r\n\r\n") == (
        f"{label} <mallory@x.example> is not one of your identities"
    )


def _from_of_length(n: int) -> bytes:
    # A display name of padding and the user's own address: n octets of value.
    addr = b" <alice@a.example>"
    return b'From: "' + b"a" * (n - len(addr) - 2) + b'"' + addr + b"\r\n"


def test_an_author_field_of_4096_octets_is_checked_and_of_4097_refused() -> None:
    raw = _from_of_length(4096) + b"Subject: s\r\n\r\nbody\r\n"
    assert len(raw.split(b"\r\n")[0]) == len(b"From: ") + 4096
    assert submit(raw).endswith(raw)
    assert refusal(_from_of_length(4097) + b"\r\n") == "The From header is too long."


def test_a_refusal_is_cut_at_200_characters() -> None:
    text = refusal(b"From: " + b"m" * 300 + b"@x.example\r\n\r\n")
    assert text == "From <" + "m" * 194


# ---------------------------------------------------------------------------
# Line ends across chunks


def test_a_cr_ending_a_chunk_drops_only_an_lf_starting_the_next() -> None:
    # After a CR that ends a chunk, only LF is the rest of that line end; a
    # tab, a NUL or any other octet starting the next chunk is kept.
    raw = b"Subject: s\r\n\r\nA\r\tB\r\x00C\r\x09D\r\nE\r"
    with fixed_message_ids():
        got = submit_body(pieces(*[p + b"\r" for p in raw.split(b"\r")[:-1]]))
        assert got == submit(raw)
    assert got.endswith(b"\r\n\r\nA\r\n\tB\r\n\x00C\r\n\tD\r\nE\r\n")


# ---------------------------------------------------------------------------
# The header of a streamed body: its size, to the octet


def _all_header(size: int) -> bytes:
    """A message that is all header, ``size`` octets, its last line running
    over MAX_HEADER_OCTETS with no line end: the documented difference."""
    head = b"Subject: s\r\nX-Long: "
    return head + b"v" * (size - len(head))


def test_an_all_header_message_runs_on_64_kib_past_the_limit_at_most() -> None:
    # prepare_submission_body reads at most MAX_HEADER_OCTETS + 64 KiB of
    # header: a message that ends there is taken whole, one octet more refused.
    at_most = _all_header(MAX_HEADER_OCTETS + SLACK)
    with fixed_message_ids():
        out = submit_body(Body.of(at_most))
        assert out == submit(at_most)
    assert out.endswith(b"v\r\n\r\n")
    over = _all_header(MAX_HEADER_OCTETS + SLACK + 1)
    with pytest.raises(SubmissionError) as info:
        submit_body(Body.of(over))
    assert str(info.value) == TOO_LARGE


@pytest.mark.parametrize("cuts", [[80], [80, 160], [40, 80, 160], [159], [150, 159]])
def test_the_header_limit_holds_whatever_the_chunks(cuts: list[int]) -> None:
    # With a 128-octet limit and 32 of slack: 160 octets of header are taken
    # whole, 161 refused, wherever the chunks end (a read that stops at
    # exactly 160 octets included).
    with small_limits(), fixed_message_ids():
        for size, taken in ((160, True), (161, False)):
            raw = _all_header(size)
            bounds = [0, *[c for c in cuts if c < size], size]
            body = pieces(*[raw[a:b] for a, b in pairwise(bounds)])
            got = outcome(lambda body=body: submit_body(body))
            if taken:
                assert got == submit(raw)
            else:
                assert got == "refused: The message header is larger than 0 KiB."


def _count_scans() -> tuple[mock._patch[object], list[int]]:
    sizes: list[int] = []
    real = scan_header

    def counting(data: bytes, *args: object, **kwargs: object) -> object:
        sizes.append(len(data))
        if sum(sizes) > 50 * MAX_HEADER_OCTETS:
            raise AssertionError("the header is scanned over and over")
        return real(data, *args, **kwargs)  # type: ignore[arg-type]

    return mock.patch.object(submission, "scan_header", counting), sizes


@pytest.mark.parametrize("tail", [b"\r\nmore\r\n", b"v: a field\r\n\r\nbody"])
def test_a_long_header_in_small_chunks_is_scanned_in_linear_time(tail: bytes) -> None:
    # The buffer at least doubles between two scans of it, up to the limit and
    # its slack: a hostile 1 MiB line sent 4 KiB at a time costs a few scans,
    # not one a chunk (which would be quadratic).
    raw = b"Subject: s\r\n" + b"x" * (MAX_HEADER_OCTETS + 2 * SLACK) + tail
    patch, sizes = _count_scans()
    with fixed_message_ids():
        expected = outcome(lambda: submit(raw))
        with patch:
            got = outcome(lambda: submit_body(
                pieces(*[raw[i : i + 4096] for i in range(0, len(raw), 4096)])))
    assert got == expected
    assert sum(sizes) <= 4 * max(sizes)
    assert max(sizes) <= MAX_HEADER_OCTETS + SLACK + 4096


# ---------------------------------------------------------------------------
# A long line that may still be a field, followed chunk by chunk


def _long_line(held: bytes, *rest: bytes) -> tuple[bytes, Body]:
    """A first chunk ending in a line of 200 name octets and ``held`` (past the
    small limits' 160 octets), then ``rest`` in chunks of their own: the line
    is followed chunk by chunk past what is held."""
    first = b"Subject: s\r\n" + b"X" * 200 + held
    return first + b"".join(rest), pieces(first, *rest)


@pytest.mark.parametrize(("held", "rest", "is_field"), [
    (b"  ", (b"y: z\r\n\r\nbody",), False),  # the held part ends in blanks
    (b" \t", (b"  :z\r\n\r\nbody",), True),
    (b"X ", (b"y:\r\n\r\nbody",), False),
    (b"", (b"  ", b"y: z\r\n\r\nbody"), False),  # blanks in a chunk of their own
    (b"", (b"XX  ", b"y: z\r\n\r\nbody"), False),  # blanks end a chunk followed
    (b"", (b"XX \t", b"\t: z\r\n\r\nbody"), True),  # blanks, then the colon: a field
    (b"", (b"X\t: v\r\n\r\nbody",), True),  # a tab before the colon (obs-optional)
    (b"", (b"X\xc3\xa9: v\r\n\r\nbody",), False),  # a non-ASCII octet ends the name
    (b"", (b"X\x7f: v\r\n\r\nbody",), False),  # and so does DEL
    (b"", (b"X  \r\nmore\r\n",), False),  # blanks, then the line ends
    (b"", (b"X  1: v\r\n",), False),  # blanks, then an octet below the colon
    (b"", (b"XX  ", b"  ", b"\r\nbody"), False),
])
def test_a_long_line_is_a_field_only_with_its_colon(held: bytes, rest: tuple[bytes, ...],
                                                    is_field: bool) -> None:
    raw, body = _long_line(held, *rest)
    with small_limits(), fixed_message_ids():
        expected = outcome(lambda: submit(raw))
        assert outcome(lambda: submit_body(body)) == expected
    assert isinstance(expected, str) == is_field  # a refusal: too large a header


def test_a_line_that_cannot_be_a_field_ends_the_header_at_once() -> None:
    # "Hello th" is no field name, whatever follows: the header ends before
    # it, even though a colon comes later on that line.
    raw = b"Subject: s\r\nHello th" + b"x" * 400 + b": y\r\n\r\nbody"
    with small_limits(), fixed_message_ids():
        expected = submit(raw)
        for size in (1, 5, 64):
            body = pieces(*[raw[i : i + size] for i in range(0, len(raw), size)])
            assert submit_body(body) == expected
    assert expected.endswith(b"Subject: s\r\n\r\nHello th" + b"x" * 400 + b": y\r\n\r\nbody\r\n")


# ---------------------------------------------------------------------------
# Errors while the body is written


class _FailingBody(Body):
    """A body whose reading fails after its first chunk (a read error)."""

    __slots__ = ()

    def chunks(self, size: int = 0) -> Iterator[bytes]:
        # Past the first scan (64 KiB): the header is read, the writer open.
        yield b"Subject: s\r\n\r\n" + b"first part\r\n" * 8000
        raise OSError("read error")


def test_a_failure_while_writing_discards_what_was_written() -> None:
    discarded: list[int] = []

    class Writer(BodyWriter):
        def discard(self) -> None:
            discarded.append(self.size)
            super().discard()

    with mock.patch.object(submission, "BodyWriter", Writer), \
            pytest.raises(OSError, match="read error"):
        submit_body(_FailingBody())
    assert len(discarded) == 1 and discarded[0] > 0
