"""The IMAP port (issue 14 item 5; docs/imap.md) with stock clients from
Debian, each driven non-interactively and skipped, saying so, when its
package is not installed (.ci/run installs them): offlineimap synchronising
INBOX and Pending into a Maildir, and mutt reading a message over IMAP in a
pseudo-terminal. Then a mailbox of 100,000 messages: SELECT, UID FETCH of a
range, SEARCH and IDLE answer, and a FETCH reads only the messages it names;
and what the port's speed relies on (docs/imap.md, "Speed").
mbsync is in test_imap.py.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smdp.core.envelope import encode_envelope_block, extract_envelope
from smdp.protocol import user as wire
from smdp.store.sqlite import SqliteStore
from smdp.terms import Decision, EntryState

from .inprocess import InProcessServer
from .test_imap import announce, wait_for

ALICE, BOB = "alice@b.example", "bob@b.example"

# The in-process server's store is SQLite whatever the pass (as test_imap.py).
pytestmark = pytest.mark.own_backend


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    s = InProcessServer(tmp_path, "b.example", listen='imap = "127.0.0.1:0"\n')
    for user in (ALICE, BOB):
        s.add_user(user)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def deliver(server: InProcessServer, subject: str, text: str) -> bytes:
    """A message from Alice that Bob accepts (over the user port); what
    POP3 RETR gives of it once its body is in Bob's mailbox."""
    entry = announce(server, subject, text)
    bob = server.client(BOB)
    bob.call(wire.UserDecision(Decision.ACCEPT, entry))
    bob.quit()

    def accepted() -> bool:
        bob = server.client(BOB)
        lines = bob.call(wire.Envs(True)).lines or []
        bob.quit()
        return any(line.startswith(f"{entry} accepted ") for line in lines)

    wait_for(accepted, "the body to be pulled")
    bob = server.client(BOB)
    body = bob.call(wire.Retr(1)).body or b""
    bob.quit()
    return body


def maildir_files(folder: Path) -> list[bytes]:
    return [f.read_bytes() for sub in ("new", "cur") if (folder / sub).is_dir()
            for f in sorted((folder / sub).iterdir())]


# -- offlineimap -----------------------------------------------------------------


