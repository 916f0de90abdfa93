"""The origin's rules (core/origin.py) that the delivery worker and the peer
port lean on: how a transaction's answers are sorted, what a sent envelope,
a direct send or a failure does to each recipient, when the body is dropped
(assumptions 4 and 6), who may be named as the sender (assumption 3), the
"investigate with sender" rate (Table 2, SPAM at the origin) and expiry.
On real SQLite stores, no wire."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from smdp.core.origin import Answer, Answers, Origin, SubmitResult, new_token, sort_answers
from smdp.core.outcomes import Kind, Outcome
from smdp.core.submission import SubmissionError
from smdp.store.records import OutRecipient
from smdp.terms import Decision, DeliveryMode, RecipientState
from tests.unit.test_core_rules import MSG, World

BOB, CAROL, DAVE = "bob@b.example", "carol@b.example", "dave@b.example"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _send_jobs(world: World) -> list[tuple[str, str]]:
    """(kind, envid) of the queued send jobs, oldest first."""
    return [(j.kind, json.loads(j.payload)["envid"]) for j in world.a.jobs()
            if j.kind != "report-decision"]


def _recipients(world: World, msgid: str) -> dict[str, OutRecipient]:
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    return {r.recipient: r for r in world.a.out_recipients(msg.id)}


# -- sort_answers -------------------------------------------------------------------------


def test_answers_are_sorted_by_kind() -> None:
    answers = [
        (BOB, Answer.TAKEN, "250 ok"),
        (CAROL, Answer.REFUSED, "550 no such user"),
        (DAVE, Answer.DEFERRED, "451 later"),
        ("erin@b.example", Answer.UNAUTHORIZED, "551 not authorized"),
        ("frank@b.example", Answer.DEFERRED, "452 full"),
    ]
    out = sort_answers(answers, [a[0] for a in answers], direct=True)
    assert out.taken == [BOB]
    assert out.refused == {CAROL: "550 no such user"}
    assert out.deferred == [DAVE, "frank@b.example"]
    assert out.unauthorized == ["erin@b.example"]
    # The first deferral is the reason of the retry, not the last.
    assert out.first_deferral == f"RCPT <{DAVE}>: 451 later"


def test_not_authorized_is_a_refusal_to_an_envelope() -> None:
    out = sort_answers([(BOB, Answer.UNAUTHORIZED, "551 no")], [BOB], direct=False)
    assert (out.unauthorized, out.refused) == ([], {BOB: "551 no"})


def test_recipients_never_asked_are_deferred() -> None:
    out = sort_answers([(BOB, Answer.TAKEN, "250")], [BOB, CAROL, DAVE], direct=True)
    assert out.taken == [BOB]
    assert out.deferred == [CAROL, DAVE]
    assert out.first_deferral == ""  # nobody said why


# -- choose_identity, open_recipients -----------------------------------------------------


def test_the_sender_is_one_of_the_users_identities(world: World) -> None:
    assert world.origin.choose_identity(world.alice, None) == Outcome(
        Kind.DONE, "alice@a.example")  # the main identity by default
    assert world.origin.choose_identity(world.alice, "Sales@A.example") == Outcome(
        Kind.DONE, "sales@a.example")
    assert world.origin.choose_identity(world.alice, "ceo@a.example") == Outcome(
        Kind.NOT_YOUR_IDENTITY, "ceo@a.example is not one of your identities")


def test_open_recipients_are_the_queued_ones(world: World) -> None:
    world.send([BOB, CAROL])
    [(_, envid)] = _send_jobs(world)
    assert world.origin.open_recipients(envid) == [BOB, CAROL]
    world.origin.envelope_sent(envid, {CAROL: "550 no"})
    assert world.origin.open_recipients(envid) == []


# -- submit --------------------------------------------------------------------------------


def test_a_recipient_named_twice_gets_one_copy(world: World) -> None:
    result = world.origin.submit(world.alice, "alice@a.example", [BOB, BOB, CAROL], MSG)
    assert result.queued == [BOB, CAROL]
    assert sorted(_recipients(world, result.msgid)) == [BOB, CAROL]


def test_the_stored_message_starts_with_the_submission_hop(world: World) -> None:
    """protocol.md 8.4: the origin's Received field is part of the message it
    stores, so the size it declares is the size of what it sends."""
    result = world.origin.submit(world.alice, "alice@a.example", [BOB], MSG,
                                 client="192.0.2.7")
    msg = world.a.out_message_by_msgid(result.msgid)
    assert msg is not None
    stored = world.a.out_body(msg.id)
    assert stored is not None and msg.size == len(stored)
    first, _, rest = stored.partition(b"\r\n")
    assert re.fullmatch(rb"Received: from \[192\.0\.2\.7\] by smdp\.a\.example with "
                        rb"SMDP-user id " + result.msgid.encode() + rb"; .+ \+0000", first)
    assert b"Received:" not in rest


def test_one_envelope_per_domain_and_mode(world: World) -> None:
    world.a.put_outbound(world.alice.id, "white", DAVE, "manual")
    result = world.origin.submit(world.alice, "alice@a.example",
                                 [BOB, "x@c.example", CAROL, DAVE], MSG)
    assert isinstance(result, SubmitResult)
    assert result.direct == [DAVE]
    kinds = sorted(kind for kind, _ in _send_jobs(world))
    assert kinds == ["send-direct", "send-envelope", "send-envelope"]
    rcpts = _recipients(world, result.msgid)
    assert rcpts[BOB].envid == rcpts[CAROL].envid != rcpts["x@c.example"].envid
    assert rcpts[DAVE].envid not in (rcpts[BOB].envid, rcpts["x@c.example"].envid)
    assert {r.state for r in rcpts.values()} == {RecipientState.QUEUED}
    assert world.held(result.msgid)


def test_nothing_is_held_when_every_recipient_is_refused(world: World) -> None:
    world.a.put_outbound(world.alice.id, "black", BOB, "manual")
    result = world.origin.submit(world.alice, "alice@a.example", [BOB], MSG)
    assert (result.refused, result.queued) == ([BOB], [])
    assert not world.held(result.msgid)
    assert world.a.jobs() == []


def test_a_suspended_sender_cannot_submit(world: World) -> None:
    world.a.set_suspension(world.alice.id, "too many reports")
    with pytest.raises(SubmissionError, match=r"suspended .*\(too many reports\)"):
        world.send([BOB])
    assert world.a.out_messages_of(world.alice.id) == []


def test_the_hold_time_is_the_configured_one(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=2)
    before = time.time()
    msgid = world.send([BOB])
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    assert before + 2 * 86400 - 5 <= msg.expires_at <= time.time() + 2 * 86400 + 5


# -- envelope_sent, direct_sent, delivery_failed --------------------------------------------


def test_envelope_sent_sorts_each_queued_recipient(world: World) -> None:
    msgid = world.send([BOB, CAROL, DAVE])
    [(_, envid)] = _send_jobs(world)
    world.origin.envelope_sent(envid, {CAROL: "550 no such user"}, deferred=[DAVE])
    rcpts = _recipients(world, msgid)
    assert rcpts[BOB].state is RecipientState.ENVELOPE_SENT
    assert (rcpts[CAROL].state, rcpts[CAROL].detail) == (RecipientState.FAILED,
                                                         "550 no such user")
    # The deferred recipient goes again, in an envelope of its own.
    assert rcpts[DAVE].state is RecipientState.QUEUED
    assert rcpts[DAVE].envid != envid
    assert [e for _, e in _send_jobs(world)] == [envid, rcpts[DAVE].envid]
    assert world.held(msgid)


def test_envelope_sent_leaves_decided_recipients_alone(world: World) -> None:
    msgid = world.send([BOB])
    [(_, envid)] = _send_jobs(world)
    world.origin.envelope_sent(envid, {})
    world.origin.on_decision(envid, BOB, Decision.REJECT, False)
    world.origin.envelope_sent(envid, {BOB: "550 late"})  # a replayed answer
    assert _recipients(world, msgid)[BOB].state is RecipientState.REJECTED


def test_the_body_goes_once_every_recipient_failed(world: World) -> None:
    msgid = world.send([BOB, CAROL])
    [(_, envid)] = _send_jobs(world)
    world.origin.envelope_sent(envid, {BOB: "550 a", CAROL: "550 b"})
    assert not world.held(msgid)


def test_direct_send_outcomes(world: World) -> None:
    for rcpt in (BOB, CAROL, DAVE, "erin@b.example"):
        world.a.put_outbound(world.alice.id, "white", rcpt, "manual")
    msgid = world.send([BOB, CAROL, DAVE, "erin@b.example"])
    [(kind, envid)] = _send_jobs(world)
    assert kind == "send-direct"
    world.origin.direct_sent(envid, delivered=[BOB, "stranger@b.example"],
                             unauthorized=[CAROL], refused={DAVE: "550 gone"},
                             deferred=["erin@b.example"])
    rcpts = _recipients(world, msgid)
    assert (rcpts[BOB].state, rcpts[BOB].detail) == (RecipientState.DELIVERED,
                                                     "delivered directly (white list)")
    assert (rcpts[DAVE].state, rcpts[DAVE].detail) == (RecipientState.FAILED, "550 gone")
    # Not authorized: back to an envelope; deferred: a direct send again later.
    assert rcpts[CAROL].state is rcpts["erin@b.example"].state is RecipientState.QUEUED
    jobs = dict((e, k) for k, e in _send_jobs(world))
    assert jobs[rcpts[CAROL].envid] == "send-envelope"
    assert jobs[rcpts["erin@b.example"].envid] == "send-direct"
    assert "stranger@b.example" not in rcpts
    assert world.held(msgid)


def test_direct_send_of_everyone_drops_the_body(world: World) -> None:
    world.a.put_outbound(world.alice.id, "white", BOB, "manual")
    msgid = world.send([BOB])
    [(_, envid)] = _send_jobs(world)
    world.origin.direct_sent(envid, [BOB], [], {})
    assert not world.held(msgid)
    world.origin.direct_sent("z" * 26, [BOB], [], {})  # unknown: nothing happens


def test_delivery_failure_fails_only_the_open_recipients(world: World) -> None:
    msgid = world.send([BOB, CAROL])
    [(_, envid)] = _send_jobs(world)
    world.origin.envelope_sent(envid, {}, deferred=[CAROL])
    carol_envid = _recipients(world, msgid)[CAROL].envid
    assert carol_envid is not None
    world.origin.delivery_failed(carol_envid, "retries exhausted")
    rcpts = _recipients(world, msgid)
    assert (rcpts[CAROL].state, rcpts[CAROL].detail) == (RecipientState.FAILED,
                                                         "retries exhausted")
    assert rcpts[BOB].state is RecipientState.ENVELOPE_SENT
    assert world.held(msgid)  # bob has not decided
    world.origin.delivery_failed(envid, "late")  # bob is not queued: unchanged
    assert _recipients(world, msgid)[BOB].state is RecipientState.ENVELOPE_SENT


# -- decisions --------------------------------------------------------------------------------


def test_a_pull_reports_the_size_and_a_held_body_needs_none(world: World) -> None:
    msgid = world.send([BOB, CAROL])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    pull = world.origin.on_decision(env.envid, BOB, Decision.ACCEPT, False)
    assert (pull.kind, pull.reason, pull.pull_message_id, pull.pull_size) == (
        Kind.PULL, f"{msg.size} octets follow", msg.id, msg.size)
    held = world.origin.on_decision(env.envid, CAROL, Decision.ACCEPT_AUTH, True)
    assert (held.kind, held.reason) == (Kind.DONE, f"AUTHORIZE recorded for <{CAROL}>")
    rcpts = _recipients(world, msgid)
    assert (rcpts[CAROL].state, rcpts[CAROL].detail) == (RecipientState.DELIVERED,
                                                         "authorized by recipient")
    assert (rcpts[BOB].state, rcpts[BOB].detail) == (RecipientState.ACCEPTED,
                                                     "transfer in progress")


def test_a_reject_is_recorded_with_its_reason(world: World) -> None:
    msgid = world.send([BOB])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    done = world.origin.on_decision(env.envid, BOB, Decision.REJECT_SPAM, False)
    assert (done.kind, done.reason) == (Kind.DONE, f"SPAM recorded for <{BOB}>")
    bob = _recipients(world, msgid)[BOB]
    assert (bob.state, bob.detail) == (RecipientState.SPAM, "spam by recipient")


def test_an_accept_after_the_body_was_dropped_is_not_held(world: World) -> None:
    msgid = world.send([BOB])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    world.a.drop_out_body(msg.id)
    outcome = world.origin.on_decision(env.envid, BOB, Decision.ACCEPT, False)
    assert (outcome.kind, outcome.reason) == (Kind.NOT_HELD, f"{env.envid} is no longer held")
    # With the body at the destination, the accept needs nothing from here.
    assert world.origin.on_decision(env.envid, BOB, Decision.ACCEPT, True).kind is Kind.DONE


def test_received_for_an_unknown_envelope(world: World) -> None:
    assert world.origin.on_received("q" * 26) == Outcome(Kind.UNKNOWN,
                                                         f"Unknown envelope {'q' * 26}")
    world.send([BOB])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    assert world.origin.on_received(env.envid) == Outcome(
        Kind.DONE, f"{env.envid} transfer confirmed")


@pytest.mark.parametrize("report", [Decision.REJECT_SPAM, Decision.REJECT_SPAMMER])
def test_spam_reports_past_the_rate_suspend_the_sender(tmp_path: Path, report: Decision) -> None:
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=2)
    for _ in range(3):
        world.send([BOB])
    world.deliver_envelopes()
    envids = [e.envid for e in (world.b.in_envelope(i) for i in (1, 2, 3)) if e is not None]
    world.origin.on_decision(envids[0], BOB, report, False)
    assert world.a.suspension(world.alice.id) is None  # one report: under the rate
    world.origin.on_decision(envids[1], BOB, report, False)
    assert world.a.suspension(world.alice.id) == "2 spam reports in 24 hours"
    world.origin.on_decision(envids[2], BOB, report, False)
    assert world.a.suspension(world.alice.id) == "2 spam reports in 24 hours"  # kept


def test_a_plain_reject_is_no_spam_report(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=1)
    world.send([BOB])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    world.origin.on_decision(env.envid, BOB, Decision.REJECT, False)
    assert world.a.suspension(world.alice.id) is None
    assert world.a.spam_reports() == []


# -- expiry ---------------------------------------------------------------------------------


def test_expiry_ends_only_undecided_recipients_of_expired_messages(world: World) -> None:
    msgid = world.send([BOB, CAROL])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    world.origin.on_decision(env.envid, BOB, Decision.REJECT, False)
    assert world.origin.expire(time.time()) == 0  # not expired yet
    assert world.origin.expire(time.time() + 31 * 86400) == 1
    rcpts = _recipients(world, msgid)
    assert (rcpts[CAROL].state, rcpts[CAROL].detail) == (
        RecipientState.EXPIRED, "expired: no decision before the message expired")
    assert rcpts[BOB].state is RecipientState.REJECTED
    assert not world.held(msgid)


def test_delivery_modes_of_the_queued_envelopes(world: World) -> None:
    world.a.put_outbound(world.alice.id, "white", BOB, "manual")
    msgid = world.send([BOB, CAROL])
    rcpts = _recipients(world, msgid)
    modes = {}
    for r in rcpts.values():
        assert r.envid is not None
        env = world.a.out_envelope(r.envid)
        assert env is not None
        modes[r.recipient] = (env.mode, env.domain)
    assert modes == {BOB: (DeliveryMode.DIRECT, "b.example"),
                     CAROL: (DeliveryMode.ENVELOPE, "b.example")}


# -- details a survivor showed untested -------------------------------------------------------


def test_tokens_are_128_random_bits_in_base32() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert len(token) == 26  # 128 bits: 25 full base32 digits and 3 bits
        assert set(token) <= set("abcdefghijklmnopqrstuvwxyz234567")
        assert token[-1] in "aeimquy4"  # the last digit carries 3 bits, then zeros


def test_the_default_spam_report_rate(world: World) -> None:
    assert Origin(world.a, hostname="x.example", expire_days=1).spam_reports_per_day == 20


def test_send_bookkeeping_is_slotted() -> None:
    assert not hasattr(SubmitResult("m"), "__dict__")
    assert not hasattr(Answers(), "__dict__")


def test_a_decision_finds_its_recipient_by_exact_address(world: World) -> None:
    msgid = world.send([CAROL, BOB])  # carol sorts after bob and comes first
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    world.origin.on_decision(env.envid, BOB, Decision.REJECT, False)
    rcpts = _recipients(world, msgid)
    assert rcpts[BOB].state is RecipientState.REJECTED
    assert rcpts[CAROL].state is RecipientState.ENVELOPE_SENT


def test_a_black_listed_recipient_does_not_stop_the_others(world: World) -> None:
    world.a.put_outbound(world.alice.id, "black", BOB, "manual")
    result = world.origin.submit(world.alice, "alice@a.example", [BOB, CAROL], MSG)
    assert (result.refused, result.queued) == ([BOB], [CAROL])


def test_a_deferred_first_recipient_does_not_stop_the_others(world: World) -> None:
    msgid = world.send([BOB, CAROL])
    [(_, envid)] = _send_jobs(world)
    world.origin.envelope_sent(envid, {}, deferred=[BOB])
    rcpts = _recipients(world, msgid)
    assert rcpts[CAROL].state is RecipientState.ENVELOPE_SENT
    assert rcpts[BOB].state is RecipientState.QUEUED and rcpts[BOB].envid != envid


def test_the_suspension_alert_names_the_sender(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=1)
    world.send([BOB])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    with caplog.at_level(logging.WARNING, logger="smdp.abuse"):
        world.origin.on_decision(env.envid, BOB, Decision.REJECT_SPAM, False)
    assert [r.getMessage() for r in caplog.records] == [
        "ALERT: sending suspended for alice@a.example: 1 spam reports in 24 hours"]


def test_old_spam_reports_do_not_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=2)
    world.send([BOB])
    world.send([BOB])
    world.deliver_envelopes()
    first, second = (world.b.in_envelope(i) for i in (1, 2))
    assert first is not None and second is not None
    now = time.time
    monkeypatch.setattr(time, "time", lambda: now() - 2 * 86400)  # two days ago
    world.origin.on_decision(first.envid, BOB, Decision.REJECT_SPAM, False)
    monkeypatch.setattr(time, "time", now)
    world.origin.on_decision(second.envid, BOB, Decision.REJECT_SPAM, False)
    assert world.a.suspension(world.alice.id) is None


# -- exact edges (mutation testing: a one-second shift, a negated guard) ------------------


class FrozenClock:
    """time.time as the test sets it: the origin and the store read the same."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float) -> None:
        self.now = now
        monkeypatch.setattr(time, "time", lambda: self.now)


