"""The SMTP codec (RFC 5321 and its extensions): docs/smtp.md, "The SMTP codec".

The server side serves the submission port (issue 11) and the MX (issue 12);
the client side delivers outbound mail (issue 11). Laid out like the two SMDP
ports, in h11's shape, on the same machinery (``protocol/_connection.py``,
``_states.py``): :mod:`~smdp.protocol.smtp.events`,
:mod:`~smdp.protocol.smtp.states` (the one transition table),
:mod:`~smdp.protocol.smtp.grammar` (lines, paths, EHLO keywords),
:mod:`~smdp.protocol.smtp.data` (the message under SMTP's strict CRLF rule)
and :mod:`~smdp.protocol.smtp.connection`. No sockets, no asyncio.

Why our own and not aiosmtpd / aiosmtplib: docs/architecture.md.
"""

from smdp.protocol.framing import CLOSED, NEED_DATA, ProtocolUsageError, RemoteProtocolError
from smdp.protocol.smtp.connection import (
    AUTH_LINE,
    COMMAND_LINE,
    MAIL_EXTENSION_ROOM,
    MAX_RECIPIENTS,
    SmtpClientConnection,
    SmtpServerConnection,
)
from smdp.protocol.smtp.data import (
    SmtpDataReader,
    SmtpDotStuffer,
    smtp_dot_stuff,
    smtp_normalize,
)
from smdp.protocol.smtp.events import (
    BARE_LINE_END_REASON,
    LINE_TOO_LONG_REASON,
    TOO_BIG_REASON,
    Auth,
    AuthCancel,
    AuthResponse,
    BlockChunk,
    Capabilities,
    Data,
    DataComplete,
    DataEnd,
    DataFailed,
    DataPart,
    DataStart,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    SmtpCommand,
    SmtpEvent,
    StartTls,
    Vrfy,
)
from smdp.protocol.smtp.grammar import Mailbox, split_mailbox
from smdp.protocol.smtp.states import END_OF_BLOCK, TRANSITIONS, VERBS, SmtpState

__all__ = [
    "AUTH_LINE",
    "BARE_LINE_END_REASON",
    "CLOSED",
    "COMMAND_LINE",
    "END_OF_BLOCK",
    "LINE_TOO_LONG_REASON",
    "MAIL_EXTENSION_ROOM",
    "MAX_RECIPIENTS",
    "NEED_DATA",
    "TOO_BIG_REASON",
    "TRANSITIONS",
    "VERBS",
    "Auth",
    "AuthCancel",
    "AuthResponse",
    "BlockChunk",
    "Capabilities",
    "Data",
    "DataComplete",
    "DataEnd",
    "DataFailed",
    "DataPart",
    "DataStart",
    "Helo",
    "Help",
    "Mail",
    "Mailbox",
    "Noop",
    "ProtocolUsageError",
    "Quit",
    "Rcpt",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "SmtpClientConnection",
    "SmtpCommand",
    "SmtpDataReader",
    "SmtpDotStuffer",
    "SmtpEvent",
    "SmtpServerConnection",
    "SmtpState",
    "StartTls",
    "Vrfy",
    "smtp_dot_stuff",
    "smtp_normalize",
    "split_mailbox",
]
