"""Issue 13 item 7: the web app with 10,000 envelopes in one mailbox.

Aims: the first page of envelopes in under 100 ms of server time, a decision
round trip under 50 ms (``make bench``; not a timed test).

A real server (``SmdpServer``, as ``smdp serve`` runs it) on its own loop in a
thread, with the web app on a loopback port and a real SQLite store. Before
it starts, one user's mailbox gets ``n`` pending envelopes, written through
the store directly (what ``receive_envelope`` writes for each, without the
wire: 10,000 arrivals over the peer port would measure the peer port), each
with a realistic envelope block (a name, a subject, two headlines, one
attachment name), from 50 sending servers.

Measured over HTTP/1.1 keep-alive from this process, for each request:
the server's own time (its ``Server-Timing`` header: from the request
handed to the app to the response ready, the store's reads included) and
the round trip the client sees (loopback, aiohttp's parsing and ours).

- ``first_page``: ``GET /api/envelopes`` (50 newest pending) as the page asks it;
- ``search_page``: the same with a search that matches one envelope in 50
  (a sender's domain), the worst the page asks;
- ``all_page``: ``state=all``, the list of every envelope;
- ``decision``: ``POST /api/decisions`` of one envelope (reject: a durable
  transaction, the vote, the queued decision), a different envelope each time.

The decision's job to the origin goes to a peer that refuses the connection
and waits an hour before trying again, so that delivery attempts do not run
beside the measurement.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench.common import Settings, percentile
from smdp.config import load_config
from smdp.core.envelope import EnvelopeSummary, encode_envelope_block
from smdp.server.accounts import Accounts
from smdp.server.app import SmdpServer
from smdp.store import open_store

USER = "owner@b.example"
PASSWORD = "bench-password"
SERVERS = 50
AIM_PAGE_MS = 100.0
AIM_DECISION_MS = 50.0
CONFIG = """
[server]
hostname = "smdp.b.example"
domains = ["b.example"]
[listen]
peer = "127.0.0.1:0"
user = "127.0.0.1:0"
web = "127.0.0.1:0"
[store]
path = "b.sqlite3"
[delivery]
retry_initial = 3600
retry_max = 3600
[security]
password_memory_kib = 8
password_time_cost = 1
allow_plaintext_login = true
"""
# Every sending domain's server, at a port that refuses connections.
PEER = '[peers."d{n}.example"]\nhostname = "smdp.d{n}.example"\naddress = "127.0.0.1"\nport = 9\n'


def _fill(config_path: Path, n: int) -> None:
    """The user and ``n`` pending envelopes, oldest first, in one transaction."""
    config = load_config(config_path)
    store = open_store(config)
    try:
        Accounts(store, config).create(USER, PASSWORD)
        user = store.user_by_address(USER)
        assert user is not None
        now = time.time()
        with store.transaction():
            for k in range(n):
                domain = f"d{k % SERVERS}.example"
                subject = f"Quarterly figures, part {k}"
                summary = EnvelopeSummary(
                    subject, f"Sender {k}", USER, "", "Thu, 03 Dec 2026 10:00:00 +0000", 1,
                    (f"figures-{k}.pdf",),
                    ("Here are the figures we spoke about on Tuesday.",
                     "The totals are at the end."))
                block = encode_envelope_block(summary, expires="2099-01-01T00:00:00Z")
                env = store.insert_in_envelope(
                    envid=f"bench{k:021d}", origin_server=f"smdp.{domain}",
                    sender=f"sender{k}@{domain}", size=20_000 + k,
                    block=block.decode("utf-8"), subject=subject, body=None)
                store.set_in_expiry(env, now + 86400 * 30)
                store.count_messages(f"smdp.{domain}", 1)
                store.insert_mailbox_entry(user.id, env, USER, "pending")
    finally:
        store.close()


class Running:
    """The server on its own loop in a thread, as the tests' in-process one."""

    def __init__(self, config_path: Path) -> None:
        self.config = load_config(config_path)
        self.loop = asyncio.new_event_loop()
        self.server: SmdpServer | None = None
        started: Future[None] = Future()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def begin() -> None:
                self.server = SmdpServer(self.config)
                await self.server.start()

            try:
                self.loop.run_until_complete(begin())
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="bench-web", daemon=True)
        self.thread.start()
        started.result(timeout=60)
        assert self.server is not None and self.server.web_port is not None
        self.port: int = self.server.web_port

    def stop(self) -> None:
        assert self.server is not None
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=1.0), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()


