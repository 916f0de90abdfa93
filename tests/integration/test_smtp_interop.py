"""The SMTP codec against independent implementations over loopback sockets:
our client codec drives the real aiosmtpd server, and Python's smtplib drives
our server codec (in a tiny test-only socket loop). Wire compatibility, not
our servers: no store, so it runs in the default pass only."""

from __future__ import annotations

import smtplib
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from smdp.certs import make_ca, make_cert, write_issued
from smdp.protocol import smtp

pytestmark = pytest.mark.own_backend

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- our client codec -> aiosmtpd ---------------------------------------------------


@dataclass
class Sink:
    """An aiosmtpd handler that keeps what it is given."""

    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(self, server: object, session: object, envelope: object,
                          address: str, rcpt_options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                              envelope.original_content))  # type: ignore[attr-defined]
        return "250 2.0.0 Message accepted"


@pytest.fixture
def aiosmtpd_server() -> Iterator[tuple[int, Sink]]:
    sink = Sink()
    port = free_port()
    controller = aiosmtpd_controller.Controller(sink, hostname="127.0.0.1", port=port,
                                                enable_SMTPUTF8=True)
    controller.start()
    try:
        yield port, sink
    finally:
        controller.stop()


class Wire:
    """A blocking socket and our client codec: send commands, read replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = smtp.SmtpClientConnection()

    def replies(self, wire: bytes, count: int) -> list[smtp.Reply]:
        self.sock.sendall(wire)
        out: list[smtp.Reply] = []
        while len(out) < count:
            event = self.conn.next_event()
            if event is smtp.NEED_DATA:
                self.conn.receive_data(self.sock.recv(65536))
            else:
                assert isinstance(event, smtp.Reply), event
                out.append(event)
        return out


def test_our_client_delivers_to_aiosmtpd(aiosmtpd_server: tuple[int, Sink]) -> None:
    port, sink = aiosmtpd_server
    wire = Wire(port)
    [greeting] = wire.replies(b"", 1)
    assert greeting.code == 220 and greeting.to == "<greeting>"
    [ehlo] = wire.replies(wire.conn.send(smtp.Helo("client.example")), 1)
    caps = wire.conn.capabilities
    assert ehlo.code == 250 and caps is not None
    assert caps.size == 33554432 and caps.eightbitmime and caps.smtputf8
    commands: list[smtp.SmtpCommand] = [
        smtp.Mail("s@b.example", size=40, body="8BITMIME", smtputf8=True),
        smtp.Rcpt("r@here.example"), smtp.Rcpt("nobody@here.example"), smtp.Rcpt("ü@here.example"),
        smtp.DataStart(),
    ]
    # aiosmtpd does not offer PIPELINING: one command at a time.
    replies = [r for c in commands for r in wire.replies(wire.conn.send(c), 1)]
    assert [(r.code, r.to) for r in replies] == [
        (250, "MAIL"), (250, "RCPT"), (550, "RCPT"), (250, "RCPT"), (354, "DATA")]
    assert str(replies[2]) == "550 5.1.1 No such user here"
    pieces = [b"Subject: h\xc3\xa9\r\n\r\n.leading dot\n", b"bare LF above\r", b"\n..two\r\nend"]
    body = b"".join(wire.conn.send(smtp.DataPart(p)) for p in pieces)
    [done] = wire.replies(body + wire.conn.send(smtp.DataEnd()), 1)
    assert (done.code, done.to) == (250, "<end of data>")
    [bye] = wire.replies(wire.conn.send(smtp.Quit()), 1)
    assert bye.code == 221
    wire.sock.close()
    assert sink.messages == [(
        "s@b.example", ["r@here.example", "ü@here.example"],
        b"Subject: h\xc3\xa9\r\n\r\n.leading dot\r\nbare LF above\r\n..two\r\nend\r\n",
    )]


# -- smtplib -> our server codec -----------------------------------------------------


@dataclass
class Received:
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


def serve(listener: socket.socket, received: Received, tls: ssl.SSLContext | None,
          **options: object) -> None:
    """One session of our server codec on a blocking socket: the test's app."""
    sock, _ = listener.accept()
    conn = smtp.SmtpServerConnection("mx.here.example", max_message_size=10**6,  # type: ignore[arg-type]
                                     stream_threshold=64, **options)
    sock.sendall(conn.greeting())
    sender, rcpts, chunks = "", [], []
    try:
        while conn.state is not smtp.SmtpState.CLOSED:
            data = sock.recv(65536)
            conn.receive_data(data)
            while (event := conn.next_event()) not in (smtp.NEED_DATA, smtp.CLOSED):
                match event:
                    case smtp.BlockChunk(data=piece):
                        chunks.append(piece)
                    case smtp.DataFailed():
                        chunks = []
                    case smtp.Mail(sender=address):
                        sender, rcpts, chunks = address, [], []
                        conn.ok()
                    case smtp.Rcpt(recipient=address) if address.startswith("nobody@"):
                        conn.reply(550, "No such user here", "5.1.1")
                    case smtp.Rcpt(recipient=address):
                        rcpts.append(address)
                        conn.ok()
                    case smtp.DataComplete(data=rest):
                        received.messages.append((sender, rcpts, b"".join(chunks) + rest))
                        conn.ok()
                    case smtp.Auth(username=user, password=password):
                        received.logins.append((user, password))
                        if password == "pw":
                            conn.ok()
                        else:
                            conn.reply(535, "Authentication credentials invalid", "5.7.8")
                    case _:
                        conn.ok()
            sock.sendall(conn.data_to_send())
            if conn.tls and tls is not None and not isinstance(sock, ssl.SSLSocket):
                sock = tls.wrap_socket(sock, server_side=True)  # after the 220
            if not data:
                break
    finally:
        sock.close()


