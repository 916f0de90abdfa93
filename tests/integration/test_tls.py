"""TLS on both ports and the proof of origin, with real TLS connections, real
servers and a real rogue server on loopback (docs/protocol.md section 15).

Every server gets its certificates from a private CA made per test in
tmp_path (``Pki``, the helpers behind ``smdp gencert``).
"""

from __future__ import annotations

import os
import poplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.certs import fingerprint_sha256, make_ca, make_cert, write_issued
from smdp.client.session import ClientError, UserClient
from smdp.protocol import user as wire
from smdp.terms import Decision
from tests.integration.harness import (
    PeerSocket,
    Pki,
    Server,
    free_ports,
    make_pair,
    make_tls_pair,
    pass_store,
    running,
    wait_until,
)

ALICE, BOB = "alice@a.example", "bob@b.example"
ENVID = "abcdefghijklmnopqrstuvwxyz"


def message(subject: str) -> bytes:
    return f"To: {BOB}\r\nSubject: {subject}\r\n\r\nHello Bob.\r\n".encode()


def send(a: Server, subject: str) -> str:
    c = a.client(ALICE)
    try:
        return c.submit([BOB], message(subject)).split("queued as ")[1].split()[0]
    finally:
        c.quit()


def sent(a: Server, msgid: str) -> tuple[str, str]:
    """(state, detail) of bob's copy of ``msgid`` at the origin."""
    [(_msgid, _rcpt, state, _time, detail)] = a.sent(ALICE, msgid)
    return state, detail


def pending(s: Server, *users: str) -> list[int]:
    """The numbers of the pending entries of ``users`` (bob), from ENVS."""
    return sorted(int(env[0]) for user in users or (BOB,) for env in s.envelopes(user))


def no_envelope_stored(b: Server) -> None:
    assert b.envelopes(BOB, all=True) == []
    # no command shows this: an envelope row stored for no mailbox entry
    assert b.query("SELECT COUNT(*) FROM in_envelopes") == [(0,)]


