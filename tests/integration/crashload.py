"""The crash workload: two real servers, a mixed workload, and SIGKILL at
random moments; then every message must be in exactly one final state that
matches its decisions (issue 3, item 4).

Used by ``tests/integration/test_crash.py`` (short run, in ``make test``) and
by ``make soak`` (``python -m tests.integration.crashload --messages 400``).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from tests.integration.harness import Server, make_pair, wait_until

ALICES = ["alice1@a.example", "alice2@a.example", "alice3@a.example"]
BOBS = ["bob1@b.example", "bob2@b.example", "bob3@b.example", "bob4@b.example",
        "bob5@b.example"]

# Plans for one (sender, recipient) pair. List-changing options get pairs of
# their own, so the expected final state never depends on the order of events.
PAIR_PLANS: dict[tuple[str, str], str] = {
    ("alice1@a.example", "bob1@b.example"): "prewhite",  # both white lists: direct send
    ("alice2@a.example", "bob2@b.example"): "preblack",  # bob2 black-lists alice2
    ("alice1@a.example", "bob3@b.example"): "authorize",  # ACCEPT&AUTH, then direct
    ("alice3@a.example", "bob4@b.example"): "spammer",  # REJECT&SPAMMER, then refused
}
PLAIN_PLANS = ["ACCEPT", "REJECT", "REJECT&SPAM", "ACCEPT-THEN-REJECT"]
# Acceptable final states at the origin for each plan.
FINAL = {
    "prewhite": {"delivered"},
    "preblack": {"spammer", "refused"},
    "authorize": {"delivered"},
    "spammer": {"spammer", "refused"},
    "ACCEPT": {"delivered"},
    "REJECT": {"rejected"},
    "REJECT&SPAM": {"spam"},
    "ACCEPT-THEN-REJECT": {"rejected"},
}


@dataclass
class Planned:
    subject: str
    sender: str
    recipients: list[str]
    plans: dict[str, str]  # recipient -> plan
    confirmed: bool = False  # the server answered +OK queued


@dataclass
class Report:
    messages: int = 0
    recipients: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def __str__(self) -> str:
        kills = sum(self.kills.values())
        return (f"{self.messages} messages ({self.recipients} message-recipient pairs) "
                f"checked after {kills} SIGKILLs ({dict(self.kills)}) in {self.seconds:.1f} s")


def plan_messages(n: int, rng: random.Random) -> list[Planned]:
    out = []
    for i in range(n):
        sender = rng.choice(ALICES)
        rcpts = rng.sample(BOBS, rng.choice([1, 1, 2, 3]))
        plans = {r: PAIR_PLANS.get((sender, r)) or rng.choice(PLAIN_PLANS) for r in rcpts}
        subject = f"crash-{i:04d}"
        out.append(Planned(subject, sender, rcpts, plans))
    return out


def setup(root: Path) -> tuple[Server, Server]:
    a, b = make_pair(root)
    for addr in ALICES:
        a.add_user(addr)
    for addr in BOBS:
        b.add_user(addr)
    return a, b


def preset_lists(a: Server, b: Server) -> None:
    """The pre-set list entries of PAIR_PLANS, through the user port."""
    with_client(a, "alice1@a.example", lambda c: c.call(wire.ListAdd(
        "out-white", "bob1@b.example", None)))
    with_client(b, "bob1@b.example", lambda c: c.call(wire.ListAdd(
        "in-white", "alice1@a.example", "smdp.a.example")))
    with_client(b, "bob2@b.example", lambda c: c.call(wire.ListAdd(
        "in-black", "alice2@a.example", "smdp.a.example")))


def with_client(server: Server, user: str, action, attempts: int = 200):  # type: ignore[no-untyped-def]
    """Run ``action(client)``, retrying while the server is being killed."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            c = server.client(user)
        except (ClientError, OSError) as exc:
            last = exc
            time.sleep(0.1)  # retry pause: the server is being restarted
            continue
        try:
            return action(c)
        except (ClientError, OSError) as exc:
            if isinstance(exc, ClientError) and not _transient(exc):
                raise
            last = exc
            time.sleep(0.1)  # retry pause: the server is being restarted
        finally:
            with contextlib.suppress(Exception):  # the server may be gone
                c.quit()
    raise AssertionError(f"gave up talking to {server.domain}: {last}")


def _transient(exc: ClientError) -> bool:
    text = str(exc)
    return "connection" in text or "closed" in text or "cannot connect" in text


