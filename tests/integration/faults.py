"""What the error-path tests put around a real server: scripted stand-ins for
the other side (an SMDP peer, a DNS server) on loopback, and faults injected
into the server's own store.

- :class:`StandInPeer` answers peer sessions the way the test scripts it: a
  destination that refuses one recipient, an origin that refuses a decision,
  a peer that stops reading in the middle of a body. It records what it was
  sent, session by session.
- :class:`StandInDns` is an authoritative DNS server for ``_smdp._tcp``
  SRV questions that can be told to fail (SERVFAIL) or deny (NXDOMAIN).
- :func:`refusing` and :func:`hidden_table` make the server's real store fail
  under it (a trigger that aborts a write; a table renamed away), on SQLite
  and PostgreSQL alike, and undo it, so a test can prove that a failure is
  answered as the protocol says and that nothing half-done is left.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import psycopg

from tests.integration.harness import Server

# -- a scripted SMDP peer ----------------------------------------------------------------

Answer = Callable[[str], "str | None"]
# Appended to an answer: the stand-in sends the rest, then closes the connection.
HANG_UP = "\x00hang-up"


@dataclass
class Exchange:
    """One session with the stand-in, as the stand-in saw it."""

    commands: list[str] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)  # as sent: dot-stuffed, no terminator
    # A data block the client stopped sending before its terminator (the
    # connection closed or was reset in the middle): the octets that came.
    cut_short: bytes | None = None


class StandInPeer:
    """A scripted SMDP peer server on 127.0.0.1 (an OS-chosen port), one
    thread per session.

    ``answer(command_line)`` gives the reply to each command (lines joined
    with CRLF, no final CRLF; ending in HANG_UP, the connection is closed
    after it), or None for the default: the EHLO reply (with
    PIPELINING when ``pipelining``), ``354`` to DATA, ``221`` to QUIT and
    ``250`` to anything else. After a 354 the data block is read and answered
    with ``block_reply(block)`` (default ``250 2.0.0 stored``).

    ``hold``: when set, a data block is read only until its first octets have
    come (``block_started`` is then set), and the rest only once ``hold`` is
    set by the test; with ``receive_buffer`` small, the client is then stuck
    in the middle of its body for as long as the test needs. With
    ``reset_held_once`` the first held block is not read on: its connection
    is reset (RST) instead.

    ``greetings``: what the first sessions are greeted with instead of
    ``220``, one per session (a busy server's ``421``, say); such a session
    ends after its greeting.
    """

    def __init__(self, hostname: str, answer: Answer | None = None, *,
                 pipelining: bool = True, block_reply: Callable[[bytes], str] | None = None,
                 hold: threading.Event | None = None, receive_buffer: int | None = None) -> None:
        self.hostname = hostname
        self.answer = answer or (lambda _command: None)
        self.pipelining = pipelining
        self.block_reply = block_reply or (lambda _block: "250 2.0.0 stored")
        self.hold = hold
        self.block_started = threading.Event()
        self.reset_held_once = False
        self.greetings: list[str] = []
        self.sessions: list[Exchange] = []
        self.errors: list[BaseException] = []
        self._listener = socket.socket()
        if receive_buffer is not None:
            # Set before listen(): accepted sockets inherit it, and the window
            # the client may fill is announced in the handshake.
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> StandInPeer:
        self._accepter.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self.hold is not None:
            self.hold.set()
        self._accepter.join(10)
        for thread in self._threads:
            thread.join(10)
        self._listener.close()

    def commands(self) -> list[str]:
        """Every command of every session so far, in order."""
        return [c for s in list(self.sessions) for c in s.commands]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            exchange = Exchange()
            self.sessions.append(exchange)
            thread = threading.Thread(target=self._session, args=(conn, exchange), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _session(self, conn: socket.socket, exchange: Exchange) -> None:
        try:
            with conn:
                conn.settimeout(30)
                _Session(self, conn, exchange).run()
        except (ConnectionError, TimeoutError):
            pass  # the client went away; what it sent is recorded
        except BaseException as exc:  # reported by the test (assert not peer.errors)
            self.errors.append(exc)


class _Session:
    def __init__(self, peer: StandInPeer, conn: socket.socket, exchange: Exchange) -> None:
        self.peer = peer
        self.conn = conn
        self.exchange = exchange
        self.buf = b""
        self.recipients = 0  # RCPTs answered 2xx in the open transaction

    def _fill(self) -> bool:
        data = self.conn.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> str | None:
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("latin-1")

    def _send(self, text: str) -> None:
        self.conn.sendall(text.encode() + b"\r\n")

    def run(self) -> None:
        peer = self.peer
        if peer.greetings:
            self._send(peer.greetings.pop(0))
            return
        self._send(f"220 {peer.hostname} SMDP ready")
        while (command := self._line()) is not None:
            self.exchange.commands.append(command)
            verb = command.split(" ", 1)[0].upper()
            reply = peer.answer(command)
            if reply is None:
                reply = self._default(verb, command)
            if verb in ("EHLO", "HELO", "ENVELOPE", "MAIL", "RSET"):
                self.recipients = 0
            elif verb == "RCPT" and reply.startswith("2"):
                self.recipients += 1
            if reply.endswith(HANG_UP):
                self._send(reply.removesuffix(HANG_UP))
                return
            self._send(reply)
            if verb == "QUIT":
                return
            if verb == "DATA" and reply.startswith("354"):
                block = self._block()
                if block is None:
                    return
                self.exchange.blocks.append(block)
                self._send(peer.block_reply(block))

    def _default(self, verb: str, command: str) -> str:
        peer = self.peer
        if verb in ("EHLO", "HELO"):
            lines = [f"{peer.hostname} hello {command.split()[-1]}", "SMDP 1"]
            if peer.pipelining:
                lines.append("PIPELINING")
            lines.append("SIZE 26214400")
            return "\r\n".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}"
                               for i, line in enumerate(lines))
        if verb == "DATA":  # as a real server: no data without a recipient
            return "354 go ahead" if self.recipients else "554 5.5.1 No valid recipients"
        return "221 2.0.0 bye" if verb == "QUIT" else "250 2.0.0 ok"

    def _block(self) -> bytes | None:
        """The data block up to its terminator; None (and ``cut_short``) when
        the connection ends first."""
        peer = self.peer
        if peer.hold is not None:
            while not self.buf and self._fill():
                pass
            peer.block_started.set()
            peer.hold.wait(30)
            if peer.reset_held_once:
                peer.reset_held_once = False
                self.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
                self.conn.close()  # with linger 0: a reset, whatever is unread
                self.exchange.cut_short = self.buf
                return None
        while True:
            if self.buf.startswith(b".\r\n"):
                self.buf = self.buf[3:]
                return b""
            end = self.buf.find(b"\r\n.\r\n")
            if end >= 0:
                block, self.buf = self.buf[:end + 2], self.buf[end + 5:]
                return block
            try:
                more = self._fill()
            except ConnectionError:
                more = False
            if not more:
                self.exchange.cut_short = self.buf
                return None


# -- a DNS server that can fail ------------------------------------------------------------

SERVFAIL = "servfail"
NXDOMAIN = "nxdomain"


class StandInDns:
    """Answers ``_smdp._tcp.<domain>`` SRV questions on 127.0.0.1 (UDP, an
    OS-chosen port), for a server's ``[dns] nameservers``.

    ``answers`` maps a domain to the SRV records to give (``(target, port)``),
    or to SERVFAIL or NXDOMAIN; an unknown domain gets ``default``.

    ``txt`` answers TXT questions (MTA-STS's ``_mta-sts.<domain>``): it maps
    the whole name asked to its records, each a string or a tuple of the
    strings of one record, or to SERVFAIL or NXDOMAIN; a name not in it gets
    NXDOMAIN.

    The mail of a domain without an SMDP server (docs/smtp.md, Routing):
    ``mx`` maps a domain to its MX records (``(preference, exchange)``; "."
    for a null MX) or to SERVFAIL or NXDOMAIN, and ``hosts`` a host name to
    its addresses (A for IPv4, AAAA for IPv6) or to SERVFAIL or NXDOMAIN. A
    name listed in either answers the other questions with no data (NOERROR).
    A name in ``txt`` answers TXT questions from there even when it is also
    in ``mx`` or ``hosts`` (an SPF record beside a domain's MX).

    ``negative_ttl``: when set, the negative answers to MX, A and AAAA
    questions (NXDOMAIN, no data) carry an SOA record with that TTL and
    MINIMUM, which lets a resolver cache them (RFC 2308); unset, they carry
    none, and routing asks again each time.

    ``silent`` holds names whose questions, of any type, are never answered:
    a DNS server that times out for them (SPF, DKIM or DMARC ``temperror``).
    The helpers of ``auth_dns.py`` publish SPF, DKIM and DMARC records here.
    """

    def __init__(self, default: str = NXDOMAIN) -> None:
        self.answers: dict[str, list[tuple[str, int]] | str] = {}
        self.txt: dict[str, list[str | tuple[str, ...]] | str] = {}
        self.mx: dict[str, list[tuple[int, str]] | str] = {}
        self.hosts: dict[str, list[str] | str] = {}
        self.silent: set[str] = set()
        self.default = default
        self.negative_ttl: int | None = None
        self.questions: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def config(self) -> str:
        """The ``[dns]`` table that points a server here."""
        return f'[dns]\nnameservers = ["127.0.0.1:{self.port}"]\n'

    def __enter__(self) -> StandInDns:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.questions.append(name)
            if name in self.silent:
                continue
            in_txt = question.rdtype == dns.rdatatype.TXT and name in self.txt
            if question.rdtype != dns.rdatatype.SRV and not in_txt and (
                    name in self.mx or name in self.hosts):
                self._sock.sendto(self._mail_answer(query).to_wire(), addr)
                continue
            domain = name.removeprefix("_smdp._tcp.")
            answer = self.answers.get(domain, self.default)
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            if question.rdtype == dns.rdatatype.TXT:
                self._txt_answer(response, question.name, self.txt.get(name, NXDOMAIN))
                self._sock.sendto(response.to_wire(), addr)
                continue
            if answer == SERVFAIL:
                response.set_rcode(dns.rcode.SERVFAIL)
            elif answer == NXDOMAIN:
                response.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.SRV:
                rrset = response.find_rrset(response.answer, question.name, dns.rdataclass.IN,
                                            dns.rdatatype.SRV, create=True)
                for target, port in answer:
                    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SRV,
                                                  f"0 0 {port} {target}."), 60)
            self._sock.sendto(response.to_wire(), addr)


    @staticmethod
    def _txt_answer(response: dns.message.Message, qname: dns.name.Name,
                    answer: list[str | tuple[str, ...]] | str) -> None:
        if answer == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif answer == NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif answer:
            rrset = response.find_rrset(response.answer, qname, dns.rdataclass.IN,
                                        dns.rdatatype.TXT, create=True)
            for record in answer:
                strings = (record,) if isinstance(record, str) else record
                rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT,
                                                  [s.encode() for s in strings]), 60)

    def _mail_answer(self, query: dns.message.Message) -> dns.message.Message:
        """The answer to an MX, A or AAAA question about a name of ``mx`` or ``hosts``."""
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if question.rdtype == dns.rdatatype.MX:
            found: list[str] | str = [f"{pref} {exchange.rstrip('.')}."
                                      for pref, exchange in self.mx.get(name, [])] \
                if not isinstance(self.mx.get(name), str) else str(self.mx[name])
        else:
            family = ":" if question.rdtype == dns.rdatatype.AAAA else "."
            addresses = self.hosts.get(name, [])
            found = addresses if isinstance(addresses, str) else [
                a for a in addresses if family in a]
        if found == SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif found == NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif found and question.rdtype in (dns.rdatatype.MX, dns.rdatatype.A,
                                          dns.rdatatype.AAAA):
            rrset = response.find_rrset(response.answer, question.name, dns.rdataclass.IN,
                                        question.rdtype, create=True)
            for text in found:
                rrset.add(dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, text), 60)
        if self.negative_ttl is not None and not response.answer and (
                response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)):
            soa = response.find_rrset(response.authority, question.name.parent(),
                                      dns.rdataclass.IN, dns.rdatatype.SOA, create=True)
            soa.add(dns.rdata.from_text(
                dns.rdataclass.IN, dns.rdatatype.SOA,
                f"ns.invalid. hostmaster.invalid. 1 3600 600 86400 {self.negative_ttl}"),
                self.negative_ttl)
        return response


def full_log(server: Server) -> str:
    """The server's whole log (``Server.log`` gives only its end)."""
    return (server.root / f"{server.name}.log").read_text(errors="replace")


# -- faults in the server's own store ----------------------------------------------------------


def execute(server: Server, *statements: str) -> None:
    """Run statements on the server's store, beside the running server (the
    store is shared: SQLite in WAL mode, or PostgreSQL)."""
    if server.backend == "postgresql":
        with psycopg.connect(server.dsn, autocommit=True) as pg:
            for sql in statements:
                pg.execute(sql.encode())
        return
    db = sqlite3.connect(server.db_path, timeout=30, isolation_level=None)
    try:
        for sql in statements:
            db.execute(sql)
    finally:
        db.close()


@contextlib.contextmanager
def refusing(server: Server, operation: str, table: str, when: str = "") -> Iterator[None]:
    """While inside, the store refuses ``operation`` (INSERT, UPDATE or
    DELETE) on ``table`` (where the SQL condition ``when`` on NEW/OLD holds):
    a trigger aborts the statement and with it the server's transaction."""
    condition = f" WHEN ({when})" if when else ""
    if server.backend == "postgresql":
        execute(server,
                "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
                f"CREATE TRIGGER injected_fault BEFORE {operation} ON {table} "
                f"FOR EACH ROW{condition} EXECUTE FUNCTION injected_fault()")
        undo = (f"DROP TRIGGER injected_fault ON {table}", "DROP FUNCTION injected_fault()")
    else:
        execute(server,
                f"CREATE TRIGGER injected_fault BEFORE {operation} ON {table} "
                f"FOR EACH ROW{condition} BEGIN SELECT RAISE(ABORT, 'injected fault'); END")
        undo = ("DROP TRIGGER injected_fault",)
    try:
        yield
    finally:
        execute(server, *undo)


@contextlib.contextmanager
def hidden_table(server: Server, table: str) -> Iterator[None]:
    """While inside, ``table`` is gone (renamed away): every statement of the
    server that reads or writes it fails."""
    execute(server, f"ALTER TABLE {table} RENAME TO {table}_hidden")
    try:
        yield
    finally:
        execute(server, f"ALTER TABLE {table}_hidden RENAME TO {table}")
