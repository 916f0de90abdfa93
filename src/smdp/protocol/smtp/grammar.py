"""The SMTP codec's grammar: command and reply lines, paths, EHLO keywords.

Readers turn a command line's arguments into its event, or raise
:class:`~smdp.protocol._grammar.Refusal` with the whole reply line the server
sends instead; writers turn a command back into its line and refuse with
:class:`ProtocolUsageError` what the application got wrong.

Paths are read exactly as RFC 5321 4.1.2 writes them: a dot-string or a quoted
local part, a domain or an address literal (``[192.0.2.1]``,
``[IPv6:2001:db8::1]``, or a general ``[tag:content]``), and an optional
source route. UTF-8 (RFC 6531) is read everywhere a path allows it, and
refused with 553 5.6.7 unless the transaction asked for SMTPUTF8. What a path
*means* (relaying, a percent hack, a quoted '@', a literal) is the
application's to judge: :func:`split_mailbox` gives it the parts.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from smdp.protocol._grammar import Refusal
from smdp.protocol.framing import ProtocolUsageError, RemoteProtocolError
from smdp.protocol.smtp.events import (
    Auth,
    AuthCancel,
    AuthResponse,
    Capabilities,
    DataStart,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    SmtpCommand,
    StartTls,
    Vrfy,
    enhanced_status,
)

__all__ = [
    "MAX_DOMAIN_OCTETS",
    "MAX_LOCAL_OCTETS",
    "MAX_PATH_OCTETS",
    "Mailbox",
    "decode_base64",
    "enhanced_status",
    "format_reply",
    "parse_ehlo",
    "parse_plain",
    "read_arguments",
    "read_helo",
    "read_mail",
    "read_rcpt",
    "read_reply_line",
    "split_command",
    "split_mailbox",
    "too_big_line",
    "write_command",
    "xtext_decode",
    "xtext_encode",
]

# RFC 5321 4.5.3.1.1-3, in octets (UTF-8 octets for SMTPUTF8 paths).
MAX_LOCAL_OCTETS: Final = 64
MAX_DOMAIN_OCTETS: Final = 255
MAX_PATH_OCTETS: Final = 256

# -- RFC 5321 4.1.2, as regular expressions ---------------------------------------
#
# Every non-ASCII character is admitted where RFC 6531 3.3 extends the
# grammar (atext, qtextSMTP, sub-domain); whether it may be used is decided
# afterwards, from the SMTPUTF8 parameter.
_U: Final = "\u0080-\U0010ffff"
_ATOM: Final = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_U}-]+"
_DOT_STRING: Final = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED: Final = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_U}]|\\[\x20-\x7e])*"'
_SUB_DOMAIN: Final = rf"[A-Za-z0-9{_U}](?:[A-Za-z0-9{_U}-]*[A-Za-z0-9{_U}])?"
_DOMAIN: Final = rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*"
# dcontent (%d33-90 / %d94-126) between brackets; what is inside is checked below.
_LITERAL: Final = r"\[[\x21-\x5a\x5e-\x7e]+\]"
_ADL: Final = rf"@{_DOMAIN}(?:,@{_DOMAIN})*"
_PATH_RE: Final = re.compile(
    rf"<(?:(?P<adl>{_ADL}):)?(?P<mailbox>(?:{_DOT_STRING}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL}))>"
)
_IPV4_RE: Final = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_GENERAL_RE: Final = re.compile(r"([A-Za-z0-9-]*[A-Za-z0-9]):[\x21-\x5a\x5e-\x7e]+")
_FROM_RE: Final = re.compile(r"FROM:[ ]*", re.IGNORECASE)
_TO_RE: Final = re.compile(r"TO:[ ]*", re.IGNORECASE)
_POSTMASTER_RE: Final = re.compile(r"<(postmaster)>", re.IGNORECASE)
# RFC 5321 4.1.2: esmtp-keyword and esmtp-value.
_KEYWORD_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE_RE: Final = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_NUMBER_RE: Final = re.compile(r"[0-9]{1,20}")
_REPLY_RE: Final = re.compile(rb"([2-5][0-9]{2})(?:([ -])(.*))?", re.DOTALL)
_XTEXT_RE: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")


def _syntax(why: str) -> Refusal:
    return Refusal(f"501 5.5.4 {why}")


def too_big_line(max_size: int) -> str:
    return f"552 5.3.4 Message size exceeds fixed maximum message size ({max_size} octets)"


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A mailbox taken apart: ``local`` unquoted (``"a@b"`` -> ``a@b``),
    ``domain`` as sent (brackets kept for a literal)."""

    local: str
    domain: str
    quoted: bool
    literal: bool


