"""Error paths of the delivery worker, proven against scripted stand-in peers
(tests/integration/faults.py) on loopback: a real origin facing a destination
that refuses, and a real destination facing an origin that refuses.

Each test asserts the exact outcome the way a user sees it: the recipient's
state and detail as SENT shows it at the origin, the entry's state and
reason as ENVS/ENV show it at the destination, and what crossed the wire.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from smdp.protocol.framing import dot_stuff
from tests.integration.faults import StandInPeer, execute, full_log
from tests.integration.harness import PeerSocket, Server, facing_stand_in, running, wait_until

ALICE = "alice@a.example"
BOB, CAROL, DAVE = "bob@b.example", "carol@b.example", "dave@b.example"
MESSAGE = b"Subject: Slides for Monday\r\n\r\nHere are the slides, as promised.\r\n"
ENVID = "h7qrzvg3cb7jjrusg7p5dzifiu"
MIB = 1024 * 1024


def sent(server: Server, user: str, msgid: str) -> dict[str, tuple[str, str]]:
    """recipient -> (state, detail), as SENT <msgid> shows them to ``user``."""
    c = server.client(user)
    try:
        lines = c.call(wire.Sent(msgid)).lines or []
    finally:
        c.quit()
    shown = {}
    for line in lines:
        shown_msgid, rcpt, state, _when, route, *detail = line.split(" ", 5)
        assert (shown_msgid, route) == (msgid, "smdp")
        shown[rcpt] = (state, detail[0] if detail else "")
    return shown


def submit(server: Server, recipients: list[str], message: bytes = MESSAGE,
           white: tuple[str, ...] = ()) -> tuple[str, str]:
    """alice sends ``message`` (after putting ``white`` on her outbound white
    list); returns the reply text and the msgid."""
    c = server.client(ALICE)
    try:
        for rcpt in white:
            c.call(wire.ListAdd("out-white", rcpt))
        reply = c.submit(recipients, message)
    finally:
        c.quit()
    return reply, reply.split("queued as ")[1].split()[0]


def is_rcpt(command: str, address: str) -> bool:
    return command.upper() == f"RCPT TO:<{address.upper()}>"


def verbs(commands: list[str]) -> list[str]:
    return [c.split()[0].split("=")[0].upper() for c in commands]


def queue_empty(server: Server) -> bool:
    return server.query("SELECT COUNT(*) FROM queue") == [(0,)]


# -- the origin facing a destination that refuses ------------------------------------------


@pytest.mark.parametrize("unauthorized", [(CAROL,), (BOB, CAROL)], ids=["one-551", "every-551"])
def test_a_551_turns_the_direct_send_into_an_envelope_for_that_recipient(
    tmp_path: Path, unauthorized: tuple[str, ...],
) -> None:
    """protocol.md 9.2: a recipient answered 551 gets an envelope instead, in
    a new transaction with a new envid; the others are delivered by the MAIL
    transaction. When every RCPT is answered 551 no data is sent (RSET)."""
    def answer(command: str) -> str | None:
        for rcpt in unauthorized:
            if is_rcpt(command, rcpt) and not envelope_started.is_set():
                return f"551 5.7.1 <{rcpt}> has not authorized <{ALICE}>; send an envelope"
        if command.upper().startswith("ENVELOPE "):
            envelope_started.set()
        return None

    envelope_started = threading.Event()
    with StandInPeer("smdp.b.example", answer) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            reply, msgid = submit(a, [BOB, CAROL], white=(BOB, CAROL))
            assert reply == f"queued as {msgid} (2 recipient(s); 2 sent directly (white list))"
            expected = {
                rcpt: ("envelope-sent", "") if rcpt in unauthorized
                else ("delivered", "delivered directly (white list)")
                for rcpt in (BOB, CAROL)
            }
            wait_until(lambda: sent(a, ALICE, msgid) == expected, what="SENT shows the outcome")
            wait_until(lambda: queue_empty(a), what="no job left")
            envelopes = a.query("SELECT envid, mode FROM out_envelopes ORDER BY mode")
    assert not peer.errors, peer.errors
    commands = peer.commands()
    assert [mode for _envid, mode in envelopes] == ["direct", "envelope"]
    [(direct_id, _), (envelope_id, _)] = envelopes
    assert direct_id != envelope_id
    mail = commands.index(f"MAIL From:<{ALICE}> ID={direct_id}")
    envelope = commands.index(f"ENVELOPE From:<{ALICE}> ID={envelope_id}")
    assert mail < envelope  # the fallback follows the MAIL transaction
    taken = [r for r in (BOB, CAROL) if r not in unauthorized]
    # The fallback envelope names exactly the refused recipients.
    assert [c for c in commands[envelope:] if c.upper().startswith("RCPT")] == [
        f"RCPT To:<{r}>" for r in unauthorized]
    blocks = [b for s in peer.sessions for b in s.blocks]
    if taken:
        # The whole message for the recipients taken, then the envelope block.
        [whole, summary] = blocks
        assert whole.endswith(MESSAGE) and b"Headline:" not in whole
        assert b"Subject: Slides for Monday\r\n" in summary and b"Expires: " in summary
    else:
        # No recipient taken: the MAIL transaction ends with RSET, no data.
        [summary] = blocks
        assert b"Headline: Here are the slides, as promised.\r\n" in summary
        assert "RSET" in verbs(commands[mail:envelope])


@pytest.mark.parametrize("mode", ["envelope", "direct"])
def test_a_5xx_to_one_rcpt_fails_that_recipient_only(tmp_path: Path, mode: str) -> None:
    """protocol.md 13: "A 5xx reply to one RCPT fails that recipient only":
    it ends failed with the peer's reply as detail, at once (no retry), and
    the others go on."""
    refusal = f"550 5.1.1 <{CAROL}>: no such user here"

    def answer(command: str) -> str | None:
        return refusal if is_rcpt(command, CAROL) else None

    with StandInPeer("smdp.b.example", answer) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            white = (BOB, CAROL, DAVE) if mode == "direct" else ()
            _reply, msgid = submit(a, [BOB, CAROL, DAVE], white=white)
            ok = (("delivered", "delivered directly (white list)") if mode == "direct"
                  else ("envelope-sent", ""))
            expected = {BOB: ok, CAROL: ("failed", refusal), DAVE: ok}
            wait_until(lambda: sent(a, ALICE, msgid) == expected, what="SENT shows the outcome")
            wait_until(lambda: queue_empty(a), what="no job left")
    assert not peer.errors, peer.errors
    # One transaction, one block; carol was asked once and never again.
    commands = peer.commands()
    assert sum(is_rcpt(c, CAROL) for c in commands) == 1
    assert verbs(commands).count("DATA") == 1
    assert len([b for s in peer.sessions for b in s.blocks]) == 1


def big_message(size: int) -> bytes:
    line = b"x" * 78 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


def test_a_body_that_shrinks_while_sent_directly_is_never_ended_as_whole(
    tmp_path: Path,
) -> None:
    """PeerLink.send_body: the held body disappears while the origin sends it
    (as expiry would do: its chunks deleted, has_body cleared). The origin
    drops the session without the terminating dot, so the destination stores
    nothing; the retry finds the message no longer held and fails the
    recipient with that reason."""
    hold = threading.Event()
    with StandInPeer("smdp.b.example", hold=hold, receive_buffer=32 * 1024) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            # 8 MiB: far more than the socket buffers hold, so the origin is
            # still reading chunks from its store when the peer stops reading.
            _reply, msgid = submit(a, [BOB], big_message(8 * MIB), white=(BOB,))
            assert peer.block_started.wait(30), "the body never started"
            [(message_id, size)] = a.query("SELECT id, size FROM out_messages")
            execute(a, f"DELETE FROM out_body_chunks WHERE message_id = {message_id}",
                    f"UPDATE out_messages SET has_body = 0 WHERE id = {message_id}")
            hold.set()
            wait_until(lambda: sent(a, ALICE, msgid) == {
                BOB: ("failed", "the message is no longer held")}, what="bob fails")
            log = full_log(a)
    assert not peer.errors, peer.errors
    [exchange] = peer.sessions  # the retry gave up without a new session
    assert exchange.blocks == [] and exchange.cut_short is not None
    assert b"\r\n.\r\n" not in exchange.cut_short
    assert re.search(rf"will retry in [0-9.]+s: the stored body is \d+ octets, {size} expected",
                     log), log


def test_a_destination_that_resets_in_the_middle_of_a_body_gets_it_again(
    tmp_path: Path,
) -> None:
    """PeerLink.send_body, connection lost: the destination resets the
    connection while the whole message is on its way. A temporary failure:
    the next session sends the message again, whole, and it is delivered."""
    hold = threading.Event()
    with StandInPeer("smdp.b.example", hold=hold, receive_buffer=32 * 1024) as peer:
        peer.reset_held_once = True
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        message = big_message(8 * MIB)
        with running(a):
            _reply, msgid = submit(a, [BOB], message, white=(BOB,))
            assert peer.block_started.wait(30), "the body never started"
            hold.set()
            wait_until(lambda: sent(a, ALICE, msgid) == {
                BOB: ("delivered", "delivered directly (white list)")}, timeout=30,
                what="delivered on the next session")
            log = full_log(a)
    assert not peer.errors, peer.errors
    first, *later = peer.sessions
    assert first.blocks == [] and first.cut_short is not None
    [block] = [b for s in later for b in s.blocks]
    assert block.endswith(dot_stuff(message)[:-3])  # the whole message, added headers first
    assert re.search(r"will retry in [0-9.]+s: connection lost", log), log


# -- the destination facing an origin that refuses -----------------------------------------


def announce(b: Server, size: int = 5000) -> None:
    """An envelope from a.example for bob, delivered by hand to b's peer port."""
    p = PeerSocket(b.peer_port)
    try:
        assert p.cmd("EHLO smdp.a.example").startswith("250")
        assert p.cmd(f"ENVELOPE FROM:<{ALICE}> ID={ENVID}").startswith("250")
        assert p.cmd(f"RCPT TO:<{BOB}>").startswith("250")
        assert p.cmd(f"SIZE={size}").startswith("250")
        assert p.cmd("DATA").startswith("354")
        assert p.cmd("Subject: hi\r\nAttachments: 0\r\n.") == f"250 2.0.0 {ENVID} stored"
        p.cmd("QUIT")
    finally:
        p.close()


