"""STARTTLS (peer port, RFC 3207) and STLS (user port, RFC 2595) in the
sans-IO codecs: where they are allowed, what the session forgets, and the
plaintext that arrived after the command (the "STARTTLS buffer injection")."""

from __future__ import annotations

import pytest

from smdp.protocol import peer, user
from smdp.protocol.framing import NEED_DATA, ProtocolUsageError, RemoteProtocolError

ENVID = "abcdefghijklmnopqrstuvwxyz"


def peer_server(*, tls: bool = False) -> peer.PeerServerConnection:
    return peer.PeerServerConnection("mx.here.example", max_message_size=1000,
                                     max_recipients=5, tls=tls)


def user_server(*, tls: bool = False) -> user.UserServerConnection:
    return user.UserServerConnection("mx.here.example", max_message_size=1000,
                                     max_recipients=5, tls=tls)


def feed(conn: peer.PeerServerConnection | user.UserServerConnection, data: bytes) -> object:
    conn.receive_data(data)
    return conn.next_event()


# -- peer port: STARTTLS ------------------------------------------------------------


def ready(*, tls: bool = False) -> peer.PeerServerConnection:
    conn = peer_server(tls=tls)
    assert feed(conn, b"EHLO a.example\r\n") == peer.Helo("a.example", extended=True)
    conn.reply(250, ["mx.here.example hello a.example", "STARTTLS"])
    conn.data_to_send()
    return conn


def test_starttls_restarts_the_session_at_greeted() -> None:
    conn = ready()
    assert not conn.tls
    assert feed(conn, b"STARTTLS\r\n") == peer.StartTls()
    conn.reply(220, "2.0.0 Ready to start TLS")
    assert conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.state is peer.PeerState.GREETED and conn.tls
    # The client must introduce itself again before anything else.
    assert feed(conn, f"ENVELOPE From:<s@a.example> ID={ENVID}\r\n".encode()) is NEED_DATA
    assert conn.data_to_send() == b"503 5.5.1 Bad sequence of commands: send HELO or EHLO first\r\n"


def test_plaintext_after_starttls_is_discarded() -> None:
    """An attacker appends commands to the client's STARTTLS in the same
    packet; after the handshake they must not run as if sent over TLS."""
    conn = ready()
    injected = (b"STARTTLS\r\nEHLO evil.example\r\n"
                b"ENVELOPE From:<ceo@a.example> ID=" + ENVID.encode() + b"\r\n")
    assert feed(conn, injected) == peer.StartTls()
    assert conn.buffered > 0  # the injection is waiting in the buffer ...
    conn.reply(220, "2.0.0 Ready to start TLS")
    assert conn.buffered == 0  # ... and is gone once the answer is given
    assert conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""  # nothing answered to the injected commands
    # The first command of the TLS session is the first one that counts.
    assert feed(conn, b"NOOP\r\n") == peer.Noop()


def test_refused_starttls_keeps_the_session_and_its_buffer() -> None:
    conn = ready()
    assert feed(conn, b"STARTTLS\r\nNOOP\r\n") == peer.StartTls()
    conn.reply(454, "4.7.0 TLS not available")
    assert conn.state is peer.PeerState.READY and not conn.tls
    assert conn.next_event() == peer.Noop()  # plaintext goes on: nothing changed


def test_starttls_only_between_transactions_after_ehlo() -> None:
    conn = peer_server()
    assert feed(conn, b"STARTTLS\r\n") is NEED_DATA
    assert conn.data_to_send().startswith(b"503 5.5.1 Bad sequence of commands: send HELO")
    conn = ready()
    assert isinstance(feed(conn, f"ENVELOPE From:<s@a.example> ID={ENVID}\r\n".encode()),
                      peer.EnvelopeStart)
    conn.reply(250, "2.1.0 ok")
    conn.data_to_send()
    assert feed(conn, b"STARTTLS\r\n") is NEED_DATA
    assert conn.data_to_send() == (
        b"503 5.5.1 Bad sequence of commands: "
        b"STARTTLS not allowed inside a transaction; send RSET first\r\n")


def test_starttls_twice_and_with_an_argument() -> None:
    conn = ready(tls=True)
    assert feed(conn, b"STARTTLS\r\n") is NEED_DATA
    assert conn.data_to_send() == b"503 5.5.1 Bad sequence of commands: TLS already active\r\n"
    conn = ready()
    assert feed(conn, b"STARTTLS now\r\n") is NEED_DATA
    assert conn.data_to_send() == b"501 5.5.4 Syntax: STARTTLS\r\n"


def test_starttls_takes_220_or_an_error_only() -> None:
    conn = ready()
    feed(conn, b"STARTTLS\r\n")
    with pytest.raises(ProtocolUsageError, match="STARTTLS is answered 220, 4xx or 5xx"):
        conn.reply(250, "2.0.0 OK")


