"""The MX's rules that need no I/O (issue 12; docs/smtp.md, "The MX").

- :func:`relay_refusal`: which recipient paths this server takes mail for.
  Only a plain ``local@domain`` of one of its own domains; every form that
  has ever been used to relay through an MX (a foreign domain, the percent
  hack, bang paths, source routes, a quoted local part holding ``@``, an
  address literal) is refused, whatever user it might reach.
- :func:`from_address`: the RFC 5322 From address of a message, the SMTP
  sender as Table 3 knows it.
- :func:`forged_results`: the ``Authentication-Results`` fields a sender
  wrote in our name, which RFC 8601 section 5 says must go (the field we
  write ourselves is ``core/sender_auth.py``'s
  ``authentication_results_field``).

Table 3 itself for SMTP mail is applied by ``destination.py``
(``Destination.receive_smtp``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from email.utils import getaddresses
from typing import Final

from smdp.mail.addresses import AddressError, normalize, parse_address
from smdp.mail.mime import MAX_HEADER_OCTETS, scan_header
from smdp.protocol.smtp import split_mailbox

__all__ = [
    "client_prefix",
    "forged_results",
    "from_address",
    "quality_keys",
    "relay_refusal",
]

# Characters that route mail onward when they stand in a local part: the
# percent hack (user%other@us) and UUCP bang paths (other!user@us).
_ROUTING_CHARS: Final = frozenset("%!@")


def relay_refusal(recipient: str, route: tuple[str, ...],
                  domains: Collection[str]) -> str | None:
    """Why ``recipient`` (an ``Rcpt`` event's path) is refused as relaying,
    or None when it is a plain address of one of ``domains``.

    ``Postmaster`` alone (RFC 5321 4.1.1.3) is not a relay: the caller maps
    it to one of its domains before asking.
    """
    if route:
        return "source routes are not accepted (relaying denied)"
    parts = split_mailbox(recipient)
    if parts.literal:
        return "address literals are not accepted (relaying denied)"
    if parts.domain.lower() not in domains:
        return f"{parts.domain} is not a domain of this server (relaying denied)"
    if _ROUTING_CHARS & set(parts.local):
        # Quoted or not: "a@b"@us and a%b@us both name another server's mailbox.
        return "routing characters (%, !, @) in the local part are not accepted (relaying denied)"
    if parts.quoted:
        return "quoted local parts are not accepted here"
    return None


def from_address(head: bytes) -> str | None:
    """The first address of the From field in ``head`` (the start of a
    message, at least its header), normalised; None when there is no From
    field or it holds no valid address."""
    block = scan_header(head, keep=frozenset({"from"}), limit=MAX_HEADER_OCTETS)
    for field in block.fields:
        if field.key != "from":
            continue
        # Not RFC 2047-decoded: an encoded word is display text, never an
        # address, and decoding it first would let one pose as the address.
        text = field.value.decode("utf-8", "replace")
        try:
            pairs = getaddresses([text])
        except Exception:  # the parser raises on some malformed input
            return None
        for _name, addr in pairs:
            if not addr:
                continue
            try:
                return normalize(str(parse_address(addr)))
            except AddressError:
                return None
        return None
    return None


def forged_results(head: bytes, authserv_id: str) -> tuple[bytes, int]:
    """RFC 8601 section 5: an MTA MUST delete the Authentication-Results
    fields that claim its own authserv-id and did not come from a trusted
    MTA (none is trusted here: every message comes from outside).

    ``head`` is the start of the message (at least its header). Returns the
    octets of ``head`` up to the end of the last such field with those
    fields cut out, and that end: the message becomes the first followed by
    the rest from that end on. ``(b"", 0)`` when there is none.
    """
    block = scan_header(head, keep=frozenset({"authentication-results"}),
                        limit=MAX_HEADER_OCTETS)
    spans = []
    for found in block.fields:
        # authserv-id [CFWS version] ";" ...: the first word before any ';'
        # or comment.
        words = re.split(r"[\s;(]", found.value.decode("latin-1").strip(), maxsplit=1)
        if words and words[0].lower() == authserv_id.lower():
            spans.append((found.start, found.end))
    if not spans:
        return b"", 0
    kept, at = [], 0
    for start, end in spans:
        kept.append(head[at:start])
        at = end
    return b"".join(kept), at


def client_prefix(address: str) -> str | None:
    """The network an SMTP client's address stands for in the quality
    indicator (issue 12 item 4): its IPv4 /24 or IPv6 /48 (an IPv4-mapped
    IPv6 address counts as IPv4). None for what is not an IP address."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{bits}", strict=False))


def quality_keys(verified_domain: str | None, prefix: str | None) -> list[str]:
    """Under which names an SMTP message counts in the quality indicator
    (``peer_quality``, beside SMDP peer servers): ``smtp:<verified domain>``
    and ``smtp:<client prefix>``. The ``smtp:`` mark keeps them apart from
    SMDP servers' host names: a domain proven by DMARC is not a server
    proven by its certificate."""
    keys = [f"smtp:{verified_domain}"] if verified_domain else []
    if prefix:
        keys.append(f"smtp:{prefix}")
    return keys
