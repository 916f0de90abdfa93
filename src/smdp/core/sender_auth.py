"""Who sent an SMTP message, as far as SPF, DKIM and DMARC can tell (issue 12).

An SMDP sender's server is known: it answered a connection the destination
opened, or it authenticated with its certificate. An SMTP sender's is not:
anyone may put any address in MAIL FROM and From. Issue 12 item 2 makes the
SMTP counterpart of "the sending server" the *verified domain*: the domain of
the RFC 5322 From address when DKIM or SPF passes for a domain aligned with it
(RFC 7489 section 3.1), and nothing otherwise. Table 3's white list only ever
matches a verified From (a spoofed friend is held, never delivered), and the
quality score of an SMTP sender is kept per verified domain.

This module holds the results, the interface the MX adapter calls, and every
rule of the checks that needs no DNS: the strict parsing of the From domain,
the organisational domain (the Public Suffix List), alignment, the DMARC
record, the choice of the DMARC result and the verified domain, and the
``Authentication-Results`` header field (RFC 8601). The checks themselves,
which ask DNS, live in the server layer (``smdp.server.sender_auth``).

A From domain that publishes no DMARC record can still be verified: alignment
is then relaxed (RFC 7489's defaults for ``adkim`` and ``aspf``), because the
question the white list asks, "did this mail really come from the domain in
From?", is answered by an aligned DKIM or SPF pass whether or not the domain
also asks receivers to enforce anything. The DMARC *result* of such a message
is still ``none``: there is no policy to pass or fail.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.errors import NonASCIILocalPartDefect
from email.policy import default as _email_policy
from typing import Literal, Protocol

from publicsuffixlist import PublicSuffixList

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


#: How much of a signature's b= Authentication-Results names it by (RFC 6008).
SIGNATURE_PREFIX = 8


@dataclass(frozen=True, slots=True)
class DkimSignatureCheck:
    """One DKIM-Signature header field and how its verification went."""

    result: DkimResult
    domain: str  # d=
    selector: str  # s=
    reason: str = ""
    algorithm: str = ""  # a= (rsa-sha256, ed25519-sha256), "" when unknown
    # The first SIGNATURE_PREFIX characters of b= (RFC 6008 header.b): tells
    # two signatures of one domain and selector apart in Authentication-Results.
    signature_prefix: str = ""


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
    # The policy that applies to the From domain: the p= of its own record, or
    # the sp= (else p=) of its organisational domain's record when it has none
    # of its own; "" without a record.
    dmarc_policy: DmarcPolicy
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
        from_domain = parse_from_domain(message).domain
        return AuthResults(client_ip=client_ip, helo=helo, mail_from=mail_from,
                           from_domain=from_domain, spf=spf, dkim=(), dmarc="none",
                           dmarc_policy="", verified_domain=None)


# -- the From domain (RFC 5322 section 3.6.2, RFC 7489 section 6.6.1) ---------------------------

# A From field longer than this is not parsed: no legitimate author list needs
# it, and the standard library's address parser is not linear on every input.
MAX_FROM_FIELD = 4096

# How much of a message is searched for its header fields: far more than any
# real header section (the MX's own limits are lower), and a bound on the work
# for a message that has no empty line at all.
MAX_HEADER_SECTION = 1 << 20

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


@dataclass(frozen=True, slots=True)
class FromDomain:
    """The domain of a message's single From author, or why there is none."""

    domain: str  # lower-case, A-labels; "" when ``problem`` says why not
    problem: str = ""


def normalize_domain(name: str) -> str:
    """``name`` as DNS compares it: lower-case A-labels without the final dot;
    "" when it is not a host name (an address literal, an empty label, a
    label over 63 octets, characters outside letters, digits and hyphens)."""
    name = name.strip().rstrip(".")
    if not name or name.startswith("["):
        return ""
    try:
        ascii_name = name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return ""
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        return ""
    return ascii_name