def decide(b: Server, option: str) -> str:
    c = b.client(BOB)
    try:
        return c.call(wire.UserDecision(wire.DECISIONS_BY_VERB[option], 1)).text
    finally:
        c.quit()


def entry(b: Server) -> dict[str, str]:
    """ENV 1 as bob sees it: field -> value."""
    c = b.client(BOB)
    try:
        lines = c.call(wire.EnvShow(1)).lines or []
    finally:
        c.quit()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def test_a_5xx_to_a_pulling_decision_fails_the_entry_with_the_reason(tmp_path: Path) -> None:
    """protocol.md 13: at the destination a refused pulling decision turns
    the entry failed; ENV shows the origin's reply, and a new ACCEPT is
    refused with it."""
    refusal = f"554 5.7.0 {ENVID} is no longer held"

    def answer(command: str) -> str | None:
        return refusal if command.startswith("ACCEPT ") else None

    with StandInPeer("smdp.a.example", answer) as origin:
        b = facing_stand_in(tmp_path, "b.example", BOB, "a.example", origin.port)
        with running(b):
            announce(b)
            assert decide(b, "ACCEPT") == "envelope 1 accepted; the message will be fetched"
            reason = f"the origin refused the pull: {refusal}"
            wait_until(lambda: entry(b)["State"] == "failed", what="the entry fails")
            shown = entry(b)
            assert (shown["Decision"], shown["Reason"]) == ("ACCEPT", reason)
            with pytest.raises(ClientError) as refused:
                decide(b, "ACCEPT")
            assert str(refused.value) == f"envelope 1 can no longer be fetched: {reason}"
            wait_until(lambda: queue_empty(b), what="no job left")
    assert not origin.errors, origin.errors
    assert origin.commands().count(f"ACCEPT {ENVID} To:<{BOB}>") == 1  # 5xx: never retried


