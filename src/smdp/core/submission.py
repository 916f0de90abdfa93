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
from collections.abc import Sequence
from datetime import UTC, datetime
from email.headerregistry import HeaderRegistry
from email.utils import format_datetime, getaddresses

from smdp.core.addresses import AddressError, normalize, parse_address
from smdp.core.envelope import MAX_HEADER_OCTETS, HeaderField, decode_header_text, scan_header

__all__ = ["SubmissionError", "prepare_submission"]

_CRLF = b"\r\n"
# Fields that name an author of the message (RFC 5322 3.6.2 and 3.6.6): each
# is a claim about who wrote or sent it, so each must be one of the user's
# identities.
_AUTHOR_FIELDS = ("from", "sender", "resent-from", "resent-sender")
# Bcc is dropped: the stored bytes go unchanged to every recipient, and a Bcc
# line would show each of them who else was blind-copied (RFC 5322 3.6.3
# allows removing it; the recipients travel in RCPT commands anyway).
_DROPPED_FIELDS = frozenset({"bcc"})
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
    """The message cannot be accepted; the text is shown to the user as is."""


def _normalize_line_ends(raw: bytes) -> bytes:
    # Bare CR becomes a line end too: the email package and many readers split
    # on it, so leaving it would let a line hide inside another one.
    data = raw.replace(_CRLF, b"\n").replace(b"\r", b"\n").replace(b"\n", _CRLF)
    if data and not data.endswith(_CRLF):
        data += _CRLF
    return data


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
                    _printable(f"{label} <{address}> is not one of your identities")
                )
    return has_from


def prepare_submission(
    raw: bytes,
    *,
    identities: Sequence[str],
    sender: str,
    hostname: str,
    now: datetime | None = None,
) -> bytes:
    """Check and complete a message submitted by a local user; return the bytes to store.

    - Line ends become CRLF (bare CR and LF included) and the message ends in CRLF.
    - The header is read with the scanner of :mod:`smdp.core.envelope`. Where it
      stops without a blank line (a line that is not a header field, or no
      header at all) a blank line is inserted there, so the rest is body for
      every reader.
    - From, Sender, Resent-From and Resent-Sender may name only ``identities``
      (case-insensitively), in their addresses and in their display names
      (assumption 3); otherwise :class:`SubmissionError`.
    - With no From, ``From: <sender>`` is written at the top (Table 5 ``mail``);
      a missing Date or Message-ID is added too. Bcc fields are removed.
    - NUL or other control characters in the header are refused.

    ``sender`` must be one of ``identities``; ``now`` defaults to the current
    time (a naive value is taken as UTC); ``hostname`` is the right-hand side
    of generated Message-IDs.
    """
    allowed = {_key(identity) for identity in identities}
    try:
        sender_address = parse_address(sender)
    except AddressError as exc:
        raise SubmissionError(f"The sender address is invalid: {exc}") from exc
    if normalize(sender) not in allowed:
        raise SubmissionError("The sender is not one of your identities.")
    try:
        host = parse_address("postmaster@" + hostname).domain
    except AddressError as exc:
        raise ValueError(f"Invalid hostname for Message-ID: {exc}") from exc

    data = _normalize_line_ends(raw)
    block = scan_header(data, limit=MAX_HEADER_OCTETS)
    if block.truncated:
        raise SubmissionError(
            f"The message header is larger than {MAX_HEADER_OCTETS // 1024} KiB."
        )
    if _HEADER_CONTROL.search(data[: block.end].replace(_CRLF, b"")):
        raise SubmissionError("The message header contains NUL or another control character.")
    has_from = _check_authors(block.fields, allowed)
    keys = {field.key for field in block.fields}

    added: list[bytes] = []
    if not has_from:
        added.append(b"From: " + str(sender_address).encode("ascii") + _CRLF)
    if "date" not in keys:
        when = now if now is not None else datetime.now(UTC)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        added.append(b"Date: " + format_datetime(when).encode("ascii") + _CRLF)
    if "message-id" not in keys:
        token = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
        added.append(f"Message-ID: <{token}@{host}>".encode("ascii") + _CRLF)

    kept = [
        data[field.start : field.end]
        for field in block.fields
        if field.key not in _DROPPED_FIELDS
    ]
    return b"".join(added) + b"".join(kept) + _CRLF + data[block.body_start :]