def quality(s: Server, server: str) -> tuple[int, int] | None:
    return s.quality().get(server)


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None,
                   ) -> ssl.SSLContext:
    """What a peer uses to reach a test server: the test CA, and a client
    certificate when it wants to prove who it is."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture
def tls_pair(tmp_path: Path) -> Iterator[tuple[Server, Server, Pki]]:
    a, b, pki = make_tls_pair(tmp_path)
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        yield a, b, pki


# -- STARTTLS on the peer port --------------------------------------------------------


def test_whole_flow_over_starttls_with_proof_of_origin(
        tls_pair: tuple[Server, Server, Pki]) -> None:
    """Envelope (a -> b), decision and pull (b -> a): both servers require TLS,
    so each step succeeded only over STARTTLS with a certificate that proved
    the sender's (or the recipient's) domain."""
    a, b, _pki = tls_pair
    msgid = send(a, "over TLS")
    [entry] = wait_until(lambda: pending(b), what="envelope over TLS")
    assert b.envelope(BOB, entry)["Server"] == "smdp.a.example"
    c = b.client(BOB)
    c.call(wire.UserDecision(Decision.ACCEPT, entry))
    c.quit()
    wait_until(lambda: sent(a, msgid)[0] == "delivered", what="pull over TLS")
    c = b.client(BOB)
    assert b"Hello Bob." in (c.call(wire.Retr(1)).body or b"")
    c.quit()
    assert quality(b, "smdp.a.example") == (1, 1)


@pytest.mark.parametrize("issuer", ["self-signed", "a CA it does not trust for peers"])
def test_local_recipients_over_tls(tmp_path: Path, issuer: str) -> None:
    """A server delivers to its own domain through its own peer port; for
    that it trusts exactly its own certificate, whoever issued it."""
    a, _b, pki = make_tls_pair(tmp_path)
    if issuer == "self-signed":
        cert, key, _ = pki.issue("smdp.a.example", self_signed=True)
    else:
        cert, key = write_issued(make_cert("smdp.a.example", issuer=make_ca("other")),
                                 tmp_path / "other", "a")
    a.tls = f'cert = "{cert}"\nkey = "{key}"\nca = "{pki.ca_path}"\n'
    a.write_config()
    a.add_user(ALICE)
    a.add_user("carol@a.example")
    with running(a):
        c = a.client(ALICE)
        c.submit(["carol@a.example"], b"Subject: next door\r\n\r\nhi\r\n")
        c.quit()
        [entry] = wait_until(lambda: pending(a, ALICE, "carol@a.example"),
                             what="local envelope over TLS")
        c = a.client("carol@a.example")
        c.call(wire.UserDecision(Decision.ACCEPT, entry))
        c.quit()
        wait_until(lambda: [e[1] for u in (ALICE, "carol@a.example")
                            for e in a.envelopes(u, all=True)] == ["accepted"],
                   what="local pull over TLS")
        assert quality(a, "smdp.a.example") is None  # a server never judges itself


def test_starttls_by_hand(tls_pair: tuple[Server, Server, Pki]) -> None:
    _a, b, pki = tls_pair
    cert, key, _ = pki.issue("smdp.a.example")
    s = PeerSocket(b.peer_port)
    ehlo = s.cmd("EHLO smdp.a.example")
    assert ehlo.splitlines()[-1] == "250 STARTTLS"
    # Without TLS nothing is taken: TLS is required.
    assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}") == \
        "530 5.7.0 Must issue a STARTTLS command first"
    assert s.starttls(client_context(pki, cert, key), "smdp.b.example") == \
        "220 2.0.0 Ready to start TLS"
    # RFC 3207: the session starts over, and STARTTLS is offered no more.
    assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}").startswith("503 5.5.1")
    ehlo = s.cmd("EHLO smdp.a.example")
    assert "STARTTLS" not in ehlo
    assert s.cmd("STARTTLS") == "503 5.5.1 Bad sequence of commands: TLS already active"
    assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}") == \
        f"250 2.1.0 Envelope {ENVID} from <{ALICE}> ok"
    s.cmd("QUIT")
    s.close()


def test_starttls_buffer_injection_is_discarded(tls_pair: tuple[Server, Server, Pki]) -> None:
    """CVE-2011-0411 style: commands sent in the same packet as STARTTLS
    (plaintext, perhaps injected on the path) must not run inside TLS."""
    _a, b, pki = tls_pair
    cert, key, _ = pki.issue("smdp.a.example")
    s = PeerSocket(b.peer_port)
    s.cmd("EHLO smdp.a.example")
    s.send(b"STARTTLS\r\nEHLO smdp.a.example\r\n"
           b"ENVELOPE From:<" + ALICE.encode() + b"> ID=" + ENVID.encode() + b"\r\n"
           b"RCPT To:<" + BOB.encode() + b">\r\n")
    assert s.reply() == "220 2.0.0 Ready to start TLS"
    s.sock = client_context(pki, cert, key).wrap_socket(s.sock, server_hostname="smdp.b.example")
    # Had the injected lines run, their three replies would come first.
    assert s.cmd("NOOP") == "250 2.0.0 OK"
    assert s.cmd(f"RCPT To:<{BOB}>") == \
        "503 5.5.1 Bad sequence of commands: send HELO or EHLO first"
    s.close()
    no_envelope_stored(b)


def test_failed_handshake_ends_the_session_cleanly(tmp_path: Path) -> None:
    _a, b, _pki = make_tls_pair(tmp_path)
    b.extra = "[limits]\nmax_sessions_per_client = 1\n"
    b.write_config()

    def session() -> PeerSocket | None:
        s = PeerSocket(b.peer_port)
        if s.greeting.startswith("220 "):
            return s
        s.close()
        return None

    with running(b):
        for _ in range(4):
            # The only session slot of this client is free again each time:
            # a failed handshake ended its session.
            s = wait_until(session, what="the session slot is free")
            s.cmd("EHLO smdp.a.example")
            assert s.cmd("STARTTLS").startswith("220 ")
            s.send(b"this is not a TLS ClientHello\r\n" * 4)
            assert s.sock.recv(100) == b""  # the server hangs up
            s.close()
    assert "TLS handshake failed" in b.log() and "Traceback" not in b.log()


def test_implicit_tls_listeners(tmp_path: Path) -> None:
    _a, b, pki = make_tls_pair(tmp_path)
    b.peer_tls_port, b.user_tls_port = free_ports(2)
    b.plaintext_login = False
    b.write_config()
    b.add_user(BOB)
    cert, key, _ = pki.issue("smdp.a.example")
    with running(b):
        s = PeerSocket(b.peer_tls_port, (client_context(pki, cert, key), "smdp.b.example"))
        assert s.greeting == "220 smdp.b.example SMDP ready"
        assert "STARTTLS" not in s.cmd("EHLO smdp.a.example")
        assert s.cmd("STARTTLS").startswith("503 ")
        assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}").startswith("250 ")
        s.close()
        ctx = client_context(pki)
        ctx.check_hostname = False  # poplib connects by address, not by name
        pop = poplib.POP3_SSL("127.0.0.1", b.user_tls_port, timeout=10, context=ctx)
        assert "STLS" not in pop.capa()
        pop.user(BOB)
        pop.pass_("secret")
        assert pop.stat() == (0, 0)
        pop.quit()
        c = UserClient("127.0.0.1", b.user_tls_port, tls="implicit",
                       context=client_context(pki), server_name="smdp.b.example")
        c.login(BOB, "secret")
        c.quit()


# -- STLS on the user port ------------------------------------------------------------


def test_poplib_stls_then_login(tmp_path: Path) -> None:
    _a, b, pki = make_tls_pair(tmp_path)
    b.plaintext_login = False
    b.write_config()
    b.add_user(BOB)
    with running(b):
        pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
        assert "STLS" in pop.capa()
        # Passwords are refused in the clear: already at USER, so that a
        # well-behaved client never sends the password.
        with pytest.raises(poplib.error_proto, match="TLS required for passwords"):
            pop.user(BOB)
        ctx = client_context(pki)
        ctx.check_hostname = False  # poplib connects by address, not by name
        assert pop.stls(ctx).startswith(b"+OK Begin TLS negotiation")
        assert "STLS" not in pop.capa()
        pop.user(BOB)
        pop.pass_("secret")
        assert pop.stat() == (0, 0)
        pop.quit()
        # Our own client: STLS, with the server's name checked.
        c = UserClient("127.0.0.1", b.user_port, tls="starttls", context=client_context(pki),
                       server_name="smdp.b.example")
        c.login(BOB, "secret")
        c.quit()
        with pytest.raises(ClientError, match="TLS required for passwords"):
            UserClient("127.0.0.1", b.user_port).login(BOB, "secret")
        # The command line: smdp client --tls starttls.
        base = [sys.executable, "-m", "smdp", "client", "--server", f"127.0.0.1:{b.user_port}",
                "-u", BOB]
        env = {**os.environ, "SMDP_PASSWORD": "secret"}
        r = subprocess.run([*base, "--tls", "starttls", "--cafile", str(pki.ca_path),
                            "--tls-name", "smdp.b.example", "inbox"],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0 and "bob@b.example has 0 envelope(s)" in r.stdout, r.stderr
        r = subprocess.run([*base, "inbox"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1
        assert r.stderr.strip() == "smdp: TLS required for passwords (use STLS)"


def test_stls_refused_without_a_certificate(tmp_path: Path) -> None:
    _a, b = make_pair(tmp_path)
    with running(b):
        pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
        assert "STLS" not in pop.capa()
        pop.quit()
        # poplib would not even try without STLS in CAPA; ask by hand.
        with (socket.create_connection(("127.0.0.1", b.user_port), timeout=10) as raw,
              raw.makefile("rb") as lines):
            lines.readline()
            raw.sendall(b"STLS\r\n")
            assert lines.readline() == b"-ERR TLS not available\r\n"
        s = PeerSocket(b.peer_port)
        assert "STARTTLS" not in s.cmd("EHLO smdp.a.example")
        assert s.cmd("STARTTLS") == "454 4.7.0 TLS not available"
        s.close()


# -- verifying the destination (outgoing) ---------------------------------------------


def test_wrong_hostname_makes_delivery_retry_then_fail_visibly(tmp_path: Path) -> None:
    a, b, pki = make_tls_pair(tmp_path)
    a.delivery = "max_attempts = 3"
    a.write_config()
    # b's certificate is valid, from the CA a trusts, but for another name.
    cert, key, _ = pki.issue("smdp.elsewhere.example")
    b.tls = f'cert = "{cert}"\nkey = "{key}"\nca = "{pki.ca_path}"\n'
    b.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        msgid = send(a, "to the wrong host")
        _state, detail = wait_until(lambda: (r := sent(a, msgid))[0] == "failed" and r,
                                   what="delivery gives up")
        assert "TLS with smdp.b.example failed: certificate not accepted" in detail
        assert "not valid for 'smdp.b.example'" in detail
        assert "gave up after 3 attempts" in detail
        no_envelope_stored(b)


def test_self_signed_destination_without_pin_is_refused(tmp_path: Path) -> None:
    a, b, pki = make_tls_pair(tmp_path)
    a.delivery = "max_attempts = 4"
    a.write_config()
    cert, key, _ = pki.issue("smdp.b.example", self_signed=True)
    b.tls = f'cert = "{cert}"\nkey = "{key}"\nca = "{pki.ca_path}"\n'
    b.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        msgid = send(a, "self-signed")
        # While it retries, the administrator sees why (smdp admin queue).
        wait_until(lambda: any("certificate not accepted" in job[3]
                               for job in a.queue()), what="the retry's reason")
        _state, detail = wait_until(lambda: (r := sent(a, msgid))[0] == "failed" and r,
                                    what="delivery gives up")
        assert "certificate not accepted" in detail and "self-signed" in detail


def test_pinned_self_signed_destination(tmp_path: Path) -> None:
    """A private network: b has a self-signed certificate, and a pins its
    SHA-256 fingerprint. A wrong pin is refused like a bad certificate."""
    a, b, pki = make_tls_pair(tmp_path)
    cert, key, issued = pki.issue("smdp.b.example", self_signed=True)
    b.tls = f'cert = "{cert}"\nkey = "{key}"\nca = "{pki.ca_path}"\n'
    b.write_config()
    wrong = fingerprint_sha256(make_cert("smdp.b.example").cert_pem)
    a.delivery = "max_attempts = 2"
    a.peer_extra = {"b.example": f'pin_sha256 = "{wrong}"\n'}
    a.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        msgid = send(a, "wrong pin")
        _state, detail = wait_until(lambda: (r := sent(a, msgid))[0] == "failed" and r,
                                    what="delivery gives up")
        assert "is not the pinned one" in detail
    # openssl's colon form is accepted as well.
    colons = ":".join(issued.fingerprint[i:i + 2] for i in range(0, 64, 2)).upper()
    a.peer_extra = {"b.example": f'pin_sha256 = "{colons}"\n'}
    a.write_config()
    with running(a, b):
        send(a, "right pin")
        [entry] = wait_until(lambda: pending(b), what="envelope over a pinned connection")
        assert b.envelope(BOB, entry)["Server"] == "smdp.a.example"


def test_peer_ca_file_holding_the_peers_own_certificate(tmp_path: Path) -> None:
    """A private network without a shared CA: b's certificate comes from a CA
    a does not know, and a names b's certificate itself as b.example's ca.
    That covers both directions: envelopes to b, decisions and pulls from b."""
    a, b, pki = make_tls_pair(tmp_path)
    cert, key = write_issued(make_cert("smdp.b.example", issuer=make_ca("b's own CA")),
                             tmp_path / "b-pki", "b")
    b.tls = f'cert = "{cert}"\nkey = "{key}"\nca = "{pki.ca_path}"\n'
    b.write_config()
    a.peer_extra = {"b.example": f'ca = "{cert}"\n'}
    a.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        msgid = send(a, "private network")
        [entry] = wait_until(lambda: pending(b), what="envelope")
        c = b.client(BOB)
        c.call(wire.UserDecision(Decision.ACCEPT, entry))
        c.quit()
        wait_until(lambda: sent(a, msgid)[0] == "delivered", what="pull")


def test_tls_required_refuses_a_plaintext_destination(tmp_path: Path) -> None:
    a, b, _pki = make_tls_pair(tmp_path)
    a.delivery = "max_attempts = 2"
    a.write_config()
    b.tls = ""  # b speaks plaintext only
    b.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        msgid = send(a, "plaintext peer")
        _state, detail = wait_until(lambda: (r := sent(a, msgid))[0] == "failed" and r,
                                    what="delivery gives up")
        assert "does not offer STARTTLS" in detail


# -- proof of origin: a real rogue server -----------------------------------------------


@pytest.fixture
def rogue_world(tmp_path: Path) -> Iterator[tuple[Server, Server, Server, Pki]]:
    """a.example and b.example, and rogue.example: a real SMDP server with a
    valid certificate (same CA) for its own name, smdp.rogue.example. b knows
    rogue.example's server, so the rogue is a proven peer for its own domain."""
    a, b, pki = make_tls_pair(tmp_path)
    pr, ur = free_ports(2)
    rogue = Server("rogue.example", "smdp.rogue.example", tmp_path, pr, ur, **pass_store())
    rogue.tls = pki.tls(rogue.hostname)
    rogue.peers = {"b.example": (b.hostname, b.peer_port), "a.example": (a.hostname, a.peer_port)}
    rogue.write_config()
    b.peers["rogue.example"] = (rogue.hostname, pr)
    b.write_config()
    a.peers["rogue.example"] = (rogue.hostname, pr)
    a.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    rogue.add_user("mallory@rogue.example")
    with running(a, b, rogue):
        yield a, b, rogue, pki


