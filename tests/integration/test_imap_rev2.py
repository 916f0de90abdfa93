"""IMAP4rev2 (RFC 9051; docs/imap.md "IMAP4rev2") beside IMAP4rev1: SEARCHRES
(RFC 5182), ENABLE IMAP4rev2 and what it changes in the session,
LIST-EXTENDED (RFC 5258) with LIST-STATUS (RFC 5819), and the BINARY
fetches (RFC 3516), over a raw socket against an in-process server, so
that every octet the server says is checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .inprocess import InProcessServer
from .test_imap import BOB, Raw, deliver, make_server

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
