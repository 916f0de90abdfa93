"""``smdp client`` as a user runs it (a real process) against in-process
servers (issue 10, items 3 and 4):

- one id per mailbox entry, from its envelope to its message, in every
  command: after a reject or a delete, ``read`` and ``delete`` of another id
  act on exactly that entry, and a deleted id says so instead of acting on
  whatever now has its place;
- ``send`` composes a message (``--subject``) or sends a prepared one
  (``--raw``), never mistaking the one for the other, and encodes what needs
  encoding instead of refusing it.
"""

from __future__ import annotations

import email.policy
import email.utils
import os
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from smdp.client.session import ClientError, UserClient
from smdp.protocol import user as wire
from smdp.terms import Decision
from tests.conditions import wait_until

from .inprocess import InProcessServer, inprocess_pair

ALICE, BOB = "alice@a.example", "bob@b.example"
USERS = {"a.example": (ALICE,), "b.example": (BOB,)}


def client(server: InProcessServer, user: str, *args: str, stdin: str | bytes = b"",
           tz: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SMDP_PASSWORD="secret")
    if tz is not None:
        env["TZ"] = tz
    data = stdin.encode() if isinstance(stdin, str) else stdin
    result = subprocess.run(
        [sys.executable, "-m", "smdp", "client", "--server", f"127.0.0.1:{server.user_port}",
         "-u", user, *args], input=data, capture_output=True, env=env, timeout=60)
    out = subprocess.CompletedProcess(result.args, result.returncode,
                                      result.stdout.decode(), result.stderr.decode())
    assert "Traceback" not in out.stderr, out.stderr
    return out


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a command that failed."""
    assert result.returncode == 1 and result.stdout == "", result
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def envelopes(server: InProcessServer, user: str, *, all: bool = False) -> list[list[str]]:
    c = server.client(user)
    try:
        return [line.split(" ", 5) for line in c.call(wire.Envs(all)).lines or []]
    finally:
        c.quit()


def by_subject(server: InProcessServer, user: str) -> dict[str, int]:
    """Each pending envelope's entry id, by its subject."""
    return {e[5]: int(e[0]) for e in envelopes(server, user)}


def states(server: InProcessServer, user: str) -> dict[int, str]:
    return {int(e[0]): e[1] for e in envelopes(server, user, all=True)}


def retrieve(server: InProcessServer, user: str, entry_id: int) -> bytes:
    c = server.client(user)
    try:
        return c.read(entry_id)
    finally:
        c.quit()


