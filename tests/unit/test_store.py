"""Both storage backends against their interface: migrations, atomicity,
durability, lists, votes, the queue. Every test runs on SQLite and on
PostgreSQL (a throwaway cluster, see tests/pg.py) unless its name says which.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from smdp.config import parse_config
from smdp.core.decisions import NEEDS_BODY, OPEN_ENTRIES
from smdp.mail.body import CHUNK_SIZE, Body, BodyWriter
from smdp.mail.trace import delivery_fields
from smdp.store import SqliteStore, Store, StoreError, open_store
from smdp.store.records import ImapMessage
from smdp.store.sql import SqlStore
from smdp.store.sqlite import migrations
from smdp.terms import EntryState, RecipientState, RouteKind
from tests.conditions import wait_until

# The states the rules pass to the store's expiry (core/origin.py expire,
# core/destination.py expire): the store spells none of them itself.
OUT_EXPIRY = {"open_states": NEEDS_BODY, "expired": RecipientState.EXPIRED,
              "detail": "expired: no decision before the message expired"}
IN_EXPIRY = {"undecided": EntryState.PENDING, "open_states": OPEN_ENTRIES,
             "expired": EntryState.EXPIRED, "reason": "the origin no longer holds it: it expired"}


@dataclass
class Backend:
    """Where one test's store lives; each call opens another connection to it."""

    name: str
    open: Callable[[], Store]  # through open_store: connected and migrated
    open_raw: Callable[[], Store]  # connected only


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "s.sqlite3"
        return Backend("sqlite", lambda: open_store(str(path)), lambda: SqliteStore(path))
    from smdp.store.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    config = parse_config({"server": {"hostname": "smdp.a.example", "domains": ["a.example"]},
                           "store": {"backend": "postgresql", "dsn": dsn}}, tmp_path)
    return Backend("postgresql", lambda: open_store(config), lambda: PostgresStore(dsn))


def backend_migrations(backend: Backend) -> list[tuple[int, str, str]]:
    if backend.name == "sqlite":
        return migrations()
    from smdp.store import postgres

    return postgres.migrations()


def test_migrations_are_numbered_and_applied_once(backend: Backend) -> None:
    names = [name for _v, name, _sql in backend_migrations(backend)]
    assert names and names[0].startswith("0001_")
    store = backend.open_raw()
    assert store.migrate() == names
    assert store.migrate() == []  # already current
    assert store.schema_version() == backend_migrations(backend)[-1][0]
    store.close()


def test_both_dialects_have_the_same_migrations() -> None:
    from smdp.store import postgres

    assert [(v, n) for v, n, _ in postgres.migrations()] == [(v, n) for v, n, _ in migrations()]


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite3")
    db = store._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_a_failed_transaction_leaves_nothing(backend: Backend) -> None:
    store: Store = backend.open()
    user = store.create_user("alice@a.example", "h")
    with pytest.raises(RuntimeError, match="crash in the middle"), store.transaction():
        store.insert_out_message(msgid="m1", user_id=user.id, sender="alice@a.example",
                                 body=b"x", subject="s", summary="", expires_at=0)
        store.enqueue("send-envelope", "k", "{}")
        raise RuntimeError("crash in the middle")
    assert store.out_message_by_msgid("m1") is None
    assert store.jobs() == []
    store.close()


def test_the_store_counts_statements_transactions_and_commits(backend: Backend) -> None:
    """Issue 15 item 1: a known sequence of calls gives known counts (what
    /metrics shows and ``make bench`` divides by the messages)."""
    store = backend.open()

    def counts() -> tuple[int, int, int]:
        return store.statements, store.transactions, store.commits

    start = counts()

    def since() -> tuple[int, ...]:
        return tuple(x - y for x, y in zip(counts(), start, strict=True))

    user = store.create_user("alice@a.example", "h")  # check, insert, insert: one commit
    assert since() == (3, 1, 1)
    store.user_by_address("alice@a.example")  # a read alone commits nothing
    assert since() == (4, 1, 1)
    store.set_admin(user.id, True)  # a write alone is its own commit
    assert since() == (5, 1, 2)
    store.set_admin(user.id + 1000, True)  # it changed no row: nothing to flush
    assert since() == (6, 1, 2)
    with store.transaction():
        store.user_by_id(user.id)
        with store.transaction():  # nested: one transaction
            store.is_admin(user.id)
    assert since() == (8, 2, 2)  # committed, but wrote nothing
    with store.transaction():
        store.enqueue("send-envelope", "k1", "{}")
        store.enqueue("send-envelope", "k2", "{}")
    assert since() == (10, 3, 3)  # two writes, one commit
    with pytest.raises(RuntimeError, match="rolled back"), store.transaction():
        store.enqueue("send-envelope", "k3", "{}")
        raise RuntimeError("rolled back")
    assert since() == (11, 3, 3)  # the statement ran; nothing committed
    store.close()


def test_nested_transactions_join_the_outer_one(backend: Backend) -> None:
    store = backend.open()
    user = store.create_user("alice@a.example", "h")
    with pytest.raises(RuntimeError, match="the outer one fails"), store.transaction():
        with store.transaction():
            store.enqueue("send-envelope", "k", "{}")
        store.insert_out_message(msgid="m1", user_id=user.id, sender="alice@a.example",
                                 body=b"x", subject="s", summary="", expires_at=0)
        raise RuntimeError("the outer one fails after the inner one ended")
    assert store.jobs() == [] and store.out_message_by_msgid("m1") is None
    store.close()


def test_committed_data_survives_reopening(backend: Backend) -> None:
    store = backend.open()
    user = store.create_user("alice@a.example", "h")
    with store.transaction():
        store.insert_out_message(msgid="m1", user_id=user.id, sender="alice@a.example",
                                 body=b"body", subject="s", summary="", expires_at=0)
    store.close()
    again = backend.open()
    msg = again.out_message_by_msgid("m1")
    assert msg is not None and msg.held and again.out_body(msg.id) == b"body"
    again.close()


def test_identities_are_unique_across_users(backend: Backend) -> None:
    store = backend.open()
    alice = store.create_user("alice@a.example", "h")
    store.add_identity(alice.id, "sales@a.example")
    with pytest.raises(StoreError, match=r"^sales@a\.example already belongs to a user$"):
        store.create_user("sales@a.example", "h")
    bob = store.create_user("bob@a.example", "h")
    with pytest.raises(StoreError, match=r"^sales@a\.example already belongs to a user$"):
        store.add_identity(bob.id, "sales@a.example")
    found = store.user_by_address("sales@a.example")
    assert found is not None and found.id == alice.id
    assert store.identities(alice.id) == ["alice@a.example", "sales@a.example"]
    with pytest.raises(StoreError, match="is the main identity"):
        store.remove_identity(alice.id, "alice@a.example")
    with pytest.raises(StoreError, match="is not an identity of this user"):
        store.remove_identity(bob.id, "sales@a.example")
    store.remove_identity(alice.id, "sales@a.example")
    assert store.user_by_address("sales@a.example") is None
    store.close()


def test_a_pair_sits_on_one_list_at_a_time(backend: Backend) -> None:
    store = backend.open()
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


def test_list_entries_sort_bytewise(backend: Backend) -> None:
    # SQLite compares text byte by byte; PostgreSQL must not follow a locale.
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    with store.transaction():
        for address in ("b@x.example", "A@x.example", "_z@x.example", "a@x.example"):
            store.put_inbound(u.id, "white", address, "s", "manual")
            store.put_outbound(u.id, "black", address, "auto")
        store.touch_inbound(u.id, "a@x.example", "s")
    entries = store.list_entries(u.id)
    order = ["A@x.example", "_z@x.example", "a@x.example", "b@x.example"]
    assert [(e.direction, e.address) for e in entries] == (
        [("in", a) for a in order] + [("out", a) for a in order])
    assert {e.uses for e in entries if e.address == "a@x.example"} == {1, 0}
    used = [e for e in entries if e.last_used is not None]
    assert [(e.direction, e.address) for e in used] == [("in", "a@x.example")]
    assert entries[-1].server is None
    store.close()


def test_api_tokens_kept_by_hash_and_their_owners(backend: Backend) -> None:
    """Migration 0016: tokens by hash, per user, touched, revoked one by one
    or all at once."""
    store = backend.open()
    bob = store.create_user("bob@b.example", "h")
    carol = store.create_user("carol@b.example", "h")
    first = store.add_api_token(bob.id, "script", "h1", 100.0)
    second = store.add_api_token(bob.id, "phone", "h2", 101.0)
    store.add_api_token(carol.id, "carol's", "h3", 102.0)
    assert [(t.name, t.created_at, t.last_used) for t in store.api_tokens(bob.id)] == [
        ("script", 100.0, None), ("phone", 101.0, None)]
    store.touch_api_token(first, 150.0)
    found = store.api_token_by_hash("h1")
    assert found is not None and (found.user_id, found.last_used) == (bob.id, 150.0)
    assert store.api_token_by_hash("nothing") is None
    assert not store.drop_api_token(carol.id, second)  # not hers
    assert store.drop_api_token(bob.id, second)
    assert store.drop_api_tokens(bob.id) == 1
    assert store.api_tokens(bob.id) == [] and len(store.api_tokens(carol.id)) == 1
    store.close()


def test_sent_changed_watches_the_newest_messages(backend: Backend) -> None:
    """The Sent view's live event: the latest change among the recipients
    of the user's ``newest`` messages, and only theirs."""
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    other = store.create_user("carol@b.example", "h")
    assert store.sent_changed(u.id, 200) is None
    with store.transaction():
        for n, owner in enumerate((u, u, u, other)):
            message = store.insert_out_message(
                msgid=f"m{n}", user_id=owner.id, sender="x@b.example", body=b"x",
                subject="", summary="", expires_at=9e9)
            store.insert_out_recipient(message, f"r{n}@a.example", "a.example", "queued",
                                       None)
    before = store.sent_changed(u.id, 200)
    assert before is not None
    oldest = store.out_recipients(store.out_messages_of(u.id)[-1].id)[0]
    theirs = store.out_recipients(store.out_messages_of(other.id)[0].id)[0]
    time.sleep(0.01)
    store.update_out_recipient(theirs.id, "delivered")
    assert store.sent_changed(u.id, 200) == before  # another user's message
    store.update_out_recipient(oldest.id, "delivered")
    assert store.sent_changed(u.id, 2) == before  # outside the newest two
    changed = store.sent_changed(u.id, 3)
    assert changed is not None and changed > before
    store.close()


def test_one_vote_per_entry(backend: Backend) -> None:
    store = backend.open()
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
    # A forgery (proof of origin failed) is a message voted -1 with no entry.
    with store.transaction():
        store.count_forged("x", 2)
    assert (store.quality("x").messages, store.quality("x").votes) == (3, -3)
    with store.transaction():
        store.count_forged("rogue", 1)
    assert (store.quality("rogue").messages, store.quality("rogue").votes) == (1, -1)
    store.close()


# -- quality that ages (issue 16 item 1, migration 0014) --------------------------


