"""A blocking user-port client (Table 5), built on the sans-IO user codec."""

from __future__ import annotations

import socket
import ssl

from smdp.protocol import user as wire
from smdp.protocol.framing import CLOSED, NEED_DATA


class ClientError(Exception):
    """The server said -ERR, or the connection failed; the message says which."""


ENVS_PAGE = 100  # envelopes per ENVS page the client asks for


class UserClient:
    """``tls``: None (plaintext; the server takes passwords so only from
    loopback, if configured to), ``"starttls"`` (STLS, RFC 2595) or
    ``"implicit"`` (TLS from the first byte, the ``user_tls`` listener). The
    server's certificate is checked against ``context`` (default: the system
    trust store) and ``server_name`` (default: the host connected to)."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0, tls: str | None = None,
                 context: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        if tls not in (None, "starttls", "implicit"):
            raise ValueError(f"tls must be None, 'starttls' or 'implicit', not {tls!r}")
        self.host = host
        self.port = port
        self.server_name = server_name or host
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
            if tls == "implicit":
                self.sock = (context or ssl.create_default_context()).wrap_socket(
                    self.sock, server_hostname=self.server_name)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self.conn = wire.UserClientConnection()
        self.closed = False
        try:
            self.greeting = self._read()
        except ClientError:
            self.sock.close()
            raise
        if tls == "starttls":
            self.starttls(context)

    def starttls(self, context: ssl.SSLContext | None = None) -> None:
        """STLS, then the handshake (RFC 2595)."""
        self.call(wire.Stls())
        try:
            self.conn.start_tls()
            self.sock = (context or ssl.create_default_context()).wrap_socket(
                self.sock, server_hostname=self.server_name)
        except (OSError, ssl.SSLError, wire.RemoteProtocolError) as exc:
            raise ClientError(f"TLS with {self.host} failed: {exc}") from None

    def _read(self) -> wire.UserReply:
        try:
            return self._next_reply()
        except wire.RemoteProtocolError as exc:
            raise ClientError(
                f"{self.host}:{self.port} does not answer as an SMDP user port ({exc}); "
                "check --server: it must name the user port, not the peer port") from None

    def _next_reply(self) -> wire.UserReply:
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                try:
                    data = self.sock.recv(65536)
                except OSError as exc:
                    raise ClientError(f"connection lost: {exc}") from None
                self.conn.receive_data(data)
                if not data:
                    raise ClientError("the server closed the connection")
                continue
            if event is CLOSED:
                raise ClientError("the server closed the connection")
            assert isinstance(event, wire.UserReply)
            return event

    def call(self, command: wire.UserCommand | wire.Message) -> wire.UserReply:
        """Send one command and return the reply; -ERR raises ClientError."""
        try:
            self.sock.sendall(self.conn.send(command))
        except OSError as exc:
            raise ClientError(f"connection lost: {exc}") from None
        reply = self._read()
        if not reply.ok:
            raise ClientError(reply.text)
        return reply

    def login(self, name: str, password: str, *, verb: str = "PWD") -> wire.UserReply:
        self.call(wire.User(name))
        return self.call(wire.Pass(password, verb))

    def change_password(self, current: str, new: str) -> wire.UserReply:
        """PASSWD then NEWPASS (protocol.md 12.9)."""
        self.call(wire.Passwd(current))
        return self.call(wire.NewPass(new))

    def submit(self, recipients: list[str], message: bytes, identity: str | None = None) -> str:
        self.call(wire.MailCmd(identity))
        for rcpt in recipients:
            self.call(wire.RcptCmd(rcpt))
        self.call(wire.DataCmd())
        return self.call(wire.Message(message)).text

    def quit(self) -> None:
        if self.closed:
            return
        try:
            self.call(wire.Quit())
        except ClientError:
            pass
        finally:
            self.closed = True
            self.sock.close()

    # -- messages by their entry id (protocol.md 12.4, 12.5) -----------------------
    #
    # The client names every mailbox entry by its id, which never changes and is
    # never reused; POP3 commands take the session's message numbers instead.
    # UIDL bridges them: each message's uid is <envid>.<entry id>.

    def message_number(self, entry_id: int) -> int:
        """This session's POP3 number of the message of entry ``entry_id``;
        if it is not a message to read, ClientError says what it is."""
        after: int | None = 0
        while after is not None:  # a page at a time: a big maildrop is never sent whole
            reply = self.call(wire.Uidl(after=after, limit=wire.MAX_PAGE))
            for line in reply.lines or []:
                number, _, uid = line.partition(" ")
                if uid.rpartition(".")[2] == str(entry_id):
                    return int(number)
            after = wire.page_continuation(reply.text)
        raise ClientError(self._not_a_message(entry_id))

    def envelopes(self, show_all: bool, page: int = ENVS_PAGE) -> wire.UserReply:
        """ENVS [ALL] a page at a time, following each answer's continuation:
        one reply with every line, its text counting them all."""
        lines: list[str] = []
        after: int | None = 0
        while after is not None:
            reply = self.call(wire.Envs(show_all, after=after, limit=page))
            lines += reply.lines or []
            after = wire.page_continuation(reply.text)
        return wire.UserReply(True, f"{len(lines)} envelope(s)", lines)

    def _not_a_message(self, entry_id: int) -> str:
        try:
            reply = self.call(wire.EnvShow(entry_id))
        except ClientError:
            return f"no message {entry_id} in your mailbox"
        fields = dict(line.partition(": ")[::2] for line in reply.lines or [])
        state, reason = fields.get("State", ""), fields.get("Reason", "-")
        if state == "deleted":
            return f"message {entry_id} was deleted"
        if state == "pending":
            return (f"envelope {entry_id} awaits your decision; accept it first "
                    f"(smdp client accept {entry_id})")
        if state == "fetching":
            return (f"message {entry_id} is still being fetched from the sender's server; "
                    "try again shortly")
        rejected = {"rejected": "rejected", "spam": "rejected as spam",
                    "spammer": "rejected, its sender black-listed"}
        if state in rejected:
            return f"envelope {entry_id} was {rejected[state]}; there is no message"
        detail = f": {reason}" if reason not in ("", "-") else ""
        return f"envelope {entry_id} is {state}{detail}; there is no message"

    def read(self, entry_id: int) -> bytes:
        """The message of entry ``entry_id`` (RETR)."""
        number = self.message_number(entry_id)
        try:
            return self.call(wire.Retr(number)).body or b""
        except ClientError as exc:
            if "not stored here yet" not in str(exc):
                raise
            # The server's text names the session's number; the user knows the id.
            raise ClientError(f"message {entry_id} is not stored here yet") from None

    def delete(self, entry_id: int) -> str:
        """Delete the message of entry ``entry_id``: DELE, then QUIT, which is
        when a POP3 server removes it (so the session ends here)."""
        self.call(wire.Dele(self.message_number(entry_id)))
        try:
            self.call(wire.Quit())
        finally:
            self.closed = True
            self.sock.close()
        return f"message {entry_id} deleted"