Server = tuple[int, Received, Callable[..., None]]


@pytest.fixture
def our_server() -> Iterator[Server]:
    """Our server codec on a loopback port; call the third item to serve one
    session (its keywords: ``tls``, an SSL context for STARTTLS, and the
    connection's options)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    received = Received()
    threads: list[threading.Thread] = []

    def start(tls: ssl.SSLContext | None = None, **options: object) -> None:
        options = {"auth_mechanisms": ("PLAIN", "LOGIN"), "auth_requires_tls": False} | options
        thread = threading.Thread(target=serve, args=(listener, received, tls), kwargs=options,
                                  daemon=True)
        thread.start()
        threads.append(thread)

    try:
        yield int(listener.getsockname()[1]), received, start
    finally:
        for thread in threads:
            thread.join(timeout=10)
        listener.close()


def test_smtplib_sends_through_our_server(our_server: Server) -> None:
    port, received, start = our_server
    start()
    message = ("Subject: caf\u00e9\r\n\r\n.dot first\r\n..two dots\r\nlast").encode()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as client:
        code, _ = client.ehlo()
        assert code == 250
        assert client.has_extn("pipelining") and client.has_extn("smtputf8")
        assert client.has_extn("size") and client.esmtp_features["size"] == str(10**6)
        client.login("alice", "pw")  # AUTH PLAIN with its initial response
        refused = client.sendmail("s@b.example",
                                  ["r@here.example", "nobody@here.example", "ü@here.example"],
                                  message, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        assert refused == {"nobody@here.example": (550, b"5.1.1 No such user here")}
        assert client.verify("alice")[0] == 252
        assert client.noop() == (250, b"2.0.0 OK")
    assert received.logins == [("alice", "pw")]
    assert received.messages == [("s@b.example", ["r@here.example", "ü@here.example"],
                                  message + b"\r\n")]


def test_smtplib_auth_login_exchange_and_a_wrong_password(our_server: Server) -> None:
    port, received, start = our_server
    start()
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.user, client.password = "alice", "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.auth("LOGIN", client.auth_login, initial_response_ok=False)
        assert refused.value.smtp_code == 535
        client.password = "pw"
        assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235
    assert received.logins == [("alice", "wrong"), ("alice", "pw")]


# -- STARTTLS, both ways ---------------------------------------------------------------


@pytest.fixture
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for mx.here.example (127.0.0.1) and a client trusting its CA."""
    ca = make_ca("smtp-interop test CA")
    issued = make_cert("mx.here.example", issuer=ca, addresses=("127.0.0.1",))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = write_issued(issued, Path(tmp), "mx")
        server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    return server_ctx, client_ctx


def test_smtplib_starttls_then_auth_through_our_server(
        our_server: Server, tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    port, received, start = our_server
    server_ctx, client_ctx = tls_pair
    start(tls=server_ctx, starttls=True, auth_requires_tls=True)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert client.starttls(context=client_ctx)[0] == 220
        client.ehlo()
        assert client.has_extn("auth") and not client.has_extn("starttls")
        client.login("alice", "pw")
        client.sendmail("s@b.example", ["r@here.example"], b"Subject: tls\r\n\r\nhi\r\n")
    assert received.messages == [("s@b.example", ["r@here.example"],
                                  b"Subject: tls\r\n\r\nhi\r\n")]


def test_our_client_starttls_with_aiosmtpd(tls_pair: tuple[ssl.SSLContext, ssl.SSLContext]
                                           ) -> None:
    server_ctx, client_ctx = tls_pair
    sink = Sink()
    port = free_port()
    controller = aiosmtpd_controller.Controller(sink, hostname="127.0.0.1", port=port,
                                                tls_context=server_ctx, require_starttls=True)
    controller.start()
    try:
        wire = Wire(port)
        wire.replies(b"", 1)
        wire.replies(wire.conn.send(smtp.Helo("client.example")), 1)
        assert wire.conn.capabilities is not None and wire.conn.capabilities.starttls
        [ready] = wire.replies(wire.conn.send(smtp.StartTls()), 1)
        assert (ready.code, ready.to) == (220, "STARTTLS")
        wire.conn.start_tls()
        assert wire.conn.capabilities is None
        wire.sock = client_ctx.wrap_socket(wire.sock, server_hostname="mx.here.example")
        wire.replies(wire.conn.send(smtp.Helo("client.example")), 1)
        assert wire.conn.capabilities is not None and not wire.conn.capabilities.starttls
        replies = [r for c in (smtp.Mail("s@b.example"), smtp.Rcpt("r@here.example"),
                               smtp.DataStart())
                   for r in wire.replies(wire.conn.send(c), 1)]
        assert [r.code for r in replies] == [250, 250, 354]
        [done] = wire.replies(wire.conn.send(smtp.Data(b"Subject: tls\n\nhi")), 1)
        assert done.code == 250
        wire.replies(wire.conn.send(smtp.Quit()), 1)
        wire.sock.close()
    finally:
        controller.stop()
    assert sink.messages == [("s@b.example", ["r@here.example"],
                              b"Subject: tls\r\n\r\nhi\r\n")]