class Client:
    """One keep-alive connection with the session's cookie and CSRF token."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""
        self.csrf = ""
        status, _, me = self.call("POST", "/api/login", {"address": USER, "password": PASSWORD})
        assert status == 200, me
        self.csrf = me["csrf"]

    def call(self, method: str, path: str, body: Any = None
             ) -> tuple[int, dict[str, float], Any]:
        """Status, {"server_ms", "round_trip_ms"}, JSON answer."""
        headers = {"Content-Type": "application/json", "Cookie": self.cookie,
                   "X-CSRF-Token": self.csrf}
        start = time.perf_counter()
        self.conn.request(method, path, body=None if body is None else json.dumps(body),
                          headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        round_trip = (time.perf_counter() - start) * 1000
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        timing = response.getheader("Server-Timing") or ""
        server = float(timing.partition("dur=")[2] or "nan")
        return response.status, {"server_ms": server, "round_trip_ms": round_trip}, \
            json.loads(payload)


def _stats(samples: list[float]) -> dict[str, float]:
    return {"count": len(samples), "median_ms": round(percentile(samples, 50), 2),
            "p95_ms": round(percentile(samples, 95), 2),
            "max_ms": round(max(samples), 2) if samples else 0.0}


def _measure(client: Client, path: str, repeat: int, check: int | None = None,
             ) -> dict[str, Any]:
    server: list[float] = []
    trip: list[float] = []
    for _ in range(repeat):
        status, times, answer = client.call("GET", path)
        assert status == 200, answer
        if check is not None:
            assert len(answer["envelopes"]) == check, len(answer["envelopes"])
        server.append(times["server_ms"])
        trip.append(times["round_trip_ms"])
    return {"server": _stats(server), "round_trip": _stats(trip)}


def run(settings: Settings) -> dict[str, Any]:
    n = 10_000
    repeat = settings.pick(200, 1000)
    decisions = settings.pick(200, 1000)
    with tempfile.TemporaryDirectory(prefix="smdp-bench-web-") as tmp:
        config_path = Path(tmp) / "b.toml"
        config_path.write_text(CONFIG + "".join(PEER.format(n=k) for k in range(SERVERS)))
        t0 = time.perf_counter()
        _fill(config_path, n)
        fill_s = time.perf_counter() - t0
        server = Running(config_path)
        try:
            client = Client(server.port)
            for _ in range(10):  # warm: the page cache, the statement cache
                client.call("GET", "/api/envelopes?limit=50")
            first = _measure(client, "/api/envelopes?limit=50", repeat, check=50)
            search = _measure(client, "/api/envelopes?limit=50&q=d7.example", repeat, check=50)
            every = _measure(client, "/api/envelopes?limit=50&state=all", repeat, check=50)
            ids = [e["id"] for e in client.call("GET", "/api/envelopes?limit=200")[2]
                   ["envelopes"]]
            while len(ids) < decisions:
                more = client.call("GET", f"/api/envelopes?limit=200&before={ids[-1]}")[2]
                ids += [e["id"] for e in more["envelopes"]]
            server_ms: list[float] = []
            trip_ms: list[float] = []
            for entry in ids[:decisions]:
                status, times, answer = client.call(
                    "POST", "/api/decisions", {"decision": "reject", "ids": [entry]})
                assert status == 200 and answer["results"][0]["ok"], answer
                server_ms.append(times["server_ms"])
                trip_ms.append(times["round_trip_ms"])
            decision = {"server": _stats(server_ms), "round_trip": _stats(trip_ms)}
            after = _measure(client, "/api/envelopes?limit=50", max(20, repeat // 10),
                             check=50)
            client.conn.close()
        finally:
            server.stop()
    return {
        "envelopes": n,
        "fill_s": round(fill_s, 2),
        "first_page": first,
        "search_page": search,
        "all_page": every,
        "decision": decision,
        "first_page_after_decisions": after,
        "aims_ms": {"first_page": AIM_PAGE_MS, "decision": AIM_DECISION_MS},
        "met": {"first_page": first["server"]["p95_ms"] < AIM_PAGE_MS,
                "decision": decision["server"]["p95_ms"] < AIM_DECISION_MS},
    }


if __name__ == "__main__":
    from bench.common import settings_from_env

    print(json.dumps(run(settings_from_env()), indent=2))
