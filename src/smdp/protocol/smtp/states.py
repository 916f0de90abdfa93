"""The SMTP codec's session states and THE transition table (docs/smtp.md).

Every transition of an SMTP session (server side) is in :data:`TRANSITIONS`
and nowhere else; :class:`smdp.protocol._states.StateTable` is the only code
that reads it, as for the two SMDP ports.
"""

from __future__ import annotations

import enum
from typing import Final

from smdp.protocol._states import END_OF_BLOCK, StateTable

__all__ = [
    "AUTH_CHALLENGE",
    "END_OF_BLOCK",
    "FAILED_AUTH",
    "TABLE",
    "TRANSITIONS",
    "VERBS",
    "SmtpState",
]


class SmtpState(enum.Enum):
    GREETED = "GREETED"
    READY = "READY"
    AUTH_IN = "AUTH_IN"
    TXN_STARTED = "TXN_STARTED"
    TXN_RCPT = "TXN_RCPT"
    DATA_IN = "DATA_IN"
    CLOSED = "CLOSED"


#: Pseudo command: the connection answered AUTH (or a response line) with a
#: 334 challenge by itself. Not a verb: it holds a space, which no verb can.
AUTH_CHALLENGE: Final = "<auth challenge>"

# Theory of operation
# -------------------
#
# As on the SMDP ports (peer/states.py): the state changes only through the
# lookup TRANSITIONS[state][command]. A command passes three gates: the verb
# must be known (else 500 5.5.1), (state, verb) must be in the table (else
# 503 5.5.1, or 554 5.5.1 for DATA once every RCPT was refused), and the
# arguments must parse and keep to the limits (501, 553, 555, 552, 452, 530,
# 538). A command that passes becomes an event, and the application's answer
# is the second half of the transition: a positive answer (2xx; 354 to DATA,
# 220 to STARTTLS, 235 to AUTH) applies TRANSITIONS[state][command]; a 4xx or
# 5xx leaves the state alone, except the refusals listed in FAILED_AUTH.
# END_OF_BLOCK (the end of the message) closes the transaction whatever the
# answer, so it applies as soon as the final CRLF.CRLF is read.
#
# VRFY and HELP are answered by the connection itself (252, 214) in the
# states that list them. AUTH is an exchange the connection runs itself: each
# 334 challenge it sends is the pseudo command AUTH_CHALLENGE, and the lines
# read in AUTH_IN are responses, never commands. Once it holds the
# credentials it hands out one Auth event (owed as "AUTH"); a '*' or an
# undecodable response ends the exchange with 501, through FAILED_AUTH.
#
# States:
#   GREETED      connected, greeting sent (or STARTTLS done), no EHLO/HELO yet
#   READY        introduced, no transaction
#   AUTH_IN      inside an AUTH exchange: the next line is a base64 response
#   TXN_STARTED  MAIL accepted, no recipient accepted yet
#   TXN_RCPT     at least one recipient accepted; DATA allowed
#   DATA_IN      reading the message (no commands are parsed)
#   CLOSED       QUIT answered, or the client went away
_G, _R, _AI, _TS, _TR, _DI, _CL = (
    SmtpState.GREETED,
    SmtpState.READY,
    SmtpState.AUTH_IN,
    SmtpState.TXN_STARTED,
    SmtpState.TXN_RCPT,
    SmtpState.DATA_IN,
    SmtpState.CLOSED,
)
TRANSITIONS: Final[dict[SmtpState, dict[str, SmtpState]]] = {
    _G: {
        # RFC 5321 4.1.4: the session starts with EHLO or HELO.
        "EHLO": _R,
        "HELO": _R,
        # RFC 5321 4.1.4: RSET, NOOP, QUIT, VRFY and HELP at any time.
        "RSET": _G,
        "NOOP": _G,
        "VRFY": _G,
        "HELP": _G,
        "QUIT": _CL,
    },
    _R: {
        # RFC 5321 4.1.4: a later EHLO/HELO resets the session as RSET does.
        "EHLO": _R,
        "HELO": _R,
        "MAIL": _TS,
        # RFC 3207 4.2: after the handshake the client introduces itself again.
        "STARTTLS": _G,
        # RFC 4954 4: AUTH outside transactions; its 334 prompts enter AUTH_IN.
        "AUTH": _R,
        AUTH_CHALLENGE: _AI,
        "RSET": _R,
        "NOOP": _R,
        "VRFY": _R,
        "HELP": _R,
        "QUIT": _CL,
    },
    _AI: {
        # AUTH LOGIN prompts twice (user name, password).
        AUTH_CHALLENGE: _AI,
        # The exchange is complete: the Auth event, owed as "AUTH".
        "AUTH": _R,
    },
    _TS: {
        "RCPT": _TR,
        "EHLO": _R,
        "HELO": _R,
        "RSET": _R,
        "NOOP": _TS,
        "VRFY": _TS,
        "HELP": _TS,
        "QUIT": _CL,
    },
    _TR: {
        "RCPT": _TR,
        "DATA": _DI,
        "EHLO": _R,
        "HELO": _R,
        "RSET": _R,
        "NOOP": _TR,
        "VRFY": _TR,
        "HELP": _TR,
        "QUIT": _CL,
    },
    _DI: {
        # No command is read inside the message; its end closes the transaction.
        END_OF_BLOCK: _R,
    },
}

#: The refusals that move the state: a refused (535) or abandoned (501)
#: exchange leaves AUTH_IN for READY.
FAILED_AUTH: Final = {_AI: {"AUTH": _R}}

TABLE: Final = StateTable(
    TRANSITIONS, initial=SmtpState.GREETED, closed=SmtpState.CLOSED, on_refusal=FAILED_AUTH
)

#: Every verb the codec knows (the pseudo command left out).
VERBS: Final = frozenset(verb for verb in TABLE.verbs if not verb.startswith("<"))
