"""Both ports' session state machines against the contract's own tables,
written out here as protocol.md states them (6.5 for the peer port, 12.2 for
the user port), and driven through the real server connections.

The codec tests walk every (state, verb) pair too, but take the expected next
state from ``TRANSITIONS`` itself, so a wrong entry there would pass them;
this file takes nothing from the code under test.
"""

from __future__ import annotations

import pytest

from smdp.protocol.peer import VERBS as PEER_VERBS
from smdp.protocol.peer import PeerState
from smdp.protocol.user import VERBS as USER_VERBS
from smdp.protocol.user import UserState
from tests.unit import test_peer_codec as peer_codec
from tests.unit import test_user_codec as user_codec

G, R, TS, TR, DI, CL = (PeerState.GREETED, PeerState.READY, PeerState.TXN_STARTED,
                        PeerState.TXN_RCPT, PeerState.DATA_IN, PeerState.CLOSED)
_DECISIONS = ("ACCEPT", "AUTHORIZE", "REJECT", "SPAM", "SPAMMER", "RECEIVED")

# protocol.md 6.5, row by row ("any but DATA_IN and CLOSED: QUIT -> CLOSED").
PEER_SPEC: dict[PeerState, dict[str, PeerState]] = {
    G: {"HELO": R, "EHLO": R, "RSET": G, "NOOP": G, "QUIT": CL},
    R: {"HELO": R, "EHLO": R, "ENVELOPE": TS, "MAIL": TS, **dict.fromkeys(_DECISIONS, R),
        "STARTTLS": G, "RSET": R, "NOOP": R, "QUIT": CL},
    TS: {"RCPT": TR, "RSET": R, "NOOP": TS, "QUIT": CL},
    TR: {"RCPT": TR, "SIZE": TR, "DATA": DI, "RSET": R, "NOOP": TR, "QUIT": CL},
}

A, AP, T, NP, C, CR, CD = (UserState.AUTHORIZATION, UserState.AUTH_PASS,
                           UserState.TRANSACTION, UserState.NEW_PASS, UserState.COMPOSE,
                           UserState.COMPOSE_RCPT, UserState.COMPOSE_DATA)
_TRANSACTION = ("STAT", "LIST", "UIDL", "RETR", "DELE", "TOP", "NOOP", "RSET", "CAPA",
                "ENVS", "ENV", "ACCEPT", "ACCEPT&AUTH", "REJECT", "REJECT&SPAM",
                "REJECT&SPAMMER", "UNSUB", "SENT", "LISTS", "LISTADD", "LISTDEL", "IDENT",
                "GROUP")

# protocol.md 12.2: the allowed commands of each state and where each goes.
USER_SPEC: dict[UserState, dict[str, UserState]] = {
    A: {"USER": AP, "CAPA": A, "NOOP": A, "QUIT": UserState.CLOSED, "STLS": A},
    AP: {"USER": AP, "PASS": T, "CAPA": AP, "NOOP": AP, "QUIT": UserState.CLOSED, "STLS": A},
    T: {**dict.fromkeys(_TRANSACTION, T), "MAIL": C, "PASSWD": NP, "QUIT": UserState.CLOSED},
    NP: {"NEWPASS": T, "RSET": T, "NOOP": NP, "QUIT": UserState.CLOSED},
    C: {"RCPT": CR, "RSET": T, "NOOP": C, "QUIT": UserState.CLOSED},
    CR: {"RCPT": CR, "DATA": CD, "RSET": T, "NOOP": CR, "QUIT": UserState.CLOSED},
}


def test_the_ports_know_the_contracts_verbs() -> None:
    assert {v for row in PEER_SPEC.values() for v in row} == PEER_VERBS
    assert {v for row in USER_SPEC.values() for v in row} == USER_VERBS


@pytest.mark.parametrize("state", list(PEER_SPEC), ids=lambda s: s.value)
@pytest.mark.parametrize("verb", sorted(PEER_VERBS))
def test_peer_session_follows_section_6_5(state: PeerState, verb: str) -> None:
    conn = peer_codec.at_state(state)
    event, out = peer_codec.step(conn, peer_codec.SAMPLES[verb][0])
    if verb in PEER_SPEC[state]:
        assert out == b""
        peer_codec.answer(conn, event)
        assert conn.state is PEER_SPEC[state][verb]
    else:
        assert out.startswith(b"503 "), out
        assert conn.state is state


def test_peer_block_end_returns_to_ready() -> None:
    conn = peer_codec.at_state(DI)
    peer_codec.step(conn, b"Subject: x\r\n.\r\n")
    assert conn.state is R


@pytest.mark.parametrize("state", list(USER_SPEC), ids=lambda s: s.value)
@pytest.mark.parametrize("verb", sorted(USER_VERBS))
def test_user_session_follows_section_12_2(state: UserState, verb: str) -> None:
    conn = user_codec.at_state(state)
    event, out = user_codec.step(conn, user_codec.SAMPLES[verb][0])
    if verb in USER_SPEC[state]:
        assert out == b""
        user_codec.answer(conn, event)
        assert conn.state is USER_SPEC[state][verb]
    else:
        assert out.startswith(b"-ERR "), out
        assert conn.state is state


def test_user_block_end_returns_to_transaction() -> None:
    conn = user_codec.at_state(CD)
    user_codec.step(conn, b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert conn.state is T


@pytest.mark.parametrize(("state", "verb"), [(A, "USER"), (AP, "USER"), (T, "MAIL"),
                                             (C, "RCPT"), (CR, "DATA"), (AP, "STLS"),
                                             (T, "PASSWD"), (NP, "RSET")])
def test_a_refusal_leaves_the_user_state(state: UserState, verb: str) -> None:
    conn = user_codec.at_state(state)
    user_codec.step(conn, user_codec.SAMPLES[verb][0])
    conn.err("no")
    assert conn.state is state


def test_a_failed_password_starts_the_login_again() -> None:
    # RFC 1939 section 4 / protocol.md 12.2: PASS -ERR goes back to AUTHORIZATION.
    conn = user_codec.at_state(AP)
    user_codec.step(conn, "PASS wrong")
    conn.err("invalid password")
    assert conn.state is A


def test_a_failed_new_password_asks_for_the_current_one_again() -> None:
    # protocol.md 12.2 / 12.9: NEWPASS -ERR goes back to TRANSACTION.
    conn = user_codec.at_state(NP)
    user_codec.step(conn, "NEWPASS fresh")
    conn.err("internal error; nothing was changed, try again")
    assert conn.state is T
