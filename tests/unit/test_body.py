"""Body and BodyWriter: the same octets whichever way they are held or read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smdp.mail.body import Body, BodyWriter, stored_chunks


def _written(pieces: list[bytes], threshold: int) -> Body:
    writer = BodyWriter(threshold=threshold)
    for piece in pieces:
        writer.write(piece)
    return writer.finish()


@given(
    pieces=st.lists(st.binary(max_size=300), max_size=12),
    threshold=st.integers(min_value=0, max_value=2000),
    size=st.integers(min_value=1, max_value=700),
    start=st.integers(min_value=0, max_value=4000),
    head=st.binary(max_size=50),
)
def test_every_view_reads_the_octets_written(
    pieces: list[bytes], threshold: int, size: int, start: int, head: bytes
) -> None:
    expected = b"".join(pieces)
    body = _written(pieces, threshold)
    assert body.size == len(body) == len(expected)
    chunks = list(body.chunks(size))
    assert b"".join(chunks) == expected
    assert all(0 < len(chunk) <= size for chunk in chunks)
    views = list(body.views(size))
    assert [bytes(v) for v in views] == chunks  # the same pieces, not copied
    assert body.read() == expected  # reading twice gives the same
    assert body.head(start) == expected[:start]
    assert body.tail(start).read() == expected[start:]
    assert body.prefixed(head).read() == head + expected
    assert body.prefixed(head).tail(start).read() == (head + expected)[start:]
    assert body.startswith(expected[:3])
    assert not body.startswith(expected + b"x")  # longer than the body


def test_large_bodies_go_to_a_file_and_small_ones_stay_in_memory() -> None:
    small = _written([b"x" * 100], threshold=1000)
    large = _written([b"x" * 600, b"y" * 600], threshold=1000)
    assert small.in_memory
    assert not large.in_memory
    assert large.read() == b"x" * 600 + b"y" * 600


def test_discard_forgets_everything() -> None:
    writer = BodyWriter(threshold=10)
    writer.write(b"a" * 50)
    writer.discard()
    assert writer.size == 0
    assert writer.finish().read() == b""


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        list(Body.of(b"abc").chunks(0))
    with pytest.raises(ValueError, match="positive"):
        list(Body.of(b"abc").views(0))


def test_an_in_memory_body_is_read_and_viewed_without_copies() -> None:
    # Issue 15 item 4: a large body in one piece is handed out as it is.
    data = bytes(range(256)) * 4000
    body = Body.of(data)
    assert body.read() is body.read()
    views = list(body.views(100_000))
    assert all(isinstance(v, memoryview) and v.obj is body.read() for v in views)
    assert b"".join(views) == data


def test_stored_chunks_reads_until_the_store_says_none_and_no_further() -> None:
    store = [b"ab", b"", b"cd"]
    asked: list[int] = []

    def read(seq: int) -> bytes | None:
        asked.append(seq)
        return store[seq] if seq < len(store) else None

    assert list(stored_chunks(read)) == [b"ab", b"", b"cd"]
    assert asked == [0, 1, 2, 3]
