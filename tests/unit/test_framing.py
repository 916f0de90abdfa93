"""Line framing and dot-stuffed blocks (wire contract section 1)."""

from __future__ import annotations

import time

import pytest

from smdp.protocol.framing import (
    LINE_TOO_LONG,
    DataBlockReader,
    LineBuffer,
    ProtocolUsageError,
    dot_stuff,
    dot_unstuff,
    normalize_line_ends,
)
from tests.speed import within


def all_lines(buf: LineBuffer) -> list[object]:
    out: list[object] = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


def read_block(
    wire: bytes, *, max_line: int = 1000, max_size: int = 10**9, step: int | None = None
) -> tuple[DataBlockReader, LineBuffer]:
    lines = LineBuffer(max_line)
    reader = DataBlockReader(max_line, max_size)
    chunks = [wire] if step is None else [wire[i : i + step] for i in range(0, len(wire), step)]
    for chunk in chunks:
        lines.feed(chunk)
        # Once the block is done the rest is left to the line reader.
        reader.consume(lines)
    return reader, lines


# -- LineBuffer ---------------------------------------------------------------


def test_crlf_and_bare_lf_lines() -> None:
    buf = LineBuffer(100)
    buf.feed(b"one\r\ntwo\nthree\r\n\r\nfour")
    assert all_lines(buf) == [b"one", b"two", b"three", b""]
    assert buf.buffered == 4
    buf.feed(b"\r")
    assert buf.next_line() is None
    buf.feed(b"\n")
    assert buf.next_line() == b"four"
    assert buf.buffered == 0


def test_split_one_byte_at_a_time() -> None:
    buf = LineBuffer(100)
    got: list[object] = []
    for byte in b"HELO a.example\r\nNOOP\nQUIT\r\n":
        buf.feed(bytes([byte]))
        got.extend(all_lines(buf))
    assert got == [b"HELO a.example", b"NOOP", b"QUIT"]


def test_inner_cr_is_kept_only_the_last_is_a_line_end() -> None:
    buf = LineBuffer(100)
    buf.feed(b"a\rb\r\r\n")
    assert buf.next_line() == b"a\rb\r"


@pytest.mark.parametrize("ending", [b"\r\n", b"\n"])
def test_limit_counts_content_plus_crlf(ending: bytes) -> None:
    buf = LineBuffer(10)
    buf.feed(b"x" * 8 + ending + b"y" * 9 + ending + b"ok" + ending)
    assert all_lines(buf) == [b"x" * 8, LINE_TOO_LONG, b"ok"]


def test_over_long_line_is_discarded_and_reported_once() -> None:
    buf = LineBuffer(10)
    buf.feed(b"a" * 50)
    assert buf.next_line() is None
    assert buf.buffered == 0
    buf.feed(b"b" * 50)
    assert buf.buffered == 0
    assert buf.next_line() is None
    buf.feed(b"c\r\nnext\r\n")
    assert buf.next_line() is LINE_TOO_LONG
    assert buf.next_line() == b"next"
    assert buf.next_line() is None


def test_over_long_line_fed_byte_by_byte_stays_bounded() -> None:
    buf = LineBuffer(16)
    results: list[object] = []
    for byte in b"z" * 10_000 + b"\r\nafter\r\n":
        buf.feed(bytes([byte]))
        results.extend(all_lines(buf))
        assert buf.buffered <= 16
    assert results == [LINE_TOO_LONG, b"after"]


def test_line_just_at_the_limit_split_before_the_lf() -> None:
    buf = LineBuffer(10)
    buf.feed(b"12345678\r")
    assert buf.next_line() is None
    buf.feed(b"\n")
    assert buf.next_line() == b"12345678"


def test_max_line_must_be_sane() -> None:
    with pytest.raises(ValueError, match="max_line must leave room for at least one octet"):
        LineBuffer(2)
    with pytest.raises(ValueError, match="max_line must leave room for at least one octet"):
        DataBlockReader(2, 10)
    with pytest.raises(ValueError, match="max_size must not be negative"):
        DataBlockReader(10, -1)


# -- DataBlockReader ----------------------------------------------------------


def test_block_is_unstuffed_and_crlf_normalised() -> None:
    reader, lines = read_block(b"Subject: x\r\n\r\n..dot\n.\r\n")
    assert reader.done and not reader.failed
    assert reader.result() == b"Subject: x\r\n\r\n.dot\r\n"
    assert reader.size == len(reader.result())
    assert lines.buffered == 0


def test_empty_block() -> None:
    reader, _ = read_block(b".\r\n")
    assert reader.result() == b""
    reader, _ = read_block(b".\n")
    assert reader.result() == b""


def test_bare_lf_terminator_and_leftover_stays_buffered() -> None:
    reader, lines = read_block(b"a\n.\nQUIT\r\n")
    assert reader.result() == b"a\r\n"
    assert lines.next_line() == b"QUIT"


