"""TLS on both ports, and the proof of origin (docs/protocol.md section 15).

Three jobs:

- the SSL contexts: one per port for incoming connections, and one per kind
  of trust for outgoing peer connections (system store or ``[tls] ca``, a
  peer's own ``ca``, or a pinned fingerprint);
- :func:`start_tls`: upgrading an open asyncio stream (STARTTLS, STLS) so
  that nothing sent in plaintext can be read as part of the TLS session;
- :meth:`TlsPolicy.proven_server`: which SMDP server of a domain the peer's
  certificate proves it is, if any (PRIOR-ART.md, "Prove the origin"; DMTP's
  key rule);
- :func:`check_exposure` and :func:`unauthenticated_warning`: secure unless
  told otherwise. A server that cannot ask peers for proof stays on loopback
  unless its configuration says ``[tls] require = false`` in so many words.

Python's ``ssl`` module has no certificate verification callback, so a client
certificate must chain to a trust anchor of the incoming context for the
handshake to succeed. That context therefore trusts the union of the global
anchors (the system store, or ``[tls] ca``), every ``[peers."domain"] ca``
file and our own certificate; the proof then checks *which* anchor
vouched for the certificate, so that a CA trusted for one peer domain cannot
vouch for another.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from smdp.certs import fingerprint_sha256
from smdp.config import Config, ConfigError
from smdp.server import durable_io
from smdp.server.discovery import Discovery, DiscoveryError

__all__ = [
    "PeerCertificate",
    "TlsError",
    "TlsPolicy",
    "check_exposure",
    "peer_certificate",
    "start_tls",
    "unauthenticated_warning",
]

log = logging.getLogger("smdp.tls")

# A handshake that takes longer than this is abandoned (a peer that opens TLS
# and stalls must not hold a session slot for the whole idle timeout).
HANDSHAKE_TIMEOUT = 30.0
# The encoding constant of _ssl.Certificate.public_bytes (3.10 to 3.12, where
# the verified chain is reachable only through the private object).
_ENCODING_DER = 2


class TlsError(Exception):
    """A TLS session could not be had, or the peer's certificate does not
    pass; the message says which, for the sender's delivery status."""


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What a TLS handshake showed of the other side's certificate."""

    der: bytes
    fingerprint: str  # SHA-256 of ``der``, lower-case hex
    names: tuple[str, ...]  # DNS subjectAltNames, lower case
    # The trust anchor OpenSSL verified the chain up to (DER), when the ssl
    # module lets us see it; None for a certificate nobody verified.
    anchor: bytes | None

    def matches(self, hostname: str) -> bool:
        """RFC 6125 6.4: a DNS-ID equal to ``hostname``, or a wildcard in the
        left-most label only (``*.example.com`` covers one label)."""
        host = hostname.lower().rstrip(".")
        for name in self.names:
            if name == host:
                return True
            if name.startswith("*.") and "." in host:
                label, rest = host.split(".", 1)
                if label and rest == name[2:] and "." in rest:
                    return True
        return False

    def first_name(self) -> str | None:
        return next((n for n in self.names if not n.startswith("*")), None)


def _names(der: bytes) -> tuple[str, ...]:
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return ()
    return tuple(n.lower().rstrip(".") for n in san.value.get_values_for_type(x509.DNSName))