def split_mailbox(mailbox: str) -> Mailbox:
    """The parts of a mailbox the codec has read (an event's ``sender`` or
    ``recipient``; not ``Postmaster``, not the null path)."""
    local, _, domain = mailbox.rpartition("@")
    quoted = local.startswith('"')
    if quoted:
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return Mailbox(local, domain, quoted, domain.startswith("["))


def _literal_ok(inner: str) -> bool:
    """RFC 5321 4.1.3: an IPv4, IPv6 or general address literal (without brackets)."""
    m = _IPV4_RE.fullmatch(inner)
    if m is not None:
        return all(int(part) <= 255 for part in m.groups())
    if inner[:5].lower() == "ipv6:":
        if "%" in inner:  # a zone index is not part of RFC 5321's IPv6-addr
            return False
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return True
    m = _GENERAL_RE.fullmatch(inner)
    return m is not None and m.group(1).lower() != "ipv6"


def _read_path(
    text: str, pos: int, *, utf8: bool, what: str
) -> tuple[str, tuple[str, ...], int]:
    """The mailbox and source route of the path at ``text[pos:]``, and where it ends."""
    m = _PATH_RE.match(text, pos)
    bad = f"501 {'5.1.7' if what == 'sender' else '5.1.3'} Bad {what} address syntax"
    if m is None:
        raise Refusal(bad)
    mailbox = m.group("mailbox")
    local, _, domain = mailbox.rpartition("@")
    if domain.startswith("[") and not _literal_ok(domain[1:-1]):
        raise Refusal(bad)
    if len(local.encode()) > MAX_LOCAL_OCTETS or len(domain.encode()) > MAX_DOMAIN_OCTETS \
            or len(m.group(0).encode()) > MAX_PATH_OCTETS:
        raise Refusal(f"501 {'5.1.7' if what == 'sender' else '5.1.3'} "
                      f"The {what} address is too long (RFC 5321 4.5.3.1)")
    if not utf8 and not m.group(0).isascii():
        raise Refusal(f"553 5.6.7 Non-ASCII {what} address needs SMTPUTF8")
    adl = m.group("adl")
    route = tuple(hop[1:] for hop in adl.split(",")) if adl else ()
    return mailbox, route, m.end()


def _params(text: str) -> dict[str, str | None]:
    """``KEYWORD[=value]`` parameters, keywords upper-cased, none repeated."""
    params: dict[str, str | None] = {}
    for token in text.split(" "):
        if not token:
            continue
        key, eq, value = token.partition("=")
        if _KEYWORD_RE.fullmatch(key) is None or (eq and _VALUE_RE.fullmatch(value) is None):
            raise _syntax("Bad parameter syntax")
        key = key.upper()
        if key in params:
            raise _syntax(f"Repeated parameter {key}")
        params[key] = value if eq else None
    return params


# -- reading commands (server side) -----------------------------------------------


def split_command(raw: bytes) -> tuple[str, bytes]:
    """A command line's verb, upper-cased (``""`` if not ASCII), and the rest."""
    verb, _, rest = raw.partition(b" ")
    return (verb.decode("ascii").upper() if verb.isascii() else ""), rest


def read_arguments(rest: bytes) -> str:
    """A command's arguments as text: UTF-8, no control characters."""
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        raise _syntax("Invalid UTF-8 in command") from None
    if not text.isprintable():
        raise _syntax("Invalid characters in command")
    return text


def read_helo(verb: str, rest: str) -> Helo:
    args = rest.split(" ")
    args = [a for a in args if a]
    if len(args) != 1 or len(args[0]) > MAX_DOMAIN_OCTETS:
        raise _syntax(f"Syntax: {verb} hostname")
    return Helo(args[0], extended=verb == "EHLO")


