"""Mail the server writes to its own users (docs/protocol.md, "Notices"):

- a delivery status notification (RFC 3464, ``multipart/report;
  report-type=delivery-status``) to a sender when recipients of their message
  fail for good: unknown user, no such domain, expiry, refusal at the source;
- a notice to a recipient that envelopes wait for their decision, for users
  who read by POP3 and never list their envelopes.

Only the messages are built here, with the standard library's ``email``
package, as bytes ready to store; which failures and which envelopes call for
one is decided by ``origin.py`` and ``pending_notices`` below, and the server
stores them in the user's own mailbox (never over the peer port). Every notice
has the null sender and ``Auto-Submitted`` (RFC 3834), so none is ever the
subject of another.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid

from smdp.terms import RecipientState

# The From of every notice; its envelope sender is the null sender.
DAEMON_NAME = "Mail Delivery System"
DAEMON_LOCAL = "MAILER-DAEMON"

# RFC 3463 codes the origin reports when no reply of the destination says better.
STATUS_UNKNOWN_USER = "5.1.1"
STATUS_NO_DOMAIN = "5.1.2"  # no SMDP server for the domain (discovery said so)
STATUS_EXPIRED = "5.4.7"  # RFC 3463 4.4.7 "delivery time expired", made final
STATUS_REFUSED = "5.7.1"  # refused at the source: the sender's outbound black list
STATUS_OTHER = "5.0.0"

# An SMTP-style reply with an enhanced status code (RFC 3463), anywhere in a
# failure's detail: "550 5.1.1 <bob@b.example>: no such user here".
_REPLY = re.compile(r"\b([245]\d\d)[ -]([245])\.(\d{1,3})\.(\d{1,3})\b")
_BARE_REPLY = re.compile(r"\b([45]\d\d) ")

# The original header shown in a DSN: at most this much of it.
MAX_HEADER_OCTETS = 32 * 1024


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient as a DSN reports it (RFC 3464 2.3)."""

    address: str
    status: str  # RFC 3463, always 5.x.y: the failure is final
    reason: str  # for people: the recipient state's detail
    diagnostic: str = ""  # the destination's reply, when one said why


def failure_of(address: str, state: RecipientState, detail: str,
               status_hint: str = "") -> FailedRecipient:
    """How a recipient that ended ``state`` with ``detail`` is reported.

    A reply of the destination in ``detail`` says most (its enhanced code,
    made permanent: a 4xx retried until the origin gave up is final now);
    else ``status_hint``, what the origin knows of the failure (no SMDP
    server for the domain: 5.1.2; retries exhausted: 5.4.7); else 5.0.0."""
    if state is RecipientState.EXPIRED:
        return FailedRecipient(address, STATUS_EXPIRED, detail)
    if state is RecipientState.REFUSED:
        return FailedRecipient(address, STATUS_REFUSED, detail)
    found = _REPLY.search(detail)
    if found:
        _code, _klass, subject, detail_code = found.groups()
        return FailedRecipient(address, f"5.{subject}.{detail_code}", detail,
                               detail[found.start():])
    bare = _BARE_REPLY.search(detail)
    diagnostic = detail[bare.start():] if bare else ""
    return FailedRecipient(address, status_hint or STATUS_OTHER, detail, diagnostic)


