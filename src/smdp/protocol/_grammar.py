"""What the grammars of both ports share (``peer/grammar.py``, ``user/grammar.py``).

A reader that cannot make an event of a command line raises :class:`Refusal`
with what the port's error reply says; a writer checks what the application
asks it to send and raises :class:`ProtocolUsageError` instead. Addresses and
host names follow one grammar on both ports, :mod:`smdp.mail.addresses`.
"""

from __future__ import annotations

from smdp.mail.addresses import parse_hostname, parse_mailbox
from smdp.protocol.framing import ProtocolUsageError

__all__ = ["Refusal", "checked_hostname", "checked_mailbox", "read_mailbox"]


class Refusal(Exception):
    """A command the server connection answers by itself, with an error.

    ``text`` is what the port's error reply says: on the peer port the whole
    reply line, code included; on the user port the text after ``-ERR``.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def read_mailbox(text: str, refusal: str) -> str:
    """The mailbox ``text`` as the wire reads it, or :class:`Refusal` saying ``refusal``."""
    address = parse_mailbox(text)
    if address is None:
        raise Refusal(refusal)
    return address


def checked_mailbox(address: str) -> str:
    """``address`` unchanged if the wire may carry it, else a usage error."""
    if parse_mailbox(address) is None:
        raise ProtocolUsageError(f"bad address {address!r}")
    return address


def checked_hostname(hostname: str, what: str) -> str:
    """``hostname`` unchanged if the wire may carry it, else a usage error."""
    if parse_hostname(hostname) is None:
        raise ProtocolUsageError(f"bad {what} {hostname!r}")
    return hostname
