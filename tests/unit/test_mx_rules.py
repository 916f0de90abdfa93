"""The MX's pure rules (core/mx.py) and Table 3 for SMTP mail
(``Destination.receive_smtp`` and the decisions on what it holds), on a real
SQLite store, no wire (issue 12; docs/smtp.md, "The MX")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smdp.core.destination import Destination, SmtpArrival
from smdp.core.mx import (
    client_prefix,
    forged_results,
    from_address,
    quality_keys,
    relay_refusal,
)
from smdp.core.outcomes import Kind
from smdp.mail.body import Body
from smdp.store.sqlite import SqliteStore
from smdp.terms import Decision, EntryState, ListedBy, ListKind
from tests.unit.test_core_rules import paper

DOMAINS = ("b.example",)
FRIEND = "friend@c.example"
MESSAGE = (f"From: Friend <{FRIEND}>\r\nTo: bob@b.example\r\nSubject: lunch\r\n\r\n"
           "Shall we?\r\n").encode()


# -- relay_refusal -------------------------------------------------------------------


@pytest.mark.parametrize(("recipient", "route", "why"), [
    ("bob@c.example", (), "not a domain of this server"),
    ("bob%c.example@b.example", (), "routing characters"),
    ("c.example!bob@b.example", (), "routing characters"),
    ('"bob@c.example"@b.example', (), "routing characters"),
    ('"bob"@b.example', (), "quoted local parts"),
    ("bob@b.example", ("a.example", "c.example"), "source routes"),
    ("bob@[127.0.0.1]", (), "address literals"),
    ("bob@[IPv6:::1]", (), "address literals"),
])
def test_every_relay_form_is_refused(recipient: str, route: tuple[str, ...], why: str) -> None:
    refusal = relay_refusal(recipient, route, DOMAINS)
    assert refusal is not None and why in refusal


def test_a_plain_local_address_is_no_relay() -> None:
    assert relay_refusal("bob@b.example", (), DOMAINS) is None
    assert relay_refusal("Bob@B.Example", (), DOMAINS) is None


# -- from_address --------------------------------------------------------------------


@pytest.mark.parametrize(("head", "found"), [
    (b"From: Friend <Friend@C.Example>\r\n\r\n", "friend@c.example"),
    (b"Subject: x\r\nFrom: a@c.example, b@d.example\r\n\r\n", "a@c.example"),
    (b"Subject: no author\r\n\r\n", None),
    (b"From: not an address\r\n\r\n", None),
    # An encoded word is display text: it never becomes the address.
    (b"From: =?utf-8?q?boss=40b.example?= <x@evil.example>\r\n\r\n", "x@evil.example"),
])
def test_from_address(head: bytes, found: str | None) -> None:
    assert from_address(head) == found


def test_forged_results_in_our_name_are_cut_out() -> None:
    head = (b"Received: x\r\nAuthentication-Results: mx.b.example; dkim=pass\r\n"
            b" header.d=b.example\r\nSubject: s\r\n"
            b"Authentication-Results: other.example; spf=pass\r\n"
            b"authentication-results:MX.B.EXAMPLE 1; none\r\n\r\n"
            b"Authentication-Results: mx.b.example; in the body, left alone\r\n")
    kept, end = forged_results(head, "mx.b.example")
    assert kept + head[end:] == (
        b"Received: x\r\nSubject: s\r\nAuthentication-Results: other.example; spf=pass\r\n"
        b"\r\nAuthentication-Results: mx.b.example; in the body, left alone\r\n")
    assert forged_results(b"Subject: s\r\n\r\n", "mx.b.example") == (b"", 0)


@pytest.mark.parametrize(("address", "prefix"), [
    ("192.0.2.77", "192.0.2.0/24"),
    ("::ffff:192.0.2.77", "192.0.2.0/24"),
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("fe80::1%eth0", "fe80::/48"),
    ("?", None),
])
def test_client_prefix(address: str, prefix: str | None) -> None:
    assert client_prefix(address) == prefix


def test_quality_keys() -> None:
    assert quality_keys("c.example", "192.0.2.0/24") == ["smtp:c.example", "smtp:192.0.2.0/24"]
    assert quality_keys(None, "192.0.2.0/24") == ["smtp:192.0.2.0/24"]
    assert quality_keys(None, None) == []


# -- Table 3 for SMTP mail -----------------------------------------------------------


class Mx:
    def __init__(self, tmp: Path) -> None:
        self.store = SqliteStore(tmp / "b.sqlite3")
        self.store.migrate()
        self.dest = Destination(self.store, quality=paper(min_messages=3),
                                hostname="smdp.b.example")
        self.bob = self.store.create_user("bob@b.example", "x")
        self.carol = self.store.create_user("carol@b.example", "x")

    def arrive(self, *, verified: str | None = None, sender: str = FRIEND,
               rcpts: tuple[str, ...] = ("bob@b.example",), envid: str = "e1",
               expires: float | None = None, prefix: str | None = None) -> SmtpArrival:
        return self.dest.receive_smtp(
            envid=envid, sender=sender, verified_domain=verified, client_prefix=prefix,
            auth_results="smdp.b.example; none", recipients=list(rcpts),
            body=Body.of(MESSAGE),
            expires_at=time.time() + 3600 if expires is None else expires)

    def listed(self, user_id: int, kind: ListKind) -> None:
        self.store.put_inbound(user_id, kind, FRIEND, "c.example", ListedBy.MANUAL)

    def entries(self, user_id: int) -> list[tuple[EntryState, str]]:
        return [(e.state, e.reason) for e in self.store.mailbox_entries(user_id, None)]


@pytest.fixture
def mx(tmp_path: Path) -> Mx:
    return Mx(tmp_path)


def test_anyone_unlisted_is_held_with_the_bytes_here(mx: Mx) -> None:
    arrival = mx.arrive()
    assert arrival.held == ("bob@b.example",) and arrival.envelope_id is not None
    env = mx.store.in_envelope(arrival.envelope_id)
    assert env is not None and env.via_smtp and env.has_body
    assert (env.sender, env.origin_server, env.verified_domain) == (FRIEND, "c.example", None)
    assert env.subject == "lunch" and "Headline: Shall we?" in env.block
    assert mx.entries(mx.bob.id) == [(EntryState.PENDING, "")]
    assert mx.store.jobs() == []  # nothing is ever sent back


def test_a_black_listed_sender_is_refused_verified_or_not(mx: Mx) -> None:
    mx.listed(mx.bob.id, ListKind.BLACK)
    for verified in (None, "c.example"):
        arrival = mx.arrive(verified=verified, envid=f"e-{verified}")
        assert arrival == SmtpArrival(None, refused=("bob@b.example",))
    assert mx.entries(mx.bob.id) == []
    assert mx.store.in_envelope_by_envid("e-None") is None  # nothing stored


def test_black_list_refuses_one_recipient_and_holds_for_the_other(mx: Mx) -> None:
    mx.listed(mx.bob.id, ListKind.BLACK)
    arrival = mx.arrive(rcpts=("bob@b.example", "carol@b.example"))
    assert arrival.refused == ("bob@b.example",) and arrival.held == ("carol@b.example",)
    assert mx.entries(mx.bob.id) == []


def test_white_list_delivers_only_a_verified_from(mx: Mx) -> None:
    mx.listed(mx.bob.id, ListKind.WHITE)
    spoofed = mx.arrive(envid="spoofed")  # From unverified: a forger's friend address
    assert spoofed.held == ("bob@b.example",)
    other_domain = mx.arrive(verified="evil.example", envid="other")
    assert other_domain.held == ("bob@b.example",)
    real = mx.arrive(verified="c.example", envid="real")
    assert real.delivered == ("bob@b.example",)
    states = [state for state, _ in mx.entries(mx.bob.id)]
    assert states == [EntryState.PENDING, EntryState.PENDING, EntryState.ACCEPTED]


@pytest.mark.parametrize(("decision", "state", "listed", "body_kept"), [
    (Decision.ACCEPT, EntryState.ACCEPTED, None, True),
    (Decision.ACCEPT_AUTH, EntryState.ACCEPTED, ListKind.WHITE, True),
    (Decision.REJECT, EntryState.REJECTED, None, False),
    (Decision.REJECT_SPAM, EntryState.SPAM, None, False),
    (Decision.REJECT_SPAMMER, EntryState.SPAMMER, ListKind.BLACK, False),
])
def test_the_five_decisions_on_held_smtp_mail(mx: Mx, decision: Decision, state: EntryState,
                                              listed: ListKind | None,
                                              body_kept: bool) -> None:
    arrival = mx.arrive()
    assert arrival.envelope_id is not None
    entry = mx.store.mailbox_entries(mx.bob.id, None)[0]
    result = mx.dest.decide(mx.bob, entry.id, decision)
    assert result.outcome.ok and result.entry is not None and result.entry.state is state
    assert mx.store.inbound_kind(mx.bob.id, FRIEND, "c.example") == listed
    assert (mx.store.in_body(arrival.envelope_id) is not None) is body_kept
    assert mx.store.jobs() == []  # no decision goes back, no bounce
    assert mx.store.all_quality() == []  # neither verified nor from a network: no counter


def test_a_rejection_keeps_the_bytes_another_recipient_holds(mx: Mx) -> None:
    arrival = mx.arrive(rcpts=("bob@b.example", "carol@b.example"))
    assert arrival.envelope_id is not None
    bob_entry = mx.store.mailbox_entries(mx.bob.id, None)[0]
    carol_entry = mx.store.mailbox_entries(mx.carol.id, None)[0]
    mx.dest.decide(mx.bob, bob_entry.id, Decision.REJECT)
    assert mx.store.in_body(arrival.envelope_id) is not None  # carol has not decided
    mx.dest.decide(mx.carol, carol_entry.id, Decision.REJECT_SPAM)
    assert mx.store.in_body(arrival.envelope_id) is None


def test_accept_and_authorize_settles_only_verified_pending_mail(mx: Mx) -> None:
    first = mx.arrive(envid="first")
    mx.arrive(envid="spoofed")
    mx.arrive(envid="verified", verified="c.example")
    assert first.envelope_id is not None
    entries = mx.store.mailbox_entries(mx.bob.id, None)
    mx.dest.decide(mx.bob, entries[0].id, Decision.ACCEPT_AUTH)
    states = [state for state, _ in mx.entries(mx.bob.id)]
    # The unverified second message stays held; the verified one is delivered.
    assert states == [EntryState.ACCEPTED, EntryState.PENDING, EntryState.ACCEPTED]


def test_expiry_frees_the_bytes_of_held_smtp_mail(mx: Mx) -> None:
    arrival = mx.arrive(expires=time.time() - 1)
    kept = mx.arrive(envid="later")
    assert arrival.envelope_id is not None and kept.envelope_id is not None
    assert mx.dest.expire(time.time()) == 1
    assert mx.entries(mx.bob.id)[0][0] is EntryState.EXPIRED
    assert mx.store.in_body(arrival.envelope_id) is None
    assert mx.store.in_body(kept.envelope_id) is not None
    assert mx.store.quality("c.example").messages == 0
    entry = mx.store.mailbox_entries(mx.bob.id, None)[0]
    assert not mx.dest.decide(mx.bob, entry.id, Decision.ACCEPT).outcome.ok


def test_smtp_black_listed_at_rcpt(mx: Mx) -> None:
    assert not mx.dest.smtp_black_listed("bob@b.example", FRIEND)
    mx.listed(mx.bob.id, ListKind.BLACK)
    assert mx.dest.smtp_black_listed("bob@b.example", FRIEND)
    assert not mx.dest.smtp_black_listed("carol@b.example", FRIEND)
    assert not mx.dest.smtp_black_listed("bob@b.example", "")


# -- quality for SMTP senders (issue 12 item 4) ----------------------------------------

NET = "192.0.2.0/24"


def test_votes_count_for_the_verified_domain_and_the_prefix(mx: Mx) -> None:
    mx.arrive(verified="c.example", prefix=NET, envid="v")
    mx.arrive(prefix=NET, envid="u")  # unverified: counts for the prefix only
    entries = mx.store.mailbox_entries(mx.bob.id, None)
    mx.dest.decide(mx.bob, entries[0].id, Decision.ACCEPT)
    mx.dest.decide(mx.bob, entries[1].id, Decision.REJECT)
    domain, net = mx.store.quality("smtp:c.example"), mx.store.quality(f"smtp:{NET}")
    assert (domain.messages, domain.votes) == (1, 1)
    assert (net.messages, net.votes) == (2, 0)
    # A decision changed replaces the vote, on both keys.
    mx.dest.decide(mx.bob, entries[0].id, Decision.REJECT_SPAM)
    assert mx.store.quality("smtp:c.example").votes == -1
    assert mx.store.quality(f"smtp:{NET}").votes == -2
    assert mx.store.quality("c.example").messages == 0  # never an SMDP server's


def test_black_list_refusals_and_expiry_count_against_the_sender(mx: Mx) -> None:
    mx.listed(mx.bob.id, ListKind.BLACK)
    mx.arrive(verified="c.example", prefix=NET, envid="refused")
    mx.arrive(sender="x@d.example", prefix=NET, envid="expiring", expires=time.time() - 1)
    mx.dest.expire(time.time())
    net = mx.store.quality(f"smtp:{NET}")
    assert (net.messages, net.votes) == (2, -2)
    assert mx.store.quality("smtp:c.example").votes == -1


def test_a_sender_below_the_block_threshold_is_refused(mx: Mx) -> None:
    keys = quality_keys("c.example", NET)
    for n in range(3):
        mx.arrive(verified="c.example", prefix=NET, envid=f"m{n}")
    assert mx.dest.smtp_refusal(keys) is None  # 3 messages, no vote yet: quality 0
    for entry in mx.store.mailbox_entries(mx.bob.id, None):
        mx.dest.decide(mx.bob, entry.id, Decision.REJECT)
    refusal = mx.dest.smtp_refusal(keys)
    assert refusal is not None and refusal.kind is Kind.PEER_BLOCKED
    assert refusal.reason.startswith("c.example blocked: quality -1.00")
    assert mx.dest.smtp_refusal(quality_keys(None, "198.51.100.0/24")) is None


def test_a_white_listed_verified_delivery_votes_for_both_keys(mx: Mx) -> None:
    """Straight to the mailbox counts +1 for the verified domain and the
    client's prefix (issue 12 item 4), as an accept would."""
    mx.listed(mx.bob.id, ListKind.WHITE)
    mx.arrive(verified="c.example", prefix=NET, envid="friendly")
    domain, net = mx.store.quality("smtp:c.example"), mx.store.quality(f"smtp:{NET}")
    assert (domain.messages, domain.votes, net.messages, net.votes) == (1, 1, 1, 1)


