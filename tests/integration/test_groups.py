"""Local lists and aliases (docs/lists.md) through in-process servers: an
address of a.example expands at submission to its members, local and
remote, one envelope per destination domain; a list post carries List-Id and
List-Unsubscribe naming the owner, and ``smdp admin group status`` shows the
owner each member's state once they decide."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.client.session import ClientError
from smdp.protocol import user as wire
from smdp.store import open_store
from smdp.terms import Decision

from .inprocess import InProcessServer
from .test_client_ids_and_send import client
from .test_inprocess_flow import lines, wait_for

# In-process servers: SQLite whatever the pass (as test_web.py).
pytestmark = pytest.mark.own_backend


def admin(server: InProcessServer, *args: str, ok: bool = True) -> str:
    """``smdp admin`` as a real process on the server's configuration."""
    result = subprocess.run(
        [sys.executable, "-m", "smdp", "admin", "--config", str(server.config_path), *args],
        capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert (result.returncode == 0) is ok, (result.stdout, result.stderr)
    return result.stdout if ok else result.stderr


@contextlib.contextmanager
def three(root: Path) -> Iterator[tuple[InProcessServer, InProcessServer, InProcessServer]]:
    servers = [InProcessServer(root, d) for d in ("a.example", "b.example", "c.example")]
    a, b, c = servers
    for server, users in ((a, ("alice@a.example", "dave@a.example", "frank@a.example")),
                          (b, ("bob@b.example", "carol@b.example")), (c, ("erin@c.example",))):
        for user in users:
            server.add_user(user)
    started: list[InProcessServer] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        for one in servers:
            for other in servers:
                if one is not other:
                    one.peer_with(other)
        yield a, b, c
    finally:
        for server in reversed(started):
            server.stop()


def pending(server: InProcessServer, user: str) -> list[str]:
    client = server.client(user)
    try:
        return lines(client, wire.Envs(False))
    finally:
        client.quit()


def submit(server: InProcessServer, user: str, to: list[str], subject: str) -> str:
    client = server.client(user)
    try:
        return client.submit(to, f"Subject: {subject}\r\n\r\nHello all.\r\n".encode())
    finally:
        client.quit()


def envelopes_of(server: InProcessServer, subject: str) -> dict[str, list[str]]:
    """At an origin: each envelope of the message ``subject`` -> its recipients."""
    store = open_store(server.config)
    try:
        found: dict[str, list[str]] = {}
        for user in store.users():
            for msg in store.out_messages_of(user.id, 100):
                if msg.subject == subject:
                    for r in store.out_recipients(msg.id):
                        found.setdefault(r.envid or "", []).append(r.recipient)
        return found
    finally:
        store.close()


def test_an_alias_delivers_to_a_local_and_a_remote_member_once(tmp_path: Path) -> None:
    with three(tmp_path) as (a, b, _c):
        admin(a, "group", "create", "all@a.example")
        admin(a, "group", "create", "more@a.example")
        # Loops: the alias holds another that holds it back, and itself twice over.
        assert admin(a, "group", "add", "all@a.example", "dave@a.example", "bob@b.example",
                     "more@a.example").splitlines() == [
            "dave@a.example added to all@a.example", "bob@b.example added to all@a.example",
            "more@a.example added to all@a.example"]
        admin(a, "group", "add", "more@a.example", "all@a.example", "bob@b.example")
        assert "cannot be a member of itself" in admin(
            a, "group", "add", "all@a.example", "all@a.example", ok=False)
        said = submit(a, "alice@a.example", ["all@a.example"], "to everyone")
        assert "(2 recipient(s))" in said
        wait_for(lambda: len(pending(a, "dave@a.example")) == 1, "the local member's envelope")
        wait_for(lambda: len(pending(b, "bob@b.example")) == 1, "the remote member's envelope")
        assert pending(b, "bob@b.example")[0].endswith(" to everyone")
        assert sorted(r for rs in envelopes_of(a, "to everyone").values() for r in rs) == [
            "bob@b.example", "dave@a.example"]
        # An alias's posts are no list's: no List-Id.
        bob = b.client("bob@b.example")
        entry = int(lines(bob, wire.Envs(False))[0].split()[0])
        assert not any(line.startswith("List-Id:") for line in lines(bob, wire.EnvShow(entry)))
        bob.quit()
        assert admin(a, "group", "list").splitlines() == [
            "all@a.example\talias\towner=-\t3 member(s)",
            "more@a.example\talias\towner=-\t2 member(s)"]


def test_a_list_sends_one_envelope_per_domain_and_the_owner_sees_each_state(
        tmp_path: Path) -> None:
    with three(tmp_path) as (a, b, c):
        assert admin(a, "group", "create", "team@a.example", "--kind", "list",
                     "--owner", "alice@a.example") == (
            "created list team@a.example, owned by alice@a.example\n")
        admin(a, "group", "add", "team@a.example", "bob@b.example", "carol@b.example",
              "erin@c.example")
        assert "(3 recipient(s))" in submit(a, "alice@a.example", ["team@a.example"], "agenda")
        wait_for(lambda: len(pending(b, "bob@b.example")) == 1
                 and len(pending(c, "erin@c.example")) == 1, "the envelopes")
        # One envelope per destination domain: b.example's two members share one.
        by_envelope = envelopes_of(a, "agenda")
        assert sorted(sorted(r) for r in by_envelope.values()) == [
            ["bob@b.example", "carol@b.example"], ["erin@c.example"]]
        bob, carol = b.client("bob@b.example"), b.client("carol@b.example")
        bob_entry = int(lines(bob, wire.Envs(False))[0].split()[0])
        carol_entry = int(lines(carol, wire.Envs(False))[0].split()[0])
        shown = lines(bob, wire.EnvShow(bob_entry))
        assert "List-Id: team.a.example" in shown
        assert ("List-Unsubscribe: <mailto:alice@a.example?subject=unsubscribe%20team%40a.example>"
                in shown)
        bob.call(wire.UserDecision(Decision.ACCEPT, bob_entry))
        carol.call(wire.UserDecision(Decision.REJECT, carol_entry))
        bob.quit()
        carol.quit()

        def view() -> list[str]:
            return admin(a, "group", "status", "team@a.example").splitlines()

        wait_for(lambda: "  carol@b.example rejected rejected by recipient" in view()
                 and any(line.startswith("  bob@b.example delivered") for line in view()),
                 "the decisions at the origin", timeout=30)
        status = view()
        assert status[0].split(" ", 2)[2] == "agenda"
        assert status[1:] == ["  bob@b.example delivered accepted by recipient",
                              "  carol@b.example rejected rejected by recipient",
                              "  erin@c.example envelope-sent"]
        # The owner's view on the user port: GROUP, to the owner only.
        alice = a.client("alice@a.example")
        reply = alice.call(wire.GroupStatus("team@a.example"))
        alice.quit()
        assert reply.text == "3 recipient status line(s) for team@a.example"
        assert [line.split(" ", 1)[1] for line in reply.lines or []] == [
            line.strip() for line in status[1:]]
        assert {line.split(" ", 1)[0] for line in reply.lines or []} == {status[0].split()[0]}
        dave = a.client("dave@a.example")
        with pytest.raises(ClientError, match=r"no group team@a\.example of yours"):
            dave.call(wire.GroupStatus("team@a.example"))
        with pytest.raises(ClientError, match=r"no group none@a\.example of yours"):
            dave.call(wire.GroupStatus("none@a.example"))
        dave.quit()


def test_who_may_post_to_a_list(tmp_path: Path) -> None:
    with three(tmp_path) as (a, _b, _c):
        admin(a, "group", "create", "team@a.example", "--kind", "list", "--owner",
              "alice@a.example")
        admin(a, "group", "add", "team@a.example", "dave@a.example", "bob@b.example")
        with pytest.raises(ClientError, match=r"only members of the list team@a\.example"):
            submit(a, "frank@a.example", ["team@a.example"], "spam")
        with pytest.raises(ClientError, match="goes to the list alone"):
            submit(a, "dave@a.example", ["team@a.example", "erin@c.example"], "both")
        assert "(2 recipient(s))" in submit(a, "dave@a.example", ["team@a.example"], "member")
        # smdp client group: the owner's view from the command line.
        wait_for(lambda: "2 recipient status line(s) for team@a.example" in client(
            a, "alice@a.example", "group", "team@a.example").stdout, "the owner's view")
        assert admin(a, "group", "members", "team@a.example").splitlines() == [
            "2 member(s)", "bob@b.example", "dave@a.example"]
        assert admin(a, "group", "remove", "team@a.example", "dave@a.example",
                     "zed@a.example").splitlines() == [
            "dave@a.example removed from team@a.example", "zed@a.example is not in team@a.example"]
        assert admin(a, "group", "delete", "team@a.example") == "deleted list team@a.example\n"
        assert "no group team@a.example" in admin(a, "group", "status", "team@a.example",
                                                  ok=False)
