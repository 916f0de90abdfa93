"""What the origin does to a message its own user submits (paper section 5.2 step 3).

Assumption 3 ("No spoofing") says the From of every message must be one of
the sender's identities, and Table 5 says the server adds From itself. So a
submitted message either carries only the user's identities in its author
fields or gets a From written by the server; anything else is refused before
it is stored. The bytes returned here are the bytes stored, used for the
envelope (section 5.2 step 4) and later transferred, so the header block is
made unambiguous here, once: CRLF line ends and an explicit blank line after
the header, whatever the user sent.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry
from email.utils import format_datetime, getaddresses

from smdp.core.outcomes import Kind
from smdp.mail.addresses import Address, AddressError, normalize, parse_address
from smdp.mail.body import Body, BodyWriter
from smdp.mail.mime import (
    MAX_HEADER_OCTETS,
    HeaderBlock,
    HeaderField,
    decode_header_text,
    mbox_line_end,
    scan_header,
)
from smdp.mail.mime.headers import MBOX_DECIDED

__all__ = ["SubmissionError", "prepare_submission", "prepare_submission_body"]

_CRLF = b"\r\n"
# Fields that name an author of the message (RFC 5322 3.6.2 and 3.6.6): each
# is a claim about who wrote or sent it, so each must be one of the user's
# identities.
_AUTHOR_FIELDS = ("from", "sender", "resent-from", "resent-sender")
# Bcc is dropped: the stored bytes go unchanged to every recipient, and a Bcc
# line would show each of them who else was blind-copied (RFC 5322 3.6.3
# allows removing it; the recipients travel in RCPT commands anyway).
# Return-Path too: the server that delivers the message writes it (RFC 5321
# 4.4: a message "SHOULD NOT" be sent with one), and a reader would otherwise
# see two, the older one (say from a message saved from an mbox file) wrong.
_DROPPED_FIELDS = frozenset({"bcc", "return-path"})
# C0 controls but HT, and DEL. RFC 5322 allows none of them in a header, and
# some readers break lines at VT, FF or FS: a From hidden behind one would
# escape the check below.
_HEADER_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Anything shaped like an address in the decoded field, display name included:
# a From reading "boss@bank.example <me@here>" spoofs as surely as a bare one.
# Matches start only at a token boundary, so a long run without "@" is
# scanned once, not once per character.
_ADDRESS_LIKE = re.compile(
    r"(?<![^\s<>()\[\]\",;:@])[^\s<>()\[\]\",;:@]++@[^\s<>()\[\]\",;:@]++"
)
# Author fields are short; a long one is refused rather than handed to the
# email package's parsers, whose cost on hostile input is not bounded.
_MAX_AUTHOR_FIELD = 4096
_REGISTRY = HeaderRegistry()


class SubmissionError(ValueError):
    """The message cannot be accepted; the text is shown to the user as is.

    ``kind`` says why, for a port whose replies tell kinds apart (the
    submission port's SMTP codes): ``NOT_YOUR_IDENTITY`` (assumption 3),
    ``SUSPENDED``, ``TOO_LARGE``, or ``INVALID`` (a malformed message).
    """

    def __init__(self, text: str, kind: Kind = Kind.INVALID) -> None:
        super().__init__(text)
        self.kind = kind


# An LF not preceded by a CR (but at offset 0: nothing to look behind at),
# and a CR not followed by an LF: one pass each, at C speed (sre skips to
# the literal first).
_BARE_LF = re.compile(rb"\n(?<=[^\r]\n)")
_BARE_CR = re.compile(rb"\r(?!\n)")


class _LineEnds:
    """Line ends to CRLF over a stream of chunks: CRLF, LF and bare CR alike.

    Bare CR becomes a line end too: the email package and many readers split
    on it, so leaving it would let a line hide inside another one. A CR that
    ends a chunk is written as CRLF at once; an LF that starts the next chunk
    is then the rest of that line end, and dropped. :meth:`end` gives the CRLF
    that ends a message that does not end with a line end.
    """

    __slots__ = ("_last", "_no_bare_lf")

    def __init__(self, *, no_bare_lf: bool = False) -> None:
        self._last = -1  # the last octet fed, -1 before any
        # The caller knows that every LF fed ends a CRLF (Body.no_bare_lf).
        self._no_bare_lf = no_bare_lf

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        last = chunk[-1]
        if self._last == 0x0D and chunk[0] == 0x0A:
            chunk = chunk[1:]
        self._last = last
        if (last != 0x0D and not chunk.startswith(b"\n")
                and (self._no_bare_lf or _BARE_LF.search(chunk) is None)
                and _BARE_CR.search(chunk) is None):
            # Every CR and LF already a CRLF pair (a body from the ports'
            # codecs, nearly always): as it is, no copy (issue 15 item 4).
            return chunk
        return chunk.replace(_CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", _CRLF)

    def end(self) -> bytes:
        return b"" if self._last in (-1, 0x0A, 0x0D) else _CRLF


def _normalize_line_ends(raw: bytes) -> bytes:
    lines = _LineEnds()
    return lines.feed(raw) + lines.end()


def _printable(text: str) -> str:
    # The reason is echoed on the user port: one line, bounded, no controls.
    text = "".join(c if c.isprintable() else " " for c in text[:200])
    return " ".join(text.split())


def _key(address: str) -> str:
    try:
        return normalize(address)
    except AddressError:
        return address.strip().lower()


def _claimed_addresses(field: HeaderField) -> list[str]:
    """Every address a reader could take from ``field``, by three independent readings.

    The readers of the message use different parsers; taking the union of the
    legacy parser, the RFC 5322 parser of :mod:`email.headerregistry` and a
    plain pattern over the decoded text means a trick that fools one of them
    still shows up in another.
    """
    if len(field.value) > _MAX_AUTHOR_FIELD:
        raise SubmissionError(f"The {field.name} header is too long.")
    value = field.value.decode("latin-1")
    found: list[str] = []
    try:
        for _name, addr in getaddresses([value]):
            if addr:
                found.append(addr)
        header = _REGISTRY(field.key, value)
        addresses = getattr(header, "addresses", ())
    except Exception as exc:
        # Both parsers raise on some malformed input (nested comments give a
        # RecursionError, odd tokens IndexError): what cannot be read cannot
        # be shown to be the user's own.
        raise SubmissionError(
            f"The {field.name} header is malformed and cannot be checked."
        ) from exc
    for address in addresses:
        found.append(address.addr_spec)
    # A dot ending a sentence in a display name is not part of the address.
    text = decode_header_text(field.value)
    found.extend(token.rstrip(".") for token in _ADDRESS_LIKE.findall(text))
    return found


def _check_authors(fields: Sequence[HeaderField], allowed: set[str]) -> bool:
    """Refuse author fields naming anyone else; True when a From field exists."""
    has_from = False
    for field in fields:
        if field.key not in _AUTHOR_FIELDS:
            continue
        has_from = has_from or field.key == "from"
        claimed = _claimed_addresses(field)
        if not claimed:
            raise SubmissionError(f"The {field.name} header has no address.")
        for address in claimed:
            if _key(address) not in allowed:
                label = "From" if field.key == "from" else field.name
                raise SubmissionError(
                    _printable(f"{label} <{address}> is not one of your identities"),
                    Kind.NOT_YOUR_IDENTITY,
                )
    return has_from


@dataclass(frozen=True, slots=True)
class _Submitter:
    """What the header rewrite needs to know about the user and the server."""

    allowed: set[str]
    sender: Address
    host: str
    now: datetime | None
    trace: bytes

    @classmethod
    def check(cls, identities: Sequence[str], sender: str, hostname: str,
              now: datetime | None, trace: bytes) -> _Submitter:
        allowed = {_key(identity) for identity in identities}
        try:
            sender_address = parse_address(sender)
        except AddressError as exc:
            raise SubmissionError(f"The sender address is invalid: {exc}") from exc
        if normalize(sender) not in allowed:
            raise SubmissionError("The sender is not one of your identities.",
                                  Kind.NOT_YOUR_IDENTITY)
        try:
            host = parse_address("postmaster@" + hostname).domain
        except AddressError as exc:
            raise ValueError(f"Invalid hostname for Message-ID: {exc}") from exc
        return cls(allowed, sender_address, host, now, trace)

    def header(self, data: bytes, start: int, block: HeaderBlock) -> bytes:
        """The new header block, blank line included, for the header ``block`` of
        ``data`` that starts at ``start`` (past an mbox line, which is dropped).

        ``data`` has CRLF line ends; it need only reach ``block.end``.
        """
        if block.truncated:
            raise SubmissionError(
                f"The message header is larger than {MAX_HEADER_OCTETS // 1024} KiB."
            )
        if _HEADER_CONTROL.search(data[start : block.end].replace(_CRLF, b"")):
            raise SubmissionError(
                "The message header contains NUL or another control character."
            )
        has_from = _check_authors(block.fields, self.allowed)
        keys = {field.key for field in block.fields}

        added: list[bytes] = [self.trace]
        if not has_from:
            added.append(b"From: " + str(self.sender).encode("ascii") + _CRLF)
        if "date" not in keys:
            when = self.now if self.now is not None else datetime.now(UTC)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            added.append(b"Date: " + format_datetime(when).encode("ascii") + _CRLF)
        if "message-id" not in keys:
            token = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
            added.append(f"Message-ID: <{token}@{self.host}>".encode("ascii") + _CRLF)

        kept = [
            data[field.start : field.end]
            for field in block.fields
            if field.key not in _DROPPED_FIELDS
        ]
        return b"".join(added) + b"".join(kept) + _CRLF


def prepare_submission(
    raw: bytes,
    *,
    identities: Sequence[str],
    sender: str,
    hostname: str,
    now: datetime | None = None,
    trace: bytes = b"",
) -> bytes:
    """Check and complete a message submitted by a local user; return the bytes to store.

    - Line ends become CRLF (bare CR and LF included) and the message ends in CRLF.
    - A leading mbox "From " line is dropped, as every reader of the message
      skips it (:func:`smdp.mail.mime.mbox_line_end`): left in, it would end
      the header before its first field and make the whole header body text.
    - The header is read with the scanner of :mod:`smdp.mail.mime.headers`. Where it
      stops without a blank line (a line that is not a header field, or no
      header at all) a blank line is inserted there, so the rest is body for
      every reader.
    - From, Sender, Resent-From and Resent-Sender may name only ``identities``
      (case-insensitively), in their addresses and in their display names
      (assumption 3); otherwise :class:`SubmissionError`.
    - ``trace`` (trace fields, each ending in CRLF: the origin's Received) goes
      first. With no From, ``From: <sender>`` is written at the top (Table 5
      ``mail``); a missing Date or Message-ID is added too. Bcc and
      Return-Path fields are removed.
    - NUL or other control characters in the header are refused.

    ``sender`` must be one of ``identities``; ``now`` defaults to the current
    time (a naive value is taken as UTC); ``hostname`` is the right-hand side
    of generated Message-IDs.
    """
    submitter = _Submitter.check(identities, sender, hostname, now, trace)
    data = _normalize_line_ends(raw)
    start = mbox_line_end(data)
    block = scan_header(data, start, limit=MAX_HEADER_OCTETS)
    return submitter.header(data, start, block) + data[block.body_start :]


# ---------------------------------------------------------------------------
# Bodies: the same, a chunk at a time

# Normalised octets read before the header is first scanned; the buffer at
# least doubles before each new scan, so scanning costs O(header) overall.
_FIRST_SCAN = 64 * 1024
assert _FIRST_SCAN >= MBOX_DECIDED  # the mbox line is decided on the first scan
# Octets past MAX_HEADER_OCTETS that the header buffer may hold. Past them, a
# line that may still be a field is followed to the octet that decides without
# being held, and a header line still going on makes the header too large.
_HEADER_SLACK = 64 * 1024
# A line that may still become a header field: field-name octets, then blanks.
_MAY_BE_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]++[ \t]*+\Z")
_NOT_NAME = re.compile(rb"[^\x21-\x39\x3b-\x7e]")
_NOT_BLANK = re.compile(rb"[^ \t]")


def _header_decided(data: bytes, block: HeaderBlock) -> bool:
    """Whether ``scan_header(data)`` gives ``block`` whatever follows ``data``.

    ``data`` is normalised (CRLF line ends, never a lone CR at its end).
    """
    if block.truncated or block.separator:
        return True
    if block.end == len(data):
        return False  # every line so far is header: the next one decides
    # The header stopped at the line at block.end, which is not a field. That
    # holds once the line is complete, or when no more octets can make it one.
    return data.find(_CRLF, block.end) >= 0 or _MAY_BE_FIELD.match(data, block.end) is None


def _becomes_field(line_start: bytes, rest: Iterator[bytes]) -> bool:
    """Whether the line that starts with ``line_start`` (field-name octets, maybe
    blanks, as _MAY_BE_FIELD) and goes on in the raw chunks ``rest`` is a field."""
    blanks = line_start[-1:] in (b" ", b"\t")
    for chunk in rest:
        pos = 0
        if not blanks:
            match = _NOT_NAME.search(chunk)
            if match is None:
                continue
            octet = chunk[match.start()]
            if octet == 0x3A:  # ":"
                return True
            if octet not in (0x20, 0x09):
                return False
            blanks, pos = True, match.start()
        match = _NOT_BLANK.search(chunk, pos)
        if match is not None:
            return chunk[match.start()] == 0x3A
    return False  # the message ends on that line: a line end, no colon


def prepare_submission_body(
    raw: Body,
    *,
    identities: Sequence[str],
    sender: str,
    hostname: str,
    now: datetime | None = None,
    spool_dir: str | None = None,
    trace: bytes = b"",
) -> Body:
    """:func:`prepare_submission` for a :class:`~smdp.mail.body.Body`, never read whole.

    The same checks, errors and resulting octets. The header is read from the
    start of ``raw`` (normalised chunk by chunk, at most about
    MAX_HEADER_OCTETS of it held), then the rest is normalised a chunk at a
    time into a new Body (a BodyWriter in ``spool_dir``: small ones stay in
    memory). One difference: a message that is all header, whose last line
    crosses MAX_HEADER_OCTETS and runs on more than 64 KiB past it, is taken
    whole by prepare_submission (nothing follows that line, so its header scan
    does not give up) but refused here as larger than MAX_HEADER_OCTETS, like
    every header that crosses the limit with anything after it.
    """
    submitter = _Submitter.check(identities, sender, hostname, now, trace)
    lines = _LineEnds(no_bare_lf=raw.no_bare_lf)
    chunks = raw.chunks()
    pieces: list[bytes] = []
    held = consumed = 0
    ended = False
    want = _FIRST_SCAN
    body_from = -1  # >= 0: the body is raw from this octet on, not held in data
    while True:
        while held < want and not ended:
            chunk = next(chunks, None)
            if chunk is None:
                ended = True
                piece = lines.end()
            else:
                consumed += len(chunk)
                piece = lines.feed(chunk)
            if piece:
                pieces.append(piece)
                held += len(piece)
        data = b"".join(pieces)
        pieces = [data]
        # _FIRST_SCAN is far more than MBOX_DECIDED: decided on the first scan.
        start = mbox_line_end(data)
        block = scan_header(data, start, limit=MAX_HEADER_OCTETS)
        if ended or _header_decided(data, block):
            break
        # The limit is the header's: a leading mbox line is not part of it.
        if held - start > MAX_HEADER_OCTETS + _HEADER_SLACK:
            if block.end == held:
                # A header line crossing the limit: a larger header, unless
                # the message ended right after it (see above).
                raise SubmissionError(
                    f"The message header is larger than {MAX_HEADER_OCTETS // 1024} KiB."
                )
            # A very long line that may yet be a field: follow it to its
            # first octet that decides, without holding it.
            if _becomes_field(data[block.end :], chunks):
                raise SubmissionError(
                    f"The message header is larger than {MAX_HEADER_OCTETS // 1024} KiB."
                )
            # Not a field: the header ends before it, and the body starts
            # there, in raw (the line has no line end, so it is raw as is).
            body_from = consumed - (held - block.end)
            break
        want = max(held + 1, min(2 * held, start + MAX_HEADER_OCTETS + _HEADER_SLACK + 1))

    head = submitter.header(data, start, block)
    writer = BodyWriter(directory=spool_dir)
    try:
        writer.write(head)
        if body_from >= 0:
            del data, pieces
            lines = _LineEnds()
            for chunk in raw.tail(body_from).chunks():
                writer.write(lines.feed(chunk))
        else:
            writer.write(data[block.body_start :])
            del data, pieces
            for chunk in chunks:
                writer.write(lines.feed(chunk))
            if ended:
                return writer.finish()
        writer.write(lines.end())
    except BaseException:
        writer.discard()
        raise
    return writer.finish()
