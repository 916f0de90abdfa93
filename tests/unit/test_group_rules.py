"""Local groups' rules (docs/lists.md) on a real SQLite store: expansion,
loops and depth, who may post, the fields of a list post, and the
administrator's commands with each refusal."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from smdp.core import groups
from smdp.core.submission import SubmissionError
from smdp.store import Store, open_store

DOMAINS = ("a.example",)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(str(tmp_path / "g.sqlite3"))
    for address in ("alice@a.example", "dave@a.example"):
        s.create_user(address, "h")
    return s


def test_expansion_follows_groups_once_and_keeps_the_order(store: Store) -> None:
    alice = store.user_by_address("alice@a.example")
    assert alice is not None
    groups.create(store, DOMAINS, "x@a.example", "alias", None)
    groups.create(store, DOMAINS, "y@a.example", "alias", None)
    groups.add_members(store, "x@a.example", ["bob@b.example", "y@a.example", "dave@a.example"])
    groups.add_members(store, "y@a.example", ["x@a.example", "bob@b.example", "erin@c.example"])
    got = groups.expand(store, alice, "alice@a.example",
                        ["carol@b.example", "x@a.example", "y@a.example"])
    assert got.recipients == ["carol@b.example", "bob@b.example", "dave@a.example",
                              "erin@c.example"]
    assert [g.address for g in got.groups] == ["x@a.example", "y@a.example"]
    assert got.post_to is None and got.fields() == b""
    plain = groups.expand(store, alice, "alice@a.example", ["bob@b.example"])
    assert plain.recipients == ["bob@b.example"] and plain.groups == []


def test_groups_nested_too_deep_are_refused(store: Store) -> None:
    alice = store.user_by_address("alice@a.example")
    assert alice is not None
    names = [f"g{n}@a.example" for n in range(groups.MAX_DEPTH + 1)]
    for name in names:
        groups.create(store, DOMAINS, name, "alias", None)
    for outer, inner in itertools.pairwise(names):
        groups.add_members(store, outer, [inner])
    groups.add_members(store, names[-1], ["bob@b.example"])
    with pytest.raises(SubmissionError, match="nested more than 8 deep"):
        groups.expand(store, alice, "alice@a.example", [names[0]])
    assert groups.expand(store, alice, "alice@a.example", [names[1]]).recipients == [
        "bob@b.example"]


def test_a_list_post(store: Store) -> None:
    alice, dave = store.user_by_address("alice@a.example"), store.user_by_address(
        "dave@a.example")
    assert alice is not None and dave is not None
    groups.create(store, DOMAINS, "Team.Two@a.example", "list", "alice@a.example")
    groups.add_members(store, "team.two@a.example", ["bob@b.example"])
    got = groups.expand(store, alice, "alice@a.example", ["team.two@a.example"])
    assert got.fields() == (b"List-Id: <team.two.a.example>\r\nList-Unsubscribe: "
                            b"<mailto:alice@a.example?subject=unsubscribe%20team.two%40a.example>"
                            b"\r\n")
    with pytest.raises(SubmissionError, match="only members"):
        groups.expand(store, dave, "dave@a.example", ["team.two@a.example"])
    # A member posts as a member whatever the case of the address (the same
    # rule as for a post from another server: groups.may_post).
    groups.add_members(store, "team.two@a.example", ["dave@a.example"])
    assert groups.expand(store, dave, "Dave@A.example", ["team.two@a.example"]).recipients == [
        "bob@b.example", "dave@a.example"]
    assert groups.list_id("we+you@a.example") == "we+you.a.example"
    assert groups.list_id("\"a b\"@a.example") == "-a-b-.a.example"
    # An owner gone (the user deleted): posts still carry List-Id.
    assert groups.Expansion(post_to=got.post_to).fields() == (
        b"List-Id: <team.two.a.example>\r\n")


@pytest.mark.parametrize("args, why", [
    (("bad address", "alias", None), "group 'bad address'"),
    (("x@b.example", "alias", None), "not an address of this server's domains (a.example)"),
    (("x@a.example", "club", None), "kind must be one of alias, list"),
    (("alice@a.example", "alias", None), "a user's identity already"),
    (("x@a.example", "list", None), "a list needs an owner"),
    (("x@a.example", "alias", "nobody@a.example"), "no user nobody@a.example"),
    (("x@a.example", "alias", "bad owner"), "owner 'bad owner'"),
])
def test_create_refusals(store: Store, args: tuple[str, str, str | None], why: str) -> None:
    with pytest.raises(groups.GroupError, match=re.escape(why)):
        groups.create(store, DOMAINS, *args)


def test_the_administrators_commands(store: Store) -> None:
    assert groups.listing(store) == []
    assert groups.create(store, DOMAINS, "x@a.example", "alias", "dave@a.example") == (
        "created alias x@a.example, owned by dave@a.example")
    with pytest.raises(groups.GroupError, match="a group already"):
        groups.create(store, DOMAINS, "x@a.example", "alias", None)
    assert groups.add_members(store, "x@a.example", ["bob@b.example", "bob@b.example"]) == [
        "bob@b.example added to x@a.example", "bob@b.example is already in x@a.example"]
    with pytest.raises(groups.GroupError, match="member 'nope'"):
        groups.add_members(store, "x@a.example", ["nope"])
    assert groups.members(store, "x@a.example") == ["bob@b.example"]
    assert groups.listing(store) == ["x@a.example\talias\towner=dave@a.example\t1 member(s)"]
    assert groups.status(store, "x@a.example") == []
    with pytest.raises(groups.GroupError, match=r"no group y@a\.example"):
        groups.members(store, "y@a.example")
    assert groups.delete(store, "x@a.example") == "deleted alias x@a.example"
    with pytest.raises(groups.GroupError, match=r"no group x@a\.example"):
        groups.remove_members(store, "x@a.example", ["bob@b.example"])


# -- mail from other servers (docs/lists.md, "Mail from other servers") -------------


def test_an_address_reaches_its_user_or_a_groups_local_members_once(store: Store) -> None:
    alice, dave = store.user_by_address("alice@a.example"), store.user_by_address(
        "dave@a.example")
    assert alice is not None and dave is not None
    assert groups.reach(store, "alice@a.example") == groups.Reach((alice,))
    assert groups.reach(store, "nobody@a.example") == groups.Reach()
    store.add_identity(dave.id, "d@a.example")
    groups.create(store, DOMAINS, "info@a.example", "alias", None)
    groups.create(store, DOMAINS, "more@a.example", "alias", None)
    # dave by two of his addresses and through a nested group, which names
    # the first back (a loop): he is reached once; the member elsewhere and
    # the address of ours that is nobody's are not reached at all.
    groups.add_members(store, "info@a.example", ["dave@a.example", "bob@b.example",
                                                 "more@a.example", "gone@a.example"])
    groups.add_members(store, "more@a.example", ["info@a.example", "d@a.example",
                                                 "alice@a.example", "bob@b.example"])
    got = groups.reach(store, "info@a.example")
    assert got.users == (dave, alice)
    assert got.group is not None and got.group.address == "info@a.example"
    assert got.elsewhere == ("bob@b.example", "gone@a.example")
    assert not got.too_deep
    assert groups.inbound_refusal(store, got, "erin@c.example") is None
    assert groups.inbound_refusal(store, groups.reach(store, "alice@a.example"), "") is None


def test_a_group_with_no_local_member_refuses_mail_from_elsewhere(store: Store) -> None:
    groups.create(store, DOMAINS, "far@a.example", "alias", None)
    groups.add_members(store, "far@a.example", ["bob@b.example", "erin@c.example"])
    got = groups.reach(store, "far@a.example")
    assert got.users == () and got.elsewhere == ("bob@b.example", "erin@c.example")
    assert groups.inbound_refusal(store, got, "erin@c.example") == groups.Refusal(
        "5.1.1", "no member of this group has a mailbox here, and this server does not "
                 "forward mail to other servers")


def test_groups_nested_too_deep_refuse_mail_from_elsewhere_whole(store: Store) -> None:
    names = [f"g{n}@a.example" for n in range(groups.MAX_DEPTH + 1)]
    for name in names:
        groups.create(store, DOMAINS, name, "alias", None)
    for outer, inner in itertools.pairwise(names):
        groups.add_members(store, outer, [inner, "alice@a.example"])
    groups.add_members(store, names[-1], ["dave@a.example"])
    deep = groups.reach(store, names[0])
    assert deep.too_deep and [u.main_address for u in deep.users] == ["alice@a.example"]
    refusal = groups.inbound_refusal(store, deep, "erin@c.example")
    assert refusal is not None and refusal.status == "5.3.5"
    assert "nested more than 8 deep" in refusal.text
    # One level less: the same depth the origin's expansion allows.
    shallow = groups.reach(store, names[1])
    assert not shallow.too_deep
    assert [u.main_address for u in shallow.users] == ["alice@a.example", "dave@a.example"]


def test_a_list_takes_posts_from_elsewhere_from_its_members_and_owner_only(
        store: Store) -> None:
    groups.create(store, DOMAINS, "team@a.example", "list", "alice@a.example")
    groups.add_members(store, "team@a.example", ["dave@a.example", "bob@b.example"])
    got = groups.reach(store, "team@a.example")
    assert got.group is not None
    members_only = groups.Refusal("5.7.1", "the list takes posts from its members only")
    assert groups.inbound_refusal(store, got, "erin@c.example") == members_only
    assert groups.inbound_refusal(store, got, "") == members_only
    assert groups.inbound_refusal(store, got, "Bob@B.example") is None
    assert groups.inbound_refusal(store, got, "alice@a.example") is None  # the owner
    assert groups.inbound_refusal(store, got, "dave@a.example") is None
    # An alias takes mail from anyone.
    groups.create(store, DOMAINS, "all@a.example", "alias", None)
    groups.add_members(store, "all@a.example", ["dave@a.example"])
    assert groups.inbound_refusal(store, groups.reach(store, "all@a.example"),
                                  "erin@c.example") is None
