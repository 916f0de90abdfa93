"""Review of group commit (issue 15 item 2): defects found in the flusher's
counting and the hold, each shown on a real store and real sockets.

The first two fail on the code as reviewed (0e0857b..8e18726) and pass once
their defect is fixed; the last covers the flow control of d108975 over TLS.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.server import durable_io
from smdp.server.tls import start_tls
from smdp.store.sqlite import SqliteStore
from tests.unit.test_group_commit import gate_of, tls_contexts


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "gc.sqlite3")
    s.migrate()
    s.start_group_commit()
    yield s
    s.close()


def test_an_autocommit_write_with_returning_is_counted_only_once_committed(
        store: SqliteStore, tmp_path: Path) -> None:
    """``_exec`` outside a transaction counts a commit as soon as
    ``total_changes`` moved, but a statement with RETURNING makes its changes
    at its first step and commits only when its last row has been fetched
    (``_insert``'s fetchone). Counted before it is in the WAL, the commit may
    be declared durable by an fsync that ran before its frames were written,
    and its answer (a web token's 201, an IMAP CREATE's OK) then leaves
    unflushed."""
    flusher = store.flusher
    assert flusher is not None
    user = store.create_user("u@a.example", "x")
    other = sqlite3.connect(tmp_path / "gc.sqlite3")
    seen: list[int] = []
    note = flusher.note_commit

    def noting() -> None:
        # What another connection sees when the commit is counted: the
        # committed row, if the commit has really happened.
        seen.append(other.execute("SELECT COUNT(*) FROM api_tokens").fetchone()[0])
        note()

    flusher.note_commit = noting  # type: ignore[method-assign]
    try:
        store.add_api_token(user.id, "t", "digest", 0.0)
    finally:
        flusher.note_commit = note  # type: ignore[method-assign]
        other.close()
    assert seen == [1], "the commit was counted before it was committed"


async def test_a_connection_lost_while_its_reply_is_held_does_not_hang_starttls(
        store: SqliteStore, tmp_path: Path) -> None:
    """The client sends STARTTLS and goes; the 220 is held for a commit's
    fsync. connection_lost takes the transport out of the gate's holding set
    with its bytes still held, so no release ever wakes ``flushed()`` and
    the session waits in ``start_tls`` forever (its slot with it)."""
    flusher, gate = gate_of(store)
    context, _client = tls_contexts(tmp_path)
    ended = asyncio.Event()
    asked = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readline()
            store.create_user("v@a.example", "x")
            writer.write(b"220 go ahead\r\n")  # held until the fsync
            asked.set()
            await start_tls(reader, writer, context, server_side=True)
        except (OSError, ssl.SSLError):
            pass
        finally:
            ended.set()

    server = await durable_io.start_server(handler, "127.0.0.1", 0, gate)
    port = server.sockets[0].getsockname()[1]
    with flusher.held():
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"STARTTLS\r\n")
        await asyncio.wait_for(asked.wait(), 5)
        # The client goes with a reset (an EOF alone leaves the transport
        # open for a half-close): connection_lost while the 220 is held.
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        await asyncio.sleep(0.2)  # the server sees connection_lost
    try:
        await asyncio.wait_for(ended.wait(), 3)
    finally:
        server.close()
        gate.close()


async def test_held_bytes_count_for_flow_control_after_starttls(
        store: SqliteStore, tmp_path: Path) -> None:
    """The same over TLS: the upgraded transport's protocol is paused by the
    TLS layer and by the held bytes alike, and resumed once neither holds it."""
    flusher, gate = gate_of(store)
    server_context, client_context = tls_contexts(tmp_path)
    chunk = b"y" * 65536
    written = 0
    started = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        tls_reader, tls_writer = await start_tls(reader, writer, server_context,
                                                 server_side=True)
        await tls_reader.readline()
        store.create_user("t@a.example", "x")
        started.set()
        for _ in range(160):
            tls_writer.write(chunk)
            written += len(chunk)
            await tls_writer.drain()
        await tls_reader.read()
        tls_writer.close()

    server = await durable_io.start_server(handler, "127.0.0.1", 0, gate)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"STARTTLS\r\n")
    assert await asyncio.wait_for(reader.readline(), 5) == b"220 go ahead\r\n"
    await writer.start_tls(client_context)
    with flusher.held():
        writer.write(b"go\r\n")
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.sleep(0.5)
        held_then = written
    body = await asyncio.wait_for(reader.readexactly(160 * len(chunk)), 10)
    writer.close()
    server.close()
    gate.close()
    assert held_then <= 1024 * 1024, f"{held_then} bytes held behind one fsync"
    assert body == chunk * 160
