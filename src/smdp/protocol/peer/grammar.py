"""The peer port's grammar: reading and writing command and reply lines.

Readers turn the arguments of one command line into its event, or raise
:class:`~smdp.protocol._grammar.Refusal` with the reply line the server
sends instead (protocol.md 6.3); writers turn a command back into
its line, refusing with :class:`ProtocolUsageError` what the application got
wrong. Addresses and host names are read by :mod:`smdp.mail.addresses`, the
one place their grammar is written (protocol.md 5.1). Limits that depend
on the session (recipients, TLS, a SIZE before DATA) are the connection's;
only the message size is checked here, where Table 4 puts it among the
ENVELOPE/MAIL parameters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from smdp import terms
from smdp.mail.addresses import parse_hostname
from smdp.protocol._grammar import Refusal, checked_hostname, checked_mailbox, read_mailbox
from smdp.protocol.framing import ProtocolUsageError, RemoteProtocolError
from smdp.protocol.peer.events import (
    DataStart,
    Decision,
    EnvelopeStart,
    Helo,
    MailStart,
    Noop,
    PeerCommand,
    PeerEvent,
    Quit,
    Rcpt,
    Received,
    Rset,
    SizeDecl,
    StartTls,
)

__all__ = [
    "DECISIONS_BY_VERB",
    "DECISION_VERBS",
    "format_reply",
    "read_arguments",
    "read_command",
    "read_reply_line",
    "split_command",
    "too_big_line",
    "write_command",
]

#: Table 2: how each decision travels between servers. The one place the
#: peer port spells them; the user port spells them as Table 5 does.
DECISION_VERBS: Final[dict[terms.Decision, str]] = {
    terms.Decision.ACCEPT: "ACCEPT",
    terms.Decision.ACCEPT_AUTH: "AUTHORIZE",
    terms.Decision.REJECT: "REJECT",
    terms.Decision.REJECT_SPAM: "SPAM",
    terms.Decision.REJECT_SPAMMER: "SPAMMER",
}
DECISIONS_BY_VERB: Final = {verb: kind for kind, verb in DECISION_VERBS.items()}

_ENVID_RE: Final = re.compile(r"[a-z2-7]{26}")
# Decimal, no sign, bounded so that int() stays cheap on hostile input.
_NUMBER_RE: Final = re.compile(r"[0-9]{1,20}")
_FROM_RE: Final = re.compile(r"from:[ ]*<([^<> ]*)>(?:[ ]+(.*))?", re.IGNORECASE | re.DOTALL)
_TO_RE: Final = re.compile(r"to:[ ]*<([^<> ]*)>(?:[ ]+(.*))?", re.IGNORECASE | re.DOTALL)
_REPLY_RE: Final = re.compile(rb"([0-9]{3})(?:([ -])(.*))?", re.DOTALL)


def _is_envid(text: str) -> bool:
    return _ENVID_RE.fullmatch(text) is not None


def _syntax(why: str) -> Refusal:
    return Refusal(f"501 5.5.4 {why}")


def too_big_line(max_size: int) -> str:
    return f"552 5.3.4 Message size exceeds fixed maximum of {max_size}"


# -- reading commands (server side) ---------------------------------------------


def split_command(raw: bytes) -> tuple[str, bytes]:
    """A command line's verb, upper-cased ("" if not ASCII), and its arguments."""
    verb, _, rest = raw.partition(b" ")
    rest = rest.lstrip(b" ")
    if verb.isascii() and verb[:5].upper() == b"SIZE=":
        # Table 4 writes the command as one token, SIZE=<n>; the reader
        # gets "=<n>" so that a bare "SIZE <n>" stays a syntax error.
        verb, rest = verb[:4], verb[4:] + (b" " + rest if rest else b"")
    return (verb.decode("ascii").upper() if verb.isascii() else ""), rest


def read_arguments(rest: bytes) -> str:
    # latin-1 maps every byte to one character, so nothing can fail here;
    # the check refuses what is not plain ASCII.
    text = rest.decode("latin-1")
    if not text.isascii() or not text.isprintable():
        raise _syntax("Invalid characters")
    return text


