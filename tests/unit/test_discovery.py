"""Discovery against a static map and a tiny authoritative DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from smdp.server.discovery import (
    NEGATIVE_CACHE_TTL,
    Discovery,
    DiscoveryError,
    PeerServer,
    SrvRecord,
    rfc2782_order,
)

DROP = "drop"
SERVFAIL = "servfail"
NXDOMAIN = "nxdomain"  # in Zone.typed: this name does not exist


@dataclass
class Zone:
    """name (absolute, lower-case) -> list of SRV rdata texts, DROP or SERVFAIL.

    An empty list answers NOERROR with no data; unknown names get NXDOMAIN.
    """

    records: dict[str, list[str] | str] = field(default_factory=dict)
    ttl: int = 300
    # (name, type) -> rdata texts, DROP, SERVFAIL or NXDOMAIN, for the other
    # questions routing asks (MX, A, AAAA: tests/unit/test_routing.py). A
    # name listed here under another type answers NOERROR with no data.
    typed: dict[tuple[str, str], list[str] | str] = field(default_factory=dict)
    # Negative answers (NXDOMAIN, no data) carry an SOA record in their
    # authority section with this TTL and MINIMUM (RFC 2308); None: no SOA.
    negative_ttl: int | None = None


class Responder(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.queries: list[str] = []
        self.asked: list[tuple[str, str]] = []  # (name, type) of every question
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is not a DatagramTransport subclass at runtime.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        self.queries.append(name)
        entry = self.zone.records.get(name)
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, rdtype))
        if question.rdtype != dns.rdatatype.SRV and any(n == name for n, _t in self.zone.typed):
            entry = self.zone.typed.get((name, rdtype), [])
            rdtype_answered = question.rdtype
        else:
            rdtype_answered = dns.rdatatype.SRV
        if entry == DROP:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if entry is None or entry == NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif question.rdtype == rdtype_answered and entry:
            rrset = response.find_rrset(
                response.answer,
                question.name,
                dns.rdataclass.IN,
                rdtype_answered,
                create=True,
            )
            for text in entry:
                rrset.add(
                    dns.rdata.from_text(dns.rdataclass.IN, rdtype_answered, text),
                    self.zone.ttl,
                )
        if not response.answer and self.zone.negative_ttl is not None and (
                entry is None or entry == NXDOMAIN or isinstance(entry, list)):
            soa = response.find_rrset(response.authority, question.name.parent(),
                                      dns.rdataclass.IN, dns.rdatatype.SOA, create=True)
            soa.add(dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.SOA,
                f"ns.example. hostmaster.example. 1 3600 600 86400 {self.zone.negative_ttl}"),
                self.zone.negative_ttl)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@dataclass
class DnsServer:
    zone: Zone
    responder: Responder
    port: int

    @property
    def nameservers(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    @property
    def queries(self) -> list[str]:
        return self.responder.queries


@pytest.fixture
async def dns_server() -> AsyncIterator[DnsServer]:
    zone = Zone()
    loop = asyncio.get_running_loop()
    transport, responder = await loop.create_datagram_endpoint(
        lambda: Responder(zone), local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    try:
        yield DnsServer(zone, responder, port)
    finally:
        transport.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def discovery(server: DnsServer, **kwargs: object) -> Discovery:
    return Discovery(nameservers=server.nameservers, timeout=2.0, **kwargs)  # type: ignore[arg-type]


# -- static map -------------------------------------------------------------


async def test_static_map_overrides_dns(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = ["10 0 4650 dns.example.org."]
    static = PeerServer("smdp.example.org", "127.0.0.1", 12345)
    d = discovery(dns_server, static={"example.org": static})

    assert await d.resolve("example.org") == static
    assert await d.resolve("EXAMPLE.org.") == static
    assert await d.resolve_all("example.org") == [static]
    assert dns_server.queries == []


async def test_static_map_keys_are_normalised() -> None:
    static = PeerServer("smdp.example.org", "10.0.0.1", 4650)
    d = Discovery({"Example.ORG.": static})
    assert await d.resolve("example.org") == static
    assert await d.speaks_for("SMDP.example.org", "example.org")
    assert not await d.speaks_for("other.example.org", "example.org")


# -- SRV lookups ------------------------------------------------------------


async def test_srv_found(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = ["10 5 4650 SMDP.Example.ORG."]
    d = discovery(dns_server)

    peer = await d.resolve("Example.org")

    assert peer == PeerServer("smdp.example.org", "smdp.example.org", 4650)
    assert dns_server.queries == ["_smdp._tcp.example.org."]


async def test_lowest_priority_always_wins(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = [
        "20 1000 4650 backup.example.org.",
        "10 0 4651 primary.example.org.",
    ]
    d = discovery(dns_server, rng=random.Random(1))

    for _ in range(50):
        assert (await d.resolve("example.org")).hostname == "primary.example.org"
    ordered = await d.resolve_all("example.org")
    assert [p.hostname for p in ordered] == ["primary.example.org", "backup.example.org"]
    assert [p.port for p in ordered] == [4651, 4650]


async def test_weights_spread_load_within_a_priority(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = [
        "10 1 4650 light.example.org.",
        "10 3 4650 heavy.example.org.",
        "20 100 4650 backup.example.org.",
    ]
    d = discovery(dns_server, rng=random.Random(42))

    picks = Counter([(await d.resolve("example.org")).hostname for _ in range(4000)])

    assert set(picks) == {"light.example.org", "heavy.example.org"}
    assert 0.72 < picks["heavy.example.org"] / 4000 < 0.78
    # Cached records are re-drawn on each call, not re-queried.
    assert len(dns_server.queries) == 1


def test_rfc2782_order_properties() -> None:
    def rec(priority: int, weight: int, name: str) -> SrvRecord:
        return SrvRecord(priority, weight, PeerServer(name, name, 1))

    records = [rec(20, 5, "c"), rec(10, 0, "z"), rec(10, 100, "a"), rec(30, 0, "d")]
    rng = random.Random(7)
    firsts: Counter[str] = Counter()
    for _ in range(2000):
        order = rfc2782_order(records, rng)
        assert sorted(order, key=lambda r: r.server.hostname) == sorted(
            records, key=lambda r: r.server.hostname
        )
        assert [r.priority for r in order] == sorted(r.priority for r in order)
        firsts[order[0].server.hostname] += 1
    # Weight 0 next to weight 100: chosen first only when the draw is 0 (1/101).
    assert firsts["z"] < 60
    assert firsts["a"] > 1900

    # All-zero weights: uniform, not "whatever the server listed first".
    zeros = [rec(10, 0, "x"), rec(10, 0, "y")]
    counts = Counter(rfc2782_order(zeros, rng)[0].server.hostname for _ in range(2000))
    assert 800 < counts["x"] < 1200
    assert rfc2782_order([], rng) == []


@pytest.mark.parametrize("listed", [("light", "heavy"), ("heavy", "light")])
def test_rfc2782_weights_are_proportional_whatever_the_listing(listed: tuple[str, str]) -> None:
    weight = {"light": 1, "heavy": 3}
    records = [SrvRecord(10, weight[n], PeerServer(n, n, 1)) for n in listed]
    rng = random.Random(3)
    heavy = sum(rfc2782_order(records, rng)[0].server.hostname == "heavy" for _ in range(8000))
    assert 0.73 < heavy / 8000 < 0.77


async def test_nxdomain(dns_server: DnsServer) -> None:
    d = discovery(dns_server)
    with pytest.raises(DiscoveryError, match="NXDOMAIN") as info:
        await d.resolve("nowhere.example")
    assert info.value.transient is False
    assert info.value.domain == "nowhere.example"


async def test_no_srv_record(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = []
    d = discovery(dns_server)
    with pytest.raises(DiscoveryError, match="no SRV record") as info:
        await d.resolve("example.org")
    assert info.value.transient is False


async def test_dot_target_means_no_service(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = ["0 0 0 ."]
    d = discovery(dns_server)
    with pytest.raises(DiscoveryError, match="explicitly offers no SMDP service") as info:
        await d.resolve("example.org")
    assert info.value.transient is False
    assert not await d.speaks_for("example.org", "example.org")


async def test_dot_target_next_to_real_ones_is_ignored(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = [
        "0 0 0 .",
        "10 0 4650 smdp.example.org.",
    ]
    d = discovery(dns_server)
    assert await d.resolve_all("example.org") == [
        PeerServer("smdp.example.org", "smdp.example.org", 4650)
    ]


async def test_servfail_is_transient(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = SERVFAIL
    d = discovery(dns_server)
    with pytest.raises(DiscoveryError, match="SERVFAIL") as info:
        await d.resolve("example.org")
    assert info.value.transient is True


@pytest.mark.parametrize(("bad", "error"), [
    ("", "empty domain name"),
    (".", "empty domain name"),
    ("  ", "empty domain name"),
    ("a..b", "'a..b' is not a valid domain name (A DNS label is empty.)"),
    ("x" * 64 + ".example", "is not a valid domain name (A DNS label is > 63 octets long.)"),
])
async def test_invalid_domain(dns_server: DnsServer, bad: str, error: str) -> None:
    d = discovery(dns_server)
    with pytest.raises(DiscoveryError, match=re.escape(error)):
        await d.resolve(bad)
    assert dns_server.queries == []


# -- caching ----------------------------------------------------------------


async def test_positive_answers_are_cached_for_their_ttl(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = ["10 0 4650 smdp.example.org."]
    dns_server.zone.ttl = 30
    clock = FakeClock()
    d = discovery(dns_server, clock=clock)

    await d.resolve("example.org")
    clock.now += 29
    await d.resolve("EXAMPLE.ORG")
    assert await d.speaks_for("smdp.example.org", "example.org")
    assert len(dns_server.queries) == 1

    clock.now += 2
    await d.resolve("example.org")
    assert len(dns_server.queries) == 2


async def test_cache_ttl_is_capped(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = ["10 0 4650 smdp.example.org."]
    dns_server.zone.ttl = 86400
    clock = FakeClock()
    d = discovery(dns_server, clock=clock, cache_ttl_cap=300.0)

    await d.resolve("example.org")
    clock.now += 299
    await d.resolve("example.org")
    assert len(dns_server.queries) == 1
    clock.now += 2
    await d.resolve("example.org")
    assert len(dns_server.queries) == 2


async def test_zero_ttl_is_not_cached(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = ["10 0 4650 smdp.example.org."]
    dns_server.zone.ttl = 0
    d = discovery(dns_server)
    await d.resolve("example.org")
    await d.resolve("example.org")
    assert len(dns_server.queries) == 2


async def test_negative_answers_are_cached_for_a_minute(dns_server: DnsServer) -> None:
    clock = FakeClock()
    d = discovery(dns_server, clock=clock)

    for _ in range(3):
        with pytest.raises(DiscoveryError, match="NXDOMAIN"):
            await d.resolve("nowhere.example")
    assert not await d.speaks_for("smdp.nowhere.example", "nowhere.example")
    assert len(dns_server.queries) == 1

    # The domain publishes its record; it becomes visible after the minute.
    dns_server.zone.records["_smdp._tcp.nowhere.example."] = ["1 1 4650 smdp.nowhere.example."]
    clock.now += NEGATIVE_CACHE_TTL - 1
    with pytest.raises(DiscoveryError, match="no SMDP server for nowhere"):
        await d.resolve("nowhere.example")
    clock.now += 2
    assert (await d.resolve("nowhere.example")).hostname == "smdp.nowhere.example"
    assert len(dns_server.queries) == 2


async def test_cache_is_bounded(dns_server: DnsServer) -> None:
    for name in ("a", "b", "c"):
        dns_server.zone.records[f"_smdp._tcp.{name}.example."] = [f"1 1 1 smdp.{name}.example."]
    d = discovery(dns_server, cache_max_entries=2)

    for name in ("a", "b", "c"):
        await d.resolve(f"{name}.example")
    assert len(dns_server.queries) == 3
    await d.resolve("c.example")  # newest kept
    assert len(dns_server.queries) == 3
    await d.resolve("a.example")  # oldest evicted
    assert len(dns_server.queries) == 4

    d.clear_cache()
    await d.resolve("a.example")
    assert len(dns_server.queries) == 5


# -- timeouts ---------------------------------------------------------------


async def test_timeout_when_the_server_does_not_answer(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.slow.example."] = DROP
    d = Discovery(nameservers=dns_server.nameservers, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(DiscoveryError, match="timed out") as info:
        await d.resolve("slow.example")
    assert time.monotonic() - started < 2.0
    assert info.value.transient is True
    assert not await d.speaks_for("smdp.slow.example", "slow.example")
    # Transient failures are not cached: the next attempt asks again.
    assert dns_server.queries.count("_smdp._tcp.slow.example.") >= 2


# -- speaks_for -------------------------------------------------------------


async def test_speaks_for(dns_server: DnsServer) -> None:
    dns_server.zone.records["_smdp._tcp.example.org."] = [
        "10 1 4650 one.example.org.",
        "10 1 4650 two.example.org.",
        "20 1 4650 backup.example.net.",
    ]
    d = discovery(dns_server)

    assert await d.speaks_for("one.example.org", "example.org")
    assert await d.speaks_for("TWO.Example.Org.", "EXAMPLE.org")
    assert await d.speaks_for("backup.example.net", "example.org")
    assert not await d.speaks_for("evil.example.com", "example.org")
    assert not await d.speaks_for("one.example.org", "unknown.example")
    assert len(dns_server.queries) == 2


# -- servers_named and connects_from: a peer without certificate ------------


async def test_a_claim_holds_only_from_an_address_of_the_named_server(
    dns_server: DnsServer,
) -> None:
    """protocol.md 10.2: the EHLO name must be one of the domain's SRV
    targets, and the connection must come from one of that target's A/AAAA
    addresses (here "localhost", resolved as a connection would resolve it)."""
    dns_server.zone.records["_smdp._tcp.example.org."] = [
        "10 0 4650 localhost.", "20 0 4650 backup.example.net."]
    d = discovery(dns_server)
    servers = await d.servers_named("LOCALHOST.", "example.org")
    assert [s.hostname for s in servers] == ["localhost"]
    assert await d.connects_from(servers, "127.0.0.1")
    assert await d.connects_from(servers, "::ffff:127.0.0.1")  # a dual-stack socket's view
    assert not await d.connects_from(servers, "127.0.0.2")
    assert not await d.connects_from(servers, "not an address")
    assert await d.servers_named("rogue.example.com", "example.org") == []
    unaskable = "a" * 64 + ".example"  # a label too long for any resolver: no address
    assert not await d.connects_from([PeerServer(unaskable, unaskable, 1)], "127.0.0.1")
    assert await d.servers_named("localhost", "unknown.example") == []  # NXDOMAIN: no


async def test_a_static_entry_gives_the_address_and_an_unspecified_one_means_loopback(
    dns_server: DnsServer,
) -> None:
    a = PeerServer("smdp.a.example", "127.0.0.1", 2525)
    own = PeerServer("smdp.b.example", "0.0.0.0", 2525)  # our own peer port on all addresses
    d = discovery(dns_server, static={"a.example": a, "b.example": own})
    assert await d.servers_named("smdp.a.example", "a.example") == [a]
    assert await d.connects_from([a], "127.0.0.1")
    assert not await d.connects_from([a], "127.0.0.2")
    assert await d.connects_from([own], "127.0.0.1")
    assert not await d.connects_from([own], "192.0.2.7")
    assert dns_server.queries == []


async def test_a_dns_failure_while_checking_a_claim_is_temporary(dns_server: DnsServer) -> None:
    """SERVFAIL on the SRV, a temporary getaddrinfo failure or a lookup that
    does not end are "cannot tell now" (the peer port's 451), never "no";
    a host with no address at all is a plain no."""
    dns_server.zone.records["_smdp._tcp.flaky.example."] = SERVFAIL
    failures = {
        "again.example": socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
        "nowhere.example": socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    }
    never = asyncio.Event()

    async def lookup(host: str) -> list[str]:
        if host == "slow.example":
            await never.wait()  # a resolver that never answers
        raise failures[host]

    d = Discovery(nameservers=dns_server.nameservers, timeout=0.2, lookup_addresses=lookup)
    with pytest.raises(DiscoveryError) as info:
        await d.servers_named("smdp.flaky.example", "flaky.example")
    assert info.value.transient
    for host in ("again.example", "slow.example"):
        with pytest.raises(DiscoveryError) as info:
            await d.connects_from([PeerServer(host, host, 2525)], "127.0.0.1")
        assert info.value.transient and host in str(info.value)
    nowhere = PeerServer("nowhere.example", "nowhere.example", 2525)
    assert not await d.connects_from([nowhere], "127.0.0.1")
    # Any server of the name that does match settles it, whatever the others.
    here = PeerServer("again.example", "127.0.0.1", 2525)
    assert await d.connects_from([PeerServer("again.example", "again.example", 1), here],
                                 "127.0.0.1")
