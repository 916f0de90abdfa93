"""Reading IMAP commands and writing IMAP responses (RFC 9051 section 9).

Reading happens in two steps. The connection first cuts a whole command out
of the byte stream: its lines and the literals between them (``{n}``,
``{n+}``), each within a limit. :func:`tokenize` then turns that command into
values: :class:`Atom` (atoms, flags, fetch items with their ``[section]<a.b>``),
``bytes`` (quoted strings and literals, which mean the same) and ``list``
(parenthesised lists). :func:`read_command` checks the arguments each command
takes and builds its event. Anything wrong raises :class:`ImapSyntaxError`,
and nothing else: the connection answers it with a tagged BAD saying why.

Writing is :func:`write_value`: ``None`` is NIL, ``int`` a number, ``Atom``
goes out as it is, ``str`` as a quoted string (a literal when it cannot be
quoted), ``bytes`` as a literal, a list or tuple in parentheses.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

from smdp.protocol.framing import ProtocolUsageError
from smdp.protocol.imap import events as ev

__all__ = [
    "Atom",
    "ImapSyntaxError",
    "Value",
    "mutf7_decode",
    "mutf7_encode",
    "read_command",
    "read_sequence_set",
    "read_tag",
    "tokenize",
    "write_value",
]

#: Parentheses nested deeper than this are refused: no client needs more, and
#: a bound keeps the recursive reader's stack small whatever is sent.
MAX_NESTING: Final = 16


class ImapSyntaxError(Exception):
    """A command the server answers with BAD; ``text`` is the sentence it says."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class Atom(str):
    """An atom: sent and read as is, never quoted (NIL, flags, fetch items)."""

    __slots__ = ()


Value: TypeAlias = "Atom | bytes | list[Value]"

# RFC 9051 9: atom-specials are ( ) { SP CTL % * " \ ]. We read list wildcards
# (% *) and "]" (resp-specials, allowed in astrings and tags) inside atoms too,
# so that patterns, sequence sets and flags come out as one atom each; a
# leading "\" makes a flag. "[" opens a section read to its matching "]".
_ATOM_STOP: Final = frozenset(b'(){ "\\\r\n') | frozenset(range(0x00, 0x20)) | {0x7F}
_TAG_STOP: Final = _ATOM_STOP | frozenset(b"+%*")
_LITERAL: Final = re.compile(rb"\{(\d{1,10})(\+?)\}\r\n")


def read_tag(command: bytes) -> str | None:
    """The tag a command line starts with, or None when it has none to answer."""
    end = 0
    while end < len(command) and command[end] not in _TAG_STOP and command[end] < 0x80:
        end += 1
    if end == 0 or end >= len(command) or command[end] != 0x20:
        return None
    return command[:end].decode("ascii")


