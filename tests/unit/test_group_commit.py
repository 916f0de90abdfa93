"""Group commit (issue 15 item 2): the flusher and the hold on every socket.

The flusher is run against a real SQLite store; the hold against real sockets
on 127.0.0.1 with that store's flusher. ``WalFlusher.held()`` keeps the
flusher from declaring anything durable, which is how these tests show that no
byte leaves before the fsync that covers the commits made before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from smdp.certs import make_ca, make_cert, write_issued
from smdp.server import durable_io
from smdp.server.durable_io import DurableGate, GatedTransport
from smdp.server.tls import start_tls
from smdp.store.group_commit import CannotOpen, WalFlusher
from smdp.store.sqlite import SqliteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "gc.sqlite3")
    s.migrate()
    s.start_group_commit()
    yield s
    s.close()


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def commit_one(store: SqliteStore, n: int) -> None:
    store.create_user(f"user{n}@a.example", "x")


def test_a_commit_becomes_durable_by_one_fsync_of_the_flusher(store: SqliteStore) -> None:
    flusher = store.flusher
    assert flusher is not None
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    before = flusher.fsyncs
    commit_one(store, 1)
    assert flusher.written == 1
    wait_for(flusher.is_durable)
    assert flusher.durable == 1
    assert flusher.fsyncs == before + 1


def test_a_transaction_that_wrote_nothing_asks_for_no_fsync(store: SqliteStore) -> None:
    flusher = store.flusher
    assert flusher is not None
    with store.transaction():
        store.user_by_address("nobody@a.example")
    assert flusher.written == 0
    assert flusher.is_durable()


def test_commits_made_while_an_fsync_runs_share_the_next_one(store: SqliteStore) -> None:
    flusher = store.flusher
    assert flusher is not None
    with flusher.held():
        for n in range(50):
            commit_one(store, n)
        assert flusher.durable == 0 and not flusher.is_durable()
    wait_for(flusher.is_durable)
    assert flusher.durable == 50
    assert flusher.fsyncs <= 2  # 50 commits, at most two flushes


def test_close_leaves_nothing_unflushed_and_no_commit_no_fsync(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "gc.sqlite3")
    s.migrate()
    flusher = s.start_group_commit()
    with flusher.held():
        commit_one(s, 1)
        assert not flusher.is_durable()
    wait_for(flusher.is_durable)
    fsyncs = flusher.fsyncs
    time.sleep(0.1)  # nothing new: no fsync
    assert flusher.fsyncs == fsyncs
    commit_one(s, 2)
    s.close()  # the last commits are flushed before the thread ends
    assert flusher.durable == flusher.written == 2
    reopened = SqliteStore(tmp_path / "gc.sqlite3")
    assert reopened.user_by_address("user2@a.example") is not None
    reopened.close()


def test_a_checkpoint_keeps_the_wal_and_a_new_wal_is_reopened(
        store: SqliteStore, tmp_path: Path) -> None:
    flusher = store.flusher
    assert flusher is not None
    commit_one(store, 1)
    wait_for(flusher.is_durable)
    first = flusher._identity
    assert first is not None
    # A checkpoint that empties the WAL keeps the file (the same inode).
    store.compact()
    commit_one(store, 2)
    wait_for(flusher.is_durable)
    assert flusher._identity == first
    # A WAL removed and made anew (the last connection closed, another
    # opened) is a new inode: the flusher's descriptor follows it.
    lone = WalFlusher(tmp_path / "lone.sqlite3")
    try:
        lone.wal.write_bytes(b"frames")
        lone.note_commit()
        wait_for(lone.is_durable)
        old = lone._identity
        lone.wal.unlink()
        lone.wal.write_bytes(b"new frames")
        lone.note_commit()
        wait_for(lone.is_durable)
        st = os.stat(lone.wal)
        assert old is not None and lone._identity == (st.st_dev, st.st_ino) != old
    finally:
        lone.stop()


def test_no_commit_waits_for_a_later_one_to_be_flushed(tmp_path: Path) -> None:
    """A lost wake-up would leave a commit undurable until the next commit
    came: each of many commits, made at every moment of the flusher's cycle,
    must become durable by itself."""
    flusher = WalFlusher(tmp_path / "db")  # no WAL file: each flush is quick
    try:
        for n in range(600):
            flusher.note_commit()
            if n % 3 == 0:
                flusher.note_commit()  # sometimes two in a row
            deadline = time.monotonic() + 5
            while not flusher.is_durable():
                assert time.monotonic() < deadline, f"commit {n} never became durable"
                time.sleep(0)  # let the flusher have the GIL
    finally:
        flusher.stop()
    assert flusher.durable == flusher.written


class OpensLate(WalFlusher):
    """A WAL that cannot be opened twice (too many open files), then can."""

    tries = 0

    def _sync(self) -> None:
        self.tries += 1
        if self.tries <= 2:
            raise CannotOpen("[Errno 24] Too many open files")


def test_a_wal_that_cannot_be_opened_is_tried_again_not_given_up(tmp_path: Path) -> None:
    flusher = OpensLate(tmp_path / "db")
    try:
        flusher.note_commit()
        wait_for(flusher.is_durable)
        assert flusher.failure is None and flusher.tries == 3
    finally:
        flusher.stop()


class FailingFlusher(WalFlusher):
    """A disk that refuses the fsync (EIO)."""

    def _sync(self) -> None:
        raise OSError(5, "Input/output error")


def test_a_failed_fsync_stops_everything_that_waits(tmp_path: Path) -> None:
    told = threading.Event()
    flusher = FailingFlusher(tmp_path / "db")
    flusher.add_listener(told.set)
    flusher.note_commit()
    assert told.wait(5)
    assert isinstance(flusher.failure, OSError)
    assert not flusher.is_durable()
    flusher.note_commit()  # a failed flusher flushes nothing more
    time.sleep(0.1)
    assert not flusher.is_durable() and flusher.fsyncs == 0
    flusher.stop()


# -- the hold on real sockets --------------------------------------------------------


def gate_of(store: SqliteStore) -> tuple[WalFlusher, DurableGate]:
    """The store's flusher, and a gate on it bound to the running loop."""
    flusher = store.flusher
    assert flusher is not None
    gate = DurableGate(flusher)
    gate.bind(asyncio.get_running_loop())
    return flusher, gate