def rogue_socket(server: Server, pki: Pki, claim: str, target: str) -> PeerSocket:
    """A peer session to ``server`` with the rogue's own valid certificate,
    introducing itself as ``claim``."""
    cert, key = pki.dir / "smdp.rogue.example.pem", pki.dir / "smdp.rogue.example.key"
    s = PeerSocket(server.peer_port)
    s.cmd(f"EHLO {claim}")
    s.starttls(client_context(pki, cert, key), target)
    assert s.cmd(f"EHLO {claim}").startswith("250-")
    return s


def test_rogue_forging_envelopes_is_refused_and_counted_against_itself(
        rogue_world: tuple[Server, Server, Server, Pki]) -> None:
    a, b, rogue, pki = rogue_world
    # A real message from a first, so a.example has a quality to protect.
    send(a, "genuine")
    wait_until(lambda: pending(b), what="genuine envelope")
    before = quality(b, "smdp.a.example")
    assert before == (1, 0)
    # The rogue's own mail is taken: its certificate proves rogue.example.
    c = rogue.client("mallory@rogue.example")
    c.submit([BOB], b"Subject: from mallory\r\n\r\nhi\r\n")
    c.quit()
    wait_until(lambda: len(pending(b)) == 2, what="the rogue's own envelope")
    assert quality(b, "smdp.rogue.example") == (1, 0)
    # Forgeries: claiming to be a.example's server, by EHLO name or not.
    for claim in ("smdp.a.example", "smdp.rogue.example"):
        s = rogue_socket(b, pki, claim, "smdp.b.example")
        for verb in ("ENVELOPE", "MAIL"):
            assert s.cmd(f"{verb} From:<{ALICE}> ID={ENVID}") == (
                "550 5.7.1 smdp.rogue.example has not proved it is the SMDP server of a.example")
        s.cmd("QUIT")
        s.close()
    # Counted against the rogue's proven identity (4 forgeries, each a -1 vote) ...
    assert quality(b, "smdp.rogue.example") == (5, -4)
    # ... and never against a.example, whose server was never called back.
    assert quality(b, "smdp.a.example") == before
    # no command shows this: an envelope's envid at the destination
    assert b.query("SELECT COUNT(*) FROM in_envelopes WHERE envid=?", (ENVID,)) == [(0,)]
    # Nothing was queued at b for a.example: no decision, no pull, no call back.
    assert b.queue() == []


