"""The MX (issue 12; docs/smtp.md, "The MX"), driven by Python's smtplib,
swaks and raw sockets: only local users of the server's own domains, no
relay in any form, no smuggling, no plaintext injected after STARTTLS, and
Table 3 for SMTP mail: held mail decided through the user port with each of
the five options, a black-listed sender refused with nothing stored, a
spoofed white-listed friend held, a verified friend delivered; a SIGKILL at
the end of data loses nothing acknowledged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smdp.client.session import ClientError, UserClient
from smdp.mail.addresses import domain_of
from smdp.protocol import user as wire
from smdp.terms import Decision

from .auth_dns import publish_dkim, publish_dmarc, publish_sender, publish_spf, sign
from .faults import StandInDns
from .harness import Pki, Server, free_ports, wait_until
from .inprocess import InProcessServer

# Section 5.3 alone, as before issue 16 item 1: counters that never age, no
# rejecting users needed, no hysteresis, no probation (docs/protocol.md 11.3).
PAPER_QUALITY = ("[quality]\nhalf_life = \"never\"\nmin_deciders = 0\nmargin = 0\n"
                 "probation_per_day = 0\n")

BOB, CAROL = "bob@b.example", "carol@b.example"
FRIEND = "friend@c.example"

# The in-process server's store is SQLite whatever the pass (as in
# test_submission_port.py).
pytestmark = pytest.mark.own_backend


def message(subject: str, sender: str = FRIEND, to: str = BOB, text: str = "Hello Bob") -> bytes:
    return (f"From: Friend <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n"
            f"{text}\r\n").encode()


@contextlib.contextmanager
def mx(root: Path, *, tls: bool = False, hold: float | None = None, extra: str = "",
       dns: StandInDns | None = None) -> Iterator[InProcessServer]:
    """b.example with the MX and its real sender authentication, asking
    ``dns`` (a StandInDns of the test's, where it publishes SPF, DKIM and
    DMARC records; one of its own, with none, otherwise). ``hold``:
    [delivery] expire_days in seconds, with housekeeping every 0.2 s;
    ``extra``: more tables."""
    with contextlib.ExitStack() as stack:
        if dns is None:
            dns = stack.enter_context(StandInDns())
        lines = extra + dns.config + (
            "[tls]\n" + Pki(root).tls("smdp.b.example") if tls else "")
        s = InProcessServer(root, "b.example", lines, listen='mx = "127.0.0.1:0"\n')
        if hold is not None:
            delivery = dataclasses.replace(s.config.delivery, expire_days=hold / 86400.0,
                                           housekeeping_interval=0.2)
            s.config = dataclasses.replace(s.config, delivery=delivery)
        s.add_user(BOB)
        s.add_user(CAROL)
        s.start()
        stack.callback(s.stop)
        yield s


def smtp(s: InProcessServer) -> smtplib.SMTP:
    assert s.mx_port is not None
    c = smtplib.SMTP("127.0.0.1", s.mx_port, timeout=10)
    c.ehlo("mta.c.example")
    return c


def stored(s: InProcessServer) -> tuple[int, int]:
    """(envelopes, envelopes whose bytes are stored) in the server's store file."""
    # no command shows this: that nothing at all was written for refused mail
    with contextlib.closing(sqlite3.connect(
            f"file:{s.config.store_path}?mode=ro", uri=True)) as db:
        envelopes = db.execute("SELECT count(*) FROM in_envelopes").fetchone()[0]
        chunks = db.execute(
            "SELECT count(DISTINCT envelope_id) FROM in_body_chunks").fetchone()[0]
    return int(envelopes), int(chunks)


def lines(c: UserClient, command: wire.UserCommand) -> list[str]:
    return list(c.call(command).lines or [])


def shown(c: UserClient, entry: str) -> dict[str, str]:
    """ENV <entry>: its ``Field: value`` lines."""
    return dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
                for line in lines(c, wire.EnvShow(int(entry))))


