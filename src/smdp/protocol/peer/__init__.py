"""The peer port (server to server), wire contract section 2, paper Table 4.

Laid out like h11: :mod:`~smdp.protocol.peer.events` (one small immutable
class per command and reply), :mod:`~smdp.protocol.peer.states` (every
transition of a session in one table), :mod:`~smdp.protocol.peer.grammar`
(reading and writing the lines) and :mod:`~smdp.protocol.peer.connection`
(the server and client connections). Every public name of those modules is
reachable from here: ``from smdp.protocol import peer as wire; wire.Helo(...)``.
"""

from smdp.protocol._connection import MIB
from smdp.protocol.framing import CLOSED, NEED_DATA, ProtocolUsageError, RemoteProtocolError
from smdp.protocol.peer.connection import PeerClientConnection, PeerServerConnection
from smdp.protocol.peer.events import (
    LINE_TOO_LONG_REASON,
    SIZE_MISMATCH_REASON,
    TOO_BIG_REASON,
    BlockChunk,
    Data,
    DataComplete,
    DataEnd,
    DataFailed,
    DataPart,
    DataStart,
    Decision,
    EnvelopeStart,
    Helo,
    MailStart,
    Noop,
    PeerCommand,
    PeerEvent,
    PulledBody,
    Quit,
    Rcpt,
    Received,
    Reply,
    Rset,
    SizeDecl,
    StartTls,
)
from smdp.protocol.peer.grammar import DECISION_VERBS, DECISIONS_BY_VERB
from smdp.protocol.peer.states import END_OF_BLOCK, TRANSITIONS, VERBS, PeerState

__all__ = [
    "CLOSED",
    "DECISIONS_BY_VERB",
    "DECISION_VERBS",
    "END_OF_BLOCK",
    "LINE_TOO_LONG_REASON",
    "MIB",
    "NEED_DATA",
    "SIZE_MISMATCH_REASON",
    "TOO_BIG_REASON",
    "TRANSITIONS",
    "VERBS",
    "BlockChunk",
    "Data",
    "DataComplete",
    "DataEnd",
    "DataFailed",
    "DataPart",
    "DataStart",
    "Decision",
    "EnvelopeStart",
    "Helo",
    "MailStart",
    "Noop",
    "PeerClientConnection",
    "PeerCommand",
    "PeerEvent",
    "PeerServerConnection",
    "PeerState",
    "ProtocolUsageError",
    "PulledBody",
    "Quit",
    "Rcpt",
    "Received",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "SizeDecl",
    "StartTls",
]