def test_the_hold_time_is_exactly_the_configured_days(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FrozenClock(monkeypatch, 1_800_000_000.0)
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=2)
    msg = world.a.out_message_by_msgid(world.send([BOB]))
    assert msg is not None
    assert msg.expires_at == clock.now + 2 * 86400


@pytest.mark.parametrize(("age", "suspended"), [(86400 - 0.5, True), (86400 + 0.5, False)])
def test_the_spam_report_window_is_exactly_24_hours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age: float, suspended: bool) -> None:
    """A report half a second inside the 24 hours still counts; half a second
    outside, it no longer does."""
    t0 = 1_800_000_000.0
    clock = FrozenClock(monkeypatch, t0 - age)
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=2)
    world.send([BOB])
    world.send([BOB])
    world.deliver_envelopes()
    first, second = (world.b.in_envelope(i) for i in (1, 2))
    assert first is not None and second is not None
    world.origin.on_decision(first.envid, BOB, Decision.REJECT_SPAM, False)
    clock.now = t0
    world.origin.on_decision(second.envid, BOB, Decision.REJECT_SPAM, False)
    assert (world.a.suspension(world.alice.id) is not None) is suspended


def test_a_lowered_rate_suspends_a_sender_already_past_it(tmp_path: Path) -> None:
    """The operator lowers the rate while a sender has more reports than the
    new rate: the next report suspends them (past the rate, not only at it)."""
    world = World(tmp_path)
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=10)
    for _ in range(4):
        world.send([BOB])
    world.deliver_envelopes()
    envids = [e.envid for e in (world.b.in_envelope(i) for i in (1, 2, 3, 4)) if e is not None]
    for envid in envids[:3]:
        world.origin.on_decision(envid, BOB, Decision.REJECT_SPAM, False)
    assert world.a.suspension(world.alice.id) is None
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          spam_reports_per_day=2)
    world.origin.on_decision(envids[3], BOB, Decision.REJECT_SPAM, False)
    assert world.a.suspension(world.alice.id) == "4 spam reports in 24 hours"