def test_rogue_with_a_cert_from_a_ca_trusted_only_for_another_peer(
        tmp_path: Path) -> None:
    """b trusts c.example's private CA for c.example only. That CA issues
    smdp.a.example a certificate: it still proves nothing about a.example."""
    a, b, pki = make_tls_pair(tmp_path)
    other = make_ca("c.example private CA")
    other_ca, _ = write_issued(other, tmp_path / "c-pki", "ca")
    b.peer_extra = {"c.example": f'ca = "{other_ca}"\n'}
    b.write_config()
    forged = make_cert("smdp.a.example", issuer=other)
    cert, key = write_issued(forged, tmp_path / "c-pki", "forged-a")
    with running(a, b):
        s = PeerSocket(b.peer_port)
        s.cmd("EHLO smdp.a.example")
        s.starttls(client_context(pki, cert, key), "smdp.b.example")  # the handshake passes
        s.cmd("EHLO smdp.a.example")
        assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}") == (
            "550 5.7.1 smdp.a.example has not proved it is the SMDP server of a.example")
        s.close()
        # A CA scoped to one peer names nobody: nothing is counted anywhere.
        assert b.quality() == {}


def test_rogue_cannot_decide_or_pull_someone_elses_envelope(
        rogue_world: tuple[Server, Server, Server, Pki]) -> None:
    a, b, _rogue, pki = rogue_world
    msgid = send(a, "for bob only")
    wait_until(lambda: pending(b), what="envelope")
    # no command shows this: the envid the origin sent (what a rogue would need)
    [(envid,)] = a.query("SELECT envid FROM out_envelopes")
    s = rogue_socket(a, pki, "smdp.b.example", "smdp.a.example")
    refused = "550 5.7.1 smdp.rogue.example has not proved it is the SMDP server of b.example"
    for verb in ("ACCEPT", "AUTHORIZE", "REJECT", "SPAM", "SPAMMER"):
        assert s.cmd(f"{verb} {envid} To:<{BOB}>") == refused
    assert s.cmd(f"RECEIVED {envid}") == refused
    # For its own domain the rogue is proven, but the handle is single-purpose:
    # the envelope has no recipient at rogue.example.
    assert s.cmd(f"ACCEPT {envid} To:<mallory@rogue.example>") == (
        f"550 5.1.1 <mallory@rogue.example> is not a recipient of {envid}")
    s.close()
    assert sent(a, msgid)[0] == "envelope-sent"
    # no command shows this: that the origin still holds the body
    assert a.query("SELECT has_body FROM out_messages") == [(1,)]


