"""The rules at their edges, on real servers over loopback sockets (issue 17).

Each test here was written against a bug that survived the rest of the suite
(planted by hand, seen to fail here, then reverted): a threshold compared with
``<=`` for ``<``, a size limit with ``>=`` for ``>``, an author field other than
From taken for a From, the origin's guard against ACCEPT after REJECT removed.
They speak the wire (raw peer and user sockets) and read the servers' own
output, so they hold whatever the code behind the ports looks like.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.harness import (
    PeerSocket,
    Server,
    UserSocket,
    make_pair,
    running,
    wait_until,
)

# Section 5.3 alone, as before issue 16 item 1: counters that never age, no
# rejecting users needed, no hysteresis, no probation (docs/protocol.md 11.3).
PAPER_QUALITY = ("[quality]\nhalf_life = \"never\"\nmin_deciders = 0\nmargin = 0\n"
                 "probation_per_day = 0\n")

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@b.example"
A_HOST = "smdp.a.example"
B_HOST = "smdp.b.example"
MAX = 4000  # [limits] max_message_size of both servers below
LIMITS = f"[limits]\nmax_message_size = {MAX}\n"


def login(server: Server, user: str) -> UserSocket:
    u = UserSocket(server.user_port)
    assert u.cmd(f"USER {user}").startswith("+OK")
    assert u.cmd("PASS secret").startswith("+OK")
    return u


def user_block(u: UserSocket, command: str) -> list[str]:
    """A command whose positive answer is a block: the block's lines."""
    first = u.cmd(command)
    assert first.startswith("+OK"), (command, first)
    return u.block()


def pending_entries(server: Server, user: str) -> list[int]:
    u = login(server, user)
    try:
        return [int(line.split(" ", 1)[0]) for line in user_block(u, "ENVS")]
    finally:
        u.cmd("QUIT")
        u.close()


def decide(server: Server, user: str, option: str, entry: int) -> str:
    u = login(server, user)
    try:
        return u.cmd(f"{option} {entry}")
    finally:
        u.cmd("QUIT")
        u.close()


def submit(server: Server, user: str, recipients: list[str], message: bytes) -> str:
    """MAIL, RCPT, DATA on the user port; the reply to the end of the message."""
    u = login(server, user)
    try:
        assert u.cmd("MAIL").startswith("+OK")
        for rcpt in recipients:
            assert u.cmd(f"RCPT TO:<{rcpt}>").startswith("+OK"), rcpt
        assert u.cmd("DATA").startswith("+OK")
        stuffed = message.replace(b"\r\n.", b"\r\n..")
        if stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        u.sock.sendall(stuffed + b".\r\n")
        return u.line()
    finally:
        u.cmd("QUIT")
        u.close()


def message_of(size: int, subject: str = "exact") -> bytes:
    """A message of exactly ``size`` octets (CRLF line ends, lines under 100)."""
    data = f"Subject: {subject}\r\n\r\n".encode()
    while size - len(data) > 80:
        data += b"x" * 78 + b"\r\n"
    rest = size - len(data)
    assert rest >= 2
    data += b"y" * (rest - 2) + b"\r\n"
    assert len(data) == size
    return data


def admin(server: Server, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "smdp", "admin", "-c", str(server.config_path), *args],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def peer_envelope(p: PeerSocket, envid: str, subject: str) -> None:
    """One whole envelope transaction from a.example's server for bob."""
    assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={envid}").startswith("250 ")
    assert p.cmd(f"RCPT To:<{BOB}>").startswith("250 ")
    assert p.cmd("SIZE=100").startswith("250 ")
    assert p.cmd("DATA").startswith("354")
    assert p.cmd(f"Subject: {subject}\r\n.") == f"250 2.0.0 {envid} stored"


def quality_line(server: Server) -> str:
    [line] = [s for s in admin(server, "quality").splitlines() if s.startswith(A_HOST)]
    return " ".join(line.split())


