"""Line framing and the shared connection limits at their exact edges (issue 17:
the survivors of the "limits" mutation target in framing.py and _connection.py).

A line of exactly the maximum length and one octet more, whole and cut just
before its LF; a bare LF at the first octet of the buffer (a line of its own,
the line after a block, the line before a terminator); every block
terminator split across two reads at every offset; the defaults of both
sides of a connection (1000-octet lines and 1000-line replies, as in
protocol.md 14, and a client's 64 MiB block) written out rather than read
from the constants they guard."""

from __future__ import annotations

import pytest

from smdp import terms
from smdp.protocol import peer
from smdp.protocol.framing import (
    LINE_TOO_LONG,
    DataBlockReader,
    LineBuffer,
    RemoteProtocolError,
    dot_stuff,
)

MIB = 1024 * 1024
HOST = "mx.here.example"
ENVID = "abcdefghijklmnopqrstuvwxyz"


def all_lines(buf: LineBuffer) -> list[object]:
    out: list[object] = []
    while (line := buf.next_line()) is not None:
        out.append(line)
    return out


def read_block(pieces: list[bytes], *, max_line: int = 1000,
               max_size: int = 10**6) -> tuple[DataBlockReader, list[object]]:
    """Feed ``pieces`` one read at a time; the reader and the lines left after
    the block (read as commands would be)."""
    lines = LineBuffer(max_line)
    reader = DataBlockReader(max_line, max_size)
    left: list[object] = []
    for piece in pieces:
        lines.feed(piece)
        if not reader.done:
            reader.consume(lines)
        if reader.done:
            left.extend(all_lines(lines))
    return reader, left


# -- LineBuffer -----------------------------------------------------------------------


def test_the_smallest_line_limit_holds_one_octet() -> None:
    # max_line 3 is one octet and CRLF: allowed, and exact.
    buf = LineBuffer(3)
    buf.feed(b"a\r\nbb\r\n\n")
    assert all_lines(buf) == [b"a", LINE_TOO_LONG, b""]
    reader, left = read_block([b"a\r\nbb\r\n.\r\nX\r\n"], max_line=3)
    assert reader.too_long_line and left == [b"X"]
    reader, left = read_block([b"a\r\n.\r\n"], max_line=3, max_size=3)
    assert reader.result() == b"a\r\n"
    # max_size 0 is allowed too: only the empty block fits.
    assert read_block([b".\r\n"], max_line=3, max_size=0)[0].result() == b""
    assert read_block([b"a\r\n.\r\n"], max_line=3, max_size=0)[0].too_big


def test_a_bare_lf_at_the_first_octet_is_a_line_of_its_own() -> None:
    buf = LineBuffer(100)
    buf.feed(b"\nfirst\n\nthird\r\n\n")
    assert all_lines(buf) == [b"", b"first", b"", b"third", b""]


@pytest.mark.parametrize("octet", [b"\x00", b"\t", b"\x0b", b"\x0c", b"\x0e", b"x"])
def test_only_a_cr_before_the_lf_belongs_to_the_line_end(octet: bytes) -> None:
    buf = LineBuffer(100)
    buf.feed(b"a" + octet + b"\n" + octet + b"\r\n")
    assert all_lines(buf) == [b"a" + octet, octet]


def test_a_cr_at_the_end_of_the_buffer_is_not_the_end_of_an_lf_at_its_start() -> None:
    buf = LineBuffer(100)
    buf.feed(b"\nx\r")
    assert buf.next_line() == b""
    assert buf.next_line() is None
    buf.feed(b"\n")
    assert buf.next_line() == b"x"


def test_a_partial_line_is_kept_up_to_content_and_cr_and_dropped_one_octet_later() -> None:
    # max_line 10: 8 octets of content and CRLF. Without its LF, 9 octets may
    # still be 8 and a CR; 10 cannot be, and are dropped at once.
    buf = LineBuffer(10)
    buf.feed(b"12345678\r")
    assert buf.next_line() is None
    assert buf.buffered == 9
    buf.feed(b"\n")
    assert buf.next_line() == b"12345678"
    buf.feed(b"123456789")
    assert buf.next_line() is None
    assert buf.buffered == 9
    buf.feed(b"\n")
    assert buf.next_line() is LINE_TOO_LONG
    buf.feed(b"1234567890")
    assert buf.next_line() is None
    assert buf.buffered == 0
    buf.feed(b"\r\nnext\r\n")
    assert all_lines(buf) == [LINE_TOO_LONG, b"next"]


