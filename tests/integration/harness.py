"""Real SMDP server processes on loopback for integration tests.

Each server is ``python -m smdp serve`` with its own store: a SQLite file, or
(``backend="postgresql"``) a PostgreSQL database, which several servers (nodes
of one domain) may share. Tests talk to them over real sockets with our
client, poplib, or a raw peer socket; they check what happened through the
product's own commands (ENVS, ENV, SENT, LISTS, ``smdp admin``), and read a
store with plain SQL only for what no command shows.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from smdp.certs import Issued, make_ca, make_cert, write_issued
from smdp.client.session import UserClient
from smdp.config import Config, load_config
from smdp.protocol import user as wire
from smdp.server.accounts import Accounts
from smdp.store import open_store
from tests.conditions import wait_until as wait_until  # re-exported for the tests


def create_user(config: Config, address: str, password: str = "secret",
                identities: tuple[str, ...] = ()) -> None:
    """A user with ``identities``, through a connection of its own to the
    server's store, as ``smdp admin user-add`` and ``identity-add`` would."""
    store = open_store(config)
    try:
        accounts = Accounts(store, config)
        accounts.create(address, password)
        for ident in identities:
            accounts.add_identity(address, ident)
    finally:
        store.close()


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


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a server process as an operator would (SIGTERM: it finishes what
    it acknowledged and exits), killing it only if it has not within
    ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    # TLS (tests/integration/test_tls.py). The default, used by the rest of the
    # suite, is plaintext on loopback: no [tls] table, so require is false.
    tls: str = ""  # the [tls] table's settings, one per line
    peer_extra: dict[str, str] = field(default_factory=dict)  # domain -> more [peers] lines
    peer_tls_port: int | None = None  # [listen] peer_tls (implicit TLS)
    user_tls_port: int | None = None  # [listen] user_tls
    submission_port: int | None = None  # [listen] submission (RFC 6409; off by default)
    submission_tls_port: int | None = None  # [listen] submission_tls (RFC 8314)
    mx_port: int | None = None  # [listen] mx (issue 12; off by default)
    metrics_port: int | None = None  # [listen] metrics (issue 16; off by default)
    server_extra: str = ""  # more [server] settings, one per line
    plaintext_login: bool = True  # [security] allow_plaintext_login
    store_extra: str = ""  # more [store] settings, one per line

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
            f'{self.peer_extra.get(d, "")}\n'
            for d, (h, p) in self.peers.items()
        )
        peers += "".join(  # trust settings for domains without a static address
            f'[peers."{d}"]\n{lines}\n'
            for d, lines in self.peer_extra.items() if d not in self.peers
        )
        listen_tls = "".join(
            f'{key} = "127.0.0.1:{port}"\n'
            for key, port in (("peer_tls", self.peer_tls_port), ("user_tls", self.user_tls_port),
                              ("submission", self.submission_port),
                              ("submission_tls", self.submission_tls_port),
                              ("mx", self.mx_port), ("metrics", self.metrics_port))
            if port is not None
        )
        tls = f"[tls]\n{self.tls}\n" if self.tls else ""
        if self.backend == "postgresql":
            store = f'backend = "postgresql"\ndsn = "{self.dsn}"'
        else:
            store = f'path = "{self.db_path.name}"'
        if self.store_extra:
            store += "\n" + self.store_extra
        node = f'node = "{self.node}"' if self.node else ""
        self.config_path.write_text(f"""
[server]
hostname = "{self.hostname}"
domains = ["{self.domain}"]
{node}
{self.server_extra}
[listen]
peer = "127.0.0.1:{self.peer_port}"
user = "127.0.0.1:{self.user_port}"
{listen_tls}[store]
{store}
[delivery]
retry_initial = 0.2
retry_max = 1.0
poll_interval = 0.1
{self.delivery}
[security]
password_memory_kib = 8
password_time_cost = 1
allow_plaintext_login = {"true" if self.plaintext_login else "false"}
{tls}{self.extra}
{peers}""")

    def add_user(self, address: str, password: str = "secret",
                 identities: tuple[str, ...] = ()) -> None:
        create_user(load_config(self.config_path), address, password, identities)

    def start(self) -> None:
        ready = self.root / f"{self.name}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.root / f"{self.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smdp", "serve", "--config", str(self.config_path),
             "--ready-file", str(ready)],
            stdout=log, stderr=log,
        )
        deadline = time.monotonic() + 60  # a bound on failure: slow under coverage, one core
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited: {self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server {self.name} did not start: {self.log()}")
            time.sleep(0.02)  # poll interval: waiting for the ready file
        ports = json.loads(ready.read_text())
        assert (ports["peer"], ports["user"]) == (self.peer_port, self.user_port)
        assert (ports.get("peer_tls"), ports.get("user_tls")) == (self.peer_tls_port,
                                                                  self.user_tls_port)
        assert (ports.get("submission"), ports.get("submission_tls")) == (
            self.submission_port, self.submission_tls_port)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
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

    def _lines(self, user: str, command: wire.UserCommand,
               password: str = "secret") -> list[str]:
        c = self.client(user, password)
        try:
            return c.call(command).lines or []
        finally:
            c.quit()

    def envelopes(self, user: str, all: bool = False,
                  password: str = "secret") -> list[list[str]]:
        """ENVS (``ENVS ALL``): [number, state, sender, size, attachments, subject]."""
        return [line.split(" ", 5) for line in self._lines(user, wire.Envs(all), password)]

    def envelope(self, user: str, entry: int | str) -> dict[str, str]:
        """ENV <entry>: its ``Field: value`` lines as a dict."""
        lines = self._lines(user, wire.EnvShow(int(entry)))
        return dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
                    for line in lines)

    def sent(self, user: str, msgid: str | None = None) -> list[list[str]]:
        """SENT [msgid]: [msgid, recipient, state, time, detail] (detail may
        be ""); each recipient's route is in ``sent_routes``."""
        return [row[:4] + row[5:] for row in self._sent_rows(user, msgid)]

    def sent_routes(self, user: str, msgid: str | None = None) -> dict[str, tuple[str, str]]:
        """SENT [msgid]: recipient -> (its route, its state)."""
        return {row[1]: (row[4], row[2]) for row in self._sent_rows(user, msgid)}

    def _sent_rows(self, user: str, msgid: str | None) -> list[list[str]]:
        """SENT's lines: [msgid, recipient, state, time, route, detail]."""
        rows = [line.split(" ", 5) for line in self._lines(user, wire.Sent(msgid))]
        return [row + [""] * (6 - len(row)) for row in rows]

    def lists(self, user: str) -> list[list[str]]:
        """LISTS: [list-name, address, (server,) how, added]."""
        return [line.split(" ") for line in self._lines(user, wire.Lists())]

    def admin(self, *args: str) -> str:
        """``smdp admin <args>`` as a real process on this server's config; its stdout."""
        result = subprocess.run(
            [sys.executable, "-m", "smdp", "admin", "--config", str(self.config_path), *args],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        return result.stdout

    def quality(self) -> dict[str, tuple[int, int]]:
        """``smdp admin quality``: server -> (messages, votes)."""
        lines = self.admin("quality").splitlines()
        rows = [line.split() for line in lines if line and not line.startswith(("server ", "no "))]
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    def reports(self) -> dict[str, int]:
        """``smdp admin reports``: sender -> number of spam reports."""
        rows = [line.split("\t") for line in self.admin("reports").splitlines()]
        return {row[0]: int(row[1].split()[0]) for row in rows if len(row) == 2}

    def queue(self) -> list[list[str]]:
        """``smdp admin queue``: [id, kind, key, "attempts=<n>[ last error: ...]"] per job."""
        return [line.split("\t") for line in self.admin("queue").splitlines()[1:]]

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


def pass_store() -> dict[str, str]:
    """``backend`` and ``dsn`` for one more server on the backend this test runs
    on (DEFAULT_BACKEND; a fresh database for PostgreSQL): ``Server(..., **pass_store())``."""
    backend, new_database = DEFAULT_BACKEND
    return {"backend": backend, "dsn": new_database() if new_database is not None else ""}


def make_pair(root: Path, extra_a: str = "", extra_b: str = "", backend: str | None = None,
              dsn_a: str = "", dsn_b: str = "", server_extra: str = "") -> tuple[Server, Server]:
    """a.example and b.example, each with its own store of ``backend``
    (for PostgreSQL: the databases ``dsn_a`` and ``dsn_b``); ``server_extra``:
    more [server] settings for both (the benchmarks' ``event_loop``)."""
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
        s.server_extra = server_extra
        s.write_config()
    return a, b


def facing_stand_in(root: Path, domain: str, user: str, peer_domain: str,
                    peer_port: int) -> Server:
    """One real server whose only peer, ``peer_domain``, is a scripted stand-in
    for another SMDP implementation listening on ``peer_port``; ``user`` has an
    account on it. Its store is on the backend of the test (``pass_store``)."""
    peer_port_of_ours, user_port = free_ports(2)
    server = Server(domain, f"smdp.{domain}", root, peer_port_of_ours, user_port,
                    **pass_store())
    server.peers = {peer_domain: (f"smdp.{peer_domain}", peer_port)}
    server.write_config()
    server.add_user(user)
    return server


class Pki:
    """A private CA in ``root/pki`` and certificates for test servers, made
    with the same helpers as ``smdp gencert``."""

    def __init__(self, root: Path, name: str = "smdp test CA") -> None:
        self.dir = root / "pki"
        self.ca = make_ca(name)
        self.ca_path, _ = write_issued(self.ca, self.dir, name.replace(" ", "-"))

    def issue(self, hostname: str, *, self_signed: bool = False,
              names: tuple[str, ...] = ()) -> tuple[Path, Path, Issued]:
        """A certificate for ``hostname`` (issued by this CA unless
        ``self_signed``), written as ``<stem>.pem`` and ``<stem>.key``."""
        issued = make_cert(hostname, issuer=None if self_signed else self.ca, extra_names=names)
        stem = f"{hostname}{'-self' if self_signed else ''}"
        cert, key = write_issued(issued, self.dir, stem)
        return cert, key, issued

    def tls(self, hostname: str, *, require: bool | None = None) -> str:
        """[tls] lines: a CA-issued certificate for ``hostname``, peers checked
        against this CA."""
        cert, key, _ = self.issue(hostname)
        lines = f'cert = "{cert}"\nkey = "{key}"\nca = "{self.ca_path}"\n'
        if require is not None:
            lines += f"require = {'true' if require else 'false'}\n"
        return lines


def make_tls_pair(root: Path, **kwargs: Any) -> tuple[Server, Server, Pki]:
    """``make_pair`` with certificates from one private CA, STARTTLS on both
    ports, and TLS required between the two (the secure default)."""
    pki = Pki(root)
    a, b = make_pair(root, **kwargs)
    for s in (a, b):
        s.tls = pki.tls(s.hostname)
        s.write_config()
    return a, b, pki


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

    def __init__(self, port: int, tls: tuple[ssl.SSLContext, str] | None = None,
                 source: str | None = None) -> None:
        """``tls``: (context, server name) for an implicit-TLS port; ``source``:
        the address to connect from (on Linux, any of 127.0.0.0/8)."""
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=30,
            source_address=(source, 0) if source is not None else None)
        if tls is not None:
            self.sock = tls[0].wrap_socket(self.sock, server_hostname=tls[1])
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

    def starttls(self, context: ssl.SSLContext, hostname: str) -> str:
        """STARTTLS and the handshake; returns the 220 reply."""
        reply = self.cmd("STARTTLS")
        assert reply.startswith("220 "), reply
        assert self.buf == b"", self.buf  # nothing may follow the 220 in plaintext
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname)
        return reply

    def close(self) -> None:
        self.sock.close()


class UserSocket:
    """A raw user-port client for bad-input tests: a line in, a reply line out."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.greeting = self.line()

    def line(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode()

    def cmd(self, text: str | bytes) -> str:
        self.sock.sendall((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def block(self) -> list[str]:
        lines = []
        while (line := self.line()) != ".":
            lines.append(line)
        return lines

    def close(self) -> None:
        self.sock.close()
