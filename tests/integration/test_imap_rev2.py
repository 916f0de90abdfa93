"""IMAP4rev2 (RFC 9051; docs/imap.md "IMAP4rev2") beside IMAP4rev1: SEARCHRES
(RFC 5182), ENABLE IMAP4rev2 and what it changes in the session,
LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819), and the BINARY
fetches (RFC 3516), over a raw socket against an in-process server, so
that every octet the server says is checked.
"""

from __future__ import annotations

import base64
import quopri
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .inprocess import InProcessServer
from .test_imap import ALICE, BOB, Raw, deliver, make_server

pytestmark = pytest.mark.own_backend


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    s = make_server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


class Session(Raw):
    """A raw client that numbers its own tags and gives each answer's lines."""

    def __init__(self, server: InProcessServer) -> None:
        super().__init__(server.imap_port)
        self.n = 0
        assert self.ok(f"LOGIN {BOB} secret")[-1].startswith(b"t1 OK")

    def __call__(self, command: str | bytes) -> list[bytes]:
        self.n += 1
        tag = b"t%d" % self.n
        self.send(tag + b" " + (command.encode() if isinstance(command, str) else command)
                  + b"\r\n")
        return self.until(tag)

    def ok(self, command: str | bytes) -> list[bytes]:
        lines = self(command)
        assert lines[-1].startswith(b"t%d OK" % self.n), lines
        return lines


def untagged(lines: list[bytes], word: bytes) -> list[bytes]:
    """The untagged responses of ``lines`` whose first word (after a number) is ``word``."""
    return [line.rstrip(b"\r\n") for line in lines
            if re.match(rb"\* (\d+ )?" + re.escape(word) + rb"\b", line)]


# -- SEARCHRES ----------------------------------------------------------------------


def test_searchres_saves_a_result_for_later_commands(server: InProcessServer) -> None:
    for subject in ("one", "two", "three", "four"):
        deliver(server, subject)
    c = Session(server)
    assert b"SEARCHRES" in c.ok("CAPABILITY")[0].split()
    c.ok("SELECT INBOX")
    # "$" before any SAVE is empty: nothing fetched, no BAD.
    assert untagged(c.ok("FETCH $ FLAGS"), b"FETCH") == []
    assert untagged(c.ok("UID SEARCH UID $"), b"SEARCH") == [b"* SEARCH"]
    # SAVE alone: no ESEARCH response (RFC 5182 2.1).
    lines = c.ok("SEARCH RETURN (SAVE) OR SUBJECT two SUBJECT four")
    assert untagged(lines, b"ESEARCH") == [] and untagged(lines, b"SEARCH") == []
    assert untagged(c.ok("FETCH $ (FLAGS)"), b"FETCH") == [
        b"* 2 FETCH (FLAGS ())", b"* 4 FETCH (FLAGS ())"]
    uids = [int(u) for u in re.findall(rb"UID (\d+)", b"".join(c.ok("UID FETCH $ UID")))]
    assert len(uids) == 2
    c.ok("STORE $ +FLAGS.SILENT (\\Flagged)")
    assert untagged(c.ok("SEARCH FLAGGED"), b"SEARCH") == [b"* SEARCH 2 4"]
    assert untagged(c.ok("SEARCH $ NOT SUBJECT four"), b"SEARCH") == [b"* SEARCH 2"]
    # The saved result follows its messages when others are expunged.
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    c.ok("EXPUNGE")
    assert untagged(c.ok("UID STORE $ FLAGS (\\Seen)"), b"FETCH") == [
        b"* 1 FETCH (UID %d FLAGS (\\Seen))" % uids[0],
        b"* 3 FETCH (UID %d FLAGS (\\Seen))" % uids[1]]
    # SAVE with MIN (and nothing else but MAX) keeps just that message.
    lines = c.ok("SEARCH RETURN (SAVE MIN) ALL")
    assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\) MIN 1', untagged(lines, b"ESEARCH")[0])
    assert untagged(c.ok("FETCH $ FLAGS"), b"FETCH") == [b"* 1 FETCH (FLAGS (\\Seen))"]
    lines = c.ok("UID SEARCH RETURN (SAVE COUNT) ALL")
    assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\) UID COUNT 3',
                        untagged(lines, b"ESEARCH")[0])
    assert len(untagged(c.ok("FETCH $ FLAGS"), b"FETCH")) == 3
    # COPY, MOVE and UID EXPUNGE take "$" too.
    c.ok("CREATE Keep")
    c.ok("SEARCH RETURN (SAVE) SUBJECT three")
    c.ok("COPY $ Keep")
    c.ok("SEARCH RETURN (SAVE) SUBJECT four")
    assert untagged(c.ok("MOVE $ Keep"), b"EXPUNGE") == [b"* 3 EXPUNGE"]
    assert untagged(c.ok("STATUS Keep (MESSAGES)"), b"STATUS") == [
        b'* STATUS "Keep" (MESSAGES 2)']
    c.ok("SEARCH RETURN (SAVE) SUBJECT two")
    c.ok("STORE $ +FLAGS.SILENT (\\Deleted)")
    assert untagged(c.ok("UID EXPUNGE $"), b"EXPUNGE") == [b"* 1 EXPUNGE"]
    # SELECT forgets the saved result.
    c.ok("SEARCH RETURN (SAVE) ALL")
    c.ok("SELECT Keep")
    assert untagged(c.ok("FETCH $ FLAGS"), b"FETCH") == []
    c.ok("SEARCH RETURN (SAVE) ALL")
    c.ok("UNSELECT")
    c.ok("EXAMINE Keep")
    assert untagged(c.ok("FETCH $ FLAGS"), b"FETCH") == []
    c.close()


