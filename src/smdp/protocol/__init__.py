"""Sans-IO codecs and session state tables of both SMDP ports.

- :mod:`smdp.protocol.framing`: lines and dot-stuffed blocks (contract section 1).
- :mod:`smdp.protocol.peer`: the peer port, server to server (Table 4, Table 2).
- :mod:`smdp.protocol.user`: the user port, POP3 plus SMDP (Table 5, Table 1).
- :mod:`smdp.protocol.smtp`: SMTP, for submission, the MX and outbound
  delivery (docs/smtp.md, "The SMTP codec").

Each port is a package in h11's shape: ``events`` (immutable event classes),
``states`` (the one transition table), ``grammar`` (reading and writing
lines, the decisions' wire words among them) and ``connection`` (server and
client). What their connections share is written once, in ``_connection``
and ``_states``; addresses are read by :mod:`smdp.mail.addresses`.

The event classes of the two ports share some names (``Noop``, ``Rset``,
``Quit``), so they are reached through their package: ``peer.Noop``, ``user.Noop``.
"""

from smdp.protocol import peer, smtp, user
from smdp.protocol.framing import (
    CLOSED,
    LINE_TOO_LONG,
    NEED_DATA,
    BlockChunk,
    DataBlockReader,
    DotStuffer,
    LineBuffer,
    ProtocolUsageError,
    RemoteProtocolError,
    Sentinel,
    dot_stuff,
    dot_unstuff,
    normalize_line_ends,
)
from smdp.protocol.peer import (
    PeerClientConnection,
    PeerServerConnection,
    PeerState,
    PulledBody,
    Reply,
)
from smdp.protocol.user import (
    UserClientConnection,
    UserReply,
    UserServerConnection,
    UserState,
)

__all__ = [
    "CLOSED",
    "LINE_TOO_LONG",
    "NEED_DATA",
    "BlockChunk",
    "DataBlockReader",
    "DotStuffer",
    "LineBuffer",
    "PeerClientConnection",
    "PeerServerConnection",
    "PeerState",
    "ProtocolUsageError",
    "PulledBody",
    "RemoteProtocolError",
    "Reply",
    "Sentinel",
    "UserClientConnection",
    "UserReply",
    "UserServerConnection",
    "UserState",
    "dot_stuff",
    "dot_unstuff",
    "normalize_line_ends",
    "peer",
    "smtp",
    "user",
]
