"""Streaming message bodies through the codecs, both directions.

Receiving: with ``stream_threshold`` set, a body block comes out as
:class:`BlockChunk` events and a final event holding the rest; the pieces must
join to exactly what the non-streaming codec gives, failures must be reported
as before, and what the codec holds must stay bounded by the threshold and the
size of one feed. Sending: :class:`DotStuffer` and the piecewise send methods
must put on the wire exactly what the one-shot ones do.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smdp import terms
from smdp.protocol import peer, user
from smdp.protocol.framing import (
    CLOSED,
    NEED_DATA,
    BlockChunk,
    DataBlockReader,
    DotStuffer,
    LineBuffer,
    ProtocolUsageError,
    RemoteProtocolError,
    dot_stuff,
    normalize_line_ends,
)

PROPS = settings(
    max_examples=int(os.environ.get("SMDP_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ENVID = "abcdefghijklmnopqrstuvwxyz"
HOST = "mx.here.example"
MAX_LINE = 40

# Bodies heavy in what dot-stuffing and line-end normalisation care about.
PIECES = [b".", b"\r", b"\n", b"\r\n", b"\n.", b"..", b"x", b"ab", b"\r\n.\r\n", b"\xff"]
bodies = st.lists(st.sampled_from(PIECES), max_size=80).map(b"".join)
# Some lines long enough to break MAX_LINE.
long_bodies = st.lists(
    st.one_of(st.sampled_from(PIECES), st.just(b"y" * (MAX_LINE + 5))), max_size=40
).map(b"".join)
cuts_st = st.lists(st.integers(min_value=0, max_value=600), max_size=12)
thresholds = st.integers(min_value=1, max_value=64)


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


# ---------------------------------------------------------------------------
# Driving a server connection, with a record of the bound on what it holds.
# ---------------------------------------------------------------------------


class Run:
    """Events (chunks apart), the body the chunks and final event add up to,
    the bytes sent, and the largest amount the codec held for one event."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.chunks: list[bytes] = []
        self.out = bytearray()
        self.worst_excess = 0  # how far a chunk exceeded the allowed bound

    def check_bound(self, data: bytes, threshold: int, feed: int, max_line: int) -> None:
        # Held before the feed: < threshold. The feed completes at most one
        # partial line (< max_line octets); a bare LF grows to CRLF, so the
        # final form of n wire octets is at most 2n.
        bound = threshold - 1 + 2 * (feed + max_line)
        self.worst_excess = max(self.worst_excess, len(data) - bound)


def drive(
    conn: peer.PeerServerConnection | user.UserServerConnection,
    pieces: Iterable[bytes],
    respond: Callable[[object], None],
    final: type,
) -> Run:
    run = Run()
    threshold = conn.stream_threshold or 0
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            if isinstance(event, BlockChunk):
                assert threshold and len(event.data) >= threshold
                assert conn.reply_owed is None  # a chunk needs no answer
                run.chunks.append(event.data)
                run.check_bound(event.data, threshold, len(piece), conn.max_line_length)
                continue
            if isinstance(event, final):
                data = event.data  # type: ignore[attr-defined]
                run.check_bound(data, threshold, len(piece), conn.max_line_length)
            run.events.append(event)
            respond(event)
        run.out += conn.data_to_send()
        if isinstance(conn, peer.PeerServerConnection):
            in_block = conn.state is peer.PeerState.DATA_IN
        else:
            in_block = conn.state is user.UserState.COMPOSE_DATA
        if in_block:
            # Inside a block only a partial line is left in the line buffer.
            assert conn.buffered <= conn.max_line_length
    return run


# -- peer server --------------------------------------------------------------


def peer_server(threshold: int | None, max_size: int = 10_000) -> peer.PeerServerConnection:
    return peer.PeerServerConnection(
        HOST,
        max_message_size=max_size,
        max_recipients=3,
        max_line_length=MAX_LINE,
        stream_threshold=threshold,
    )