# -- ENABLE IMAP4rev2 ---------------------------------------------------------------


def test_enable_imap4rev2_changes_the_session_and_rev1_keeps_its_own(
        server: InProcessServer) -> None:
    deliver(server, "one")
    deliver(server, "two")
    rev1, c = Session(server), Session(server)
    capabilities = c.ok("CAPABILITY")[0].split()
    assert capabilities[2:4] == [b"IMAP4rev1", b"IMAP4rev2"]
    assert untagged(c.ok("ENABLE IMAP4rev2"), b"ENABLED") == [b"* ENABLED IMAP4rev2"]
    assert untagged(c.ok("ENABLE IMAP4rev2 CONDSTORE"), b"ENABLED") == [b"* ENABLED"]
    lines = c.ok("SELECT INBOX")
    assert untagged(lines, b"RECENT") == [] and not any(b"[UNSEEN" in x for x in lines)
    assert untagged(lines, b"LIST") == [b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"']
    assert untagged(lines, b"EXISTS") == [b"* 2 EXISTS"]
    # Every SEARCH is answered with ESEARCH (RFC 9051 6.4.4), UID SEARCH too.
    assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\) ALL 1:2',
                        untagged(c.ok("SEARCH ALL"), b"ESEARCH")[0])
    lines = c.ok("UID SEARCH SUBJECT nothing")
    assert re.fullmatch(rb'\* ESEARCH \(TAG "t\d+"\) UID', untagged(lines, b"ESEARCH")[0])
    assert untagged(lines, b"SEARCH") == []
    # [CLOSED] when a SELECT closes the mailbox, before the new one's data,
    # and when the new one does not exist.
    lines = c.ok("EXAMINE Trash")
    assert b"[CLOSED]" in lines[0]
    lines = c("SELECT Nowhere")
    assert b"[CLOSED]" in lines[0] and b"NO [NONEXISTENT]" in lines[-1]
    assert not any(b"[CLOSED]" in x for x in c.ok("SELECT INBOX"))  # nothing was selected
    # An IMAP4rev1 session is as it was.
    lines = rev1.ok("SELECT INBOX")
    assert untagged(lines, b"RECENT") == [b"* 0 RECENT"] and untagged(lines, b"LIST") == []
    assert any(b"[UNSEEN 1]" in x for x in lines)
    assert not any(b"[CLOSED]" in x for x in rev1.ok("SELECT Trash"))
    rev1.ok("SELECT INBOX")
    assert untagged(rev1.ok("SEARCH ALL"), b"SEARCH") == [b"* SEARCH 1 2"]
    c.close()
    rev1.close()


