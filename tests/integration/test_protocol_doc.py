"""docs/protocol.md, the places an independent client found it left open
(issue 10, item 11), each pinned against a real server: the exact reply code
and text the document now gives.

Most run against in-process servers (``inprocess.py``); the ready file is
written by ``smdp serve`` only, and the origin's side of 9.2 is watched by a
scripted stand-in destination (``faults.py``), so those two use processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from smdp.protocol import user as wire
from tests.conditions import wait_until
from tests.integration.faults import StandInPeer
from tests.integration.harness import (
    PeerSocket,
    UserSocket,
    facing_stand_in,
    make_pair,
    running,
)

from .inprocess import InProcessServer, inprocess_pair

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@b.example"
USERS = {"a.example": (ALICE,), "b.example": (BOB, CAROL)}
MESSAGE = b"Subject: Minutes\r\n\r\nThe minutes of Monday's meeting.\r\n"
ENVID = "q" * 26


def admin(server: InProcessServer, *args: str) -> str:
    """``smdp admin`` as a real process on the server's configuration."""
    result = subprocess.run(
        [sys.executable, "-m", "smdp", "admin", "--config", str(server.config_path), *args],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


def login(server: InProcessServer, user: str) -> UserSocket:
    u = UserSocket(server.user_port)
    assert u.cmd(f"USER {user}") == "+OK send your password"
    assert u.cmd("PASS secret").startswith("+OK ")
    return u


def env(u: UserSocket, entry: int) -> dict[str, str]:
    """ENV <entry> on a raw session: field -> value."""
    assert u.cmd(f"ENV {entry}") == f"+OK envelope {entry}"
    return dict(line.split(": ", 1) for line in u.block() if ": " in line)


def envs(u: UserSocket, *, all_: bool = True) -> list[list[str]]:
    reply = u.cmd("ENVS ALL" if all_ else "ENVS")
    assert reply.endswith("envelope(s)"), reply
    return [line.split(" ", 5) for line in u.block()]


def send(a: InProcessServer, recipients: list[str]) -> None:
    c = a.client(ALICE)
    try:
        assert c.submit(recipients, MESSAGE).startswith("queued as ")
    finally:
        c.quit()


def entries_of(b: InProcessServer, user: str) -> list[list[str]]:
    u = login(b, user)
    try:
        return envs(u)
    finally:
        u.close()


def sent_state(a: InProcessServer, rcpt: str) -> str:
    u = login(a, ALICE)
    try:
        assert u.cmd("SENT").endswith("recipient status line(s)")
        return next((line.split()[2] for line in u.block() if line.split()[1] == rcpt), "")
    finally:
        u.close()


def announce_by_hand(b: InProcessServer, recipients: tuple[str, ...] = (BOB,)) -> None:
    """An envelope from a.example's server, told to b's peer port by hand
    (a.example itself has never heard of it)."""
    p = PeerSocket(b.peer_port)
    try:
        assert p.cmd("EHLO smdp.a.example").startswith("250")
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID} SIZE=100").startswith("250")
        for rcpt in recipients:
            assert p.cmd(f"RCPT To:<{rcpt}>") == f"250 2.1.5 Recipient <{rcpt}> ok"
        assert p.cmd("DATA").startswith("354")
        assert p.cmd("Subject: by hand\r\n.") == f"250 2.0.0 {ENVID} stored"
        p.cmd("QUIT")
    finally:
        p.close()


# -- 6.1, 12.1 and 14: the idle timeout -------------------------------------------------


def test_the_idle_timeout_says_what_sections_6_1_12_1_and_14_say(tmp_path: Path) -> None:
    server = InProcessServer(tmp_path, "b.example", "[limits]\nidle_timeout = 0.3\n")
    server.start()
    try:
        p = PeerSocket(server.peer_port)
        assert p.reply() == "421 4.4.2 Idle too long, closing"
        p.close()
        u = UserSocket(server.user_port)
        assert u.line() == "-ERR idle too long, closing"
        u.close()
    finally:
        server.stop()


# -- 9.2: every RCPT of a MAIL transaction answered 551 --------------------------------


def test_a_pipelined_mail_transaction_whose_every_rcpt_gets_551(tmp_path: Path) -> None:
    """What the destination answers to the SIZE= and DATA a pipelining origin
    sent ahead: refused, no 354, so no block; RSET closes the transaction."""
    with inprocess_pair(tmp_path, users=USERS) as (_a, b):
        p = PeerSocket(b.peer_port)
        assert p.cmd("EHLO smdp.a.example").startswith("250-")
        p.send(f"MAIL From:<{ALICE}> ID={ENVID} SIZE=100\r\nRCPT To:<{BOB}>\r\n"
               "SIZE=100\r\nDATA\r\n".encode())
        assert [p.reply() for _ in range(4)] == [
            f"250 2.1.0 Message {ENVID} from <{ALICE}> ok",
            f"551 5.7.1 <{BOB}> has not authorized <{ALICE}>; send an envelope",
            "503 5.5.1 Bad sequence of commands: send RCPT first",
            "554 5.5.1 No valid recipients",
        ]
        assert p.cmd("RSET") == "250 2.0.0 Reset"
        assert p.cmd("QUIT") == "221 2.0.0 smdp.b.example closing"
        p.close()


