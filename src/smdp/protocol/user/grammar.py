"""The user port's grammar: reading and writing command and status lines.

POP3 (RFC 1939) where the commands overlap, so a stock POP3 client can read its
mail; the SMDP commands (envelopes, decisions, composing, lists) sit beside them
(protocol.md 12.3). Readers turn the arguments of one command line
into its event, or raise :class:`~smdp.protocol._grammar.Refusal` with the
text of the ``-ERR`` the server sends instead; writers turn a command back into
its line, refusing with :class:`ProtocolUsageError` what the application got
wrong. Addresses and host names are read by :mod:`smdp.mail.addresses`, the one
place their grammar is written (protocol.md 5.1). Limits that depend on
the session (recipients, TLS) are the connection's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from smdp import terms
from smdp.mail.addresses import parse_hostname
from smdp.protocol._grammar import Refusal, checked_hostname, checked_mailbox, read_mailbox
from smdp.protocol.framing import ProtocolUsageError, RemoteProtocolError
from smdp.protocol.user.events import (
    Capa,
    DataCmd,
    Dele,
    Envs,
    EnvShow,
    GroupStatus,
    Ident,
    ListAdd,
    ListCmd,
    ListDel,
    Lists,
    MailCmd,
    Message,
    NewPass,
    Noop,
    Pass,
    Passwd,
    Quit,
    RcptCmd,
    Retr,
    Rset,
    Sent,
    Stat,
    Stls,
    Top,
    Uidl,
    Unsub,
    User,
    UserCommand,
    UserDecision,
    UserEvent,
)

__all__ = [
    "DECISIONS_BY_VERB",
    "DECISION_VERBS",
    "LIST_NAMES",
    "MAX_PAGE",
    "MAX_PASSWORD_OCTETS",
    "PAGE_MORE",
    "SENT_MORE",
    "answers_multiline",
    "page_continuation",
    "page_words",
    "password_problem",
    "read_arguments",
    "read_command",
    "read_status_line",
    "sent_continuation",
    "split_command",
    "status",
    "write_command",
]

#: Table 5: how the user names each of the options of Table 1. The one place
#: the user port spells them; the peer port spells them as Table 2 does.
DECISION_VERBS: Final[dict[terms.Decision, str]] = {
    terms.Decision.ACCEPT: "ACCEPT",
    terms.Decision.ACCEPT_AUTH: "ACCEPT&AUTH",
    terms.Decision.REJECT: "REJECT",
    terms.Decision.REJECT_SPAM: "REJECT&SPAM",
    terms.Decision.REJECT_SPAMMER: "REJECT&SPAMMER",
}
DECISIONS_BY_VERB: Final = {verb: kind for kind, verb in DECISION_VERBS.items()}

#: Inbound lists hold (address, server) pairs, outbound ones addresses (Table 2).
LIST_NAMES: Final = frozenset({"in-white", "in-black", "out-white", "out-black"})

# Folded before the state table is consulted, so it speaks canonical verbs only.
_ALIASES: Final = {"DEL": "DELE", "PWD": "PASS"}

_COUNT_RE: Final = re.compile(r"[0-9]{1,10}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_MSGID_RE: Final = re.compile(r"[\x21-\x7e]{1,255}")
#: How a SENT answer names its next page (docs/protocol.md 12.6).
SENT_MORE: Final = "more: SENT BEFORE "
_SENT_MORE_RE: Final = re.compile(re.escape(SENT_MORE) + r"([\x21-\x7e]{1,255})$")
#: The most entries one page of ENVS, LIST or UIDL may ask for (LIMIT).
MAX_PAGE: Final = 1000
#: How a paged answer names its next page: ``; more: <command>`` at the end
#: of its +OK line, the command ending ``AFTER <cursor> LIMIT <k>``.
PAGE_MORE: Final = "; more: "
_PAGE_MORE_RE: Final = re.compile(r"; more: [A-Z ]*AFTER ([0-9]{1,10}) LIMIT [0-9]{1,4}$")
_FROM_RE: Final = re.compile(r"from:[ ]*<([^<> ]*)>", re.IGNORECASE)
_TO_RE: Final = re.compile(r"to:[ ]*<([^<> ]*)>", re.IGNORECASE)
_STATUS_RE: Final = re.compile(rb"(\+OK|-ERR)(?: (.*))?", re.DOTALL)
_MAX_NAME: Final = 255

#: The longest password, in UTF-8 octets. The command line holds 510 octets
#: before its CRLF; 500 leave room for the longest verb that carries a
#: password ("NEWPASS ") so that every password a user can log in with can
#: also be set, and the reverse.
MAX_PASSWORD_OCTETS: Final = 500


def password_problem(password: str) -> str | None:
    """Why ``password`` could never be sent in PASS (protocol.md 12.3), or None.

    THE rule of which passwords exist: the wire refuses the others, and
    accounts refuse to be given one (an account with such a password could
    never log in). The password is the rest of the PASS line after the SP
    that ends the verb, so it cannot be empty or start with SP; it is UTF-8
    text without controls and fits in the command line.
    """
    if not password:
        return "the password is empty"
    if password.startswith(" "):
        return "the password starts with a space"
    if _CONTROL_RE.search(password):
        return "the password holds a control character (such as a tab)"
    try:
        octets = len(password.encode("utf-8"))
    except UnicodeEncodeError:
        return "the password is not valid Unicode text"
    if octets > MAX_PASSWORD_OCTETS:
        return f"the password is longer than {MAX_PASSWORD_OCTETS} octets (UTF-8)"
    return None


def answers_multiline(command: UserEvent | Message) -> bool:
    """Whether a positive answer to ``command`` is a dot-stuffed block."""
    match command:
        case ListCmd(n=n) | Uidl(n=n):
            return n is None  # a page too
        case Pass(verb=verb):
            return verb == "PWD"
        case (Retr() | Top() | Capa() | Envs() | EnvShow() | Sent() | Lists() | Ident()
              | GroupStatus()):
            return True
        case _:
            return False


def status(ok: bool, text: str) -> bytes:
    """A status line: ``+OK text`` or ``-ERR text``."""
    head = "+OK" if ok else "-ERR"
    return f"{head} {text}\r\n".encode() if text else f"{head}\r\n".encode()


# -- reading commands (server side) ---------------------------------------------


def split_command(raw: bytes) -> tuple[str, str, bytes]:
    """A command line's verb as sent (upper-cased), the command it names in the
    state table (aliases folded), and its arguments."""
    verb_bytes, _, rest = raw.partition(b" ")
    verb = verb_bytes.decode("ascii", "replace").upper()
    return verb, _ALIASES.get(verb, verb), rest


def read_arguments(rest: bytes) -> str:
    try:
        text = rest.decode("utf-8").lstrip(" ")
    except UnicodeDecodeError:
        raise Refusal("arguments must be UTF-8") from None
    if _CONTROL_RE.search(text):
        raise Refusal("control characters are not allowed")
    return text


def _positive(token: str, what: str = "message number") -> int:
    if _COUNT_RE.fullmatch(token) is None or int(token) == 0:
        raise Refusal(f"{what} must be a positive decimal integer")
    return int(token)


def _read_user(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) != 1 or len(args[0]) > _MAX_NAME:
        raise Refusal("syntax: USER <name>")
    return User(args[0])


_PASSWORD_SYNTAX: Final = {"PASSWD": "PASSWD <current password>",
                            "NEWPASS": "NEWPASS <new password>"}


def _read_pass(verb: str, rest: str) -> UserEvent:
    # RFC 1939 7: the password is the rest of the line and may hold spaces.
    # read_arguments has taken the SPs after the verb, and any control.
    if not rest:
        raise Refusal(f"syntax: {_PASSWORD_SYNTAX.get(verb, f'{verb} <password>')}")
    problem = password_problem(rest)
    if problem is not None:
        raise Refusal(problem)  # too long: the one left
    if verb == "PASSWD":
        return Passwd(rest)
    if verb == "NEWPASS":
        return NewPass(rest)
    return Pass(rest, verb)


_BARE: Final[dict[str, Callable[[], UserEvent]]] = {
    "CAPA": Capa,
    "STAT": Stat,
    "NOOP": Noop,
    "RSET": Rset,
    "QUIT": Quit,
    "DATA": DataCmd,
    "LISTS": Lists,
    "IDENT": Ident,
}


def _read_bare(verb: str, rest: str) -> UserEvent:
    if rest.strip(" "):
        raise Refusal(f"{verb} takes no argument")
    return _BARE[verb]()


def _read_stls(verb: str, rest: str) -> UserEvent:
    if rest.strip(" "):
        raise Refusal("STLS takes no argument")
    return Stls()


def _read_page(args: list[str], usage: str) -> tuple[int | None, int | None]:
    """``[AFTER <cursor>] [LIMIT <count>]``, the whole of ``args``."""
    after = limit = None
    if len(args) >= 2 and args[0].upper() == "AFTER":
        if _COUNT_RE.fullmatch(args[1]) is None:
            raise Refusal("cursor must be a non-negative decimal integer (the AFTER of a "
                          "more: continuation)")
        after, args = int(args[1]), args[2:]
    if len(args) == 2 and args[0].upper() == "LIMIT":
        if _COUNT_RE.fullmatch(args[1]) is None or not 1 <= int(args[1]) <= MAX_PAGE:
            raise Refusal(f"LIMIT must be a decimal integer from 1 to {MAX_PAGE}")
        limit, args = int(args[1]), []
    if args:
        raise Refusal(f"syntax: {usage}")
    return after, limit


def _read_optional_n(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) == 1:
        n = _positive(args[0])
        return ListCmd(n) if verb == "LIST" else Uidl(n)
    after, limit = _read_page(args, f"{verb} [<n>] or {verb} [AFTER <n>] [LIMIT <count>]")
    return ListCmd(after=after, limit=limit) if verb == "LIST" else Uidl(after=after, limit=limit)


def _read_n(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) != 1:
        raise Refusal(f"syntax: {verb} <n>")
    if verb == "ENV":
        return EnvShow(_positive(args[0], "envelope id"))
    if verb == "UNSUB":
        return Unsub(_positive(args[0], "envelope id"))
    n = _positive(args[0])
    return Retr(n) if verb == "RETR" else Dele(n)


def _read_top(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) != 2:
        raise Refusal("syntax: TOP <n> <lines>")
    n = _positive(args[0])
    if _COUNT_RE.fullmatch(args[1]) is None:
        raise Refusal("line count must be a non-negative decimal integer")
    return Top(n, int(args[1]))


def _read_envs(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    show_all = bool(args) and args[0].upper() == "ALL"
    after, limit = _read_page(args[1:] if show_all else args,
                              "ENVS [ALL] [AFTER <cursor>] [LIMIT <count>]")
    return Envs(all=show_all, after=after, limit=limit)


def _read_decision(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) != 1:
        raise Refusal(f"syntax: {verb} <envelope id>")
    return UserDecision(DECISIONS_BY_VERB[verb], _positive(args[0], "envelope id"))


def _read_mail(verb: str, rest: str) -> UserEvent:
    rest = rest.rstrip(" ")
    if not rest:
        return MailCmd(None)
    m = _FROM_RE.fullmatch(rest)
    if m is None:
        raise Refusal("syntax: MAIL [FROM:<identity>]")
    return MailCmd(read_mailbox(m.group(1), f"bad address <{m.group(1)}>"))


def _read_rcpt(verb: str, rest: str) -> UserEvent:
    m = _TO_RE.fullmatch(rest.rstrip(" "))
    if m is None:
        raise Refusal("syntax: RCPT TO:<address>")
    return RcptCmd(read_mailbox(m.group(1), f"bad address <{m.group(1)}>"))


def _read_sent(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) == 2 and args[0].upper() == "BEFORE" and _MSGID_RE.fullmatch(args[1]):
        return Sent(before=args[1])
    if len(args) > 1 or (args and _MSGID_RE.fullmatch(args[0]) is None):
        raise Refusal("syntax: SENT [<msgid>] or SENT BEFORE <msgid>")
    return Sent(args[0] if args else None)


def page_continuation(text: str) -> int | None:
    """The cursor to ask for the next page with (``AFTER <cursor>``), from
    the text of a paged answer's ``+OK`` line; None when it was the last."""
    m = _PAGE_MORE_RE.search(text)
    return int(m.group(1)) if m else None