def _split_params(text: str | None) -> dict[str, str]:
    """``KEY=VALUE`` parameters separated by spaces, keys upper-cased, no repeats."""
    params: dict[str, str] = {}
    for token in (text or "").split(" "):
        if not token:
            continue
        key, eq, value = token.partition("=")
        key = key.upper()
        if not eq or not value:
            raise _syntax(f"Bad parameter {token}")
        if key in params:
            raise _syntax(f"Repeated parameter {key}")
        params[key] = value
    return params


def _parse_number(text: str, what: str) -> int:
    if _NUMBER_RE.fullmatch(text) is None:
        raise _syntax(f"Bad {what}: {text}")
    return int(text)


def _mailbox(text: str) -> str:
    return read_mailbox(text, f"501 5.5.4 Bad address <{text}>")


def _read_helo(cmd: str, rest: str) -> PeerEvent:
    args = rest.split()
    if len(args) != 1:
        raise _syntax(f"Syntax: {cmd} <hostname>")
    hostname = parse_hostname(args[0])
    if hostname is None:
        raise _syntax(f"Bad hostname {args[0]}")
    return Helo(hostname, extended=cmd == "EHLO")


def _read_start(cmd: str, rest: str, max_size: int) -> PeerEvent:
    m = _FROM_RE.fullmatch(rest)
    if m is None:
        raise _syntax(f"Syntax: {cmd} From:<address> ID=<envid> [SIZE=<n>]")
    sender = _mailbox(m.group(1))
    params = _split_params(m.group(2))
    envid = params.pop("ID", None)
    if envid is None or not _is_envid(envid):
        raise _syntax("ID=<envid> required: 26 characters of [a-z2-7]")
    size = None
    if "SIZE" in params:
        size = _parse_number(params.pop("SIZE"), "SIZE")
        if size > max_size:
            raise Refusal(too_big_line(max_size))
    if params:
        raise _syntax(f"Unknown parameter {min(params)}")
    if cmd == "MAIL":
        return MailStart(sender, envid, size)
    return EnvelopeStart(sender, envid, size)


def _read_rcpt(cmd: str, rest: str) -> PeerEvent:
    m = _TO_RE.fullmatch(rest)
    if m is None or m.group(2):
        raise _syntax("Syntax: RCPT To:<address>")
    return Rcpt(_mailbox(m.group(1)))


def _read_size(cmd: str, rest: str) -> PeerEvent:
    if not rest.startswith("="):
        raise _syntax("Syntax: SIZE=<n>")
    return SizeDecl(_parse_number(rest[1:], "SIZE"))


def _read_data(cmd: str, rest: str) -> PeerEvent:
    if rest:
        raise _syntax("Syntax: DATA")
    return DataStart()


def _read_decision(cmd: str, rest: str) -> PeerEvent:
    kind = DECISIONS_BY_VERB[cmd]
    envid, _, to = rest.partition(" ")
    m = _TO_RE.fullmatch(to.lstrip(" "))
    if not _is_envid(envid) or m is None:
        raise _syntax(f"Syntax: {cmd} <envid> To:<address>")
    recipient = _mailbox(m.group(1))
    params = _split_params(m.group(2))
    body = params.pop("BODY", None)
    if params:
        raise _syntax(f"Unknown parameter {min(params)}")
    if body is not None and (body.upper() != "HELD" or not kind.accepts):
        raise _syntax(f"BODY=HELD only goes with ACCEPT or AUTHORIZE, not {cmd} BODY={body}")
    return Decision(kind, envid, recipient, body_held=body is not None)


def _read_received(cmd: str, rest: str) -> PeerEvent:
    if not _is_envid(rest.rstrip(" ")):
        raise _syntax("Syntax: RECEIVED <envid>")
    return Received(rest.rstrip(" "))


def _read_starttls(cmd: str, rest: str) -> PeerEvent:
    if rest.strip(" "):
        raise _syntax("Syntax: STARTTLS")
    return StartTls()


def _read_bare(cmd: str, rest: str) -> PeerEvent:
    if rest.strip(" "):
        raise _syntax(f"Syntax: {cmd}")
    return Rset() if cmd == "RSET" else Quit()


