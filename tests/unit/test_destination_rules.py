"""The destination's rules (core/destination.py) beyond Tables 1-3's happy
paths: Expires, who counts towards a peer's quality (not ourselves), the
quality alert, direct sends, the pull's outcomes, expiry and refusals.
On real SQLite stores, no wire."""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from smdp.config import QualityPolicy
from smdp.core.destination import (
    DEFAULT_HOLD_SECONDS,
    NOTICE_REASON,
    USER_REASON,
    DecisionResult,
    Destination,
    SmtpArrival,
    _described,
    decided_by,
    expiry_time,
)
from smdp.core.outcomes import Kind, Outcome
from smdp.core.quality import Standing, sender_key
from smdp.mail.body import Body
from smdp.store.records import MailboxEntry
from smdp.terms import Decision, EntryState
from tests.unit.test_core_rules import A_HOST, MSG, World, counters, paper

BOB = "bob@b.example"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def local_world(tmp: Path) -> World:
    """b.example's destination, with a.example's mail coming in as local
    mail: the destination's own hostname is the envelope's origin server."""
    world = World(tmp)
    world.dest = Destination(world.b, quality=QualityPolicy(), hostname=A_HOST)
    return world



def stored_message(stored: bytes | None) -> bytes:
    """A stored copy without the one Received field this server put first
    (protocol.md 8.4), which must name the origin server and this hop's id."""
    assert stored is not None
    field, _, message = stored.partition(b"\r\n")
    assert re.fullmatch(rb"Received: from smdp\.a\.example by \S+ with SMDP id [a-z0-9]+; .+",
                        field), field
    return message

def test_expires_is_read_as_utc() -> None:
    when = datetime(2026, 5, 5, 10, 0, 0, tzinfo=UTC).timestamp()
    assert expiry_time("2026-05-05T10:00:00Z") == when
    assert expiry_time("  2026-05-05T10:00:00Z \r\n") == when


def test_no_valid_expires_means_the_usual_hold_time() -> None:
    before = time.time()
    got = expiry_time("next week")
    assert before + DEFAULT_HOLD_SECONDS <= got <= time.time() + DEFAULT_HOLD_SECONDS
    assert DEFAULT_HOLD_SECONDS == 30 * 86400


def test_our_own_server_is_never_blocked_nor_counted(tmp_path: Path) -> None:
    world = World(tmp_path, paper(min_messages=1, block_below=0.5, alert_below=0.9))
    world.dest = Destination(world.b, quality=paper(min_messages=1, block_below=0.5),
                             hostname=A_HOST)
    world.b.count_messages(A_HOST, 5)
    assert world.dest.peer_refusal(A_HOST) is None
    assert world.dest.peer_refusal("peer.example") is None  # new: nothing counted
    world.b.count_messages("peer.example", 1)
    refusal = world.dest.peer_refusal("peer.example")
    assert refusal is not None and refusal.kind is Kind.PEER_BLOCKED
    assert refusal.reason == ("peer.example blocked: quality 0.00 is below the block "
                              "threshold 0.50")


def test_standing_follows_the_quality_policy(tmp_path: Path) -> None:
    world = World(tmp_path, paper(min_messages=2, alert_below=0.5, block_below=-0.5))
    assert world.dest.peer_verdict("peer.example").status is Standing.NEW
    world.b.count_messages("peer.example", 2)
    assert world.dest.peer_verdict("peer.example").status is Standing.ALERT


def test_direct_sends_only_from_an_authorized_pair(world: World) -> None:
    assert not world.dest.may_send_directly(A_HOST, "alice@a.example", BOB)
    world.b.put_inbound(world.bob.id, "white", "alice@a.example", A_HOST, "manual")
    assert world.dest.may_send_directly(A_HOST, "alice@a.example", BOB)
    assert not world.dest.may_send_directly("rogue.example", "alice@a.example", BOB)
    assert not world.dest.may_send_directly(A_HOST, "alice@a.example", "nobody@b.example")
    world.b.put_inbound(world.carol.id, "black", "alice@a.example", A_HOST, "manual")
    assert not world.dest.may_send_directly(A_HOST, "alice@a.example", "carol@b.example")


