"""APPEND (RFC 9051 6.3.12; docs/imap.md "APPEND"): a message a client writes
in is stored as it was sent, in INBOX, Drafts, Sent, Junk, Trash or a folder
of the user's own, with its flags, its INTERNALDATE and an APPENDUID; it is
no SMDP mail (no decision, no vote, not in POP3); Pending refuses it; the
size limit is the server's message size limit (NO [TOOBIG]); other sessions
see it come. imaplib where it can, a raw socket for exact octets and
literals imaplib does not send.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from smdp.terms import Decision

from .inprocess import InProcessServer
from .test_imap import (
    ALICE,
    BOB,
    IMAP_LISTEN,
    Raw,
    db,
    deliver,
    fetch,
    imap,
    mbsync_rc,
    move,
    status,
    uids,
)
from .test_web import Browser

pytestmark = pytest.mark.own_backend

LIMIT = 100_000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    # The message size limit is APPEND's too: small here, to pass it cheaply.
    s = InProcessServer(tmp_path, "b.example", f"[limits]\nmax_message_size = {LIMIT}\n",
                        listen=IMAP_LISTEN)
    for user in (ALICE, BOB):
        s.add_user(user)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def appenduid(data: list[object]) -> tuple[int, int]:
    found = re.match(rb"\[APPENDUID (\d+) (\d+)\] ", data[0])  # type: ignore[arg-type]
    assert found is not None, data
    return int(found.group(1)), int(found.group(2))


def pop3_count(server: InProcessServer) -> int:
    bob = server.client(BOB)
    text = bob.call(wire.Stat()).text or ""
    bob.quit()
    return int(text.split()[0])


def test_append_to_inbox_gives_back_the_same_octets_and_no_smdp_mail(
        server: InProcessServer) -> None:
    deliver(server, "by smdp")
    c = imap(server)
    other = imap(server)
    assert other.select("INBOX") == ("OK", [b"1"])
    # A third session's SELECT keeps INBOX's listing for sessions to come.
    third = imap(server)
    assert third.select("INBOX") == ("OK", [b"1"])
    third.logout()
    # 8-bit and not UTF-8, no MIME at all: stored as it is.
    message = b"Subject: mine \xe9\xff\r\nX-Note: not MIME\r\n\r\nLine one.\r\n\xfe\xfd\r\n"
    typ, data = c.append("INBOX", "(\\Seen \\Flagged $Label)", '"01-Feb-2026 10:00:00 +0100"',
                         message)
    assert typ == "OK", data
    validity, uid = appenduid(data)
    c.select("INBOX")
    assert c.response("UIDVALIDITY")[1] == [str(validity).encode()]
    assert uids(c) == [1, uid] and uid == 2
    [(head, body), _] = fetch(c, str(uid), "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])",
                              uid=True)
    assert body == message
    assert b"FLAGS (\\Seen \\Flagged)" in head  # type: ignore[operator]
    assert b'INTERNALDATE "01-Feb-2026 09:00:00 +0000"' in head  # type: ignore[operator]
    assert b"RFC822.SIZE %d" % len(message) in head  # type: ignore[operator]
    assert c.search(None, "SUBJECT", "mine") == ("OK", [b"2"])
    # The session that had INBOX selected sees it at its NOOP; a new one at
    # SELECT (the kept listing's signature moved with the new entry).
    typ, data = other.noop()
    assert other.response("EXISTS")[1][-1] == b"2"
    assert imap(server).select("INBOX") == ("OK", [b"2"])
    # Not SMDP mail: POP3's maildrop has the one delivered message only, no
    # vote was counted, and a decision on it is refused.
    assert pop3_count(server) == 1
    [(entry, state, origin, sender)] = db(server, (
        "SELECT m.id, m.state, e.origin_server, e.sender FROM mailbox m "
        "JOIN in_envelopes e ON e.id = m.envelope_id WHERE e.origin_server = 'local:append'"))
    assert (state, origin, sender) == ("appended", "local:append", "")
    assert db(server, f"SELECT COUNT(*) FROM votes WHERE mailbox_id = {entry}") == [(0,)]
    assert db(server, "SELECT COUNT(*) FROM peer_quality WHERE server LIKE 'local%'") == [(0,)]
    bob = server.client(BOB)
    with pytest.raises(ClientError, match="nothing to decide"):
        bob.call(wire.UserDecision(Decision.REJECT_SPAM, int(str(entry))))
    bob.quit()
    # Moving it decides nothing either: to Junk and back, a plain move.
    typ, data = move(c, "2", "Junk")
    assert typ == "OK", data
    assert db(server, f"SELECT state FROM mailbox WHERE id = {entry}") == [
        ("appended",)]
    c.select("Junk")
    assert move(c, "1", "INBOX")[0] == "OK"
    c.select("INBOX")
    typ, data = move(c, "2", '"Pending/Reject as spammer"')
    assert typ == "NO" and b"[CANNOT]" in data[0]
    # Appended to the selected mailbox: EXISTS at once (RFC 9051 6.3.12).
    c.response("EXISTS")
    assert c.append("INBOX", None, None, b"Subject: two\r\n\r\n2\r\n")[0] == "OK"
    assert c.response("EXISTS")[1] == [b"3"]
    c.logout()
    other.logout()


def test_append_to_drafts_folders_trash_junk_and_sent(server: InProcessServer) -> None:
    bob = server.client(BOB)
    bob.submit([ALICE], b"Subject: to alice\r\n\r\nHello Alice.\r\n")
    bob.quit()
    # A folder "Drafts" the user created before Drafts was the server's.
    con = sqlite3.connect(server.config.store_path, timeout=10)
    with con:
        con.execute("INSERT INTO imap_folders (user_id, name) SELECT id, 'Drafts' FROM users "
                    "WHERE main_address = ?", (BOB,))
    con.close()
    c = imap(server)
    assert [line for line in c.list()[1] if line.endswith(b'"Drafts"')] == [  # type: ignore[union-attr]
        b'(\\HasNoChildren \\Drafts \\Subscribed) "/" "Drafts"']
    typ, data = c.delete("Drafts")
    assert typ == "NO" and data[0].startswith(b"[CANNOT] Drafts is this server's own")
    assert c.create("Mine")[0] == "OK"
    sent_before = status(c, "Sent")["MESSAGES"]
    assert sent_before == 1  # the summary of what Bob sent
    copies = {}
    for mailbox in ("Drafts", "Mine", "Trash", "Junk", "Sent"):
        octets = f"Subject: for {mailbox}\r\n\r\nText.\r\n".encode()
        typ, data = c.append(mailbox, "(\\Draft)" if mailbox == "Drafts" else None, None,
                             octets)
        assert typ == "OK", (mailbox, data)
        copies[mailbox] = (appenduid(data)[1], octets)
    for mailbox, (uid, octets) in copies.items():
        assert status(c, mailbox)["MESSAGES"] == (2 if mailbox == "Sent" else 1), mailbox
        c.select(mailbox)
        [(head, body), _] = fetch(c, str(uid), "(FLAGS BODY.PEEK[])", uid=True)
        assert body == octets, mailbox
        assert (b"\\Draft" in head) is (mailbox == "Drafts")  # type: ignore[operator]
    assert pop3_count(server) == 0  # POP3 sees none of them
    # Sent: the summary and the client's copy side by side; the copy may
    # go (flags, EXPUNGE), the summary stays.
    c.select("Sent")
    assert len(uids(c)) == 2
    assert c.uid("STORE", str(copies["Sent"][0]), "+FLAGS", "(\\Deleted)")[0] == "OK"
    assert c.expunge()[0] == "OK"
    assert len(uids(c)) == 1 and status(c, "Sent")["MESSAGES"] == 1
    # A draft moved to a folder, then to INBOX; not to a decision folder.
    c.select("Drafts")
    assert move(c, "1", "Mine")[0] == "OK"
    c.select("Mine")
    typ, data = move(c, "1", '"Pending/Accept and authorize"')
    assert typ == "NO" and b"[CANNOT]" in data[0] and b"no sender's server" in data[0]
    assert move(c, "1", "INBOX")[0] == "OK"
    assert status(c, "INBOX")["MESSAGES"] == 1 and status(c, "Mine")["MESSAGES"] == 1
    # COPY of a client's message copies, flags and all (SMDP mail's moves).
    c.select("Trash")
    assert c.store("1", "+FLAGS", "\\Flagged")[0] == "OK"
    assert c.copy("1", "Mine")[0] == "OK"
    assert c.noop()[0] == "OK"
    assert status(c, "Trash")["MESSAGES"] == 1 and status(c, "Mine")["MESSAGES"] == 2
    c.select("Mine")
    [(head, body), _] = fetch(c, "2", "(FLAGS BODY.PEEK[])")
    assert body == copies["Trash"][1] and b"\\Flagged" in head  # type: ignore[operator]
    # Pending and a mailbox that does not exist.
    for mailbox, why in (("Pending", b"[CANNOT] Pending holds only envelopes other servers"),
                         ("Pending/Reject as spammer", b"[CANNOT] Pending/Reject as spammer"),
                         ("Nope", b"[TRYCREATE] no mailbox named 'Nope'")):
        typ, data = c.append(f'"{mailbox}"', None, None, b"Subject: x\r\n\r\nx\r\n")
        assert typ == "NO" and data[0].startswith(why), (mailbox, data)
    c.logout()


def test_append_limits_literals_and_dates(server: InProcessServer) -> None:
    raw = Raw(server.imap_port)
    raw.send(b"a CAPABILITY\r\n")
    assert b" APPENDLIMIT=%d" % LIMIT in raw.until(b"a")[0]
    raw.send(b"b APPEND INBOX {70000}\r\n")  # not logged in: the codec's literal limit
    assert raw.until(b"b") == [b"b BAD literal too large (the limit is 65536 octets)\r\n"]
    raw.send(b"c LOGIN bob@b.example secret\r\n")
    assert raw.until(b"c")[-1].startswith(b"c OK")
    # Over the limit: refused before it is sent, or read and thrown away.
    raw.send(b"d APPEND INBOX {%d}\r\n" % (LIMIT + 1))
    assert raw.until(b"d") == [b"d NO [TOOBIG] message too large (the limit is %d octets)\r\n"
                               % LIMIT]
    raw.send(b"e APPEND INBOX {%d+}\r\n" % (LIMIT + 1) + b"x" * (LIMIT + 1) + b"\r\n")
    assert raw.until(b"e")[-1].startswith(b"e NO [TOOBIG]")
    # At the limit, past the codec's 64 KiB literal limit: a bare LF, a NUL
    # and 8-bit octets, kept exactly.
    message = (b"Subject: big\n\nbare LF\n\x00\xff" + b"y" * LIMIT)[:LIMIT]
    raw.send(b'f APPEND INBOX (\\Answered) " 3-Mar-2026 23:30:00 -0100" {%d}\r\n' % LIMIT)
    assert raw.line() == b"+ go ahead\r\n"
    raw.send(message + b"\r\n")
    answer = raw.until(b"f")[-1]
    found = re.match(rb"f OK \[APPENDUID \d+ (\d+)\] APPEND completed\r\n", answer)
    assert found is not None, answer
    c = imap(server)
    c.select("INBOX")
    [(head, body), _] = fetch(c, found.group(1).decode(), "(FLAGS INTERNALDATE BODY.PEEK[])",
                              uid=True)
    assert body == message
    assert b'INTERNALDATE "04-Mar-2026 00:30:00 +0000"' in head  # type: ignore[operator]
    assert b"FLAGS (\\Answered)" in head  # type: ignore[operator]
    # LITERAL+, and a date that is none.
    raw.send(b"g APPEND INBOX {4+}\r\nabc\n\r\n")
    assert raw.until(b"g")[-1].startswith(b"g OK [APPENDUID")
    raw.send(b'h APPEND INBOX "31-Feb-2026 10:00:00 +0000" {1+}\r\nx\r\n')
    assert raw.until(b"h")[-1].startswith(b"h BAD '31-Feb-2026 10:00:00 +0000' is not a date")
    raw.send(b"i NOOP\r\n")
    assert raw.until(b"i")[-1].startswith(b"i OK")
    raw.close()
    assert status(c, "INBOX")["MESSAGES"] == 2
    c.logout()


def test_a_message_arriving_slowly_is_timed_as_data_not_as_a_line(tmp_path: Path) -> None:
    """APPEND's message may take longer than [abuse] command_timeout, as
    long as it keeps min_data_rate (as SMTP's DATA): a 25 MiB message on a
    slow line is not cut off as a command line arriving too slowly. The
    line after it is a line again."""
    s = InProcessServer(tmp_path, "b.example",
                        "[abuse]\ncommand_timeout = 0.5\ndata_grace = 3\n", listen=IMAP_LISTEN)
    s.add_user(BOB)
    s.start()
    try:
        raw = Raw(s.imap_port)
        raw.send(b"a LOGIN bob@b.example secret\r\n")
        assert raw.until(b"a")[-1].startswith(b"a OK")
        raw.send(b"b APPEND INBOX {80000+}\r\n")
        for _ in range(8):  # 1.6 s for the message: past command_timeout
            time.sleep(0.2)
            raw.send(b"z" * 10000)
        raw.send(b"\r\n")
        assert raw.until(b"b")[-1].startswith(b"b OK [APPENDUID")
        raw.send(b"c NOOP")  # a line again: cut off after command_timeout
        assert raw.line() == b"* BYE command line arriving too slowly, closing\r\n"
        raw.close()
    finally:
        s.stop()


def test_mbsync_pushes_a_draft_from_a_maildir(server: InProcessServer, tmp_path: Path) -> None:
    """A stock client's APPEND: mbsync (Debian package isync) pushing a
    Maildir's draft to Drafts, its flags with it (it uses UIDPLUS's
    APPENDUID to learn the new UID); a second run pushes nothing twice."""
    mbsync = shutil.which("mbsync")
    if mbsync is None:
        pytest.skip("mbsync (Debian package isync) is not installed")
    maildir = tmp_path / "mail"
    for sub in ("cur", "new", "tmp"):
        (maildir / "Drafts" / sub).mkdir(parents=True)
    (maildir / "Drafts" / "cur" / "1.local:2,DS").write_bytes(
        b"From: bob@b.example\nSubject: half written\n\nTo be continued.\n")
    rc = tmp_path / "mbsyncrc"
    rc.write_text(mbsync_rc(server, maildir) + """
