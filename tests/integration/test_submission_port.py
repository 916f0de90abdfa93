"""The submission port for ordinary mail clients (docs/smtp.md, "Submission
(ports 587 and 465)"), driven by Python's smtplib and by swaks: AUTH required
and only over TLS (the loopback exception), the login slow-down shared with
the user port, MAIL FROM and From held to the user's identities, Bcc
stripped, the origin's refusals as SMTP codes, and a message submitted by
smtplib read by its SMDP recipient at the other server.
"""

from __future__ import annotations

import poplib
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.client.session import UserClient
from smdp.protocol import user as wire
from smdp.server.accounts import Accounts
from smdp.store import open_store
from smdp.terms import Decision

from .harness import Pki, free_ports, make_pair, running, wait_until
from .inprocess import InProcessServer

ALICE, BOB = "alice@a.example", "bob@b.example"
MESSAGE = (f"From: {ALICE}\r\nTo: {BOB}\r\nBcc: secret@c.example\r\n"
           "Subject: from a mail client\r\n\r\nHello Bob, from Thunderbird.\r\n")


def server(root: Path, *, tls: bool = False, plaintext_login: bool = True,
           extra: str = "") -> InProcessServer:
    """a.example with the submission port (and, with ``tls``, STARTTLS there
    and the implicit-TLS port), alice with a second identity."""
    listen = 'submission = "127.0.0.1:0"\n'
    lines = extra
    if tls:
        listen += 'submission_tls = "127.0.0.1:0"\n'
        lines += "[tls]\n" + Pki(root).tls("smdp.a.example")
    s = InProcessServer(root, "a.example", lines, listen=listen,
                        plaintext_login=plaintext_login)
    s.add_user(ALICE, identities=("sales@a.example",))
    return s


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[InProcessServer]:
    s = server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


# The in-process server's store is SQLite whatever the pass: these run in the
# default pass only (tests/integration/conftest.py); the whole flow, on
# make_pair, runs on both backends.
in_process = pytest.mark.own_backend


def client_context(root: Path) -> ssl.SSLContext:
    """Trusts the test CA. smtplib checks the certificate against the host it
    connected to, 127.0.0.1, which a test certificate does not name: the
    chain is verified, the name is not."""
    ctx = ssl.create_default_context(cafile=str(root / "pki" / "smdp-test-CA.pem"))
    ctx.check_hostname = False
    return ctx


def smtp(port: int | None) -> smtplib.SMTP:
    assert port is not None
    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
    c.ehlo("client.example")
    return c


@in_process
def test_mail_needs_auth_then_plain_and_login_on_loopback(plain: InProcessServer) -> None:
    c = smtp(plain.submission_port)
    # Loopback with allow_plaintext_login: AUTH offered without TLS, as USER/PASS are.
    assert c.has_extn("auth") and c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    assert not c.has_extn("starttls")  # no certificate configured
    code, text = c.mail(ALICE)
    assert (code, text) == (530, b"5.7.0 Authentication required")
    c.user, c.password = ALICE, "secret"
    assert c.auth("PLAIN", c.auth_plain)[0] == 235
    refused = c.sendmail(ALICE, [BOB], MESSAGE)
    assert refused == {}
    c.quit()

    c = smtp(plain.submission_port)
    c.user, c.password = "sales@a.example", "secret"  # any identity logs in, as on the user port
    assert c.auth("LOGIN", c.auth_login)[0] == 235
    code, text = c.mail("sales@a.example")
    assert code == 250
    c.rcpt(BOB)
    code, text = c.data(f"From: sales@a.example\r\nTo: {BOB}\r\n\r\nhi\r\n")
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    msgid = text.split()[-1].decode()
    c.quit()
    # Held at the origin like any submission, shown by SENT on the user port.
    alice = plain.client(ALICE)
    try:
        rows = alice.call(wire.Sent(msgid)).lines or []
    finally:
        alice.quit()
    assert [row.split()[:2] for row in rows] == [[msgid, BOB]]


