"""Certificates for development and tests: ``smdp gencert``.

A server proves who it is with an X.509 certificate (docs/protocol.md section
15): on both ports as a TLS server, and on outgoing peer connections as a TLS
*client* certificate, which is the proof of origin. Production servers use
certificates from a CA their peers trust; this module makes the two kinds a
private network or a test needs:

- a self-signed certificate for one host name, which peers trust by pinning
  its SHA-256 fingerprint or by naming the file as that peer's ``ca``;
- a private CA, and host certificates issued by it.

Keys are ECDSA P-256: quick to generate (tests make several per run) and
accepted by every TLS 1.2+ stack. Every host certificate carries the host name
as a DNS subjectAltName (RFC 6125: the common name is not checked) and both
extended key usages, because the same certificate serves the server side and
the client side of peer connections.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smdp.config import normalize_fingerprint

__all__ = [
    "CertError",
    "Issued",
    "fingerprint_sha256",
    "load_issuer",
    "make_ca",
    "make_cert",
    "normalize_fingerprint",
    "write_issued",
]

# Backdating covers clocks that differ a little between hosts.
_BACKDATE = datetime.timedelta(hours=1)


class CertError(Exception):
    """A certificate or key cannot be made or read; the message says why."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.cert_pem)


def fingerprint_sha256(cert: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex, no colons
    (the form ``[peers."domain"] pin_sha256`` takes). ``cert`` is PEM or DER."""
    if cert.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(cert).hexdigest()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str, *, days: int = 3650) -> Issued:
    """A private certificate authority that may sign host certificates only
    (path length 0: it cannot delegate to intermediates)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def make_cert(hostname: str, *, issuer: Issued | None = None, days: int = 825,
              extra_names: tuple[str, ...] = (), addresses: tuple[str, ...] = ()) -> Issued:
    """A certificate for ``hostname``: issued by ``issuer``, or self-signed.
    ``extra_names``: more DNS names; ``addresses``: IP addresses it is valid
    for (IP subjectAltNames, what RFC 6125 clients check for an address)."""
    hostname = hostname.strip().rstrip(".").lower()
    if not hostname:
        raise CertError("a host name is required")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    if issuer is None:
        issuer_name, signing_key, aki = subject, key, (
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski))
    else:
        ca_cert = x509.load_pem_x509_certificate(issuer.cert_pem)
        ca_key = serialization.load_pem_private_key(issuer.key_pem, password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise CertError("the CA key must be an ECDSA key made by smdp gencert")
        issuer_name, signing_key = ca_cert.subject, ca_key
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    names: list[x509.GeneralName] = [
        x509.DNSName(n) for n in dict.fromkeys((hostname, *extra_names))]
    try:
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    except ValueError as exc:
        raise CertError(str(exc)) from None
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        # Both: a peer server is a TLS server on its ports and a TLS client
        # (presenting this certificate as its proof of origin) when it connects.
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(signing_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def load_issuer(cert_path: Path, key_path: Path) -> Issued:
    """A CA made earlier by ``smdp gencert --ca``."""
    try:
        return Issued(cert_path.read_bytes(), key_path.read_bytes())
    except OSError as exc:
        raise CertError(f"cannot read {exc.filename}: {exc.strerror}") from None


def write_issued(issued: Issued, out: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.pem`` and ``<stem>.key`` (the key readable by its owner only)."""
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{stem}.pem", out / f"{stem}.key"
    cert_path.write_bytes(issued.cert_pem)
    # Create the key file 0600 from the start: never world-readable, not even briefly.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(issued.key_pem)
    os.chmod(key_path, 0o600)
    return cert_path, key_path