def _verified_anchor(ssl_object: Any) -> bytes | None:
    """The last certificate of the verified chain (the trust anchor), as DER.

    Public as ``get_verified_chain`` from Python 3.13; earlier versions keep
    it on the private ``_sslobj``. Either way it may be missing: callers then
    fall back to looking at the issuer of the leaf (see ``_anchored_in``).
    """
    getter = getattr(ssl_object, "get_verified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    if getter is None:
        return None
    try:
        chain = getter()
    except (ssl.SSLError, ValueError, AttributeError):
        return None
    if not chain:
        return None
    last = chain[-1]
    if isinstance(last, bytes):
        return last
    der = last.public_bytes(_ENCODING_DER)
    return der if isinstance(der, bytes) else None


def peer_certificate(ssl_object: Any, *, verified: bool = True) -> PeerCertificate | None:
    """The certificate the other side presented, or None (no TLS, or none).

    ``verified``: the handshake checked the chain (the peer port asks for a
    client certificate with CERT_OPTIONAL, so any certificate presented there
    was verified; a pinned outgoing connection checks nothing but the pin).
    """
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    anchor = _verified_anchor(ssl_object) if verified else None
    return PeerCertificate(der, fingerprint_sha256(der), _names(der), anchor)


async def start_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    context: ssl.SSLContext, *, server_side: bool,
                    server_hostname: str | None = None,
                    timeout: float = HANDSHAKE_TIMEOUT,
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Upgrade an open connection to TLS; returns the new reader and writer.

    Not ``StreamWriter.start_tls``: that keeps the old StreamReader, whose
    buffer may already hold plaintext the peer (or someone on the path) sent
    after STARTTLS/STLS, and that plaintext would then be read as if it came
    through TLS (the "STARTTLS buffer injection", CVE-2011-0411). A fresh
    reader receives only what the TLS layer decrypts. The old writer must stay
    referenced while the session runs (the caller keeps it): when collected,
    it would close the transport under the TLS layer.
    """
    await writer.drain()
    # Held bytes (a reply waiting for its commit's fsync) go out before the
    # handshake, and loop.start_tls takes the loop's own transport.
    plain, gate = await durable_io.unwrapped(writer.transport)
    loop = asyncio.get_running_loop()
    new_reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(new_reader)
    # What the session writes over TLS is held as it was before.
    facing: asyncio.Protocol = protocol if gate is None else gate.protocol(protocol)
    plain_protocol = writer.transport.get_protocol()
    try:
        transport = await loop.start_tls(
            plain, facing, context, server_side=server_side,
            server_hostname=server_hostname, ssl_handshake_timeout=timeout,
        )
    except BaseException:
        # start_tls closed the transport, but the plaintext protocol was
        # already detached from it and would never learn: tell it (as a plain
        # close: the caller has the exception), so that the old writer's
        # wait_closed() returns instead of hanging.
        plain_protocol.connection_lost(None)
        raise
    if transport is None:  # the connection closed during the handshake
        raise ConnectionResetError("the connection closed during the TLS handshake")
    # connection_made is not called for a protocol handed to start_tls; it
    # ties the reader to the transport (flow control, EOF).
    facing.connection_made(transport)
    if isinstance(facing, durable_io.GatedProtocol):
        assert facing.transport is not None  # set by connection_made
        transport = facing.transport
    return new_reader, asyncio.StreamWriter(transport, protocol, new_reader, loop)


def _loopback_only(host: str) -> bool:
    """True when binding ``host`` listens on loopback addresses only (what
    ``asyncio.start_server`` binds: every address ``host`` resolves to)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError):
        return False  # cannot tell: not provably local (binding would fail anyway)
    addresses = [str(info[4][0]).partition("%")[0] for info in infos]
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_exposure(config: Config) -> None:
    """Secure unless told otherwise (issue 10, item 12): a server without a
    certificate cannot ask peers to prove their domain, so it believes them
    by their EHLO name and address; that is safe only where nobody else can
    connect. Without a certificate, every listener must be on loopback
    unless the configuration says ``[tls] require = false`` itself.
    Raises the one-line ConfigError before anything is bound."""
    web = config.web_listener
    if web is not None and not config.web_https and not _loopback_only(web.host):
        # Whatever [tls] says of peers: browsers' passwords and session
        # cookies never cross a network in the clear.
        raise ConfigError(
            f"listen.web = {str(web)!r} is not a loopback address, and web.https is false: "
            "passwords and session cookies would cross the network in the clear; set "
            "web.https = true with tls.cert and tls.key, or listen on 127.0.0.1")
    tls = config.tls
    if tls.cert is not None or tls.require_explicit:
        return
    for key, listener in config.listeners():
        if not _loopback_only(listener.host):
            raise ConfigError(
                f"listen.{key} = {str(listener)!r} is not a loopback address, and without "
                "tls.cert this server cannot tell a real peer from anyone claiming its "
                "name: give tls.cert and tls.key (smdp gencert), listen on 127.0.0.1, or "
                "set tls.require = false to accept unauthenticated peers on purpose")


