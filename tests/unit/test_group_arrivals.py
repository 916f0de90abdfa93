"""Mail from another server to a local group (docs/lists.md, "Mail from
other servers"), at the destination's core on real SQLite stores, no wire:
one entry per local member under the group's address, each member's own
decision and Table 3, one pull per envelope, and the origin told of a
rejection only once no member still may accept."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smdp.core import groups
from smdp.core.destination import Destination
from smdp.mail.body import Body
from smdp.store.records import User
from smdp.terms import Decision, EntryState, ListedBy, ListKind
from tests.unit.test_core_rules import A_HOST, World, counters

INFO = "info@b.example"


@pytest.fixture
def world(tmp_path: Path) -> World:
    """alice@a.example writes to info@b.example, an alias for bob and carol
    (and erin at c.example, whom b.example never forwards to)."""
    world = World(tmp_path)
    groups.create(world.b, ("b.example",), INFO, "alias", None)
    groups.add_members(world.b, INFO, ["bob@b.example", "carol@b.example", "erin@c.example"])
    return world


def entry_of(world: World, user: User) -> tuple[int, str, EntryState]:
    entries = world.b.mailbox_entries(user.id)
    assert len(entries) == 1
    return entries[0].id, entries[0].recipient, entries[0].state


def queued(world: World) -> int:
    return sum(1 for job in world.b.jobs() if job.kind == "report-decision")


def test_each_local_member_gets_an_entry_under_the_groups_address(world: World) -> None:
    msgid = world.send([INFO])
    world.deliver_envelopes()
    bob, carol = entry_of(world, world.bob), entry_of(world, world.carol)
    assert (bob[1:], carol[1:]) == ((INFO, EntryState.PENDING), (INFO, EntryState.PENDING))
    # Each member's decision is a vote: each counts as a message.
    assert counters(world.b.quality(A_HOST)) == (2, 0)
    world.dest.decide(world.bob, bob[0], Decision.ACCEPT)
    assert len(world.report_decisions()) == 1  # the one pull
    assert world.out_states(msgid) == {INFO: "delivered"}
    world.dest.decide(world.carol, carol[0], Decision.ACCEPT)
    assert world.report_decisions() == []  # the copy held here: BODY=HELD, no second pull
    assert entry_of(world, world.carol)[2] is EntryState.ACCEPTED
    assert world.out_states(msgid) == {INFO: "delivered"}
    assert counters(world.b.quality(A_HOST)) == (2, 2)


def test_a_rejection_waits_for_the_other_members(world: World) -> None:
    msgid = world.send([INFO])
    world.deliver_envelopes()
    bob, carol = entry_of(world, world.bob)[0], entry_of(world, world.carol)[0]
    world.dest.decide(world.bob, bob, Decision.REJECT_SPAM)
    # Carol has not decided: the origin must keep the message for her.
    assert queued(world) == 0 and world.held(msgid)
    world.dest.decide(world.carol, carol, Decision.REJECT)
    assert queued(world) == 1
    world.report_decisions()
    # The strongest rejection of the two is the one the origin hears.
    assert world.out_states(msgid) == {INFO: "spam"}
    assert not world.held(msgid)


def test_one_members_acceptance_keeps_the_others_rejection_from_the_origin(
        world: World) -> None:
    msgid = world.send([INFO])
    world.deliver_envelopes()
    bob, carol = entry_of(world, world.bob)[0], entry_of(world, world.carol)[0]
    world.dest.decide(world.bob, bob, Decision.REJECT)
    world.dest.decide(world.carol, carol, Decision.ACCEPT)
    assert len(world.report_decisions()) == 1
    world.dest.decide(world.bob, bob, Decision.REJECT_SPAMMER)
    assert queued(world) == 0
    assert world.out_states(msgid) == {INFO: "delivered"}
    assert entry_of(world, world.carol)[2] is EntryState.ACCEPTED
    assert entry_of(world, world.bob)[2] is EntryState.SPAMMER


def test_table_3_is_each_members_own(world: World) -> None:
    world.b.put_inbound(world.bob.id, ListKind.BLACK, "alice@a.example", A_HOST,
                        ListedBy.MANUAL)
    world.b.put_inbound(world.carol.id, ListKind.WHITE, "alice@a.example", A_HOST,
                        ListedBy.MANUAL)
    msgid = world.send([INFO])
    world.deliver_envelopes()
    assert entry_of(world, world.bob)[2] is EntryState.SPAMMER
    assert entry_of(world, world.carol)[2] is EntryState.FETCHING
    # Carol's acceptance goes; bob's SPAMMER, decided first, never does.
    assert queued(world) == 1
    assert len(world.report_decisions()) == 1
    assert world.out_states(msgid) == {INFO: "delivered"}
    assert entry_of(world, world.carol)[2] is EntryState.ACCEPTED


def test_a_member_also_named_by_their_own_address_has_an_entry_for_each(
        world: World) -> None:
    world.send([INFO, "bob@b.example"])
    world.deliver_envelopes()
    assert sorted(e.recipient for e in world.b.mailbox_entries(world.bob.id)) == [
        "bob@b.example", INFO]
    # Bob's entry under his own address is his alone: its rejection goes at once.
    mine = next(e.id for e in world.b.mailbox_entries(world.bob.id)
                if e.recipient == "bob@b.example")
    world.dest.decide(world.bob, mine, Decision.REJECT)
    assert queued(world) == 1


def test_smtp_mail_to_a_group_is_held_for_each_local_member(tmp_path: Path) -> None:
    world = World(tmp_path)
    dest = Destination(world.b, quality=world.dest.quality_policy, hostname="smdp.b.example")
    groups.create(world.b, ("b.example",), INFO, "alias", None)
    groups.add_members(world.b, INFO, ["bob@b.example", "carol@b.example"])
    world.b.put_inbound(world.carol.id, ListKind.BLACK, "friend@c.example", "c.example",
                        ListedBy.MANUAL)
    arrival = dest.receive_smtp(
        envid="e1", sender="friend@c.example", verified_domain=None,
        auth_results="smdp.b.example; none", recipients=[INFO],
        body=Body.of(b"From: friend@c.example\r\nSubject: hi\r\n\r\nhello\r\n"),
        expires_at=time.time() + 3600)
    assert arrival.held == (f"{INFO} (bob@b.example)",)
    assert arrival.refused == (f"{INFO} (carol@b.example)",)
    assert entry_of(world, world.bob)[1:] == (INFO, EntryState.PENDING)
    assert world.b.mailbox_entries(world.carol.id) == []
