"""Postfix, an independent real MTA, on both sides of our SMTP (issue 11
item 6, issue 12 item 6; docs/smtp.md): a throwaway instance per test
(tests/integration/postfix.py) with virtual mailboxes for c.example.

- Outbound: our server delivers to Postfix through MX records of the
  stand-in DNS, over STARTTLS with a certificate from the test CA; the
  message lands in the Postfix maildir, and its DKIM-Signature verifies
  there with dkimpy (and OpenDKIM's ``opendkim -t`` where installed), the key
  read from the stand-in DNS. Postfix's 550 for an unknown user fails that
  recipient with Postfix's reply, in SENT and in the sender's report.
- Inbound: Postfix relays mail submitted to it to our MX; the message is
  held, shown through the user port, and in the mailbox after ACCEPT. A
  message signed by c.example still verifies after Postfix's hop, and its
  white-listed sender's mail goes straight to the mailbox. An unknown user
  is refused at RCPT: Postfix bounces the mail to its own sender, and
  nothing is stored here.
- Mixed: one message to an SMDP and a Postfix recipient reaches both.

Skipped, saying why, where Postfix is not installed or cannot run.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import dns.exception
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization

from smdp.mail.dkim import SigningKey
from smdp.protocol import user as wire
from smdp.server.sender_auth import DnsSenderAuthenticator
from smdp.terms import Decision
from tests.integration.auth_dns import message, publish_dkim, publish_sender, publish_spf, sign
from tests.integration.faults import StandInDns
from tests.integration.harness import Pki, wait_until
from tests.integration.postfix import Postfix, postfix_instance
from tests.integration.test_mx import envelopes, shown, stored
from tests.integration.test_notices import failed_in, mailbox
from tests.integration.test_smtp_routing import sent_lines

from .inprocess import InProcessServer, inprocess_pair

# In-process servers: SQLite whatever the pass (as test_smtp_outbound.py).
pytestmark = pytest.mark.own_backend

dkim = pytest.importorskip("dkim")

ALICE, BOB = "alice@a.example", "bob@b.example"
CAROL, DAVE = "carol@c.example", "dave@c.example"
NOBODY_C, NOBODY_B = "nobody@c.example", "nobody@b.example"
OPENDKIM = shutil.which("opendkim") or next(
    (p for p in ("/usr/sbin/opendkim",) if Path(p).exists()), None)


def outbound(dns_server: StandInDns, pf: Postfix, key_file: Path, pki: Pki) -> str:
    """a.example's tables: outbound SMTP to Postfix's port, DKIM with
    ``key_file``, TLS with a verified certificate required for c.example."""
    return (dns_server.config
            + f"[smtp]\noutbound = true\noutbound_port = {pf.port}\n"
            + f'[dkim."a.example"]\nselector = "s1"\nkey = "{key_file}"\n'
            + f'[smtp.tls]\nrequire_verified = ["c.example"]\nca = "{pki.ca_path}"\n')


def c_example_mx(dns_server: StandInDns) -> None:
    """c.example has no SMDP server; its MX host mx.c.example is 127.0.0.1."""
    dns_server.mx = {"c.example": [(10, "mx.c.example")]}
    dns_server.hosts = {"mx.c.example": ["127.0.0.1"]}


def key_file(root: Path, key: SigningKey) -> Path:
    path = root / "a.example.dkim.pem"
    path.write_bytes(key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return path


def dns_txt(dns_server: StandInDns) -> Callable[..., bytes]:
    """dkimpy's ``dnsfunc``: a real TXT question to the stand-in DNS, as a
    receiving MTA's verifier asks its resolver; the first record's strings
    joined, or b"" when there is none."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = dns_server.port

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=timeout)
        except dns.exception.DNSException:
            return b""
        return b"".join(next(iter(answer)).strings)
    return dnsfunc