# -- DataBlockReader: terminators -----------------------------------------------------


# (wire, block, what is left), each wire also cut at every offset below.
BLOCKS: list[tuple[bytes, bytes, list[object]]] = [
    (b".\r\nNOOP\r\n", b"", [b"NOOP"]),
    (b".\nNOOP\r\n", b"", [b"NOOP"]),
    (b".\n\nNOOP\r\n", b"", [b"", b"NOOP"]),
    (b"a\r\n.\r\n\nNOOP\r\n", b"a\r\n", [b"", b"NOOP"]),
    (b"a\n.\n\nNOOP\n", b"a\r\n", [b"", b"NOOP"]),
    # An empty first line (bare LF) right before the terminator.
    (b"\n.\r\nNOOP\r\n", b"\r\n", [b"NOOP"]),
    (b"\n.\nNOOP\r\n", b"\r\n", [b"NOOP"]),
    # The first terminator wins, at the first octet or not.
    (b"\n.\nrest\r\n.\r\nNOOP\r\n", b"\r\n", [b"rest", b".", b"NOOP"]),
    (b"\n.\r\nrest\n.\nNOOP\r\n", b"\r\n", [b"rest", b".", b"NOOP"]),
    (b"x\n.\nrest\r\n.\r\nNOOP\r\n", b"x\r\n", [b"rest", b".", b"NOOP"]),
    (b"..\r\n...\n\n.\r\n", b".\r\n..\r\n\r\n", []),
]


@pytest.mark.parametrize(("wire", "block", "left"), BLOCKS)
def test_a_block_ends_at_its_first_terminator_however_the_reads_fall(
        wire: bytes, block: bytes, left: list[object]) -> None:
    cuts = [[wire], [bytes([b]) for b in wire]]
    cuts += [[wire[:i], wire[i:]] for i in range(1, len(wire))]
    for pieces in cuts:
        reader, rest = read_block(pieces)
        assert reader.done, pieces
        assert (reader.result(), rest) == (block, left), pieces
        assert reader.size == len(block), pieces


def test_a_long_line_whose_tail_is_a_dot_and_its_line_end_a_later_read() -> None:
    # The "." and the CRLF after an over-long line are its tail, not a
    # terminator, even when they come in reads of their own.
    reader, left = read_block([b"y" * 40, b".", b"\r\n", b"more\r\n", b".\r\nNEXT\r\n"],
                              max_line=10)
    assert reader.done and reader.too_long_line and not reader.too_big
    assert left == [b"NEXT"]
    reader, left = read_block([b"y" * 40, b".", b"\r", b"\n.\r\nNEXT\r\n"], max_line=10)
    assert reader.done and reader.too_long_line
    assert left == [b"NEXT"]


# -- DataBlockReader: a partial line at the limit -------------------------------------


def test_a_stuffed_line_at_the_limit_waits_for_its_lf() -> None:
    # max_line 10: 8 octets of content. Stuffed, the longest line is a dot,
    # 8 octets and a CR before its LF arrives: 10 octets, still possible.
    lines = LineBuffer(10)
    reader = DataBlockReader(10, 1000)
    lines.feed(b".." + b"x" * 7 + b"\r")
    assert not reader.consume(lines)
    assert not reader.failed
    assert lines.buffered == 10
    lines.feed(b"\n.\r\n")
    assert reader.consume(lines)
    assert reader.result() == b"." + b"x" * 7 + b"\r\n"


def test_a_partial_line_one_octet_past_the_limit_fails_at_once() -> None:
    lines = LineBuffer(10)
    reader = DataBlockReader(10, 1000)
    lines.feed(b".." + b"x" * 8 + b"\r")
    assert not reader.consume(lines)
    assert reader.too_long_line
    assert lines.buffered == 0
    lines.feed(b"\n.\r\nNEXT\r\n")
    assert reader.consume(lines)
    assert reader.too_long_line and not reader.too_big
    assert all_lines(lines) == [b"NEXT"]