def test_rev2_mailbox_names_are_utf8_and_rev1_ones_modified_utf7(
        server: InProcessServer) -> None:
    deliver(server, "one")
    rev1, c = Session(server), Session(server)
    c.ok("ENABLE IMAP4rev2")
    rev1.ok('CREATE "&AMk-t&AOk-"')  # "Été", as an IMAP4rev1 client names it
    c.ok('CREATE "Entwürfe/日本語"'.encode())
    rev1.ok('CREATE "Raw€"'.encode())  # raw UTF-8 from a rev1 client: kept as sent
    c.ok('CREATE "A&B"')

    def names(session: Session) -> list[bytes]:
        return [re.sub(rb'^\* LIST \([^)]*\) "/" ', b"", line)
                for line in untagged(session.ok('LIST "" "*"'), b"LIST")
                if not line.endswith((b'"Pending"', b'"Junk"', b'"Trash"', b'"Sent"',
                                      b'"Drafts"', b'"INBOX"', b'authorize"', b'spammer"'))]

    assert sorted(names(rev1)) == sorted([b'"&AMk-t&AOk-"', b'"Entw&APw-rfe"',
                                          b'"Entw&APw-rfe/&ZeVnLIqe-"', b'"Raw\xe2\x82\xac"',
                                          b'"A&-B"'])
    assert sorted(n.decode() for n in names(c)) == sorted(
        ['"Été"', '"Entwürfe"', '"Entwürfe/日本語"', '"Raw€"', '"A&B"'])
    assert untagged(c.ok(b'LIST "" "Entw%rfe/%"'), b"LIST") == [
        '* LIST (\\HasNoChildren \\Subscribed) "/" "Entwürfe/日本語"'.encode()]
    # Messages moved by one session are where the other looks for them.
    rev1.ok("SELECT INBOX")
    rev1.ok('MOVE 1 "&AMk-t&AOk-"')
    assert untagged(c.ok('STATUS "Été" (MESSAGES)'.encode()), b"STATUS") == [
        '* STATUS "Été" (MESSAGES 1)'.encode()]
    lines = c.ok('SELECT "Été"'.encode())
    assert untagged(lines, b"LIST")[0].endswith('"/" "Été"'.encode())
    assert untagged(lines, b"EXISTS") == [b"* 1 EXISTS"]
    c.ok('MOVE 1 "Raw€"'.encode())
    c.ok('RENAME "Entwürfe" "Brouillons"'.encode())
    c.ok('DELETE "A&B"')
    assert sorted(names(rev1)) == sorted([b'"&AMk-t&AOk-"', b'"Brouillons"',
                                          b'"Brouillons/&ZeVnLIqe-"', b'"Raw\xe2\x82\xac"'])
    assert untagged(rev1.ok('STATUS "Raw€" (MESSAGES)'.encode()), b"STATUS") == [
        '* STATUS "Raw€" (MESSAGES 1)'.encode()]
    c.ok('SUBSCRIBE "Brouillons/日本語"'.encode())
    c.close()
    rev1.close()


# -- LIST-EXTENDED and LIST-STATUS --------------------------------------------------


