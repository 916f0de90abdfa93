"""What an operator and a long-time user rely on: a log that tells each step
of a message's way with the ids that join them, a start line naming every
listener, ``smdp gencert``'s lines to paste, and SENT past one page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from smdp.client.session import ClientError
from smdp.config import load_config
from smdp.protocol import user as wire
from smdp.store import open_store
from smdp.terms import Decision, RecipientState
from tests.integration.harness import Pki, Server, free_ports, make_pair, running, wait_until
from tests.integration.inprocess import InProcessServer


def smdp(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SMDP_PASSWORD", None)
    if password is not None:
        env["SMDP_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "smdp", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_sent_pages_past_a_hundred_messages(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, "a.example")
    server.add_user("alice@a.example")
    server.add_user("eve@a.example")
    # 105 sent messages, seeded in the store (sending them would take minutes):
    # m000 the oldest, m104 the newest, one recipient each.
    store = open_store(load_config(server.config_path))
    try:
        alice = store.user_by_address("alice@a.example")
        eve = store.user_by_address("eve@a.example")
        assert alice is not None and eve is not None
        with store.transaction():
            for i in range(105):
                message = store.insert_out_message(
                    msgid=f"m{i:03d}", user_id=alice.id, sender="alice@a.example",
                    body=b"x", subject="", summary="", expires_at=time.time() + 86400)
                store.insert_out_recipient(message, f"r{i}@b.example", "b.example",
                                           RecipientState.REFUSED, None, "seeded")
            store.insert_out_message(msgid="eve1", user_id=eve.id, sender="eve@a.example",
                                     body=b"x", subject="", summary="",
                                     expires_at=time.time() + 86400)
    finally:
        store.close()
    server.start()
    try:
        client = server.client("alice@a.example")
        first = client.call(wire.Sent())
        assert first.text == "100 recipient status line(s); more: SENT BEFORE m005"
        assert [line.split()[0] for line in first.lines or []] == [
            f"m{i:03d}" for i in range(104, 4, -1)]
        rest = client.call(wire.Sent(before="m005"))
        assert rest.text == "5 recipient status line(s)"  # the last page names no next
        assert [line.split()[0] for line in rest.lines or []] == [
            "m004", "m003", "m002", "m001", "m000"]
        assert client.call(wire.Sent(before="m000")).text == "0 recipient status line(s)"
        for foreign in ("eve1", "nope"):  # another user's message is unknown too
            with pytest.raises(ClientError, match=f"^no sent message {foreign}$"):
                client.call(wire.Sent(before=foreign))
        client.quit()

        # The client says how to see the older ones.
        cli = ["client", "--server", f"127.0.0.1:{server.user_port}", "-u", "alice@a.example",
               "sent"]
        shown = smdp(*cli, password="secret")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[-1] == "older messages: sent --before m005"
        older = smdp(*cli, "--before", "m005", password="secret")
        assert older.returncode == 0, older.stderr
        assert "m000 r0@b.example refused" in older.stdout
        assert "older messages" not in older.stdout
    finally:
        server.stop()


def test_gencert_prints_the_tls_lines_a_server_and_its_peers_need(tmp_path: Path) -> None:
    made = smdp("gencert", "--ca", "--out", str(tmp_path / "ca"))
    assert made.returncode == 0, made.stderr
    issued = smdp("gencert", "--hostname", "smdp.y.example", "--out", str(tmp_path / "y"),
                  "--ca-dir", str(tmp_path / "ca"))
    assert issued.returncode == 0, issued.stderr
    # What follows "[tls]" pastes as is into the configuration.
    table = tomllib.loads(issued.stdout[issued.stdout.index("[tls]"):])["tls"]
    ca = (tmp_path / "ca" / "ca.pem").resolve()
    assert table == {"cert": str((tmp_path / "y" / "smdp.y.example.pem").resolve()),
                     "key": str((tmp_path / "y" / "smdp.y.example.key").resolve()),
                     "ca": str(ca)}
    cert = x509.load_pem_x509_certificate(Path(table["cert"]).read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    # A self-signed certificate has no CA to trust: peers pin its fingerprint.
    alone = smdp("gencert", "--hostname", "smdp.z.example", "--out", str(tmp_path / "z"))
    assert alone.returncode == 0, alone.stderr
    assert "ca" not in tomllib.loads(alone.stdout[alone.stdout.index("[tls]"):])["tls"]


def full_log(server: Server) -> str:
    """The whole log (``Server.log()`` keeps only its end)."""
    return (server.root / f"{server.name}.log").read_text(errors="replace")


def once(log: str, pattern: str) -> re.Match[str]:
    """The one line of ``log`` that ``pattern`` matches from its message on."""
    found = list(re.finditer(rf"^\S+ \S+ smdp\.\w+ {pattern}$", log, re.MULTILINE))
    assert len(found) == 1, f"{len(found)} lines match {pattern!r} in:\n{log}"
    return found[0]


def test_the_log_tells_a_message_s_way_with_the_ids_that_join_it(tmp_path: Path) -> None:
    """alice@a.example sends to bob@b.example, bob accepts, b.example pulls:
    one line for each step at each server, joined by msgid, envid and entry id."""
    a, b = make_pair(tmp_path)
    a.add_user("alice@a.example")
    b.add_user("bob@b.example")
    with running(a, b):
        with pytest.raises(ClientError):
            a.client("alice@a.example", "wrong")
        alice = a.client("alice@a.example")
        queued = alice.submit(["bob@b.example"], b"Subject: Hi\r\n\r\nHello Bob\r\n")
        alice.quit()
        msgid = queued.split()[2]
        wait_until(lambda: "envelope received" in full_log(b), what="the envelope at b.example")
        bob = b.client("bob@b.example")
        [line] = bob.call(wire.Envs()).lines or []
        entry = int(line.split()[0])
        bob.call(wire.UserDecision(Decision.ACCEPT, entry))
        bob.quit()
        wait_until(lambda: "transfer confirmed" in full_log(a), what="the pull confirmed")
    origin, destination = full_log(a), full_log(b)

    # The origin: the logins, the submission, the envelope out, the decision in,
    # the pull it served and its confirmation.
    once(origin, "login failed user=alice@a.example client=127.0.0.1")
    once(origin, "login ok user=alice@a.example client=127.0.0.1")
    once(origin, f"submission msgid={msgid} user=alice@a.example from=alice@a.example "
                 "to=bob@b.example client=127.0.0.1")
    envid = once(origin, f"envelope sent envid=(\\S+) msgid={msgid} domain=b.example "
                         "sender=alice@a.example to=bob@b.example")[1]
    once(origin, f"decision received envid={envid} recipient=bob@b.example decision=ACCEPT "
                 "peer=smdp.b.example outcome=pull")
    size = once(origin, f"pull served envid={envid} recipient=bob@b.example size=(\\d+) "
                        "peer=smdp.b.example")[1]
    once(origin, f"transfer confirmed envid={envid} peer=smdp.b.example")

    # The destination: the envelope in, the user's decision, the decision out,
    # the pull and the delivery, by the same envid and bob's entry id.
    once(destination, f"envelope received envid={envid} peer=smdp.a.example "
                      f"sender=alice@a.example to=bob@b.example size={size}")
    once(destination, "login ok user=bob@b.example client=127.0.0.1")
    once(destination, f"decision entry={entry} envid={envid} user=bob@b.example "
                      "decision=ACCEPT sender=alice@a.example peer=smdp.a.example")
    joined = (f"entry={entry} envid={envid} recipient=bob@b.example decision=ACCEPT "
              "domain=a.example")
    once(destination, f"decision sent {joined}")
    once(destination, f"message pulled {joined} size={size}")
    once(destination, f"message delivered entry={entry} envid={envid} "
                      "recipient=bob@b.example how=pulled")
    for log in (origin, destination):
        assert "Traceback" not in log, log


def test_the_start_line_names_every_listener_once(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    a, _b = make_pair(tmp_path)
    a.peer_tls_port, a.user_tls_port = free_ports(2)
    a.tls = pki.tls(a.hostname)
    a.write_config()
    with running(a):
        pass
    log = full_log(a)
    listeners = (f"peer=127.0.0.1:{a.peer_port} user=127.0.0.1:{a.user_port} "
                 f"peer_tls=127.0.0.1:{a.peer_tls_port} user_tls=127.0.0.1:{a.user_tls_port}")
    assert re.search(rf"^\S+ \S+ smdp started hostname=smdp\.a\.example domains=a\.example "
                     rf"{listeners}$", log, re.MULTILINE), log
    # Once: no other line (on stdout or stderr) tells the ports again.
    for port in (a.peer_port, a.user_port, a.peer_tls_port, a.user_tls_port):
        assert len([line for line in log.splitlines() if str(port) in line]) == 1, log
