"""``smdp admin backup`` and ``restore`` (issue 16 item 5; docs/deployment.md,
"Backups"): a backup taken from a running server under load is a consistent
copy that a new server, restored from it, works from.

The servers are real processes on SQLite (the backup is SQLite's online
backup API; PostgreSQL is backed up with its own tools, and the command says
so), hence ``own_backend``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.config import Config, parse_config
from smdp.protocol import user as wire
from smdp.store import open_store
from tests import pg
from tests.integration.harness import Server, free_ports, make_pair, running, wait_until

pytestmark = pytest.mark.own_backend

ALICE, BOB = "alice@a.example", "bob@b.example"
# Bodies big enough that the store spans a few hundred pages, so that a
# backup copying 8 pages a step runs for a while beside the submissions.
FILLER = ("x" * 76 + "\r\n") * 600


def smdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "smdp", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def submit(server: Server, subject: str) -> None:
    c = server.client(ALICE)
    try:
        c.submit([BOB], f"Subject: {subject}\r\nTo: {BOB}\r\n\r\n{FILLER}".encode())
    finally:
        c.quit()


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_backup_under_load_restores_into_a_server_that_delivers_the_queue(
        tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    a, b = make_pair(tmp_path / "old", backend="sqlite")
    a.add_user(ALICE)
    b.add_user(BOB)
    backup = tmp_path / "backups" / "a.sqlite3"
    backup.parent.mkdir()
    a.start()  # b stays down: every envelope waits in a's queue
    try:
        before = [f"before-{i:02d}" for i in range(12)]
        for subject in before:
            submit(a, subject)  # acknowledged: must be in any later backup
        acked_during: list[str] = []
        stop = threading.Event()
        errors: list[BaseException] = []
        backing_up = threading.Event()

        def keep_submitting() -> None:
            n = 0
            try:
                while not stop.is_set():
                    subject = f"during-{n:03d}"
                    running = backing_up.is_set()
                    submit(a, subject)
                    if running and backing_up.is_set():
                        acked_during.append(subject)  # sent and answered mid-backup
                    n += 1
            except (ClientError, OSError, AssertionError) as exc:
                errors.append(exc)

        load = threading.Thread(target=keep_submitting)
        load.start()
        try:
            wait_until(lambda: a.query("SELECT 1 FROM out_messages WHERE subject='during-001'"),
                       timeout=20)
            backing_up.set()
            started = time.monotonic()
            done = smdp("admin", "-c", str(a.config_path), "backup", str(backup),
                        "--step-pages", "8", "--pause", "0.01")
            took = time.monotonic() - started
            backing_up.clear()
            time.sleep(0.3)  # a few more submissions after the backup
        finally:
            stop.set()
            load.join(timeout=30)
        assert not errors, errors
        assert done.returncode == 0, done.stderr
        assert f"to {backup}: " in done.stdout and "integrity ok" in done.stdout
        assert f"the configuration: {a.config_path}" in done.stdout
        # The server went on answering while the pages were copied: the held
        # snapshot blocks no writer.
        assert acked_during, f"no submission was answered during the {took:.2f} s backup"
    finally:
        a.stop()

    # The copy: one self-contained file, whole and consistent.
    assert not Path(f"{backup}-wal").exists()
    assert read(backup, "PRAGMA integrity_check") == [("ok",)]
    in_copy = {s for (s,) in read(backup, "SELECT subject FROM out_messages")}
    assert set(before) <= in_copy, "a message acknowledged before the backup is missing"
    pending = {s for (s,) in read(
        backup, "SELECT m.subject FROM out_messages m JOIN out_recipients r "
        "ON r.message_id = m.id WHERE r.state = 'queued'")}
    assert pending == in_copy, "every message in the copy waits for the peer that is down"
    assert len(read(backup, "SELECT 1 FROM queue")) >= len(pending)

    # A new server: another folder, new ports, the same domain, host name and
    # configuration; b now finds a.example there.
    peer, user = free_ports(2)
    new = Server("a.example", "smdp.a.example", tmp_path / "new", peer, user)
    new.root.mkdir()
    new.peers = {"b.example": (b.hostname, b.peer_port)}
    new.write_config()
    b.peers = {"a.example": (new.hostname, new.peer_port)}
    b.write_config()
    restored = smdp("admin", "-c", str(new.config_path), "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert "integrity ok" in restored.stdout

    with running(new, b):
        def arrived() -> set[str]:
            return {str(s) for (s,) in b.query("SELECT subject FROM in_envelopes")}

        wait_until(lambda: pending <= arrived(), timeout=30)
        assert arrived() == pending  # the new server holds nothing else to send
        # The bodies came through too: bob accepts every envelope and b pulls
        # each message from the restored server.
        c = b.client(BOB)
        try:
            entries = [int(line.split(" ", 1)[0]) for line in c.call(wire.Envs()).lines or []]
            assert len(entries) == len(pending)
            for entry in entries:
                c.call(wire.UserDecision(wire.DECISIONS_BY_VERB["ACCEPT"], entry))
        finally:
            c.quit()
        wait_until(lambda: b.query("SELECT COUNT(*) FROM mailbox WHERE state='accepted'")
                   == [(len(pending),)], timeout=30)
        wait_until(lambda: new.query(
            "SELECT COUNT(*) FROM out_recipients WHERE state='delivered'") == [(len(pending),)],
            timeout=30)


def test_restore_refuses_a_store_in_use_and_a_newer_schema(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path, backend="sqlite")
    a.add_user(ALICE)
    backup = tmp_path / "copy.sqlite3"
    assert smdp("admin", "-c", str(a.config_path), "backup", str(backup)).returncode == 0
    again = smdp("admin", "-c", str(a.config_path), "backup", str(backup))
    assert again.returncode == 1 and "give --force" in again.stderr
    a.start()
    try:
        busy = smdp("admin", "-c", str(a.config_path), "restore", str(backup), "--force")
        assert busy.returncode == 1, busy.stdout
        assert "is in use: stop the server" in busy.stderr
    finally:
        a.stop()
    exists = smdp("admin", "-c", str(a.config_path), "restore", str(backup))
    assert exists.returncode == 1 and "give --force" in exists.stderr
    db = sqlite3.connect(backup)
    db.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future.sql', 0)")
    db.commit()
    db.close()
    newer = smdp("admin", "-c", str(a.config_path), "restore", str(backup), "--force")
    assert newer.returncode == 1 and "newer than this smdp's" in newer.stderr
    assert "Traceback" not in newer.stderr


def test_a_postgresql_store_is_pointed_to_its_own_tools(tmp_path: Path) -> None:
    config = tmp_path / "pg.toml"
    config.write_text('[server]\nhostname = "smdp.a.example"\ndomains = ["a.example"]\n'
                      '[listen]\npeer = "127.0.0.1:0"\nuser = "127.0.0.1:0"\n'
                      '[store]\nbackend = "postgresql"\ndsn = "host=/nonexistent dbname=x"\n')
    for command in ("backup", "restore"):
        done = smdp("admin", "-c", str(config), command, str(tmp_path / "x"))
        assert done.returncode == 1
        assert "this server's store is postgresql: use pg_dump" in done.stderr
        assert "docs/deployment.md" in done.stderr and "Traceback" not in done.stderr


def test_pg_dump_and_pg_restore_as_documented(pg_cluster: pg.PgCluster, tmp_path: Path) -> None:
    """docs/deployment.md's PostgreSQL procedure: pg_dump --format=custom of a
    live database, pg_restore --no-owner into an empty one, and the store on
    it has the accounts and the queue, and hands out new ids."""
    def config(dsn: str) -> Config:
        return parse_config({"server": {"hostname": "smdp.a.example", "domains": ["a.example"]},
                             "store": {"backend": "postgresql", "dsn": dsn}}, tmp_path)

    source = pg_cluster.create_database()
    target = pg_cluster.create_database()
    try:
        store = open_store(config(source))
        alice = store.create_user(ALICE, "h")
        with store.transaction():
            store.enqueue("send-envelope", "env-1", '{"envid": "env-1"}', at=0.0)
        dump = pg_cluster.root / "smdp.dump"
        for cmd in (["pg_dump", "--format=custom", f"--file={dump}", source],
                    ["pg_restore", "--exit-on-error", "--no-owner", f"--dbname={target}",
                     str(dump)]):
            done = subprocess.run(pg._as_owner([str(pg_cluster.bindir / cmd[0]), *cmd[1:]]),
                                  capture_output=True, text=True, timeout=60,
                                  cwd=pg_cluster.root, check=False)
            assert done.returncode == 0, done.stderr
        store.close()
        restored = open_store(config(target))
        try:
            assert [u.main_address for u in restored.users()] == [ALICE]
            assert [j.key for j in restored.claim_jobs("n1", 1e12, 10, 60.0)] == ["env-1"]
            assert restored.create_user("carol@a.example", "h").id > alice.id
        finally:
            restored.close()
    finally:
        pg_cluster.drop_database(source)
        pg_cluster.drop_database(target)