def peer_respond(conn: peer.PeerServerConnection) -> Callable[[object], None]:
    def respond(event: object) -> None:
        match event:
            case peer.DataStart():
                conn.reply(354, "go ahead")
            case peer.DataFailed():
                pass
            case peer.Quit():
                conn.reply(221, "bye")
            case _:
                conn.reply(250, "ok")

    return respond


def peer_session(kind: str, size: int, body_wire: bytes) -> bytes:
    return (
        (
            f"EHLO b.example\r\n{kind} From:<s@b.example> ID={ENVID} SIZE={size}\r\n"
            "RCPT To:<r@here.example>\r\nDATA\r\n"
        ).encode()
        + body_wire
        + b"NOOP\r\nQUIT\r\n"
    )


def peer_compare(
    wire: bytes, cuts: list[int], threshold: int, max_size: int = 10_000
) -> tuple[Run, Run]:
    streamed_conn = peer_server(threshold, max_size)
    whole_conn = peer_server(None, max_size)
    streamed = drive(
        streamed_conn, split(wire, cuts), peer_respond(streamed_conn), peer.DataComplete
    )
    whole = drive(whole_conn, split(wire, cuts), peer_respond(whole_conn), peer.DataComplete)
    assert not whole.chunks
    return streamed, whole


def same_outcome(streamed: Run, whole: Run, final: type) -> None:
    """Same events (chunks apart), same bytes out, and the same body."""
    assert bytes(streamed.out) == bytes(whole.out)
    assert len(streamed.events) == len(whole.events)
    for got, want in zip(streamed.events, whole.events, strict=True):
        if isinstance(want, final):
            assert isinstance(got, final)
            assert b"".join(streamed.chunks) + got.data == want.data  # type: ignore[attr-defined]
        else:
            assert got == want
    assert streamed.worst_excess <= 0


@PROPS
@given(
    body=long_bodies,
    kind=st.sampled_from(["MAIL", "ENVELOPE"]),
    size_error=st.sampled_from([0, 0, 0, -1, 1]),
    cuts=cuts_st,
    threshold=thresholds,
)
def test_peer_server_streams_the_data_block(
    body: bytes, kind: str, size_error: int, cuts: list[int], threshold: int
) -> None:
    size = max(0, len(normalize_line_ends(body)) + size_error)
    wire = peer_session(kind, size, dot_stuff(body))
    streamed, whole = peer_compare(wire, cuts, threshold, max_size=max(size, 300))
    same_outcome(streamed, whole, peer.DataComplete)
    # The pipelined commands after the block were read either way.
    assert streamed.events[-2:] == [peer.Noop(), peer.Quit()]


def _peer_block(kind: str, size: int, body: bytes, threshold: int, max_size: int = 1000) -> Run:
    conn = peer_server(threshold, max_size=max_size)
    wire = peer_session(kind, size, dot_stuff(body))
    return drive(
        conn,
        [wire[i : i + 7] for i in range(0, len(wire), 7)],
        peer_respond(conn),
        peer.DataComplete,
    )


def test_peer_server_chunks_add_up_to_the_body() -> None:
    body = b"".join(b"line %d\r\n.dot\r\n" % i for i in range(20))
    run = _peer_block("MAIL", len(body), body, threshold=16)
    assert len(run.chunks) > 5
    final = next(e for e in run.events if isinstance(e, peer.DataComplete))
    assert b"".join(run.chunks) + final.data == body
    assert all(c.endswith(b"\r\n") for c in run.chunks)  # whole lines only


