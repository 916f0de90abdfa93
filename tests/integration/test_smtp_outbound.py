"""Outbound SMTP from the durable queue (issue 11, item 2; docs/smtp.md,
"Outbound delivery"): a real server (in process) delivers to a real aiosmtpd
on loopback, reached through MX records served by the stand-in DNS, with
``[smtp] outbound_port`` pointing at aiosmtpd's free port."""

from __future__ import annotations

import asyncio
import contextlib
import socketserver
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from smdp.certs import make_ca, make_cert, write_issued
from smdp.mail.dkim import SigningKey, generate_key
from smdp.store import open_store
from smdp.store.records import CachedPolicy
from tests.integration.faults import StandInDns
from tests.integration.harness import Server, free_ports, running, wait_until
from tests.integration.test_notices import failed_in, mailbox
from tests.integration.test_smtp_routing import free_port, sent_lines

from .inprocess import InProcessServer, inprocess_pair

pytestmark = pytest.mark.own_backend

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
dkim = pytest.importorskip("dkim")

ALICE, BOB = "alice@a.example", "bob@b.example"
CAROL, DAVE, ERIN = "carol@c.example", "dave@c.example", "erin@c.example"
MESSAGE = b"Subject: lunch\r\nTo: carol@c.example\r\n\r\nAt noon?\r\n"


@dataclass
class Arrived:
    sender: str
    recipients: list[str]
    content: bytes
    tls: bool
    options: list[str]


@dataclass
class Mx:
    """An aiosmtpd handler that keeps what arrives. ``soft_once``:
    recipients answered 451 the first time; ``hard``: answered 550;
    ``pipelining``: PIPELINING offered (aiosmtpd reads commands in order,
    so a pipelined group is served as RFC 2920 asks)."""

    soft_once: set[str] = field(default_factory=set)
    hard: set[str] = field(default_factory=set)
    pipelining: bool = True
    ehlo_refused: bool = False  # EHLO answered 502: the client falls back to HELO
    end_reply: str = "250 2.0.0 Queued as 4711"  # the answer to the end of data
    arrived: list[Arrived] = field(default_factory=list)
    rcpt_commands: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.ehlo_refused:
            return ["502 5.5.1 EHLO not implemented"]
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.lock:
            self.rcpt_commands.append(address)
            if address in self.soft_once:
                self.soft_once.discard(address)
                return "451 4.3.0 Try again later"
        if address in self.hard:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.arrived.append(Arrived(envelope.mail_from, list(envelope.rcpt_tos),
                                        envelope.original_content, session.ssl is not None,
                                        list(envelope.mail_options)))
        return self.end_reply


@dataclass
class World:
    dns: StandInDns
    mx: Mx
    port: int
    root: Path
    ca_file: Path | None = None

    def config(self, more: str = "") -> str:
        return (self.dns.config + f"[smtp]\noutbound = true\noutbound_port = {self.port}\n"
                + more)


@contextlib.contextmanager
def world(root: Path, mx: Mx, tls: ssl.SSLContext | None = None) -> Iterator[World]:
    """aiosmtpd as c.example's one MX host (mx.c.example, 127.0.0.1)."""
    port = free_port()
    controller = aiosmtpd_controller.Controller(mx, hostname="127.0.0.1", port=port,
                                                tls_context=tls, require_starttls=False,
                                                enable_SMTPUTF8=True)
    controller.start()
    try:
        with StandInDns() as dns:
            dns.mx = {"c.example": [(10, "mx.c.example")]}
            dns.hosts = {"mx.c.example": ["127.0.0.1"]}
            yield World(dns, mx, port, root)
    finally:
        controller.stop()


@contextlib.contextmanager
def sender(w: World, more: str = "", before_start: Any = None) -> Iterator[InProcessServer]:
    a = InProcessServer(w.root, "a.example", extra=w.config(more))
    a.add_user(ALICE)
    if before_start is not None:
        before_start(a)
    a.start()
    try:
        yield a
    finally:
        a.stop()


def submit(server: InProcessServer, rcpts: list[str], raw: bytes = MESSAGE) -> str:
    c = server.client(ALICE)
    try:
        reply = c.submit(rcpts, raw)
    finally:
        c.quit()
    return reply.split()[2]  # "queued as <msgid> ..."


