"""One pass of housekeeping (``server/housekeeping.py`` ``run_once``) on a real
SQLite store, at chosen times: an expiry bug shows here as a failed
assertion, not as an integration test that times out waiting for it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from smdp.config import Config, load_config
from smdp.core.destination import Destination
from smdp.core.origin import Origin
from smdp.core.outcomes import Kind
from smdp.server.housekeeping import run_once
from smdp.server.services import Core
from smdp.store import Store, open_store
from smdp.terms import Decision, EntryState

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


# -- notices (issue 10, item 7) ------------------------------------------------------


def notices_of(store: Store, user_id: int) -> list[EmailMessage]:
    """The messages this server wrote into a user's mailbox, parsed."""
    out = []
    for entry in store.mailbox_entries(user_id, [EntryState.ACCEPTED]):
        env = store.in_envelope(entry.envelope_id)
        assert env is not None and env.sender == ""  # the null sender: a notice
        raw = store.in_body(env.id)
        assert raw is not None
        msg = message_from_bytes(raw, policy=default)
        assert isinstance(msg, EmailMessage)
        out.append(msg)
    return out


def test_the_sender_gets_one_report_of_the_recipients_that_expired(
    housekeeping: Housekeeping,
) -> None:
    """Expiry at the origin writes the delivery status notification in its
    own transaction: the recipients still undecided, each once."""
    h, store = housekeeping, housekeeping.store
    alice = store.create_user("alice@a.example", "x")
    msgid = h.origin.submit(alice, "alice@a.example", [CAROL, DAVE],
                            b"From: alice@a.example\r\nSubject: hi\r\n\r\nhello\r\n").msgid
    msg = store.out_message_by_msgid(msgid)
    assert msg is not None
    [envid] = {r.envid for r in store.out_recipients(msg.id)}
    assert envid is not None
    h.origin.envelope_sent(envid, {})
    h.origin.on_decision(envid, CAROL, Decision.REJECT, False)
    assert h.run(msg.expires_at - 1)["expired_at_origin"] == 0
    assert notices_of(store, alice.id) == []
    assert h.run(msg.expires_at + 1)["expired_at_origin"] == 1
    [report] = notices_of(store, alice.id)
    assert report["Subject"] == "Undelivered mail: hi"
    _text, status, header = report.get_payload()
    blocks = status.get_payload()
    assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks[1:]] == [
        (f"rfc822; {DAVE}", "failed", "5.4.7")]
    assert "Subject: hi" in header.get_content()  # the body was still there to quote
    assert h.run(msg.expires_at + 2)["expired_at_origin"] == 0
    assert len(notices_of(store, alice.id)) == 1


@pytest.fixture
def noticing(tmp_path: Path) -> Housekeeping:
    """A server that sends pending notices at most hourly."""
    path = tmp_path / "a.toml"
    path.write_text('[server]\nhostname = "smdp.a.example"\ndomains = ["a.example"]\n'
                    '[store]\npath = "a.sqlite3"\n[notices]\npending_interval = 3600\n')
    config = load_config(path)
    store = open_store(config)
    origin = Origin(store, hostname=config.hostname, expire_days=config.delivery.expire_days)
    destination = Destination(store, quality=config.quality, hostname=config.hostname)
    return Housekeeping(config, store, origin, destination)


def test_pending_envelopes_are_noticed_at_most_once_per_interval(
    noticing: Housekeeping,
) -> None:
    h, store = noticing, noticing.store
    bob = store.create_user("bob@a.example", "x")
    carol = store.create_user("carol@a.example", "x")
    far = time.time() + 30 * DAY
    first = envelope_from_peer(h, "a" * 26, "bob@a.example", far)
    t = time.time()
    assert h.run(t)["pending_notices"] == 1
    [notice] = notices_of(store, bob.id)
    assert notice["To"] == "bob@a.example"
    assert notice["Subject"] == "1 envelope waits for your decision"
    text = notice.get_content().replace("\r\n", "\n")
    assert f"  Envelope {first}  (new)\n    From:    eve@c.example\n    Subject: offer\n" in text
    assert notices_of(store, carol.id) == []  # nothing pending for carol
    # Nothing new: no second notice, even once the interval is over.
    assert h.run(t + 10)["pending_notices"] == 0
    assert h.run(t + 2 * 3600)["pending_notices"] == 0
    assert len(notices_of(store, bob.id)) == 1


def test_a_new_envelope_within_the_interval_is_noticed_when_it_ends(
    noticing: Housekeeping,
) -> None:
    h, store = noticing, noticing.store
    bob = store.create_user("bob@a.example", "x")
    far = time.time() + 30 * DAY
    first = envelope_from_peer(h, "a" * 26, "bob@a.example", far)
    t = time.time()
    assert h.run(t)["pending_notices"] == 1
    second = envelope_from_peer(h, "b" * 26, "bob@a.example", far)
    assert h.run(t + 3599)["pending_notices"] == 0  # within the interval
    assert len(notices_of(store, bob.id)) == 1
    assert h.run(t + 3600)["pending_notices"] == 1  # the interval is over
    _first_notice, notice = notices_of(store, bob.id)
    assert notice["Subject"] == "2 envelopes wait for your decision"
    text = notice.get_content().replace("\r\n", "\n")
    assert "(1 new since the last notice)" in text
    assert f"  Envelope {first}\n" in text and f"  Envelope {second}  (new)\n" in text
    # The notices themselves are never pending, so never the subject of one.
    assert h.run(t + 3 * 3600)["pending_notices"] == 0
    # Decided envelopes leave the list; a decision on a notice tells nobody.
    h.destination.decide(bob, first, Decision.REJECT)
    h.destination.decide(bob, second, Decision.REJECT)
    jobs = len(store.jobs())
    for entry in store.mailbox_entries(bob.id, [EntryState.ACCEPTED]):
        h.destination.decide(bob, entry.id, Decision.REJECT_SPAMMER)
    assert len(store.jobs()) == jobs
    assert h.run(t + 5 * 3600)["pending_notices"] == 0


def test_no_pending_notices_unless_configured(housekeeping: Housekeeping) -> None:
    h, store = housekeeping, housekeeping.store
    bob = store.create_user("bob@a.example", "x")
    envelope_from_peer(h, "a" * 26, "bob@a.example", time.time() + DAY)
    assert "pending_notices" not in h.run(time.time())
    assert notices_of(store, bob.id) == []
