"""What a recipient's mail program reads (issue 10, items 5 and 8), through two
in-process servers (``inprocess.py``) and the standard library's ``poplib``:

- a message saved from an mbox file (a leading "From " line) keeps its header:
  the envelope shows its subject and first lines, and the delivered message
  starts with its own header;
- a delivered message carries the trace fields of protocol.md 8.4: one
  Return-Path, one Delivered-To and a Received field per hop (submission at
  the origin, storage at the destination), the rest unchanged, with sizes
  that count them.
"""

from __future__ import annotations

import poplib
import re
from pathlib import Path

from smdp.protocol import user as wire
from smdp.terms import Decision

from .inprocess import InProcessServer, inprocess_pair
from .test_inprocess_flow import lines, sent_states, wait_for

USERS = {"a.example": ("alice@a.example", "carol@a.example"),
         "b.example": ("bob@b.example",)}

# Complete: submission adds nothing to it but its Received field, so what
# follows the trace fields in the delivered copy must be exactly this.
MESSAGE = (b"From: Alice <alice@a.example>\r\nTo: bob@b.example\r\n"
           b"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <trace-1@a.example>\r\n"
           b"Subject: trace\r\n\r\nFirst line.\r\n.a line that starts with a dot\r\n\r\nBye.\r\n")

_DATE = r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"


def submit(server: InProcessServer, user: str, rcpt: str, message: bytes,
           *, direct: bool = False) -> str:
    """Send ``message``; its msgid (the "queued as" of the DATA answer).
    ``direct``: the answer must say it is sent directly (Table 3)."""
    client = server.client(user)
    try:
        reply = client.submit([rcpt], message)
    finally:
        client.quit()
    match = re.match(r"queued as (\S+) ", reply)
    assert match is not None, reply
    assert ("sent directly" in reply) is direct, reply
    return match.group(1)


def pending(server: InProcessServer, user: str) -> int:
    client = server.client(user)
    try:
        return len(lines(client, wire.Envs(False)))
    finally:
        client.quit()


def decide(server: InProcessServer, user: str, decision: Decision) -> dict[str, str]:
    """Take ``decision`` on the user's one pending envelope; its ENV fields before."""
    client = server.client(user)
    try:
        [pending] = lines(client, wire.Envs(False))
        entry = int(pending.split()[0])
        fields = [line.split(": ", 1) for line in lines(client, wire.EnvShow(entry))
                  if ": " in line]
        shown = dict(fields)
        shown["Headlines"] = " | ".join(value for name, value in fields if name == "Headline")
        client.call(wire.UserDecision(decision, entry))
    finally:
        client.quit()
    return shown


def retr_all(server: InProcessServer, user: str) -> list[tuple[bytes, int, int, str]]:
    """Every message by POP3: (RETR octets, RETR's announced size, LIST size, UIDL)."""
    pop = poplib.POP3("127.0.0.1", server.user_port, timeout=10)
    try:
        pop.user(user)
        pop.pass_("secret")
        sizes = dict(tuple(map(int, line.split())) for line in pop.list()[1])
        uids = dict(line.decode().split() for line in pop.uidl()[1])
        got = []
        for n in sorted(sizes):
            resp, body_lines, _ = pop.retr(n)
            announced = int(resp.split()[1])
            got.append((b"".join(line + b"\r\n" for line in body_lines), announced,
                        sizes[n], uids[str(n)]))
        return got
    finally:
        pop.quit()


def trace_of(message: bytes) -> tuple[list[str], bytes]:
    """The four trace fields at the top of ``message`` and what follows them."""
    parts = message.split(b"\r\n", 4)
    return [p.decode("ascii") for p in parts[:4]], parts[4]


def assert_delivered(message: bytes, *, sender: str, rcpt: str, origin: str, dest: str,
                     envid: str, msgid: str) -> bytes:
    """One Return-Path, one Delivered-To, the two Received fields (pull, then
    submission), in that order, with their values; the rest is returned."""
    fields, rest = trace_of(message)
    assert fields[0] == f"Return-Path: <{sender}>"
    assert fields[1] == f"Delivered-To: {rcpt}"
    assert re.fullmatch(rf"Received: from {re.escape(origin)} by {re.escape(dest)} with SMDP "
                        rf"id {envid}; {_DATE}", fields[2]), fields[2]
    assert re.fullmatch(rf"Received: from \[127\.0\.0\.1\] by {re.escape(origin)} "
                        rf"with SMDP-user id {msgid}; {_DATE}", fields[3]), fields[3]
    header = message.split(b"\r\n\r\n", 1)[0]
    for name, count in ((b"Return-Path", 1), (b"Delivered-To", 1), (b"Received", 2)):
        assert len(re.findall(rb"(?im)^" + name + rb":", header)) == count, name
    return rest


