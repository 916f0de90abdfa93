"""The [tls] configuration, certificate helpers and the proof-of-origin rules
of ``smdp.server.tls`` (docs/protocol.md section 15), without sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smdp.certs import (
    Issued,
    fingerprint_sha256,
    make_ca,
    make_cert,
    normalize_fingerprint,
    write_issued,
)
from smdp.config import ConfigError, parse_config
from smdp.server.discovery import Discovery, PeerServer
from smdp.server.tls import (
    PeerCertificate,
    TlsPolicy,
    _names,
    check_exposure,
    unauthenticated_warning,
)
from smdp.server.user_server import _is_loopback

MINIMAL: dict[str, Any] = {"server": {"hostname": "smdp.b.example", "domains": ["b.example"]}}


def cert_of(issued: Issued, anchor: Issued | None) -> PeerCertificate:
    """What a handshake reports: the leaf, and the anchor that verified it."""
    der = x509.load_pem_x509_certificate(issued.cert_pem).public_bytes(
        serialization.Encoding.DER)
    anchor_der = None if anchor is None else x509.load_pem_x509_certificate(
        anchor.cert_pem).public_bytes(serialization.Encoding.DER)
    return PeerCertificate(der, fingerprint_sha256(der), _names(der), anchor_der)


def test_tls_defaults(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, tmp_path)
    assert config.tls.cert is None and not config.tls.require
    assert not config.allow_plaintext_login
    assert config.peer_tls_listener is None and config.user_tls_listener is None
    own = make_cert("smdp.b.example")
    cert, key = write_issued(own, tmp_path, "b")
    config = parse_config({**MINIMAL, "tls": {"cert": "b.pem", "key": "b.key"},
                           "listen": {"peer_tls": "127.0.0.1:0"}}, tmp_path)
    # Secure by default: a server with a certificate requires TLS of its peers.
    assert config.tls.require and config.tls.cert == cert and config.tls.key == key
    assert str(config.peer_tls_listener) == "127.0.0.1:0"
    pin = own.fingerprint.upper()
    config = parse_config({**MINIMAL, "peers": {"a.example": {"pin_sha256": pin},
                                                 "c.example": {"hostname": "smdp.c.example",
                                                               "ca": "b.pem"}}}, tmp_path)
    assert config.peer_trust["a.example"].pin_sha256 == own.fingerprint
    assert "a.example" not in config.peers  # trust only: discovery stays DNS
    assert config.peer_trust["c.example"].ca == cert and "c.example" in config.peers


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tls": {"cert": "missing.pem", "key": "k"}}, "tls.cert: cannot read"),
        ({"tls": {"cert": "b.pem"}}, "tls.cert and tls.key go together"),
        ({"tls": {"require": True}}, "tls.require = true needs tls.cert"),
        ({"tls": {"require": "yes"}}, "tls.require must be a bool"),
        ({"tls": {"verify": True}}, "unknown setting tls.verify"),
        ({"listen": {"user_tls": "127.0.0.1:995"}}, "listen.user_tls needs tls.cert"),
        ({"peers": {"a.example": {"pin_sha256": "abc"}}}, "must be 64 hexadecimal digits"),
        ({"peers": {"a.example": {"ca": "nope.pem"}}}, "peers.a.example.ca: cannot read"),
        ({"security": {"allow_plaintext_login": 1}}, "must be a bool"),
    ],
)
def test_invalid_tls_settings_name_the_key(tmp_path: Path, doc: dict[str, Any],
                                           message: str) -> None:
    write_issued(make_cert("smdp.b.example"), tmp_path, "b")
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **doc}, tmp_path)
    assert message in str(info.value)


def test_fingerprints() -> None:
    issued = make_cert("h.example")
    fp = issued.fingerprint
    assert len(fp) == 64 and fingerprint_sha256(issued.cert_pem) == fp
    colons = ":".join(fp[i:i + 2] for i in range(0, 64, 2)).upper()
    assert normalize_fingerprint(colons) == fp
    assert normalize_fingerprint("zz" * 32) is None


def test_certificate_names_and_wildcards() -> None:
    cert = cert_of(make_cert("smdp.a.example", extra_names=("*.pool.a.example",)), None)
    assert cert.matches("SMDP.A.example.") and cert.matches("n1.pool.a.example")
    assert not cert.matches("a.b.pool.a.example") and not cert.matches("pool.a.example")
    assert not cert.matches("smdp.b.example")
    assert cert.first_name() == "smdp.a.example"


def test_loopback_only_for_plaintext_passwords() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("127.9.9.9") and _is_loopback("::1")
    assert _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("192.0.2.7") and not _is_loopback("2001:db8::1")
    assert not _is_loopback("?") and not _is_loopback("")


@pytest.mark.parametrize(
    ("listen", "tls", "refused"),
    [
        ({}, {}, None),  # the defaults: 127.0.0.1
        ({"peer": "localhost:0", "user": "[::1]:0"}, {}, None),
        ({"peer": "127.0.0.2:0"}, {}, None),  # all of 127/8 is loopback
        ({"peer": "0.0.0.0:2525"}, {}, "listen.peer = '0.0.0.0:2525'"),
        ({"user": "[::]:1110"}, {}, "listen.user = '[::]:1110'"),
        ({"user": "192.0.2.7:1110"}, {}, "listen.user = '192.0.2.7:1110'"),
        # A name that cannot even be looked up is not provably local.
        ({"peer": f"{'a' * 64}.example:1"}, {}, f"listen.peer = '{'a' * 64}.example:1'"),
        ({"peer": "0.0.0.0:2525"}, {"require": False}, None),  # said in so many words
        ({"peer": "0.0.0.0:2525"}, {"cert": "b.pem", "key": "b.key"}, None),
    ],
)
def test_no_listener_beyond_loopback_without_a_certificate_unless_told(
    tmp_path: Path, listen: dict[str, str], tls: dict[str, Any], refused: str | None,
) -> None:
    """Secure unless told otherwise: without tls.cert, a listener that is not
    on loopback stops the server at start, with one line saying what to do,
    unless the configuration says tls.require = false itself."""
    write_issued(make_cert("smdp.b.example"), tmp_path, "b")
    config = parse_config({**MINIMAL, "listen": listen, "tls": tls}, tmp_path)
    if refused is None:
        check_exposure(config)
        return
    with pytest.raises(ConfigError) as info:
        check_exposure(config)
    message = str(info.value)
    assert message.startswith(refused + " is not a loopback address") and "\n" not in message
    assert message.endswith("give tls.cert and tls.key (smdp gencert), listen on 127.0.0.1, "
                            "or set tls.require = false to accept unauthenticated peers "
                            "on purpose")


@pytest.mark.parametrize(("listen", "tls", "web", "refused"), [
    ("127.0.0.1:8080", {}, {}, None),  # loopback: plain HTTP is fine
    ("0.0.0.0:443", {"cert": "b.pem", "key": "b.key"}, {}, None),  # HTTPS by default
    # Plain HTTP beyond loopback, even where peers may go without TLS.
    ("0.0.0.0:8080", {"require": False}, {}, "listen.web = '0.0.0.0:8080'"),
    ("0.0.0.0:8080", {"cert": "b.pem", "key": "b.key"}, {"https": False},
     "listen.web = '0.0.0.0:8080'"),
])
def test_the_web_app_never_serves_passwords_in_the_clear_off_loopback(
    tmp_path: Path, listen: str, tls: dict[str, Any], web: dict[str, Any],
    refused: str | None,
) -> None:
    write_issued(make_cert("smdp.b.example"), tmp_path, "b")
    config = parse_config({**MINIMAL, "listen": {"web": listen}, "tls": tls, "web": web},
                          tmp_path)
    assert config.web_https is (web.get("https", "cert" in tls))
    if refused is None:
        check_exposure(config)
        return
    with pytest.raises(ConfigError) as info:
        check_exposure(config)
    assert str(info.value) == (
        f"{refused} is not a loopback address, and web.https is false: passwords and "
        "session cookies would cross the network in the clear; set web.https = true with "
        "tls.cert and tls.key, or listen on 127.0.0.1")


def test_web_https_needs_a_certificate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.https = true needs tls\.cert and tls\.key"):
        parse_config({**MINIMAL, "web": {"https": True}}, tmp_path)
    with pytest.raises(ConfigError, match=r"unknown setting web\.port"):
        parse_config({**MINIMAL, "web": {"port": 1}}, tmp_path)


def test_the_unauthenticated_mode_is_announced(tmp_path: Path) -> None:
    write_issued(make_cert("smdp.b.example"), tmp_path, "b")
    assert unauthenticated_warning(parse_config(MINIMAL, tmp_path)) is None
    secure = {"cert": "b.pem", "key": "b.key"}
    assert unauthenticated_warning(parse_config({**MINIMAL, "tls": secure}, tmp_path)) is None
    for tls in ({"require": False}, {**secure, "require": False}):
        config = parse_config({**MINIMAL, "tls": tls}, tmp_path)
        assert config.tls.require_explicit and not config.tls.require
        warning = unauthenticated_warning(config)
        assert warning is not None and warning.startswith("tls.require = false: a peer that "
                                                          "shows no TLS client certificate")


class World:
    """b.example's policy: a global CA; c.example with its own CA; d.example pinned."""

    def __init__(self, tmp_path: Path) -> None:
        self.global_ca = make_ca("global")
        self.c_ca = make_ca("c only")
        self.d_cert = make_cert("smdp.d.example")  # self-signed
        self.own = make_cert("smdp.b.example")  # self-signed
        ca_path, _ = write_issued(self.global_ca, tmp_path, "global")
        c_path, _ = write_issued(self.c_ca, tmp_path, "c")
        own_cert, own_key = write_issued(self.own, tmp_path, "own")
        config = parse_config({
            **MINIMAL,
            "tls": {"cert": str(own_cert), "key": str(own_key), "ca": str(ca_path)},
            "peers": {"c.example": {"ca": str(c_path)},
                      "d.example": {"pin_sha256": self.d_cert.fingerprint}},
        }, tmp_path)
        self.policy = TlsPolicy(config)
        self.discovery = Discovery({
            d: PeerServer(f"smdp.{d}", "127.0.0.1", 1)
            for d in ("a.example", "b.example", "c.example", "d.example")
        })

    async def proves(self, cert: PeerCertificate, domain: str) -> str | None:
        return await self.policy.proven_server(cert, domain, self.discovery)