def test_an_envelope_counts_each_recipient_towards_the_peer(world: World) -> None:
    world.send([BOB, "carol@b.example", "nobody@b.example"])
    world.deliver_envelopes()
    assert counters(world.b.quality(A_HOST)) == (3, 0)
    # Unknown recipients get no entry (they were refused at RCPT).
    assert [e.recipient for e in world.b.mailbox_entries(world.bob.id)] == [BOB]


def test_local_mail_counts_and_votes_nothing(tmp_path: Path) -> None:
    world = local_world(tmp_path)
    world.send([BOB])
    world.deliver_envelopes()
    world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT)
    world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                               recipients=[BOB], body=MSG)
    assert counters(world.b.quality(A_HOST)) == (0, 0)
    world.dest.expire(time.time() + 400 * 86400)
    assert counters(world.b.quality(A_HOST)) == (0, 0)


def test_a_direct_message_is_accepted_and_readable(world: World) -> None:
    told: list[tuple[Decision, bool]] = []
    world.dest.decided = lambda decision, by_user: told.append((decision, by_user))
    world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                               recipients=[BOB, "nobody@b.example"], body=MSG)
    [entry] = world.b.mailbox_entries(world.bob.id)
    assert (entry.state, entry.decision, entry.reason) == (
        EntryState.ACCEPTED, Decision.ACCEPT,
        "sender is on your white list (sent directly)")  # bob listed nobody: no evidence
    assert stored_message(world.b.in_body(entry.envelope_id)) == MSG
    assert counters(world.b.quality(A_HOST)) == (2, 1)
    assert world.b.jobs() == []  # nothing to report: the sender sent it whole
    assert told == [(Decision.ACCEPT, False)]  # the white list's, not the user's


def test_the_expires_of_an_envelope_is_kept(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    # Before its Expires nothing expires; after it, the undecided entry does.
    assert world.dest.expire(time.time() + 86400) == 0
    assert world.dest.expire(time.time() + 31 * 86400) == 1
    entry = world.b.mailbox_entry(world.entry(world.bob))
    assert entry is not None
    assert (entry.state, entry.reason) == (EntryState.EXPIRED,
                                           "the origin no longer holds it: it expired")
    # An unpulled envelope counts against the origin like a rejection.
    assert counters(world.b.quality(A_HOST)) == (1, -1)


def test_accept_after_accept_changes_nothing(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    entry = world.entry(world.bob)
    world.dest.decide(world.bob, entry, Decision.ACCEPT_AUTH)
    again = world.dest.decide(world.bob, entry, Decision.ACCEPT)
    assert (again.outcome.kind, again.outcome.reason) == (Kind.UNCHANGED, "already accepted")
    assert again.entry is not None and again.entry.state is EntryState.FETCHING
    world.report_decisions()
    once_more = world.dest.decide(world.bob, entry, Decision.ACCEPT)
    assert once_more.outcome.reason == "already accepted"  # accepted now, not fetching
    # ACCEPT&AUTH after ACCEPT does add something: the white list.
    world.send(["carol@b.example"])
    world.deliver_envelopes()
    second = world.entry(world.carol)
    world.dest.decide(world.carol, second, Decision.ACCEPT)
    result = world.dest.decide(world.carol, second, Decision.ACCEPT_AUTH)
    assert result.outcome.kind is Kind.DONE
    assert result.entry is not None and result.entry.decision is Decision.ACCEPT_AUTH


def test_a_decision_records_the_users_reason(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    result = world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT)
    assert (result.outcome.kind, result.outcome.reason) == (Kind.DONE, "recorded")
    assert result.entry is not None
    assert (result.entry.state, result.entry.decision, result.entry.reason) == (
        EntryState.REJECTED, Decision.REJECT, "your decision")


def test_reject_after_accept_keeps_the_copy_rejected(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    entry = world.entry(world.bob)
    world.dest.decide(world.bob, entry, Decision.ACCEPT)
    world.report_decisions()
    result = world.dest.decide(world.bob, entry, Decision.REJECT_SPAM)
    assert result.entry is not None and result.entry.state is EntryState.SPAM


def test_an_accept_of_a_held_copy_stays_accepted(world: World) -> None:
    world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                               recipients=[BOB], body=MSG)
    entry = world.entry(world.bob)
    result = world.dest.decide(world.bob, entry, Decision.ACCEPT_AUTH)
    assert result.entry is not None and result.entry.state is EntryState.ACCEPTED


def test_a_reject_below_the_alert_threshold_tells_the_administrator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, paper(min_messages=1, alert_below=0.5, block_below=-0.9))
    world.send([BOB])
    world.send(["carol@b.example"])
    world.deliver_envelopes()
    with caplog.at_level(logging.WARNING, logger="smdp.quality"):
        world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
        assert caplog.records == []  # an accept never alerts
        world.dest.decide(world.carol, world.entry(world.carol), Decision.REJECT)
    assert [r.getMessage() for r in caplog.records] == [
        f"peer server {A_HOST}: alert (quality 0.00 is below the alert threshold 0.50)",
        # Issue 16 item 1: alice's own quality at her server fell with it.
        f"sender <alice@a.example> at {A_HOST}: alert (quality 0.00 is below the alert "
        "threshold 0.50)"]


def test_a_reject_of_a_good_peer_alerts_nobody(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, paper(min_messages=1, alert_below=-0.5, block_below=-0.9))
    for rcpt in (BOB, BOB, BOB, "carol@b.example"):
        world.send([rcpt])
    world.deliver_envelopes()
    for entry in world.b.mailbox_entries(world.bob.id):
        world.dest.decide(world.bob, entry.id, Decision.ACCEPT)
    with caplog.at_level(logging.WARNING, logger="smdp.quality"):
        world.dest.decide(world.carol, world.entry(world.carol), Decision.REJECT)
    assert caplog.records == []


def test_a_blocked_peers_reject_alerts_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, paper(min_messages=1, alert_below=0.5, block_below=0.0))
    world.send([BOB])
    world.deliver_envelopes()
    with caplog.at_level(logging.WARNING, logger="smdp.quality"):
        world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT)
    record, _sender = caplog.records
    assert record.getMessage().startswith(f"peer server {A_HOST}: blocked (quality -1.00")


