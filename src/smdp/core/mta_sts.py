"""Transport security for outbound SMTP: MTA-STS (RFC 8461) and the per-domain
TLS requirement, as rules without I/O.

- :func:`parse_txt_records`: which policy id the ``_mta-sts.<domain>`` TXT
  answer announces (RFC 8461 3.1), or none;
- :func:`parse_policy`: the policy file served over HTTPS (3.2), or
  :class:`PolicyError` (an invalid policy is no policy);
- :meth:`Policy.matches`: an MX host against the policy's ``mx`` patterns (4.1);
- :func:`requirement`: what TLS a delivery to one MX host needs, before
  connecting; :func:`decide`: given what TLS the session got, deliver or
  refuse (a temporary failure), and the outcome to record.

Fetching, caching and DNS are in ``server/mta_sts.py``; the SMTP client
asks :func:`requirement` before it connects and :func:`decide` after
STARTTLS, and records :attr:`Verdict.record` with the store's
``set_recipients_tls``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from smdp.config import SmtpTlsSettings

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_POLICY_SIZE",
    "Mode",
    "Policy",
    "PolicyError",
    "Requirement",
    "TlsOutcome",
    "Verdict",
    "decide",
    "parse_policy",
    "parse_txt_records",
    "requirement",
]

# RFC 8461 3.2: "maximum value of 31557600" (a year). The grammar allows ten
# digits; a larger value is read as the maximum rather than dropping the
# policy, which would only weaken the protection the domain asked for.
MAX_AGE_LIMIT = 31_557_600
# RFC 8461 3.3: a policy body larger than 64 KiB is a failed fetch.
MAX_POLICY_SIZE = 64 * 1024


class PolicyError(ValueError):
    """A policy file or TXT record that RFC 8461 does not accept; the message
    says what is wrong."""


class Mode(StrEnum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


# -- the TXT record (RFC 8461 3.1) -------------------------------------------------------

_WSP = "[ \t]*"
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# What marks a TXT string as an MTA-STS record at all (3.1: records that do
# not begin with "v=STSv1;" are discarded). The grammar's delimiter allows
# blanks before the ";", so "v=STSv1 ;" is read as an MTA-STS record too
# (and then parsed by the grammar) rather than silently ignored.
_STS_START = re.compile(r"v=STSv1[ \t]*;")


def _txt_id(record: str) -> str:
    """The id of one TXT string that begins like an MTA-STS record.

    sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
    sts-field-delim = *WSP ";" *WSP; sts-field = sts-id / sts-extension
    """
    body = record[len("v=STSv1"):]
    parts = re.split(f"{_WSP};{_WSP}", body)
    # parts[0] is what came between "v=STSv1" and the first ";": nothing.
    fields = parts[1:]
    if fields and fields[-1] == "":
        fields = fields[:-1]  # the optional final delimiter
    if not fields:
        raise PolicyError("the record has no id field")
    found: str | None = None
    for field_text in fields:
        name, sep, value = field_text.partition("=")
        if not sep:
            raise PolicyError(f"field {field_text!r} is not name=value")
        if name == "id":
            if found is not None:
                raise PolicyError("the record has more than one id")
            if not _ID.fullmatch(value):
                raise PolicyError(f"id {value!r} is not 1 to 32 letters and digits")
            found = value
        elif not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
            raise PolicyError(f"field {field_text!r} is not a valid extension")
    if found is None:
        raise PolicyError("the record has no id field")
    return found


def parse_txt_records(records: Iterable[str]) -> str | None:
    """The policy id the TXT answer at ``_mta-sts.<domain>`` announces, or
    None when it announces no usable policy (RFC 8461 3.1).

    Each item is one TXT record, its strings already joined without spaces.
    Records that do not begin with ``v=STSv1;`` are not MTA-STS records and
    are discarded; if not exactly one remains, or it is invalid, there is no
    policy.
    """
    candidates = [r for r in records if _STS_START.match(r)]
    if len(candidates) != 1:
        return None
    try:
        return _txt_id(candidates[0])
    except PolicyError:
        return None


# -- the policy file (RFC 8461 3.2) ------------------------------------------------------

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_MAX_AGE = re.compile(r"[0-9]{1,10}")
# sts-policy-vchar: VCHAR or UTF-8 beyond ASCII; spaces only inside.
_EXT_POLICY_VALUE = re.compile(r"[^\x00-\x20\x7f](?:[^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?")


@dataclass(frozen=True, slots=True)
class Policy:
    """A valid MTA-STS policy."""

    mode: Mode
    max_age: int  # seconds, at most MAX_AGE_LIMIT
    mx: tuple[str, ...]  # patterns, lower case: "mail.example.com", "*.example.net"

    def matches(self, mx_host: str) -> bool:
        """RFC 8461 4.1: ``mx_host`` is one of the patterns, or one label
        left of a ``*.`` pattern's suffix (``*.example.net`` covers
        ``mx1.example.net``, not ``example.net`` nor ``a.b.example.net``).
        Case-insensitive; a final dot on the host is ignored."""
        host = mx_host.strip().rstrip(".").lower()
        if not host:
            return False
        label, _, rest = host.partition(".")
        for pattern in self.mx:
            if pattern.startswith("*."):
                if label and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False


def parse_policy(text: str | bytes) -> Policy:
    """Read a policy file (RFC 8461 3.2): ``key: value`` lines ended by LF or
    CRLF, the last terminator optional.

    ``version: STSv1``, ``mode`` and ``max_age`` are required, and at least
    one ``mx`` unless the mode is ``none``. Of a repeated field other than
    ``mx`` the first counts (3.2); unknown fields are ignored, but every line
    must still be a valid field. Keys and the values of ``version`` and
    ``mode`` are case-sensitive. Raises PolicyError: an invalid policy is no
    policy.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_POLICY_SIZE:
            raise PolicyError(f"the policy is larger than {MAX_POLICY_SIZE} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(f"the policy is not UTF-8 ({exc.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the optional final terminator
    if not lines:
        raise PolicyError("the policy is empty")
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        key, sep, rest = line.partition(":")
        if not sep or not _KEY.fullmatch(key):
            raise PolicyError(f"line {number} is not 'key: value'")
        value = rest.lstrip(" \t").rstrip(" \t")
        if key == "version":
            if value != "STSv1":
                raise PolicyError(f"line {number}: version {value!r} is not STSv1")
        elif key == "mode":
            if value not in Mode.__members__.values():
                raise PolicyError(f"line {number}: mode {value!r} is not enforce, "
                                  "testing or none")
        elif key == "max_age":
            if not _MAX_AGE.fullmatch(value):
                raise PolicyError(f"line {number}: max_age {value!r} is not a number "
                                  "of seconds (at most 10 digits)")
        elif key == "mx":
            pattern = value.lower()
            if not _DOMAIN.fullmatch(pattern.removeprefix("*.")):
                raise PolicyError(f"line {number}: mx {value!r} is not a host name "
                                  "or a *. pattern (A-labels only)")
            mx.append(pattern)
            continue
        elif not _EXT_POLICY_VALUE.fullmatch(value):
            raise PolicyError(f"line {number}: field {key!r} has no valid value")
        fields.setdefault(key, value)
    for required in ("version", "mode", "max_age"):
        if required not in fields:
            raise PolicyError(f"the policy has no {required} field")
    mode = Mode(fields["mode"])
    if not mx and mode is not Mode.NONE:
        raise PolicyError(f"a policy in mode {mode} must list at least one mx")
    return Policy(mode=mode, max_age=min(int(fields["max_age"]), MAX_AGE_LIMIT),
                  mx=tuple(dict.fromkeys(mx)))


# -- the decision ------------------------------------------------------------------------


class TlsOutcome(StrEnum):
    """What STARTTLS gave one SMTP session (the value is what is recorded)."""

    NOT_OFFERED = "not-offered"  # no STARTTLS in the EHLO reply
    HANDSHAKE_FAILED = "handshake-failed"  # STARTTLS refused, or the handshake broke
    CERTIFICATE_INVALID = "certificate-invalid"  # untrusted, expired, or not for the MX name
    UNVERIFIED = "unverified"  # TLS, the certificate not checked (opportunistic)
    VERIFIED = "verified"  # TLS, a trusted certificate valid for the MX name


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a delivery to one MX host needs, known before connecting."""

    verified: bool  # STARTTLS with a verified certificate, or no delivery
    by: str  # "mta-sts enforce" | "require_verified" | "mta-sts testing" | "opportunistic"
    refusal: str | None = None  # set: do not connect to this MX at all (why)

    @property
    def verify(self) -> bool:
        """Whether the client should verify the certificate: when required,
        and under an MTA-STS ``testing`` policy, whose failures are recorded."""
        return self.verified or self.by == "mta-sts testing"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Deliver over this session, or refuse it (a temporary failure for
    this MX: try the next, then retry later, RFC 8461 5.1)."""

    deliver: bool
    outcome: TlsOutcome | None  # None: refused before connecting
    requirement: Requirement
    reason: str  # one sentence: why refused, or what a testing policy would refuse

    @property
    def record(self) -> str:
        """The outcome to store with each recipient of the delivery."""
        what = self.outcome.value if self.outcome is not None else "not-connected"
        verb = "" if self.deliver else "refused "
        return f"{verb}{what} ({self.requirement.by})"


_OUTCOME_WORDS = {
    TlsOutcome.NOT_OFFERED: "did not offer STARTTLS",
    TlsOutcome.HANDSHAKE_FAILED: "failed the TLS handshake",
    TlsOutcome.CERTIFICATE_INVALID: "showed a certificate that is not valid for it",
    TlsOutcome.UNVERIFIED: "showed a certificate that was not checked",
}


def requirement(domain: str, mx_host: str, policy: Policy | None,
                settings: SmtpTlsSettings) -> Requirement:
    """What TLS delivery of ``domain``'s mail to ``mx_host`` needs.

    An ``enforce`` policy that does not list the MX host refuses it outright
    (RFC 8461 4.2); one that lists it, or ``[smtp.tls]`` requiring verified
    TLS for the domain, requires STARTTLS with a verified certificate.
    Otherwise TLS is opportunistic.
    """
    domain = domain.strip().rstrip(".").lower()
    configured = settings.requires_verified(domain)
    if policy is not None and policy.mode is Mode.ENFORCE:
        if not policy.matches(mx_host):
            return Requirement(True, "mta-sts enforce", refusal=(
                f"{mx_host} is not an MX host the MTA-STS policy of {domain} lists "
                "(mode enforce)"))
        return Requirement(True, "mta-sts enforce")
    if configured:
        return Requirement(True, "require_verified")
    if policy is not None and policy.mode is Mode.TESTING:
        return Requirement(False, "mta-sts testing")
    return Requirement(False, "opportunistic")


def decide(domain: str, mx_host: str, policy: Policy | None, settings: SmtpTlsSettings,
           outcome: TlsOutcome, detail: str = "") -> Verdict:
    """Deliver to ``mx_host`` over what STARTTLS gave (``outcome``), or refuse.

    ``detail``: the TLS library's words for a failure, added to the reason.
    Refused: the enforced policy's MX list leaves the host out, or verified
    TLS is required and ``outcome`` is not VERIFIED. Opportunistic delivery
    goes on whatever the outcome (after a failed handshake, on a new
    connection without STARTTLS); under a ``testing`` policy the reason says
    what enforcement would have refused.
    """
    need = requirement(domain, mx_host, policy, settings)
    domain = domain.strip().rstrip(".").lower()
    if need.refusal is not None:
        return Verdict(False, outcome, need, need.refusal)
    suffix = f" ({detail})" if detail else ""
    if outcome is TlsOutcome.VERIFIED:
        if policy is not None and policy.mode is Mode.TESTING and not policy.matches(mx_host):
            return Verdict(True, outcome, need, f"{mx_host} is not an MX host the "
                           f"MTA-STS policy of {domain} lists (mode testing: delivered)")
        return Verdict(True, outcome, need, "")
    failure = f"{mx_host} {_OUTCOME_WORDS[outcome]}{suffix}"
    if need.verified:
        who = (f"the MTA-STS policy of {domain} (mode enforce)" if need.by == "mta-sts enforce"
               else f"[smtp.tls] require_verified for {domain}")
        return Verdict(False, outcome, need, f"{who} requires TLS with a verified "
                       f"certificate, and {failure}")
    if need.by == "mta-sts testing":
        return Verdict(True, outcome, need, f"{failure}; the MTA-STS policy of {domain} "
                       "would refuse this (mode testing: delivered)")
    return Verdict(True, outcome, need, "")

