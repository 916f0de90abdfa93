"""The outbound delivery worker: everything that crosses the network from this
server is a queue entry (written with the state change that caused it); this
worker carries each one out and retries with backoff when a peer is down.

Job kinds:
- ``send-envelope``: section 5.2 step 4, one envelope to one destination domain;
- ``send-direct``: Table 3 sender side, the whole message to white-listed recipients;
- ``report-decision``: Table 2, the recipient's decision to the origin, and for
  ACCEPT/AUTHORIZE the pull of the whole message (step 7).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smdp.core.decisions import OUT_QUEUED, SmdpMessage
from smdp.mail.body import CHUNK_SIZE, Body, BodyWriter, stored_chunks
from smdp.protocol import peer as wire
from smdp.protocol.framing import CLOSED, NEED_DATA, BlockChunk
from smdp.server.discovery import DiscoveryError
from smdp.server.tls import TlsError, TlsPolicy, peer_certificate, start_tls
from smdp.store.records import Job
from smdp.terms import Decision

if TYPE_CHECKING:
    from smdp.server.app import SmdpServer

log = logging.getLogger("smdp.delivery")


class TemporaryFailure(Exception):
    """Try again later (peer down, 4xx reply, DNS cannot tell now).

    ``unreachable``: no session could be had at all, so every other job for
    the same peer would fail the same way right now.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class PermanentFailure(Exception):
    """Give up; the message is the reason the sender will see."""


@dataclass(frozen=True, slots=True)
class PulledMessage:
    """The answer to a pulling decision, its body gathered chunk by chunk."""

    code: int
    text: str
    body: Body


