"""Error paths of the peer port as a server, over real sockets: a DNS server
that fails during the proof of origin, replayed transactions, the envelope
block's size limit, and a store that fails under a running session
(tests/integration/faults.py). Each asserts the exact reply, what was
stored, and that the session and the server go on.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.protocol import user as wire
from tests.integration.faults import SERVFAIL, StandInDns, hidden_table, refusing
from tests.integration.harness import (
    PeerSocket,
    Pki,
    Server,
    free_ports,
    make_pair,
    running,
)

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@b.example"
ENVID = "h7qrzvg3cb7jjrusg7p5dzifiu"
LOCAL_ERROR = "451 4.3.0 Local error; nothing was stored, try again later"


def open_envelope(p: PeerSocket, envid: str = ENVID, verb: str = "ENVELOPE") -> None:
    """ENVELOPE (or MAIL), RCPT and SIZE, each answered as it should be."""
    what = "Envelope" if verb == "ENVELOPE" else "Message"
    assert p.cmd(f"{verb} From:<{ALICE}> ID={envid}") == (
        f"250 2.1.0 {what} {envid} from <{ALICE}> ok")
    assert p.cmd(f"RCPT To:<{BOB}>") == f"250 2.1.5 Recipient <{BOB}> ok"


def deliver_block(p: PeerSocket, block: bytes) -> str:
    """SIZE=, DATA and the block (already ending in CRLF); the block's reply."""
    assert p.cmd(f"SIZE={len(block)}").startswith("250 2.3.0")
    assert p.cmd("DATA") == "354 Send data, end with <CRLF>.<CRLF>"
    p.send(block + b".\r\n")
    return p.reply()


SUMMARY = b"Subject: Lunch on Friday?\r\nAttachments: 0\r\nHeadline: are you free?\r\n"


def client_context(pki: Pki, cert: Path, key: Path) -> ssl.SSLContext:
    """A peer's TLS context: the test CA, and its client certificate."""
    context = ssl.create_default_context(cafile=str(pki.ca_path))
    context.load_cert_chain(str(cert), str(key))
    return context


def peer(b: Server) -> PeerSocket:
    p = PeerSocket(b.peer_port)
    assert p.cmd("EHLO smdp.a.example").startswith("250-smdp.b.example hello")
    return p


def stored(b: Server) -> tuple[int, int, list[tuple[str, int]]]:
    """(envelopes, mailbox entries, peer_quality rows) in b's store; the
    peers' rows, not their senders' (issue 16 item 1, which move with them)."""
    return (b.query("SELECT COUNT(*) FROM in_envelopes")[0][0],
            b.query("SELECT COUNT(*) FROM mailbox")[0][0],
            [(s, m) for s, m in b.query("SELECT server, messages FROM peer_quality")
             if not s.startswith("sender:")])


@pytest.fixture
def b(tmp_path: Path) -> Iterator[Server]:
    """b.example (bob), running; its peer a.example is not."""
    _a, b = make_pair(tmp_path)
    b.add_user(BOB)
    with running(b):
        yield b


# -- the proof of origin when DNS fails ---------------------------------------------------


