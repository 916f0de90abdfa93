"""Finding a domain's SMDP server.

An origin SMDP server delivers envelopes to the recipient domain's SMDP
server, and a recipient server checks that the peer announcing itself in EHLO
really serves the sender's domain (the paper's "unlawful SMDP server").  Both
need "which server speaks for domain D?".  The answer comes from DNS SRV
records ``_smdp._tcp.<domain>`` (RFC 2782), or from a static map that
overrides DNS for private networks and tests.

Only the SRV layer lives here; A/AAAA resolution of the target is left to the
socket layer (``asyncio.open_connection`` resolves the hostname), so IPv4/IPv6
selection and happy-eyeballs stay in one place. The one exception is
:meth:`Discovery.connects_from`: a peer believed by its EHLO name alone (no
certificate) must also connect from an address of the server it names, and
those addresses come from the same resolver a connection would use
(``getaddrinfo``), so the check and the connection agree.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from smdp.config import PeerServer
from smdp.core.lists import ListRequest
from smdp.core.outcomes import Kind, Outcome
from smdp.mail.addresses import domain_of
from smdp.terms import ListDirection

__all__ = [
    "NEGATIVE_CACHE_TTL",
    "SERVICE_LABEL",
    "Discovery",
    "DiscoveryError",
    "IPAddress",
    "PeerServer",
    "SrvRecord",
    "ip_of",
    "rfc2782_order",
]

SERVICE_LABEL = "_smdp._tcp"

# Negative answers (NXDOMAIN, no SRV, "." target) are cached for a fixed time
# rather than the zone's SOA minimum: short enough that a domain which has
# just published its record is reachable within a minute, long enough that a
# burst of mail to a dead domain costs one query.
NEGATIVE_CACHE_TTL = 60.0


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One usable SRV answer (targets of "." are never represented)."""

    priority: int
    weight: int
    server: PeerServer


class DiscoveryError(Exception):
    """The SMDP server of a domain could not be determined.

    ``transient`` is True for failures worth retrying later (timeout, SERVFAIL)
    and False for definitive answers (NXDOMAIN, no SRV record, "." target), so
    a delivery queue can choose between deferring and bouncing.
    """

    def __init__(self, message: str, *, domain: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.domain = domain
        self.transient = transient


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# getaddrinfo(host) -> the host's addresses as text; raises socket.gaierror.
AddressLookup = Callable[[str], Awaitable[list[str]]]

# getaddrinfo errors that say "this name has no address" for good; any other
# (EAI_AGAIN above all: the DNS server did not answer) may pass.
_NO_SUCH_HOST = frozenset(
    code for code in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None),
                      getattr(socket, "EAI_ADDRFAMILY", None)) if code is not None
)


