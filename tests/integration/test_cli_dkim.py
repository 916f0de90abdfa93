"""``smdp dkim-keygen`` and ``smdp admin dns-records`` as an administrator runs
them: real processes, output checked to the character; the key a run makes
signs mail that dkimpy verifies against the record the run printed."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from smdp.mail.dkim import SigningKey, sign_message
from tests.integration.test_cli import no_traceback, smdp


def expected_record(key_file: Path) -> str:
    """The key record for a key file, computed here from the file alone."""
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    if isinstance(key, rsa.RSAPrivateKey):
        kind, public = "rsa", key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey)
        kind, public = "ed25519", key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode()}"


def quoted(record: str) -> str:
    return " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))


def test_dkim_keygen(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    r = smdp("dkim-keygen", "A.Example", "--selector", "s1", "--dir", str(keys))
    path = keys / "a.example.s1.dkim.pem"
    record = expected_record(path)
    assert len(record) > 255  # a 2048-bit key takes two strings
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"""DKIM key for a.example (rsa, 2048 bits): {path}

Add to the server's configuration:
[dkim."a.example"]
selector = "s1"
key = "{path}"
algorithm = "rsa"

Publish in DNS (then `smdp admin dns-records` shows it with the other records):
s1._domainkey.a.example. IN TXT {quoted(record)}
"""
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The printed record verifies what the key signs.
    printed = r.stdout.rstrip("\n").rsplit(" IN TXT ", 1)[1]
    txt = "".join(part.strip('"') for part in printed.split('" "'))
    key = SigningKey.from_pem("a.example", "s1", "rsa", path.read_bytes())
    message = b"From: a@a.example\r\nTo: b@b.example\r\nSubject: hi\r\n\r\nhello\r\n"
    signed = sign_message(key, [message]) + message
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: txt.encode())

    # An existing key is never overwritten by accident ...
    before = path.read_bytes()
    r = smdp("dkim-keygen", "a.example", "--selector", "s1", "--dir", str(keys))
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr == (f"smdp: {path} exists: give --force to replace it (mail signed with "
                        "the old key fails to verify once its DNS record is replaced)\n")
    assert path.read_bytes() == before
    # ... only on purpose.
    r = smdp("dkim-keygen", "a.example", "--selector", "s1", "--dir", str(keys), "--force",
             "--bits", "1024")
    assert r.returncode == 0 and path.read_bytes() != before
    assert r.stdout.startswith(f"DKIM key for a.example (rsa, 1024 bits): {path}\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_dkim_keygen_ed25519(tmp_path: Path) -> None:
    r = smdp("dkim-keygen", "a.example", "--algorithm", "ed25519", "--dir", str(tmp_path))
    path = tmp_path / "a.example.smdp.dkim.pem"
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"""DKIM key for a.example (ed25519): {path}

Add to the server's configuration:
[dkim."a.example"]
selector = "smdp"
key = "{path}"
algorithm = "ed25519"

Publish in DNS (then `smdp admin dns-records` shows it with the other records):
smdp._domainkey.a.example. IN TXT "{expected_record(path)}"
"""


def test_dkim_keygen_refusals(tmp_path: Path) -> None:
    for args, message in [
        (("not_a_domain",), "smdp: 'not_a_domain' is not a domain name\n"),
        (("a.example", "--bits", "512"),
         "smdp: an RSA key of 512 bits is out of range (1024 to 8192; 2048 advised)\n"),
        (("a.example", "--selector", "bad_selector"),
         "smdp: 'bad_selector' is not a DKIM selector (letters, digits, '-', '.')\n"),
    ]:
        r = smdp("dkim-keygen", *args, "--dir", str(tmp_path))
        assert (r.returncode, r.stdout, r.stderr) == (1, "", message), args
    assert list(tmp_path.iterdir()) == []
    blocked = tmp_path / "file"
    blocked.write_text("")
    r = smdp("dkim-keygen", "a.example", "--dir", str(blocked / "keys"))
    assert r.returncode == 1 and r.stderr.startswith(f"smdp: cannot write {blocked}/keys/")
    no_traceback(r)


def write_config(tmp_path: Path, listen: str, dkim_table: str = "") -> Path:
    config = tmp_path / "smdp.toml"
    config.write_text(f"""[server]
hostname = "mail.a.example"
domains = ["a.example", "b.example"]
[listen]
peer = "{listen}"
user = "127.0.0.1:1110"
[store]
path = "store.sqlite3"
[tls]
require = false
{dkim_table}""")
    return config


def policy_id(mode: str) -> str:
    policy = f"version: STSv1\nmode: {mode}\nmx: mail.a.example\nmax_age: 604800\n"
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def test_dns_records(tmp_path: Path) -> None:
    assert smdp("dkim-keygen", "a.example", "--selector", "s1",
                "--dir", str(tmp_path)).returncode == 0
    key_file = tmp_path / "a.example.s1.dkim.pem"
    config = write_config(tmp_path, "0.0.0.0:2525",
                          '[dkim."a.example"]\nselector = "s1"\nkey = "a.example.s1.dkim.pem"\n')
    r = smdp("admin", "-c", str(config), "dns-records", "a.example", "--ipv4", "198.51.100.7",
             "--ipv6", "2001:db8::7", "--ipv4", "198.51.100.8")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == f"""; DNS records for a.example, whose mail server is mail.a.example