def test_quality_exactly_at_a_threshold_is_not_below_it(tmp_path: Path) -> None:
    """Section 5.3: a peer is alerted on, or blocked, when its quality is
    *below* the threshold. Quality exactly at alert_below is ok; exactly at
    block_below it is alerted on and its envelopes are still taken."""
    _a, b = make_pair(tmp_path, extra_b=PAPER_QUALITY + "min_messages = 2\n"
                                        "alert_below = 0.0\nblock_below = -0.5\n")
    b.add_user(BOB)
    with running(b):
        p = PeerSocket(b.peer_port)
        assert p.cmd(f"EHLO {A_HOST}").startswith("250")
        peer_envelope(p, "a" * 26, "first")
        peer_envelope(p, "b" * 26, "second")
        # Quality 0/2 = 0.00, exactly alert_below.
        assert quality_line(b) == f"{A_HOST} 2 0 0.00 ok: quality 0.00"
        first, second = pending_entries(b, BOB)
        assert decide(b, BOB, "REJECT", first).startswith("+OK")
        # Quality -1/2 = -0.50, exactly block_below: still taken, alerted on.
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={'c' * 26}") == (
            f"250 2.1.0 Envelope {'c' * 26} from <{ALICE}> ok")
        assert p.cmd("RSET").startswith("250")
        assert quality_line(b) == (f"{A_HOST} 2 -1 -0.50 alert: quality -0.50 is below "
                                   "the alert threshold 0.00")
        # One more reject: -2/2 = -1.00, below block_below: refused.
        assert decide(b, BOB, "REJECT", second).startswith("+OK")
        assert quality_line(b) == (f"{A_HOST} 2 -2 -1.00 blocked: quality -1.00 is below "
                                   "the block threshold -0.50")
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={'d' * 26}") == (
            f"554 5.7.1 {A_HOST} blocked: quality -1.00 is below the block threshold -0.50")
        p.close()


def test_an_administrator_blocks_and_allows_a_peer_by_hand(tmp_path: Path) -> None:
    """Issue 13 item 3 (`smdp admin block|allow|unblock`, the web app's
    administrator pages): a peer blocked by hand is refused however good its
    quality; one allowed by hand is taken however low; unblock hands it back
    to section 5.3's formula. The running server sees each change at once."""
    _a, b = make_pair(tmp_path, extra_b=PAPER_QUALITY + "min_messages = 1\n")
    b.add_user(BOB)
    with running(b):
        p = PeerSocket(b.peer_port)
        assert p.cmd(f"EHLO {A_HOST}").startswith("250")
        peer_envelope(p, "a" * 26, "first")
        assert admin(b, "block", A_HOST, "--reason", "phishing wave").strip() == (
            f"{A_HOST}: blocked: blocked by the administrator: phishing wave")
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={'b' * 26}") == (
            f"554 5.7.1 {A_HOST} blocked: blocked by the administrator: phishing wave")
        [entry] = pending_entries(b, BOB)
        assert decide(b, BOB, "REJECT", entry).startswith("+OK")
        # Quality -1/1: the formula would block; allowed by hand, it is taken.
        assert admin(b, "allow", A_HOST).strip() == (
            f"{A_HOST}: ok: allowed by the administrator")
        peer_envelope(p, "c" * 26, "allowed")
        [entry] = pending_entries(b, BOB)
        assert decide(b, BOB, "REJECT", entry).startswith("+OK")  # -2/2
        assert admin(b, "unblock", A_HOST).strip() == (
            f"{A_HOST}: blocked: quality -1.00 is below the block threshold -0.50")
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={'d' * 26}") == (
            f"554 5.7.1 {A_HOST} blocked: quality -1.00 is below the block threshold -0.50")
        p.close()
        # Who may open the web app's administrator pages.
        assert admin(b, "grant-admin", BOB).strip() == (
            f"{BOB} is an administrator (the web app's administrator pages)")
        assert b.query("SELECT is_admin FROM users WHERE main_address=?", (BOB,)) == [(1,)]
        assert admin(b, "revoke-admin", BOB).strip() == (
            f"{BOB} is no longer an administrator (the web app's administrator pages)")
        assert b.query("SELECT is_admin FROM users WHERE main_address=?", (BOB,)) == [(0,)]


