"""Real SMDP server processes on loopback for integration tests.

Each server is ``python -m smdp serve`` with its own store: a SQLite file, or
(``backend="postgresql"``) a PostgreSQL database, which several servers (nodes
of one domain) may share. Tests talk to them over real sockets with our
client, poplib, or a raw peer socket, and read their stores with plain SQL.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from smdp.client.session import UserClient
from smdp.config import load_config
from smdp.server.accounts import Accounts
from smdp.store import open_store


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Server:
    domain: str
    hostname: str
    root: Path
    peer_port: int
    user_port: int
    extra: str = ""
    peers: dict[str, tuple[str, int]] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    backend: str = "sqlite"  # or "postgresql", with dsn
    dsn: str = ""
    node: str = ""  # [server] node; set when several servers share one store
    delivery: str = ""  # more [delivery] settings, one per line

    @property
    def name(self) -> str:
        """Names this server's files: the node, since nodes share a domain."""
        return self.node or self.domain

    @property
    def config_path(self) -> Path:
        return self.root / f"{self.name}.toml"

    @property
    def db_path(self) -> Path:
        return self.root / f"{self.name}.sqlite3"

    def write_config(self) -> None:
        peers = "".join(
            f'[peers."{d}"]\nhostname = "{h}"\naddress = "127.0.0.1"\nport = {p}\n'
            for d, (h, p) in self.peers.items()
        )
        if self.backend == "postgresql":
            store = f'backend = "postgresql"\ndsn = "{self.dsn}"'
        else:
            store = f'path = "{self.db_path.name}"'
        node = f'node = "{self.node}"' if self.node else ""
        self.config_path.write_text(f"""
[server]
hostname = "{self.hostname}"
domains = ["{self.domain}"]
{node}
[listen]
peer = "127.0.0.1:{self.peer_port}"
user = "127.0.0.1:{self.user_port}"
[store]
{store}
[delivery]
retry_initial = 0.2
retry_max = 1.0
poll_interval = 0.1
{self.delivery}
[security]
password_memory_kib = 8
password_time_cost = 1
{self.extra}
{peers}""")

    def add_user(self, address: str, password: str = "secret",
                 identities: tuple[str, ...] = ()) -> None:
        config = load_config(self.config_path)
        store = open_store(config)
        try:
            accounts = Accounts(store, config)
            accounts.create(address, password)
            for ident in identities:
                accounts.add_identity(address, ident)
        finally:
            store.close()

    def start(self) -> None:
        ready = self.root / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.root / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smdp", "serve", "--config", str(self.config_path),
             "--ready-file", str(ready)],
            stdout=log, stderr=log,
        )
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.name} did not start: {self.log()}")
            time.sleep(0.02)
        ports = json.loads(ready.read_text())
        assert ports == {"peer": self.peer_port, "user": self.user_port}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as a crash or power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.root / f"{self.name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def client(self, user: str, password: str = "secret") -> UserClient:
        c = UserClient("127.0.0.1", self.user_port)
        c.login(user, password, verb="PASS")
        return c

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the server's own store (a real one, read-only here).

        Tests write SQLite's ``?`` placeholders; for PostgreSQL they become
        psycopg's ``%s`` (and a literal ``%`` is doubled), the SQL otherwise the same.
        """
        if self.backend == "postgresql":
            pg_sql = sql.replace("%", "%%").replace("?", "%s")
            with psycopg.connect(self.dsn, autocommit=True,
                                 options="-c default_transaction_read_only=on") as pg:
                return pg.execute(pg_sql, args).fetchall()
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


# The backend make_pair uses when a test names none: SQLite, unless the suite
# runs with SMDP_TEST_BACKEND=postgresql (tests/integration/conftest.py sets a
# factory of fresh databases here), so the same integration suite runs on both.
DEFAULT_BACKEND: tuple[str, Callable[[], str] | None] = ("sqlite", None)


def make_pair(root: Path, extra_a: str = "", extra_b: str = "", backend: str | None = None,
              dsn_a: str = "", dsn_b: str = "") -> tuple[Server, Server]:
    """a.example and b.example, each with its own store of ``backend``
    (for PostgreSQL: the databases ``dsn_a`` and ``dsn_b``)."""
    if backend is None:
        backend, new_database = DEFAULT_BACKEND
        if new_database is not None:
            dsn_a, dsn_b = new_database(), new_database()
    if backend == "postgresql" and not (dsn_a and dsn_b):
        raise ValueError("a PostgreSQL pair needs a database per server (dsn_a, dsn_b)")
    pa, ua, pb, ub = free_ports(4)
    a = Server("a.example", "smdp.a.example", root, pa, ua, extra_a, backend=backend, dsn=dsn_a)
    b = Server("b.example", "smdp.b.example", root, pb, ub, extra_b, backend=backend, dsn=dsn_b)
    a.peers = {"b.example": (b.hostname, pb)}
    b.peers = {"a.example": (a.hostname, pa)}
    for s in (a, b):
        s.write_config()
    return a, b


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for s in servers:
            s.start()
        yield
    finally:
        for s in servers:
            s.stop()


class PeerSocket:
    """A raw peer-port client for bad-input tests: bytes in, reply lines out."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> str:
        """One whole reply (multi-line joined with newlines)."""
        lines = [self.line().decode()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line().decode())
        return "\n".join(lines)

    def cmd(self, text: str) -> str:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()