def header_of(start: bytes) -> str:
    """The header of a message from its first octets: up to the blank line,
    at most ``MAX_HEADER_OCTETS`` (cut at a line end), as text."""
    end = len(start)
    for sep in (b"\r\n\r\n", b"\n\n"):
        at = start.find(sep)
        if at >= 0:
            end = min(end, at + len(sep) // 2)
    head = start[:min(end, MAX_HEADER_OCTETS)]
    if end > MAX_HEADER_OCTETS:
        head = head[:head.rfind(b"\n") + 1]
    text = head.decode("utf-8", errors="replace").replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def _wrap(lines: list[str]) -> str:
    """The text of a notice: long sentences wrapped at 72 columns so the part
    goes as plain 7bit text, readable as it is stored."""
    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(line, 72, subsequent_indent=" " * (len(line) - len(line.lstrip())),
                             break_long_words=False, break_on_hyphens=False) or [""]
    return "\n".join(out) + "\n"


def _date(when: float) -> str:
    return format_datetime(datetime.fromtimestamp(when, UTC))


def _headers(msg: Message, *, hostname: str, to: str, subject: str, now: float,
             auto: str) -> None:
    msg["From"] = formataddr((DAEMON_NAME, f"{DAEMON_LOCAL}@{hostname}"))
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = _date(now)
    msg["Message-ID"] = make_msgid(domain=hostname)
    # RFC 3834: never answer this automatically (no notice about a notice).
    msg["Auto-Submitted"] = auto


def _fields(pairs: Sequence[tuple[str, str]]) -> Message:
    """One block of a message/delivery-status part (RFC 3464 2.1)."""
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def build_dsn(*, hostname: str, to: str, subject: str, arrival: float,
              header: str, failed: Sequence[FailedRecipient],
              now: float | None = None) -> bytes:
    """RFC 3464: ``multipart/report; report-type=delivery-status`` telling
    ``to`` (the original sender) that ``failed`` will never get the message
    whose ``header`` (text) arrived at ``arrival`` (Unix time)."""
    now = time.time() if now is None else now
    report = EmailMessage(policy=SMTP)
    _headers(report, hostname=hostname, to=to, now=now, auto="auto-replied",
             subject=f"Undelivered mail: {subject}" if subject else "Undelivered mail")

    lines = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to the following "
        + ("recipient" if len(failed) == 1 else f"{len(failed)} recipients")
        + ". This is final: the message will not be tried again for "
        + ("it." if len(failed) == 1 else "them."),
        "",
    ]
    for rcpt in failed:
        lines += [f"<{rcpt.address}>: {rcpt.reason}", ""]
    lines += [
        f"Subject: {subject}" if subject else "(no subject)",
        f"Submitted: {_date(arrival)}",
        "",
        "Its header follows at the end of this report.",
    ]
    report.set_content(_wrap(lines))
    # multipart/report (RFC 6522): the text for people first, then the report.
    report.make_mixed()
    report.set_type("multipart/report")
    report.set_param("report-type", "delivery-status")

    status = _delivery_status_part([
        _fields([("Reporting-MTA", f"dns; {hostname}"), ("Arrival-Date", _date(arrival))]),
        *(_fields([
            ("Final-Recipient", f"rfc822; {rcpt.address}"),
            ("Action", "failed"),
            ("Status", rcpt.status),
            *([("Diagnostic-Code", f"smtp; {rcpt.diagnostic}")] if rcpt.diagnostic else []),
            ("Last-Attempt-Date", _date(now)),
        ]) for rcpt in failed),
    ])
    report.attach(status)
    original = EmailMessage(policy=SMTP)
    original.set_content(header, subtype="rfc822-headers")
    del original["MIME-Version"]
    report.attach(original)
    return report.as_bytes()


def _delivery_status_part(blocks: list[Message]) -> EmailMessage:
    """A ``message/delivery-status`` part: its payload is the field blocks,
    which the generator writes one after another, a blank line apart."""
    part = EmailMessage(policy=SMTP)
    part["Content-Type"] = "message/delivery-status"
    payload: list[Message | str] = list(blocks)
    part.set_payload(payload)
    return part


@dataclass(frozen=True, slots=True)
class PendingItem:
    """One envelope waiting for the user's decision, as the notice lists it."""

    entry_id: int  # the id `smdp client` commands take
    sender: str
    subject: str
    headlines: tuple[str, ...]
    new: bool  # arrived since the previous notice


def build_pending_notice(*, hostname: str, to: str, pending: Sequence[PendingItem],
                         now: float | None = None) -> bytes:
    """A plain-text notice to ``to``: these envelopes wait for a decision,
    and the commands that decide them."""
    now = time.time() if now is None else now
    count = len(pending)
    new = sum(1 for p in pending if p.new)
    msg = EmailMessage(policy=SMTP)
    _headers(msg, hostname=hostname, to=to, now=now, auto="auto-generated",
             subject=(f"{count} envelope waits for your decision" if count == 1
                      else f"{count} envelopes wait for your decision"))
    lines = [
        f"This is the mail system at {hostname}.",
        "",
        (f"{count} message waits" if count == 1 else f"{count} messages wait")
        + " for your decision"
        + (f" ({new} new since the last notice)" if new != count else "")
        + (". Only its envelope is here: the message stays with its sender's "
           "server until you accept it, and is never delivered if you do not."
           if count == 1 else
           ". Only their envelopes are here: each message stays with its "
           "sender's server until you accept it, and is never delivered if you "
           "do not."),
        "",
    ]
    for item in pending:
        lines.append(f"  Envelope {item.entry_id}{'  (new)' if item.new else ''}")
        lines.append(f"    From:    {item.sender}")
        lines.append(f"    Subject: {item.subject or '(no subject)'}")
        lines += [f"    | {line}" for line in item.headlines]
        lines.append("")
    first = pending[0].entry_id if pending else 1
    lines += [
        "Decide on each with the smdp client, by the envelope's number (ID):",
        "",
        f"  smdp client --user {to} COMMAND ID",
        "",
        "  show ID            the envelope in full",
        "  accept ID          fetch the message",
        "  accept-auth ID     fetch it, and accept this sender from now on",
        "  reject ID          refuse it",
        "  reject-spam ID     refuse it and report it as spam",
        "  reject-spammer ID  the same, and refuse this sender from now on",
        "",
        f"For example: smdp client --user {to} accept {first}",
        "An accepted message then arrives in this mailbox like any other,",
        "and keeps its ID: read ID prints it.",
    ]
    msg.set_content(_wrap(lines))
    return msg.as_bytes()
