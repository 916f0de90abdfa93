"""What ``smdp client send`` sends: a message it composes from a subject and a
text (the default), or a prepared RFC 5322 message passed on as is (``--raw``).

Composing goes through the standard library's ``email`` package with the SMTP
policy, so whatever needs encoding is encoded instead of refused: a non-ASCII
subject or display name becomes RFC 2047 encoded words, a body with a line
over 998 octets (RFC 5322 2.1.1) or a control character goes out
quoted-printable, and any other non-ASCII body 8bit.
"""

from __future__ import annotations

import email.policy
import email.utils
from email.errors import HeaderDefect
from email.headerregistry import Address
from email.message import EmailMessage

from smdp.errors import CliError

# RFC 5322 2.1.1: a line is at most 998 octets, without its CRLF.
MAX_LINE = 998

# Controls that may stand in an 8bit text body; any other goes quoted-printable.
_TEXT_CONTROLS = {"\t", "\n", "\r", "\f"}


def recipients(values: list[str]) -> list[Address]:
    """The ``--to`` values: ``bob@b.example`` or ``Bob Smith <bob@b.example>``,
    several in one value when separated by commas."""
    found: list[Address] = []

    def refused(value: str) -> CliError:
        return CliError(f"--to {value!r} is not an address: nothing was sent; "
                        "correct it and run the command again")

    for value in values:
        for name, addr in email.utils.getaddresses([value]):
            # getaddresses glues stray words onto an address ("a@b.example x"
            # gives "a@b.examplex"): only an address written as such counts.
            if not addr or addr not in value:
                raise refused(value)
            try:
                found.append(Address(display_name=name, addr_spec=addr))
            except (HeaderDefect, ValueError, IndexError):
                raise refused(value) from None
        if not value.strip() or not found or not found[-1].addr_spec:
            raise refused(value)
    return found


def text_of(data: bytes, source: str) -> str:
    """The body text, which must be UTF-8 (anything else is a prepared message)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{source} is not UTF-8 text; to send a prepared message "
                       "as it is, use --raw") from None


def transfer_encoding(text: str) -> str:
    """7bit for plain short-lined ASCII, quoted-printable when a line is too
    long for SMTP or a control character could not travel as is, else 8bit."""
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > MAX_LINE for line in lines) or any(
            (ch < " " and ch not in _TEXT_CONTROLS) or ch == "\x7f" for ch in text):
        return "quoted-printable"
    return "7bit" if text.isascii() else "8bit"


def compose(*, to: list[Address], subject: str, text: str, domain: str,
            sender: str | None = None, name: str | None = None) -> bytes:
    """The message, CRLF line ends; its Message-ID in ``domain``. A From field
    only for a display ``name`` (with ``sender``, the identity it names):
    otherwise the server writes ``From: <identity>`` itself (Table 5), the
    address the message is sent as."""
    msg = EmailMessage(policy=email.policy.SMTP)
    try:
        if name is not None and sender is not None:
            msg["From"] = Address(display_name=name, addr_spec=sender)
        msg["To"] = to
        if subject:
            msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(localtime=True)
        msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    except (HeaderDefect, ValueError) as exc:
        # The email package refuses a CR or LF in a header value: no header
        # can be injected through --subject or --name.
        raise CliError(f"cannot compose the message: {exc}") from None
    msg.set_content(text, cte=transfer_encoding(text))
    return msg.as_bytes()