def read_mail(rest: str, *, max_size: int, extended: bool, auth_offered: bool) -> Mail:
    m = _FROM_RE.match(rest)
    if m is None:
        raise _syntax("Syntax: MAIL FROM:<address> [parameters]")
    route: tuple[str, ...] = ()
    if rest.startswith("<>", m.end()):
        sender, end = "", m.end() + 2
    else:
        sender, route, end = _read_path(rest, m.end(), utf8=True, what="sender")
    tail = rest[end:]
    if tail and not tail.startswith(" "):
        raise Refusal("501 5.1.7 Bad sender address syntax")
    params = _params(tail)
    if params and not extended:
        raise Refusal("555 5.5.4 MAIL parameters need EHLO")
    size = body = auth = None
    smtputf8 = False
    for key, value in params.items():
        if key == "SIZE":
            if value is None or _NUMBER_RE.fullmatch(value) is None:
                raise _syntax("SIZE=<octets> needs a number")
            size = int(value)
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise _syntax("BODY must be 7BIT or 8BITMIME")
            body = value.upper()
        elif key == "SMTPUTF8":
            if value is not None:
                raise _syntax("SMTPUTF8 takes no value")
            smtputf8 = True
        elif key == "AUTH" and auth_offered:
            if value is None or _XTEXT_RE.fullmatch(value) is None:
                raise _syntax("AUTH=<mailbox> must be xtext")
            auth = xtext_decode(value)
        else:
            raise Refusal(f"555 5.5.4 Unsupported parameter {key}")
    if not smtputf8 and not sender.isascii():
        raise Refusal("553 5.6.7 Non-ASCII sender address needs SMTPUTF8")
    if size is not None and size > max_size:
        raise Refusal(too_big_line(max_size))
    return Mail(sender, size, body, smtputf8, auth, route)


def read_rcpt(rest: str, *, utf8: bool) -> Rcpt:
    m = _TO_RE.match(rest)
    if m is None:
        raise _syntax("Syntax: RCPT TO:<address>")
    pm = _POSTMASTER_RE.match(rest, m.end())
    route: tuple[str, ...] = ()
    if pm is not None:
        recipient, end = pm.group(1), pm.end()
    else:
        recipient, route, end = _read_path(rest, m.end(), utf8=utf8, what="recipient")
    tail = rest[end:]
    if tail.strip(" "):
        if not tail.startswith(" "):
            raise Refusal("501 5.1.3 Bad recipient address syntax")
        _params(tail)  # well-formed, but none is offered
        raise Refusal("555 5.5.4 RCPT parameters are not supported")
    return Rcpt(recipient, route)