class Clock:
    """A stand-in for the store's quality clock."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pending(store: Store, user_id: int, envid: str, server: str = "x") -> int:
    with store.transaction():
        env = store.insert_in_envelope(envid=envid, origin_server=server,
                                       sender="s@x.example", size=1, block="", subject="",
                                       body=None)
        entry = store.insert_mailbox_entry(user_id, env, "u@b.example", "pending")
        store.count_messages(server, 1)
    return entry


def test_a_vote_returns_each_keys_quality_as_a_read_after_it_would(backend: Backend) -> None:
    """set_vote returns what quality() reads next, the deciders included, so
    the destination judges again without reading (issue 15 item 1)."""
    store = backend.open()
    clock = Clock()
    store.clock, store.half_life = clock, 100.0
    u = store.create_user("bob@b.example", "h")
    entry = _pending(store, u.id, "c" * 26)
    with store.transaction():
        store.count_messages("sender:x/s@x.example", 1)
    clock.now += 50.0
    with store.transaction():
        after = store.set_vote(entry, "x", -1, also=["sender:x/s@x.example"])
    assert after is not None
    assert [q.server for q in after] == ["x", "sender:x/s@x.example"]
    assert after == [store.quality("x"), store.quality("sender:x/s@x.example")]
    assert after[0].deciders == 1 and after[0].votes == -1
    with store.transaction():
        assert store.set_vote(entry, "x", -1, also=["sender:x/s@x.example"]) is None
        changed = store.set_vote(entry, "x", 1, also=["sender:x/s@x.example"])
    assert changed == [store.quality("x"), store.quality("sender:x/s@x.example")]
    store.close()


def test_quality_counters_age_on_write_and_on_read(backend: Backend) -> None:
    """Each message and vote weighs half as much after a half-life; the
    counted Messages and Votes stay as they were; a vote weighs what its
    message weighs (aged from the message's arrival)."""
    store = backend.open()
    clock = Clock()
    store.clock, store.half_life = clock, 100.0
    u = store.create_user("bob@b.example", "h")
    old = _pending(store, u.id, "a" * 26)
    with store.transaction():
        store.set_vote(old, "x", -1)
    clock.now += 100.0  # one half-life
    q = store.quality("x")
    assert (q.messages, q.votes) == (1, -1)
    assert q.recent_messages == pytest.approx(0.5) and q.recent_votes == pytest.approx(-0.5)
    assert q.value == -1.0
    new = _pending(store, u.id, "b" * 26)
    # Not judged yet: the aged counters do not count it.
    assert store.quality("x").recent_messages == pytest.approx(0.5)
    clock.now += 100.0  # the new message's vote comes a half-life after it
    with store.transaction():
        store.set_vote(new, "x", 1)
    q = store.quality("x")
    assert (q.messages, q.votes) == (2, 0)
    assert q.recent_messages == pytest.approx(0.75)  # 0.25 + 0.5
    assert q.recent_votes == pytest.approx(0.25)  # -0.25 + 0.5
    assert q.value == pytest.approx(1 / 3, abs=1e-6)
    # 0: never ages, the paper's counters.
    store.half_life = 0.0
    clock.now += 10_000.0
    assert store.quality("x").recent_messages == pytest.approx(0.75)
    store.close()


def test_counters_that_never_age_are_the_papers(backend: Backend) -> None:
    """half_life 0: a message counts in the aged counters on arrival, as in
    Messages(X), and its vote does not count it again."""
    store = backend.open()
    store.clock, store.half_life = Clock(), 0.0
    u = store.create_user("bob@b.example", "h")
    entry = _pending(store, u.id, "p" * 26)
    _pending(store, u.id, "q" * 26)
    assert store.quality("x").recent_messages == 2.0
    with store.transaction():
        store.set_vote(entry, "x", -1)
    q = store.quality("x")
    assert (q.recent_messages, q.recent_votes, q.value) == (2.0, -1.0, -0.5)
    store.close()


def test_very_old_counts_weigh_nothing(backend: Backend) -> None:
    """Past a thousand half-lives a weight is 0 (PostgreSQL's power() would
    underflow), never an error."""
    store = backend.open()
    clock = Clock()
    store.clock, store.half_life = clock, 1.0
    with store.transaction():
        store.count_forged("x", 4)
    clock.now += 5000.0
    assert store.quality("x").recent_messages == 0.0
    with store.transaction():
        store.count_forged("x", 1)
    q = store.quality("x")
    assert (q.messages, q.recent_messages, q.value) == (5, 1.0, -1.0)
    store.close()


def test_deciders_are_distinct_recent_rejecters(backend: Backend) -> None:
    """A user counts once however often they reject, and only while their
    latest rejection is younger than a half-life; an accept is no decider."""
    store = backend.open()
    clock = Clock()
    store.clock, store.half_life = clock, 100.0
    bob = store.create_user("bob@b.example", "h")
    carol = store.create_user("carol@b.example", "h")
    dave = store.create_user("dave@b.example", "h")
    for n in range(3):
        with store.transaction():
            store.set_vote(_pending(store, bob.id, f"b{n:025d}"), "x", -1, also=("y",))
    assert store.quality("x").deciders == 1 and store.quality("y").deciders == 1
    with store.transaction():
        store.set_vote(_pending(store, dave.id, "d" * 26), "x", 1)
    assert store.quality("x").deciders == 1
    clock.now += 60.0
    with store.transaction():
        store.set_vote(_pending(store, carol.id, "c" * 26), "x", -1)
    assert store.quality("x").deciders == 2
    clock.now += 40.0  # bob's rejections are a half-life old: still counted
    assert store.quality("x").deciders == 2
    clock.now += 1.0
    assert store.quality("x").deciders == 1
    assert store.quality("y").deciders == 0
    store.half_life = 0.0  # nothing ages: every rejecter ever
    assert store.quality("x").deciders == 2
    store.close()


def test_standing_and_probation_are_kept(backend: Backend) -> None:
    store = backend.open()
    clock = Clock(86400.0 * 20000 + 10)
    store.clock = clock
    with store.transaction():
        store.count_messages("x", 1)
    assert store.quality("x").standing == "new"
    store.set_standing("x", "blocked")
    q = store.quality("x")
    assert (q.standing, q.standing_at) == ("blocked", clock.now)
    # Two a day; the count starts again the next (UTC) day.
    assert [store.take_probation("x", 2) for _ in range(3)] == [True, True, False]
    clock.now += 86400.0 - 20
    assert not store.take_probation("x", 2)
    clock.now += 20.0
    assert [store.take_probation("x", 2) for _ in range(3)] == [True, True, False]
    assert not store.take_probation("unknown", 2)
    store.close()


def test_sender_keys_are_listed_apart(backend: Backend) -> None:
    store = backend.open()
    with store.transaction():
        for key in ("smdp.a.example", "sender:smdp.a.example/m@a.example", "smtp:c.example"):
            store.count_messages(key, 1)
    assert [q.server for q in store.all_quality()] == ["smdp.a.example", "smtp:c.example"]
    assert [q.server for q in store.sender_quality()] == [
        "sender:smdp.a.example/m@a.example"]
    store.close()


def test_migration_0014_keeps_counters_and_rejecters(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at 0013 migrates: the aged counters start as the counted
    ones and the users who had rejected a peer's mail are its deciders."""
    import smdp.store.postgres
    import smdp.store.sqlite

    module = smdp.store.sqlite if backend.name == "sqlite" else smdp.store.postgres
    every = backend_migrations(backend)
    assert every[13][0] == 14
    monkeypatch.setattr(module, "migrations", lambda: every[:13])
    old = backend.open_raw()
    old.migrate()
    assert isinstance(old, SqlStore)
    u = old.create_user("bob@b.example", "h")
    _env, entry = _envelope_with_entry(old, u.id, "o" * 26, old=True)
    old._exec("INSERT INTO votes (mailbox_id, server, vote) VALUES (?, ?, ?)", (entry, "x", -1))
    old._exec("INSERT INTO peer_quality (server, messages, votes, updated_at) "
              "VALUES (?, ?, ?, ?)", ("x", 4, -3, time.time()))
    old.close()
    monkeypatch.undo()
    store = backend.open()
    q = store.quality("x")
    assert (q.messages, q.votes, q.deciders, q.standing) == (4, -3, 1, "new")
    assert q.recent_messages == pytest.approx(4.0, rel=1e-3)
    assert q.value == pytest.approx(-0.75, abs=1e-3)
    store.close()


def test_bodies_mailbox_and_deletion(backend: Backend) -> None:
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    body = bytes(range(256)) * 4  # every octet value survives the round trip
    with store.transaction():
        env = store.insert_in_envelope(envid="f" * 26, origin_server="x", sender="s@x.example",
                                       size=len(body), block="b", subject="s", body=None)
        e1 = store.insert_mailbox_entry(u.id, env, "bob@b.example", "pending")
        e2 = store.insert_mailbox_entry(u.id, env, "bob2@b.example", "fetching")
    assert store.in_body(env) is None
    with store.transaction():
        store.set_in_body(env, body)
        store.update_mailbox_entry(e1, state="accepted", decision="ACCEPT")
    envelope = store.in_envelope(env)
    assert envelope is not None and envelope.has_body and store.in_body(env) == body
    assert [m.id for m in store.mailbox_entries(u.id, ["accepted", "fetching"])] == [e1, e2]
    store.mark_deleted([e1])
    assert [m.id for m in store.mailbox_entries(u.id, ["accepted", "fetching"])] == [e2]
    entry = store.mailbox_entry(e1)
    assert entry is not None and entry.deleted and entry.decision == "ACCEPT"
    assert entry.reason == ""
    store.close()


def test_queue_retry_and_finish(backend: Backend) -> None:
    store = backend.open()
    with store.transaction():
        store.enqueue("send-envelope", "k1", '{"envid": "x"}', at=100.0)
        store.enqueue("report-decision", "k2", '{"entry": 1}', at=200.0)
    [job] = store.claim_jobs("n", 150.0, 10, lease=1000.0)  # only k1 is due
    assert job.key == "k1"
    store.retry_job(job.id, 300.0, "peer down")  # also gives the claim back
    assert [j.key for j in store.claim_jobs("n", 250.0, 10, lease=1000.0)] == ["k2"]
    [retried] = store.claim_jobs("n", 300.0, 10, lease=1000.0)  # k2 is still claimed
    assert (retried.key, retried.attempts, retried.last_error) == ("k1", 1, "peer down")
    store.finish_job(retried.id)
    assert store.queue_size() == 1
    store.close()


def test_claims_one_job_per_key_and_expire(backend: Backend) -> None:
    store = backend.open()
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


def test_expiry_purge_and_compact(backend: Backend) -> None:
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    with store.transaction():
        old = store.insert_out_message(msgid="m1", user_id=u.id, sender="alice@a.example",
                                       body=b"old", subject="s", summary="", expires_at=100.0)
        store.insert_out_recipient(old, "bob@b.example", "b.example", "envelope-sent", None)
        store.insert_out_recipient(old, "carol@b.example", "b.example", "rejected", None)
        new = store.insert_out_message(msgid="m2", user_id=u.id, sender="alice@a.example",
                                       body=b"new", subject="s", summary="", expires_at=1e4)
        env = store.insert_in_envelope(envid="g" * 26, origin_server="x", sender="s@x.example",
                                       size=1, block="", subject="", body=None)
        store.set_in_expiry(env, 100.0)
        pending = store.insert_mailbox_entry(u.id, env, "alice@a.example", "pending")
        kept = store.insert_mailbox_entry(u.id, env, "al@a.example", "accepted")
    assert store.expire_out_messages(200.0, **OUT_EXPIRY) == 1
    assert store.expire_out_messages(200.0, **OUT_EXPIRY) == 0
    assert [r.state for r in store.out_recipients(old)] == ["expired", "rejected"]
    assert store.out_body(old) is None and store.out_body(new) == b"new"
    assert store.expire_in_envelopes(200.0, **IN_EXPIRY) == [(pending, "x")]
    assert store.expire_in_envelopes(200.0, **IN_EXPIRY) == []
    states = {e.id: e.state for e in store.entries_of_envelope(env)}
    assert states == {pending: "expired", kept: "accepted"}
    # m1; the envelope still has a kept entry
    assert store.purge(150.0, expired=EntryState.EXPIRED) == 1
    assert store.out_message(old) is None and store.out_recipients(old) == []
    store.mark_deleted([kept])
    assert store.purge(150.0, expired=EntryState.EXPIRED) == 1  # now nobody keeps the envelope
    assert store.in_envelope(env) is None and store.out_message(new) is not None
    store.compact()
    store.close()


# -- bodies, a chunk per row (migration 0005) --------------------------------------


def rows(store: Store, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Raw SQL on either backend (the shared ``?`` placeholders)."""
    assert isinstance(store, SqlStore)
    return [tuple(r) for r in store._exec(sql, args).fetchall()]


def count(store: Store, table: str) -> int:
    [(n,)] = rows(store, f"SELECT COUNT(*) FROM {table}")
    assert isinstance(n, int)
    return n


def read_chunks(read: Callable[[int], bytes | None]) -> list[bytes]:
    """What a server streaming a body does: chunk 0, 1, ... until None."""
    out: list[bytes] = []
    while (chunk := read(len(out))) is not None:
        out.append(chunk)
    return out


def file_body(data: bytes) -> Body:
    """A body spooled to a temporary file, as a large one arrives from the wire."""
    writer = BodyWriter(threshold=0)
    for start in range(0, len(data), 100_000):  # pieces that straddle the chunks
        writer.write(data[start : start + 100_000])
    body = writer.finish()
    assert not body.in_memory and body.size == len(data)
    return body


BIG = 3 * 1024 * 1024 + 7  # several MiB, not a whole number of chunks
SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, BIG]


@pytest.mark.parametrize("size", SIZES, ids=["0", "1", "chunk", "chunk+1", "MiBs"])
def test_bodies_round_trip_a_chunk_per_row(backend: Backend, size: int) -> None:
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    data = random.Random(size).randbytes(size)
    body = file_body(data) if size == BIG else Body.of(data)
    expected = -(-size // CHUNK_SIZE)  # full chunks, the last one shorter
    with store.transaction():
        mid = store.insert_out_message(msgid="m1", user_id=u.id, sender="alice@a.example",
                                       body=body, subject="s", summary="", expires_at=1e12)
        direct = store.insert_in_envelope(envid="d" * 26, origin_server="x", sender="s@x",
                                          size=999, block="", subject="", body=body)
        pulled = store.insert_in_envelope(envid="p" * 26, origin_server="x", sender="s@x",
                                          size=999, block="", subject="", body=None)
    announced = store.in_envelope(pulled)
    assert announced is not None and not announced.has_body and announced.size == 999
    store.set_in_body(pulled, body)
    msg = store.out_message(mid)
    assert msg is not None and msg.held and msg.size == size
    out = read_chunks(lambda seq: store.out_body_chunk(mid, seq))
    assert [len(c) for c in out] == [CHUNK_SIZE] * (size // CHUNK_SIZE) + (
        [size % CHUNK_SIZE] if size % CHUNK_SIZE else [])
    assert len(out) == expected and b"".join(out) == data
    assert store.out_body(mid) == data  # b"" for the empty body, not None
    for env_id in (direct, pulled):
        env = store.in_envelope(env_id)
        # The size of a stored body is the body's, whatever the envelope announced.
        assert env is not None and env.has_body and env.size == size
        got = read_chunks(lambda seq, e=env_id: store.in_body_chunk(e, seq))
        assert len(got) == expected and b"".join(got) == data
        assert store.in_body(env_id) == data
    assert count(store, "out_body_chunks") == expected
    assert count(store, "in_body_chunks") == 2 * expected
    body_read_again = b"".join(body.chunks())  # storing it did not consume the body
    assert body_read_again == data
    store.close()


def test_no_body_and_unknown_ids(backend: Backend) -> None:
    store = backend.open()
    env = store.insert_in_envelope(envid="n" * 26, origin_server="x", sender="s@x",
                                   size=10, block="", subject="", body=None)
    assert store.in_body(env) is None and store.in_body_chunk(env, 0) is None
    assert store.in_body(env + 1) is None and store.in_body_chunk(env + 1, 0) is None
    assert store.out_body(12345) is None and store.out_body_chunk(12345, 0) is None
    store.close()


def test_a_body_replaced_or_rolled_back_leaves_no_stray_chunk(backend: Backend) -> None:
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    env = store.insert_in_envelope(envid="r" * 26, origin_server="x", sender="s@x",
                                   size=1, block="", subject="", body=None)
    store.set_in_body(env, Body.of(b"a" * (3 * CHUNK_SIZE)))
    store.set_in_body(env, b"short")  # bytes are still accepted
    assert store.in_body(env) == b"short" and count(store, "in_body_chunks") == 1
    assert store.in_body_chunk(env, 1) is None
    with pytest.raises(RuntimeError, match="crash after the chunks"), store.transaction():
        store.insert_out_message(msgid="m1", user_id=u.id, sender="alice@a.example",
                                 body=Body.of(b"z" * (2 * CHUNK_SIZE)), subject="s",
                                 summary="", expires_at=0)
        raise RuntimeError("crash after the chunks")
    assert count(store, "out_body_chunks") == 0
    store.close()


def test_drop_expiry_and_purge_delete_the_chunks(backend: Backend) -> None:
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    two_chunks = Body.of(b"q" * (CHUNK_SIZE + 10))
    with store.transaction():
        dropped = store.insert_out_message(msgid="m1", user_id=u.id, sender="a@a.example",
                                           body=two_chunks, subject="s", summary="",
                                           expires_at=1e12)
        expired = store.insert_out_message(msgid="m2", user_id=u.id, sender="a@a.example",
                                           body=two_chunks, subject="s", summary="",
                                           expires_at=100.0)
        kept = store.insert_out_message(msgid="m3", user_id=u.id, sender="a@a.example",
                                        body=two_chunks, subject="s", summary="",
                                        expires_at=1e12)
        env = store.insert_in_envelope(envid="h" * 26, origin_server="x", sender="s@x",
                                       size=1, block="", subject="", body=two_chunks)
        store.set_in_expiry(env, 100.0)
        entry = store.insert_mailbox_entry(u.id, env, "alice@a.example", "accepted")
    assert count(store, "out_body_chunks") == 6 and count(store, "in_body_chunks") == 2
    with store.transaction():
        store.drop_out_body(dropped)
    msg = store.out_message(dropped)
    assert msg is not None and not msg.held and msg.size == CHUNK_SIZE + 10
    assert store.out_body(dropped) is None and store.out_body_chunk(dropped, 0) is None
    assert store.expire_out_messages(200.0, **OUT_EXPIRY) == 1
    assert store.out_body(expired) is None and store.out_body_chunk(expired, 0) is None
    assert rows(store, "SELECT DISTINCT message_id FROM out_body_chunks") == [(kept,)]
    # m2, expired; m1 expires later
    assert store.purge(150.0, expired=EntryState.EXPIRED) == 1
    store.mark_deleted([entry])
    # the envelope nobody keeps, and its body
    assert store.purge(150.0, expired=EntryState.EXPIRED) == 1
    assert count(store, "in_body_chunks") == 0
    assert store.out_body(kept) == b"q" * (CHUNK_SIZE + 10)
    store.compact()
    store.close()


def test_sqlite_dropped_chunks_leave_the_file(tmp_path: Path) -> None:
    """secure_delete zeroes a dropped body's chunks, and compact() (incremental
    vacuum and a WAL checkpoint) gives their pages back to the file system."""
    store = open_store(str(tmp_path / "s.sqlite3"))
    assert isinstance(store, SqliteStore)
    token = b"TOKEN-9c2e-never-left-behind"
    data = (token + bytes(range(256))) * (3 * CHUNK_SIZE // 256)  # a token in every chunk
    u = store.create_user("alice@a.example", "h")
    with store.transaction():
        mid = store.insert_out_message(msgid="m1", user_id=u.id, sender="a@a.example",
                                       body=file_body(data), subject="s", summary="",
                                       expires_at=100.0)
    store.compact()

    def on_disk() -> bool:
        return any(token in p.read_bytes() for p in tmp_path.glob("s.sqlite3*"))

    assert on_disk()
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    assert store.expire_out_messages(200.0, **OUT_EXPIRY) == 1 and store.out_body(mid) is None
    store.compact()
    assert not on_disk()
    assert store._db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    # Three chunks took some 195 pages of 4 KiB: the file gave them back.
    assert store._db.execute("PRAGMA page_count").fetchone()[0] < pages - 150
    store.close()


def test_migration_0005_moves_the_bodies_into_chunks(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made at version 0004, with bodies in their rows, migrates: each
    body is cut into CHUNK_SIZE chunks, has_body and in_envelopes' size follow,
    and the body columns are gone."""
    import smdp.store.postgres
    import smdp.store.sqlite

    module = smdp.store.sqlite if backend.name == "sqlite" else smdp.store.postgres
    every = backend_migrations(backend)
    assert [v for v, _n, _s in every][4] == 5
    monkeypatch.setattr(module, "migrations", lambda: every[:4])
    old = backend.open_raw()
    old.migrate()
    assert old.schema_version() == 4
    u = old.create_user("alice@a.example", "h")
    bodies = {f"m{n}": random.Random(n).randbytes(n) for n in
              (0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 3)}
    token = b"TOKEN-0004-body-in-its-row"
    bodies["token"] = token * (CHUNK_SIZE // len(token) + 1)
    with old.transaction():
        for msgid, data in bodies.items():
            rows(old, "INSERT INTO out_messages (msgid, user_id, sender, size, subject, summary, "
                 "body, created_at, expires_at) VALUES (?, ?, 'a@a.example', ?, '', '', ?, 0, 0) "
                 "RETURNING id", (msgid, u.id, len(data), data))
            rows(old, "INSERT INTO in_envelopes (envid, origin_server, sender, size, block, "
                 "subject, received_at, body) VALUES (?, 'x', 's@x', 1, '', '', 0, ?) "
                 "RETURNING id", (msgid, data))
        rows(old, "INSERT INTO out_messages (msgid, user_id, sender, size, subject, summary, "
             "body, created_at, expires_at) VALUES ('gone', ?, 'a', 5, '', '', NULL, 0, 0) "
             "RETURNING id", (u.id,))
        rows(old, "INSERT INTO in_envelopes (envid, origin_server, sender, size, block, subject, "
             "received_at, body) VALUES ('none', 'x', 's@x', 77, '', '', 0, NULL) RETURNING id")
    old.close()
    monkeypatch.undo()

    store = backend.open()  # open_store migrates
    assert store.schema_version() == every[-1][0]
    for msgid, data in bodies.items():
        msg = store.out_message_by_msgid(msgid)
        assert msg is not None and msg.held and msg.size == len(data)
        out = read_chunks(lambda seq, m=msg.id: store.out_body_chunk(m, seq))
        assert len(out) == -(-len(data) // CHUNK_SIZE)
        assert all(len(c) == CHUNK_SIZE for c in out[:-1])
        assert b"".join(out) == data and store.out_body(msg.id) == data
        env = store.in_envelope_by_envid(msgid)
        assert env is not None and env.has_body and env.size == len(data)
        got = read_chunks(lambda seq, e=env.id: store.in_body_chunk(e, seq))
        assert got == out and store.in_body(env.id) == data
    gone = store.out_message_by_msgid("gone")
    assert gone is not None and not gone.held and store.out_body(gone.id) is None
    none = store.in_envelope_by_envid("none")
    assert none is not None and not none.has_body and none.size == 77
    assert store.in_body(none.id) is None
    columns = (
        "SELECT name FROM pragma_table_info(?)" if backend.name == "sqlite"
        else "SELECT column_name FROM information_schema.columns WHERE table_name=?"
    )
    for table in ("out_messages", "in_envelopes"):
        names = {r[0] for r in rows(store, columns, (table,))}
        assert "has_body" in names and "body" not in names
    if backend.name == "sqlite":  # the rewrite of the rows left no copy behind
        assert isinstance(store, SqliteStore)

        def on_disk() -> bool:
            return any(token in p.read_bytes() for p in store.path.parent.glob("s.sqlite3*"))

        assert on_disk()
        for msg in store.out_messages_of(u.id):
            store.drop_out_body(msg.id)
        assert store.purge(1.0, expired=EntryState.EXPIRED) == 2 * len(bodies) + 2
        store.compact()
        assert not on_disk()
    store.close()


# -- stable ids (migration 0006) ----------------------------------------------------


def _envelope_with_entry(store: Store, user_id: int, envid: str, *,
                         state: str = "accepted", old: bool = False) -> tuple[int, int]:
    """``old``: the entry written as the schema before migration 0017 has it
    (no octets column; the store's insert_mailbox_entry needs one)."""
    with store.transaction():
        env = store.insert_in_envelope(envid=envid, origin_server="x", sender="s@x.example",
                                       size=3, block="", subject="", body=b"abc")
        if old:
            [(entry,)] = rows(store, "INSERT INTO mailbox (user_id, envelope_id, recipient, "
                              "state) VALUES (?, ?, ?, ?) RETURNING id",
                              (user_id, env, "alice@a.example", state))
            assert isinstance(entry, int)
        else:
            entry = store.insert_mailbox_entry(user_id, env, "alice@a.example", state)
    return env, entry


def test_an_id_freed_by_purge_is_never_handed_out_again(backend: Backend) -> None:
    """The user names a mailbox entry by its id (ENV, the options, the
    client's read and delete): once housekeeping purges the entry with the
    highest id, a new entry must not get that id, or a stale id would act on
    newer mail. The store is closed and opened again in between (a real file
    for SQLite), as a server restart does."""
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    kept_env, kept = _envelope_with_entry(store, u.id, "k" * 26)
    gone_env, gone = _envelope_with_entry(store, u.id, "g" * 26)
    assert gone > kept and gone_env > kept_env
    store.mark_deleted([gone])
    assert store.purge(1.0, expired=EntryState.EXPIRED) == 1
    assert store.mailbox_entry(gone) is None and store.in_envelope(gone_env) is None
    store.close()

    store = backend.open()
    new_env, new = _envelope_with_entry(store, u.id, "n" * 26)
    assert new > gone and new_env > gone_env
    assert store.mailbox_entry(kept) is not None
    store.close()


def test_migration_0006_keeps_every_id_and_reference(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made at version 0005 migrates to ids that are never reused
    (SQLite rebuilds the two tables): entries, envelopes, bodies and votes
    keep their ids and their links, and an id purged after the migration is
    not handed out again."""
    import smdp.store.postgres
    import smdp.store.sqlite

    module = smdp.store.sqlite if backend.name == "sqlite" else smdp.store.postgres
    every = backend_migrations(backend)
    assert [v for v, _n, _s in every][5] == 6
    monkeypatch.setattr(module, "migrations", lambda: every[:5])
    old = backend.open_raw()
    old.migrate()
    assert old.schema_version() == 5
    u = old.create_user("alice@a.example", "h")
    made = [_envelope_with_entry(old, u.id, f"{n:026d}", old=True) for n in range(4)]
    first_env, first = made[0]
    with old.transaction():
        old.update_mailbox_entry(first, state="rejected", decision="REJECT")
        # The vote as 0005's code wrote it (today's also moves 0014's columns).
        assert isinstance(old, SqlStore)
        old._exec("INSERT INTO votes (mailbox_id, server, vote) VALUES (?, ?, ?)",
                  (first, "x", -1))
        old.set_in_expiry(first_env, 50.0)
    old.mark_deleted([made[-1][1]])
    assert old.purge(1.0, expired=EntryState.EXPIRED) == 1  # the last: freed before 0006
    old.close()
    monkeypatch.undo()

    store = backend.open()
    assert store.schema_version() == every[-1][0]
    for env_id, entry_id in made[:-1]:
        entry = store.mailbox_entry(entry_id)
        assert entry is not None and entry.envelope_id == env_id
        assert store.in_body(env_id) == b"abc"
    entry = store.mailbox_entry(first)
    assert entry is not None and (entry.state, entry.decision) == ("rejected", "REJECT")
    assert rows(store, "SELECT mailbox_id, vote FROM votes") == [(first, -1)]
    assert rows(store, "SELECT expires_at FROM in_envelopes WHERE id=?", (first_env,)) == [
        (50.0,)]
    # The indexes and keys came back with the tables.
    with pytest.raises(Exception), store.transaction():  # noqa: B017 (either driver's error)
        store.insert_mailbox_entry(u.id, first_env, "alice@a.example", "pending")
    top_env, top = made[-2]
    store.mark_deleted([top])
    assert store.purge(1.0, expired=EntryState.EXPIRED) == 1
    new_env, new = _envelope_with_entry(store, u.id, "n" * 26)
    assert new > top and new_env > top_env
    if backend.name == "sqlite":
        assert rows(store, "PRAGMA foreign_key_check") == []
        assert rows(store, "PRAGMA foreign_keys") == [(1,)]
    store.close()


# -- each recipient's route (migration 0009) ----------------------------------------


def test_migration_0009_gives_every_recipient_the_smdp_route(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made before 0009 migrates: its recipients keep their
    envelopes and states and take the route they went by, ``smdp``; an
    envelope may now leave by SMTP (mode ``smtp``), and no other mode."""
    import smdp.store.postgres
    import smdp.store.sqlite

    module = smdp.store.sqlite if backend.name == "sqlite" else smdp.store.postgres
    every = backend_migrations(backend)
    # Every migration before 0009_recipient_route (0008 is another branch's).
    before = [m for m in every if m[0] < 9]
    assert every[len(before)][1] == "0009_recipient_route.sql"
    monkeypatch.setattr(module, "migrations", lambda: before)
    old = backend.open_raw()
    old.migrate()
    assert old.schema_version() == before[-1][0]
    u = old.create_user("alice@a.example", "h")
    with old.transaction():
        mid = old.insert_out_message(msgid="m1", user_id=u.id, sender="alice@a.example",
                                     body=Body.of(b"abc"), subject="s", summary="",
                                     expires_at=1e12)
        old.insert_out_envelope("e" * 26, mid, "b.example", "envelope")
        assert isinstance(old, SqlStore)  # the row as the schema before 0009 had it
        old._exec("INSERT INTO out_recipients (message_id, envid, recipient, domain, state, "
                  "detail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (mid, "e" * 26, "bob@b.example", "b.example", "envelope-sent", "", 1.0))
    old.close()
    monkeypatch.undo()

    store = backend.open()
    assert store.schema_version() == every[-1][0]
    [bob] = store.out_recipients(mid)
    assert (bob.envid, bob.state, bob.route) == ("e" * 26, "envelope-sent", RouteKind.SMDP)
    env = store.out_envelope("e" * 26)
    assert env is not None and (env.message_id, env.mode) == (mid, "envelope")
    with store.transaction():
        store.insert_out_envelope("s" * 26, mid, "c.example", "smtp")
        store.insert_out_recipient(mid, "carol@c.example", "c.example", "queued", "s" * 26,
                                   route="smtp")
    assert [(r.recipient, r.route) for r in store.out_recipients(mid)] == [
        ("bob@b.example", RouteKind.SMDP), ("carol@c.example", RouteKind.SMTP)]
    with pytest.raises(Exception), store.transaction():  # noqa: B017 (either driver's error)
        store.insert_out_envelope("x" * 26, mid, "c.example", "carrier-pigeon")
    # The rebuilt table keeps its keys: a message's envelopes go with it.
    if backend.name == "sqlite":
        assert rows(store, "PRAGMA foreign_key_check") == []
    assert isinstance(store, SqlStore)
    with store.transaction():
        store._exec("DELETE FROM out_recipients WHERE message_id=?", (mid,))
        store._exec("DELETE FROM out_messages WHERE id=?", (mid,))
    assert count(store, "out_envelopes") == 0
    store.close()


# -- PostgreSQL only: several nodes sharing one database --------------------------


def test_postgresql_commits_durably(pg_dsn: str) -> None:
    from psycopg.pq import TransactionStatus

    from smdp.store.postgres import PostgresStore

    store = open_store(parse_config(
        {"server": {"hostname": "h", "domains": ["a.example"]},
         "store": {"backend": "postgresql", "dsn": pg_dsn}}, Path(".")))
    assert isinstance(store, PostgresStore)
    settings = {
        name: store._db.execute(f"SHOW {name}").fetchone()
        for name in ("fsync", "synchronous_commit", "transaction_isolation")
    }
    assert settings == {"fsync": ("on",), "synchronous_commit": ("on",),
                        "transaction_isolation": ("read committed",)}
    # Outside transaction() each statement commits on its own (as SQLite's
    # isolation_level=None); inside, one real transaction.
    def status() -> TransactionStatus:
        return store._db.info.transaction_status

    assert store._db.autocommit
    with store.transaction():
        store.enqueue("send-envelope", "k", "{}")
        assert status() == TransactionStatus.INTRANS
    assert status() == TransactionStatus.IDLE
    store.close()


def test_postgresql_nodes_migrate_at_once(pg_dsn: str) -> None:
    from smdp.store import postgres
    from smdp.store.postgres import PostgresStore

    results: list[list[str]] = []
    errors: list[BaseException] = []

    def node() -> None:
        try:
            store = PostgresStore(pg_dsn)
            results.append(store.migrate())
            store.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    every = [name for _v, name, _sql in postgres.migrations()]
    assert sorted(results, key=len) == [[], [], [], every]


def test_postgresql_nodes_never_share_a_job_or_a_key(pg_dsn: str) -> None:
    """Two nodes claim from one queue at once while two others enqueue more work
    on the same keys: every job runs exactly once, and never while another job
    of its key is running, on either node."""
    from smdp.store.postgres import PostgresStore

    keys, per_key = 4, 10  # few keys: late jobs often land on a key being worked on
    setup = PostgresStore(pg_dsn)
    setup.migrate()
    with setup.transaction():
        for i in range(per_key):
            for k in range(keys):
                setup.enqueue("send-envelope", f"k{k}", f"{k}:{i}", at=0.0)
    setup.close()

    guard = threading.Lock()
    running: dict[str, str] = {}  # key -> node running a job of it now
    done: list[tuple[str, str]] = []  # (node, payload), in completion order
    problems: list[str] = []

    enqueued = threading.Event()  # both enqueuers have committed all their jobs

    def node(name: str) -> None:
        store = PostgresStore(pg_dsn)
        rnd = random.Random(name)
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                jobs = store.claim_jobs(name, time.time(), rnd.randint(1, 5), lease=60.0)
                if not jobs:
                    # Done when no job can come any more and none is left (a
                    # job the other node runs stays queued until finished).
                    if enqueued.is_set() and store.queue_size() == 0:
                        return
                    time.sleep(0.002)  # poll interval
                    continue
                with guard:
                    for job in jobs:
                        if job.key in running:
                            problems.append(f"{name} got {job.payload} while "
                                            f"{running[job.key]} runs {job.key}")
                        running[job.key] = name
                time.sleep(rnd.uniform(0, 0.008))  # the work
                for job in jobs:
                    with guard:
                        running.pop(job.key, None)
                        done.append((name, job.payload))
                    # Finishing releases the key, so it goes after the
                    # bookkeeping: the other node may claim the next job at once.
                    store.finish_job(job.id)
            problems.append(f"{name}: jobs still coming after 60 s")
        except BaseException as exc:
            problems.append(f"{name}: {exc!r}")
        finally:
            store.close()

    def enqueuer(name: str) -> None:
        # Ids come from a sequence at insert time but become visible at commit,
        # so a job with a lower id can appear after a higher one of its key was
        # claimed: "the oldest job of the key" alone would then let a second
        # job of that key run at once.
        store = PostgresStore(pg_dsn)
        rnd = random.Random(name)
        try:
            for i in range(late):
                with store.transaction():
                    store.enqueue("report-decision", f"k{rnd.randrange(keys)}",
                                  f"late:{name}:{i}", at=0.0)
                    time.sleep(rnd.uniform(0, 0.02))  # hold the transaction open: the race
        except BaseException as exc:
            problems.append(f"{name}: {exc!r}")
        finally:
            store.close()

    late = 50
    nodes = [threading.Thread(target=node, args=(n,)) for n in ("node-1", "node-2")]
    enqueuers = [threading.Thread(target=enqueuer, args=(n,)) for n in ("in-1", "in-2")]
    for t in nodes + enqueuers:
        t.start()
    for t in enqueuers:
        t.join(60)
    enqueued.set()
    for t in nodes:
        t.join(90)
    assert not any(t.is_alive() for t in nodes + enqueuers)
    assert problems == []
    payloads = [p for _n, p in done]
    assert sorted(payloads) == sorted(
        [f"{k}:{i}" for k in range(keys) for i in range(per_key)]
        + [f"late:{n}:{i}" for n in ("in-1", "in-2") for i in range(late)])
    for k in range(keys):  # one key's jobs ran in order
        assert [p for p in payloads if p.startswith(f"{k}:")] == [
            f"{k}:{i}" for i in range(per_key)]
    assert {n for n, _p in done} == {"node-1", "node-2"}  # both nodes did work
    check = PostgresStore(pg_dsn)
    assert check.queue_size() == 0
    check.close()


def test_postgresql_a_late_older_job_waits_for_a_claim_in_flight(pg_dsn: str) -> None:
    """The race one advisory lock closes, made deterministic: node A's claim is
    still uncommitted when an older job of the same key becomes visible, and
    node B claims at that moment. B must not take the older job."""
    import psycopg

    from smdp.store.postgres import PostgresStore

    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    a.migrate()
    b_pid = b._db.info.backend_pid
    watch = psycopg.connect(pg_dsn, autocommit=True)  # a fresh statistics snapshot per query

    def b_waits_on_a_lock() -> bool:
        row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                            (b_pid,)).fetchone()
        return row is not None and row[0] == "Lock"

    slow = psycopg.connect(pg_dsn)  # an enqueuing transaction that commits late
    slow.execute("INSERT INTO queue (kind, key, payload, next_attempt, created_at) "
                 "VALUES ('send-envelope', 'k', 'older', 0, 0)")
    a.enqueue("report-decision", "k", "newer", at=0.0)
    got_b: list[list[str]] = []
    with a.transaction():  # claim_jobs joins it: A's claim stays uncommitted
        assert [j.payload for j in a.claim_jobs("node-a", 10.0, 10, lease=60.0)] == ["newer"]
        slow.commit()  # the older job (lower id) is now visible to everyone
        t = threading.Thread(target=lambda: got_b.append(
            [j.payload for j in b.claim_jobs("node-b", 10.0, 10, lease=60.0)]))
        t.start()
        # B waits for A's claim to commit: its backend blocks on a lock ...
        wait_until(b_waits_on_a_lock, what="node B blocked on node A's lock")
        assert t.is_alive() and got_b == []
    t.join(30)
    assert not t.is_alive()
    assert got_b == [[]]  # ... and then sees key k is busy
    a.finish_job(next(j.id for j in a.jobs() if j.payload == "newer"))
    assert [j.payload for j in b.claim_jobs("node-b", 10.0, 10, lease=60.0)] == ["older"]
    slow.close()
    watch.close()
    a.close()
    b.close()


def test_postgresql_reconnects_after_the_connection_drops(pg_dsn: str) -> None:
    """A database restart or failover cuts the connection: the call in hand
    fails (its caller retries), the next one works on a new connection."""
    import psycopg

    from smdp.store.postgres import PostgresStore

    store = PostgresStore(pg_dsn)
    store.migrate()
    store.enqueue("send-envelope", "k", "{}")
    pid = store._db.info.backend_pid
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError, match="terminating connection"):
        store.queue_size()
    assert store.queue_size() == 1
    with store.transaction():
        store.enqueue("send-envelope", "k2", "{}")
    assert store.queue_size() == 2
    store.close()


def test_a_pending_notice_is_claimed_once_per_interval_and_new_entry(
    backend: Backend,
) -> None:
    """claim_pending_notice (issue 10, item 7): one statement decides, so two
    nodes, or a pass run twice, never both send the notice."""
    store, other = backend.open(), backend.open()
    user = store.create_user("bob@a.example", "h")
    assert store.pending_notice(user.id) is None
    assert store.claim_pending_notice(user.id, 1000.0, 5, 1000.0 - 3600)
    assert store.pending_notice(user.id) == (1000.0, 5)
    # Another node with the same view: the record already says so.
    assert not other.claim_pending_notice(user.id, 1000.0, 5, 1000.0 - 3600)
    assert not store.claim_pending_notice(user.id, 2000.0, 6, 2000.0 - 3600)  # too soon
    assert not store.claim_pending_notice(user.id, 5000.0, 5, 5000.0 - 3600)  # nothing new
    assert store.claim_pending_notice(user.id, 5000.0, 6, 5000.0 - 3600)
    assert other.pending_notice(user.id) == (5000.0, 6)
    store.close()
    other.close()


def test_the_expiry_hook_shares_the_expiry_transaction(backend: Backend) -> None:
    """What ``before_expiry`` writes (the sender's report) commits with the
    expiry or not at all: a failure in it leaves the message held."""
    store = backend.open()
    user = store.create_user("alice@a.example", "h")
    with store.transaction():
        message_id = store.insert_out_message(
            msgid="m1", user_id=user.id, sender="alice@a.example", body=b"Subject: s\r\n\r\nx",
            subject="s", summary="", expires_at=10.0)
        store.insert_out_recipient(message_id, "bob@b.example", "b.example",
                                   RecipientState.QUEUED, None)
    seen: list[tuple[int, bytes | None]] = []

    def fail(mid: int) -> None:
        store.enqueue("send-envelope", "k", "{}")
        raise RuntimeError("the report cannot be written")

    with pytest.raises(RuntimeError, match="the report cannot be written"):
        store.expire_out_messages(20.0, before_expiry=fail, **OUT_EXPIRY)
    assert [r.state for r in store.out_recipients(message_id)] == [RecipientState.QUEUED]
    assert store.jobs() == []
    msg = store.out_message(message_id)
    assert msg is not None and msg.held

    def report(mid: int) -> None:  # runs while the body is still there to quote
        seen.append((mid, store.out_body_chunk(mid, 0)))

    assert store.expire_out_messages(20.0, before_expiry=report, **OUT_EXPIRY) == 1
    assert seen == [(message_id, b"Subject: s\r\n\r\nx")]
    assert [r.state for r in store.out_recipients(message_id)] == [RecipientState.EXPIRED]
    store.close()


def test_users_with_entries_in_a_state(backend: Backend) -> None:
    store = backend.open()
    bob = store.create_user("bob@a.example", "h")
    carol = store.create_user("carol@a.example", "h")
    env = store.insert_in_envelope(envid="e1", origin_server="smdp.c.example",
                                   sender="eve@c.example", size=1, block="", subject="",
                                   body=None)
    kept = store.insert_mailbox_entry(bob.id, env, "bob@a.example", EntryState.PENDING)
    gone = store.insert_mailbox_entry(carol.id, env, "carol@a.example", EntryState.PENDING)
    store.mark_deleted([gone])
    assert store.users_with_entries(EntryState.PENDING) == [bob.id]
    store.update_mailbox_entry(kept, state=EntryState.REJECTED)
    assert store.users_with_entries(EntryState.PENDING) == []
    store.close()


def test_mta_sts_policies_are_cached_replaced_and_dropped(backend: Backend) -> None:
    from smdp.store.records import CachedPolicy

    store = backend.open()
    assert store.mta_sts_policy("b.example") is None
    first = CachedPolicy("b.example", "one", "version: STSv1\n", 100.0, 200.0)
    with store.transaction():
        store.put_mta_sts_policy(first)
    assert store.mta_sts_policy("b.example") == first
    second = CachedPolicy("b.example", "two", "version: STSv1\nmode: none\n", 150.0, 400.0)
    with store.transaction():
        store.put_mta_sts_policy(second)
    other = backend.open()  # durable, and seen by another connection (another node)
    assert other.mta_sts_policy("b.example") == second
    with store.transaction():
        # Not expired by then: another node may just have refreshed it.
        assert store.drop_mta_sts_policy("b.example", expired_by=399.0) is False
        assert store.drop_mta_sts_policy("b.example", expired_by=400.0) is True
    assert other.mta_sts_policy("b.example") is None
    with store.transaction():
        store.put_mta_sts_policy(first)
        assert store.drop_mta_sts_policy("b.example") is True
    assert store.mta_sts_policy("b.example") is None
    other.close()
    store.close()


def test_the_tls_outcome_of_each_smtp_delivery_is_recorded(backend: Backend) -> None:
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    with store.transaction():
        message = store.insert_out_message(msgid="m1", user_id=u.id, sender="alice@a.example",
                                           body=b"x", subject="s", summary="", expires_at=1e9)
        for rcpt in ("bob@b.example", "carol@b.example", "dan@c.example"):
            store.insert_out_recipient(message, rcpt, rcpt.split("@")[1], "queued", None)
    ids = [r.id for r in store.out_recipients(message)]
    assert store.recipients_tls(message) == dict.fromkeys(ids, "")
    with store.transaction():
        store.set_recipients_tls(ids[:2], "verified (mta-sts enforce)")
        store.set_recipients_tls(ids[2:], "not-offered (opportunistic)")
    assert store.recipients_tls(message) == {
        ids[0]: "verified (mta-sts enforce)", ids[1]: "verified (mta-sts enforce)",
        ids[2]: "not-offered (opportunistic)"}
    store.close()


# -- mail that arrived by SMTP at the MX (migration 0010) ------------------------------


def test_smtp_arrivals_keep_their_results_and_free_their_bytes(backend: Backend) -> None:
    """An SMTP arrival carries its Authentication-Results, verified domain and
    reverse-path; its bytes go once no entry is pending, fetching or accepted,
    while an SMDP envelope's stay whatever its entries (same SQL, both backends)."""
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    with store.transaction():
        smtp = store.insert_in_envelope(
            envid="smtp1", origin_server="c.example", sender="f@c.example", size=0,
            block="", subject="", body=b"abc", smtp_auth="mx.a.example; none",
            verified_domain="c.example", mail_from="")
        kept = store.insert_in_envelope(
            envid="smtp2", origin_server="c.example", sender="f@c.example", size=0,
            block="", subject="", body=b"def", smtp_auth="mx.a.example; none")
        smdp_env, smdp_entry = _envelope_with_entry(store, u.id, "smdp1")
        store.insert_mailbox_entry(u.id, smtp, "alice@a.example", "rejected")
        store.insert_mailbox_entry(u.id, kept, "alice@a.example", "pending")
        store.update_mailbox_entry(smdp_entry, state="rejected", decision="REJECT")
    env = store.in_envelope(smtp)
    assert env is not None and env.via_smtp
    assert (env.smtp_auth, env.verified_domain, env.mail_from) == (
        "mx.a.example; none", "c.example", "")
    plain = store.in_envelope(smdp_env)
    assert plain is not None and not plain.via_smtp and plain.mail_from is None
    keep = ("pending", "fetching", "accepted")
    assert store.drop_smtp_bodies(keep, kept) == 0
    assert store.drop_smtp_bodies(keep) == 1
    assert store.in_body(smtp) is None and store.in_body(kept) == b"def"
    assert store.in_body(smdp_env) == b"abc"
    # One vote per entry, moving every quality key it counts under.
    with store.transaction():
        store.set_vote(smdp_entry, "smtp:c.example", -1, also=["smtp:192.0.2.0/24"])
        store.set_vote(smdp_entry, "smtp:c.example", +1, also=["smtp:192.0.2.0/24"])
    assert [(q.server, q.votes) for q in store.all_quality()] == [
        ("smtp:192.0.2.0/24", 1), ("smtp:c.example", 1)]
    store.close()


def test_overrides_samples_and_administrators(backend: Backend) -> None:
    """Migration 0011 (issue 13 item 3) on both backends: a peer blocked or
    allowed by hand, handed back; samples only of what changed, at most one
    per interval; the administrator flag."""
    store = backend.open()
    store.count_messages("smdp.p.example", 4)
    store.set_override("smdp.p.example", "blocked", "phishing")
    q = store.quality("smdp.p.example")
    assert (q.messages, q.votes, q.override, q.override_reason) == (
        4, 0, "blocked", "phishing")
    assert q.override_at is not None
    store.set_override("smdp.new.example", "allowed")  # never seen before: a row of its own
    assert store.quality("smdp.new.example") == dataclasses.replace(
        store.quality("smdp.new.example"), messages=0, votes=0, override="allowed")
    store.set_override("smdp.p.example", None, "ignored")
    q = store.quality("smdp.p.example")
    assert (q.override, q.override_reason, q.override_at) == (None, "", None)
    assert [x.server for x in store.all_quality()] == ["smdp.new.example", "smdp.p.example"]
    # Samples: peers with messages only; none again within the interval, nor
    # when nothing changed.
    assert store.sample_quality(1000.0, every=60) == 1
    assert store.sample_quality(1030.0, every=60) == 0
    assert store.sample_quality(1100.0, every=60) == 0  # unchanged
    store.count_messages("smdp.p.example", 1)
    assert store.sample_quality(1200.0, every=60) == 1
    assert store.quality_history("smdp.p.example", 0) == [(1000.0, 4, 0), (1200.0, 5, 0)]
    assert store.quality_history("smdp.p.example", 1100) == [(1200.0, 5, 0)]
    assert store.drop_quality_samples(1100) == 1
    assert store.quality_history("smdp.p.example", 0) == [(1200.0, 5, 0)]
    user = store.create_user("root@a.example", "x")
    assert store.is_admin(user.id) is False
    store.set_admin(user.id, True)
    assert store.is_admin(user.id) is True
    store.set_admin(user.id, False)
    assert store.is_admin(user.id) is False
    assert store.is_admin(999999) is False
    store.close()


def test_the_queue_as_the_administrator_sees_it(backend: Backend) -> None:
    """queue_schedule names each job's peer; retry_now makes a job due at
    once, but never one a worker holds."""
    store = backend.open()
    user = store.create_user("alice@a.example", "x")
    mid = store.insert_out_message(msgid="m1", user_id=user.id, sender="alice@a.example",
                                   body=b"x", subject="s", summary="", expires_at=9e9)
    store.insert_out_envelope("env-out", mid, "b.example", "envelope")
    store.enqueue("send-envelope", "env-out", '{"envid": "env-out"}', at=500.0)
    store.enqueue("report-decision", "env-unknown", '{"entry": 1}', at=100.0)
    first, second = store.queue_schedule()
    assert (first.key, first.peer, first.next_attempt) == ("env-unknown", "", 100.0)
    # Grouped per peer, oldest first: what a scrape and the health page read.
    store.enqueue("send-envelope", "env-out", '{"envid": "env-out"}', at=600.0)
    by_peer = store.queue_by_peer()
    assert {peer: count for peer, count, _first in by_peer} == {"b.example": 2, "": 1}
    assert [first for _peer, _count, first in by_peer] == sorted(
        first for _peer, _count, first in by_peer)
    assert {peer: first for peer, _count, first in by_peer} == {
        "b.example": min(j.created_at for j in store.queue_schedule() if j.peer),
        "": next(j.created_at for j in store.queue_schedule() if not j.peer)}
    [extra] = [j for j in store.queue_schedule() if j.next_attempt == 600.0]
    store.finish_job(extra.id)
    assert (second.key, second.peer, second.kind, second.attempts) == (
        "env-out", "b.example", "send-envelope", 0)
    assert store.retry_now(second.id, now=50.0) is True
    assert [j.key for j in store.queue_schedule()] == ["env-out", "env-unknown"]
    [claimed] = store.claim_jobs("node1", now=200.0, limit=1, lease=60.0)
    assert store.retry_now(claimed.id, now=210.0) is False  # held until 260
    assert store.retry_now(claimed.id, now=261.0) is True
    assert store.retry_now(999999, now=1.0) is False
    store.close()


# -- IMAP UIDs and flags (migration 0012) -------------------------------------------


def test_in_body_heads_reads_the_first_octets_of_many_bodies(backend: Backend) -> None:
    """IMAP's FETCH of headers reads the heads of a mailbox's messages in a
    few statements (batches of 500): each body's first octets, of its first
    chunk only; envelopes without a body are left out."""
    store = backend.open()
    big = random.Random(7).randbytes(CHUNK_SIZE + 10)
    with store.transaction():
        small = [store.insert_in_envelope(
            envid=f"h{k:025d}", origin_server="x", sender="s@x.example", size=1, block="",
            subject="", body=f"Subject: {k}\r\n\r\nbody\r\n".encode()) for k in range(501)]
        large = store.insert_in_envelope(envid="L" * 26, origin_server="x", sender="s@x.example",
                                         size=1, block="", subject="", body=big)
        bare = store.insert_in_envelope(envid="B" * 26, origin_server="x", sender="s@x.example",
                                        size=1, block="", subject="", body=None)
    heads = store.in_body_heads([*small, large, bare], 12)
    assert heads == {**{e: f"Subject: {k}\r\n\r\nbody\r\n".encode()[:12]
                        for k, e in enumerate(small)}, large: big[:12]}
    assert store.in_body_heads([large], CHUNK_SIZE * 2) == {large: big[:CHUNK_SIZE]}
    assert store.in_body_heads([], 12) == {}
    store.close()


def _listed(store: Store, user_id: int, mailbox: str, state: str) -> list[ImapMessage]:
    return [m.message for m in store.imap_view(user_id, mailbox, [state])]


def test_imap_uids_only_grow_and_flags_persist(backend: Backend) -> None:
    """UIDs are handed out in the order asked, never twice (also when the
    message with the highest UID is gone), and survive reopening the store,
    as flags do; the signature moves with every change a poll must see
    (docs/imap.md, "UIDs, UIDVALIDITY and flags")."""
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    other = store.create_user("carol@b.example", "h")
    with store.transaction():
        env = store.insert_in_envelope(envid="i" * 26, origin_server="x", sender="s@x.example",
                                       size=1, block="", subject="", body=None)
        e1, e2, e3 = (store.insert_mailbox_entry(u.id, env, f"bob{i}@b.example", "accepted")
                      for i in range(3))
        waiting = store.insert_mailbox_entry(u.id, env, "bob9@b.example", "pending")
        c1 = store.insert_mailbox_entry(other.id, env, "carol@b.example", "accepted")
    signature = store.imap_view_signature(u.id, "INBOX", ["accepted"])
    assert signature == (3, e1 + e2 + e3, 0)
    assert store.imap_uidnext(u.id, "INBOX") == 1
    assert _listed(store, u.id, "INBOX", "accepted") == []
    assert store.imap_view_unassigned(u.id, "INBOX", ["accepted"]) == [e1, e2, e3]
    store.imap_assign_uids(u.id, "INBOX", [e2, e1])  # the order given, not the entry ids'
    store.imap_assign_uids(u.id, "INBOX", [e1])  # has one already: unchanged
    store.imap_assign_uids(other.id, "INBOX", [c1])  # another user counts on its own
    assert store.imap_view_unassigned(u.id, "INBOX", ["accepted"]) == [e3]
    assert [(m.entry_id, m.uid, m.envelope_id, m.recipient)
            for m in _listed(store, u.id, "INBOX", "accepted")] == [
        (e2, 1, env, "bob1@b.example"), (e1, 2, env, "bob0@b.example")]
    assert store.imap_uidnext(u.id, "INBOX") == 4  # e1's second UID (3) is never used
    assert [(m.entry_id, m.uid) for m in _listed(store, other.id, "INBOX", "accepted")] == [
        (c1, 1)]
    store.imap_set_flags(u.id, "INBOX", [(e1, 1 | 4), (e2, 2)])
    assert store.imap_view_signature(u.id, "INBOX", ["accepted"]) == (3, e1 + e2 + e3, 1)
    # The same entry in another mailbox (Pending, then INBOX) has a UID and
    # flags of its own there; an entry leaves a mailbox with its state.
    store.imap_assign_uids(u.id, "Pending", [waiting])
    store.imap_set_flags(u.id, "Pending", [(waiting, 1)])
    assert [(m.entry_id, m.uid, m.flags)
            for m in _listed(store, u.id, "Pending", "pending")] == [(waiting, 1, 1)]
    store.update_mailbox_entry(waiting, state="accepted", decision="ACCEPT")
    assert _listed(store, u.id, "Pending", "pending") == []
    assert store.imap_view_unassigned(u.id, "INBOX", ["accepted"]) == [e3, waiting]
    store.mark_deleted([e3])
    assert store.imap_view_unassigned(u.id, "INBOX", ["accepted"]) == [waiting]
    assert isinstance(store, SqlStore)
    with store.transaction():
        store._exec("DELETE FROM mailbox WHERE id=?", (e1,))  # purged: its row goes with it
    assert store.imap_view_signature(u.id, "INBOX", ["accepted"]) == (2, e2 + waiting, 1)
    store.close()
    store = backend.open()
    store.imap_assign_uids(u.id, "INBOX", [waiting])
    assert [(m.entry_id, m.uid, m.flags)
            for m in _listed(store, u.id, "INBOX", "accepted")] == [(e2, 1, 2), (waiting, 4, 0)]
    assert store.imap_uidnext(u.id, "INBOX") == 5
    store.close()


# -- mailbox counts and pages (migration 0017, issue 15 item 6) ----------------------


def _truth(store: Store, user_id: int) -> tuple[int, int, int]:
    """The counts as the mailbox has them, read entry by entry."""
    pending = len(store.mailbox_entries(user_id, [EntryState.PENDING]))
    octets = 0
    accepted = store.mailbox_entries(user_id, [EntryState.ACCEPTED])
    for entry in accepted:
        env = store.in_envelope(entry.envelope_id)
        assert env is not None
        sender = env.mail_from if env.mail_from is not None else env.sender
        octets += env.size + len(delivery_fields(sender, entry.recipient))
    return pending, len(accepted), octets


def _counted(store: Store, user_id: int) -> tuple[int, int, int]:
    c = store.mailbox_counts(user_id)
    return c.pending, c.messages, c.octets


def _arrive(store: Store, user_id: int, n: int, *, sender: str = "s@x.example",
            recipient: str = "alice@a.example", state: str = "pending",
            expires: float | None = None) -> tuple[int, int]:
    with store.transaction():
        env = store.insert_in_envelope(envid=f"{n:026d}", origin_server="x", sender=sender,
                                       size=100 + n, block="", subject=f"s{n}", body=b"abc")
        if expires is not None:
            store.set_in_expiry(env, expires)
        entry = store.insert_mailbox_entry(user_id, env, recipient, state)
    return env, entry


def test_counts_follow_every_change_of_the_mailbox(backend: Backend) -> None:
    """Arrival, decisions, the pull, expiry, POP3 deletion, housekeeping's
    purge and an account's removal: after each, the counts a login reads are
    what the entries say, and the maildrop's serial moves exactly when the
    maildrop does."""
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    other = store.create_user("bob@a.example", "h")
    assert store.mailbox_counts(u.id).serial == 0 and _counted(store, u.id) == (0, 0, 0)
    made = [_arrive(store, u.id, n, expires=50.0) for n in range(6)]
    _arrive(store, other.id, 6, recipient="bob@a.example", state="accepted")
    assert _counted(store, u.id) == _truth(store, u.id) == (6, 0, 0)
    serial = store.mailbox_counts(u.id).serial
    assert serial == 0  # pending arrivals leave the maildrop as it was
    steps: list[Callable[[], object]] = [
        lambda: store.update_mailbox_entry(made[0][1], state="fetching", decision="ACCEPT"),
        lambda: store.update_mailbox_entry(made[0][1], state="accepted"),
        lambda: store.set_in_body(made[0][0], b"the pulled body, longer than declared"),
        lambda: store.set_in_body(made[3][0], b"a body for an entry still pending"),
        lambda: store.update_mailbox_entry(made[1][1], state="accepted", decision="ACCEPT"),
        lambda: store.update_mailbox_entry(made[2][1], state="rejected", decision="REJECT"),
        lambda: store.mark_deleted([made[1][1]]),
        lambda: store.expire_in_envelopes(10**10, undecided="pending",
                                          open_states=["pending", "fetching"],
                                          expired="expired", reason="nobody decided"),
        lambda: store.purge(10**10, expired="expired"),
    ]
    for step in steps:
        before = _counted(store, u.id)
        with store.transaction():
            step()
        assert _counted(store, u.id) == _truth(store, u.id), steps.index(step)
        moved = store.mailbox_counts(u.id).serial != serial
        assert moved == (before[1:] != _counted(store, u.id)[1:]), step
        serial = store.mailbox_counts(u.id).serial
    assert _counted(store, u.id) == (0, 1, _truth(store, u.id)[2])
    assert _counted(store, other.id) == _truth(store, other.id) != (0, 0, 0)
    # A rolled-back change leaves the counts as they were.
    with pytest.raises(RuntimeError), store.transaction():
        store.update_mailbox_entry(made[0][1], state="rejected")
        raise RuntimeError
    assert _counted(store, u.id) == _truth(store, u.id)
    store.close()


def test_the_size_of_an_entry_is_what_retr_sends(backend: Backend) -> None:
    """The store sizes each entry in SQL (PostgreSQL: a function of the
    migration; SQLite: the Python one): the same octets as the delivery
    fields RETR writes, for odd senders too, and SMTP's reverse-path first."""
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    senders = ["", "s@x.example", "a(b);c@x.example", "ü@x.example", "(;)", "a b@x.example"]
    for n, sender in enumerate(senders):
        _arrive(store, u.id, n, sender=sender, state="accepted")
    with store.transaction():
        env = store.insert_in_envelope(envid="m" * 26, origin_server="x", sender="from@x",
                                       size=7, block="", subject="", body=b"abc",
                                       mail_from="bounce@x.example")
        store.insert_mailbox_entry(u.id, env, "alice@a.example", "accepted")
    assert _counted(store, u.id) == _truth(store, u.id)
    sizes = dict(store.maildrop(u.id, "accepted"))
    for entry in store.mailbox_entries(u.id, ["accepted"]):
        env_ = store.in_envelope(entry.envelope_id)
        assert env_ is not None
        sender = env_.mail_from if env_.mail_from is not None else env_.sender
        assert sizes[entry.id] == env_.size + len(delivery_fields(sender, entry.recipient))
    store.close()


def test_migration_0017_counts_what_is_there(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mailbox written before 0017 gets its sizes and counts from the
    migration's backfill, and the triggers keep them from there."""
    import smdp.store.postgres
    import smdp.store.sqlite

    module = smdp.store.sqlite if backend.name == "sqlite" else smdp.store.postgres
    every = backend_migrations(backend)
    assert every[16][0] == 17
    monkeypatch.setattr(module, "migrations", lambda: every[:16])
    old = backend.open_raw()
    old.migrate()
    u = old.create_user("alice@a.example", "h")
    states = ["pending", "accepted", "accepted", "rejected", "pending", "accepted"]
    made = [_envelope_with_entry(old, u.id, f"{n:026d}", state=s, old=True)
            for n, s in enumerate(states)]
    old.mark_deleted([made[-1][1]])
    old.close()
    monkeypatch.undo()

    store = backend.open()
    assert _counted(store, u.id) == _truth(store, u.id) == (2, 2, _truth(store, u.id)[2])
    assert _truth(store, u.id)[2] > 0
    with store.transaction():
        store.update_mailbox_entry(made[0][1], state="accepted")
    assert _counted(store, u.id) == _truth(store, u.id) == (1, 3, _truth(store, u.id)[2])
    store.close()


def test_pages_of_the_mailbox(backend: Backend) -> None:
    """mailbox_after walks by entry id: an empty mailbox, exact pages, a
    cursor past the end, deleted entries only without states."""
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    assert store.mailbox_after(u.id, ["pending"], after=0, limit=10) == []
    made = [_arrive(store, u.id, n) for n in range(5)]
    ids = [entry for _env, entry in made]
    page = store.mailbox_after(u.id, ["pending"], after=0, limit=2)
    assert [e.id for e, _env in page] == ids[:2]
    assert [env.id for _e, env in page] == [env for env, _entry in made[:2]]
    assert [e.id for e, _ in store.mailbox_after(u.id, ["pending"], after=ids[1],
                                                 limit=3)] == ids[2:]
    assert store.mailbox_after(u.id, ["pending"], after=ids[-1], limit=3) == []
    with store.transaction():
        store.update_mailbox_entry(ids[1], state="accepted")
    store.mark_deleted([ids[1]])
    assert [e.id for e, _ in store.mailbox_after(u.id, ["pending"], after=0, limit=9)] == \
        ids[:1] + ids[2:]
    assert [e.id for e, _ in store.mailbox_after(u.id, None, after=0, limit=9)] == ids
    assert store.maildrop(u.id, "accepted") == []
    assert store.envids_of([ids[0], ids[2], 10**9]) == {ids[0]: f"{0:026d}",
                                                        ids[2]: f"{2:026d}"}


def test_imap_signature_counts_what_the_view_shows(backend: Backend) -> None:
    """Migration 0020's signature, counted in parts from the indexes, is the
    count and id sum of the entries each mailbox shows (listed or still to
    get a UID), whatever their states, placements and deletions."""
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    other = store.create_user("carol@b.example", "h")
    rng = random.Random(20)
    states = ["pending", "accepted", "appended", "rejected", "spam", "spammer", "expired"]
    views = {"INBOX": ["accepted", "appended"], "Pending": ["pending"], "Junk": ["spam", "spammer"],
             "Trash": ["rejected"], "Work": []}
    with store.transaction():
        env = store.insert_in_envelope(envid="g" * 26, origin_server="x", sender="s@x.example",
                                       size=1, block="", subject="", body=None)
        entries = [store.insert_mailbox_entry(u.id, env, f"bob{i}@b.example", rng.choice(states))
                   for i in range(60)]
        store.insert_mailbox_entry(other.id, env, "carol@b.example", "accepted")
    store.imap_create_folder(u.id, "Work")
    for entry in rng.sample(entries, 25):
        store.imap_place(u.id, entry, rng.choice(["Work", "Trash", "Junk", "INBOX"]), True, "INBOX")
    store.mark_deleted(rng.sample(entries, 10))
    for name, shown in views.items():
        if name == "Pending":
            continue  # UIDs given below
        store.imap_assign_uids(u.id, name, store.imap_view_unassigned(u.id, name, shown)[::2])
    for name, shown in views.items():
        members = ([m.message.entry_id for m in store.imap_view(u.id, name, shown)]
                   + store.imap_view_unassigned(u.id, name, shown))
        count, total, _ = store.imap_view_signature(u.id, name, shown)
        assert (count, total) == (len(members), sum(members)), name
    store.close()


def test_imap_views_by_state_and_placement(backend: Backend) -> None:
    """Migration 0018: a mailbox shows the entries in its states nobody
    placed elsewhere and the entries placed in it; placing drops the UID
    in the mailbox left; folders are created once, renamed with their
    messages and UIDs, and deleted with their messages (docs/imap.md,
    "Mailboxes")."""
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    other = store.create_user("carol@b.example", "h")
    with store.transaction():
        env = store.insert_in_envelope(envid="j" * 26, origin_server="x", sender="s@x.example",
                                       size=1, block="", subject="", body=None)
        kept, filed, junk = (store.insert_mailbox_entry(u.id, env, f"bob{i}@b.example",
                                                        state)
                             for i, state in enumerate(("accepted", "accepted", "spam")))
        store.insert_mailbox_entry(other.id, env, "carol@b.example", "accepted")
    inbox, junk_states = ["accepted"], ["spam", "spammer"]
    assert store.imap_view_unassigned(u.id, "INBOX", inbox) == [kept, filed]
    assert store.imap_view_unassigned(u.id, "Junk", junk_states) == [junk]
    assert store.imap_view_unassigned(u.id, "Work", []) == []
    store.imap_assign_uids(u.id, "INBOX", [kept, filed])
    assert store.imap_view_signature(u.id, "INBOX", inbox) == (2, kept + filed, 0)
    assert store.imap_create_folder(u.id, "Work")
    assert not store.imap_create_folder(u.id, "Work")
    assert store.imap_folders(u.id) == ["Work"] and store.imap_folders(other.id) == []
    store.imap_place(u.id, filed, "Work", True, "INBOX")
    assert [m.message.entry_id for m in store.imap_view(u.id, "INBOX", inbox)] == [kept]
    assert store.imap_view_unassigned(u.id, "Work", []) == [filed]
    store.imap_assign_uids(u.id, "Work", [filed])
    [placed] = store.imap_view(u.id, "Work", [])
    assert (placed.message.entry_id, placed.message.uid, placed.state, placed.folder,
            placed.body) == (filed, 1, "accepted", "Work", True)
    assert store.imap_view_signature(u.id, "Work", []) == (1, filed, 0)
    # Back where its state puts it: a new UID in INBOX (the old one was dropped).
    store.imap_place(u.id, filed, None, True, "Work")
    assert store.imap_view_unassigned(u.id, "INBOX", inbox) == [filed]
    store.imap_place(u.id, filed, "Work", True, "INBOX")
    store.imap_assign_uids(u.id, "Work", [filed])
    store.imap_rename_folder(u.id, "Work", "Play")
    assert store.imap_folders(u.id) == ["Play"]
    assert [(m.message.entry_id, m.message.uid) for m in store.imap_view(u.id, "Play", [])] \
        == [(filed, 2)]
    assert store.imap_uidnext(u.id, "Play") == 3
    # Spam placed in Junk shows there, with its body.
    store.imap_place(u.id, junk, "Junk", True, "INBOX")
    assert store.imap_view_unassigned(u.id, "Junk", junk_states) == [junk]
    store.imap_delete_folder(u.id, "Play")
    assert store.imap_folders(u.id) == [] and store.imap_view(u.id, "Play", []) == []
    assert store.imap_view_unassigned(u.id, "INBOX", inbox) == []  # filed went with Play
    store.close()


def test_imap_append_stores_a_message_of_the_users_own(backend: Backend) -> None:
    """APPEND (docs/imap.md): the envelope (null sender, the client's date),
    its body, an entry in state appended outside the maildrop's counts,
    placed when not in INBOX, and its UID with its flags, all at once; the
    next UID follows the ones already given."""
    store = backend.open()
    u = store.create_user("bob@b.example", "h")
    store.imap_assign_uids(u.id, "Drafts", [])
    body = Body.of(b"Subject: draft\r\n\r\n\xff not MIME\n")
    inbox_entry, inbox_uid = store.imap_append(
        u.id, recipient="bob@b.example", mailbox="INBOX", folder=None, envid="a" * 26,
        origin_server="local:append", block="", subject="draft", body=body,
        received_at=1_000_000.0, flags=1, reason="appended")
    entry, uid = store.imap_append(
        u.id, recipient="bob@b.example", mailbox="Drafts", folder="Drafts", envid="b" * 26,
        origin_server="local:append", block="", subject="draft", body=body,
        received_at=2_000_000.0, flags=16, reason="appended")
    assert (inbox_uid, uid) == (1, 1)
    assert store.imap_uidnext(u.id, "INBOX") == 2 and store.imap_uidnext(u.id, "Drafts") == 2
    [listed] = store.imap_view(u.id, "Drafts", [])
    assert (listed.message.entry_id, listed.message.uid, listed.message.flags, listed.state,
            listed.folder, listed.body, listed.message.received_at, listed.message.sender) == (
        entry, 1, 16, "appended", "Drafts", True, 2_000_000.0, "")
    assert [m.message.entry_id for m in store.imap_view(u.id, "INBOX", ["appended"])] == [
        inbox_entry]
    env = store.in_envelope(listed.message.envelope_id)
    assert env is not None and env.origin_server == "local:append"
    assert store.in_body(env.id) == body.read()
    stored = store.mailbox_entry(entry)
    assert stored is not None and stored.reason == "appended"
    assert store.mailbox_counts(u.id).messages == 0  # not POP3's
    assert store.maildrop(u.id, "accepted") == []
    # No envelopes: every entry but these is listed (ENVS ALL, the web's "all").
    assert store.mailbox_after(u.id, None, after=0, limit=9) == []
    assert store.mailbox_page(u.id) == []
    assert [e.id for e, _ in store.mailbox_page(u.id, ["appended"])] == [entry, inbox_entry]
    store.close()


def test_imap_sent_keeps_the_states_each_uid_shows(backend: Backend) -> None:
    """Migration 0018's imap_sent: each sent message's UID in Sent and the
    states its summary was written with; a new UID replaces the old one."""
    store = backend.open()
    u = store.create_user("alice@a.example", "h")
    with store.transaction():
        mid = store.insert_out_message(msgid="m" * 26, user_id=u.id, sender="alice@a.example",
                                       body=b"Subject: x\r\n\r\n", subject="x", summary="",
                                       expires_at=time.time() + 60)
        store.insert_out_recipient(mid, "bob@b.example", "b.example", "queued", None)
        store.insert_out_recipient(mid, "carol@c.example", "c.example", "queued", None)
    [row] = store.imap_sent_view(u.id)
    assert (row.message.id, row.uid, row.shown) == (mid, None, None)
    assert row.states == "bob@b.example queued\ncarol@c.example queued"
    store.imap_sent_assign(u.id, [(mid, row.states)])
    store.imap_sent_assign(u.id, [(mid, "changed")])
    [row] = store.imap_sent_view(u.id)
    assert (row.uid, row.shown) == (2, "changed")
    assert store.imap_uidnext(u.id, "Sent") == 3
    store.imap_sent_assign(u.id, [])
    store.close()


def test_fewer_statements_keep_their_meaning(backend: Backend) -> None:
    """Issue 15 item 1: the statements that replace several do what those did."""
    store = backend.open()
    user = store.create_user("alice@a.example", "h")
    with store.transaction():
        message_id = store.insert_out_message(
            msgid="m1", user_id=user.id, sender="alice@a.example", body=b"body", subject="s",
            summary="", expires_at=0)
        store.insert_out_envelope("e1", message_id, "b.example", "envelope")
        store.insert_out_recipient(message_id, "bob@b.example", "b.example",
                                   RecipientState.ENVELOPE_SENT, "e1")
        store.insert_out_recipient(message_id, "carol@b.example", "b.example",
                                   RecipientState.DELIVERED, "e1")
    needs_body = (RecipientState.QUEUED, RecipientState.ENVELOPE_SENT)
    # One recipient still waits: the body stays.
    assert store.drop_out_body_if_done(message_id, needs_body) is False
    assert store.out_body(message_id) == b"body"
    [bob, _carol] = store.out_recipients(message_id)
    store.update_out_recipient(bob.id, RecipientState.REJECTED)
    before = store.statements
    assert store.drop_out_body_if_done(message_id, needs_body) is True
    assert store.statements - before == 2  # the checked mark, then the chunks
    assert store.out_body(message_id) is None
    assert store.out_body_chunk(message_id, 0) is None
    assert store.drop_out_body_if_done(message_id, needs_body) is False  # once
    # Two keys counted in one statement; a key named twice counts twice.
    before = store.statements
    store.count_messages("smdp.p.example", 3, also=("sender:smdp.p.example/x@p.example",))
    assert store.statements - before == 1
    store.count_messages("smdp.q.example", 1, also=("smdp.q.example",))
    assert [(q.server, q.messages) for q in store.all_quality()] == [
        ("smdp.p.example", 3), ("smdp.q.example", 2)]
    assert [(q.server, q.messages) for q in store.sender_quality()] == [
        ("sender:smdp.p.example/x@p.example", 3)]
    # An envelope's expiry written with it; its fetching entries moved at once.
    env_id = store.insert_in_envelope(envid="e2", origin_server="smdp.p.example",
                                      sender="x@p.example", size=10, block="", subject="s",
                                      body=None, expires_at=5.0)
    fetching = store.insert_mailbox_entry(user.id, env_id, "alice@a.example",
                                          EntryState.FETCHING)
    pending = store.insert_mailbox_entry(user.id, env_id, "alice2@a.example",
                                         EntryState.PENDING)
    assert store.set_entries_state(env_id, EntryState.FETCHING, EntryState.ACCEPTED) == 1
    assert [(e.id, e.state) for e in store.entries_of_envelope(env_id)] == [
        (fetching, EntryState.ACCEPTED), (pending, EntryState.PENDING)]
    assert store.mailbox_counts(user.id).messages == 1  # the counts' trigger followed
    # Past the expiry written with the envelope: the pending entry expires.
    assert store.expire_in_envelopes(10.0, **IN_EXPIRY) == [(pending, "smdp.p.example")]
    store.close()


def test_a_record_read_with_its_parent_in_one_statement(backend: Backend) -> None:
    """Issue 15 item 1: the envelope with its message (origin), the entry with
    its envelope (destination): the same records as the two reads, one
    statement, and None for an unknown key."""
    store = backend.open()
    user = store.create_user("alice@a.example", "h")
    with store.transaction():
        message_id = store.insert_out_message(
            msgid="m1", user_id=user.id, sender="alice@a.example", body=b"body", subject="s",
            summary="sum", expires_at=9.0)
        store.insert_out_envelope("e1", message_id, "b.example", "envelope")
    before = store.statements
    assert store.out_envelope_and_message("e1") == (store.out_envelope("e1"),
                                                    store.out_message(message_id))
    assert store.statements - before == 3
    assert store.out_envelope_and_message("nope") is None
    env_id = store.insert_in_envelope(envid="e2", origin_server="smdp.p.example",
                                      sender="x@p.example", size=10, block="b", subject="s",
                                      body=b"hello")
    entry_id = store.insert_mailbox_entry(user.id, env_id, "alice@a.example",
                                          EntryState.PENDING)
    assert store.mailbox_entry_and_envelope(entry_id) == (store.mailbox_entry(entry_id),
                                                          store.in_envelope(env_id))
    assert store.mailbox_entry_and_envelope(entry_id + 1) is None
    store.close()