def query(server: InProcessServer, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    """Read the server's store read-only, for what no command shows."""
    db = sqlite3.connect(f"file:{server.config.store_path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def states(server: InProcessServer, msgid: str) -> dict[str, tuple[str, str]]:
    """SENT: recipient -> (state, route)."""
    return {rcpt: (state, route) for rcpt, (state, route, _detail)
            in sent_lines(server, msgid).items()}


def reply_from(w: World, text: str) -> str:
    return f"{text} (from mx.c.example [127.0.0.1]:{w.port})"


def cache_policy(mode: str) -> Callable[[InProcessServer], None]:
    """Before the start: c.example's MTA-STS policy (listing mx.c.example)
    in the server's cache, as a fetch would have left it; it holds whatever
    DNS says (RFC 8461 5.1), so no HTTPS server is needed here."""
    def put(a: InProcessServer) -> None:
        store = open_store(a.config)
        try:
            now = time.time()
            store.put_mta_sts_policy(CachedPolicy(
                "c.example", "id1", f"version: STSv1\nmode: {mode}\nmx: mx.c.example\n"
                "max_age: 86400\n", now, now + 86400))
        finally:
            store.close()
    return put


# -- the tests -----------------------------------------------------------------------


def test_a_message_to_an_smdp_and_an_smtp_recipient_reaches_both(tmp_path: Path) -> None:
    mx = Mx()
    with world(tmp_path, mx) as w, inprocess_pair(
            tmp_path, extra_a=w.config(), users={"a.example": (ALICE,),
                                                 "b.example": (BOB,)}) as (a, _b):
        msgid = submit(a, [BOB, CAROL])
        wait_until(lambda: states(a, msgid) == {BOB: ("envelope-sent", "smdp"),
                                                CAROL: ("delivered", "smtp")},
                   what="bob's envelope sent by SMDP, carol's message delivered by SMTP")
        assert sent_lines(a, msgid)[CAROL][2] == reply_from(w, "250 2.0.0 Queued as 4711")
        [arrived] = mx.arrived
        assert (arrived.sender, arrived.recipients) == (ALICE, [CAROL])
        head, _, body = arrived.content.partition(b"\r\n\r\n")
        assert b"Subject: lunch" in head and b"Received: from" in head
        assert body == b"At noon?\r\n"
        assert f"SIZE={len(arrived.content)}" in arrived.options  # no DKIM here
        assert not query(a, "SELECT id FROM queue WHERE kind='send-smtp'")


def test_a_host_that_cannot_be_reached_passes_to_the_next_mx(tmp_path: Path) -> None:
    """RFC 5321 5.1: the preferred MX host refuses the connection (nothing
    listens on 127.0.0.2), so the next one gets the message."""
    mx = Mx()
    with world(tmp_path, mx) as w, sender(w) as a:
        w.dns.mx = {"c.example": [(10, "mx1.c.example"), (20, "mx2.c.example")]}
        w.dns.hosts = {"mx1.c.example": ["127.0.0.2"], "mx2.c.example": ["127.0.0.1"]}
        msgid = submit(a, [CAROL])
        wait_until(lambda: states(a, msgid) == {CAROL: ("delivered", "smtp")},
                   what="carol delivered by the second MX host")
        assert sent_lines(a, msgid)[CAROL][2] == (
            f"250 2.0.0 Queued as 4711 (from mx2.c.example [127.0.0.1]:{w.port})")
        assert w.dns.questions.index("mx1.c.example") < w.dns.questions.index("mx2.c.example")
    assert [m.recipients for m in mx.arrived] == [[CAROL]]


def test_helo_when_ehlo_is_refused_and_a_5xx_after_data_fails_everyone(
        tmp_path: Path) -> None:
    """EHLO refused: HELO, and MAIL without any extension (RFC 5321 3.2). The
    server refuses the message after its end: every accepted recipient
    fails with that reply, and the sender gets one report naming both."""
    mx = Mx(ehlo_refused=True, end_reply="554 5.7.1 Message rejected as spam")
    with world(tmp_path, mx) as w, sender(w) as a:
        msgid = submit(a, [CAROL, DAVE])
        wait_until(lambda: states(a, msgid) == {CAROL: ("failed", "smtp"),
                                                DAVE: ("failed", "smtp")},
                   what="both recipients failed with the reply to the end of data")
        assert {rcpt: detail for rcpt, (_s, _r, detail) in sent_lines(a, msgid).items()} == {
            rcpt: reply_from(w, "554 5.7.1 Message rejected as spam") for rcpt in (CAROL, DAVE)}
        [report] = mailbox(a, ALICE)  # type: ignore[arg-type]
        assert {rcpt: status for rcpt, (status, _d) in failed_in(report).items()} == {
            CAROL: "5.7.1", DAVE: "5.7.1"}
    [arrived] = mx.arrived
    assert sorted(arrived.recipients) == [CAROL, DAVE]
    assert arrived.options == []  # HELO: no SIZE, no BODY


def test_a_testing_policy_delivers_past_a_bad_certificate_and_records_it(
        tmp_path: Path) -> None:
    """MTA-STS ``testing`` (RFC 8461 5): the MX's certificate comes from a CA
    this server does not trust; the failure is recorded and the message is
    delivered anyway, over TLS on a new connection without the check."""
    ca = make_ca("nobody trusts this CA")
    issued = make_cert("mx.c.example", issuer=ca, addresses=("127.0.0.1",))
    cert, key = write_issued(issued, tmp_path, "mx")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    mx = Mx()
    with world(tmp_path, mx, tls) as w, sender(
            w, before_start=cache_policy("testing")) as a:
        msgid = submit(a, [CAROL])
        wait_until(lambda: states(a, msgid) == {CAROL: ("delivered", "smtp")},
                   what="carol delivered despite the certificate")
        # no command shows this: the TLS outcome kept with the recipient
        assert query(a, "SELECT tls FROM out_recipients WHERE recipient=?", (CAROL,)) == [
            ("certificate-invalid (mta-sts testing)",)]
    [arrived] = mx.arrived
    assert arrived.tls


@pytest.mark.parametrize("pipelining", [True, False])
def test_several_recipients_in_one_signed_transaction(tmp_path: Path, pipelining: bool) -> None:
    """Three recipients of one domain in one transaction, pipelined where
    offered; the DKIM-Signature verifies on arrival (dkimpy, an independent
    verifier), and the 8-bit body goes with BODY=8BITMIME."""
    pem = generate_key("rsa")
    key_file = tmp_path / "a.example.dkim.pem"
    key_file.write_bytes(pem)
    key = SigningKey.from_pem("a.example", "s1", "rsa", pem)
    mx = Mx(pipelining=pipelining)
    raw = "Subject: caf\u00e9\r\nTo: carol@c.example\r\n\r\nCaf\u00e9 at noon?\r\n".encode()
    with world(tmp_path, mx) as w, sender(
            w, f'[dkim."a.example"]\nselector = "s1"\nkey = "{key_file}"\n') as a:
        msgid = submit(a, [CAROL, DAVE, ERIN], raw)
        wait_until(lambda: set(states(a, msgid).values()) == {("delivered", "smtp")},
                   what="every recipient delivered by SMTP")
    [arrived] = mx.arrived
    assert sorted(arrived.recipients) == [CAROL, DAVE, ERIN]
    assert "BODY=8BITMIME" in arrived.options
    assert arrived.content.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return key.public_record().encode() if name.decode() == key.record_name else b""

    assert dkim.verify(arrived.content, dnsfunc=dnsfunc)
    assert message_from_bytes(arrived.content)["Subject"] is not None


def test_starttls_with_a_verified_certificate_is_recorded(tmp_path: Path) -> None:
    ca = make_ca("outbound test CA")
    issued = make_cert("mx.c.example", issuer=ca, addresses=("127.0.0.1",))
    cert, key = write_issued(issued, tmp_path, "mx")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    mx = Mx()
    with world(tmp_path, mx, tls) as w, sender(
            w, f'[smtp.tls]\nrequire_verified = ["c.example"]\nca = "{ca_file}"\n') as a:
        msgid = submit(a, [CAROL])
        wait_until(lambda: states(a, msgid) == {CAROL: ("delivered", "smtp")},
                   what="carol's message delivered over TLS")
        # no command shows this: the TLS outcome kept with the recipient
        assert query(a, "SELECT tls FROM out_recipients WHERE recipient=?", (CAROL,)) == [
            ("verified (require_verified)",)]
    [arrived] = mx.arrived
    assert arrived.tls


def test_a_4xx_is_retried_for_that_recipient_only(tmp_path: Path) -> None:
    mx = Mx(soft_once={DAVE})
    with world(tmp_path, mx) as w, sender(w) as a:
        msgid = submit(a, [CAROL, DAVE])
        wait_until(lambda: states(a, msgid) == {CAROL: ("delivered", "smtp"),
                                                DAVE: ("delivered", "smtp")},
                   what="carol delivered at once, dave after the retry")
    assert [m.recipients for m in mx.arrived] == [[CAROL], [DAVE]]
    assert mx.rcpt_commands == [CAROL, DAVE, DAVE]  # carol, settled, never sent again


def test_a_5xx_recipient_fails_with_the_remote_reply_in_a_report(tmp_path: Path) -> None:
    mx = Mx(hard={DAVE})
    with world(tmp_path, mx) as w, sender(w) as a:
        msgid = submit(a, [CAROL, DAVE])
        wait_until(lambda: states(a, msgid) == {CAROL: ("delivered", "smtp"),
                                                DAVE: ("failed", "smtp")},
                   what="carol delivered, dave refused")
        assert sent_lines(a, msgid)[DAVE][2] == reply_from(w, "550 5.1.1 No such user here")
        [report] = mailbox(a, ALICE)  # type: ignore[arg-type]
        [(rcpt, (status, diagnostic))] = failed_in(report).items()
        assert (rcpt, status) == (DAVE, "5.1.1")
        assert diagnostic is not None and "550 5.1.1 No such user here" in diagnostic
    assert [m.recipients for m in mx.arrived] == [[CAROL]]


def test_an_enforced_mta_sts_policy_refuses_plaintext_and_retries(tmp_path: Path) -> None:
    """aiosmtpd offers no STARTTLS here; the domain's cached MTA-STS policy
    (mode enforce) lists the MX host: the message is never sent in
    plaintext, the recipient stays queued with the reason, and the job is
    retried."""
    mx = Mx()
    with world(tmp_path, mx) as w, sender(w, before_start=cache_policy("enforce")) as a:
        msgid = submit(a, [CAROL])
        # no command shows this: the job's attempts
        wait_until(lambda: query(a, "SELECT attempts FROM queue WHERE kind='send-smtp'")
                   >= [(2,)], what="the send-smtp job retried")
        [state, route, detail] = sent_lines(a, msgid)[CAROL]
        assert (state, route) == ("queued", "smtp")
        assert detail.startswith("the MTA-STS policy of c.example (mode enforce) requires TLS "
                                 "with a verified certificate, and mx.c.example did not offer "
                                 "STARTTLS")
        assert query(a, "SELECT tls FROM out_recipients WHERE recipient=?", (CAROL,)) == [
            ("refused not-offered (mta-sts enforce)",)]
    assert mx.arrived == [] and mx.rcpt_commands == []


@dataclass
class HoldingMx(Mx):
    """Holds its answer to the first message's end of data until released,
    so that the sender can be killed inside SMTP's duplicate window."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: asyncio.Event | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        first = not self.entered.is_set()
        with self.lock:
            self.arrived.append(Arrived(envelope.mail_from, list(envelope.rcpt_tos),
                                        envelope.original_content, session.ssl is not None,
                                        list(envelope.mail_options)))
        if first:
            self.release = asyncio.Event()
            self.entered.set()
            await self.release.wait()
        return "250 2.0.0 Queued as 4711"


def test_a_sigkill_after_the_final_dot_loses_nothing(tmp_path: Path) -> None:
    """The sender is killed after the whole message went out and before the
    250 was recorded (docs/smtp.md, "Crash safety"): after the restart the
    job runs again and the recipient is delivered; the receiver holds the
    message twice, the one duplicate SMTP allows, and never more."""
    mx = HoldingMx()
    port = free_port()
    controller = aiosmtpd_controller.Controller(mx, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with StandInDns() as dns:
            dns.mx = {"c.example": [(10, "mx.c.example")]}
            dns.hosts = {"mx.c.example": ["127.0.0.1"]}
            peer, user = free_ports(2)
            a = Server("a.example", "smdp.a.example", tmp_path, peer, user,
                       dns.config + f"[smtp]\noutbound = true\noutbound_port = {port}\n")
            a.write_config()
            a.add_user(ALICE)
            with running(a):
                c = a.client(ALICE)
                try:
                    msgid = c.submit([CAROL], MESSAGE).split()[2]
                finally:
                    c.quit()
                wait_until(mx.entered.is_set, what="the message at the MX, its 250 held")
                a.kill()
                release = mx.release
                assert release is not None
                controller.loop.call_soon_threadsafe(release.set)
                a.start()
                wait_until(lambda: a.sent_routes(ALICE, msgid) == {
                    CAROL: ("smtp", "delivered")}, what="carol delivered after the restart")
                wait_until(lambda: not a.queue(), what="the job done")
    finally:
        controller.stop()
    assert [m.recipients for m in mx.arrived] == [[CAROL], [CAROL]]
    assert mx.arrived[0].content == mx.arrived[1].content


class ScriptedMx(socketserver.ThreadingTCPServer):
    """A raw SMTP stand-in on 127.0.0.2 (the same port as aiosmtpd on
    127.0.0.1): ``busy`` greets 421 and hangs up; otherwise it takes the
    whole message and hangs up after its final dot, before any reply."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, *, busy: bool) -> None:
        self.busy = busy
        self.sessions = 0
        self.messages = 0
        super().__init__(("127.0.0.2", port), _Scripted)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Scripted(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        mx = self.server
        assert isinstance(mx, ScriptedMx)
        mx.sessions += 1
        if mx.busy:
            self.wfile.write(b"421 4.3.2 Too busy, try another host\r\n")
            return
        self.wfile.write(b"220 mx1.c.example ESMTP\r\n")
        for line in self.rfile:
            verb = line[:4].upper()
            if verb == b"DATA":
                self.wfile.write(b"354 Go ahead\r\n")
                for body_line in self.rfile:
                    if body_line == b".\r\n":
                        mx.messages += 1
                        return  # gone before the reply: the outcome is unknown
            elif verb == b"QUIT":
                return
            else:
                self.wfile.write(b"250 OK\r\n")


def test_a_421_greeting_passes_to_the_next_mx(tmp_path: Path) -> None:
    mx = Mx()
    with world(tmp_path, mx) as w, ScriptedMx(w.port, busy=True) as busy, \
            sender(w) as a:
        w.dns.mx = {"c.example": [(10, "mx1.c.example"), (20, "mx2.c.example")]}
        w.dns.hosts = {"mx1.c.example": ["127.0.0.2"], "mx2.c.example": ["127.0.0.1"]}
        msgid = submit(a, [CAROL])
        wait_until(lambda: states(a, msgid) == {CAROL: ("delivered", "smtp")},
                   what="carol delivered by the second MX host")
        a.stop()  # first: a job may be talking to the stand-in
        busy.shutdown()
    assert busy.sessions >= 1 and [m.recipients for m in mx.arrived] == [[CAROL]]


def test_a_session_lost_after_the_final_dot_is_retried_not_sent_elsewhere(
        tmp_path: Path) -> None:
    """The preferred host hangs up after the final dot, before its reply:
    it may hold the message, so the next host is not tried at once (that
    would be a second copy now); the job is retried later, with backoff, and
    each retry is the one duplicate SMTP's window allows."""
    mx = Mx()
    with world(tmp_path, mx) as w, \
            ScriptedMx(w.port, busy=False) as mute, sender(w) as a:
        w.dns.mx = {"c.example": [(10, "mx1.c.example"), (20, "mx2.c.example")]}
        w.dns.hosts = {"mx1.c.example": ["127.0.0.2"], "mx2.c.example": ["127.0.0.1"]}
        msgid = submit(a, [CAROL])
        # no command shows this: the job's attempts
        wait_until(lambda: query(a, "SELECT attempts FROM queue WHERE kind='send-smtp'")
                   >= [(2,)], what="the send-smtp job retried")
        assert states(a, msgid) == {CAROL: ("queued", "smtp")}
        [(error,)] = query(a, "SELECT last_error FROM queue WHERE kind='send-smtp'")
        assert error == (f"mx1.c.example [127.0.0.2]:{w.port} closed the connection, "
                         "after the end of the message was sent")
        a.stop()  # first: a job may be talking to the stand-in
        mute.shutdown()
    assert mute.messages >= 2 and mx.arrived == []
