"""Quality(X) over simulated days against real servers (issue 16 item 1):
the scenarios ``test_quality_scenarios.py`` checks and ``bench/quality.py``
plots.

b.example runs in process with a stand-in clock for its quality (the store's
``clock``: aging, deciders, probation days), so weeks pass in seconds. Mail
from a.example's server reaches b.example's real peer port: envelopes that a
test writes on a raw peer session as smdp.a.example (as many as it likes,
fast), or mail a.example's users submit to a.example's real origin. b's
users decide on its real user port. What b's store holds is read from a
second connection to its file.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smdp.config import Config
from smdp.core.quality import Verdict, judge, sender_key
from smdp.protocol import user as wire
from smdp.store.records import Quality
from smdp.store.sqlite import SqliteStore
from smdp.terms import Decision

from .harness import PeerSocket
from .inprocess import InProcessServer, inprocess_pair

A_HOST = "smdp.a.example"
DAY = 86400.0
RECIPIENTS = tuple(f"u{n}@b.example" for n in range(5))
SENDERS = ("alice@a.example", "amy@a.example", "mallory@a.example")

# Small numbers, so that each scenario takes seconds: a verdict after 6
# messages and 3 distinct rejecting users, a half-life of three (simulated)
# days, 3 envelopes a day on probation.
QUALITY = """
[quality]
min_messages = 6
min_deciders = 3
alert_below = 0.0
block_below = -0.5
margin = 0.1
half_life = "3d"
probation_per_day = 3
"""


class Clock:
    """b.example's quality clock: starts at a midnight (UTC), moved by hand."""

    def __init__(self) -> None:
        self.now = 20_000 * DAY

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Point:
    """One reading of a quality key: for the checks and the plots."""

    day: float
    key: str
    value: float
    messages: int
    deciders: int
    standing: str
    reason: str


class World:
    """The pair, b's clock, a raw peer session into b, b's users' sessions."""

    def __init__(self, a: InProcessServer, b: InProcessServer, clock: Clock) -> None:
        self.a, self.b, self.clock = a, b, clock
        self.start = clock.now
        self.reader = SqliteStore(b.config.store_path)
        self.reader.clock, self.reader.half_life = clock, b.config.quality.half_life
        self.peer = PeerSocket(b.peer_port)
        assert self.peer.cmd(f"EHLO {A_HOST}").startswith("250")
        self._ids = itertools.count()
        self.points: list[Point] = []

    @property
    def config(self) -> Config:
        return self.b.config

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.peer.cmd("QUIT")
        self.reader.close()

    def advance(self, days: float) -> None:
        self.clock.now += days * DAY

    def envelope(self, sender: str, recipient: str) -> str:
        """One envelope from ``sender`` at smdp.a.example to ``recipient``;
        the reply to ENVELOPE (250 taken, 554 refused)."""
        envid = base64.b32encode(next(self._ids).to_bytes(16, "big")).decode().lower()[:26]
        reply = self.peer.cmd(f"ENVELOPE From:<{sender}> ID={envid}")
        if not reply.startswith("250"):
            return reply
        assert self.peer.cmd(f"RCPT To:<{recipient}>").startswith("250")
        assert self.peer.cmd("SIZE=100").startswith("250")
        assert self.peer.cmd("DATA").startswith("354")
        assert self.peer.cmd(f"Subject: {envid}\r\n.") == f"250 2.0.0 {envid} stored"
        return reply

    def decide(self, recipient: str, decision: Decision) -> int:
        """``recipient`` decides every envelope pending for them; how many."""
        client = self.b.client(recipient)
        try:
            pending = [int(line.split()[0]) for line in
                       client.call(wire.Envs(False)).lines or []]
            for entry in pending:
                assert client.call(wire.UserDecision(decision, entry)).ok
        finally:
            client.quit()
        return len(pending)

    def quality(self, key: str) -> tuple[Quality, Verdict]:
        quality = self.reader.quality(key)
        return quality, judge(quality, self.config.quality)

    def read(self, key: str) -> Point:
        """Read ``key`` now, and keep the reading for the plot."""
        quality, verdict = self.quality(key)
        point = Point(round((self.clock.now - self.start) / DAY, 3), key,
                      quality.value, quality.messages, quality.deciders,
                      str(verdict.status), verdict.reason)
        self.points.append(point)
        return point

    def series(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(p) for p in self.points]


