"""Composing a message from its parts: what ``smdp client send`` and the web
app's compose page send (the user port and the web API then submit it like
any other message).

The standard library's ``email`` package with the SMTP policy, so whatever
needs encoding is encoded instead of refused: a non-ASCII subject or display
name becomes RFC 2047 encoded words, a body with a line over 998 octets
(RFC 5322 2.1.1) or a control character goes out quoted-printable, any other
non-ASCII body 8bit, and attachments base64 with their names in RFC 2231
form where they need it.
"""

from __future__ import annotations

import email.policy
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from email.errors import HeaderDefect
from email.headerregistry import Address
from email.message import EmailMessage

# RFC 5322 2.1.1: a line is at most 998 octets, without its CRLF.
MAX_LINE = 998

# Controls that may stand in an 8bit text body; any other goes quoted-printable.
_TEXT_CONTROLS = {"\t", "\n", "\r", "\f"}


class ComposeError(ValueError):
    """A part the message cannot be made of (a CR or LF in a header value,
    a content type that is not one)."""


class RecipientError(ValueError):
    """A recipient value that is not one or more addresses."""

    def __init__(self, value: str) -> None:
        super().__init__(f"{value!r} is not an address")
        self.value = value


def parse_recipients(values: Sequence[str]) -> list[Address]:
    """Each value ``bob@b.example`` or ``Bob Smith <bob@b.example>``, several
    in one value when separated by commas. RecipientError names the first
    value that is not."""
    found: list[Address] = []
    for value in values:
        for name, addr in email.utils.getaddresses([value]):
            # getaddresses glues stray words onto an address ("a@b.example x"
            # gives "a@b.examplex"): only an address written as such counts.
            if not addr or addr not in value:
                raise RecipientError(value)
            try:
                found.append(Address(display_name=name, addr_spec=addr))
            except (HeaderDefect, ValueError, IndexError):
                raise RecipientError(value) from None
        if not value.strip() or not found or not found[-1].addr_spec:
            raise RecipientError(value)
    return found


@dataclass(frozen=True, slots=True)
class AttachedFile:
    name: str
    content_type: str  # "type/subtype"; anything else is application/octet-stream
    data: bytes


def transfer_encoding(text: str) -> str:
    """7bit for plain short-lined ASCII, quoted-printable when a line is too
    long for SMTP or a control character could not travel as is, else 8bit."""
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > MAX_LINE for line in lines) or any(
            (ch < " " and ch not in _TEXT_CONTROLS) or ch == "\x7f" for ch in text):
        return "quoted-printable"
    return "7bit" if text.isascii() else "8bit"


def compose_message(*, to: Sequence[Address], subject: str, text: str, domain: str,
                    cc: Sequence[Address] = (), sender: str | None = None,
                    name: str | None = None,
                    attachments: Sequence[AttachedFile] = ()) -> bytes:
    """The message, CRLF line ends; its Message-ID in ``domain``. A From field
    only for a display ``name`` (with ``sender``, the identity it names):
    otherwise the server writes ``From: <identity>`` itself (Table 5), the
    address the message is sent as. Bcc recipients are never written: they
    are recipients of the submission only."""
    msg = EmailMessage(policy=email.policy.SMTP)
    try:
        if name is not None and sender is not None:
            msg["From"] = Address(display_name=name, addr_spec=sender)
        if to:
            msg["To"] = list(to)
        if cc:
            msg["Cc"] = list(cc)
        if subject:
            msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(localtime=True)
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    except (HeaderDefect, ValueError) as exc:
        # The email package refuses a CR or LF in a header value: no header
        # can be injected through a subject or a name.
        raise ComposeError(f"cannot compose the message: {exc}") from None
    msg.set_content(text, cte=transfer_encoding(text))
    for item in attachments:
        main, slash, sub = item.content_type.partition("/")
        if not slash or not main or not sub or any(c in item.content_type for c in " ;\r\n"):
            main, sub = "application", "octet-stream"
        try:
            msg.add_attachment(item.data, maintype=main, subtype=sub, filename=item.name)
        except (HeaderDefect, ValueError) as exc:
            raise ComposeError(f"cannot attach {item.name!r}: {exc}") from None
    return msg.as_bytes()