def decode_base64(text: str) -> bytes | None:
    """An AUTH response: strict base64 (``=`` alone is the empty initial
    response, RFC 4954 section 4), or None if it does not decode."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def parse_plain(data: bytes) -> tuple[str, str, str] | None:
    """RFC 4616: ``authzid NUL authcid NUL passwd``, UTF-8; None if malformed."""
    parts = data.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    try:
        authzid, user, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        return None
    return authzid, user, password


def xtext_decode(text: str) -> str:
    """RFC 3461 4: ``+XX`` is the octet XX."""
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def xtext_encode(text: str) -> str:
    return "".join(
        c if "!" <= c <= "~" and c not in "+=" else "".join(f"+{b:02X}" for b in c.encode())
        for c in text
    )


# -- writing replies (server side) ------------------------------------------------


def format_reply(code: int, lines: list[str], status: str | None) -> bytes:
    """One reply; multi-line (``250-``) with several lines; ``status`` (RFC 2034)
    starts every line when given."""
    last = len(lines) - 1
    prefix = f"{status} " if status else ""
    return "".join(
        f"{code}{'-' if i < last else ' '}{prefix}{line}".rstrip(" ") + "\r\n"
        for i, line in enumerate(lines)
    ).encode("utf-8")


# -- writing commands and reading replies (client side) --------------------------


def _checked_path(address: str, route: tuple[str, ...], *, utf8: bool, what: str) -> str:
    hops = ",".join(f"@{hop}" for hop in route)
    path = f"<{hops}:{address}>" if route else f"<{address}>"
    try:
        _, _, end = _read_path(path, 0, utf8=utf8, what=what)
    except Refusal:
        raise ProtocolUsageError(f"bad {what} address {address!r}") from None
    if end != len(path):
        raise ProtocolUsageError(f"bad {what} address {address!r}")
    return path


def _checked_token(text: str, what: str) -> str:
    if not text or not text.isprintable() or " " in text:
        raise ProtocolUsageError(f"bad {what} {text!r}")
    return text


def write_command(command: SmtpCommand) -> str:
    """The line of a one-line command, without its CRLF (the message's pieces,
    ``Data``/``DataPart``/``DataEnd``, are the connection's)."""
    match command:
        case Helo(hostname=hostname, extended=extended):
            return f"{'EHLO' if extended else 'HELO'} {_checked_token(hostname, 'hostname')}"
        case Mail(sender=sender, size=size, body=body, smtputf8=utf8, auth=auth, route=route):
            path = "<>" if sender == "" and not route else _checked_path(
                sender, route, utf8=utf8, what="sender")
            line = f"MAIL FROM:{path}"
            if size is not None:
                if size < 0:
                    raise ProtocolUsageError(f"bad size {size!r}")
                line += f" SIZE={size}"
            if body is not None:
                if body not in ("7BIT", "8BITMIME"):
                    raise ProtocolUsageError(f"bad BODY {body!r}")
                line += f" BODY={body}"
            if utf8:
                line += " SMTPUTF8"
            if auth is not None:
                line += f" AUTH={xtext_encode(auth)}"
            return line
        case Rcpt(recipient=recipient, route=route):
            if recipient.lower() == "postmaster" and not route:
                return f"RCPT TO:<{recipient}>"
            return f"RCPT TO:{_checked_path(recipient, route, utf8=True, what='recipient')}"
        case DataStart():
            return "DATA"
        case Auth(mechanism=mechanism, username=user, password=password, authzid=authzid):
            if mechanism != "PLAIN":
                raise ProtocolUsageError("the client sends AUTH PLAIN; answer other "
                                         "mechanisms' challenges with AuthResponse")
            if not user or not password or "\0" in authzid + user + password:
                raise ProtocolUsageError("AUTH PLAIN needs a user name and a password without NUL")
            blob = f"{authzid}\0{user}\0{password}".encode()
            return f"AUTH PLAIN {base64.b64encode(blob).decode('ascii')}"
        case AuthResponse(data=data):
            return base64.b64encode(data).decode("ascii")
        case AuthCancel():
            return "*"
        case Rset():
            return "RSET"
        case Noop():
            return "NOOP"
        case Quit():
            return "QUIT"
        case StartTls():
            return "STARTTLS"
        case Vrfy(text=text):
            return f"VRFY {_checked_token(text, 'VRFY argument')}"
        case Help(topic=topic):
            return f"HELP {_checked_token(topic, 'HELP topic')}" if topic else "HELP"
        case _:
            raise ProtocolUsageError(f"not an SMTP command: {command!r}")


def read_reply_line(line: bytes) -> tuple[int, bool, str]:
    """A reply line's code, whether more lines follow (``250-``), and its text."""
    m = _REPLY_RE.fullmatch(line)
    if m is None:
        raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
    return int(m.group(1)), m.group(2) == b"-", (m.group(3) or b"").decode("utf-8", "replace")


def parse_ehlo(lines: list[str]) -> Capabilities:
    """The capabilities in a 250 answer to EHLO (its first line is the greeting)."""
    keywords: list[tuple[str, tuple[str, ...]]] = []
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        key, eq, first = words[0].partition("=")  # "AUTH=LOGIN PLAIN", pre-RFC 4954 style
        params = ([first] if eq and first else []) + words[1:]
        if _KEYWORD_RE.fullmatch(key) is None:
            continue
        keywords.append((key.upper(), tuple(params)))
    found = dict(keywords)
    size: int | None = None
    if "SIZE" in found:
        sizes = found["SIZE"]
        size = int(sizes[0]) if sizes and _NUMBER_RE.fullmatch(sizes[0]) else 0
    return Capabilities(
        pipelining="PIPELINING" in found,
        size=size,
        eightbitmime="8BITMIME" in found,
        smtputf8="SMTPUTF8" in found,
        starttls="STARTTLS" in found,
        enhanced_status_codes="ENHANCEDSTATUSCODES" in found,
        auth=frozenset(m.upper() for m in found.get("AUTH", ())),
        keywords=tuple(keywords),
    )
