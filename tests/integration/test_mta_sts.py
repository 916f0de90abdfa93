"""MTA-STS policies fetched for real (``smdp.server.mta_sts``): a real HTTPS
server on 127.0.0.1 with a certificate from a test CA, the ``_mta-sts`` TXT
records from the stand-in DNS server, and the cache in a real store.

The policy host's name is ``mta-sts.b.example``; the address lookup is
pointed at 127.0.0.1, while SNI and the certificate check use the name.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from smdp.certs import Issued, make_ca, make_cert
from smdp.config import parse_config
from smdp.core.mta_sts import MAX_POLICY_SIZE, Mode, Policy, TlsOutcome
from smdp.server.mta_sts import (
    FetchError,
    MtaSts,
    fetch_policy,
    from_config,
    handshake_outcome,
    mx_context,
    policy_context,
)
from smdp.store import Store, open_store
from tests.conditions import wait_until_async
from tests.integration.faults import NXDOMAIN, SERVFAIL, StandInDns

pytestmark = pytest.mark.own_backend  # the cache's store is SQLite, whatever the pass

DOMAIN = "b.example"
HOST = f"mta-sts.{DOMAIN}"
TXT_NAME = f"_mta-sts.{DOMAIN}"
POLICY_A = "version: STSv1\nmode: enforce\nmx: mx.b.example\nmax_age: 86400\n"
POLICY_B = "version: STSv1\nmode: testing\nmx: *.b.example\nmax_age: 3600\n"

Reply = tuple[int, dict[str, str], bytes]


def text(body: str, status: int = 200) -> Reply:
    return status, {"Content-Type": "text/plain; charset=utf-8"}, body.encode()


@dataclass
class PolicyHost:
    """What the HTTPS server serves, and what it was asked."""

    reply: Reply = field(default_factory=lambda: text(POLICY_A))
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # Host headers
    server_names: list[str | None] = field(default_factory=list)  # SNI
    port: int = 0
    hold: threading.Event | None = None  # set: the reply waits for it


def _handler(state: PolicyHost) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.paths.append(self.path)
            state.hosts.append(self.headers.get("Host", ""))
            if state.hold is not None:
                state.hold.wait(10)
            status, headers, body = state.reply
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@pytest.fixture
def ca() -> Issued:
    return make_ca("MTA-STS test CA")


def serve(state: PolicyHost, issued: Issued, tmp_path: Path) -> Callable[[], None]:
    """Start the HTTPS server with ``issued`` as its certificate; returns stop."""
    cert, key = tmp_path / "host.pem", tmp_path / "host.key"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))

    def note_sni(_sock: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                 _ctx: ssl.SSLContext) -> None:
        state.server_names.append(name)

    context.sni_callback = note_sni
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)

    return stop


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    dns: StandInDns
    host: PolicyHost
    store: Store
    clock: Clock
    sts: MtaSts
    looked_up: list[str]
    context: ssl.SSLContext  # trusts the test CA
    lookup: Callable[[str], Awaitable[list[str]]]  # every name -> 127.0.0.1


@pytest.fixture
def dns() -> Iterator[StandInDns]:
    with StandInDns() as server:
        yield server


async def _world(tmp_path: Path, ca: Issued, dns: StandInDns, issued: Issued,
                 ) -> AsyncIterator[World]:
    state = PolicyHost()
    stop = serve(state, issued, tmp_path)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    store = open_store(str(tmp_path / "s.sqlite3"))
    looked_up: list[str] = []

    async def loopback(host: str) -> list[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    clock = Clock()
    context = policy_context(tmp_path / "ca.pem")
    sts = MtaSts(store, context=context,
                 nameservers=[("127.0.0.1", dns.port)], dns_timeout=2.0, fetch_timeout=5.0,
                 lookup_addresses=loopback, port=state.port, clock=clock, txt_recheck=0)
    dns.txt[TXT_NAME] = ["v=STSv1; id=one"]
    try:
        yield World(dns, state, store, clock, sts, looked_up, context, loopback)
    finally:
        stop()
        store.close()


@pytest.fixture
async def world(tmp_path: Path, ca: Issued, dns: StandInDns) -> AsyncIterator[World]:
    async for w in _world(tmp_path, ca, dns, make_cert(HOST, issuer=ca)):
        yield w


ENFORCED = Policy(Mode.ENFORCE, 86400, ("mx.b.example",))
TESTING = Policy(Mode.TESTING, 3600, ("*.b.example",))


async def test_a_policy_is_fetched_over_verified_https_and_cached(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert world.host.paths == ["/.well-known/mta-sts.txt"]
    assert world.host.hosts == [HOST]
    assert world.host.server_names == [HOST]  # SNI: the name, not 127.0.0.1
    assert world.looked_up == [HOST]
    cached = world.store.mta_sts_policy(DOMAIN)
    assert cached is not None
    assert (cached.policy_id, cached.policy) == ("one", POLICY_A)
    assert cached.expires_at == world.clock.now + 86400
    # The same id again: from the cache, no second fetch.
    world.clock.now += 600
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert len(world.host.paths) == 1


async def test_a_record_of_several_strings_is_joined(world: World) -> None:
    world.dns.txt[TXT_NAME] = [("v=STSv1; ", "id=o", "ne")]
    assert await world.sts.policy(DOMAIN) == ENFORCED
    stored = world.store.mta_sts_policy(DOMAIN)
    assert stored is not None and stored.policy_id == "one"


@pytest.mark.parametrize("answer", [NXDOMAIN, SERVFAIL, [], ["v=spf1 -all"],
                                    ["v=STSv1; id=one", "v=STSv1; id=two"]])
async def test_no_usable_txt_record_means_no_fetch(world: World,
                                                   answer: list[str] | str) -> None:
    world.dns.txt[TXT_NAME] = answer  # type: ignore[assignment]
    assert await world.sts.policy(DOMAIN) is None
    assert world.host.paths == []
    assert world.store.mta_sts_policy(DOMAIN) is None


async def test_a_certificate_for_another_name_is_refused(tmp_path: Path, ca: Issued,
                                                        dns: StandInDns) -> None:
    async for w in _world(tmp_path, ca, dns, make_cert("mta-sts.c.example", issuer=ca)):
        assert await w.sts.policy(DOMAIN) is None
        assert w.host.paths == []  # no request was sent over it
        assert w.store.mta_sts_policy(DOMAIN) is None


async def test_a_certificate_from_an_untrusted_ca_is_refused(tmp_path: Path, ca: Issued,
                                                            dns: StandInDns) -> None:
    other = make_ca("someone else")
    async for w in _world(tmp_path, ca, dns, make_cert(HOST, issuer=other)):
        assert await w.sts.policy(DOMAIN) is None
        assert w.host.paths == []
        assert w.store.mta_sts_policy(DOMAIN) is None


@pytest.mark.parametrize("reply", [
    (301, {"Location": "https://mta-sts.b.example/elsewhere.txt",
           "Content-Type": "text/plain"}, POLICY_A.encode()),
    (302, {"Location": "/x", "Content-Type": "text/plain"}, b""),
    (404, {"Content-Type": "text/plain"}, POLICY_A.encode()),
    (200, {"Content-Type": "text/html"}, POLICY_A.encode()),
    (200, {}, POLICY_A.encode()),
    # Over 64 KiB, announced by Content-Length, and not announced (read to close).
    (200, {"Content-Type": "text/plain"},
     (POLICY_A + "x: " + "y" * MAX_POLICY_SIZE + "\n").encode()),
    (200, {"Content-Type": "text/plain", "Content-Length": str(MAX_POLICY_SIZE + 1)},
     (POLICY_A + "x: " + "y" * MAX_POLICY_SIZE + "\n").encode()),
    (200, {"Content-Type": "text/plain"}, b"version: STSv1\nmode: enforce\n"),  # invalid
], ids=["301", "302", "404", "html", "no-type", "oversized", "oversized-announced",
        "invalid"])
async def test_a_bad_answer_is_no_policy(world: World, reply: Reply) -> None:
    world.host.reply = reply
    assert await world.sts.policy(DOMAIN) is None
    assert world.host.paths == ["/.well-known/mta-sts.txt"]  # one request, not followed
    assert world.store.mta_sts_policy(DOMAIN) is None


BIG = (POLICY_A + "x: " + "y" * MAX_POLICY_SIZE + "\n").encode()


@pytest.mark.parametrize(("reply", "why"), [
    ((301, {"Location": "/x", "Content-Type": "text/plain"}, b""),
     "answered 301 (a redirect, which RFC 8461 3.3 forbids following)"),
    ((500, {"Content-Type": "text/plain"}, b""), "answered 500 Internal Server Error"),
    ((200, {"Content-Type": "text/html; charset=utf-8"}, POLICY_A.encode()),
     "served the policy as 'text/html', not text/plain"),
    ((200, {"Content-Type": "Text/Plain; charset=us-ascii"}, b"mode: x\n"),
     "is not valid: line 1: mode 'x' is not enforce, testing or none"),
    ((200, {"Content-Type": "text/plain"}, BIG), "is larger than 65536 bytes"),
    ((200, {"Content-Type": "text/plain", "Content-Length": str(len(BIG))}, BIG),
     "is larger than 65536 bytes"),
])
async def test_each_refusal_says_why(world: World, reply: Reply, why: str) -> None:
    world.host.reply = reply
    with pytest.raises(FetchError) as caught:
        await fetch_policy(DOMAIN, context=world.context,
                           lookup_addresses=world.lookup, port=world.host.port)
    assert str(caught.value).startswith(f"{HOST} {why}") or \
        str(caught.value) == f"the policy of {HOST} {why}"


async def test_a_slow_policy_host_runs_out_of_time(world: World) -> None:
    release = threading.Event()
    world.host.hold = release
    try:
        with pytest.raises(FetchError, match=r"timed out|took too long"):
            await fetch_policy(DOMAIN, context=world.context, timeout=0.5,
                               lookup_addresses=world.lookup,
                               port=world.host.port)
    finally:
        release.set()


async def test_a_policy_of_exactly_64_kib_is_taken(world: World) -> None:
    body = POLICY_A + "x: "
    body += "y" * (MAX_POLICY_SIZE - len(body) - 1) + "\n"
    world.host.reply = text(body)
    assert await world.sts.policy(DOMAIN) == ENFORCED


async def test_a_new_id_refreshes_the_policy(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.host.reply = text(POLICY_B)
    world.clock.now += 60
    assert await world.sts.policy(DOMAIN) == ENFORCED  # same id: not fetched
    world.dns.txt[TXT_NAME] = ["v=STSv1; id=two"]
    assert await world.sts.policy(DOMAIN) == TESTING
    cached = world.store.mta_sts_policy(DOMAIN)
    assert cached is not None
    assert (cached.policy_id, cached.expires_at) == ("two", world.clock.now + 3600)
    assert len(world.host.paths) == 2


async def test_a_failed_refresh_keeps_the_cached_policy(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.dns.txt[TXT_NAME] = ["v=STSv1; id=two"]
    world.host.reply = text("server error", status=500)
    world.clock.now += 60
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert len(world.host.paths) == 2
    # Not asked again for the same id within five minutes (RFC 8461 3.3) ...
    world.clock.now += 200
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert len(world.host.paths) == 2
    # ... then asked, and the new policy replaces the old one.
    world.clock.now += 101
    world.host.reply = text(POLICY_B)
    assert await world.sts.policy(DOMAIN) == TESTING
    assert len(world.host.paths) == 3


async def test_the_cached_policy_holds_while_dns_fails_or_the_record_goes(
        world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.dns.txt[TXT_NAME] = SERVFAIL
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.dns.txt[TXT_NAME] = NXDOMAIN  # an attacker can remove it as well
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert world.sts.cached(DOMAIN) == ENFORCED


async def test_an_expired_policy_is_dropped(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.dns.txt[TXT_NAME] = NXDOMAIN
    world.clock.now += 86400
    assert world.sts.cached(DOMAIN) is None
    assert await world.sts.policy(DOMAIN) is None
    assert world.store.mta_sts_policy(DOMAIN) is None


async def test_an_expired_policy_is_not_kept_by_a_failed_fetch(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.host.reply = text("gone", status=503)
    world.clock.now += 86400 + 1
    assert await world.sts.policy(DOMAIN) is None
    assert world.store.mta_sts_policy(DOMAIN) is None
    assert len(world.host.paths) == 2


async def test_past_half_its_life_a_policy_is_fetched_again(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.clock.now += 43200 - 1
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert len(world.host.paths) == 1
    world.clock.now += 1
    assert await world.sts.policy(DOMAIN) == ENFORCED
    assert len(world.host.paths) == 2
    cached = world.store.mta_sts_policy(DOMAIN)
    assert cached is not None and cached.expires_at == world.clock.now + 86400


async def test_mode_none_withdraws_a_policy(world: World) -> None:
    assert await world.sts.policy(DOMAIN) == ENFORCED
    world.dns.txt[TXT_NAME] = ["v=STSv1; id=off"]
    world.host.reply = text("version: STSv1\nmode: none\nmax_age: 86400\n")
    assert await world.sts.policy(DOMAIN) is None
    assert world.sts.cached(DOMAIN) is None
    stored = world.store.mta_sts_policy(DOMAIN)
    assert stored is not None and stored.policy_id == "off"


async def test_the_txt_answer_is_believed_for_a_while_unless_fresh(world: World) -> None:
    sts = MtaSts(world.store, context=world.context,
                 nameservers=[("127.0.0.1", world.dns.port)], dns_timeout=2.0,
                 fetch_timeout=5.0, lookup_addresses=world.lookup,
                 port=world.host.port, clock=world.clock, txt_recheck=300)
    assert await sts.policy(DOMAIN) == ENFORCED
    asked = world.dns.questions.count(TXT_NAME)
    world.dns.txt[TXT_NAME] = ["v=STSv1; id=two"]
    world.host.reply = text(POLICY_B)
    assert await sts.policy(DOMAIN) == ENFORCED  # not asked again yet
    assert world.dns.questions.count(TXT_NAME) == asked
    assert await sts.policy(DOMAIN, fresh=True) == TESTING  # before a permanent failure
    world.clock.now += 300
    world.dns.txt[TXT_NAME] = ["v=STSv1; id=three"]
    world.host.reply = text(POLICY_A)
    assert await sts.policy(DOMAIN) == ENFORCED


async def test_deliveries_asking_at_once_share_one_fetch(world: World) -> None:
    release = threading.Event()
    world.host.hold = release
    first = asyncio.ensure_future(world.sts.policy(DOMAIN))
    second = asyncio.ensure_future(world.sts.policy(DOMAIN.upper()))
    await wait_until_async(lambda: len(world.host.paths) == 1, what="the first fetch")
    release.set()
    assert await first == ENFORCED and await second == ENFORCED
    assert world.host.paths == ["/.well-known/mta-sts.txt"]


# -- STARTTLS with an MX host: the contexts and the outcome decide() takes ---------------

MX = "mx.b.example"


async def _handshake(tmp_path: Path, ca: Issued, served: Issued | None, name: str,
                     *, verify: bool) -> tuple[TlsOutcome, str]:
    """Connect to a loopback TLS server showing ``served`` (None: a server
    that answers the handshake with junk) as ``name``; the outcome."""
    (tmp_path / "mx-ca.pem").write_bytes(ca.cert_pem)
    server_context: ssl.SSLContext | None = None
    if served is not None:
        (tmp_path / "mx.pem").write_bytes(served.cert_pem)
        (tmp_path / "mx.key").write_bytes(served.key_pem)
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(str(tmp_path / "mx.pem"), str(tmp_path / "mx.key"))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if server_context is None:
            writer.write(b"220 this is not TLS\r\n" * 4)
        try:
            await writer.drain()
            await reader.read(1)
        except (ssl.SSLError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    error: BaseException | None = None
    try:
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=mx_context(tmp_path / "mx-ca.pem", verify=verify),
            server_hostname=name)
        writer.close()
    except (ssl.SSLError, OSError) as exc:
        error = exc
    finally:
        server.close()
        await server.wait_closed()
    return handshake_outcome(error, verified=verify)


async def test_a_valid_mx_certificate_is_verified(tmp_path: Path, ca: Issued) -> None:
    assert await _handshake(tmp_path, ca, make_cert(MX, issuer=ca), MX, verify=True) == (
        TlsOutcome.VERIFIED, "")


async def test_an_mx_certificate_for_another_name_is_invalid(tmp_path: Path,
                                                            ca: Issued) -> None:
    outcome, detail = await _handshake(tmp_path, ca, make_cert("mx.c.example", issuer=ca), MX,
                                       verify=True)
    assert outcome is TlsOutcome.CERTIFICATE_INVALID
    assert "mx.b.example" in detail  # "Hostname mismatch, certificate is not valid for ..."


async def test_an_untrusted_mx_certificate_is_invalid_unless_unchecked(tmp_path: Path,
                                                                      ca: Issued) -> None:
    served = make_cert(MX)  # self-signed
    outcome, _detail = await _handshake(tmp_path, ca, served, MX, verify=True)
    assert outcome is TlsOutcome.CERTIFICATE_INVALID
    assert await _handshake(tmp_path, ca, served, MX, verify=False) == (
        TlsOutcome.UNVERIFIED, "")


async def test_a_broken_handshake_is_a_failed_one(tmp_path: Path, ca: Issued) -> None:
    outcome, detail = await _handshake(tmp_path, ca, None, MX, verify=True)
    assert outcome is TlsOutcome.HANDSHAKE_FAILED and detail


def test_a_server_builds_its_cache_from_its_configuration(tmp_path: Path) -> None:
    server = {"server": {"hostname": "smdp.a.example", "domains": ["a.example"]},
              "dns": {"nameservers": ["127.0.0.1:5353"]}}
    store = open_store(str(tmp_path / "s.sqlite3"))
    try:
        assert isinstance(from_config(parse_config(server, tmp_path), store), MtaSts)
        off = parse_config({**server, "smtp": {"tls": {"mta_sts": False}}}, tmp_path)
        assert from_config(off, store) is None
    finally:
        store.close()