def test_offlineimap_syncs_inbox_and_pending_into_a_maildir(server: InProcessServer,
                                                            tmp_path: Path) -> None:
    offlineimap = shutil.which("offlineimap")
    if offlineimap is None:
        pytest.skip("offlineimap (Debian package offlineimap) is not installed")
    whole = deliver(server, "for offlineimap", "Synchronised by offlineimap.")
    announce(server, "waiting for bob", "Not yet accepted.")
    mail = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    # readonly: a pull, as mbsync's "Sync Pull"; the folder filter leaves
    # nothing else to sync.
    rc.write_text(f"""[general]
accounts = smdp
metadata = {tmp_path}/offlineimap-state

[Account smdp]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {mail}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.imap_port}
remoteuser = {BOB}
remotepass = secret
ssl = no
starttls = no
readonly = True
folderfilter = lambda name: name in ["INBOX", "Pending"]
""")
    done = subprocess.run([offlineimap, "-c", str(rc), "-o", "-u", "basic"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "HOME": str(tmp_path)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "ERROR" not in output, output
    # A Maildir keeps LF line ends; the message is otherwise RETR's, byte for byte.
    assert maildir_files(mail / "INBOX") == [whole.replace(b"\r\n", b"\n")]
    [summary] = maildir_files(mail / "Pending")
    assert b"Subject: waiting for bob\n" in summary and b"X-SMDP-Entry: " in summary


# -- mutt --------------------------------------------------------------------------


def run_in_terminal(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """``argv`` on a pseudo-terminal of 80x24, its screen output read until
    it exits: what a full-screen client needs to start at all."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:  # the terminal closed as the client ended
                    break
        if proc.poll() is None:
            proc.kill()
        return proc.wait(timeout=10), bytes(screen)
    finally:
        os.close(master)


def test_mutt_reads_a_message_over_imap(server: InProcessServer, tmp_path: Path) -> None:
    mutt = shutil.which("mutt")
    if mutt is None:
        pytest.skip("mutt (Debian package mutt) is not installed")
    deliver(server, "for mutt", "Read by mutt over IMAP.")
    piped = tmp_path / "piped.eml"
    rc = tmp_path / "muttrc"
    # No TLS on loopback (allow_plaintext_login), and the LOGIN command, which
    # needs no SASL modules (only recommended by the package); nothing asks a
    # question: the first message is piped to a file, then mutt quits.
    rc.write_text(f"""set imap_user = "{BOB}"
set imap_pass = "secret"
set imap_authenticators = "login"
set ssl_starttls = no
set ssl_force_tls = no
set imap_passive = no
set wait_key = no
set quit = yes
set move = no
set mark_old = no
set pipe_decode = no
set header_cache = ""
set message_cachedir = ""
set record = ""
set folder = "{tmp_path}"
set spoolfile = ""
""")
    url = f"imap://{BOB.replace('@', '%40')}@127.0.0.1:{server.imap_port}/INBOX"
    code, screen = run_in_terminal(
        [mutt, "-n", "-F", str(rc), "-f", url,
         "-e", f"push '<pipe-message>cat > {piped}<enter><quit>'"],
        {"HOME": str(tmp_path), "TERM": "vt100", "PATH": os.environ.get("PATH", "")},
        timeout=30)
    assert code == 0, screen.decode("utf-8", "replace")[-2000:]
    got = piped.read_bytes()
    assert b"Subject: for mutt" in got and b"Read by mutt over IMAP." in got, got


# -- a mailbox of 100,000 messages (issue 14 item 5) -------------------------------

BIG = 100_000


def big_message(k: int) -> bytes:
    return (f"From: Sender {k % 97} <sender{k % 97}@a.example>\r\nTo: {BOB}\r\n"
            f"Subject: message {k}\r\nMessage-ID: <m{k}@a.example>\r\n\r\n"
            f"Body of message {k}.\r\n").encode()


def fill(db: Path, first: int, count: int) -> None:
    """``count`` accepted messages for Bob, through the store's own methods,
    in one transaction: what years of mail leave behind, made in seconds."""
    store = SqliteStore(db)
    try:
        user = store.user_by_address(BOB)
        assert user is not None
        block = encode_envelope_block(extract_envelope(big_message(0)),
                                      expires="2099-01-01T00:00:00Z").decode()
        with store.transaction():
            for k in range(first, first + count):
                body = big_message(k)
                env = store.insert_in_envelope(
                    envid=f"big{k:07d}", origin_server="smdp.a.example",
                    sender=f"sender{k % 97}@a.example", size=len(body), block=block,
                    subject=f"message {k}", body=body)
                store.insert_mailbox_entry(user.id, env, BOB, EntryState.ACCEPTED)
    finally:
        store.close()


class Reads:
    """Which bodies the server's store is asked for (the real methods,
    counted): proof that a FETCH reads only the messages it names."""

    def __init__(self, store: Any) -> None:
        self.envelopes: set[int] = set()
        for name in ("in_body_chunk", "in_body_heads"):
            real = getattr(store, name)
            setattr(store, name, self._counting(real, name))

    def _counting(self, real: Callable[..., Any], name: str) -> Callable[..., Any]:
        def counted(ids: Any, *rest: Any) -> Any:
            self.envelopes.update([ids] if name == "in_body_chunk" else ids)
            return real(ids, *rest)
        return counted


def test_a_mailbox_of_100000_messages(tmp_path: Path) -> None:
    s = InProcessServer(tmp_path, "b.example", listen='imap = "127.0.0.1:0"\n')
    s.add_user(BOB)
    db = tmp_path / "b.example.sqlite3"
    fill(db, 0, BIG)
    s.start()
    try:
        assert s._server is not None and s.imap_port is not None
        reads = Reads(s._server.store)
        c = imaplib.IMAP4("127.0.0.1", s.imap_port, timeout=60)
        c.login(BOB, "secret")
        typ, data = c.select("INBOX")
        assert (typ, data) == ("OK", [str(BIG).encode()])
        # UIDs were given in entry order: UID k+1 is message k.
        typ, got = c.uid("FETCH", "50001:50100",
                         "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK"
        subjects = [part[1] for part in got if isinstance(part, tuple)]
        assert subjects == [f"Subject: message {k}\r\n\r\n".encode()
                            for k in range(50000, 50100)]
        typ, got = c.fetch("99001:*", "(BODY.PEEK[])")  # some 250 KB: sent in batches
        assert typ == "OK"
        bodies = [part[1] for part in got if isinstance(part, tuple)]
        assert [b.split(b"\r\n\r\n", 1)[1] for b in bodies] == [
            f"Body of message {k}.\r\n".encode() for k in range(99000, BIG)]
        # 1,100 messages named, 1,100 bodies read: not the other 98,900.
        assert len(reads.envelopes) == 1100
        assert c.store("7", "+FLAGS", "\\Seen")[0] == "OK"
        assert c.uid("SEARCH", "SEEN") == ("OK", [b"7"])
        typ, [unseen] = c.search(None, "UNSEEN")
        assert typ == "OK" and len(unseen.split()) == BIG - 1
        assert c.uid("SEARCH", "UID 99998:*") == ("OK", [b"99998 99999 100000"])
        # IDLE: a message committed by another connection to the store is
        # announced, as mail delivered meanwhile would be.
        idle = socket.create_connection(("127.0.0.1", s.imap_port), timeout=60)
        lines = idle.makefile("rb")
        idle.sendall(f"a LOGIN {BOB} secret\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
        while not lines.readline().startswith(b"+ "):
            pass
        fill(db, BIG, 1)
        assert lines.readline() == f"* {BIG + 1} EXISTS\r\n".encode()
        idle.sendall(b"DONE\r\n")
        assert lines.readline().startswith(b"c OK ")
        idle.close()
        c.logout()
    finally:
        s.stop()


def test_a_long_header_is_read_beyond_the_first_octets(server: InProcessServer) -> None:
    """A header longer than what a FETCH of headers reads of each message
    in one batch (imap_server.HEAD_LIMIT) is read whole all the same; a body
    longer than an output batch is streamed whole; and Pending's summaries
    answer HEADER.FIELDS too (they are never kept: they are made, not
    stored)."""
    filler = "".join(f"X-Filler-{i}: {'x' * 70}\r\n" for i in range(300))  # ~25 KB
    text = "".join(f"Line {i} of a body longer than one output batch.\r\n"
                   for i in range(2000))  # ~100 KB: streamed, not batched
    alice = server.client(ALICE)
    alice.submit([BOB], f"From: Alice <{ALICE}>\r\nTo: {BOB}\r\n{filler}"
                        f"Subject: after a long header\r\n\r\n{text}".encode())
    alice.quit()
    entry = 0

    def waiting() -> bool:
        nonlocal entry
        bob = server.client(BOB)
        lines = bob.call(wire.Envs(False)).lines or []
        bob.quit()
        entry = int(lines[0].split()[0]) if lines else 0
        return bool(lines)

    wait_for(waiting, "the envelope")
    assert server.imap_port is not None
    c = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    c.login(BOB, "secret")
    c.select("Pending")
    typ, got = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert (typ, got[0][1]) == ("OK", b"Subject: after a long header\r\n\r\n")  # type: ignore[index]
    bob = server.client(BOB)
    bob.call(wire.UserDecision(Decision.ACCEPT, entry))
    bob.quit()

    def arrived() -> bool:
        return c.select("INBOX")[1] == [b"1"]

    wait_for(arrived, "the message in INBOX")
    for _ in range(2):  # read, then answered from what was kept
        typ, got = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT X-FILLER-299)])")
        assert typ == "OK"
        assert got[0][1] == (f"X-Filler-299: {'x' * 70}\r\n"  # type: ignore[index]
                             "Subject: after a long header\r\n\r\n").encode()
    bob = server.client(BOB)
    whole = bob.call(wire.Retr(1)).body
    bob.quit()
    typ, got = c.fetch("1", "(BODY.PEEK[])")
    assert typ == "OK" and got[0][1] == whole and len(whole or b"") > 100_000  # type: ignore[index]
    c.logout()


def test_a_body_shorter_than_listed_ends_the_session(server: InProcessServer,
                                                     tmp_path: Path) -> None:
    """A small body is sent with the FETCH's other output, not streamed: if
    it is not the size the listing gave (it changed as it was read), the
    session ends, as for a long one, rather than send a literal cut short."""
    deliver(server, "changing", "This body will shrink.")
    store = SqliteStore(tmp_path / "b.example.sqlite3")
    with store.transaction():
        store._db.execute("UPDATE in_envelopes SET size = size + 10")
    store.close()
    assert server.imap_port is not None
    raw = socket.create_connection(("127.0.0.1", server.imap_port), timeout=10)
    raw.sendall(f"a LOGIN {BOB} secret\r\nb SELECT INBOX\r\nc FETCH 1 BODY.PEEK[]\r\n".encode())
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while data := raw.recv(65536):  # until the server ends the session
            got += data
    raw.close()
    assert b"b OK" in got and b"c OK" not in got, got


def test_flags_stored_by_two_sessions_reach_each_other(server: InProcessServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A session's own STORE spares it (and the next session) reading the
    whole mailbox again (imap_server ImapSession._set_flags); the flags are
    right all the same, in its session, in the next one, and in a session
    that stored flags after another did."""
    from smdp.server import imap_server

    for subject in ("one", "two"):
        deliver(server, subject, f"Message {subject}.")
    assert server.imap_port is not None

    def session() -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
        c.login(BOB, "secret")
        c.select("INBOX")
        return c

    store = server._server.store if server._server is not None else None
    listed: list[int] = []
    real = store.imap_view  # type: ignore[union-attr]

    def counted(*args: Any) -> Any:
        listed.append(1)
        return real(*args)

    store.imap_view = counted  # type: ignore[union-attr, method-assign]
    a, b = session(), session()
    assert a.store("1", "+FLAGS", "\\Flagged")[0] == "OK"
    read = len(listed)
    assert a.store("1", "+FLAGS", "\\Flagged")[0] == "OK"  # no change: nothing stored
    a.noop()
    assert session().search(None, "FLAGGED") == ("OK", [b"1"])  # the next session
    assert len(listed) == read  # neither read the mailbox again
    # b changed nothing since it looked; a stored since: b's STORE is
    # followed by a's flags on b's next poll.
    assert b.store("2", "+FLAGS", "\\Seen")[0] == "OK"
    b.noop()
    assert b.search(None, "FLAGGED") == ("OK", [b"1"])
    assert session().search(None, "SEEN") == ("OK", [b"2"])
    # Kept listings dropped (as beyond LISTINGS_KEPT): a STORE still counts.
    a.noop()
    imap_server._LISTINGS.clear()
    assert a.store("2", "-FLAGS", "\\Seen")[0] == "OK"
    assert session().search(None, "UNSEEN") == ("OK", [b"1 2"])
    # Two ranges (not one slice): every message named, in order, once.
    uids = [re.search(rb"UID (\d+)", part).group(1)  # type: ignore[union-attr]
            for part in a.uid("FETCH", "2,1:1", "(UID)")[1] if isinstance(part, bytes)]
    assert uids == [b"1", b"2"]
    assert [part for part in a.fetch("2,1", "(FLAGS)")[1] if isinstance(part, bytes)] == [
        b"1 (FLAGS (\\Flagged))", b"2 (FLAGS ())"]
    # Beyond LISTINGS_KEPT the least recently used listing goes: read again.
    monkeypatch.setattr(imap_server, "LISTINGS_KEPT", 1)
    session().select("Pending")
    read = len(listed)
    session()
    assert len(listed) == read + 1
    for c in (a, b):
        c.logout()
