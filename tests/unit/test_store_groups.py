"""Migration 0015's tables on both backends: unsubscribe requests, and local
groups (aliases and lists) with the owner's view of each post."""

from __future__ import annotations

import time

from smdp.store.records import GroupDelivery
from smdp.terms import EntryState, RecipientState
from tests.unit.test_store import Backend
from tests.unit.test_store import backend as backend_fixture

store_backend = backend_fixture  # both backends, as in test_store.py


def test_an_unsubscribe_request_is_made_once_and_its_outcome_kept(store_backend: Backend) -> None:
    store = store_backend.open()
    bob = store.create_user("bob@b.example", "h")
    with store.transaction():
        env = store.insert_in_envelope(envid="e1", origin_server="smdp.a.example",
                                       sender="news@a.example", size=10, block="Subject: x\r\n",
                                       subject="x", body=None)
        entry = store.insert_mailbox_entry(bob.id, env, "bob@b.example", EntryState.PENDING)
    assert store.unsubscribe_of_entry(entry) is None
    with store.transaction():
        made = store.insert_unsubscribe(entry, bob.id, "one-click", "https://l.example/u",
                                        "pending")
        again = store.insert_unsubscribe(entry, bob.id, "mailto", "x@l.example", "done")
    assert again == made and (made.method, made.state, made.detail) == (
        "one-click", "pending", "")
    before = made.updated_at
    time.sleep(0.01)
    with store.transaction():
        store.set_unsubscribe_state(made.id, "done", "answered 200")
    now = store.unsubscribe(made.id)
    assert now is not None and (now.state, now.detail) == ("done", "answered 200")
    assert now.updated_at > before and store.unsubscribe(made.id + 1) is None
    assert store.unsubscribe_of_entry(entry) == now
    store.close()


def test_groups_their_members_and_the_owners_view(store_backend: Backend) -> None:
    store = store_backend.open()
    owner = store.create_user("alice@a.example", "h")
    with store.transaction():
        team = store.create_group("team@a.example", "list", owner.id)
        store.create_group("all@a.example", "alias", None)
        assert store.add_group_member(team, "bob@b.example")
        assert store.add_group_member(team, "carol@c.example")
        assert not store.add_group_member(team, "bob@b.example")
    group = store.group("team@a.example")
    assert group is not None and (group.id, group.kind, group.owner_id) == (
        team, "list", owner.id)
    assert [g.address for g in store.groups()] == ["all@a.example", "team@a.example"]
    assert store.group_members(team) == ["bob@b.example", "carol@c.example"]
    with store.transaction():
        for n in (1, 2):
            message = store.insert_out_message(
                msgid=f"m{n}", user_id=owner.id, sender="alice@a.example", body=b"x",
                subject=f"post {n}", summary="", expires_at=time.time() + 60)
            store.add_group_post(message, team)
            store.add_group_post(message, team)  # once per pair
            for rcpt in ("carol@c.example", "bob@b.example"):
                store.insert_out_recipient(message, rcpt, rcpt.split("@")[1],
                                           RecipientState.ENVELOPE_SENT, None)
        bob_rcpt = next(r for r in store.out_recipients(message)
                        if r.recipient == "bob@b.example")
        store.update_out_recipient(bob_rcpt.id, RecipientState.REJECTED,
                                   "rejected by recipient")
    seen = store.group_deliveries(team)
    assert [(d.msgid, d.recipient, d.state, d.detail) for d in seen] == [
        ("m2", "bob@b.example", RecipientState.REJECTED, "rejected by recipient"),
        ("m2", "carol@c.example", RecipientState.ENVELOPE_SENT, ""),
        ("m1", "bob@b.example", RecipientState.ENVELOPE_SENT, ""),
        ("m1", "carol@c.example", RecipientState.ENVELOPE_SENT, "")]
    assert store.group_deliveries(team, limit=1) == seen[:2]
    assert isinstance(seen[0], GroupDelivery) and seen[0].subject == "post 2"
    with store.transaction():
        assert store.drop_group_member(team, "bob@b.example")
        assert not store.drop_group_member(team, "bob@b.example")
        assert store.drop_group("team@a.example")
        assert not store.drop_group("team@a.example")
    assert store.group("team@a.example") is None and store.group_deliveries(team) == []
    store.close()
