"""Pending notices (issue 10, item 7 b) when the mailbox changed under
notify_pending: it lists the users with pending entries outside any
transaction, then handles each user in a transaction of its own, so a user's
entries may be decided in between; and on PostgreSQL (READ COMMITTED) an
envelope may be purged by another node between the read of a user's entries
and the read of the envelope. Neither may count a notice that was not sent,
nor lose the other envelopes from the notice (issue 17: the two survivors of
the "destination" mutation target)."""

from __future__ import annotations

import sqlite3
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

from smdp.terms import Decision, EntryState
from tests.unit.test_core_rules import World

BOB = "bob@b.example"
T, HOUR = 1_000_000.0, 3600.0


def notices(world: World) -> list[str]:
    """The text of the pending notices in bob's mailbox."""
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


def test_a_user_who_decided_everything_since_the_list_gets_no_notice(tmp_path: Path) -> None:
    """The per-user step run after bob decided his one pending envelope (as
    when he does so between notify_pending's list and his transaction):
    nothing is sent and nothing is counted."""
    world = World(tmp_path)
    world.send([BOB])
    world.deliver_envelopes()
    assert world.b.users_with_entries(EntryState.PENDING) == [world.bob.id]
    world.dest.decide(world.bob, world.entry(world.bob), Decision.REJECT)
    with world.b.transaction():
        assert world.dest._notify_user(world.bob.id, T, HOUR) is False
    assert notices(world) == []
    assert world.b.pending_notice(world.bob.id) is None


def test_an_entry_whose_envelope_is_gone_leaves_the_others_in_the_notice(
    tmp_path: Path,
) -> None:
    """The first of bob's two pending envelopes disappears as a concurrent
    purge would make it between the two reads (here: deleted with the
    foreign keys off, the state the second read then sees): the notice
    still lists the second one."""
    world = World(tmp_path)
    world.send([BOB])
    world.deliver_envelopes()
    first = world.b.mailbox_entries(world.bob.id, [EntryState.PENDING])[0]
    world.send([BOB])
    world.deliver_envelopes()
    second = world.entry(world.bob)
    assert second != first.id
    raw = sqlite3.connect(tmp_path / "b.sqlite3")
    with raw:
        raw.execute("DELETE FROM in_envelopes WHERE id=?", (first.envelope_id,))
    raw.close()
    assert world.b.in_envelope(first.envelope_id) is None
    assert world.dest.notify_pending(T, HOUR) == 1
    [text] = notices(world)
    assert f"  Envelope {second}  (new)\n" in text
    assert f"  Envelope {first.id}" not in text