@pytest.mark.parametrize(
    ("kind", "size", "body", "reason", "line"),
    [
        (
            "MAIL",
            500,
            b"x\r\n" * 100 + b"y" * 60 + b"\r\n",
            peer.LINE_TOO_LONG_REASON,
            b"500 5.5.2 Line too long\r\n",
        ),
        ("MAIL", 150, b"x\r\n" * 100, peer.SIZE_MISMATCH_REASON, b"554 5.3.4 Size mismatch\r\n"),
        ("MAIL", 200, b"x\r\n" * 60, peer.SIZE_MISMATCH_REASON, b"554 5.3.4 Size mismatch\r\n"),
        (
            "ENVELOPE",
            10,
            b"x\r\n" * 100,
            peer.TOO_BIG_REASON,
            b"552 5.3.4 Message size exceeds fixed maximum of 200\r\n",
        ),
    ],
)
def test_peer_server_block_failing_after_chunks(
    kind: str, size: int, body: bytes, reason: str, line: bytes
) -> None:
    run = _peer_block(kind, size, body, threshold=8, max_size=200 if kind == "ENVELOPE" else 1000)
    assert run.chunks  # some of the block was handed out before it failed
    assert run.events[-3:] == [peer.DataFailed(reason), peer.Noop(), peer.Quit()]
    assert line + b"250 ok\r\n221 bye\r\n" in bytes(run.out)


def test_peer_server_threshold_none_changes_nothing() -> None:
    body = b"a\r\n" * 50
    conn = peer_server(None)
    wire = peer_session("MAIL", len(body), dot_stuff(body))
    run = drive(
        conn,
        [wire[i : i + 5] for i in range(0, len(wire), 5)],
        peer_respond(conn),
        peer.DataComplete,
    )
    assert not run.chunks
    assert peer.DataComplete(body) in run.events


# -- user server --------------------------------------------------------------


def user_server(threshold: int | None, max_size: int = 300) -> user.UserServerConnection:
    return user.UserServerConnection(
        HOST,
        max_message_size=max_size,
        max_recipients=3,
        max_line_length=MAX_LINE,
        stream_threshold=threshold,
    )


def user_respond(conn: user.UserServerConnection) -> Callable[[object], None]:
    def respond(event: object) -> None:
        if not isinstance(event, user.MessageFailed):
            conn.ok("done")

    return respond


def user_session(body_wire: bytes) -> bytes:
    return (
        b"USER alice\r\nPASS secret\r\nMAIL\r\nRCPT TO:<bob@b.example>\r\nDATA\r\n"
        + body_wire
        + b"NOOP\r\nSTAT\r\n"
    )


@PROPS
@given(body=long_bodies, cuts=cuts_st, threshold=thresholds, max_size=st.sampled_from([50, 300]))
def test_user_server_streams_the_submission(
    body: bytes, cuts: list[int], threshold: int, max_size: int
) -> None:
    wire = user_session(dot_stuff(body))
    s_conn, w_conn = user_server(threshold, max_size), user_server(None, max_size)
    streamed = drive(s_conn, split(wire, cuts), user_respond(s_conn), user.MessageComplete)
    whole = drive(w_conn, split(wire, cuts), user_respond(w_conn), user.MessageComplete)
    same_outcome(streamed, whole, user.MessageComplete)
    assert streamed.events[-2:] == [user.Noop(), user.Stat()]


@pytest.mark.parametrize(
    ("body", "reason", "line"),
    [
        (
            b"x\r\n" * 50 + b"y" * 60 + b"\r\n",
            user.LINE_TOO_LONG_REASON,
            b"-ERR line too long; message refused\r\n",
        ),
        (
            b"x\r\n" * 200,
            user.TOO_BIG_REASON,
            b"-ERR message exceeds fixed maximum of 300 octets\r\n",
        ),
    ],
)
def test_user_server_block_failing_after_chunks(body: bytes, reason: str, line: bytes) -> None:
    conn = user_server(8)
    wire = user_session(dot_stuff(body))
    run = drive(
        conn,
        [wire[i : i + 9] for i in range(0, len(wire), 9)],
        user_respond(conn),
        user.MessageComplete,
    )
    assert run.chunks
    assert run.events[-3:] == [user.MessageFailed(reason), user.Noop(), user.Stat()]
    assert line + b"+OK done\r\n+OK done\r\n" in bytes(run.out)


# -- clients ------------------------------------------------------------------