def test_the_origin_sends_no_block_when_every_rcpt_gets_551(tmp_path: Path) -> None:
    """The origin's side of 9.2: MAIL, RCPT, SIZE= and DATA in one write, the
    destination's refusals (as the test above pins them), then RSET and no
    block; the recipient then gets an envelope."""
    def answer(command: str) -> str | None:
        verb = command.split(" ", 1)[0].split("=")[0].upper()
        if mail_open[0]:
            if verb == "RCPT":
                return f"551 5.7.1 <{BOB}> has not authorized <{ALICE}>; send an envelope"
            if verb == "SIZE":
                return "503 5.5.1 Bad sequence of commands: send RCPT first"
            if verb == "DATA":
                return "554 5.5.1 No valid recipients"
        mail_open[0] = verb == "MAIL"
        return None

    mail_open = [False]
    with StandInPeer("smdp.b.example", answer) as peer:
        a = facing_stand_in(tmp_path, "a.example", ALICE, "b.example", peer.port)
        with running(a):
            c = a.client(ALICE)
            try:
                c.call(wire.ListAdd("out-white", BOB))
                assert "1 sent directly (white list)" in c.submit([BOB], MESSAGE)
            finally:
                c.quit()
            wait_until(lambda: [b for s in peer.sessions for b in s.blocks],
                       what="the fallback envelope's block")
    assert not peer.errors, peer.errors
    commands = [c.split(" ", 1)[0].split("=")[0].upper() for c in peer.commands()]
    mail = commands.index("MAIL")
    assert commands[mail:mail + 5] == ["MAIL", "RCPT", "SIZE", "DATA", "RSET"]
    assert next(c for c in commands[mail + 5:] if c in ("MAIL", "ENVELOPE")) == "ENVELOPE"
    [block] = [b for s in peer.sessions for b in s.blocks]  # the envelope's only
    assert b"Subject: Minutes\r\n" in block


# -- 12.3: arguments that are not numbers ----------------------------------------------


