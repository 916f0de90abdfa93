"""MTA-STS (RFC 8461) for outbound SMTP: finding, fetching and caching each
recipient domain's policy. The rules (parsing, MX matching, the decision)
are in ``core/mta_sts.py``; this module does the I/O.

- The ``_mta-sts.<domain>`` TXT record is asked of the server's configured
  resolver (``[dns] nameservers``, else the system's), as discovery does.
- The policy is fetched from ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
  with the standard library (``http.client`` and ``ssl``, in a thread): one
  GET, no redirects, a verified certificate for ``mta-sts.<domain>``
  (``[smtp.tls] ca`` or the system store), status 200, ``text/plain``, at
  most 64 KiB, within a deadline. A library such as aiohttp or httpx would
  bring connection pools, cookies and redirect handling this single request
  does not want, and another dependency to keep; ``http.client`` already
  reads chunked bodies and status lines correctly.
- Policies are cached in the store (``mta_sts_policies``) until
  ``max_age`` runs out; a new TXT id refetches; a failed fetch keeps using
  the cached policy until it expires (RFC 8461 5.1, 10.2), and is not
  retried for the same id for ``RETRY_AFTER`` seconds (3.3).
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.TXT import TXT

from smdp.config import Config
from smdp.core.mta_sts import (
    MAX_POLICY_SIZE,
    Mode,
    Policy,
    PolicyError,
    TlsOutcome,
    parse_policy,
    parse_txt_records,
)
from smdp.store import Store
from smdp.store.records import CachedPolicy

__all__ = ["FETCH_TIMEOUT", "RETRY_AFTER", "TXT_RECHECK", "FetchError", "MtaSts",
           "fetch_policy", "from_config", "handshake_outcome", "mx_context", "policy_context",
           "policy_url"]

log = logging.getLogger("smdp.mta_sts")

# RFC 8461 3.3 asks for a timeout on the fetch; a minute, as the RFC's
# authors' own implementations use, is the whole request's deadline.
FETCH_TIMEOUT = 60.0
# RFC 8461 3.3: after a failed fetch, wait at least five minutes per id.
RETRY_AFTER = 300.0
# How long a TXT answer is believed before it is asked again (any answer:
# an id, none, a failure). A delivery about to fail for good asks anyway.
TXT_RECHECK = 300.0

AddressLookup = Callable[[str], Awaitable[list[str]]]


class FetchError(Exception):
    """The policy could not be fetched; the message says why."""


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


async def _getaddrinfo(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _get(host: str, addresses: list[str], port: int, context: ssl.SSLContext,
         deadline: float) -> bytes:
    """One GET of the policy (runs in a thread). The socket goes to one of
    ``addresses``; SNI and the certificate check use ``host``."""
    last: OSError | None = None
    sock: socket.socket | None = None
    for address in addresses:
        try:
            sock = socket.create_connection((address, port),
                                            timeout=max(0.1, deadline - time.monotonic()))
            break
        except OSError as exc:
            last = exc
    if sock is None:
        raise FetchError(f"cannot connect to {host}: {last}")
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise FetchError(f"the certificate of {host} is not valid: "
                         f"{exc.verify_message or exc.reason}") from None
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise FetchError(f"the TLS handshake with {host} failed: {exc}") from None
    conn = http.client.HTTPSConnection(host, port, context=context)
    conn.sock = tls  # already connected: http.client then never connects itself
    try:
        conn.request("GET", "/.well-known/mta-sts.txt",
                     headers={"Host": host, "Accept": "text/plain", "Connection": "close"})
        response = conn.getresponse()
        if 300 <= response.status < 400:
            raise FetchError(f"{host} answered {response.status} (a redirect, which "
                             "RFC 8461 3.3 forbids following)")
        if response.status != 200:
            raise FetchError(f"{host} answered {response.status} {response.reason}")
        media = _media_type(response.getheader("Content-Type"))
        if media != "text/plain":
            raise FetchError(f"{host} served the policy as {media or 'no media type'!r}, "
                             "not text/plain")
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise FetchError(f"fetching the policy from {host} took too long")
            chunk = response.read1(16384)
            if not chunk:
                break
            body += chunk
            if len(body) > MAX_POLICY_SIZE:
                raise FetchError(f"the policy of {host} is larger than {MAX_POLICY_SIZE} bytes")
        return bytes(body)
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"fetching the policy from {host} failed: {exc!r}") from None
    finally:
        conn.close()


async def fetch_policy(domain: str, *, context: ssl.SSLContext,
                       lookup_addresses: AddressLookup = _getaddrinfo, port: int = 443,
                       timeout: float = FETCH_TIMEOUT) -> tuple[Policy, str]:
    """Fetch and parse ``domain``'s policy; returns it and its text.

    Raises FetchError for anything short of a valid policy (an invalid
    policy is no policy, RFC 8461 3.2)."""
    host = f"mta-sts.{domain}"
    deadline = time.monotonic() + timeout
    try:
        addresses = await asyncio.wait_for(lookup_addresses(host), timeout)
    except (OSError, TimeoutError, UnicodeError, ValueError) as exc:
        raise FetchError(f"cannot find the address of {host}: {exc}") from None
    if not addresses:
        raise FetchError(f"{host} has no address")
    body = await asyncio.to_thread(_get, host, addresses, port, context, deadline)
    try:
        policy = parse_policy(body)
    except PolicyError as exc:
        raise FetchError(f"the policy of {host} is not valid: {exc}") from None
    return policy, body.decode("utf-8")


def mx_context(ca: Path | None, *, verify: bool) -> ssl.SSLContext:
    """The client context for STARTTLS with an MX host.

    ``verify`` (``Requirement.verify``): the chain must reach ``ca`` (or the
    system store) and the certificate be valid for the MX host name the
    caller gives as ``server_hostname``; TLS 1.2 at least. Without it
    (opportunistic), any certificate and the library's default versions: an
    old server's TLS still beats the plaintext a refusal would fall back to.
    """
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    if verify:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def handshake_outcome(error: BaseException | None, *, verified: bool) -> tuple[TlsOutcome, str]:
    """What a STARTTLS handshake gave, for ``decide``: its outcome and the
    TLS library's words for a failure. ``error``: what the handshake raised
    (None: it succeeded); ``verified``: it ran with a verifying context."""
    if error is None:
        return (TlsOutcome.VERIFIED if verified else TlsOutcome.UNVERIFIED), ""
    if isinstance(error, ssl.SSLCertVerificationError):
        return TlsOutcome.CERTIFICATE_INVALID, error.verify_message or str(error)
    return TlsOutcome.HANDSHAKE_FAILED, str(error) or type(error).__name__


def policy_context(ca: Path | None) -> ssl.SSLContext:
    """Verifies the policy host's certificate: chain to ``ca`` (or the system
    store), not expired, valid for ``mta-sts.<domain>``."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(slots=True)