def test_a_pulled_body_completes_every_fetching_entry(world: World) -> None:
    world.send([BOB, "carol@b.example"])
    world.deliver_envelopes()
    world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
    env = world.b.in_envelope(1)
    assert env is not None
    world.dest.body_pulled(env.id, MSG)
    states = {e.recipient: e.state for e in world.b.entries_of_envelope(env.id)}
    assert states == {BOB: EntryState.ACCEPTED, "carol@b.example": EntryState.PENDING}
    assert stored_message(world.b.in_body(env.id)) == MSG
    world.dest.body_pulled(999, MSG)  # unknown envelope: nothing happens


def test_an_accept_answered_without_a_body_fails_the_entry(world: World) -> None:
    world.send([BOB, "carol@b.example"])
    world.deliver_envelopes()
    world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
    env = world.b.in_envelope(1)
    assert env is not None
    world.dest.body_pulled(env.id, None)
    states = {e.recipient: (e.state, e.reason) for e in world.b.entries_of_envelope(env.id)}
    assert states[BOB] == (EntryState.FAILED,
                           "the origin confirmed the decision but sent no message")
    assert states["carol@b.example"][0] is EntryState.PENDING


def test_a_held_body_answered_without_one_is_fine(world: World) -> None:
    world.send([BOB, "carol@b.example"])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
    world.dest.body_pulled(env.id, MSG)
    world.dest.decide(world.carol, world.entry(world.carol), Decision.ACCEPT)
    world.dest.body_pulled(env.id, None)  # BODY=HELD: the copy is here
    states = {e.recipient: e.state for e in world.b.entries_of_envelope(env.id)}
    assert states == {BOB: EntryState.ACCEPTED, "carol@b.example": EntryState.ACCEPTED}


def test_a_refused_pull_fails_only_a_fetching_entry(world: World) -> None:
    world.send([BOB, "carol@b.example"])
    world.deliver_envelopes()
    bob, carol = world.entry(world.bob), world.entry(world.carol)
    world.dest.decide(world.bob, bob, Decision.ACCEPT)
    world.dest.decision_refused(bob, "554 expired")
    world.dest.decision_refused(carol, "554 expired")  # pending: not this one's pull
    world.dest.decision_refused(999, "554 expired")
    b, c = world.b.mailbox_entry(bob), world.b.mailbox_entry(carol)
    assert b is not None and c is not None
    assert (b.state, b.decision, b.reason) == (
        EntryState.FAILED, Decision.ACCEPT, "the origin refused the pull: 554 expired")
    assert c.state is EntryState.PENDING


