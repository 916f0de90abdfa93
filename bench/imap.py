"""Issue 14, item 6: smdp's IMAP port against Dovecot, on the same machine and
the same mailbox, in the same run.

The mailbox: 10,000 messages (the corpus's, cycled, when ``SMDP_CORPUS`` is
there; else generated ones of about 3 KB), the same octets in both servers.
smdp holds them as accepted envelopes of one user in its SQLite store (filled
through the store's own methods before the server starts, as a long-lived
mailbox would be); Dovecot as a Maildir, each file the message with the
Return-Path and Delivered-To fields smdp writes as it reads one (so that both
serve the same octets), named with its size (``,S=``/``,W=``) as a delivery
agent names them. Dovecot runs as an ordinary process (``dovecot -F``) on a
free loopback port with its own configuration in a temporary folder: no
system service, no TLS (neither side; loopback), a static password.

Each operation is timed by the same raw-socket client (a logged-in
connection, so login is not timed), in alternating rounds (smdp, Dovecot,
smdp, ...) after one warm-up round each (Dovecot builds its index and cache
on first use, smdp gives the UIDs): SELECT INBOX; FETCH 1:* (UID FLAGS
RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID)]),
what a client's message list asks for; FETCH of 1,000 bodies (BODY.PEEK[]
of messages 4001:5000); and IDLE notification latency, from the moment a new
message is in the server's store to the client's reading ``* n EXISTS``.
A new message "is in the store" when, for Dovecot, a file is renamed into
the Maildir's new/ (how a delivery agent delivers) and, for smdp, an
accepted entry is committed to SQLite by another process (how smdp's own
delivery writes one). Both are the mail store changing under an IDLE-ing
server, which then has to notice: Dovecot by inotify, smdp by polling.
Medians and the spread (min-max) of the rounds; ratios are smdp / Dovecot
(below 1: smdp faster). The server's CPU (utime + stime; Dovecot: its master
and children) over each operation is reported too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Settings, corpus_files, corpus_note, ratio, to_wire
from bench.e2e import cpu_s, tree_cpu_s

OWNER = "bob@b.example"
PASSWORD = "secret"
HEADER_FIELDS = "(FROM TO CC SUBJECT DATE MESSAGE-ID)"
BODIES = (4001, 5000)
#: A bound on every wait: a server that stops answering fails the part.
TIMEOUT_S = 120.0


class ImapError(Exception):
    pass


# ---------------------------------------------------------------------------
# The client: one for both servers, reading responses without parsing them
# beyond what finding their end needs (literals are skipped by count).


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.tags = 0
        self.octets = 0  # read so far: lines with their CRLF, literals
        greeting = self.line()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting!r}")

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ImapError("the server closed the connection")
        self.buf += data

    def line(self) -> bytes:
        """One response line, literals skipped: what follows the last literal."""
        out = b""
        while True:
            end = self.buf.find(b"\r\n")
            while end < 0:
                self._fill()
                end = self.buf.find(b"\r\n")
            line = bytes(self.buf[:end])
            del self.buf[:end + 2]
            self.octets += end + 2
            if line.endswith(b"}"):
                size = int(line[line.rfind(b"{") + 1:-1].rstrip(b"+"))
                while len(self.buf) < size:
                    self._fill()
                del self.buf[:size]
                self.octets += size
                out = line
                continue
            return out + line if out else line

    def command(self, text: str) -> tuple[list[bytes], int]:
        """Send ``text``; the untagged lines and the octets of the whole answer."""
        self.tags += 1
        tag = f"b{self.tags}".encode()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        lines: list[bytes] = []
        start = self.octets
        while True:
            line = self.line()
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise ImapError(f"{text}: {line!r}")
                return lines, self.octets - start
            lines.append(line)

    def login(self) -> None:
        self.command(f'LOGIN "{OWNER}" "{PASSWORD}"')

    def close(self) -> None:
        with contextlib.suppress(OSError, ImapError):
            self.command("LOGOUT")
        self.sock.close()


# ---------------------------------------------------------------------------
# The mailbox


def messages(settings: Settings, count: int) -> tuple[list[bytes], str]:
    """``count`` messages (CRLF), the corpus's cycled when present."""
    if corpus_note(settings.corpus) is None:
        files = corpus_files(settings.corpus)
        # Real mail, but not a 20 MB outlier that would dominate the bodies part.
        found = [m for _, p in files if len(m := to_wire(p.read_bytes())) <= 256 * 1024]
        if found:
            return ([found[k % len(found)] for k in range(count)],
                    f"corpus ({len(found)} distinct messages of {len(files)}, cycled)")
    rng = random.Random(14)
    out = []
    for k in range(count):
        text = "".join(f"Line {i} of message {k}: {rng.random():.12f} and more words here.\r\n"
                       for i in range(rng.randint(10, 60)))
        out.append(f"From: Sender {k % 97} <sender{k % 97}@a.example>\r\nTo: {OWNER}\r\n"
                   f"Subject: Message number {k}\r\nDate: Mon, 1 Jun 2026 10:00:00 +0000\r\n"
                   f"Message-ID: <m{k}@a.example>\r\nMIME-Version: 1.0\r\n"
                   f"Content-Type: text/plain\r\n\r\n{text}".encode())
    return out, "generated (corpus absent)"