def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for localhost, and a client's
    that takes it unverified (these tests are about the hold, not trust)."""
    ca = make_ca("Test CA")
    cert, key = write_issued(make_cert("localhost", issuer=ca), tmp_path, "server")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    return server_context, client_context

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(gate: DurableGate, handler: Handler) -> tuple[asyncio.Server, int]:
    server = await durable_io.start_server(handler, "127.0.0.1", 0, gate)
    return server, server.sockets[0].getsockname()[1]


async def read_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(100), seconds)
    except TimeoutError:
        return b""


async def test_a_reply_after_a_commit_waits_for_its_fsync(store: SqliteStore) -> None:
    flusher, gate = gate_of(store)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        commit_one(store, 1)
        writer.write(b"250 kept\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server, port = await serve(gate, handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with flusher.held():
        writer.write(b"DATA\r\n")
        assert await read_within(reader, 0.3) == b""  # committed, not yet durable
        assert not flusher.is_durable()
    assert await asyncio.wait_for(reader.readline(), 5) == b"250 kept\r\n"
    assert flusher.is_durable()
    writer.close()
    server.close()
    gate.close()


async def test_with_nothing_to_flush_bytes_go_straight_out(store: SqliteStore) -> None:
    flusher = store.flusher
    assert flusher is not None
    gate = DurableGate(flusher)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hello\r\n")
        await reader.read()
        writer.close()

    server, port = await serve(gate, handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    with flusher.held():  # held, but nothing was committed: nothing waits
        assert await asyncio.wait_for(reader.readline(), 5) == b"220 hello\r\n"
    writer.close()
    server.close()


async def test_held_bytes_keep_their_order_and_a_close_waits_for_them(
        store: SqliteStore) -> None:
    flusher, gate = gate_of(store)
    wrote = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commit_one(store, 1)
        writer.write(b"one ")
        commit_one(store, 2)
        writer.write(b"two ")
        writer.writelines([b"three", b"\r\n"])
        transport = writer.transport
        assert isinstance(transport, GatedTransport)
        assert transport.get_write_buffer_size() >= len(b"one two three\r\n")
        writer.close()  # after the held bytes, not before
        assert writer.is_closing()
        wrote.set()

    server, port = await serve(gate, handler)
    with flusher.held():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await wrote.wait()
        assert await read_within(reader, 0.2) == b""
    assert await asyncio.wait_for(reader.read(), 5) == b"one two three\r\n"  # then EOF
    writer.close()
    server.close()


async def test_a_body_behind_a_held_reply_waits_in_the_store_not_in_memory(
        store: SqliteStore) -> None:
    """Held bytes past HELD_HIGH pause the writer: ``drain()`` waits, so a
    streamed body is not read into memory while its reply waits for the fsync."""
    flusher, gate = gate_of(store)
    chunk = b"x" * 16384
    progress: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commit_one(store, 1)
        writer.write(b"150 follows\r\n")
        for _n in range(64):  # 1 MiB
            writer.write(chunk)
            await writer.drain()
            progress.append(writer.transport.get_write_buffer_size())
        writer.close()

    server, port = await serve(gate, handler)
    with flusher.held():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.3)
        assert len(progress) <= durable_io.HELD_HIGH // len(chunk) + 1  # paused
        assert max(progress, default=0) <= durable_io.HELD_HIGH + len(chunk) + 16
    data = await asyncio.wait_for(reader.read(), 10)
    assert data == b"150 follows\r\n" + chunk * 64
    assert len(progress) == 64
    writer.close()
    server.close()


async def test_an_abort_comes_after_the_held_replies(store: SqliteStore) -> None:
    """A session that aborts (half a body out: nothing may follow) still sends
    the replies written before, once durable, as it did before group commit."""
    flusher, gate = gate_of(store)
    aborted = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commit_one(store, 1)
        writer.write(b"a OK\r\n")
        writer.transport.abort()
        writer.write(b"nothing after an abort\r\n")
        assert writer.transport.is_closing()
        aborted.set()

    server, port = await serve(gate, handler)
    with flusher.held():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await aborted.wait()
        assert await read_within(reader, 0.2) == b""
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while data := await asyncio.wait_for(reader.read(100), 5):
            got += data
    assert got == b"a OK\r\n"
    writer.close()
    server.close()


async def test_after_a_failed_fsync_the_held_answer_is_never_sent(tmp_path: Path) -> None:
    flusher = FailingFlusher(tmp_path / "db")
    gate = DurableGate(flusher)
    gate.bind(asyncio.get_running_loop())

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        flusher.note_commit()  # a commit whose fsync will fail
        writer.write(b"250 kept\r\n")
        await reader.read()

    server, port = await serve(gate, handler)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        data = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        data = b""
    assert data == b""  # the connection dropped without the 250
    writer.close()
    server.close()
    flusher.stop()


async def test_an_outgoing_connection_is_held_the_same(store: SqliteStore) -> None:
    flusher, gate = gate_of(store)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await got.put(await reader.readline())
        writer.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await durable_io.open_connection("127.0.0.1", port, gate)
    with flusher.held():
        commit_one(store, 1)
        writer.write(b"RECEIVED 1\r\n")
        await asyncio.sleep(0.2)
        assert got.empty()
    assert await asyncio.wait_for(got.get(), 5) == b"RECEIVED 1\r\n"
    writer.close()
    server.close()


async def test_starttls_sends_the_held_reply_before_the_handshake(
        store: SqliteStore, tmp_path: Path) -> None:
    flusher, gate = gate_of(store)
    server_context, client_context = tls_contexts(tmp_path)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        commit_one(store, 1)
        writer.write(b"220 go ahead\r\n")  # held until the fsync
        tls_reader, tls_writer = await start_tls(reader, writer, server_context,
                                                 server_side=True)
        assert isinstance(tls_writer.transport, GatedTransport)
        line = await tls_reader.readline()
        commit_one(store, 2)
        tls_writer.write(b"250 " + line)
        await tls_writer.drain()
        await tls_reader.read()
        tls_writer.close()

    server, port = await serve(gate, handler)
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=raw)
    writer.write(b"STARTTLS\r\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"220 go ahead\r\n"
    await writer.start_tls(client_context)
    with flusher.held():
        writer.write(b"hello\r\n")
        assert await read_within(reader, 0.3) == b""
    assert await asyncio.wait_for(reader.readline(), 5) == b"250 hello\r\n"
    writer.close()
    server.close()
