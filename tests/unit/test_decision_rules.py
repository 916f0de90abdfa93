"""The state sets of core/decisions.py, one member at a time, through the
services that read them: which decisions close an entry or a recipient
(assumption 6), which ones lose the message, which ones still need the body
(assumption 4), what expires. Each set is checked member by member, so a set
that lost a member fails here.

Table 2's rows themselves are checked literally elsewhere; this file is about
the sets the services decide with.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from smdp.config import QualityPolicy
from smdp.core import decisions as d
from smdp.core.decisions import TABLE_2, OriginSide, RecipientSide
from smdp.core.destination import Destination
from smdp.core.outcomes import Kind
from smdp.mail.body import Body
from smdp.store import SqliteStore
from smdp.store.records import MailboxEntry
from smdp.terms import Decision, EntryState, RecipientState
from tests.unit.test_core_rules import World

REJECTS = [Decision.REJECT, Decision.REJECT_SPAM, Decision.REJECT_SPAMMER]
ACCEPTS = [Decision.ACCEPT, Decision.ACCEPT_AUTH]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _pending_entry(world: World) -> int:
    world.send(["bob@b.example"])
    world.deliver_envelopes()
    return world.entry(world.bob)


@pytest.mark.parametrize("reject", REJECTS)
@pytest.mark.parametrize("accept", ACCEPTS)
def test_destination_refuses_an_accept_after_any_reject(
    world: World, reject: Decision, accept: Decision
) -> None:
    """REJECTED_ENTRIES: rejected, spam and spammer entries all stay closed."""
    entry = _pending_entry(world)
    world.dest.decide(world.bob, entry, reject)
    outcome = world.dest.decide(world.bob, entry, accept).outcome
    assert outcome.kind is Kind.ALREADY_REJECTED


@pytest.mark.parametrize("lost", [EntryState.FAILED, EntryState.EXPIRED])
@pytest.mark.parametrize("accept", ACCEPTS)
def test_destination_cannot_accept_a_lost_entry(
    world: World, lost: EntryState, accept: Decision
) -> None:
    """LOST_ENTRIES: a failed or expired entry can no longer be fetched."""
    entry = _pending_entry(world)
    world.b.update_mailbox_entry(entry, state=lost)
    outcome = world.dest.decide(world.bob, entry, accept).outcome
    assert outcome.kind is Kind.NOT_HELD
    assert outcome.reason.startswith(f"envelope {entry} can no longer be fetched")


@pytest.mark.parametrize("open_state", [EntryState.PENDING, EntryState.FETCHING])
def test_destination_expires_entries_still_open(world: World, open_state: EntryState) -> None:
    """OPEN_ENTRIES: pending and fetching entries expire with their envelope."""
    entry = _pending_entry(world)
    world.b.update_mailbox_entry(entry, state=open_state)
    world.dest.expire(time.time() + 400 * 86400)
    state = world.b.mailbox_entry(entry)
    assert state is not None and state.state is EntryState.EXPIRED


def _envelope_recipient(world: World) -> tuple[str, str]:
    msgid = world.send(["bob@b.example"])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    return msgid, env.envid


@pytest.mark.parametrize("reject", REJECTS)
@pytest.mark.parametrize("accept", ACCEPTS)
def test_origin_refuses_an_accept_after_any_reject(
    world: World, reject: Decision, accept: Decision
) -> None:
    """REJECTED_RECIPIENTS: assumption 6 for each reject-family decision."""
    _, envid = _envelope_recipient(world)
    world.origin.on_decision(envid, "bob@b.example", reject, False)
    outcome = world.origin.on_decision(envid, "bob@b.example", accept, False)
    assert outcome.kind is Kind.ALREADY_REJECTED


@pytest.mark.parametrize("lost", [RecipientState.FAILED, RecipientState.EXPIRED])
def test_origin_answers_an_accept_for_a_lost_recipient(
    world: World, lost: RecipientState
) -> None:
    """LOST_RECIPIENTS: even with the body still held for others, a failed or
    expired recipient is told the message is gone."""
    msgid = world.send(["bob@b.example", "carol@b.example"])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    bob = next(r for r in world.a.out_recipients(msg.id) if r.recipient == "bob@b.example")
    world.a.update_out_recipient(bob.id, lost, "hold time over")
    outcome = world.origin.on_decision(env.envid, "bob@b.example", Decision.ACCEPT, False)
    assert (outcome.kind, outcome.reason) == (
        Kind.NOT_HELD, f"{env.envid} is no longer held: hold time over")


@pytest.mark.parametrize(("accept", "pulling"), [
    (Decision.ACCEPT, RecipientState.ACCEPTED),
    (Decision.ACCEPT_AUTH, RecipientState.AUTHORIZED),
])
def test_received_completes_both_pulling_states(
    world: World, accept: Decision, pulling: RecipientState
) -> None:
    """PULLING_RECIPIENTS: RECEIVED turns accepted and authorized recipients
    into delivered, and then the body can go (NEEDS_BODY)."""
    msgid, envid = _envelope_recipient(world)
    assert world.origin.on_decision(envid, "bob@b.example", accept, False).kind is Kind.PULL
    assert world.out_states(msgid) == {"bob@b.example": pulling}
    assert world.held(msgid)  # NEEDS_BODY: the pull is under way
    world.origin.on_received(envid)
    assert world.out_states(msgid) == {"bob@b.example": RecipientState.DELIVERED}
    assert not world.held(msgid)


@pytest.mark.parametrize("state", [RecipientState.QUEUED, RecipientState.ENVELOPE_SENT,
                                   RecipientState.ACCEPTED, RecipientState.AUTHORIZED])
def test_the_body_is_held_while_any_recipient_needs_it(
    world: World, state: RecipientState
) -> None:
    """NEEDS_BODY, member by member: carol rejects (her last word), bob is in
    ``state``; the body stays, and it expires with bob when the hold time ends."""
    msgid = world.send(["bob@b.example", "carol@b.example"])
    world.deliver_envelopes()
    env = world.b.in_envelope(1)
    assert env is not None
    msg = world.a.out_message_by_msgid(msgid)
    assert msg is not None
    bob = next(r for r in world.a.out_recipients(msg.id) if r.recipient == "bob@b.example")
    world.a.update_out_recipient(bob.id, state)
    world.origin.on_decision(env.envid, "carol@b.example", Decision.REJECT, False)
    assert world.held(msgid)
    assert world.origin.expire(time.time() + 400 * 86400) == 1
    assert world.out_states(msgid) == {"bob@b.example": RecipientState.EXPIRED,
                                       "carol@b.example": RecipientState.REJECTED}
    assert not world.held(msgid)


def test_table_2_rows_cannot_be_changed_by_a_caller() -> None:
    """Table 2's rows are shared by every decision: they are frozen values
    (and slotted: no attribute can be added to one either)."""
    for recipient, origin in TABLE_2.values():
        for row in (recipient, origin):
            with pytest.raises(dataclasses.FrozenInstanceError):
                row.state = row.state  # type: ignore[misc]
            assert not hasattr(row, "__dict__")
    assert {type(r) for r, _ in TABLE_2.values()} == {RecipientSide}
    assert {type(o) for _, o in TABLE_2.values()} == {OriginSide}


@pytest.mark.parametrize("other", list(EntryState))
def test_smtp_bytes_are_kept_while_any_recipient_may_still_read_them(
        tmp_path: Path, other: EntryState) -> None:
    """KEEPS_SMTP_BODY, member by member: mail that arrived by SMTP for bob
    and carol; bob rejects it; its bytes stay exactly while carol's entry is
    undecided (pending), accepted, or being fetched."""
    store = SqliteStore(tmp_path / "b.sqlite3")
    store.migrate()
    dest = Destination(store, quality=QualityPolicy(), hostname="smdp.b.example")
    bob = store.create_user("bob@b.example", "x")
    carol = store.create_user("carol@b.example", "x")
    arrival = dest.receive_smtp(
        envid="e1", sender="friend@c.example", verified_domain=None, client_prefix=None,
        auth_results="smdp.b.example; none", recipients=["bob@b.example", "carol@b.example"],
        body=Body.of(b"From: friend@c.example\r\nSubject: s\r\n\r\nhi\r\n"),
        expires_at=time.time() + 3600)
    assert arrival.envelope_id is not None
    [carol_entry] = store.mailbox_entries(carol.id, None)
    store.update_mailbox_entry(carol_entry.id, state=other, decision=None, reason="")
    [bob_entry] = store.mailbox_entries(bob.id, None)
    assert dest.decide(bob, bob_entry.id, Decision.REJECT).outcome.ok
    kept = store.in_body(arrival.envelope_id) is not None
    assert kept is (other in (EntryState.PENDING, EntryState.FETCHING, EntryState.ACCEPTED))


def test_each_option_is_spelled_the_papers_way_and_as_a_word() -> None:
    """Table 1's names (reasons, `smdp admin why`), and the words of the
    command line, the web API and the metrics."""
    assert {d.table_1: d.word for d in Decision} == {
        "ACCEPT": "accept", "ACCEPT&AUTH": "accept-auth", "REJECT": "reject",
        "REJECT&SPAM": "reject-spam", "REJECT&SPAMMER": "reject-spammer"}


def _member(entry_id: int, state: EntryState, decision: Decision | None) -> MailboxEntry:
    return MailboxEntry(entry_id, entry_id, 1, "team@b.example", state, decision, "", None, False)


def test_a_groups_rejection_waits_for_its_members_then_the_strongest_goes() -> None:
    """docs/lists.md: members of a local group share the recipient the origin
    knows. An acceptance goes at once; a rejection only once no member is
    undecided or accepted, and then the strongest of them; a member who never
    decides holds the others' rejections until the envelope expires."""
    spam = _member(1, EntryState.SPAM, Decision.REJECT_SPAM)
    waiting = _member(2, EntryState.PENDING, None)
    plain = _member(3, EntryState.REJECTED, Decision.REJECT)
    took = _member(4, EntryState.ACCEPTED, Decision.ACCEPT)
    assert d.reported_entry(took, Decision.ACCEPT, [spam, took]) == 4
    assert d.reported_entry(spam, Decision.REJECT_SPAM, [spam, waiting, plain]) is None
    assert d.reported_entry(plain, Decision.REJECT, [spam, plain, took]) is None
    assert d.reported_entry(plain, Decision.REJECT, [spam, plain]) == 1  # SPAM over REJECT
    spammer = _member(5, EntryState.SPAMMER, Decision.REJECT_SPAMMER)
    assert d.reported_entry(plain, Decision.REJECT, [plain, spammer, spam]) == 5
    alone = _member(6, EntryState.REJECTED, Decision.REJECT)
    assert d.reported_entry(alone, Decision.REJECT, [alone]) == 6
