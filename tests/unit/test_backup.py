"""The backup module's refusals and checks, in process (the whole flow, under
load with real servers, is tests/integration/test_backup.py)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from smdp.config import parse_config
from smdp.store import StoreError, open_store
from smdp.store.backup import backup_sqlite, config_files, restore_sqlite


def made_store(path: Path) -> Path:
    store = open_store(str(path))
    store.create_user("alice@a.example", "h")
    store.close()
    return path


def test_backup_into_a_folder_gets_a_dated_name(tmp_path: Path) -> None:
    store = made_store(tmp_path / "s.sqlite3")
    (tmp_path / "out").mkdir()
    report = backup_sqlite(store, tmp_path / "out")
    assert report.path.parent == tmp_path / "out" and report.path.name.startswith("smdp-")
    assert ("users", 1) in report.counts and report.schema_version > 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == [report.path.name]  # no leftovers
    again = backup_sqlite(store, report.path, force=True, pages_per_step=1, pause=0)
    assert again.pages == report.pages


def test_backup_refusals(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="there is no store"):
        backup_sqlite(tmp_path / "none.sqlite3", tmp_path / "b")
    store = made_store(tmp_path / "s.sqlite3")
    with pytest.raises(StoreError, match="cannot replace the store itself"):
        backup_sqlite(store, store, force=True)
    with pytest.raises(StoreError, match="there is no folder"):
        backup_sqlite(store, tmp_path / "missing-folder" / "b.sqlite3")
    # What cannot be written (here: a folder where the temporary file goes).
    (tmp_path / f".b.sqlite3.partial-{os.getpid()}").mkdir()
    with pytest.raises(StoreError, match="cannot write"):
        backup_sqlite(store, tmp_path / "b.sqlite3")
    (tmp_path / f".b.sqlite3.partial-{os.getpid()}").rmdir()
    plain = tmp_path / "plain.sqlite3"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(StoreError, match="not an smdp store"):
        backup_sqlite(plain, tmp_path / "b.sqlite3")
    assert not (tmp_path / "b.sqlite3").exists()  # a failed backup leaves no file


def test_a_damaged_copy_is_refused(tmp_path: Path) -> None:
    store = made_store(tmp_path / "s.sqlite3")
    db = sqlite3.connect(store)
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("INSERT INTO identities (address, user_id, is_main) VALUES ('x@a.example', 99, 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="1 broken reference"):
        backup_sqlite(store, tmp_path / "b.sqlite3")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\xff" * 8192)
    with pytest.raises(StoreError, match=r"cannot restore .* file is not a database"):
        restore_sqlite(garbage, tmp_path / "new.sqlite3", head=99)
    # A backup damaged after it was written: restore checks it first.
    many = open_store(str(tmp_path / "many.sqlite3"))
    for n in range(300):
        many.create_user(f"u{n}@a.example", "h" * 50)
    many.close()
    good = backup_sqlite(tmp_path / "many.sqlite3", tmp_path / "good.sqlite3").path
    data = bytearray(good.read_bytes())
    pages = len(data) // 4096
    for page in range(pages - 3, pages):
        data[page * 4096 + 100:page * 4096 + 120] = b"\x07" * 20
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"damaged.sqlite3 fails SQLite's integrity check \(On"):
        restore_sqlite(damaged, tmp_path / "new.sqlite3", head=99)
    assert not (tmp_path / "new.sqlite3").exists()
    with pytest.raises(StoreError, match=r"cannot back up .* file is not a database"):
        backup_sqlite(garbage, tmp_path / "b2.sqlite3")
    with pytest.raises(StoreError, match="there is no backup"):
        restore_sqlite(tmp_path / "none", tmp_path / "new.sqlite3", head=99)


def test_restore_replaces_a_stopped_store(tmp_path: Path) -> None:
    source = made_store(tmp_path / "s.sqlite3")
    running = open_store(str(source))
    with running.transaction():
        running.enqueue("send-envelope", "env-1", "{}", at=0.0)
    assert len(running.claim_jobs("old-node", 1e9, 10, 600.0)) == 1  # mid-job at the backup
    copy = backup_sqlite(source, tmp_path / "b.sqlite3").path
    running.close()
    target = tmp_path / "t.sqlite3"
    other = open_store(str(target))
    other.create_user("bob@b.example", "h")
    other.close()
    report = restore_sqlite(copy, target, head=10**6, force=True)
    assert ("users", 1) in report.counts
    store = open_store(str(target))
    assert [u.main_address for u in store.users()] == ["alice@a.example"]
    # The claim went with the old server: another node takes the job at once.
    assert [j.key for j in store.claim_jobs("new-node", 1e9, 10, 600.0)] == ["env-1"]
    store.close()


def test_config_files_lists_what_the_backup_lacks(tmp_path: Path) -> None:
    for name in ("c.pem", "c.key", "ca.pem", "mx-ca.pem", "peer-ca.pem", "d.pem"):
        (tmp_path / name).write_text("x")
    config = parse_config({
        "server": {"hostname": "smdp.a.example", "domains": ["a.example"]},
        "tls": {"cert": "c.pem", "key": "c.key", "ca": "ca.pem", "require": False},
        "smtp": {"tls": {"ca": "mx-ca.pem"}},
        "peers": {"b.example": {"ca": "peer-ca.pem"}},
        "dkim": {"a.example": {"selector": "s", "key": "d.pem"}},
    }, tmp_path, tmp_path / "smdp.toml")
    assert [(s, p.name) for s, p in config_files(config)] == [
        ("the configuration", "smdp.toml"), ("tls.cert", "c.pem"), ("tls.key", "c.key"),
        ("tls.ca", "ca.pem"), ("smtp.tls.ca", "mx-ca.pem"), ('peers."b.example".ca', "peer-ca.pem"),
        ('dkim."a.example".key', "d.pem")]
    bare = parse_config({"server": {"hostname": "smdp.a.example", "domains": ["a.example"]},
                         "peers": {"b.example": {"pin_sha256": "ab" * 32}}}, tmp_path)
    assert config_files(bare) == []  # no file named, not even a configuration file


def test_an_older_backup_is_restored_and_migrated(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup from before queue claims (schema version 1) restores, and the
    server brings it up to date when it opens it."""
    import smdp.store.sqlite

    every = smdp.store.sqlite.migrations()
    monkeypatch.setattr(smdp.store.sqlite, "migrations", lambda: every[:1])
    old = made_store(tmp_path / "old.sqlite3")
    monkeypatch.undo()
    copy = backup_sqlite(old, tmp_path / "b.sqlite3")
    assert copy.schema_version == 1
    report = restore_sqlite(copy.path, tmp_path / "t.sqlite3", head=every[-1][0])
    assert report.schema_version == 1
    store = open_store(str(tmp_path / "t.sqlite3"))
    assert store.schema_version() == every[-1][0]
    assert [u.main_address for u in store.users()] == ["alice@a.example"]
    store.close()


def test_the_pause_between_steps_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    from smdp.cli import main

    for pause in ("-1", "61"):
        with pytest.raises(SystemExit):
            main(["admin", "-c", "unused.toml", "backup", "b.sqlite3", "--pause", pause])
        assert "is not a pause from 0 to 60 seconds" in capsys.readouterr().err
