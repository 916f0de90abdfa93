"""Table 5 LISTADD / LISTDEL: the user's own edits of the four lists
(core/lists.py), on a real SQLite store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from smdp.core.lists import (
    LIST_NAMES,
    ListRequest,
    Lists,
    list_pair,
    listing_reason,
    parse_list_request,
)
from smdp.core.outcomes import Kind, Outcome
from smdp.store import SqliteStore
from smdp.store.records import InboundListing
from smdp.terms import Decision, ListDirection, ListedBy, ListKind


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "lists.sqlite3")
    s.migrate()
    return s


def request(name: str, address: str, server: str | None = None) -> ListRequest:
    parsed = parse_list_request(name, address, server)
    assert isinstance(parsed, ListRequest), parsed
    return parsed


def test_the_four_list_names() -> None:
    assert LIST_NAMES == {
        "in-white": (ListDirection.INBOUND, ListKind.WHITE),
        "in-black": (ListDirection.INBOUND, ListKind.BLACK),
        "out-white": (ListDirection.OUTBOUND, ListKind.WHITE),
        "out-black": (ListDirection.OUTBOUND, ListKind.BLACK),
    }


def test_a_request_is_read_case_insensitively() -> None:
    assert parse_list_request("IN-White", "Alice@A.Example", "SMDP.A.example") == ListRequest(
        "in-white", ListDirection.INBOUND, ListKind.WHITE, "alice@a.example", "smdp.a.example")
    assert parse_list_request("out-black", "Bob@B.example", None) == ListRequest(
        "out-black", ListDirection.OUTBOUND, ListKind.BLACK, "bob@b.example", None)
    # An inbound request without a server asks the caller to find it.
    assert request("in-black", "x@y.example").server is None


def test_an_unknown_list_is_named_with_the_right_ones() -> None:
    assert parse_list_request("grey", "a@b.example", None) == Outcome(
        Kind.INVALID,
        "unknown list grey: use one of in-black, in-white, out-black, out-white")


def test_a_bad_address_is_invalid() -> None:
    outcome = parse_list_request("in-white", "not an address", "s.example")
    assert isinstance(outcome, Outcome) and outcome.kind is Kind.INVALID


def test_outbound_lists_take_no_server() -> None:
    assert parse_list_request("out-white", "a@b.example", "s.example") == Outcome(
        Kind.INVALID, "outbound lists hold addresses only (Table 2)")
    # An inbound list does take one.
    assert request("in-white", "a@b.example", "s.example").server == "s.example"


def test_requests_are_values() -> None:
    req = request("out-white", "a@b.example")
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.address = "c@d.example"  # type: ignore[misc]
    assert not hasattr(req, "__dict__")


@pytest.mark.parametrize("name", ["out-white", "out-black"])
def test_outbound_add_and_remove(store: SqliteStore, name: str) -> None:
    alice = store.create_user("alice@a.example", "x")
    lists = Lists(store)
    req = request(name, "Bob@B.example")
    added = lists.edit(alice.id, req, adding=True)
    assert added == Outcome(Kind.DONE, f"bob@b.example added to your {name} list")
    [entry] = store.list_entries(alice.id)
    assert (entry.direction, entry.kind, entry.address, entry.server, entry.how) == (
        ListDirection.OUTBOUND, req.kind, "bob@b.example", None, ListedBy.MANUAL)
    removed = lists.edit(alice.id, req, adding=False)
    assert removed == Outcome(Kind.DONE, f"bob@b.example removed from your {name} list")
    assert store.list_entries(alice.id) == []
    again = lists.edit(alice.id, req, adding=False)
    assert again == Outcome(Kind.UNKNOWN, f"bob@b.example is not on your {name} list")


@pytest.mark.parametrize("name", ["in-white", "in-black"])
def test_inbound_add_and_remove(store: SqliteStore, name: str) -> None:
    bob = store.create_user("bob@b.example", "x")
    lists = Lists(store)
    req = request(name, "alice@a.example", "smdp.a.example")
    added = lists.edit(bob.id, req, adding=True)
    assert added == Outcome(Kind.DONE, f"alice@a.example added to your {name} list")
    [entry] = store.list_entries(bob.id)
    assert (entry.direction, entry.kind, entry.address, entry.server, entry.how) == (
        ListDirection.INBOUND, req.kind, "alice@a.example", "smdp.a.example", ListedBy.MANUAL)
    # The pair is (address, server): the same address from another server is
    # another entry, not this one.
    other = request(name, "alice@a.example", "rogue.example")
    assert lists.edit(bob.id, other, adding=False).kind is Kind.UNKNOWN
    removed = lists.edit(bob.id, req, adding=False)
    assert removed == Outcome(Kind.DONE, f"alice@a.example removed from your {name} list")
    assert store.list_entries(bob.id) == []


def test_an_inbound_edit_needs_its_server(store: SqliteStore) -> None:
    bob = store.create_user("bob@b.example", "x")
    with pytest.raises(AssertionError, match="an inbound entry names its server"):
        Lists(store).edit(bob.id, request("in-white", "alice@a.example"), adding=True)


def test_a_listing_reason_names_its_evidence() -> None:
    """Issue 16 item 2: the list, the day (UTC) and what put the pair there;
    evidence only when both the entry and the option are known."""
    # 2026-11-02T23:59:59Z: the day is UTC's, whatever the machine's zone.
    day = 1793663999.0
    made = InboundListing(ListKind.BLACK, ListedBy.AUTO, day, 14, Decision.REJECT_SPAMMER)
    assert listing_reason(made) == (
        "sender is on your black list since 2026-11-02 (your REJECT&SPAMMER on envelope 14)")
    assert listing_reason(made, how="sent directly", who="the list devs.a.example") == (
        "the list devs.a.example is on your black list since 2026-11-02 (your "
        "REJECT&SPAMMER on envelope 14; sent directly)")
    for entry, decision in ((None, Decision.ACCEPT_AUTH), (7, None), (None, None)):
        older = InboundListing(ListKind.WHITE, ListedBy.AUTO, day, entry, decision)
        assert listing_reason(older) == (
            "sender is on your white list since 2026-11-02 (by a decision of yours)")
    by_hand = InboundListing(ListKind.WHITE, ListedBy.MANUAL, day, 3, Decision.ACCEPT_AUTH)
    assert listing_reason(by_hand, how="From verified") == (
        "sender is on your white list since 2026-11-02 (you added it; From verified)")
    assert list_pair("devs.a.example") == "list:devs.a.example"
