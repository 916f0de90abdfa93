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
