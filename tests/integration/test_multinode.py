"""Several nodes behind one domain (issue 3, item 6): two ``smdp serve``
processes serve a.example from one PostgreSQL database (same hostname, their
own ``node`` names and ports); b.example is an ordinary SQLite server.

The a.example nodes reach b.example through a counting proxy, so the test sees
every peer command that crosses: queue work must be done exactly once, by
whichever node claimed it. Then a node is SIGKILLed while it holds claimed
work, and the other finishes that work once the claim's lease runs out.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.protocol import user as wire
from smdp.terms import Decision
from tests.integration.harness import Server, free_ports, running, wait_until

ALICE, BOB = "alice@a.example", "bob@b.example"
# a.example's nodes share one PostgreSQL database, b.example is on SQLite,
# whatever the pass: the test runs in the default pass only (conftest.py).
pytestmark = pytest.mark.own_backend
LEASE = 4.0  # [delivery] claim_lease of the a.example nodes, in seconds



def peer_command(line: str) -> tuple[str, str] | None:
    """(verb, envid) of a peer command that names an envelope, else None."""
    words = line.split()
    if not words:
        return None
    verb = words[0].upper()
    if verb in ("ENVELOPE", "MAIL"):  # ENVELOPE From:<a> ID=<envid>
        envid = next((w[3:] for w in words if w.upper().startswith("ID=")), None)
        return (verb, envid) if envid else None
    if verb == "RECEIVED" or verb.startswith(("ACCEPT", "REJECT")):  # VERB <envid> ...
        return (verb, words[1]) if len(words) > 1 else None
    return None


class CountingProxy:
    """b.example as the a.example nodes see it.

    Forwards each connection to the real server and records the peer commands
    (ENVELOPE, MAIL, decisions, RECEIVED) the nodes send, with the time each
    crossed. With ``hang`` set, it accepts new connections and never answers,
    as a peer that stalls: whoever opened one sits in its job, holding the claim.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.hang = False
        self.lock = threading.Lock()
        self.seen: list[tuple[float, str, str]] = []  # (time, verb, envid)
        self.held: list[socket.socket] = []
        self.open: list[socket.socket] = []
        self.pumps = 0  # running pump threads: two per proxied session
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                if self.hang:
                    self.held.append(conn)
                    continue
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            with self.lock:
                self.open += [conn, up]
                self.pumps += 2
            threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(conn, up, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        buf = b""
        in_data = False
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if not count:
                    continue
                buf += data
                while b"\r\n" in buf:
                    line, _, buf = buf.partition(b"\r\n")
                    text = line.decode("utf-8", "replace")
                    if in_data:
                        in_data = text != "."  # the data block ends; commands again
                    elif text.upper() == "DATA":
                        in_data = True
                    elif found := peer_command(text):
                        with self.lock:
                            self.seen.append((time.time(), *found))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self.lock:
                self.pumps -= 1

    def idle(self) -> bool:
        """No proxied session is open (both directions of each have ended)."""
        with self.lock:
            return self.pumps == 0

    def count(self, verb: str, envid: str) -> int:
        with self.lock:
            return sum(1 for _t, v, e in self.seen if v == verb and e == envid)

    def first(self, verb: str, envid: str) -> float:
        with self.lock:
            return min(t for t, v, e in self.seen if v == verb and e == envid)

    def stop_hanging(self) -> None:
        """Answer again; the stalled connections are cut (their jobs fail and retry)."""
        with self.lock:
            self.hang = False
            held, self.held = self.held, []
        for conn in held:
            conn.close()

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for s in self.held + self.open:
                s.close()


@pytest.fixture
def nodes(tmp_path: Path, pg_dsn: str) -> Iterator[tuple[Server, Server, Server, CountingProxy]]:
    p1, u1, p2, u2, pb, ub = free_ports(6)
    b = Server("b.example", "smdp.b.example", tmp_path, pb, ub)
    proxy = CountingProxy(pb)
    a_nodes = [
        Server("a.example", "smdp.a.example", tmp_path, peer, user, backend="postgresql",
               dsn=pg_dsn, node=name, delivery=f"claim_lease = {LEASE}")
        for name, peer, user in (("a-node-1", p1, u1), ("a-node-2", p2, u2))
    ]
    for node in a_nodes:
        node.peers = {"b.example": (b.hostname, proxy.port)}
    # Both nodes say EHLO smdp.a.example, so either speaks for a.example:
    # b.example's discovery may name just one of them.
    b.peers = {"a.example": ("smdp.a.example", p2)}
    for s in (b, *a_nodes):
        s.write_config()
    a_nodes[0].add_user(ALICE)  # one database: the other node sees alice too
    b.add_user(BOB)
    try:
        with running(b, *a_nodes):
            yield a_nodes[0], a_nodes[1], b, proxy
    finally:
        proxy.close()


def send(server: Server, user: str, to: str, subject: str) -> None:
    c = server.client(user)
    try:
        c.submit([to], f"To: {to}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode())
    finally:
        c.quit()


def pending(server: Server, user: str) -> list[int]:
    c = server.client(user)
    try:
        lines = c.call(wire.Envs(False)).lines or []
    finally:
        c.quit()
    return [int(line.split(" ", 1)[0]) for line in lines]


def states(server: Server, user: str) -> list[str]:
    """The state of each recipient of ``user``'s sent mail, from SENT."""
    return [row[2] for row in server.sent(user)]


def bodies(server: Server, user: str) -> list[bytes]:
    """Every accepted message of ``user``, by STAT and RETR."""
    c = server.client(user)
    try:
        count = int(c.call(wire.Stat()).text.split()[0])
        return [c.call(wire.Retr(n)).body or b"" for n in range(1, count + 1)]
    finally:
        c.quit()


def accept_all(server: Server, user: str, n: int) -> None:
    entries = wait_until(lambda: (p := pending(server, user)) and len(p) >= n and p,
                         what=f"{n} envelopes for {user}")
    assert len(entries) == n
    c = server.client(user)
    try:
        for entry in entries:
            c.call(wire.UserDecision(Decision.ACCEPT, entry))
    finally:
        c.quit()


def test_two_nodes_share_the_work_once_and_take_over_a_dead_nodes_claims(
    nodes: tuple[Server, Server, Server, CountingProxy],
) -> None:
    a1, a2, b, proxy = nodes
    # -- both nodes up: every piece of queue work is done exactly once ----------
    for i in range(5):
        send(a1, ALICE, BOB, f"a-to-b {i}")
    for i in range(3):
        send(b, BOB, ALICE, f"b-to-a {i}")
    accept_all(b, BOB, 5)  # b.example pulls from a.example (node 2)
    accept_all(a1, ALICE, 3)  # a.example's queue reports and pulls from b.example
    wait_until(lambda: states(a1, ALICE) == ["delivered"] * 5,
               what="a.example's messages delivered")
    wait_until(lambda: states(b, BOB) == ["delivered"] * 3,
               what="b.example's messages delivered")
    wait_until(lambda: a1.queue() == [], what="a's queue")
    # no command shows this: the envids, to match what the proxy counted
    out_envids = [e for (e,) in a1.query("SELECT envid FROM out_envelopes")]
    in_envids = [e for (e,) in a1.query("SELECT envid FROM in_envelopes")]
    assert len(out_envids) == 5 and len(in_envids) == 3
    for envid in out_envids:
        assert proxy.count("ENVELOPE", envid) == 1, envid
    for envid in in_envids:
        assert (proxy.count("ACCEPT", envid), proxy.count("RECEIVED", envid)) == (1, 1), envid
    assert [env[1] for env in a1.envelopes(ALICE, all=True)] == ["accepted"] * 3
    assert [b"Subject: b-to-a " in body for body in bodies(a1, ALICE)] == [True] * 3
    assert [b"Subject: a-to-b " in body for body in bodies(b, BOB)] == [True] * 5
    assert "replayed envelope" not in b.log()
    # Counted once per message, though two processes write the same rows.
    assert a1.quality() == {"smdp.b.example": (3, 3)}

    # -- node 1 dies holding claimed work; node 2 finishes it after the lease ---
    # Let idle peer sessions close first (the worker keeps one open for a
    # second for more jobs): the hang below stops new sessions at the greeting.
    wait_until(proxy.idle, what="the nodes' idle peer sessions to b.example closed")
    proxy.hang = True
    for i in range(3):
        send(a1, ALICE, BOB, f"during the outage {i}")

    def claims() -> list[tuple[str, str, float]]:
        # no command shows this: who holds a claim and until when
        return [(str(k), str(n), float(u)) for k, n, u in a1.query(
            "SELECT key, claimed_by, claimed_until FROM queue WHERE kind='send-envelope' "
            "AND claimed_by IS NOT NULL")]

    # Submitting through node 1 wakes node 1's worker: it claims first.
    held = wait_until(lambda: (c := claims()) and len(c) == 3 and
                      any(n == "a-node-1" for _k, n, _u in c) and c,
                      what="the new jobs claimed, some by node 1")
    by_node_1 = {k: until for k, n, until in held if n == "a-node-1"}
    a1.kill()
    proxy.stop_hanging()
    # A SIGKILLed node releases nothing: its claims stay until they expire.
    # That node 2 leaves them alone while they are live is shown below: it
    # sends each envelope only once its claim's lease has run out.
    assert {k for k, n, _u in claims() if n == "a-node-1"} == set(by_node_1)
    wait_until(lambda: len(b.envelopes(BOB, all=True)) == 8,
               timeout=LEASE + 15, what="node 2 sends the envelopes node 1 held")
    for envid, until in by_node_1.items():
        assert proxy.count("ENVELOPE", envid) == 1  # node 1 never got past the greeting
        assert proxy.first("ENVELOPE", envid) >= until - 0.05  # ... so node 2 waited
    wait_until(lambda: a2.queue() == [], what="a's queue")
    # no command shows this: which recipients rode the envelopes node 1 held (by envid)
    assert a2.query("SELECT state FROM out_recipients WHERE envid = ANY(?)",
                    (list(by_node_1),)) == [("envelope-sent",)] * len(by_node_1)
    # And the rest of the message's life runs on the surviving node.
    accept_all(b, BOB, 3)
    wait_until(lambda: states(a2, ALICE) == ["delivered"] * 8,
               what="every message delivered")
    # no command shows this: that the origin dropped every body
    wait_until(lambda: a2.query("SELECT COUNT(*) FROM out_messages WHERE has_body = 1")
               == [(0,)], what="the origin drops every body")