def test_purge_forgets_envelopes_expired_before(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    later = time.time() + 31 * 86400
    world.dest.expire(later)
    assert world.dest.purge(time.time() - 86400) == 0  # expired just now, not before
    assert world.dest.purge(later + 86400) >= 1
    assert world.b.in_envelope(1) is None


def test_a_peer_that_sorts_after_us_is_counted_too(tmp_path: Path) -> None:
    """"Not our own server" is inequality, not an order of names: a peer whose
    name sorts before ours (smdp.a.example < zz.b.example) counts and votes."""
    world = World(tmp_path, paper(min_messages=1, alert_below=0.5))
    world.dest = Destination(world.b, quality=paper(min_messages=1, alert_below=0.5),
                             hostname="zz.b.example")
    world.send([BOB])
    world.deliver_envelopes()
    assert counters(world.b.quality(A_HOST)) == (1, 0)
    world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT)
    assert counters(world.b.quality(A_HOST)) == (1, -1)
    world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                               recipients=[BOB], body=MSG)
    assert counters(world.b.quality(A_HOST)) == (2, 0)
    world.send(["carol@b.example"])
    world.deliver_envelopes()
    world.dest.expire(time.time() + 400 * 86400)
    assert counters(world.b.quality(A_HOST)) == (3, -1)


def test_no_one_decides_for_a_user_with_a_higher_id(world: World) -> None:
    world.send(["carol@b.example"])
    world.deliver_envelopes()
    carols = world.entry(world.carol)
    outcome = world.dest.decide(world.bob, carols, Decision.ACCEPT).outcome
    assert outcome.kind is Kind.UNKNOWN


def test_envelopes_for_unknown_users_do_not_stop_the_others(world: World) -> None:
    world.send(["nobody@b.example", BOB])
    world.deliver_envelopes()
    assert [e.recipient for e in world.b.mailbox_entries(world.bob.id)] == [BOB]
    world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                               recipients=["nobody@b.example", "carol@b.example"], body=MSG)
    assert [e.state for e in world.b.mailbox_entries(world.carol.id)] == [EntryState.ACCEPTED]


