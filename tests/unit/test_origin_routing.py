"""The origin's side of routing (core/origin.py ``route_by_smtp``; docs/smtp.md,
"Routing"): recipients of a domain without an SMDP server move to an SMTP
envelope and a send-smtp job in one transaction, the others keep theirs.
On real SQLite stores, no wire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smdp.core.jobs import SendJob, decode_job
from smdp.store.records import OutRecipient
from smdp.terms import DeliveryMode, JobKind, RecipientState, RouteKind
from tests.unit.test_core_rules import World

BOB, CAROL = "bob@b.example", "carol@b.example"
XAVIER, YVES = "xavier@c.example", "yves@c.example"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _jobs(world: World) -> list[tuple[str, str, str]]:
    """(kind, envid, the envelope's domain) of the queued jobs, oldest first."""
    found = []
    for job in world.a.jobs():
        envid = json.loads(job.payload)["envid"]
        env = world.a.out_envelope(envid)
        assert env is not None
        found.append((job.kind.value, envid, env.domain))
    return found


def _recipients(world: World, msgid: str) -> dict[str, OutRecipient]:
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    return {r.recipient: r for r in world.a.out_recipients(msg.id)}


def test_every_recipient_starts_on_the_smdp_route(world: World) -> None:
    msgid = world.send([BOB, XAVIER])
    assert {r: (x.route, x.state) for r, x in _recipients(world, msgid).items()} == {
        BOB: (RouteKind.SMDP, RecipientState.QUEUED),
        XAVIER: (RouteKind.SMDP, RecipientState.QUEUED)}


def test_an_smtp_domain_moves_to_a_send_smtp_job_and_the_others_stay(world: World) -> None:
    msgid = world.send([BOB, XAVIER, CAROL, YVES])
    [(_, b_env, b_domain), (_, c_env, c_domain)] = _jobs(world)
    assert (b_domain, c_domain) == ("b.example", "c.example")

    smtp_env = world.origin.route_by_smtp(c_env)

    assert smtp_env is not None and smtp_env not in (b_env, c_env)
    env = world.a.out_envelope(smtp_env)
    assert env is not None and (env.domain, env.mode) == ("c.example", DeliveryMode.SMTP)
    rcpts = _recipients(world, msgid)
    assert {r: (x.route, x.state, x.envid) for r, x in rcpts.items()} == {
        BOB: (RouteKind.SMDP, RecipientState.QUEUED, b_env),
        CAROL: (RouteKind.SMDP, RecipientState.QUEUED, b_env),
        XAVIER: (RouteKind.SMTP, RecipientState.QUEUED, smtp_env),
        YVES: (RouteKind.SMTP, RecipientState.QUEUED, smtp_env)}
    # Queued durably with the move: the old envelope's job is still there (it
    # is running; it ends with nobody left to send to), the new one is send-smtp.
    assert [(kind, envid) for kind, envid, _ in _jobs(world)] == [
        ("send-envelope", b_env), ("send-envelope", c_env), ("send-smtp", smtp_env)]
    assert world.origin.open_recipients(c_env) == []
    assert world.origin.open_recipients(smtp_env) == [XAVIER, YVES]
    [smtp_job] = [j for j in world.a.jobs() if j.kind is JobKind.SEND_SMTP]
    assert decode_job(smtp_job) == SendJob(smtp_env)
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None and msg.held  # the SMTP job needs the body


def test_a_direct_send_to_an_smtp_domain_moves_too(world: World) -> None:
    world.a.put_outbound(world.alice.id, "white", XAVIER, "manual")
    msgid = world.send([XAVIER])
    [(kind, envid, _)] = _jobs(world)
    assert kind == "send-direct"

    smtp_env = world.origin.route_by_smtp(envid)

    assert _recipients(world, msgid)[XAVIER].route is RouteKind.SMTP
    assert [(k, e) for k, e, _ in _jobs(world)] == [("send-direct", envid),
                                                   ("send-smtp", smtp_env)]


def test_only_open_recipients_move(world: World) -> None:
    msgid = world.send([XAVIER, YVES])
    [(_, envid, _)] = _jobs(world)
    world.origin.envelope_sent(envid, {YVES: "550 5.1.1 no such user"}, deferred=[XAVIER])
    [_, (_, again, _)] = _jobs(world)  # XAVIER's envelope of his own

    smtp_env = world.origin.route_by_smtp(again)

    rcpts = _recipients(world, msgid)
    assert (rcpts[YVES].route, rcpts[YVES].state) == (RouteKind.SMDP, RecipientState.FAILED)
    assert (rcpts[XAVIER].route, rcpts[XAVIER].envid) == (RouteKind.SMTP, smtp_env)


def test_nothing_moves_when_nobody_is_open(world: World) -> None:
    world.send([XAVIER])
    [(_, envid, _)] = _jobs(world)
    world.origin.envelope_sent(envid, {XAVIER: "550 5.1.1 no such user"})

    assert world.origin.route_by_smtp(envid) is None
    assert world.origin.route_by_smtp("no-such-envelope") is None
    assert [k for k, _e, _d in _jobs(world)] == ["send-envelope"]


def test_an_smtp_recipient_retried_later_keeps_the_smtp_route(world: World) -> None:
    msgid = world.send([XAVIER, YVES])
    [(_, envid, _)] = _jobs(world)
    smtp_env = world.origin.route_by_smtp(envid)
    assert smtp_env is not None

    # A later SMTP transaction takes YVES and defers XAVIER (a 4xx to RCPT).
    world.origin.envelope_sent(smtp_env, {}, deferred=[XAVIER])

    rcpts = _recipients(world, msgid)
    assert rcpts[XAVIER].route is RouteKind.SMTP
    env = world.a.out_envelope(rcpts[XAVIER].envid or "")
    assert env is not None and env.mode is DeliveryMode.SMTP
    assert _jobs(world)[-1][0] == "send-smtp"


def test_an_smtp_failure_fails_the_recipients_with_its_status(world: World) -> None:
    msgid = world.send([XAVIER])
    [(_, envid, _)] = _jobs(world)
    smtp_env = world.origin.route_by_smtp(envid)
    assert smtp_env is not None

    world.origin.delivery_failed(smtp_env, "gave up after 3 attempts: waiting", "5.4.7")

    rcpt = _recipients(world, msgid)[XAVIER]
    assert (rcpt.route, rcpt.state, rcpt.detail) == (
        RouteKind.SMTP, RecipientState.FAILED, "gave up after 3 attempts: waiting")
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None and not msg.held


def _smtp_envelope(world: World, rcpts: list[str]) -> tuple[str, str]:
    msgid = world.send(rcpts)
    [(_, envid, _)] = _jobs(world)
    smtp_env = world.origin.route_by_smtp(envid)
    assert smtp_env is not None
    return msgid, smtp_env


def _reports(world: World) -> int:
    """How many notices the sender's mailbox holds (delivery status notifications)."""
    return len(world.a.mailbox_entries(world.alice.id))


def test_an_smtp_session_settles_each_recipient_once(world: World) -> None:
    """``smtp_sent`` (docs/smtp.md, Outbound delivery): delivered, failed
    with a report, and deferred (still queued, the reply its detail), with
    the TLS outcome, in one transaction; a replay changes nothing."""
    msgid, smtp_env = _smtp_envelope(world, [XAVIER, YVES, "zoe@c.example"])
    outcome = ({XAVIER: "250 2.0.0 Queued as 1 (from mx)"},
               {YVES: "550 5.1.1 No such user (from mx)"},
               {"zoe@c.example": "451 4.3.0 Later (from mx)"})

    world.origin.smtp_sent(smtp_env, *outcome, tls="verified (require_verified)")

    rcpts = _recipients(world, msgid)
    assert {r: (x.state, x.detail) for r, x in rcpts.items()} == {
        XAVIER: (RecipientState.DELIVERED, "250 2.0.0 Queued as 1 (from mx)"),
        YVES: (RecipientState.FAILED, "550 5.1.1 No such user (from mx)"),
        "zoe@c.example": (RecipientState.QUEUED, "451 4.3.0 Later (from mx)")}
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None and msg.held  # zoe still needs it
    assert set(world.a.recipients_tls(msg.id).values()) == {"verified (require_verified)"}
    assert _reports(world) == 1
    assert world.origin.open_recipients(smtp_env) == ["zoe@c.example"]

    # The same answers again (a replayed job): nobody settled twice, no second report.
    world.origin.smtp_sent(smtp_env, *outcome[:2], {})
    assert _recipients(world, msgid)[YVES].state is RecipientState.FAILED
    assert _reports(world) == 1

    world.origin.smtp_sent(smtp_env, {"zoe@c.example": "250 ok"}, {}, {})
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None and not msg.held  # everyone settled: the body goes


def test_an_smtp_envelope_whose_domain_now_has_an_smdp_server_goes_back(
        world: World) -> None:
    msgid, smtp_env = _smtp_envelope(world, [XAVIER])

    back = world.origin.route_by_smdp(smtp_env)

    rcpt = _recipients(world, msgid)[XAVIER]
    assert back is not None and (rcpt.route, rcpt.envid) == (RouteKind.SMDP, back)
    assert _jobs(world)[-1][:2] == ("send-envelope", back)
    assert world.origin.route_by_smdp(smtp_env) is None  # nobody left there