class PeerLink:
    """One outgoing peer session, driven through the sans-IO client codec."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float, max_message_size: int, spool_dir: str | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.spool_dir = spool_dir
        self.pipelining = False  # the server listed PIPELINING in its EHLO reply
        # A pulled body comes in chunks, spooled to a file past 1 MiB.
        self.conn = wire.PeerClientConnection(
            max_message_size=max_message_size, stream_threshold=CHUNK_SIZE
        )
        # After STARTTLS: the plaintext writer, kept so that collecting it does
        # not close the transport under the TLS layer (see tls.start_tls).
        self._plain_writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, address: str, port: int, timeout: float,
                   max_message_size: int, spool_dir: str | None = None) -> PeerLink:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address, port), timeout
            )
        except (OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"cannot connect to {address}:{port}: {exc}",
                                   unreachable=True) from None
        link = cls(reader, writer, timeout, max_message_size, spool_dir)
        greeting = await link.read_reply()
        if not isinstance(greeting, wire.Reply) or greeting.code != 220:
            await link.close()
            raise TemporaryFailure(f"unexpected greeting from {address}:{port}")
        return link

    async def read_reply(self) -> wire.Reply | PulledMessage:
        spool = BodyWriter(directory=self.spool_dir)  # no file unless a large body comes
        try:
            return await self._read_reply(spool)
        except BaseException:
            spool.discard()
            raise

    async def _read_reply(self, spool: BodyWriter) -> wire.Reply | PulledMessage:
        while True:
            event = self.conn.next_event()
            if isinstance(event, BlockChunk):
                try:
                    spool.write(event.data)
                except OSError as exc:
                    raise TemporaryFailure(f"cannot spool the pulled body: {exc}") from None
                continue
            if isinstance(event, wire.PulledBody):
                try:
                    spool.write(event.body)
                except OSError as exc:
                    raise TemporaryFailure(f"cannot spool the pulled body: {exc}") from None
                return PulledMessage(event.code, event.text, spool.finish())
            if event is NEED_DATA:
                try:
                    async with asyncio.timeout(self.timeout):  # no task per read
                        data = await self.reader.read(65536)
                except (OSError, TimeoutError) as exc:
                    raise TemporaryFailure(f"connection lost: {exc}") from None
                if not data:
                    raise TemporaryFailure("the peer closed the connection")
                self.conn.receive_data(data)
                continue
            if event is CLOSED:
                raise TemporaryFailure("the peer closed the connection")
            assert isinstance(event, wire.Reply)
            return event

    async def command(self, command: wire.PeerCommand) -> wire.Reply | PulledMessage:
        try:
            self.writer.write(self.conn.send(command))
            await self.writer.drain()
        except (OSError, wire.RemoteProtocolError) as exc:
            raise TemporaryFailure(f"connection lost: {exc}") from None
        try:
            return await self.read_reply()
        except wire.RemoteProtocolError as exc:
            raise TemporaryFailure(f"the peer broke the protocol: {exc}") from None

    async def pipeline(self, commands: list[wire.PeerCommand]) -> list[wire.Reply]:
        """Send ``commands`` in one write, then read their replies in order."""
        try:
            self.writer.write(b"".join(self.conn.send(command) for command in commands))
            await self.writer.drain()
        except (OSError, wire.RemoteProtocolError) as exc:
            raise TemporaryFailure(f"connection lost: {exc}") from None
        replies: list[wire.Reply] = []
        try:
            for _command in commands:
                reply = await self.read_reply()
                if isinstance(reply, PulledMessage):
                    raise PermanentFailure("unexpected message body")
                replies.append(reply)
        except wire.RemoteProtocolError as exc:
            raise TemporaryFailure(f"the peer broke the protocol: {exc}") from None
        return replies

    async def send_body(self, chunks: Iterable[bytes], size: int) -> None:
        """After a 354: the stored body, a chunk at a time, then the end of data.

        A body that changed while being sent (it can only shrink: expiry) must
        not arrive cut short and ended as whole; the session is dropped instead.
        """
        sent = 0
        try:
            for chunk in chunks:
                sent += len(chunk)
                self.writer.write(self.conn.send(wire.DataPart(chunk)))
                async with asyncio.timeout(self.timeout):
                    await self.writer.drain()
        except (OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"connection lost: {exc}") from None
        if sent != size:
            self.writer.transport.abort()
            raise TemporaryFailure(f"the stored body is {sent} octets, {size} expected")
        await self.expect(wire.DataEnd(), "end of data")

    async def expect(self, command: wire.PeerCommand, what: str) -> wire.Reply:
        reply = await self.command(command)
        if isinstance(reply, PulledMessage):
            raise PermanentFailure(f"{what}: unexpected message body")
        check(reply, what)
        return reply

    async def starttls(self, context: ssl.SSLContext, hostname: str, pin: str | None) -> None:
        """RFC 3207 from the client side: STARTTLS, then the handshake with
        the server named ``hostname`` (the name discovery gave, never the
        address), then the pin if the configuration has one. Any failure is
        temporary: the route waits and retries, and the sender sees why."""
        reply = await self.command(wire.StartTls())
        if not isinstance(reply, wire.Reply) or reply.code != 220:
            what = f"{reply.code} {reply.text}" if isinstance(reply, wire.Reply) else "a body"
            raise TemporaryFailure(f"STARTTLS refused by {hostname}: {what}", unreachable=True)
        try:
            self.conn.start_tls()
        except wire.RemoteProtocolError as exc:
            raise TemporaryFailure(f"STARTTLS with {hostname}: {exc}",
                                   unreachable=True) from None
        plain = self.writer
        try:
            self.reader, self.writer = await start_tls(
                self.reader, plain, context, server_side=False, server_hostname=hostname,
                timeout=self.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TemporaryFailure(f"TLS with {hostname} failed: certificate not accepted: "
                                   f"{exc.verify_message}", unreachable=True) from None
        except (OSError, TimeoutError) as exc:
            raise TemporaryFailure(f"TLS with {hostname} failed: {exc}",
                                   unreachable=True) from None
        self._plain_writer = plain
        if pin is not None:
            cert = peer_certificate(self.writer.get_extra_info("ssl_object"), verified=False)
            try:
                TlsPolicy.check_pin(cert, pin, hostname)
            except TlsError as exc:
                raise TemporaryFailure(f"TLS with {hostname} failed: {exc}",
                                       unreachable=True) from None

    async def close(self) -> None:
        """QUIT and wait briefly for the 221 (RFC 5321 4.1.1.10); best effort."""
        with contextlib.suppress(Exception):  # the work is done; closing may fail
            if not self.writer.is_closing():
                self.writer.write(self.conn.send(wire.Quit()))
                await asyncio.wait_for(self.writer.drain(), 2)
                await asyncio.wait_for(self.read_reply(), 2)
        self.writer.close()


def check(reply: wire.Reply, what: str) -> None:
    if reply.code >= 500:
        raise PermanentFailure(f"{what}: {reply.code} {reply.text}")
    if reply.code >= 400:
        raise TemporaryFailure(f"{what}: {reply.code} {reply.text}")


class Route:
    """The jobs bound for one peer domain, carried out over one peer session
    (Table 4: many envelopes and mails in the same session)."""

    def __init__(self, domain: str, key: str) -> None:
        self.domain = domain
        self.key = key
        self.jobs: deque[Job] = deque()
        self.link: PeerLink | None = None
        self.more = asyncio.Event()  # jobs were added while the route ran
        self.done: list[int] = []  # finished jobs not yet deleted from the queue
        self.flush_timer: asyncio.TimerHandle | None = None


class DeliveryWorker:
    def __init__(self, app: SmdpServer) -> None:
        self.app = app
        self._wake = asyncio.Event()
        self._stopping = False
        self._routes: dict[str, Route] = {}  # "domain#n" -> its queue of claimed jobs
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[Route] = set()  # routes whose task is running
        # Peer sessions open at once, all peers together, and to one peer.
        # More sessions per peer shorten the queue wait of a pure pipeline
        # (bench/e2e.py, 4 KB saturated: p50 928 ms with 4, 204 ms with 16)
        # but cost the users of a busy peer: under make load's mix, ENVS p50
        # at the destination was 14 ms with 4, 22 ms with 8 and 51 ms with 16,
        # for the same delivered rate (~180 messages/s). Users first.
        self.max_routes = 64
        self.sessions_per_peer = 4
        self.max_claimed = 512  # jobs held in memory, claimed, at once
        self.timeout = 30.0
        self.linger = 1.0  # seconds an idle peer session stays open for more jobs
        # A claim outlives any single job (each network read has its own
        # timeout); a node that dies leaves its claims to expire.
        self.lease = app.config.delivery.claim_lease
        self.flush_delay = min(0.5, self.lease / 4)
        # In-flow control (Postfix's in_flow_delay): the worker shares one
        # event loop with every session, one task per peer session against
        # hundreds of user sessions, so under heavy submission it gets a
        # sliver of the loop and the queue grows without bound (measured:
        # bench/sessions.py). While more than in_flow_threshold claimed jobs
        # for one of its recipients' domains wait, a submission waits (up to
        # delivery.in_flow_delay) for room. Per domain: a slow or tarpitting
        # peer holds back only the mail that goes to it.
        self.in_flow_threshold = self.max_claimed // 2
        self.in_flow_delay = app.config.delivery.in_flow_delay
        self._waiting: dict[str, int] = {}  # domain -> claimed jobs not started
        self._progress = asyncio.Event()  # set (and replaced) whenever a job starts
        self.handlers: dict[str, Callable[[dict[str, Any], Route], Awaitable[None]]] = {
            "send-envelope": self.send_envelope,
            "send-direct": self.send_direct,
            "report-decision": self.report_decision,
        }

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        poll = self.app.config.delivery.poll_interval
        # This node just started: nothing it claimed before is still running.
        self.app.store.release_claims(self.app.config.node)
        while not self._stopping:
            self._wake.clear()
            try:
                self._launch_due()
            except Exception:
                log.exception("queue scan failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._wake.wait()
        if self._tasks:
            # Let jobs in flight finish; abandon the rest (their claims are
            # released when this node starts again, and every step is idempotent).
            _done, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)

    def _claimed(self) -> int:
        return sum(len(r.jobs) for r in self._routes.values())

    def _check_room(self) -> None:
        waiting: dict[str, int] = {}
        for route in self._routes.values():
            waiting[route.domain] = waiting.get(route.domain, 0) + len(route.jobs)
        shrank = any(n < self._waiting.get(d, 0) for d, n in waiting.items()) or any(
            d not in waiting for d in self._waiting)
        self._waiting = waiting
        if shrank:
            self._progress.set()
            self._progress = asyncio.Event()

    def _behind(self, domains: Iterable[str]) -> bool:
        return any(self._waiting.get(d, 0) >= self.in_flow_threshold for d in domains)

    async def room_for_submission(self, domains: Iterable[str]) -> float:
        """Wait while the worker is behind on one of ``domains``, at most
        ``delivery.in_flow_delay`` seconds; the message is taken after that
        anyway (nothing is refused for it). Returns the seconds waited."""
        wanted = {d.lower() for d in domains}
        if self.in_flow_delay <= 0 or not self._behind(wanted):
            return 0.0
        started = time.monotonic()
        deadline = started + self.in_flow_delay
        while self._behind(wanted):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), left)
        return time.monotonic() - started

    def _launch_due(self) -> None:
        room = self.max_claimed - self._claimed()
        if room <= 0:
            return
        node = self.app.config.node
        # The claim gives only the oldest job of each envelope, so the
        # decisions on one envelope stay in order and never run twice at once.
        for job in self.app.store.claim_jobs(node, time.time(), room, self.lease):
            domain = self._route_of(job)
            # Up to sessions_per_peer sessions to one peer, each taking the
            # next job when it has the fewest waiting: jobs of one envelope
            # never overlap (the claim), so any session may carry any job.
            keys = [f"{domain}#{i}" for i in range(self.sessions_per_peer)]
            key = min(keys, key=lambda k: len(self._routes[k].jobs) if k in self._routes else -1)
            route = self._routes.get(key)
            if route is None:
                route = self._routes[key] = Route(domain, key)
            route.jobs.append(job)
            route.more.set()
        self._check_room()
        for route in list(self._routes.values()):
            if route in self._busy or not route.jobs:
                continue
            if len(self._busy) >= self.max_routes:
                break
            self._busy.add(route)
            task = asyncio.create_task(self._run_route(route))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _route_of(self, job: Job) -> str:
        """The peer domain a job talks to (jobs of unknown records go anywhere)."""
        store = self.app.store
        try:
            payload = json.loads(job.payload)
            if job.kind == "report-decision":
                entry = store.mailbox_entry(payload["entry"])
                env = store.in_envelope(entry.envelope_id) if entry else None
                # Decisions and pulls go to the sender's domain (protocol.md 8).
                return env.sender.rpartition("@")[2] if env else ""
            out = store.out_envelope(payload["envid"])
            return out.domain if out else ""
        except (ValueError, KeyError, TypeError):
            return ""

    async def _run_route(self, route: Route) -> None:
        try:
            while route.jobs or await self._linger(route):
                job = route.jobs.popleft()
                self._check_room()
                try:
                    await self.handlers[job.kind](json.loads(job.payload), route)
                    self._done(route, job)
                except (TemporaryFailure, PermanentFailure, Exception) as exc:
                    await self._drop_link(route)  # the session may be mid-command
                    if isinstance(exc, PermanentFailure):
                        log.info("job %s %s failed: %s", job.kind, job.key, exc)
                        self._give_up(job, str(exc))
                    elif isinstance(exc, TemporaryFailure):
                        self._retry_or_give_up(job, str(exc))
                        if exc.unreachable:
                            # The peer is down: the rest of this route waits too.
                            while route.jobs:
                                self._retry_or_give_up(route.jobs.popleft(), str(exc))
                    else:
                        log.exception("job %s %s crashed", job.kind, job.key)
                        self._retry_or_give_up(job, f"internal error: {exc}")
        finally:
            self._flush(route)
            await self._drop_link(route)
            self._busy.discard(route)
            if not route.jobs:
                self._routes.pop(route.key, None)
            self._check_room()
            self._wake.set()

    async def _linger(self, route: Route) -> bool:
        """Keep an open session a moment for jobs the next scan brings."""
        self._flush(route)
        if route.link is None or self._stopping:
            return False
        route.more.clear()
        self._wake.set()  # let the scan look for more work for this peer now
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.linger):
                await route.more.wait()
        return bool(route.jobs)

    def _done(self, route: Route, job: Job) -> None:
        """Delete finished jobs in batches: one durable commit for many. A
        crash before the delete only re-runs idempotent work; the timer keeps
        the wait far inside the claim lease, so no scan takes a finished job
        for a due one."""
        route.done.append(job.id)
        if len(route.done) >= 32:
            self._flush(route)
        elif route.flush_timer is None:
            route.flush_timer = asyncio.get_running_loop().call_later(
                self.flush_delay, self._flush, route)

    def _flush(self, route: Route) -> None:
        if route.flush_timer is not None:
            route.flush_timer.cancel()
            route.flush_timer = None
        if not route.done:
            return
        try:
            self.app.store.finish_jobs(route.done)
        except Exception:
            # The jobs are done: never retry them for this. Keep their ids and
            # try the delete again shortly.
            log.exception("could not delete %d finished jobs; trying again", len(route.done))
            route.flush_timer = asyncio.get_running_loop().call_later(
                self.flush_delay, self._flush, route)
            return
        route.done = []

    async def _drop_link(self, route: Route) -> None:
        if route.link is not None:
            link, route.link = route.link, None
            await link.close()

    async def _session(self, route: Route) -> PeerLink:
        """The route's open peer session, opened (and greeted) on first use."""
        if route.link is None:
            route.link = await self._link(route.domain)
        return route.link

    def _retry_or_give_up(self, job: Job, error: str) -> None:
        policy = self.app.config.delivery
        if job.attempts + 1 >= policy.max_attempts:
            self._give_up(job, f"gave up after {job.attempts + 1} attempts: {error}")
            return
        delay = min(policy.retry_max, policy.retry_initial * 2 ** job.attempts)
        delay *= random.uniform(0.5, 1.0)  # jitter spreads retries of many jobs
        log.info("job %s %s will retry in %.1fs: %s", job.kind, job.key, delay, error)
        self.app.store.retry_job(job.id, time.time() + delay, error)

    def _give_up(self, job: Job, reason: str) -> None:
        store = self.app.store
        payload = json.loads(job.payload)
        with store.transaction():
            if job.kind in ("send-envelope", "send-direct"):
                self.app.origin.delivery_failed(payload["envid"], reason)
            else:
                self.app.destination.decision_refused(payload["entry"], reason)
            store.finish_job(job.id)

    async def _link(self, domain: str) -> PeerLink:
        try:
            peer = await self.app.discovery.resolve(domain)
        except DiscoveryError as exc:
            if getattr(exc, "transient", False):
                raise TemporaryFailure(str(exc), unreachable=True) from None
            raise PermanentFailure(str(exc)) from None
        link = await PeerLink.open(peer.address, peer.port, self.timeout,
                                   self.app.config.limits.max_message_size,
                                   self.app.config.spool_dir)
        ehlo = wire.Helo(self.app.config.hostname, True)
        try:
            reply = await link.expect(ehlo, "EHLO")
            if any(line.upper().split()[:1] == ["STARTTLS"] for line in reply.lines[1:]):
                # Always taken when offered: it is what lets the peer verify
                # our client certificate, the proof of origin (protocol.md 15).
                context, pin = self.app.tls.client_context(domain)
                await link.starttls(context, peer.hostname, pin)
                reply = await link.expect(ehlo, "EHLO")  # RFC 3207: introduce ourselves anew
            elif self.app.tls.require:
                raise TemporaryFailure(f"{peer.hostname} does not offer STARTTLS and this "
                                       "server requires TLS ([tls] require)", unreachable=True)
            link.pipelining = any(line.upper().split()[:1] == ["PIPELINING"]
                                  for line in reply.lines[1:])
        except BaseException:
            await link.close()
            raise
        return link

    # -- section 5.2 step 4: the envelope ------------------------------------------

    async def send_envelope(self, payload: dict[str, Any], route: Route) -> None:
        await self._send(payload["envid"], route, direct=False)

    async def send_direct(self, payload: dict[str, Any], route: Route) -> None:
        await self._send(payload["envid"], route, direct=True)

    async def _send(self, envid: str, route: Route, *, direct: bool) -> None:
        store = self.app.store
        env = store.out_envelope(envid)
        if env is None:
            return
        msg = store.out_message(env.message_id)
        assert msg is not None
        rcpts = [r.recipient for r in store.out_recipients_of_envelope(envid)
                 if r.state == OUT_QUEUED]
        if not rcpts:
            return
        if direct and not msg.held:
            raise PermanentFailure("the message is no longer held")
        link = await self._session(route)
        start: wire.PeerCommand = (wire.MailStart(msg.sender, envid, None) if direct
                                   else wire.EnvelopeStart(msg.sender, envid, None))
        what = "MAIL" if direct else "ENVELOPE"
        answers: list[tuple[str, wire.Reply]] = []  # (recipient, its RCPT reply)
        data_reply: wire.Reply | None = None
        if link.pipelining:
            # The transaction in one write, its replies read afterwards
            # (protocol.md 6.1): two round trips per envelope instead of 4 + n.
            replies = await link.pipeline(
                [start, *(wire.Rcpt(r) for r in rcpts), wire.SizeDecl(msg.size), wire.DataStart()]
            )
            check(replies[0], what)
            answers = list(zip(rcpts, replies[1:-2], strict=True))
            size_reply, data_reply = replies[-2], replies[-1]
        else:
            await link.expect(start, what)
            for rcpt in rcpts:
                reply = await link.command(wire.Rcpt(rcpt))
                assert isinstance(reply, wire.Reply)
                answers.append((rcpt, reply))
                if 400 <= reply.code < 500:
                    break  # the rest waits for a new envelope (below)
        accepted: list[str] = []
        unauthorized: list[str] = []
        refused: dict[str, str] = {}
        deferred: list[str] = []
        first_deferral = ""
        for rcpt, reply in answers:
            if reply.ok:
                accepted.append(rcpt)
            elif reply.code == 551 and direct:
                unauthorized.append(rcpt)  # protocol.md: fall back to an envelope
            elif reply.code >= 500:
                refused[rcpt] = f"{reply.code} {reply.text}"
            else:
                # A temporary refusal (e.g. 452 too many recipients): send to
                # those taken and queue the rest as a new envelope.
                deferred.append(rcpt)
                first_deferral = first_deferral or f"RCPT <{rcpt}>: {reply.code} {reply.text}"
        deferred += rcpts[len(answers):]  # never asked, after a temporary refusal
        if deferred and not accepted:
            raise TemporaryFailure(first_deferral)
        if accepted:
            if data_reply is None:
                await link.expect(wire.SizeDecl(msg.size), "SIZE")
                reply = await link.command(wire.DataStart())
                assert isinstance(reply, wire.Reply)
                data_reply = reply
            else:
                check(size_reply, "SIZE")
            if data_reply.code != 354:
                check(data_reply, "DATA")
                raise TemporaryFailure(f"DATA: {data_reply.code} {data_reply.text}")
            if direct:
                message_id = msg.id
                await link.send_body(
                    stored_chunks(lambda seq: store.out_body_chunk(message_id, seq)), msg.size
                )
            else:
                await link.expect(wire.Data(msg.summary.encode("utf-8")), "end of data")
        else:
            # No recipient taken: close the transaction, keep the session.
            await link.expect(wire.Rset(), "RSET")
        if direct:
            self.app.origin.direct_sent(envid, accepted, unauthorized, refused, deferred)
        else:
            self.app.origin.envelope_sent(envid, refused, deferred)

    # -- Table 2 and section 5.2 step 7: the decision and the pull -----------------

    async def report_decision(self, payload: dict[str, Any], route: Route) -> None:
        store = self.app.store
        entry = store.mailbox_entry(payload["entry"])
        if entry is None or entry.decision is None:
            return
        env = store.in_envelope(entry.envelope_id)
        assert env is not None
        message = SmdpMessage(entry.decision)
        # The pull goes to the server discovery gives for the sender's domain,
        # never to whoever delivered the envelope (contract 2.5).
        link = await self._session(route)
        held = env.has_body and message.accepts
        reply = await link.command(
            wire.Decision(Decision(message.value), env.envid, entry.recipient, held)
        )
        if isinstance(reply, PulledMessage):
            self.app.destination.body_pulled(env.id, reply.body)
            await link.expect(wire.Received(env.envid), "RECEIVED")
            return
        if reply.code >= 500:
            self.app.destination.decision_refused(entry.id, f"{reply.code} {reply.text}")
            return
        check(reply, message.value)
        if message.accepts:
            self.app.destination.body_pulled(env.id, None)