def test_expiry_and_its_vote_are_one_transaction(world: World, tmp_path: Path) -> None:
    """An entry that expires and the -1 its origin gets for it are written
    together: a store that refuses the vote leaves the entry pending too, so
    the next pass expires it and counts it, instead of an expired entry that
    never counted."""
    world.send([BOB])
    world.deliver_envelopes()
    beside = sqlite3.connect(tmp_path / "b.sqlite3")
    beside.execute("CREATE TRIGGER refuse_votes BEFORE INSERT ON votes "
                   "BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
    beside.commit()
    with pytest.raises(sqlite3.IntegrityError, match="injected fault"):
        world.dest.expire(time.time() + 31 * 86400)
    entry = world.b.mailbox_entry(world.entry(world.bob))
    assert entry is not None and entry.state is EntryState.PENDING
    beside.execute("DROP TRIGGER refuse_votes")
    beside.commit()
    beside.close()
    assert world.dest.expire(time.time() + 31 * 86400) == 1
    assert counters(world.b.quality(A_HOST)) == (1, -1)


def test_only_a_reject_alerts_even_when_the_peer_is_already_below_the_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The alert follows a rejection; an accept that leaves the peer still
    below the threshold says nothing. Our own name sorts after the peer's
    (smdp.b.example > smdp.a.example): the check is "not us", not an order."""
    world = World(tmp_path, paper(min_messages=1, alert_below=0.5, block_below=-0.9))
    world.dest = Destination(world.b, quality=world.dest.quality_policy, hostname="smdp.b.example")
    world.send(["carol@b.example"])
    world.send([BOB])
    world.deliver_envelopes()
    with caplog.at_level(logging.WARNING, logger="smdp.quality"):
        world.dest.decide(world.carol, world.entry(world.carol), Decision.REJECT)
        world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
    # Issue 16 item 1: the verdict's quality counts judged messages only
    # (bob's is not yet when carol rejects); bob's accept then lifts it to
    # 0.00, still below 0.5: a better standing is not a warning.
    assert [r.getMessage() for r in caplog.records if "peer server" in r.getMessage()] == [
        f"peer server {A_HOST}: blocked (quality -1.00 is below the block threshold -0.90)"]
    assert counters(world.b.quality(A_HOST)) == (2, 0)  # still below 0.5 after the accept


def test_an_expired_envelope_can_still_be_rejected(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    assert world.dest.expire(time.time() + 31 * 86400) == 1
    result = world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT_SPAM)
    assert result.outcome == Outcome(Kind.DONE, "recorded")
    assert result.entry is not None and result.entry.decision is Decision.REJECT_SPAM
    accept = world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
    assert accept.outcome.kind is Kind.ALREADY_REJECTED


def test_a_decision_result_is_frozen_and_slotted() -> None:
    result = DecisionResult(Outcome(Kind.DONE, "recorded"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.entry = None  # type: ignore[misc]
    assert not hasattr(result, "__dict__")


def test_an_smtp_arrival_is_frozen_and_slotted() -> None:
    arrival = SmtpArrival(7, held=("bob@b.example",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        arrival.envelope_id = None  # type: ignore[misc]
    assert not hasattr(arrival, "__dict__")
    assert (arrival.delivered, arrival.refused) == ((), ())


def pending_notices(world: World) -> list[str]:
    """The pending notices in bob's mailbox (null sender), their text."""
    out = []
    for entry in world.b.mailbox_entries(world.bob.id, [EntryState.ACCEPTED]):
        env = world.b.in_envelope(entry.envelope_id)
        assert env is not None and env.sender == ""
        raw = world.b.in_body(env.id)
        assert raw is not None
        msg = message_from_bytes(raw, policy=default)
        assert isinstance(msg, EmailMessage)
        out.append(msg.get_content().replace("\r\n", "\n"))
    return out


def test_pending_notices_come_once_per_interval_and_only_with_something_new(
    world: World,
) -> None:
    """notify_pending (issue 10, item 7 b) with the clock as its argument:
    the interval is measured from the previous notice, its end included;
    an envelope is "(new)" only when it arrived after that notice."""
    t, hour = 1_000_000.0, 3600.0
    assert world.dest.notify_pending(t, hour) == 0  # nothing pending anywhere
    world.send([BOB])
    world.deliver_envelopes()
    first = world.entry(world.bob)
    assert world.dest.notify_pending(t, hour) == 1
    [text] = pending_notices(world)
    assert f"  Envelope {first}  (new)\n" in text
    assert world.b.mailbox_entries(world.carol.id) == []  # nothing pending for carol
    # Nothing new: no notice, within the interval nor at or after its end.
    assert world.dest.notify_pending(t + 10, hour) == 0
    assert world.dest.notify_pending(t + hour, hour) == 0
    assert world.dest.notify_pending(t + 2 * hour, hour) == 0
    # Something new: only once the interval since the last notice is over.
    world.send([BOB])
    world.deliver_envelopes()
    second = world.entry(world.bob)
    assert world.dest.notify_pending(t + hour - 1, hour) == 0
    assert world.dest.notify_pending(t + hour, hour) == 1
    _, text = pending_notices(world)
    assert f"  Envelope {first}\n" in text and f"  Envelope {second}  (new)\n" in text
    assert "(1 new since the last notice)" in text
    # The next one: more than the interval later (not just at its end).
    world.send([BOB])
    world.deliver_envelopes()
    third = world.entry(world.bob)
    assert world.dest.notify_pending(t + 2 * hour - 1, hour) == 0
    assert world.dest.notify_pending(t + 3 * hour, hour) == 1
    *_, text = pending_notices(world)
    assert f"  Envelope {first}\n" in text and f"  Envelope {second}\n" in text
    assert f"  Envelope {third}  (new)\n" in text
    assert len(pending_notices(world)) == 3


def test_no_pending_notice_when_the_newest_envelope_was_decided(world: World) -> None:
    """Deciding the newest envelope leaves only ones already noticed: the
    newest pending entry is then older than the last notice's, nothing new."""
    t, hour = 1_000_000.0, 3600.0
    world.send([BOB])
    world.send([BOB])
    world.deliver_envelopes()
    newest = world.entry(world.bob)
    assert world.dest.notify_pending(t, hour) == 1
    world.dest.decide(world.bob, newest, Decision.REJECT)
    assert world.dest.notify_pending(t + 2 * hour, hour) == 0
    assert len(pending_notices(world)) == 1


@pytest.mark.parametrize(("hostname", "by"), [("smdp.b.example", b"smdp.b.example"),
                                              ("", b"localhost")])
def test_a_direct_message_as_a_body_gets_this_hops_received_field(
    world: World, hostname: str, by: bytes,
) -> None:
    """receive_message takes the message as bytes or as a Body (the peer
    port streams it); the Received field names this server, or localhost
    when it has no hostname configured (protocol.md 8.4)."""
    world.dest = Destination(world.b, quality=QualityPolicy(), hostname=hostname)
    world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                               recipients=[BOB], body=Body.of(MSG))
    [entry] = world.b.mailbox_entries(world.bob.id)
    stored = world.b.in_body(entry.envelope_id)
    assert stored_message(stored) == MSG
    assert stored is not None
    assert stored.startswith(b"Received: from smdp.a.example by " + by + b" with SMDP id ")


