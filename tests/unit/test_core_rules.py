"""Tables 1 to 3 and section 5.3, on the domain core with real SQLite stores
(one per server) and no wire: the origin's and destination's services are
called as the adapters call them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from smdp.config import QualityPolicy
from smdp.core.decisions import TABLE_2
from smdp.core.destination import Destination
from smdp.core.origin import Origin
from smdp.core.outcomes import DecisionOutcome, Kind, Outcome
from smdp.core.quality import Verdict, judge
from smdp.core.submission import SubmissionError
from smdp.store import SqliteStore
from smdp.store.records import Quality, User
from smdp.terms import Decision

A_HOST = "smdp.a.example"
MSG = b"Subject: hello\r\n\r\nfirst line\r\nsecond line\r\nthird\r\n"


class World:
    """An origin (a.example) and a destination (b.example), each with its store."""

    def __init__(self, tmp: Path, policy: QualityPolicy | None = None) -> None:
        self.a = SqliteStore(tmp / "a.sqlite3")
        self.b = SqliteStore(tmp / "b.sqlite3")
        self.a.migrate()
        self.b.migrate()
        self.origin = Origin(self.a, hostname=A_HOST, expire_days=30)
        self.dest = Destination(self.b, quality=policy or QualityPolicy())
        self.alice = self.a.create_user("alice@a.example", "x")
        self.a.add_identity(self.alice.id, "sales@a.example")
        self.bob = self.b.create_user("bob@b.example", "x")
        self.carol = self.b.create_user("carol@b.example", "x")

    def send(self, rcpts: list[str], body: bytes = MSG) -> str:
        result = self.origin.submit(self.alice, "alice@a.example", rcpts, body)
        return result.msgid

    def deliver_envelopes(self) -> None:
        """What the delivery worker does for send-envelope jobs."""
        for job in self.a.jobs():
            if job.kind != "send-envelope":
                continue
            envid = json.loads(job.payload)["envid"]
            env = self.a.out_envelope(envid)
            assert env is not None
            msg = self.a.out_message(env.message_id)
            assert msg is not None
            rcpts = [r.recipient for r in self.a.out_recipients_of_envelope(envid)]
            self.dest.receive_envelope(
                server=A_HOST, envid=envid, sender=msg.sender, recipients=rcpts,
                size=msg.size, block=msg.summary.encode(),
            )
            self.origin.envelope_sent(envid, {})
            self.a.finish_job(job.id)

    def report_decisions(self) -> list[int]:
        """What the delivery worker does for report-decision jobs; returns pull sizes."""
        pulls = []
        for job in self.b.jobs():
            entry = self.b.mailbox_entry(json.loads(job.payload)["entry"])
            assert entry is not None and entry.decision is not None
            env = self.b.in_envelope(entry.envelope_id)
            assert env is not None
            message = entry.decision
            held = env.has_body and message.accepts
            outcome = self.origin.on_decision(env.envid, entry.recipient, message, held)
            if outcome.pull_message_id is not None:
                body = self.a.out_body(outcome.pull_message_id)
                assert body is not None and len(body) == outcome.pull_size
                pulls.append(len(body))
                self.dest.body_pulled(env.id, body)
                self.origin.on_received(env.envid)
            elif message.accepts:
                self.dest.body_pulled(env.id, None)
            self.b.finish_job(job.id)
        return pulls

    def entry(self, user: User) -> int:
        return self.b.mailbox_entries(user.id)[-1].id

    def out_states(self, msgid: str) -> dict[str, str]:
        msg = self.a.out_message_by_msgid(msgid)
        assert msg is not None
        return {r.recipient: r.state for r in self.a.out_recipients(msg.id)}

    def held(self, msgid: str) -> bool:
        msg = self.a.out_message_by_msgid(msgid)
        assert msg is not None
        return msg.held


def paper(**settings: Any) -> QualityPolicy:
    """Section 5.3's rule alone (before issue 16 item 1): no rejecting user
    needed, no hysteresis, no probation."""
    return QualityPolicy(**{"min_deciders": 0, "margin": 0.0, "probation_per_day": 0,
                            **settings})


def counters(quality: Quality) -> tuple[int, int]:
    """Section 5.3's two counters as counted (not aged): (Messages, Votes)."""
    return quality.messages, quality.votes


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_table_1_maps_each_option_to_its_message() -> None:
    # Table 1's options (the members) and the Table 2 message each sends
    # (the values); the user port's spelling of the options is its codec's.
    assert {d.name: d.value for d in Decision} == {
        "ACCEPT": "ACCEPT", "ACCEPT_AUTH": "AUTHORIZE", "REJECT": "REJECT",
        "REJECT_SPAM": "SPAM", "REJECT_SPAMMER": "SPAMMER",
    }
    assert set(TABLE_2) == set(Decision)


