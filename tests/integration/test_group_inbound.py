"""Mail from other servers to a local group (docs/lists.md, "Mail from other
servers"), through in-process servers: an SMDP origin's envelope to an
alias of b.example lands as a pending entry for each member with a mailbox
there, each decides, the one who accepts pulls the body once; members
elsewhere are not forwarded to, a group with none here and a list's
non-member are refused at RCPT with the reason; SMTP at the MX the same."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.core import groups
from smdp.protocol import user as wire
from smdp.store import Store, open_store
from smdp.terms import Decision

from .harness import PeerSocket
from .inprocess import InProcessServer, inprocess_pair
from .test_groups import pending, submit, three
from .test_inprocess_flow import lines, wait_for
from .test_mx import mx, smtp

# In-process servers: SQLite whatever the pass (as test_groups.py).
pytestmark = pytest.mark.own_backend


@contextlib.contextmanager
def store_of(server: InProcessServer) -> Iterator[Store]:
    store = open_store(server.config)
    try:
        yield store
    finally:
        store.close()


def make_group(server: InProcessServer, address: str, members: list[str],
               kind: str = "alias", owner: str | None = None) -> None:
    """What ``smdp admin group create`` and ``add`` do (test_groups.py runs
    those commands themselves), on the running server's store."""
    with store_of(server) as store:
        groups.create(store, server.config.domains, address, kind, owner)
        groups.add_members(store, address, members)


def sent(server: InProcessServer, subject: str) -> dict[str, tuple[str, str]]:
    """At the origin: each recipient of the message ``subject`` -> (state, detail)."""
    with store_of(server) as store:
        return {r.recipient: (r.state, r.detail)
                for user in store.users() for msg in store.out_messages_of(user.id, 100)
                if msg.subject == subject for r in store.out_recipients(msg.id)}


def entry_of(server: InProcessServer, user: str) -> tuple[int, str]:
    """The user's one pending entry: (id, the rest of its ENVS line)."""
    found = pending(server, user)
    assert len(found) == 1, found
    number, _, rest = found[0].partition(" ")
    return int(number), rest


def state(server: InProcessServer, user: str, entry: int) -> str:
    """The entry's state as ENVS ALL shows it."""
    client = server.client(user)
    try:
        return next(line.split()[1] for line in lines(client, wire.Envs(True))
                    if int(line.split()[0]) == entry)
    finally:
        client.quit()


def pulls(caplog: pytest.LogCaptureFixture) -> int:
    """The pulls the origins served, as their logs say."""
    return sum(1 for r in caplog.records if r.getMessage().startswith("pull served "))