class _Check:
    at: float
    policy_id: str | None  # what the TXT record said then (None: no usable record)


class MtaSts:
    """The MTA-STS policy that applies to mail for a domain now."""

    def __init__(self, store: Store, *, context: ssl.SSLContext,
                 nameservers: list[tuple[str, int]] | None = None,
                 dns_timeout: float = 5.0, fetch_timeout: float = FETCH_TIMEOUT,
                 lookup_addresses: AddressLookup = _getaddrinfo, port: int = 443,
                 clock: Callable[[], float] = time.time,
                 txt_recheck: float = TXT_RECHECK, retry_after: float = RETRY_AFTER,
                 max_remembered: int = 10_000) -> None:
        self._store = store
        self._context = context
        self._nameservers = list(nameservers) if nameservers is not None else None
        self._dns_timeout = dns_timeout
        self._fetch_timeout = fetch_timeout
        self._lookup_addresses = lookup_addresses
        self._port = port
        self._clock = clock
        self._txt_recheck = txt_recheck
        self._retry_after = retry_after
        self._max_remembered = max_remembered
        self._checks: dict[str, _Check] = {}
        self._failed: dict[tuple[str, str], float] = {}  # (domain, id) -> when a fetch failed
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._running: dict[tuple[str, bool], asyncio.Future[Policy | None]] = {}

    async def policy(self, domain: str, *, fresh: bool = False) -> Policy | None:
        """The policy to apply to ``domain``'s mail, or None (none, ``mode:
        none``, or none to be had and none cached).

        ``fresh``: ask DNS now, whatever was asked recently: RFC 8461 5.1
        wants a delivery checked against a newer policy before it fails
        for good. Deliveries to one domain that ask at the same time share
        one lookup (and one fetch).
        """
        domain = domain.strip().rstrip(".").lower()
        key = (domain, fresh)  # a fresh look must not join one that may not ask DNS
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._policy(domain, fresh))
            self._running[key] = running
            running.add_done_callback(lambda _done: self._running.pop(key, None))
        # Shielded: one caller giving up (its delivery cancelled) must not
        # cancel the lookup the others wait for.
        return await asyncio.shield(running)

    async def _policy(self, domain: str, fresh: bool) -> Policy | None:
        now = self._clock()
        cached = self._store.mta_sts_policy(domain)
        if cached is not None and cached.expires_at <= now:
            # Expired: it protects nothing any more (RFC 8461 5.1, step 1).
            with self._store.transaction():
                self._store.drop_mta_sts_policy(domain, expired_by=now)
            log.info("the MTA-STS policy of %s expired", domain)
            cached = None
        policy_id = await self._policy_id(domain, now, fresh)
        if policy_id is None:
            # No usable TXT record (or DNS failed): the cached policy, if
            # any, still applies (RFC 8461 3.1, 5.1).
            return self._parsed(cached)
        half_life = cached is not None and now >= (cached.fetched_at + cached.expires_at) / 2
        if cached is not None and cached.policy_id == policy_id and not half_life:
            return self._parsed(cached)
        failed_at = self._failed.get((domain, policy_id))
        if failed_at is not None and now - failed_at < self._retry_after:
            return self._parsed(cached)
        try:
            policy, text = await fetch_policy(
                domain, context=self._context, lookup_addresses=self._lookup_addresses,
                port=self._port, timeout=self._fetch_timeout)
        except FetchError as exc:
            self._remember_failure(domain, policy_id, now)
            log.warning("MTA-STS policy of %s (id %s) not fetched: %s%s", domain, policy_id,
                        exc, "; the cached policy stays in force" if cached else "")
            return self._parsed(cached)
        self._failed.pop((domain, policy_id), None)
        entry = CachedPolicy(domain, policy_id, text, now, now + policy.max_age)
        with self._store.transaction():
            self._store.put_mta_sts_policy(entry)
        return policy if policy.mode is not Mode.NONE else None

    def cached(self, domain: str) -> Policy | None:
        """The cached, unexpired policy of ``domain`` without asking anyone."""
        entry = self._store.mta_sts_policy(domain.strip().rstrip(".").lower())
        if entry is None or entry.expires_at <= self._clock():
            return None
        return self._parsed(entry)

    @staticmethod
    def _parsed(entry: CachedPolicy | None) -> Policy | None:
        if entry is None:
            return None
        try:
            policy = parse_policy(entry.policy)
        except PolicyError:  # stored by this code after parsing: not expected
            return None
        return policy if policy.mode is not Mode.NONE else None

    def _remember_failure(self, domain: str, policy_id: str, now: float) -> None:
        if len(self._failed) >= self._max_remembered:
            self._failed.clear()
        self._failed[(domain, policy_id)] = now

    async def _policy_id(self, domain: str, now: float, fresh: bool) -> str | None:
        check = self._checks.get(domain)
        if check is not None and not fresh and now - check.at < self._txt_recheck:
            return check.policy_id
        try:
            records = await self._txt(domain)
        except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
            # Not remembered: the next delivery asks again.
            log.info("MTA-STS TXT lookup for %s failed: %s", domain, exc)
            return None
        policy_id = parse_txt_records(records)
        if len(self._checks) >= self._max_remembered:
            self._checks.clear()
        self._checks[domain] = _Check(now, policy_id)
        return policy_id

    async def _txt(self, domain: str) -> list[str]:
        """The TXT records at ``_mta-sts.<domain>``, each one text (its
        strings joined without spaces); empty when there are none."""
        qname = dns.name.from_text(f"_mta-sts.{domain}")
        try:
            answer = await self._get_resolver().resolve(
                qname, dns.rdatatype.TXT, lifetime=self._dns_timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [b"".join(r.strings).decode("latin-1") for r in answer if isinstance(r, TXT)]

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self._nameservers is not None:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)
                                        for address, port in self._nameservers]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.timeout = self._dns_timeout
            resolver.lifetime = self._dns_timeout
            self._resolver = resolver
        return self._resolver


def from_config(config: Config, store: Store, *,
                lookup_addresses: AddressLookup = _getaddrinfo) -> MtaSts | None:
    """The MTA-STS cache a server's SMTP sender asks, or None when
    ``[smtp.tls] mta_sts = false``. It shares the store and the ``[dns]``
    resolver settings with the rest of the server."""
    if not config.smtp_tls.mta_sts:
        return None
    return MtaSts(store, context=policy_context(config.smtp_tls.ca),
                  nameservers=list(config.dns_nameservers) or None,
                  lookup_addresses=lookup_addresses)
