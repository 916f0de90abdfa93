"""A throwaway Postfix instance, an SMTP server independent of ours (issue 11
item 6, issue 12 item 6).

Everything of an instance lives in one temporary folder: its own
``config_directory`` (``etc/main.cf``, ``etc/master.cf``), ``queue/``,
``data/``, its log (``maillog``, written by ``postlogd``, not syslog) and
``mail/``, the maildirs of its one virtual mailbox domain. Its smtpd listens
on 127.0.0.1 on a free port; it asks no DNS (``smtp_dns_support_level =
disabled``): mail for other domains goes to ``relayhost`` (``[127.0.0.1]:PORT``,
an smdp MX) or nowhere. It is started with ``postfix -c DIR start`` and
stopped with ``postfix -c DIR stop``, then SIGKILL for whatever of its process
group is still alive; the system's own Postfix (``/etc/postfix``) is never
used.

    with postfix_instance(tmp_path, "c.example", ["carol"]) as pf:
        pf.send("carol@c.example", ["bob@b.example"], data)   # smtplib to its port
        pf.wait_until_queue_empty()
        pf.mailbox("carol")                                    # what arrived, oldest first

Postfix's master must start as root (it then runs as ``mail_owner``, the
``postfix`` user). Without Postfix, without root or without that user, or
when the instance does not start, each test using it is skipped, saying why.
The folder is made with ``tempfile.mkdtemp`` (short paths: Postfix's UNIX
sockets live in it) and opened to others (0755), because the virtual
delivery agent writes the maildirs as the ``postfix`` user, which cannot pass
through pytest's private ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conditions import wait_until

SBIN = Path("/usr/sbin")
POSTFIX, POSTQUEUE, SENDMAIL = SBIN / "postfix", SBIN / "postqueue", SBIN / "sendmail"

# Every service the instance needs, none chrooted (the Debian master.cf
# chroots most of them into /var/spool/postfix, which is not ours).
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
virtual   unix  - n n -     - virtual
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def unavailable() -> str | None:
    """Why no Postfix instance can run here, or None when one can."""
    missing = [str(p) for p in (POSTFIX, POSTQUEUE, SENDMAIL) if not p.exists()]
    if missing:
        return f"Postfix is not installed ({', '.join(missing)} missing; Debian package postfix)"
    if os.geteuid() != 0:
        return "Postfix's master must start as root, and these tests do not run as root"
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        return "the postfix user or the postdrop group does not exist (Postfix half installed)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process_group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class Postfix:
    """One instance: ``domain``'s virtual mailboxes for ``users`` (local
    parts), smtpd on ``port``; ``relayhost`` (``[127.0.0.1]:PORT``) takes mail
    for every other domain; ``tls``: (certificate, key) for smtpd's STARTTLS;
    ``ca``: the CA its SMTP client trusts when it uses STARTTLS."""

    root: Path
    domain: str
    users: list[str]
    port: int = 0
    relayhost: str = ""
    tls: tuple[Path, Path] | None = None
    ca: Path | None = None
    hostname: str = ""
    master_pid: int | None = None
    extra: dict[str, str] = field(default_factory=dict)  # more main.cf settings

    def __post_init__(self) -> None:
        self.hostname = self.hostname or f"mx.{self.domain}"

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    @property
    def log_path(self) -> Path:
        return self.root / "maillog"

    def main_cf(self) -> dict[str, str]:
        owner = pwd.getpwnam("postfix")
        mailboxes = ", ".join(f"{user}@{self.domain}={user}/" for user in self.users)
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.root / "queue"),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": self.domain,
            "myorigin": self.domain,
            "mydestination": "",  # no local(8) delivery: virtual mailboxes only
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",  # loopback may relay: the tests submit from there
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            # No DNS of its own: the one way out is relayhost, an address literal.
            "smtp_dns_support_level": "disabled",
            "relayhost": self.relayhost,
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.mail_dir),
            # inline: maps need no postmap and no file of their own.
            "virtual_mailbox_maps": f"inline:{{ {mailboxes} }}",
            "virtual_uid_maps": f"static:{owner.pw_uid}",
            "virtual_gid_maps": f"static:{owner.pw_gid}",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.root),
            # A deferred message is tried again within seconds, not minutes,
            # so a test that meets a temporary failure still ends in time.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "10s",
            "delay_warning_time": "0",
            "smtp_tls_loglevel": "1",
            "smtpd_tls_loglevel": "1",
        }
        if self.tls is not None:
            settings |= {"smtpd_tls_cert_file": str(self.tls[0]),
                         "smtpd_tls_key_file": str(self.tls[1]),
                         "smtpd_tls_security_level": "may",
                         "smtpd_tls_received_header": "yes"}
        if self.ca is not None:
            settings |= {"smtp_tls_security_level": "may", "smtp_tls_CAfile": str(self.ca)}
        return settings | self.extra

    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "queue").mkdir(exist_ok=True)
        self.mail_dir.mkdir(exist_ok=True)
        owner = pwd.getpwnam("postfix")
        # virtual(8) makes the maildirs as the user of virtual_uid_maps.
        os.chown(self.mail_dir, owner.pw_uid, owner.pw_gid)
        (self.config_dir / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.main_cf().items()))
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))

    def postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(POSTFIX), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        """Start the instance on a free port (another one when that port
        was taken meanwhile); RuntimeError with its log when it cannot."""
        for _attempt in range(3):
            self.port = free_port()
            self.write_config()
            done = self.postfix("start")
            pid_file = self.root / "queue" / "pid" / "master.pid"
            if done.returncode == 0 and pid_file.exists():
                self.master_pid = int(pid_file.read_text().split()[0])
                return
            self.stop()
            if "Address already in use" not in self.log():
                break
        raise RuntimeError(f"postfix -c {self.config_dir} start failed: "
                           f"{done.stdout}{done.stderr}{self.log()[-2000:]}")

    def stop(self) -> None:
        """``postfix stop``, waiting for its processes to end, and SIGKILL
        for those left; safe to call when it is not running."""
        if self.config_dir.exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.postfix("stop", timeout=30)
        pgid, self.master_pid = self.master_pid, None
        if pgid is None:
            return
        # The master (a session leader) takes its children down with it.
        try:
            wait_until(lambda: not _process_group(pgid), 15, "Postfix's processes to end")
        except AssertionError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            wait_until(lambda: not _process_group(pgid), 15, "Postfix's processes killed")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- mail in and out ------------------------------------------------------------------

    def send(self, sender: str, recipients: list[str], data: bytes) -> str:
        """Submit by SMTP to its smtpd (smtplib); the queue id it gives."""
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.example",
                          timeout=30) as client:
            client.ehlo()
            client.mail(sender)
            for rcpt in recipients:
                code, text = client.rcpt(rcpt)
                assert code == 250, (rcpt, code, text)
            code, text = client.data(data)
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[-1]  # "2.0.0 Ok: queued as <id>"

    def sendmail(self, sender: str, recipients: list[str], data: bytes) -> None:
        """Submit with Postfix's own ``sendmail -C DIR`` (postdrop, pickup)."""
        done = subprocess.run([str(SENDMAIL), "-C", str(self.config_dir), "-f", sender, "-i",
                               "--", *recipients], input=data, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def queue(self) -> list[dict[str, object]]:
        """``postqueue -j``: one object per message still queued."""
        done = subprocess.run([str(POSTQUEUE), "-c", str(self.config_dir), "-j"],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def wait_until_queue_empty(self, timeout: float = 30) -> None:
        wait_until(lambda: not self.queue(), timeout, "Postfix's queue to be empty")

    def mailbox(self, user: str) -> list[bytes]:
        """The messages in ``user``'s maildir (new and cur), oldest first."""
        box = self.mail_dir / user
        files = [f for sub in ("new", "cur") if (box / sub).is_dir()
                 for f in (box / sub).iterdir()]
        return [f.read_bytes() for f in sorted(files, key=lambda f: f.stat().st_mtime_ns)]


@contextlib.contextmanager
def postfix_instance(domain: str, users: list[str], **options: object) -> Iterator[Postfix]:
    """A running instance (``Postfix``'s fields as keywords), stopped and
    removed afterwards whatever happens; the test is skipped, saying why,
    when no instance can run here."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="smdp-postfix-"))
    root.chmod(0o755)
    pf = Postfix(root, domain, users, **options)  # type: ignore[arg-type]
    try:
        try:
            pf.start()
        except RuntimeError as exc:
            pytest.skip(f"Postfix is installed but an instance did not start: {exc}")
        yield pf
    finally:
        pf.stop()
        shutil.rmtree(root, ignore_errors=True)
