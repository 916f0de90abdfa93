"""Quality and greylisting for senders that reach the MX by SMTP (issue 12 item 4).

Section 5.3 keeps Quality(X) = Votes(X) / Messages(X) per peer SMDP server X.
An SMTP sender has no such server: its counterpart is its *verified domain*
(core/sender_auth.py), which a spammer cannot borrow, and, for mail nobody can
verify, the network it connects from. Each SMTP message therefore counts
towards up to two indicators, kept in the same table as the peers' under keys
no SMDP host name can take (a host name has no ":"):

- ``smtp-domain:<domain>`` for the verified domain, when there is one;
- ``smtp-net:<prefix>`` for the client address's network: IPv4 /24, IPv6 /48.
  One address is too narrow (a bulk sender rotates through its pool, and so
  does a botnet's spam run through a hosting range), a wider prefix would
  punish a provider's other customers (PRIOR-ART.md on reputation filters).

The thresholds are the peers' (``[quality]``): the same rule, the same numbers.

Greylisting, off by default, defers the first message of an (address, network)
pair with a 4xx and lets it in once the sender retries after ``delay`` seconds:
a real MTA retries, much bulk software does not. Its cost is the delay itself,
paid by every first-time correspondent (docs/smtp.md lists the retry delays of
common MTAs), which is why it is not on by default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum

DOMAIN_KEY = "smtp-domain:"
NETWORK_KEY = "smtp-net:"
IPV4_PREFIX = 24
IPV6_PREFIX = 48


def client_network(client_ip: str) -> str:
    """The network an SMTP client's address is judged by: its /24 (IPv4) or
    /48 (IPv6), as text. An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, how
    a dual-stack socket shows an IPv4 client) is judged as the IPv4 address."""
    address = ipaddress.ip_address(client_ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def quality_keys(verified_domain: str | None, client_ip: str) -> tuple[str, ...]:
    """The Quality(X) keys one SMTP message counts towards, domain first."""
    network = NETWORK_KEY + client_network(client_ip)
    if verified_domain:
        return (DOMAIN_KEY + verified_domain.lower(), network)
    return (network,)


class Greylist(StrEnum):
    FIRST = "first"  # never seen: record it, answer 4xx
    TOO_SOON = "too-soon"  # retried before the delay ran out: 4xx again
    PASS = "pass"  # retried after the delay, or known: let it in


@dataclass(frozen=True, slots=True)
class GreylistPolicy:
    enabled: bool = False
    delay: float = 300.0  # seconds a first-time pair must wait before a retry counts
    retry_window: float = 86400.0  # a first retry later than this starts over
    lifetime: float = 36 * 86400.0  # a pair that passed stays known this long after its last mail


def greylist(first_seen: float | None, passed_at: float | None, now: float,
             policy: GreylistPolicy) -> Greylist:
    """Whether one (address, network) pair may deliver now.

    ``first_seen`` is when the pair was first deferred (None: never),
    ``passed_at`` the last time it got through (None: never)."""
    if passed_at is not None and now - passed_at <= policy.lifetime:
        return Greylist.PASS
    stale = passed_at is not None and first_seen is not None and first_seen <= passed_at
    if first_seen is None or stale or now - first_seen > policy.retry_window:
        # A deferral from before a pass that has since been forgotten is no
        # evidence of a retry now.
        return Greylist.FIRST
    if now - first_seen < policy.delay:
        return Greylist.TOO_SOON
    return Greylist.PASS
