"""Issue 12 item 4: the keys an SMTP sender is judged by, and greylisting."""

from __future__ import annotations

import pytest

from smdp.core.smtp_senders import (
    Greylist,
    GreylistPolicy,
    client_network,
    greylist,
    quality_keys,
)


@pytest.mark.parametrize(("ip", "network"), [
    ("192.0.2.1", "192.0.2.0/24"),
    ("192.0.2.255", "192.0.2.0/24"),
    ("192.0.3.0", "192.0.3.0/24"),
    ("10.1.2.3", "10.1.2.0/24"),
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("2001:db8:1:ffff:ffff::1", "2001:db8:1::/48"),
    ("2001:db8:2::1", "2001:db8:2::/48"),
    ("::ffff:192.0.2.7", "192.0.2.0/24"),  # a dual-stack socket's IPv4 client
    ("fe80::1%eth0", "fe80::/48"),  # a scope id is not part of the address
    ("::1", "::/48"),
])
def test_client_network_is_the_slash_24_or_slash_48(ip: str, network: str) -> None:
    assert client_network(ip) == network


def test_client_network_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        client_network("mail.example.org")


def test_a_verified_message_counts_for_its_domain_and_its_network() -> None:
    assert quality_keys("Example.ORG", "192.0.2.9") == (
        "smtp-domain:example.org", "smtp-net:192.0.2.0/24")


@pytest.mark.parametrize("domain", [None, ""])
def test_an_unverified_message_counts_only_for_its_network(domain: str | None) -> None:
    assert quality_keys(domain, "2001:db8::1") == ("smtp-net:2001:db8::/48",)


def test_the_keys_cannot_be_an_smdp_host_name() -> None:
    # Host names have no ":"; both keys do, so they never share a row with a peer.
    for key in quality_keys("example.org", "192.0.2.1"):
        assert ":" in key


POLICY = GreylistPolicy(enabled=True, delay=300.0, retry_window=3600.0, lifetime=1000.0)


@pytest.mark.parametrize(("first_seen", "passed_at", "now", "verdict"), [
    (None, None, 5000.0, Greylist.FIRST),  # never seen
    (5000.0, None, 5000.0, Greylist.TOO_SOON),  # the same moment
    (5000.0, None, 5299.9, Greylist.TOO_SOON),  # just before the delay ends
    (5000.0, None, 5300.0, Greylist.PASS),  # exactly at the delay
    (5000.0, None, 8600.0, Greylist.PASS),  # exactly at the end of the retry window
    (5000.0, None, 8600.1, Greylist.FIRST),  # too late: starts over
    (None, 5000.0, 6000.0, Greylist.PASS),  # known, exactly at the end of its lifetime
    (None, 5000.0, 6000.1, Greylist.FIRST),  # known once, forgotten since
    (5000.0, 5000.0, 6000.1, Greylist.FIRST),  # forgotten, and the first try is old too
    (9000.0, 5000.0, 9100.0, Greylist.TOO_SOON),  # forgotten, deferred anew just now
])
def test_greylist_verdicts_at_each_boundary(first_seen: float | None, passed_at: float | None,
                                            now: float, verdict: Greylist) -> None:
    assert greylist(first_seen, passed_at, now, POLICY) is verdict


def test_greylisting_is_off_by_default() -> None:
    assert GreylistPolicy().enabled is False
    assert GreylistPolicy().delay == 300.0
