"""The IMAP port for ordinary mail clients (issue 14; docs/imap.md): an
asyncio adapter between sockets, the sans-IO IMAP codec (``protocol/imap``)
and the store.

A sibling of the user port (``user_server.py``) on the same session loop
(``session.py``: timeouts, slow clients, TLS), with the same accounts and the
same login slow-down. INBOX is the user's accepted mail, exactly what POP3
RETR gives: the Return-Path and Delivered-To fields written as it is read,
then the stored body, streamed a chunk at a time. Pending shows one summary
message per envelope waiting for a decision; Junk and Trash show what was
rejected (as spam, or not); two folders inside Pending are decisions to move
messages into. Every SMDP decision is a client action (moving, copying,
$Junk, deleting) taken through ``Destination.decide`` as the user port's
verbs are (issue 14 item 3; docs/imap.md "Deciding by moving"). UIDs and
flags live in the store (migration 0013), where a moved message lives too
(migration 0018), so they survive restarts.
"""

from __future__ import annotations

import asyncio
import binascii
import bisect
import calendar
import collections
import dataclasses
import datetime
import email.header
import email.parser
import email.utils
import functools
import itertools
import logging
import re
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from smdp.core.envelope import (
    decode_envelope_block,
    encode_envelope_block,
    extract_envelope,
    new_token,
)
from smdp.core.outcomes import Kind
from smdp.mail.body import Body, BodyWriter, stored_chunks
from smdp.mail.mime import decode_header_text
from smdp.mail.trace import delivery_fields
from smdp.protocol import imap
from smdp.protocol.framing import CLOSED, NEED_DATA, ProtocolUsageError
from smdp.protocol.imap import Atom
from smdp.protocol.imap import events as ev
from smdp.protocol.imap.grammar import mutf7_decode, mutf7_encode, write_value
from smdp.server.imap_structure import (
    Part,
    body_structure,
    find_part,
    section_range,
    structure,
)
from smdp.server.services import ImapPort
from smdp.server.session import Session
from smdp.server.user_server import _first_octets, _is_loopback, _top_length
from smdp.store.base import Store
from smdp.store.records import ImapListed, ImapMessage, ImapSent, InEnvelope, User
from smdp.terms import Decision, EntryState

log = logging.getLogger("smdp.imap")

INBOX: Final = "INBOX"
PENDING: Final = "Pending"
JUNK: Final = "Junk"
TRASH: Final = "Trash"
#: The user's sent mail: each message's summary with its recipients'
#: states (kept as they are), and the copies clients append.
SENT: Final = "Sent"
#: The client's drafts (RFC 6154 \Drafts): only what clients append there.
DRAFTS: Final = "Drafts"
#: The origin server of a message a client wrote in (APPEND): no server of
#: the network has this name (one with a colon is not a host name).
APPEND_ORIGIN: Final = "local:append"
#: The entry's reason (MailboxEntry.reason) of an appended message.
APPEND_REASON: Final = "written in by a mail client (IMAP APPEND)"
#: The two decisions no client gesture names, reached by moving a message
#: into a folder of that name (docs/imap.md, "Deciding by moving").
ACCEPT_AUTH_BOX: Final = "Pending/Accept and authorize"
SPAMMER_BOX: Final = "Pending/Reject as spammer"
#: Each built-in mailbox and the entry states it shows (besides the entries
#: the user placed in it: migration 0018); a folder the user creates shows
#: only what is placed in it, the decision folders nothing.
MAILBOXES: Final[dict[str, tuple[str, ...]]] = {
    INBOX: (EntryState.ACCEPTED, EntryState.APPENDED),
    PENDING: (EntryState.PENDING,),
    ACCEPT_AUTH_BOX: (),
    SPAMMER_BOX: (),
    JUNK: (EntryState.SPAM, EntryState.SPAMMER),
    TRASH: (EntryState.REJECTED,),
    DRAFTS: (),
}
#: RFC 6154 attributes, in LIST.
SPECIAL_USE: Final = {JUNK: "\\Junk", TRASH: "\\Trash", SENT: "\\Sent", DRAFTS: "\\Drafts"}
#: A Pending summary moved (or copied) to a mailbox: the decision it takes.
PENDING_MOVES: Final = {
    INBOX: Decision.ACCEPT,
    ACCEPT_AUTH_BOX: Decision.ACCEPT_AUTH,
    JUNK: Decision.REJECT_SPAM,
    SPAMMER_BOX: Decision.REJECT_SPAMMER,
    TRASH: Decision.REJECT,
}
#: Any other message moved to a mailbox: the decision it takes on an entry
#: already decided (Table 1: "the reject family is available even for
#: messages already accepted"; accept & authorize after an accept adds the
#: sender to the white list).
LATE_MOVES: Final = {
    ACCEPT_AUTH_BOX: Decision.ACCEPT_AUTH,
    JUNK: Decision.REJECT_SPAM,
    SPAMMER_BOX: Decision.REJECT_SPAMMER,
}
#: The keywords that mark a message as junk (Thunderbird sets $Junk; older
#: clients Junk): on a Pending summary, reject & spam.
JUNK_KEYWORDS: Final = frozenset({"$JUNK", "JUNK"})
# The flags kept in the store, one bit each (migration 0013). Keywords are
# not kept (PERMANENTFLAGS says so); $Junk is a decision in Pending.
FLAG_BITS: Final = {"\\Seen": 1, "\\Deleted": 2, "\\Flagged": 4, "\\Answered": 8,
                    "\\Draft": 16}
SEEN, DELETED = FLAG_BITS["\\Seen"], FLAG_BITS["\\Deleted"]
_FLAGS_UPPER: Final = {name.upper(): bit for name, bit in FLAG_BITS.items()}
FLAG_LIST: Final = " ".join(FLAG_BITS)
#: How often IDLE looks for new mail (seconds); the web app's event stream
#: polls as often (server/web/api.py EVENTS_POLL).
IDLE_POLL: Final = 1.0
#: RFC 2177: clients re-issue IDLE at least every 29 minutes, so an IDLE is
#: allowed this long, however short [limits] idle_timeout is.
IDLE_LIMIT: Final = 30 * 60.0
#: Long answers (FETCH 1:*) go out in pieces of about this many octets.
OUTPUT_BATCH: Final = 64 * 1024
#: The most of a header ENVELOPE and HEADER.FIELDS read: a header is small;
#: a huge one is cut rather than held.
HEADER_LIMIT: Final = 256 * 1024
#: FETCH of headers reads the first this many octets of each message's body
#: in batches (``Store.in_body_heads``), HEAD_BATCH messages a statement: a
#: message list of 10,000 costs some twenty statements, not 10,000. A header
#: longer than that is read chunk by chunk as before.
HEAD_LIMIT: Final = 16 * 1024
HEAD_BATCH: Final = 500
#: Mailbox listings kept per store for sessions to come (see ``_listing``).
LISTINGS_KEPT: Final = 64
#: HEADER.FIELDS answers kept per store (``_FieldsKept``), in octets.
FIELDS_KEPT_OCTETS: Final = 16 * 1024 * 1024
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                  "Nov", "Dec")
_FOLD: Final = re.compile(r"\r?\n(?=[ \t])")
#: The state of a Sent message (not an entry state: Sent shows out messages).
_SENT_STATE: Final = "sent"
#: Sent's poll signature: one that never repeats (see ``_signature_now``).
_POLLS: Final = itertools.count()
#: How a refusal of a move starts: such a refusal is answered NO [CANNOT].
_CANNOT: Final = "cannot move"


@dataclass(frozen=True, slots=True)
class Content:
    """What a message of a mailbox reads as: its size, its octets (a fresh
    iterator each call, read lazily) and its INTERNALDATE."""

    size: int
    chunks: Callable[[], Iterator[bytes]]
    received_at: float
    #: The message's first octets when already read (a batch of heads for
    #: a FETCH of headers): the header is taken from here if it is all in it.
    head: bytes = b""
    #: The mailbox entry whose stored message this is, when its octets never
    #: change (an INBOX message): its HEADER.FIELDS answers may be kept.
    entry: int | None = None


#: The states whose entries show their message where their state puts them
#: (plain strings: this is asked of every message a FETCH writes).
_BODY_STATES: Final = frozenset({str(EntryState.ACCEPTED), str(EntryState.APPENDED)})


@dataclass(slots=True)
class Message:
    """A message of the selected mailbox: its UID and flags (which STORE
    changes in place), and its entry and envelope as the store listed them."""

    uid: int
    flags: int
    stored: ImapMessage
    state: str
    # Where the user placed it (migration 0018; None: where its state puts
    # it), and whether it shows its real message rather than the summary.
    folder: str | None = None
    body: bool = False

    @property
    def shows_body(self) -> bool:
        if self.folder is not None:
            return self.body
        return self.state in _BODY_STATES

    @property
    def entry_id(self) -> int:
        return self.stored.entry_id


def _message(listed: ImapListed) -> Message:
    """A session's own Message of a listed entry: listings are kept and
    shared between sessions (``_listing``), Messages never are (STORE
    changes their flags in place)."""
    m = listed.message
    return Message(m.uid, m.flags, m, listed.state, listed.folder, listed.body)


def flag_atoms(bits: int) -> list[Atom]:
    return [Atom(name) for name, bit in FLAG_BITS.items() if bits & bit]


@functools.lru_cache(maxsize=256)
def _flags_written(bits: int) -> bytes:
    """A FLAGS value as the wire writes it: the same few sets, over and over."""
    return write_value(flag_atoms(bits))


def _streamed(item: ev.FetchAtt) -> bool:
    """Whether a FETCH item may be long and is streamed from the store: the
    whole message, its header or text, a part. Header fields are built
    whole (``_header_fields``), the rest is small."""
    if item.name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY"):
        return True
    return (item.name == "BODY" and item.section is not None
            and not item.section.startswith("HEADER.FIELDS"))


@functools.lru_cache(maxsize=256)
def _fields_id(item: ev.FetchAtt) -> str:
    """What a kept HEADER.FIELDS answer is kept under, beside its entry: a
    string, whose hash Python keeps (a tuple's is made at each lookup)."""
    return f"{item.section} {' '.join(item.fields)}"


@functools.lru_cache(maxsize=256)
def _item_name(item: ev.FetchAtt) -> str:
    """How a FETCH response names a BODY[...] item, as it was asked
    (without PEEK, RFC 9051 7.5.2)."""
    assert item.section is not None
    name = f"{item.name}[{item.section}]"
    if item.fields:
        name = f"BODY[{item.section} ({' '.join(item.fields)})]"
    if item.partial is not None:
        name += f"<{item.partial[0]}>"
    return name


def internal_date(when: float) -> str:
    """RFC 9051 ``date-time``, always in UTC; no locale-dependent month names."""
    t = time.gmtime(when)
    return (f"{t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")