def ip_of(text: str) -> IPAddress | None:
    """An address as the socket layer gives it, comparable: without an IPv6
    zone, and an IPv4 client of a dual-stack socket (``::ffff:a.b.c.d``) as
    IPv4. None for anything that is not an IP address."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def _getaddrinfo(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def rfc2782_order(records: Iterable[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """All records in the order a client should try them (RFC 2782).

    Lowest priority first; within a priority, a weighted random draw without
    replacement: positive weights are chosen in proportion to their weight,
    and weight-0 records get the small chance 1/(total+1) (uniformly among
    themselves) until only they remain.
    """
    by_priority: dict[int, list[SrvRecord]] = {}
    for record in records:
        by_priority.setdefault(record.priority, []).append(record)

    ordered: list[SrvRecord] = []
    for priority in sorted(by_priority):
        group = by_priority[priority]
        # RFC 2782 allows "any order" before placing weight-0 entries first;
        # shuffling keeps all-zero-weight groups from always favouring the
        # record the DNS server happened to list first.
        rng.shuffle(group)
        group.sort(key=lambda r: r.weight != 0)
        while group:
            # RFC 2782 draws from [0, total]; taken literally that lets the
            # value 0 favour whichever positive-weight record comes first (with
            # weights 1 and 3 the heavier one wins 70 %, not 75 %).  Drawing 0
            # only when a weight-0 record can absorb it keeps the split exact.
            has_zero = group[0].weight == 0
            pick = rng.randint(0 if has_zero else 1, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


@dataclass(slots=True)
class _CacheEntry:
    expires: float
    records: tuple[SrvRecord, ...] | None  # None: negative entry
    error: str = ""


class Discovery:
    """Resolves a domain to its SMDP server via a static map, then DNS SRV."""

    def __init__(
        self,
        static: Mapping[str, PeerServer] | None = None,
        *,
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 5.0,
        cache_ttl_cap: float = 300.0,
        cache_max_entries: int = 10_000,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        lookup_addresses: AddressLookup = _getaddrinfo,
    ) -> None:
        self._static = {_normalize(k): v for k, v in (static or {}).items()}
        self._nameservers = list(nameservers) if nameservers is not None else None
        self._timeout = timeout
        self._ttl_cap = cache_ttl_cap
        # speaks_for() is driven by EHLO/ENVELOPE data from arbitrary peers, so
        # the cache must not grow without bound under attacker-chosen domains.
        self._cache_max = cache_max_entries
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._lookup_addresses = lookup_addresses
        self._cache: dict[str, _CacheEntry] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None

    def set_static(self, domain: str, server: PeerServer) -> None:
        """Answer ``domain`` with ``server`` from now on (our own domains, once
        the peer port is bound and its real port known)."""
        key = _normalize(domain)
        self._static[key] = server
        self._cache.pop(key, None)

    async def resolve(self, domain: str) -> PeerServer:
        """The server to deliver to for ``domain``.

        Raises DiscoveryError when there is none or DNS cannot tell.
        """
        return (await self.resolve_all(domain))[0]

    async def resolve_all(self, domain: str) -> list[PeerServer]:
        """Every server of ``domain``, in RFC 2782 order (try them in turn).

        The weighted draw is redone on each call, also for cached answers, so
        load is spread across equal-priority servers as the domain intends.
        """
        records = await self._records(domain)
        return [r.server for r in rfc2782_order(records, self._rng)]

    async def speaks_for(self, hostname: str, domain: str) -> bool:
        """True when ``hostname`` is an SMDP server of ``domain``.

        Any of the domain's SRV targets counts, not only the one a weighted
        draw would pick: a domain with two servers must accept mail relayed by
        either.  False on DiscoveryError, including transient ones; callers
        that must tell "no" from "cannot tell now" use ``resolve_all``.
        """
        try:
            return bool(await self.servers_named(hostname, domain))
        except DiscoveryError:
            return False

    async def servers_named(self, hostname: str, domain: str) -> list[PeerServer]:
        """Those of ``domain``'s SMDP servers whose identity is ``hostname``
        (any SRV target counts, as for ``speaks_for``); empty when none is,
        or when discovery says for good that the domain has none. Raises the
        DiscoveryError when DNS cannot tell now (transient)."""
        try:
            records = await self._records(domain)
        except DiscoveryError as exc:
            if exc.transient:
                raise
            return []
        wanted = _normalize(hostname)
        return [r.server for r in records if _normalize(r.server.hostname) == wanted]

    async def connects_from(self, servers: Iterable[PeerServer], client: str) -> bool:
        """True when ``client`` (a connection's source address) is an address
        of one of ``servers``: its static address, or the A/AAAA records of
        its SRV target. A server listening on the unspecified address
        (0.0.0.0, ::: our own domains, when the peer port binds all
        addresses) is reached, and so answered, over loopback.

        Raises a transient DiscoveryError when a lookup failed temporarily
        and no other address matched: "cannot tell now", not "no"."""
        ip = ip_of(client)
        if ip is None:
            return False
        failure: DiscoveryError | None = None
        for server in servers:
            try:
                found = await self._addresses(server.address)
            except DiscoveryError as exc:
                failure = exc
                continue
            if ip in found or (ip.is_loopback and any(a.is_unspecified for a in found)):
                return True
        if failure is not None:
            raise failure
        return False

    async def _addresses(self, host: str) -> frozenset[IPAddress]:
        literal = ip_of(host)
        if literal is not None:
            return frozenset({literal})
        try:
            texts = await asyncio.wait_for(self._lookup_addresses(host), self._timeout)
        except TimeoutError as exc:
            raise DiscoveryError(f"looking up the addresses of {host} timed out after "
                                 f"{self._timeout:g} s", domain=host, transient=True) from exc
        except socket.gaierror as exc:
            if exc.errno in _NO_SUCH_HOST:
                return frozenset()
            raise DiscoveryError(f"looking up the addresses of {host} failed: {exc.strerror}",
                                 domain=host, transient=True) from exc
        except (UnicodeError, ValueError):
            return frozenset()  # not a name the resolver can even ask for
        return frozenset(ip for ip in map(ip_of, texts) if ip is not None)

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def timeout(self) -> float:
        """Seconds any one DNS question may take."""
        return self._timeout

    def resolver(self, domain: str) -> dns.asyncresolver.Resolver:
        """The resolver SRV questions go to (``[dns] nameservers``, else the
        system's), for the other questions routing asks (``routing.py``: MX,
        A, AAAA). Raises a transient DiscoveryError when there is none."""
        return self._get_resolver(domain)

    # -- internals ----------------------------------------------------------

    async def _records(self, domain: str) -> tuple[SrvRecord, ...]:
        key = _normalize(domain)
        if not key:
            raise DiscoveryError("empty domain name", domain=domain)

        static = self._static.get(key)
        if static is not None:
            return (SrvRecord(0, 0, static),)

        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None:
            if entry.expires > now:
                if entry.records is None:
                    raise DiscoveryError(entry.error, domain=key)
                return entry.records
            del self._cache[key]

        try:
            records, ttl = await self._query(key)
        except DiscoveryError as exc:
            # Transient failures are not cached: the next delivery attempt
            # should ask again rather than fail for a minute.
            if not exc.transient:
                self._store(key, _CacheEntry(now + NEGATIVE_CACHE_TTL, None, str(exc)))
            raise
        lifetime = min(float(ttl), self._ttl_cap)
        if lifetime > 0:
            self._store(key, _CacheEntry(now + lifetime, records))
        return records

    def _store(self, key: str, entry: _CacheEntry) -> None:
        if len(self._cache) >= self._cache_max:
            now = self._clock()
            for stale in [k for k, e in self._cache.items() if e.expires <= now]:
                del self._cache[stale]
            # Still full: drop the oldest insertions (dicts keep insertion order).
            while len(self._cache) >= self._cache_max and self._cache:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = entry

    def _get_resolver(self, domain: str) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self._nameservers is not None:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(address, port)
                    for address, port in self._nameservers
                ]
            else:
                # Built lazily so a deployment that only uses the static map
                # works on hosts without /etc/resolv.conf.
                try:
                    resolver = dns.asyncresolver.Resolver()
                except dns.exception.DNSException as exc:
                    raise DiscoveryError(
                        f"cannot look up the SMDP server of {domain}: "
                        f"no usable system DNS configuration ({exc})",
                        domain=domain,
                        transient=True,
                    ) from exc
            # Our own cache (with the TTL cap and negative entries) is the one
            # that counts; a second layer would only hide TTL changes.
            resolver.cache = None
            resolver.timeout = self._timeout
            resolver.lifetime = self._timeout
            self._resolver = resolver
        return self._resolver

    async def _query(self, domain: str) -> tuple[tuple[SrvRecord, ...], int]:
        try:
            qname = dns.name.from_text(f"{SERVICE_LABEL}.{domain}")
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            raise DiscoveryError(
                f"{domain!r} is not a valid domain name ({exc})", domain=domain
            ) from exc

        resolver = self._get_resolver(domain)
        try:
            answer = await resolver.resolve(
                qname, dns.rdatatype.SRV, lifetime=self._timeout, search=False
            )
        except dns.resolver.NXDOMAIN as exc:
            raise DiscoveryError(
                f"no SMDP server for {domain}: {qname} does not exist (NXDOMAIN)",
                domain=domain,
            ) from exc
        except dns.resolver.NoAnswer as exc:
            raise DiscoveryError(
                f"no SMDP server for {domain}: no SRV record at {qname}", domain=domain
            ) from exc
        except dns.exception.Timeout as exc:
            raise DiscoveryError(
                f"looking up the SMDP server of {domain} timed out "
                f"after {self._timeout:g} s (query {qname} SRV)",
                domain=domain,
                transient=True,
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise DiscoveryError(
                f"looking up the SMDP server of {domain} failed: "
                f"no nameserver gave a usable answer for {qname} SRV (SERVFAIL or refused)",
                domain=domain,
                transient=True,
            ) from exc
        except dns.exception.DNSException as exc:
            raise DiscoveryError(
                f"looking up the SMDP server of {domain} failed: {exc}",
                domain=domain,
                transient=True,
            ) from exc

        records = _usable_records(answer)
        if not records:
            # RFC 2782: a sole target of "." means the service is decidedly
            # not available at this domain.
            raise DiscoveryError(
                f"{domain} explicitly offers no SMDP service (SRV target '.')",
                domain=domain,
            )
        return records, answer.chaining_result.minimum_ttl


def _usable_records(answer: dns.resolver.Answer) -> tuple[SrvRecord, ...]:
    records: list[SrvRecord] = []
    for rdata in answer:
        if not isinstance(rdata, SRV) or rdata.target == dns.name.root:
            continue
        host = _normalize(rdata.target.to_text(omit_final_dot=True))
        records.append(
            SrvRecord(
                priority=rdata.priority,
                weight=rdata.weight,
                server=PeerServer(hostname=host, address=host, port=rdata.port),
            )
        )
    return tuple(records)


async def with_inbound_server(request: ListRequest, discovery: Discovery
                              ) -> ListRequest | Outcome:
    """An inbound list entry is an (address, SMDP server) pair: when the user
    named no server, the server of the address's domain, as discovery gives
    it (the user port's LISTADD and the web app's list editing alike)."""
    if request.direction is not ListDirection.INBOUND or request.server is not None:
        return request
    try:
        found = await discovery.resolve(domain_of(request.address))
    except DiscoveryError as exc:
        return Outcome(Kind.INVALID, f"name the SMDP server of {request.address}: {exc}")
    return ListRequest(request.name, request.direction, request.kind, request.address,
                       found.hostname)
