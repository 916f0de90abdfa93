"""A real SMDP server inside the test process, for the fast tests.

aiosmtpd's ``Controller`` is the model: the whole server (``SmdpServer``, the
same object ``smdp serve`` runs) on its own event loop in a thread, listening
on ports the OS picks, with a real SQLite store in the test's folder. Tests
talk to it over real sockets exactly as to a server process (our client,
poplib, a raw peer socket); nothing is faked. What it saves is the process
start (about half a second each). Crash, restart and multi-node tests keep
the subprocess harness (``harness.py``): a thread cannot be SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

from smdp.client.session import UserClient
from smdp.config import Config, PeerServer, load_config
from smdp.core.sender_auth import SenderAuthenticator
from smdp.server.app import SmdpServer

from .harness import create_user

CONFIG = """
[server]
hostname = "{hostname}"
domains = ["{domain}"]
[listen]
peer = "127.0.0.1:0"
user = "127.0.0.1:0"
{listen}
[store]
path = "{domain}.sqlite3"
[delivery]
retry_initial = 0.2
retry_max = 1.0
poll_interval = 0.1
[security]
password_memory_kib = 8
password_time_cost = 1
allow_plaintext_login = {plaintext_login}
{extra}
"""


class InProcessServer:
    """One domain's server on a loop in a background thread."""

    def __init__(self, root: Path, domain: str, extra: str = "", listen: str = "",
                 plaintext_login: bool = True,
                 authenticator: SenderAuthenticator | None = None) -> None:
        self.domain = domain
        # The MX's sender authentication (issue 12): NoAuthentication unless given.
        self.authenticator = authenticator
        self.hostname = f"smdp.{domain}"
        self.config_path = root / f"{domain}.toml"
        self.config_path.write_text(CONFIG.format(hostname=self.hostname, domain=domain,
                                                  extra=extra, listen=listen,
                                                  plaintext_login=str(plaintext_login).lower()))
        self.config: Config = load_config(self.config_path)
        self.peer_port = 0
        self.user_port = 0
        # [listen] submission / submission_tls, when ``listen`` asks for them.
        self.submission_port: int | None = None
        self.submission_tls_port: int | None = None
        self.mx_port: int | None = None  # [listen] mx
        self.web_port: int | None = None  # [listen] web
        self.imap_port: int | None = None  # [listen] imap
        self.imap_tls_port: int | None = None  # [listen] imap_tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: SmdpServer | None = None

    def add_user(self, address: str, password: str = "secret",
                 identities: tuple[str, ...] = ()) -> None:
        """Before ``start`` (SQLite: one writer at a time is the server's)."""
        create_user(self.config, address, password, identities)

    def start(self) -> None:
        started: Future[None] = Future()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def begin() -> None:
                # Built on the loop's own thread: the SQLite connection is
                # used only where it was opened.
                self._server = SmdpServer(self.config, authenticator=self.authenticator)
                await self._server.start()

            try:
                loop.run_until_complete(begin())
            except BaseException as exc:  # report the failure to start() and end
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"smdp-{self.domain}", daemon=True)
        self._thread.start()
        started.result(timeout=20)
        assert self._server is not None
        self.peer_port, self.user_port = self._server.peer_port, self._server.user_port
        self.submission_port = self._server.submission_port
        self.submission_tls_port = self._server.submission_tls_port
        self.mx_port = self._server.mx_port
        self.web_port = self._server.web_port
        self.imap_port = self._server.imap_port
        self.imap_tls_port = self._server.imap_tls_port

    def peer_with(self, other: InProcessServer) -> None:
        """Deliver ``other.domain``'s mail to ``other`` (its real port is
        known only once it listens), as a static [peers] entry would."""
        server, loop = self._server, self._loop
        assert server is not None and loop is not None
        where = PeerServer(other.hostname, "127.0.0.1", other.peer_port)
        loop.call_soon_threadsafe(server.discovery.set_static, other.domain, where)

    def stop(self) -> None:
        server, loop, thread = self._server, self._loop, self._thread
        if server is None or loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(server.stop(grace=1.0), loop).result(timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=20)
        loop.close()
        self._server = self._loop = self._thread = None

    def client(self, user: str, password: str = "secret") -> UserClient:
        c = UserClient("127.0.0.1", self.user_port)
        c.login(user, password, verb="PASS")
        return c


@contextlib.contextmanager
def inprocess_pair(root: Path, extra_a: str = "", extra_b: str = "",
                   users: dict[str, tuple[str, ...]] | None = None,
                   ) -> Iterator[tuple[InProcessServer, InProcessServer]]:
    """a.example and b.example running, each delivering to the other.

    ``users``: addresses to create before the start, by domain ("a.example":
    ("alice@a.example",)); more may be added later with ``smdp admin``."""
    a = InProcessServer(root, "a.example", extra_a)
    b = InProcessServer(root, "b.example", extra_b)
    for server in (a, b):
        for address in (users or {}).get(server.domain, ()):
            server.add_user(address)
    with peered(a, b):
        yield a, b


@contextlib.contextmanager
def peered(a: InProcessServer, b: InProcessServer) -> Iterator[None]:
    """Start two prepared servers, each delivering to the other; stop both
    after, whatever happened."""
    try:
        a.start()
        b.start()
        a.peer_with(b)
        b.peer_with(a)
        yield
    finally:
        b.stop()
        a.stop()
