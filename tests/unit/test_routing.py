"""Routing per recipient domain (server/routing.py; docs/smtp.md, "Routing"):
SMDP where discovery finds a server, else SMTP to the MX hosts (RFC 5321
5.1, RFC 7505), against the tiny DNS server of test_discovery.py."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from smdp.server.discovery import Discovery, PeerServer
from smdp.server.routing import (
    AnswerCache,
    MxHost,
    PermanentRouteFailure,
    Router,
    SmdpRoute,
    SmtpRoute,
    TemporaryRouteFailure,
    mx_order,
)
from tests.unit.test_discovery import (
    DROP,
    NXDOMAIN,
    SERVFAIL,
    DnsServer,
    FakeClock,
    Responder,
    Zone,
)

SRV = "_smdp._tcp.example.org."
DOMAIN = "example.org."


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    """test_discovery.py's tiny DNS server, its zone empty."""
    zone = Zone()
    transport, responder = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Responder(zone), local_addr=("127.0.0.1", 0))
    try:
        yield DnsServer(zone, responder, transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def router(server: DnsServer, *, static: dict[str, PeerServer] | None = None,
           seed: int = 1, timeout: float = 2.0, clock: FakeClock | None = None) -> Router:
    discovery = Discovery(static, nameservers=server.nameservers, timeout=timeout,
                          **({"clock": clock} if clock else {}))  # type: ignore[arg-type]
    return Router(discovery, rng=random.Random(seed),
                  cache=AnswerCache(clock=clock) if clock else None)


def mail_zone(server: DnsServer, mx: list[str] | str,
              hosts: dict[str, list[str] | str] | None = None) -> None:
    """example.org: no SMDP server (NXDOMAIN for the SRV name), MX ``mx``,
    and each host's A records (an address with ':' is an AAAA)."""
    typed = server.zone.typed
    typed[(DOMAIN, "MX")] = mx
    for host, addresses in (hosts or {}).items():
        if isinstance(addresses, str):
            typed[(host, "A")] = typed[(host, "AAAA")] = addresses
            continue
        typed[(host, "A")] = [a for a in addresses if ":" not in a]
        typed[(host, "AAAA")] = [a for a in addresses if ":" in a]


# -- SMDP first ---------------------------------------------------------------------------


async def test_a_domain_with_an_smdp_server_is_routed_by_smdp(dns_server: DnsServer) -> None:
    dns_server.zone.records[SRV] = ["10 0 4650 smdp.example.org."]
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})

    assert await router(dns_server).route("example.org") == SmdpRoute(
        (PeerServer("smdp.example.org", "smdp.example.org", 4650),))
    # An SMDP domain's MX is never asked for.
    assert [t for _n, t in dns_server.responder.asked] == ["SRV"]


async def test_the_static_map_wins_over_dns(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})
    static = PeerServer("smdp.example.org", "127.0.0.1", 12345)

    assert await router(dns_server, static={"example.org": static}).route("example.org") \
        == SmdpRoute((static,))
    assert dns_server.responder.asked == []


@pytest.mark.parametrize("srv", [None, [], ["0 0 0 ."]],
                         ids=["NXDOMAIN", "NODATA", "SRV target '.'"])
async def test_no_smdp_server_makes_an_smtp_domain(
        dns_server: DnsServer, srv: list[str] | None) -> None:
    if srv is not None:
        dns_server.zone.records[SRV] = srv
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})

    assert await router(dns_server).route("example.org") == SmtpRoute(
        (MxHost("mx.example.org", 10, ("192.0.2.1",)),))


# -- the MX list (RFC 5321 5.1) --------------------------------------------------------------


async def test_mx_hosts_in_preference_order_with_their_addresses(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["30 c.example.org.", "10 a.example.org.", "20 b.example.org."], {
        "a.example.org.": ["192.0.2.1", "2001:db8::1"],
        "b.example.org.": ["192.0.2.2", "2001:db8::2"],
        "c.example.org.": ["2001:db8::3"],
    })

    routed = await router(dns_server).route("Example.ORG.")

    assert routed == SmtpRoute((
        MxHost("a.example.org", 10, ("192.0.2.1", "2001:db8::1")),
        MxHost("b.example.org", 20, ("192.0.2.2", "2001:db8::2")),
        MxHost("c.example.org", 30, ("2001:db8::3",)),
    ))


async def test_equal_preferences_are_shuffled(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["10 a.example.org.", "10 b.example.org.", "5 first.example.org.",
                           "20 last.example.org."],
              {f"{h}.example.org.": ["192.0.2.1"] for h in ("a", "b", "first", "last")})
    orders = set()
    for seed in range(12):
        routed = await router(dns_server, seed=seed).route("example.org")
        assert isinstance(routed, SmtpRoute)
        names = [host.name for host in routed.hosts]
        assert (names[0], names[-1]) == ("first.example.org", "last.example.org")
        orders.add(tuple(names[1:3]))
    # Both orders of the tie occur (12 seeds: a miss has probability 2 ** -11).
    assert orders == {("a.example.org", "b.example.org"), ("b.example.org", "a.example.org")}