def page_words(after: int | None, limit: int | None) -> str:
    """`` AFTER <cursor> LIMIT <count>`` as a command line ends, or less."""
    text = "" if after is None else f" AFTER {_checked_count(after)}"
    if limit is not None:
        if not 1 <= limit <= MAX_PAGE:
            raise ProtocolUsageError(f"LIMIT out of range: {limit!r}")
        text += f" LIMIT {limit}"
    return text


def sent_continuation(text: str) -> str | None:
    """The msgid to continue a SENT listing with (``SENT BEFORE <msgid>``),
    from the text of its ``+OK`` line; None when it was the last page."""
    m = _SENT_MORE_RE.search(text)
    return m.group(1) if m else None


def _read_group(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) != 1:
        raise Refusal("syntax: GROUP <address>")
    raw = args[0][1:-1] if args[0].startswith("<") and args[0].endswith(">") else args[0]
    return GroupStatus(read_mailbox(raw, f"bad address {args[0]}"))


def _read_list_edit(verb: str, rest: str) -> UserEvent:
    args = rest.split()
    if len(args) not in (2, 3):
        raise Refusal(f"syntax: {verb} <list> <address> [<server>]")
    list_name = args[0].lower()
    if list_name not in LIST_NAMES:
        raise Refusal("list must be one of in-white, in-black, out-white, out-black")
    raw_address = args[1]
    if raw_address.startswith("<") and raw_address.endswith(">"):
        raw_address = raw_address[1:-1]
    address = read_mailbox(raw_address, f"bad address {args[1]}")
    server = None
    if len(args) == 3:
        if list_name.startswith("out-"):
            raise Refusal("outbound lists hold addresses only")
        server = parse_hostname(args[2])
        if server is None:
            raise Refusal(f"bad server name {args[2]}")
    if verb == "LISTADD":
        return ListAdd(list_name, address, server)
    return ListDel(list_name, address, server)