def test_a_deferred_direct_recipient_gets_a_new_direct_send(world: World) -> None:
    for rcpt in (BOB, CAROL):
        world.a.put_outbound(world.alice.id, "white", rcpt, "manual")
    msgid = world.send([BOB, CAROL])
    [(kind, first)] = _send_jobs(world)
    world.origin.direct_sent(first, delivered=[BOB], unauthorized=[], refused={},
                             deferred=[CAROL])
    carol = _recipients(world, msgid)[CAROL]
    assert carol.state is RecipientState.QUEUED and carol.envid != first
    assert _send_jobs(world) == [(kind, first), ("send-direct", carol.envid)]


def test_a_direct_send_with_nobody_deferred_queues_nothing_more(world: World) -> None:
    for rcpt in (BOB, CAROL):
        world.a.put_outbound(world.alice.id, "white", rcpt, "manual")
    world.send([BOB, CAROL])
    before = _send_jobs(world)
    [(_, envid)] = before
    world.origin.direct_sent(envid, delivered=[BOB, CAROL], unauthorized=[], refused={},
                             deferred=[])
    assert _send_jobs(world) == before


def test_a_recipient_lost_to_expiry_cannot_accept_but_can_still_reject(world: World) -> None:
    msgid = world.send([BOB, CAROL])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    assert world.origin.expire(time.time() + 31 * 86400) == 1
    accept = world.origin.on_decision(env.envid, BOB, Decision.ACCEPT, False)
    assert (accept.kind, accept.reason) == (
        Kind.NOT_HELD,
        f"{env.envid} is no longer held: expired: no decision before the message expired")
    spam = world.origin.on_decision(env.envid, CAROL, Decision.REJECT_SPAM, False)
    assert (spam.kind, spam.reason) == (Kind.DONE, f"SPAM recorded for <{CAROL}>")
    assert _recipients(world, msgid)[CAROL].state is RecipientState.SPAM