def test_trace_fields_of_a_pulled_and_a_direct_message(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        first = submit(a, "alice@a.example", "bob@b.example", MESSAGE)
        wait_for(lambda: sent_states(a, "alice@a.example") == {"bob@b.example": "envelope-sent"},
                 "the envelope to reach b.example")
        # ACCEPT&AUTH: this one is pulled, the next one is sent directly (Table 3).
        decide(b, "bob@b.example", Decision.ACCEPT_AUTH)
        wait_for(lambda: sent_states(a, "alice@a.example") == {"bob@b.example": "delivered"},
                 "the pull")
        second = submit(a, "alice@a.example", "bob@b.example",
                        MESSAGE.replace(b"trace-1", b"trace-2"), direct=True)
        wait_for(lambda: len(retr_all(b, "bob@b.example")) == 2, "the direct send")

        got = retr_all(b, "bob@b.example")
        for (message, announced, listed, uid), msgid, text in zip(
                got, (first, second), (MESSAGE, MESSAGE.replace(b"trace-1", b"trace-2")),
                strict=True):
            envid = uid.split(".")[0]
            rest = assert_delivered(message, sender="alice@a.example", rcpt="bob@b.example",
                                    origin="smdp.a.example", dest="smdp.b.example",
                                    envid=envid, msgid=msgid)
            assert rest == text  # otherwise unchanged, dot line included
            # RETR's "+OK <n> octets" and LIST count the trace fields.
            assert announced == listed == len(message)


def test_trace_fields_of_local_delivery(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, _b):
        msgid = submit(a, "alice@a.example", "carol@a.example",
                       MESSAGE.replace(b"bob@b.example", b"carol@a.example"))
        wait_for(lambda: pending(a, "carol@a.example") == 1, "the envelope to reach carol")
        decide(a, "carol@a.example", Decision.ACCEPT)
        wait_for(lambda: len(retr_all(a, "carol@a.example")) == 1, "the local pull")
        [(message, announced, listed, uid)] = retr_all(a, "carol@a.example")
        rest = assert_delivered(message, sender="alice@a.example", rcpt="carol@a.example",
                                origin="smdp.a.example", dest="smdp.a.example",
                                envid=uid.split(".")[0], msgid=msgid)
        assert rest == MESSAGE.replace(b"bob@b.example", b"carol@a.example")
        assert announced == listed == len(message)


# Saved from an mbox file: the "From " line, then the header of the message
# as delivered to its first recipient, Return-Path included.
MBOX_MESSAGE = (b"From alice@a.example  Mon Sep 23 12:34:56 2002\n"
                b"Return-Path: <fork-admin@xent.com>\nX-Mailer: Mutt\n"
                b"From: Alice <alice@a.example>\nTo: bob@b.example\n"
                b"Date: Mon, 23 Sep 2002 12:34:56 +0000\nMessage-ID: <mbox-1@a.example>\n"
                b"Subject: Meeting moved\n\n"
                b"The meeting is at ten now.\nRoom 2, as before.\n")


def test_a_message_saved_from_an_mbox_file_keeps_its_header(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        msgid = submit(a, "alice@a.example", "bob@b.example", MBOX_MESSAGE)
        wait_for(lambda: sent_states(a, "alice@a.example") == {"bob@b.example": "envelope-sent"},
                 "the envelope to reach b.example")
        shown = decide(b, "bob@b.example", Decision.ACCEPT)
        assert shown["Subject"] == "Meeting moved"
        assert shown["From-Name"] == "Alice"
        assert shown["Headlines"] == "The meeting is at ten now. | Room 2, as before."
        wait_for(lambda: len(retr_all(b, "bob@b.example")) == 1, "the pull")
        [(message, _announced, _listed, uid)] = retr_all(b, "bob@b.example")
        rest = assert_delivered(message, sender="alice@a.example", rcpt="bob@b.example",
                                origin="smdp.a.example", dest="smdp.b.example",
                                envid=uid.split(".")[0], msgid=msgid)
        # The message's own header, without the mbox line or its old Return-Path.
        expected = MBOX_MESSAGE.split(b"\n", 2)[2].replace(b"\n", b"\r\n")
        assert rest == expected
