"""Abuse limits (issue 4, items 3 to 6) on real servers: failed logins slowed,
envelope floods capped per peer, recipient and session, slow senders cut
off, unpulled envelopes counted against their origin, header injection
impossible, and a local sender reported as a spammer suspended."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from smdp.terms import Decision
from tests.integration.harness import PeerSocket, UserSocket, make_pair, running, wait_until

ENVIDS = [c * 26 for c in "abcdefg"]


def code(reply: str) -> int:
    return int(reply[:3])


def login_time(port: int, name: str, password: str) -> tuple[str, float]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(f"USER {name}\r\n".encode())
        f.flush()
        f.readline()
        started = time.monotonic()
        f.write(f"PASS {password}\r\n".encode())
        f.flush()
        reply = f.readline().decode().strip()
        return reply, time.monotonic() - started


def test_failed_logins_are_slowed_without_telling_accounts_apart(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[abuse]\nlogin_failures_per_client = 100\n"
                                      "login_failures_per_account = 2\nlogin_delay_max = 3\n")
    b.add_user("bob@b.example")
    with running(a, b):
        replies = {login_time(b.user_port, "nobody@b.example", "x")[0],
                   login_time(b.user_port, "bob@b.example", "x")[0]}
        assert replies == {"-ERR authentication failed"}  # same words either way
        login_time(b.user_port, "bob@b.example", "x")
        reply, took = login_time(b.user_port, "bob@b.example", "x")  # 3rd failure for bob
        assert reply == "-ERR authentication failed" and took >= 0.9
        reply, took = login_time(b.user_port, "bob@b.example", "x")
        assert took >= 1.9  # doubling ...
        reply, took = login_time(b.user_port, "bob@b.example", "x")
        assert 2.9 <= took < 10  # ... up to login_delay_max
        # An unknown name is slowed the same way: no oracle either.
        for _ in range(2):
            login_time(b.user_port, "ghost@b.example", "x")
        assert login_time(b.user_port, "ghost@b.example", "x")[1] >= 0.9
        # The right password still works (the limit slows, it does not lock out).
        assert login_time(b.user_port, "bob@b.example", "secret")[0].startswith("+OK")


def test_envelope_quotas_per_new_peer_recipient_and_session(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[abuse]\nenvelopes_per_new_peer_per_hour = 5\n"
                                      "envelopes_per_recipient_per_hour = 2\n"
                                      "envelopes_per_session = 3\n")
    for name in ("bob", "carol"):
        b.add_user(f"{name}@b.example")
    with running(a, b):
        p = PeerSocket(b.peer_port)
        p.cmd("EHLO smdp.a.example")
        rcpt_replies = []
        for envid in ENVIDS[:3]:
            assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={envid}")) == 250
            rcpt_replies.append(p.cmd("RCPT To:<bob@b.example>"))
            p.cmd("RSET")
        # Per recipient and hour: the third envelope for bob is deferred.
        assert [code(r) for r in rcpt_replies] == [250, 250, 452]
        assert "received 2 envelopes this hour" in rcpt_replies[2]
        # Per session: the fourth transaction needs a new session.
        reply = p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVIDS[3]}")
        assert reply.startswith("452 4.7.0 3 envelopes in one session")
        p.close()
        # Per peer and hour, lower while the peer is new (no quality yet).
        p = PeerSocket(b.peer_port)
        p.cmd("EHLO smdp.a.example")
        assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVIDS[4]}")) == 250
        p.cmd("RSET")
        assert code(p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVIDS[5]}")) == 250
        p.cmd("RSET")
        reply = p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVIDS[6]}")
        assert reply.startswith("452 4.7.0 smdp.a.example sent 5 envelopes this hour")
        p.close()


def test_slow_senders_are_cut_off(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_b="[abuse]\ncommand_timeout = 1\ndata_grace = 1\n"
                                      "min_data_rate = 100000\n")
    b.add_user("bob@b.example")
    with running(a, b):
        p = PeerSocket(b.peer_port)
        p.send(b"EHLO smdp.a.ex")  # ... and the rest never comes
        assert p.reply() == "421 4.4.2 Command line arriving too slowly, closing"
        p.close()
        p = PeerSocket(b.peer_port)
        p.cmd("EHLO smdp.a.example")
        p.cmd(f"ENVELOPE From:<alice@a.example> ID={ENVIDS[0]}")
        p.cmd("RCPT To:<bob@b.example>")
        p.cmd("SIZE=10")
        assert code(p.cmd("DATA")) == 354
        p.send(b"Subject: a trickle\r\n")
        assert p.reply() == "421 4.4.2 Data arriving too slowly, closing"
        p.close()
        assert b.envelopes("bob@b.example", all=True) == []
        # no command shows this: an envelope row stored for no mailbox entry
        assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]


def test_header_injection_is_impossible(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.add_user("alice@a.example")
    b.add_user("bob@b.example")
    with running(a, b):
        u = UserSocket(a.user_port)
        assert u.cmd("USER alice@a.example").startswith("+OK")
        assert u.cmd("PASS secret").startswith("+OK")
        assert u.cmd("MAIL") == "+OK composing as alice@a.example"
        # A bare CR inside the command: refused whole, not split into two lines.
        assert u.cmd(b"RCPT TO:<bob@b.example\rX-Injected: yes>") == (
            "-ERR control characters are not allowed")
        assert u.cmd("NOOP") == "+OK"  # no second reply was owed
        assert u.cmd("QUIT").startswith("+OK")
        u.close()
        c = a.client("alice@a.example")
        subject = "=?utf-8?q?Hello=0D=0AX-Injected:_yes=00?="
        c.submit(["bob@b.example"], f"Subject: {subject}\r\n\r\nhi\r\n".encode())
        c.quit()
        wait_until(lambda: b.envelopes("bob@b.example"), what="envelope")
        # no command shows this: the block as stored (ENV shows it sanitised)
        block = b.query("SELECT block FROM in_envelopes")[0][0]
        assert not any(line.startswith("X-Injected") for line in block.splitlines())
        assert "\x00" not in block and "\r" not in block.replace("\r\n", "")


def test_unpulled_envelopes_count_against_the_origin(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    for s in (a, b):
        s.config_path.write_text(s.config_path.read_text().replace(
            "poll_interval = 0.1\n",
            f"poll_interval = 0.1\nexpire_days = {3 / 86400}\nhousekeeping_interval = 0.3\n"))
    a.add_user("alice@a.example")
    b.add_user("bob@b.example")
    with running(a, b):
        c = a.client("alice@a.example")
        c.submit(["bob@b.example"], b"Subject: ignored\r\n\r\nnobody reads this\r\n")
        c.quit()
        wait_until(lambda: b.quality() == {"smdp.a.example": (1, 0)},
                   what="the envelope counted")
        # Destination.expire marks the entry expired, then votes in a second
        # transaction: wait for both, not for the first alone.
        wait_until(lambda: [e[1] for e in b.envelopes("bob@b.example", all=True)]
                   == ["expired"] and b.quality() == {"smdp.a.example": (1, -1)},
                   what="expiry, counted against the origin")


def test_a_sender_reported_as_spammer_is_suspended(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path, extra_a="[abuse]\nspam_reports_per_day = 2\n")
    a.add_user("alice@a.example")
    b.add_user("bob@b.example")
    b.add_user("carol@b.example")
    with running(a, b):
        c = a.client("alice@a.example")
        c.submit(["bob@b.example", "carol@b.example"], b"Subject: buy now\r\n\r\ncheap\r\n")
        c.quit()
        users = ("bob@b.example", "carol@b.example")
        wait_until(lambda: all(b.envelopes(u) for u in users), what="envelopes")
        for rcpt in users:
            [env] = b.envelopes(rcpt)
            u = b.client(rcpt)
            u.call(wire.UserDecision(Decision.REJECT_SPAM, int(env[0])))
            u.quit()
        wait_until(lambda: [line for line in a.admin("reports").splitlines()
                            if line.startswith("SUSPENDED ")]
                   == ["SUSPENDED alice@a.example: 2 spam reports in 24 hours"],
                   what="suspension")
        c = a.client("alice@a.example")
        c.call(wire.MailCmd(None))
        c.call(wire.RcptCmd("bob@b.example"))
        c.call(wire.DataCmd())
        with pytest.raises(ClientError, match="sending is suspended"):
            c.call(wire.Message(b"Subject: more\r\n\r\nspam\r\n"))
        c.quit()
        admin = [sys.executable, "-m", "smdp", "admin", "-c", str(a.config_path)]
        shown = subprocess.run([*admin, "reports"], capture_output=True, text=True, check=True)
        assert "SUSPENDED alice@a.example: 2 spam reports in 24 hours" in shown.stdout
        subprocess.run([*admin, "unsuspend", "alice@a.example"], check=True,
                       capture_output=True)
        c = a.client("alice@a.example")
        assert "queued as" in c.submit(["bob@b.example"], b"Subject: sorry\r\n\r\nok\r\n")
        c.quit()