def test_one_id_per_entry_for_every_command(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        alice = a.client(ALICE)
        for subject in ("one", "two", "three"):
            alice.submit([BOB], f"Subject: {subject}\r\n\r\nmessage {subject}\r\n".encode())
        alice.quit()
        wait_until(lambda: len(envelopes(b, BOB)) == 3, what="three envelopes at b.example")
        # By subject: the origin's concurrent sessions do not fix the order
        # the envelopes arrive in, hence their entry ids.
        one, two, three = (by_subject(b, BOB)[s] for s in ("one", "two", "three"))
        bob = b.client(BOB)
        bob.call(wire.UserDecision(Decision.REJECT, one))
        for entry in (two, three):
            bob.call(wire.UserDecision(Decision.ACCEPT, entry))
        bob.quit()
        wait_until(lambda: states(b, BOB) == {one: "rejected", two: "accepted",
                                              three: "accepted"}, what="both pulled")
        alice = a.client(ALICE)
        alice.submit([BOB], b"Subject: four\r\n\r\nmessage four\r\n")
        alice.quit()
        wait_until(lambda: len(envelopes(b, BOB)) == 1, what="a fourth envelope")
        four = int(envelopes(b, BOB)[0][0])
        assert four > three

        r = client(b, BOB, "inbox")
        assert r.returncode == 0, r.stderr
        size_two, size_three = (len(retrieve(b, BOB, e)) for e in (two, three))
        size_four = envelopes(b, BOB)[0][3]
        assert r.stdout == "\n".join([
            f"{BOB} has 1 envelope(s) awaiting a decision and 2 message(s) "
            f"({size_two + size_three} octets)",
            "",
            "Envelopes awaiting your decision "
            "(smdp client show|accept|accept-auth|reject|reject-spam|reject-spammer ID):",
            f"ID  FROM             {'SIZE':<{len(size_four)}}  ATTACHMENTS  SUBJECT",
            f"{four:<2}  {ALICE}  {size_four:<4}  0            four",
            "",
            "Messages (smdp client read|delete ID):",
            "ID  SIZE  SUBJECT",
            *(f"{entry:<2}  {size:<4}  {subject}" for entry, size, subject in
              sorted([(two, size_two, "two"), (three, size_three, "three")])),
            ""])

        # Entry `one` was rejected, so `two` is POP3 message 1 of a session:
        # the client deletes by entry id, never by that number, and a second
        # delete of the same id says it is gone instead of taking `three`.
        r = client(b, BOB, "delete", str(two))
        assert (r.returncode, r.stdout) == (0, f"message {two} deleted\n")
        assert failed(client(b, BOB, "delete", str(two))) == f"smdp: message {two} was deleted"
        assert states(b, BOB) == {one: "rejected", two: "deleted", three: "accepted",
                                  four: "pending"}
        assert "message three" in client(b, BOB, "read", str(three)).stdout

        # What an id that is not a message to read says (the same words
        # through the CLI, whose errors are the ClientError's text).
        bob = b.client(BOB)
        try:
            for entry, why in (
                (one, f"envelope {one} was rejected; there is no message"),
                (four, f"envelope {four} awaits your decision; accept it first "
                       f"(smdp client accept {four})"),
                (99, "no message 99 in your mailbox"),
            ):
                with pytest.raises(ClientError) as caught:
                    bob.read(entry)
                assert str(caught.value) == why
        finally:
            bob.quit()


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def accept_and_fetch(b: InProcessServer) -> bytes:
    wait_until(lambda: len(envelopes(b, BOB)) == 1, what="the envelope at b.example")
    entry = int(envelopes(b, BOB)[0][0])
    bob = b.client(BOB)
    bob.call(wire.UserDecision(Decision.ACCEPT, entry))
    bob.quit()
    wait_until(lambda: states(b, BOB)[entry] == "accepted", what="the pull")
    return retrieve(b, BOB, entry)


def test_send_composes_what_it_is_given_and_encodes_what_needs_it(tmp_path: Path) -> None:
    """A body that looks like a header stays body; a non-ASCII subject and
    display names travel as RFC 2047 words, a 1,500-octet line as
    quoted-printable; all of it decodes back to what was given."""
    subject = "Grüße aus Köln — 会議"
    text = ("Note: meeting moved\n\nTo: the usual room, not the café.\n"
            + "long " * 300 + "end\n" + "ünïcode ✓\n")
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        r = client(a, ALICE, "send", "--to", BOB, stdin=text)
        assert failed(r) == ("smdp: send composes a message: give --subject (--subject '' for "
                             "none), or send a prepared message as it is with --raw FILE")
        r = client(a, ALICE, "send", "--to", f"Bob Ünal <{BOB}>", "--name", "Alice Ärger",
                   "--subject", subject, stdin=text, tz="XST-05:45")
        assert r.returncode == 0 and r.stdout.startswith("queued as "), r.stderr
        sent_at = time.time()
        assert envelopes(b, BOB)[0][5] == subject  # the envelope shows it decoded
        data = accept_and_fetch(b)

    assert data.isascii()  # nothing 8bit needed: QP for the body, words in the header
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = parsed(data)
    assert msg["Subject"] == subject
    assert [(x.display_name, x.addr_spec) for x in msg["To"].addresses] == [("Bob Ünal", BOB)]
    assert [(x.display_name, x.addr_spec) for x in msg["From"].addresses] == [
        ("Alice Ärger", ALICE)]
    # The client's own Date and Message-ID (the server adds its own only when
    # they are missing, in UTC and with its host name).
    assert str(msg["Date"]).endswith("+0545")
    assert abs(email.utils.parsedate_to_datetime(str(msg["Date"])).timestamp()
               - sent_at) < 120
    assert str(msg["Message-ID"]).endswith("@a.example>")
    assert len(msg.get_all("Message-ID") or []) == len(msg.get_all("Date") or []) == 1
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content().replace("\r\n", "\n") == text


def test_send_raw_sends_the_prepared_message_as_it_is(tmp_path: Path) -> None:
    raw = (b"From: Alice <alice@a.example>\r\nTo: bob@b.example\r\n"
           b"Subject: prepared\r\nDate: Mon, 1 Jan 2024 10:00:00 +0100\r\n"
           b"Message-ID: <prepared.1@a.example>\r\nX-Odd:   spaced    out\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xe9.\r\n.leading dot\r\n")
    prepared = tmp_path / "prepared.eml"
    prepared.write_bytes(raw)
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        r = client(a, ALICE, "send", "--to", BOB, "--raw", str(prepared), "--subject", "x")
        assert failed(r) == ("smdp: --raw sends a prepared message as it is: no --subject, "
                             "--file or --name with it")
        r = client(a, ALICE, "send", "--to", BOB, "--raw", "-", stdin=raw)
        assert r.returncode == 0, r.stderr
        data = accept_and_fetch(b)
    # Byte for byte, apart from the trace fields a server puts on top
    # (RFC 5321 4.4).
    assert data.endswith(raw)
    added = data[: len(data) - len(raw)].decode("ascii").split("\r\n")[:-1]
    assert all(line[:1] in (" ", "\t") or line.split(":")[0] in
               ("Return-Path", "Received", "Delivered-To") for line in added), added


def test_read_by_id_when_the_session_numbers_differ(tmp_path: Path) -> None:
    """The client's own API, as other programs use it: UserClient.read and
    delete take entry ids; the POP3 numbers of the session never leak out."""
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        alice = a.client(ALICE)
        for subject in ("first", "second"):
            alice.submit([BOB], f"Subject: {subject}\r\n\r\n{subject}\r\n".encode())
        alice.quit()
        wait_until(lambda: len(envelopes(b, BOB)) == 2, what="two envelopes")
        first, second = (by_subject(b, BOB)[s] for s in ("first", "second"))
        bob = b.client(BOB)
        for entry in (first, second):
            bob.call(wire.UserDecision(Decision.ACCEPT, entry))
        bob.quit()
        wait_until(lambda: set(states(b, BOB).values()) == {"accepted"}, what="the pulls")
        bob = b.client(BOB)
        assert bob.delete(first) == f"message {first} deleted"
        bob = UserClient("127.0.0.1", b.user_port)
        bob.login(BOB, "secret", verb="PASS")
        try:
            assert bob.message_number(second) == 1  # POP3 numbered it anew
            assert b"Subject: second" in bob.read(second)
        finally:
            bob.quit()
