"""The whole SMDP flow against in-process servers (``inprocess.py``), told
only through the product's own commands: ``ENVS`` and ``ENV`` at the
recipient, the decision verbs, ``RETR``, ``SENT`` and ``LISTS`` at the sender.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from smdp.client.session import UserClient
from smdp.protocol import user as wire
from smdp.terms import Decision

from .inprocess import InProcessServer, inprocess_pair

USERS = {"a.example": ("alice@a.example",), "b.example": ("bob@b.example",)}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lines(client: UserClient, command: wire.UserCommand) -> list[str]:
    return list(client.call(command).lines or [])


def sent_states(server: InProcessServer, user: str) -> dict[str, str]:
    """SENT: recipient -> state, for every message the user sent."""
    c = server.client(user)
    try:
        return {line.split()[1]: line.split()[2] for line in lines(c, wire.Sent(None))}
    finally:
        c.quit()


def test_envelope_decision_and_pull_told_by_the_commands(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        alice = a.client("alice@a.example")
        queued = alice.submit(["bob@b.example"],
                              b"Subject: lunch\r\n\r\nAt noon, the usual place?\r\n")
        alice.quit()
        assert queued.startswith("queued as ") and "(1 recipient(s))" in queued

        wait_for(lambda: sent_states(a, "alice@a.example") == {"bob@b.example": "envelope-sent"},
                 "the envelope to reach b.example")
        bob = b.client("bob@b.example")
        pending = lines(bob, wire.Envs(False))
        assert len(pending) == 1
        entry, state, sender, _size, _attachments, subject = pending[0].split(" ", 5)
        assert (state, sender, subject) == ("pending", "alice@a.example", "lunch")
        shown = lines(bob, wire.EnvShow(int(entry)))
        assert "Server: smdp.a.example" in shown and "State: pending" in shown

        reply = bob.call(wire.UserDecision(Decision.ACCEPT_AUTH, int(entry)))
        assert reply.text == (f"envelope {entry} accepted; alice@a.example added to your "
                              "white list")
        bob.quit()

        wait_for(lambda: sent_states(a, "alice@a.example") == {"bob@b.example": "delivered"},
                 "the pull to finish")
        bob = b.client("bob@b.example")
        body = bob.call(wire.Retr(1)).body or b""
        assert b"At noon, the usual place?" in body
        # Table 2, ACCEPT&AUTH: the sender joins the recipient's inbound white
        # list, and the recipient the sender's outbound white list.
        assert any(line.startswith("in-white alice@a.example smdp.a.example auto")
                   for line in lines(bob, wire.Lists()))
        bob.quit()
        alice = a.client("alice@a.example")
        assert any(line.startswith("out-white bob@b.example auto")
                   for line in lines(alice, wire.Lists()))
        alice.quit()


def test_a_rejected_envelope_never_crosses_and_the_sender_sees_why(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users=USERS) as (a, b):
        alice = a.client("alice@a.example")
        alice.submit(["bob@b.example"], b"Subject: offer\r\n\r\nBuy now\r\n")
        alice.quit()
        bob = b.client("bob@b.example")
        wait_for(lambda: len(lines(bob, wire.Envs(False))) == 1, "the envelope")
        entry = int(lines(bob, wire.Envs(False))[0].split()[0])
        reply = bob.call(wire.UserDecision(Decision.REJECT_SPAMMER, entry))
        assert reply.text == (f"envelope {entry} rejected; alice@a.example added to your "
                              "black list")
        # Assumption 6: no accept after a rejection.
        refused = bob.conn.send(wire.UserDecision(Decision.ACCEPT, entry))
        bob.sock.sendall(refused)
        answer = bob._read()
        assert (answer.ok, answer.text) == (False, f"envelope {entry} was already rejected")
        assert bob.call(wire.Stat()).text == "0 0"  # nothing crossed: no message here
        bob.quit()
        wait_for(lambda: sent_states(a, "alice@a.example") == {"bob@b.example": "spammer"},
                 "the decision to reach the origin")