def test_mx_order_keeps_preferences_and_shuffles_ties() -> None:
    records = [(10, "a"), (10, "b"), (0, "z"), (10, "c")]
    seen = {tuple(mx_order(records, random.Random(seed))) for seed in range(40)}
    assert all(order[0] == (0, "z") for order in seen)
    assert {order[1:] for order in seen} == {
        ((10, "a"), (10, "b"), (10, "c")), ((10, "a"), (10, "c"), (10, "b")),
        ((10, "b"), (10, "a"), (10, "c")), ((10, "b"), (10, "c"), (10, "a")),
        ((10, "c"), (10, "a"), (10, "b")), ((10, "c"), (10, "b"), (10, "a"))}


async def test_no_mx_but_an_address_is_the_implicit_mx(dns_server: DnsServer) -> None:
    mail_zone(dns_server, [], {DOMAIN: ["192.0.2.9", "2001:db8::9"]})

    assert await router(dns_server).route("example.org") == SmtpRoute(
        (MxHost("example.org", 0, ("192.0.2.9", "2001:db8::9")),), implicit=True)


async def test_a_null_mx_is_a_permanent_failure(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["0 ."], {DOMAIN: ["192.0.2.9"]})  # the A does not count

    assert await router(dns_server).route("example.org") == PermanentRouteFailure(
        "example.org accepts no mail (null MX, RFC 7505)", "5.1.10")


async def test_a_null_mx_beside_real_ones_is_ignored(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["0 .", "10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})

    assert await router(dns_server).route("example.org") == SmtpRoute(
        (MxHost("mx.example.org", 10, ("192.0.2.1",)),))


async def test_a_sole_dot_with_another_preference_is_no_null_mx(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["10 ."], {DOMAIN: ["192.0.2.9"]})

    assert await router(dns_server).route("example.org") == PermanentRouteFailure(
        "no SMDP server for example.org, and none of its MX hosts can be used: "
        ". (preference 10: not a host)", "5.4.4")


async def test_mx_hosts_without_addresses_and_address_literals_are_skipped(
        dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["5 192.0.2.7.", "10 empty.example.org.", "15 gone.example.org.",
                           "20 mx.example.org."],
              {"empty.example.org.": [], "gone.example.org.": NXDOMAIN,
               "mx.example.org.": ["192.0.2.1"]})

    assert await router(dns_server).route("example.org") == SmtpRoute(
        (MxHost("mx.example.org", 20, ("192.0.2.1",)),))


async def test_no_usable_mx_host_is_a_permanent_failure(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["5 192.0.2.7.", "10 empty.example.org."],
              {"empty.example.org.": []})

    assert await router(dns_server).route("example.org") == PermanentRouteFailure(
        "no SMDP server for example.org, and none of its MX hosts can be used: 192.0.2.7 "
        "(an address literal, not a host name), empty.example.org (no A or AAAA record)",
        "5.4.4")


async def test_no_mx_and_no_address_is_no_such_domain(dns_server: DnsServer) -> None:
    mail_zone(dns_server, [], {DOMAIN: []})

    assert await router(dns_server).route("example.org") == PermanentRouteFailure(
        "no SMDP server for example.org, and no MX, A or AAAA record: no such mail domain",
        "5.1.2")


async def test_a_domain_that_does_not_exist_is_no_such_domain(dns_server: DnsServer) -> None:
    assert await router(dns_server).route("example.org") == PermanentRouteFailure(
        "no SMDP server for example.org, and example.org does not exist (NXDOMAIN)", "5.1.2")
    assert dns_server.responder.asked == [(SRV, "SRV"), (DOMAIN, "MX")]


# -- temporary failures, at each step --------------------------------------------------------


async def test_a_temporary_failure_of_the_srv_question_is_temporary(
        dns_server: DnsServer) -> None:
    dns_server.zone.records[SRV] = SERVFAIL
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})

    routed = await router(dns_server).route("example.org")

    assert isinstance(routed, TemporaryRouteFailure)
    assert "SERVFAIL" in routed.reason
    # Never guessed to be an SMTP domain: MX was not even asked.
    assert [t for _n, t in dns_server.responder.asked] == ["SRV"]


@pytest.mark.parametrize("step", ["MX", "A of the MX host", "AAAA of the MX host",
                                  "A of the implicit MX"])