# Table 2 of the paper (/work/shared/seed/TABLES.md), written out by hand, one
# row per Table 1 option, so that a change to TABLE_2 cannot change what is
# expected of it. Columns:
#   message   the SMDP message the option sends (Table 1 -> Table 2)
#   in_list   the recipient's SMDP adds (sender, SMDP) to the user's list
#   out_list  the origin adds the recipient to the sender's list
#   pulled    the origin sends the entire message
#   reports   spam reports the origin records ("investigate with sender")
#   vote      section 5.3: Votes(X) +1 for an accept, -1 for a reject
#   state     the recipient's state at the origin once settled
# Every row ends with the message deleted at the origin: after the transfer for
# the accepts, at once for the reject family (assumption 6). The one cell that
# is not the paper's: SPAMMER also records a spam report (docs/protocol.md 8.1).
TABLE_2_EXPECTED: dict[Decision, tuple[str, str | None, str | None, int, int, int, str]] = {
    #                      message      in_list  out_list pulled reports vote state
    Decision.ACCEPT:         ("ACCEPT",    None,    None,    1,     0,      +1,  "delivered"),
    Decision.ACCEPT_AUTH:    ("AUTHORIZE", "white", "white", 1,     0,      +1,  "delivered"),
    Decision.REJECT:         ("REJECT",    None,    None,    0,     0,      -1,  "rejected"),
    Decision.REJECT_SPAM:    ("SPAM",      None,    None,    0,     1,      -1,  "spam"),
    Decision.REJECT_SPAMMER: ("SPAMMER",   "black", "black", 0,     1,      -1,  "spammer"),
}


@pytest.mark.parametrize("option", list(Decision))
def test_table_2_effects_on_both_sides(world: World, option: Decision) -> None:
    message, in_list, out_list, pulled, reports, vote, state = TABLE_2_EXPECTED[option]
    msgid = world.send(["bob@b.example"])
    world.deliver_envelopes()
    entry = world.entry(world.bob)
    world.dest.decide(world.bob, entry, option)
    decided = world.b.mailbox_entry(entry)
    assert decided is not None and decided.decision == message
    pulls = world.report_decisions()
    inbound = {(e.kind, e.address, e.server) for e in world.b.list_entries(world.bob.id)}
    outbound = {(e.kind, e.address) for e in world.a.list_entries(world.alice.id)}
    assert inbound == ({(in_list, "alice@a.example", A_HOST)} if in_list else set())
    assert outbound == ({(out_list, "bob@b.example")} if out_list else set())
    assert len(pulls) == pulled
    assert world.a.spam_reports() == ([("alice@a.example", reports)] if reports else [])
    assert counters(world.b.quality(A_HOST)) == (1, vote)
    assert not world.held(msgid)  # every recipient decided: the origin deleted it
    assert world.out_states(msgid) == {"bob@b.example": state}