def test_a_5xx_to_a_rejection_changes_nothing_and_is_not_retried(tmp_path: Path) -> None:
    """A reject-family decision the origin refuses (it no longer knows the
    envelope): the entry stays rejected, and the refusal is final."""
    def answer(command: str) -> str | None:
        return f"550 5.1.0 Unknown envelope {ENVID}" if command.startswith("REJECT ") else None

    with StandInPeer("smdp.a.example", answer) as origin:
        b = facing_stand_in(tmp_path, "b.example", BOB, "a.example", origin.port)
        with running(b):
            announce(b)
            assert decide(b, "REJECT") == "envelope 1 rejected"
            wait_until(lambda: origin.commands().count(f"REJECT {ENVID} To:<{BOB}>") == 1,
                       what="the decision at the origin")
            wait_until(lambda: queue_empty(b), what="no job left")
            shown = entry(b)
    assert (shown["State"], shown["Decision"], shown["Reason"]) == (
        "rejected", "REJECT", "your decision")
    assert origin.commands().count(f"REJECT {ENVID} To:<{BOB}>") == 1


def test_a_4xx_to_a_pulling_decision_is_retried_until_the_pull(tmp_path: Path) -> None:
    """A temporary refusal of ACCEPT: the decision is sent again later; the
    pull then comes, is stored, and confirmed with RECEIVED."""
    body = b"Subject: hi\r\n\r\n.leading dot\r\nHello Bob.\r\n"
    pull = f"150 {len(body)} octets follow\r\n" + dot_stuff(body)[:-2].decode()
    answers = iter([f"451 4.3.0 Local error; try again later ({ENVID})", pull])

    def answer(command: str) -> str | None:
        return next(answers) if command.startswith("ACCEPT ") else None

    with StandInPeer("smdp.a.example", answer) as origin:
        b = facing_stand_in(tmp_path, "b.example", BOB, "a.example", origin.port)
        with running(b):
            announce(b, size=len(body))
            decide(b, "ACCEPT")
            wait_until(lambda: entry(b)["State"] == "accepted", what="the pull")
            wait_until(lambda: f"RECEIVED {ENVID}" in origin.commands(), what="RECEIVED")
            c = b.client(BOB)
            try:
                retr = c.call(wire.Retr(1))
            finally:
                c.quit()
    assert not origin.errors, origin.errors
    # After Return-Path, Delivered-To and b's Received (protocol.md 8.4).
    assert (retr.body or b"").split(b"\r\n", 3)[3] == body
    assert origin.commands().count(f"ACCEPT {ENVID} To:<{BOB}>") == 2