def sender_of(message: bytes) -> str:
    import email.parser
    import email.utils

    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    value = email.parser.HeaderParser().parsestr(head).get("From", "")
    address = email.utils.parseaddr(str(value))[1]
    return address if "@" in address and address.isascii() and " " not in address \
        else "sender@a.example"


def fill_smdp(db: Path, msgs: list[bytes]) -> None:
    """Every message an accepted entry of OWNER, through the store's methods."""
    from smdp.core.envelope import encode_envelope_block, extract_envelope
    from smdp.store.sqlite import SqliteStore
    from smdp.terms import EntryState

    store = SqliteStore(db)
    try:
        user = store.user_by_address(OWNER)
        assert user is not None
        with store.transaction():
            for k, body in enumerate(msgs):
                block = encode_envelope_block(extract_envelope(body),
                                              expires="2099-01-01T00:00:00Z").decode()
                env = store.insert_in_envelope(
                    envid=f"bench{k:08d}", origin_server="smdp.a.example",
                    sender=sender_of(body), size=len(body), block=block,
                    subject=f"message {k}", body=body)
                store.insert_mailbox_entry(user.id, env, OWNER, EntryState.ACCEPTED)
        store._db.execute("ANALYZE")
    finally:
        store.close()


def maildir_message(message: bytes) -> bytes:
    """What Dovecot serves for ``message``: smdp's delivery fields, then the
    message, with LF line ends as in any Maildir."""
    from smdp.mail.trace import delivery_fields

    return (delivery_fields(sender_of(message), OWNER) + message).replace(b"\r\n", b"\n")


def maildir_name(k: int, data: bytes, where: str = "cur") -> str:
    flags = ":2," if where == "cur" else ""
    lines = data.count(b"\n")
    return f"{1780000000 + k}.M{k}P1.bench,S={len(data)},W={len(data) + lines}{flags}"


