"""How both ports keep their session state: one table, one lookup.

Each port writes its whole state machine as one dict, ``TRANSITIONS[state]
[command] -> next state`` (``peer/states.py``, ``user/states.py``), in the
manner of h11's ``_state.py``. :class:`StateTable` is the only code that reads
such a dict: a command the table does not list for the current state is the
one lookup failing, raised as :class:`OutOfSequence`, and the connections turn
that one error into the port's "bad sequence" reply. Nothing else decides
which command is allowed when.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Generic, TypeVar

__all__ = ["END_OF_BLOCK", "OutOfSequence", "StateTable"]

#: Pseudo command for the end of a data block (it is not a verb on the wire).
END_OF_BLOCK: Final = "<end of block>"

S = TypeVar("S", bound=enum.Enum)


class OutOfSequence(Exception):
    """``command`` is not allowed in ``state``: the table has no such entry."""

    def __init__(self, state: enum.Enum, command: str) -> None:
        super().__init__(f"{command} not allowed in state {state.name}")
        self.state = state
        self.command = command


class StateTable(Generic[S]):
    """A port's transitions, its first and last state, and the verbs it knows.

    ``on_refusal`` holds the rare transitions taken on a *negative* answer
    (the user port's failed PASS); a refused command otherwise leaves the
    state as it was.
    """

    __slots__ = ("_on_refusal", "_transitions", "closed", "initial", "verbs")

    def __init__(
        self,
        transitions: Mapping[S, Mapping[str, S]],
        *,
        initial: S,
        closed: S,
        on_refusal: Mapping[S, Mapping[str, S]] | None = None,
    ) -> None:
        self._transitions = transitions
        self._on_refusal = on_refusal or {}
        self.initial = initial
        self.closed = closed
        #: Every verb some state allows: a verb outside it is unknown, not
        #: out of sequence.
        self.verbs: frozenset[str] = frozenset(
            cmd for row in transitions.values() for cmd in row if cmd != END_OF_BLOCK
        )

    def after(self, state: S, command: str) -> S:
        """The state once ``command`` was answered positively in ``state``."""
        try:
            return self._transitions[state][command]
        except KeyError:
            raise OutOfSequence(state, command) from None

    def after_refusal(self, state: S, command: str) -> S:
        """The state once ``command`` was answered negatively in ``state``."""
        return self._on_refusal.get(state, {}).get(command, state)