def test_table_3_sender_side(world: World) -> None:
    world.a.put_outbound(world.alice.id, "white", "bob@b.example", "manual")
    world.a.put_outbound(world.alice.id, "black", "carol@b.example", "manual")
    result = world.origin.submit(world.alice, "alice@a.example",
                                 ["bob@b.example", "carol@b.example"], MSG)
    assert result.direct == ["bob@b.example"]
    assert result.refused == ["carol@b.example"]
    kinds = sorted(j.kind for j in world.a.jobs())
    assert kinds == ["send-direct"]  # nothing at all is sent for carol
    assert world.out_states(result.msgid)["carol@b.example"] == "refused"


def test_table_3_recipient_side(world: World) -> None:
    world.b.put_inbound(world.bob.id, "white", "alice@a.example", A_HOST, "manual")
    world.b.put_inbound(world.carol.id, "black", "alice@a.example", A_HOST, "manual")
    msgid = world.send(["bob@b.example", "carol@b.example"])
    world.deliver_envelopes()
    states = {e.recipient: (e.state, e.decision) for e in
              world.b.mailbox_entries(world.bob.id) + world.b.mailbox_entries(world.carol.id)}
    assert states == {"bob@b.example": ("fetching", "ACCEPT"),
                      "carol@b.example": ("spammer", "SPAMMER")}
    world.report_decisions()
    assert world.out_states(msgid) == {"bob@b.example": "delivered",
                                       "carol@b.example": "spammer"}


@pytest.mark.parametrize(("option", "listed_as"), [
    (Decision.ACCEPT_AUTH, ("fetching", "ACCEPT",
                            "sender is on your white list since {day} (your ACCEPT&AUTH on "
                            "envelope {first})")),
    (Decision.REJECT_SPAMMER, ("spammer", "SPAMMER",
                               "sender is on your black list since {day} (your REJECT&SPAMMER "
                               "on envelope {first})")),
])
def test_listing_a_sender_settles_their_other_pending_envelopes(
    world: World, option: Decision, listed_as: tuple[str, str, str],
) -> None:
    """Table 3 applied to what is already waiting: after ACCEPT&AUTH or
    REJECT&SPAMMER nobody is asked again about the same sender."""
    for _ in range(3):
        world.send(["bob@b.example", "carol@b.example"])
    world.deliver_envelopes()
    first, *others = [e.id for e in world.b.mailbox_entries(world.bob.id)]
    world.dest.decide(world.bob, first, option)
    # The evidence (issue 16 item 2): the list, since when, and the decision
    # that put the sender there.
    day = time.strftime("%Y-%m-%d", time.gmtime())
    state, decision, reason = listed_as
    for entry_id in others:
        entry = world.b.mailbox_entry(entry_id)
        assert entry is not None
        assert (entry.state, entry.decision, entry.reason) == (
            state, decision, reason.format(day=day, first=first))
    # Carol's envelopes from the same sender are hers to decide.
    assert {e.state for e in world.b.mailbox_entries(world.carol.id)} == {"pending"}
    # Each settled envelope reports its decision to the origin (Table 2).
    assert len([j for j in world.b.jobs() if j.kind == "report-decision"]) == 3


def test_pair_must_match_the_server_too(world: World) -> None:
    # Lists hold (address, SMDP server) pairs: the same address from another
    # server is not white-listed (section 5.3, unlawful servers).
    world.b.put_inbound(world.bob.id, "white", "alice@a.example", "rogue.example", "manual")
    world.send(["bob@b.example"])
    world.deliver_envelopes()
    assert world.b.mailbox_entries(world.bob.id)[0].state == "pending"


def test_assumption_5_second_acceptance_uses_the_local_copy(world: World) -> None:
    msgid = world.send(["bob@b.example", "carol@b.example"])
    world.deliver_envelopes()
    world.dest.decide(world.bob, world.entry(world.bob), Decision.ACCEPT)
    assert world.report_decisions() == [len(world.a.out_body(1) or b"")]
    assert world.held(msgid)  # carol has not decided
    result = world.dest.decide(world.carol, world.entry(world.carol), Decision.ACCEPT)
    assert result.entry.state == "accepted"  # readable at once
    assert world.report_decisions() == []  # ACCEPT ... BODY=HELD: no second transfer
    assert not world.held(msgid)


