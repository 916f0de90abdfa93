"""IMAP for ordinary mail clients (RFC 9051, RFC 3501; docs/imap.md).

Sans-IO in the shape of the other ports: ``events`` (one class per command),
``states`` (the one transition table), ``grammar`` (reading commands, writing
responses) and ``connection`` (the server side; the tests' client is the
standard library's ``imaplib``).
"""

from smdp.protocol.imap import events
from smdp.protocol.imap.connection import ImapServerConnection
from smdp.protocol.imap.events import *  # noqa: F403
from smdp.protocol.imap.grammar import Atom, ImapSyntaxError, read_sequence_set, write_value
from smdp.protocol.imap.states import TABLE, ImapState

__all__ = [
    "TABLE",
    "Atom",
    "ImapState",
    "ImapServerConnection",
    "ImapSyntaxError",
    "events",
    "read_sequence_set",
    "write_value",
    *events.__all__,
]