def envelopes(c: UserClient) -> dict[str, list[str]]:
    """ENVS ALL by subject: [id, state, sender, size, attachments]."""
    found = {}
    for line in lines(c, wire.Envs(True)):
        fields = line.split(" ", 5)
        found[fields[5] if len(fields) > 5 else ""] = fields[:5]
    return found


class RawSmtp:
    """A raw SMTP client, for what no well-behaved client sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.reply().startswith("220")

    def reply(self) -> str:
        got = []
        while True:
            line = self.file.readline().decode()
            assert line, "connection closed"
            got.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                return "\n".join(got)

    def cmd(self, line: bytes) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- who the MX takes mail for ---------------------------------------------------------


def test_only_local_users_and_no_relay_in_any_form(tmp_path: Path) -> None:
    with mx(tmp_path) as s:
        assert s.mx_port is not None
        raw = RawSmtp(s.mx_port)
        ehlo = raw.cmd(b"EHLO mta.c.example")
        for keyword in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8"):
            assert keyword in ehlo
        assert "AUTH" not in ehlo and "STARTTLS" not in ehlo  # no certificate here
        assert raw.cmd(b"AUTH PLAIN AGJvYgBzZWNyZXQ=").startswith("502 5.5.1")
        assert raw.cmd(b"MAIL FROM:<friend@c.example>").startswith("250")
        assert raw.cmd(b"RCPT TO:<nobody@b.example>").startswith("550 5.1.1")
        for relay in (b"<bob@c.example>", b"<bob%c.example@b.example>",
                      b"<c.example!bob@b.example>", b'<"bob@c.example"@b.example>',
                      b"<@b.example,@c.example:bob@b.example>", b"<bob@[127.0.0.1]>",
                      b"<bob@[IPv6:::1]>"):
            answer = raw.cmd(b"RCPT TO:" + relay)
            assert answer.startswith("550 5.7.1") and "relaying denied" in answer, (relay,
                                                                                    answer)
        assert raw.cmd(b"DATA").startswith("554 5.5.1")  # no recipient taken
        assert raw.cmd(b"RCPT TO:<Postmaster>").startswith("550 5.1.1")  # no such user here
        assert raw.cmd(b"RCPT TO:<BOB@B.example>").startswith("250 2.1.5")
        raw.close()
        assert stored(s) == (0, 0)


def test_sessions_per_client_address_are_capped(tmp_path: Path) -> None:
    with mx(tmp_path, extra="[limits]\nmax_sessions_per_client = 1\n") as s:
        assert s.mx_port is not None
        first = RawSmtp(s.mx_port)
        with socket.create_connection(("127.0.0.1", s.mx_port), timeout=10) as second:
            assert second.makefile("rb").readline().startswith(
                b"421 4.7.0 too many sessions from 127.0.0.1")
        assert first.cmd(b"NOOP").startswith("250")
        first.close()


def test_smtplib_mail_is_held_and_shown_like_an_envelope(tmp_path: Path) -> None:
    big = "x" * 998 + "\r\n"
    with mx(tmp_path) as s:
        c = smtp(s)
        refused = c.sendmail(FRIEND, [BOB, CAROL], message("lunch", to=BOB)
                             + (big * 800).encode())  # about 800 KB: spooled
        assert refused == {}
        # 8BITMIME and SMTPUTF8 (RFC 6152, RFC 6531): raw UTF-8 in path and header.
        assert c.has_extn("8bitmime") and c.has_extn("smtputf8")
        c.sendmail("amélie@c.example", [BOB], "From: amelie@c.example\r\nSubject: déjeuner\r\n"
                   "\r\nÀ midi ?\r\n".encode(), mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        c.quit()
        bob = s.client(BOB)
        envs = envelopes(bob)
        entry, state, sender = envs["lunch"][:3]
        assert (state, sender) == ("pending", FRIEND)
        env = shown(bob, entry)
        assert env["Via"] == "SMTP" and env["Verified"] == "none"
        assert env["Authentication-Results"] == (
            "smdp.b.example; spf=none smtp.mailfrom=friend@c.example; dkim=none; "
            "dmarc=none header.from=c.example")
        assert env["Server"] == "c.example" and env["Subject"] == "lunch"
        assert "Headline: Hello Bob" in lines(bob, wire.EnvShow(int(entry)))
        assert envelopes(bob)["déjeuner"][1:3] == ["pending", "amelie@c.example"]
        bob.quit()
        assert stored(s)[0] == 2  # one copy of each for both recipients


@pytest.mark.skipif(shutil.which("swaks") is None,
                    reason="swaks is not installed (apt-get install swaks)")
def test_swaks_sends_to_the_mx(tmp_path: Path) -> None:
    with mx(tmp_path) as s:
        run = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{s.mx_port}", "--from", FRIEND, "--to", BOB,
             "--header", "Subject: from swaks", "--helo", "mta.c.example",
             "--pipeline", "--timeout", "10"],
            capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "<** " not in run.stdout and "<-  250 2.0.0 Ok: queued as " in run.stdout
        bob = s.client(BOB)
        assert envelopes(bob)["from swaks"][1] == "pending"
        bob.quit()


# -- sender authentication through the MX's resolver -------------------------------------


LOOPBACK_SPF = "v=spf1 ip4:127.0.0.0/8 -all"
ELSEWHERE_SPF = "v=spf1 ip4:192.0.2.1 -all"


@pytest.mark.parametrize(("spf", "dkim", "dmarc", "results", "verified"), [
    # Everything right: SPF and DKIM pass aligned, DMARC passes.
    (LOOPBACK_SPF, "pass", "v=DMARC1; p=reject",
     [("spf", "pass"), ("dkim", "pass"), ("dmarc", "pass")], "c.example"),
    # SPF alone, aligned, is enough to verify.
    (LOOPBACK_SPF, "absent", "v=DMARC1; p=reject",
     [("spf", "pass"), ("dkim", "none"), ("dmarc", "pass")], "c.example"),
    # DKIM alone, with no DMARC record: verified, DMARC none (docs/smtp.md).
    (None, "pass", None, [("spf", "none"), ("dkim", "pass"), ("dmarc", "none")], "c.example"),
    (ELSEWHERE_SPF, "absent", "v=DMARC1; p=none",
     [("spf", "fail"), ("dkim", "none"), ("dmarc", "fail")], "none"),
    ("v=spf1 ~all", "absent", None, [("spf", "softfail"), ("dkim", "none"), ("dmarc", "none")],
     "none"),
    (None, "absent", None, [("spf", "none"), ("dkim", "none"), ("dmarc", "none")], "none"),
    # A signature that no longer matches: DMARC p=quarantine holds it.
    (ELSEWHERE_SPF, "fail", "v=DMARC1; p=quarantine",
     [("spf", "fail"), ("dkim", "fail"), ("dmarc", "fail")], "none"),
], ids=["all-pass", "spf-only", "dkim-only-no-dmarc", "spf-fail", "spf-softfail", "none",
        "dkim-fail-quarantine"])
def test_sender_authentication_is_recorded_and_shown(
        tmp_path: Path, spf: str | None, dkim: str, dmarc: str | None,
        results: list[tuple[str, str]], verified: str) -> None:
    """Issue 12 item 2 with the server's own DnsSenderAuthenticator: each
    result in the recipient's envelope and in the stored message's field."""
    with StandInDns() as dns, mx(tmp_path, dns=dns) as s:
        if spf is not None:
            publish_spf(dns, "c.example", spf)
        if dmarc is not None:
            publish_dmarc(dns, "c.example", dmarc)
        data = message("checked")
        if dkim != "absent":
            data = sign(data, publish_dkim(dns, "c.example"))
            if dkim == "fail":
                data = data.replace(b"Hello Bob", b"Hello Bib")
        c = smtp(s)
        c.sendmail(FRIEND, [BOB], data)
        c.quit()
        bob = s.client(BOB)
        entry, state = envelopes(bob)["checked"][:2]
        # Nobody is on a list: verified or not, it waits for Bob.
        assert state == "pending"
        env = shown(bob, entry)
        assert env["Verified"] == verified
        assert re.findall(r"\b(spf|dkim|dmarc)=(\w+)", env["Authentication-Results"]) == results
        assert bob.call(wire.UserDecision(Decision.ACCEPT, int(entry))).ok
        bob.quit()
        bob = s.client(BOB)
        head = bob.read(int(entry)).partition(b"\r\n\r\n")[0].decode()
        field = head.split("Authentication-Results: ", 1)[1].split("\r\n", 1)[0]
        assert field.startswith("smdp.b.example;")
        unfolded = re.sub(r"\r\n\t", " ", head.split("Authentication-Results: ", 1)[1])
        assert re.findall(r"\b(spf|dkim|dmarc)=(\w+)", unfolded.split("\r\n", 1)[0]) \
            == results
        bob.quit()


def test_with_sender_auth_off_nothing_is_verified(tmp_path: Path) -> None:
    """[smtp] sender_auth = false: the signed friend on the white list is
    held, not delivered, and no DNS question is asked."""
    with StandInDns() as dns, mx(tmp_path, dns=dns,
                                 extra="[smtp]\nsender_auth = false\n") as s:
        key = publish_sender(dns, "c.example")
        bob = s.client(BOB)
        assert bob.call(wire.ListAdd("in-white", FRIEND, "c.example")).ok
        bob.quit()
        c = smtp(s)
        c.sendmail(FRIEND, [BOB], sign(message("unchecked"), key))
        c.quit()
        bob = s.client(BOB)
        entry, state = envelopes(bob)["unchecked"][:2]
        assert state == "pending"
        env = shown(bob, entry)
        assert env["Verified"] == "none"
        assert env["Authentication-Results"].startswith(
            'smdp.b.example; spf=none reason="sender authentication is off"')
        bob.quit()
        assert dns.questions == []


# -- the end of data and STARTTLS ------------------------------------------------------


SMUGGLED = b"MAIL FROM:<boss@b.example>\r\nRCPT TO:<bob@b.example>\r\nDATA\r\nforged\r\n"


@pytest.mark.parametrize("fake_end", [b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\n",
                                      b"\r\n.\r", b"\r.\n"])
def test_smuggling_variants_never_end_the_data(tmp_path: Path, fake_end: bytes) -> None:
    with mx(tmp_path) as s:
        assert s.mx_port is not None
        raw = RawSmtp(s.mx_port)
        raw.cmd(b"EHLO mta.c.example")
        assert raw.cmd(b"MAIL FROM:<friend@c.example>").startswith("250")
        assert raw.cmd(b"RCPT TO:<bob@b.example>").startswith("250")
        assert raw.cmd(b"DATA").startswith("354")
        # If any fake end ended the data, the smuggled commands would each be
        # answered; only the real end is, with the refusal.
        answer = raw.cmd(b"From: friend@c.example\r\n\r\nhi" + fake_end + SMUGGLED + b".")
        assert answer.startswith("554 5.6.0") and "bare CR or LF" in answer, answer
        assert raw.cmd(b"NOOP").startswith("250")  # in step: nothing else was answered
        raw.close()
        assert stored(s) == (0, 0)


def test_plaintext_injected_after_starttls_is_ignored(tmp_path: Path) -> None:
    with mx(tmp_path, tls=True) as s:
        assert s.mx_port is not None
        raw = RawSmtp(s.mx_port)
        assert "STARTTLS" in raw.cmd(b"EHLO mta.c.example")
        # CVE-2011-0411: commands pipelined behind STARTTLS in plaintext.
        raw.sock.sendall(b"STARTTLS\r\nMAIL FROM:<x@c.example>\r\nRCPT TO:<bob@b.example>\r\n")
        assert raw.reply().startswith("220")
        ctx = ssl.create_default_context(cafile=str(tmp_path / "pki" / "smdp-test-CA.pem"))
        ctx.check_hostname = False
        tls = ctx.wrap_socket(raw.sock, server_hostname="smdp.b.example")
        raw.sock, raw.file = tls, tls.makefile("rb")
        # The first answer over TLS is EHLO's: the injected commands were dropped.
        assert raw.cmd(b"EHLO mta.c.example").startswith("250-smdp.b.example")
        assert raw.cmd(b"RCPT TO:<bob@b.example>").startswith("503 5.5.1")
        assert raw.cmd(b"MAIL FROM:<friend@c.example>").startswith("250")
        assert raw.cmd(b"RCPT TO:<bob@b.example>").startswith("250")
        assert raw.cmd(b"DATA").startswith("354")
        assert raw.cmd(message("over tls") + b".").startswith("250 2.0.0")
        raw.close()
        bob = s.client(BOB)
        entry = envelopes(bob)["over tls"][0]
        assert bob.call(wire.UserDecision(Decision.ACCEPT, int(entry))).ok
        bob.quit()
        bob = s.client(BOB)  # a new POP3 session lists the message
        body = bob.read(int(entry))
        head = body.partition(b"\r\n\r\n")[0]
        assert b"Return-Path: <friend@c.example>" in head and b"with ESMTPS id" in head
        bob.quit()


# -- Table 3 and the five options --------------------------------------------------------


def test_each_decision_on_held_mail(tmp_path: Path) -> None:
    options = {"one": Decision.ACCEPT, "two": Decision.ACCEPT_AUTH, "three": Decision.REJECT,
               "four": Decision.REJECT_SPAM, "five": Decision.REJECT_SPAMMER}
    senders = {name: f"{name}@c.example" for name in options}
    with mx(tmp_path) as s:
        c = smtp(s)
        for name in options:
            # A forged claim of this server's own results (RFC 8601 section 5).
            forged = b"Authentication-Results: smdp.b.example; dkim=pass\r\n"
            c.sendmail(f"bounce-{name}@c.example", [BOB],
                       forged + message(name, sender=senders[name]))
        c.quit()
        assert stored(s) == (5, 5)
        bob = s.client(BOB)
        envs = envelopes(bob)
        for name, decision in options.items():
            answer = bob.call(wire.UserDecision(decision, int(envs[name][0])))
            assert answer.ok, answer
        bob.quit()
        bob = s.client(BOB)  # a new POP3 session lists the accepted messages
        envs = envelopes(bob)
        assert {name: envs[name][1] for name in options} == {
            "one": "accepted", "two": "accepted", "three": "rejected", "four": "spam",
            "five": "spammer"}
        # The accepted messages are in the mailbox, with this hop's trace and results.
        body = bob.read(int(envs["one"][0]))
        head, _, rest = body.partition(b"\r\n\r\n")
        assert b"Received: from mta.c.example ([127.0.0.1]) by smdp.b.example with ESMTP" in head
        assert b"Authentication-Results: smdp.b.example; spf=none\r\n\t" \
            b"smtp.mailfrom=bounce-one@c.example; dkim=none; dmarc=none\r\n\t" \
            b"header.from=c.example\r\n" in head
        assert b"dkim=pass" not in head  # the forged field is gone
        assert rest == b"Hello Bob\r\n"
        assert b"Return-Path: <bounce-one@c.example>" in head  # the MAIL FROM, not From
        lists = lines(bob, wire.Lists())
        assert any(line.startswith("in-white two@c.example c.example auto") for line in lists)
        assert any(line.startswith("in-black five@c.example c.example auto") for line in lists)
        assert len(lists) == 2
        bob.quit()
        # The reject family deleted the bytes; nothing was sent anywhere.
        assert stored(s) == (5, 2)
        # The black-listed sender's next message is refused, nothing stored.
        c = smtp(s)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail(senders["five"], [BOB], message("again", sender=senders["five"]))
        assert refused.value.smtp_code == 550
        c.quit()
        assert stored(s) == (5, 2)


def test_black_listed_sender_refused_unverified_at_data_verified_at_rcpt(
        tmp_path: Path) -> None:
    with StandInDns() as dns, mx(tmp_path, dns=dns) as s:
        publish_spf(dns, "c.example")  # 127.0.0.0/8 may send c.example's mail
        bob = s.client(BOB)
        for sender in (FRIEND, "spoofer@d.example"):
            assert bob.call(wire.ListAdd("in-black", sender, domain_of(sender))).ok
        bob.quit()
        c = smtp(s)
        # SPF passes for c.example: refused at RCPT, before any byte of the message.
        c.mail(FRIEND)
        code, text = c.rcpt(BOB)
        assert (code, text) == (550, b"5.7.1 <bob@b.example> does not accept mail from "
                                     b"<friend@c.example>")
        assert c.rcpt(CAROL)[0] == 250
        c.rset()
        # From the friend, MAIL FROM elsewhere (no SPF pass for it): known
        # only once From is read, and refused then, at the end of data.
        c.mail("list-bounces@e.example")
        assert c.rcpt(BOB)[0] == 250
        assert c.data(message("blocked later")) == (550, b"5.7.1 Message refused by the "
                                                         b"recipient")
        # d.example is not verified either: refused at the end of data.
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("anyone@e.example", [BOB], message("spoof", sender="spoofer@d.example"))
        assert refused.value.smtp_code == 550
        c.quit()
        assert stored(s) == (0, 0)


def test_spoofed_white_listed_friend_is_held_and_the_real_one_delivered(
        tmp_path: Path) -> None:
    with StandInDns() as dns, mx(tmp_path, dns=dns) as s:
        key = publish_sender(dns, "c.example", dmarc="v=DMARC1; p=none")
        publish_sender(dns, "d.example", dmarc="v=DMARC1; p=none")
        bob = s.client(BOB)
        for sender in (FRIEND, "pal@d.example"):
            assert bob.call(wire.ListAdd("in-white", sender, domain_of(sender))).ok
        bob.quit()
        c = smtp(s)
        # The real friend: c.example's key signed it (DKIM aligned with From).
        c.sendmail("bounces@e.example", [BOB], sign(message("real friend"), key))
        # A forger's copy of pal's address: no signature, and SPF passes only
        # for the forger's own MAIL FROM domain, which From does not align with.
        publish_spf(dns, "forger.example")
        c.sendmail("x@forger.example", [BOB], message("spoofed pal", sender="pal@d.example"))
        c.quit()
        bob = s.client(BOB)
        envs = envelopes(bob)
        assert envs["real friend"][1] == "accepted" and envs["spoofed pal"][1] == "pending"
        env = shown(bob, envs["real friend"][0])
        assert env["Verified"] == "c.example"
        assert "dkim=pass header.d=c.example" in env["Authentication-Results"]
        spoofed = shown(bob, envs["spoofed pal"][0])
        assert spoofed["Verified"] == "none"
        assert "spf=pass" in spoofed["Authentication-Results"]
        assert "dmarc=fail" in spoofed["Authentication-Results"]
        bob.quit()


def test_a_spoofed_friend_whose_domain_says_reject_is_refused(tmp_path: Path) -> None:
    """DMARC p=reject failing (RFC 7489 6.3): refused at the end of data,
    whatever the lists say, nothing stored and nothing sent back."""
    with StandInDns() as dns, mx(tmp_path, dns=dns) as s:
        key = publish_sender(dns, "c.example", dmarc="v=DMARC1; p=reject")
        bob = s.client(BOB)
        assert bob.call(wire.ListAdd("in-white", FRIEND, "c.example")).ok
        bob.quit()
        c = smtp(s)
        c.mail("x@forger.example")
        c.rcpt(BOB)
        code, text = c.data(message("spoofed friend"))
        assert (code, text) == (550, b"5.7.1 c.example does not let mail that fails DMARC "
                                     b"through (p=reject)")
        assert stored(s) == (0, 0)
        # A signature that no longer matches the message is no better.
        tampered = sign(message("tampered"), key).replace(b"Hello Bob", b"Pay Mallory")
        c.mail("x@forger.example")
        c.rcpt(BOB)
        assert c.data(tampered)[0] == 550
        # The real one, signed, is delivered.
        c.sendmail("bounces@e.example", [BOB], sign(message("real"), key))
        c.quit()
        assert stored(s) == (1, 1)
        bob = s.client(BOB)
        assert envelopes(bob)["real"][1] == "accepted"
        bob.quit()


def test_expiry_frees_the_bytes(tmp_path: Path) -> None:
    with mx(tmp_path, hold=0.5) as s:
        c = smtp(s)
        c.sendmail(FRIEND, [BOB], message("expiring"))
        c.quit()
        # The housekeeping loop (every 0.2 s here) expires it and frees its bytes.
        wait_until(lambda: stored(s) == (1, 0), 10, "the held message's bytes freed")
        bob = s.client(BOB)
        entry, state = envelopes(bob)["expiring"][:2]
        assert state == "expired"
        with pytest.raises(ClientError, match="can no longer be fetched"):
            bob.call(wire.UserDecision(Decision.ACCEPT, int(entry)))
        bob.quit()


def test_a_client_network_voted_down_is_refused_before_data(tmp_path: Path) -> None:
    """Issue 12 item 4: quality per client prefix (here 127.0.0.0/24), the
    peer port's thresholds; a blocked sender gets 554 at MAIL FROM."""
    with mx(tmp_path, extra=PAPER_QUALITY + "min_messages = 2\n") as s:
        c = smtp(s)
        for n in range(2):
            c.sendmail(FRIEND, [BOB], message(f"ad {n}"))
        bob = s.client(BOB)
        for entry in envelopes(bob).values():
            bob.call(wire.UserDecision(Decision.REJECT_SPAM, int(entry[0])))
        bob.quit()
        code, text = c.mail("someone@d.example")
        assert code == 554 and text.startswith(b"5.7.1 127.0.0.0/24 blocked: quality -1.00")
        c.quit()
        assert stored(s) == (2, 0)


