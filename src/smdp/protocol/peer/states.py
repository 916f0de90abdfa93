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
# state changes only through the lookup TRANSITIONS[(state, command)] below; no
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
# DATA, 150 to a pulling decision) applies TRANSITIONS[(state, command)]; a 4xx
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
TRANSITIONS: Final[dict[tuple[PeerState, str], PeerState]] = {
    # Table 4: HELO/EHLO starts the session; repeated, it resets it.
    (_G, "HELO"): _R,
    (_G, "EHLO"): _R,
    (_R, "HELO"): _R,
    (_R, "EHLO"): _R,
    # Table 4: ENVELOPE and MAIL open a transaction, RCPT adds recipients.
    (_R, "ENVELOPE"): _TS,
    (_R, "MAIL"): _TS,
    (_TS, "RCPT"): _TR,
    (_TR, "RCPT"): _TR,
    # Table 4: SIZE= as a command (it may also be an ENVELOPE/MAIL parameter).
    (_TR, "SIZE"): _TR,
    (_TR, "DATA"): _DI,
    (_DI, END_OF_BLOCK): _R,
    # Table 2: decisions and the pull confirmation, outside transactions.
    (_R, "ACCEPT"): _R,
    (_R, "AUTHORIZE"): _R,
    (_R, "REJECT"): _R,
    (_R, "SPAM"): _R,
    (_R, "SPAMMER"): _R,
    (_R, "RECEIVED"): _R,
    # RFC 3207: STARTTLS between transactions, after EHLO. After the handshake
    # the session starts over: the client must introduce itself again.
    (_R, "STARTTLS"): _G,
    # Housekeeping, anywhere but inside a block.
    (_G, "RSET"): _G,
    (_R, "RSET"): _R,
    (_TS, "RSET"): _R,
    (_TR, "RSET"): _R,
    (_G, "NOOP"): _G,
    (_R, "NOOP"): _R,
    (_TS, "NOOP"): _TS,
    (_TR, "NOOP"): _TR,
    (_G, "QUIT"): _CL,
    (_R, "QUIT"): _CL,
    (_TS, "QUIT"): _CL,
    (_TR, "QUIT"): _CL,
}

TABLE: Final = StateTable(TRANSITIONS, initial=PeerState.GREETED, closed=PeerState.CLOSED)

#: Every verb the peer port knows (Table 4, Table 2, housekeeping).
VERBS: Final = TABLE.verbs
