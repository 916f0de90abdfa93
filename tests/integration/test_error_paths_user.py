"""Error paths of the user port, over real sockets to a real server: SENT
for one message, list edits that cannot be done, a DNS server that fails
while an inbound list entry is added, a disk that fails under a large
submission, a store that fails under a command, and POP3 deletions.
Every reply is asserted whole, as protocol.md 12 gives it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.protocol.framing import dot_stuff
from tests.integration.faults import NXDOMAIN, SERVFAIL, StandInDns, refusing
from tests.integration.harness import (
    PeerSocket,
    Server,
    UserSocket,
    free_ports,
    make_pair,
    running,
    wait_until,
)

ALICE, ANN = "alice@a.example", "ann@a.example"
BOB, CAROL = "bob@b.example", "carol@b.example"
DATE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def login(server: Server, user: str = ALICE) -> UserSocket:
    u = UserSocket(server.user_port)
    assert u.cmd(f"USER {user}") == "+OK send your password"
    assert u.cmd("PASS secret").startswith(f"+OK {user} has ")
    return u


def listing(u: UserSocket, command: str) -> tuple[str, list[str]]:
    """A multi-line answer: the status line and the lines of its block."""
    status = u.cmd(command)
    return status, (u.block() if status.startswith("+OK") else [])


def submit(u: UserSocket, recipients: list[str], message: bytes) -> str:
    assert u.cmd("MAIL").startswith("+OK composing as")
    for rcpt in recipients:
        assert u.cmd(f"RCPT TO:<{rcpt}>") == f"+OK recipient {rcpt}"
    assert u.cmd("DATA").startswith("+OK send the message")
    u.sock.sendall(dot_stuff(message))
    return u.line()


@pytest.fixture
def a(tmp_path: Path) -> Iterator[Server]:
    """a.example (alice, ann), running; its peer b.example is not, so mail
    to b.example stays queued."""
    a, _b = make_pair(tmp_path)
    a.add_user(ALICE)
    a.add_user(ANN)
    with running(a):
        yield a


# -- SENT ------------------------------------------------------------------------------------


def test_sent_for_one_message_and_for_one_that_is_not_yours(a: Server) -> None:
    """protocol.md 12.6: SENT <msgid> lists that message's recipients only;
    an unknown msgid, or another user's, is "-ERR no sent message <msgid>"."""
    u = login(a)
    try:
        first = submit(u, [BOB, CAROL], b"Subject: one\r\n\r\nfirst\r\n")
        second = submit(u, [BOB], b"Subject: two\r\n\r\nsecond\r\n")
        assert re.fullmatch(r"\+OK queued as [a-z2-7]{26} \(2 recipient\(s\)\)", first)
        one, two = first.split()[3], second.split()[3]
        status, lines = listing(u, f"SENT {one}")
        assert status == "+OK 2 recipient status line(s)"
        assert [re.sub(DATE, "<time>", line) for line in sorted(lines)] == [
            f"{one} {BOB} queued <time> smdp", f"{one} {CAROL} queued <time> smdp"]
        status, lines = listing(u, "SENT")
        assert status == "+OK 3 recipient status line(s)"
        assert sorted(line.split()[0] for line in lines) == sorted([one, one, two])
        assert u.cmd("SENT zzzzzzzzzzzzzzzzzzzzzzzzzz") == (
            "-ERR no sent message zzzzzzzzzzzzzzzzzzzzzzzzzz")
        assert u.cmd("NOOP") == "+OK"
    finally:
        u.close()
    u = login(a, ANN)
    try:
        assert u.cmd(f"SENT {one}") == f"-ERR no sent message {one}"
        assert listing(u, "SENT") == ("+OK 0 recipient status line(s)", [])
    finally:
        u.close()


# -- lists -------------------------------------------------------------------------------------


