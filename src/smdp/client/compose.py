"""What ``smdp client send`` sends: a message it composes from a subject and a
text (the default), or a prepared RFC 5322 message passed on as is (``--raw``).

Composing is ``smdp.mail.compose`` (shared with the web app); this module
turns the command line's values into its arguments, and its refusals into
one-line CLI errors.
"""

from __future__ import annotations

from email.headerregistry import Address

from smdp.errors import CliError
from smdp.mail.compose import (
    ComposeError,
    RecipientError,
    compose_message,
    parse_recipients,
    transfer_encoding,
)

__all__ = ["compose", "recipients", "text_of", "transfer_encoding"]


def recipients(values: list[str]) -> list[Address]:
    """The ``--to`` values: ``bob@b.example`` or ``Bob Smith <bob@b.example>``,
    several in one value when separated by commas."""
    try:
        return parse_recipients(values)
    except RecipientError as exc:
        raise CliError(f"--to {exc.value!r} is not an address: nothing was sent; "
                       "correct it and run the command again") from None


def text_of(data: bytes, source: str) -> str:
    """The body text, which must be UTF-8 (anything else is a prepared message)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{source} is not UTF-8 text; to send a prepared message "
                       "as it is, use --raw") from None


def compose(*, to: list[Address], subject: str, text: str, domain: str,
            sender: str | None = None, name: str | None = None) -> bytes:
    """The message, CRLF line ends; its Message-ID in ``domain``. A From field
    only for a display ``name`` (with ``sender``, the identity it names):
    otherwise the server writes ``From: <identity>`` itself (Table 5), the
    address the message is sent as."""
    try:
        return compose_message(to=to, subject=subject, text=text, domain=domain,
                               sender=sender, name=name)
    except ComposeError as exc:
        raise CliError(str(exc)) from None
