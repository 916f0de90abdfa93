"""What an operator watches (issue 16 item 4; docs/operations.md): a flow
through two real server processes, then each server's /metrics read with
prometheus_client's own parser, and every counter equal to what happened;
/healthz and /readyz; JSON logs.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from smdp.client.session import ClientError, UserClient
from smdp.protocol import user as wire
from smdp.terms import Decision

from .harness import Server, free_ports, make_pair, wait_until

ALICE, BOB = "alice@a.example", "bob@b.example"


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the server's /metrics: (name, sorted labels) -> value."""
    assert server.metrics_port is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def get(server: Server, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}{path}",
                                    timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_counters_equal_what_happened(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    for server, port in zip((a, b), free_ports(2), strict=True):
        server.metrics_port = port
        server.server_extra = 'log_format = "json"' if server is b else ""
        server.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    a.start()
    b.start()
    try:
        assert get(b, "/healthz") == (200, "ok\n")
        assert get(b, "/readyz") == (200, "ready\n")
        # One failed login on alice's server.
        c = UserClient("127.0.0.1", a.user_port)
        with contextlib.suppress(ClientError):
            c.login(ALICE, "wrong", verb="PASS")
        c.sock.close()
        alice = a.client(ALICE)
        sizes = {}
        for subject in ("one", "two", "three"):
            alice.submit([BOB], f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())
        alice.quit()
        wait_until(lambda: len(b.envelopes(BOB)) == 3, 20, "three envelopes at b")
        entries = {row[5]: row[0] for row in b.envelopes(BOB)}
        bob = b.client(BOB)
        for subject, decision in (("one", Decision.ACCEPT), ("two", Decision.REJECT_SPAM),
                                  ("three", Decision.ACCEPT_AUTH)):
            assert bob.call(wire.UserDecision(decision, int(entries[subject]))).ok
        bob.quit()
        wait_until(lambda: sorted(r[2] for r in a.sent(ALICE)) == [
            "delivered", "delivered", "spam"], 20, "both pulls")
        # alice is on bob's white list now: the fourth goes whole, directly.
        alice = a.client(ALICE)
        alice.submit([BOB], b"Subject: four\r\n\r\nbody of four\r\n")
        alice.quit()
        wait_until(lambda: sorted(r[2] for r in a.sent(ALICE)).count("delivered") == 3, 20,
                   "the direct message")
        for row in b.envelopes(BOB, all=True):
            sizes[row[5]] = int(row[3])
        at_a, at_b = scrape(a), scrape(b)
        # The destination: three envelopes stored, one whole message, four
        # decisions (three the user's, one the white list's), two pulls.
        assert at_b[("smdp_envelopes_received_total", (("outcome", "stored"), ("via", "smdp")))] \
            == 3
        assert at_b[("smdp_envelopes_received_total", (("outcome", "direct"), ("via", "smdp")))] \
            == 1
        decisions = {dict(labels)["option"] + "/" + dict(labels)["by"]: value
                     for (name, labels), value in at_b.items()
                     if name == "smdp_decisions_total"}
        assert decisions == {"accept/user": 1, "reject-spam/user": 1, "accept-auth/user": 1,
                             "accept/automatic": 1}
        assert at_b[("smdp_pulls_total", (("side", "fetched"),))] == 2
        # Octets in: the two pulled messages and the direct one, as stored
        # without b's own Received field (what crossed the network).
        crossed = at_b[("smdp_message_bytes_total", (("direction", "in"),))]
        assert at_a[("smdp_message_bytes_total", (("direction", "out"),))] == crossed
        assert 0 < crossed < sizes["one"] + sizes["three"] + sizes["four"]
        assert at_b[("smdp_peer_messages", (("peer", "smdp.a.example"),))] == 4
        assert at_b[("smdp_peer_quality", (("peer", "smdp.a.example"),))] == 0.5  # (1-1+1+1)/4
        assert at_b[("smdp_peer_blocked", (("peer", "smdp.a.example"),))] == 0
        assert at_b[("smdp_store_up", ())] == 1
        # The store's counters (issue 15 item 1): a scrape when nothing
        # happens (the worker's idle claims write nothing) commits nothing.
        for name in ("statements", "transactions", "commits"):
            assert at_a[(f"smdp_store_{name}_total", ())] > 0
        assert at_a[("smdp_store_statements_total", ())] > at_a[("smdp_store_commits_total", ())]
        again = scrape(a)
        assert again[("smdp_store_commits_total", ())] == at_a[("smdp_store_commits_total", ())]
        assert again[("smdp_store_statements_total", ())] > at_a[("smdp_store_statements_total",
                                                                    ())]
        # Group commit (on by default): at least one fsync, never more than
        # one per commit.
        assert 0 < at_a[("smdp_store_fsyncs_total", ())] <= at_a[("smdp_store_commits_total", ())]
        assert again[("smdp_store_fsyncs_total", ())] <= again[("smdp_store_commits_total", ())]
        assert at_a[("smdp_suspended_senders", ())] == 0
        # The origin: four recipients taken, two pulls served, three
        # deliveries timed, one failed login, an empty queue.
        assert at_a[("smdp_recipients_sent_total", (("outcome", "taken"), ("route", "smdp")))] \
            == 4
        assert at_a[("smdp_pulls_total", (("side", "served"),))] == 2
        assert at_a[("smdp_delivery_seconds_count", ())] == 3
        assert at_a[("smdp_login_failures_total", (("port", "user"),))] == 1
        assert not any(name == "smdp_queue_jobs" for name, _ in at_a)
        assert ("smdp_sessions", (("port", "peer"),)) in at_a
        # JSON logs at b: one object a line.
        lines = [line for line in (tmp_path / "b.example.log").read_text().splitlines()
                 if line.startswith("{")]
        records = [json.loads(line) for line in lines]
        assert any(r["message"].startswith("started hostname=smdp.b.example") for r in records)
        assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    finally:
        b.stop()
        a.stop()


def test_a_peer_that_is_down_shows_in_the_queue(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    a.metrics_port = free_ports(1)[0]
    a.write_config()
    a.add_user(ALICE)
    a.start()  # b never starts
    try:
        alice = a.client(ALICE)
        alice.submit([BOB], b"Subject: waiting\r\n\r\nx\r\n")
        alice.quit()
        wait_until(lambda: scrape(a).get(("smdp_queue_jobs", (("peer", "b.example"),))) == 1,
                   20, "the job in the queue gauge")
        assert scrape(a)[("smdp_queue_oldest_seconds", (("peer", "b.example"),))] >= 0
    finally:
        a.stop()


def test_readiness_says_why_not(tmp_path: Path) -> None:
    """/readyz's answer before the listeners are bound, while stopping, and
    when the store does not answer (each a 503 with its reason)."""
    from smdp.server.app import SmdpServer

    from .inprocess import InProcessServer

    server = SmdpServer(InProcessServer(tmp_path, "b.example").config)
    try:
        assert server._not_ready() == "starting"
        server.started = True
        assert server._not_ready() is None
        # Group commit: an fsync that failed leaves the server unfit to answer.
        flusher = server.store.flusher
        assert flusher is not None
        flusher.failure = OSError(5, "Input/output error")
        assert server._not_ready() == ("the store's log could not be flushed: "
                                       "[Errno 5] Input/output error")
        flusher.failure = None
        server.store.close()
        problem = server._not_ready()
        assert problem is not None and problem.startswith("the store does not answer: ")
        server.stopping = True
        assert server._not_ready() == "stopping"
    finally:
        server.store.close()