def test_list_edits_that_cannot_be_done_are_refused_and_change_nothing(a: Server) -> None:
    """protocol.md 12.7: a server named for an outbound list, an unknown
    list, a bad address, and removing what is not there are each refused
    with their own reply; the lists are as they were."""
    u = login(a)
    try:
        assert u.cmd(f"LISTADD out-white {CAROL} smdp.b.example") == (
            "-ERR outbound lists hold addresses only")
        assert u.cmd(f"LISTADD grey {CAROL}") == (
            "-ERR list must be one of in-white, in-black, out-white, out-black")
        assert u.cmd("LISTADD out-black not-an-address") == (
            "-ERR bad address not-an-address")
        assert u.cmd(f"LISTDEL out-black {CAROL}") == (
            f"-ERR {CAROL} is not on your out-black list")
        assert u.cmd(f"LISTDEL in-white {CAROL} smdp.b.example") == (
            f"-ERR {CAROL} is not on your in-white list")
        assert listing(u, "LISTS") == ("+OK 0 list entries", [])
        # The same edits done right.
        assert u.cmd(f"LISTADD out-white <{CAROL}>") == (
            f"+OK {CAROL} added to your out-white list")
        assert u.cmd(f"LISTADD in-black {CAROL}") == f"+OK {CAROL} added to your in-black list"
        status, lines = listing(u, "LISTS")
        assert status == "+OK 2 list entries"
        assert sorted(re.sub(DATE, "<time>", line) for line in lines) == [
            f"in-black {CAROL} smdp.b.example manual <time>",
            f"out-white {CAROL} manual <time>"]
        # The pair is (address, server): another server's entry is not there.
        assert u.cmd(f"LISTDEL in-black {CAROL} smdp.other.example") == (
            f"-ERR {CAROL} is not on your in-black list")
        assert u.cmd(f"LISTDEL out-white {CAROL}") == (
            f"+OK {CAROL} removed from your out-white list")
        assert u.cmd(f"LISTDEL out-white {CAROL}") == (
            f"-ERR {CAROL} is not on your out-white list")
    finally:
        u.close()


def test_an_inbound_list_entry_needs_discovery_when_no_server_is_named(
    tmp_path: Path,
) -> None:
    """protocol.md 12.7: without <server>, the server of the address's domain
    is found by discovery; when DNS fails (SERVFAIL) or denies it (NXDOMAIN)
    the entry is refused with the reason, and nothing is added."""
    with StandInDns(default=NXDOMAIN) as dns:
        dns.answers = {"c.example": SERVFAIL, "e.example": [("smdp.e.example", 2525)]}
        peer_port, user_port = free_ports(2)
        a = Server("a.example", "smdp.a.example", tmp_path, peer_port, user_port,
                   extra=dns.config)
        a.write_config()
        a.add_user(ALICE)
        with running(a):
            u = login(a)
            try:
                assert u.cmd("LISTADD in-white x@c.example") == (
                    "-ERR name the SMDP server of x@c.example: looking up the SMDP server of "
                    "c.example failed: no nameserver gave a usable answer for "
                    "_smdp._tcp.c.example. SRV (SERVFAIL or refused)")
                assert u.cmd("LISTADD in-black x@d.example") == (
                    "-ERR name the SMDP server of x@d.example: no SMDP server for d.example: "
                    "_smdp._tcp.d.example. does not exist (NXDOMAIN)")
                assert u.cmd("LISTDEL in-black x@d.example") == (
                    "-ERR name the SMDP server of x@d.example: no SMDP server for d.example: "
                    "_smdp._tcp.d.example. does not exist (NXDOMAIN)")
                assert listing(u, "LISTS") == ("+OK 0 list entries", [])
                assert u.cmd("LISTADD in-white x@e.example") == (
                    "+OK x@e.example added to your in-white list")
                assert listing(u, "LISTS")[0] == "+OK 1 list entries"
                [line] = listing(u, "LISTS")[1]
                assert re.sub(DATE, "<time>", line) == (
                    "in-white x@e.example smdp.e.example manual <time>")
                assert u.cmd("LISTDEL in-white x@e.example") == (
                    "+OK x@e.example removed from your in-white list")
            finally:
                u.close()


def test_a_store_that_fails_under_a_command_answers_internal_error(a: Server) -> None:
    """protocol.md 12.1: "-ERR internal error; nothing was changed, try
    again"; nothing was changed, and the session goes on."""
    u = login(a)
    try:
        with refusing(a, "INSERT", "outbound_lists"):
            assert u.cmd(f"LISTADD out-white {CAROL}") == (
                "-ERR internal error; nothing was changed, try again")
            assert listing(u, "LISTS") == ("+OK 0 list entries", [])
        assert u.cmd(f"LISTADD out-white {CAROL}") == f"+OK {CAROL} added to your out-white list"
    finally:
        u.close()


# -- a disk error under a large submission ---------------------------------------------------