class _Reader:
    """A cursor over one whole command (lines and literals joined)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def space(self) -> None:
        if self.pos >= len(self.data) or self.data[self.pos] != 0x20:
            raise ImapSyntaxError("a space was expected between arguments")
        self.pos += 1

    def value(self, depth: int) -> Value:
        data, pos = self.data, self.pos
        c = data[pos]
        if c == 0x22:  # "
            return self.quoted()
        if c == 0x7B:  # {
            return self.literal()
        if c == 0x28:  # (
            if depth >= MAX_NESTING:
                raise ImapSyntaxError(f"parentheses nested more than {MAX_NESTING} deep")
            self.pos += 1
            items: list[Value] = []
            while True:
                if self.at_end():
                    raise ImapSyntaxError("a parenthesised list is not closed")
                if self.data[self.pos] == 0x29:  # )
                    self.pos += 1
                    return items
                if items:
                    self.space()
                    if self.at_end():
                        raise ImapSyntaxError("a parenthesised list is not closed")
                items.append(self.value(depth + 1))
        return self.atom()

    def quoted(self) -> bytes:
        data = self.data
        out = bytearray()
        pos = self.pos + 1
        while True:
            if pos >= len(data):
                raise ImapSyntaxError("a quoted string is not closed")
            c = data[pos]
            if c == 0x22:
                self.pos = pos + 1
                return bytes(out)
            if c in (0x0D, 0x0A, 0x00):
                raise ImapSyntaxError("a quoted string may not hold CR, LF or NUL")
            if c == 0x5C:  # \
                pos += 1
                if pos >= len(data) or data[pos] not in (0x22, 0x5C):
                    raise ImapSyntaxError('in a quoted string, "\\" may only escape " or \\')
                c = data[pos]
            out.append(c)
            pos += 1

    def literal(self) -> bytes:
        match = _LITERAL.match(self.data, self.pos)
        if match is None:
            raise ImapSyntaxError("a literal must be {n} or {n+} at the end of a line")
        start = match.end()
        end = start + int(match.group(1))
        if end > len(self.data):
            raise ImapSyntaxError("a literal is shorter than announced")
        self.pos = end
        return self.data[start:end]

    def atom(self) -> Atom:
        data = self.data
        start = pos = self.pos
        if data[pos] == 0x5C:  # a flag: \Seen
            pos += 1
        while pos < len(data):
            c = data[pos]
            if c == 0x5B:  # [ ... ] of a fetch item or response code, spaces allowed
                close = data.find(b"]", pos)
                if close < 0:
                    raise ImapSyntaxError('a "[" is not closed by "]"')
                if not data[pos:close].isascii() or any(c < 0x20 for c in data[pos:close]):
                    raise ImapSyntaxError('between "[" and "]" only printable ASCII may stand')
                pos = close + 1
                continue
            if c in _ATOM_STOP or c >= 0x80:
                break
            pos += 1
        if pos == start and pos < len(data) and data[pos] == 0x20:
            raise ImapSyntaxError("two spaces in a row: an argument is missing")
        if pos == start or (pos == start + 1 and data[start] == 0x5C):
            raise ImapSyntaxError(f"unexpected character {chr(data[pos])!r}"
                                  if pos < len(data) and data[pos] < 0x80
                                  else "unexpected character (not ASCII)")
        self.pos = pos
        return Atom(data[start:pos].decode("ascii"))


def tokenize(arguments: bytes) -> list[Value]:
    """The values of a command's arguments (what follows the command name and
    its space), or :class:`ImapSyntaxError`."""
    reader = _Reader(arguments)
    values: list[Value] = []
    while not reader.at_end():
        if values:
            reader.space()
            if reader.at_end():
                raise ImapSyntaxError("a line may not end with a space")
        values.append(reader.value(0))
    return values


# -- arguments ---------------------------------------------------------------------------


def _text(value: Value, what: str) -> str:
    """An astring (atom, quoted string or literal) as text."""
    if isinstance(value, list):
        raise ImapSyntaxError(f"the {what} must be a string, not a list")
    raw = value.encode("ascii") if isinstance(value, Atom) else value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImapSyntaxError(f"the {what} is not UTF-8") from None


def _atom(value: Value, what: str) -> str:
    if not isinstance(value, Atom):
        raise ImapSyntaxError(f"the {what} must be an atom")
    return value.upper()


def _count(values: list[Value], n: int, usage: str) -> None:
    if len(values) != n:
        raise ImapSyntaxError(f"expected {usage}")


def read_sequence_set(value: Value) -> ev.SequenceSet:
    """``1:3,7,9:*`` (RFC 9051 9, ``sequence-set``), or ``$``: the saved
    search result (RFC 5182 ``seq-or-saved``; alone, never inside a set)."""
    if not isinstance(value, Atom):
        raise ImapSyntaxError("a sequence set (such as 1:4,7 or 1:*) was expected")
    if value == "$":
        return ev.SequenceSet((), saved=True)
    ranges: list[tuple[int | None, int | None]] = []
    for part in value.split(","):
        first, colon, last = part.partition(":")
        ends = [_seq_number(first)] + ([_seq_number(last)] if colon else [])
        ranges.append((ends[0], ends[-1]))
    return ev.SequenceSet(tuple(ranges))


def _seq_number(text: str) -> int | None:
    if text == "*":
        return None
    # nz-number: no leading zero, at most 2^32 - 1 (RFC 9051 9).
    if not text.isdigit() or not text.isascii() or text[0] == "0" or len(text) > 10 \
            or int(text) > 0xFFFFFFFF:
        raise ImapSyntaxError(f"{text!r} is not a message number or UID (1 to 4294967295, or *)")
    return int(text)


_FLAG_NAMES: Final = {"\\SEEN": "\\Seen", "\\DELETED": "\\Deleted", "\\FLAGGED": "\\Flagged",
                      "\\ANSWERED": "\\Answered", "\\DRAFT": "\\Draft"}


def _flags(value: Value) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    flags: list[str] = []
    for item in items:
        if not isinstance(item, Atom) or "[" in item or "*" in item or "%" in item:
            raise ImapSyntaxError("flags are atoms such as \\Seen or $Junk")
        flags.append(_FLAG_NAMES.get(item.upper(), item))
    return tuple(flags)


# FETCH: RFC 9051 6.4.5, with the IMAP4rev1 macros and RFC822.* names.
_MACROS: Final = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
}
_SIMPLE_ITEMS: Final = frozenset({"FLAGS", "UID", "RFC822.SIZE", "INTERNALDATE", "ENVELOPE",
                                  "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODYSTRUCTURE",
                                  "BODY"})
_BODY_ITEM: Final = re.compile(r"(BODY(?:\.PEEK)?)\[([^\]]*)\](?:<(\d{1,10})\.(\d{1,10})>)?")
_SECTIONS: Final = frozenset({"", "HEADER", "TEXT"})
# RFC 3516 (RFC 9051 6.4.5): BINARY[part]<a.b>, BINARY.PEEK, BINARY.SIZE[part].
_BINARY_ITEM: Final = re.compile(r"(BINARY(?:\.PEEK|\.SIZE)?)"
                                 r"\[((?:[1-9][0-9]{0,8}\.){0,19}[1-9][0-9]{0,8})?\]"
                                 r"(?:<(\d{1,10})\.(\d{1,10})>)?")
# A MIME part: its number path, then optionally what of it (RFC 9051 6.4.5).
_PART: Final = re.compile(r"(?:[1-9][0-9]{0,8}\.){0,19}[1-9][0-9]{0,8}(?:\.(?:MIME|HEADER|TEXT))?")
_PART_FIELDS: Final = re.compile(r"(?:[1-9][0-9]{0,8}\.){1,20}(HEADER\.FIELDS(?:\.NOT)?)")
_FIELD_LISTS: Final = ("HEADER.FIELDS", "HEADER.FIELDS.NOT")
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable, no colon


def _fetch_att(value: Value) -> ev.FetchAtt:
    if not isinstance(value, Atom):
        raise ImapSyntaxError("fetch items are atoms such as FLAGS or BODY.PEEK[]")
    name = value.upper()
    if name in _SIMPLE_ITEMS:
        return ev.FetchAtt(name)
    binary = _BINARY_ITEM.fullmatch(name)
    if binary is not None:
        verb, part, start, length = binary.groups()
        if verb == "BINARY.SIZE" and start is not None:
            raise ImapSyntaxError("BINARY.SIZE takes no <start.length>")
        if start is not None and int(length) == 0:
            raise ImapSyntaxError("a partial fetch <start.length> needs a length above 0")
        return ev.FetchAtt("BINARY.SIZE" if verb == "BINARY.SIZE" else "BINARY", part or "",
                           None if start is None else (int(start), int(length)),
                           peek=verb == "BINARY.PEEK")
    match = _BODY_ITEM.fullmatch(name)
    if match is None:
        raise ImapSyntaxError(f"fetch item {value} is not supported")
    verb, section, start, length = match.groups()
    fields: tuple[str, ...] = ()
    kind, _, names = section.partition(" ")
    if kind in _FIELD_LISTS or _PART_FIELDS.fullmatch(kind):
        fields = _field_names(names)
        section = kind
    elif section not in _SECTIONS and not _PART.fullmatch(section):
        raise ImapSyntaxError(f"body section [{section}] is not supported (only [], [HEADER], "
                              "[TEXT], [HEADER.FIELDS (...)], [HEADER.FIELDS.NOT (...)] and "
                              "MIME parts such as [1], [1.2.MIME], [2.HEADER])")
    partial = None
    if start is not None:
        if int(length) == 0:
            raise ImapSyntaxError("a partial fetch <start.length> needs a length above 0")
        partial = (int(start), int(length))
    return ev.FetchAtt("BODY", section, partial, peek=verb == "BODY.PEEK", fields=fields)


def _field_names(text: str) -> tuple[str, ...]:
    """``(DATE FROM "X-Spam")`` of HEADER.FIELDS: header field names."""
    values = tokenize(text.encode("ascii"))
    if len(values) != 1 or not isinstance(values[0], list) or not values[0]:
        raise ImapSyntaxError("HEADER.FIELDS needs a list of field names, such as (FROM DATE)")
    names = tuple(_text(v, "header field name").upper() for v in values[0])
    for field in names:
        if not _FIELD_NAME.fullmatch(field):
            raise ImapSyntaxError(f"{field!r} is not a header field name")
    return names


def _fetch_items(value: Value) -> tuple[ev.FetchAtt, ...]:
    if isinstance(value, Atom) and value.upper() in _MACROS:
        return tuple(ev.FetchAtt(n) for n in _MACROS[value.upper()])
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ImapSyntaxError("FETCH needs at least one item")
    return tuple(_fetch_att(item) for item in items)


# SEARCH: RFC 9051 6.4.4, the keys answered without reading message bodies.
_FLAG_KEYS: Final = frozenset({"SEEN", "UNSEEN", "DELETED", "UNDELETED", "FLAGGED", "UNFLAGGED",
                               "ANSWERED", "UNANSWERED", "DRAFT", "UNDRAFT"})


def _search_key(values: list[Value], depth: int = 0) -> ev.SearchKey:
    if not values:
        raise ImapSyntaxError("a search criterion is missing")
    if depth > MAX_NESTING:
        raise ImapSyntaxError(f"search criteria nested more than {MAX_NESTING} deep")
    value = values.pop(0)
    if isinstance(value, list):
        return ev.SearchKey("AND", keys=_search_keys(list(value), depth + 1))
    if not isinstance(value, Atom):
        raise ImapSyntaxError("a search criterion must be an atom such as ALL, SEEN or UID")
    name = value.upper()
    if name == "ALL" or name in _FLAG_KEYS:
        return ev.SearchKey(name)
    if name == "UID":
        if not values:
            raise ImapSyntaxError("UID needs a sequence set")
        return ev.SearchKey("UID", read_sequence_set(values.pop(0)))
    if name == "NOT":
        return ev.SearchKey("NOT", keys=(_search_key(values, depth + 1),))
    if name == "OR":
        first = _search_key(values, depth + 1)
        return ev.SearchKey("OR", keys=(first, _search_key(values, depth + 1)))
    if name[:1].isdigit() or name[:1] in ("*", "$"):
        return ev.SearchKey("SEQ", read_sequence_set(value))
    if name in ("NEW", "OLD", "RECENT"):
        return ev.SearchKey(name)
    if name in _TEXT_KEYS or name == "HEADER":
        field = _text(_next(values, name), "header field name").upper() if name == "HEADER" \
            else ""
        return ev.SearchKey(name, text=_text(_next(values, name), "search text"), field=field)
    if name in _DATE_KEYS:
        return ev.SearchKey(name, date=_date(_next(values, name)))
    if name in ("LARGER", "SMALLER"):
        size = _text(_next(values, name), "size")
        if not size.isdigit() or not size.isascii() or len(size) > 19:
            raise ImapSyntaxError(f"{name} needs a number of octets")
        return ev.SearchKey(name, number=int(size))
    raise ImapSyntaxError(f"search criterion {value} is not supported")


_TEXT_KEYS: Final = frozenset({"SUBJECT", "FROM", "TO", "CC", "BCC", "BODY", "TEXT", "KEYWORD",
                               "UNKEYWORD"})
_DATE_KEYS: Final = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
_MONTH_NUMBERS: Final = {m: n for n, m in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1)}
_DATE: Final = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")


def _next(values: list[Value], name: str) -> Value:
    if not values:
        raise ImapSyntaxError(f"{name} needs an argument")
    return values.pop(0)


def _date(value: Value) -> tuple[int, int, int]:
    """RFC 9051 ``date``: ``1-Feb-2026``, quoted or not."""
    match = _DATE.fullmatch(_text(value, "date"))
    month = _MONTH_NUMBERS.get(match.group(2).upper()) if match else None
    if match is None or month is None or not 1 <= int(match.group(1)) <= 31:
        raise ImapSyntaxError("a date is day-month-year, such as 1-Feb-2026")
    return int(match.group(3)), month, int(match.group(1))


def _search_keys(values: list[Value], depth: int) -> tuple[ev.SearchKey, ...]:
    keys = []
    while values:
        keys.append(_search_key(values, depth))
    if not keys:
        raise ImapSyntaxError("SEARCH needs at least one criterion")
    return tuple(keys)


def _search(tag: str, values: list[Value], uid: bool) -> ev.Search:
    returns = None
    if values and isinstance(values[0], Atom) and values[0].upper() == "RETURN":
        if len(values) < 2 or not isinstance(values[1], list):
            raise ImapSyntaxError("RETURN needs a list of result options, such as (MIN COUNT)")
        returns = tuple(_atom(v, "result option") for v in values[1])
        if unknown := [r for r in returns if r not in ("MIN", "MAX", "COUNT", "ALL", "SAVE")]:
            raise ImapSyntaxError(f"search result option {unknown[0]} is not supported "
                                  "(only MIN, MAX, COUNT, ALL and SAVE)")
        values = values[2:]
    if values and isinstance(values[0], Atom) and values[0].upper() == "CHARSET":
        if len(values) < 2 or _text(values[1], "charset").upper() not in ("UTF-8", "US-ASCII"):
            raise ImapSyntaxError("only CHARSET UTF-8 and US-ASCII are supported")
        values = values[2:]
    keys = _search_keys(list(values), 0)
    criteria = keys[0] if len(keys) == 1 else ev.SearchKey("AND", keys=keys)
    return ev.Search(tag, criteria, uid, returns)


def _store(tag: str, values: list[Value], uid: bool) -> ev.Store:
    if len(values) < 3:
        raise ImapSyntaxError("expected STORE <set> [+|-]FLAGS[.SILENT] (<flags>)")
    messages = read_sequence_set(values[0])
    item = _atom(values[1], "STORE item")
    mode = item[0] if item[:1] in ("+", "-") else ""
    name = item[len(mode):]
    if name not in ("FLAGS", "FLAGS.SILENT"):
        raise ImapSyntaxError(f"STORE {item} is not supported (only [+|-]FLAGS[.SILENT])")
    flags = _flags(values[2] if len(values) == 3 else list(values[2:]))
    return ev.Store(tag, messages, mode, flags, name.endswith(".SILENT"), uid)


_SELECTION: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_RETURNS: Final = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})


def _list(tag: str, values: list[Value], lsub: bool) -> ev.ListCmd:
    """LIST [(selection)] reference pattern|(patterns) [RETURN (options)]
    (RFC 5258 with RFC 5819's STATUS). An option unknown is BAD, as RFC
    5258 3 wants: a client must not be told it got what it did not."""
    usage = "LIST [(<options>)] <reference> <pattern or (patterns)> [RETURN (<options>)]"
    selection: tuple[str, ...] = ()
    if values and isinstance(values[0], list):
        selection = tuple(_atom(v, "LIST selection option") for v in values[0])
        if unknown := [o for o in selection if o not in _SELECTION]:
            raise ImapSyntaxError(f"LIST selection option {unknown[0]} is not supported")
        if "RECURSIVEMATCH" in selection and set(selection) <= {"RECURSIVEMATCH"}:
            raise ImapSyntaxError("RECURSIVEMATCH needs another selection option, "
                                  "such as SUBSCRIBED")
        values = values[1:]
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if len(values) == 4 and isinstance(values[2], Atom) and values[2].upper() == "RETURN":
        if not isinstance(values[3], list):
            raise ImapSyntaxError("RETURN needs a list of options, such as (CHILDREN)")
        options = list(values[3])
        while options:
            option = _atom(options.pop(0), "LIST return option")
            if option == "STATUS":
                items = options.pop(0) if options else None
                if not isinstance(items, list) or not items:
                    raise ImapSyntaxError("STATUS needs a list of items, such as (MESSAGES)")
                status = _status_items(items)
            elif option in _RETURNS:
                returns.append(option)
            else:
                raise ImapSyntaxError(f"LIST return option {option} is not supported")
        values = values[:2]
    _count(values, 2, usage)
    patterns = values[1]
    if isinstance(patterns, list):
        if not patterns:
            raise ImapSyntaxError("a list of patterns needs at least one")
        names = tuple(_text(v, "pattern") for v in patterns)
    else:
        names = (_text(patterns, "pattern"),)
    return ev.ListCmd(tag, _text(values[0], "reference"), names, subscribed_only=lsub,
                      selection=selection, returns=tuple(returns), status=status)


def _authenticate(tag: str, values: list[Value]) -> ev.Authenticate:
    if len(values) not in (1, 2):
        raise ImapSyntaxError("expected AUTHENTICATE <mechanism> [<initial response>]")
    mechanism = _atom(values[0], "mechanism")
    initial = None
    if len(values) == 2:
        initial = read_sasl(_text(values[1], "initial response"))
        if initial is None:
            raise ImapSyntaxError("an initial response cannot be *")
    return ev.Authenticate(tag, mechanism, initial)


def read_sasl(text: str) -> bytes | None:
    """A SASL response line: base64, ``=`` for empty (RFC 4959), ``*`` to cancel."""
    text = text.strip()
    if text == "*":
        return None
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ImapSyntaxError("the SASL response is not base64") from None


def _status(tag: str, values: list[Value]) -> ev.Status:
    _count(values, 2, "STATUS <mailbox> (<items>)")
    if not isinstance(values[1], list) or not values[1]:
        raise ImapSyntaxError("STATUS items must be a list such as (MESSAGES UIDNEXT)")
    return ev.Status(tag, _text(values[0], "mailbox name"), _status_items(values[1]))


def _status_items(values: list[Value]) -> tuple[str, ...]:
    items = tuple(_atom(v, "STATUS item") for v in values)
    for item in items:
        if item not in _STATUS_ITEMS:
            raise ImapSyntaxError(f"STATUS item {item} is not supported")
    return items


_STATUS_ITEMS: Final = frozenset({"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "RECENT",
                                  "SIZE", "DELETED"})


def _no_args(make: Callable[[str], ev.ImapEvent]) -> Callable[[str, list[Value]], ev.ImapEvent]:
    def read(tag: str, values: list[Value]) -> ev.ImapEvent:
        if values:
            raise ImapSyntaxError("this command takes no arguments")
        return make(tag)
    return read


def _one_mailbox(make: Callable[[str, str], ev.ImapEvent]
                 ) -> Callable[[str, list[Value]], ev.ImapEvent]:
    def read(tag: str, values: list[Value]) -> ev.ImapEvent:
        if values and isinstance(values[-1], list):  # RFC 7162 select parameters
            raise ImapSyntaxError("select parameters (CONDSTORE, QRESYNC) are not supported")
        _count(values, 1, "a mailbox name")
        return make(tag, _text(values[0], "mailbox name"))
    return read


def _login(tag: str, values: list[Value]) -> ev.Login:
    _count(values, 2, "LOGIN <user> <password>")
    return ev.Login(tag, _text(values[0], "user name"), _text(values[1], "password"))


def _enable(tag: str, values: list[Value]) -> ev.Enable:
    if not values:
        raise ImapSyntaxError("ENABLE needs at least one capability")
    return ev.Enable(tag, tuple(_atom(v, "capability") for v in values))


def _fetch(tag: str, values: list[Value], uid: bool) -> ev.Fetch:
    if len(values) == 3 and isinstance(values[2], list):
        raise ImapSyntaxError("FETCH modifiers (CHANGEDSINCE) are not supported")
    _count(values, 2, "FETCH <set> <items>")
    return ev.Fetch(tag, read_sequence_set(values[0]), _fetch_items(values[1]), uid)


def _move(tag: str, values: list[Value], uid: bool) -> ev.Move:
    _count(values, 2, "MOVE <set> <mailbox>")
    return ev.Move(tag, read_sequence_set(values[0]), _text(values[1], "mailbox name"), uid)


def _copy(tag: str, values: list[Value], uid: bool) -> ev.Copy:
    _count(values, 2, "COPY <set> <mailbox>")
    return ev.Copy(tag, read_sequence_set(values[0]), _text(values[1], "mailbox name"), uid)


def _append(tag: str, values: list[Value]) -> ev.Append:
    usage = "expected APPEND <mailbox> [(<flags>)] [\"<date-time>\"] <message literal>"
    if not 2 <= len(values) <= 4 or not isinstance(values[-1], bytes):
        raise ImapSyntaxError(usage)
    middle = values[1:-1]
    flags: tuple[str, ...] = ()
    if middle and isinstance(middle[0], list):
        flags = _flags(middle.pop(0))
    date = _text(middle.pop(0), "date-time") if middle else None
    if middle:
        raise ImapSyntaxError(usage)
    return ev.Append(tag, _text(values[0], "mailbox name"), values[-1], flags, date)


def _rename(tag: str, values: list[Value]) -> ev.Rename:
    _count(values, 2, "RENAME <old name> <new name>")
    return ev.Rename(tag, _text(values[0], "mailbox name"), _text(values[1], "mailbox name"))


def _expunge(tag: str, values: list[Value], uid: bool) -> ev.Expunge:
    if not uid:
        _count(values, 0, "EXPUNGE without arguments")
        return ev.Expunge(tag)
    _count(values, 1, "UID EXPUNGE <set>")
    return ev.Expunge(tag, read_sequence_set(values[0]))


_READERS: Final[dict[str, Callable[[str, list[Value]], ev.ImapEvent]]] = {
    "CAPABILITY": _no_args(ev.Capability),
    "NOOP": _no_args(ev.Noop),
    "LOGOUT": _no_args(ev.Logout),
    "STARTTLS": _no_args(ev.StartTls),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "ENABLE": _enable,
    "NAMESPACE": _no_args(ev.Namespace),
    "LIST": lambda tag, values: _list(tag, values, False),
    "LSUB": lambda tag, values: _list(tag, values, True),
    "SUBSCRIBE": _one_mailbox(lambda tag, name: ev.Subscribe(tag, name, True)),
    "UNSUBSCRIBE": _one_mailbox(lambda tag, name: ev.Subscribe(tag, name, False)),
    "STATUS": _status,
    "SELECT": _one_mailbox(lambda tag, name: ev.Select(tag, name, False)),
    "EXAMINE": _one_mailbox(lambda tag, name: ev.Select(tag, name, True)),
    "FETCH": lambda tag, values: _fetch(tag, values, False),
    "SEARCH": lambda tag, values: _search(tag, values, False),
    "STORE": lambda tag, values: _store(tag, values, False),
    "EXPUNGE": lambda tag, values: _expunge(tag, values, False),
    "MOVE": lambda tag, values: _move(tag, values, False),
    "COPY": lambda tag, values: _copy(tag, values, False),
    "CREATE": _one_mailbox(ev.Create),
    "APPEND": _append,
    "DELETE": _one_mailbox(ev.Delete),
    "RENAME": _rename,
    "CLOSE": _no_args(ev.Close),
    "UNSELECT": _no_args(ev.Unselect),
    "CHECK": _no_args(ev.Check),
    "IDLE": _no_args(ev.Idle),
    "UID FETCH": lambda tag, values: _fetch(tag, values, True),
    "UID SEARCH": lambda tag, values: _search(tag, values, True),
    "UID STORE": lambda tag, values: _store(tag, values, True),
    "UID EXPUNGE": lambda tag, values: _expunge(tag, values, True),
    "UID MOVE": lambda tag, values: _move(tag, values, True),
    "UID COPY": lambda tag, values: _copy(tag, values, True),
}

#: Every command name the codec reads (``UID FETCH`` is one name).
COMMANDS: Final = frozenset(_READERS)


def split_command(command: bytes) -> tuple[str, str, bytes]:
    """``(tag, name, arguments)`` of a whole command; ``name`` upper case and
    ``UID x`` joined into one name."""
    tag = read_tag(command)
    if tag is None:
        raise ImapSyntaxError("a command must start with a tag and a space")
    rest = command[len(tag) + 1:]
    reader = _Reader(rest)
    if reader.at_end() or rest[0] in _ATOM_STOP:
        raise ImapSyntaxError("a command name must follow the tag")
    name = reader.atom().upper()
    if name == "UID":
        if reader.at_end() or rest[reader.pos] != 0x20 or reader.pos + 1 >= len(rest) \
                or rest[reader.pos + 1] in _ATOM_STOP:
            raise ImapSyntaxError("UID must be followed by FETCH, SEARCH, STORE, EXPUNGE, "
                                  "MOVE or COPY")
        reader.space()
        name = f"UID {reader.atom().upper()}"
    if not reader.at_end():
        reader.space()
        if reader.at_end():
            raise ImapSyntaxError("a line may not end with a space")
    return tag, name, rest[reader.pos:]


def read_command(command: bytes) -> ev.ImapEvent:
    """The event of a whole command (its final CRLF removed)."""
    tag, name, arguments = split_command(command)
    reader = _READERS.get(name)
    if reader is None:
        raise ImapSyntaxError(f"unknown command {name}")
    return reader(tag, tokenize(arguments))


# -- writing -----------------------------------------------------------------------------

_QUOTABLE: Final = re.compile(r'[^\r\n\x00"\\]{0,1000}')


def write_value(value: object) -> bytes:
    """One value as the wire writes it (see the module's docstring)."""
    if value is None:
        return b"NIL"
    if isinstance(value, Atom):
        return value.encode("ascii")
    if isinstance(value, bool):
        raise ProtocolUsageError("a bool is not an IMAP value")
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, str):
        if _QUOTABLE.fullmatch(value):
            return b'"' + value.encode("utf-8") + b'"'
        return write_value(value.encode("utf-8"))
    if isinstance(value, bytes):
        return b"{%d}\r\n" % len(value) + value
    if isinstance(value, (list, tuple)):
        return b"(" + b" ".join(write_value(v) for v in value) + b")"
    raise ProtocolUsageError(f"{value!r} is not an IMAP value")


def write_values(values: Sequence[object]) -> bytes:
    return b" ".join(write_value(v) for v in values)


# -- mailbox names -----------------------------------------------------------------------

_MUTF7_RUN: Final = re.compile(r"&([A-Za-z0-9+,]*)-")


def mutf7_encode(name: str) -> str:
    """``name`` in modified UTF-7 (RFC 3501 5.1.3), the form IMAP4rev1 gives
    mailbox names: printable ASCII as is but ``&`` as ``&-``, anything else
    as ``&`` base64 of its UTF-16 (``,`` for ``/``, no padding) ``-``."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            coded = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + coded.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if " " <= ch <= "~":
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(name: str) -> str | None:
    """The text a modified UTF-7 ``name`` stands for; None when it is not
    modified UTF-7 (8-bit, a bare ``&``, a run that is not UTF-16), which
    a name an IMAP4rev1 client wrote in raw UTF-8 is not."""
    if not name.isascii():
        return None
    out: list[str] = []
    pos = 0
    for found in _MUTF7_RUN.finditer(name):
        if "&" in name[pos:found.start()]:
            return None
        out.append(name[pos:found.start()])
        coded = found.group(1)
        if not coded:
            out.append("&")
        else:
            try:
                raw = base64.b64decode(coded.replace(",", "/") + "=" * (-len(coded) % 4),
                                       validate=True)
                out.append(raw.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError):
                return None
        pos = found.end()
    if "&" in name[pos:]:
        return None
    out.append(name[pos:])
    return "".join(out)
