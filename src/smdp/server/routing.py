"""Routing per recipient domain: SMDP where the domain has an SMDP server,
SMTP to its MX hosts where it has none (docs/smtp.md, "Routing").

``Router.route(domain)`` asks discovery first (the static map, then
``_smdp._tcp.<domain>`` SRV: protocol.md 10.1). Only a definitive "no SMDP
server" (NXDOMAIN or NOERROR/NODATA for the SRV name, or a sole target of
".") makes the domain an SMTP domain; a temporary failure there is a
temporary failure of the route, never a guess that the domain speaks SMTP.
The SMTP route is then RFC 5321 section 5.1:

- MX records sorted by preference, equal preferences shuffled;
- no MX record (NODATA) but an A or AAAA record: the domain itself is the
  one, implicit, MX host;
- a null MX (RFC 7505: one MX of preference 0 and exchange "."): the domain
  takes no mail, permanently (5.1.10);
- an MX whose exchange is an address literal, or a name without any
  address, is skipped (5.1: the exchange must be a name with addresses);
- no MX and no A/AAAA: no such domain (5.1.2);
- any temporary DNS failure (timeout, SERVFAIL) at any step: temporary.

Addresses are resolved here, with the server's configured resolver
(``[dns] nameservers``), so that the route says which hosts exist before a
message is committed to SMTP; the SMTP client connects to them in order.

Answers are cached (``AnswerCache``): a burst of mail to one domain asks its
MX, A and AAAA questions once, not once per message (each message routes
twice: when its envelope is first sent, and when its SMTP job runs). A
positive answer lives for its TTL (capped); a negative one (NXDOMAIN, or no
data) for the RFC 2308 negative TTL its SOA gives, at most
``NEGATIVE_CACHE_TTL``, and not at all without an SOA (RFC 2308 5). A TTL of
0 is never cached, nor is a temporary failure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.SOA import SOA

from smdp.config import PeerServer
from smdp.server.discovery import NEGATIVE_CACHE_TTL, Discovery, DiscoveryError, ip_of

__all__ = [
    "AnswerCache",
    "MxHost",
    "PermanentRouteFailure",
    "RouteResult",
    "Router",
    "SmdpRoute",
    "SmtpRoute",
    "TemporaryRouteFailure",
    "mx_order",
    "negative_ttl",
]


@dataclass(frozen=True, slots=True)
class SmdpRoute:
    """The domain has SMDP servers: discovery's answer, in RFC 2782 order."""

    servers: tuple[PeerServer, ...]


@dataclass(frozen=True, slots=True)
class MxHost:
    """One MX host to try, with its addresses (A first, then AAAA)."""

    name: str
    preference: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SmtpRoute:
    """The domain has no SMDP server: its MX hosts in the order to try them.
    ``implicit``: there was no MX record; the domain's own A/AAAA stand in
    (RFC 5321 5.1)."""

    hosts: tuple[MxHost, ...]
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class PermanentRouteFailure:
    """Mail to the domain cannot be delivered, ever: ``reason`` for the
    sender, ``status`` the RFC 3463 code of the failure."""

    reason: str
    status: str


@dataclass(frozen=True, slots=True)
class TemporaryRouteFailure:
    """DNS cannot tell now (timeout, SERVFAIL): try again later."""

    reason: str


RouteResult = SmdpRoute | SmtpRoute | PermanentRouteFailure | TemporaryRouteFailure