class Killer(threading.Thread):
    """SIGKILLs a random server at random moments and restarts it."""

    def __init__(self, servers: list[Server], rng: random.Random, report: Report,
                 interval: tuple[float, float]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.rng = rng
        self.report = report
        self.interval = interval
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.wait(self.rng.uniform(*self.interval)):
            victim = self.rng.choice(self.servers)
            with self.lock:
                assert victim.proc is not None
                victim.proc.kill()
                victim.proc.wait()
                self.report.kills[victim.domain] += 1
                victim.start()

    def stop(self) -> None:
        self.halt.set()
        self.join()


def submit_all(a: Server, planned: list[Planned], pace: float, deadline: float) -> None:
    for p in planned:
        assert time.monotonic() < deadline, f"submissions not done in time, at {p.subject}"
        time.sleep(pace)  # the workload's pace: spread it so kills land in the middle of it
        body = (f"Subject: {p.subject}\r\nTo: {', '.join(p.recipients)}\r\n\r\n"
                f"token {p.subject}\r\n").encode()
        for _ in range(200):
            if a.query("SELECT 1 FROM out_messages WHERE subject=?", (p.subject,)):
                p.confirmed = True  # stored, even if the +OK was lost in a kill
                break
            try:
                c = a.client(p.sender)
                try:
                    c.submit(p.recipients, body)
                    p.confirmed = True
                finally:
                    with contextlib.suppress(Exception):
                        c.quit()
                break
            except (ClientError, OSError):
                time.sleep(0.1)  # retry pause: the server is being restarted
        assert p.confirmed, f"could not submit {p.subject}"


def decide_all(a: Server, b: Server, planned: list[Planned], deadline: float) -> None:
    """Play each recipient's plan until every envelope is decided as planned."""
    want = {(p.subject, r): plan for p in planned for r, plan in p.plans.items()}
    while time.monotonic() < deadline:
        rows = b.query(
            "SELECT m.id, e.subject, m.recipient, m.state FROM mailbox m "
            "JOIN in_envelopes e ON e.id = m.envelope_id")
        todo = []
        for entry, subject, rcpt, state in rows:
            plan = want.get((subject, rcpt))
            action = next_action(plan, state)
            if action is not None:
                todo.append((entry, rcpt, action))
        def in_flight() -> bool:
            return bool(a.query("SELECT 1 FROM out_recipients WHERE state='queued'"))

        if not todo and not in_flight() and settled(b, planned):
            return
        for entry, rcpt, action in todo:
            # A refusal (e.g. decided meanwhile) is fine: the next round looks again.
            with contextlib.suppress(ClientError):
                with_client(b, rcpt, lambda c, e=entry, o=action: c.call(
                    wire.UserDecision(wire.DECISIONS_BY_VERB[o], e)), attempts=50)
        time.sleep(0.2)  # poll interval: look at the mailboxes again
    raise AssertionError("decisions did not settle in time")


def next_action(plan: str | None, state: str) -> str | None:
    if plan is None:
        return None
    if plan == "ACCEPT-THEN-REJECT":
        return {"pending": "ACCEPT", "accepted": "REJECT"}.get(state)
    if state != "pending":
        return None
    return {"authorize": "ACCEPT&AUTH", "spammer": "REJECT&SPAMMER", "prewhite": "ACCEPT",
            "preblack": "REJECT&SPAMMER"}.get(plan, plan)


def settled(b: Server, planned: list[Planned]) -> bool:
    rows = b.query("SELECT state FROM mailbox")
    return all(s not in ("pending", "fetching") for (s,) in rows)


def check(a: Server, b: Server, planned: list[Planned], report: Report) -> None:
    """Every message in exactly one final state that matches its decisions."""
    origin = {
        (subject, rcpt): (state, held)
        for subject, rcpt, state, held in a.query(
            "SELECT m.subject, r.recipient, r.state, m.has_body FROM out_recipients r "
            "JOIN out_messages m ON m.id = r.message_id")
    }
    dest: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    envelope_of: dict[tuple[str, str], int] = {}
    accepted_in: set[int] = set()  # envelopes some recipient accepted (brings the body)
    for env_id, subject, rcpt, state, has_body in b.query(
        "SELECT e.id, e.subject, m.recipient, m.state, e.has_body "
        "FROM mailbox m JOIN in_envelopes e ON e.id = m.envelope_id"):
        dest.setdefault((subject, rcpt), []).append((state, bool(has_body)))
        envelope_of[(subject, rcpt)] = env_id
        if state == "accepted":
            accepted_in.add(env_id)
    assert a.query("SELECT COUNT(*) FROM out_messages") == [(len(planned),)], "lost/duplicated"
    for p in planned:
        report.messages += 1
        for rcpt, plan in p.plans.items():
            report.recipients += 1
            key = (p.subject, rcpt)
            state, held = origin[key]
            assert state in FINAL[plan], (key, plan, state)
            assert not held, (key, "origin still holds a decided message")
            entries = dest.get(key, [])
            if state == "refused":
                assert entries == [], (key, entries)
                continue
            assert len(entries) == 1, (key, "exactly one mailbox entry", entries)
            dstate, has_body = entries[0]
            if state == "delivered":
                assert (dstate, has_body) == ("accepted", True), (key, entries)
                chunks = b.query(
                    "SELECT c.data FROM in_body_chunks c JOIN mailbox m "
                    "ON m.envelope_id = c.envelope_id JOIN in_envelopes e ON e.id = c.envelope_id "
                    "WHERE e.subject=? AND m.recipient=? ORDER BY c.seq", key)
                body = b"".join(bytes(data) for (data,) in chunks)
                assert f"token {p.subject}".encode() in body
            else:
                assert dstate == state, (key, plan, dstate, state)
                # A rejected message crossed the network only if it was accepted
                # first, or another recipient of the same envelope accepted it
                # (one copy per destination, assumption 5).
                if plan == "ACCEPT-THEN-REJECT":
                    assert has_body, (key, entries)
                elif has_body:
                    assert envelope_of[key] in accepted_in or any(
                        envelope_of.get((p.subject, r)) == envelope_of[key]
                        for r, other in p.plans.items() if other == "ACCEPT-THEN-REJECT"
                    ), (key, entries)
    # Quality counters are exact: one message per mailbox entry, one vote per decision.
    entries = b.query("SELECT state FROM mailbox")
    votes = sum(1 if s == "accepted" else -1 for (s,) in entries)
    # The peer's row, and its senders' rows (issue 16 item 1) add up to the same.
    assert b.query("SELECT messages, votes FROM peer_quality WHERE server NOT LIKE 'sender:%'"
                   ) == [(len(entries), votes)]
    assert b.query("SELECT SUM(messages), SUM(votes) FROM peer_quality "
                   "WHERE server LIKE 'sender:%'") == [(len(entries), votes)]
    assert b.query("SELECT COUNT(*) FROM votes") == [(len(entries),)]
    # Lists are exact.
    assert sorted(b.query("SELECT kind, address FROM inbound_lists")) == sorted(
        [("white", "alice1@a.example"), ("black", "alice2@a.example")]
        + [("white", "alice1@a.example")] * _used(planned, "authorize")
        + [("black", "alice3@a.example")] * _used(planned, "spammer"))
    out = sorted(a.query("SELECT kind, address FROM outbound_lists"))
    expect_out = [("white", "bob1@b.example")]
    expect_out += [("black", "bob2@b.example")] * _used(planned, "preblack")
    expect_out += [("white", "bob3@b.example")] * _used(planned, "authorize")
    expect_out += [("black", "bob4@b.example")] * _used(planned, "spammer")
    assert out == sorted(expect_out)
    assert a.query("SELECT COUNT(*) FROM queue") == [(0,)]
    assert b.query("SELECT COUNT(*) FROM queue") == [(0,)]
    # The counts a POP3 login reads (migration 0017) are exact after the kills:
    # written in the transaction of each change, never apart from it.
    truth = b.query(
        "SELECT user_id, SUM(CASE WHEN state='pending' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN state='accepted' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN state='accepted' THEN octets ELSE 0 END) "
        "FROM mailbox WHERE deleted=0 GROUP BY user_id ORDER BY user_id")
    counted = b.query("SELECT user_id, pending, messages, octets FROM mailbox_counts "
                      "WHERE pending <> 0 OR messages <> 0 ORDER BY user_id")
    assert [tuple(int(v) for v in r) for r in counted] == [
        tuple(int(v) for v in r) for r in truth if r[1] or r[2]], (counted, truth)


def _used(planned: list[Planned], plan: str) -> int:
    return int(any(plan in p.plans.values() for p in planned))



def run(root: Path, messages: int, seed: int, interval: tuple[float, float],
        timeout: float, *, pace: float = 0.05, min_kills: int = 0) -> Report:
    """The workload, bounded by ``timeout`` seconds as a whole: every wait in it
    gets at most what is left, so a slow run fails saying what it waited for
    (a caller with its own time limit, like pytest-timeout, gives more than
    ``timeout`` plus the servers' start and stop)."""
    rng = random.Random(seed)
    report = Report()
    started = time.monotonic()
    deadline = started + timeout

    def left(cap: float) -> float:
        return max(0.0, min(cap, deadline - time.monotonic()))

    a, b = setup(root)
    a.start()
    b.start()
    killer = Killer([a, b], rng, report, interval)
    try:
        preset_lists(a, b)
        planned = plan_messages(messages, rng)
        killer.start()
        submit_all(a, planned, pace, deadline)
        decide_all(a, b, planned, deadline)
        wait_until(lambda: sum(report.kills.values()) >= min_kills, timeout=left(60),
                   what=f"{min_kills} kills")
        killer.stop()
        wait_until(lambda: not a.query("SELECT 1 FROM queue") and
                   not b.query("SELECT 1 FROM queue"), timeout=left(60), what="queues drain")
        decide_all(a, b, planned, time.monotonic() + left(30))
        wait_until(lambda: not a.query("SELECT 1 FROM queue") and
                   not b.query("SELECT 1 FROM queue"), timeout=left(60),
                   what="queues drain after the last decisions")
        check(a, b, planned, report)
    finally:
        if killer.is_alive():
            killer.stop()
        a.stop()
        b.stop()
    report.seconds = time.monotonic() - started
    return report


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description="SMDP crash soak: SIGKILL servers under load")
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-interval", type=float, default=0.3)
    parser.add_argument("--max-interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(Path(tmp), args.messages, args.seed,
                     (args.min_interval, args.max_interval), args.timeout)
    print(f"crash soak passed: {report}")


if __name__ == "__main__":
    main()
