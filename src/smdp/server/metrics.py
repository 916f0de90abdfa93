"""What an operator watches (issue 16 item 4; docs/operations.md): Prometheus
metrics, and the health and readiness answers a process manager asks for.

Counters are counted where things happen, in the adapters and, for the
decisions the server makes itself, through ``Destination.decided``; what
the store already knows (the queue, quality, sessions) is read when
Prometheus scrapes, so it can never drift from the truth. Each server has a
registry of its own: several servers in one process (the tests) never mix
their figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from smdp.config import QualityPolicy
from smdp.core.quality import Standing, judge
from smdp.terms import Decision

if TYPE_CHECKING:
    from smdp.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds from a message's submission to its delivery: a pull comes after a
# human decision, so the buckets run from a second to a week.
LATENCY_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0,
                   7 * 86400.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.envelopes_received = Counter(
            "smdp_envelopes_received", "Envelopes and whole messages offered to this server, "
            "by how they came (smdp: the peer port; smtp: the MX) and what became of them "
            "(stored: an envelope to decide on; direct: a whole message for the mailbox; "
            "refused)", ["via", "outcome"], registry=r)
        self.recipients_sent = Counter(
            "smdp_recipients_sent", "Recipients of outbound envelopes, direct messages and "
            "SMTP deliveries, by route and the destination's answer (taken, refused, "
            "deferred)", ["route", "outcome"], registry=r)
        self.decisions = Counter(
            "smdp_decisions", "Table 1's options taken at this destination, by whom (user: "
            "the recipient; automatic: a list entry or an administrator's rule)",
            ["option", "by"], registry=r)
        self.pulls = Counter(
            "smdp_pulls", "Messages pulled after an accept (served: by a peer from us; "
            "fetched: by us from a peer)", ["side"], registry=r)
        self.bytes = Counter(
            "smdp_message_bytes", "Octets of whole messages crossing the network, by "
            "direction (in, out)", ["direction"], registry=r)
        self.delivery_seconds = Histogram(
            "smdp_delivery_seconds", "From a message's submission here to its delivery to a "
            "recipient (pulled, sent directly, or taken by an SMTP server)",
            buckets=LATENCY_BUCKETS, registry=r)
        self.login_failures = Counter(
            "smdp_login_failures", "Failed logins, by port", ["port"], registry=r)

    def decided(self, decision: Decision, by_user: bool) -> None:
        """``Destination.decided``: one of the five options was taken."""
        self.decisions.labels(decision.word,
                              "user" if by_user else "automatic").inc()

    def delivered(self, submitted_at: float) -> None:
        self.delivery_seconds.observe(max(0.0, time.time() - submitted_at))

    def watch(self, store: Store, quality: QualityPolicy,
              sessions: Callable[[], dict[str, int]]) -> None:
        """Read the queue, quality and sessions at each scrape."""
        self.registry.register(_StateCollector(store, quality, sessions))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, store: Store, quality: QualityPolicy,
                 sessions: Callable[[], dict[str, int]]) -> None:
        self.store = store
        self.quality = quality
        self.sessions = sessions

    def describe(self) -> list[Metric]:
        return []  # described at collection: the labels depend on the store

    def collect(self) -> Iterator[Metric]:
        # Read before this scrape's own queries below, so a scrape at the
        # start and one at the end of a run count only the run's (issue 15
        # item 1; ``make bench`` divides them by the messages).
        for name, count, text in (
                ("smdp_store_statements", self.store.statements,
                 "SQL statements this server's store ran (BEGIN and COMMIT not counted)"),
                ("smdp_store_transactions", self.store.transactions,
                 "Store transactions committed (BEGIN ... COMMIT)"),
                ("smdp_store_commits", self.store.commits,
                 "Store commits that wrote, in a transaction or alone"),
                # With group commit one fsync covers the commits of every
                # session made while the one before it ran; without, each
                # commit that wrote is its own flush (SQLite's fsync with
                # synchronous=FULL, PostgreSQL's WAL flush).
                ("smdp_store_fsyncs", self.store.flusher.fsyncs
                 if self.store.flusher is not None else self.store.commits,
                 "Flushes of the store's log to disk (group commit: one for many commits)")):
            yield CounterMetricFamily(name, text, value=count)
        sessions = GaugeMetricFamily("smdp_sessions", "Open sessions, by port", labels=["port"])
        for port, count in sorted(self.sessions().items()):
            sessions.add_metric([port], count)
        yield sessions
        up = GaugeMetricFamily("smdp_store_up", "1 when the store answered this scrape")
        depth = GaugeMetricFamily("smdp_queue_jobs", "Jobs waiting, by peer", labels=["peer"])
        oldest = GaugeMetricFamily("smdp_queue_oldest_seconds",
                                   "Age of the oldest job waiting, by peer", labels=["peer"])
        value = GaugeMetricFamily("smdp_peer_quality", "Quality(X) = Votes(X) / Messages(X) "
                                  "(section 5.3), by peer", labels=["peer"])
        messages = GaugeMetricFamily("smdp_peer_messages", "Messages(X), by peer",
                                     labels=["peer"])
        blocked = GaugeMetricFamily("smdp_peer_blocked", "1 when the peer is refused (its "
                                    "quality, or an administrator)", labels=["peer"])
        suspended = GaugeMetricFamily("smdp_suspended_senders", "Local senders whose sending "
                                      "is suspended (spam reports, or an administrator)")
        try:
            waiting = self.store.queue_by_peer()
            peers = self.store.all_quality()
            suspended.add_metric([], len(self.store.suspended_users()))
        except Exception:  # the store's own failure is what this scrape reports
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        now = time.time()
        for peer, jobs, first in waiting:
            depth.add_metric([peer or "-"], jobs)
            oldest.add_metric([peer or "-"], max(0.0, now - first))
        for q in peers:
            value.add_metric([q.server], q.value)
            messages.add_metric([q.server], q.messages)
            blocked.add_metric([q.server],
                               1 if judge(q, self.quality).status is Standing.BLOCKED else 0)
        yield from (up, depth, oldest, value, messages, blocked, suspended)


def metrics_app(metrics: Metrics, ready: Callable[[], str | None]) -> web.Application:
    """The metrics listener's routes: ``/metrics`` (Prometheus' text format),
    ``/healthz`` (the process answers: 200) and ``/readyz`` (200 when every
    listener is bound and the store answers, else 503 with the reason)."""

    async def scrape(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        problem = ready()
        if problem is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {problem}\n")

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
