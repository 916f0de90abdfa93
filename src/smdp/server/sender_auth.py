"""SPF, DKIM and DMARC for mail arriving by SMTP, asked of the configured DNS (issue 12).

``DnsSenderAuthenticator`` is the ``SenderAuthenticator`` the MX calls: SPF
(RFC 7208) with pyspf at MAIL FROM, then DKIM (RFC 6376) with dkimpy and DMARC
(RFC 7489) after the final dot. The rules that need no DNS (the From domain,
alignment, the DMARC record and result, the verified domain) are in
``smdp.core.sender_auth``; this module only asks the questions.

Every DNS question goes to the server's resolver (``[dns] nameservers``, else
the system's), never to the libraries' own: pyspf asks through one
module-level function, which is routed here for the checks this module runs
(and left as it was for anyone else in the process), and dkimpy through the
``dnsfunc=`` of each verification. Both libraries are synchronous, so the
checks run in a small pool of threads of their own, never on the event loop
and never starving the loop's default executor (``getaddrinfo``). Each check
has a deadline: every DNS question gets at most the per-question timeout and
never more than what is left of the check's time, so a thread is never kept
longer than that; a question that times out makes the result ``temperror``.
No exception leaves the authenticator: whatever goes wrong is a result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dkim
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import spf
from dkim.canonicalization import CanonicalizationPolicy

from smdp.config import Config
from smdp.core.sender_auth import (
    SIGNATURE_PREFIX,
    AuthResults,
    DkimResult,
    DkimSignatureCheck,
    FromDomain,
    SpfCheck,
    SpfResult,
    aligned,
    discover_dmarc,
    dkim_signature_tags,
    evaluate_dmarc,
    parse_from_domain,
    spf_identity,
)

__all__ = ["MAX_SIGNATURES", "DnsSenderAuthenticator"]

log = logging.getLogger("smdp.sender_auth")
# dkimpy logs every key it cannot use at ERROR level; those are the sender's
# faults, chosen by the sender, and already in the result's reason: kept out
# of the server's log, which an attacker must not be able to flood.
# A header line that may start a DKIM-Signature field, in the header section
# (up to the first empty line, as dkimpy splits it; a looser match than
# dkimpy's own, so that nothing it would verify is skipped).
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_SIGNATURE_LINE = re.compile(rb"(?im)^dkim-signature[ \t]*:")


def might_be_signed(message: bytes) -> bool:
    """False only when the header section has no DKIM-Signature field: then
    there is nothing for dkimpy to verify, and its parse of the whole message
    (6.6 ms of CPU for 700 KB, holding the interpreter's lock) is skipped."""
    end = _HEADER_END.search(message)
    return _SIGNATURE_LINE.search(message, 0, end.end() if end else len(message)) is not None


_dkimpy_log = logging.getLogger("smdp.sender_auth.dkimpy")
_dkimpy_log.propagate = False
_dkimpy_log.addHandler(logging.NullHandler())

# At most this many DKIM signatures are verified per message (RFC 6376
# section 6.1 lets a verifier limit them): each costs a DNS question, a hash
# of the body and a public-key operation, all chosen by the sender.
MAX_SIGNATURES = 5

# RFC 7208 section 4.6.4: an SPF check MAY be limited to at least 20 seconds
# in all. DKIM and DMARC together (at most MAX_SIGNATURES key questions and
# two DMARC ones) get the same.
CHECK_TIME_LIMIT = 20.0

_SPF_RESULTS: frozenset[str] = frozenset(
    {"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})

T = TypeVar("T")


class _Temporary(Exception):
    """DNS could not answer now (timeout, SERVFAIL, refused, no time left)."""


class _Lookups:
    """Synchronous DNS questions to the configured resolver, within one
    check's deadline."""

    def __init__(self, resolver: dns.resolver.Resolver | None, timeout: float,
                 deadline: float) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._deadline = deadline

    def answer(self, name: str, rdtype: str) -> list[Any]:
        """The records of type ``rdtype`` at ``name``; empty for NXDOMAIN or
        no data. Raises _Temporary when DNS cannot tell within the time."""
        if self._resolver is None:
            raise _Temporary("no usable DNS configuration")
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _Temporary(f"no time left to ask {name} {rdtype}")
        lifetime = min(self._timeout, left)
        try:
            answer = self._resolver.resolve(name, rdtype, lifetime=lifetime, search=False,
                                            raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise _Temporary(f"{name} {rdtype}: no answer within {lifetime:.3g} s") from exc
        except dns.resolver.NoNameservers as exc:
            raise _Temporary(f"{name} {rdtype}: SERVFAIL or refused") from exc
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return []  # not a name DNS can be asked about: nothing there
        return list(answer.rrset) if answer.rrset is not None else []

    def txt(self, name: str) -> list[str]:
        """Each TXT record at ``name`` as one string (its strings joined)."""
        return [b"".join(rdata.strings).decode("utf-8", "replace")
                for rdata in self.answer(name, "TXT")]

    # -- pyspf's DNSLookup(name, qtype, strict, timeout) ------------------------------------

    def for_spf(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        try:
            records = self.answer(name, qtype)
        except _Temporary as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        found: list[tuple[tuple[str, str], Any]] = []
        for rdata in records:
            if qtype in ("A", "AAAA"):
                found.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                found.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                found.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append(((name, qtype), rdata.strings))
        return found

    # -- dkimpy's dnsfunc(name, timeout) ----------------------------------------------------

    def for_dkim(self, outcome: list[str]) -> Callable[..., bytes | None]:
        """A dnsfunc that notes in ``outcome`` what it found: "temperror",
        "nokey" or the key record, so a False from dkimpy can be told apart."""

        def dnsfunc(name: bytes, timeout: float = 5.0) -> bytes | None:
            try:
                records = self.answer(name.decode("ascii", "replace"), "TXT")
            except _Temporary as exc:
                outcome.append("temperror")
                raise dkim.DnsTimeoutError(str(exc)) from exc
            if not records:
                outcome.append("nokey")
                return None
            key = b"".join(records[0].strings)
            outcome.append(key.decode("ascii", "replace"))
            return key

        return dnsfunc


# pyspf asks DNS through its module-level DNSLookup. It is replaced, once, by
# a function that sends the questions of our checks (the thread running one
# has set _spf_lookups) to the configured resolver and everyone else's to the
# original, so nothing else in the process changes behaviour.
_spf_lookups: contextvars.ContextVar[_Lookups | None] = contextvars.ContextVar(
    "smdp_spf_lookups", default=None)
_original_spf_lookup = spf.DNSLookup


def _routed_spf_lookup(name: str, qtype: str, strict: object = True,
                       timeout: float = 30) -> list[tuple[tuple[str, str], Any]]:
    lookups = _spf_lookups.get()
    if lookups is None:
        return _original_spf_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    return lookups.for_spf(name, qtype)


spf.DNSLookup = _routed_spf_lookup


def _client_address(client_ip: str) -> str:
    """The client's address as SPF wants it (an IPv4 client of a dual-stack
    socket as IPv4, no IPv6 zone); "" when it is not an IP address."""
    try:
        ip = ipaddress.ip_address(client_ip.partition("%")[0])
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _whole_body(verifier: dkim.DKIM, tags: dict[str, str]) -> tuple[DkimResult, str]:
    """A valid signature with a body length (l=) counts only when it covers
    the whole body: otherwise anyone can append their own text, even a new
    MIME part, below a replayed signed message and keep the signature valid
    (RFC 6376 section 8.2). Anything short of the whole body is ``policy``."""
    try:
        policy = CanonicalizationPolicy.from_c_value(tags.get("c", "simple/simple").encode())
        body_length = len(policy.canonicalize_body(verifier.body))
        signed = int(tags["l"])
    except Exception:  # dkimpy verified it, so this cannot fail; be safe anyway
        return "policy", "the signature's l= cannot be read"
    if signed < body_length:
        return "policy", f"the signature covers only {signed} of {body_length} body octets (l=)"
    return "pass", ""


def _build_resolver(nameservers: Sequence[tuple[str, int]] | None,
                    ) -> dns.resolver.Resolver | None:
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)
                                for address, port in nameservers]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException as exc:
            log.warning("sender authentication: no usable system DNS configuration (%s); "
                        "every check will be a temperror", exc)
            return None
    # TTL-respecting and shared by the threads (dnspython's LRUCache locks):
    # a burst of mail from one domain asks its records once.
    resolver.cache = dns.resolver.LRUCache(4096)
    return resolver


class DnsSenderAuthenticator:
    """SPF, DKIM and DMARC through the configured resolver (see the module text).

    ``timeout`` bounds each DNS question, ``time_limit`` each check (SPF; DKIM
    and DMARC together), ``max_signatures`` the DKIM signatures verified per
    message (those whose d= is aligned with the From domain first), and
    ``workers`` the threads the checks run in (more checks wait their turn,
    their time running)."""

    def __init__(self, nameservers: Sequence[tuple[str, int]] | None = None, *,
                 timeout: float = 5.0, time_limit: float = CHECK_TIME_LIMIT,
                 max_signatures: int = MAX_SIGNATURES, workers: int = 4) -> None:
        self._resolver = _build_resolver(nameservers)
        self._timeout = timeout
        self._time_limit = time_limit
        self._max_signatures = max_signatures
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="smdp-sender-auth")

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> DnsSenderAuthenticator:
        """The authenticator of a server: its ``[dns] nameservers``."""
        return cls(list(config.dns_nameservers) or None, **options)

    def close(self) -> None:
        """Let the threads go (checks still running finish within their time)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- SenderAuthenticator ----------------------------------------------------------------

    async def check_spf(self, client_ip: str, helo: str, mail_from: str) -> SpfCheck:
        identity, domain = spf_identity(mail_from, helo)
        address = _client_address(client_ip)
        if not domain:
            return SpfCheck("none", "", "no domain to check (MAIL FROM and HELO "
                            "are not host names)")
        if not address:
            return SpfCheck("none", domain, "the client has no IP address")
        deadline = time.monotonic() + self._time_limit

        def check() -> SpfCheck:
            return self._spf(address, identity, helo, domain, deadline)

        try:
            return await self._run(check, deadline)
        except TimeoutError:
            return SpfCheck("temperror", domain, "the SPF check ran out of time")
        except RuntimeError:  # the pool is shut down: the server is stopping
            return SpfCheck("temperror", domain, "sender authentication is stopping")

    async def authenticate(self, client_ip: str, helo: str, mail_from: str,
                           spf: SpfCheck, message: bytes) -> AuthResults:
        deadline = time.monotonic() + self._time_limit

        def check() -> AuthResults:
            return self._authenticate(client_ip, helo, mail_from, spf, message, deadline)

        try:
            return await self._run(check, deadline)
        except (TimeoutError, RuntimeError):  # out of time, or the server is stopping
            author = parse_from_domain(message)
            outcome = evaluate_dmarc(author, spf, (), None, lookup="temperror")
            return AuthResults(client_ip=client_ip, helo=helo, mail_from=mail_from,
                               from_domain=author.domain, spf=spf, dkim=(),
                               dmarc=outcome.result, dmarc_policy=outcome.policy,
                               verified_domain=outcome.verified_domain)

    # -- internals --------------------------------------------------------------------------

    async def _run(self, work: Callable[[], T], deadline: float) -> T:
        """``work`` in the pool, given up (TimeoutError) a little after its
        deadline: the work itself stops asking DNS at the deadline, this
        only guards against a library that would not."""
        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        return await asyncio.wait_for(future, max(0.0, deadline - time.monotonic()) + 1.0)

    def _lookups(self, deadline: float) -> _Lookups:
        # The deadline was set when the check was asked for, so a check that
        # waited for a thread has only what is left of its time.
        return _Lookups(self._resolver, self._timeout, deadline)

    def _spf(self, address: str, identity: str, helo: str, domain: str,
             deadline: float) -> SpfCheck:
        lookups = self._lookups(deadline)
        left = deadline - time.monotonic()
        if left <= 0:
            return SpfCheck("temperror", domain, "the SPF check ran out of time")
        token = _spf_lookups.set(lookups)
        try:
            # querytime: pyspf's own bound on the whole check (RFC 7208
            # section 4.6.4), beside the lookup limits it enforces itself.
            query = spf.query(i=address, s=identity, h=helo or domain, querytime=left)
            result, _code, explanation = query.check()
        except Exception as exc:  # a library fault on odd input is a result, not a crash
            log.warning("SPF check of %s for %s failed: %r", domain, address, exc)
            return SpfCheck("permerror", domain, "the SPF check could not be made")
        finally:
            _spf_lookups.reset(token)
        verdict: SpfResult = result if result in _SPF_RESULTS else "permerror"
        return SpfCheck(verdict, domain, str(explanation))

    def _authenticate(self, client_ip: str, helo: str, mail_from: str, spf_check: SpfCheck,
                      message: bytes, deadline: float) -> AuthResults:
        author = parse_from_domain(message)
        lookups = self._lookups(deadline)
        signatures = self._dkim(message, author, lookups)
        temporary = False
        try:
            record, at_org = discover_dmarc(author.domain, lookups.txt) if author.domain \
                else (None, False)
        except _Temporary as exc:
            log.info("DMARC record of %s: %s", author.domain, exc)
            record, at_org, temporary = None, False, True
        outcome = evaluate_dmarc(author, spf_check, signatures, record, at_org_domain=at_org,
                                 lookup="temperror" if temporary else "ok")
        return AuthResults(client_ip=client_ip, helo=helo, mail_from=mail_from,
                           from_domain=author.domain, spf=spf_check, dkim=signatures,
                           dmarc=outcome.result, dmarc_policy=outcome.policy,
                           verified_domain=outcome.verified_domain)

    def _dkim(self, message: bytes, author: FromDomain,
              lookups: _Lookups) -> tuple[DkimSignatureCheck, ...]:
        if not might_be_signed(message):
            return ()
        try:
            verifier = dkim.DKIM(message, logger=_dkimpy_log, timeout=self._timeout)
        except Exception as exc:  # dkimpy refuses a malformed header section
            log.info("DKIM: the message cannot be parsed: %r", exc)
            return ()
        fields = [value for name, value in verifier.headers
                  if name.lower() == b"dkim-signature"]
        tags = [dkim_signature_tags(value.decode("utf-8", "replace")) for value in fields]
        # Signatures of the From domain first: a sender cannot push the one
        # that matters out of the limit by adding others before it.
        order = sorted(range(len(fields)), key=lambda i: not (
            author.domain and aligned(tags[i].get("d", ""), author.domain, "r")))
        chosen = set(order[:self._max_signatures])
        checks: list[DkimSignatureCheck] = []
        for index, signature in enumerate(tags):
            if index not in chosen:
                result: DkimResult = "policy"
                reason = f"not verified: over the limit of {self._max_signatures} signatures"
            else:
                result, reason = self._verify(verifier, index, lookups)
                if result == "pass" and "l" in signature:
                    result, reason = _whole_body(verifier, signature)
            checks.append(DkimSignatureCheck(
                result, signature.get("d", "").lower(), signature.get("s", ""), reason,
                algorithm=signature.get("a", "").lower(),
                signature_prefix=signature.get("b", "")[:SIGNATURE_PREFIX]))
        return tuple(checks)

    @staticmethod
    def _verify(verifier: dkim.DKIM, index: int, lookups: _Lookups) -> tuple[DkimResult, str]:
        outcome: list[str] = []
        try:
            valid = verifier.verify(idx=index, dnsfunc=lookups.for_dkim(outcome))
        except dkim.ValidationError as exc:
            # dkimpy reports a body changed in transit as a ValidationError,
            # like a malformed signature; only the first is a failed check.
            if str(exc).startswith("body hash mismatch"):
                return "fail", "the body hash does not match"
            return "permerror", f"the signature cannot be verified: {exc}"
        except dkim.DKIMException as exc:
            return "permerror", f"the signature cannot be verified: {exc}"
        except Exception as exc:  # a library fault is a result, not a crash
            log.warning("DKIM verification failed: %r", exc)
            return "permerror", "the signature cannot be verified"
        if valid:
            return "pass", ""
        found = outcome[-1] if outcome else ""
        if found == "temperror":
            return "temperror", "the key could not be fetched"
        if found == "nokey":
            return "permerror", "no key for the signature"
        if found:
            try:
                dkim.evaluate_pk(b"", found.encode("ascii", "replace"))
            except Exception as exc:
                return "permerror", f"the key is unusable: {exc}"
        return "fail", "the signature does not verify"
