"""Leaving a mailing list for the user (issue 16 item 3; protocol.md 12.5,
UNSUB): which of the ways a list offers (RFC 2369 List-Unsubscribe, RFC 8058
one-click) the server may take on the user's behalf, and the mail it writes
for a ``mailto:`` one.

The rules are pure; the POST itself, with its guard against sender-chosen
addresses, is ``smdp.server.unsubscribe``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import parse_qs, unquote, urlsplit

from smdp.core.envelope import decode_envelope_block
from smdp.core.jobs import queue_unsubscribe
from smdp.core.origin import Origin
from smdp.core.sender_auth import SIGNATURE_PREFIX, dkim_signature_tags, passing_dkim
from smdp.core.submission import SubmissionError
from smdp.mail.addresses import AddressError, parse_address
from smdp.mail.dkim import parse_header_block
from smdp.store import Store
from smdp.store.records import Unsubscribe, User

ONE_CLICK = "one-click"
MAILTO = "mailto"

PENDING = "pending"
DONE = "done"
FAILED = "failed"

MAX_URL_CHARS = 500  # the envelope's cap on the whole List-Unsubscribe value
_URIS = re.compile(r"<([^<>\s]*)>")
_SUBJECT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Plan:
    """How the server will unsubscribe: ``method`` ONE_CLICK (``target`` an
    https: URL) or MAILTO (``target`` an address, with the subject and body
    the list asked for)."""

    method: str
    target: str
    subject: str = ""
    body: str = ""


class NoWay(ValueError):
    """The list offers no way the server may take; the text says why."""


def uris(value: str) -> list[str]:
    """The URIs of a List-Unsubscribe value, in the list's order of
    preference (RFC 2369 3.1: angle-bracketed, comma-separated)."""
    return [u for u in _URIS.findall(value) if u]


def _mailto(uri: str) -> Plan | None:
    """RFC 6068: ``mailto:addr?subject=...&body=...``; None when the
    address is not one mail can be sent to (or names several)."""
    parts = urlsplit(uri)
    address = unquote(parts.path)
    if "," in address:
        return None
    try:
        parsed = parse_address(address)
    except AddressError:
        return None
    query = parse_qs(parts.query, keep_blank_values=True)
    subject = " ".join((query.get("subject") or ["unsubscribe"])[0].split())
    body = (query.get("body") or [""])[0]
    return Plan(MAILTO, str(parsed).lower(), subject[:_SUBJECT_CHARS] or "unsubscribe",
                body[:2000])


def plan(list_unsubscribe: str, *, one_click: bool) -> Plan:
    """The way to take: RFC 8058's POST when the message made the one-click
    promise (``one_click``, and only then: without it an https: URI is a
    page for a person, where a POST may do anything or nothing) and names
    an https: URI; else the first usable mailto: URI; else NoWay."""
    found = uris(list_unsubscribe)
    if not found:
        raise NoWay("the message offers no way to unsubscribe (no List-Unsubscribe)")
    if one_click:
        for uri in found:
            if uri.lower().startswith("https://") and len(uri) <= MAX_URL_CHARS:
                return Plan(ONE_CLICK, uri)
    for uri in found:
        if uri.lower().startswith("mailto:"):
            mail = _mailto(uri[len("mailto:"):])
            if mail is not None:
                return mail
    if any(u.lower().startswith(("https://", "http://")) for u in found):
        raise NoWay("the list offers only a web page to unsubscribe (no one-click promise, "
                    f"RFC 8058): {found[0]}")
    raise NoWay(f"the list offers no way this server can take: {', '.join(found)}")


def dkim_covers_unsubscribe(header: bytes, domain: str,
                            verified: Collection[tuple[str, str]]) -> bool:
    """Whether a DKIM-Signature of ``domain`` (the domain sender
    authentication verified) or of a domain it belongs to, one that verified
    at arrival (``verified``: ``sender_auth.passing_dkim``), signs both
    List-Unsubscribe and List-Unsubscribe-Post (RFC 8058 4: a one-click POST
    only on a valid signature that covers both). A field added on the way
    with the same d= and the first characters of a verified b= cannot be
    told from the one that verified: then neither counts."""
    domain = domain.lower().rstrip(".")
    covered = False
    for name, value in parse_header_block(header):
        if name.lower() != b"dkim-signature":
            continue
        tags = dkim_signature_tags(value.decode("ascii", "replace"))
        signer = tags.get("d", "").lower().rstrip(".")
        if not signer or not (domain == signer or domain.endswith("." + signer)):
            continue
        if (signer, tags.get("b", "")[:SIGNATURE_PREFIX]) not in verified:
            continue
        if not {"list-unsubscribe", "list-unsubscribe-post"} <= set(
                tags.get("h", "").lower().split(":")):
            return False
        covered = True
    return covered


def request_mail(*, sender: str, mail: Plan, hostname: str, now: datetime | None = None
                 ) -> bytes:
    """The message a MAILTO plan sends from the user to the list (RFC 2369:
    the subject and body the URI asked for). Auto-Submitted, since no person
    wrote it (RFC 3834), so that no automatic answer comes back."""
    when = format_datetime(now or datetime.now(UTC))
    lines = [f"From: <{sender}>", f"To: <{mail.target}>", f"Subject: {mail.subject}",
             f"Date: {when}", "Auto-Submitted: auto-generated", "MIME-Version: 1.0",
             "Content-Type: text/plain; charset=utf-8", "",
             mail.body or f"Please unsubscribe <{sender}>. (Sent by {hostname} for its user.)"]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


@dataclass(frozen=True, slots=True)
class Requested:
    """What UNSUB came to: ``ok`` and the answer's text (protocol.md 12.5)."""

    ok: bool
    text: str


