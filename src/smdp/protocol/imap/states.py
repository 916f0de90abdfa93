"""The IMAP session states and THE transition table (RFC 9051 section 3).

Every transition of an IMAP session is in :data:`TRANSITIONS` (and the two
taken on a refusal, :data:`ON_REFUSAL`) and nowhere else;
:class:`smdp.protocol._states.StateTable` is the only code that reads them.
"""

from __future__ import annotations

import enum
from typing import Final

from smdp.protocol._states import StateTable

__all__ = ["ON_REFUSAL", "TABLE", "TRANSITIONS", "ImapState"]


class ImapState(enum.Enum):
    NOT_AUTHENTICATED = "NOT_AUTHENTICATED"
    AUTHENTICATED = "AUTHENTICATED"
    SELECTED = "SELECTED"
    LOGOUT = "LOGOUT"


# Theory of operation
# -------------------
#
# RFC 9051 figure 1 as one dict: TRANSITIONS[state][command] -> the state once
# the command was answered OK. Command names are the grammar's (``UID FETCH``
# is one name). A known command the current state does not list is answered
# "BAD" by the connection, state unchanged; a NO or BAD from the application
# leaves the state too, except for the refusals in ON_REFUSAL: a SELECT or
# EXAMINE that fails while a mailbox is selected leaves no mailbox selected
# (RFC 9051 6.3.2).
#
# Two commands ask the client for one more line with a continuation request:
# AUTHENTICATE (the SASL response) and IDLE (DONE). That line is framing, like
# the data block on the other ports: the connection reads it as the answer's
# part, and the command's transition applies when its tagged answer is sent.
#
# States:
#   NOT_AUTHENTICATED  greeting sent; STARTTLS, LOGIN, AUTHENTICATE
#   AUTHENTICATED      logged in, no mailbox selected
#   SELECTED           a mailbox is selected (SELECT or EXAMINE answered OK)
#   LOGOUT             LOGOUT answered, or the client went away
_N, _A, _S, _L = (ImapState.NOT_AUTHENTICATED, ImapState.AUTHENTICATED, ImapState.SELECTED,
                  ImapState.LOGOUT)

_ANY: Final = {"CAPABILITY": None, "NOOP": None, "LOGOUT": _L}
_LOGGED_IN: Final = {
    **_ANY, "ENABLE": None, "NAMESPACE": None, "LIST": None, "LSUB": None,
    "SUBSCRIBE": None, "UNSUBSCRIBE": None, "STATUS": None, "IDLE": None,
    "CREATE": None, "DELETE": None, "RENAME": None, "APPEND": None,
    "SELECT": _S, "EXAMINE": _S,
}


def _row(commands: dict[str, ImapState | None], here: ImapState) -> dict[str, ImapState]:
    """A row of the table: ``None`` means the command keeps the state."""
    return {cmd: here if then is None else then for cmd, then in commands.items()}


TRANSITIONS: Final[dict[ImapState, dict[str, ImapState]]] = {
    _N: _row({**_ANY, "STARTTLS": None, "LOGIN": _A, "AUTHENTICATE": _A}, _N),
    _A: _row(_LOGGED_IN, _A),
    _S: _row({**_LOGGED_IN, "FETCH": None, "UID FETCH": None, "SEARCH": None,
              "UID SEARCH": None, "STORE": None, "UID STORE": None, "EXPUNGE": None,
              "UID EXPUNGE": None, "MOVE": None, "UID MOVE": None, "COPY": None,
              "UID COPY": None, "CHECK": None,
              "CLOSE": _A, "UNSELECT": _A}, _S),
    _L: {},
}

ON_REFUSAL: Final[dict[ImapState, dict[str, ImapState]]] = {
    _S: {"SELECT": _A, "EXAMINE": _A},
}

TABLE: Final = StateTable(TRANSITIONS, initial=_N, closed=_L, on_refusal=ON_REFUSAL)