# -- the connections' defaults --------------------------------------------------------


def peer_server() -> peer.PeerServerConnection:
    return peer.PeerServerConnection(HOST, max_message_size=10**6, max_recipients=3)


def peer_data(conn: peer.PeerServerConnection, block: bytes) -> tuple[object, bytes]:
    conn.receive_data((f"EHLO b.example\r\nENVELOPE From:<s@b.example> ID={ENVID} SIZE=5000\r\n"
                       "RCPT To:<r@here.example>\r\nDATA\r\n").encode())
    for answer in (250, 250, 250, 354):
        event = conn.next_event()
        assert not isinstance(event, peer.DataFailed), event
        conn.reply(answer, "go")
    conn.data_to_send()
    conn.receive_data(block)
    return conn.next_event(), conn.data_to_send()


def test_a_server_takes_data_lines_of_1000_octets_by_default() -> None:
    line = b"x" * 998 + b"\r\n"
    event, out = peer_data(peer_server(), dot_stuff(line))
    assert event == peer.DataComplete(line)
    assert out == b""
    event, out = peer_data(peer_server(), dot_stuff(b"x" + line))
    assert event == peer.DataFailed(peer.LINE_TOO_LONG_REASON)
    assert out == b"500 5.5.2 Line too long\r\n"


def test_a_client_takes_reply_lines_of_1000_octets_by_default() -> None:
    client = peer.PeerClientConnection()
    client.receive_data(b"220 " + b"x" * 994 + b"\r\n")
    assert client.next_event() == peer.Reply(220, ["x" * 994])
    client = peer.PeerClientConnection()
    client.receive_data(b"220 " + b"x" * 995 + b"\r\n")
    with pytest.raises(RemoteProtocolError, match=r"^reply line too long$"):
        client.next_event()


def test_a_reply_has_at_most_1000_lines() -> None:
    client = peer.PeerClientConnection()
    client.receive_data(b"220-x\r\n" * 999 + b"220 last\r\n")
    reply = client.next_event()
    assert isinstance(reply, peer.Reply)
    assert reply.lines == ["x"] * 999 + ["last"]
    client = peer.PeerClientConnection()
    client.receive_data(b"220-x\r\n" * 1000 + b"220 last\r\n")
    with pytest.raises(RemoteProtocolError, match=r"^multi-line reply too long$"):
        client.next_event()


@pytest.mark.parametrize("second", [b"249", b"251", b"350", b"150"])
def test_a_reply_keeps_its_code_up_or_down(second: bytes) -> None:
    client = peer.PeerClientConnection()
    client.receive_data(b"250-a\r\n" + second + b" b\r\n")
    with pytest.raises(RemoteProtocolError, match=r"^multi-line reply changes its code$"):
        client.next_event()


def pulled(size: int) -> bytes:
    """A greeting, then a 150 and a pulled body of ``size`` octets (long lines,
    so that the block is read at the speed of bytes.find)."""
    line = b"x" * 998 + b"\r\n"
    body = line * (size // len(line))
    body += b"y" * (size - len(body) - 2) + b"\r\n"
    assert len(body) == size
    return b"220 hi\r\n150 body follows\r\n" + dot_stuff(body)


def pull(wire: bytes) -> int:
    """Read a pulled body with the client's default limits; its size."""
    client = peer.PeerClientConnection(stream_threshold=8 * MIB)
    client.send(peer.Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    got = 0
    for at in range(0, len(wire), 8 * MIB):
        client.receive_data(wire[at:at + 8 * MIB])
        while (event := client.next_event()) is not peer.NEED_DATA:
            match event:
                case peer.BlockChunk(data=data):
                    got += len(data)
                case peer.PulledBody(body=body):
                    return got + len(body)
    raise AssertionError("the body never ended")


def test_a_client_takes_a_block_of_64_mib_by_default_and_not_one_octet_more() -> None:
    assert pull(pulled(64 * MIB)) == 64 * MIB
    with pytest.raises(RemoteProtocolError, match=r"^pulled body exceeds 67108864 octets$"):
        pull(pulled(64 * MIB + 1))