def fill_maildir(folder: Path, msgs: list[bytes]) -> None:
    for sub in ("cur", "new", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for k, message in enumerate(msgs):
        data = maildir_message(message)
        (folder / "cur" / maildir_name(k, data)).write_bytes(data)


# ---------------------------------------------------------------------------
# The servers


def dovecot_unavailable() -> str | None:
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return ("Dovecot not installed (Debian: apt-get install dovecot-imapd): the Dovecot "
                "baseline was not run")
    return None


class Dovecot:
    """A throwaway Dovecot: its own configuration, folders and port."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.maildir = root / "mail" / OWNER
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        me = pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            # Root may not own a mailbox (first_valid_uid); nobody does, and
            # Dovecot's own service users do the rest, as in a real install.
            login_user, internal_user, mail = "dovenull", "dovecot", pwd.getpwnam("nobody")
        else:
            login_user = internal_user = me
            mail = pwd.getpwuid(os.geteuid())
        self.mail_uid, self.mail_gid = mail.pw_uid, mail.pw_gid
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.config = root / "dovecot.conf"
        self.config.write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = {self.mail_uid}
first_valid_gid = {self.mail_gid}
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid={self.mail_uid} gid={self.mail_gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = binary

    def own(self) -> None:
        for path in [self.root / "mail", self.root / "home", *(self.root / "mail").rglob("*")]:
            os.chown(path, self.mail_uid, self.mail_gid)
        os.chmod(self.root, 0o755)

    def start(self) -> None:
        self.own()
        log = open(self.root / "dovecot.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([self.binary, "-F", "-c", str(self.config)],
                                     stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_text = (self.root / "dovecot.out").read_text(errors="replace")
                log_text += "".join(p.read_text(errors="replace")
                                    for p in [self.root / "dovecot.log"] if p.exists())
                raise ImapError(f"dovecot did not start: {log_text[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def deliver(self, k: int, message: bytes) -> None:
        """As a delivery agent: write into tmp/, rename into new/."""
        data = maildir_message(message)
        tmp = self.maildir / "tmp" / f"idle{k}"
        tmp.write_bytes(data)
        os.chown(tmp, self.mail_uid, self.mail_gid)
        tmp.rename(self.maildir / "new" / maildir_name(100000 + k, data, "new"))

    def stop(self) -> None:
        from tests.integration.harness import terminate

        if self.proc is not None:
            terminate(self.proc)
        self.proc = None


@contextlib.contextmanager
def smdp_server(root: Path, msgs: list[bytes]) -> Iterator[tuple[Any, int]]:
    """smdp with the mailbox, ``[listen] imap`` on a free port: (server, port)."""
    from tests.integration.harness import Server, free_ports

    peer, user, imap = free_ports(3)
    server = Server("b.example", "smdp.b.example", root, peer, user)
    server.write_config()
    # The harness knows no [listen] imap: added to the table it writes.
    text = server.config_path.read_text()
    server.config_path.write_text(text.replace("[listen]\n",
                                               f'[listen]\nimap = "127.0.0.1:{imap}"\n', 1))
    server.add_user(OWNER, PASSWORD)
    fill_smdp(server.db_path, msgs)
    server.start()
    try:
        yield server, imap
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# The operations


def timed(op: Callable[[], Any], cpu: Callable[[], float]) -> tuple[float, float, Any]:
    c0 = cpu()
    t0 = time.perf_counter()
    out = op()
    return time.perf_counter() - t0, cpu() - c0, out


def one_round(port: int, cpu: Callable[[], float], count: int) -> dict[str, Any]:
    """SELECT, the headers of all, 1,000 bodies: seconds and server CPU each."""
    c = Client(port)
    try:
        c.login()
        out: dict[str, Any] = {}
        s, u, (lines, _) = timed(lambda: c.command("SELECT INBOX"), cpu)
        exists = next(int(x.split()[1]) for x in lines if x.endswith(b" EXISTS"))
        if exists != count:
            raise ImapError(f"SELECT says {exists} messages, not {count}")
        out["select"] = (s, u, 0)
        s, u, (lines, octets) = timed(lambda: c.command(
            f"FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS {HEADER_FIELDS}])"),
            cpu)
        if len(lines) != count:
            raise ImapError(f"FETCH of the headers gave {len(lines)} answers, not {count}")
        out["headers"] = (s, u, octets)
        first, last = BODIES
        s, u, (lines, octets) = timed(
            lambda: c.command(f"FETCH {first}:{last} BODY.PEEK[]"), cpu)
        if len(lines) != last - first + 1:
            raise ImapError(f"FETCH of the bodies gave {len(lines)} answers")
        out["bodies"] = (s, u, octets)
        return out
    finally:
        c.close()


def idle_latency(port: int, deliver: Callable[[int], None], k: int) -> float:
    """Seconds from a new message in the store to ``* n EXISTS`` on an IDLE."""
    c = Client(port)
    try:
        c.login()
        c.command("SELECT INBOX")
        c.tags += 1
        tag = f"b{c.tags}".encode()
        c.sock.sendall(tag + b" IDLE\r\n")
        while not c.line().startswith(b"+"):
            pass
        time.sleep(0.3 + random.random() * 0.7)  # any phase of a poll
        t0 = time.perf_counter()
        deliver(k)
        while True:
            line = c.line()
            if line.endswith(b" EXISTS"):
                took = time.perf_counter() - t0
                break
        c.sock.sendall(b"DONE\r\n")
        while not c.line().startswith(tag + b" "):
            pass
        return took
    finally:
        c.close()


def smdp_deliver(db: Path, msg: bytes) -> Callable[[int], None]:
    """An accepted entry committed by another connection (another process's
    view of the same store, as smdp's delivery worker writes one)."""
    from smdp.store.sqlite import SqliteStore
    from smdp.terms import EntryState

    store = SqliteStore(db)
    user = store.user_by_address(OWNER)
    assert user is not None
    user_id = user.id

    def deliver(k: int) -> None:
        with store.transaction():
            env = store.insert_in_envelope(envid=f"idle{k:08d}", origin_server="smdp.a.example",
                                           sender="sender@a.example", size=len(msg), block="",
                                           subject="idle", body=msg)
            store.insert_mailbox_entry(user_id, env, OWNER, EntryState.ACCEPTED)

    return deliver


def _stats(values: list[float], digits: int = 4) -> dict[str, Any]:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits),
            "runs": [round(v, digits) for v in values]}