def drain_client(
    client: peer.PeerClientConnection | user.UserClientConnection,
    pieces: Iterable[bytes],
) -> tuple[list[object], list[bytes], Exception | None]:
    """Events (chunks apart), the chunks, and the error that ended the run."""
    events: list[object] = []
    chunks: list[bytes] = []
    threshold = client.stream_threshold or 0
    try:
        for piece in pieces:
            client.receive_data(piece)
            while True:
                event = client.next_event()
                if event is NEED_DATA or event is CLOSED:
                    break
                if isinstance(event, BlockChunk):
                    assert len(event.data) >= threshold
                    assert len(event.data) < threshold + 2 * (len(piece) + MAX_LINE)
                    chunks.append(event.data)
                else:
                    events.append(event)
            assert client.buffered <= len(piece) + MAX_LINE
    except RemoteProtocolError as exc:
        return events, chunks, exc
    return events, chunks, None


def peer_client(threshold: int | None, max_size: int = 300) -> peer.PeerClientConnection:
    client = peer.PeerClientConnection(
        max_line_length=MAX_LINE, max_message_size=max_size, stream_threshold=threshold
    )
    client.send(peer.Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    client.send(peer.Noop())
    return client


@PROPS
@given(body=long_bodies, cuts=cuts_st, threshold=thresholds, max_size=st.sampled_from([50, 300]))
def test_peer_client_streams_the_pulled_body(
    body: bytes, cuts: list[int], threshold: int, max_size: int
) -> None:
    wire = b"220 hi\r\n150 here it is\r\n" + dot_stuff(body) + b"250 ok\r\n"
    events, chunks, error = drain_client(peer_client(threshold, max_size), split(wire, cuts))
    w_events, w_chunks, w_error = drain_client(peer_client(None, max_size), split(wire, cuts))
    assert not w_chunks
    assert type(error) is type(w_error)
    assert len(events) == len(w_events)
    for got, want in zip(events, w_events, strict=True):
        if isinstance(want, peer.PulledBody):
            assert isinstance(got, peer.PulledBody)
            assert (got.code, got.text) == (want.code, want.text)
            assert b"".join(chunks) + got.body == want.body
        else:
            assert got == want
    if error is None:
        assert events[-1] == peer.Reply(250, ["ok"])


def test_peer_client_pull_failing_after_chunks() -> None:
    client = peer_client(8, max_size=100)
    wire = b"220 hi\r\n150 big\r\n" + dot_stuff(b"x\r\n" * 100) + b"250 ok\r\n"
    events, chunks, error = drain_client(
        client, [wire[i : i + 10] for i in range(0, len(wire), 10)]
    )
    assert events == [peer.Reply(220, ["hi"])]
    assert chunks
    assert isinstance(error, RemoteProtocolError)
    with pytest.raises(RemoteProtocolError, match="the connection already failed"):
        client.next_event()


def user_client(threshold: int | None, max_size: int = 300) -> user.UserClientConnection:
    client = user.UserClientConnection(
        max_line_length=MAX_LINE, max_message_size=max_size, stream_threshold=threshold
    )
    client.send(user.Retr(1))
    client.send(user.Noop())
    return client


@PROPS
@given(body=long_bodies, cuts=cuts_st, threshold=thresholds, max_size=st.sampled_from([50, 300]))
def test_user_client_streams_retr(
    body: bytes, cuts: list[int], threshold: int, max_size: int
) -> None:
    wire = b"+OK hi\r\n+OK message follows\r\n" + dot_stuff(body) + b"+OK\r\n"
    events, chunks, error = drain_client(user_client(threshold, max_size), split(wire, cuts))
    w_events, w_chunks, w_error = drain_client(user_client(None, max_size), split(wire, cuts))
    assert not w_chunks
    assert type(error) is type(w_error)
    assert len(events) == len(w_events)
    for got, want in zip(events, w_events, strict=True):
        assert isinstance(got, user.UserReply) and isinstance(want, user.UserReply)
        if want.body is not None:
            assert got.body is not None and (got.ok, got.text) == (want.ok, want.text)
            assert b"".join(chunks) + got.body == want.body
        else:
            assert got == want


def test_user_client_does_not_stream_listings() -> None:
    client = user.UserClientConnection(stream_threshold=1)
    client.send(user.ListCmd())
    client.receive_data(b"+OK hi\r\n+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n")
    assert client.next_event() == user.UserReply(True, "hi")
    assert client.next_event() == user.UserReply(True, "2 messages", lines=["1 10", "2 20"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: peer.PeerServerConnection(
            HOST, max_message_size=1, max_recipients=1, stream_threshold=0
        ),
        lambda: user.UserServerConnection(
            HOST, max_message_size=1, max_recipients=1, stream_threshold=-1
        ),
        lambda: peer.PeerClientConnection(stream_threshold=0),
        lambda: user.UserClientConnection(stream_threshold=0),
    ],
)
def test_threshold_must_be_positive(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="stream_threshold must be None or at least 1"):
        make()


# -- the reader itself ----------------------------------------------------------


def test_reader_take_and_held() -> None:
    lines = LineBuffer(100)
    reader = DataBlockReader(100, 1000)
    lines.feed(b"..one\ntwo\r\nthr")
    assert not reader.consume(lines)
    assert reader.held == len(b".one\r\ntwo\r\n")
    assert reader.take() == b".one\r\ntwo\r\n"
    assert reader.held == 0 and reader.take() == b""
    lines.feed(b"ee\r\n.\r\nNOOP\r\n")
    assert reader.consume(lines)
    assert reader.held == 7
    assert reader.result() == b"three\r\n"
    assert reader.result() == b"three\r\n"  # result() does not forget
    assert reader.size == len(b".one\r\ntwo\r\nthree\r\n")  # taken octets count too
    assert lines.next_line() == b"NOOP"


def test_reader_size_limit_counts_what_was_taken() -> None:
    lines = LineBuffer(100)
    reader = DataBlockReader(100, 10)
    lines.feed(b"12345678\r\n")
    reader.consume(lines)
    assert reader.take() == b"12345678\r\n"
    lines.feed(b"9\r\n.\r\n")
    assert reader.consume(lines)
    assert reader.too_big and reader.held == 0 and reader.take() == b""
    with pytest.raises(ProtocolUsageError, match="the block was refused; there is no result"):
        reader.result()


# ---------------------------------------------------------------------------
# Sending.
# ---------------------------------------------------------------------------


def stuff_in_pieces(pieces: Iterable[bytes]) -> bytes:
    stuffer = DotStuffer()
    return b"".join(stuffer.feed(p) for p in pieces) + stuffer.end()


@PROPS
@given(body=bodies, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30))
def test_dot_stuffer_matches_dot_stuff(body: bytes, cuts: list[int]) -> None:
    assert stuff_in_pieces(split(body, cuts)) == dot_stuff(body)