def test_an_outside_envelope_to_an_alias_reaches_each_local_member(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smdp.peer")
    caplog.set_level(logging.INFO, logger="smdp.delivery")
    with three(tmp_path) as (a, b, c):
        make_group(b, "info@b.example", ["bob@b.example", "carol@b.example"])
        submit(a, "alice@a.example", ["info@b.example"], "to info")
        wait_for(lambda: len(pending(b, "bob@b.example")) == 1
                 and len(pending(b, "carol@b.example")) == 1, "an entry for each member")
        assert sent(a, "to info") == {"info@b.example": ("envelope-sent", "")}
        bob_entry, bob_line = entry_of(b, "bob@b.example")
        carol_entry, _ = entry_of(b, "carol@b.example")
        assert bob_line.endswith(" to info")
        bob = b.client("bob@b.example")
        assert "Recipient: info@b.example" in lines(bob, wire.EnvShow(bob_entry))
        # Carol rejects first: the origin must keep the message for bob.
        carol = b.client("carol@b.example")
        carol.call(wire.UserDecision(Decision.REJECT, carol_entry))
        carol.quit()
        bob.call(wire.UserDecision(Decision.ACCEPT, bob_entry))
        wait_for(lambda: sent(a, "to info")["info@b.example"][0] == "delivered",
                 "bob's acceptance at the origin")
        assert pulls(caplog) == 1
        # Delivered-To names the group: bob knows it came through info@.
        message = bob.read(bob_entry)
        bob.quit()
        assert b"\r\nDelivered-To: info@b.example\r\n" in message
        assert message.endswith(b"Hello all.\r\n")
        # Carol's rejection was never sent: the origin shows bob's acceptance.
        assert sent(a, "to info") == {"info@b.example": ("delivered",
                                                         "accepted by recipient")}
        assert pending(c, "erin@c.example") == []
        # Both accept the next one: one pull for the envelope, the second
        # acceptance names the copy already here (BODY=HELD).
        submit(a, "alice@a.example", ["info@b.example"], "again")
        wait_for(lambda: len(pending(b, "bob@b.example")) == 1
                 and len(pending(b, "carol@b.example")) == 1, "the second envelope")
        accepted = {}
        for user in ("bob@b.example", "carol@b.example"):
            accepted[user] = entry_of(b, user)[0]
            member = b.client(user)
            member.call(wire.UserDecision(Decision.ACCEPT, accepted[user]))
            member.quit()
        wait_for(lambda: all(state(b, user, entry) == "accepted"
                             for user, entry in accepted.items()), "both copies here")
        # Each acceptance's decision went: one with the pull, one without.
        wait_for(lambda: sum(1 for r in caplog.records if r.getMessage().startswith(
            "message delivered entry=") and "recipient=info@b.example" in r.getMessage())
            == 3, "the decisions' answers")
        assert pulls(caplog) == 2
        assert any(r.getMessage().endswith("how=held-copy") for r in caplog.records)
        assert sent(a, "again")["info@b.example"][0] == "delivered"


def test_members_elsewhere_are_not_forwarded_to(tmp_path: Path) -> None:
    with three(tmp_path) as (a, b, c):
        make_group(b, "mixed@b.example", ["carol@b.example", "erin@c.example"])
        make_group(b, "far@b.example", ["erin@c.example", "frank@a.example"])
        submit(a, "alice@a.example", ["mixed@b.example"], "mixed")
        submit(a, "alice@a.example", ["far@b.example"], "far")
        wait_for(lambda: sent(a, "far")["far@b.example"][0] == "failed"
                 and len(pending(b, "carol@b.example")) == 1, "both envelopes' answers")
        assert sent(a, "far")["far@b.example"][1] == (
            "550 5.1.1 <far@b.example>: no member of this group has a mailbox here, and this "
            "server does not forward mail to other servers")
        assert sent(a, "mixed") == {"mixed@b.example": ("envelope-sent", "")}
        carol_entry, _ = entry_of(b, "carol@b.example")
        carol = b.client("carol@b.example")
        carol.call(wire.UserDecision(Decision.ACCEPT_AUTH, carol_entry))
        carol.quit()
        wait_for(lambda: sent(a, "mixed")["mixed@b.example"][0] == "delivered",
                 "carol's acceptance at the origin")
        # AUTHORIZE put the group on alice's white list (Table 2): her next
        # message tries the direct way, is told 551, and goes as an envelope,
        # which carol's own white list (Table 3, hers) accepts at once.
        submit(a, "alice@a.example", ["mixed@b.example"], "mixed again")
        wait_for(lambda: sent(a, "mixed again").get("mixed@b.example", ("",))[0]
                 == "delivered", "the envelope after 551, accepted")
        assert pending(b, "carol@b.example") == []
        # Neither erin nor frank got anything from b.example.
        assert pending(c, "erin@c.example") == [] and pending(a, "frank@a.example") == []


def test_a_list_takes_outside_posts_from_its_members_only(tmp_path: Path) -> None:
    with three(tmp_path) as (a, b, _c):
        make_group(b, "team@b.example", ["carol@b.example", "alice@a.example"], kind="list",
                   owner="bob@b.example")
        submit(a, "dave@a.example", ["team@b.example"], "from a stranger")
        submit(a, "alice@a.example", ["team@b.example"], "from a member")
        wait_for(lambda: sent(a, "from a stranger")["team@b.example"][0] == "failed"
                 and len(pending(b, "carol@b.example")) == 1, "both posts' answers")
        assert sent(a, "from a stranger")["team@b.example"][1] == (
            "550 5.7.1 <team@b.example>: the list takes posts from its members only")
        assert entry_of(b, "carol@b.example")[1].endswith(" from a member")
        assert sent(a, "from a member") == {"team@b.example": ("envelope-sent", "")}
        # The owner is no member: nothing for bob.
        assert pending(b, "bob@b.example") == []


def test_smtp_mail_to_an_alias_is_held_for_each_local_member(tmp_path: Path) -> None:
    with mx(tmp_path) as s:
        make_group(s, "info@b.example", ["bob@b.example", "carol@b.example",
                                         "erin@c.example"])
        make_group(s, "far@b.example", ["erin@c.example"])
        make_group(s, "team@b.example", ["carol@b.example", "friend@c.example"], kind="list",
                   owner="bob@b.example")
        c = smtp(s)
        assert c.sendmail("friend@c.example", ["info@b.example", "team@b.example"],
                          b"From: friend@c.example\r\nSubject: hi all\r\n\r\nHello\r\n") == {}
        assert c.mail("stranger@c.example")[0] == 250
        assert c.rcpt("far@b.example") == (
            550, b"5.1.1 <far@b.example>: no member of this group has a mailbox here, and "
                 b"this server does not forward mail to other servers")
        assert c.rcpt("team@b.example") == (
            550, b"5.7.1 <team@b.example>: the list takes posts from its members only")
        c.rset()
        c.quit()
        bob_entry, bob_line = entry_of(s, "bob@b.example")
        assert bob_line.endswith(" hi all")
        # Carol is reached by both groups: an entry for each.
        assert len(pending(s, "carol@b.example")) == 2
        bob = s.client("bob@b.example")
        bob.call(wire.UserDecision(Decision.ACCEPT, bob_entry))
        message = bob.read(bob_entry)
        bob.quit()
        assert b"\r\nDelivered-To: info@b.example\r\n" in message


def test_a_direct_message_to_a_group_is_told_to_send_an_envelope(tmp_path: Path) -> None:
    with inprocess_pair(tmp_path, users={"a.example": ("alice@a.example",),
                                         "b.example": ("bob@b.example",)}) as (_a, b):
        make_group(b, "info@b.example", ["bob@b.example"])
        p = PeerSocket(b.peer_port)
        assert p.cmd("EHLO smdp.a.example").startswith("250-")
        assert p.cmd(f"MAIL From:<alice@a.example> ID={'q' * 26}").startswith("250 ")
        assert p.cmd("RCPT To:<info@b.example>") == (
            "551 5.7.1 <info@b.example> is a group whose members each decide; send an envelope")
        assert p.cmd("RCPT To:<nobody@b.example>") == (
            "550 5.1.1 <nobody@b.example>: no such user here")
        p.close()