def test_pipelined_commands_after_terminator_are_left() -> None:
    reader, lines = read_block(b"line\r\n.\r\nRSET\r\nQUIT\r\n")
    assert reader.result() == b"line\r\n"
    assert all_lines(lines) == [b"RSET", b"QUIT"]


@pytest.mark.parametrize("wire", [b". \r\n.\r\n", b".\r\r\n.\r\n", b"..\r\n.\r\n", b"x.\r\n.\r\n"])
def test_lines_that_look_like_terminators_but_are_not(wire: bytes) -> None:
    reader, _ = read_block(wire)
    assert reader.done
    expected = {
        b". \r\n.\r\n": b" \r\n",
        b".\r\r\n.\r\n": b"\r\r\n",
        b"..\r\n.\r\n": b".\r\n",
        b"x.\r\n.\r\n": b"x.\r\n",
    }[wire]
    assert reader.result() == expected


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_block_split_at_every_point(step: int) -> None:
    wire = b"From: a\r\n..x\r\n\r\n.y\n.\r\nNEXT\r\n"
    reader, lines = read_block(wire, step=step)
    assert reader.result() == b"From: a\r\n.x\r\n\r\ny\r\n"
    assert lines.next_line() == b"NEXT"


def test_block_split_one_byte_keeps_following_commands() -> None:
    wire = b"a\r\n.\r\nQUIT\r\n"
    lines = LineBuffer(100)
    reader = DataBlockReader(100, 100)
    done_at = None
    for i, byte in enumerate(wire):
        lines.feed(bytes([byte]))
        if done_at is None and reader.consume(lines):
            done_at = i
    assert done_at == wire.index(b".\r\n") + 2
    assert lines.next_line() == b"QUIT"


def test_too_long_line_consumes_to_the_end_and_stores_nothing() -> None:
    wire = b"ok\r\n" + b"x" * 5000 + b"\r\nmore\r\n.\r\nQUIT\r\n"
    reader, lines = read_block(wire, max_line=100, step=64)
    assert reader.done and reader.too_long_line and not reader.too_big
    assert reader._chunks == []
    with pytest.raises(ProtocolUsageError, match="the block was refused; there is no result"):
        reader.result()
    lines.feed(b"")
    assert lines.next_line() == b"QUIT"


def test_too_long_partial_line_is_dropped_as_it_arrives() -> None:
    lines = LineBuffer(100)
    reader = DataBlockReader(100, 10**6)
    for _ in range(100):
        lines.feed(b"y" * 64)
        assert not reader.consume(lines)
        assert lines.buffered <= 102
    lines.feed(b"\r\n.\r\n")
    assert reader.consume(lines)
    assert reader.too_long_line


def test_too_long_partial_line_ending_with_a_dot_is_not_a_terminator() -> None:
    lines = LineBuffer(10)
    reader = DataBlockReader(10, 1000)
    lines.feed(b"y" * 40)
    assert not reader.consume(lines)
    lines.feed(b".\r\n")  # tail of the long line, not a line of its own
    assert not reader.consume(lines)
    lines.feed(b".\r\n")
    assert reader.consume(lines)
    assert reader.too_long_line


@pytest.mark.parametrize(("length", "ok"), [(98, True), (99, False)])
def test_data_line_limit_boundary(length: int, ok: bool) -> None:
    reader, _ = read_block(b"a" * length + b"\r\n.\r\n", max_line=100)
    assert reader.too_long_line is not ok


def test_stuffing_dot_does_not_count_against_the_line_limit() -> None:
    line = b"." + b"a" * 97  # 98 octets unstuffed: the longest allowed line
    reader, _ = read_block(dot_stuff(line), max_line=100)
    assert not reader.failed
    assert reader.result() == line + b"\r\n"


def test_too_big_is_counted_and_consumed() -> None:
    body = b"0123456789\r\n" * 100
    reader, lines = read_block(dot_stuff(body) + b"NOOP\r\n", max_size=len(body) - 1)
    assert reader.done and reader.too_big and not reader.too_long_line
    assert reader.size == len(body)
    assert lines.next_line() == b"NOOP"


def test_size_exactly_at_the_limit_is_fine() -> None:
    body = b"0123456789\r\n" * 100
    reader, _ = read_block(dot_stuff(body), max_size=len(body))
    assert reader.result() == body


def test_result_before_the_end_is_a_usage_error() -> None:
    reader, _ = read_block(b"half a block\r\n")
    assert not reader.done
    with pytest.raises(ProtocolUsageError, match="the block is not complete yet"):
        reader.result()


def test_consume_after_done_is_harmless() -> None:
    reader, lines = read_block(b".\r\nNOOP\r\n")
    assert reader.consume(lines)
    assert lines.next_line() == b"NOOP"