def opendkim_verifies(record: bytes, name: str, arrived: bytes, root: Path) -> bool:
    """OpenDKIM's verdict on the message as it lies in the maildir, the key
    record (what the stand-in DNS serves) given as its test DNS data."""
    assert OPENDKIM is not None
    keys = root / "opendkim.keys"
    keys.write_text(f"{name} {record.decode()}\n")
    conf = root / "opendkim.conf"
    conf.write_text(f"Mode v\nTestDNSData file:{keys}\nSyslog no\n")
    message = root / "arrived.eml"
    message.write_bytes(arrived)
    said = subprocess.run([OPENDKIM, "-x", str(conf), "-t", str(message)],
                          capture_output=True, text=True, timeout=30)
    out = said.stdout + said.stderr
    if re.search(r"verification \(s=s1, d=a\.example.*\) succeeded", out):
        return True
    assert "failed" in out, out
    return False


def delivered_by_postfix(pf: Postfix, queue_id: str) -> str:
    """Postfix's log line saying ``queue_id`` went to a maildir."""
    pattern = rf"{queue_id}: to=<[^>]+>, relay=virtual, .*status=sent \(delivered to maildir\)"
    found = wait_until(lambda: re.search(pattern, pf.log()), 30,
                       f"Postfix's delivery of {queue_id}")
    assert found is not None
    return found.group(0)


def reply_detail(detail: str, pf: Postfix) -> str:
    """The queue id in SENT's detail for a delivery to Postfix."""
    found = re.fullmatch(rf"250 2\.0\.0 Ok: queued as (\w+) "
                         rf"\(from mx\.c\.example \[127\.0\.0\.1\]:{pf.port}\)", detail)
    assert found, detail
    return found.group(1)