def test_a_non_number_is_out_of_range_and_a_wrong_count_a_syntax_error(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (_a, b):
        u = UserSocket(b.user_port)
        # The state is checked before the arguments (12.3).
        assert u.cmd("RETR x") == "-ERR log in first"
        u.close()
        u = login(b, BOB)
        message_number = "-ERR message number must be a positive decimal integer"
        for command in ("RETR x", "RETR 0", "RETR -1", "RETR +1", "RETR 12345678901",
                        "LIST x", "DELE 1x", "TOP x 1", "UIDL 0"):
            assert u.cmd(command) == message_number, command
        assert u.cmd("ENV x") == "-ERR envelope id must be a positive decimal integer"
        assert u.cmd("ACCEPT x") == "-ERR envelope id must be a positive decimal integer"
        assert u.cmd("TOP 1 x") == "-ERR line count must be a non-negative decimal integer"
        assert u.cmd("RETR") == "-ERR syntax: RETR <n>"
        assert u.cmd("RETR 1 2") == "-ERR syntax: RETR <n>"
        assert u.cmd("LIST 1 2") == "-ERR syntax: LIST [<n>] or LIST [AFTER <n>] [LIMIT <count>]"
        assert u.cmd("TOP 1") == "-ERR syntax: TOP <n> <lines>"
        assert u.cmd("ENV") == "-ERR syntax: ENV <n>"
        assert u.cmd("REJECT 1 2") == "-ERR syntax: REJECT <envelope id>"
        assert u.cmd("RETR 9999999999") == "-ERR no message 9999999999"
        u.close()


# -- 4.1, 4.2, 6.4, 12.3: where a control character is caught -------------------------


def test_control_characters_are_checked_after_the_verb_and_the_state(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (_a, b):
        p = PeerSocket(b.peer_port)
        # In the verb, or as its separator: not a known verb.
        assert p.cmd("NO\x01OP") == "500 5.5.1 Unknown command"
        assert p.cmd("NOOP\tx") == "500 5.5.1 Unknown command"
        # A known verb out of sequence: the state comes before the characters.
        assert p.cmd("RCPT To:<b\x01b@b.example>") == (
            "503 5.5.1 Bad sequence of commands: send HELO or EHLO first")
        assert p.cmd("EHLO smdp.a.example").startswith("250-")
        # Allowed here: the characters come before the arguments' grammar.
        assert p.cmd("NOOP \x01") == "501 5.5.4 Invalid characters"
        assert p.cmd("NOOP a\tb") == "501 5.5.4 Invalid characters"
        assert p.cmd("NOOP a\rb") == "501 5.5.4 Invalid characters"  # a CR alone is no line end
        p.send("NOOP caf\u00e9\r\n".encode())
        assert p.reply() == "501 5.5.4 Invalid characters"
        assert p.cmd("ENVELOPE From:<a\x7f@a.example> ID=bad") == "501 5.5.4 Invalid characters"
        assert p.cmd("NOOP") == "250 2.0.0 OK"  # the session goes on
        p.close()

        u = UserSocket(b.user_port)
        assert u.cmd("NO\x01OP") == "-ERR unknown command"
        assert u.cmd("NOOP\tx") == "-ERR unknown command"
        assert u.cmd("RETR \x01") == "-ERR log in first"
        assert u.cmd("RETR \x00") == "-ERR log in first"
        assert u.cmd(b"USER b\xffb") == "-ERR arguments must be UTF-8"
        assert u.cmd(b"USER \x01\xff") == "-ERR arguments must be UTF-8"  # UTF-8 first
        assert u.cmd("USER bob\tx") == "-ERR control characters are not allowed"
        assert u.cmd("USER bob\rx") == "-ERR control characters are not allowed"
        assert u.cmd("NOOP \x7f") == "-ERR control characters are not allowed"
        assert u.cmd("NOOP") == "+OK"
        u.close()


# -- 12.4: a message marked deleted ------------------------------------------------------


def test_a_message_marked_deleted_is_refused_by_number(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        send(a, [BOB])
        [[entry, *_]] = wait_until(lambda: entries_of(b, BOB), what="the envelope")
        u = login(b, BOB)
        assert u.cmd(f"ACCEPT {entry}") == (
            f"+OK envelope {entry} accepted; the message will be fetched")
        u.close()
        wait_until(lambda: entries_of(b, BOB)[0][1] == "accepted", what="the pull")

        u = login(b, BOB)
        size = u.cmd("LIST 1").split()[2]
        assert u.cmd("DELE 1") == "+OK message 1 deleted"
        for command in ("LIST 1", "UIDL 1", "RETR 1", "TOP 1 0", "DELE 1"):
            assert u.cmd(command) == "-ERR message 1 already deleted", command
        assert u.cmd("RETR 2") == "-ERR no message 2"
        assert u.cmd("STAT") == "+OK 0 0"
        assert u.cmd("LIST") == "+OK 0 messages"
        assert u.block() == []
        assert u.cmd("RSET") == "+OK reset"
        assert u.cmd("LIST 1") == f"+OK 1 {size}"
        u.close()


# -- 12.5 and 8.1: repeated and changed options, and ENV's Decision: ----------------------


def test_repeated_and_changed_options_and_what_env_shows(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        assert admin(a, "reports") == "no spam reports\n"
        send(a, [BOB])
        [[entry, *_]] = wait_until(lambda: entries_of(b, BOB), what="the envelope")
        n = int(entry)
        u = login(b, BOB)
        assert env(u, n)["Decision"] == "-"
        assert u.cmd(f"ACCEPT {n}") == f"+OK envelope {n} accepted; the message will be fetched"
        u.close()
        wait_until(lambda: entries_of(b, BOB)[0][1] == "accepted", what="the pull")

        u = login(b, BOB)
        # The same option again: its answer for the entry as it is now, marked.
        assert u.cmd(f"ACCEPT {n}") == (
            f"+OK envelope {n} accepted; the message is in your mailbox (already decided)")
        assert u.cmd(f"ACCEPT&AUTH {n}") == (
            f"+OK envelope {n} accepted; {ALICE} added to your white list")
        # ACCEPT after ACCEPT&AUTH adds nothing.
        assert u.cmd(f"ACCEPT {n}") == (
            f"+OK envelope {n} accepted; the message is in your mailbox (already accepted)")
        # Decision: the option as the user port spells it, not the peer verb.
        assert env(u, n)["Decision"] == "ACCEPT&AUTH"

        # The reject family replaces an accept, and one reject another.
        assert u.cmd(f"REJECT {n}") == f"+OK envelope {n} rejected"
        assert u.cmd(f"REJECT&SPAM {n}") == f"+OK envelope {n} rejected as spam"
        assert u.cmd(f"REJECT&SPAM {n}") == f"+OK envelope {n} rejected as spam (already decided)"
        assert u.cmd(f"ACCEPT {n}") == f"-ERR envelope {n} was already rejected"
        shown = env(u, n)
        assert (shown["State"], shown["Decision"], shown["Reason"]) == (
            "spam", "REJECT&SPAM", "your decision")
        # The white list entry of the earlier ACCEPT&AUTH stays.
        assert u.cmd("LISTS") == "+OK 1 list entries"
        [listed] = u.block()
        assert listed.split()[:4] == ["in-white", ALICE, "smdp.a.example", "auto"]
        u.close()

        wait_until(lambda: sent_state(a, BOB) == "spam", what="SPAM at the origin")
        assert admin(a, "reports") == f"{ALICE}\t1 report(s)\n"
        admin(a, "suspend", ALICE)
        assert admin(a, "reports") == (
            f"{ALICE}\t1 report(s)\nSUSPENDED {ALICE}: suspended by the administrator\n")
        # One vote per entry, replaced: -1, not +1 +1 -1 -1.
        assert admin(b, "quality").splitlines() == [
            f"{'server':<32} {'messages':>8} {'votes':>6} {'quality':>8}  status",
            f"{'smdp.a.example':<32} {1:>8} {-1:>6} {-1.0:>8.2f}  "
            "new: 1 of 10 messages needed before judging",
        ]


# -- 11: a failed pull, a refusal for not speaking for a domain, Messages(X) ----------------


def test_an_accept_whose_pull_fails_keeps_its_vote(tmp_path: Path) -> None:
    """b accepts an envelope a.example's server never sent: the origin refuses
    the pull, the entry fails, and the +1 vote stays."""
    with inprocess_pair(tmp_path, users=USERS) as (_a, b):
        announce_by_hand(b)
        u = login(b, BOB)
        [[entry, *_]] = envs(u)
        assert u.cmd(f"ACCEPT {entry}") == (
            f"+OK envelope {entry} accepted; the message will be fetched")
        u.close()
        wait_until(lambda: entries_of(b, BOB)[0][1] == "failed", what="the refused pull")
        u = login(b, BOB)
        shown = env(u, int(entry))
        assert (shown["Decision"], shown["Reason"]) == (
            "ACCEPT", f"the origin refused the pull: 550 5.1.0 Unknown envelope {ENVID}")
        assert u.cmd(f"ACCEPT {entry}") == (
            f"-ERR envelope {entry} can no longer be fetched: the origin refused the pull: "
            f"550 5.1.0 Unknown envelope {ENVID}")
        u.close()
        assert admin(b, "quality").splitlines()[1].split()[:4] == [
            "smdp.a.example", "1", "1", "1.00"]


def test_a_peer_refused_for_not_speaking_for_a_domain_counts_against_nothing(
    tmp_path: Path,
) -> None:
    """Without a certificate, an EHLO name is a claim: the refusal is not held
    against it (nor against the domain)."""
    with inprocess_pair(tmp_path, users=USERS) as (_a, b):
        p = PeerSocket(b.peer_port)
        assert p.cmd("EHLO smdp.rogue.example").startswith("250-")
        assert p.cmd(f"ENVELOPE From:<{ALICE}> ID={ENVID}") == (
            "550 5.7.1 smdp.rogue.example does not speak for a.example")
        p.close()
        assert admin(b, "quality") == "no peer has sent anything yet\n"


def test_messages_count_message_recipient_pairs_and_votes_are_per_entry(
    tmp_path: Path,
) -> None:
    """Section 17, departures from the paper: one envelope for two recipients
    is two messages; a changed decision replaces its vote."""
    with inprocess_pair(tmp_path, users=USERS) as (_a, b):
        announce_by_hand(b, (BOB, CAROL))

        def counters() -> list[str]:
            return admin(b, "quality").splitlines()[1].split()[:4]

        assert counters() == ["smdp.a.example", "2", "0", "0.00"]
        for user, option, now in ((BOB, "ACCEPT", "1"), (BOB, "REJECT", "-1"),
                                  (CAROL, "REJECT", ""), (BOB, "REJECT&SPAM", "")):
            u = login(b, user)
            [[entry, *_]] = envs(u)
            assert u.cmd(f"{option} {entry}").startswith(f"+OK envelope {entry} ")
            u.close()
            if now:
                assert counters()[2] == now, (user, option)
        # Per entry, replaced: bob's REJECT took back his +1 (-1 then, not 0 as
        # counting every decision would give), and his REJECT&SPAM added nothing.
        assert counters() == ["smdp.a.example", "2", "-2", "-1.00"]


# -- 18: the ready file ------------------------------------------------------------------


def test_the_ready_file_is_a_json_object_of_the_listening_ports(tmp_path: Path) -> None:
    a, _b = make_pair(tmp_path)
    with running(a):
        text = (tmp_path / "a.example.ready").read_text()
    assert "\n" not in text
    assert json.loads(text) == {"peer": a.peer_port, "user": a.user_port}