def mx_order(records: Iterable[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """(preference, exchange) pairs in the order to try them (RFC 5321 5.1):
    lowest preference first, equal preferences in random order so that
    senders spread their load over them."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda record: record[0])  # a stable sort keeps the shuffle


class _Temporary(Exception):
    """A lookup that DNS could not answer now."""


class _NoSuchName(Exception):
    """NXDOMAIN."""


def negative_ttl(response: dns.message.Message | None) -> float:
    """How long a negative answer may be cached (RFC 2308 5): the smaller of
    the SOA record's TTL and its MINIMUM field, where the authority section
    has an SOA; 0 (not at all) where it has none."""
    if response is None:
        return 0.0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            soa = rrset[0]
            assert isinstance(soa, SOA)
            return float(min(rrset.ttl, soa.minimum))
    return 0.0


_Key = tuple[str, int]


@dataclass(slots=True)
class _Answer:
    expires: float
    rdatas: tuple[dns.rdata.Rdata, ...] | None  # None: NXDOMAIN; (): no data


class AnswerCache:
    """Answers to (name, type) questions, each kept for the time DNS allows
    (see the module); bounded in entries, like discovery's cache."""

    def __init__(self, *, ttl_cap: float = 300.0, negative_cap: float = NEGATIVE_CACHE_TTL,
                 max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_cap = ttl_cap
        self._negative_cap = negative_cap
        self._max = max_entries
        self._clock = clock
        self._entries: dict[_Key, _Answer] = {}

    def get(self, key: _Key) -> _Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires > self._clock():
            return entry
        del self._entries[key]
        return None

    def put(self, key: _Key, rdatas: tuple[dns.rdata.Rdata, ...] | None, ttl: float) -> None:
        cap = self._ttl_cap if rdatas else self._negative_cap
        lifetime = min(ttl, cap)
        if lifetime <= 0:
            return  # a TTL of 0 means: use the answer once (RFC 1035 3.2.1)
        now = self._clock()
        if len(self._entries) >= self._max:
            for stale in [k for k, e in self._entries.items() if e.expires <= now]:
                del self._entries[stale]
            while len(self._entries) >= self._max and self._entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = _Answer(now + lifetime, rdatas)

    def clear(self) -> None:
        self._entries.clear()


class Router:
    """Chooses, per recipient domain, how its mail leaves (see the module)."""

    def __init__(self, discovery: Discovery, *, rng: random.Random | None = None,
                 cache: AnswerCache | None = None) -> None:
        self.discovery = discovery
        self._rng = rng if rng is not None else random.Random()
        self.cache = cache if cache is not None else AnswerCache()

    async def route(self, domain: str) -> RouteResult:
        try:
            servers = await self.discovery.resolve_all(domain)
        except DiscoveryError as exc:
            if exc.transient:
                return TemporaryRouteFailure(str(exc))
            # Definitive: no SMDP server for the domain (protocol.md 10.1).
            # An SMTP domain, if DNS says it takes mail.
            return await self._smtp_route(domain.strip().rstrip(".").lower())
        return SmdpRoute(tuple(servers))

    # -- RFC 5321 section 5.1 --------------------------------------------------------

    async def _smtp_route(self, domain: str) -> RouteResult:
        try:
            records = await self._mx(domain)
        except _NoSuchName:
            return PermanentRouteFailure(
                f"no SMDP server for {domain}, and {domain} does not exist (NXDOMAIN)", "5.1.2")
        except _Temporary as exc:
            return TemporaryRouteFailure(str(exc))
        except ValueError as exc:
            return PermanentRouteFailure(f"{domain!r} is not a valid domain name ({exc})",
                                         "5.1.2")
        if not records:
            return await self._implicit_mx(domain)
        if records == [(0, "")]:
            return PermanentRouteFailure(
                f"{domain} accepts no mail (null MX, RFC 7505)", "5.1.10")
        hosts: list[MxHost] = []
        skipped: list[str] = []
        for preference, exchange in mx_order(records, self._rng):
            if not exchange:
                # RFC 7505 3: "." beside other MX records, or with a preference
                # other than 0, is a broken zone, not a null MX; the other
                # exchanges are still the ones to try.
                skipped.append(f". (preference {preference}: not a host)")
                continue
            if _is_address_literal(exchange):
                skipped.append(f"{exchange} (an address literal, not a host name)")
                continue
            try:
                addresses = await self._addresses(exchange)
            except _Temporary as exc:
                return TemporaryRouteFailure(str(exc))
            if not addresses:
                skipped.append(f"{exchange} (no A or AAAA record)")
                continue
            hosts.append(MxHost(exchange, preference, addresses))
        if not hosts:
            # RFC 3463 X.4.4: routing information exists but leads nowhere.
            return PermanentRouteFailure(
                f"no SMDP server for {domain}, and none of its MX hosts can be used: "
                + ", ".join(skipped), "5.4.4")
        return SmtpRoute(tuple(hosts))

    async def _implicit_mx(self, domain: str) -> RouteResult:
        try:
            addresses = await self._addresses(domain)
        except _Temporary as exc:
            return TemporaryRouteFailure(str(exc))
        if not addresses:
            return PermanentRouteFailure(
                f"no SMDP server for {domain}, and no MX, A or AAAA record: no such mail "
                "domain", "5.1.2")
        return SmtpRoute((MxHost(domain, 0, addresses),), implicit=True)

    async def _mx(self, domain: str) -> list[tuple[int, str]]:
        """The domain's MX records as (preference, exchange), the exchange
        "" for a null MX ("."); [] for NODATA."""
        answer = await self._query(domain, dns.rdatatype.MX)
        found: list[tuple[int, str]] = []
        for rdata in answer:
            if not isinstance(rdata, MX):
                continue
            exchange = ("" if rdata.exchange == dns.name.root
                        else rdata.exchange.to_text(omit_final_dot=True).lower())
            found.append((rdata.preference, exchange))
        return found

    async def _addresses(self, host: str) -> tuple[str, ...]:
        """The A then AAAA addresses of ``host``; () when it has none
        (NXDOMAIN or NODATA for both)."""
        found: list[str] = []
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = await self._query(host, rdtype)
            except (_NoSuchName, ValueError):
                return tuple(found)  # the name does not exist: no AAAA either
            found += [rdata.to_text() for rdata in answer]
        return tuple(found)

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[dns.rdata.Rdata]:
        """The rdatas of ``name``/``rdtype`` ([] for NODATA). Raises
        _NoSuchName, _Temporary, or ValueError for a name DNS cannot hold."""
        what = f"{name} {dns.rdatatype.to_text(rdtype)}"
        try:
            qname = dns.name.from_text(name)
        except (dns.exception.DNSException, UnicodeError) as exc:
            raise ValueError(str(exc)) from exc
        key = (qname.to_text().lower(), int(rdtype))
        cached = self.cache.get(key)
        if cached is not None:
            if cached.rdatas is None:
                raise _NoSuchName(what)
            return list(cached.rdatas)
        try:
            resolver = self.discovery.resolver(name)
        except DiscoveryError as exc:
            raise _Temporary(str(exc)) from exc
        timeout = self.discovery.timeout
        try:
            answer = await resolver.resolve(qname, rdtype, lifetime=timeout, search=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            self.cache.put(key, None, negative_ttl(responses.get(qname)))
            raise _NoSuchName(what) from exc
        except dns.resolver.NoAnswer as exc:
            self.cache.put(key, (), negative_ttl(exc.kwargs.get("response")))
            return []
        except dns.exception.Timeout as exc:
            raise _Temporary(f"looking up {what} timed out after {timeout:g} s") from exc
        except dns.resolver.NoNameservers as exc:
            raise _Temporary(f"looking up {what} failed: no nameserver gave a usable "
                             "answer (SERVFAIL or refused)") from exc
        except dns.exception.DNSException as exc:
            raise _Temporary(f"looking up {what} failed: {exc}") from exc
        rdatas = tuple(answer)
        # The smallest TTL on the way (a CNAME chain's too), as dnspython reckons it.
        self.cache.put(key, rdatas if rdatas else (),
                       float(answer.chaining_result.minimum_ttl) if rdatas
                       else negative_ttl(answer.response))
        return list(rdatas)


def _is_address_literal(exchange: str) -> bool:
    """An MX exchange written as an address ("192.0.2.1", "[192.0.2.1]"):
    RFC 5321 5.1 wants a host name there, and mail to it is not sent."""
    return ip_of(exchange.strip("[]")) is not None
