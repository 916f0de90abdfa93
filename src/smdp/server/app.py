"""One SMDP server: the store, the domain core and the asyncio adapters
(peer port, user port, submission port, delivery worker) wired together.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.metadata
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from smdp.config import Config, Listener, PeerServer
from smdp.core.sender_auth import NoAuthentication, SenderAuthenticator
from smdp.errors import CliError
from smdp.server import durable_io
from smdp.server.accounts import Accounts
from smdp.server.delivery import DeliveryWorker
from smdp.server.delivery_jobs import PeerJobs
from smdp.server.discovery import Discovery
from smdp.server.durable_io import DurableGate
from smdp.server.greylist import Greylist
from smdp.server.housekeeping import housekeeping_loop
from smdp.server.imap_server import serve_imap
from smdp.server.metrics import metrics_app
from smdp.server.mx_server import serve_mx
from smdp.server.peer_server import serve_peer
from smdp.server.routing import Router
from smdp.server.sender_auth import DnsSenderAuthenticator
from smdp.server.services import (
    Core,
    ImapPort,
    LoginThrottle,
    MxPort,
    PeerPort,
    PeerQuotas,
    SubmissionPort,
    UserPort,
    WebPort,
)
from smdp.server.submission_server import serve_submission
from smdp.server.tls import (
    HANDSHAKE_TIMEOUT,
    TlsPolicy,
    check_exposure,
    unauthenticated_warning,
)
from smdp.server.user_server import serve_user
from smdp.server.web import WebApp
from smdp.store import Store, open_store

log = logging.getLogger("smdp")

Connected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Sessions:
    """The live sessions of one port, for the caps and for shutdown."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    per_client: dict[str, int] = field(default_factory=dict)