# -- issue 16 item 1: probation, per-sender quality, kept standings ---------------


def _rejected_by_two(world: World) -> None:
    """alice's two envelopes, one to bob and one to carol, both rejected."""
    world.send([BOB])
    world.send(["carol@b.example"])
    world.deliver_envelopes()
    world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT)
    world.dest.decide(world.carol, world.entry(world.carol), Decision.REJECT)


def test_a_blocked_peer_has_its_probation_then_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path, QualityPolicy(min_messages=2, min_deciders=2, probation_per_day=2))
    _rejected_by_two(world)
    assert world.b.quality(A_HOST).standing == "blocked"
    assert [world.dest.peer_refusal(A_HOST) for _ in range(2)] == [None, None]
    refusal = world.dest.peer_refusal(A_HOST)
    assert refusal == Outcome(Kind.PEER_BLOCKED, f"{A_HOST} blocked: quality -1.00 is below "
                              "the block threshold -0.50; its 2 envelopes of probation "
                              "today are used")
    # Blocked by hand: no probation.
    world.b.set_override(A_HOST, "blocked", "")
    world.b.set_override("smdp.c.example", "blocked", "")
    assert world.dest.peer_refusal("smdp.c.example") == Outcome(
        Kind.PEER_BLOCKED, "smdp.c.example blocked: blocked by the administrator")


def test_a_probation_of_one_envelope_a_day(tmp_path: Path) -> None:
    world = World(tmp_path, QualityPolicy(min_messages=2, min_deciders=2, probation_per_day=1))
    _rejected_by_two(world)
    assert world.dest.peer_refusal(A_HOST) is None
    refusal = world.dest.peer_refusal(A_HOST)
    assert refusal is not None and refusal.reason.endswith(
        "its 1 envelopes of probation today are used")


def test_no_probation_when_it_is_zero(tmp_path: Path) -> None:
    world = World(tmp_path, QualityPolicy(min_messages=2, min_deciders=2, probation_per_day=0))
    _rejected_by_two(world)
    assert world.dest.peer_refusal(A_HOST) == Outcome(
        Kind.PEER_BLOCKED, f"{A_HOST} blocked: quality -1.00 is below the block threshold -0.50")


def test_a_sender_is_judged_apart_from_its_server(tmp_path: Path) -> None:
    """alice's own quality at smdp.a.example falls with her rejected mail;
    her server's is kept apart, and our own users and the null sender are
    never judged."""
    world = World(tmp_path, QualityPolicy(min_messages=2, min_deciders=2, probation_per_day=0))
    _rejected_by_two(world)
    key = sender_key(A_HOST, "alice@a.example")
    assert counters(world.b.quality(key)) == (2, -2)
    world.dest.hostname = "zz.b.example"  # "not us" is not an order of names
    assert world.dest.sender_refusal(A_HOST, "alice@a.example") == Outcome(
        Kind.PEER_BLOCKED, f"<alice@a.example> at {A_HOST} blocked: quality -1.00 is below "
                           "the block threshold -0.50")
    assert world.dest.sender_refusal(A_HOST, "sales@a.example") is None
    assert world.dest.sender_refusal(A_HOST, "") is None
    world.dest.hostname = A_HOST
    assert world.dest.sender_refusal(A_HOST, "alice@a.example") is None
    world.dest.hostname = "smdp.b.example"
    # A peer the administrator allows has none of its addresses refused.
    world.b.set_override(A_HOST, "allowed", "partner")
    assert world.dest.sender_refusal(A_HOST, "alice@a.example") is None
    # The same from the peer's verdict, as the peer port passes it (no read).
    allowed = world.dest.peer_verdict(A_HOST)
    assert allowed.allowed_by_hand
    assert world.dest.sender_refusal(A_HOST, "alice@a.example", allowed) is None
    world.b.set_override(A_HOST, None)
    assert world.dest.sender_refusal(A_HOST, "alice@a.example",
                                     world.dest.peer_verdict(A_HOST)) is not None