def test_list_extended_selection_return_options_and_status(server: InProcessServer) -> None:
    deliver(server, "one")
    deliver(server, "two")
    c = Session(server)
    c.ok("CREATE Work/2026")
    c.ok("SELECT INBOX")
    c.ok("STORE 1 +FLAGS (\\Seen)")

    def listed(command: str) -> list[bytes]:
        lines = c.ok(command)
        return [line for line in (untagged(lines, b"LIST") + untagged(lines, b"STATUS"))]

    # Several patterns, each mailbox once, in the server's order.
    assert listed('LIST "" ("Sent" "INBOX" "" "IN*")') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"']
    # SPECIAL-USE selection: only the mailboxes that have one (RFC 6154 5.1).
    assert [line.rsplit(b" ", 1)[1] for line in listed('LIST (SPECIAL-USE) "" "*"')] == [
        b'"Junk"', b'"Trash"', b'"Drafts"', b'"Sent"']
    # SUBSCRIBED and REMOTE: every mailbox (all subscribed, none remote);
    # return options ask for what is always sent.
    everything = listed('LIST "" "*"')
    assert listed('LIST (SUBSCRIBED REMOTE) "" "*" RETURN (SUBSCRIBED CHILDREN SPECIAL-USE)'
                  ) == everything
    assert all(b"\\Subscribed" in line for line in everything) and len(everything) == 10
    # RECURSIVEMATCH: CHILDINFO where inferiors are left out by the pattern.
    assert listed('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Pending" ("CHILDINFO" ("SUBSCRIBED"))',
        b'* LIST (\\HasNoChildren \\Junk \\Subscribed) "/" "Junk"',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" "Trash"',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" "Drafts"',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"',
        b'* LIST (\\HasChildren \\Subscribed) "/" "Work" ("CHILDINFO" ("SUBSCRIBED"))']
    assert listed('LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work*"') == [
        b'* LIST (\\HasChildren \\Subscribed) "/" "Work"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Work/2026"']
    # LIST-STATUS (RFC 5819): a STATUS response after each LIST response.
    assert listed('LIST "" ("INBOX" "Work/%") RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'* LIST (\\HasNoChildren \\Subscribed) "/" "Work/2026"',
        b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 3)',
        b'* STATUS "Work/2026" (MESSAGES 0 UNSEEN 0 UIDNEXT 1)']
    lines = c.ok('LIST "" ("INBOX") RETURN (STATUS (MESSAGES))')
    assert [line[:8] for line in lines[:2]] == [b"* LIST (", b"* STATUS"]  # each after its LIST
    # LSUB as it was: no \Subscribed, as every mailbox it lists is.
    assert untagged(c.ok('LSUB "" "INBOX"'), b"LSUB") == [
        b'* LSUB (\\HasNoChildren) "/" "INBOX"']
    # The hierarchy delimiter still answers an empty pattern; options unknown are BAD.
    assert listed('LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
    assert c('LIST (FROB) "" "*"')[-1].startswith(b"t%d BAD " % c.n)
    c.close()


# -- BINARY -------------------------------------------------------------------------

ATTACHMENT = bytes(range(256)) * 400 + b"\x00the end"  # 102 KB with NULs: several chunks
TEXT = ("Grüße, café = naïve. " * 200).encode() + b"\r\nend\r\n"


def mime_message() -> bytes:
    qp = quopri.encodestring(TEXT.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    coded = base64.encodebytes(ATTACHMENT).replace(b"\n", b"\r\n")
    return (f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: Quoted-Printable\r\n\r\n").encode() + qp + (
        b"\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n") + coded + (
        b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain 7bit\r\n"
        b"--b1\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\nend\r\n--b1--\r\n")


def literal(c: Session, command: str) -> tuple[bytes, bytes, list[bytes]]:
    """The first literal of a FETCH answer: what announced it (``{n}`` or
    ``~{n}``), its octets, and the lines after it."""
    c.n += 1
    tag = b"t%d" % c.n
    c.send(tag + b" " + command.encode() + b"\r\n")
    head = c.line()
    found = re.search(rb"(~?\{(\d+)\})\r\n$", head)
    assert found is not None, head
    data = c.file.read(int(found.group(2)))
    return head, data, c.until(tag)


def test_binary_fetches_undo_the_transfer_encoding(server: InProcessServer) -> None:
    deliver(server, "parts", raw=mime_message())
    c = Session(server)
    c.ok("EXAMINE INBOX")
    # Quoted-printable undone; a plain literal, as there is no NUL.
    head, data, rest = literal(c, "FETCH 1 BINARY.PEEK[1]")
    assert head.endswith(b"BINARY[1] {%d}\r\n" % len(TEXT)) and data == TEXT
    assert rest[-1].startswith(b"t%d OK" % c.n)
    # base64 undone, NULs in it: a literal8.
    head, data, rest = literal(c, "FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[2])")
    assert head == b"* 1 FETCH (BINARY.SIZE[2] %d BINARY[2] ~{%d}\r\n" % (
        len(ATTACHMENT), len(ATTACHMENT))
    assert data == ATTACHMENT
    # A slice of the decoded octets; one without a NUL is a plain literal.
    head, data, _ = literal(c, "FETCH 1 BINARY.PEEK[2]<65.10>")
    assert head.endswith(b"BINARY[2]<65> {10}\r\n") and data == ATTACHMENT[65:75]
    head, data, _ = literal(c, "UID FETCH 1 BINARY.PEEK[2]<102395.100>")
    assert head.endswith(b"BINARY[2]<102395> ~{13}\r\n") and data == ATTACHMENT[-13:]
    # 7bit as it is; a part the message lacks is empty; [] the whole message.
    assert untagged(c.ok("FETCH 1 (BINARY.SIZE[3] BINARY.SIZE[9])"), b"FETCH") == [
        b"* 1 FETCH (BINARY.SIZE[3] 10 BINARY.SIZE[9] 0)"]
    _, data, _ = literal(c, "FETCH 1 BINARY.PEEK[3]")
    assert data == b"plain 7bit"
    _, whole, _ = literal(c, "FETCH 1 BODY.PEEK[]")
    head, data, _ = literal(c, "FETCH 1 BINARY.PEEK[]")
    assert data == whole and head.endswith(b" {%d}\r\n" % len(whole))
    # An encoding it cannot undo: NO [UNKNOWN-CTE], nothing of that message said.
    lines = c("FETCH 1 (FLAGS BINARY.PEEK[4])")
    assert untagged(lines, b"FETCH") == [] and b"NO [UNKNOWN-CTE]" in lines[-1]
    assert b"NO [UNKNOWN-CTE]" in c("FETCH 1 BINARY.SIZE[4]")[-1]
    # BINARY without PEEK sets \Seen (not in EXAMINE); BINARY.PEEK did not.
    assert untagged(c.ok("FETCH 1 FLAGS"), b"FETCH") == [b"* 1 FETCH (FLAGS ())"]
    c.ok("SELECT INBOX")
    _, data, rest = literal(c, "FETCH 1 BINARY[3]")
    assert data == b"plain 7bit" and b"FLAGS (\\Seen)" in b"".join(rest)
    c.close()
