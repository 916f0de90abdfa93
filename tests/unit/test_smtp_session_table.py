"""The SMTP codec's session state machine against docs/smtp.md's own table
("The SMTP codec", "Session states"), written out here and driven through the
real server connection.

test_smtp_codec walks commands too, but this file takes nothing from the code
under test: a wrong entry in ``smtp/states.py`` fails here.
"""

from __future__ import annotations

import pytest

from smdp.protocol.smtp import VERBS, Auth, SmtpState
from tests.unit import test_smtp_codec as codec

G, R, AI, TS, TR, DI, CL = (SmtpState.GREETED, SmtpState.READY, SmtpState.AUTH_IN,
                            SmtpState.TXN_STARTED, SmtpState.TXN_RCPT, SmtpState.DATA_IN,
                            SmtpState.CLOSED)
_ANY = ("RSET", "NOOP", "VRFY", "HELP")

# docs/smtp.md, "Session states": the allowed commands of each state and
# where a positive answer takes each (VRFY and HELP: answered by the codec).
SPEC: dict[SmtpState, dict[str, SmtpState]] = {
    G: {"EHLO": R, "HELO": R, **dict.fromkeys(_ANY, G), "QUIT": CL},
    R: {"EHLO": R, "HELO": R, "MAIL": TS, "STARTTLS": G, "AUTH": R,
        "RSET": R, "NOOP": R, "VRFY": R, "HELP": R, "QUIT": CL},
    TS: {"RCPT": TR, "EHLO": R, "HELO": R, "RSET": R, "NOOP": TS, "VRFY": TS, "HELP": TS,
         "QUIT": CL},
    TR: {"RCPT": TR, "DATA": DI, "EHLO": R, "HELO": R, "RSET": R, "NOOP": TR, "VRFY": TR,
         "HELP": TR, "QUIT": CL},
}


def test_the_codec_knows_the_documented_verbs() -> None:
    assert {v for row in SPEC.values() for v in row} == VERBS


@pytest.mark.parametrize("state", list(SPEC), ids=lambda s: s.value)
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_smtp_session_follows_the_table(state: SmtpState, verb: str) -> None:
    conn = codec.at_state(state)
    line, expected_event = codec.SAMPLES[verb]
    event, out = codec.step(conn, line)
    if verb not in SPEC[state]:
        assert out.startswith(b"503 "), out
        assert conn.state is state
    elif expected_event is None:
        assert out.startswith(b"252 " if verb == "VRFY" else b"214 "), out
        assert conn.state is SPEC[state][verb]
    else:
        assert (event, out) == (expected_event, b"")
        codec.answer(conn, event)
        assert conn.state is SPEC[state][verb]


@pytest.mark.parametrize("state", list(SPEC), ids=lambda s: s.value)
@pytest.mark.parametrize("verb", ["EHLO", "MAIL", "RCPT", "DATA", "STARTTLS", "AUTH", "RSET"])
def test_a_refusal_leaves_the_state(state: SmtpState, verb: str) -> None:
    conn = codec.at_state(state)
    _event, _ = codec.step(conn, codec.SAMPLES[verb][0])
    if verb in SPEC[state]:
        conn.reply(550, "no")
    assert conn.state is state


def test_the_end_of_the_message_returns_to_ready_whatever_the_answer() -> None:
    for code in (250, 451, 554):
        conn = codec.at_state(DI)
        codec.step(conn, b"Subject: x\r\n.\r\n")
        assert conn.state is R
        conn.reply(code, "done")
        assert conn.state is R


def test_the_auth_exchange() -> None:
    # AUTH without an initial response: the codec's 334 enters AUTH_IN.
    conn = codec.at_state(R)
    assert codec.run(conn, "AUTH PLAIN") == ([], b"334 \r\n")
    assert conn.state is AI
    # LOGIN's first response is prompted for again: AUTH_IN stays.
    conn = codec.at_state(AI)
    assert codec.run(conn, codec.b64("alice"))[1].startswith(b"334 ")
    assert conn.state is AI
    # The complete credentials: READY whatever the answer.
    for code in (235, 535):
        conn = codec.at_state(AI)
        codec.run(conn, codec.b64("alice"))
        event, _ = codec.step(conn, codec.b64("pw"))
        assert event == Auth("LOGIN", "alice", "pw")
        assert conn.state is AI
        conn.reply(code, "done")
        assert conn.state is R
    # A cancel or a refusal by the codec: READY.
    conn = codec.at_state(AI)
    codec.run(conn, "*")
    assert conn.state is R


def test_quit_closes() -> None:
    for state in SPEC:
        conn = codec.at_state(state)
        codec.run(conn, "QUIT")
        assert conn.state is CL