def test_a_verified_domain_voted_down_is_refused_at_the_end_of_data(tmp_path: Path) -> None:
    with StandInDns() as dns, mx(tmp_path, extra=PAPER_QUALITY + "min_messages = 2\n",
                                 dns=dns) as s:
        key = publish_sender(dns, "c.example")
        c = smtp(s)
        for n in range(2):
            c.sendmail(FRIEND, [BOB], sign(message(f"ad {n}"), key))
            c.sendmail("pal@d.example", [BOB], message(f"note {n}", sender="pal@d.example"))
        bob = s.client(BOB)
        for subject, entry in envelopes(bob).items():
            decision = Decision.REJECT if subject.startswith("ad") else Decision.ACCEPT
            bob.call(wire.UserDecision(decision, int(entry[0])))
        bob.quit()
        # The network is even (2 accepted, 2 rejected); c.example is at -1.
        code, _ = c.mail("bounces@e.example")  # no SPF pass: not known before the data
        assert code == 250
        c.rcpt(BOB)
        code, text = c.data(sign(message("more ads"), key))
        assert code == 554 and text.startswith(b"5.7.1 c.example blocked")
        c.quit()
        assert stored(s)[0] == 4


def test_greylisting_refuses_a_first_time_pair_until_it_retries(tmp_path: Path) -> None:
    with mx(tmp_path, extra="[smtp]\ngreylist_delay = 0.5\n") as s:
        c = smtp(s)
        c.mail(FRIEND)
        code, text = c.rcpt(BOB)
        assert code == 450 and text.startswith(b"4.7.1 <bob@b.example>: greylisted, try again")
        assert c.rcpt("nobody@b.example")[0] == 550  # unknown users are still refused for good
        # A retry after the delay passes: as an MTA's queue would, try again.
        wait_until(lambda: c.rcpt(BOB)[0] == 250, 10, "the pair passed after the delay")
        c.data(message("greylisted once"))
        # The pair is remembered: no delay for the next message.
        c.mail(FRIEND)
        assert c.rcpt(BOB)[0] == 250
        c.quit()
        assert stored(s)[0] == 1