def test_a_message_that_grows_past_the_maximum_is_refused_at_submission(
        tmp_path: Path) -> None:
    """The fields the origin adds (Received; From, Date, Message-ID where
    missing) count: a message at the maximum before them is over it after,
    and every destination would refuse its SIZE. Refused now, nothing stored."""
    world = World(tmp_path)
    raw = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    world.origin = Origin(world.a, hostname="smdp.a.example", expire_days=30,
                          max_message_size=len(raw))
    with pytest.raises(SubmissionError, match=(
            r"^the message is \d+ octets with the fields this server adds \(Received, and "
            rf"From, Date and Message-ID where missing\), over the maximum of {len(raw)}; "
            r"send a smaller message$")):
        world.send([BOB], body=raw)
    assert world.a.out_messages_of(world.alice.id) == []
    world.origin.max_message_size = len(raw) + 1024
    assert world.send([BOB], body=raw)


def test_a_message_exactly_at_the_maximum_is_taken(tmp_path: Path) -> None:
    """The maximum is the largest size taken (a SIZE limit), not the first
    one refused: with the fields added, exactly at it is accepted, one octet
    over is not."""
    world = World(tmp_path)
    raw = b"Subject: edge\r\n\r\n" + b"x" * 500 + b"\r\n"
    world.send([BOB], body=raw)
    [first] = world.a.out_messages_of(world.alice.id)
    size = first.size
    world.origin.max_message_size = size
    assert world.send([BOB], body=raw)
    world.origin.max_message_size = size - 1
    with pytest.raises(SubmissionError, match=rf"^the message is {size} octets "):
        world.send([BOB], body=raw)
