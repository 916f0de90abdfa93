"""The peer and user codecs' limits and grammar at their exact edges (issue 17:
the survivors of the "limits" mutation target in both ports' connection.py and
grammar.py). Each limit is tried at its value and one past it: SIZE at the
server's maximum, an ENVELOPE block at max_envelope_block and one octet more,
a MAIL message held to its SIZE rather than to the envelope block limit, a user
name of 255 characters, message numbers of 10 digits, and which 1xx starts a
pull (protocol.md 6.3, 7, 8.2, 12.3)."""

from __future__ import annotations

import pytest

from smdp import terms
from smdp.protocol import peer, user
from smdp.protocol.framing import dot_stuff
from smdp.protocol.peer.grammar import too_big_line
from smdp.protocol.peer.grammar import write_command as write_peer
from smdp.protocol.user.grammar import write_command as write_user

ENVID = "abcdefghijklmnopqrstuvwxyz"
HOST = "mx.here.example"


# -- the peer port, server side ------------------------------------------------------


def peer_server(**limits: int) -> peer.PeerServerConnection:
    kwargs = {"max_message_size": 1000, "max_recipients": 3} | limits
    return peer.PeerServerConnection(HOST, **kwargs)


def peer_say(conn: peer.PeerServerConnection, wire: bytes) -> tuple[list[object], bytes]:
    """Feed ``wire``; answer every event positively; the events and the replies."""
    conn.receive_data(wire)
    events: list[object] = []
    while True:
        event = conn.next_event()
        if event is peer.NEED_DATA or event is peer.CLOSED:
            break
        events.append(event)
        match event:
            case peer.DataStart():
                conn.reply(354, "go ahead")
            case peer.DataFailed():
                pass
            case _:
                conn.reply(250, "ok")
    return events, conn.data_to_send()


def peer_txn(conn: peer.PeerServerConnection, verb: str, size: int) -> None:
    """EHLO, ``verb`` with SIZE=``size``, one RCPT and DATA, all accepted."""
    events, out = peer_say(conn, (
        f"EHLO b.example\r\n{verb} From:<s@b.example> ID={ENVID} SIZE={size}\r\n"
        "RCPT To:<r@here.example>\r\nDATA\r\n").encode())
    assert isinstance(events[-1], peer.DataStart), out
    assert out.endswith(b"354 go ahead\r\n")


def block_of(size: int) -> bytes:
    """A data block whose content counts exactly ``size`` octets (size >= 2)."""
    return dot_stuff(b"x" * (size - 2) + b"\r\n")


@pytest.mark.parametrize("verb", ["ENVELOPE", "MAIL"])
def test_a_start_command_takes_size_at_the_maximum_and_not_one_more(verb: str) -> None:
    conn = peer_server(max_message_size=1000)
    events, out = peer_say(conn, f"EHLO b.example\r\n{verb} From:<s@b.example> ID={ENVID} "
                                 "SIZE=1000\r\n".encode())
    assert type(events[-1]) is (peer.MailStart if verb == "MAIL" else peer.EnvelopeStart)
    assert events[-1].size == 1000
    conn = peer_server(max_message_size=1000)
    events, out = peer_say(conn, f"EHLO b.example\r\n{verb} From:<s@b.example> ID={ENVID} "
                                 "SIZE=1001\r\n".encode())
    assert len(events) == 1
    assert out.endswith((too_big_line(1000) + "\r\n").encode())


def test_the_size_command_takes_the_maximum_and_not_one_more() -> None:
    conn = peer_server(max_message_size=1000)
    peer_say(conn, f"EHLO b.example\r\nENVELOPE From:<s@b.example> ID={ENVID}\r\n"
                   "RCPT To:<r@here.example>\r\n".encode())
    events, out = peer_say(conn, b"SIZE=1000\r\n")
    assert events == [peer.SizeDecl(1000)]
    assert out == b"250 ok\r\n"
    events, out = peer_say(conn, b"SIZE=1001\r\n")
    assert events == []
    assert out == (too_big_line(1000) + "\r\n").encode()
    # The refusal left the declared 1000 in place: DATA is allowed.
    events, _ = peer_say(conn, b"DATA\r\n")
    assert events == [peer.DataStart()]