; (smdp admin dns-records; docs/smtp.md, "DNS records")

; SMDP: where other SMDP servers find this one (docs/protocol.md 10.1)
_smdp._tcp.a.example. IN SRV 10 0 2525 mail.a.example.

; the addresses of mail.a.example (SRV and MX targets)
mail.a.example. IN A 198.51.100.7
mail.a.example. IN A 198.51.100.8
mail.a.example. IN AAAA 2001:db8::7

; SMTP: where the rest of the world delivers mail for the domain (RFC 5321 5)
a.example. IN MX 10 mail.a.example.

; SPF (RFC 7208): mail from the domain leaves from this server only
a.example. IN TXT "v=spf1 a:mail.a.example -all"

; DKIM (RFC 6376): the key that signs the domain's mail sent by SMTP
s1._domainkey.a.example. IN TXT {quoted(expected_record(key_file))}

; DMARC (RFC 7489): what receivers do with mail that fails SPF and DKIM
_dmarc.a.example. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@a.example"

; MTA-STS (RFC 8461): senders reach the MX over verified TLS only (mode enforce),
; or deliver and report a failure (mode testing)
_mta-sts.a.example. IN TXT "v=STSv1; id={policy_id("testing")}"
; and serve this file as https://mta-sts.a.example/.well-known/mta-sts.txt
; (a web server with a certificate for mta-sts.a.example):
;   version: STSv1
;   mode: testing
;   mx: mail.a.example
;   max_age: 604800

; TLS reporting (RFC 8460): where senders report TLS failures
_smtp._tls.a.example. IN TXT "v=TLSRPTv1; rua=mailto:postmaster@a.example"
"""


def test_dns_records_derived_and_chosen(tmp_path: Path) -> None:
    # A public listen address is the A record; no [dkim] key: how to make one.
    config = write_config(tmp_path, "1.2.3.4:2600")
    r = smdp("admin", "-c", str(config), "dns-records", "b.example", "--dmarc", "reject",
             "--report-to", "reports@a.example", "--mta-sts-mode", "enforce")
    assert (r.returncode, r.stderr) == (0, "")
    lines = r.stdout.splitlines()
    assert "_smdp._tcp.b.example. IN SRV 10 0 2600 mail.a.example." in lines
    assert lines[7:9] == ["mail.a.example. IN A 1.2.3.4", ""]
    assert ("; none configured: run `smdp dkim-keygen b.example` and add its [dkim] lines "
            "to the configuration") in lines
    assert '_dmarc.b.example. IN TXT "v=DMARC1; p=reject; rua=mailto:reports@a.example"' \
        in lines
    assert f'_mta-sts.b.example. IN TXT "v=STSv1; id={policy_id("enforce")}"' in lines
    assert ";   mode: enforce" in lines
    assert '_smtp._tls.b.example. IN TXT "v=TLSRPTv1; rua=mailto:reports@a.example"' in lines
    # Loopback says nothing about the public address: placeholders to fill in.
    config = write_config(tmp_path, "127.0.0.1:2525")
    lines = smdp("admin", "-c", str(config), "dns-records", "a.example").stdout.splitlines()
    assert lines[7:10] == ["mail.a.example. IN A <public IPv4 address: give --ipv4>",
                          "mail.a.example. IN AAAA <public IPv6 address: give --ipv6, or "
                          "leave it out>", ""]


def test_dns_records_refusals(tmp_path: Path) -> None:
    config = write_config(tmp_path, "127.0.0.1:2525")
    for args, message in [
        (("c.example",),
         "smdp: c.example is not a domain of this server (server.domains: a.example, "
         "b.example)\n"),
        (("a.example", "--ipv4", "2001:db8::1"), "smdp: 2001:db8::1 is not an IPv4 address\n"),
        (("a.example", "--ipv6", "nonsense"), "smdp: 'nonsense' is not an IP address\n"),
    ]:
        r = smdp("admin", "-c", str(config), "dns-records", *args)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", message), args
    (tmp_path / "bad.pem").write_text("not a key")
    config = write_config(tmp_path, "127.0.0.1:2525",
                          '[dkim."a.example"]\nselector = "s1"\nkey = "bad.pem"\n')
    r = smdp("admin", "-c", str(config), "dns-records", "a.example")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f'smdp: dkim."a.example".key: {tmp_path / "bad.pem"}: not an '
                               "unencrypted PEM private key")
    assert r.stderr.count("\n") == 1
    ed_key = tmp_path / "ed.pem"
    ed_key.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    config = write_config(tmp_path, "127.0.0.1:2525",
                          '[dkim."a.example"]\nselector = "s1"\nkey = "ed.pem"\n')
    r = smdp("admin", "-c", str(config), "dns-records", "a.example")
    assert (r.returncode, r.stderr) == (
        1, f'smdp: dkim."a.example".key: {ed_key}: the key is not an rsa private key\n')