def test_a_dns_failure_during_the_proof_of_origin_is_451_and_not_held_against_the_peer(
    tmp_path: Path,
) -> None:
    """protocol.md 10.2: in a TLS session, a discovery failure that may pass
    (SERVFAIL) is answered 451 4.4.3, for ENVELOPE as for a decision, and is
    not held against the peer; once DNS answers, the same envelope is taken."""
    pki = Pki(tmp_path)
    cert, key, _ = pki.issue("smdp.a.example")
    with StandInDns(default=SERVFAIL) as dns:
        peer_port, user_port = free_ports(2)
        b = Server("b.example", "smdp.b.example", tmp_path, peer_port, user_port,
                   extra=dns.config, tls=pki.tls("smdp.b.example"))
        b.write_config()  # no static peers: a.example is found by DNS only
        b.add_user(BOB)
        with running(b):
            p = PeerSocket(b.peer_port)
            try:
                p.cmd("EHLO smdp.a.example")
                p.starttls(client_context(pki, cert, key), "smdp.b.example")
                assert p.cmd("EHLO smdp.a.example").startswith("250-")
                why = ("looking up the SMDP server of {d} failed: no nameserver gave a usable "
                       "answer for _smdp._tcp.{d}. SRV (SERVFAIL or refused)")
                assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}") == (
                    "451 4.4.3 Cannot check the SMDP server of a.example now: "
                    + why.format(d="a.example"))
                assert p.cmd(f"REJECT {ENVID} To:<carol@c.example>") == (
                    "451 4.4.3 Cannot check the SMDP server of c.example now: "
                    + why.format(d="c.example"))
                # Neither a proof nor a forgery: nothing counted, nothing stored.
                assert stored(b) == (0, 0, [])
                dns.answers["a.example"] = [("smdp.a.example", 1)]
                open_envelope(p)
                assert deliver_block(p, SUMMARY) == f"250 2.0.0 {ENVID} stored"
            finally:
                p.close()
            assert stored(b) == (1, 1, [("smdp.a.example", 1)])
            assert b.query("SELECT origin_server FROM in_envelopes") == [("smdp.a.example",)]
    assert {"_smdp._tcp.a.example", "_smdp._tcp.c.example"} <= set(dns.questions)


# -- replays -------------------------------------------------------------------------------


def test_a_replayed_envelope_is_answered_as_new_and_stored_once(b: Server) -> None:
    """protocol.md 13: the same ENVELOPE transaction again, in the same
    session and in a new one, gets the same replies up to "250 stored" and
    changes nothing: one envelope, one mailbox entry, one message counted."""
    for _session in range(2):
        p = peer(b)
        try:
            for _replay in range(2):
                open_envelope(p)
                assert deliver_block(p, SUMMARY) == f"250 2.0.0 {ENVID} stored"
        finally:
            p.close()
    assert stored(b) == (1, 1, [("smdp.a.example", 1)])
    c = b.client(BOB)
    try:
        assert (c.call(wire.Envs()).lines or []) == [
            f"1 pending {ALICE} {len(SUMMARY)} 0 Lunch on Friday?"]
    finally:
        c.quit()


def test_a_replayed_direct_message_is_delivered_once(b: Server) -> None:
    """The same for MAIL (protocol.md 13): the message is in bob's mailbox
    once, with the first copy's content, and counted once."""
    c = b.client(BOB)
    try:
        c.call(wire.ListAdd("in-white", ALICE, "smdp.a.example"))
    finally:
        c.quit()
    first = b"Subject: first\r\n\r\nthe first copy\r\n"
    replay = b"Subject: other\r\n\r\nanother text\r\n"
    p = peer(b)
    try:
        for body in (first, replay):
            open_envelope(p, verb="MAIL")
            assert deliver_block(p, body) == f"250 2.0.0 {ENVID} stored"
    finally:
        p.close()
    assert stored(b) == (1, 1, [("smdp.a.example", 1)])
    c = b.client(BOB)
    try:
        # After Return-Path, Delivered-To and b's Received (protocol.md 8.4).
        assert (c.call(wire.Retr(1)).body or b"").split(b"\r\n", 3)[3] == first
    finally:
        c.quit()


# -- the envelope block's limit ------------------------------------------------------------


