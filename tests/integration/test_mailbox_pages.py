"""Big mailboxes (issue 15, item 6; docs/protocol.md 12.4 and 12.5): ENVS,
LIST and UIDL a page at a time with a cursor, and POP3's STAT and the login
line from counts the store keeps, checked against what RETR sends, with a
real server, the reference client and Python's poplib."""

from __future__ import annotations

import poplib
from pathlib import Path

from smdp.protocol import user as wire
from smdp.store import open_store
from smdp.terms import Decision, EntryState
from tests.conditions import wait_until
from tests.integration.harness import UserSocket
from tests.integration.test_client_ids_and_send import client

from .inprocess import InProcessServer, inprocess_pair

ALICE, BOB, CAROL = "alice@a.example", "bob@b.example", "carol@b.example"
USERS = {"a.example": (ALICE,), "b.example": (BOB, CAROL)}


def login(server: InProcessServer, user: str) -> UserSocket:
    u = UserSocket(server.user_port)
    assert u.cmd(f"USER {user}") == "+OK send your password"
    assert u.cmd("PASS secret").startswith("+OK ")
    return u


def page(u: UserSocket, command: str) -> tuple[str, list[str]]:
    """A multi-line answer: its +OK text and its lines."""
    first = u.cmd(command)
    assert first.startswith("+OK "), (command, first)
    return first[4:], u.block()


def ids(lines: list[str]) -> list[int]:
    return [int(line.split(" ", 1)[0]) for line in lines]


def send(a: InProcessServer, count: int) -> None:
    c = a.client(ALICE)
    try:
        for n in range(count):
            c.submit([BOB], f"Subject: m{n}\r\n\r\nmessage {n}\r\n".encode())
    finally:
        c.quit()


def pending(b: InProcessServer, count: int) -> list[int]:
    wait_until(lambda: len(b.client(BOB).envelopes(False).lines or []) == count,
               what=f"{count} envelopes at b.example")
    return ids(b.client(BOB).envelopes(False).lines or [])


