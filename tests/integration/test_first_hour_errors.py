"""Issue 10, items 1 and 2: what a new user runs into in the first hour.

Every error is one sentence on stderr (``smdp: ...``) that says what to do,
with a non-zero exit, never a traceback: a port already in use, the client
pointed at the peer port, an address the wire cannot carry, a password no
account can have, Ctrl-D at a password prompt, PostgreSQL unreachable or a
database missing. Passwords: ``admin user-add`` and ``passwd`` refuse what no
login could use and ask twice on a terminal; a user changes their own
password (PASSWD, NEWPASS, ``smdp client passwd``), throttled like logins.

Each case runs ``python -m smdp`` as a real process; prompts run on a real
pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from smdp.client.session import ClientError
from tests.integration.harness import Server, UserSocket, free_ports, make_pair, running
from tests.pg import PgCluster

DEADLINE = 60.0  # a bound on failure only: slow under coverage, one core
TIMER_SLACK = 0.005  # seconds a server's sleep may end early by on uvloop (libuv's cached clock)


def smdp(*args: str, stdin: str = "", env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SMDP_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "smdp", *args], input=stdin,
                          capture_output=True, text=True, env=full, timeout=DEADLINE)


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The one line a failing command printed; it must say each fragment."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smdp: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def on_terminal(args: list[str], answers: list[tuple[str, bytes]],
                env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``smdp`` on a pseudo-terminal of its own (a new session, so that
    getpass cannot reach the terminal pytest runs on); after each prompt is
    shown, type its answer. The exit status and everything shown."""
    master, slave = pty.openpty()
    full = {k: v for k, v in os.environ.items() if not k.startswith("SMDP_")} | (env or {})
    proc = subprocess.Popen([sys.executable, "-m", "smdp", *args], stdin=slave, stdout=slave,
                            stderr=slave, env=full, start_new_session=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + DEADLINE

    def read(until: bytes | None) -> None:
        nonlocal shown
        while until is None or until not in shown:
            ready, _, _ = select.select([master], [], [], deadline - time.monotonic())
            assert ready, f"no {until!r} on the terminal; shown: {shown!r}"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the program exited and closed the terminal
                chunk = b""
            if not chunk:
                assert until is None, f"exited before {until!r}; shown: {shown!r}"
                return
            shown += chunk

    try:
        for prompt, answer in answers:
            read(prompt.encode())
            shown = shown.replace(prompt.encode(), b"<" + prompt.encode() + b">", 1)
            os.write(master, answer)
        read(None)
        return proc.wait(timeout=DEADLINE), shown.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def client(server: Server, port: int | None = None) -> list[str]:
    return ["client", "--server", f"127.0.0.1:{port or server.user_port}", "-u",
            "alice@a.example"]


# -- item 1: every error is one line -------------------------------------------------


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    with socket.create_server(("127.0.0.1", a.user_port)):
        r = smdp("serve", "-c", str(a.config_path))
    one_line_error(r, f"cannot listen on 127.0.0.1:{a.user_port} ([listen] user): address "
                   "already in use", "stop it, or choose another port in [listen]")


def test_client_mistakes_are_one_line(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    a.add_user("alice@a.example", "apw")
    ok = {"SMDP_PASSWORD": "apw"}
    with running(a):
        one_line_error(smdp(*client(a, a.peer_port), "inbox", env=ok),
                       f"127.0.0.1:{a.peer_port} does not answer as an SMDP user port",
                       "it must name the user port, not the peer port")
        one_line_error(smdp(*client(a), "send", "--to", "not-an-address", "--subject", "x",
                            stdin="hi\n", env=ok),
                       "not-an-address", "nothing was sent")
        for password, why in [("", "the password is empty"),
                              (" apw", "the password starts with a space"),
                              ("a\tpw", "the password holds a control character")]:
            one_line_error(smdp(*client(a), "inbox", env={"SMDP_PASSWORD": password}),
                           why, "no account has such a password; check what you typed")
        one_line_error(smdp(*client(a), "--password-stdin", "inbox", stdin=""),
                       "the password is empty")


def test_ctrl_d_at_a_password_prompt_is_one_line(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    for args in (["admin", "-c", str(a.config_path), "user-add", "carol@a.example"],
                 ["client", "--server", "127.0.0.1:9", "-u", "carol@a.example", "inbox"]):
        status, shown = on_terminal(args, [("Password: ", b"\x04")])
        assert status == 1 and "Traceback" not in shown, shown
        assert shown.strip().endswith(
            "smdp: no password given (the input ended at the prompt): type one, or use "
            "--password-stdin or SMDP_PASSWORD"), shown
    assert smdp("admin", "-c", str(a.config_path), "users").stdout == ""


@pytest.mark.own_backend  # PostgreSQL whatever the pass: it is what is missing here
def test_postgresql_unreachable_or_missing_is_one_line(
        tmp_path: Path, pg_cluster: PgCluster, new_pg_dsn: Callable[[], str]) -> None:
    closed_port = free_ports(1)[0]
    # A database the server's role may not create tables in (PostgreSQL 15:
    # only the owner may, in schema public).
    unowned = psycopg.conninfo.conninfo_to_dict(new_pg_dsn())["dbname"]
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as db:
        db.execute("DROP ROLE IF EXISTS smdp_guest")
        db.execute("CREATE ROLE smdp_guest LOGIN")
    for dsn, why, advice in [
        (f"host=127.0.0.1 port={closed_port} dbname=smdp user=smdp connect_timeout=10",
         "Connection refused", "check that it is running and that [store] dsn names an "
                               "existing database"),
        (pg_cluster.dsn("no_such_database"), 'database "no_such_database" does not exist',
         "check that it is running and that [store] dsn names an existing database"),
        (f"host=127.0.0.1 port={pg_cluster.port} user=smdp_guest dbname={unowned}",
         "permission denied for schema public", "the role of [store] dsn must own the "
                                                "database, or a superuser must run"),
    ]:
        server = Server("a.example", "smdp.a.example", tmp_path, *free_ports(2),
                        backend="postgresql", dsn=dsn)
        server.write_config()
        for command in (["admin", "-c", str(server.config_path), "users"],
                        ["serve", "-c", str(server.config_path)]):
            one_line_error(smdp(*command), why, advice)


# -- item 2: passwords that work ------------------------------------------------------


def test_user_add_refuses_passwords_no_login_could_use(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    admin = ["admin", "-c", str(a.config_path)]
    for password, why in [(" leading-space", "the password starts with a space"),
                          ("", "the password is empty"),
                          ("tab\there", "the password holds a control character"),
                          ("\u00e9" * 251, "the password is longer than 500 octets")]:
        one_line_error(smdp(*admin, "user-add", "alice@a.example", "--password-stdin",
                            stdin=password + "\n"),
                       why, "no one could log in with it; choose another")
    # On a terminal: asked twice; two different answers change nothing.
    status, shown = on_terminal([*admin, "user-add", "alice@a.example"],
                                [("Password: ", b"one pw\n"), ("Password again: ", b"another\n")])
    assert status == 1 and shown.strip().endswith(
        "smdp: the two passwords differ; nothing was changed, run the command again"), shown
    status, shown = on_terminal([*admin, "user-add", "alice@a.example"],
                                [("Password: ", b" x\n")])  # refused before asking again
    assert status == 1 and "the password starts with a space" in shown, shown
    assert smdp(*admin, "users").stdout == ""  # none of the above made an account
    longest = "\u00e9" * 250  # 500 octets: the longest password there is
    status, shown = on_terminal([*admin, "user-add", "alice@a.example"],
                                [("Password: ", longest.encode() + b"\n"),
                                 ("Password again: ", longest.encode() + b"\n")])
    assert (status, shown.strip().splitlines()[-1]) == (0, "created user alice@a.example")
    one_line_error(smdp(*admin, "passwd", "alice@a.example", "--password-stdin",
                        stdin=" leading-space\n"),
                   "the password starts with a space", "choose another")
    status, shown = on_terminal([*admin, "passwd", "alice@a.example"],
                                [("New password: ", b"p w \n"),
                                 ("New password again: ", b"p w \n")])
    assert (status, shown.strip().splitlines()[-1]) == (0, "password of alice@a.example changed")
    with running(a):
        a.client("alice@a.example", "p w ").quit()  # what was set is what logs in


def test_users_change_their_own_password(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path, extra_a="[abuse]\nlogin_failures_per_account = 2\n"
                                         "login_delay_max = 1.0\n")
    a.add_user("alice@a.example", "old pw")
    with running(a):
        r = smdp(*client(a), "--password-stdin", "passwd", "--new-password-stdin",
                 stdin="old pw\nnew pw\n")
        assert (r.returncode, r.stdout, r.stderr) == (
            0, "password changed; use the new one from now on\n", "")
        with pytest.raises(ClientError, match="authentication failed"):
            a.client("alice@a.example", "old pw")
        a.client("alice@a.example", "new pw").quit()
        # A new password the wire could not carry is refused before connecting.
        one_line_error(smdp(*client(a), "passwd", "--new-password-stdin",
                            stdin=" lead\n", env={"SMDP_PASSWORD": "new pw"}),
                       "the password starts with a space", "choose another")
        # On a terminal the new one is asked twice.
        status, shown = on_terminal([*client(a), "passwd"],
                                    [("New password: ", b"third\n"),
                                     ("New password again: ", b"thrid\n")],
                                    env={"SMDP_PASSWORD": "new pw"})
        assert status == 1 and "smdp: the two passwords differ" in shown, shown
        a.client("alice@a.example", "new pw").quit()

        s = UserSocket(a.user_port)
        s.cmd("USER alice@a.example")
        assert s.cmd("PASS new pw").startswith("+OK ")
        s.cmd("CAPA")
        assert any(line.startswith("SMDP ") and line.endswith(" PASSWD") for line in s.block())
        assert s.cmd("NEWPASS x") == "-ERR send PASSWD with your current password first"
        # A wrong current password: refused, and it counts as a failed login.
        started = time.monotonic()
        assert s.cmd("PASSWD old pw") == "-ERR wrong password; the password was not changed"
        # (A millisecond short allowed: uvloop's timers count from the loop's
        # cached clock, so a 0.2 s sleep may end 0.1999 s after the send.)
        assert time.monotonic() - started >= 0.2 - TIMER_SLACK
        assert s.cmd("PASSWD new pw") == "+OK send the new password with NEWPASS"
        assert s.cmd("STAT").startswith("-ERR send NEWPASS with the new password, or RSET")
        assert s.cmd("RSET") == "+OK password unchanged"
        assert s.cmd("NEWPASS x") == "-ERR send PASSWD with your current password first"
        s.close()
        # The account's failures: the old password's login, the wrong PASSWD,
        # and now this login, the third, past login_failures_per_account = 2:
        # delayed 1 s (login_delay_max), not 0.2 as it would be were PASSWD's
        # failure not counted.
        started = time.monotonic()
        with pytest.raises(ClientError, match="authentication failed"):
            a.client("alice@a.example", "guess")
        assert time.monotonic() - started >= 1.0 - TIMER_SLACK
        a.client("alice@a.example", "new pw").quit()