async def test_proof_of_origin_rules(tmp_path: Path) -> None:
    w = World(tmp_path)
    a = cert_of(make_cert("smdp.a.example", issuer=w.global_ca), w.global_ca)
    assert await w.proves(a, "a.example") == "smdp.a.example"
    assert await w.proves(a, "c.example") is None  # wrong name
    assert await w.proves(a, "unknown.example") is None  # discovery knows no server
    # c.example's CA is trusted for c.example only ...
    c = cert_of(make_cert("smdp.c.example", issuer=w.c_ca), w.c_ca)
    assert await w.proves(c, "c.example") == "smdp.c.example"
    forged_a = cert_of(make_cert("smdp.a.example", issuer=w.c_ca), w.c_ca)
    assert await w.proves(forged_a, "a.example") is None
    assert w.policy.identity(forged_a, "smdp.a.example") is None  # names nobody
    # ... and a globally trusted certificate does not count for c.example.
    c_global = cert_of(make_cert("smdp.c.example", issuer=w.global_ca), w.global_ca)
    assert await w.proves(c_global, "c.example") is None
    # d.example is pinned: that certificate and no other, whatever its issuer.
    assert await w.proves(cert_of(w.d_cert, None), "d.example") == "smdp.d.example"
    d_global = cert_of(make_cert("smdp.d.example", issuer=w.global_ca), w.global_ca)
    assert await w.proves(d_global, "d.example") is None
    # Our own self-signed certificate proves our own domains, nobody else's.
    own = cert_of(w.own, w.own)
    assert await w.proves(own, "b.example") == "smdp.b.example"
    assert await w.proves(cert_of(make_cert("smdp.b.example", issuer=w.c_ca), w.c_ca),
                          "b.example") is None


