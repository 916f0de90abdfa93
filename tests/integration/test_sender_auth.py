"""DnsSenderAuthenticator (server/sender_auth.py) against a real DNS server on
loopback (StandInDns) serving SPF, DKIM and DMARC records: pyspf and dkimpy
ask it through the configured nameservers, never the system's resolver.

In-process: the authenticator is what is tested, no SMTP session is needed
(the MX's own tests drive it through a listener). No store either, so these
run in the default pass only (``own_backend``)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from smdp.config import load_config
from smdp.core.sender_auth import SpfCheck, authentication_results_header
from smdp.server.sender_auth import DnsSenderAuthenticator
from tests.integration.auth_dns import (
    message,
    publish_dkim,
    publish_dmarc,
    publish_sender,
    publish_spf,
    sign,
    unpublish,
)
from tests.integration.faults import StandInDns

pytestmark = pytest.mark.own_backend

LOOPBACK = "127.0.0.1"
ELSEWHERE = "192.0.2.7"  # TEST-NET-1: never anyone's sender, never contacted


@pytest.fixture
def dns_server() -> Iterator[StandInDns]:
    with StandInDns() as server:
        yield server


@pytest.fixture
async def auth(dns_server: StandInDns) -> AsyncIterator[DnsSenderAuthenticator]:
    # Generous for a loaded machine: an answer from StandInDns takes
    # milliseconds; the tests of silence use `impatient` instead.
    authenticator = DnsSenderAuthenticator([(LOOPBACK, dns_server.port)], timeout=3.0)
    yield authenticator
    authenticator.close()


@pytest.fixture
async def impatient(dns_server: StandInDns) -> AsyncIterator[DnsSenderAuthenticator]:
    """An authenticator that gives up on a question after 0.3 s and on a
    check after 1 s, to test DNS that does not answer."""
    authenticator = DnsSenderAuthenticator([(LOOPBACK, dns_server.port)], timeout=0.3,
                                           time_limit=1.0)
    yield authenticator
    authenticator.close()


# -- SPF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("record", "client", "expected"), [
    ("v=spf1 ip4:127.0.0.0/8 -all", LOOPBACK, "pass"),
    ("v=spf1 ip4:127.0.0.0/8 -all", ELSEWHERE, "fail"),
    ("v=spf1 ip4:127.0.0.0/8 ~all", ELSEWHERE, "softfail"),
    ("v=spf1 ?all", LOOPBACK, "neutral"),
    ("v=spf1 ip4:127.0.0.0/8 bogus -all", LOOPBACK, "permerror"),
    (None, LOOPBACK, "none"),
])
async def test_spf_results(dns_server: StandInDns, auth: DnsSenderAuthenticator,
                           record: str | None, client: str, expected: str) -> None:
    if record is not None:
        publish_spf(dns_server, "a.example", record)
    check = await auth.check_spf(client, "mx.a.example", "alice@a.example")
    assert (check.result, check.domain) == (expected, "a.example"), check
    assert "a.example" in dns_server.questions  # asked of the configured server


async def test_spf_of_the_null_path_checks_the_helo_name(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    publish_spf(dns_server, "mx.a.example", "v=spf1 ip4:127.0.0.1 -all")
    check = await auth.check_spf(LOOPBACK, "mx.a.example", "")
    assert (check.result, check.domain) == ("pass", "mx.a.example")
    # An IPv4 client of a dual-stack socket is checked as IPv4.
    mapped = await auth.check_spf("::ffff:127.0.0.1", "mx.a.example", "")
    assert mapped.result == "pass"


async def test_spf_follows_include_and_the_mx_mechanism(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    publish_spf(dns_server, "a.example", "v=spf1 include:_spf.a.example -all")
    publish_spf(dns_server, "_spf.a.example", "v=spf1 mx -all")
    dns_server.mx["_spf.a.example"] = [(10, "mail.a.example")]
    dns_server.hosts["mail.a.example"] = [LOOPBACK]
    assert (await auth.check_spf(LOOPBACK, "h", "x@a.example")).result == "pass"
    assert (await auth.check_spf(ELSEWHERE, "h", "x@a.example")).result == "fail"


async def test_spf_temperror_when_dns_does_not_answer(
        dns_server: StandInDns, impatient: DnsSenderAuthenticator) -> None:
    publish_spf(dns_server, "a.example")
    dns_server.silent.add("a.example")
    started = time.monotonic()
    check = await impatient.check_spf(LOOPBACK, "mx.a.example", "alice@a.example")
    assert (check.result, check.domain) == ("temperror", "a.example"), check
    assert time.monotonic() - started < 3.0


async def test_spf_without_a_domain_or_an_address_is_none(
        auth: DnsSenderAuthenticator) -> None:
    assert (await auth.check_spf(LOOPBACK, "[127.0.0.1]", "")).result == "none"
    assert (await auth.check_spf("not-an-ip", "h", "a@a.example")) == SpfCheck(
        "none", "a.example", "the client has no IP address")


async def test_spf_lookup_limit_is_a_permerror(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    # RFC 7208 4.6.4: more than 10 DNS-querying terms is a permerror.
    publish_spf(dns_server, "a.example",
                "v=spf1 " + " ".join(f"a:h{i}.a.example" for i in range(11)) + " -all")
    for i in range(11):
        dns_server.hosts[f"h{i}.a.example"] = ["192.0.2.200"]
    check = await auth.check_spf(LOOPBACK, "h", "x@a.example")
    assert check.result == "permerror", check


# -- DKIM and DMARC ------------------------------------------------------------------------------


def _spf_fail(domain: str = "a.example") -> SpfCheck:
    return SpfCheck("fail", domain, "not authorized")


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_dkim_pass_verifies_the_from_domain(
        dns_server: StandInDns, auth: DnsSenderAuthenticator, algorithm: str) -> None:
    key = publish_dkim(dns_server, "a.example", algorithm=algorithm)
    publish_dmarc(dns_server, "a.example", "v=DMARC1; p=reject")
    signed = sign(message("Alice <alice@a.example>", "bob@b.example"), key)
    results = await auth.authenticate(ELSEWHERE, "mx.c.example", "bounce@c.example",
                                      _spf_fail("c.example"), signed)
    [dkim] = results.dkim
    assert (dkim.result, dkim.domain, dkim.selector) == ("pass", "a.example", "s1")
    assert dkim.algorithm == f"{algorithm}-sha256"
    # DMARC passes through DKIM alone: SPF failed, and for another domain.
    assert (results.dmarc, results.dmarc_policy) == ("pass", "reject")
    assert results.verified_domain == "a.example"
    assert results.from_domain == "a.example"
    assert "s1._domainkey.a.example" in dns_server.questions
    header = authentication_results_header("mx.b.example", results)
    assert "dkim=pass" in header and "header.d=a.example" in header
    assert "dmarc=pass" in header


async def test_dkim_fail_when_the_body_was_altered_and_dmarc_reject_fails(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    publish_dmarc(dns_server, "a.example", "v=DMARC1; p=reject")
    signed = sign(message("alice@a.example", "bob@b.example", body="Pay 10.\r\n"), key)
    altered = signed.replace(b"Pay 10.", b"Pay 99.")
    results = await auth.authenticate(ELSEWHERE, "h", "alice@a.example", _spf_fail(), altered)
    assert [d.result for d in results.dkim] == ["fail"]
    assert (results.dmarc, results.dmarc_policy) == ("fail", "reject")
    assert results.verified_domain is None
    # The same message unaltered passes: the failure is the alteration.
    intact = await auth.authenticate(ELSEWHERE, "h", "alice@a.example", _spf_fail(), signed)
    assert intact.verified_domain == "a.example"


async def test_no_signature_and_dmarc_passing_through_spf_alone(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    publish_spf(dns_server, "a.example")
    publish_dmarc(dns_server, "a.example", "v=DMARC1; p=quarantine")
    spf = await auth.check_spf(LOOPBACK, "mx.a.example", "alice@a.example")
    results = await auth.authenticate(LOOPBACK, "mx.a.example", "alice@a.example", spf,
                                      message("alice@a.example", "bob@b.example"))
    assert results.dkim == ()
    assert (results.spf.result, results.dmarc, results.dmarc_policy) == (
        "pass", "pass", "quarantine")
    assert results.verified_domain == "a.example"
    # An SPF pass for another domain proves nothing about From.
    publish_spf(dns_server, "c.example")
    other = await auth.check_spf(LOOPBACK, "h", "x@c.example")
    spoofed = await auth.authenticate(LOOPBACK, "h", "x@c.example", other,
                                      message("alice@a.example", "bob@b.example"))
    assert (spoofed.spf.result, spoofed.dmarc, spoofed.verified_domain) == (
        "pass", "fail", None)


async def test_a_subdomain_aligns_in_relaxed_mode_only(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")  # d=a.example
    publish_dmarc(dns_server, "a.example", "v=DMARC1; p=reject; sp=quarantine")
    signed = sign(message("news@news.a.example", "bob@b.example"), key)
    relaxed = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    # No record at _dmarc.news.a.example: the organisational domain's
    # record applies, and its sp= to a subdomain.
    assert "_dmarc.news.a.example" in dns_server.questions
    assert (relaxed.dmarc, relaxed.dmarc_policy) == ("pass", "quarantine")
    assert relaxed.verified_domain == "news.a.example"

    publish_dmarc(dns_server, "a.example", "v=DMARC1; p=reject; adkim=s")
    fresh = DnsSenderAuthenticator([(LOOPBACK, dns_server.port)], timeout=3.0)
    try:  # a new resolver: the first one rightly keeps the old record for its TTL
        strict = await fresh.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    finally:
        fresh.close()
    assert [d.result for d in strict.dkim] == ["pass"]  # valid, but not aligned
    assert (strict.dmarc, strict.dmarc_policy) == ("fail", "reject")
    assert strict.verified_domain is None


async def test_no_dmarc_record_still_verifies_with_relaxed_alignment(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    signed = sign(message("alice@mail.a.example", "bob@b.example"), key)
    results = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    assert (results.dmarc, results.dmarc_policy) == ("none", "")
    assert results.verified_domain == "mail.a.example"


async def test_a_from_with_two_addresses_is_never_verified(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    publish_dmarc(dns_server, "a.example", "v=DMARC1; p=reject")
    signed = sign(message("alice@a.example, mallory@evil.example", "bob@b.example"), key)
    results = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    assert [d.result for d in results.dkim] == ["pass"]
    assert (results.from_domain, results.dmarc, results.verified_domain) == (
        "", "permerror", None)


async def test_missing_key_and_too_many_signatures(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    keys = [publish_dkim(dns_server, f"relay{i}.example", algorithm="ed25519")
            for i in range(6)]
    unpublish(dns_server, keys[0].record_name.rstrip("."))
    own = publish_dkim(dns_server, "a.example", algorithm="ed25519")
    data = sign(message("alice@a.example", "bob@b.example"), own)
    for key in keys:
        data = sign(data, key)  # relays' signatures on top of the author's
    results = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), data)
    by_domain = {d.domain: d.result for d in results.dkim}
    assert by_domain["a.example"] == "pass"  # verified first, though signed last
    assert by_domain["relay0.example"] in ("permerror", "policy")
    assert list(by_domain.values()).count("policy") == 2  # 7 signatures, 5 verified
    assert sum(1 for name in dns_server.questions if "._domainkey." in name) == 5
    assert results.verified_domain == "a.example"


async def test_a_key_that_is_not_published_is_a_permerror(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example", selector="gone")
    unpublish(dns_server, "gone._domainkey.a.example")
    signed = sign(message("alice@a.example", "bob@b.example"), key)
    results = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    assert [(d.result, d.reason) for d in results.dkim] == [
        ("permerror", "no key for the signature")]
    assert results.verified_domain is None


async def test_dkim_and_dmarc_temperror_when_dns_does_not_answer(
        dns_server: StandInDns, impatient: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    publish_dmarc(dns_server, "a.example")
    dns_server.silent.update({"s1._domainkey.a.example", "_dmarc.a.example"})
    signed = sign(message("alice@a.example", "bob@b.example"), key)
    results = await impatient.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    assert [d.result for d in results.dkim] == ["temperror"]
    assert (results.dmarc, results.verified_domain) == ("temperror", None)


async def test_a_dns_server_that_never_answers_gives_temperror_within_the_time() -> None:
    # A socket that is bound but never read: every question times out.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind((LOOPBACK, 0))
        auth = DnsSenderAuthenticator([(LOOPBACK, dead.getsockname()[1])], timeout=0.3,
                                      time_limit=1.0)
        try:
            started = time.monotonic()
            spf = await auth.check_spf(LOOPBACK, "h", "alice@a.example")
            results = await auth.authenticate(
                LOOPBACK, "h", "alice@a.example", spf,
                b"DKIM-Signature: v=1; a=rsa-sha256; d=a.example; s=s1; h=from; bh=AA==; b=AA==\r\n"
                + message("alice@a.example", "bob@b.example"))
            elapsed = time.monotonic() - started
        finally:
            auth.close()
    assert spf.result == "temperror"
    assert [d.result for d in results.dkim] == ["temperror"]
    assert (results.dmarc, results.verified_domain) == ("temperror", None)
    assert elapsed < 4.0


async def test_from_config_asks_the_configured_nameservers(
        dns_server: StandInDns, tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        '[server]\nhostname = "mx.b.example"\ndomains = ["b.example"]\n'
        '[store]\npath = "b.sqlite3"\n' + dns_server.config)
    publish_spf(dns_server, "a.example")
    auth = DnsSenderAuthenticator.from_config(load_config(tmp_path / "a.toml"), timeout=3.0)
    try:
        assert (await auth.check_spf(LOOPBACK, "h", "x@a.example")).result == "pass"
    finally:
        auth.close()


async def test_after_close_every_check_is_a_temperror(dns_server: StandInDns) -> None:
    publish_spf(dns_server, "a.example")
    auth = DnsSenderAuthenticator([(LOOPBACK, dns_server.port)], timeout=3.0)
    auth.close()
    assert (await auth.check_spf(LOOPBACK, "h", "x@a.example")).result == "temperror"
    results = await auth.authenticate(LOOPBACK, "h", "x@a.example", SpfCheck("pass", "a.example"),
                                      message("x@a.example", "bob@b.example"))
    assert (results.dmarc, results.verified_domain) == ("temperror", "a.example")


async def test_an_unusable_key_is_a_permerror(dns_server: StandInDns,
                                              auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    dns_server.txt["s1._domainkey.a.example"] = ["v=DKIM1; k=rsa; p=bm90IGEga2V5"]
    signed = sign(message("alice@a.example", "bob@b.example"), key)
    [dkim] = (await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)).dkim
    assert dkim.result == "permerror" and dkim.reason.startswith("the key is unusable"), dkim


async def test_spf_for_an_ipv6_client_asks_aaaa(dns_server: StandInDns,
                                                auth: DnsSenderAuthenticator) -> None:
    publish_spf(dns_server, "a.example", "v=spf1 a:mail.a.example -all")
    dns_server.hosts["mail.a.example"] = ["::1", "192.0.2.9"]
    assert (await auth.check_spf("::1", "h", "x@a.example")).result == "pass"
    assert (await auth.check_spf("2001:db8::1", "h", "x@a.example")).result == "fail"


async def test_servfail_is_a_temperror(dns_server: StandInDns,
                                       auth: DnsSenderAuthenticator) -> None:
    dns_server.txt["a.example"] = "servfail"
    check = await auth.check_spf(LOOPBACK, "h", "x@a.example")
    assert check.result == "temperror", check


async def test_an_altered_signed_header_fails_and_a_malformed_signature_is_a_permerror(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    signed = sign(message("alice@a.example", "bob@b.example", subject="Invoice"), key)
    altered = signed.replace(b"Subject: Invoice", b"Subject: Urgent invoice")
    [dkim] = (await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), altered)).dkim
    assert (dkim.result, dkim.reason) == ("fail", "the signature does not verify")
    malformed = b"DKIM-Signature: v=1; d=a.example; s=s1\r\n" + message("alice@a.example", "b")
    [bad] = (await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), malformed)).dkim
    assert (bad.result, bad.domain, bad.selector) == ("permerror", "a.example", "s1")
    assert bad.reason.startswith("the signature cannot be verified")


async def test_waiting_for_a_thread_counts_against_a_checks_time(dns_server: StandInDns) -> None:
    dns_server.silent.update({"a.example", "c.example"})
    auth = DnsSenderAuthenticator([(LOOPBACK, dns_server.port)], timeout=0.9, time_limit=1.0,
                                  workers=1)
    try:
        started = time.monotonic()
        first, second = await asyncio.gather(auth.check_spf(LOOPBACK, "h", "x@a.example"),
                                             auth.check_spf(LOOPBACK, "h", "x@c.example"))
        elapsed = time.monotonic() - started
    finally:
        auth.close()
    assert (first.result, second.result) == ("temperror", "temperror")
    # One thread, two checks: the second got what was left of its second,
    # not a second of its own after the first one's 0.9.
    assert elapsed < 1.5, elapsed


async def test_a_sender_that_does_everything_right(dns_server: StandInDns,
                                                   auth: DnsSenderAuthenticator) -> None:
    key = publish_sender(dns_server, "friend.example", algorithm="ed25519")
    spf = await auth.check_spf(LOOPBACK, "mx.friend.example", "alice@friend.example")
    results = await auth.authenticate(LOOPBACK, "mx.friend.example", "alice@friend.example",
                                      spf, sign(message("alice@friend.example", "b@b.example"),
                                                key))
    assert (results.spf.result, [d.result for d in results.dkim], results.dmarc,
            results.dmarc_policy, results.verified_domain) == (
        "pass", ["pass"], "pass", "reject", "friend.example")


async def test_a_signature_over_part_of_the_body_does_not_verify_the_rest(
        dns_server: StandInDns, auth: DnsSenderAuthenticator) -> None:
    key = publish_dkim(dns_server, "a.example")
    pem = key.private_key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
    original = message("alice@a.example", "bob@b.example", body="Original text.\r\n")
    # dkimpy's signer, which can write l= (ours never does).
    signed = dkim.sign(original, b"s1", b"a.example", pem, length=True) + original
    whole = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), signed)
    assert [d.result for d in whole.dkim] == ["pass"]
    assert whole.verified_domain == "a.example"
    appended = signed + b"Appended by someone else: click here.\r\n"
    partial = await auth.authenticate(ELSEWHERE, "h", "", _spf_fail(), appended)
    [dkim_check] = partial.dkim
    assert dkim_check.result == "policy" and "(l=)" in dkim_check.reason, dkim_check
    assert partial.verified_domain is None