def test_plaintext_peers_only_where_configured(tmp_path: Path) -> None:
    """[tls] require = false keeps the EHLO-name check for peers without TLS
    (the existing suite runs that way); with a certificate shown, the
    certificate is the only identity."""
    _a, b, pki = make_tls_pair(tmp_path)
    b.tls = pki.tls(b.hostname, require=False)
    b.write_config()
    with running(b):
        s = PeerSocket(b.peer_port)
        s.cmd("EHLO smdp.a.example")
        assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}").startswith("250 ")
        s.cmd("RSET")
        cert, key, _ = pki.issue("smdp.rogue.example")
        s.starttls(client_context(pki, cert, key), "smdp.b.example")
        s.cmd("EHLO smdp.a.example")
        assert s.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}").startswith("550 5.7.1 smdp.rogue")
        s.close()


# -- smdp gencert ---------------------------------------------------------------------


def test_gencert_command(tmp_path: Path) -> None:
    def smdp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "smdp", "gencert", *args],
                              capture_output=True, text=True, timeout=60)

    r = smdp("--hostname", "smdp.x.example", "--out", str(tmp_path / "self"))
    assert r.returncode == 0, r.stderr
    cert = tmp_path / "self" / "smdp.x.example.pem"
    key = tmp_path / "self" / "smdp.x.example.key"
    assert f"sha256 fingerprint: {fingerprint_sha256(cert.read_bytes())}" in r.stdout
    assert os.stat(key).st_mode & 0o777 == 0o600
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))  # a usable pair
    assert smdp("--ca", "--out", str(tmp_path / "ca")).returncode == 0
    r = smdp("--hostname", "smdp.y.example", "--out", str(tmp_path / "ca"),
             "--ca-dir", str(tmp_path / "ca"))
    assert r.returncode == 0 and "issued by the CA" in r.stdout
    r = smdp("--out", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    r = smdp("--hostname", "h.example", "--out", str(tmp_path), "--ca-dir", str(tmp_path / "no"))
    assert r.returncode == 1 and r.stderr.startswith("smdp: cannot make the certificate")
