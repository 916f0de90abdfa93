"""Secure unless told otherwise (docs/protocol.md 10.2 and 15.4): a server
without a certificate believes a peer by its EHLO name only from an address
of the server that name is, and stays on loopback unless its configuration
says ``[tls] require = false`` itself.

The rogue is a raw peer socket on 127.0.0.2: on Linux all of 127.0.0.0/8 is
loopback, so it reaches the servers while its address is not theirs.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from smdp.protocol import user as wire
from smdp.terms import Decision

from .faults import SERVFAIL, StandInDns, full_log
from .harness import PeerSocket, Server, free_ports, running, wait_until
from .inprocess import InProcessServer, inprocess_pair

ALICE, BOB = "alice@a.example", "bob@b.example"
USERS = {"a.example": (ALICE,), "b.example": (BOB,)}
ROGUE = "127.0.0.2"
FORGED = "forgedforgedforgedforgedfo"  # an envid of 26 [a-z2-7]


def sent_state(a: InProcessServer) -> str:
    c = a.client(ALICE)
    try:
        [line] = c.call(wire.Sent(None)).lines or []
        return line.split()[2]
    finally:
        c.quit()


def pending_entries(b: InProcessServer) -> list[str]:
    c = b.client(BOB)
    try:
        return [line.split()[0] for line in c.call(wire.Envs(False)).lines or []]
    finally:
        c.quit()


def test_a_rogue_on_another_address_neither_announces_nor_decides(tmp_path: Path) -> None:
    """a.example and b.example know each other at 127.0.0.1 (static peers).
    A rogue from 127.0.0.2 that names smdp.a.example cannot put an envelope
    in front of bob, and one that names smdp.b.example cannot decide (nor
    pull, nor confirm) alice's envelope; the real servers, from 127.0.0.1,
    go through the whole flow."""
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        rogue = PeerSocket(b.peer_port, source=ROGUE)
        try:
            assert rogue.cmd("EHLO smdp.a.example").startswith("250-")
            refused = ("550 5.7.1 127.0.0.2 is not an address of smdp.a.example, "
                       "the SMDP server of a.example")
            assert rogue.cmd(f"ENVELOPE From:<{ALICE}> ID={FORGED}") == refused
            assert rogue.cmd(f"MAIL From:<{ALICE}> ID={FORGED}") == refused
        finally:
            rogue.close()

        alice = a.client(ALICE)
        assert alice.submit([BOB], b"Subject: lunch\r\n\r\nAt noon?\r\n").startswith("queued")
        alice.quit()
        [entry] = wait_until(lambda: pending_entries(b), what="alice's envelope at b.example")
        # no command shows this: the envid, which only the two servers see
        # (a rogue on the path of a plaintext session would).
        db = sqlite3.connect(f"file:{tmp_path / 'b.example.sqlite3'}?mode=ro", uri=True)
        try:
            [(envid,)] = db.execute("SELECT envid FROM in_envelopes").fetchall()
        finally:
            db.close()

        rogue = PeerSocket(a.peer_port, source=ROGUE)
        try:
            assert rogue.cmd("EHLO smdp.b.example").startswith("250-")
            refused = ("550 5.7.1 127.0.0.2 is not an address of smdp.b.example, "
                       "the SMDP server of b.example")
            for verb in ("SPAMMER", "REJECT", "ACCEPT", "AUTHORIZE"):
                assert rogue.cmd(f"{verb} {envid} To:<{BOB}>") == refused, verb
            assert rogue.cmd(f"RECEIVED {envid}") == refused
        finally:
            rogue.close()
        assert sent_state(a) == "envelope-sent"

        bob = b.client(BOB)
        assert bob.call(wire.UserDecision(Decision.ACCEPT, int(entry))).ok
        bob.quit()
        wait_until(lambda: sent_state(a) == "delivered", what="the real pull")


def test_a_discovered_server_must_connect_from_its_address_and_dns_failure_is_451(
    tmp_path: Path,
) -> None:
    """Discovery by DNS: _smdp._tcp SRV gives the host (localhost, whose
    address is 127.0.0.1); the same claim is taken from 127.0.0.1 and refused
    from 127.0.0.2. When DNS cannot answer (SERVFAIL) the check is a
    temporary 451, not a refusal."""
    with StandInDns() as dns:
        dns.answers = {"a.example": [("localhost", 2525)], "c.example": SERVFAIL}
        b = InProcessServer(tmp_path, "b.example", extra=dns.config)
        b.add_user(BOB)
        b.start()
        try:
            for source, reply in (
                (ROGUE, "550 5.7.1 127.0.0.2 is not an address of localhost, "
                        "the SMDP server of a.example"),
                ("127.0.0.1", f"250 2.1.0 Envelope {FORGED} from <{ALICE}> ok"),
            ):
                peer = PeerSocket(b.peer_port, source=source)
                try:
                    assert peer.cmd("EHLO localhost").startswith("250-")
                    assert peer.cmd(f"ENVELOPE From:<{ALICE}> ID={FORGED}") == reply
                finally:
                    peer.close()
            peer = PeerSocket(b.peer_port)
            try:
                assert peer.cmd("EHLO smdp.c.example").startswith("250-")
                assert peer.cmd(f"ENVELOPE From:<x@c.example> ID={FORGED}") == (
                    "451 4.4.3 Cannot check the SMDP server of c.example now: looking up "
                    "the SMDP server of c.example failed: no nameserver gave a usable "
                    "answer for _smdp._tcp.c.example. SRV (SERVFAIL or refused)")
            finally:
                peer.close()
        finally:
            b.stop()


def test_no_certificate_and_a_public_listener_refuse_to_start(tmp_path: Path) -> None:
    """Without tls.cert and without tls.require = false, a listener beyond
    loopback stops `smdp serve` with one line saying what to do, before
    anything is opened or bound."""
    peer_port, user_port = free_ports(2)
    server = Server("b.example", "smdp.b.example", tmp_path, peer_port, user_port)
    server.write_config()
    config = server.config_path.read_text().replace(
        f'peer = "127.0.0.1:{peer_port}"', f'peer = "0.0.0.0:{peer_port}"')
    server.config_path.write_text(config)
    result = subprocess.run(
        [sys.executable, "-m", "smdp", "serve", "--config", str(server.config_path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        f"smdp: listen.peer = '0.0.0.0:{peer_port}' is not a loopback address, and without "
        "tls.cert this server cannot tell a real peer from anyone claiming its name: give "
        "tls.cert and tls.key (smdp gencert), listen on 127.0.0.1, or set tls.require = "
        "false to accept unauthenticated peers on purpose\n")
    assert result.stdout == ""
    assert not server.db_path.exists()  # refused before the store was even opened


def test_require_false_said_explicitly_starts_with_a_warning(tmp_path: Path) -> None:
    """The same server with tls.require = false starts (bound to 127.0.0.1
    here: the test accepts no outside connection) and says in its log what
    it has been told to do."""
    peer_port, user_port = free_ports(2)
    server = Server("b.example", "smdp.b.example", tmp_path, peer_port, user_port,
                    tls="require = false")
    server.write_config()
    with running(server):
        [line] = [line for line in full_log(server).splitlines() if "tls.require" in line]
        assert line.endswith(
            " smdp tls.require = false: a peer that shows no TLS client certificate is "
            "believed by its EHLO name, checked only against discovery and its address; "
            "anyone who can reach the peer port from such an address can speak for that "
            "domain. Use this on closed networks only"), line