def test_an_unknown_recipient_first_does_not_stop_the_others(mx: Mx) -> None:
    arrival = mx.arrive(rcpts=("nobody@b.example", "bob@b.example", "carol@b.example"))
    assert arrival.held == ("bob@b.example", "carol@b.example")


def test_who_decided_is_told_for_every_option(mx: Mx) -> None:
    """Destination.decided (the metrics): the user's decisions as the
    user's, the white list's and Table 3's as automatic."""
    told: list[tuple[Decision, bool]] = []
    mx.dest.decided = lambda decision, by_user: told.append((decision, by_user))
    mx.arrive(verified="c.example", envid="one")
    mx.arrive(verified="c.example", envid="two")
    first, second = mx.store.mailbox_entries(mx.bob.id, None)
    mx.dest.decide(mx.bob, first.id, Decision.ACCEPT_AUTH)  # settles the second too
    mx.arrive(verified="c.example", envid="three")  # white-listed now: delivered
    assert told == [(Decision.ACCEPT_AUTH, True), (Decision.ACCEPT, False),
                    (Decision.ACCEPT, False)]
    # The automatic accept left the evidence of bob's own decision.
    listed = mx.store.inbound_listing(mx.bob.id, FRIEND, "c.example")
    assert listed is not None and listed.source_entry == first.id
    assert mx.store.mailbox_entry(second.id).state is EntryState.ACCEPTED  # type: ignore[union-attr]