# -- crash safety ------------------------------------------------------------------------


def test_sigkill_at_the_end_of_data_loses_nothing_acknowledged(tmp_path: Path) -> None:
    peer, user, mx_port = free_ports(3)
    dns = StandInDns().__enter__()  # sender authentication asks it, never the real DNS
    s = Server("b.example", "smdp.b.example", tmp_path, peer, user, mx_port=mx_port,
               extra=dns.config)
    s.write_config()
    s.add_user(BOB)
    s.start()
    acknowledged = []
    try:
        for n in range(6):
            c = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
            c.ehlo("mta.c.example")
            c.mail(FRIEND)
            c.rcpt(BOB)
            if n < 5:
                c.data(message(f"msg {n}"))
                acknowledged.append(f"msg {n}")
                c.quit()
                continue
            # The last one: the final dot sent, the server killed before
            # its reply can be read. It may or may not be stored; it was
            # not acknowledged.
            c.putcmd("DATA")
            assert c.getreply()[0] == 354
            c.send(message("msg 5") + b".\r\n")
            s.kill()
            with contextlib.suppress(smtplib.SMTPException, OSError):
                c.getreply()
            c.close()
        s.start()
        found = {row[5] for row in (line for line in s.envelopes(BOB, all=True))}
        assert set(acknowledged) <= found, (acknowledged, found)
    finally:
        s.stop()
        dns.__exit__()