@in_process
def test_wrong_password_refused_and_slowed_like_the_user_port(tmp_path: Path) -> None:
    s = server(tmp_path, extra="[abuse]\nlogin_failures_per_client = 100\n"
                               "login_failures_per_account = 2\nlogin_delay_max = 1\n")
    s.start()
    try:
        c = smtp(s.submission_port)
        c.user, c.password = ALICE, "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            c.auth("PLAIN", c.auth_plain)
        assert failed.value.smtp_code == 535
        assert failed.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        c.quit()
        # One more failure, on the user port: the account's allowance (2) is used up...
        pop = poplib.POP3("127.0.0.1", s.user_port, timeout=10)
        pop.user(ALICE)
        with pytest.raises(poplib.error_proto):
            pop.pass_("wrong again")
        pop.quit()
        # ... so the next failure here waits login_delay_max: the same windows
        # (the submission port's own two failures alone would wait 0.2 s).
        c = smtp(s.submission_port)
        c.user, c.password = ALICE, "still wrong"
        began = time.monotonic()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.auth("LOGIN", c.auth_login)
        assert time.monotonic() - began >= 0.9
        c.quit()
    finally:
        s.stop()


@in_process
def test_envelope_sender_and_from_must_be_the_users(plain: InProcessServer) -> None:
    c = smtp(plain.submission_port)
    c.login(ALICE, "secret")
    code, text = c.mail("boss@bank.example")
    assert (code, text) == (550, b"5.7.1 boss@bank.example is not one of your identities")
    assert c.mail("")[0] == 550  # the null sender is nobody's identity
    assert c.mail(ALICE)[0] == 250
    assert c.rcpt("Postmaster")[0] == 553  # no domain: no SMDP recipient
    assert c.rcpt(BOB)[0] == 250
    code, text = c.data(f"From: boss@bank.example\r\nTo: {BOB}\r\n\r\npay now\r\n")
    assert (code, text) == (550, b"5.7.1 From <boss@bank.example> is not one of your "
                                 b"identities")
    c.quit()


@in_process
def test_a_message_over_the_limit_with_the_added_fields_is_552(tmp_path: Path) -> None:
    s = server(tmp_path, extra="[limits]\nmax_message_size = 400\n")
    s.start()
    try:
        c = smtp(s.submission_port)
        c.login(ALICE, "secret")
        c.mail(ALICE)
        c.rcpt(BOB)
        # Under 400 octets as sent, over once Received, Date and Message-ID are added.
        code, text = c.data(f"To: {BOB}\r\n\r\n" + "x" * 300 + "\r\n")
        assert code == 552 and text.startswith(b"5.3.4 the message is ")
        c.quit()
    finally:
        s.stop()


@in_process
def test_a_suspended_sender_is_refused_with_the_origins_sentence(tmp_path: Path) -> None:
    s = server(tmp_path)
    store = open_store(s.config)  # as `smdp admin suspend alice@a.example` does
    try:
        store.set_suspension(Accounts(store, s.config).user(ALICE).id, "spam reports")
    finally:
        store.close()
    s.start()
    try:
        c = smtp(s.submission_port)
        c.login(ALICE, "secret")
        c.mail(ALICE)
        c.rcpt(BOB)
        code, text = c.data(MESSAGE)
        assert (code, text) == (550, b"5.7.1 sending is suspended for this account "
                                     b"(spam reports); contact your administrator")
        c.quit()
    finally:
        s.stop()


@in_process
def test_auth_only_over_tls_starttls_and_implicit_tls(tmp_path: Path) -> None:
    s = server(tmp_path, tls=True, plaintext_login=False)
    s.start()
    try:
        c = smtp(s.submission_port)
        assert c.has_extn("starttls") and not c.has_extn("auth")
        c.user, c.password = ALICE, "secret"
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            c.auth("PLAIN", c.auth_plain)
        assert refused.value.smtp_code == 538
        c.starttls(context=client_context(tmp_path))
        c.ehlo("client.example")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert c.auth("LOGIN", c.auth_login)[0] == 235
        assert c.sendmail(ALICE, [BOB], MESSAGE) == {}
        c.quit()

        assert s.submission_tls_port is not None
        tls = smtplib.SMTP_SSL("127.0.0.1", s.submission_tls_port, timeout=10,
                               context=client_context(tmp_path))
        tls.ehlo("client.example")
        assert not tls.has_extn("starttls")
        tls.user, tls.password = ALICE, "secret"
        assert tls.auth("PLAIN", tls.auth_plain)[0] == 235
        assert tls.sendmail(ALICE, [BOB], MESSAGE) == {}
        tls.quit()
    finally:
        s.stop()