async def test_proof_without_the_verified_chain(tmp_path: Path) -> None:
    """Where the ssl module does not show the verified chain, the issuer of
    the leaf stands in for the anchor."""
    w = World(tmp_path)
    forged_a = cert_of(make_cert("smdp.a.example", issuer=w.c_ca), None)
    assert await w.proves(forged_a, "a.example") is None
    c = cert_of(make_cert("smdp.c.example", issuer=w.c_ca), None)
    assert await w.proves(c, "c.example") == "smdp.c.example"


def test_identity_of_a_rogue(tmp_path: Path) -> None:
    w = World(tmp_path)
    rogue = cert_of(make_cert("smdp.rogue.example", issuer=w.global_ca), w.global_ca)
    assert w.policy.identity(rogue, "smdp.a.example") == "smdp.rogue.example"
    assert w.policy.identity(rogue, "SMDP.rogue.example") == "smdp.rogue.example"
    assert w.policy.identity(None, "smdp.a.example") is None


def test_client_contexts(tmp_path: Path) -> None:
    w = World(tmp_path)
    _, pin = w.policy.client_context("d.example")
    assert pin == w.d_cert.fingerprint
    _, pin = w.policy.client_context("b.example")  # ourselves: our own certificate
    assert pin == w.own.fingerprint
    ctx, pin = w.policy.client_context("c.example")
    assert pin is None and ctx.check_hostname
    ctx, pin = w.policy.client_context("a.example")
    assert pin is None and ctx.check_hostname