def unauthenticated_warning(config: Config) -> str | None:
    """The warning a server logs at start when the configuration chose to
    believe peers without a certificate (``[tls] require = false``)."""
    tls = config.tls
    if tls.require or not tls.require_explicit:
        return None
    return ("tls.require = false: a peer that shows no TLS client certificate is believed "
            "by its EHLO name, checked only against discovery and its address; anyone "
            "who can reach the peer port from such an address can speak for that domain. "
            "Use this on closed networks only")


def _pem_certs(path: Path) -> list[bytes]:
    """Every certificate in a PEM file, as DER."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} holds no readable PEM certificate ({exc})") from None
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def _issued_by(der: bytes, issuers: Iterable[bytes]) -> bool:
    """True when ``der`` is one of ``issuers`` or directly signed by one."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    for issuer_der in issuers:
        if issuer_der == der:
            return True
        try:
            cert.verify_directly_issued_by(x509.load_der_x509_certificate(issuer_der))
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


class TlsPolicy:
    """This server's TLS contexts and its rules for believing a peer."""

    def __init__(self, config: Config) -> None:
        self.config = config
        tls = config.tls
        self.require = tls.require
        self.hostname = config.hostname
        self.peer_trust = config.peer_trust
        self.own_fingerprint: str | None = None
        own_anchor: list[bytes] = []
        if tls.cert is not None:
            # Our own certificate is an anchor of its own, for our own domains
            # only: a server delivers to its local recipients through its own
            # peer port, whoever issued its certificate (or if nobody did).
            own = _pem_certs(tls.cert)[0]
            self.own_fingerprint = fingerprint_sha256(own)
            own_anchor = [own]
        if tls.ca is not None:
            global_anchors = set(_pem_certs(tls.ca))
        else:
            # The system store (as far as OpenSSL lists it: a CA directory is
            # read lazily), so that a public CA also named as some peer's ca
            # keeps vouching for everyone else.
            system = ssl.create_default_context()
            global_anchors = {bytes(der) for der in system.get_ca_certs(binary_form=True)}
        self._peer_anchors = {
            domain: frozenset(_pem_certs(trust.ca))
            for domain, trust in self.peer_trust.items() if trust.ca is not None
        }
        # Anchors trusted for one peer domain (or for ourselves) and not
        # globally: a certificate they vouch for proves nothing about others.
        self._scoped_anchors = frozenset(
            {der for anchors in self._peer_anchors.values() for der in anchors}
            | set(own_anchor)
        ) - global_anchors

        self.peer_server_context: ssl.SSLContext | None = None
        self.user_server_context: ssl.SSLContext | None = None
        if tls.cert is not None and tls.key is not None:
            self.user_server_context = self._server_context(tls.cert, tls.key)
            peer = self._server_context(tls.cert, tls.key)
            # Ask for a client certificate (the proof of origin) but let a peer
            # without one in: it may still send decisions where the
            # configuration allows, and it gets a clear 550 otherwise.
            peer.verify_mode = ssl.CERT_OPTIONAL
            if tls.ca is not None:
                peer.load_verify_locations(cafile=str(tls.ca))
            else:
                peer.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            for trust in self.peer_trust.values():
                if trust.ca is not None:
                    peer.load_verify_locations(cafile=str(trust.ca))
            for der in own_anchor:
                peer.load_verify_locations(cadata=der)
            # Lets a certificate in the store that is not self-signed (our own
            # CA-issued leaf, an intermediate in a peer's ca file) end a chain;
            # certificates the peer sends never become anchors this way.
            peer.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            self.peer_server_context = peer

        self._default_client = self._client_context(tls.ca, verify=True)
        self._pin_client = self._client_context(None, verify=False)
        self._peer_clients = {
            domain: self._client_context(trust.ca, verify=True, partial_chain=True)
            for domain, trust in self.peer_trust.items()
            if trust.ca is not None and trust.pin_sha256 is None
        }

    # -- contexts -------------------------------------------------------------------

    @staticmethod
    def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"tls.cert/tls.key: cannot use {cert} with {key} ({exc})") from None
        return ctx

    def _client_context(self, cafile: Path | None, *, verify: bool,
                        partial_chain: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile is not None else None
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if partial_chain:
            # A peer's ca file may hold its own certificate, or an intermediate.
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if not verify:
            # A pin replaces the chain and name checks: the exact certificate
            # is compared after the handshake (``check_pin``).
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        tls = self.config.tls
        if tls.cert is not None and tls.key is not None:
            # Our certificate, shown as a client certificate: the proof that
            # this connection comes from the SMDP server of our domains.
            ctx.load_cert_chain(str(tls.cert), str(tls.key))
        return ctx

    def client_context(self, domain: str) -> tuple[ssl.SSLContext, str | None]:
        """The context for a connection to ``domain``'s server, and the pinned
        fingerprint the server's certificate must have (None: the context
        verifies chain and host name itself)."""
        domain = domain.lower()
        trust = self.peer_trust.get(domain)
        if trust is not None and trust.pin_sha256 is not None:
            return self._pin_client, trust.pin_sha256
        if trust is not None and domain in self._peer_clients:
            return self._peer_clients[domain], None
        if self.config.is_local(domain) and self.own_fingerprint is not None:
            return self._pin_client, self.own_fingerprint  # we are talking to ourselves
        return self._default_client, None

    @staticmethod
    def check_pin(cert: PeerCertificate | None, pin: str, hostname: str) -> None:
        if cert is None:
            raise TlsError(f"{hostname} presented no certificate")
        if cert.fingerprint != pin:
            raise TlsError(f"the certificate of {hostname} (sha256 {cert.fingerprint}) "
                           "is not the pinned one")

    # -- the proof of origin --------------------------------------------------------

    def _anchored_in(self, cert: PeerCertificate, anchors: frozenset[bytes]) -> bool:
        if cert.anchor is not None:
            return cert.anchor in anchors
        # Without the verified chain: the certificate itself, or its issuer.
        return _issued_by(cert.der, anchors)

    async def proven_server(self, cert: PeerCertificate | None, domain: str,
                            discovery: Discovery) -> str | None:
        """The host name of ``domain``'s SMDP server that ``cert`` proves the
        peer to be, or None.

        The name comes from discovery of ``domain`` (never from the peer): the
        certificate must be valid for one of the domain's SRV targets, and be
        vouched for by the anchors that apply to the domain: its pinned
        fingerprint, else its own ``ca``, else the global anchors.

        A discovery failure that may pass (timeout, SERVFAIL) is raised as
        the DiscoveryError: neither a proof nor a forgery, the caller answers
        451 (protocol.md 10.2); a definitive one (NXDOMAIN, no SRV) is None.
        """
        if cert is None:
            return None
        domain = domain.lower()
        try:
            servers = await discovery.resolve_all(domain)
        except DiscoveryError as exc:
            if exc.transient:
                raise
            return None
        hostnames = list(dict.fromkeys(s.hostname.lower() for s in servers))
        if not hostnames:
            return None
        name = next((h for h in hostnames if cert.matches(h)), None)
        trust = self.peer_trust.get(domain)
        if trust is not None and trust.pin_sha256 is not None:
            # The pin is the identity (as an SSH host key is): no name needed.
            return (name or hostnames[0]) if cert.fingerprint == trust.pin_sha256 else None
        if (self.config.is_local(domain) and self.own_fingerprint is not None
                and cert.fingerprint == self.own_fingerprint):
            return self.hostname
        if name is None:
            return None
        if trust is not None and domain in self._peer_anchors:
            return name if self._anchored_in(cert, self._peer_anchors[domain]) else None
        return None if self._anchored_in(cert, self._scoped_anchors) else name

    def identity(self, cert: PeerCertificate | None, claimed: str | None) -> str | None:
        """The name a peer's certificate proves on its own (no domain in
        question): the EHLO name when the certificate covers it, else its
        first DNS name. None when nothing is proven, or when only an anchor
        scoped to some other peer vouches for it (that CA may not name others).
        Forgeries are counted against this name, never against a name that
        was merely claimed.
        """
        if cert is None or self._anchored_in(cert, self._scoped_anchors):
            return None
        if claimed and cert.matches(claimed):
            return claimed.lower()
        return cert.first_name()