@in_process
def test_swaks_submits_with_auth_over_starttls(tmp_path: Path) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        note = "swaks is not installed (apt-get install swaks): not tried against the port"
        print(note)
        pytest.skip(note)
    support = subprocess.run([swaks, "--support"], capture_output=True, text=True,
                             timeout=60)
    if "=== TLS supported" not in support.stdout + support.stderr:
        note = "swaks has no TLS (apt-get install libnet-ssleay-perl): not tried against the port"
        print(note)
        pytest.skip(note)
    s = server(tmp_path, tls=True, plaintext_login=False)
    s.start()
    try:
        run = subprocess.run(
            [swaks, "--server", f"127.0.0.1:{s.submission_port}", "--tls",
             "--auth", "PLAIN", "--auth-user", ALICE, "--auth-password", "secret",
             "--from", ALICE, "--to", BOB, "--header", "Subject: from swaks",
             "--helo", "client.example", "--timeout", "10"],
            capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "<-  220 2.0.0 Ready to start TLS" in run.stdout
        assert "<~  235 2.7.0 Authentication successful" in run.stdout
        assert "<~  250 2.0.0 Ok: queued as " in run.stdout
    finally:
        s.stop()


def test_smtplib_message_reaches_the_smdp_recipient_without_bcc(tmp_path: Path) -> None:
    a, b = make_pair(tmp_path)
    a.submission_port, = free_ports(1)
    a.write_config()
    a.add_user(ALICE)
    b.add_user(BOB)
    with running(a, b):
        c = smtplib.SMTP("127.0.0.1", a.submission_port, timeout=10)
        c.login(ALICE, "secret")
        c.mail(ALICE)
        assert c.rcpt(BOB)[0] == 250
        assert c.rcpt("secret@c.example")[0] == 250  # the Bcc'd recipient
        code, text = c.data(MESSAGE)
        assert code == 250
        msgid = text.decode().removeprefix("2.0.0 Ok: queued as ")
        c.quit()
        assert "submission=127.0.0.1:" in a.log()  # the start line names the port

        wait_until(lambda: len(b.envelopes(BOB)) == 1, 20, "the envelope at b.example")
        [[entry, state, sender, *_]] = b.envelopes(BOB)
        assert (state, sender) == ("pending", ALICE)
        bob = UserClient("127.0.0.1", b.user_port)
        bob.login(BOB, "secret", verb="PASS")
        bob.call(wire.UserDecision(Decision.ACCEPT, int(entry)))
        bob.quit()
        wait_until(lambda: a.sent_routes(ALICE, msgid).get(BOB, ("", ""))[1] == "delivered",
                   20, "the pull to finish")
        bob = b.client(BOB)
        try:
            body = bob.read(int(entry))
        finally:
            bob.quit()
    header = body.split(b"\r\n\r\n", 1)[0]
    assert b"Hello Bob, from Thunderbird." in body
    assert b"\r\nSubject: from a mail client" in header
    assert b"Bcc" not in header and b"secret@c.example" not in body
    assert b" with ESMTPA id " in header  # RFC 3848: ESMTP with AUTH


@in_process
def test_a_message_larger_than_a_chunk_is_spooled_and_arrives_whole(tmp_path: Path) -> None:
    """Past 256 KiB the codec hands the message out in pieces, each spooled
    as it comes (BlockChunk): what the recipient reads is every octet sent."""
    s = server(tmp_path)
    s.add_user("carol@a.example")
    s.start()
    try:
        lines = "".join(f"line {n:06d} of a long report\r\n" for n in range(30_000))
        c = smtp(s.submission_port)
        c.login(ALICE, "secret")
        code, _text = c.mail(ALICE)
        c.rcpt("carol@a.example")
        code, text = c.data(f"From: {ALICE}\r\nSubject: big\r\n\r\n{lines}")
        assert code == 250, text
        c.quit()

        def pending() -> list[str]:
            carol = s.client("carol@a.example")
            try:
                return list(carol.call(wire.Envs(False)).lines or [])
            finally:
                carol.quit()

        wait_until(lambda: len(pending()) == 1, 20, "the envelope to carol")
        entry = int(pending()[0].split()[0])
        carol = s.client("carol@a.example")
        carol.call(wire.UserDecision(Decision.ACCEPT, entry))
        carol.quit()

        def read() -> bytes:
            carol = s.client("carol@a.example")
            try:
                return carol.read(entry)
            except Exception:
                return b""
            finally:
                carol.quit()

        wait_until(lambda: read() != b"", 20, "the message in carol's mailbox")
        assert read().endswith(b"\r\n\r\n" + lines.encode())
    finally:
        s.stop()