@PROPS
@given(body=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=30))
def test_dot_stuffer_matches_dot_stuff_on_any_bytes(body: bytes, cuts: list[int]) -> None:
    assert stuff_in_pieces(split(body, cuts)) == dot_stuff(body)


@pytest.mark.parametrize(
    "pieces",
    [
        [],
        [b""],
        [b"\r"],
        [b"a\r", b"\n.b"],
        [b"a\n", b".b"],
        [b"a\r\n", b".", b"."],
        [b".", b"\r", b"\r", b"\n"],
        [b"x", b"\r"],
        [b"x\r\n"],
        [b"\r", b"", b"\n", b"."],
    ],
)
def test_dot_stuffer_edges(pieces: list[bytes]) -> None:
    assert stuff_in_pieces(pieces) == dot_stuff(b"".join(pieces))


def test_dot_stuffer_single_use() -> None:
    stuffer = DotStuffer()
    stuffer.end()
    with pytest.raises(ProtocolUsageError, match="after end"):
        stuffer.feed(b"x")
    with pytest.raises(ProtocolUsageError, match="called twice"):
        stuffer.end()


# -- peer server: the pull in pieces ---------------------------------------------


def pulling_server() -> peer.PeerServerConnection:
    conn = peer_server(None)
    conn.receive_data(f"EHLO b.example\r\nACCEPT {ENVID} To:<r@a.example>\r\nNOOP\r\n".encode())
    assert conn.next_event() == peer.Helo("b.example", extended=True)
    conn.reply(250, "hello")
    event = conn.next_event()
    assert isinstance(event, peer.Decision) and event.wants_body
    conn.data_to_send()
    return conn