def test_sigkill_around_the_final_dot_keeps_every_message_whole_and_once(
        tmp_path: Path) -> None:
    """Issue 12 item 6, the kill landing at many moments around the end of
    data: before the message is read, while it is spooled, about when it
    commits, after. Whatever the moment, every acknowledged message is
    stored exactly once and whole (its octets end the stored message, under
    our trace fields), and the one that was not acknowledged is stored whole
    or not at all: never half, never twice."""
    peer, user, mx_port = free_ports(3)
    with StandInDns() as dns:
        s = Server("b.example", "smdp.b.example", tmp_path, peer, user, mx_port=mx_port,
                   extra=dns.config)
        s.write_config()
        s.add_user(BOB)
        s.start()
        sent: dict[str, bytes] = {}
        acknowledged: set[str] = set()
        filler = ("y" * 76 + "\r\n") * 4000  # about 300 KB: a spool of several chunks
        try:
            for n, delay in enumerate((0.0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.04, 0.08)):
                c = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
                c.ehlo("mta.c.example")
                done = f"done {n}"
                sent[done] = message(done, text=filler)
                c.sendmail(FRIEND, [BOB], sent[done])
                acknowledged.add(done)
                cut = f"cut {n}"
                sent[cut] = message(cut, text=filler)
                c.mail(FRIEND)
                c.rcpt(BOB)
                c.putcmd("DATA")
                assert c.getreply()[0] == 354
                c.send(sent[cut] + b".\r\n")
                # Not a wait for a condition: the delay is the experiment,
                # moving the kill across the server's reading and commit.
                time.sleep(delay)
                s.kill()
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    if c.getreply()[0] == 250:  # answered before the kill landed
                        acknowledged.add(cut)
                c.close()
                s.start()
            rows = s.query("SELECT id, subject FROM in_envelopes")
            subjects = [subject for _id, subject in rows]
            assert len(subjects) == len(set(subjects)), subjects  # never twice
            assert acknowledged <= set(subjects), (acknowledged, subjects)
            for envelope_id, subject in rows:
                chunks = s.query("SELECT data FROM in_body_chunks WHERE envelope_id = ? "
                                 "ORDER BY seq", (envelope_id,))
                stored_message = b"".join(bytes(chunk) for (chunk,) in chunks)
                assert stored_message.endswith(sent[subject]), subject  # whole
                entries = s.query("SELECT state FROM mailbox WHERE envelope_id = ?",
                                  (envelope_id,))
                assert entries == [("pending",)], (subject, entries)
        finally:
            s.stop()