_READERS: Final[dict[str, Callable[[str, str], UserEvent]]] = {
    "USER": _read_user,
    "PASS": _read_pass,
    "PASSWD": _read_pass,
    "NEWPASS": _read_pass,
    "LIST": _read_optional_n,
    "UIDL": _read_optional_n,
    "RETR": _read_n,
    "DELE": _read_n,
    "TOP": _read_top,
    "ENVS": _read_envs,
    "ENV": _read_n,
    "UNSUB": _read_n,
    "GROUP": _read_group,
    **dict.fromkeys(DECISIONS_BY_VERB, _read_decision),
    "MAIL": _read_mail,
    "RCPT": _read_rcpt,
    "SENT": _read_sent,
    "LISTADD": _read_list_edit,
    "LISTDEL": _read_list_edit,
    "STLS": _read_stls,
    **dict.fromkeys(_BARE, _read_bare),
}


def read_command(verb: str, cmd: str, rest: str) -> UserEvent:
    """The event of a known command ``cmd`` sent as ``verb`` with arguments
    ``rest``, or raise :class:`Refusal`."""
    return _READERS[cmd](verb, rest)


# -- writing commands and reading answers (client side) --------------------------


def _checked_token(text: str) -> str:
    if not text or len(text) > _MAX_NAME or " " in text or _CONTROL_RE.search(text):
        raise ProtocolUsageError(f"bad name {text!r}")
    return text