def _read_noop(cmd: str, rest: str) -> PeerEvent:
    # RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
    return Noop()


_READERS: Final[dict[str, Callable[[str, str], PeerEvent]]] = {
    "HELO": _read_helo,
    "EHLO": _read_helo,
    "RCPT": _read_rcpt,
    "SIZE": _read_size,
    "DATA": _read_data,
    **dict.fromkeys(DECISIONS_BY_VERB, _read_decision),
    "RECEIVED": _read_received,
    "STARTTLS": _read_starttls,
    "RSET": _read_bare,
    "NOOP": _read_noop,
    "QUIT": _read_bare,
}


def read_command(cmd: str, rest: str, *, max_size: int) -> PeerEvent:
    """The event of a known command ``cmd`` with arguments ``rest``, or raise
    :class:`Refusal` (501, or 552 for a SIZE parameter over ``max_size``)."""
    if cmd in ("ENVELOPE", "MAIL"):
        return _read_start(cmd, rest, max_size)
    return _READERS[cmd](cmd, rest)


# -- writing replies (server side) ------------------------------------------------


def format_reply(code: int, lines: list[str]) -> bytes:
    """One reply, multi-line (``250-``) when there are several lines."""
    last = len(lines) - 1
    return "".join(
        f"{code}{'-' if i < last else ' '}{line}\r\n" for i, line in enumerate(lines)
    ).encode("utf-8")


# -- writing commands and reading replies (client side) --------------------------


def _checked_envid(envid: str) -> str:
    if not _is_envid(envid):
        raise ProtocolUsageError(f"bad envelope id {envid!r}")
    return envid


def _checked_size(size: int) -> int:
    if size < 0 or _NUMBER_RE.fullmatch(str(size)) is None:
        raise ProtocolUsageError(f"bad size {size!r}")
    return size


def _start_args(sender: str, envid: str, size: int | None) -> str:
    args = f"From:<{checked_mailbox(sender)}> ID={_checked_envid(envid)}"
    if size is not None:
        args += f" SIZE={_checked_size(size)}"
    return args


def write_command(command: PeerCommand) -> str:
    """The line of a one-line command, without its CRLF (the data block's
    pieces, ``Data``/``DataPart``/``DataEnd``, are the connection's)."""
    match command:
        case Helo(hostname=hostname, extended=extended):
            return f"{'EHLO' if extended else 'HELO'} {checked_hostname(hostname, 'hostname')}"
        case EnvelopeStart(sender=sender, envid=envid, size=size):
            return f"ENVELOPE {_start_args(sender, envid, size)}"
        case MailStart(sender=sender, envid=envid, size=size):
            return f"MAIL {_start_args(sender, envid, size)}"
        case Rcpt(recipient=recipient):
            return f"RCPT To:<{checked_mailbox(recipient)}>"
        case SizeDecl(size=size):
            return f"SIZE={_checked_size(size)}"
        case DataStart():
            return "DATA"
        case Decision(kind=kind, envid=envid, recipient=recipient, body_held=held):
            if held and not kind.accepts:
                raise ProtocolUsageError("BODY=HELD only goes with ACCEPT or AUTHORIZE")
            line = f"{DECISION_VERBS[kind]} {_checked_envid(envid)}"
            line += f" To:<{checked_mailbox(recipient)}>"
            return line + " BODY=HELD" if held else line
        case Received(envid=envid):
            return f"RECEIVED {_checked_envid(envid)}"
        case Rset():
            return "RSET"
        case Noop():
            return "NOOP"
        case Quit():
            return "QUIT"
        case StartTls():
            return "STARTTLS"
        case _:
            raise ProtocolUsageError(f"not a peer command: {command!r}")


def read_reply_line(line: bytes) -> tuple[int, bool, str]:
    """A reply line's code, whether more lines follow (``250-``), and its text."""
    m = _REPLY_RE.fullmatch(line)
    if m is None:
        raise RemoteProtocolError(f"malformed reply line {line[:80]!r}")
    return int(m.group(1)), m.group(2) == b"-", (m.group(3) or b"").decode("utf-8", "replace")