def run(settings: Settings) -> dict[str, Any]:
    count = settings.pick(10000, 10000)
    rounds = settings.pick(3, 7)
    idles = settings.pick(5, 15)
    msgs, source = messages(settings, count)
    result: dict[str, Any] = {
        "aims": {"over_dovecot_at_most": 2.0},
        "setup": {"messages": count, "source": source,
                  "octets": sum(len(m) for m in msgs), "rounds": rounds,
                  "idle_rounds": idles, "header_fields": HEADER_FIELDS,
                  "bodies": f"{BODIES[0]}:{BODIES[1]}"},
    }
    skipped = dovecot_unavailable()
    with tempfile.TemporaryDirectory(prefix="smdp-bench-imap-") as tmp, \
            contextlib.ExitStack() as stack:
        root = Path(tmp)
        root.chmod(0o755)  # Dovecot reads the Maildir as nobody (see Dovecot)
        (root / "smdp").mkdir()
        t0 = time.monotonic()
        server, smdp_port = stack.enter_context(smdp_server(root / "smdp", msgs))
        result["setup"]["smdp_fill_s"] = round(time.monotonic() - t0, 1)
        assert server.proc is not None
        smdp_pid = server.proc.pid
        servers: dict[str, tuple[int, Callable[[], float], Callable[[int], None]]] = {
            "smdp": (smdp_port, lambda: cpu_s(smdp_pid),
                     smdp_deliver(server.db_path, msgs[0]))}
        if skipped is None:
            from tests.integration.harness import free_ports

            t0 = time.monotonic()
            dovecot = Dovecot(root / "dovecot", free_ports(1)[0])
            fill_maildir(dovecot.maildir, msgs)
            dovecot.start()
            stack.callback(dovecot.stop)
            result["setup"]["dovecot_fill_s"] = round(time.monotonic() - t0, 1)
            result["setup"]["dovecot"] = subprocess.run(
                [dovecot.binary, "--version"], capture_output=True, text=True,
                check=False).stdout.strip()
            servers["dovecot"] = (dovecot.port, lambda: tree_cpu_s(dovecot.pid),
                                  lambda k: dovecot.deliver(k, msgs[0]))
        else:
            result["dovecot"] = {"skipped": skipped}
        first: dict[str, dict[str, float]] = {}
        for name, (port, cpu, _) in servers.items():  # warm-up: index, cache, UIDs
            first[name] = {op: round(v[0], 4) for op, v in one_round(port, cpu, count).items()}
            print(f"    {name}: first use " + " ".join(
                f"{op} {v * 1000:.0f} ms" for op, v in first[name].items()), flush=True)
        samples: dict[str, dict[str, list[tuple[float, float, int]]]] = {
            name: {"select": [], "headers": [], "bodies": []} for name in servers}
        for r in range(rounds):
            for name, (port, cpu, _) in servers.items():
                for op, value in one_round(port, cpu, count).items():
                    samples[name][op].append(value)
            print(f"    round {r + 1}: " + ", ".join(
                f"{name} " + " ".join(f"{op} {samples[name][op][-1][0] * 1000:.0f} ms"
                                      for op in ("select", "headers", "bodies"))
                for name in servers), flush=True)
        latencies: dict[str, list[float]] = {name: [] for name in servers}
        delivered = {name: 0 for name in servers}
        for _ in range(idles):
            for name, (port, _, deliver) in servers.items():
                latencies[name].append(idle_latency(port, deliver, delivered[name]))
                delivered[name] += 1
        for name in servers:
            out: dict[str, Any] = {}
            for op, values in samples[name].items():
                out[op] = {"seconds": _stats([v[0] for v in values]),
                           "cpu_s": _stats([v[1] for v in values]),
                           "octets": values[-1][2]}
            out["idle"] = {"seconds": _stats(latencies[name])}
            out["first_use_s"] = first[name]
            result[name] = out
            print(f"    {name}: " + ", ".join(
                f"{op} {out[op]['seconds']['median'] * 1000:.0f} ms"
                for op in ("select", "headers", "bodies", "idle")), flush=True)
    if "dovecot" in result and "select" in result["dovecot"]:
        result["ratios"] = {op: ratio(result["smdp"][op]["seconds"]["median"],
                                      result["dovecot"][op]["seconds"]["median"])
                            for op in ("select", "headers", "bodies", "idle")}
        result["cpu_ratios"] = {op: ratio(result["smdp"][op]["cpu_s"]["median"],
                                          result["dovecot"][op]["cpu_s"]["median"])
                                for op in ("select", "headers", "bodies")}
        result["first_use_ratios"] = {
            op: ratio(result["smdp"]["first_use_s"][op], result["dovecot"]["first_use_s"][op])
            for op in ("select", "headers", "bodies")}
        print(f"    smdp / Dovecot: {result['ratios']}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    from bench.common import settings_from_env, write_json

    settings = settings_from_env()
    write_json(settings.results / "imap.json", run(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