def header_fields(message: bytes, name: str) -> list[str]:
    """The unfolded values of every header field ``name`` (case-insensitive)
    of ``message``, in order. The header section ends at the first empty
    line; only its first MAX_HEADER_SECTION octets are read, so a message
    with no empty line costs no more than that."""
    window = message[:MAX_HEADER_SECTION]
    end = window.find(b"\r\n\r\n")
    head = window if end < 0 else window[:end]
    wanted = name.lower()
    fields: list[list[str]] = []
    current: list[str] | None = None
    for raw in head.replace(b"\r\n", b"\n").split(b"\n"):
        if not raw:
            break  # a bare-LF message's empty line
        line = raw.decode("utf-8", "replace")
        if line[0] in " \t":
            if current is not None:
                current.append(line)
            continue
        field, colon, value = line.partition(":")
        current = None
        if colon and field.rstrip(" \t").lower() == wanted:
            current = [value]
            fields.append(current)
    return ["".join(parts).strip() for parts in fields]


def parse_from_domain(message: bytes) -> FromDomain:
    """The domain of the single author in ``message``'s From field.

    Strict on purpose (RFC 7489 section 6.6.1): no From field, several From
    fields, several addresses (or a group), an address without a domain or
    with an address literal, or a field the parser flags as malformed all give
    no domain, so nothing can be verified for that message."""
    values = header_fields(message, "from")
    if not values:
        return FromDomain("", "no From field")
    if len(values) > 1:
        return FromDomain("", f"{len(values)} From fields")
    value = values[0]
    if len(value) > MAX_FROM_FIELD:
        return FromDomain("", "the From field is too long to parse")
    try:
        parsed = _email_policy.header_factory("from", value)
        groups = parsed.groups
    except Exception:  # the stdlib parser raises IndexError and others on junk
        return FromDomain("", "the From field cannot be parsed")
    defects = [d for d in parsed.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects:
        return FromDomain("", "the From field is malformed")
    addresses = [address for group in groups for address in group.addresses]
    if any(group.display_name is not None for group in groups):
        return FromDomain("", "the From field holds a group")
    if not addresses:
        return FromDomain("", "the From field holds no address")
    if len(addresses) > 1:
        return FromDomain("", f"the From field holds {len(addresses)} addresses")
    domain = normalize_domain(addresses[0].domain)
    if not domain:
        return FromDomain("", "the From address has no usable domain")
    return FromDomain(domain)


def spf_identity(mail_from: str, helo: str) -> tuple[str, str]:
    """The identity SPF checks (RFC 7208 section 2.4) and its domain: the
    reverse-path, or ``postmaster@<helo>`` for the null path <>."""
    if mail_from:
        return mail_from, normalize_domain(mail_from.rpartition("@")[2])
    domain = normalize_domain(helo)
    return (f"postmaster@{domain}" if domain else ""), domain


# -- organisational domain and alignment (RFC 7489 sections 3.1 and 3.2) ------------------------


@functools.cache
def _suffix_list() -> PublicSuffixList:
    # The list bundled with the package: never fetched at run time, so the
    # answer does not depend on the network; it ages with the installed
    # version (docs/smtp.md, "Sender authentication").
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The organisational domain of ``domain`` (RFC 7489 section 3.2): its
    public suffix (the Public Suffix List, ICANN and private sections both,
    so two customers of one hosting suffix are never each other's
    organisation) plus one label. A name that is itself a public suffix, or
    no host name at all, is its own organisational domain ("" stays "")."""
    name = normalize_domain(domain)
    if not name:
        return ""
    return _suffix_list().privatesuffix(name) or name


AlignmentMode = Literal["r", "s"]


def aligned(identifier: str, from_domain: str, mode: AlignmentMode) -> bool:
    """Whether an authenticated domain (DKIM d=, the SPF domain) is aligned
    with the From domain: identical in strict mode, the same organisational
    domain in relaxed mode. Never for an empty or invalid name."""
    left, right = normalize_domain(identifier), normalize_domain(from_domain)
    if not left or not right:
        return False
    if mode == "s":
        return left == right
    return organizational_domain(left) == organizational_domain(right)


# -- the DMARC record (RFC 7489 section 6.3) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The parts of a DMARC record a receiver acts on."""

    policy: Literal["none", "quarantine", "reject"]  # p=
    subdomain_policy: Literal["none", "quarantine", "reject"] | None = None  # sp=
    adkim: AlignmentMode = "r"
    aspf: AlignmentMode = "r"
    pct: int = 100


_POLICIES = ("none", "quarantine", "reject")


def parse_dmarc_record(text: str) -> DmarcRecord | None:
    """The record, or None when ``text`` is not a DMARC record a receiver may
    use. ``v=DMARC1`` must come first (exactly so); a missing or unknown p=
    is p=none when the record names a report address (rua=), else the record
    is unusable (section 6.6.3, step 6); an invalid value of another tag
    falls back to its default and unknown tags are ignored (section 6.3)."""
    tags: dict[str, str] = {}
    for index, part in enumerate(text.split(";")):
        name, equals, value = part.partition("=")
        name, value = name.strip(" \t\r\n").lower(), value.strip(" \t\r\n")
        if index == 0:
            if not equals or name != "v" or value != "DMARC1":
                return None
            continue
        if not equals or not name:
            continue
        tags.setdefault(name, value)
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        if not tags.get("rua"):
            return None
        policy = "none"
    sp = tags.get("sp", "").lower()
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    pct_text = tags.get("pct", "100")
    pct = int(pct_text) if pct_text.isdigit() and int(pct_text) <= 100 else 100
    return DmarcRecord(
        policy=policy,  # type: ignore[arg-type]
        subdomain_policy=sp if sp in _POLICIES else None,  # type: ignore[arg-type]
        adkim="s" if adkim == "s" else "r",
        aspf="s" if aspf == "s" else "r",
        pct=pct,
    )


def select_dmarc_record(texts: Iterable[str]) -> DmarcRecord | None:
    """The one DMARC record among a name's TXT records: those that are not
    DMARC records are ignored, and more than one DMARC record counts as none
    (section 6.6.3, step 5)."""
    candidates = [t for t in texts if is_dmarc_candidate(t)]
    if len(candidates) != 1:
        return None
    return parse_dmarc_record(candidates[0])


def is_dmarc_candidate(text: str) -> bool:
    """Whether a TXT record counts as a DMARC record in policy discovery
    (RFC 7489 section 6.6.3, step 2): it starts with ``v=DMARC1``."""
    return bool(re.match(r"[ \t]*v[ \t]*=[ \t]*DMARC1[ \t]*(;|\Z)", text))


def discover_dmarc(from_domain: str, txt: Callable[[str], Sequence[str]],
                   ) -> tuple[DmarcRecord | None, bool]:
    """Policy discovery (RFC 7489 section 6.6.3): the DMARC record of
    ``from_domain`` and whether it was found at the organisational domain.

    ``txt(name)`` gives the TXT records at ``name`` (empty for NXDOMAIN or no
    data) and raises when DNS cannot tell; the exception goes to the caller.
    ``_dmarc.<from domain>`` is asked first; only when it holds no DMARC
    record at all is ``_dmarc.<organisational domain>`` asked. Several DMARC
    records, or one that is unusable, end discovery with no record."""
    for at_org, domain in ((False, from_domain), (True, organizational_domain(from_domain))):
        if not domain or (at_org and domain == from_domain):
            break
        candidates = [t for t in txt(f"_dmarc.{domain}") if is_dmarc_candidate(t)]
        if candidates:
            if len(candidates) > 1:
                return None, at_org
            return parse_dmarc_record(candidates[0]), at_org
    return None, False


def dkim_signature_tags(value: str) -> dict[str, str]:
    """The tags of a DKIM-Signature field value (RFC 6376 section 3.2), white
    space removed, the first of a repeated tag kept; for reporting which
    signature a result belongs to, not for verifying it."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, equals, tag_value = part.partition("=")
        name = name.strip(" \t\r\n")
        if equals and name:
            tags.setdefault(name, re.sub(r"[ \t\r\n]+", "", tag_value))
    return tags


def applicable_policy(record: DmarcRecord | None, *, at_org_domain: bool) -> DmarcPolicy:
    """The policy for the From domain: its own record's p=, or, when the
    record was found at the organisational domain instead, its sp= (p= when
    it has none). "" without a record."""
    if record is None:
        return ""
    if at_org_domain and record.subdomain_policy is not None:
        return record.subdomain_policy
    return record.policy


# -- choosing the result --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DmarcOutcome:
    result: DmarcResult
    policy: DmarcPolicy
    verified_domain: str | None


def evaluate_dmarc(from_domain: FromDomain, spf: SpfCheck,
                   dkim: Sequence[DkimSignatureCheck], record: DmarcRecord | None, *,
                   at_org_domain: bool = False, lookup: Literal["ok", "temperror"] = "ok",
                   ) -> DmarcOutcome:
    """The DMARC result, the policy that applies and the verified domain.

    ``record`` is the DMARC record found for the From domain (at the From
    domain itself, or at its organisational domain when ``at_org_domain``);
    ``lookup`` is "temperror" when DNS could not say whether there is one.

    The verified domain is the From domain when a passing DKIM signature's d=
    or an SPF pass's domain is aligned with it (in the record's adkim/aspf
    mode, relaxed without a record), else None: a From that no check ties to
    the sending infrastructure is never verified, whatever the policy says.
    The result: ``permerror`` when there is no single From domain (nothing
    can be evaluated), ``pass`` when aligned and a record exists, ``fail``
    when not aligned and a record exists, ``temperror`` when the record could
    not be fetched, ``none`` when there is no record."""
    if not from_domain.domain:
        return DmarcOutcome("permerror", "", None)
    adkim: AlignmentMode = record.adkim if record is not None else "r"
    aspf: AlignmentMode = record.aspf if record is not None else "r"
    dkim_aligned = any(sig.result == "pass" and aligned(sig.domain, from_domain.domain, adkim)
                       for sig in dkim)
    spf_aligned = spf.result == "pass" and aligned(spf.domain, from_domain.domain, aspf)
    verified = from_domain.domain if (dkim_aligned or spf_aligned) else None
    if lookup == "temperror":
        return DmarcOutcome("temperror", "", verified)
    if record is None:
        return DmarcOutcome("none", "", verified)
    policy = applicable_policy(record, at_org_domain=at_org_domain)
    return DmarcOutcome("pass" if verified else "fail", policy, verified)


# -- Authentication-Results (RFC 8601) -----------------------------------------------------------

FIELD_NAME = "Authentication-Results"
_MAX_LINE = 78  # RFC 5322 section 2.1.1: SHOULD NOT exceed 78 characters
_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")  # RFC 2045 token
_DOT_ATOM = re.compile(r"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+(\.[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+)*\Z")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: str) -> str:
    # Header field values must not carry CR, LF or other controls: a value
    # from the sender (a MAIL FROM, a d=) could otherwise inject fields.
    return _CONTROLS.sub(" ", text).strip()


def _quoted(text: str) -> str:
    return '"' + _clean(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def ar_value(text: str) -> str:
    """A property or authserv-id value (RFC 8601 section 2.2): as it is when
    it is a token or a ``local-part@domain``, else a quoted-string."""
    text = _clean(text)
    if _TOKEN.match(text):
        return text
    local, at, domain = text.rpartition("@")
    if at and _DOT_ATOM.match(local) and _TOKEN.match(domain):
        return text
    return _quoted(text)


def _comment(text: str) -> str:
    text = _clean(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return f"({text})"


def _resinfos(results: AuthResults) -> list[list[str]]:
    """Each method's words: the method=result first, then its reason and
    properties, each a unit that folding never splits."""
    spf = results.spf
    spf_words = [f"spf={spf.result}"]
    if spf.reason:
        spf_words.append(f"reason={_quoted(spf.reason)}")
    if results.mail_from:
        spf_words.append(f"smtp.mailfrom={ar_value(results.mail_from)}")
    elif results.helo:
        spf_words.append(f"smtp.helo={ar_value(results.helo)}")
    infos = [spf_words]
    if not results.dkim:
        infos.append(["dkim=none"])
    for sig in results.dkim:
        words = [f"dkim={sig.result}"]
        if sig.reason:
            words.append(f"reason={_quoted(sig.reason)}")
        if sig.domain:
            words.append(f"header.d={ar_value(sig.domain)}")
        if sig.selector:
            words.append(f"header.s={ar_value(sig.selector)}")
        if sig.algorithm:
            words.append(f"header.a={ar_value(sig.algorithm)}")
        if sig.signature_prefix:
            words.append(f"header.b={ar_value(sig.signature_prefix)}")
        infos.append(words)
    dmarc_words = [f"dmarc={results.dmarc}"]
    if results.dmarc_policy:
        dmarc_words.append(_comment(f"p={results.dmarc_policy}"))
    if results.from_domain:
        dmarc_words.append(f"header.from={ar_value(results.from_domain)}")
    infos.append(dmarc_words)
    return infos


_PROPERTY = re.compile(r'header\.([db])=("(?:[^"\\]|\\.)*"|[^\s;()]+)')


def passing_dkim(auth_results: str) -> set[tuple[str, str]]:
    """The DKIM signatures that verified, as ``authentication_results_header``
    wrote them: (``header.d`` lower case, ``header.b``, the first characters
    of b=). What tells a signature that passed from another field of the
    same domain added on the way (docs/lists.md, one-click unsubscribe)."""
    passed: set[tuple[str, str]] = set()
    for resinfo in auth_results.split(";"):
        if not resinfo.strip().startswith("dkim=pass"):
            continue
        found = {key: value.strip('"') for key, value in _PROPERTY.findall(resinfo)}
        if found.get("d") and found.get("b"):
            passed.add((found["d"].lower().rstrip("."), found["b"]))
    return passed


def authentication_results_header(authserv_id: str, results: AuthResults) -> str:
    """The value of the ``Authentication-Results`` field for ``results``
    (RFC 8601), folded so that no line of ``Authentication-Results: <value>``
    exceeds 78 characters where a break is possible; folds are CRLF plus a tab.

    ``authserv_id`` is this MX's host name. One result per method: spf with
    ``smtp.mailfrom`` (``smtp.helo`` for the null reverse-path), a dkim
    result per signature (``dkim=none`` without one) with ``header.d``,
    ``header.s``, ``header.a`` and ``header.b``, and dmarc with
    ``header.from`` and the applicable policy as a comment. Values that are
    not tokens are quoted; control characters never reach the field."""
    units: list[str] = [ar_value(authserv_id) + ";"]
    infos = _resinfos(results)
    for index, words in enumerate(infos):
        last = index == len(infos) - 1
        for position, word in enumerate(words):
            units.append(word + (";" if position == len(words) - 1 and not last else ""))
    lines: list[str] = []
    line = ""
    width = len(FIELD_NAME) + 2  # "Authentication-Results: "
    for unit in units:
        if not line:
            line = unit
        elif width + len(line) + 1 + len(unit) <= _MAX_LINE:
            line += " " + unit
        else:
            lines.append(line)
            line = unit
            width = 1  # the tab that starts a continuation line
    lines.append(line)
    return "\r\n\t".join(lines)


def authentication_results_field(authserv_id: str, results: AuthResults) -> bytes:
    """The whole header field, ready to be put before a message's first
    line: ``Authentication-Results: <value>`` and CRLF, UTF-8."""
    value = authentication_results_header(authserv_id, results)
    return f"{FIELD_NAME}: {value}\r\n".encode()


# -- storing and showing the results --------------------------------------------------------------


def summary(results: AuthResults) -> str:
    """One line for a recipient or a log: each method's result, and whom the
    From is verified as, e.g. ``spf=pass dkim=pass dmarc=pass; From verified:
    a.example`` (``From not verified`` otherwise)."""
    dkim = ",".join(sig.result for sig in results.dkim) or "none"
    verified = (f"From verified: {results.verified_domain}" if results.verified_domain
                else "From not verified")
    return f"spf={results.spf.result} dkim={dkim} dmarc={results.dmarc}; {verified}"


def results_to_json(results: AuthResults) -> str:
    """``results`` as compact JSON, to be stored beside a message."""
    return json.dumps(dataclasses.asdict(results), separators=(",", ":"), ensure_ascii=False)


def results_from_json(text: str) -> AuthResults:
    """The AuthResults that ``results_to_json`` wrote. Raises ValueError
    (json.JSONDecodeError included) or KeyError/TypeError on anything else."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("stored authentication results are not a JSON object")
    data["spf"] = SpfCheck(**data["spf"])
    data["dkim"] = tuple(DkimSignatureCheck(**sig) for sig in data["dkim"])
    return AuthResults(**data)