def _checked_password(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise ProtocolUsageError(problem)
    return password


def _checked_count(n: int) -> int:
    if n < 0 or n >= 10**10:
        raise ProtocolUsageError(f"not a cursor in range: {n!r}")
    return n


def _checked_positive(n: int) -> int:
    if n <= 0 or n >= 10**10:
        raise ProtocolUsageError(f"not a positive number in range: {n!r}")
    return n


def _list_edit_line(command: ListAdd | ListDel) -> str:
    verb = "LISTADD" if isinstance(command, ListAdd) else "LISTDEL"
    if command.list_name not in LIST_NAMES:
        raise ProtocolUsageError(f"unknown list {command.list_name!r}")
    line = f"{verb} {command.list_name} {checked_mailbox(command.address)}"
    if command.server is not None:
        line += f" {checked_hostname(command.server, 'server name')}"
    return line


def write_command(command: UserCommand) -> str:
    """The line of a command, without its CRLF (the message after DATA,
    :class:`Message`, is the connection's)."""
    match command:
        case User(name=name):
            return f"USER {_checked_token(name)}"
        case Pass(password=password, verb=verb):
            if verb not in ("PASS", "PWD"):
                raise ProtocolUsageError(f"password verb is PASS or PWD, not {verb!r}")
            return f"{verb} {_checked_password(password)}"
        case Passwd(password=password):
            return f"PASSWD {_checked_password(password)}"
        case NewPass(password=password):
            return f"NEWPASS {_checked_password(password)}"
        case Capa():
            return "CAPA"
        case Stat():
            return "STAT"
        case ListCmd(n=n, after=after, limit=limit) | Uidl(n=n, after=after, limit=limit):
            verb = "LIST" if isinstance(command, ListCmd) else "UIDL"
            if n is not None:
                return f"{verb} {_checked_positive(n)}"
            return verb + page_words(after, limit)
        case Retr(n=n):
            return f"RETR {_checked_positive(n)}"
        case Dele(n=n):
            return f"DELE {_checked_positive(n)}"
        case Top(n=n, lines=count):
            if count < 0:
                raise ProtocolUsageError("TOP line count must not be negative")
            return f"TOP {_checked_positive(n)} {count}"
        case Noop():
            return "NOOP"
        case Rset():
            return "RSET"
        case Quit():
            return "QUIT"
        case Envs(all=all_, after=after, limit=limit):
            return ("ENVS ALL" if all_ else "ENVS") + page_words(after, limit)
        case EnvShow(id=envelope):
            return f"ENV {_checked_positive(envelope)}"
        case UserDecision(option=option, id=envelope):
            return f"{DECISION_VERBS[option]} {_checked_positive(envelope)}"
        case Unsub(id=envelope):
            return f"UNSUB {_checked_positive(envelope)}"
        case GroupStatus(address=address):
            return f"GROUP {checked_mailbox(address)}"
        case MailCmd(identity=identity):
            return "MAIL" if identity is None else f"MAIL FROM:<{checked_mailbox(identity)}>"
        case RcptCmd(address=address):
            return f"RCPT TO:<{checked_mailbox(address)}>"
        case DataCmd():
            return "DATA"
        case Sent(msgid=msgid, before=before):
            for given in (msgid, before):
                if given is not None and _MSGID_RE.fullmatch(given) is None:
                    raise ProtocolUsageError(f"bad message id {given!r}")
            if msgid is not None and before is not None:
                raise ProtocolUsageError("SENT takes a message id or BEFORE one, not both")
            if before is not None:
                return f"SENT BEFORE {before}"
            return "SENT" if msgid is None else f"SENT {msgid}"
        case Lists():
            return "LISTS"
        case ListAdd() | ListDel():
            return _list_edit_line(command)
        case Ident():
            return "IDENT"
        case Stls():
            return "STLS"
        case _:
            raise ProtocolUsageError(f"not a user command: {command!r}")


def read_status_line(line: bytes) -> tuple[bool, str]:
    """Whether a status line is ``+OK``, and its text."""
    m = _STATUS_RE.fullmatch(line)
    if m is None:
        raise RemoteProtocolError(f"malformed status line {line[:80]!r}")
    return m.group(1) == b"+OK", (m.group(2) or b"").decode("utf-8", "replace")