def test_reject_after_accept_replaces_the_vote(world: World) -> None:
    world.send(["bob@b.example"])
    world.deliver_envelopes()
    entry = world.entry(world.bob)
    world.dest.decide(world.bob, entry, Decision.ACCEPT)
    world.report_decisions()
    world.dest.decide(world.bob, entry, Decision.REJECT_SPAMMER)
    world.report_decisions()
    assert counters(world.b.quality(A_HOST)) == (1, -1)  # one vote per message
    assert [(e.kind, e.address) for e in world.a.list_entries(world.alice.id)] == [
        ("black", "bob@b.example")]
    late = world.dest.decide(world.bob, entry, Decision.ACCEPT).outcome
    assert late == Outcome(Kind.ALREADY_REJECTED, f"envelope {entry} was already rejected")


def test_decisions_only_by_the_recipient(world: World) -> None:
    world.send(["bob@b.example"])
    world.deliver_envelopes()
    foreign = world.dest.decide(world.carol, world.entry(world.bob), Decision.ACCEPT).outcome
    assert foreign == Outcome(Kind.UNKNOWN, f"no envelope {world.entry(world.bob)} in your mailbox")
    missing = world.dest.decide(world.carol, 999, Decision.REJECT).outcome
    assert missing == Outcome(Kind.UNKNOWN, "no envelope 999 in your mailbox")


def test_origin_refuses_unknown_and_foreign_envelopes(world: World) -> None:
    msgid = world.send(["bob@b.example", "carol@b.example"])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    assert world.origin.on_decision("a" * 26, "bob@b.example", Decision.ACCEPT,
                                    False).kind is Kind.UNKNOWN
    assert world.origin.on_decision(env.envid, "dave@b.example", Decision.ACCEPT,
                                    False).kind is Kind.NOT_A_RECIPIENT
    world.origin.on_decision(env.envid, "bob@b.example", Decision.REJECT, False)
    # Carol has not decided, so the body is still held: only the guard
    # against ACCEPT after REJECT refuses bob's late acceptance.
    assert world.held(msgid)
    late = world.origin.on_decision(env.envid, "bob@b.example", Decision.ACCEPT, False)
    assert late == DecisionOutcome(Kind.ALREADY_REJECTED,
                                   f"{env.envid} was rejected; message deleted")
    assert world.out_states(msgid) == {"bob@b.example": "rejected",
                                       "carol@b.example": "envelope-sent"}


def test_replayed_envelope_is_stored_once(world: World) -> None:
    world.send(["bob@b.example"])
    jobs = world.a.jobs()
    world.deliver_envelopes()
    envid = json.loads(jobs[0].payload)["envid"]
    msg = world.a.out_message(1)
    assert msg is not None
    world.dest.receive_envelope(server=A_HOST, envid=envid, sender=msg.sender,
                                recipients=["bob@b.example"], size=msg.size,
                                block=msg.summary.encode())
    assert len(world.b.mailbox_entries(world.bob.id)) == 1
    assert world.b.quality(A_HOST).messages == 1


def test_spoofed_from_is_refused_before_anything_is_stored(world: World) -> None:
    with pytest.raises(SubmissionError, match=r"<ceo@a\.example> is not one of your identities"):
        world.origin.submit(world.alice, "alice@a.example", ["bob@b.example"],
                            b"From: ceo@a.example\r\n\r\nhi\r\n")
    assert world.a.out_messages_of(world.alice.id) == []
    assert world.a.jobs() == []