def test_an_envelope_block_at_its_own_limit_and_one_octet_over() -> None:
    conn = peer_server(max_message_size=1000, max_envelope_block=100)
    peer_txn(conn, "ENVELOPE", 900)
    events, out = peer_say(conn, block_of(100))
    assert events == [peer.DataComplete(b"x" * 98 + b"\r\n")]
    assert out == b"250 ok\r\n"
    conn = peer_server(max_message_size=1000, max_envelope_block=100)
    peer_txn(conn, "ENVELOPE", 900)
    events, out = peer_say(conn, block_of(101))
    assert events == [peer.DataFailed(peer.TOO_BIG_REASON)]
    assert out == b"554 5.6.0 Envelope block exceeds 100 octets.\r\n"


def test_an_envelope_block_limited_by_the_message_size_names_it() -> None:
    # Without a lower envelope block limit the block is held to the message
    # maximum, and the refusal is the message-size one (protocol.md 7).
    conn = peer_server(max_message_size=100)
    peer_txn(conn, "ENVELOPE", 100)
    events, out = peer_say(conn, block_of(101))
    assert events == [peer.DataFailed(peer.TOO_BIG_REASON)]
    assert out == (too_big_line(100) + "\r\n").encode()


def test_a_whole_message_is_held_to_its_size_not_to_the_envelope_block_limit() -> None:
    conn = peer_server(max_message_size=1000, max_envelope_block=100)
    peer_txn(conn, "MAIL", 500)
    events, out = peer_say(conn, block_of(500))
    assert events == [peer.DataComplete(b"x" * 498 + b"\r\n")]
    assert out == b"250 ok\r\n"


@pytest.mark.parametrize("size", [499, 501])
def test_a_whole_message_of_another_size_than_declared_is_a_mismatch(size: int) -> None:
    conn = peer_server(max_message_size=1000, max_envelope_block=100)
    peer_txn(conn, "MAIL", 500)
    events, out = peer_say(conn, block_of(size))
    assert events == [peer.DataFailed(peer.SIZE_MISMATCH_REASON)]
    assert out == b"554 5.3.4 Size mismatch\r\n"


# -- the peer port, grammar (client side) ----------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 10**20 - 1])
def test_a_written_size_is_0_to_20_digits(size: int) -> None:
    assert write_peer(peer.SizeDecl(size)) == f"SIZE={size}"
    assert write_peer(peer.MailStart("s@b.example", ENVID, size)).endswith(f" SIZE={size}")


@pytest.mark.parametrize("size", [-1, -10, 10**20])
def test_a_negative_or_21_digit_size_is_not_written(size: int) -> None:
    with pytest.raises(peer.ProtocolUsageError, match="bad size"):
        write_peer(peer.SizeDecl(size))
    with pytest.raises(peer.ProtocolUsageError, match="bad size"):
        write_peer(peer.EnvelopeStart("s@b.example", ENVID, size))


# -- the peer port, client side: the pull ----------------------------------------------