def test_starttls_in_the_transition_table() -> None:
    starts = {s for s, row in peer.TRANSITIONS.items() if "STARTTLS" in row}
    assert starts == {peer.PeerState.READY}
    assert peer.TRANSITIONS[peer.PeerState.READY]["STARTTLS"] is peer.PeerState.GREETED


def test_client_starttls_refuses_injected_replies() -> None:
    client = peer.PeerClientConnection()
    client.receive_data(b"220 mx ready\r\n")
    assert isinstance(client.next_event(), peer.Reply)
    assert client.send(peer.StartTls()) == b"STARTTLS\r\n"
    # A man in the middle appends a fake EHLO answer to the 220.
    client.receive_data(b"220 2.0.0 Ready to start TLS\r\n250 mx hello\r\n")
    assert client.next_event() == peer.Reply(220, ["2.0.0 Ready to start TLS"])
    with pytest.raises(RemoteProtocolError, match="the server sent data after its STARTTLS reply"):
        client.start_tls()


def test_client_starttls_clean() -> None:
    client = peer.PeerClientConnection()
    client.receive_data(b"220 mx ready\r\n")
    client.next_event()
    client.send(peer.StartTls())
    client.receive_data(b"220 2.0.0 Ready to start TLS\r\n")
    client.next_event()
    client.start_tls()
    # After the handshake: no greeting comes; the next reply answers EHLO.
    client.send(peer.Helo("a.example", extended=True))
    client.receive_data(b"250-mx hello a.example\r\n250 SMDP 1\r\n")
    assert client.next_event() == peer.Reply(250, ["mx hello a.example", "SMDP 1"])


def test_client_start_tls_with_replies_outstanding_is_a_usage_error() -> None:
    client = peer.PeerClientConnection()  # the greeting is still expected
    with pytest.raises(ProtocolUsageError, match="with replies still outstanding"):
        client.start_tls()


# -- user port: STLS ----------------------------------------------------------------


def test_stls_before_and_after_user() -> None:
    for before in (b"", b"USER alice\r\n"):
        conn = user_server()
        if before:
            assert feed(conn, before) == user.User("alice")
            conn.ok("send your password")
        assert feed(conn, b"STLS\r\n") == user.Stls()
        conn.ok("Begin TLS negotiation")
        assert conn.data_to_send().endswith(b"+OK Begin TLS negotiation\r\n")
        assert conn.state is user.UserState.AUTHORIZATION and conn.tls
        # A USER sent in plaintext counts no more: PASS needs a new USER.
        assert feed(conn, b"PASS secret\r\n") is NEED_DATA
        assert conn.data_to_send() == b"-ERR send USER first\r\n"


def test_plaintext_after_stls_is_discarded() -> None:
    conn = user_server()
    assert feed(conn, b"STLS\r\nUSER mallory\r\nPASS guess\r\n") == user.Stls()
    conn.ok("Begin TLS negotiation")
    assert conn.buffered == 0
    conn.data_to_send()
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""


def test_stls_refusals() -> None:
    conn = user_server(tls=True)
    assert feed(conn, b"STLS\r\n") is NEED_DATA
    assert conn.data_to_send() == b"-ERR command not permitted when TLS active\r\n"
    conn = user_server()
    assert feed(conn, b"STLS please\r\n") is NEED_DATA
    assert conn.data_to_send() == b"-ERR STLS takes no argument\r\n"
    conn = user_server()
    feed(conn, b"USER alice\r\n")
    conn.ok("send your password")
    feed(conn, b"PASS pw\r\n")
    conn.ok("logged in")
    conn.data_to_send()
    assert feed(conn, b"STLS\r\n") is NEED_DATA
    assert conn.data_to_send() == b"-ERR STLS is allowed only before login\r\n"


def test_refused_stls_keeps_plaintext_going() -> None:
    conn = user_server()
    assert feed(conn, b"STLS\r\nCAPA\r\n") == user.Stls()
    conn.err("TLS not available")
    assert not conn.tls
    assert conn.next_event() == user.Capa()


def test_user_client_stls() -> None:
    client = user.UserClientConnection()
    client.receive_data(b"+OK ready\r\n")
    client.next_event()
    assert client.send(user.Stls()) == b"STLS\r\n"
    client.receive_data(b"+OK Begin TLS negotiation\r\n")
    assert client.next_event() == user.UserReply(True, "Begin TLS negotiation")
    client.start_tls()
    injected = user.UserClientConnection()
    injected.receive_data(b"+OK ready\r\n")
    injected.next_event()
    injected.send(user.Stls())
    injected.receive_data(b"+OK Begin TLS negotiation\r\n+OK alice logged in\r\n")
    injected.next_event()
    with pytest.raises(RemoteProtocolError, match="the server sent data after its STLS reply"):
        injected.start_tls()