def query(server: InProcessServer, sql: str,
          args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read the server's store read-only, for what no command shows."""
    db = sqlite3.connect(f"file:{server.config.store_path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def submit(server: InProcessServer, rcpts: list[str], raw: bytes) -> str:
    c = server.client(ALICE)
    try:
        reply = c.submit(rcpts, raw)
    finally:
        c.quit()
    return reply.split()[2]  # "queued as <msgid> ..."


def state_of(server: InProcessServer, subject: str) -> str:
    """The state ENVS ALL shows for bob's envelope of ``subject``."""
    bob = server.client(BOB)
    try:
        return envelopes(bob)[subject][1]
    finally:
        bob.quit()


def header(raw: bytes) -> Message:
    return message_from_bytes(raw)


# -- outbound: our server to Postfix -------------------------------------------------------


def test_our_signed_message_lands_in_postfix_over_verified_tls(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key, _ = pki.issue("mx.c.example")
    raw = (f"From: Alice <{ALICE}>\r\nTo: {CAROL}\r\nSubject: caf\u00e9 at noon\r\n"
           "Date: Thu, 3 Dec 2026 09:00:00 +0000\r\n\r\nCaf\u00e9 at noon?\r\n"
           ".a line with a leading dot\r\n").encode()
    with StandInDns() as dns_server, postfix_instance(
            "c.example", ["carol"], tls=(cert, key)) as pf:
        c_example_mx(dns_server)
        signing = publish_dkim(dns_server, "a.example")
        a = InProcessServer(tmp_path, "a.example",
                            extra=outbound(dns_server, pf, key_file(tmp_path, signing), pki))
        a.add_user(ALICE)
        a.start()
        try:
            msgid = submit(a, [CAROL, NOBODY_C], raw)
            wait_until(lambda: {r: s[:2] for r, s in sent_lines(a, msgid).items()} == {
                CAROL: ["delivered", "smtp"], NOBODY_C: ["failed", "smtp"]}, 30,
                "carol delivered by SMTP, nobody refused by Postfix")
            lines = sent_lines(a, msgid)
            queue_id = reply_detail(lines[CAROL][2], pf)
            # Postfix's own refusal, word for word, with where it came from.
            assert lines[NOBODY_C][2] == (
                "550 5.1.1 <nobody@c.example>: Recipient address rejected: User unknown in "
                f"virtual mailbox table (from mx.c.example [127.0.0.1]:{pf.port})")
            [report] = mailbox(a, ALICE)  # type: ignore[arg-type]
            assert failed_in(report) == {NOBODY_C: ("5.1.1", (
                "smtp; 550 5.1.1 <nobody@c.example>: Recipient address rejected: "
                f"User unknown in virtual mailbox table (from mx.c.example [127.0.0.1]:{pf.port})"
                ))}
            # no command shows this: the TLS outcome kept with the recipient
            assert query(a, "SELECT tls FROM out_recipients WHERE recipient=?", (CAROL,)) == [
                ("verified (require_verified)",)]
        finally:
            a.stop()
        pf.wait_until_queue_empty()
        delivered_by_postfix(pf, queue_id)
        [arrived] = pf.mailbox("carol")
        assert re.search(r"TLS connection established from localhost\[127\.0\.0\.1\]",
                         pf.log())
        got = header(arrived)
        assert got["Delivered-To"] == CAROL and got["Return-Path"] == f"<{ALICE}>"
        # Postfix's trace: from our hostname, over TLS (smtpd_tls_received_header).
        received = str((got.get_all("Received") or [""])[0])
        assert received.startswith("from smdp.a.example (localhost [127.0.0.1])")
        assert "(using TLSv1." in received and f"with ESMTPS id {queue_id}" in received
        assert arrived.endswith(b"\n\nCaf\xc3\xa9 at noon?\n.a line with a leading dot\n")
        assert b"\nDKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=a.example; s=s1;" \
            in arrived
        # The signature verifies where it arrived, the key asked of the DNS.
        assert dkim.verify(arrived, dnsfunc=dns_txt(dns_server))
        if OPENDKIM is None:
            print("opendkim not installed (Debian package opendkim): only dkimpy verified")
        else:
            record = dns_txt(dns_server)(b"s1._domainkey.a.example.")
            assert opendkim_verifies(record, "s1._domainkey.a.example", arrived, tmp_path)


# -- inbound: Postfix to our MX ------------------------------------------------------------


def mx_server(root: Path, dns_server: StandInDns, pki: Pki) -> InProcessServer:
    """b.example with the MX (STARTTLS with the test CA's certificate), its
    sender authentication asking the stand-in DNS; bob a user."""
    s = InProcessServer(root, "b.example", "[tls]\n" + pki.tls("smdp.b.example"),
                        listen='mx = "127.0.0.1:0"\n',
                        authenticator=DnsSenderAuthenticator([("127.0.0.1", dns_server.port)],
                                                             timeout=3.0))
    s.add_user(BOB)
    return s


def test_postfix_relays_to_our_mx_held_then_accepted(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with StandInDns() as dns_server:
        publish_spf(dns_server, "c.example")  # 127.0.0.0/8 may send c.example's mail
        b = mx_server(tmp_path, dns_server, pki)
        b.start()
        try:
            with postfix_instance("c.example", ["carol"], relayhost=f"[127.0.0.1]:{b.mx_port}",
                                  ca=pki.ca_path) as pf:
                pf.send(CAROL, [BOB], (f"From: Carol <{CAROL}>\r\nTo: {BOB}\r\n"
                                       "Subject: from postfix\r\n\r\nHello Bob.\r\n").encode())
                pf.wait_until_queue_empty()
                sent = re.search(r"to=<bob@b\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                                 rf"{b.mx_port}, .*status=sent \(250 2\.0\.0 Ok: queued as ",
                                 pf.log())
                assert sent, pf.log()
                # Postfix's SMTP client used our STARTTLS, the chain checked against the CA.
                assert re.search(r"Trusted TLS connection established to 127\.0\.0\.1"
                                 rf"\[127\.0\.0\.1\]:{b.mx_port}", pf.log()), pf.log()
                assert pf.mailbox("carol") == []  # no bounce, no warning
            bob = b.client(BOB)
            try:
                entry, state, sender = envelopes(bob)["from postfix"][:3]
                assert (state, sender) == ("pending", CAROL)
                env = shown(bob, entry)
                assert env["Via"] == "SMTP" and env["Server"] == "c.example"
                assert env["Authentication-Results"] == (
                    "smdp.b.example; spf=pass reason=\"sender SPF authorized\" "
                    "smtp.mailfrom=carol@c.example; dkim=none; dmarc=none header.from=c.example")
                assert bob.call(wire.UserDecision(Decision.ACCEPT, int(entry))).ok
            finally:
                bob.quit()
            bob = b.client(BOB)  # a new POP3 session lists the message
            try:
                body = bob.read(int(entry))
            finally:
                bob.quit()
            head, _, text = body.partition(b"\r\n\r\n")
            assert text == b"Hello Bob.\r\n"
            assert b"Return-Path: <carol@c.example>" in head
            assert b"Received: from mx.c.example ([127.0.0.1]) by smdp.b.example with ESMTPS" \
                in head
            assert b"by mx.c.example (Postfix) with ESMTP id " in head  # Postfix's own hop
        finally:
            b.stop()


def test_a_signed_friend_through_postfix_goes_straight_to_the_mailbox(tmp_path: Path) -> None:
    """c.example publishes SPF, DKIM and DMARC; carol's signed message passes
    through Postfix (which adds its trace, and delivers dave's copy locally)
    and still verifies at our MX: From verified and aligned, carol on bob's
    white list, so no decision is asked (Table 3)."""
    pki = Pki(tmp_path)
    with StandInDns() as dns_server:
        signing = publish_sender(dns_server, "c.example")
        b = mx_server(tmp_path, dns_server, pki)
        b.start()
        try:
            bob = b.client(BOB)
            try:
                assert bob.call(wire.ListAdd("in-white", CAROL, "c.example")).ok
            finally:
                bob.quit()
            signed = sign(message(CAROL, f"{BOB}, {DAVE}", subject="signed by c.example",
                                  body="Lunch at noon?\r\n"), signing)
            with postfix_instance("c.example", ["carol", "dave"],
                                  relayhost=f"[127.0.0.1]:{b.mx_port}", ca=pki.ca_path) as pf:
                pf.send(CAROL, [BOB, DAVE], signed)
                pf.wait_until_queue_empty()
                [daves] = pf.mailbox("dave")
            assert state_of(b, "signed by c.example") == "accepted"
            bob = b.client(BOB)
            try:
                entry = envelopes(bob)["signed by c.example"][0]
                env = shown(bob, entry)
            finally:
                bob.quit()
            assert env["Via"] == "SMTP" and env["Verified"] == "c.example"
            # header.b is the signature's first characters: new at each run,
            # quoted when they hold a "/" (not a token character, RFC 8601).
            assert re.fullmatch(
                r'smdp\.b\.example; spf=pass reason="sender SPF authorized" '
                r"smtp\.mailfrom=carol@c\.example; dkim=pass header\.d=c\.example "
                r"header\.s=s1 header\.a=rsa-sha256 "
                r'header\.b=([A-Za-z0-9+]{8}|"[A-Za-z0-9+/]{8}"); '
                r"dmarc=pass \(p=reject\) header\.from=c\.example",
                env["Authentication-Results"]), env["Authentication-Results"]
            bob = b.client(BOB)
            try:
                assert bob.read(int(entry)).endswith(b"\r\n\r\nLunch at noon?\r\n")
            finally:
                bob.quit()
            assert daves.endswith(b"\n\nLunch at noon?\n")  # the Postfix recipient's copy
        finally:
            b.stop()


def test_an_unknown_user_at_our_mx_gets_postfix_bounce_and_nothing_stored(
        tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    with StandInDns() as dns_server:
        b = mx_server(tmp_path, dns_server, pki)
        b.start()
        try:
            with postfix_instance("c.example", ["carol"], relayhost=f"[127.0.0.1]:{b.mx_port}",
                                  ca=pki.ca_path) as pf:
                # Postfix's own sendmail: postdrop, then pickup.
                pf.sendmail(CAROL, [NOBODY_B], (f"From: {CAROL}\r\nTo: {NOBODY_B}\r\n"
                                                "Subject: to nobody\r\n\r\nAnyone?\r\n").encode())
                pf.wait_until_queue_empty()  # the mail, then its bounce
                assert re.search(r"to=<nobody@b\.example>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                                 rf"{b.mx_port}, .*status=bounced \(host 127\.0\.0\.1"
                                 r"\[127\.0\.0\.1\] said: 550 5\.1\.1 ", pf.log()), pf.log()
                [bounce] = pf.mailbox("carol")
            got = header(bounce)
            assert got["From"] == "Mail Delivery System <MAILER-DAEMON@c.example>"
            assert got["To"] == CAROL
            assert got["Subject"] == "Undelivered Mail Returned to Sender"
            assert got.get_content_type() == "multipart/report"
            [status] = [part for part in got.walk()
                        if part.get_content_type() == "message/delivery-status"]
            text = status.as_string()
            assert "Final-Recipient: rfc822; nobody@b.example" in text
            assert "Status: 5.1.1" in text and "Diagnostic-Code: smtp; 550 5.1.1" in text
            assert stored(b) == (0, 0)
            bob = b.client(BOB)
            try:
                assert envelopes(bob) == {}
            finally:
                bob.quit()
        finally:
            b.stop()


# -- one message, an SMDP and a Postfix recipient ------------------------------------------


def test_one_message_reaches_an_smdp_and_a_postfix_mailbox(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    cert, key, _ = pki.issue("mx.c.example")
    raw = (f"From: {ALICE}\r\nTo: {BOB}, {CAROL}\r\nSubject: both\r\n\r\n"
           "One message, two worlds.\r\n").encode()
    with StandInDns() as dns_server, postfix_instance(
            "c.example", ["carol"], tls=(cert, key)) as pf:
        c_example_mx(dns_server)
        signing = publish_dkim(dns_server, "a.example")
        extra_a = outbound(dns_server, pf, key_file(tmp_path, signing), pki)
        with inprocess_pair(tmp_path, extra_a=extra_a,
                            users={"a.example": (ALICE,), "b.example": (BOB,)}) as (a, b):
            msgid = submit(a, [BOB, CAROL], raw)
            wait_until(lambda: {r: s[:2] for r, s in sent_lines(a, msgid).items()} == {
                BOB: ["envelope-sent", "smdp"], CAROL: ["delivered", "smtp"]}, 30,
                "bob's envelope sent by SMDP, carol's message delivered by SMTP")
            bob = b.client(BOB)
            try:
                entry, state, sender = envelopes(bob)["both"][:3]
                assert (state, sender) == ("pending", ALICE)
                assert bob.call(wire.UserDecision(Decision.ACCEPT, int(entry))).ok
            finally:
                bob.quit()
            # The accepted message is pulled from a.example into bob's mailbox.
            wait_until(lambda: state_of(b, "both") == "accepted", 30, "bob's copy pulled")
            bob = b.client(BOB)
            try:
                bobs = bob.read(int(entry))
            finally:
                bob.quit()
            assert bobs.endswith(b"\r\n\r\nOne message, two worlds.\r\n")
            assert b"DKIM-Signature" not in bobs  # SMDP proves origin with TLS, not DKIM
        pf.wait_until_queue_empty()
        [carols] = pf.mailbox("carol")
        assert carols.endswith(b"\n\nOne message, two worlds.\n")
        assert header(carols)["To"] == f"{BOB}, {CAROL}"
        assert dkim.verify(carols, dnsfunc=dns_txt(dns_server))