def test_a_pulled_body_that_cannot_be_spooled_is_pulled_again_later(tmp_path: Path) -> None:
    """PeerLink: the spool directory is gone when a large pulled body comes.
    A temporary failure (the entry stays fetching, the job says why); with
    the directory back, the next try stores the message."""
    body = big_message(2 * MIB)  # past the 1 MiB a pull keeps in memory
    pull = f"150 {len(body)} octets follow\r\n" + dot_stuff(body)[:-2].decode()

    def answer(command: str) -> str | None:
        return pull if command.startswith("ACCEPT ") else None

    spool = tmp_path / "spool"
    spool.mkdir()
    with StandInPeer("smdp.a.example", answer) as origin:
        b = facing_stand_in(tmp_path, "b.example", BOB, "a.example", origin.port)
        b.store_extra = f'spool_dir = "{spool}"'
        b.write_config()
        with running(b):
            announce(b, size=len(body))
            spool.rmdir()
            decide(b, "ACCEPT")
            wait_until(lambda: b.query(
                "SELECT last_error FROM queue WHERE last_error LIKE "
                "'cannot spool the pulled body: %No such file or directory%'"),
                what="the failure recorded on the job")
            assert entry(b)["State"] == "fetching"
            spool.mkdir()
            wait_until(lambda: entry(b)["State"] == "accepted", what="the pull")
            wait_until(lambda: f"RECEIVED {ENVID}" in origin.commands(), what="RECEIVED")
            # The body whole, after b's Received field (protocol.md 8.4; its
            # date-time is 31 characters).
            received = (f"Received: from smdp.a.example by smdp.b.example with SMDP id {ENVID}; "
                        + "x" * 31 + "\r\n")
            assert b.query("SELECT size FROM in_envelopes") == [(len(received) + len(body),)]
    assert not origin.errors, origin.errors


def test_a_pull_whose_body_disappears_is_dropped_without_the_dot(tmp_path: Path) -> None:
    """Session.stream_body in a real origin: the held body disappears (its
    chunks deleted, as expiry does) while the origin answers a pull. The
    destination gets the 150 and part of the body, then the connection ends
    without the terminating dot: it can never take the part for the whole."""
    with StandInPeer("smdp.b.example") as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            _reply, msgid = submit(a, [BOB], big_message(8 * MIB))
            wait_until(lambda: sent(a, ALICE, msgid) == {BOB: ("envelope-sent", "")},
                       what="the envelope")
            [(envid,)] = a.query("SELECT envid FROM out_envelopes")
            [(message_id, size)] = a.query("SELECT id, size FROM out_messages")
            pull = socket.socket()
            pull.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
            pull.settimeout(30)
            pull.connect(("127.0.0.1", a.peer_port))
            try:
                seen = pull.recv(4096)
                pull.sendall(b"EHLO smdp.b.example\r\n")
                while not re.search(rb"\r\n250 [^\r]*\r\n$", seen):
                    seen += pull.recv(4096)
                pull.sendall(f"ACCEPT {envid} To:<{BOB}>\r\n".encode())
                seen = b""
                while b"octets follow\r\n" not in seen:
                    seen += pull.recv(65536)
                assert seen.startswith(f"150 {size} octets follow\r\n".encode())
                # The origin is now stuck in the middle of the body: take it away.
                execute(a, f"DELETE FROM out_body_chunks WHERE message_id = {message_id}",
                        f"UPDATE out_messages SET has_body = 0 WHERE id = {message_id}")
                while True:
                    try:
                        data = pull.recv(1024 * 1024)
                    except ConnectionResetError:
                        break
                    if not data:
                        break
                    seen += data
            finally:
                pull.close()
            log = full_log(a)
    assert b"\r\n.\r\n" not in seen
    assert len(seen) < size
    assert re.search(rf"stored body is \d+ octets, {size} expected; dropping the session", log)
