"""The ``smdp`` command: serve, administer, and use an SMDP server.

    smdp serve  --config FILE            run a server (peer port + user port)
    smdp admin  --config FILE COMMAND    accounts, identities, quality, queue
    smdp client --server HOST:PORT ...   the user's side (Table 5)
    smdp demo   [--dir DIR]              two demo domains on loopback (make run)
    smdp gencert --hostname H --out DIR  a certificate for development (TLS)

Every error is one sentence on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from smdp.config import Config, ConfigError, load_config
from smdp.errors import CliError
from smdp.store import StoreError


def _prompt(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except EOFError:  # Ctrl-D
        raise CliError("no password given (the input ended at the prompt): type one, "
                       "or use --password-stdin or SMDP_PASSWORD") from None


def _usable(password: str, what: str) -> str:
    """``password`` if a login could ever use it (the user port's rule), else
    a CliError saying what is wrong with it."""
    from smdp.protocol.user import password_problem

    problem = password_problem(password)
    if problem is not None:
        raise CliError(f"{problem}: {what}")
    return password


def _read_password(args: argparse.Namespace, prompt: str = "Password: ", *,
                   stdin_flag: str = "password_stdin", variable: str = "SMDP_PASSWORD",
                   confirm: bool = False) -> str:
    """From stdin (one line) with the flag, else the variable, else a prompt on
    the terminal, asked twice with ``confirm`` (a new password: a typing slip
    would lock the user out)."""
    if getattr(args, stdin_flag, False):
        return sys.stdin.readline().rstrip("\r\n")
    env = os.environ.get(variable)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        option = "--" + stdin_flag.replace("_", "-")
        raise CliError(f"no password given: use {option} or set {variable}")
    password = _prompt(prompt)
    if confirm:
        _usable(password, "no one could log in with it; choose another")
        if _prompt(f"{prompt.rstrip(': ')} again: ") != password:
            raise CliError("the two passwords differ; nothing was changed, run the command again")
    return password


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config)


# -- serve ------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from smdp.server.app import run_server

    return run_server(_config(args), ready_file=args.ready_file)


# -- admin ------------------------------------------------------------------------


def cmd_admin(args: argparse.Namespace) -> int:
    from smdp.core.quality import judge
    from smdp.server.accounts import AccountError, Accounts
    from smdp.store import open_store

    config = _config(args)
    store = open_store(config)
    accounts = Accounts(store, config)
    try:
        if args.admin_cmd == "migrate":
            print(f"schema at version {store.schema_version()}")
        elif args.admin_cmd == "user-add":
            user = accounts.create(args.address, _read_password(args, confirm=True))
            print(f"created user {user.main_address}")
        elif args.admin_cmd == "passwd":
            accounts.set_password(args.address,
                                  _read_password(args, "New password: ", confirm=True))
            print(f"password of {args.address} changed")
        elif args.admin_cmd == "identity-add":
            accounts.add_identity(args.user, args.identity)
            print(f"{args.identity} is now an identity of {args.user}")
        elif args.admin_cmd == "identity-del":
            accounts.remove_identity(args.user, args.identity)
            print(f"{args.identity} removed from {args.user}")
        elif args.admin_cmd == "users":
            for user in store.users():
                ids = store.identities(user.id)
                print(f"{user.main_address}\t{', '.join(ids[1:]) or '-'}")
        elif args.admin_cmd == "quality":
            rows = store.all_quality()
            if not rows:
                print("no peer has sent anything yet")
            else:
                print(f"{'server':<32} {'messages':>8} {'votes':>6} {'quality':>8}  status")
            for q in rows:
                verdict = judge(q, config.quality)
                print(f"{q.server:<32} {q.messages:>8} {q.votes:>6} {q.value:>8.2f}  "
                      f"{verdict.status}: {verdict.reason}")
        elif args.admin_cmd == "queue":
            jobs = store.jobs()
            print(f"{len(jobs)} job(s) queued")
            for job in jobs:
                err = f" last error: {job.last_error}" if job.last_error else ""
                print(f"{job.id}\t{job.kind}\t{job.key}\tattempts={job.attempts}{err}")
        elif args.admin_cmd == "reports":
            reports = store.spam_reports()
            if not reports:
                print("no spam reports")
            for sender, count in reports:
                print(f"{sender}\t{count} report(s)")
            for address, reason in store.suspended_users():
                print(f"SUSPENDED {address}: {reason}")
        elif args.admin_cmd == "unsuspend":
            user = accounts.user(args.address)
            store.set_suspension(user.id, None)
            print(f"sending re-enabled for {user.main_address}")
        elif args.admin_cmd == "suspend":
            user = accounts.user(args.address)
            store.set_suspension(user.id, args.reason)
            print(f"sending suspended for {user.main_address}")
    except AccountError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    return 0


# -- client -----------------------------------------------------------------------


def cmd_client(args: argparse.Namespace) -> int:
    from smdp.client.cli import run_client

    password = _usable(_read_password(args),
                       "no account has such a password; check what you typed")
    new_password = None
    if args.client_cmd == "passwd":
        new_password = _usable(
            _read_password(args, "New password: ", stdin_flag="new_password_stdin",
                           variable="SMDP_NEW_PASSWORD", confirm=True),
            "no one could log in with it; choose another")
    return run_client(args, password, new_password)


# -- demo -------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from smdp.server.demo import run_demo

    return run_demo(Path(args.dir), base_port=args.base_port)


# -- gencert ----------------------------------------------------------------------


def cmd_gencert(args: argparse.Namespace) -> int:
    from smdp.certs import CertError, load_issuer, make_ca, make_cert, write_issued

    out = Path(args.out)
    try:
        if args.ca:
            issued = make_ca(args.name or "smdp private CA")
            cert, key = write_issued(issued, out, "ca")
            print(f"private CA: {cert} (key {key})")
            print("trust it with [tls] ca, or per peer with [peers.\"domain\"] ca; issue "
                  f"host certificates with: smdp gencert --hostname H --out DIR --ca-dir {out}")
            return 0
        if not args.hostname:
            raise CliError("give --hostname (the server's [server] hostname), or --ca")
        issuer = None
        if args.ca_dir:
            ca_dir = Path(args.ca_dir)
            issuer = load_issuer(ca_dir / "ca.pem", ca_dir / "ca.key")
        issued = make_cert(args.hostname, issuer=issuer)
        cert, key = write_issued(issued, out, args.hostname.lower())
    except (CertError, OSError, ValueError) as exc:
        raise CliError(f"cannot make the certificate: {exc}") from None
    kind = "issued by the CA in " + args.ca_dir if args.ca_dir else "self-signed"
    print(f"certificate for {args.hostname} ({kind}): {cert}\nkey: {key}")
    print(f"sha256 fingerprint: {issued.fingerprint}")
    print(f'[tls]\ncert = "{cert.resolve()}"\nkey = "{key.resolve()}"')
    if args.ca_dir:
        # The trust anchor this server checks its peers with; a peer with a
        # certificate from another CA names this one in its [peers."domain"] ca.
        print(f'ca = "{(Path(args.ca_dir) / "ca.pem").resolve()}"')
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smdp", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run an SMDP server")
    serve.add_argument("--config", "-c", required=True, help="the TOML configuration file")
    serve.add_argument("--ready-file", help="write the listening ports here once ready")
    serve.set_defaults(func=cmd_serve)

    admin = sub.add_parser("admin", help="administer a server's store")
    admin.add_argument("--config", "-c", required=True)
    asub = admin.add_subparsers(dest="admin_cmd", required=True)
    p = asub.add_parser("user-add", help="create a user with a main address")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true")
    p = asub.add_parser("passwd", help="change a user's password")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true")
    p = asub.add_parser("identity-add", help="add a secondary identity to a user")
    p.add_argument("user")
    p.add_argument("identity")
    p = asub.add_parser("identity-del", help="remove a secondary identity")
    p.add_argument("user")
    p.add_argument("identity")
    asub.add_parser("users", help="list users and their identities")
    asub.add_parser("quality", help="Quality(X) of every peer server (section 5.3)")
    asub.add_parser("queue", help="work waiting to cross the network")
    asub.add_parser("reports", help="spam reports against local senders (Table 2, SPAM)")
    asub.add_parser("migrate", help="bring the store's schema up to date")
    p = asub.add_parser("suspend", help="suspend a user's sending")
    p.add_argument("address")
    p.add_argument("--reason", default="suspended by the administrator")
    p = asub.add_parser("unsuspend", help="lift a suspension (after investigating)")
    p.add_argument("address")
    admin.set_defaults(func=cmd_admin)

    from smdp.client.cli import add_client_parser

    add_client_parser(sub, cmd_client)

    demo = sub.add_parser("demo", help="two demo domains on loopback (what `make run` starts)")
    demo.add_argument("--dir", default=".demo", help="where the demo keeps configs and stores")
    demo.add_argument("--base-port", type=int, default=2525)
    demo.set_defaults(func=cmd_demo)

    gencert = sub.add_parser(
        "gencert", help="make a TLS certificate and key for development",
        description="A self-signed certificate for --hostname (peers pin its fingerprint or "
                    "name it as their ca), one issued by the private CA in --ca-dir, or, with "
                    "--ca, such a private CA.",
    )
    gencert.add_argument("--hostname", help="the server's host name ([server] hostname)")
    gencert.add_argument("--out", required=True,
                         help="folder for <hostname>.pem and <hostname>.key (ca.pem, ca.key)")
    gencert.add_argument("--ca", action="store_true", help="make a private CA instead")
    gencert.add_argument("--name", help="with --ca: the CA's name")
    gencert.add_argument("--ca-dir", help="issue with the CA in this folder (ca.pem, ca.key)")
    gencert.set_defaults(func=cmd_gencert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (CliError, ConfigError, StoreError) as exc:
        print(f"smdp: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
