"""The IMAP codec (src/smdp/protocol/imap; docs/imap.md "The codec"): commands
read into events, limits at their boundaries, answers written, the state
table, and a property test that hostile bytes in any split are only ever
answered, never raised on, and never leave the codec waiting forever on a
command that is already whole."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smdp.mail.body import Body
from smdp.protocol.framing import CLOSED, NEED_DATA, ProtocolUsageError
from smdp.protocol.imap import Atom, ImapServerConnection, ImapState, write_value
from smdp.protocol.imap import events as ev
from smdp.protocol.imap.grammar import (
    ImapSyntaxError,
    mutf7_decode,
    mutf7_encode,
    read_command,
    read_sequence_set,
    tokenize,
)


def conn_in(state: ImapState = ImapState.SELECTED, *, spool_dir: str | None = None,
            **limits: int) -> ImapServerConnection:
    conn = ImapServerConnection("mx.example", spool_dir=spool_dir, **limits)
    conn.state = state
    return conn


def feed(conn: ImapServerConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    found = []
    while (e := conn.next_event()) is not NEED_DATA and e is not CLOSED:
        found.append(e)
        if isinstance(e, ev.Idle) or (isinstance(e, ev.Authenticate) and e.initial is None):
            conn.continuation("go on")
        else:
            conn.ok("done")
    return found


# -- reading commands -------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), [
    (b"a1 CAPABILITY", ev.Capability("a1")),
    (b"a1 noop", ev.Noop("a1")),
    (b'x LOGIN alice "p w\\"d"', ev.Login("x", "alice", 'p w"d')),
    (b"x LOGIN {5}\r\nalice {2+}\r\npw", ev.Login("x", "alice", "pw")),
    (b"x LOGIN \"j\xc3\xb6\" pw", ev.Login("x", "jö", "pw")),
    (b"x AUTHENTICATE PLAIN", ev.Authenticate("x", "PLAIN")),
    (b"x AUTHENTICATE plain AGEAYg==", ev.Authenticate("x", "PLAIN", b"\x00a\x00b")),
    (b"x AUTHENTICATE PLAIN =", ev.Authenticate("x", "PLAIN", b"")),
    (b"x ENABLE IMAP4rev2 utf8=accept", ev.Enable("x", ("IMAP4REV2", "UTF8=ACCEPT"))),
    (b'x LIST "" *', ev.ListCmd("x", "", ("*",))),
    (b'x LIST (SPECIAL-USE) "" %', ev.ListCmd("x", "", ("%",), selection=("SPECIAL-USE",))),
    (b'x LIST "" "*" RETURN (SPECIAL-USE)', ev.ListCmd("x", "", ("*",),
                                                       returns=("SPECIAL-USE",))),
    (b'x LSUB "" *', ev.ListCmd("x", "", ("*",), subscribed_only=True)),
    # RFC 5258 and RFC 5819.
    (b'x LIST (subscribed RECURSIVEMATCH remote) "" ("INBOX" Sent) '
     b'RETURN (CHILDREN STATUS (MESSAGES unseen) SUBSCRIBED)',
     ev.ListCmd("x", "", ("INBOX", "Sent"), selection=("SUBSCRIBED", "RECURSIVEMATCH", "REMOTE"),
                returns=("CHILDREN", "SUBSCRIBED"), status=("MESSAGES", "UNSEEN"))),
    (b'x LIST () "" % RETURN ()', ev.ListCmd("x", "", ("%",))),
    (b"x SELECT inbox", ev.Select("x", "inbox")),
    (b'x EXAMINE "INBOX"', ev.Select("x", "INBOX", readonly=True)),
    (b"x STATUS INBOX (MESSAGES UIDNEXT uidvalidity)",
     ev.Status("x", "INBOX", ("MESSAGES", "UIDNEXT", "UIDVALIDITY"))),
    (b"x FETCH 1:* (FLAGS UID)", ev.Fetch("x", ev.SequenceSet(((1, None),)),
                                          (ev.FetchAtt("FLAGS"), ev.FetchAtt("UID")))),
    (b"x UID FETCH 4,7:9 BODY.PEEK[]<0.100>", ev.Fetch(
        "x", ev.SequenceSet(((4, 4), (7, 9))), (ev.FetchAtt("BODY", "", (0, 100), True),),
        uid=True)),
    (b"x FETCH 2 (BODY[HEADER] body[text])", ev.Fetch(
        "x", ev.SequenceSet(((2, 2),)), (ev.FetchAtt("BODY", "HEADER"),
                                         ev.FetchAtt("BODY", "TEXT")))),
    (b"x FETCH 2 (BODY.PEEK[HEADER.FIELDS (Date \"From\")])", ev.Fetch(
        "x", ev.SequenceSet(((2, 2),)), (ev.FetchAtt("BODY", "HEADER.FIELDS", peek=True,
                                                     fields=("DATE", "FROM")),))),
    (b"x FETCH 2 BODY[HEADER.FIELDS.NOT (X-A)]<0.9>", ev.Fetch(
        "x", ev.SequenceSet(((2, 2),)), (ev.FetchAtt("BODY", "HEADER.FIELDS.NOT", (0, 9),
                                                     fields=("X-A",)),))),
    (b"x FETCH 2 (BINARY[1.2] binary.peek[]<3.4> BINARY.SIZE[3])", ev.Fetch(
        "x", ev.SequenceSet(((2, 2),)), (ev.FetchAtt("BINARY", "1.2"),
                                         ev.FetchAtt("BINARY", "", (3, 4), peek=True),
                                         ev.FetchAtt("BINARY.SIZE", "3")))),
    (b"x FETCH 2 FAST", ev.Fetch("x", ev.SequenceSet(((2, 2),)), (
        ev.FetchAtt("FLAGS"), ev.FetchAtt("INTERNALDATE"), ev.FetchAtt("RFC822.SIZE")))),
    (b"x SEARCH UNSEEN", ev.Search("x", ev.SearchKey("UNSEEN"))),
    (b"x UID SEARCH CHARSET UTF-8 UID 3:* NOT SEEN", ev.Search("x", ev.SearchKey("AND", keys=(
        ev.SearchKey("UID", ev.SequenceSet(((3, None),))),
        ev.SearchKey("NOT", keys=(ev.SearchKey("SEEN"),)))), uid=True)),
    (b"x SEARCH OR SEEN (FLAGGED 1:2)", ev.Search("x", ev.SearchKey("OR", keys=(
        ev.SearchKey("SEEN"), ev.SearchKey("AND", keys=(
            ev.SearchKey("FLAGGED"), ev.SearchKey("SEQ", ev.SequenceSet(((1, 2),))))))))),
    # RFC 5182 SEARCHRES: SAVE, and "$" wherever a sequence set goes.
    (b"x SEARCH RETURN (SAVE) $", ev.Search(
        "x", ev.SearchKey("SEQ", ev.SequenceSet((), saved=True)), returns=("SAVE",))),
    (b"x UID SEARCH UID $", ev.Search(
        "x", ev.SearchKey("UID", ev.SequenceSet((), saved=True)), uid=True)),
    (b"x UID FETCH $ FLAGS", ev.Fetch("x", ev.SequenceSet((), saved=True),
                                      (ev.FetchAtt("FLAGS"),), uid=True)),
    (b"x STORE $ +FLAGS \\Seen",
     ev.Store("x", ev.SequenceSet((), saved=True), "+", ("\\Seen",))),
    (b"x STORE 1 +FLAGS (\\seen \\Deleted)",
     ev.Store("x", ev.SequenceSet(((1, 1),)), "+", ("\\Seen", "\\Deleted"))),
    (b"x UID STORE 5 -FLAGS.SILENT \\Flagged",
     ev.Store("x", ev.SequenceSet(((5, 5),)), "-", ("\\Flagged",), silent=True, uid=True)),
    (b"x STORE 1 FLAGS ()", ev.Store("x", ev.SequenceSet(((1, 1),)), "", ())),
    (b"x EXPUNGE", ev.Expunge("x")),
    (b"x UID EXPUNGE 3:4", ev.Expunge("x", ev.SequenceSet(((3, 4),)))),
    (b"x IDLE", ev.Idle("x")),
    (b"x MOVE 1:2 INBOX", ev.Move("x", ev.SequenceSet(((1, 2),)), "INBOX")),
    (b'x UID MOVE 7 "Junk"', ev.Move("x", ev.SequenceSet(((7, 7),)), "Junk", uid=True)),
    (b"x COPY 1:2 Trash", ev.Copy("x", ev.SequenceSet(((1, 2),)), "Trash")),
    (b"x UID COPY 7 Junk", ev.Copy("x", ev.SequenceSet(((7, 7),)), "Junk", uid=True)),
    (b'x CREATE "Work/2026"', ev.Create("x", "Work/2026")),
    (b"x APPEND INBOX {2+}\r\nhi", ev.Append("x", "INBOX", b"hi")),
    (b'x APPEND Sent (\\Seen) "1-Feb-2026 10:00:00 +0000" {2+}\r\nhi',
     ev.Append("x", "Sent", b"hi", ("\\Seen",), "1-Feb-2026 10:00:00 +0000")),
    (b"x DELETE Work", ev.Delete("x", "Work")),
    (b"x RENAME Work Play", ev.Rename("x", "Work", "Play")),
    (b"x UNSELECT", ev.Unselect("x")),
])
def test_commands_become_events(line: bytes, expected: object) -> None:
    assert read_command(line) == expected


@pytest.mark.parametrize(("line", "why"), [
    (b"CAPABILITY", "tag"),
    (b"+x NOOP", "tag"),
    (b"a1 ", "command name"),
    (b"a1 FROB", "unknown command FROB"),
    (b"a1 NOOP extra", "no arguments"),
    (b"a1 LOGIN alice", "LOGIN <user> <password>"),
    (b'a1 LOGIN "alice pw', "not closed"),
    (b'a1 LOGIN "al\\ice" pw', "may only escape"),
    (b"a1 LOGIN alice  pw", "two spaces in a row"),
    (b"a1 LOGIN alice )", "unexpected character ')'"),
    (b"a1 LOGIN alice pw ", "end with a space"),
    (b"a1 LOGIN (alice) pw", "must be a string"),
    (b"a1 LOGIN {9}\r\nalice pw", "shorter than announced"),
    (b"a1 FETCH 0 FLAGS", "not a message number"),
    (b"a1 FETCH 01 FLAGS", "not a message number"),
    (b"a1 FETCH 4294967296 FLAGS", "not a message number"),
    (b"a1 FETCH 1:x FLAGS", "not a message number"),
    (b"a1 FETCH $,1 FLAGS", "not a message number"),  # "$" stands alone (RFC 5182)
    (b"a1 SEARCH RETURN (PARTIAL 1:5) ALL", "result option PARTIAL"),
    (b"a1 FETCH 1 BODY[0.MIME]", "not supported"),
    (b"a1 FETCH 1 BODY[\xff]", "only printable ASCII"),
    (b"a1 FETCH 1 BODY[HEADER.FIELDS]", "needs a list of field names"),
    (b"a1 FETCH 1 BODY[HEADER.FIELDS ()]", "needs a list of field names"),
    (b"a1 FETCH 1 BODY[HEADER.FIELDS (A:B)]", "not a header field name"),
    (b"a1 FETCH 1 BINARY[1.MIME]", "not supported"),
    (b"a1 FETCH 1 BINARY.SIZE[1]<0.5>", "BINARY.SIZE takes no <start.length>"),
    (b"a1 FETCH 1 BINARY[1]<0.0>", "length above 0"),
    (b"a1 FETCH 1 BODY[]<0.0>", "length above 0"),
    (b"a1 FETCH 1 ()", "at least one item"),
    (b"a1 FETCH 1 (FLAGS", "not closed"),
    (b"a1 SEARCH MODSEQ 5", "not supported"),
    (b"a1 SEARCH RETURN MIN ALL", "RETURN needs a list of result options"),
    (b"a1 SEARCH SINCE 1-Foo-2026", "a date is day-month-year"),
    (b"a1 SEARCH LARGER -1", "LARGER needs a number"),
    (b"a1 SEARCH HEADER", "HEADER needs an argument"),
    (b"a1 SEARCH", "at least one criterion"),
    (b"a1 SEARCH UID", "sequence set"),
    (b"a1 SEARCH CHARSET KOI8-R ALL", "CHARSET"),
    (b"a1 STORE 1 +X (\\Seen)", "not supported"),
    (b"a1 STORE 1 +FLAGS ((\\Seen))", "flags are atoms"),
    (b"a1 UID THREAD 1 x", "unknown command UID THREAD"),
    (b"a1 COPY 1", "expected COPY <set> <mailbox>"),
    (b"a1 RENAME x", "expected RENAME <old name> <new name>"),
    (b"a1 APPEND INBOX x", "expected APPEND <mailbox>"),
    (b'a1 APPEND INBOX "a" "b" {1+}\r\nx', "expected APPEND <mailbox>"),
    (b"a1 UID", "UID must be followed"),
    (b"a1 MOVE 1", "MOVE <set> <mailbox>"),
    (b"a1 SELECT INBOX (CONDSTORE)", "not supported"),
    (b"a1 STATUS INBOX (FOO)", "not supported"),
    (b"a1 STATUS INBOX MESSAGES", "must be a list"),
    (b'a1 LIST (FROB) "" *', "LIST selection option FROB is not supported"),
    (b'a1 LIST (RECURSIVEMATCH) "" *', "RECURSIVEMATCH needs another selection option"),
    (b'a1 LIST "" * RETURN (FROB)', "LIST return option FROB is not supported"),
    (b'a1 LIST "" * RETURN CHILDREN', "RETURN needs a list of options"),
    (b'a1 LIST "" * RETURN (STATUS)', "STATUS needs a list of items"),
    (b'a1 LIST "" * RETURN (STATUS ())', "STATUS needs a list of items"),
    (b'a1 LIST "" * RETURN (STATUS (FOO))', "STATUS item FOO is not supported"),
    (b'a1 LIST "" ()', "a list of patterns needs at least one"),
    (b'a1 LIST ""', "LIST [(<options>)] <reference>"),
    (b"a1 AUTHENTICATE PLAIN !!!", "not base64"),
    (b"a1 AUTHENTICATE PLAIN *", "cannot be *"),
    (b"a1 LOGIN \xff pw", "not ASCII"),
    (b"a1 LIST \"\" " + b"(" * 40 + b")" * 40, "nested"),
    (b"a1 SEARCH " + b"NOT " * 40 + b"ALL", "nested"),
])
def test_bad_commands_say_why(line: bytes, why: str) -> None:
    with pytest.raises(ImapSyntaxError, match=re.escape(why)):
        read_command(line)


def test_sequence_sets_read_star_as_the_largest() -> None:
    seq = read_sequence_set(Atom("1:3,7,9:*"))
    assert [n for n in range(1, 12) if seq.contains(n, 10)] == [1, 2, 3, 7, 9, 10]
    # RFC 9051 6.4.8: n:* includes the largest even when n is beyond it.
    assert read_sequence_set(Atom("20:*")).contains(10, 10)
    assert not read_sequence_set(Atom("20:*")).contains(9, 10)
    assert read_sequence_set(Atom("5:2")).contains(3, 10)


def test_tokens() -> None:
    assert tokenize(b'NIL "a b" {4}\r\nx\r\ny (\\Seen (1 2)) BODY[HEADER.FIELDS (A B)]<0.5>') == [
        Atom("NIL"), b"a b", b"x\r\ny", [Atom("\\Seen"), [Atom("1"), Atom("2")]],
        Atom("BODY[HEADER.FIELDS (A B)]<0.5>")]


# -- writing ------------------------------------------------------------------------------


def test_values_are_written_as_the_grammar_wants() -> None:
    assert write_value(None) == b"NIL"
    assert write_value(12) == b"12"
    assert write_value(Atom("\\Seen")) == b"\\Seen"
    assert write_value("a b") == b'"a b"'
    assert write_value('say "hi"') == b'{8}\r\nsay "hi"'
    assert write_value("line\r\nbreak") == b"{11}\r\nline\r\nbreak"
    assert write_value("jö") == b'"j\xc3\xb6"'
    assert write_value(b"raw") == b"{3}\r\nraw"
    assert write_value([Atom("\\Seen"), [None, "x"]]) == b'(\\Seen (NIL "x"))'
    with pytest.raises(ProtocolUsageError):
        write_value(True)
    with pytest.raises(ProtocolUsageError):
        write_value(1.5)


def test_answers_and_fetch_streaming() -> None:
    conn = conn_in()
    conn.receive_data(b"t1 FETCH 1 (UID BODY[])\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.Fetch)
    with pytest.raises(ProtocolUsageError):
        conn.next_event()  # the FETCH is owed an answer
    conn.untagged(1, Atom("EXISTS"))
    conn.fetch_open(1)
    conn.fetch_item("UID", 7)
    conn.fetch_literal("BODY[]", 5)
    with pytest.raises(ProtocolUsageError):
        conn.fetch_close()  # the literal is not complete
    conn.literal_chunk(b"ab")
    conn.literal_chunk(b"cde")
    with pytest.raises(ProtocolUsageError):
        conn.literal_chunk(b"f")
    conn.fetch_close()
    assert conn.pending_output == len(b"* 1 EXISTS\r\n* 1 FETCH (UID 7 BODY[] {5}\r\nabcde)\r\n")
    conn.ok("FETCH done", "ALERT")
    assert conn.data_to_send() == (b"* 1 EXISTS\r\n* 1 FETCH (UID 7 BODY[] {5}\r\nabcde)\r\n"
                                   b"t1 OK [ALERT] FETCH done\r\n")
    with pytest.raises(ProtocolUsageError):
        conn.ok("nothing owed")
    with pytest.raises(ProtocolUsageError):
        conn.untagged_status("OK", "two\r\nlines")


def test_fetch_literal8_for_binary_data() -> None:
    conn = conn_in()
    conn.receive_data(b"t1 FETCH 1 BINARY[1]\r\n")
    assert isinstance(conn.next_event(), ev.Fetch)
    conn.fetch_open(1)
    conn.fetch_literal("BINARY[1]", 3, binary=True)
    conn.literal_chunk(b"a\x00b")
    conn.fetch_close()
    assert conn.data_to_send() == b"* 1 FETCH (BINARY[1] ~{3}\r\na\x00b)\r\n"


# -- the session: states, framing, limits -------------------------------------------------


def test_states_follow_the_table() -> None:
    conn = ImapServerConnection("mx.example")
    assert feed(conn, b"a FETCH 1 FLAGS\r\nb LOGIN u p\r\nc SELECT INBOX\r\n") == [
        ev.Login("b", "u", "p"), ev.Select("c", "INBOX")]
    out = conn.data_to_send()
    assert out.startswith(b"a BAD FETCH is not allowed before you log in\r\n")
    assert conn.state is ImapState.SELECTED
    conn.receive_data(b"d SELECT nowhere\r\n")
    assert isinstance(conn.next_event(), ev.Select)
    conn.no("no such mailbox")
    assert conn.state is ImapState.AUTHENTICATED  # RFC 9051 6.3.2
    assert feed(conn, b"e STORE 1 FLAGS ()\r\nf LOGOUT\r\n") == [ev.Logout("f")]
    assert b"e BAD STORE is not allowed without a selected mailbox" in conn.data_to_send()
    assert conn.state is ImapState.LOGOUT
    conn.receive_data(b"g NOOP\r\n")
    assert conn.next_event() is CLOSED


def test_synchronizing_literal_gets_a_continuation_and_literal_plus_does_not() -> None:
    conn = ImapServerConnection("mx.example")
    conn.receive_data(b"a LOGIN {5}\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"+ go ahead\r\n"
    conn.receive_data(b"alice {2+}\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""  # LITERAL+: no continuation request
    conn.receive_data(b"pw\r\n")
    assert conn.next_event() == ev.Login("a", "alice", "pw")


def test_literal_over_the_limit_is_refused_before_it_is_sent() -> None:
    conn = conn_in(ImapState.NOT_AUTHENTICATED, max_literal=10)
    assert feed(conn, b"a LOGIN {11}\r\n") == []
    assert conn.data_to_send() == b"a BAD literal too large (the limit is 10 octets)\r\n"
    assert feed(conn, b"b LOGIN {10}\r\n0123456789 x\r\n") == [
        ev.Login("b", "0123456789", "x")]


def test_literal_plus_over_the_limit_is_read_and_thrown_away() -> None:
    conn = conn_in(ImapState.NOT_AUTHENTICATED, max_literal=10)
    found = feed(conn, b"a LOGIN {11+}\r\nSELECT INBOX x\r\nb NOOP\r\n")
    assert found == [ev.Noop("b")]
    assert conn.data_to_send().startswith(b"a BAD literal too large")


def test_append_message_past_the_literal_limit_is_spooled_up_to_max_append() -> None:
    """APPEND's message may pass the literal and command limits, up to
    max_append, once logged in; it arrives as a Body (a file once large),
    never in the command's parts. Only the message: a mailbox name that
    long is refused as any literal."""
    conn = conn_in(ImapState.AUTHENTICATED, max_literal=10, max_command=100,
                   max_append=3 * 1024 * 1024)
    message = bytes(range(256)) * 8192 + b"\r\n"  # 2 MiB and more: past the spool threshold
    conn.receive_data(b'a APPEND Drafts (\\Draft) " 1-Feb-2026 10:00:00 +0100" {%d}\r\n'
                      % len(message))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"+ go ahead\r\n"
    for i in range(0, len(message), 65536):
        conn.receive_data(message[i:i + 65536])
        assert conn.next_event() is NEED_DATA
    assert sum(map(len, conn._parts)) < 100
    conn.receive_data(b"\r\n")
    event = conn.next_event()
    assert isinstance(event, ev.Append) and isinstance(event.message, Body)
    assert not event.message.in_memory and event.message.read() == message
    assert (event.mailbox, event.flags, event.date) == (
        "Drafts", ("\\Draft",), " 1-Feb-2026 10:00:00 +0100")
    conn.ok("stored")
    # LITERAL+, and a mailbox name given as a literal first.
    [found] = feed(conn, b"c APPEND {6+}\r\nDrafts {20+}\r\n" + b"m" * 20 + b"\r\n")
    assert isinstance(found, ev.Append) and isinstance(found.message, Body)
    assert found.mailbox == "Drafts" and found.message.read() == b"m" * 20
    conn.data_to_send()
    # Within the literal limit it is bytes, as before.
    assert feed(conn, b"d APPEND INBOX {3+}\r\nabc\r\n") == [ev.Append("d", "INBOX", b"abc")]
    conn.data_to_send()
    # Anything after the message is not an APPEND: BAD, the spool dropped.
    assert feed(conn, b"e APPEND INBOX {20+}\r\n" + b"m" * 20 + b" x\r\nf NOOP\r\n") == [
        ev.Noop("f")]
    assert conn.data_to_send() == b"e BAD nothing may follow APPEND's message\r\nf OK done\r\n"
    # Nor a literal (MULTIAPPEND): read and thrown away.
    assert feed(conn, b"e APPEND INBOX {20+}\r\n" + b"m" * 20 + b" {3+}\r\nabc\r\n"
                b"f APPEND INBOX {20+}\r\n" + b"m" * 20 + b" {30}\r\ng NOOP\r\n") == [
        ev.Noop("g")]
    assert conn.data_to_send() == (b"e BAD nothing may follow APPEND's message\r\n"
                                   b"f BAD nothing may follow APPEND's message\r\n"
                                   b"g OK done\r\n")
    # Not logged in: the literal limit, whatever the command.
    conn = conn_in(ImapState.NOT_AUTHENTICATED, max_literal=10, max_append=1000)
    assert feed(conn, b"a APPEND INBOX {20}\r\n") == []
    assert conn.data_to_send() == b"a BAD literal too large (the limit is 10 octets)\r\n"


def test_append_message_waits_in_the_spool_directory(tmp_path: Path) -> None:
    """A large message is spooled where [store] spool_dir says (here a
    directory that is not there: the write past 1 MiB says so)."""
    conn = conn_in(ImapState.SELECTED, max_append=4 * 1024 * 1024,
                   spool_dir=str(tmp_path / "missing"))
    conn.receive_data(b"a APPEND INBOX {3000000+}\r\n" + b"x" * 2_000_000)
    with pytest.raises(FileNotFoundError):
        conn.next_event()
    conn = conn_in(ImapState.SELECTED, max_append=4 * 1024 * 1024, spool_dir=str(tmp_path))
    [found] = feed(conn, b"a APPEND INBOX {2000000+}\r\n" + b"x" * 2_000_000 + b"\r\n")
    assert isinstance(found, ev.Append) and isinstance(found.message, Body)
    assert not found.message.in_memory and found.message.size == 2_000_000


def test_append_message_over_max_append_is_toobig() -> None:
    """RFC 7889: NO [TOOBIG]; a synchronizing literal is refused before the
    client sends it, a LITERAL+ one read and thrown away."""
    conn = conn_in(ImapState.SELECTED, max_literal=10, max_append=100)
    assert feed(conn, b"a APPEND INBOX {101}\r\n") == []
    assert conn.data_to_send() == b"a NO [TOOBIG] message too large (the limit is 100 octets)\r\n"
    assert feed(conn, b"b append INBOX (\\Seen) {101+}\r\n" + b"x" * 101
                + b"\r\nc NOOP\r\n") == [ev.Noop("c")]
    assert conn.data_to_send().startswith(b"b NO [TOOBIG] message too large")
    [found] = feed(conn, b"d APPEND INBOX {100+}\r\n" + b"x" * 100 + b"\r\n")
    assert isinstance(found, ev.Append) and isinstance(found.message, Body)
    assert found.message.read() == b"x" * 100
    # A limit below the literal limit holds too; other commands keep theirs.
    conn = conn_in(ImapState.SELECTED, max_literal=10, max_append=5)
    assert feed(conn, b"a APPEND INBOX {6}\r\nb LOGIN {6}\r\nsix666 x\r\n") == []
    assert conn.data_to_send() == (b"a NO [TOOBIG] message too large (the limit is 5 octets)\r\n"
                                   b"+ go ahead\r\nb BAD LOGIN is not allowed once you are "
                                   b"logged in\r\n")
    assert feed(conn, b"c APPEND INBOX {5+}\r\nfive5\r\n") == [
        ev.Append("c", "INBOX", b"five5")]
    # Without max_append, APPEND's literals have the literal limit.
    conn = conn_in(ImapState.SELECTED, max_literal=10)
    assert feed(conn, b"a APPEND INBOX {11}\r\n") == []
    assert conn.data_to_send().startswith(b"a NO [TOOBIG] message too large (the limit is 10 ")


def test_line_limit_at_its_boundary() -> None:
    conn = conn_in(ImapState.NOT_AUTHENTICATED, max_line=20)
    line = b"a LOGIN u " + b"p" * 8 + b"\r\n"
    assert len(line) == 20
    assert feed(conn, line) == [ev.Login("a", "u", "p" * 8)]
    conn.data_to_send()
    assert feed(conn, b"b LOGIN u " + b"p" * 9 + b"\r\nc NOOP\r\n") == [ev.Noop("c")]
    assert conn.data_to_send().startswith(b"b BAD line too long (the limit is 20 octets)\r\n")


def test_an_endless_line_is_dropped_as_it_arrives() -> None:
    conn = conn_in(max_line=100)
    conn.receive_data(b"a NOOP ")
    for _ in range(100):
        conn.receive_data(b"x" * 1000)
        assert conn.next_event() is NEED_DATA
        assert len(conn._buf) <= 100
    assert feed(conn, b"\r\nb NOOP\r\n") == [ev.Noop("b")]
    assert conn.data_to_send().startswith(b"a BAD line too long")


def test_overlong_line_announcing_literal_plus_does_not_smuggle_it() -> None:
    conn = conn_in(max_line=30)
    feed(conn, b"a LOGIN " + b"u" * 40 + b" {11+}\r\nb LOGOUT\r\n\r\nc NOOP\r\n")
    assert conn.data_to_send().startswith(b"a BAD line too long")
    assert conn.state is ImapState.SELECTED  # "b LOGOUT\r\n" was literal data


def test_whole_command_limit() -> None:
    conn = conn_in(max_line=100, max_literal=100, max_command=150)
    assert feed(conn, b"a LOGIN {90+}\r\n" + b"u" * 90 + b" {90+}\r\n" + b"p" * 90
                + b"\r\nb NOOP\r\n") == [ev.Noop("b")]
    assert conn.data_to_send().startswith(b"a BAD command too long")


def test_idle_ends_with_done() -> None:
    conn = conn_in()
    conn.receive_data(b"a IDLE\r\n")
    assert conn.next_event() == ev.Idle("a")
    conn.continuation("idling")
    conn.untagged(3, Atom("EXISTS"))
    conn.receive_data(b"done\r\n")
    assert conn.next_event() == ev.IdleDone("a")
    conn.ok("IDLE terminated")
    assert conn.data_to_send() == b"+ idling\r\n* 3 EXISTS\r\na OK IDLE terminated\r\n"
    conn.receive_data(b"b IDLE\r\n")
    assert conn.next_event() == ev.Idle("b")
    conn.continuation("idling")
    conn.receive_data(b"c NOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send().endswith(b"b BAD IDLE ends with DONE; the IDLE is over\r\n")
    assert conn.reply_owed is None


def test_authenticate_continuation() -> None:
    conn = ImapServerConnection("mx.example", tls=True)
    conn.receive_data(b"a AUTHENTICATE PLAIN\r\n")
    assert conn.next_event() == ev.Authenticate("a", "PLAIN")
    conn.continuation(" ")
    conn.receive_data(b"AGFsaWNlAHB3\r\n")
    assert conn.next_event() == ev.AuthenticateData("a", b"\x00alice\x00pw")
    conn.ok("logged in")
    assert conn.state is ImapState.AUTHENTICATED
    conn2 = ImapServerConnection("mx.example")
    conn2.receive_data(b"a AUTHENTICATE PLAIN\r\n*\r\n")
    conn2.next_event()
    conn2.continuation(" ")
    assert conn2.next_event() == ev.AuthenticateData("a", None)


def test_starttls_drops_what_was_sent_before_the_handshake() -> None:
    conn = ImapServerConnection("mx.example")
    conn.receive_data(b"a STARTTLS\r\nb LOGIN u p\r\n")
    assert conn.next_event() == ev.StartTls("a")
    conn.ok("begin TLS now")
    assert conn.tls
    assert conn.next_event() is NEED_DATA  # the injected LOGIN is gone


def test_end_of_input_closes() -> None:
    conn = ImapServerConnection("mx.example")
    conn.receive_data(b"a NOOP\r\nb NO")
    conn.receive_data(b"")
    assert conn.next_event() == ev.Noop("a")
    conn.ok("ok")
    assert conn.next_event() is CLOSED


# -- property: hostile bytes -----------------------------------------------------------

SEEDS = [
    b"a CAPABILITY", b"a LOGIN alice pw", b"a LOGIN {5}\r\nalice {2+}\r\npw", b"a SELECT INBOX",
    b"a FETCH 1:* (FLAGS UID BODY.PEEK[]<0.10>)", b"a UID SEARCH NOT SEEN UID 2:*",
    b"a STORE 1 +FLAGS (\\Seen)", b"a IDLE", b"DONE", b"a AUTHENTICATE PLAIN", b"AGFsaWNlAHB3",
    b'a LIST "" *', b"a STATUS INBOX (MESSAGES)", b"a EXPUNGE", b"a LOGOUT", b"{3+}", b"{99}",
    b"(((", b'"', b"\\", b"a UID", b"*", b"+", b"a FETCH 1 BODY[\xff]",
    b"a FETCH 1 BODY.PEEK[HEADER.FIELDS (FROM {3+}", b"a FETCH 1 BODY[HEADER.FIELDS (\x80)]",
    b"a APPEND INBOX {60}", b"a APPEND INBOX (\\Seen) {90+}", b"a APPEND {5}\r\nINBOX {150}",
]
LINE_ENDS = [b"\r\n", b"\n", b"\r", b""]
HOSTILE = st.one_of(
    st.binary(max_size=600),
    st.lists(st.tuples(st.sampled_from(SEEDS), st.sampled_from(LINE_ENDS)), max_size=20).map(
        lambda parts: b"".join(a + b for a, b in parts)),
)
ANSWER = re.compile(rb"(\* |\+ |[^ \r\n]+ (OK|NO|BAD) )[^\r\n]*\r\n")


@settings(max_examples=400, deadline=None)
@given(HOSTILE, st.lists(st.integers(min_value=1, max_value=50), max_size=10),
       st.integers(0, 2**32))
def test_hostile_bytes_are_only_ever_answered(data: bytes, cuts: list[int], seed: int) -> None:
    rng = random.Random(seed)
    conn = ImapServerConnection("mx.example", max_line=80, max_literal=40, max_command=200,
                                max_append=120)
    conn.state = rng.choice([ImapState.NOT_AUTHENTICATED, ImapState.SELECTED])
    pos, out = 0, b""
    pieces = []
    for cut in cuts:
        pieces.append(data[pos:pos + cut])
        pos += cut
    pieces.append(data[pos:])
    for piece in pieces:
        conn.receive_data(piece)
        for _ in range(10_000):  # never hangs: each call consumes or stops
            event = conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            assert conn.reply_owed is not None or isinstance(event, ev.IdleDone
                                                             | ev.AuthenticateData)
            if isinstance(event, ev.Idle | ev.Authenticate) and rng.random() < 0.5:
                conn.continuation("go on")
            else:
                rng.choice([conn.ok, conn.no, conn.bad])("answered")
        else:
            pytest.fail("next_event never stopped")
        assert len(conn._buf) <= max(len(piece), 80) + 200
        out += conn.data_to_send()
    # Every answer is a whole, well-formed status line, continuation or datum.
    # Literal data is never echoed, so the output is lines only.
    rest = ANSWER.sub(b"", out)
    assert rest == b"", out


@pytest.mark.parametrize(("text", "coded"), [
    ("INBOX", "INBOX"),
    ("A&B", "A&-B"),
    ("Été", "&AMk-t&AOk-"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
    ("☺!", "&Jjo-!"),
    ("a\tb", "a&AAk-b"),  # a control character is not printed as is
])
def test_modified_utf7_both_ways(text: str, coded: str) -> None:
    assert mutf7_encode(text) == coded
    assert mutf7_decode(coded) == text


@pytest.mark.parametrize("name", ["Été", "A&B", "A&Jjo", "&Jjo-&", "a&b&Jjo-", "&A-", "&2D3-"])
def test_modified_utf7_refuses_what_it_is_not(name: str) -> None:
    assert mutf7_decode(name) is None