def test_a_rejection_that_sinks_a_sender_is_logged_for_the_operator(
        mx: Mx, caplog: pytest.LogCaptureFixture) -> None:
    """Section 5.3's alert, for SMTP senders: a reject that leaves a key
    below the alert threshold logs it, naming the key; an accept does not."""
    for n in range(3):
        mx.arrive(verified="c.example", prefix=NET, envid=f"m{n}")
    entries = mx.store.mailbox_entries(mx.bob.id, None)
    with caplog.at_level("WARNING", logger="smdp.quality"):
        mx.dest.decide(mx.bob, entries[0].id, Decision.ACCEPT)
        assert [r for r in caplog.records if "SMTP sender" in r.getMessage()] == []
        mx.dest.decide(mx.bob, entries[1].id, Decision.REJECT)
        mx.dest.decide(mx.bob, entries[2].id, Decision.REJECT)
    warned = [r.getMessage() for r in caplog.records if "SMTP sender" in r.getMessage()]
    assert warned == [
        "SMTP sender smtp:c.example: alert (quality -0.33 is below the alert threshold 0.00)",
        f"SMTP sender smtp:{NET}: alert (quality -0.33 is below the alert threshold 0.00)"]


def test_an_accept_from_a_sinking_sender_logs_nothing(
        mx: Mx, caplog: pytest.LogCaptureFixture) -> None:
    """The alert is for a rejection that sinks a sender: accepting mail
    from one already below the threshold is good news, not logged."""
    for n in range(3):
        mx.arrive(verified="c.example", envid=f"m{n}")
    first, second, third = mx.store.mailbox_entries(mx.bob.id, None)
    mx.dest.decide(mx.bob, first.id, Decision.REJECT)
    mx.dest.decide(mx.bob, second.id, Decision.REJECT)  # -2/3: below the alert
    caplog.clear()
    with caplog.at_level("WARNING", logger="smdp.quality"):
        mx.dest.decide(mx.bob, third.id, Decision.ACCEPT)
    assert [r for r in caplog.records if "SMTP sender" in r.getMessage()] == []


def test_mail_without_a_from_never_lists_anyone(mx: Mx) -> None:
    """A message with no From address (the null sender's bounces): nothing
    to put on a list, whatever the recipient decides."""
    arrival = mx.arrive(sender="", envid="bounce")
    assert arrival.held == ("bob@b.example",)
    [entry] = mx.store.mailbox_entries(mx.bob.id, None)
    assert mx.dest.decide(mx.bob, entry.id, Decision.REJECT_SPAMMER).outcome.ok
    assert mx.store.list_entries(mx.bob.id) == []