# -- dot_stuff / normalize ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "wire"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n.\r\n", b"..\r\n..\r\n.\r\n"),
        (b"x\n.y\n..z", b"x\r\n..y\r\n...z\r\n.\r\n"),
        (b"a\r\r\n", b"a\r\r\n.\r\n"),
        (b"\n", b"\r\n.\r\n"),
    ],
)
def test_dot_stuff(body: bytes, wire: bytes) -> None:
    assert dot_stuff(body) == wire
    assert dot_unstuff(wire, max_line=1 << 30, max_size=1 << 62) == normalize_line_ends(body)


def test_dot_unstuff_refuses_incomplete_or_oversized() -> None:
    with pytest.raises(ValueError, match="block has no terminating"):
        dot_unstuff(b"abc\r\n", max_line=100, max_size=100)
    with pytest.raises(ValueError, match="block exceeds a limit"):
        dot_unstuff(b"abc\r\n.\r\n", max_line=100, max_size=2)
    # Both limits at their edge: a line counts with its CRLF.
    assert dot_unstuff(b"abc\r\n.\r\n", max_line=5, max_size=5) == b"abc\r\n"
    for max_line, max_size in ((4, 5), (5, 4)):
        with pytest.raises(ValueError, match="block exceeds a limit"):
            dot_unstuff(b"abc\r\n.\r\n", max_line=max_line, max_size=max_size)


def test_large_block_is_fast() -> None:
    # 32 MiB of short lines: the block path must stay in C (find/replace/split).
    body = (b"Lorem ipsum dolor sit amet, consectetur adipiscing\r\n.leading dot\r\n") * (
        32 * 1024 * 1024 // 66
    )
    wire = dot_stuff(body)
    start = time.perf_counter()
    lines = LineBuffer(1000)
    reader = DataBlockReader(1000, 64 * 1024 * 1024)
    for i in range(0, len(wire), 65536):
        lines.feed(wire[i : i + 65536])
        reader.consume(lines)
    elapsed = time.perf_counter() - start
    assert reader.done and reader.result() == body
    assert elapsed < within(5), elapsed


# -- the fast path: pieces with no dot line and no bare LF (issue 15 item 4) -----


def read_pieces(pieces: list[bytes], *, max_line: int = 1000,
                max_size: int = 10**9) -> tuple[DataBlockReader, LineBuffer]:
    lines = LineBuffer(max_line)
    reader = DataBlockReader(max_line, max_size)
    for piece in pieces:
        lines.feed(piece)
        reader.consume(lines)
    return reader, lines


@pytest.mark.parametrize(("pieces", "expected"), [
    # A bare LF that starts a read: nothing before it to look behind at.
    ([b"a\r\n", b"\nb\r\n", b".\r\n"], b"a\r\n\r\nb\r\n"),
    # A stuffed dot that starts a read, and one split from its line.
    ([b"a\r\n", b"..b\r\n", b".\r\n"], b"a\r\n.b\r\n"),
    ([b"a\r\n.", b".b\r\n.\r\n"], b"a\r\n.b\r\n"),
    # The terminator split across reads, at each of its octets.
    ([b"a\r\n.", b"\r\n"], b"a\r\n"),
    ([b"a\r\n.\r", b"\n"], b"a\r\n"),
    ([b"a\r", b"\n.\r\n"], b"a\r\n"),
    # A CR inside a line is text, not a line end.
    ([b"a\rb\r\n", b"c\r\r\n.\r\n"], b"a\rb\r\nc\r\r\n"),
])
def test_pieces_at_the_fast_path_s_edges(pieces: list[bytes], expected: bytes) -> None:
    reader, _ = read_pieces(pieces)
    assert reader.done and reader.result() == expected
    assert reader.size == len(expected)


@pytest.mark.parametrize(("length", "ok"), [(98, True), (99, False)])
def test_line_limit_in_a_piece_of_plain_lines(length: int, ok: bool) -> None:
    # Many short lines around the one at (or just over) the limit, in one
    # read: the limit is checked without cutting the piece into lines.
    lines = b"short line\r\n" * 200
    reader, _ = read_pieces([lines + b"a" * length + b"\r\n" + lines, b".\r\n"],
                            max_line=100)
    assert reader.too_long_line is not ok
    if ok:
        assert reader.result() == lines + b"a" * length + b"\r\n" + lines


def test_take_hands_out_plain_lines_as_they_came() -> None:
    reader, lines = read_pieces([b"line one\r\nline two\r\npart"])
    assert reader.take() == b"line one\r\nline two\r\n"
    lines.feed(b"ial\r\n.\r\n")
    assert reader.consume(lines)
    assert reader.result() == b"partial\r\n"
    assert reader.size == len(b"line one\r\nline two\r\npartial\r\n")