def shown(request: Unsubscribe) -> str:
    """A request as UNSUB answers it and ENV shows it."""
    how = "one-click POST" if request.method == ONE_CLICK else "mail"
    line = f"{request.state} by {how} to {request.target}"
    return f"{line}: {request.detail}" if request.detail else line


def request(store: Store, origin: Origin, user: User, entry_id: int) -> Requested:
    """UNSUB ``entry_id`` for ``user``: choose the way (``plan``) and set it
    going, in one transaction. A one-click POST becomes a durable job (the
    delivery worker retries it); a mailto: becomes a message from the user
    to the list, submitted as any other (its delivery shows in SENT)."""
    entry = store.mailbox_entry(entry_id)
    if entry is None or entry.user_id != user.id:
        return Requested(False, f"no envelope {entry_id} in your mailbox")
    existing = store.unsubscribe_of_entry(entry_id)
    if existing is not None:
        return Requested(True, f"envelope {entry_id} unsubscribe {shown(existing)} "
                               "(already requested)")
    env = store.in_envelope(entry.envelope_id)
    assert env is not None  # mailbox rows cascade with their envelope
    summary = decode_envelope_block(env.block.encode("utf-8")).summary
    one_click = summary.one_click_unsubscribe
    if one_click and env.via_smtp:
        # An SMDP origin proved it speaks for the sender's domain (its
        # certificate); SMTP mail proves it only by DKIM, so RFC 8058's
        # promise counts only under a verified signature that covers it.
        start = store.in_body_chunk(env.id, 0)
        header = start.split(b"\r\n\r\n", 1)[0] if start else b""
        one_click = bool(env.verified_domain) and dkim_covers_unsubscribe(
            header, env.verified_domain or "", passing_dkim(env.smtp_auth or ""))
    try:
        way = plan(summary.list_unsubscribe, one_click=one_click)
    except NoWay as exc:
        return Requested(False, f"envelope {entry_id}: {exc}")
    with store.transaction():
        if way.method == ONE_CLICK:
            made = store.insert_unsubscribe(entry_id, user.id, ONE_CLICK, way.target, PENDING)
            queue_unsubscribe(store, made.id)
        else:
            identities = store.identities(user.id)
            sender = entry.recipient if entry.recipient in identities else identities[0]
            raw = request_mail(sender=sender, mail=way, hostname=origin.hostname)
            try:
                sent = origin.submit(user, sender, [way.target], raw)
            except SubmissionError as exc:
                return Requested(False, f"envelope {entry_id}: the request cannot be "
                                        f"mailed: {exc}")
            made = store.insert_unsubscribe(
                entry_id, user.id, MAILTO, way.target, DONE,
                f"sent as message {sent.msgid} (SENT {sent.msgid} shows its delivery)")
    return Requested(True, f"envelope {entry_id} unsubscribe {shown(made)}")