_DATE_TIME: Final = re.compile(
    r"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


def parse_date_time(text: str) -> float | None:
    """RFC 9051 ``date-time`` (APPEND's INTERNALDATE: ``"1-Feb-2026 10:00:00
    +0100"``, the day perhaps space-padded) as a POSIX time; None when it is
    not one."""
    found = _DATE_TIME.fullmatch(text)
    if found is None:
        return None
    day, month, year, hour, minute, second, sign, zh, zm = found.groups()
    months = [m.upper() for m in _MONTHS]
    if month.upper() not in months:
        return None
    try:
        when = calendar.timegm(time.struct_time((
            int(year), months.index(month.upper()) + 1, int(day.strip()), int(hour),
            int(minute), int(second), 0, 0, 0)))
        datetime.date(int(year), months.index(month.upper()) + 1, int(day.strip()))
    except ValueError:
        return None
    if int(hour) > 23 or int(minute) > 59 or int(second) > 60 or int(zm) > 59:
        return None
    offset = (int(zh) * 60 + int(zm)) * 60
    return float(when - offset if sign == "+" else when + offset)


def uidvalidity(user: User) -> int:
    """UIDVALIDITY of every mailbox of ``user``: the account's id. UIDs are
    never reused within an account (the store's counter only grows), so it
    never needs to change; an account deleted and created again gets a new
    id, and clients then drop what they cached (docs/imap.md)."""
    return user.id % 0xFFFFFFFF or 1


def _addresses(value: str | None) -> list[list[object]] | None:
    """An address list of ENVELOPE (RFC 9051 7.5.2): (name adl mailbox host)."""
    if not value:
        return None
    found: list[list[object]] = []
    for name, address in email.utils.getaddresses([value]):
        if not address and not name:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        found.append([name or None, None, mailbox or None, host or None])
    return found or None


def envelope(header: bytes) -> list[object]:
    """ENVELOPE of a message from its header (fields as sent, unfolded)."""
    msg = email.parser.HeaderParser().parsestr(header.decode("utf-8", "replace"),
                                                headersonly=True)

    def field(name: str) -> str | None:
        value = msg.get(name)
        return None if value is None else _FOLD.sub("", str(value)).strip()

    sender = _addresses(field("From"))
    return [field("Date"), field("Subject"), sender,
            _addresses(field("Sender")) or sender, _addresses(field("Reply-To")) or sender,
            _addresses(field("To")), _addresses(field("Cc")), _addresses(field("Bcc")),
            field("In-Reply-To"), field("Message-ID")]


def _envelope_octets(header: bytes) -> bytes:
    """ENVELOPE of an embedded message, written (inside BODYSTRUCTURE)."""
    return write_value(envelope(header))


def header_fields(header: bytes, names: set[str], *, keep: bool) -> bytes:
    """BODY[HEADER.FIELDS (names)] (``keep``) or [HEADER.FIELDS.NOT (names)]
    of ``header``: the fields named (or all others), each with its folded
    lines, in the message's order, then the blank line (RFC 9051 6.4.5)."""
    if keep:
        # A client's message list asks this of every message: one regular
        # expression in C rather than a Python loop over the lines.
        found = _fields_pattern(frozenset(names)).findall(b"\r\n" + header)
        return b"".join(field + b"\r\n" for field in found) + b"\r\n"
    out = bytearray()
    taking = False
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):  # a folded line belongs to the field before
            if taking:
                out += line + b"\r\n"
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").upper()
        taking = (name in names) == keep
        if taking:
            out += line + b"\r\n"
    return bytes(out) + b"\r\n"


#: SEARCH keys that read the message (or its size and dates).
_CONTENT_KEYS: Final = frozenset({"SUBJECT", "FROM", "TO", "CC", "BCC", "BODY", "TEXT", "HEADER",
                                  "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
                                  "LARGER", "SMALLER"})


def _sequence_set(numbers: list[int]) -> str:
    """Ascending ``numbers`` as a sequence set, runs as ranges: 1:3,7."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{a}:{b}" if a != b else str(a) for a, b in runs)


def _date_matches(name: str, day: tuple[int, ...], wanted: tuple[int, int, int] | None) -> bool:
    """BEFORE, ON or SINCE ``wanted`` for a message of ``day`` (year, month,
    day): dates only, times and zones disregarded (RFC 9051 6.4.4)."""
    assert wanted is not None
    if name == "BEFORE":
        return day < wanted
    return day == wanted if name == "ON" else day >= wanted


def _contains(chunks: Iterable[bytes], needle: bytes) -> bool:
    """Whether the octets of ``chunks`` hold ``needle`` (lower case), ASCII
    letters in any case; read a chunk at a time, keeping only what a match
    across two chunks needs."""
    if not needle:
        return True
    tail = b""
    for chunk in chunks:
        window = tail + chunk.lower()
        if needle in window:
            return True
        tail = window[-(len(needle) - 1):] if len(needle) > 1 else b""
    return False


@functools.lru_cache(maxsize=64)
def _fields_pattern(names: frozenset[str]) -> re.Pattern[bytes]:
    """The fields named in ``names`` (upper case) of a header with CRLF put
    before it, each with its folded lines and without its last CRLF: a field
    starts a line (after CRLF, as ``header_fields`` splits), its name may be
    followed by blanks before the colon, and it ends at a CRLF not followed
    by a blank, or at the end of a header cut short."""
    alternatives = b"|".join(re.escape(name.encode("ascii", "replace"))
                             for name in sorted(names))
    return re.compile(rb"\r\n((?:" + alternatives + rb")[ \t]*:.*?)(?=\r\n(?![ \t])|\Z)",
                      re.IGNORECASE | re.DOTALL)


#: The Return-Path and Delivered-To fields of a sender and recipient: the
#: same few pairs over and over in a mailbox's listing.
_delivery_fields = functools.lru_cache(maxsize=4096)(delivery_fields)

#: The last listings of mailboxes (``_listing``), by store: a store is one
#: server's, used on its loop only.
_LISTINGS: weakref.WeakKeyDictionary[
    Store, collections.OrderedDict[tuple[int, str],
                                   tuple[tuple[int, int, int], list[ImapListed]]]
] = weakref.WeakKeyDictionary()


class _FieldsKept:
    """HEADER.FIELDS answers of stored messages, by entry, section and
    fields, the least recently used dropped beyond FIELDS_KEPT_OCTETS.

    A client's message list asks the same few fields of every message each
    time it starts afresh (Thunderbird, mutt, offlineimap): kept, the second
    time costs neither a read of each message's head nor a parse of it (as
    Dovecot keeps them in its cache file). An entry's message never changes
    and entry ids are never reused (AUTOINCREMENT, migration 0006)."""

    def __init__(self) -> None:
        self.answers: collections.OrderedDict[tuple[int, str], bytes] = (
            collections.OrderedDict())
        self.octets = 0

    def get(self, key: tuple[int, str]) -> bytes | None:
        found = self.answers.get(key)
        if found is not None:
            self.answers.move_to_end(key)
        return found

    def put(self, key: tuple[int, str], answer: bytes) -> None:
        """``answer`` for ``key``, which has none (``get`` said so)."""
        self.answers[key] = answer
        self.octets += len(answer)
        while self.octets > FIELDS_KEPT_OCTETS:
            self.octets -= len(self.answers.popitem(last=False)[1])


_FIELDS: weakref.WeakKeyDictionary[Store, _FieldsKept] = weakref.WeakKeyDictionary()


def _bounds(one: tuple[int | None, int | None], largest: int) -> tuple[int, int]:
    """A range of a sequence set, lowest first, ``*`` as ``largest``
    (``SequenceSet.contains``'s reading)."""
    first, last = (largest if end is None else end for end in one)
    return min(first, last), max(first, last)


def _octets(chunks: Iterable[bytes], start: int, length: int) -> Iterator[bytes]:
    """Octets ``start`` to ``start + length`` of ``chunks``; the rest is not read."""
    skip = start
    pieces = iter(chunks)
    for chunk in pieces:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        yield from _first_octets(itertools.chain((chunk[skip:],), pieces), length)
        return


#: Content-Transfer-Encodings BINARY sends as they are (RFC 3516 4.2).
_IDENTITY_CTE: Final = frozenset({"7bit", "8bit", "binary"})
_NOT_BASE64: Final = bytes(c for c in range(256) if c not in
                           b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
#: A quoted-printable line longer than this is decoded in pieces.
_QP_PIECE: Final = 64 * 1024


def transfer_encoding(part: Part) -> str:
    """A part's Content-Transfer-Encoding, lower case; 7bit when it has none
    (RFC 2045 6.1)."""
    value = part.fields.get(b"content-transfer-encoding", b"7bit")
    return value.split(b"(")[0].strip().decode("ascii", "replace").lower() or "7bit"


def base64_decoded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The octets base64 ``chunks`` stand for, a chunk at a time: what is not
    of the alphabet (line ends) is skipped, as RFC 2045 6.8 says, and a
    group of four is never cut between chunks; a broken tail is dropped."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk.translate(None, _NOT_BASE64)
        cut = len(data) - len(data) % 4
        if cut:
            yield _a2b_base64(data[:cut])
        rest = data[cut:]
    if rest:
        yield _a2b_base64(rest + b"=" * (-len(rest) % 4))


def _a2b_base64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""  # a lone character left over: not an octet


def qp_decoded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The octets quoted-printable ``chunks`` stand for, decoded a line at
    a time (a soft line break or an ``=XX`` is never cut between chunks);
    a line longer than _QP_PIECE is decoded in pieces, cut before an ``=``."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if not cut and len(data) > _QP_PIECE:
            cut = len(data)
            cut -= 1 if data[-1:] == b"=" else 2 if data[-2:-1] == b"=" else 0
        if cut:
            yield binascii.a2b_qp(data[:cut])
        rest = data[cut:]
    if rest:
        yield binascii.a2b_qp(rest)


_DECODERS: Final[dict[str, Callable[[Iterable[bytes]], Iterator[bytes]]]] = {
    "base64": base64_decoded, "quoted-printable": qp_decoded}


def _mailbox_name(name: str) -> str | None:
    """Our name of built-in mailbox ``name``, or None (a user's folder is
    found by ``ImapSession._resolve``): INBOX is case-insensitive (RFC 9051
    5.1), other names are not."""
    if name.upper() == INBOX:
        return INBOX
    return name if name in MAILBOXES or name == SENT else None


def _folder_name_fault(name: str) -> str | None:
    """Why ``name`` cannot be a folder the user creates, or None."""
    parts = name.split("/")
    if not name or not all(parts):
        return "a folder name needs text between its slashes"
    if parts[0].upper() == INBOX or parts[0] in (PENDING, JUNK, TRASH, SENT, DRAFTS):
        return f"{parts[0]} is this server's own; choose a name outside it"
    if any(not ch.isprintable() for ch in name) or len(name) > 200:
        return "a folder name is up to 200 printable characters"
    return None


def _header_text(value: str) -> str:
    """A header field's value: one line, RFC 2047-encoded when not ASCII."""
    value = " ".join(value.split())
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8").encode()


def pending_summary(entry_id: int, recipient: str, env: InEnvelope, hostname: str,
                    *, decided: bool = False) -> bytes:
    """The message Pending shows for a waiting envelope (issue 14 item 2).

    Made from what never changes for an envelope (its block, sender, origin
    server, size, arrival), so that its octets, and RFC822.SIZE, stay the
    same for its UID, as IMAP requires. The sender's quality changes over
    time, so it is left out until the summary is frozen when it gets its UID
    (docs/imap.md, "What is left").
    """
    summary = decode_envelope_block(env.block.encode("utf-8")).summary
    sender = env.sender or f"MAILER-DAEMON@{hostname}"
    name = summary.from_name
    from_field = f"{_header_text(name)} <{sender}>" if name else f"<{sender}>"
    date = summary.date or email.utils.formatdate(env.received_at, usegmt=True)
    fields = [
        f"From: {from_field}",
        f"To: {_header_text(summary.to) if summary.to else recipient}",
        *([f"Cc: {_header_text(summary.cc)}"] if summary.cc else []),
        f"Subject: {_header_text(summary.subject or env.subject)}",
        f"Date: {_header_text(date)}",
        f"Message-ID: <pending.{entry_id}@{hostname}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        f"X-SMDP-Entry: {entry_id}",
    ]
    body = [
        ("You rejected this envelope: its message was never fetched, so only its "
         "envelope is here." if decided else
         "This message waits for your decision: only its envelope is here so far."),
        "",
        f"From:    {env.sender or '<>'}",
        f"Server:  {env.origin_server}",
        f"Size:    {env.size} octets",
    ]
    if summary.headlines:
        body += ["", "Headlines:", *(f"  {line}" for line in summary.headlines)]
    if summary.attachments:
        body += ["", f"Attachments ({summary.attachments}):",
                 *(f"  {name}" for name in summary.attachment_names)]
    if decided:
        # Junk and Trash: no state named (it may still change under this
        # UID, spam to spammer), no way to decide that no longer works.
        body += ["", "Delete it to remove it for good."]
    else:
        body += ["", "To decide, move this message:",
                 "  to INBOX: accept it (the whole message comes and replaces this one)",
                 f"  to {ACCEPT_AUTH_BOX}: accept it and always accept this sender",
                 "  to Junk, or mark it as junk: reject it as spam",
                 f"  to {SPAMMER_BOX}: reject it and block this sender",
                 "  to Trash, or delete it: reject it",
                 "", "Or use the web app, or the user port's commands with the "
                 f"envelope's id {entry_id}:",
                 f"  ACCEPT {entry_id}, ACCEPT&AUTH {entry_id}, REJECT {entry_id}, "
                 f"REJECT&SPAM {entry_id}, REJECT&SPAMMER {entry_id}"]
    text = "\r\n".join(fields) + "\r\n\r\n" + "\r\n".join(
        "".join(ch if ch.isprintable() else " " for ch in line) for line in body) + "\r\n"
    return text.encode("utf-8")


def sent_summary(sent: ImapSent, hostname: str) -> bytes:
    """The message Sent shows for a message the user sent: its From, To, Cc,
    Subject and Date, and each recipient's state when the summary was
    written (``sent.shown``, kept with its UID: the octets never change
    under it), in an ``X-SMDP-Recipients`` field and in the text."""
    message = sent.message
    summary = decode_envelope_block(message.summary.encode("utf-8")).summary
    states = [line.split(" ", 1) for line in (sent.shown or "").splitlines()]
    recipients = ", ".join(r for r, _ in states)
    fields = [
        f"From: {message.sender}",
        f"To: {_header_text(summary.to) if summary.to else recipients}",
        *([f"Cc: {_header_text(summary.cc)}"] if summary.cc else []),
        f"Subject: {_header_text(summary.subject or message.subject)}",
        f"Date: {_header_text(summary.date or email.utils.formatdate(message.created_at))}",
        f"Message-ID: <sent.{message.id}@{hostname}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        f"X-SMDP-Recipients: {_header_text('; '.join(f'{r} {s}' for r, s in states))}",
    ]
    body = ["You sent this message. Each recipient's state when this copy was made "
            "(a change shows as a new copy):", "",
            *(f"  {r}: {s}" for r, s in states)]
    if summary.headlines:
        body += ["", "Headlines:", *(f"  {line}" for line in summary.headlines)]
    text = "\r\n".join(fields) + "\r\n\r\n" + "\r\n".join(
        "".join(ch if ch.isprintable() else " " for ch in line) for line in body) + "\r\n"
    return text.encode("utf-8")


def _listed(reference: str, pattern: str, name: str) -> bool:
    """Whether LIST's pattern names mailbox ``name``: ``*`` is anything, ``%``
    anything but the hierarchy delimiter "/"; INBOX in any case (RFC 9051 5.1)."""
    regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c)
                    for c in reference + pattern)
    return re.fullmatch(regex, name, re.IGNORECASE if name == INBOX else 0) is not None