def test_quality_indicator_and_thresholds() -> None:
    policy = paper(min_messages=10, alert_below=0.0, block_below=-0.5)
    assert Quality("x", 4, 4).value == 1.0
    assert judge(Quality("x", 9, -9), policy).status == "new"  # too few to judge
    assert judge(Quality("x", 10, 10), policy).status == "ok"
    assert judge(Quality("x", 10, -1), policy).status == "alert"
    assert judge(Quality("x", 10, -6), policy).status == "blocked"
    # Exactly at a threshold is not below it (section 5.3: "below" is strict).
    assert judge(Quality("x", 10, 0), policy) == Verdict("ok", "quality 0.00")
    assert judge(Quality("x", 10, -5), policy) == Verdict(
        "alert", "quality -0.50 is below the alert threshold 0.00")
    assert judge(Quality("x", 10, -1), paper(min_messages=10, alert_below=-0.1)).status == "ok"
    assert judge(Quality("x", 10, -2), paper(min_messages=10, alert_below=-0.1)).status == "alert"


def test_blocked_peer_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path, paper(min_messages=2, block_below=-0.5))
    for _ in range(2):
        world.send(["bob@b.example"])
    world.deliver_envelopes()
    assert world.dest.peer_refusal(A_HOST) is None
    for entry in world.b.mailbox_entries(world.bob.id):
        world.dest.decide(world.bob, entry.id, Decision.REJECT)
    refusal = world.dest.peer_refusal(A_HOST)
    assert refusal is not None and refusal.kind is Kind.PEER_BLOCKED
    assert refusal.reason.startswith(f"{A_HOST} blocked: quality")


def test_repeated_decisions_and_pulls_change_nothing_twice(world: World) -> None:
    """Issue 3, idempotency: a retried decision or pull is answered as the
    first time and creates no second vote, report, list entry or copy."""
    world.send(["bob@b.example"])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    first = world.origin.on_decision(env.envid, "bob@b.example", Decision.ACCEPT, False)
    again = world.origin.on_decision(env.envid, "bob@b.example", Decision.ACCEPT, False)
    assert first.kind is again.kind is Kind.PULL  # not yet RECEIVED
    assert first.pull_message_id == again.pull_message_id is not None
    body = world.a.out_body(first.pull_message_id)
    assert world.origin.on_received(env.envid).kind is Kind.DONE
    assert world.origin.on_received(env.envid).kind is Kind.DONE
    after = world.origin.on_decision(env.envid, "bob@b.example", Decision.ACCEPT, False)
    assert (after.kind, after.pull_message_id) == (Kind.DONE, None)  # nothing left to transfer
    for _ in range(2):
        world.dest.body_pulled(env.id, body)
    # One copy, after one Received field of the pull (protocol.md 8.4).
    stored = world.b.in_body(env.id)
    assert stored is not None and stored.endswith(body)
    assert stored[: -len(body)].startswith(b"Received: from ")
    assert stored[: -len(body)].count(b"\r\n") == 1
    for _ in range(3):
        world.origin.on_decision(env.envid, "bob@b.example", Decision.REJECT_SPAMMER, False)
    assert world.a.spam_reports() == [("alice@a.example", 1)]
    assert [(e.kind, e.address) for e in world.a.list_entries(world.alice.id)] == [
        ("black", "bob@b.example")]


def test_replayed_direct_message_is_stored_once(world: World) -> None:
    world.b.put_inbound(world.bob.id, "white", "alice@a.example", A_HOST, "manual")
    for _ in range(2):
        world.dest.receive_message(server=A_HOST, envid="d" * 26, sender="alice@a.example",
                                   recipients=["bob@b.example"], body=MSG)
    assert len(world.b.mailbox_entries(world.bob.id)) == 1
    assert counters(world.b.quality(A_HOST)) == (1, 1)