def test_envs_pages_at_their_edges(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        empty = login(b, CAROL)
        assert page(empty, "ENVS LIMIT 3") == ("0 envelope(s)", [])
        assert page(empty, "ENVS ALL AFTER 0 LIMIT 1") == ("0 envelope(s)", [])
        empty.close()
        send(a, 5)
        every = pending(b, 5)
        u = login(b, BOB)
        # Without LIMIT, as before pages existed: every entry, no continuation.
        assert page(u, "ENVS") == ("5 envelope(s)", page(u, "ENVS")[1])
        assert ids(page(u, "ENVS")[1]) == every
        # An exact page: no continuation; one short of it: one.
        assert page(u, "ENVS LIMIT 5")[0] == "5 envelope(s)"
        text, lines = page(u, "envs limit 4")
        assert text == f"4 envelope(s); more: ENVS AFTER {every[3]} LIMIT 4"
        assert ids(lines) == every[:4]
        assert wire.page_continuation(text) == every[3]
        text, lines = page(u, f"ENVS AFTER {every[3]} LIMIT 4")
        assert (text, ids(lines)) == ("1 envelope(s)", every[4:])
        assert wire.page_continuation(text) is None
        # A cursor past the end is an empty last page, not an error.
        assert page(u, f"ENVS AFTER {every[-1]} LIMIT 2") == ("0 envelope(s)", [])
        assert page(u, "ENVS AFTER 9999999999 LIMIT 2") == ("0 envelope(s)", [])
        # A bad cursor or size says what is wrong; the session goes on.
        cursor = ("-ERR cursor must be a non-negative decimal integer (the AFTER of a "
                  "more: continuation)")
        for bad in ("ENVS AFTER x LIMIT 2", "ENVS AFTER -1", "ENVS ALL AFTER 12345678901"):
            assert u.cmd(bad) == cursor, bad
        for bad in ("ENVS LIMIT 0", "ENVS LIMIT 1001", "ENVS LIMIT x"):
            assert u.cmd(bad) == "-ERR LIMIT must be a decimal integer from 1 to 1000", bad
        syntax = "-ERR syntax: ENVS [ALL] [AFTER <cursor>] [LIMIT <count>]"
        for bad in ("ENVS AFTER", "ENVS LIMIT 2 AFTER 1", "ENVS ALL ALL", "ENVS 3"):
            assert u.cmd(bad) == syntax, bad
        # Decisions between pages neither skip nor repeat an envelope: the
        # cursor is an entry id, not a position.
        text, lines = page(u, "ENVS LIMIT 2")
        assert ids(lines) == every[:2]
        for entry in (every[0], every[2]):
            assert u.cmd(f"REJECT {entry}").startswith("+OK ")
        after = wire.page_continuation(text)
        text, lines = page(u, f"ENVS AFTER {after} LIMIT 2")
        assert ids(lines) == [every[3], every[4]]
        assert page(u, f"ENVS AFTER {every[4]} LIMIT 2") == ("0 envelope(s)", [])
        # ENVS ALL pages over every state, one at a time.
        seen, after = [], 0
        while after is not None:
            text, lines = page(u, f"ENVS ALL AFTER {after} LIMIT 1")
            seen += [line.split(" ")[:2] for line in lines]
            after = wire.page_continuation(text)
        assert seen == [[str(e), "rejected" if e in (every[0], every[2]) else "pending"]
                        for e in every]
        u.close()
        # The reference client pages (3 at a time here) and prints them all.
        c = b.client(BOB)
        assert ids(c.envelopes(True, page=3).lines or []) == every
        assert ids(c.envelopes(False, page=1).lines or []) == [every[1], *every[3:]]
        c.quit()


def test_counts_stay_right_through_accept_reject_expiry_and_delete(tmp_path: Path) -> None:
    """STAT and the login line come from counts; after each change they
    must be what LIST and RETR show (a wrong count kept by the store fails
    here)."""
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        send(a, 5)
        every = pending(b, 5)
        c = b.client(BOB)
        for entry in every[:3]:
            c.call(wire.UserDecision(Decision.ACCEPT, entry))
        c.call(wire.UserDecision(Decision.REJECT, every[3]))
        c.quit()
        wait_until(lambda: [line.split(" ")[1] for line in
                            b.client(BOB).envelopes(True).lines or []]
                   == ["accepted"] * 3 + ["rejected", "pending"], what="three pulled")

        def check(messages: int, awaiting: int) -> list[int]:
            pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
            try:
                pop.user(BOB)
                welcome = pop.pass_("secret").decode()
                count, octets = pop.stat()
                _resp, listing, _ = pop.list()
                sizes = [int(line.split()[1]) for line in listing]
                retrieved = [sum(len(x) + 2 for x in pop.retr(n)[1]) for n in
                             range(1, count + 1)]
                assert count == messages == len(sizes)
                # RETR's octets (CRLF line ends; poplib undoes dot-stuffing,
                # and these bodies start no line with a dot).
                assert sizes == retrieved and octets == sum(sizes)
                assert welcome == (f"+OK {BOB} has {awaiting} envelope(s) awaiting a decision "
                                   f"and {messages} message(s) ({octets} octets)")
                return sizes
            finally:
                pop.quit()

        sizes = check(3, 1)
        # Expiry (as housekeeping runs it) ends the pending one.
        store = open_store(b.config)
        try:
            with store.transaction():
                env = store.mailbox_entry(every[4])
                assert env is not None
                store.set_in_expiry(env.envelope_id, 1.0)
            store.expire_in_envelopes(2.0, undecided=EntryState.PENDING,
                                      open_states=[EntryState.PENDING],
                                      expired=EntryState.EXPIRED, reason="expired")
        finally:
            store.close()
        assert check(3, 0) == sizes
        # DELE then QUIT removes; DELE without QUIT does not.
        pop = poplib.POP3("127.0.0.1", b.user_port, timeout=10)
        pop.user(BOB)
        pop.pass_("secret")
        pop.dele(2)
        assert pop.stat() == (2, sizes[0] + sizes[2])
        pop.quit()
        assert check(2, 0) == [sizes[0], sizes[2]]


def test_list_and_uidl_pages(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        empty = login(b, CAROL)
        assert page(empty, "LIST LIMIT 5") == ("0 messages", [])
        assert empty.cmd("STAT") == "+OK 0 0"
        empty.close()
        send(a, 4)
        every, late = pending(b, 4)[:3], pending(b, 4)[3]
        c = b.client(BOB)
        for entry in every:
            c.call(wire.UserDecision(Decision.ACCEPT, entry))
        c.quit()
        wait_until(lambda: b.client(BOB).call(wire.Stat()).text.startswith("3 "),
                   what="three pulled")
        u = login(b, BOB)
        _text, whole = page(u, "LIST")
        _text, uids = page(u, "UIDL")
        text, lines = page(u, "LIST LIMIT 2")
        assert (text, lines) == ("2 messages; more: LIST AFTER 2 LIMIT 2", whole[:2])
        assert page(u, "LIST AFTER 2 LIMIT 2") == ("1 messages", whole[2:])
        assert page(u, "LIST AFTER 3 LIMIT 2") == ("0 messages", [])
        assert page(u, "LIST LIMIT 3") == ("3 messages", whole)
        # A message marked deleted leaves the pages, and the cursor still works.
        assert u.cmd("DELE 2") == "+OK message 2 deleted"
        assert page(u, "UIDL LIMIT 1") == ("unique ids follow; more: UIDL AFTER 1 LIMIT 1",
                                           uids[:1])
        assert page(u, "UIDL AFTER 1 LIMIT 1") == ("unique ids follow", uids[2:])
        assert [line.rpartition(".")[2] for line in uids] == [str(e) for e in every]
        assert u.cmd("LIST AFTER x") == ("-ERR cursor must be a non-negative decimal integer "
                                         "(the AFTER of a more: continuation)")
        assert u.cmd("UIDL LIMIT 0") == "-ERR LIMIT must be a decimal integer from 1 to 1000"
        assert u.cmd("UIDL 4") == "-ERR no message 4"
        assert u.cmd("UIDL 2") == "-ERR message 2 already deleted"
        # Mail accepted during the session gets the next number at STAT.
        c = b.client(BOB)
        c.call(wire.UserDecision(Decision.ACCEPT, late))
        c.quit()
        wait_until(lambda: b.client(BOB).call(wire.Stat()).text.startswith("4 "),
                   what="the fourth pulled")
        assert u.cmd("STAT").startswith("+OK 3 ")  # 4 messages, number 2 marked deleted
        assert page(u, "LIST AFTER 3")[1][0].startswith("4 ")
        uid = u.cmd("UIDL 4")
        assert uid.startswith("+OK 4 ") and uid.endswith(f".{late}")
        assert page(u, "UIDL AFTER 3")[1] == [uid[4:]]
        u.close()
        # The reference client finds a message's number over UIDL pages.
        # (Which message is which entry is the order the envelopes arrived
        # in, which the origin's concurrent sessions do not fix: ask the store.)
        store = open_store(b.config)
        found = store.mailbox_entry_and_envelope(every[2])
        store.close()
        assert found is not None
        subject = found[1].subject
        c = b.client(BOB)
        assert f"Subject: {subject}\r\n\r\nmessage {subject[1:]}\r\n".encode() in \
            c.read(every[2])
        c.quit()


def test_the_command_line_client_pages(tmp_path: Path) -> None:
    """`smdp client envelopes` reads every page; with --limit it prints one,
    and the answer's continuation, which --after takes."""
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        send(a, 3)
        every = pending(b, 3)
        whole = client(b, BOB, "envelopes")
        assert whole.returncode == 0, whole.stderr
        assert whole.stdout.splitlines()[0] == "3 envelope(s)"
        assert [int(line.split()[0]) for line in whole.stdout.splitlines()[2:]] == every
        first = client(b, BOB, "envelopes", "--all", "--limit", "2")
        assert first.stdout.splitlines()[0] == \
            f"2 envelope(s); more: ENVS ALL AFTER {every[1]} LIMIT 2"
        rest = client(b, BOB, "envelopes", "--limit", "2", "--after", str(every[1]))
        assert rest.stdout.splitlines()[0] == "1 envelope(s)"
        assert rest.stdout.splitlines()[2].split()[0] == str(every[2])
        bad = client(b, BOB, "envelopes", "--limit", "0")
        assert bad.returncode != 0 and "--limit" in bad.stderr