Channel drafts
Far :remote:Drafts
Near :local:Drafts
Sync Push
SyncState *
""")
    for _ in range(2):
        done = subprocess.run([mbsync, "-c", str(rc), "drafts"], capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    c = imap(server)
    assert c.select("Drafts") == ("OK", [b"1"])
    [(head, body), _] = fetch(c, "1", "(FLAGS BODY.PEEK[])")
    assert b"\\Draft" in head and b"\\Seen" in head  # type: ignore[operator]
    assert re.sub(rb"X-TUID: .*\r\n", b"", body) == (  # type: ignore[arg-type]
        b"From: bob@b.example\r\nSubject: half written\r\n\r\nTo be continued.\r\n")
    c.logout()


def test_appended_messages_are_not_envelopes_for_envs_all_or_the_web_app(
        tmp_path: Path) -> None:
    """A draft or a client's copy in Sent is no envelope: ENVS ALL on the
    user port and the web app's "all" list leave it out (protocol.md 12.5,
    api.md), while the delivered message stays listed."""
    s = InProcessServer(tmp_path, "b.example",
                        listen=IMAP_LISTEN + 'web = "127.0.0.1:0"\n')
    for user in (ALICE, BOB):
        s.add_user(user)
    s.start()
    try:
        delivered = deliver(s, "by smdp")
        c = imap(s)
        for mailbox in ("Drafts", "Sent", "INBOX"):
            assert c.append(mailbox, None, None, b"Subject: mine\r\n\r\nx\r\n")[0] == "OK"
        c.logout()
        assert len(db(s, "SELECT id FROM mailbox WHERE state = 'appended'")) == 3
        bob = s.client(BOB)
        lines = bob.call(wire.Envs(True)).lines or []
        assert [line.split()[:2] for line in lines] == [[str(delivered), "accepted"]]
        paged = bob.call(wire.Envs(True, limit=5)).lines or []
        assert [line.split()[0] for line in paged] == [str(delivered)]
        bob.quit()
        assert s.web_port is not None
        browser = Browser(s.web_port)
        browser.login(BOB)
        status, _, body = browser.request("GET", "/api/envelopes?state=all")
        assert status == 200, body
        assert [e["id"] for e in body["envelopes"]] == [delivered]
    finally:
        s.stop()