def block_of(size: int) -> bytes:
    """An envelope block of exactly ``size`` octets, lines under 1000."""
    head = b"Subject: big\r\nAttachments: 0\r\n"
    filler = size - len(head)
    lines = []
    while filler > 0:
        n = min(filler, 900)
        lines.append(b"Headline: " + b"y" * (n - 12) + b"\r\n" if n >= 12 else b"\r\n" * (n // 2))
        filler -= len(lines[-1])
    block = head + b"".join(lines)
    assert len(block) == size
    return block


def test_an_envelope_block_over_16384_octets_is_refused_whole(b: Server) -> None:
    """protocol.md 7 and 6.3.6: a block of 16384 octets is stored; one octet
    more is answered 554 5.6.0, nothing of it is stored, and the session goes on."""
    p = peer(b)
    try:
        open_envelope(p)
        assert deliver_block(p, block_of(16385)) == (
            "554 5.6.0 Envelope block exceeds 16384 octets.")
        assert stored(b) == (0, 0, [])
        assert p.cmd("NOOP") == "250 2.0.0 OK"
        open_envelope(p)
        assert deliver_block(p, block_of(16384)) == f"250 2.0.0 {ENVID} stored"
    finally:
        p.close()
    assert stored(b) == (1, 1, [("smdp.a.example", 1)])


# -- the store failing under a session -----------------------------------------------------


def test_a_store_that_refuses_the_envelope_is_451_and_leaves_nothing(b: Server) -> None:
    """protocol.md 6.1: a command that fails inside the server is answered
    451 4.3.0 and undone whole (no envelope, no entry, no count); the
    session goes on, and the same envelope is taken once the store is back."""
    p = peer(b)
    try:
        with refusing(b, "INSERT", "mailbox"):
            open_envelope(p)
            assert deliver_block(p, SUMMARY) == LOCAL_ERROR
            assert stored(b) == (0, 0, [])
            assert p.cmd("NOOP") == "250 2.0.0 OK"
        open_envelope(p)
        assert deliver_block(p, SUMMARY) == f"250 2.0.0 {ENVID} stored"
    finally:
        p.close()
    assert stored(b) == (1, 1, [("smdp.a.example", 1)])


def test_a_store_failing_in_the_middle_of_a_transaction_refuses_the_rest(b: Server) -> None:
    """The store fails at the second RCPT: 451, and the rest of that
    transaction is refused ("send RSET") even once the store is back, so no
    envelope is stored for a transaction the server lost track of. After
    RSET all is well."""
    b.add_user(CAROL)
    p = peer(b)
    try:
        open_envelope(p)
        with hidden_table(b, "identities"):
            assert p.cmd(f"RCPT To:<{CAROL}>") == LOCAL_ERROR
        earlier = "451 4.3.0 Local error earlier in this transaction; send RSET"
        assert p.cmd(f"RCPT To:<{CAROL}>") == earlier
        assert p.cmd("SIZE=100") == earlier
        assert p.cmd("DATA") == "503 5.5.1 SIZE required before DATA"
        assert stored(b) == (0, 0, [])
        assert p.cmd("RSET") == "250 2.0.0 Reset"
        open_envelope(p)
        assert deliver_block(p, SUMMARY) == f"250 2.0.0 {ENVID} stored"
    finally:
        p.close()
    assert stored(b) == (1, 1, [("smdp.a.example", 1)])


def test_a_store_failing_under_a_decision_is_451_and_records_nothing(tmp_path: Path) -> None:
    """At the origin: a decision whose recording fails is answered 451 4.3.0
    and leaves the recipient as it was; sent again later, it is recorded."""
    a, _b = make_pair(tmp_path)
    a.add_user(ALICE)
    with running(a):
        c = a.client(ALICE)
        try:
            msgid = c.submit([BOB], b"Subject: hi\r\n\r\nhello\r\n").split()[2]
        finally:
            c.quit()
        [(envid,)] = a.query("SELECT envid FROM out_envelopes")
        p = PeerSocket(a.peer_port)
        try:
            assert p.cmd("EHLO smdp.b.example").startswith("250")
            with refusing(a, "UPDATE", "out_recipients"):
                assert p.cmd(f"REJECT {envid} To:<{BOB}>") == LOCAL_ERROR
                [(state,)] = a.query("SELECT state FROM out_recipients")
                assert state in ("queued", "envelope-sent")  # whatever delivery got to
            assert p.cmd(f"REJECT {envid} To:<{BOB}>") == (
                f"250 2.0.0 REJECT recorded for <{BOB}>")
        finally:
            p.close()
        c = a.client(ALICE)
        try:
            [line] = c.call(wire.Sent(msgid)).lines or []
        finally:
            c.quit()
        _msgid, _rcpt, state, _time, route, detail = line.split(" ", 5)
        assert [state, route, detail] == ["rejected", "smdp", "rejected by recipient"]
