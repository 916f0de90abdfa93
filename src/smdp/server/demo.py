"""``smdp demo`` (what ``make run`` starts): two SMDP servers for two domains
on loopback, each with its own SQLite store and a demo account, so a newcomer
can send a message from one domain to the other and accept it at once.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from smdp.certs import Issued, load_issuer, make_ca, make_cert, write_issued
from smdp.config import load_config
from smdp.server.accounts import AccountError, Accounts
from smdp.store import open_store

DOMAINS = [
    ("a.example", "smdp.a.example", "alice", "alice-demo"),
    ("b.example", "smdp.b.example", "bob", "bob-demo"),
]


# The names a POP3 client on this machine may use for the demo's user ports.
# fetchmail 6.4 checks only DNS names, also for an address it polls, so the
# loopback address is there as a DNS name too, besides the IP subjectAltName
# that RFC 6125 clients (Python's ssl) check.
LOCAL_NAMES = ("localhost", "127.0.0.1")


def demo_ca(root: Path) -> tuple[Path, Issued]:
    """The demo's private CA (``pki/ca.pem``), made on the first run and kept:
    a client told to trust it once keeps working across ``make run``s."""
    pki = root / "pki"
    cert, key = pki / "ca.pem", pki / "ca.key"
    if cert.exists() and key.exists():
        return cert, load_issuer(cert, key)
    ca = make_ca("smdp demo CA")
    write_issued(ca, pki, "ca")
    return cert, ca


def write_configs(root: Path, base_port: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    ca_path, ca = demo_ca(root)
    ports = {d: (base_port + 2 * i, base_port + 2 * i + 1) for i, (d, *_) in enumerate(DOMAINS)}
    # The web app of each domain after the four SMDP ports (docs/web.md).
    web_ports = {d: base_port + 2 * len(DOMAINS) + i for i, (d, *_) in enumerate(DOMAINS)}
    paths = []
    for domain, hostname, _user, _pw in DOMAINS:
        peer, user = ports[domain]
        peers = "\n".join(
            f'[peers."{other}"]\nhostname = "{host}"\naddress = "127.0.0.1"\n'
            f"port = {ports[other][0]}\n"
            for other, host, *_ in DOMAINS if other != domain
        )
        # Certificates on both ports: fetchmail's defaults (6.4) insist on TLS
        # with a verified certificate, and the two servers prove their domains
        # to each other with them, as in production.
        cert, key = write_issued(
            make_cert(hostname, issuer=ca, extra_names=LOCAL_NAMES, addresses=("127.0.0.1",)),
            root / "pki", hostname)
        text = f"""# Demo server for {domain} (written by `smdp demo`).
[server]
hostname = "{hostname}"
domains = ["{domain}"]

[listen]
peer = "127.0.0.1:{peer}"
user = "127.0.0.1:{user}"
web = "127.0.0.1:{web_ports[domain]}"

[web]
# Plain HTTP on loopback, so a browser opens it without trusting the demo CA
# (passwords without TLS are allowed from loopback only, as below).
https = false

[store]
path = "{domain}.sqlite3"

[delivery]
retry_initial = 1.0
poll_interval = 0.5

[notices]
# A notice in the mailbox when envelopes wait for a decision (POP3 readers
# see nothing else of them), at most hourly; the first comes within a minute.
pending_interval = 3600

[security]
# Cheap hashing keeps the demo snappy; production keeps the defaults.
password_memory_kib = 8192
password_time_cost = 1
# Passwords also without TLS, from loopback only, so that `smdp client`
# works without --tls; POP3 clients may use STLS (the demo CA: pki/ca.pem).
allow_plaintext_login = true

[tls]
cert = "{cert.resolve()}"
key = "{key.resolve()}"
ca = "{ca_path.resolve()}"

{peers}"""
        path = root / f"{domain}.toml"
        path.write_text(text)
        paths.append(path)
    return paths


def instructions(a_user: int, b_user: int) -> str:
    """The first session the demo prints; README.md's "Trying it" shows the
    same commands (tests/unit/test_demo_text.py holds them to it)."""
    a = f"SMDP_PASSWORD=alice-demo smdp client --server 127.0.0.1:{a_user} -u alice@a.example"
    b = f"SMDP_PASSWORD=bob-demo smdp client --server 127.0.0.1:{b_user} -u bob@b.example"
    return f"""
  # alice@a.example sends to bob@b.example: only an envelope travels
  echo "Hello Bob" | {a} \\
      send --to bob@b.example --subject "Hi from A"

  # bob sees the envelope (sender, subject, attachments) and its ID
  {b} inbox
  {b} show 1

  # bob accepts it: b.example pulls the message from a.example; it keeps its ID
  {b} accept 1
  {b} read 1

  # alice sees what happened to her message
  {a} sent

`send` composes a message from --subject and the text on stdin (or --file);
`send --raw FILE` sends a prepared RFC 5322 message as it is.
Any POP3 client can read bob's accepted mail: 127.0.0.1:{b_user}, user bob@b.example.
"""


def _stop_as_ctrl_c(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_demo(root: Path, *, base_port: int = 2525) -> int:
    # Ctrl-C and SIGTERM (kill, a process manager) stop the demo and its servers
    # alike. By default SIGTERM would end this process alone and leave the
    # servers running, and a SIGINT inherited as ignored (a background job)
    # would stop the servers, which take it explicitly, but not the demo.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_as_ctrl_c)
    paths = write_configs(root, base_port)
    for path, (_domain, _host, user, password) in zip(paths, DOMAINS, strict=True):
        config = load_config(path)
        store = open_store(config)
        with contextlib.suppress(AccountError):  # already there from an earlier run
            Accounts(store, config).create(f"{user}@{config.domains[0]}", password)
        store.close()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for path in paths:
            ready = path.with_suffix(".ready")
            ready.unlink(missing_ok=True)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "smdp", "serve", "--config", str(path),
                 "--ready-file", str(ready)],
                stdout=subprocess.DEVNULL, stderr=open(path.with_suffix(".log"), "ab"),  # noqa: SIM115
            ))
        deadline = time.monotonic() + 20
        for path, proc in zip(paths, procs, strict=True):
            ready = path.with_suffix(".ready")
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = path.with_suffix(".log")
                    print(f"smdp demo: the server for {path.stem} did not start; see {log}",
                          file=sys.stderr)
                    return 1
                time.sleep(0.1)
        ports = [json.loads(p.with_suffix(".ready").read_text()) for p in paths]
        a_user, b_user = ports[0]["user"], ports[1]["user"]
        ca = (root / "pki" / "ca.pem").resolve()
        print(f"""
SMDP demo running: a.example (user port {a_user}) and b.example (user port {b_user}).
Stores, configs and logs are in {root}/. Press Ctrl-C to stop.

In a browser: http://127.0.0.1:{ports[0]["web"]}/ (alice@a.example, password alice-demo)
          and http://127.0.0.1:{ports[1]["web"]}/ (bob@b.example, password bob-demo)

In another terminal (with .venv/bin on your PATH, or use .venv/bin/smdp):
{instructions(a_user, b_user)}\
The servers offer STLS with certificates from the demo CA, {ca}: trust it
for TLS. fetchmail, for one, insists on TLS with a certificate it can verify:

  SSL_CERT_FILE={ca} fetchmail -p pop3 -P {b_user} -u bob@b.example \\
      --mda 'cat >> bob.mbox' 127.0.0.1
""", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