def spool_files(server: Server, spool: Path) -> list[str]:
    """The server's open files in ``spool`` (unlinked temporary files too)."""
    assert server.proc is not None
    fds = Path(f"/proc/{server.proc.pid}/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith(f"{spool}/"):
            found.append(target)
    return found


def test_a_disk_error_while_the_submission_is_rewritten_stores_nothing(
    tmp_path: Path,
) -> None:
    """A large submission is spooled as it arrives, then rewritten (From,
    Date, Message-ID added) into a second spool file. The spool directory
    goes away in between (the first file is open already): the message is
    refused with the temporary error of protocol.md 12.6, nothing is stored,
    and the session goes on; with the directory back the same message passes."""
    spool = tmp_path / "spool"
    spool.mkdir()
    a, _b = make_pair(tmp_path)
    a.store_extra = f'spool_dir = "{spool}"'
    a.write_config()
    a.add_user(ALICE)
    line = b"y" * 78 + b"\r\n"
    message = b"Subject: big\r\n\r\n" + line * (3 * 1024 * 1024 // len(line))
    wire = dot_stuff(message)
    with running(a):
        u = login(a)
        try:
            assert u.cmd("MAIL").startswith("+OK")
            assert u.cmd(f"RCPT TO:<{BOB}>").startswith("+OK")
            assert u.cmd("DATA").startswith("+OK")
            u.sock.sendall(wire[:2 * 1024 * 1024])  # past the 1 MiB kept in memory
            wait_until(lambda: spool_files(a, spool), what="the arriving message spooled")
            spool.rmdir()  # the open spool file does not need its directory
            u.sock.sendall(wire[2 * 1024 * 1024:])
            assert u.line() == (
                "-ERR insufficient storage on the server; nothing was stored, try later")
            assert u.cmd("NOOP") == "+OK"
            assert a.query("SELECT COUNT(*) FROM out_messages") == [(0,)]
            spool.mkdir()
            assert submit(u, [BOB], message).startswith("+OK queued as ")
        finally:
            u.close()
    assert "cannot spool a submission" in a.log()


# -- POP3 deletions ------------------------------------------------------------------------------


def deliver_directly(a: Server, subjects: list[str]) -> None:
    """Messages from bob@b.example, sent whole to alice (who white-listed
    him) over a's peer port: accepted at once, one per subject."""
    u = login(a)
    try:
        assert u.cmd(f"LISTADD in-white {BOB} smdp.b.example").startswith("+OK")
    finally:
        u.close()
    p = PeerSocket(a.peer_port)
    try:
        assert p.cmd("EHLO smdp.b.example").startswith("250")
        for i, subject in enumerate(subjects):
            body = f"Subject: {subject}\r\n\r\nmessage {subject}\r\n".encode()
            envid = chr(ord("a") + i) * 26
            assert p.cmd(f"MAIL From:<{BOB}> ID={envid} SIZE={len(body)}").startswith("250")
            assert p.cmd(f"RCPT To:<{ALICE}>").startswith("250")
            assert p.cmd("DATA").startswith("354")
            p.send(dot_stuff(body))
            assert p.reply() == f"250 2.0.0 {envid} stored"
    finally:
        p.close()


def read_size(body: bytes, envid: str) -> int:
    """The size STAT, LIST and RETR give a message deliver_directly sent: with
    the Return-Path, Delivered-To and a's Received field (protocol.md 8.4),
    whose date-time is 31 characters."""
    trace = (f"Return-Path: <{BOB}>\r\nDelivered-To: {ALICE}\r\n"
             f"Received: from smdp.b.example by smdp.a.example with SMDP id {envid}; "
             + "x" * 31 + "\r\n")
    return len(trace) + len(body)


def test_a_deleted_message_cannot_be_read_in_the_session_or_after_quit(a: Server) -> None:
    """protocol.md 12.4: a DELE'd message is hidden at once (RETR, TOP, LIST
    n: "already deleted"), removed at QUIT, and the next session numbers
    what is left anew; a session that ends without QUIT removes nothing."""
    deliver_directly(a, ["one", "two"])
    u = login(a)
    try:
        assert u.cmd("STAT").startswith("+OK 2 ")
        assert listing(u, "UIDL")[0] == "+OK unique ids follow"
        uids = listing(u, "UIDL")[1]
        assert u.cmd("DELE 1") == "+OK message 1 deleted"
        for command in ("RETR 1", "TOP 1 0", "LIST 1", "UIDL 1", "DELE 1"):
            assert u.cmd(command) == "-ERR message 1 already deleted"
        assert listing(u, "RETR 2")[1][-1] == "message two"
        # Dropped without QUIT: nothing is removed.
    finally:
        u.close()
    u = login(a)
    try:
        assert u.cmd("STAT").startswith("+OK 2 ")
        assert u.cmd("DELE 1") == "+OK message 1 deleted"
        assert u.cmd("QUIT") == "+OK smdp.a.example signing off"
    finally:
        u.close()
    u = login(a)
    try:
        size = read_size(b"Subject: two\r\n\r\nmessage two\r\n", "b" * 26)
        assert u.cmd("STAT") == f"+OK 1 {size}"
        assert u.cmd("RETR 2") == "-ERR no message 2"
        reply, lines = listing(u, "RETR 1")
        assert reply == f"+OK {size} octets"
        assert lines[:2] == [f"Return-Path: <{BOB}>", f"Delivered-To: {ALICE}"]
        assert lines[2].startswith(
            f"Received: from smdp.b.example by smdp.a.example with SMDP id {'b' * 26}; ")
        assert lines[3:] == ["Subject: two", "", "message two"]
        # The uid stays with the message across sessions (RFC 1939 7).
        assert listing(u, "UIDL") == ("+OK unique ids follow",
                                      [f"1 {uids[1].split()[1]}"])
    finally:
        u.close()
    assert a.query("SELECT deleted FROM mailbox ORDER BY id") == [(1,), (0,)]


def test_pwd_lists_the_mailbox_and_repeated_options_say_so(a: Server) -> None:
    """Table 5 "pwd": PWD answers with the envelopes and messages. An option
    repeated, or an ACCEPT after ACCEPT&AUTH, is answered with a note and
    sends nothing new; an accept after a rejection is refused (protocol.md 12.5)."""
    deliver_directly(a, ["one"])
    p = PeerSocket(a.peer_port)
    summary = b"Subject: lunch?\r\nAttachments: 0\r\n"
    try:
        assert p.cmd("EHLO smdp.b.example").startswith("250")
        assert p.cmd(f"ENVELOPE From:<{CAROL}> ID={'e' * 26} SIZE=321").startswith("250")
        assert p.cmd(f"RCPT To:<{ALICE}>").startswith("250")
        assert p.cmd("DATA").startswith("354")
        p.send(dot_stuff(summary))
        assert p.reply().startswith("250")
    finally:
        p.close()
    [(entry,)] = a.query("SELECT id FROM mailbox WHERE state = 'pending'")
    u = UserSocket(a.user_port)
    try:
        assert u.cmd(f"USER {ALICE}").startswith("+OK")
        size = read_size(b"Subject: one\r\n\r\nmessage one\r\n", "a" * 26)
        assert u.cmd("PWD secret") == (
            f"+OK {ALICE} has 1 envelope(s) awaiting a decision and 1 message(s) ({size} octets)")
        assert u.block() == [f"envelope {entry} pending {CAROL} 321 0 lunch?",
                             f"message 1 {size} one"]
        assert u.cmd(f"ACCEPT&AUTH {entry}") == (
            f"+OK envelope {entry} accepted; {CAROL} added to your white list")
        assert u.cmd(f"ACCEPT&AUTH {entry}") == (
            f"+OK envelope {entry} accepted; {CAROL} added to your white list (already decided)")
        assert u.cmd(f"ACCEPT {entry}") == (
            f"+OK envelope {entry} accepted; the message will be fetched (already accepted)")
        assert u.cmd(f"REJECT {entry}") == f"+OK envelope {entry} rejected"
        assert u.cmd(f"ACCEPT {entry}") == f"-ERR envelope {entry} was already rejected"
        assert u.cmd("ENV 99") == "-ERR no envelope 99 in your mailbox"
        # A recipient named twice is one recipient.
        assert u.cmd("MAIL").startswith("+OK")
        assert u.cmd("RCPT TO:<dave@b.example>") == "+OK recipient dave@b.example"
        assert u.cmd("RCPT TO:<DAVE@B.example>") == "+OK recipient dave@b.example"
        assert u.cmd("DATA").startswith("+OK")
        u.sock.sendall(dot_stuff(b"Subject: x\r\n\r\ny\r\n"))
        assert re.fullmatch(r"\+OK queued as [a-z2-7]{26} \(1 recipient\(s\)\)", u.line())
    finally:
        u.close()
    # b.example is down, so every decision sent is still queued: AUTHORIZE
    # and REJECT, and nothing for the repeated options.
    assert a.query("SELECT COUNT(*) FROM queue WHERE kind = 'report-decision'") == [(2,)]