@PROPS
@given(body=bodies, cuts=cuts_st)
def test_send_body_in_pieces_equals_send_body(body: bytes, cuts: list[int]) -> None:
    whole, pieces = pulling_server(), pulling_server()
    whole.send_body(150, "here", body)
    pieces.send_body_start(150, "here")
    for piece in split(body, cuts):
        pieces.send_body_chunk(piece)
    assert pieces.reply_owed is not None  # settled by send_body_end() only
    pieces.send_body_end()
    assert pieces.data_to_send() == whole.data_to_send()
    assert pieces.reply_owed is None and pieces.state is whole.state is peer.PeerState.READY
    assert pieces.next_event() == peer.Noop()


def test_send_body_pieces_misuse() -> None:
    conn = pulling_server()
    with pytest.raises(ProtocolUsageError, match="no body is being sent; call send_body_start"):
        conn.send_body_chunk(b"x")  # not started
    with pytest.raises(ProtocolUsageError, match="no body is being sent; call send_body_start"):
        conn.send_body_end()
    with pytest.raises(ProtocolUsageError, match="the pull is answered with a 1xx code"):
        conn.send_body_start(250, "not a 1xx")
    conn.send_body_start(150, "here")
    with pytest.raises(ProtocolUsageError, match="a body is being sent; finish it"):
        conn.send_body_start(150, "again")
    with pytest.raises(ProtocolUsageError, match="a body is being sent; finish it"):
        conn.reply(250, "in the middle of a body")
    with pytest.raises(ProtocolUsageError, match="a body is being sent; finish it"):
        conn.send_body(150, "x", b"y")
    with pytest.raises(ProtocolUsageError, match="reply owed to Decision"):
        conn.next_event()
    conn.send_body_chunk(b"part")
    conn.send_body_end()
    with pytest.raises(ProtocolUsageError, match="no body is being sent; call send_body_start"):
        conn.send_body_chunk(b"x")  # ended
    with pytest.raises(ProtocolUsageError, match="no body is being sent; call send_body_start"):
        conn.send_body_end()
    assert conn.data_to_send() == b"150 here\r\npart\r\n.\r\n"
    # A NOOP is no pull: it cannot be answered with a body.
    assert conn.next_event() == peer.Noop()
    with pytest.raises(ProtocolUsageError, match="answers ACCEPT/AUTHORIZE without BODY=HELD"):
        conn.send_body_start(150, "no")


# -- user server: a block answer in pieces ---------------------------------------------


def retr_server() -> user.UserServerConnection:
    conn = user_server(None)
    conn.receive_data(b"USER alice\r\nPASS secret\r\nRETR 1\r\nNOOP\r\n")
    for _ in range(2):
        conn.next_event()
        conn.ok("fine")
    assert conn.next_event() == user.Retr(1)
    conn.data_to_send()
    return conn


@PROPS
@given(body=bodies, cuts=cuts_st)
def test_block_in_pieces_equals_ok_block(body: bytes, cuts: list[int]) -> None:
    whole, pieces = retr_server(), retr_server()
    whole.ok_block("message follows", body)
    pieces.ok_block_start("message follows")
    for piece in split(body, cuts):
        pieces.block_chunk(piece)
    assert pieces.reply_owed is not None
    pieces.block_end()
    assert pieces.data_to_send() == whole.data_to_send()
    assert pieces.reply_owed is None and pieces.state is user.UserState.TRANSACTION
    assert pieces.next_event() == user.Noop()


