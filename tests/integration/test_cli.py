"""The ``smdp`` command as a user and an administrator run it: real processes,
real servers; every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import smdp.store
from smdp.client.session import ClientError
from smdp.config import load_config
from smdp.store import open_store
from tests.integration.harness import make_pair, running, wait_until

MIGRATIONS = Path(smdp.store.__file__).parent / "migrations"


def smdp(
    *args: str, stdin: str = "", password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SMDP_PASSWORD", None)
    if password is not None:
        env["SMDP_PASSWORD"] = password
    return subprocess.run(
        [sys.executable, "-m", "smdp", *args], input=stdin, capture_output=True, text=True,
        env=env, timeout=60,
    )


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def test_admin_commands(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    cfg = str(a.config_path)
    r = smdp("admin", "-c", cfg, "user-add", "alice@a.example", "--password-stdin",
             stdin="pw\n")
    assert r.returncode == 0 and "created user alice@a.example" in r.stdout
    r = smdp("admin", "-c", cfg, "user-add", "alice@a.example", "--password-stdin",
             stdin="pw\n")
    assert r.returncode == 1 and r.stderr.strip() == \
        "smdp: alice@a.example already belongs to a user"
    r = smdp("admin", "-c", cfg, "user-add", "eve@b.example", "--password-stdin", stdin="pw\n")
    assert r.returncode == 1 and "not in a domain this server serves" in r.stderr
    r = smdp("admin", "-c", cfg, "user-add", "not-an-address", "--password-stdin", stdin="pw\n")
    assert r.returncode == 1
    no_traceback(r)
    r = smdp("admin", "-c", cfg, "identity-add", "alice@a.example", "sales@a.example")
    assert (r.returncode, r.stdout) == (
        0, "sales@a.example is now an identity of alice@a.example\n")
    r = smdp("admin", "-c", cfg, "users")
    assert r.stdout == "alice@a.example\tsales@a.example\n"
    r = smdp("admin", "-c", cfg, "identity-del", "alice@a.example", "alice@a.example")
    assert r.returncode == 1 and "main identity" in r.stderr
    store = open_store(load_config(a.config_path))  # a web API token of alice's
    alice = store.user_by_address("alice@a.example")
    assert alice is not None
    store.add_api_token(alice.id, "script", "digest", 0.0)
    store.close()
    r = smdp("admin", "-c", cfg, "passwd", "alice@a.example", "--password-stdin", stdin="new\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, "password of alice@a.example changed\n", "")
    store = open_store(load_config(a.config_path))  # revoked with the old password
    assert store.api_tokens(alice.id) == []
    store.close()
    r = smdp("admin", "-c", cfg, "passwd", "nobody@a.example", "--password-stdin", stdin="x\n")
    assert r.returncode == 1 and r.stdout == ""
    no_traceback(r)
    # A fresh store: nothing measured, nothing queued, nobody reported.
    r = smdp("admin", "-c", cfg, "quality")
    assert (r.returncode, r.stdout) == (0, "no peer has sent anything yet\n")
    assert smdp("admin", "-c", cfg, "queue").stdout == "0 job(s) queued\n"
    assert smdp("admin", "-c", cfg, "reports").stdout == "no spam reports\n"
    latest = max(int(name[:4]) for name in os.listdir(MIGRATIONS) if name.endswith(".sql"))
    for _ in range(2):  # already current: migrating again changes nothing
        r = smdp("admin", "-c", cfg, "migrate")
        assert (r.returncode, r.stdout) == (0, f"schema at version {latest}\n")
    r = smdp("admin", "-c", cfg, "user-add", "bob@a.example")  # no password source, no tty
    assert r.returncode == 1 and "no password given" in r.stderr
    # passwd took effect: the new password logs in, the old one no longer does.
    with running(a):
        a.client("alice@a.example", "new").quit()
        with pytest.raises(ClientError, match="authentication failed"):
            a.client("alice@a.example", "pw")


def test_bad_configuration_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nhostname = "h"\ndomains = ["x"]\n[limits]\nmax_recipients = "ten"\n')
    r = smdp("serve", "-c", str(bad))
    assert r.returncode == 1
    assert r.stderr.strip() == "smdp: limits.max_recipients must be a int, not 'ten'"
    r = smdp("serve", "-c", str(tmp_path / "nope.toml"))
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_client_walks_the_whole_flow(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.add_user("alice@a.example", "apw", identities=("sales@a.example",))
    b.add_user("bob@b.example", "bpw")
    with running(a, b):
        ua = ["client", "--server", f"127.0.0.1:{a.user_port}", "-u", "alice@a.example"]
        ub = ["client", "--server", f"127.0.0.1:{b.user_port}", "-u", "bob@b.example"]
        r = smdp(*ua, "send", "--to", "bob@b.example", "--subject", "Hi Bob",
                 stdin="Hello there\n", password="apw")
        assert r.returncode == 0 and "queued as" in r.stdout, r.stderr
        wait_until(lambda: len(b.envelopes("bob@b.example", all=True, password="bpw")) == 1,
                   what="envelope")
        r = smdp(*ub, "inbox", password="bpw")
        assert "1 envelope(s) awaiting a decision" in r.stdout
        assert "alice@a.example" in r.stdout and "Hi Bob" in r.stdout
        r = smdp(*ub, "show", "1", password="bpw")
        assert "Headline: Hello there" in r.stdout
        r = smdp(*ub, "accept-auth", "1", password="bpw")
        assert r.returncode == 0 and "white list" in r.stdout
        wait_until(lambda: [e[1] for e in b.envelopes("bob@b.example", all=True,
                                                      password="bpw")] == ["accepted"],
                   what="pull")
        r = smdp(*ub, "read", "1", password="bpw")
        assert "Subject: Hi Bob" in r.stdout and "Hello there" in r.stdout
        r = smdp(*ub, "lists", password="bpw")
        assert "in-white alice@a.example smdp.a.example auto" in r.stdout
        r = smdp(*ub, "list-del", "in-white", "alice@a.example", "smdp.a.example", password="bpw")
        assert r.returncode == 0
        r = smdp(*ub, "list-add", "in-black", "spam@a.example", password="bpw")
        assert r.returncode == 0
        r = smdp(*ub, "lists", password="bpw")
        assert "in-black spam@a.example smdp.a.example manual" in r.stdout
        wait_until(lambda: "delivered" in smdp(*ua, "sent", password="apw").stdout,
                   what="sender sees delivery")
        r = smdp(*ua, "identities", password="apw")
        assert "alice@a.example" in r.stdout and "sales@a.example" in r.stdout
        r = smdp(*ub, "accept", "99", password="bpw")
        assert r.returncode == 1 and r.stderr.strip() == "smdp: no envelope 99 in your mailbox"
        r = smdp(*ub, "inbox", password="wrong")
        assert r.returncode == 1 and r.stderr.strip() == "smdp: authentication failed"
        r = smdp(*ua, "send", "--to", "bob@b.example", "--from", "ceo@a.example",
                 "--subject", "x", stdin="x", password="apw")
        assert r.returncode == 1 and "not one of your identities" in r.stderr
        no_traceback(r)
    r = smdp(*ub, "inbox", password="bpw")  # servers stopped
    assert r.returncode == 1 and "cannot connect" in r.stderr
    no_traceback(r)