@contextlib.contextmanager
def world(root: Path, quality: str = QUALITY) -> Iterator[World]:
    users = {"a.example": SENDERS, "b.example": RECIPIENTS}
    clock = Clock()
    root.mkdir(parents=True, exist_ok=True)
    with inprocess_pair(root, extra_b=quality, users=users) as (a, b):
        server = b._server
        assert server is not None
        # Plain attribute stores: the server's thread reads them at its next
        # use of the clock (the first envelope comes after this).
        server.store.clock = clock
        w = World(a, b, clock)
        try:
            yield w
        finally:
            w.close()


# -- the scenarios ------------------------------------------------------------------


def flood(w: World, rounds: int = 6) -> dict[str, Any]:
    """smdp.a.example's three senders send every user spam, several times
    an hour; every user rejects it. Returns the replies by round."""
    replies: list[list[str]] = []
    for _ in range(rounds):
        got = [w.envelope(sender, rcpt) for sender in SENDERS for rcpt in RECIPIENTS[:3]]
        replies.append([r[:3] for r in got])
        for rcpt in RECIPIENTS[:3]:
            w.decide(rcpt, Decision.REJECT_SPAM)
        w.read(A_HOST)
        w.advance(1 / 24)
    return {"replies": replies}


def slow_poisoning(w: World, days: int = 10, hostile: int = 6) -> None:
    """A good peer: four users accept its mail, a day at a time; one
    (hostile, or careless) user gets ``hostile`` a day and rejects them all."""
    for _ in range(days):
        for rcpt in RECIPIENTS[1:]:
            assert w.envelope("alice@a.example", rcpt).startswith("250")
        for _ in range(hostile):
            assert w.envelope("amy@a.example", RECIPIENTS[0]).startswith("250")
        for rcpt in RECIPIENTS[1:]:
            w.decide(rcpt, Decision.ACCEPT)
        w.decide(RECIPIENTS[0], Decision.REJECT_SPAMMER)
        w.read(A_HOST)
        w.advance(1)


def recovery(w: World, days: int = 8) -> list[int]:
    """A peer blocked for spam cleans up: from then on it sends good mail,
    five envelopes a day, which every recipient accepts. Returns how many
    envelopes were taken each day (probation while blocked)."""
    flood(w, rounds=2)
    taken = []
    for _ in range(days):
        w.advance(1)
        got = [w.envelope("alice@a.example", rcpt) for rcpt in RECIPIENTS]
        taken.append(sum(r.startswith("250") for r in got))
        for rcpt in RECIPIENTS:
            w.decide(rcpt, Decision.ACCEPT)
        w.read(A_HOST)
    return taken


def compromised_account(w: World, days: int = 4) -> list[str]:
    """A good server: alice and amy write wanted mail every day; mallory's
    account is taken over and sends spam to everyone from day 2. Returns
    the replies mallory's envelopes get on the next day (probation, then
    refused)."""
    mallory = sender_key(A_HOST, "mallory@a.example")
    for day in range(days):
        for sender in SENDERS[:2]:
            for rcpt in RECIPIENTS:
                assert w.envelope(sender, rcpt).startswith("250")
        for rcpt in RECIPIENTS:
            w.decide(rcpt, Decision.ACCEPT)
        if day >= 1:
            for rcpt in RECIPIENTS:
                w.envelope("mallory@a.example", rcpt)
            for rcpt in RECIPIENTS:
                w.decide(rcpt, Decision.REJECT_SPAM)
        w.read(A_HOST)
        w.read(mallory)
        w.advance(1)
    per_day = w.config.quality.probation_per_day
    return [w.envelope("mallory@a.example", RECIPIENTS[n % len(RECIPIENTS)])
            for n in range(per_day + 1)]
