"""The delivery worker's batched deletes of finished jobs, the claim lease
and in-flow control, on the scheduler alone (a scripted job runner). Each
test fails while the defect it guards is present."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from smdp.config import DeliveryPolicy
from smdp.server.delivery import DeliveryWorker, Route
from smdp.store import open_store
from smdp.store.records import Job
from tests.conditions import wait_until_async


class FakeStore:
    """Records deletes and retries; finish_jobs fails ``fail`` times first."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.finished: list[int] = []
        self.retried: list[int] = []

    def finish_jobs(self, ids: list[int]) -> None:
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database is locked")
        self.finished.extend(ids)

    def retry_job(self, job_id: int, at: float, error: str) -> None:
        self.retried.append(job_id)


Handler = Callable[[dict[str, Any], Route], Awaitable[None]]


class ScriptedJobs:
    """A JobRunner whose jobs run ``handler`` on their payload, all bound for
    one peer domain; no peer sessions."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.given_up: list[int] = []

    def route_of(self, job: Job) -> str:
        return "b.example"

    async def run(self, job: Job, route: Route) -> None:
        await self.handler(json.loads(job.payload), route)

    def give_up(self, job: Job, reason: str, status: str = "") -> None:
        self.given_up.append(job.id)

    async def drop_session(self, route: Route) -> None:
        route.session = None


def _worker(store: Any, handler: Handler, lease: float = 600.0,
            poll_interval: float = 1.0) -> DeliveryWorker:
    policy = DeliveryPolicy(claim_lease=lease, retry_initial=0.01, retry_max=0.01,
                            poll_interval=poll_interval)
    worker = DeliveryWorker(store, policy, "n1", ScriptedJobs(handler))
    worker.linger = 0.01
    return worker


def _job(i: int) -> Job:
    return Job(i, "send-envelope", f"k{i}", json.dumps({"envid": f"e{i}"}), 0, "")


async def _ok(payload: dict[str, Any], route: Route) -> None:
    return None


def test_failed_batch_delete_does_not_retry_a_delivered_job_nor_lose_the_batch() -> None:
    """delivery.py _run_route/_flush: the 32nd success triggers _flush inside
    the job's try; a failing finish_jobs is then taken for a failure of *that
    job* (retry_job: it is sent again, and after max_attempts the sender is
    told it failed), and the 32 ids, already swapped out of route.done, are
    never deleted by this worker (they re-run when the lease expires)."""
    store = FakeStore(fail=1)
    worker = _worker(store, _ok)
    route = Route("b.example", "b.example#0")
    route.jobs.extend(_job(i) for i in range(1, 33))
    worker._busy.add(route)
    asyncio.run(worker._run_route(route))
    assert store.retried == [], f"delivered jobs put back for retry: {store.retried}"
    assert sorted(store.finished) == list(range(1, 33)), "finished jobs never deleted"


def test_failed_delete_while_lingering_loses_the_finished_ids() -> None:
    """delivery.py _linger: a delete that fails while the session lingers must
    not escape _run_route nor drop the finished ids: they are deleted later."""
    store = FakeStore(fail=1)
    worker = _worker(store, _ok)
    route = Route("b.example", "b.example#0")
    route.jobs.append(_job(7))
    worker._busy.add(route)
    asyncio.run(worker._run_route(route))  # a failed delete must not escape
    assert store.finished == [7], "the finished job was never deleted"


def test_finished_job_not_yet_deleted_is_claimed_and_run_again(tmp_path: Path) -> None:
    """delivery.py batching vs. the claim lease: a finished job waits in
    route.done while the route carries on with the next job; when that takes
    longer than claim_lease, the scan claims the finished job again and a
    second session runs it a second time (and, once the first route flushes,
    the next job of its envelope can start while the duplicate still runs)."""
    store = open_store(str(tmp_path / "q.sqlite3"))
    runs: list[str] = []

    async def handler(payload: dict[str, Any], route: Route) -> None:
        runs.append(payload["envid"])
        if payload["envid"] == "slow":
            # The behaviour under test: a job that outlasts the lease (0.2 s).
            await asyncio.sleep(0.6)

    async def main() -> None:
        worker = _worker(store, handler, lease=0.2, poll_interval=0.05)
        worker.sessions_per_peer = 1  # both jobs on one session, in order
        store.enqueue("send-envelope", "k1", json.dumps({"envid": "fast"}))
        store.enqueue("send-envelope", "k2", json.dumps({"envid": "slow"}))
        task = asyncio.create_task(worker.run())
        # Both jobs done and deleted: nothing is left that could run again.
        await wait_until_async(lambda: "slow" in runs and store.queue_size() == 0,
                               what="both jobs run and deleted")
        worker.stop()
        await task

    asyncio.run(main())
    store.close()
    assert runs.count("fast") == 1, f"a finished job ran again: {runs}"


def test_submissions_wait_while_the_worker_is_behind_and_go_on_when_it_catches_up(
    tmp_path: Path,
) -> None:
    """In-flow control (delivery.in_flow_delay): past in_flow_threshold jobs
    waiting in memory for a domain, room_for_submission() waits for mail to
    that domain only; it returns as soon as the worker drains below the
    threshold, and after in_flow_delay at the latest."""
    store = open_store(str(tmp_path / "q.sqlite3"))
    gate = asyncio.Event()

    entered = asyncio.Event()

    async def stuck(payload: dict[str, Any], route: Route) -> None:
        entered.set()
        await gate.wait()  # a slow peer: jobs pile up behind this one

    async def main() -> tuple[float, bool, float, float]:
        worker = _worker(store, stuck, poll_interval=0.05)
        worker.in_flow_threshold = 10
        worker.in_flow_delay = 30.0
        assert await worker.room_for_submission(["b.example"]) == 0.0  # nothing waiting yet
        for i in range(40):
            store.enqueue("send-envelope", f"k{i}", json.dumps({"envid": f"e{i}"}))
        task = asyncio.create_task(worker.run())
        # The worker claimed the jobs and the first one is stuck at the peer.
        await asyncio.wait_for(entered.wait(), 30)
        waiter = asyncio.create_task(worker.room_for_submission(["B.example"]))
        # The behaviour under test: the submission waits (here for as long as
        # the peer is stuck; 0.3 s is enough to see it does not go ahead).
        done, _pending = await asyncio.wait({waiter}, timeout=0.3)
        blocked = not done
        # Mail to another domain does not wait for b.example's backlog.
        assert await worker.room_for_submission(["c.example"]) == 0.0
        gate.set()  # the peer answers: the worker catches up
        waited = await asyncio.wait_for(waiter, 10)
        worker.in_flow_delay = 0.2  # a worker that never catches up is not waited for long
        gate.clear()
        for i in range(40, 80):
            store.enqueue("send-envelope", f"k{i}", json.dumps({"envid": f"e{i}"}))
        worker.wake()
        # Once the worker has claimed the new backlog, a submission waits, but
        # no longer than in_flow_delay.
        capped = await wait_until_async(
            lambda: worker.room_for_submission(["b.example"]),
            what="the worker behind on b.example again")
        gate.set()
        worker.stop()
        await task
        return waited, blocked, capped, worker.in_flow_delay

    waited, blocked, capped, delay = asyncio.run(main())
    store.close()
    assert blocked, "a submission went ahead while 40 jobs waited (threshold 10)"
    assert 0.2 < waited < 10, waited
    assert delay <= capped < 5, capped


def test_what_a_job_records_later_commits_with_its_delete_or_not_at_all(
    tmp_path: Path,
) -> None:
    """delivery.py route.later (issue 15 item 1): a finished job's record is
    written in the transaction that deletes the job, one commit for both; a
    record that fails writes nothing and leaves the job queued until a later
    flush writes both."""
    store = open_store(str(tmp_path / "q.sqlite3"))
    failures = [1]

    def record() -> None:
        store.enqueue("send-envelope", "recorded", "{}")
        if failures:
            failures.pop()
            raise sqlite3.OperationalError("disk I/O error")

    async def later(payload: dict[str, Any], route: Route) -> None:
        route.later.append(record)

    async def main() -> int:
        worker = _worker(store, later)
        store.enqueue("send-envelope", "k1", json.dumps({"envid": "e1"}))
        [job] = store.claim_jobs("n1", 1e12, 10, 600.0)
        route = Route("b.example", "b.example#0")
        route.jobs.append(job)
        worker._busy.add(route)
        commits = store.commits
        await worker._run_route(route)  # the first flush fails, the last one writes
        return store.commits - commits

    commits = asyncio.run(main())
    # The failed try wrote nothing (one row, not two); the job went with the record.
    assert [j.key for j in store.jobs()] == ["recorded"]
    assert commits == 1
    store.close()