class SmdpServer:
    def __init__(self, config: Config, store: Store | None = None,
                 authenticator: SenderAuthenticator | None = None) -> None:
        self.config = config
        # First, before anything is opened or bound: no listener beyond
        # loopback without a certificate, unless the configuration says so.
        check_exposure(config)
        warning = unauthenticated_warning(config)
        if warning is not None:
            log.warning("%s", warning)
        # A certificate that cannot be loaded stops the server at start.
        self.tls = TlsPolicy(config)
        self.store = store if store is not None else open_store(config)
        # Group commit (issue 15 item 2): commits share fsyncs, and every
        # byte this server writes waits for the commits before it.
        flusher = self.store.start_group_commit() if config.group_commit else None
        self.durable_gate = DurableGate(flusher) if flusher is not None else None
        self.core = Core.build(config, self.store)
        self.discovery = Discovery(dict(config.peers),
                                   nameservers=list(config.dns_nameservers) or None)
        self._serve_own_domains(config.peer_listener.port)
        self.worker = DeliveryWorker(self.store, config.delivery, config.node,
                                     PeerJobs(self.core, self.tls, self.discovery,
                                              Router(self.discovery)
                                              if config.smtp.outbound else None,
                                              self.durable_gate))
        # Issue 4 abuse limits: sliding windows, per process.
        quotas = PeerQuotas()
        self.peer_port_services = PeerPort(self.core, self.tls, self.discovery, quotas)
        # The MX shares the peer port's windows (messages per recipient add
        # up across both doors). Its sender authentication asks the server's
        # own resolver; the threads it checks in exist only with an MX.
        self._own_authenticator: DnsSenderAuthenticator | None = None
        if authenticator is None and config.mx_listener is not None \
                and config.smtp.sender_auth:
            authenticator = self._own_authenticator = DnsSenderAuthenticator.from_config(config)
        self.mx_port_services = MxPort(
            self.core, self.tls, quotas, authenticator or NoAuthentication(),
            Greylist(config.smtp.greylist_delay) if config.smtp.greylist_delay > 0 else None)
        accounts, logins = Accounts(self.store, config), LoginThrottle(config)
        self.user_port_services = UserPort(
            self.core, self.tls, self.discovery, accounts, self.worker, logins)
        # The same accounts and login windows as the user port's: a password
        # guessed on one port is slowed down on the other too.
        self.submission_port_services = SubmissionPort(
            self.core, self.tls, accounts, self.worker, logins)
        # IMAP (issue 14): the same accounts and login windows again.
        self.imap_port_services = ImapPort(self.core, self.tls, accounts, self.worker,
                                           logins)
        # The web app: the same accounts and login windows again.
        self.web = WebApp(WebPort(self.core, self.tls, self.discovery, accounts, self.worker,
                                  logins), listeners=self.listeners)
        self._web_runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.core.metrics.watch(self.store, config.quality, self._session_counts)
        self._servers: list[asyncio.Server] = []
        self.peer_sessions = Sessions()
        self.user_sessions = Sessions()
        self.submission_sessions = Sessions()  # ports 587 and 465 together
        self.mx_sessions = Sessions()
        self.imap_sessions = Sessions()  # ports 143 and 993 together
        self.stopping = False
        self._worker_task: asyncio.Task[None] | None = None
        self._housekeeping_task: asyncio.Task[None] | None = None
        self.peer_port = 0
        self.user_port = 0
        self.peer_tls_port: int | None = None
        self.user_tls_port: int | None = None
        self.submission_port: int | None = None
        self.submission_tls_port: int | None = None
        self.mx_port: int | None = None
        self.web_port: int | None = None
        self.metrics_port: int | None = None
        self.started = False
        self.imap_port: int | None = None
        self.imap_tls_port: int | None = None

    def _serve_own_domains(self, own_port: int) -> None:
        # Our own domains resolve to ourselves: local recipients go through the
        # same envelope flow over loopback, so there is one code path.
        for domain in self.config.domains:
            if domain not in self.config.peers:
                self.discovery.set_static(domain, PeerServer(
                    self.config.hostname, self.config.peer_listener.host, own_port))

    async def start(self) -> None:
        if self.durable_gate is not None:
            self.durable_gate.bind(asyncio.get_running_loop())
        peer_gate = self._gate(
            self.peer_sessions, lambda r, w: serve_peer(self.peer_port_services, r, w),
            b"421 4.7.0 ")
        user_gate = self._gate(
            self.user_sessions, lambda r, w: serve_user(self.user_port_services, r, w),
            b"-ERR ")
        submission_gate = self._gate(
            self.submission_sessions,
            lambda r, w: serve_submission(self.submission_port_services, r, w),
            b"421 4.7.0 ")
        mx_gate = self._gate(
            self.mx_sessions, lambda r, w: serve_mx(self.mx_port_services, r, w),
            b"421 4.7.0 ")
        imap_gate = self._gate(
            self.imap_sessions, lambda r, w: serve_imap(self.imap_port_services, r, w),
            b"* BYE ")
        try:
            await self._listen_all(peer_gate, user_gate, submission_gate, mx_gate, imap_gate)
        except BaseException:
            for server in self._servers:
                server.close()
            if self._own_authenticator is not None:
                self._own_authenticator.close()
            self.store.close()
            raise
        # With port 0 the real peer port is known only after binding.
        self._serve_own_domains(self.peer_port)
        self._worker_task = asyncio.create_task(self.worker.run(), name="delivery-worker")
        self._housekeeping_task = asyncio.create_task(
            housekeeping_loop(self.core), name="housekeeping"
        )
        self.started = True
        # The one start line: every listener, with the port it really got.
        log.info("started hostname=%s domains=%s %s", self.config.hostname,
                 ",".join(self.config.domains),
                 " ".join(f"{name}={where}" for name, where in self.listeners().items()))

    def listeners(self) -> dict[str, Listener]:
        """Each port this server listens on, by its [listen] name, once started."""
        config = self.config
        found = {"peer": Listener(config.peer_listener.host, self.peer_port),
                 "user": Listener(config.user_listener.host, self.user_port)}
        for name, listener, port in (
                ("peer_tls", config.peer_tls_listener, self.peer_tls_port),
                ("user_tls", config.user_tls_listener, self.user_tls_port),
                ("submission", config.submission_listener, self.submission_port),
                ("submission_tls", config.submission_tls_listener, self.submission_tls_port),
                ("mx", config.mx_listener, self.mx_port),
                ("web", config.web_listener, self.web_port),
                ("metrics", config.metrics_listener, self.metrics_port),

                ("imap", config.imap_listener, self.imap_port),
                ("imap_tls", config.imap_tls_listener, self.imap_tls_port)):
            if listener is not None and port is not None:
                found[name] = Listener(listener.host, port)
        return found

    async def _listen_all(self, peer_gate: Connected, user_gate: Connected,
                          submission_gate: Connected, mx_gate: Connected,
                          imap_gate: Connected) -> None:
        peer = await self._bind(peer_gate, self.config.peer_listener, "peer")
        self._servers.append(peer)
        user = await self._bind(user_gate, self.config.user_listener, "user")
        self._servers.append(user)
        self.peer_port = peer.sockets[0].getsockname()[1]
        self.user_port = user.sockets[0].getsockname()[1]
        # Implicit TLS (TLS from the first byte) beside the STARTTLS ports; the
        # sessions count towards the same caps as their plaintext port's.
        self.peer_tls_port = await self._listen_tls(
            self.config.peer_tls_listener, self.tls.peer_server_context, peer_gate, "peer_tls")
        self.user_tls_port = await self._listen_tls(
            self.config.user_tls_listener, self.tls.user_server_context, user_gate, "user_tls")
        # Submission for mail clients (docs/smtp.md): 587 with STARTTLS when a
        # certificate is configured, 465 with TLS from the first byte.
        if self.config.submission_listener is not None:
            submission = await self._bind(submission_gate, self.config.submission_listener,
                                            "submission")
            self._servers.append(submission)
            self.submission_port = submission.sockets[0].getsockname()[1]
        self.submission_tls_port = await self._listen_tls(
            self.config.submission_tls_listener, self.tls.user_server_context,
            submission_gate, "submission_tls")
        # The MX (issue 12, docs/smtp.md "The MX"): STARTTLS when a
        # certificate is configured, never TLS from the first byte (RFC 3207
        # is how SMTP servers reach an MX).
        if self.config.mx_listener is not None:
            mx = await self._bind(mx_gate, self.config.mx_listener, "mx")
            self._servers.append(mx)
            self.mx_port = mx.sockets[0].getsockname()[1]
        # IMAP for mail clients (issue 14, docs/imap.md): 143 with STARTTLS
        # when a certificate is configured, 993 with TLS from the first byte.
        if self.config.imap_listener is not None:
            imap = await self._bind(imap_gate, self.config.imap_listener, "imap")
            self._servers.append(imap)
            self.imap_port = imap.sockets[0].getsockname()[1]
        self.imap_tls_port = await self._listen_tls(
            self.config.imap_tls_listener, self.tls.user_server_context, imap_gate, "imap_tls")
        # The web app (issue 13, docs/web.md): aiohttp's request handler as
        # the protocol of one more listener, HTTPS with the user port's
        # certificate when there is one.
        if self.config.web_listener is not None:
            self._web_runner, self.web_port = await self._serve_http(
                self.web.application(), self.config.web_listener, "web",
                self.tls.user_server_context if self.config.web_https else None,
                self.durable_gate)
        # Prometheus, /healthz and /readyz (docs/operations.md): plain HTTP.
        if self.config.metrics_listener is not None:
            self._metrics_runner, self.metrics_port = await self._serve_http(
                metrics_app(self.core.metrics, self._not_ready), self.config.metrics_listener,
                "metrics", None, None)

    async def _serve_http(self, app: web.Application, listener: Listener, name: str,
                          context: ssl.SSLContext | None, gate: DurableGate | None,
                          ) -> tuple[web.AppRunner, int]:
        """aiohttp's request handler as the protocol of one more listener
        (the web app, the metrics), in this loop beside the others."""
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=grace_for_web)
        await runner.setup()
        handler = runner.server
        assert handler is not None  # set up above
        factory: Callable[[], asyncio.BaseProtocol] = (
            handler if gate is None else lambda: gate.protocol(handler()))
        try:
            site = await asyncio.get_running_loop().create_server(
                factory, listener.host, listener.port, ssl=context)
        except OSError as exc:
            await runner.cleanup()
            raise _listen_error(exc, listener, name) from None
        self._servers.append(site)
        return runner, site.sockets[0].getsockname()[1]

    def _session_counts(self) -> dict[str, int]:
        return {"peer": len(self.peer_sessions.tasks), "user": len(self.user_sessions.tasks),
                "submission": len(self.submission_sessions.tasks),
                "mx": len(self.mx_sessions.tasks)}

    def _not_ready(self) -> str | None:
        """/readyz: None when this server takes work, else why not."""
        if self.stopping:
            return "stopping"
        if not self.started:
            return "starting"
        if self.store.flusher is not None and self.store.flusher.failure is not None:
            # Group commit: an fsync failed; no answer leaves until a restart.
            return f"the store's log could not be flushed: {self.store.flusher.failure}"
        try:
            self.store.schema_version()
        except Exception as exc:  # what the store says is the answer
            return f"the store does not answer: {exc}"
        return None

    async def _bind(self, gated: Connected, listener: Listener, name: str,
                    **kwargs: Any) -> asyncio.Server:
        """Bind one listener; a port that cannot be had is the operator's to fix,
        so it is said in one sentence (CliError), not as a traceback. Its
        sessions' answers are held by the durable gate (group commit)."""
        try:
            return await durable_io.start_server(gated, listener.host, listener.port,
                                                 self.durable_gate, **kwargs)
        except OSError as exc:
            raise _listen_error(exc, listener, name) from None

    async def _listen_tls(self, listener: Listener | None, context: ssl.SSLContext | None,
                          gated: Connected, name: str) -> int | None:
        if listener is None or context is None:
            return None
        server = await self._bind(gated, listener, name, ssl=context,
                                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    def _gate(self, sessions: Sessions, handler: Connected, refusal: bytes) -> Connected:
        """Wrap a port's session handler with the caps on concurrent sessions."""
        limits = self.config.limits

        async def gated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peer = writer.get_extra_info("peername")
            client = str(peer[0]) if peer else "?"
            why = None
            if len(sessions.tasks) >= limits.max_sessions:
                why = "too many sessions on this port, try again later"
            elif sessions.per_client.get(client, 0) >= limits.max_sessions_per_client:
                why = f"too many sessions from {client}, try again later"
            if why is not None or self.stopping:
                writer.write(refusal + (why or "shutting down, try again later").encode()
                             + b"\r\n")
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                writer.close()
                return
            task = asyncio.current_task()
            assert task is not None
            sessions.tasks.add(task)
            sessions.per_client[client] = sessions.per_client.get(client, 0) + 1
            try:
                await handler(reader, writer)
            finally:
                sessions.tasks.discard(task)
                sessions.per_client[client] -= 1
                if not sessions.per_client[client]:
                    del sessions.per_client[client]

        return gated

    async def stop(self, grace: float = 5.0) -> None:
        """SIGTERM: stop accepting, let sessions finish for ``grace`` seconds,
        then abandon the rest. Nothing is half-written: every store write is
        one transaction, and an abandoned DATA was never committed."""
        self.stopping = True
        for server in self._servers:
            server.close()
        if self._housekeeping_task is not None:
            self._housekeeping_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping_task
        self.worker.stop()
        running = (self.peer_sessions.tasks | self.user_sessions.tasks
                   | self.submission_sessions.tasks | self.mx_sessions.tasks
                   | self.imap_sessions.tasks)
        if running:
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        if self._worker_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._worker_task, timeout=grace)
        if self._web_runner is not None:
            # Open pages' event streams end here; their browsers reconnect.
            self.web.stop()
            await self._web_runner.cleanup()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._own_authenticator is not None:
            self._own_authenticator.close()
        self.store.close()  # group commit: the last flush releases the last answers
        if self.durable_gate is not None:
            self.durable_gate.close()


