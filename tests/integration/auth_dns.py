"""SPF, DKIM and DMARC records on a StandInDns, and DKIM-signed test messages (issue 12).

For any test of mail arriving by SMTP that needs a sender to authenticate:

    with StandInDns() as dns_server:
        publish_spf(dns_server, "friend.example")             # 127.0.0.1 may send
        key = publish_dkim(dns_server, "friend.example")      # rsa, selector "s1"
        publish_dmarc(dns_server, "friend.example", "v=DMARC1; p=reject")
        signed = sign(message("alice@friend.example", "bob@b.example"), key)

and a server configured with ``dns_server.config`` (``[dns] nameservers``)
asks this DNS server. Keys are made once per (algorithm, size) and process,
since RSA key generation is slow; each domain gets the same key pair under its
own name, which is all a verifier can tell.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from smdp.mail.dkim import SigningKey, generate_key, sign_message, txt_strings
from tests.integration.faults import StandInDns

__all__ = ["message", "publish_dkim", "publish_dmarc", "publish_sender", "publish_spf", "sign",
           "unpublish"]


def publish_spf(dns_server: StandInDns, domain: str,
                record: str = "v=spf1 ip4:127.0.0.0/8 -all") -> None:
    """``domain``'s SPF record (by default: the loopback addresses, where the
    tests' senders connect from, may send its mail; nothing else may). Any
    other TXT record of ``domain`` stays; an SPF record is replaced."""
    _put_txt(dns_server, domain, record, lambda text: text.startswith("v=spf1"))


def publish_dmarc(dns_server: StandInDns, domain: str,
                  record: str = "v=DMARC1; p=reject") -> None:
    """``domain``'s DMARC record, at ``_dmarc.<domain>``."""
    dns_server.txt[f"_dmarc.{domain.lower()}"] = [record]


def publish_dkim(dns_server: StandInDns, domain: str, selector: str = "s1",
                 algorithm: str = "rsa", bits: int = 2048) -> SigningKey:
    """A DKIM key of ``domain`` (``algorithm`` "rsa" or "ed25519"): its
    public half published at ``<selector>._domainkey.<domain>``, the signing
    key returned (``sign`` takes it)."""
    key = SigningKey.from_pem(domain, selector, algorithm, _pem(algorithm, bits))
    dns_server.txt[key.record_name.rstrip(".")] = [tuple(txt_strings(key.public_record()))]
    return key


def publish_sender(dns_server: StandInDns, domain: str,
                   dmarc: str = "v=DMARC1; p=reject", algorithm: str = "rsa") -> SigningKey:
    """All three at once for a domain that does everything right: SPF for
    the loopback addresses, a DKIM key (returned, to sign with) and ``dmarc``."""
    publish_spf(dns_server, domain)
    publish_dmarc(dns_server, domain, dmarc)
    return publish_dkim(dns_server, domain, algorithm=algorithm)


def unpublish(dns_server: StandInDns, name: str) -> None:
    """Every TXT record at ``name`` gone (NXDOMAIN from now on)."""
    dns_server.txt.pop(name.lower(), None)


def message(from_: str, to: str, subject: str = "hello", body: str = "Hello.\r\n",
            extra_headers: str = "") -> bytes:
    """A small RFC 5322 message, CRLF line ends; ``from_`` is the whole From
    field value (one address, or several to test what DMARC does with them)."""
    return (f"From: {from_}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Wed, 2 Dec 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{abs(hash((from_, to, subject)))}@test.example>\r\n"
            f"{extra_headers}\r\n{body}").encode()


def sign(data: bytes, key: SigningKey) -> bytes:
    """``data`` with a DKIM-Signature by ``key`` (d= its domain, s= its
    selector) on top, made by the server's own signer (src/smdp/mail/dkim.py,
    itself checked against dkimpy and OpenDKIM)."""
    return sign_message(key, [data]) + data


@functools.cache
def _pem(algorithm: str, bits: int) -> bytes:
    return generate_key(algorithm, bits) if algorithm == "rsa" else generate_key(algorithm)


def _put_txt(dns_server: StandInDns, name: str, record: str,
             replaces: Callable[[str], bool]) -> None:
    key = name.lower()
    existing = dns_server.txt.get(key)
    kept = [r for r in existing if not replaces(r if isinstance(r, str) else "".join(r))] \
        if isinstance(existing, list) else []
    dns_server.txt[key] = [*kept, record]
