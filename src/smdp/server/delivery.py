"""The outbound queue's scheduler: everything that crosses the network from
this server is a queue entry (written with the state change that caused it);
this worker claims each one, runs it and retries with backoff when a peer is
down (mox keeps its ``queue`` apart from ``smtpclient`` the same way).

What a job does lives in ``delivery_jobs.py`` (the job kinds of
``smdp.terms.JobKind``); the peer session it uses in ``peer_client.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from smdp.config import DeliveryPolicy
from smdp.store import Store
from smdp.store.records import Job

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
    """Give up; the message is the reason the sender will see. ``status``:
    the RFC 3463 code of the failure when the reason carries no reply that
    gives one (the sender's delivery status notification shows it)."""

    def __init__(self, message: str, *, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class JobRunner(Protocol):
    """What the scheduler needs of the jobs: where each goes, how to run it,
    how to give it up, and how to close a route's session."""

    def route_of(self, job: Job) -> str:
        """The peer domain ``job`` talks to ("" when it cannot be told)."""

    async def run(self, job: Job, route: Route) -> None:
        """Carry ``job`` out over ``route``; raises TemporaryFailure or
        PermanentFailure when it cannot."""

    def give_up(self, job: Job, reason: str, status: str = "") -> None:
        """Record the permanent failure of ``job`` (``status``: its RFC 3463
        code, if known), inside the caller's transaction."""

    async def drop_session(self, route: Route) -> None:
        """Close ``route``'s peer session, if open."""


class Route:
    """The jobs bound for one peer domain, carried out over one peer session
    (Table 4: many envelopes and mails in the same session)."""

    def __init__(self, domain: str, key: str) -> None:
        self.domain = domain
        self.key = key
        self.jobs: deque[Job] = deque()
        # The route's open peer session, owned by the runner (None: closed).
        self.session: Any = None
        self.more = asyncio.Event()  # jobs were added while the route ran
        self.done: list[int] = []  # finished jobs not yet deleted from the queue
        # What finished jobs still have to record, written in the transaction
        # that deletes them (issue 15 item 1: no commit of its own). Only
        # records nobody was told of: lost in a crash, the job runs again
        # (its steps are idempotent) and records them then.
        self.later: list[Callable[[], None]] = []
        self.flush_timer: asyncio.TimerHandle | None = None


class DeliveryWorker:
    """The queue's scheduler: claims due jobs, gives each peer domain up to
    ``sessions_per_peer`` routes (one peer session each), runs the jobs through
    the ``runner`` and retries with backoff and jitter, or gives up. It knows
    nothing of what a job does."""

    def __init__(self, store: Store, policy: DeliveryPolicy, node: str,
                 runner: JobRunner) -> None:
        self.store = store
        self.policy = policy
        self.node = node
        self.runner = runner
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
        self.linger = 1.0  # seconds an idle peer session stays open for more jobs
        # A claim outlives any single job (each network read has its own
        # timeout); a node that dies leaves its claims to expire.
        self.lease = policy.claim_lease
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
        self.in_flow_delay = policy.in_flow_delay
        self._waiting: dict[str, int] = {}  # domain -> claimed jobs not started
        self._progress = asyncio.Event()  # set (and replaced) whenever a job starts

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        # This node just started: nothing it claimed before is still running.
        self.store.release_claims(self.node)
        while not self._stopping:
            self._wake.clear()
            try:
                self._launch_due()
            except Exception:
                log.exception("queue scan failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.policy.poll_interval):
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
        # The claim gives only the oldest job of each envelope, so the
        # decisions on one envelope stay in order and never run twice at once.
        for job in self.store.claim_jobs(self.node, time.time(), room, self.lease):
            domain = self.runner.route_of(job)
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

    async def _run_route(self, route: Route) -> None:
        try:
            while route.jobs or await self._linger(route):
                job = route.jobs.popleft()
                self._check_room()
                try:
                    await self.runner.run(job, route)
                except PermanentFailure as exc:
                    await self.runner.drop_session(route)  # it may be mid-command
                    log.info("job %s %s failed: %s", job.kind, job.key, exc)
                    self._give_up(job, str(exc), exc.status)
                except TemporaryFailure as exc:
                    await self.runner.drop_session(route)
                    self._retry_or_give_up(job, str(exc))
                    if exc.unreachable:
                        # The peer is down: the rest of this route waits too.
                        while route.jobs:
                            self._retry_or_give_up(route.jobs.popleft(), str(exc))
                except Exception as exc:  # a bug in one job must not stop the queue
                    await self.runner.drop_session(route)
                    log.exception("job %s %s crashed", job.kind, job.key)
                    self._retry_or_give_up(job, f"internal error: {exc}")
                else:
                    self._done(route, job)
        finally:
            self._flush(route)
            await self.runner.drop_session(route)
            self._busy.discard(route)
            if not route.jobs:
                self._routes.pop(route.key, None)
            self._check_room()
            self._wake.set()

    async def _linger(self, route: Route) -> bool:
        """Keep an open session a moment for jobs the next scan brings."""
        self._flush(route)
        if route.session is None or self._stopping:
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
        if not route.done and not route.later:
            return
        try:
            if route.later:
                with self.store.transaction():
                    for record in route.later:
                        record()
                    self.store.finish_jobs(route.done)
            else:
                self.store.finish_jobs(route.done)
        except Exception:
            # The jobs are done: never retry them for this. Keep their ids and
            # try the delete again shortly.
            log.exception("could not record and delete %d finished jobs; trying again",
                          len(route.done))
            route.flush_timer = asyncio.get_running_loop().call_later(
                self.flush_delay, self._flush, route)
            return
        route.done = []
        route.later = []

    def _retry_or_give_up(self, job: Job, error: str) -> None:
        policy = self.policy
        if job.attempts + 1 >= policy.max_attempts:
            # RFC 3463 X.4.7, delivery time expired: final now.
            self._give_up(job, f"gave up after {job.attempts + 1} attempts: {error}", "5.4.7")
            return
        delay = min(policy.retry_max, policy.retry_initial * 2 ** job.attempts)
        delay *= random.uniform(0.5, 1.0)  # jitter spreads retries of many jobs
        log.info("job %s %s will retry in %.1fs: %s", job.kind, job.key, delay, error)
        self.store.retry_job(job.id, time.time() + delay, error)

    def _give_up(self, job: Job, reason: str, status: str = "") -> None:
        with self.store.transaction():
            self.runner.give_up(job, reason, status)
            self.store.finish_job(job.id)