def test_size_exactly_at_the_maximum_is_accepted_on_both_ports(tmp_path: Path) -> None:
    """[limits] max_message_size is the largest size allowed, not the first
    one refused: on the peer port as a SIZE parameter, as the SIZE= command
    and as the octets of a whole message; on the user port as the octets
    submitted. One octet more is refused everywhere."""
    a, b = make_pair(tmp_path, extra_a=LIMITS, extra_b=LIMITS)
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        # Bob lets alice send whole messages (Table 3), so MAIL is allowed.
        u = login(b, BOB)
        assert u.cmd(f"LISTADD in-white {ALICE} {A_HOST}").startswith("+OK")
        u.cmd("QUIT")
        u.close()
        p = PeerSocket(b.peer_port)
        assert p.cmd(f"EHLO {A_HOST}").startswith("250")
        too_big = f"552 5.3.4 Message size exceeds fixed maximum of {MAX}"
        for verb in ("ENVELOPE", "MAIL"):
            assert p.cmd(f"{verb} From:<{ALICE}> ID={'e' * 26} SIZE={MAX + 1}") == too_big
            assert p.cmd(f"{verb} From:<{ALICE}> ID={'e' * 26} SIZE={MAX}").startswith(
                "250 2.1.0 ")
            assert p.cmd("RSET").startswith("250")
        # SIZE= as a command of its own (Table 4).
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={'f' * 26}").startswith("250 ")
        assert p.cmd(f"RCPT To:<{BOB}>").startswith("250 ")
        assert p.cmd(f"SIZE={MAX + 1}") == too_big
        assert p.cmd(f"SIZE={MAX}") == f"250 2.3.0 Size {MAX} ok"
        assert p.cmd("RSET").startswith("250")
        # A whole message of exactly MAX octets crosses and is stored.
        envid = "g" * 26
        assert p.cmd(f"MAIL From:<{ALICE}> ID={envid} SIZE={MAX}").startswith("250 ")
        assert p.cmd(f"RCPT To:<{BOB}>").startswith("250 ")
        assert p.cmd("DATA").startswith("354")
        p.send(message_of(MAX, "whole") + b".\r\n")
        assert p.reply() == f"250 2.0.0 {envid} stored"
        assert p.cmd("QUIT").startswith("221")
        p.close()
        # Stored after b's Received field (protocol.md 8.4; its date-time is
        # 31 characters), which is b's own: MAX octets crossed.
        received = f"Received: from {A_HOST} by {B_HOST} with SMDP id {envid}; " + "x" * 31
        assert b.query("SELECT size FROM in_envelopes WHERE envid=?", (envid,)) == [
            (MAX + len(received) + 2,)]
        # The user port: MAX octets pass its codec, MAX + 1 do not. MAX is the
        # size of the message as it travels, so the fields the origin adds
        # (here its Received field) must fit too (protocol.md 12.6): a message
        # of MAX octets is refused for that, one that leaves room is taken.
        reply = submit(a, ALICE, [BOB], message_of(MAX + 1, "one too many"))
        assert reply == f"-ERR message exceeds fixed maximum of {MAX} octets"
        reply = submit(a, ALICE, [BOB], message_of(MAX, "just fits"))
        assert reply.startswith("-ERR the message is "), reply
        assert reply.endswith(f"over the maximum of {MAX}; send a smaller message"), reply
        reply = submit(a, ALICE, [BOB], message_of(MAX - 300, "fits with its trace"))
        assert reply.startswith("+OK queued as "), reply
        assert a.query("SELECT subject FROM out_messages") == [("fits with its trace",)]


def headers_of(raw: bytes) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    return head.split("\r\n")