def test_block_pieces_misuse() -> None:
    conn = retr_server()
    with pytest.raises(ProtocolUsageError, match="no block is being sent; call ok_block_start"):
        conn.block_chunk(b"x")
    with pytest.raises(ProtocolUsageError, match="no block is being sent; call ok_block_start"):
        conn.block_end()
    conn.ok_block_start("follows")
    for wrong in (
        lambda: conn.ok_block_start("again"),
        lambda: conn.ok("done"),
        lambda: conn.err("no"),
        lambda: conn.ok_block("x", b"y"),
    ):
        with pytest.raises(ProtocolUsageError, match="a block is being sent; finish it"):
            wrong()
    with pytest.raises(ProtocolUsageError, match=r"answer owed to Retr\(n=1\)"):
        conn.next_event()
    conn.block_end()
    assert conn.data_to_send() == b"+OK follows\r\n.\r\n"
    with pytest.raises(ProtocolUsageError, match="no block is being sent; call ok_block_start"):
        conn.block_end()
    assert conn.next_event() == user.Noop()
    with pytest.raises(ProtocolUsageError, match="is answered on one line"):
        conn.ok_block_start("NOOP is answered on one line")


# -- peer client: DATA in pieces ------------------------------------------------------


@PROPS
@given(body=bodies, cuts=cuts_st)
def test_data_parts_equal_data(body: bytes, cuts: list[int]) -> None:
    client = peer.PeerClientConnection()
    streamed = b"".join(client.send(peer.DataPart(p)) for p in split(body, cuts))
    streamed += client.send(peer.DataEnd())
    assert streamed == peer.PeerClientConnection().send(peer.Data(body)) == dot_stuff(body)


def test_data_parts_expect_one_reply() -> None:
    client = peer.PeerClientConnection()
    client.send(peer.DataStart())
    client.send(peer.DataPart(b"a\r"))
    client.send(peer.DataPart(b"\nb"))
    assert client.send(peer.DataEnd()) == b"\r\n.\r\n"
    # If a DataPart expected a reply, the 150 below would not be read as a pull.
    client.send(peer.Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    client.receive_data(b"220 hi\r\n354 go\r\n250 queued\r\n150 body\r\nx\r\n.\r\n")
    assert [client.next_event() for _ in range(4)] == [
        peer.Reply(220, ["hi"]),
        peer.Reply(354, ["go"]),
        peer.Reply(250, ["queued"]),
        peer.PulledBody(150, "body", b"x\r\n"),
    ]


def test_data_end_alone_is_an_empty_block() -> None:
    assert peer.PeerClientConnection().send(peer.DataEnd()) == b".\r\n"


def test_no_other_command_inside_data_parts() -> None:
    client = peer.PeerClientConnection()
    client.send(peer.DataPart(b"x"))
    with pytest.raises(ProtocolUsageError, match="inside a DATA block; send DataEnd"):
        client.send(peer.Noop())
    assert client.send(peer.DataEnd()) == b"\r\n.\r\n"
    assert client.send(peer.Noop()) == b"NOOP\r\n"


def test_streamed_client_to_streamed_server() -> None:
    body = b"".join(b"%d: .leading dot\n" % i for i in range(300))
    size = len(normalize_line_ends(body))
    client = peer.PeerClientConnection()
    wire = (
        f"EHLO b.example\r\nMAIL From:<s@b.example> ID={ENVID} SIZE={size}\r\n"
        "RCPT To:<r@here.example>\r\nDATA\r\n"
    ).encode()
    wire += b"".join(client.send(peer.DataPart(body[i : i + 13])) for i in range(0, len(body), 13))
    wire += client.send(peer.DataEnd()) + b"QUIT\r\n"
    conn = peer_server(256)
    run = drive(
        conn,
        [wire[i : i + 512] for i in range(0, len(wire), 512)],
        peer_respond(conn),
        peer.DataComplete,
    )
    final = next(e for e in run.events if isinstance(e, peer.DataComplete))
    assert len(run.chunks) > 10
    assert b"".join(run.chunks) + final.data == normalize_line_ends(body)
    assert run.worst_excess <= 0
