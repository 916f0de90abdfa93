"""Mailbox addresses as SMDP uses them (wire contract section 1).

SMDP ties every address to one server (paper section 5.1, assumption 1) and
keys white and black lists on addresses (Table 3), so the grammar is kept
deliberately small: RFC 5321 ``Mailbox`` restricted to a dot-atom local part
and an LDH domain, ASCII only, at most 254 octets. Anything cleverer (quoted
local parts, source routes, IP literals, UTF-8) is refused, because every
extra form is one more way for two servers to disagree on who a message is
from.

Error messages never quote the rejected input: they are echoed into protocol
replies, and the input may hold CR or LF.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_ADDRESS_OCTETS",
    "MAX_DOMAIN_LABEL_OCTETS",
    "MAX_HOSTNAME_OCTETS",
    "MAX_LOCAL_OCTETS",
    "Address",
    "AddressError",
    "normalize",
    "parse_address",
    "parse_hostname",
    "parse_mailbox",
    "parse_path",
]

# RFC 5321 4.5.3.1.1 (local part) and RFC 3696 errata 1690 (whole path).
MAX_LOCAL_OCTETS = 64
MAX_ADDRESS_OCTETS = 254
MAX_DOMAIN_LABEL_OCTETS = 63
# RFC 1035 2.3.4, written without the trailing dot (protocol.md 5.1).
MAX_HOSTNAME_OCTETS = 253

# RFC 5322 3.2.3 atext.
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ATEXT = frozenset(_ALNUM + "!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset(_ALNUM + "-")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AddressError(ValueError):
    """An address is not a valid SMDP mailbox; the message is one plain sentence."""


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed mailbox. Build it with :func:`parse_address`, which validates it."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def _describe(char: str) -> str:
    # Only called for printable ASCII (controls and non-ASCII are refused
    # earlier), so quoting the character cannot inject anything into a reply.
    return repr(char)


def _check_local(local: str) -> None:
    if not local:
        raise AddressError("The local part (before the '@') is empty.")
    if len(local) > MAX_LOCAL_OCTETS:
        raise AddressError(f"The local part is longer than {MAX_LOCAL_OCTETS} octets.")
    if local.startswith(".") or local.endswith("."):
        raise AddressError("The local part starts or ends with a dot.")
    if ".." in local:
        raise AddressError("The local part has two consecutive dots.")
    for char in local:
        if char != "." and char not in _ATEXT:
            raise AddressError(
                f"The local part contains {_describe(char)}, which is not allowed "
                "in an unquoted local part."
            )


def _check_domain(domain: str) -> None:
    if not domain:
        raise AddressError("The domain (after the '@') is empty.")
    if domain.startswith("["):
        raise AddressError("IP address literals are not supported as domains.")
    if domain.startswith(".") or domain.endswith("."):
        raise AddressError("The domain starts or ends with a dot.")
    if ".." in domain:
        raise AddressError("The domain has two consecutive dots.")
    for label in domain.split("."):
        if len(label) > MAX_DOMAIN_LABEL_OCTETS:
            raise AddressError(
                f"A domain label is longer than {MAX_DOMAIN_LABEL_OCTETS} characters."
            )
        for char in label:
            if char not in _LDH:
                raise AddressError(
                    f"The domain contains {_describe(char)}; only letters, digits, "
                    "hyphens and dots are allowed."
                )
        if label.startswith("-") or label.endswith("-"):
            raise AddressError("A domain label starts or ends with a hyphen.")


def _check_printable_ascii(text: str) -> None:
    if not text.isascii():
        raise AddressError("The address contains a non-ASCII character; addresses are ASCII only.")
    if _CONTROL.search(text):
        raise AddressError("The address contains a control character such as CR, LF or NUL.")


def _parse_syntax(text: str) -> Address:
    """The grammar of protocol.md 5.1, and nothing more."""
    if not text:
        raise AddressError("The address is empty.")
    _check_printable_ascii(text)
    if '"' in text:
        raise AddressError("Quoted local parts are not supported.")
    if " " in text:
        raise AddressError("The address contains a space.")
    if len(text) > MAX_ADDRESS_OCTETS:
        raise AddressError(f"The address is longer than {MAX_ADDRESS_OCTETS} octets.")
    if text.startswith("<") or text.endswith(">"):
        raise AddressError("The address must be given without angle brackets here.")
    count = text.count("@")
    if count == 0:
        raise AddressError("The address has no '@'.")
    if count > 1:
        raise AddressError("The address has more than one '@'.")
    local, _, domain = text.partition("@")
    _check_local(local)
    _check_domain(domain)
    return Address(local=local, domain=domain.lower())


def parse_address(text: str) -> Address:
    """Parse ``local@domain``; the domain is lower-cased, the local part kept as is.

    Beyond the grammar, a domain whose last label is all digits is refused,
    as protocol.md 5.1 recommends. Raises :class:`AddressError`
    with a one-sentence reason.
    """
    address = _parse_syntax(text)
    # An all-numeric last label is an IP address in disguise (RFC 3696
    # section 2); discovery (SRV lookups) would treat it as a name and fail.
    if address.domain.rpartition(".")[2].isdigit():
        raise AddressError(
            "The domain ends in an all-numeric label; IP addresses are not supported."
        )
    return address


def parse_mailbox(text: str) -> str | None:
    """The wire's reading of a mailbox: ``local@domain`` with the domain
    lower-cased (the local part keeps its case), or None if it breaks the
    grammar of protocol.md 5.1.

    This is what the codecs (``smdp.protocol``) accept in a path. It differs
    from :func:`parse_address` in one way only, which the contract records
    (protocol.md 5.1, "the reference implementation accepts it on the peer port"):
    an all-numeric last label passes here; the user port's server refuses it
    afterwards with :func:`parse_address`'s reason.
    """
    try:
        return str(_parse_syntax(text))
    except AddressError:
        return None


def parse_hostname(text: str) -> str | None:
    """A host name (HELO/EHLO, a list entry's server): the domain grammar of
    protocol.md 5.1, at most 253 octets; lower-cased, or None."""
    if len(text) > MAX_HOSTNAME_OCTETS:
        return None
    try:
        _check_printable_ascii(text)
        _check_domain(text)
    except AddressError:
        return None
    return text.lower()


def parse_path(arg: str, keyword: str) -> Address:
    """Parse a protocol path argument such as ``From:<a@b>`` or ``To: <a@b>``.

    The keyword is matched case-insensitively, one optional space may follow
    the colon, and the angle brackets are required. The null path ``<>`` is
    refused: SMDP never bounces, so it has no use for it.
    """
    prefix = keyword + ":"
    if arg[: len(prefix)].lower() != prefix.lower():
        raise AddressError(f"Expected {keyword}:<address>.")
    rest = arg[len(prefix) :]
    if rest.startswith(" "):
        rest = rest[1:]
    if len(rest) < 2 or not rest.startswith("<") or not rest.endswith(">"):
        raise AddressError(
            f"The address must be written in angle brackets, as {keyword}:<user@domain>."
        )
    inner = rest[1:-1]
    if not inner:
        raise AddressError("The null path <> is not accepted.")
    if inner.startswith("@") and ":" in inner:
        raise AddressError("Source routes are not supported.")
    if "<" in inner or ">" in inner:
        raise AddressError("The address contains a stray angle bracket.")
    return parse_address(inner)


def domain_of(address: str) -> str:
    """The domain of an address already checked (lower-cased): where its mail
    goes, and whose SMDP server speaks for it."""
    return address.rpartition("@")[2].lower()


def normalize(addr: str) -> str:
    """The canonical form of ``addr`` used as a database key.

    The whole address is lower-cased, local part included. RFC 5321 lets a
    server treat local parts case-sensitively, but for SMDP keys that would be
    harmful: a black-listed ``Spammer@x`` could come back as ``spammer@x`` and
    pass the recipient's black list (Table 3), and one correspondent would get
    two white-list entries. Every SMDP server registers its own users'
    addresses (assumption 1) and can refuse two that differ only in case, so
    nothing is lost. The display form keeps the case the user typed.

    Raises :class:`AddressError` when ``addr`` is not a valid address.
    """
    parsed = parse_address(addr)
    return f"{parsed.local}@{parsed.domain}".lower()