class ImapSession(Session):
    conn: imap.ImapServerConnection

    def __init__(self, port: ImapPort, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(port.core.config, reader, writer)
        self.port = port
        self.store = port.core.store
        limits = self.config.limits
        self.conn = imap.ImapServerConnection(
            self.config.hostname,
            max_line=max(limits.max_line_length, 8192),
            max_append=limits.max_message_size, spool_dir=self.config.spool_dir,
            tls=writer.get_extra_info("ssl_object") is not None,  # the implicit-TLS port
        )
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if peer else "?"
        # Passwords in the clear only from this machine, and only when the
        # configuration asks for it: the user port's rule (issue 4, item 1).
        self.plaintext_login = self.config.allow_plaintext_login and _is_loopback(self.client)
        self.user: User | None = None
        self.selected: str | None = None
        self.readonly = False
        self._messages: list[Message] = []
        self._listed: list[ImapListed] | None = None  # see messages
        # The selected mailbox's signature (``_signature_of``) when last read: a poll reads
        # the mailbox again only when it changed.
        self._signature: tuple[int, int, int] | None = None
        self._mechanism: str | None = None  # AUTHENTICATE waiting for its response
        self._parsed: Part | None = None
        # BINARY's decoded parts of the message at hand, by section: decoded
        # once a FETCH however many of its items ask (a temporary file past
        # 1 MiB, never held whole).
        self._decoded: dict[str, Content] = {}
        self._sent: dict[int, ImapSent] = {}  # Sent's messages when last read, by id
        self._searched: dict[int, Content | None] = {}  # what a SEARCH read, by UID
        # RFC 5182: what the last SEARCH RETURN (SAVE) found, as UIDs, so that
        # it stays right as messages are expunged and their numbers move.
        self._saved: frozenset[int] = frozenset()
        # ENABLE IMAP4rev2 (RFC 9051): ESEARCH for every SEARCH, no RECENT,
        # [CLOSED], mailbox names in UTF-8 rather than modified UTF-7.
        self.rev2 = False

    @property
    def messages(self) -> list[Message]:
        """The selected mailbox's messages, by number. Made on first use from
        the listing SELECT read: SELECT answers from the listing alone (its
        EXISTS and UNSEEN), so opening a mailbox of 10,000 messages costs an
        aggregate query and no object per message."""
        if self._listed is not None:
            self._messages = [_message(m) for m in self._listed]
            self._listed = None
        return self._messages

    @messages.setter
    def messages(self, value: list[Message]) -> None:
        self._messages, self._listed = value, None

    def in_block(self) -> bool:
        # Literals are part of the command line, but for APPEND's message
        # (up to max_message_size): it may take as long as its octets
        # justify at [abuse] min_data_rate, as SMTP's DATA does.
        return self.conn.receiving_message

    def closing_line(self, why: str) -> bytes:
        return f"* BYE {why}, closing\r\n".encode()

    def internal_error(self) -> None:
        try:
            self.conn.no("internal error; nothing was changed, try again")
        except ProtocolUsageError:
            # Half a FETCH response is out: nothing can follow it as a reply.
            self.writer.transport.abort()

    # -- capabilities and login ---------------------------------------------------------

    def capabilities(self) -> str:
        # IMAP4rev1 clients are served as they were; IMAP4rev2 is for the
        # session that ENABLEs it (docs/imap.md, "IMAP4rev2").
        caps = ["IMAP4rev1", "IMAP4rev2", "LITERAL+", "ENABLE", "IDLE", "NAMESPACE",
                "UNSELECT", "UIDPLUS", "MOVE", "SPECIAL-USE", "ESEARCH", "SEARCHRES",
                f"APPENDLIMIT={self.conn.max_append}"]
        if self.user is None:
            if self.port.tls.user_server_context is not None and not self.conn.tls:
                caps.append("STARTTLS")  # offered until in use (RFC 9051 6.2.1)
            if self.conn.tls or self.plaintext_login:
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")  # RFC 9051 6.2.3: no passwords in the clear
        return " ".join(caps)

    async def _login(self, name: str, password: str) -> None:
        conn = self.conn
        user = await self.port.accounts.authenticate(name, password)
        if user is None:
            log.info("login failed user=%s client=%s", name or "-", self.client)
            # The user port's rule: each failure slows the next replies to
            # this client and for this name, on every port.
            await asyncio.sleep(self.port.logins.failed(self.client, name))
            conn.no("authentication failed", "AUTHENTICATIONFAILED")
            return
        self.user = user
        log.info("login ok user=%s client=%s%s", user.main_address, self.client,
                 "" if name == user.main_address else f" as={name}")
        conn.ok(f"logged in as {user.main_address}", f"CAPABILITY {self.capabilities()}")

    def _no_plaintext(self) -> bool:
        """Refuse a password over a connection without TLS (unless loopback is allowed)."""
        if self.conn.tls or self.plaintext_login:
            return False
        self.conn.no("passwords only over TLS: use STARTTLS first", "PRIVACYREQUIRED")
        return True

    async def _authenticate_data(self, data: bytes | None) -> None:
        if data is None:
            self.conn.bad("authentication cancelled")
            return
        parts = data.split(b"\x00")
        if len(parts) != 3:
            self.conn.bad("a PLAIN response is authzid NUL authcid NUL password")
            return
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            self.conn.bad("a PLAIN response must be UTF-8")
            return
        if authzid and authzid != authcid:
            self.conn.no("acting for another user is not allowed", "AUTHORIZATIONFAILED")
            return
        await self._login(authcid, password)

    # -- the mailbox ----------------------------------------------------------------------

    def _resolve(self, name: str) -> str | None:
        """Our name of mailbox ``name``, a built-in one or the user's folder."""
        assert self.user is not None
        found = _mailbox_name(name)
        if found is None and name in self.store.imap_folders(self.user.id):
            found = name
        return found

    def _load(self, mailbox: str, signature: tuple[int, int, int]) -> list[Message]:
        """``mailbox`` as the store has it now (INBOX: accepted, Pending:
        pending, Junk: rejected as spam, Trash: rejected, and what the user
        placed in it; nothing deleted), by UID; ``signature`` is its
        ``_signature_of``, read just before."""
        listed = [_message(m) for m in self._listing(mailbox, signature)]
        if mailbox == SENT:
            # The summaries and the copies clients appended, in UID order
            # (both take their UIDs from Sent's one counter).
            return sorted(self._load_sent() + listed, key=lambda m: m.uid)
        return listed

    def _load_sent(self) -> list[Message]:
        """Sent: one summary per message the user sent, written with each
        recipient's state; a message whose states changed since its summary
        was written gets a new UID (its octets may not change under the
        old one), so a client sees the old summary go and the new come."""
        assert self.user is not None
        rows = self.store.imap_sent_view(self.user.id)
        stale = [(r.message.id, r.states) for r in rows if r.uid is None or r.shown != r.states]
        if stale:
            self.store.imap_sent_assign(self.user.id, stale)
            rows = self.store.imap_sent_view(self.user.id)
        self._sent = {r.message.id: r for r in rows}
        listed = [Message(r.uid, SEEN, ImapMessage(
            -r.message.id, r.uid, SEEN, 0, "", 0, r.message.created_at, False,
            r.message.sender, None), _SENT_STATE) for r in rows if r.uid is not None]
        return listed

    def _listing(self, mailbox: str, signature: tuple[int, int, int]) -> list[ImapListed]:
        """The store's listing of ``mailbox``. An entry seen there for the
        first time gets the mailbox's next UID here, in entry order.

        The last listings are kept for the sessions to come, each with the
        signature it was read under: a client that logs in again, or a second
        client of the same user, then costs one aggregate query instead of a
        joined read of every message (SELECT of 10,000 messages: about 30 ms
        of SQLite and Python saved). The signature changes with every entry
        that comes or goes and every flag stored, which is what a listing
        holds, so a kept one is used only while it is still true. A listing
        read while the mailbox changed is kept under the older signature,
        which no later session sees again."""
        assert self.user is not None
        key = (self.user.id, mailbox)
        kept = _LISTINGS.setdefault(self.store, collections.OrderedDict())
        hit = kept.get(key)
        if hit is not None and hit[0] == signature:
            kept.move_to_end(key)
            return hit[1]
        user_id, states = self.user.id, MAILBOXES.get(mailbox, ())
        new = self.store.imap_view_unassigned(user_id, mailbox, states)
        if new:
            self.store.imap_assign_uids(user_id, mailbox, new)
        listing = self.store.imap_view(user_id, mailbox, states)
        kept[key] = (signature, listing)
        kept.move_to_end(key)
        while len(kept) > LISTINGS_KEPT:
            kept.popitem(last=False)
        return listing

    def _signature_now(self) -> tuple[int, int, int]:
        assert self.selected is not None
        return self._signature_of(self.selected)

    def _signature_of(self, mailbox: str) -> tuple[int, int, int]:
        """What changes whenever ``mailbox``'s listing does: its count of
        entries, the sum of their ids and its modseq (every flag stored)."""
        assert self.user is not None
        if mailbox == SENT:
            # The recipients' states are not counted anywhere cheap: Sent is
            # read again at each poll (a few queries, for a small mailbox).
            return -1, -1, next(_POLLS)
        return self.store.imap_view_signature(self.user.id, mailbox, MAILBOXES.get(mailbox, ()))

    def _sync(self) -> None:
        """Tell the client what changed since it last looked (NOOP, IDLE,
        CHECK): messages gone, flags changed elsewhere, new messages."""
        assert self.selected is not None
        signature = self._signature_now()
        if signature == self._signature:
            return  # nothing changed: the poll cost one aggregate query
        self._signature = signature
        now = {m.uid: m for m in self._load(self.selected, signature)}
        for n in range(len(self.messages), 0, -1):  # high to low: numbers stay right
            if self.messages[n - 1].uid not in now:
                del self.messages[n - 1]
                self.conn.untagged(n, Atom("EXPUNGE"))
        for n, msg in enumerate(self.messages, 1):
            fresh = now.pop(msg.uid)
            msg.state, msg.folder, msg.body = fresh.state, fresh.folder, fresh.body
            if fresh.flags != msg.flags:
                msg.flags = fresh.flags
                self.conn.untagged(n, Atom("FETCH"), [Atom("FLAGS"), flag_atoms(msg.flags)])
        if now:
            self.messages += sorted(now.values(), key=lambda m: m.uid)
            self.conn.untagged(len(self.messages), Atom("EXISTS"))

    def _set_flags(self, changed: list[tuple[int, int]]) -> None:
        """Store the flags this session changed (entry, flags), already in
        its messages. Its own change does not make it, nor the next session
        to select the mailbox, read the whole mailbox again (a second, for
        100,000 messages): when nothing else changed since it last looked,
        the signature after is the one before with one more flag change,
        and the kept listing (``_listing``) gets the new flags."""
        assert self.user is not None and self.selected is not None
        if not changed:
            return
        before = self._signature_now()
        self.store.imap_set_flags(self.user.id, self.selected, changed)
        if before != self._signature:
            return  # changed elsewhere too: the next poll reads it all
        after = (before[0], before[1], before[2] + 1)
        self._signature = after
        key = (self.user.id, self.selected)
        kept = _LISTINGS.setdefault(self.store, collections.OrderedDict())
        hit = kept.get(key)
        if hit is not None and hit[0] == before:
            flags = dict(changed)
            kept[key] = (after, [
                m if m.message.entry_id not in flags else dataclasses.replace(
                    m, message=dataclasses.replace(m.message, flags=flags[m.message.entry_id]))
                for m in hit[1]])

    def _chosen(self, messages: ev.SequenceSet, uid: bool) -> list[tuple[int, Message]] | None:
        """The messages a sequence set names, with their numbers; None when a
        message number does not exist (the BAD is sent)."""
        msgs = self.messages
        if messages.saved:
            # "$" before any SAVE, or after SELECT, is empty: no message, no BAD.
            return [(n, m) for n, m in enumerate(msgs, 1) if m.uid in self._saved]
        if uid:
            largest = msgs[-1].uid if msgs else 0
            if len(messages.ranges) == 1:
                # One range (what clients send): found by bisection, as UIDs
                # ascend, not by testing every message of a big mailbox.
                lo, hi = _bounds(messages.ranges[0], largest)
                below = bisect.bisect_left(msgs, lo, key=lambda m: m.uid)
                upto = bisect.bisect_right(msgs, hi, key=lambda m: m.uid)
                return list(enumerate(msgs[below:upto], below + 1))
            return [(n, m) for n, m in enumerate(msgs, 1) if messages.contains(m.uid, largest)]
        count = len(msgs)
        for first, last in messages.ranges:
            for end in (first, last):
                if (end is None and count == 0) or (end is not None and end > count):
                    self.conn.bad(f"no message {end or '*'}: the mailbox holds {count} "
                                  "message(s)")
                    return None
        if len(messages.ranges) == 1:
            lo, hi = _bounds(messages.ranges[0], count)
            lo = max(lo, 1)
            return list(enumerate(msgs[lo - 1:hi], lo))
        return [(n, m) for n, m in enumerate(msgs, 1) if messages.contains(n, count)]

    def _content(self, msg: Message, head: bytes | None = None) -> Content | None:
        """What ``msg`` reads as where it shows; None when it cannot be read
        (its envelope or body is gone). ``head``: the first octets of its
        stored body, when read already (``_with_heads``)."""
        stored = msg.stored
        if msg.state == _SENT_STATE:
            sent = self._sent.get(-stored.entry_id)
            if sent is None or sent.shown is None:
                return None
            text = sent_summary(sent, self.config.hostname)
            return Content(len(text), lambda: iter((text,)), sent.message.created_at)
        if not msg.shows_body:
            # A summary wherever it shows (Pending; Junk and Trash for
            # envelopes rejected before their body came).
            env = self.store.in_envelope(stored.envelope_id)
            if env is None:
                return None
            summary = pending_summary(stored.entry_id, stored.recipient, env,
                                      self.config.hostname,
                                      decided=msg.state != EntryState.PENDING)
            return Content(len(summary), lambda: iter((summary,)), env.received_at)
        if not stored.has_body:
            return None
        envelope_id = stored.envelope_id
        if msg.state == EntryState.APPENDED:
            # The client's octets as it sent them: no delivery fields, it
            # was not delivered.
            return Content(stored.size, lambda: stored_chunks(
                lambda seq: self.store.in_body_chunk(envelope_id, seq)),
                stored.received_at, head or b"", msg.entry_id)
        # protocol.md 8.4: one stored copy serves every recipient, so the
        # fields naming the mailbox are written as the message is read, as
        # POP3 RETR does (user_server.py _delivery_fields).
        sender = stored.mail_from if stored.mail_from is not None else stored.sender
        fields = _delivery_fields(sender, stored.recipient)
        return Content(len(fields) + stored.size, lambda: itertools.chain(
            (fields,), stored_chunks(lambda seq: self.store.in_body_chunk(envelope_id, seq))),
            stored.received_at, fields + head if head else b"", msg.entry_id)

    def _with_heads(self, chosen: Sequence[tuple[int, Message]], items: Sequence[ev.FetchAtt]
                    ) -> Iterator[tuple[int, Message, bytes | None, dict[str, bytes]]]:
        """``chosen`` with, for each message, the first octets of its stored
        body when ``items`` read its header and an answer is not kept, and
        the HEADER.FIELDS answers that are (``_FieldsKept``). A message
        without a body has no head (``in_body_heads`` leaves it out). Heads
        are read HEAD_BATCH messages a statement as the FETCH goes: never
        more than one batch in memory."""
        headers = [i for i in items if i.name in ("ENVELOPE", "RFC822.HEADER")
                   or (i.section or "").startswith("HEADER")]
        wanted = self.selected != SENT and bool(headers)
        kept = _FIELDS.get(self.store)
        # Looked up once a message: a FETCH 1:* of a message list is mostly
        # these lookups once the answers are kept.
        fields = [(i, _fields_id(i)) for i in headers if i.section is not None
                  and i.section.startswith("HEADER.FIELDS")] if kept is not None else []
        # Only these asked, and none cut (a partial one reads the header):
        # a message with all of them kept needs no head.
        fields_only = len(fields) == len(headers) and all(i.partial is None for i in headers)
        none: dict[str, bytes] = {}
        for i in range(0, len(chosen), HEAD_BATCH if wanted else len(chosen) or 1):
            part = chosen[i:i + HEAD_BATCH] if wanted else chosen
            found: list[dict[str, bytes]] = []
            heads: dict[int, bytes] = {}
            if wanted:
                needed = []
                for _, msg in part:
                    known = none
                    if fields and msg.shows_body:
                        assert kept is not None
                        entry = msg.entry_id
                        known = {fid: answer for _item, fid in fields
                                 if (answer := kept.get((entry, fid))) is not None}
                    found.append(known)
                    if msg.shows_body and not (fields_only and len(known) == len(fields)):
                        needed.append(msg.stored.envelope_id)
                heads = self.store.in_body_heads(needed, HEAD_LIMIT)
            for k, (n, msg) in enumerate(part):
                yield n, msg, heads.get(msg.stored.envelope_id), found[k] if found else none

    # -- FETCH ------------------------------------------------------------------------

    async def _fetch(self, event: ev.Fetch) -> None:
        chosen = self._chosen(event.messages, event.uid)
        if chosen is None:
            return
        items = list(event.items)
        if event.uid and not any(i.name == "UID" for i in items):
            items.insert(0, ev.FetchAtt("UID"))  # RFC 9051 6.4.9: UID FETCH says the UID
        changed: list[tuple[int, int]] = []
        assert self.selected is not None
        # FLAGS and UID are in memory: only other items read the store.
        reads = any(i.name not in ("FLAGS", "UID") for i in items)
        marks_seen = not self.readonly and any(
            (i.name in ("BODY", "BINARY") and not i.peek and i.section is not None)
            or i.name in ("RFC822", "RFC822.TEXT")
            for i in items)
        # Most items are written at once; only sections that may be long are
        # streamed, awaiting the client. A message list's FETCH (UID, FLAGS,
        # size, a few header fields) then costs no coroutine per item: in a
        # FETCH 1:* of 10,000 messages that was a quarter of the server's time.
        # What each item is, worked out once rather than for each message:
        # whether it streams, the name it is answered under, and for header
        # fields the key of their kept answers.
        plan = [(item, _streamed(item),
                 item.name if item.section is None else _item_name(item),
                 _fields_id(item) if (item.section or "").startswith("HEADER.FIELDS") else "")
                for item in items]
        binary = [i.section for i in items if i.name in ("BINARY", "BINARY.SIZE")]
        for n, msg, head, kept in self._with_heads(chosen, items):
            self._parsed = None  # the MIME structure, read once per message when asked
            self._decoded = {}
            content = self._content(msg, head) if reads else None
            if reads and content is None:
                continue  # vanished since it was listed: nothing to say about it
            unknown = None
            if binary and content is not None:
                unknown = next((cte for section in binary if section is not None
                                and (cte := self._unknown_cte(content, section))), None)
            if unknown is not None:
                # RFC 3516 4.3: said before this message's response opens.
                self._set_flags(changed)
                self.conn.no(f"message {n}: cannot undo Content-Transfer-Encoding "
                             f"{unknown!r}; fetch it with BODY[] instead", "UNKNOWN-CTE")
                return
            sets_seen = marks_seen and not msg.flags & SEEN
            if sets_seen:
                msg.flags |= SEEN
                changed.append((msg.entry_id, msg.flags))
            self.conn.fetch_open(n)
            for item, streamed, name, fid in plan:
                if streamed:
                    await self._send_item(item, msg, content)
                else:
                    self._write_item(item, name, fid, msg, content, kept)
            if sets_seen and not any(i.name == "FLAGS" for i in items):
                self.conn.fetch_item("FLAGS", flag_atoms(msg.flags))
            self.conn.fetch_close()
            # Out in batches as it is made: a FETCH 1:* of a big mailbox is
            # never held whole, and a client that stops reading is cut off.
            if self.conn.pending_output >= OUTPUT_BATCH:
                self._write(self.conn.data_to_send())
                if not await self._drain():
                    raise ConnectionAbortedError("the client stopped reading")
        if changed:
            self._set_flags(changed)
        self.conn.ok("FETCH completed")

    def _write_item(self, item: ev.FetchAtt, name: str, fid: str, msg: Message,
                    content: Content | None, kept: dict[str, bytes]) -> None:
        """An item written whole (``_streamed`` says which), answered as
        ``name``; ``kept``: the HEADER.FIELDS answers found kept for this
        message, by ``_fields_id`` (``fid`` for this item)."""
        conn = self.conn
        if item.name == "FLAGS":
            conn.fetch_raw("FLAGS", _flags_written(msg.flags))
            return
        if item.name == "UID":
            conn.fetch_raw("UID", b"%d" % msg.uid)
            return
        assert content is not None  # read for every item but FLAGS and UID
        match item.name:
            case "RFC822.SIZE":
                conn.fetch_raw("RFC822.SIZE", b"%d" % content.size)
            case "INTERNALDATE":
                conn.fetch_item("INTERNALDATE", internal_date(content.received_at))
            case "ENVELOPE":
                conn.fetch_item("ENVELOPE", envelope(self._header(content)))
            case "BINARY.SIZE":
                assert item.section is not None
                conn.fetch_raw(name, b"%d" % self._binary(content, item.section).size)
            case "BODYSTRUCTURE" | "BODY" if item.section is None:
                conn.fetch_raw(item.name, body_structure(
                    self._structure(content), _envelope_octets,
                    extended=item.name == "BODYSTRUCTURE"))
            case _:
                self._header_fields(item, name, content, kept.get(fid))

    async def _send_item(self, item: ev.FetchAtt, msg: Message, content: Content | None
                         ) -> None:
        """An item that may be long, streamed from the store."""
        assert content is not None
        match item.name:
            case "RFC822":
                await self._send_section(item, "RFC822", content, "")
            case "RFC822.HEADER":
                await self._send_section(item, "RFC822.HEADER", content, "HEADER")
            case "RFC822.TEXT":
                await self._send_section(item, "RFC822.TEXT", content, "TEXT")
            case "BINARY":
                await self._send_binary(item, content)
            case _:
                assert item.section is not None
                await self._send_section(item, _item_name(item), content, item.section)

    @staticmethod
    def _header(content: Content) -> bytes:
        """The message's header with its blank line, at most HEADER_LIMIT
        octets, read in one pass: chunks only until the blank line."""
        end = content.head.find(b"\r\n\r\n")
        if end >= 0:
            return content.head[:min(end + 4, HEADER_LIMIT)]
        got = bytearray()
        for chunk in content.chunks():
            start = max(len(got) - 3, 0)  # the blank line may straddle chunks
            got += chunk
            end = got.find(b"\r\n\r\n", start)
            if end >= 0:
                return bytes(got[:min(end + 4, HEADER_LIMIT)])
            if len(got) >= HEADER_LIMIT:
                break
        return bytes(got[:HEADER_LIMIT])

    def _structure(self, content: Content) -> Part:
        """The message's MIME structure, read in one streaming pass the first
        time a FETCH asks for it (BODYSTRUCTURE and part sections share it)."""
        if self._parsed is None:
            self._parsed = structure(content.chunks())
        return self._parsed

    def _header_fields(self, item: ev.FetchAtt, name: str, content: Content,
                       found: bytes | None = None) -> None:
        """BODY[HEADER.FIELDS (...)] and .NOT: built whole, as a selection
        of header fields is small (the header read is capped at
        HEADER_LIMIT), and kept per entry (``_FieldsKept``); ``found``: the
        answer already looked up there."""
        assert item.section is not None
        key = None if content.entry is None else (content.entry, _fields_id(item))
        kept = _FIELDS.get(self.store) if key is not None else None
        if found is None and kept is not None and key is not None:
            found = kept.get(key)
        if found is None:
            found = header_fields(self._header(content), set(item.fields),
                                  keep=item.section == "HEADER.FIELDS")
            if key is not None:
                (kept or _FIELDS.setdefault(self.store, _FieldsKept())).put(key, found)
        if item.partial is not None:
            offset, most = item.partial
            found = found[offset:offset + most]
        self.conn.fetch_literal(name, len(found))
        self.conn.literal_chunk(found)

    async def _send_section(self, item: ev.FetchAtt, name: str, content: Content,
                            section: str) -> None:
        """One body section as a literal, streamed from the store."""
        if section[:1].isdigit():
            await self._send_part(item, name, content, section)
            return
        total = content.size
        start, length = 0, total
        if section:
            # The header ends after its blank line (or is all of the message
            # when it has none); the text is the rest.
            header = _top_length(content.chunks(), 0)
            start, length = (0, header) if section == "HEADER" else (header, total - header)
        if item.partial is not None:
            offset, most = item.partial
            offset = min(offset, length)
            start, length = start + offset, min(most, length - offset)
        self.conn.fetch_literal(name, length)
        pieces: Iterable[bytes] = _octets(content.chunks(), start, length)
        if length <= OUTPUT_BATCH:
            # A small literal joins the FETCH's output, which goes out in
            # batches (``_fetch``): one write for many messages, not two each.
            pieces = list(pieces)
            if sum(map(len, pieces)) == length:
                for chunk in pieces:
                    self.conn.literal_chunk(chunk)
                return
            # Not what the listing said (the body changed): stream_body ends
            # the session, as for a long one.
        await self.stream_body(pieces, length, self.conn.literal_chunk, lambda: None)

    def _unknown_cte(self, content: Content, section: str) -> str | None:
        """The Content-Transfer-Encoding of part ``section`` when BINARY
        cannot undo it, else None."""
        part = find_part(self._structure(content), [int(n) for n in section.split(".")]) \
            if section else None
        cte = "7bit" if part is None else transfer_encoding(part)
        return None if cte in _IDENTITY_CTE or cte in _DECODERS else cte

    def _binary(self, content: Content, section: str) -> Content:
        """Part ``section`` with its Content-Transfer-Encoding undone (RFC
        3516): decoded once per FETCH, in one pass from the store into a
        BodyWriter (a temporary file past 1 MiB), so that its size is known
        before its literal; a part sent as it is stays in the store and is
        read from there by its offsets. ``""``: the whole message, as it is."""
        found = self._decoded.get(section)
        if found is not None:
            return found
        part = find_part(self._structure(content), [int(n) for n in section.split(".")]) \
            if section else None
        if section and part is None:
            # A part the message lacks is empty, as for BODY[n].
            found = Content(0, lambda: iter(()), content.received_at)
        else:
            start, end = (part.body_start, part.body_end) if part is not None \
                else (0, content.size)
            decoder = _DECODERS.get(transfer_encoding(part)) if part is not None else None
            if decoder is None:
                found = Content(end - start,
                                lambda: _octets(content.chunks(), start, end - start),
                                content.received_at)
            else:
                spool = BodyWriter(directory=self.config.spool_dir)
                for piece in decoder(_octets(content.chunks(), start, end - start)):
                    spool.write(piece)
                body = spool.finish()
                found = Content(body.size, body.chunks, content.received_at)
        self._decoded[section] = found
        return found

    async def _send_binary(self, item: ev.FetchAtt, content: Content) -> None:
        """BINARY[part]: the decoded part as a literal, or a literal8 when it
        holds a NUL (RFC 3516 4.2)."""
        assert item.section is not None
        body = self._binary(content, item.section)
        start, length = 0, body.size
        if item.partial is not None:
            offset, most = item.partial
            start, length = min(offset, body.size), min(most, max(body.size - offset, 0))
        nul = any(b"\x00" in chunk for chunk in _octets(body.chunks(), start, length))
        self.conn.fetch_literal(_item_name(item), length, binary=nul)
        await self.stream_body(_octets(body.chunks(), start, length), length,
                               self.conn.literal_chunk, lambda: None)

    async def _send_part(self, item: ev.FetchAtt, name: str, content: Content,
                         section: str) -> None:
        """A MIME part section (``1``, ``1.2.MIME``, ``2.HEADER``,
        ``2.TEXT``, ``2.HEADER.FIELDS (...)``): found by the structure's
        offsets, streamed from the store. A part the message does not have
        is the empty string (RFC 9051 6.4.5 leaves it to the server)."""
        fields = section.endswith((".HEADER.FIELDS", ".HEADER.FIELDS.NOT"))
        lookup = section.rsplit(".HEADER.FIELDS", 1)[0] + ".HEADER" if fields else section
        found = section_range(self._structure(content), lookup)
        start, end = (found[0], found[1]) if found is not None else (0, 0)
        if fields:
            header = b"".join(_octets(content.chunks(), start, min(end - start, HEADER_LIMIT)))
            chosen = header_fields(header, set(item.fields),
                                   keep=not section.endswith(".NOT"))
            offset, most = item.partial or (0, len(chosen))
            chosen = chosen[offset:offset + most]
            self.conn.fetch_literal(name, len(chosen))
            self.conn.literal_chunk(chosen)
            return
        length = end - start
        if item.partial is not None:
            offset, most = item.partial
            offset = min(offset, length)
            start, length = start + offset, min(most, length - offset)
        self.conn.fetch_literal(name, length)
        await self.stream_body(_octets(content.chunks(), start, length), length,
                               self.conn.literal_chunk, lambda: None)

    # -- SEARCH, STORE, EXPUNGE ---------------------------------------------------------

    def _matches(self, key: ev.SearchKey, n: int, msg: Message) -> bool:
        name = key.name
        if name == "ALL":
            return True
        if name == "AND":
            return all(self._matches(k, n, msg) for k in key.keys)
        if name == "OR":
            return any(self._matches(k, n, msg) for k in key.keys)
        if name == "NOT":
            return not self._matches(key.keys[0], n, msg)
        if name in ("UID", "SEQ"):
            assert key.messages is not None
            if key.messages.saved:
                return msg.uid in self._saved
            if name == "UID":
                return key.messages.contains(msg.uid, self.messages[-1].uid)
            return key.messages.contains(n, len(self.messages))
        if name in ("NEW", "RECENT", "KEYWORD"):
            return False  # no \\Recent, no keywords kept (PERMANENTFLAGS)
        if name in ("OLD", "UNKEYWORD"):
            return True
        if name in _CONTENT_KEYS:
            return self._content_matches(key, msg)
        negated = name.startswith("UN")
        bit = FLAG_BITS["\\" + (name[2:] if negated else name).capitalize()]
        return bool(msg.flags & bit) != negated

    def _content_matches(self, key: ev.SearchKey, msg: Message) -> bool:
        """A key that reads the message: its header, its octets, its size
        or its dates. A message that cannot be read matches none."""
        content = self._searched.get(msg.uid)
        if msg.uid not in self._searched:
            content = self._searched[msg.uid] = self._content(msg)
        if content is None:
            return False
        name = key.name
        if name in ("LARGER", "SMALLER"):
            return content.size > key.number if name == "LARGER" else content.size < key.number
        if name in ("BEFORE", "ON", "SINCE"):
            return _date_matches(name, time.gmtime(content.received_at)[:3], key.date)
        if name in ("BODY", "TEXT"):
            chunks = content.chunks()
            if name == "BODY":
                header = _top_length(content.chunks(), 0)
                chunks = _octets(content.chunks(), header, content.size - header)
            return _contains(chunks, key.text.encode("utf-8").lower())
        fields = email.parser.HeaderParser().parsestr(
            self._header(content).decode("utf-8", "surrogateescape"), headersonly=True)
        if name.startswith("SENT"):
            sent = email.utils.parsedate_tz(str(fields.get("Date", "")))
            return sent is not None and _date_matches(name[4:], tuple(sent[:3]), key.date)
        wanted = key.field if name == "HEADER" else name
        values = fields.get_all(wanted) or []
        needle = key.text.casefold()
        return any(needle in decode_header_text(
            _FOLD.sub("", str(v)).encode("utf-8", "surrogateescape")).casefold()
            for v in values)

    def _search(self, event: ev.Search) -> None:
        self._searched = {}
        matched = [(n, msg) for n, msg in enumerate(self.messages, 1)
                   if self._matches(event.criteria, n, msg)]
        self._searched = {}
        found = [msg.uid if event.uid else n for n, msg in matched]
        returns = event.returns
        if returns is None and self.rev2:
            returns = ()  # RFC 9051 6.4.4: a plain SEARCH is RETURN (ALL), said in ESEARCH
        if returns is not None and "SAVE" in returns:
            # RFC 5182 2.1: SAVE with MIN and/or MAX alone saves just those;
            # with anything else, or alone, every message found.
            returns = tuple(r for r in returns if r != "SAVE")
            kept = matched
            if matched and returns and set(returns) <= {"MIN", "MAX"}:
                kept = [m for m, wanted in ((matched[0], "MIN"), (matched[-1], "MAX"))
                        if wanted in returns]
            self._saved = frozenset(msg.uid for _, msg in kept)
            if not returns:
                self.conn.ok("SEARCH completed, result saved")  # no ESEARCH: 5182 2.1
                return
        if returns is not None:
            # RFC 4731: one ESEARCH response with what was asked for.
            items: list[object] = [[Atom("TAG"), event.tag]]
            if event.uid:
                items.append(Atom("UID"))
            returns = returns or ("ALL",)
            if found and "MIN" in returns:
                items += [Atom("MIN"), found[0]]
            if found and "MAX" in returns:
                items += [Atom("MAX"), found[-1]]
            if "COUNT" in returns:
                items += [Atom("COUNT"), len(found)]
            if found and "ALL" in returns:
                items += [Atom("ALL"), Atom(_sequence_set(found))]
            self.conn.untagged(Atom("ESEARCH"), *items)
            self.conn.ok("SEARCH completed")
            return
        self.conn.untagged(Atom("SEARCH"), *found)
        self.conn.ok("SEARCH completed")

    def _store(self, event: ev.Store) -> None:
        if self.readonly:
            self.conn.no("the mailbox is read-only (EXAMINE); use SELECT to change flags",
                         "READ-ONLY")
            return
        chosen = self._chosen(event.messages, event.uid)
        if chosen is None:
            return
        bits = 0
        for flag in event.flags:
            bits |= FLAG_BITS.get(flag, 0)  # keywords are not kept (PERMANENTFLAGS)
        refused = None
        if (self.selected == PENDING and event.mode != "-"
                and JUNK_KEYWORDS & {f.upper() for f in event.flags}):
            # Thunderbird's "this is junk": reject & spam. The summary stays
            # in this session until the next NOOP or IDLE poll (RFC 9051
            # 7.5.1: no EXPUNGE during a STORE), then it is in Junk.
            for _n, msg in chosen:
                why = self._decide_pending(msg.entry_id, Decision.REJECT_SPAM)
                refused = refused or why
        changed = []
        for n, msg in chosen:
            # Sent's summaries keep their \Seen: nothing of them is stored.
            new = msg.flags if msg.state == _SENT_STATE else (
                msg.flags | bits if event.mode == "+" else msg.flags & ~bits
                if event.mode == "-" else bits)
            if new != msg.flags:
                msg.flags = new
                changed.append((msg.entry_id, new))
            if not event.silent:
                items: list[object] = [Atom("FLAGS"), flag_atoms(msg.flags)]
                if event.uid:
                    items = [Atom("UID"), msg.uid, *items]
                self.conn.untagged(n, Atom("FETCH"), items)
        self._set_flags(changed)
        if refused is not None:
            self.conn.no(f"flags stored; not every message could be marked junk: {refused}")
        else:
            self.conn.ok("STORE completed")

    def _expunge(self, only: ev.SequenceSet | None, *, quiet: bool = False) -> str | None:
        """Remove the messages flagged \\Deleted (of ``only``, for UID
        EXPUNGE). In INBOX as POP3 DELE and QUIT do: the entry is marked
        deleted and leaves every session's INBOX. In Pending, deleting a
        summary rejects its envelope (issue 14 item 3). A message that has
        already left the mailbox (COPY decided it, or another session moved
        it) only leaves the session. The reason the first refused decision
        gave, if any: those messages stay."""
        assert self.user is not None and self.selected is not None
        largest = self.messages[-1].uid if self.messages else 0
        doomed = [n for n, msg in enumerate(self.messages, 1)
                  if msg.flags & DELETED and (only is None or (
                      msg.uid in self._saved if only.saved else only.contains(msg.uid, largest)))]
        here = set()
        if doomed:
            # Which are still here now (another session may have moved some):
            # the kept listing while the mailbox is unchanged, else a fresh one.
            here = {m.message.entry_id
                    for m in self._listing(self.selected, self._signature_now())}
        left = [n for n in doomed if self.messages[n - 1].entry_id not in here]
        doomed = [n for n in doomed if self.messages[n - 1].entry_id in here]
        refused = None
        if self.selected == PENDING:
            gone = []
            for n in doomed:
                why = self._decide(self.messages[n - 1].entry_id, Decision.REJECT)
                if why is None:
                    gone.append(n)
                else:
                    refused = refused or why
        else:
            gone = doomed
            if gone:
                self.store.mark_deleted([self.messages[n - 1].entry_id for n in gone])
        if gone:
            log.info("expunge user=%s mailbox=%s entries=%s", self.user.main_address,
                     self.selected, ",".join(str(self.messages[n - 1].entry_id) for n in gone))
        self._remove(sorted(gone + left), quiet=quiet)
        return refused

    def _remove(self, gone: list[int], *, quiet: bool = False) -> None:
        """Take messages ``gone`` (numbers, ascending) out of the session,
        saying EXPUNGE for each unless ``quiet`` (CLOSE)."""
        for n in reversed(gone):  # high to low: the numbers still to send stay right
            del self.messages[n - 1]
            if not quiet:
                self.conn.untagged(n, Atom("EXPUNGE"))

    def _decide_pending(self, entry_id: int, decision: Decision) -> str | None:
        """``decision`` taken on a Pending summary. One that rejects is
        refused once the envelope was decided elsewhere (the session's
        summary is stale until its next poll): the reject family after an
        accept is for the accepted message, in INBOX, not for its summary."""
        entry = self.store.mailbox_entry(entry_id)
        if not decision.accepts and entry is not None and entry.state != EntryState.PENDING:
            return f"envelope {entry_id} was decided elsewhere: it is {entry.state} now"
        return self._decide(entry_id, decision)

    def _decide(self, entry_id: int, decision: Decision) -> str | None:
        """``decision`` on an entry, as the user port's verbs take it
        (``Destination.decide``: Table 2's effects at both ends); None when
        it was taken, else the sentence saying why not."""
        assert self.user is not None
        result = self.port.core.destination.decide(self.user, entry_id, decision)
        if not result.outcome.ok or result.entry is None:
            return result.outcome.reason
        self.port.outbox.wake()
        if result.outcome.kind is Kind.DONE:
            env = self.store.in_envelope(result.entry.envelope_id)
            log.info("decision entry=%d envid=%s user=%s decision=%s sender=%s peer=%s via=imap",
                     entry_id, env.envid if env else "-", self.user.main_address,
                     decision.value, env.sender if env else "-",
                     env.origin_server if env else "-")
        return None

    def _transfer(self, event: ev.Move | ev.Copy) -> None:
        """MOVE (RFC 6851) and COPY: each message goes where the target says,
        taking the decision it stands for (docs/imap.md, "Deciding by
        moving"). Pending to INBOX accepts: the summary leaves Pending now,
        and the message appears in INBOX once its body is pulled (an
        IDLE-ing client sees it come). A message of SMDP mail is in one
        mailbox at a time, so its COPY moves too; the copy's source loses it
        at the next NOOP or IDLE poll, and the EXPUNGE a client sends after
        it removes nothing twice. A message a client wrote in is copied.
        No COPYUID: a message that a decision moves has no UID where it goes
        until it gets there."""
        conn = self.conn
        copy = isinstance(event, ev.Copy)
        target = self._resolve(event.mailbox)
        if target is None:
            conn.no(f"no mailbox named {event.mailbox!r}", "TRYCREATE")
            return
        if self.readonly:
            conn.no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
            return
        if target == self.selected:
            conn.no(f"the messages are in {target} already", "CANNOT")
            return
        chosen = self._chosen(event.messages, event.uid)
        if chosen is None:
            return
        done, refused = [], None
        for n, msg in chosen:
            why = self._transfer_one(msg, target, copy=copy)
            if why is None:
                done.append(n)
            else:
                refused = refused or why
        if not copy:
            self._remove(done)
        verb = "copied" if copy else "moved"
        if refused is not None:
            conn.no(f"{len(done)} {verb}; not all: {refused}",
                    "CANNOT" if not done and refused.startswith(_CANNOT) else None)
        elif self.selected == PENDING and target == INBOX:
            conn.ok(f"{len(done)} accepted; each appears in INBOX once it is fetched")
        else:
            conn.ok(f"{len(done)} {verb} to {target}")

    def _transfer_one(self, msg: Message, target: str, *, copy: bool = False) -> str | None:
        """One message of the selected mailbox to ``target``: the decision it
        stands for, or its new place; None when done, else why not."""
        assert self.user is not None and self.selected is not None
        source = self.selected
        if source == PENDING:
            decision = PENDING_MOVES.get(target)
            if decision is None:
                return (f"{_CANNOT} a Pending summary into {target}: move it to INBOX "
                        f"(accept), {ACCEPT_AUTH_BOX}, Junk (reject & spam), {SPAMMER_BOX} "
                        "or Trash (reject)")
            return self._decide_pending(msg.entry_id, decision)
        if msg.state == _SENT_STATE:
            return (f"{_CANNOT} a summary of what you sent out of Sent: it is this server's "
                    "record")
        if target == PENDING:
            return f"{_CANNOT} a message into Pending: it holds envelopes not yet decided"
        if msg.state == EntryState.APPENDED:
            # A client's own message: no sender's server behind it, so
            # moving it decides nothing; it goes anywhere a message may.
            if target in (ACCEPT_AUTH_BOX, SPAMMER_BOX):
                return (f"{_CANNOT} a message a client wrote in into {target}: there is no "
                        "sender's server to decide about")
            if copy:
                return self._copy_appended(msg, target)
            self.store.imap_place(self.user.id, msg.entry_id,
                                  None if target == INBOX else target, True, source)
            return None
        if target == SENT:
            return f"{_CANNOT} a message into Sent: it shows the mail you sent"
        shows = msg.shows_body
        decision = LATE_MOVES.get(target)
        if decision is not None:
            why = self._decide(msg.entry_id, decision)
            if why is not None:
                return why
            # Rejected after it was read, it stays readable in Junk; accepted
            # and authorized, it is back in INBOX (with a new UID there).
            place = JUNK if not decision.accepts and shows else None
            self.store.imap_place(self.user.id, msg.entry_id, place, shows, source)
            return None
        if target == INBOX:
            if msg.state != EntryState.ACCEPTED:
                return (f"{_CANNOT} rejected mail into INBOX: the origin deleted it "
                        "when it was rejected")
            self.store.imap_place(self.user.id, msg.entry_id, None, True, source)
            return None
        if target != TRASH and msg.state != EntryState.ACCEPTED:
            return f"{_CANNOT} rejected mail into {target}: only Trash takes it"
        self.store.imap_place(self.user.id, msg.entry_id, target, shows, source)
        return None

    def _copy_appended(self, msg: Message, target: str) -> str | None:
        """COPY of a message a client wrote in: a true copy (a new entry,
        its octets, date and flags), since nothing about it is SMDP's; a
        message of SMDP mail has one entry, so its COPY moves."""
        assert self.user is not None
        stored = msg.stored
        env = self.store.in_envelope(stored.envelope_id)
        if env is None:
            return f"{_CANNOT} a message that is gone"
        envelope_id = stored.envelope_id
        spool = BodyWriter(directory=self.config.spool_dir)  # a chunk at a time
        for chunk in stored_chunks(lambda seq: self.store.in_body_chunk(envelope_id, seq)):
            spool.write(chunk)
        self.store.imap_append(
            self.user.id, recipient=self.user.main_address, mailbox=target,
            folder=None if target == INBOX else target, envid=new_token(),
            origin_server=APPEND_ORIGIN, block=env.block, subject=env.subject,
            body=spool.finish(), received_at=env.received_at, flags=msg.flags,
            reason=APPEND_REASON)
        return None

    # -- SELECT, LIST, STATUS ------------------------------------------------------------

    def _select(self, event: ev.Select) -> None:
        assert self.user is not None
        if self.selected is not None and self.rev2:
            # RFC 9051 6.3.2: the mailbox selected is closed, whether or not
            # this SELECT succeeds; said before anything of the new one.
            self.conn.untagged_status("OK", "previous mailbox is now closed", "CLOSED")
        self.selected, self.messages, self._saved = None, [], frozenset()
        name = self._resolve(event.mailbox)
        if name is None:
            self.conn.no(f"no mailbox named {event.mailbox!r}", "NONEXISTENT")
            return
        self.selected = name
        self._signature = self._signature_now()
        # The flags lazily, message by message: UNSEEN stops at the first
        # unseen, and a copy of 10,000 flags was a sixth of a SELECT.
        flags: Iterable[int]
        if name == SENT:
            self.messages = self._load(SENT, self._signature)
            count, flags = len(self.messages), (m.flags for m in self.messages)
        else:
            self._listed = self._listing(name, self._signature)
            count, flags = len(self._listed), (m.message.flags for m in self._listed)
        self.readonly = event.readonly
        conn = self.conn
        conn.untagged(Atom("FLAGS"), flag_atoms(sum(FLAG_BITS.values())))
        conn.untagged(count, Atom("EXISTS"))
        if self.rev2:
            # RFC 9051 6.3.2: a LIST response for the mailbox; no RECENT and
            # no UNSEEN code, which IMAP4rev2 dropped.
            conn.untagged(Atom("LIST"), self._attributes(name, self._parents()), "/",
                          self._client_name(name))
        else:
            conn.untagged(0, Atom("RECENT"))  # IMAP4rev1 wants it; we keep no \Recent
            unseen = next((n for n, bits in enumerate(flags, 1) if not bits & SEEN), None)
            if unseen is not None:
                conn.untagged_status("OK", "first unseen message", f"UNSEEN {unseen}")
        conn.untagged_status("OK", "UIDs valid", f"UIDVALIDITY {uidvalidity(self.user)}")
        conn.untagged_status("OK", "predicted next UID",
                             f"UIDNEXT {self.store.imap_uidnext(self.user.id, name)}")
        conn.untagged_status("OK", "flags kept", f"PERMANENTFLAGS ({FLAG_LIST})")
        if self.readonly:
            conn.ok(f"{'EXAMINE' if event.readonly else 'SELECT'} completed", "READ-ONLY")
        else:
            conn.ok("SELECT completed", "READ-WRITE")

    def _list(self, event: ev.ListCmd) -> None:
        """LIST and LSUB: every mailbox with RFC 6154's special-use attribute
        where it has one (always: RFC 6154 allows it unasked) and whether it
        has children (RFC 9051 7.3.1). Every mailbox is subscribed.

        LIST-EXTENDED (RFC 5258): several patterns, a mailbox listed once
        however many it matches; the SUBSCRIBED and REMOTE selections are
        every mailbox (all are subscribed, none is remote), SPECIAL-USE
        those with a special use (RFC 6154 5.1); RECURSIVEMATCH says
        CHILDINFO for a mailbox with inferiors the patterns leave out; the
        CHILDREN, SUBSCRIBED and SPECIAL-USE return options ask for what is
        always sent. ``RETURN (STATUS (...))`` (RFC 5819) follows each LIST
        response with the mailbox's STATUS response."""
        assert self.user is not None
        verb = Atom("LSUB" if event.subscribed_only else "LIST")
        if event.patterns == ("",) and not event.subscribed_only:
            # RFC 9051 6.3.9: an empty pattern asks for the hierarchy delimiter.
            self.conn.untagged(verb, [Atom("\\Noselect")], "/", "")
            self.conn.ok(f"{verb} completed")
            return
        names = self._names()
        parents = self._parents(names)

        def matched(name: str) -> bool:
            shown = self._client_name(name)
            return any(_listed(event.reference, p, shown) for p in event.patterns if p)

        chosen = [name for name in names if matched(name)]
        if "SPECIAL-USE" in event.selection:
            chosen = [name for name in chosen if name in SPECIAL_USE]
        for name in chosen:
            attributes = self._attributes(name, parents)
            if event.subscribed_only:
                attributes.remove(Atom("\\Subscribed"))
            extended: list[object] = []
            if "RECURSIVEMATCH" in event.selection and any(
                    other.startswith(name + "/") and not matched(other) for other in names):
                extended = [["CHILDINFO", ["SUBSCRIBED"]]]
            self.conn.untagged(verb, attributes, "/", self._client_name(name), *extended)
            if event.status:
                self.conn.untagged(Atom("STATUS"), self._client_name(name),
                                   self._status_values(name, event.status))
        self.conn.ok(f"{verb} completed")

    def _names(self) -> list[str]:
        """Every mailbox of the user, as kept. A folder named as a built-in
        mailbox (Drafts created before it was one) is that mailbox: its
        placements are the same."""
        assert self.user is not None
        return [*MAILBOXES, SENT, *(f for f in self.store.imap_folders(self.user.id)
                                    if _mailbox_name(f) is None)]

    def _parents(self, names: list[str] | None = None) -> set[str]:
        return {name.rsplit("/", 1)[0] for name in (names or self._names()) if "/" in name}

    @staticmethod
    def _attributes(name: str, parents: set[str]) -> list[Atom]:
        """LIST's attributes of ``name``: children or not, RFC 6154's
        special use, and \\Subscribed (every mailbox is)."""
        attributes = [Atom("\\HasChildren" if name in parents else "\\HasNoChildren")]
        if name in SPECIAL_USE:
            attributes.append(Atom(SPECIAL_USE[name]))
        attributes.append(Atom("\\Subscribed"))
        return attributes

    def _create(self, event: ev.Create) -> None:
        assert self.user is not None
        name = event.mailbox.rstrip("/")  # RFC 9051 6.3.4: a trailing delimiter is allowed
        if self._resolve(name) is not None:
            self.conn.no(f"{name!r} exists already", "ALREADYEXISTS")
            return
        if (why := _folder_name_fault(name)) is not None:
            self.conn.no(why, "CANNOT")
            return
        # RFC 9051 6.3.4: the superior names a new name implies exist too.
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            self.store.imap_create_folder(self.user.id, "/".join(parts[:depth]))
        self.conn.ok(f"{name} created")

    def _append(self, event: ev.Append) -> None:
        """APPEND (RFC 9051 6.3.12, APPENDUID of RFC 4315): the message is
        stored as the client sent it, as a message of the user's own (state
        ``appended``: no sender's server, no decision, no vote, no list; not
        in POP3's maildrop), in INBOX, Drafts, Sent, Junk, Trash or a folder
        (docs/imap.md, "APPEND"). Pending and its decision folders take only
        what peers send."""
        assert self.user is not None
        conn = self.conn
        name = self._resolve(event.mailbox)
        if name is None:
            conn.no(f"no mailbox named {event.mailbox!r}; CREATE it first", "TRYCREATE")
            return
        if name == PENDING or name in (ACCEPT_AUTH_BOX, SPAMMER_BOX):
            conn.no(f"{name} holds only envelopes other servers sent, waiting for your "
                    "decision: a message cannot be put there", "CANNOT")
            return
        # The codec refused any message over max_append (NO [TOOBIG]).
        body = event.message if isinstance(event.message, Body) else Body.of(event.message)
        received_at = time.time()
        if event.date is not None:
            parsed = parse_date_time(event.date)
            if parsed is None:
                conn.bad(f"{event.date!r} is not a date-time such as "
                         "\"01-Feb-2026 10:00:00 +0000\"")
                return
            received_at = parsed
        bits = 0
        for flag in event.flags:
            bits |= _FLAGS_UPPER.get(flag.upper(), 0)  # keywords are not kept
        summary = extract_envelope(body)
        entry_id, uid = self.store.imap_append(
            self.user.id, recipient=self.user.main_address, mailbox=name,
            folder=None if name == INBOX else name, envid=new_token(),
            origin_server=APPEND_ORIGIN,
            block=encode_envelope_block(summary, expires="").decode("utf-8"),
            subject=summary.subject, body=body, received_at=received_at, flags=bits,
            reason=APPEND_REASON)
        log.info("append user=%s mailbox=%s entry=%d uid=%d size=%d", self.user.main_address,
                 name, entry_id, uid, body.size)
        if self.selected == name:
            self._sync()  # RFC 9051 6.3.12: EXISTS now, not at the next command
        conn.ok("APPEND completed", f"APPENDUID {uidvalidity(self.user)} {uid}")

    def _own_folder(self, name: str) -> bool:
        """Whether ``name`` is a folder of the user's (not the server's);
        answers NO when not."""
        assert self.user is not None
        if _mailbox_name(name) is not None:
            self.conn.no(f"{name} is this server's own mailbox: it cannot be deleted or "
                         "renamed", "CANNOT")
            return False
        if name not in self.store.imap_folders(self.user.id):
            self.conn.no(f"no mailbox named {name!r}", "NONEXISTENT")
            return False
        return True

    def _delete(self, event: ev.Delete) -> None:
        assert self.user is not None
        if not self._own_folder(event.mailbox):
            return
        if any(f.startswith(event.mailbox + "/") for f in self.store.imap_folders(self.user.id)):
            # RFC 9051 6.3.5 would keep it as \Noselect; we have no such state.
            self.conn.no(f"{event.mailbox} has folders inside: delete them first",
                         "HASCHILDREN")
            return
        # A session that has it selected sees its messages expunged at its
        # next poll, and an empty mailbox after.
        self.store.imap_delete_folder(self.user.id, event.mailbox)
        self.conn.ok(f"{event.mailbox} deleted, with its messages")

    def _rename(self, event: ev.Rename) -> None:
        assert self.user is not None
        old, new = event.old, event.new.rstrip("/")
        if not self._own_folder(old):
            return
        if self._resolve(new) is not None:
            self.conn.no(f"{new!r} exists already", "ALREADYEXISTS")
            return
        if (why := _folder_name_fault(new)) is not None or new.startswith(old + "/"):
            self.conn.no(why or "a folder cannot go inside itself", "CANNOT")
            return
        parts = new.split("/")
        for depth in range(1, len(parts)):  # the superiors of the new name
            self.store.imap_create_folder(self.user.id, "/".join(parts[:depth]))
        for name in self.store.imap_folders(self.user.id):
            if name == old or name.startswith(old + "/"):  # the inferiors go along
                self.store.imap_rename_folder(self.user.id, name, new + name[len(old):])
        self.conn.ok(f"{old} renamed to {new}")

    def _status(self, event: ev.Status) -> None:
        assert self.user is not None
        name = self._resolve(event.mailbox)
        if name is None:
            self.conn.no(f"no mailbox named {event.mailbox!r}", "NONEXISTENT")
            return
        self.conn.untagged(Atom("STATUS"), self._client_name(name),
                           self._status_values(name, event.items))
        self.conn.ok("STATUS completed")

    def _status_values(self, name: str, wanted: tuple[str, ...]) -> list[object]:
        """STATUS's ``wanted`` items of mailbox ``name``, with their values."""
        assert self.user is not None
        msgs = self._load(name, self._signature_of(name))
        values = {
            "MESSAGES": len(msgs),
            "UIDNEXT": self.store.imap_uidnext(self.user.id, name),
            "UIDVALIDITY": uidvalidity(self.user),
            "UNSEEN": sum(1 for m in msgs if not m.flags & SEEN),
            "RECENT": 0,
            "DELETED": sum(1 for m in msgs if m.flags & DELETED),
        }
        if "SIZE" in wanted:
            values["SIZE"] = sum(content.size for m in msgs
                                 if (content := self._content(m)) is not None)
        items: list[object] = []
        for item in wanted:
            items += [Atom(item), values[item]]
        return items

    # -- IDLE -----------------------------------------------------------------------------

    async def _idle(self, tag: str) -> None:
        """IDLE (RFC 2177) until DONE, telling the client of new mail as it
        comes. A command after a broken IDLE is handled here too, once the
        IDLE is answered: the codec has already read it."""
        event: object = ev.Idle(tag)
        while isinstance(event, ev.Idle):
            event = await self._idle_once(event.tag)
        if event is not None:
            await self.handle(event)

    async def _idle_once(self, tag: str) -> object:
        conn = self.conn
        conn.continuation("idling")
        deadline = time.monotonic() + max(IDLE_LIMIT, self.config.limits.idle_timeout)
        while True:
            event = conn.next_event()
            if isinstance(event, ev.IdleDone):
                if self.selected is not None:
                    self._sync()
                conn.ok("IDLE terminated")
                return None
            if event is CLOSED:
                return None
            if event is not NEED_DATA:
                return event  # the IDLE was answered BAD; a command came after it
            if conn.reply_owed is None:
                return None  # the IDLE was answered BAD
            if self.selected is not None:
                self._sync()
            self._write(conn.data_to_send())
            if not await self._drain():
                raise ConnectionAbortedError("the client stopped reading")
            if time.monotonic() > deadline:
                self._write(self.closing_line("idle too long"))
                raise ConnectionAbortedError("IDLE too long")
            try:
                async with asyncio.timeout(IDLE_POLL):
                    data = await self.reader.read(65536)
            except TimeoutError:
                continue
            conn.receive_data(data)

    # -- mailbox names ------------------------------------------------------------------

    def _stored_name(self, name: str) -> str:
        """A rev2 client's UTF-8 mailbox name as it is kept: in modified
        UTF-7, as IMAP4rev1 clients (which created every folder so far) give
        it, so that one folder has one name whichever the session. A folder
        a rev1 client named in raw UTF-8 (which it should not) keeps it."""
        kept = mutf7_encode(name)
        if kept != name and not name.isascii():
            assert self.user is not None
            folders = self.store.imap_folders(self.user.id)
            if kept not in folders and name in folders:
                return name
        return kept

    def _names_from_client(self, event: object) -> object:
        """``event`` with its mailbox names as they are kept (rev2 sessions)."""
        match event:
            case ev.Select() | ev.Status() | ev.Create() | ev.Delete() | ev.Append() \
                    | ev.Move() | ev.Copy() | ev.Subscribe():
                return dataclasses.replace(event, mailbox=self._stored_name(event.mailbox))
            case ev.Rename(old=old, new=new):
                return dataclasses.replace(event, old=self._stored_name(old),
                                           new=self._stored_name(new))
        return event

    def _client_name(self, name: str) -> str:
        """A kept mailbox name as this session's client reads it: in UTF-8
        for rev2 (RFC 9051 5.1), as kept (modified UTF-7) for rev1."""
        if self.rev2:
            return mutf7_decode(name) or name
        return name

    # -- dispatch ---------------------------------------------------------------------

    async def handle(self, event: object) -> None:
        conn = self.conn
        if self.rev2:
            event = self._names_from_client(event)
        match event:
            case ev.Capability():
                conn.untagged(Atom("CAPABILITY"), *(Atom(c) for c in self.capabilities().split()))
                conn.ok("CAPABILITY completed")
            case ev.Noop() | ev.Check():
                if self.selected is not None:
                    self._sync()
                conn.ok(f"{type(event).__name__.upper()} completed")
            case ev.Logout():
                conn.bye(f"{self.config.hostname} signing off")
                conn.ok("LOGOUT completed")
            case ev.StartTls():
                context = self.port.tls.user_server_context
                if context is None:
                    conn.no("TLS is not available on this server")
                    return
                if conn.tls:
                    conn.bad("TLS is already in use")
                    return
                conn.ok("begin TLS negotiation now")
                await self.start_tls(context)
            case ev.Login(user=name, password=password):
                if not self._no_plaintext():
                    await self._login(name, password)
            case ev.Authenticate(mechanism=mechanism, initial=initial):
                if mechanism != "PLAIN":
                    conn.no(f"mechanism {mechanism} is not supported; use PLAIN",
                            "CANNOT")
                elif not self._no_plaintext():
                    if initial is None:
                        conn.continuation(" ")
                    else:
                        await self._authenticate_data(initial)
            case ev.AuthenticateData(data=data):
                await self._authenticate_data(data)
            case ev.Enable(capabilities=wanted):
                # RFC 5161 3.1: ENABLED names what this command enabled;
                # what is unknown, or on already, is left out.
                enabled = []
                if "IMAP4REV2" in wanted and not self.rev2:
                    self.rev2 = True
                    enabled.append(Atom("IMAP4rev2"))
                conn.untagged(Atom("ENABLED"), *enabled)
                conn.ok("ENABLE completed")
            case ev.Namespace():
                conn.untagged(Atom("NAMESPACE"), [["", "/"]], None, None)
                conn.ok("NAMESPACE completed")
            case ev.ListCmd():
                self._list(event)
            case ev.Subscribe():
                if self._resolve(event.mailbox) is None:
                    conn.no(f"no mailbox named {event.mailbox!r}", "NONEXISTENT")
                else:
                    conn.ok("every mailbox is always subscribed")
            case ev.Status():
                self._status(event)
            case ev.Select():
                self._select(event)
            case ev.Fetch():
                await self._fetch(event)
            case ev.Search():
                self._search(event)
            case ev.Store():
                self._store(event)
            case ev.Expunge(messages=only):
                if self.readonly:
                    conn.no("the mailbox is read-only (EXAMINE)", "READ-ONLY")
                elif (refused := self._expunge(only)) is not None:
                    conn.no(f"not every message could be removed: {refused}")
                else:
                    conn.ok("EXPUNGE completed")
            case ev.Move() | ev.Copy():
                self._transfer(event)
            case ev.Append():
                self._append(event)
            case ev.Create():
                self._create(event)
            case ev.Delete():
                self._delete(event)
            case ev.Rename():
                self._rename(event)
            case ev.Close():
                if not self.readonly:
                    self._expunge(None, quiet=True)  # RFC 9051 6.4.1: no EXPUNGE responses
                self.selected, self.messages, self._saved = None, [], frozenset()
                conn.ok("CLOSE completed")
            case ev.Unselect():
                self.selected, self.messages, self._saved = None, [], frozenset()
                conn.ok("UNSELECT completed")
            case ev.Idle(tag=tag):
                await self._idle(tag)
            case _:
                conn.bad("command not implemented")


async def serve_imap(port: ImapPort, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    try:
        await ImapSession(port, reader, writer).run()
    except Exception:
        log.exception("imap session failed")