async def test_a_servfail_at_any_later_step_is_temporary(
        dns_server: DnsServer, step: str) -> None:
    typed = dns_server.zone.typed
    if step == "A of the implicit MX":
        mail_zone(dns_server, [], {DOMAIN: ["192.0.2.9"]})
        typed[(DOMAIN, "A")] = SERVFAIL
        asked = (DOMAIN, "A")
    else:
        mail_zone(dns_server, ["10 mx.example.org.", "20 backup.example.org."],
                  {"mx.example.org.": ["192.0.2.1"], "backup.example.org.": ["192.0.2.2"]})
        asked = {"MX": (DOMAIN, "MX"), "A of the MX host": ("mx.example.org.", "A"),
                 "AAAA of the MX host": ("mx.example.org.", "AAAA")}[step]
        typed[asked] = SERVFAIL

    assert await router(dns_server).route("example.org") == TemporaryRouteFailure(
        f"looking up {asked[0].rstrip('.')} {asked[1]} failed: no nameserver gave a usable "
        "answer (SERVFAIL or refused)")


async def test_a_timeout_is_temporary(dns_server: DnsServer) -> None:
    mail_zone(dns_server, DROP)

    assert await router(dns_server, timeout=0.3).route("example.org") == TemporaryRouteFailure(
        "looking up example.org MX timed out after 0.3 s")


# -- the answer cache: a burst of mail to one domain asks DNS once ------------------------


def mail_questions(server: DnsServer) -> list[tuple[str, str]]:
    return [(n, t) for n, t in server.responder.asked if t != "SRV"]


async def test_answers_are_cached_for_their_ttl(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1", "2001:db8::1"]})
    dns_server.zone.ttl = 30
    clock = FakeClock()
    r = router(dns_server, clock=clock)
    first = await r.route("example.org")
    assert mail_questions(dns_server) == [(DOMAIN, "MX"), ("mx.example.org.", "A"),
                                          ("mx.example.org.", "AAAA")]

    clock.now += 29
    assert await r.route("example.org") == first
    assert len(mail_questions(dns_server)) == 3  # nothing asked within the TTL

    clock.now += 2
    assert await r.route("example.org") == first
    assert len(mail_questions(dns_server)) == 6  # every answer asked again after it


async def test_a_ttl_of_zero_is_never_cached(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})
    dns_server.zone.ttl = 0
    dns_server.zone.negative_ttl = 0
    r = router(dns_server, clock=FakeClock())
    await r.route("example.org")
    await r.route("example.org")
    assert mail_questions(dns_server) == [(DOMAIN, "MX"), ("mx.example.org.", "A"),
                                          ("mx.example.org.", "AAAA")] * 2


async def test_a_new_mx_is_seen_once_the_old_answer_expires(dns_server: DnsServer) -> None:
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"],
                                                   "mx2.example.org.": ["192.0.2.2"]})
    dns_server.zone.ttl = 60
    clock = FakeClock()
    r = router(dns_server, clock=clock)
    await r.route("example.org")
    dns_server.zone.typed[(DOMAIN, "MX")] = ["10 mx2.example.org."]
    clock.now += 59
    assert await r.route("example.org") == SmtpRoute(
        (MxHost("mx.example.org", 10, ("192.0.2.1",)),))
    clock.now += 2
    assert await r.route("example.org") == SmtpRoute(
        (MxHost("mx2.example.org", 10, ("192.0.2.2",)),))


@pytest.mark.parametrize(("soa", "kept"), [(None, 0), (20, 20), (3600, 60)])
async def test_negative_answers_are_cached_for_the_soa_minimum_at_most_a_minute(
        dns_server: DnsServer, soa: int | None, kept: int) -> None:
    # No AAAA record (no data), an MX host that does not exist (NXDOMAIN).
    mail_zone(dns_server, ["10 mx.example.org.", "20 gone.example.org."],
              {"mx.example.org.": ["192.0.2.1"], "gone.example.org.": NXDOMAIN})
    dns_server.zone.negative_ttl = soa
    clock = FakeClock()
    r = router(dns_server, clock=clock)
    negative = [("mx.example.org.", "AAAA"), ("gone.example.org.", "A")]

    def asked() -> int:
        return sum(q in negative for q in mail_questions(dns_server))

    await r.route("example.org")
    assert asked() == 2
    clock.now += max(kept - 1, 0)
    await r.route("example.org")
    assert asked() == (2 if kept else 4)  # without an SOA: not cached (RFC 2308 5)
    clock.now += 2
    await r.route("example.org")
    assert asked() == (4 if kept else 6)


async def test_a_temporary_failure_is_not_cached(dns_server: DnsServer) -> None:
    mail_zone(dns_server, SERVFAIL)
    dns_server.zone.negative_ttl = 300
    r = router(dns_server, clock=FakeClock())
    assert isinstance(await r.route("example.org"), TemporaryRouteFailure)
    mail_zone(dns_server, ["10 mx.example.org."], {"mx.example.org.": ["192.0.2.1"]})
    assert await r.route("example.org") == SmtpRoute(
        (MxHost("mx.example.org", 10, ("192.0.2.1",)),))