def test_an_own_sender_or_resent_field_still_gets_a_from(tmp_path: Path) -> None:
    """Table 5: the server adds From itself. Sender, Resent-From and
    Resent-Sender naming the user's own address are allowed (assumption 3),
    but none of them is a From: the message still gets one, and keeps them."""
    a, b = make_pair(tmp_path)
    a.add_user(ALICE)
    b.add_user(BOB)
    fields = ["Sender", "Resent-From", "Resent-Sender"]
    with running(a, b):
        for field in fields:
            msg = f"{field}: Alice <{ALICE}>\r\nSubject: via {field}\r\n\r\nhello\r\n"
            assert submit(a, ALICE, [BOB], msg.encode()).startswith("+OK queued as ")
        entries = wait_until(lambda: (e := pending_entries(b, BOB)) and len(e) == 3 and e,
                             what="three envelopes")
        for entry in entries:
            assert decide(b, BOB, "ACCEPT", entry).startswith("+OK")
        wait_until(lambda: b.query("SELECT state FROM mailbox") == [("accepted",)] * 3,
                   what="three messages pulled")
        u = login(b, BOB)
        try:
            # The messages by subject: the origin's concurrent sessions do not
            # fix the order their envelopes arrive in.
            heads = {}
            for n in range(1, len(fields) + 1):
                lines = user_block(u, f"RETR {n}")
                raw = "\r\n".join(line[1:] if line.startswith("..") else line
                                  for line in lines).encode()
                # The first field after the trace fields (protocol.md 8.4).
                head = headers_of(raw)[4:]
                subjects = [h for h in head if h.startswith("Subject: via ")]
                assert len(subjects) == 1, head
                heads[subjects[0].removeprefix("Subject: via ")] = head
            assert sorted(heads) == sorted(fields)
            for field, head in heads.items():
                assert head[0] == f"From: {ALICE}", head
                assert [h for h in head if h.lower().startswith("from:")] == [f"From: {ALICE}"]
                assert f"{field}: Alice <{ALICE}>" in head
        finally:
            u.cmd("QUIT")
            u.close()


def test_accept_after_reject_is_refused_while_the_body_is_still_held(tmp_path: Path) -> None:
    """Table 1 and assumption 6: a rejected message is deleted for that
    recipient; an ACCEPT for the same recipient afterwards is refused, even
    while the origin still holds the body for another recipient."""
    a, b = make_pair(tmp_path)
    a.add_user(ALICE)
    b.add_user(BOB)
    b.add_user(CAROL)
    with running(a, b):
        assert submit(a, ALICE, [BOB, CAROL],
                      b"Subject: for two\r\n\r\nhello\r\n").startswith("+OK queued as ")
        wait_until(lambda: sorted(a.query("SELECT state FROM out_recipients")) ==
                   [("envelope-sent",)] * 2, what="the envelope sent")
        [(envid,)] = a.query("SELECT envid FROM out_envelopes")
        # b.example's server reports bob's decisions (its claim is taken on
        # plaintext loopback, as in test_bad_input.py).
        p = PeerSocket(a.peer_port)
        assert p.cmd("EHLO smdp.b.example").startswith("250")
        assert p.cmd(f"REJECT {envid} To:<{BOB}>") == f"250 2.0.0 REJECT recorded for <{BOB}>"
        # Carol has not decided: the origin still holds the body ...
        assert a.query("SELECT has_body FROM out_messages") == [(1,)]
        # ... yet bob, having rejected, cannot have it any more.
        assert p.cmd(f"ACCEPT {envid} To:<{BOB}>") == (
            f"554 5.7.0 {envid} was rejected; message deleted")
        assert p.cmd(f"AUTHORIZE {envid} To:<{BOB}>") == (
            f"554 5.7.0 {envid} was rejected; message deleted")
        assert p.cmd("QUIT").startswith("221")
        p.close()
        assert dict(a.query("SELECT recipient, state FROM out_recipients")) == {
            BOB: "rejected", CAROL: "envelope-sent"}
        assert a.query("SELECT COUNT(*) FROM outbound_lists") == [(0,)]
