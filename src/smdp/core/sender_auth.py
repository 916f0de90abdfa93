"""Who sent an SMTP message, as far as SPF, DKIM and DMARC can tell (issue 12).

An SMDP sender's server is known: it answered a connection the destination
opened, or it authenticated with its certificate. An SMTP sender's is not:
anyone may put any address in MAIL FROM and From. Issue 12 item 2 makes the
SMTP counterpart of "the sending server" the *verified domain*: the domain of
the RFC 5322 From address when DKIM or SPF passes for a domain aligned with it
(RFC 7489 section 3.1), and nothing otherwise. Table 3's white list only ever
matches a verified From (a spoofed friend is held, never delivered), and the
quality score of an SMTP sender is kept per verified domain.

This module holds only the results and the interface the MX adapter calls; the
checks themselves, which ask DNS, live in the server layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
DkimResult = Literal["pass", "fail", "neutral", "policy", "temperror", "permerror"]
DmarcResult = Literal["pass", "fail", "none", "temperror", "permerror"]
DmarcPolicy = Literal["none", "quarantine", "reject", ""]


@dataclass(frozen=True, slots=True)
class SpfCheck:
    """SPF for one SMTP session (RFC 7208): the MAIL FROM domain, or the HELO
    name when the reverse-path is null (section 2.4)."""

    result: SpfResult
    domain: str  # the domain the check was made for ("" when none could be)
    reason: str = ""  # one sentence for logs and the Authentication-Results comment


@dataclass(frozen=True, slots=True)
class DkimSignatureCheck:
    """One DKIM-Signature header field and how its verification went."""

    result: DkimResult
    domain: str  # d=
    selector: str  # s=
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AuthResults:
    """Everything the MX learned about the sender of one message."""

    client_ip: str
    helo: str
    mail_from: str  # the reverse-path, "" for the null path <>
    from_domain: str  # domain of the RFC 5322 From, "" when missing or unparseable
    spf: SpfCheck
    dkim: tuple[DkimSignatureCheck, ...]
    dmarc: DmarcResult
    dmarc_policy: DmarcPolicy  # the From domain's published p= ("" without a record)
    verified_domain: str | None  # the aligned From domain, or None: see the module text

    @property
    def from_verified(self) -> bool:
        return self.verified_domain is not None

    @classmethod
    def unauthenticated(cls, client_ip: str, helo: str, mail_from: str,
                        from_domain: str) -> AuthResults:
        """The results when no check was made: nothing is verified."""
        return cls(client_ip=client_ip, helo=helo, mail_from=mail_from,
                   from_domain=from_domain, spf=SpfCheck("none", ""), dkim=(),
                   dmarc="none", dmarc_policy="", verified_domain=None)


class SenderAuthenticator(Protocol):
    """What the MX adapter asks, at two moments of an SMTP transaction."""

    async def check_spf(self, client_ip: str, helo: str, mail_from: str) -> SpfCheck:
        """At MAIL FROM: early enough to refuse a black-listed sender at RCPT
        (issue 12 item 3) when its MAIL FROM address passes SPF."""
        ...

    async def authenticate(self, client_ip: str, helo: str, mail_from: str,
                           spf: SpfCheck, message: bytes) -> AuthResults:
        """After the final dot: DKIM over the whole message, then DMARC
        alignment of the From domain with the SPF and DKIM domains."""
        ...


class NoAuthentication:
    """A SenderAuthenticator that checks nothing: every From stays unverified,
    so no SMTP mail can match a white-list entry and all of it is held."""

    async def check_spf(self, client_ip: str, helo: str, mail_from: str) -> SpfCheck:
        return SpfCheck("none", "", "sender authentication is off")

    async def authenticate(self, client_ip: str, helo: str, mail_from: str,
                           spf: SpfCheck, message: bytes) -> AuthResults:
        from_domain = ""
        return AuthResults(client_ip=client_ip, helo=helo, mail_from=mail_from,
                           from_domain=from_domain, spf=spf, dkim=(), dmarc="none",
                           dmarc_policy="", verified_domain=None)
