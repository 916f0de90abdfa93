"""The SQLite backend against its interface: migrations, atomicity, durability."""

from __future__ import annotations

from pathlib import Path

import pytest

from smdp.store import SqliteStore, Store, StoreError, open_store
from smdp.store.sqlite import migrations


def test_migrations_are_numbered_and_applied_once(tmp_path: Path) -> None:
    names = [name for _v, name, _sql in migrations()]
    assert names and names[0].startswith("0001_")
    store = SqliteStore(tmp_path / "s.sqlite3")
    assert store.migrate() == names
    assert store.migrate() == []  # already current
    assert store.schema_version() == migrations()[-1][0]
    store.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store: Store = open_store(str(tmp_path / "s.sqlite3"))
    user = store.create_user("alice@a.example", "h")
    with pytest.raises(RuntimeError), store.transaction():
        store.insert_out_message(msgid="m1", user_id=user.id, sender="alice@a.example",
                                 body=b"x", subject="s", summary="", expires_at=0)
        store.enqueue("send-envelope", "k", "{}")
        raise RuntimeError("crash in the middle")
    assert store.out_message_by_msgid("m1") is None
    assert store.jobs() == []
    store.close()


def test_committed_data_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = open_store(path)
    user = store.create_user("alice@a.example", "h")
    with store.transaction():
        store.insert_out_message(msgid="m1", user_id=user.id, sender="alice@a.example",
                                 body=b"body", subject="s", summary="", expires_at=0)
    store.close()
    again = open_store(path)
    msg = again.out_message_by_msgid("m1")
    assert msg is not None and msg.held and again.out_body(msg.id) == b"body"
    again.close()


def test_identities_are_unique_across_users(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.sqlite3"))
    alice = store.create_user("alice@a.example", "h")
    store.add_identity(alice.id, "sales@a.example")
    with pytest.raises(StoreError):
        store.create_user("sales@a.example", "h")
    bob = store.create_user("bob@a.example", "h")
    with pytest.raises(StoreError):
        store.add_identity(bob.id, "sales@a.example")
    found = store.user_by_address("sales@a.example")
    assert found is not None and found.id == alice.id
    assert store.identities(alice.id) == ["alice@a.example", "sales@a.example"]
    store.close()


def test_a_pair_sits_on_one_list_at_a_time(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.sqlite3"))
    u = store.create_user("bob@b.example", "h")
    with store.transaction():
        store.put_inbound(u.id, "white", "alice@a.example", "smdp.a.example", "auto")
        store.put_inbound(u.id, "black", "alice@a.example", "smdp.a.example", "auto")
        store.put_inbound(u.id, "white", "alice@a.example", "other.example", "manual")
    assert store.inbound_kind(u.id, "alice@a.example", "smdp.a.example") == "black"
    assert store.inbound_kind(u.id, "alice@a.example", "other.example") == "white"
    assert store.inbound_kind(u.id, "alice@a.example", "third.example") is None
    with store.transaction():
        assert store.drop_inbound(u.id, "black", "alice@a.example", "smdp.a.example")
        assert not store.drop_inbound(u.id, "black", "alice@a.example", "smdp.a.example")
    store.close()


def test_one_vote_per_entry(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.sqlite3"))
    u = store.create_user("bob@b.example", "h")
    with store.transaction():
        env = store.insert_in_envelope(envid="e" * 26, origin_server="x", sender="s@x.example",
                                       size=1, block="", subject="", body=None)
        entry = store.insert_mailbox_entry(u.id, env, "bob@b.example", "pending")
        store.count_messages("x", 1)
        store.set_vote(entry, "x", 1)
        store.set_vote(entry, "x", 1)
    assert (store.quality("x").messages, store.quality("x").votes) == (1, 1)
    with store.transaction():
        store.set_vote(entry, "x", -1)
    assert store.quality("x").votes == -1
    assert store.quality("unknown").value == 0.0
    store.close()


def test_queue_retry_and_finish(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.sqlite3"))
    with store.transaction():
        store.enqueue("send-envelope", "k1", '{"envid": "x"}', at=100.0)
        store.enqueue("report-decision", "k2", '{"entry": 1}', at=200.0)
    assert [j.key for j in store.due_jobs(150.0)] == ["k1"]
    job = store.due_jobs(150.0)[0]
    store.retry_job(job.id, 300.0, "peer down")
    assert [j.key for j in store.due_jobs(250.0)] == ["k2"]
    [retried] = [j for j in store.due_jobs(300.0) if j.key == "k1"]
    assert (retried.attempts, retried.last_error) == (1, "peer down")
    store.finish_job(retried.id)
    assert store.queue_size() == 1
    store.close()


def test_claims_one_job_per_key_and_expire(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.sqlite3"))
    with store.transaction():
        store.enqueue("send-envelope", "k1", "1", at=10.0)
        store.enqueue("report-decision", "k1", "2", at=10.0)
        store.enqueue("send-envelope", "k2", "3", at=10.0)
        store.enqueue("send-envelope", "k3", "4", at=99.0)
    first = store.claim_jobs("node-a", 20.0, 10, lease=50.0)
    assert [j.payload for j in first] == ["1", "3"]  # the oldest per key, due ones only
    assert store.claim_jobs("node-b", 30.0, 10, lease=50.0) == []  # all claimed
    store.finish_job(first[0].id)
    assert [j.payload for j in store.claim_jobs("node-b", 30.0, 10, lease=50.0)] == ["2"]
    # node-a died holding k2: its lease runs out and another node takes over.
    assert [j.payload for j in store.claim_jobs("node-b", 71.0, 10, lease=50.0)] == ["3"]
    assert store.release_claims("node-b") == 2
    assert {j.payload for j in store.claim_jobs("node-c", 100.0, 10, lease=50.0)} == {
        "2", "3", "4"}
    store.close()
