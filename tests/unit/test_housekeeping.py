"""One pass of housekeeping (``server/housekeeping.py`` ``run_once``) on a real
SQLite store, at chosen times: an expiry bug shows here as a failed
assertion, not as an integration test that times out waiting for it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from smdp.config import Config, load_config
from smdp.core.destination import Destination
from smdp.core.origin import Origin
from smdp.core.outcomes import Kind
from smdp.server.housekeeping import run_once
from smdp.server.services import Core
from smdp.store import Store, open_store
from smdp.terms import Decision

DAY = 86400.0
PEER = "smdp.c.example"
CAROL, DAVE = "carol@c.example", "dave@c.example"


@dataclass
class Housekeeping:
    """What a pass works on: the configuration, a real store, and the core
    services built on it as ``SmdpServer`` builds them. The one place that
    knows how ``run_once`` is called."""

    config: Config
    store: Store
    origin: Origin
    destination: Destination

    def run(self, now: float) -> dict[str, int]:
        return run_once(Core.build(self.config, self.store), now)


@pytest.fixture
def housekeeping(tmp_path: Path) -> Housekeeping:
    path = tmp_path / "a.toml"
    path.write_text('[server]\nhostname = "smdp.a.example"\ndomains = ["a.example"]\n'
                    '[store]\npath = "a.sqlite3"\n[delivery]\nexpire_days = 1\n')
    config = load_config(path)
    store = open_store(config)
    origin = Origin(store, hostname=config.hostname, expire_days=config.delivery.expire_days)
    destination = Destination(store, quality=config.quality, hostname=config.hostname)
    return Housekeeping(config, store, origin, destination)


def envelope_from_peer(h: Housekeeping, envid: str, recipient: str, expires: float) -> int:
    """An envelope from smdp.c.example, as the peer port stores it; its entry id."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    h.destination.receive_envelope(
        server=PEER, envid=envid, sender="eve@c.example", recipients=[recipient], size=100,
        block=f"Subject: offer\r\nAttachments: 0\r\nExpires: {stamp}\r\n".encode())
    env = h.store.in_envelope_by_envid(envid)
    assert env is not None
    entry = h.store.mailbox_entry_for(env.id, recipient)
    assert entry is not None
    return entry.id


def test_one_pass_expires_what_nobody_decided_then_purges_it(
    housekeeping: Housekeeping,
) -> None:
    h, store = housekeeping, housekeeping.store
    alice = store.create_user("alice@a.example", "x")
    bob = store.create_user("bob@a.example", "x")
    # The origin side: alice's message to carol (who rejects it) and dave
    # (who never decides).
    msgid = h.origin.submit(alice, "alice@a.example", [CAROL, DAVE],
                            b"Subject: hi\r\n\r\nhello\r\n").msgid
    msg = store.out_message_by_msgid(msgid)
    assert msg is not None and msg.held
    expires = msg.expires_at
    [envid] = {r.envid for r in store.out_recipients(msg.id)}
    assert envid is not None
    assert h.origin.on_decision(envid, CAROL, Decision.REJECT, False).kind is Kind.DONE
    # The destination side: two envelopes for bob from a peer; bob never
    # decides on the first, and accepts the second (its pull never comes).
    pending = envelope_from_peer(h, "a" * 26, "bob@a.example", expires)
    fetching = envelope_from_peer(h, "b" * 26, "bob@a.example", expires)
    h.destination.decide(bob, fetching, Decision.ACCEPT)

    def states() -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]]:
        out = {r.recipient: (r.state, r.detail) for r in store.out_recipients(msg.id)}
        entries = []
        for entry_id in (pending, fetching):
            entry = store.mailbox_entry(entry_id)
            assert entry is not None
            entries.append((entry.state, entry.reason))
        return out, entries

    before = states()
    assert before == (
        {CAROL: ("rejected", "rejected by recipient"), DAVE: ("queued", "")},
        [("pending", ""), ("fetching", "your decision")],
    )
    nothing = {"expired_at_origin": 0, "expired_at_destination": 0, "purged": 0}
    assert h.run(expires - 1) == nothing
    assert states() == before

    # Expired: dave at the origin (the body goes), both entries at the
    # destination; only the undecided one counts against the peer (-1).
    assert h.run(expires + 1) == {"expired_at_origin": 1, "expired_at_destination": 1,
                                  "purged": 0}
    expired = "the origin no longer holds it: it expired"
    assert states() == (
        {CAROL: ("rejected", "rejected by recipient"),
         DAVE: ("expired", "expired: no decision before the message expired")},
        [("expired", expired), ("expired", expired)],
    )
    again = store.out_message(msg.id)
    assert again is not None and not again.held
    assert store.out_body_chunk(msg.id, 0) is None
    quality = store.quality(PEER)
    assert (quality.messages, quality.votes) == (2, 0)  # -1 (expired) + 1 (accepted)
    assert h.run(expires + 2) == nothing  # a pass changes nothing twice

    # A second hold period later, the records go; the peer's counters stay.
    assert h.run(expires + DAY + 2) == {"expired_at_origin": 0, "expired_at_destination": 0,
                                        "purged": 3}
    assert store.out_message_by_msgid(msgid) is None
    assert store.in_envelope_by_envid("a" * 26) is None
    assert store.in_envelope_by_envid("b" * 26) is None
    quality = store.quality(PEER)
    assert (quality.messages, quality.votes) == (2, 0)


def test_mail_decided_in_time_is_kept_until_its_own_hold_ends(
    housekeeping: Housekeeping,
) -> None:
    """A delivered recipient and an accepted entry with its body are not
    expired; the origin's record goes only a hold period after expiry."""
    h, store = housekeeping, housekeeping.store
    alice = store.create_user("alice@a.example", "x")
    bob = store.create_user("bob@a.example", "x")
    msgid = h.origin.submit(alice, "alice@a.example", [CAROL],
                            b"Subject: hi\r\n\r\nhello\r\n").msgid
    msg = store.out_message_by_msgid(msgid)
    assert msg is not None
    [envid] = {r.envid for r in store.out_recipients(msg.id)}
    assert envid is not None
    h.origin.on_decision(envid, CAROL, Decision.ACCEPT, True)  # BODY=HELD: delivered
    entry = envelope_from_peer(h, "c" * 26, "bob@a.example", msg.expires_at)
    h.destination.decide(bob, entry, Decision.ACCEPT)
    env = store.in_envelope_by_envid("c" * 26)
    assert env is not None
    h.destination.body_pulled(env.id, b"Subject: offer\r\n\r\nbody\r\n")

    assert h.run(msg.expires_at + 1) == {"expired_at_origin": 0, "expired_at_destination": 0,
                                         "purged": 0}
    [rcpt] = store.out_recipients(msg.id)
    assert (rcpt.state, rcpt.detail) == ("delivered", "accepted by recipient")
    kept = store.mailbox_entry(entry)
    assert kept is not None and kept.state == "accepted"
    stored = store.in_body(env.id)  # after the Received field of the pull
    assert stored is not None and stored.endswith(b"\r\nSubject: offer\r\n\r\nbody\r\n")
    # Read and kept: the destination keeps the message however old it is.
    assert h.run(msg.expires_at + 10 * DAY)["purged"] == 1  # the origin's record only
    assert store.out_message_by_msgid(msgid) is None
    stored = store.in_body(env.id)  # after the Received field of the pull
    assert stored is not None and stored.endswith(b"\r\nSubject: offer\r\n\r\nbody\r\n")
