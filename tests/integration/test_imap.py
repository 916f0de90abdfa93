"""The IMAP port (issue 14; docs/imap.md) driven by Python's imaplib and by a
raw socket where imaplib cannot go (IDLE, hostile input), against an
in-process server: login refused without TLS and with a wrong password,
LIST, SELECT, FETCH of an accepted message byte for byte what POP3 RETR
gives, flags, UIDs and UIDVALIDITY across a restart, EXPUNGE, IDLE woken by
a newly accepted message, bad input answered BAD with a sentence, and
mbsync (isync) synchronising INBOX and Pending into a Maildir when it is
installed.
"""

from __future__ import annotations

import base64
import imaplib
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.protocol import user as wire
from smdp.terms import Decision

from .harness import Pki
from .inprocess import InProcessServer, peered

ALICE, BOB = "alice@b.example", "bob@b.example"
IMAP_LISTEN = 'imap = "127.0.0.1:0"\n'

# The in-process server's store is SQLite whatever the pass (as in
# test_submission_port.py); the store's IMAP methods run on both backends in
# tests/unit/test_store.py.
pytestmark = pytest.mark.own_backend


def make_server(root: Path, *, plaintext_login: bool = True, tls: bool = False
                ) -> InProcessServer:
    listen, extra = IMAP_LISTEN, ""
    if tls:
        listen += 'imap_tls = "127.0.0.1:0"\n'
        extra = "[tls]\n" + Pki(root).tls("smdp.b.example")
    s = InProcessServer(root, "b.example", extra, listen=listen, plaintext_login=plaintext_login)
    for user in (ALICE, BOB):
        s.add_user(user)
    return s


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    s = make_server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def wait_for(check: object, what: str, timeout: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def deliver(server: InProcessServer, subject: str, text: str = "Hello Bob.",
            raw: bytes | None = None) -> int:
    """Alice sends Bob a message on the same server (``raw``, or one made
    of ``subject`` and ``text``) and Bob accepts it (over the user port);
    the entry id once the body is in Bob's mailbox."""
    entry = announce(server, subject, text, raw)
    bob = server.client(BOB)
    bob.call(wire.UserDecision(Decision.ACCEPT, entry))
    bob.quit()

    def accepted() -> bool:
        bob = server.client(BOB)
        lines = bob.call(wire.Envs(True)).lines or []
        bob.quit()
        return any(line.startswith(f"{entry} accepted ") for line in lines)

    wait_for(accepted, "the body to be pulled")
    return entry


def announce(server: InProcessServer, subject: str, text: str = "Hello Bob.",
             raw: bytes | None = None) -> int:
    """Alice sends Bob a message; its entry id once its envelope waits in Bob's mailbox."""
    alice = server.client(ALICE)
    alice.submit([BOB], raw or f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nSubject: {subject}\r\n"
                               f"Message-ID: <{subject.replace(' ', '.')}@b.example>\r\n\r\n"
                               f"{text}\r\n".encode())
    alice.quit()
    found: list[str] = []

    def pending() -> bool:
        bob = server.client(BOB)
        found[:] = [line for line in bob.call(wire.Envs(False)).lines or []
                    if line.endswith(subject)]
        bob.quit()
        return bool(found)

    wait_for(pending, "the envelope")
    return int(found[0].split()[0])


def mbsync_rc(server: InProcessServer, maildir: Path) -> str:
    """An mbsync configuration's account and stores for Bob at ``server``
    and a Maildir at ``maildir``, in the clear on loopback; the caller adds
    its channels."""
    return f"""IMAPAccount smdp
Host 127.0.0.1
Port {server.imap_port}
User {BOB}
Pass secret
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account smdp

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim
"""


def imap(server: InProcessServer, user: str = BOB) -> imaplib.IMAP4:
    assert server.imap_port is not None
    c = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    c.login(user, "secret")
    return c


def retr(server: InProcessServer, n: int) -> bytes:
    bob = server.client(BOB)
    body = bob.call(wire.Retr(n)).body or b""
    bob.quit()
    return body


def fetch(c: imaplib.IMAP4, which: str, items: str, *, uid: bool = False) -> list[object]:
    typ, data = c.uid("FETCH", which, items) if uid else c.fetch(which, items)
    assert typ == "OK", data
    return list(data)


class Raw:
    """A line-level client for what imaplib cannot send."""

    def __init__(self, port: int | None) -> None:
        assert port is not None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.line().startswith(b"* OK ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        return self.file.readline()

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            assert line, f"connection closed; so far {lines}"
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- login ----------------------------------------------------------------------


def test_login_refused_without_tls_and_with_a_wrong_password(tmp_path: Path) -> None:
    s = make_server(tmp_path, plaintext_login=False, tls=True)
    s.start()
    try:
        assert s.imap_port is not None and s.imap_tls_port is not None
        c = imaplib.IMAP4("127.0.0.1", s.imap_port, timeout=10)
        assert "LOGINDISABLED" in c.capabilities and "STARTTLS" in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            c.login(BOB, "secret")
        c.starttls(ssl_context=client_context(tmp_path))
        assert "AUTH=PLAIN" in c.capabilities and "STARTTLS" not in c.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            c.login(BOB, "wrong")
        assert c.login(BOB, "secret")[0] == "OK"
        c.logout()
        # Implicit TLS (993): AUTHENTICATE PLAIN with a continuation.
        t = imaplib.IMAP4_SSL("127.0.0.1", s.imap_tls_port, ssl_context=client_context(tmp_path),
                              timeout=10)
        typ, _ = t.authenticate("PLAIN", lambda _: f"\0{BOB}\0secret".encode())
        assert typ == "OK"
        assert t.select("INBOX")[0] == "OK"
        t.logout()
    finally:
        s.stop()


def client_context(root: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(root / "pki" / "smdp-test-CA.pem"))
    ctx.check_hostname = False  # the test certificate does not name 127.0.0.1
    return ctx


def test_authenticate_plain_on_loopback_and_a_foreign_authzid(server: InProcessServer) -> None:
    assert server.imap_port is not None
    c = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHORIZATIONFAILED"):
        c.authenticate("PLAIN", lambda _: f"{ALICE}\0{BOB}\0secret".encode())
    assert c.authenticate("PLAIN", lambda _: f"\0{BOB}\0secret".encode())[0] == "OK"
    c.logout()


# -- mailbox ----------------------------------------------------------------------


def test_list_select_fetch_equal_to_pop3_retr(server: InProcessServer) -> None:
    deliver(server, "first one", "Body one.")
    deliver(server, "second one", "Body two, a bit longer.")
    c = imap(server)
    typ, listed = c.list()
    assert typ == "OK" and listed == [
        b'(\\HasNoChildren \\Subscribed) "/" "INBOX"',
        b'(\\HasChildren \\Subscribed) "/" "Pending"',
        b'(\\HasNoChildren \\Subscribed) "/" "Pending/Accept and authorize"',
        b'(\\HasNoChildren \\Subscribed) "/" "Pending/Reject as spammer"',
        b'(\\HasNoChildren \\Junk \\Subscribed) "/" "Junk"',
        b'(\\HasNoChildren \\Trash \\Subscribed) "/" "Trash"',
        b'(\\HasNoChildren \\Drafts \\Subscribed) "/" "Drafts"',
        b'(\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"']
    assert c.list('""', "inbox")[1] == [b'(\\HasNoChildren \\Subscribed) "/" "INBOX"']
    assert c.list('""', "%")[1] == [listed[0], listed[1], *listed[4:]]
    assert c.list('""', "Nothing*")[1] == [None]
    typ, data = c.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    assert c.response("UIDVALIDITY")[1][0] is not None
    for n in (1, 2):
        whole = retr(server, n)
        [(head, body), close] = fetch(c, str(n), "(BODY.PEEK[] RFC822.SIZE)")
        assert isinstance(head, bytes) and isinstance(close, bytes) and body == whole
        assert f"RFC822.SIZE {len(whole)}".encode() in close
        # Partial fetches, header and text, as clients download in pieces.
        [(_, part), _] = fetch(c, str(n), "(BODY.PEEK[]<5.20>)")
        assert part == whole[5:25]
        [(_, header), _] = fetch(c, str(n), "(BODY.PEEK[HEADER])")
        [(_, text), _] = fetch(c, str(n), "(BODY.PEEK[TEXT])")
        assert header + text == whole and header.endswith(b"\r\n\r\n")
    # What mutt and Thunderbird ask for to list messages.
    [(item, fields), _] = fetch(c, "1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert item.endswith(b"BODY[HEADER.FIELDS (SUBJECT FROM)] {53}")  # type: ignore[union-attr]
    assert fields == b"From: Alice <alice@b.example>\r\nSubject: first one\r\n\r\n"
    [env] = fetch(c, "1", "(ENVELOPE INTERNALDATE FLAGS)")
    assert isinstance(env, bytes)
    assert b'"first one" (("Alice" NIL "alice" "b.example"))' in env
    assert b"FLAGS ()" in env and re.search(rb'INTERNALDATE "\d\d-\w\w\w-\d{4} ', env)
    # BODY[] without PEEK sets \Seen; SEARCH sees it.
    fetch(c, "1", "(BODY[TEXT])")
    assert c.search(None, "UNSEEN") == ("OK", [b"2"])
    assert c.search(None, "SEEN") == ("OK", [b"1"])
    c.logout()


def test_flags_uids_and_uidvalidity_survive_a_restart(tmp_path: Path) -> None:
    s = make_server(tmp_path)
    s.start()
    try:
        deliver(s, "kept")
        deliver(s, "flagged")
        c = imap(s)
        c.select("INBOX")
        before = fetch(c, "1:*", "(UID FLAGS)")
        validity = c.response("UIDVALIDITY")[1]
        assert c.store("2", "+FLAGS", "(\\Flagged \\Seen)")[0] == "OK"
        c.logout()
        s.stop()
        s.start()
        c = imap(s)
        c.select("INBOX")
        assert c.response("UIDVALIDITY")[1] == validity
        after = fetch(c, "1:*", "(UID FLAGS)")
        assert [re.search(rb"UID (\d+)", x).group(1) for x in after] == \
            [re.search(rb"UID (\d+)", x).group(1) for x in before]  # type: ignore[union-attr,arg-type]
        assert b"FLAGS (\\Seen \\Flagged)" in after[1]  # type: ignore[operator]
        assert c.uid("SEARCH", "FLAGGED")[1][0] == re.search(  # type: ignore[union-attr]
            rb"UID (\d+)", after[1]).group(1)  # type: ignore[arg-type]
        c.logout()
    finally:
        s.stop()


def test_expunge_removes_from_inbox_and_from_pop3(server: InProcessServer) -> None:
    deliver(server, "to delete")
    deliver(server, "to keep")
    c = imap(server)
    c.select("INBOX")
    c.store("1", "+FLAGS", "\\Deleted")
    typ, data = c.expunge()
    assert (typ, data) == ("OK", [b"1"])
    assert c.select("INBOX")[1] == [b"1"]
    [(_, body), _] = fetch(c, "1", "BODY.PEEK[]")
    assert b"Subject: to keep" in body  # type: ignore[operator]
    c.logout()
    bob = server.client(BOB)
    assert (bob.call(wire.Stat()).text or "").startswith("1 ")  # POP3 sees it gone too
    bob.quit()
    # A new UID for every new message, never an expunged one's.
    deliver(server, "after")
    c = imap(server)
    c.select("INBOX")
    uids = [int(re.search(rb"UID (\d+)", x).group(1))  # type: ignore[union-attr,arg-type]
            for x in fetch(c, "1:*", "UID")]
    assert uids == sorted(uids) and uids[-1] == 3
    c.logout()


def test_examine_is_read_only(server: InProcessServer) -> None:
    deliver(server, "look only")
    c = imap(server)
    assert c.select("INBOX", readonly=True)[0] == "OK"
    fetch(c, "1", "BODY[]")  # no \Seen in a read-only mailbox
    typ, data = c.store("1", "+FLAGS", "\\Deleted")
    assert typ == "NO" and b"[READ-ONLY]" in data[0]  # type: ignore[operator]
    c.select("INBOX")
    assert c.search(None, "UNSEEN") == ("OK", [b"1"])
    typ, data = c.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)")
    assert typ == "OK" and b"MESSAGES 1 UNSEEN 1 UIDNEXT 2" in data[0]  # type: ignore[operator]
    c.logout()


def move(c: imaplib.IMAP4, which: str, mailbox: str) -> tuple[str, list[bytes]]:
    """MOVE by message number (imaplib has UID MOVE only): the tagged answer."""
    typ, data = c._simple_command("MOVE", which, mailbox)
    return typ, list(data)


def sent_state(server: InProcessServer) -> str:
    """What Alice's SENT says of her newest message to Bob."""
    alice = server.client(ALICE)
    lines = alice.call(wire.Sent(None)).lines or []
    alice.quit()
    states = [line.split()[2] for line in lines if line.split()[1] == BOB]
    return states[0] if states else "-"  # newest first: one message per test here


def test_pending_shows_one_summary_per_waiting_envelope(server: InProcessServer) -> None:
    entry = announce(server, "Lunch on Friday?", "Shall we meet at noon?")
    deliver(server, "already accepted")
    c = imap(server)
    typ, data = c.status("Pending", "(MESSAGES UIDNEXT)")
    assert typ == "OK" and b"MESSAGES 1 UIDNEXT 2" in data[0]  # type: ignore[operator]
    typ, data = c.select("Pending", readonly=True)
    assert (typ, data) == ("OK", [b"1"])
    [(_, summary), _] = fetch(c, "1", "BODY[]")
    assert isinstance(summary, bytes)
    header, _, text = summary.partition(b"\r\n\r\n")
    assert f"From: Alice <{ALICE}>".encode() in header and f"To: {BOB}".encode() in header
    assert b"Subject: Lunch on Friday?" in header
    assert b"Server:  smdp.b.example" in text and f"ACCEPT {entry}".encode() in text
    assert b"  to Pending/Reject as spammer: reject it and block this sender\r\n" in text
    assert b"Headlines:\r\n  Shall we meet at noon?" in text  # the envelope's headlines
    [again] = fetch(c, "1", "(RFC822.SIZE FLAGS)")
    assert f"RFC822.SIZE {len(summary)}".encode() in again  # type: ignore[operator]
    assert b"FLAGS ()" in again  # type: ignore[operator]  # EXAMINE: no \Seen
    # Decided elsewhere (the user port): the summary leaves Pending at the next NOOP.
    bob = server.client(BOB)
    bob.call(wire.UserDecision(Decision.REJECT, entry))
    bob.quit()
    c.noop()
    assert c.response("EXPUNGE")[1] == [b"1"]
    c.logout()


def test_idle_sees_a_newly_accepted_message(server: InProcessServer) -> None:
    deliver(server, "before idle")
    raw = Raw(server.imap_port)
    raw.send(b"a LOGIN bob@b.example secret\r\nb SELECT INBOX\r\n")
    raw.until(b"a")
    assert b"* 1 EXISTS\r\n" in raw.until(b"b")
    raw.send(b"c IDLE\r\n")
    assert raw.line().startswith(b"+ ")
    deliver(server, "during idle")
    assert raw.line() == b"* 2 EXISTS\r\n"
    # Accepted by a move in another session, to the accept & authorize folder.
    announce(server, "by the folder")
    c = imap(server)
    c.select("Pending")
    assert move(c, "1", '"Pending/Accept and authorize"')[0] == "OK"
    c.logout()
    assert raw.line() == b"* 3 EXISTS\r\n"
    raw.send(b"DONE\r\n")
    assert raw.until(b"c")[-1] == b"c OK IDLE terminated\r\n"
    raw.send(b"d LOGOUT\r\n")
    assert raw.until(b"d")[-1] == b"d OK LOGOUT completed\r\n"
    raw.close()


def test_bad_input_is_answered_with_a_sentence(server: InProcessServer) -> None:
    raw = Raw(server.imap_port)
    hostile = [
        (b"x1 FROB\r\n", b"x1 BAD unknown command FROB\r\n"),
        (b"x2 SELECT INBOX\r\n", b"x2 BAD SELECT is not allowed before you log in\r\n"),
        (b"no-space-at-all\r\n", b"* BAD a command must start with a tag and a space\r\n"),
        (b'x3 LOGIN "open\r\n', b"x3 BAD a quoted string is not closed\r\n"),
        (b"x4 LOGIN {999999999}\r\n", b"x4 BAD literal too large (the limit is 65536 octets)\r\n"),
        (b"x5 NOOP " + b"y" * 20000 + b"\r\n",
         b"x5 BAD line too long (the limit is 8192 octets)\r\n"),
        (b"\x00\xff\r\n", b"* BAD a command must start with a tag and a space\r\n"),
    ]
    for sent, answer in hostile:
        raw.send(sent)
        assert raw.line() == answer
    raw.send(b"y LOGIN bob@b.example secret\r\n")
    raw.until(b"y")
    for sent, answer in [
        (b"z1 FETCH 1 FLAGS\r\n", b"z1 BAD FETCH is not allowed without a selected mailbox"),
        (b"z2 SELECT Nowhere\r\n", b"z2 NO [NONEXISTENT] no mailbox named 'Nowhere'"),
        (b"z3 SELECT INBOX\r\n", b"z3 OK [READ-WRITE]"),
        (b"z4 FETCH 5 FLAGS\r\n", b"z4 BAD no message 5: the mailbox holds 0 message(s)"),
        (b"z5 FETCH 1 BODY[1.0]\r\n", b"z5 BAD body section [1.0] is not supported"),
        (b"z6 SEARCH MODSEQ 5\r\n", b"z6 BAD search criterion MODSEQ is not supported"),
        (b"z7 IDLE\r\n", b"+ idling"),
        (b"not done\r\n", b"z7 BAD IDLE ends with DONE; the IDLE is over"),
        (b"z8 NOOP\r\n", b"z8 OK NOOP completed"),
    ]:
        raw.send(sent)
        if answer.startswith(b"+"):
            assert raw.line().startswith(answer)
        else:
            assert raw.until(answer.split()[0])[-1].startswith(answer)
    raw.close()


# -- a stock client ----------------------------------------------------------------


def test_mbsync_syncs_inbox_and_pending_into_a_maildir(tmp_path: Path) -> None:
    mbsync = shutil.which("mbsync")
    if mbsync is None:
        pytest.skip("mbsync (Debian package isync) is not installed")
    s = make_server(tmp_path)
    s.start()
    try:
        deliver(s, "for mbsync", "Synchronised.")
        whole = retr(s, 1)
        maildir = tmp_path / "mail"
        maildir.mkdir()
        rc = tmp_path / "mbsyncrc"
        rc.write_text(mbsync_rc(s, maildir) + """
Channel inbox
Far :remote:INBOX
Near :local:INBOX
Sync Pull
Create Near
SyncState *

Channel pending
Far :remote:Pending
Near :local:Pending
Sync Pull
Create Near
SyncState *
""")
        announce(s, "waiting for bob")
        done = subprocess.run([mbsync, "-c", str(rc), "inbox", "pending"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

        def files(folder: str) -> list[bytes]:
            # A Maildir keeps LF line ends, and mbsync adds its X-TUID field.
            return [re.sub(rb"X-TUID: .*\n", b"", f.read_bytes())
                    for sub in ("new", "cur") for f in (maildir / folder / sub).iterdir()]

        assert files("INBOX") == [whole.replace(b"\r\n", b"\n")]
        [summary] = files("Pending")
        assert b"Subject: waiting for bob\n" in summary and b"X-SMDP-Entry: " in summary
    finally:
        s.stop()


def test_a_tour_of_the_commands(server: InProcessServer) -> None:
    """Every command and answer the port offers, read as the wire has them."""
    for subject in ("one", "two", "three"):
        deliver(server, subject)
    raw = Raw(server.imap_port)

    def cmd(line: bytes) -> list[bytes]:
        raw.send(line + b"\r\n")
        return raw.until(line.split()[0])

    assert cmd(b"t1 STARTTLS")[-1] == b"t1 NO TLS is not available on this server\r\n"
    assert cmd(b"t2 AUTHENTICATE CRAM-MD5")[-1].startswith(b"t2 NO [CANNOT] mechanism CRAM-MD5")
    raw.send(b"t3 AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+  \r\n"
    raw.send(b"*\r\n")
    assert raw.line() == b"t3 BAD authentication cancelled\r\n"
    assert cmd(b"t4 AUTHENTICATE PLAIN " + base64.b64encode(b"\0bob@b.example\0secret")
               )[-1].startswith(b"t4 OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    # Nothing else is enable-able; IMAP4rev2 is test_imap_rev2.py's.
    assert cmd(b"t5 ENABLE CONDSTORE") == [b"* ENABLED\r\n", b"t5 OK ENABLE completed\r\n"]
    assert cmd(b"t6 NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    assert cmd(b't7 LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""\r\n'
    assert cmd(b"t8 SUBSCRIBE INBOX")[-1] == b"t8 OK every mailbox is always subscribed\r\n"
    assert cmd(b"t9 SELECT INBOX")[:2] == [
        b"* FLAGS (\\Seen \\Deleted \\Flagged \\Answered \\Draft)\r\n", b"* 3 EXISTS\r\n"]
    assert cmd(b"u1 STORE 1:2 +FLAGS (\\Seen \\Flagged)")[:2] == [
        b"* 1 FETCH (FLAGS (\\Seen \\Flagged))\r\n", b"* 2 FETCH (FLAGS (\\Seen \\Flagged))\r\n"]
    assert cmd(b"u2 STORE 2 -FLAGS.SILENT (\\Flagged)") == [b"u2 OK STORE completed\r\n"]
    assert cmd(b"u3 UID STORE 3 FLAGS (\\Answered $Junk)")[0] == \
        b"* 3 FETCH (UID 3 FLAGS (\\Answered))\r\n"  # keywords are not kept
    assert cmd(b"u4 SEARCH OR FLAGGED ANSWERED")[0] == b"* SEARCH 1 3\r\n"
    assert cmd(b"u5 SEARCH NOT SEEN")[0] == b"* SEARCH 3\r\n"
    assert cmd(b"u6 UID SEARCH UID 2:* SEEN")[0] == b"* SEARCH 2\r\n"
    assert cmd(b"u7 SEARCH 2:3 UNANSWERED")[0] == b"* SEARCH 2\r\n"
    assert cmd(b"u8 SEARCH UID 9")[0] == b"* SEARCH\r\n"
    assert cmd(b"u9 UID FETCH 99 FLAGS") == [b"u9 OK FETCH completed\r\n"]
    whole = retr(server, 3)
    header, _, text = whole.partition(b"\r\n\r\n")
    fetched = b"".join(cmd(b"v1 FETCH 3 (RFC822.HEADER RFC822.TEXT)"))
    assert b"RFC822.HEADER {%d}\r\n%s\r\n\r\n" % (len(header) + 4, header) in fetched
    assert b"RFC822.TEXT {%d}\r\n%s" % (len(text), text) in fetched
    assert b"FLAGS (\\Seen \\Answered)" in fetched  # RFC822.TEXT sets \Seen, and says so
    fetched = b"".join(cmd(b"v2 FETCH 3 RFC822"))
    assert b"RFC822 {%d}\r\n%s" % (len(whole), whole) in fetched
    # Flags changed by another session are told at NOOP.
    other = imap(server)
    other.select("INBOX")
    other.store("3", "+FLAGS", "\\Draft")
    other.logout()
    assert cmd(b"v3 NOOP")[0] == b"* 3 FETCH (FLAGS (\\Seen \\Answered \\Draft))\r\n"
    size = sum(len(retr(server, n)) for n in (1, 2, 3))
    assert cmd(b"v4 STATUS INBOX (SIZE DELETED)")[0] == \
        b'* STATUS "INBOX" (SIZE %d DELETED 0)\r\n' % size
    # UID EXPUNGE removes only the \Deleted messages it names; CLOSE the rest, silently.
    cmd(b"w1 STORE 1:3 +FLAGS.SILENT (\\Deleted)")
    assert cmd(b"w2 UID EXPUNGE 2") == [b"* 2 EXPUNGE\r\n", b"w2 OK EXPUNGE completed\r\n"]
    assert cmd(b"w3 CLOSE") == [b"w3 OK CLOSE completed\r\n"]
    assert cmd(b"w4 SELECT INBOX")[1] == b"* 0 EXISTS\r\n"
    assert cmd(b"w5 UNSELECT") == [b"w5 OK UNSELECT completed\r\n"]
    # A broken IDLE is answered BAD, and a command sent after it is still served.
    raw.send(b"x1 IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    raw.send(b"nonsense\r\nx2 NOOP\r\n")
    assert raw.until(b"x2") == [b"x1 BAD IDLE ends with DONE; the IDLE is over\r\n",
                                b"x2 OK NOOP completed\r\n"]
    assert cmd(b"x3 LOGOUT") == [b"* BYE smdp.b.example signing off\r\n",
                                 b"x3 OK LOGOUT completed\r\n"]
    assert raw.line() == b""  # closed
    raw.close()


def test_decisions_by_moving_and_deleting(server: InProcessServer) -> None:
    """Issue 14 item 3, the first two decisions: a Pending summary moved to
    INBOX accepts (the body is pulled, the sender sees it delivered, the
    message appears in INBOX); deleted and expunged, it rejects (the sender
    sees it rejected). Each through Destination.decide, as the user port."""
    entry = announce(server, "accept me")
    c = imap(server)
    assert "MOVE" in c.capabilities
    assert c.select("Pending") == ("OK", [b"1"])
    [uid_line] = fetch(c, "1", "UID")
    uid = re.search(rb"UID (\d+)", uid_line).group(1)  # type: ignore[arg-type,union-attr]
    typ, _ = c.uid("MOVE", uid.decode(), "INBOX")
    assert typ == "OK"
    assert c.response("EXPUNGE")[1] == [b"1"]
    wait_for(lambda: sent_state(server) == "delivered", "the pull")
    assert c.select("INBOX") == ("OK", [b"1"])
    [(_, body), _] = fetch(c, "1", "BODY.PEEK[]")
    assert body == retr(server, 1) and b"Subject: accept me" in body  # type: ignore[operator]
    bob = server.client(BOB)
    assert any(line.startswith(f"{entry} accepted ")
               for line in bob.call(wire.Envs(True)).lines or [])
    bob.quit()
    # Moving anywhere else is refused with a sentence, nothing moves.
    typ, data = move(c, "1", "Pending")
    assert typ == "NO" and data[0].startswith(b"[CANNOT] 0 moved; not all: cannot move a "
                                              b"message into Pending")
    typ, data = move(c, "1", "Nowhere")
    assert typ == "NO" and data[0] == b"[TRYCREATE] no mailbox named 'Nowhere'"

    rejected = announce(server, "reject me")
    assert c.select("Pending") == ("OK", [b"1"])
    c.store("1", "+FLAGS", "\\Deleted")
    assert c.expunge() == ("OK", [b"1"])
    wait_for(lambda: sent_state(server) == "rejected", "the rejection")
    bob = server.client(BOB)
    assert any(line.startswith(f"{rejected} rejected ")
               for line in bob.call(wire.Envs(True)).lines or [])
    bob.quit()

    # Decided elsewhere first (Assumption 6: no accept after a reject): the
    # MOVE is refused with the reason, and the summary goes at the next NOOP.
    late = announce(server, "decided elsewhere")
    assert c.select("Pending") == ("OK", [b"1"])
    bob = server.client(BOB)
    bob.call(wire.UserDecision(Decision.REJECT, late))
    bob.quit()
    typ, data = move(c, "1", "INBOX")
    assert (typ, data) == ("NO", [f"0 moved; not all: envelope {late} was already "
                                  "rejected".encode()])
    c.noop()
    assert c.response("EXPUNGE")[1] == [b"1"]
    c.logout()


def test_accept_by_move_between_two_servers(tmp_path: Path) -> None:
    """The same decision across the peer port: alice@a.example writes,
    bob@b.example moves the summary to INBOX; a.example's SENT says
    delivered and b.example's INBOX holds what POP3 RETR gives."""
    a = InProcessServer(tmp_path, "a.example")
    b = InProcessServer(tmp_path, "b.example", listen=IMAP_LISTEN)
    a.add_user("alice@a.example")
    b.add_user(BOB)
    try:
        a.start()
        b.start()
        a.peer_with(b)
        b.peer_with(a)
        alice = a.client("alice@a.example")
        alice.submit([BOB], b"Subject: across\r\n\r\nFrom the other server.\r\n")
        alice.quit()

        def sent() -> str:
            c = a.client("alice@a.example")
            lines = c.call(wire.Sent(None)).lines or []
            c.quit()
            return lines[0].split()[2] if lines else "-"

        wait_for(lambda: sent() == "envelope-sent", "the envelope at b.example")
        c = imap(b)
        assert c.select("Pending") == ("OK", [b"1"])
        [(_, summary), _] = fetch(c, "1", "BODY.PEEK[]")
        assert b"Server:  smdp.a.example" in summary  # type: ignore[operator]
        assert move(c, "1", "INBOX")[0] == "OK"
        wait_for(lambda: sent() == "delivered", "the pull from a.example")
        assert c.select("INBOX") == ("OK", [b"1"])
        [(_, body), _] = fetch(c, "1", "BODY.PEEK[]")
        assert body == retr(b, 1) and body.endswith(b"From the other server.\r\n")  # type: ignore[union-attr]
        c.logout()
    finally:
        b.stop()
        a.stop()


# -- every decision by a client action, its effects at both ends (Table 2) ------------


#: The peer servers' quality counters (not the per-sender ones, issue 16).
PEER_COUNTERS = "SELECT messages, votes FROM peer_quality WHERE server NOT LIKE 'sender:%'"


def db(server: InProcessServer, sql: str) -> list[tuple[object, ...]]:
    """Read an in-process server's own SQLite store (read-only): what no
    command shows (spam reports, the quality counters)."""
    con = sqlite3.connect(f"file:{server.config.store_path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def lists(server: InProcessServer, user: str) -> list[str]:
    """LISTS of ``user``: "list-name address" each."""
    c = server.client(user)
    lines = c.call(wire.Lists()).lines or []
    c.quit()
    return [" ".join(line.split()[:2]) for line in lines]


def origin_state(a: InProcessServer, sender: str) -> str:
    """What ``sender``'s SENT at a.example says of her one message to Bob."""
    c = a.client(sender)
    lines = c.call(wire.Sent(None)).lines or []
    c.quit()
    return lines[0].split()[2] if lines else "-"


def status(c: imaplib.IMAP4, mailbox: str) -> dict[str, int]:
    typ, data = c.status(f'"{mailbox}"', "(MESSAGES UIDNEXT)")
    assert typ == "OK", data
    found = re.findall(rb"(MESSAGES|UIDNEXT) (\d+)", data[0])  # type: ignore[arg-type]
    return {k.decode(): int(v) for k, v in found}


def subjects(c: imaplib.IMAP4, mailbox: str) -> list[bytes]:
    """The Subject of each message in ``mailbox``, by UID (EXAMINE: no \\Seen)."""
    typ, data = c.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", data
    if data == [b"0"]:
        return []
    return [part[1].split(b": ", 1)[1].strip()  # type: ignore[index]
            for part in fetch(c, "1:*", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
            if isinstance(part, tuple)]


def test_every_decision_by_a_client_action_at_both_ends(tmp_path: Path) -> None:
    """Issue 14 item 3: each client action is one SMDP option with exactly
    Table 2's effects at both ends (docs/imap.md, "Deciding by moving"):
    $Junk is reject & spam, the two named folders are accept & authorize and
    reject & spammer, Trash is reject, COPY to Junk and the EXPUNGE after it
    decide once, and an accepted INBOX message moved to Junk is reject &
    spam after accept. Each sender of a.example writes Bob one message."""
    a = InProcessServer(tmp_path, "a.example")
    b = InProcessServer(tmp_path, "b.example", listen=IMAP_LISTEN)
    senders = ("alice", "carol", "dave", "erin", "frank")
    for name in senders:
        a.add_user(f"{name}@a.example")
    b.add_user(BOB)
    with peered(a, b):
        for name in senders:
            c = a.client(f"{name}@a.example")
            c.submit([BOB], f"From: {name}@a.example\r\nSubject: from {name}\r\n\r\n"
                            f"Hello from {name}.\r\n".encode())
            c.quit()
        c = imap(b)
        wait_for(lambda: status(c, "Pending")["MESSAGES"] == 5, "five envelopes")
        assert c.select("Pending") == ("OK", [b"5"])
        uid = {}
        for part in fetch(c, "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"):
            if isinstance(part, tuple):
                found = re.search(rb"UID (\d+)", part[0])
                assert found is not None
                uid[part[1].split(b"from ")[1].strip().decode()] = found.group(1).decode()

        # carol: Thunderbird's "junk" button, the $Junk keyword: reject & spam.
        assert c.uid("STORE", uid["carol"], "+FLAGS", "($Junk)")[0] == "OK"
        # dave: into the folder named for reject & spammer.
        assert c.uid("MOVE", uid["dave"], '"Pending/Reject as spammer"')[0] == "OK"
        # erin: into Trash: reject.
        assert c.uid("MOVE", uid["erin"], "Trash")[0] == "OK"
        # frank: COPY to Junk, then deleted and expunged as clients without
        # MOVE do: one decision, reject & spam, not a reject after it.
        assert c.uid("COPY", uid["frank"], "Junk")[0] == "OK"
        assert c.uid("STORE", uid["frank"], "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert c.expunge()[0] == "OK"
        # alice: into the folder named for accept & authorize.
        assert c.uid("MOVE", uid["alice"], '"Pending/Accept and authorize"')[0] == "OK"
        c.noop()  # carol's summary leaves Pending now (no EXPUNGE during a STORE)
        assert status(c, "Pending")["MESSAGES"] == 0

        expected = {"carol": "spam", "dave": "spammer", "erin": "rejected", "frank": "spam",
                    "alice": "delivered"}
        for name, state in expected.items():
            wait_for(lambda n=name, s=state: origin_state(a, f"{n}@a.example") == s,
                     f"{name}'s message {state} at a.example")
        # Table 2, origin side: SPAM and SPAMMER are spam reports, SPAMMER
        # and AUTHORIZE write the sender's outbound list.
        assert sorted(db(a, "SELECT sender, COUNT(*) FROM spam_reports GROUP BY sender")) == [
            ("carol@a.example", 1), ("dave@a.example", 1), ("frank@a.example", 1)]
        assert lists(a, "dave@a.example") == [f"out-black {BOB}"]
        assert lists(a, "alice@a.example") == [f"out-white {BOB}"]
        assert lists(a, "carol@a.example") == lists(a, "frank@a.example") == []
        # Recipient side: the inbound lists, the votes of Quality(a).
        assert sorted(lists(b, BOB)) == ["in-black dave@a.example",
                                         "in-white alice@a.example"]
        assert db(b, PEER_COUNTERS) == [(5, 1 - 4)]
        # Where each shows: the rejected as spam in Junk, the rejected in
        # Trash (summaries: their bodies never came), the accepted in INBOX.
        assert sorted(subjects(c, "Junk")) == [b"from carol", b"from dave", b"from frank"]
        assert subjects(c, "Trash") == [b"from erin"]
        [(_, erin), _] = fetch(c, "1", "BODY.PEEK[TEXT]")
        assert erin.startswith(b"You rejected this envelope: its message was never fetched")  # type: ignore[union-attr]
        assert b"To decide" not in erin  # type: ignore[operator]
        wait_for(lambda: subjects(c, "INBOX") == [b"from alice"], "alice's message in INBOX")
        assert subjects(c, "Pending/Accept and authorize") == []

        # Reject & spam after accept: the accepted message moved to Junk.
        # Alice's vote turns from +1 to -1, a spam report goes to a.example,
        # and Junk shows the real message, not a summary.
        assert c.select("INBOX") == ("OK", [b"1"])
        [(_, real), _] = fetch(c, "1", "BODY.PEEK[]")
        assert move(c, "1", "Junk")[0] == "OK"
        assert status(c, "INBOX")["MESSAGES"] == 0
        wait_for(lambda: origin_state(a, "alice@a.example") == "spam", "the late spam vote")
        assert db(b, PEER_COUNTERS) == [(5, -5)]
        assert ("alice@a.example", 1) in db(
            a, "SELECT sender, COUNT(*) FROM spam_reports GROUP BY sender")
        assert c.select("Junk") == ("OK", [b"4"])
        [(_, shown), _] = fetch(c, "4", "BODY.PEEK[]")
        assert shown == real and shown.endswith(b"Hello from alice.\r\n")  # type: ignore[union-attr]
        # Rejected mail does not come back (the origin deleted it).
        typ, data = move(c, "4", "INBOX")
        assert typ == "NO" and b"rejected mail into INBOX" in data[0]
        c.logout()




def uids(c: imaplib.IMAP4) -> list[int]:
    typ, data = c.uid("SEARCH", "ALL")
    assert typ == "OK", data
    return [int(u) for u in data[0].split()]  # type: ignore[union-attr]


def test_trash_and_folders_of_the_users_own(server: InProcessServer) -> None:
    """INBOX mail moved to Trash stays there (no decision: it was accepted)
    and comes back to INBOX with a new UID; expunged from Trash it is gone,
    for POP3 too. Folders the user creates hold accepted mail, are renamed
    with their messages and deleted with them; the server's own mailboxes
    cannot be. Rejected mail goes nowhere but Trash."""
    deliver(server, "keep me")
    deliver(server, "file me")
    c = imap(server)
    assert "SPECIAL-USE" in c.capabilities
    assert c.select("INBOX") == ("OK", [b"2"])
    assert uids(c) == [1, 2]
    typ, data = move(c, "1", "Trash")
    assert (typ, data) == ("OK", [b"1 moved to Trash"])
    assert c.response("EXPUNGE")[1] == [b"1"]
    assert status(c, "Trash")["MESSAGES"] == 1 and status(c, "INBOX")["MESSAGES"] == 1
    assert subjects(c, "Trash") == [b"keep me"]
    c.select("Trash")
    assert move(c, "1", "INBOX")[0] == "OK"  # back from Trash: a new UID in INBOX
    c.select("INBOX")
    assert uids(c) == [2, 3]

    # A folder of one's own: CREATE (with its superiors), MOVE into it, RENAME, DELETE.
    assert c.create("Work/2026")[0] == "OK"
    typ, data = c.create("Work")
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")
    typ, data = c.create("Junk/mine")
    assert typ == "NO" and b"this server's own" in data[0]
    assert c.list('""', "Work*")[1] == [b'(\\HasChildren \\Subscribed) "/" "Work"',
                                        b'(\\HasNoChildren \\Subscribed) "/" "Work/2026"']
    assert c.uid("COPY", "2", "Work/2026")[0] == "OK"  # one place at a time: a move
    c.noop()
    assert c.response("EXPUNGE")[1] == [b"1"]
    assert subjects(c, "Work/2026") == [b"file me"]
    assert c.rename("Work", "Projects")[0] == "OK"
    assert subjects(c, "Projects/2026") == [b"file me"]
    typ, data = c.select("Work/2026")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    typ, data = c.rename("Trash", "Bin")
    assert typ == "NO" and data[0].startswith(b"[CANNOT]")
    typ, data = c.delete("Projects")
    assert typ == "NO" and data[0].startswith(b"[HASCHILDREN]")
    assert c.delete("Projects/2026")[0] == "OK"  # and the message in it
    assert c.delete("Projects")[0] == "OK"
    assert c.list('""', "Projects*")[1] == [None]

    # Expunged from Trash, a message is gone (POP3 no longer has it).
    c.select("INBOX")
    assert move(c, "1", "Trash")[0] == "OK"
    assert status(c, "INBOX")["MESSAGES"] == 0
    c.select("Trash")
    c.store("1", "+FLAGS", "\\Deleted")
    assert c.expunge() == ("OK", [b"1"])
    bob = server.client(BOB)
    assert bob.call(wire.Stat()).text.startswith("0 ")  # type: ignore[union-attr]
    bob.quit()

    # A rejected envelope's summary goes to Trash, and only there.
    announce(server, "not wanted")
    c.select("Pending")
    assert move(c, "1", "Trash")[0] == "OK"
    c.select("Trash")
    typ, data = move(c, "1", '"Pending/Accept and authorize"')
    assert typ == "NO" and data[0].endswith(b"was already rejected")
    c.create("Mine")
    typ, data = move(c, "1", "Mine")
    assert typ == "NO" and data[0] == b"[CANNOT] 0 moved; not all: cannot move rejected " \
                                      b"mail into Mine: only Trash takes it"
    c.logout()


MIXED = (
    f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nSubject: with parts\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    "This is a multi-part message in MIME format.\r\n"
    "--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee the note.\r\nBye.\r\n"
    "--outer\r\nContent-Type: message/rfc822\r\n\r\n"
    "From: Carol <carol@c.example>\r\nSubject: the note\r\n\r\nInside.\r\n"
    '--outer\r\nContent-Type: application/pdf; name="a.pdf"\r\n'
    'Content-Disposition: attachment; filename="a.pdf"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--outer--\r\n").encode()


def test_bodystructure_and_mime_part_sections(server: InProcessServer) -> None:
    """What Thunderbird fetches of a message with parts: BODYSTRUCTURE,
    BODY, and its parts by number (BODY[1], BODY[1.MIME], BODY[2.HEADER],
    BODY[2.TEXT], BODY[3]), each the octets POP3 RETR has at that place;
    a part the message lacks is the empty string."""
    deliver(server, "with parts", raw=MIXED)
    whole = retr(server, 1)
    c = imap(server)
    c.select("INBOX")
    [line] = fetch(c, "1", "BODYSTRUCTURE")
    assert line == (
        b'1 (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 19 2 NIL NIL NIL '
        b'NIL)("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 59 (NIL "the note" (("Carol" NIL "carol" '
        b'"c.example")) (("Carol" NIL "carol" "c.example")) (("Carol" NIL "carol" "c.example")) '
        b'NIL NIL NIL NIL NIL) ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1 NIL NIL '
        b'NIL NIL) 4 NIL NIL NIL NIL)("APPLICATION" "PDF" ("NAME" "a.pdf") NIL NIL "BASE64" 12 '
        b'NIL ("ATTACHMENT" ("FILENAME" "a.pdf")) NIL NIL) "MIXED" ("BOUNDARY" "outer") NIL NIL '
        b'NIL))')
    [line] = fetch(c, "1", "BODY")
    assert line.startswith(b'1 (BODY (("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "7BIT" 19 2)(')  # type: ignore[union-attr]
    assert b"FLAGS" not in line  # type: ignore[operator]  # BODY (the structure) sets no \Seen
    sections = {"1": b"See the note.\r\nBye.",
                "1.MIME": b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
                "2.HEADER": b"From: Carol <carol@c.example>\r\nSubject: the note\r\n\r\n",
                "2.TEXT": b"Inside.", "3": b"JVBERi0xLjQK",
                "2.HEADER.FIELDS (SUBJECT)": b"Subject: the note\r\n\r\n", "4": b""}
    for section, expected in sections.items():
        [(_, got), _] = fetch(c, "1", f"BODY.PEEK[{section}]")
        assert got == expected and (not got or got in whole), section
    [(_, got), _] = fetch(c, "1", "BODY.PEEK[1]<4.3>")
    assert got == b"the"
    c.logout()


def test_moves_and_folder_commands_refused_with_a_sentence(server: InProcessServer) -> None:
    """Every refusal of the new commands says why, with RFC 5530's code."""
    entry = announce(server, "undecided")
    c = imap(server)
    c.select("Pending", readonly=True)
    typ, data = move(c, "1", "INBOX")
    assert (typ, data) == ("NO", [b"[READ-ONLY] the mailbox is read-only (EXAMINE)"])
    c.select("Pending")
    assert move(c, "1", "Pending") == ("NO", [b"[CANNOT] the messages are in Pending already"])
    with pytest.raises(imaplib.IMAP4.error, match="no message 5: the mailbox holds 1"):
        c.copy("5", "INBOX")
    c.create("Mine")
    typ, data = move(c, "1", "Mine")
    assert typ == "NO" and data[0].startswith(b"[CANNOT] 0 moved; not all: cannot move a "
                                              b"Pending summary into Mine: move it to INBOX")
    # Decided elsewhere first: $Junk stores the flag and says why no decision.
    bob = server.client(BOB)
    bob.call(wire.UserDecision(Decision.ACCEPT, entry))
    bob.quit()
    typ, data = c.store("1", "+FLAGS", "($Junk)")
    assert typ == "NO" and re.fullmatch(
        f"flags stored; not every message could be marked junk: envelope {entry} was "
        "decided elsewhere: it is (fetching|accepted) now".encode(), data[-1])  # type: ignore[arg-type]
    # An accepted envelope's summary, deleted: no reject after the accept.
    c.store("1", "+FLAGS", "\\Deleted")
    assert c.expunge()[0] == "OK"
    assert sent_state(server) in ("accepted", "delivered")
    # Folder names: the server's own, empty parts, unprintable, already there.
    for name, code in (("a//b", b"[CANNOT] a folder name needs text"),
                       ('"x\ty"', b"[CANNOT] a folder name is up to 200 printable"),
                       ("INBOX/x", b"[CANNOT] INBOX is this server's own"),
                       ("Mine/", b"[ALREADYEXISTS]")):
        typ, data = c.create(name)
        assert typ == "NO" and data[0].startswith(code), (name, data)
    assert c.create("Other")[0] == "OK"
    for old, new, code in (("Nope", "X", b"[NONEXISTENT]"), ("Mine", "Other", b"[ALREADYEXISTS]"),
                           ("Mine", "Mine/sub", b"[CANNOT] a folder cannot go inside itself"),
                           ("Mine", "Junk", b"[ALREADYEXISTS]")):
        typ, data = c.rename(old, new)
        assert typ == "NO" and data[0].startswith(code), (old, new, data)
    assert c.rename("Mine", "Deep/er/Mine")[0] == "OK"  # the superiors come into being
    assert [line.rsplit(b" ", 1)[1] for line in c.list('""', "Deep*")[1]] == [  # type: ignore[union-attr]
        b'"Deep"', b'"Deep/er"', b'"Deep/er/Mine"']
    typ, data = c.delete("Nope")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    typ, data = c.subscribe("Nope")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    c.select("Other")
    assert c.delete("Other")[0] == "OK"  # the selected one: it stays selected, empty
    assert c.uid("FETCH", "1:*", "FLAGS") == ("OK", [None])
    assert c.noop()[0] == "OK"
    c.logout()


def test_search_reads_headers_bodies_sizes_and_dates(server: InProcessServer) -> None:
    """SEARCH keys that read messages (RFC 9051 6.4.4): header fields
    decoded (RFC 2047) and in any case, the body and the whole text
    streamed, sizes, the arrival date and the Date field."""
    deliver(server, "Lunch on Friday", raw=(
        f"From: =?utf-8?q?J=C3=BCrgen?= <{ALICE}>\r\nTo: {BOB}\r\nSubject: Lunch on Friday\r\n"
        "Date: Mon, 2 Feb 2026 10:00:00 +0100\r\nX-Colour: green\r\n\r\n"
        "Shall we meet at the PIZZERIA?\r\n").encode())
    deliver(server, "Minutes", raw=(
        f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\nCc: carol@b.example\r\nSubject: Minutes\r\n"
        "Date: Tue, 10 Mar 2026 09:00:00 +0000\r\n\r\n" + ("x" * 70 + "\r\n") * 80
        + "pizza\r\n").encode())
    c = imap(server)
    c.select("INBOX")

    def search(*keys: str) -> list[int]:
        typ, data = c.search(None, *keys)
        assert typ == "OK", data
        return [int(n) for n in data[0].split()]  # type: ignore[union-attr]

    assert search("SUBJECT", "lunch") == [1]
    assert search("SUBJECT", "lunch", "TO", "bob") == [1]  # one read of each message
    c.literal = "jürgen".encode()  # type: ignore[attr-defined]  # decoded, in any case
    assert c.search("UTF-8", "FROM") == ("OK", [b"1"])
    assert search("FROM", '"alice@b.example"') == [1, 2]
    assert search("CC", "carol") == [2] and search("BCC", "x") == []
    assert search("TO", "bob") == [1, 2]
    assert search("HEADER", "X-Colour", "GREEN") == [1]
    assert search("BODY", "pizz") == [1, 2]  # in any case
    assert search("BODY", "Subject") == []  # the body only
    assert search("TEXT", "subject") == [1, 2]
    assert search("LARGER", "1000") == [2] and search("SMALLER", "1000") == [1]
    assert search("SENTBEFORE", "1-Mar-2026") == [1] and search("SENTON", "10-Mar-2026") == [2]
    assert search("SENTSINCE", "3-Feb-2026") == [2]
    today = time.strftime("%d-%b-%Y", time.gmtime())
    assert search("ON", today) == [1, 2] and search("BEFORE", today) == []
    assert search("SINCE", today) == [1, 2]
    assert search("OR", "SUBJECT", "minutes", "NOT", "OLD") == [2]
    assert search("NEW") == search("RECENT") == search("KEYWORD", "$Junk") == []
    assert search("UNKEYWORD", "$Junk") == [1, 2]
    # RFC 4731 ESEARCH: what was asked for, in one response.
    assert "ESEARCH" in c.capabilities
    deliver(server, "third")
    c.noop()

    def esearch(*args: str, uid: bool = False) -> bytes:
        typ, data = c._simple_command(*(("UID",) if uid else ()), "SEARCH", *args)
        assert typ == "OK", data
        answer = c.response("ESEARCH")[1]
        assert len(answer) == 1 and isinstance(answer[0], bytes)
        return answer[0]

    tag = rb'\(TAG "[A-Z0-9]+"\)'
    assert re.fullmatch(tag + rb" MIN 1 MAX 3 COUNT 3 ALL 1:3",
                        esearch("RETURN", "(MIN MAX COUNT ALL)", "ALL"))
    assert re.fullmatch(tag + rb" ALL 1,3", esearch("RETURN", "()", "NOT", "SUBJECT", "minutes"))
    assert re.fullmatch(tag + rb" UID COUNT 0", esearch("RETURN", "(COUNT MIN)", "SUBJECT",
                                                        "nothing", uid=True))
    with pytest.raises(imaplib.IMAP4.error, match="result option PARTIAL is not supported"):
        c._simple_command("SEARCH", "RETURN", "(PARTIAL 1:5)", "ALL")
    c.logout()


def test_sent_shows_each_recipients_state(tmp_path: Path) -> None:
    """Sent (\\Sent) shows what the user sent with each recipient's state;
    a change of state is a new message (a new UID: the old summary's
    octets may not change), which an IDLE-ing client sees come. A summary
    keeps its flags and stays in Sent (APPEND's copies beside it do not:
    test_append_to_sent_keeps_the_clients_copy)."""
    a = InProcessServer(tmp_path, "a.example", listen=IMAP_LISTEN)
    b = InProcessServer(tmp_path, "b.example", listen=IMAP_LISTEN)
    a.add_user("alice@a.example")
    b.add_user(BOB)
    with peered(a, b):
        alice = a.client("alice@a.example")
        alice.submit([BOB], b"Subject: to bob\r\n\r\nHello Bob.\r\n")
        alice.quit()
        wait_for(lambda: origin_state(a, "alice@a.example") == "envelope-sent", "the envelope")
        c = imap(a, "alice@a.example")
        assert b'(\\HasNoChildren \\Sent \\Subscribed) "/" "Sent"' in c.list()[1]
        assert c.select("Sent") == ("OK", [b"1"])  # read-write: clients append copies
        typ, data = c.store("1", "+FLAGS", "\\Deleted")
        assert typ == "OK" and data == [b"1 (FLAGS (\\Seen))"]  # a summary's are kept
        assert c.expunge() == ("OK", [None])
        typ, data = move(c, "1", "Trash")
        assert typ == "NO" and data[0].endswith(b"a summary of what you sent out of Sent: "
                                                b"it is this server's record")
        assert c.select("Sent", readonly=True) == ("OK", [b"1"])
        [(_, first), _] = fetch(c, "1", "BODY.PEEK[]")
        assert b"Subject: to bob" in first and f"{BOB}: envelope-sent".encode() in first  # type: ignore[operator]
        assert f"X-SMDP-Recipients: {BOB} envelope-sent".encode() in first  # type: ignore[operator]
        assert uids(c) == [1]
        typ, data = c.store("1", "+FLAGS", "\\Deleted")
        assert typ == "NO" and data[0].startswith(b"[READ-ONLY]")
        # Bob accepts over IMAP at b.example; Alice's Sent shows it as a new copy.
        bob = imap(b)
        bob.select("Pending")
        assert move(bob, "1", "INBOX")[0] == "OK"
        wait_for(lambda: origin_state(a, "alice@a.example") == "delivered", "the delivery")
        wait_for(lambda: status(bob, "INBOX")["MESSAGES"] == 1, "the message at b.example")
        bob.select("INBOX")
        typ, data = move(bob, "1", "Sent")
        assert typ == "NO" and data[0].endswith(b"cannot move a message into Sent: it shows "
                                                b"the mail you sent")
        bob.logout()
        c.noop()
        assert uids(c) == [2]
        [(_, now), _] = fetch(c, "1", "BODY.PEEK[]")
        assert f"{BOB}: delivered".encode() in now  # type: ignore[operator]
        assert status(c, "Sent") == {"MESSAGES": 1, "UIDNEXT": 3}
        c.logout()