def test_a_kept_standing_follows_the_verdict_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Worse: a warning; better: a notice; an administrator's word is not
    kept as the formula's standing."""
    world = World(tmp_path, QualityPolicy(min_messages=2, min_deciders=1, margin=0.0))
    with caplog.at_level(logging.INFO, logger="smdp.quality"):
        _rejected_by_two(world)
        world.send([BOB])
        world.send(["carol@b.example"])
        world.deliver_envelopes()
        for user in (world.bob, world.carol):
            world.dest.decide(user, world.entry(user), Decision.ACCEPT)
    peer = [(r.levelname, r.getMessage()) for r in caplog.records
            if r.getMessage().startswith("peer server")]
    assert [level for level, _ in peer] == ["WARNING", "INFO", "INFO"]
    assert peer[0][1].startswith(f"peer server {A_HOST}: blocked (quality -1.00")
    assert peer[1][1].startswith(f"peer server {A_HOST}: alert (quality -0.33")
    assert peer[2][1] == f"peer server {A_HOST}: ok (quality 0.00)"
    assert world.b.quality(A_HOST).standing == "ok"
    world.b.set_override(A_HOST, "blocked", "")
    assert world.dest.peer_verdict(A_HOST).status is Standing.BLOCKED
    assert world.b.quality(A_HOST).standing == "ok"


def test_smtp_keys_are_described_as_smtp_senders() -> None:
    assert _described("smtp:c.example") == "SMTP sender smtp:c.example"
    assert _described(sender_key(A_HOST, "m@a.example")) == f"sender <m@a.example> at {A_HOST}"
    assert _described(A_HOST) == f"peer server {A_HOST}"


def test_an_expired_envelope_counts_against_its_sender_too(world: World) -> None:
    world.send([BOB])
    world.deliver_envelopes()
    assert world.dest.expire(time.time() + 31 * 86400) == 1
    assert counters(world.b.quality(A_HOST)) == (1, -1)
    assert counters(world.b.quality(sender_key(A_HOST, "alice@a.example"))) == (1, -1)


@pytest.mark.parametrize(("state", "decision", "reason", "who"), [
    (EntryState.PENDING, None, "", None),
    (EntryState.REJECTED, Decision.REJECT, USER_REASON, "user"),
    (EntryState.ACCEPTED, Decision.ACCEPT, USER_REASON, "user"),
    (EntryState.ACCEPTED, Decision.ACCEPT, "sender is on your white list since ...",
     "white-list"),
    (EntryState.SPAMMER, Decision.REJECT_SPAMMER, "sender is on your black list since ...",
     "black-list"),
    (EntryState.EXPIRED, None, "the origin no longer holds it: it expired", "expiry"),
    (EntryState.FAILED, Decision.ACCEPT, "the origin refused the pull: 550", "origin"),
    (EntryState.ACCEPTED, Decision.ACCEPT, NOTICE_REASON, "server"),
    (EntryState.REJECTED, Decision.REJECT, "something this server did", "server"),
    (EntryState.APPENDED, None, "written in by a mail client (IMAP APPEND)", "client"),
])
def test_decided_by_names_who_put_an_entry_in_its_state(
        state: EntryState, decision: Decision | None, reason: str, who: str | None) -> None:
    """The web API's ``decided_by`` (docs/api.md): the user, a list, expiry,
    the origin or the server itself, from what the entry keeps."""
    entry = MailboxEntry(1, 1, 1, BOB, state, decision, reason, None, False)
    assert decided_by(entry) == who
