"""The peer port's session states and THE transition table (protocol.md 6.5).

Every transition of a peer session is in :data:`TRANSITIONS` and nowhere else;
:class:`smdp.protocol._states.StateTable` is the only code that reads it.
"""

from __future__ import annotations

import enum
from typing import Final

from smdp.protocol._states import END_OF_BLOCK, StateTable

__all__ = ["END_OF_BLOCK", "TABLE", "TRANSITIONS", "VERBS", "PeerState"]


class PeerState(enum.Enum):
    GREETED = "GREETED"
    READY = "READY"
    TXN_STARTED = "TXN_STARTED"
    TXN_RCPT = "TXN_RCPT"
    DATA_IN = "DATA_IN"
    CLOSED = "CLOSED"


# Theory of operation
# -------------------
#
# The server side of a peer session is a single state machine (contract 2.2). Its
# state changes only through the lookup TRANSITIONS[state][command] below; no
# other code decides which command is allowed when (h11's "Rule 1"). The
# connection object keeps a little transaction *data* beside the state (declared
# size, recipient counts), but never a second notion of where the session is.
#
# A command moves through three gates, in this order:
#
# 1. the verb must be known, else 500;
# 2. (state, verb) must be in the table, else the lookup raises OutOfSequence,
#    answered 503 (with one refinement: DATA after RCPTs that were all refused
#    gets 554 "No valid recipients");
# 3. the arguments must parse and respect the limits, else 501 / 552 / 452, or 503
#    for DATA before any SIZE.
#
# A command that passes becomes an event, and the application owes a reply. The
# reply code is the second half of the transition: a positive reply (2xx, 354 to
# DATA, 150 to a pulling decision) applies TRANSITIONS[state][command]; a 4xx
# or 5xx leaves the state as it was (a refused RCPT is no recipient, a refused
# ENVELOPE opens no transaction). The one exception is END_OF_BLOCK: the block's
# end closes the transaction whatever the reply (RFC 5321 4.1.1.4), so that
# transition is applied as soon as the terminating "." is read.
#
# States:
#   GREETED      connected, greeting sent, no HELO/EHLO yet
#   READY        introduced; may open a transaction or speak decisions (Table 2)
#   TXN_STARTED  ENVELOPE or MAIL accepted, no recipient accepted yet
#   TXN_RCPT     at least one recipient accepted; SIZE= and DATA allowed
#   DATA_IN      reading the dot-stuffed block (no commands are parsed)
#   CLOSED       QUIT answered, or the peer went away
_G, _R, _TS, _TR, _DI, _CL = (
    PeerState.GREETED,
    PeerState.READY,
    PeerState.TXN_STARTED,
    PeerState.TXN_RCPT,
    PeerState.DATA_IN,
    PeerState.CLOSED,
)
TRANSITIONS: Final[dict[PeerState, dict[str, PeerState]]] = {
    _G: {
        # Table 4: HELO/EHLO starts the session.
        "HELO": _R,
        "EHLO": _R,
        # Housekeeping, in every state but inside a block.
        "RSET": _G,
        "NOOP": _G,
        "QUIT": _CL,
    },
    _R: {
        # Table 4: a repeated HELO/EHLO resets the session.
        "HELO": _R,
        "EHLO": _R,
        # Table 4: ENVELOPE and MAIL open a transaction.
        "ENVELOPE": _TS,
        "MAIL": _TS,
        # Table 2: decisions and the pull confirmation, outside transactions.
        "ACCEPT": _R,
        "AUTHORIZE": _R,
        "REJECT": _R,
        "SPAM": _R,
        "SPAMMER": _R,
        "RECEIVED": _R,
        # RFC 3207: STARTTLS between transactions, after EHLO. After the handshake
        # the session starts over: the client must introduce itself again.
        "STARTTLS": _G,
        "RSET": _R,
        "NOOP": _R,
        "QUIT": _CL,
    },
    _TS: {
        # Table 4: RCPT adds recipients.
        "RCPT": _TR,
        "RSET": _R,
        "NOOP": _TS,
        "QUIT": _CL,
    },
    _TR: {
        "RCPT": _TR,
        # Table 4: SIZE= as a command (it may also be an ENVELOPE/MAIL parameter).
        "SIZE": _TR,
        "DATA": _DI,
        "RSET": _R,
        "NOOP": _TR,
        "QUIT": _CL,
    },
    _DI: {
        # No command is read inside the block; its end closes the transaction.
        END_OF_BLOCK: _R,
    },
}

TABLE: Final = StateTable(TRANSITIONS, initial=PeerState.GREETED, closed=PeerState.CLOSED)

#: Every verb the peer port knows (Table 4, Table 2, housekeeping).
VERBS: Final = TABLE.verbs