def test_a_user_decision_repeated_queues_one_report(world: World) -> None:
    world.send(["bob@b.example"])
    world.deliver_envelopes()
    entry = world.entry(world.bob)
    world.dest.decide(world.bob, entry, Decision.REJECT)
    result = world.dest.decide(world.bob, entry, Decision.REJECT)
    assert result.outcome == Outcome(Kind.UNCHANGED, "already decided")
    assert len(world.b.jobs()) == 1
    assert counters(world.b.quality(A_HOST)) == (1, -1)


LIST_POST = (b"Subject: weekly notes\r\nList-Id: Devs <devs.a.example>\r\n"
             b"List-Unsubscribe: <mailto:devs-leave@a.example>\r\n\r\nNotes.\r\n")


def test_authorizing_a_list_post_authorizes_the_list_not_the_poster(world: World) -> None:
    """Issue 16 item 3: every post to a list has another From; ACCEPT&AUTH on
    one puts the (List-Id, server) pair on the white list, and the next post,
    from someone else, is accepted by it; the poster is not listed."""
    world.send(["bob@b.example"], LIST_POST)
    world.deliver_envelopes()
    first = world.entry(world.bob)
    env = world.b.in_envelope(world.b.mailbox_entry(first).envelope_id)  # type: ignore[union-attr]
    assert env is not None and "List-Id: devs.a.example" in env.block
    world.dest.decide(world.bob, first, Decision.ACCEPT_AUTH)
    assert [(e.kind, e.address, e.server) for e in world.b.list_entries(world.bob.id)] == [
        ("white", "list:devs.a.example", A_HOST)]
    # Another poster, the same list.
    result = world.origin.submit(world.alice, "sales@a.example", ["bob@b.example"], LIST_POST)
    world.deliver_envelopes()
    [second] = [e for e in world.b.mailbox_entries(world.bob.id) if e.id != first]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert (second.state, second.decision, second.reason) == (
        "fetching", "ACCEPT", f"the list devs.a.example is on your white list since {day} "
                              f"(your ACCEPT&AUTH on envelope {first})")
    assert result.msgid
    # The same poster without the list is still asked.
    world.origin.submit(world.alice, "sales@a.example", ["bob@b.example"], MSG)
    world.deliver_envelopes()
    assert [e.state for e in world.b.mailbox_entries(world.bob.id)].count("pending") == 1


def test_a_white_listed_poster_is_accepted_on_their_own_entry_also_through_a_list(
        world: World) -> None:
    """Table 3 asks for the sender's own entry first; a post of theirs to a
    mailing list is accepted by it, the reason naming the sender."""
    world.b.put_inbound(world.bob.id, "white", "alice@a.example", A_HOST, "manual")
    world.send(["bob@b.example"], LIST_POST)
    world.deliver_envelopes()
    [entry] = world.b.mailbox_entries(world.bob.id)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert (entry.state, entry.reason) == (
        "fetching", f"sender is on your white list since {day} (you added it)")


def test_a_black_listed_list_refuses_its_next_post(world: World) -> None:
    world.send(["bob@b.example"], LIST_POST)
    world.deliver_envelopes()
    first = world.entry(world.bob)
    world.dest.decide(world.bob, first, Decision.REJECT_SPAMMER)
    assert [(e.kind, e.address) for e in world.b.list_entries(world.bob.id)] == [
        ("black", "list:devs.a.example")]
    world.origin.submit(world.alice, "sales@a.example", ["bob@b.example"], LIST_POST)
    world.deliver_envelopes()
    [second] = [e for e in world.b.mailbox_entries(world.bob.id) if e.id != first]
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert (second.state, second.reason) == (
        "spammer", f"the list devs.a.example is on your black list since {day} (your "
                   f"REJECT&SPAMMER on envelope {first})")
    # The automatic rejection left the evidence as it was.
    [listing] = world.b.list_entries(world.bob.id)
    assert listing.address == "list:devs.a.example"
    reloaded = world.b.inbound_listing(world.bob.id, "list:devs.a.example", A_HOST)
    assert reloaded is not None and reloaded.source_entry == first