def pulling_client() -> peer.PeerClientConnection:
    client = peer.PeerClientConnection(max_message_size=1000)
    client.send(peer.Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    client.receive_data(b"220 hi\r\n")
    assert client.next_event() == peer.Reply(220, ["hi"])
    return client


def test_a_pull_is_a_150_whose_text_is_its_last_line() -> None:
    client = pulling_client()
    client.receive_data(b"150-first\r\n150 5 octets follow\r\n" + dot_stuff(b"hello"))
    assert client.next_event() == peer.PulledBody(150, "5 octets follow", b"hello\r\n")


@pytest.mark.parametrize("code", [120, 149, 151])
def test_only_150_starts_a_pull(code: int) -> None:
    client = pulling_client()
    client.receive_data(f"{code} not a pull\r\n".encode())
    assert client.next_event() == peer.Reply(code, ["not a pull"])


# -- the user port -------------------------------------------------------------------------


def user_server() -> user.UserServerConnection:
    return user.UserServerConnection(HOST, max_message_size=1000, max_recipients=3)


def user_command(line: str) -> tuple[object, bytes]:
    conn = user_server()
    conn.receive_data(line.encode() + b"\r\n")
    return conn.next_event(), conn.data_to_send()


@pytest.mark.parametrize("name", ["a" * 255, "a" * 254 + "é", "a"])
def test_a_user_name_of_up_to_255_characters_is_read(name: str) -> None:
    assert user_command(f"USER {name}") == (user.User(name), b"")
    assert user_command(f"USER   {name}  ") == (user.User(name), b"")


@pytest.mark.parametrize("line", ["USER " + "a" * 256, "USER " + "a" * 255 + "é", "USER",
                                  "USER a b", "USER a b c"])
def test_a_user_name_too_long_or_not_one_token_is_refused(line: str) -> None:
    assert user_command(line) == (user.NEED_DATA, b"-ERR syntax: USER <name>\r\n")


@pytest.mark.parametrize("n", [1, 9, 10**10 - 1])
def test_a_written_message_number_is_1_to_10_digits(n: int) -> None:
    assert write_user(user.Retr(n)) == f"RETR {n}"
    assert write_user(user.ListCmd(n)) == f"LIST {n}"
    assert write_user(user.Top(n, 0)) == f"TOP {n} 0"


@pytest.mark.parametrize("n", [0, -1, 10**10, 10**10 + 1, 11**10])
def test_a_message_number_out_of_range_is_not_written(n: int) -> None:
    for command in (user.Retr(n), user.Dele(n), user.Uidl(n)):
        with pytest.raises(user.ProtocolUsageError, match="not a positive number in range"):
            write_user(command)


def test_the_user_client_streams_a_retr_body_but_not_a_listing() -> None:
    client = user.UserClientConnection(stream_threshold=4)
    client.send(user.Retr(1))
    client.send(user.ListCmd())
    client.receive_data(b"+OK hi\r\n+OK message follows\r\nline one\r\n")
    assert client.next_event() == user.UserReply(True, "hi")
    assert client.next_event() == user.BlockChunk(b"line one\r\n")
    assert client.next_event() is user.NEED_DATA
    client.receive_data(b"line two\r\n.\r\n+OK 2 messages\r\n1 10\r\n")
    assert client.next_event() == user.UserReply(True, "message follows", body=b"line two\r\n")
    # The listing's first line is in, past the threshold: still no chunk.
    assert client.next_event() is user.NEED_DATA
    client.receive_data(b"2 20\r\n.\r\n")
    assert client.next_event() == user.UserReply(True, "2 messages", lines=["1 10", "2 20"])


@pytest.mark.parametrize("code", [100, 149, 151, 199, 250])
def test_the_server_sends_a_pull_only_as_150(code: int) -> None:
    # A client reads a block after 150 and after no other code (protocol.md
    # 6.2): another 1xx would leave the body to be read as replies.
    conn = peer_server()
    peer_say(conn, b"EHLO b.example\r\n")
    conn.receive_data(f"ACCEPT {ENVID} To:<r@here.example>\r\n".encode())
    assert isinstance(conn.next_event(), peer.Decision)
    with pytest.raises(peer.ProtocolUsageError, match="a 1xx code, and only 150"):
        conn.send_body_start(code, "5 octets follow")
    conn.send_body(150, "5 octets follow", b"hello")
    assert conn.data_to_send() == b"150 5 octets follow\r\nhello\r\n.\r\n"
