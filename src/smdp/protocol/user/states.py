"""The user port's session states and THE transition table (protocol.md 12.2).

Every transition of a user session is in :data:`TRANSITIONS` (and the two
taken on a refusal, :data:`FAILED_PASS`) and nowhere else;
:class:`smdp.protocol._states.StateTable` is the only code that reads them.
"""

from __future__ import annotations

import enum
from typing import Final

from smdp.protocol._states import END_OF_BLOCK, StateTable

__all__ = ["END_OF_BLOCK", "FAILED_PASS", "TABLE", "TRANSITIONS", "VERBS", "UserState"]


class UserState(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    AUTH_PASS = "AUTH_PASS"
    TRANSACTION = "TRANSACTION"
    NEW_PASS = "NEW_PASS"
    COMPOSE = "COMPOSE"
    COMPOSE_RCPT = "COMPOSE_RCPT"
    COMPOSE_DATA = "COMPOSE_DATA"
    CLOSED = "CLOSED"


# Theory of operation
# -------------------
#
# One state machine per session (contract 3.1), held in TRANSITIONS below and
# nowhere else: TRANSITIONS[state][command] -> next state. Aliases are folded
# first (DEL is DELE, PWD is PASS), so the table speaks canonical verbs only.
#
# A line goes through: known verb (else "-ERR unknown command"), then the table
# (a missing entry raises OutOfSequence, answered "-ERR <why>", state
# unchanged), then its arguments and limits (else
# "-ERR <why>"). What passes becomes an event the application must answer with
# ok()/ok_block()/err(). An ok applies the transition; an err leaves the state,
# with two exceptions, both in FAILED_PASS below: a failed PASS sends the session
# back to the start of AUTHORIZATION, so USER must be sent again (RFC 1939); a
# failed NEWPASS goes back to TRANSACTION, so the current password must be
# proven again with PASSWD before another try.
# The end of the message block always returns to TRANSACTION, whatever the
# answer, so that transition is applied as soon as the "." line is read.
#
# States:
#   AUTHORIZATION  greeting sent, no user named
#   AUTH_PASS      USER answered +OK; PASS/PWD expected
#   TRANSACTION    logged in: POP3 mailbox commands and the SMDP commands
#   NEW_PASS       PASSWD answered +OK (the current password is proven);
#                  NEWPASS expected
#   COMPOSE        MAIL answered +OK, no recipient accepted yet
#   COMPOSE_RCPT   at least one recipient accepted; DATA allowed
#   COMPOSE_DATA   reading the dot-stuffed message (no commands are parsed)
#   CLOSED         QUIT answered, or the client went away
_A, _AP, _T, _NP, _C, _CR, _CD, _CL = (
    UserState.AUTHORIZATION,
    UserState.AUTH_PASS,
    UserState.TRANSACTION,
    UserState.NEW_PASS,
    UserState.COMPOSE,
    UserState.COMPOSE_RCPT,
    UserState.COMPOSE_DATA,
    UserState.CLOSED,
)
TRANSITIONS: Final[dict[UserState, dict[str, UserState]]] = {
    _A: {
        # Table 5 "user"/"pwd", RFC 1939 USER/PASS; CAPA before login (RFC 2449).
        "USER": _AP,
        "CAPA": _A,
        "NOOP": _A,
        "QUIT": _CL,
        # RFC 2595 section 4: STLS in the AUTHORIZATION state (before or after
        # USER); the session stays there, and a USER sent before counts no more.
        "STLS": _A,
    },
    _AP: {
        "USER": _AP,
        "PASS": _T,
        "CAPA": _AP,
        "NOOP": _AP,
        "QUIT": _CL,
        "STLS": _A,
    },
    _T: {
        # RFC 1939 TRANSACTION state (Table 5 "list", "retr", "del").
        "STAT": _T,
        "LIST": _T,
        "UIDL": _T,
        "RETR": _T,
        "DELE": _T,
        "TOP": _T,
        "NOOP": _T,
        "RSET": _T,
        "CAPA": _T,
        "QUIT": _CL,
        # SMDP: envelopes and the user's options on them (Table 5, Table 1).
        "ENVS": _T,
        "ENV": _T,
        "ACCEPT": _T,
        "ACCEPT&AUTH": _T,
        "REJECT": _T,
        "REJECT&SPAM": _T,
        "REJECT&SPAMMER": _T,
        "UNSUB": _T,  # leave the list that sent an entry (docs/lists.md)
        "GROUP": _T,  # the owner's view of a local list or alias (docs/lists.md)
        # SMDP: status of sent mail, the lists (Table 3), the identities.
        "SENT": _T,
        "LISTS": _T,
        "LISTADD": _T,
        "LISTDEL": _T,
        "IDENT": _T,
        # SMDP: the user changes their own password (protocol.md 12.9).
        "PASSWD": _NP,
        # Table 5 "mail", "rcpt to", "data": composing.
        "MAIL": _C,
    },
    _NP: {
        "NEWPASS": _T,
        "RSET": _T,  # keep the current password
        "NOOP": _NP,
        "QUIT": _CL,
    },
    _C: {
        "RCPT": _CR,
        "RSET": _T,
        "NOOP": _C,
        "QUIT": _CL,
    },
    _CR: {
        "RCPT": _CR,
        "DATA": _CD,
        "RSET": _T,
        "NOOP": _CR,
        "QUIT": _CL,
    },
    _CD: {
        END_OF_BLOCK: _T,
    },
}

#: The transitions taken on a negative answer: a failed login starts again
#: at USER (RFC 1939 section 4); a failed NEWPASS at PASSWD.
FAILED_PASS: Final = {_AP: {"PASS": _A}, _NP: {"NEWPASS": _T}}

TABLE: Final = StateTable(
    TRANSITIONS,
    initial=UserState.AUTHORIZATION,
    closed=UserState.CLOSED,
    on_refusal=FAILED_PASS,
)

#: Every verb the user port knows, with its aliases folded in.
VERBS: Final = TABLE.verbs
