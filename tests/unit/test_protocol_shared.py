"""What both codecs share: the state table's one lookup, the decisions' spelling
on each port, and the address grammar the wire reads (protocol.md 5.1)."""

from __future__ import annotations

from types import ModuleType

import pytest

from smdp import terms
from smdp.protocol import peer, user
from smdp.protocol._states import END_OF_BLOCK, OutOfSequence
from smdp.protocol.peer.states import TABLE as PEER_TABLE
from smdp.protocol.user.states import TABLE as USER_TABLE

ENVID = "abcdefghijklmnopqrstuvwxyz"


# -- the state table ------------------------------------------------------------


def test_a_wrong_command_is_one_lookup_failing() -> None:
    with pytest.raises(OutOfSequence) as info:
        PEER_TABLE.after(peer.PeerState.GREETED, "DATA")
    assert (info.value.state, info.value.command) == (peer.PeerState.GREETED, "DATA")
    with pytest.raises(OutOfSequence):
        USER_TABLE.after(user.UserState.CLOSED, "NOOP")
    assert PEER_TABLE.after(peer.PeerState.READY, "STARTTLS") is peer.PeerState.GREETED


def test_a_refusal_moves_only_a_failed_pass() -> None:
    auth_pass = user.UserState.AUTH_PASS
    assert USER_TABLE.after_refusal(auth_pass, "PASS") is user.UserState.AUTHORIZATION
    assert USER_TABLE.after_refusal(auth_pass, "USER") is auth_pass
    assert PEER_TABLE.after_refusal(peer.PeerState.READY, "MAIL") is peer.PeerState.READY


@pytest.mark.parametrize("module", [peer, user], ids=["peer", "user"])
def test_verbs_are_every_command_of_the_table(module: ModuleType) -> None:
    commands = {cmd for row in module.TRANSITIONS.values() for cmd in row}
    assert commands - {END_OF_BLOCK} == module.VERBS


# -- the decisions on the wire -----------------------------------------------------


def test_each_port_spells_every_decision_once() -> None:
    assert peer.DECISION_VERBS == {
        terms.Decision.ACCEPT: "ACCEPT",
        terms.Decision.ACCEPT_AUTH: "AUTHORIZE",
        terms.Decision.REJECT: "REJECT",
        terms.Decision.REJECT_SPAM: "SPAM",
        terms.Decision.REJECT_SPAMMER: "SPAMMER",
    }
    assert user.DECISION_VERBS == {
        terms.Decision.ACCEPT: "ACCEPT",
        terms.Decision.ACCEPT_AUTH: "ACCEPT&AUTH",
        terms.Decision.REJECT: "REJECT",
        terms.Decision.REJECT_SPAM: "REJECT&SPAM",
        terms.Decision.REJECT_SPAMMER: "REJECT&SPAMMER",
    }
    for module in (peer, user):
        assert {module.DECISIONS_BY_VERB[v] for v in module.DECISION_VERBS.values()} == set(
            terms.Decision
        )


@pytest.mark.parametrize("decision", list(terms.Decision))
def test_a_decision_crosses_both_ports_unchanged(decision: terms.Decision) -> None:
    line = user.UserClientConnection().send(user.UserDecision(decision, 7))
    assert line == f"{user.DECISION_VERBS[decision]} 7\r\n".encode()
    conn = user.UserServerConnection("h.example", max_message_size=10, max_recipients=1)
    conn.receive_data(b"USER a\r\n")
    conn.next_event()
    conn.ok("")
    conn.receive_data(b"PASS b\r\n")
    conn.next_event()
    conn.ok("")
    conn.receive_data(line)
    assert conn.next_event() == user.UserDecision(decision, 7)

    # The destination then speaks it to the origin in Table 2's words.
    sent = peer.PeerClientConnection().send(peer.Decision(decision, ENVID, "r@a.example"))
    assert sent.startswith(f"{peer.DECISION_VERBS[decision]} {ENVID} ".encode())
    server = peer.PeerServerConnection("h.example", max_message_size=10, max_recipients=1)
    server.receive_data(b"EHLO a.example\r\n")
    server.next_event()
    server.reply(250, "ok")
    server.receive_data(sent)
    event = server.next_event()
    assert event == peer.Decision(decision, ENVID, "r@a.example")
    assert isinstance(event, peer.Decision) and event.kind.value == decision.value


# -- the address grammar, as the wire reads it ------------------------------------


def test_the_peer_port_accepts_an_all_numeric_last_label() -> None:
    # protocol.md 5.1: "the reference implementation accepts it on the peer port".
    conn = peer.PeerServerConnection("h.example", max_message_size=10, max_recipients=1)
    conn.receive_data(b"EHLO 192.0.2.1\r\n")
    assert conn.next_event() == peer.Helo("192.0.2.1", extended=True)
    conn.reply(250, "ok")
    conn.receive_data(f"ENVELOPE From:<a@192.0.2.1> ID={ENVID} SIZE=5\r\n".encode())
    assert conn.next_event() == peer.EnvelopeStart("a@192.0.2.1", ENVID, 5)


def test_the_user_codec_passes_an_all_numeric_last_label_on() -> None:
    # The user port's server refuses it afterwards (parse_address), not the codec.
    conn = user.UserServerConnection("h.example", max_message_size=10, max_recipients=1)
    for line in (b"USER a\r\n", b"PASS b\r\n", b"MAIL\r\n"):
        conn.receive_data(line)
        conn.next_event()
        conn.ok("")
    conn.receive_data(b"RCPT TO:<b@192.0.2.1>\r\n")
    assert conn.next_event() == user.RcptCmd("b@192.0.2.1")