# Seconds a web request still running at shutdown is given (event streams
# end at once: WebApp.stop).
grace_for_web = 2.0

_LISTEN_ADVICE = {
    errno.EADDRINUSE: "another program uses it (a server already running?): stop it, "
                      "or choose another port in [listen]",
    errno.EACCES: "ports below 1024 need privileges: choose another port in [listen]",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: "
                         "correct it in [listen]",
}


def _listen_error(exc: OSError, listener: Listener, name: str) -> CliError:
    advice = _LISTEN_ADVICE.get(exc.errno or 0, "check [listen] in the configuration")
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return CliError(f"cannot listen on {listener} ([listen] {name}): {why}; {advice}")


class JsonLogFormatter(logging.Formatter):
    """``[server] log_format = "json"``: one JSON object a line, for log
    collectors (docs/operations.md): time (UTC, ISO 8601), level, logger,
    message, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + "Z",
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def run_server(config: Config, *, ready_file: str | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if config.log_format == "json":
        formatter = JsonLogFormatter()
        formatter.converter = time.gmtime
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)

    async def main() -> None:
        server = SmdpServer(config)
        await server.start()
        # After the start: a configuration refused at start stays one line.
        log.info("event loop: %s ([server] event_loop = %s)", loop_name, config.event_loop)
        if ready_file:
            tmp = Path(ready_file + ".tmp")
            ports = {name: where.port for name, where in server.listeners().items()}
            tmp.write_text(json.dumps(ports))
            tmp.replace(ready_file)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    factory, loop_name = event_loop_factory(config.event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())
    return 0


def event_loop_factory(
        setting: str) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """(the loop factory for asyncio.Runner, the loop's name) for ``[server]
    event_loop``. uvloop is imported only here, so that "asyncio" never loads
    it and a missing package stops "uvloop" at start with one sentence."""
    if setting == "asyncio":
        return None, "asyncio"
    try:
        import uvloop
    except ImportError as exc:
        if setting == "uvloop":
            raise CliError("[server] event_loop = \"uvloop\" but the uvloop package cannot "
                           f"be imported ({exc}); install it (pip install uvloop) or set "
                           "event_loop = \"auto\" or \"asyncio\"") from None
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {importlib.metadata.version('uvloop')}"
