"""The ``smdp`` command: serve, administer, and use an SMDP server.

    smdp serve  --config FILE            run a server (peer port + user port)
    smdp admin  --config FILE COMMAND    accounts, identities, quality, queue
    smdp client --server HOST:PORT ...   the user's side (Table 5)
    smdp demo   [--dir DIR]              two demo domains on loopback (make run)
    smdp gencert --hostname H --out DIR  a certificate for development (TLS)
    smdp dkim-keygen DOMAIN              a DKIM key, its [dkim] lines and its DNS record

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
from smdp.store import Store, StoreError
from smdp.store.backup import PAGES_PER_STEP, PAUSE


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
    if args.admin_cmd in ("backup", "restore"):
        # Before open_store: a backup must not migrate the store of a running
        # server, and a restore needs the store closed.
        return _backup_or_restore(args, config)
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
        elif args.admin_cmd == "why":
            print(_why(store, config, args.entry))
        elif args.admin_cmd == "group":
            for line in _group(store, config, args):
                print(line)
        elif args.admin_cmd in ("grant-admin", "revoke-admin"):
            user = accounts.user(args.address)
            granted = args.admin_cmd == "grant-admin"
            store.set_admin(user.id, granted)
            print(f"{user.main_address} {'is' if granted else 'is no longer'} an "
                  "administrator (the web app's administrator pages)")
        elif args.admin_cmd in ("block", "allow", "unblock"):
            override = {"block": "blocked", "allow": "allowed", "unblock": None}[args.admin_cmd]
            store.set_override(args.server, override, args.reason)
            verdict = judge(store.quality(args.server), config.quality)
            print(f"{args.server}: {verdict.status}: {verdict.reason}")
    except AccountError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    return 0


def _pause(text: str) -> float:
    seconds = float(text)
    if not 0 <= seconds <= 60:
        raise argparse.ArgumentTypeError(f"{text} is not a pause from 0 to 60 seconds")
    return seconds


def _backup_or_restore(args: argparse.Namespace, config: Config) -> int:
    """``smdp admin backup DEST`` and ``smdp admin restore BACKUP`` (SQLite;
    docs/deployment.md, "Backups, restores and upgrades")."""
    from smdp.store.backup import backup_sqlite, config_files, restore_sqlite
    from smdp.store.sqlite import migrations

    if config.store_backend != "sqlite":
        raise CliError(f"smdp admin {args.admin_cmd} copies a SQLite store; this server's store "
                       f"is {config.store_backend}: use pg_dump, or base backups with WAL "
                       "archiving (docs/deployment.md, \"Backups, restores and upgrades\")")
    if args.admin_cmd == "backup":
        report = backup_sqlite(config.store_path, Path(args.dest), force=args.force,
                               pages_per_step=args.step_pages, pause=args.pause)
        print(f"backed up {config.store_path} to {report.describe()}")
        print("not in the backup (copy these too, and keep the keys secret):")
        for setting, path in config_files(config):
            print(f"  {setting}: {path}")
    else:
        report = restore_sqlite(Path(args.backup), config.store_path, head=migrations()[-1][0],
                                force=args.force)
        print(f"restored {args.backup} to {report.describe()}")
        print("the server brings the schema up to date when it starts")
    return 0


def _group(store: Store, config: Config, args: argparse.Namespace) -> list[str]:
    """``smdp admin group ...``: local lists and aliases (docs/lists.md)."""
    from smdp.core import groups

    try:
        match args.group_cmd:
            case "create":
                return [groups.create(store, config.domains, args.address, args.kind,
                                      args.owner)]
            case "delete":
                return [groups.delete(store, args.address)]
            case "add":
                return groups.add_members(store, args.address, args.members)
            case "remove":
                return groups.remove_members(store, args.address, args.members)
            case "members":
                found = groups.members(store, args.address)
                return [f"{len(found)} member(s)", *found]
            case "list":
                return groups.listing(store) or ["no groups"]
            case _:  # "status": argparse allows nothing else
                return groups.status(store, args.address, args.posts) or ["no posts yet"]
    except groups.GroupError as exc:
        raise CliError(str(exc)) from None


def _why(store: Store, config: Config, entry_id: int) -> str:
    """``smdp admin why ENTRY``: everything that decided an envelope's fate
    (issue 16 item 2), one fact a line."""
    from smdp.core.lists import listing_reason
    from smdp.core.mx import quality_keys
    from smdp.core.quality import SENDER_KEY_PREFIX, judge, sender_key

    entry = store.mailbox_entry(entry_id)
    env = store.in_envelope(entry.envelope_id) if entry is not None else None
    if entry is None or env is None:
        raise CliError(f"no envelope {entry_id} here (the ids are those ENVS shows)")
    user = store.user_by_id(entry.user_id)
    lines = [f"envelope {entry.id} for {entry.recipient}"
             f"{f' (account {user.main_address})' if user else ''}",
             f"from {env.sender or '<>'} via {env.origin_server}"
             f"{' (SMTP)' if env.via_smtp else ''}, subject {env.subject!r}",
             f"state {entry.state}" + (f", decision {entry.decision.table_1}"
                                       if entry.decision else ", no decision yet"),
             f"reason: {entry.reason or '-'}"]
    listed = store.inbound_listing(entry.user_id, env.sender, env.origin_server) \
        if env.sender else None
    if listed is not None:
        lines.append(f"listing now: {listing_reason(listed)}")
    else:
        lines.append("listing now: the sender is on none of the recipient's lists")
    if env.via_smtp:
        lines.append(f"sender authentication: verified {env.verified_domain or 'nothing'}; "
                     f"{env.smtp_auth}")
        keys = quality_keys(env.verified_domain, env.client_prefix)
    else:
        keys = [env.origin_server]
        if env.sender:  # the sender's own quality at its server (protocol.md 11.3)
            keys.append(sender_key(env.origin_server, env.sender))
    for key in keys:
        quality = store.quality(key)
        verdict = judge(quality, config.quality)
        name = key
        if key.startswith(SENDER_KEY_PREFIX):
            name = f"sender <{env.sender}> at {env.origin_server}"
        deciders = (f"; {quality.deciders} distinct rejecting user(s)"
                    if quality.deciders else "")
        lines.append(f"quality of {name}: {verdict.status}: {verdict.reason}{deciders}")
    return "\n".join(lines)


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


# -- dkim-keygen, admin dns-records -----------------------------------------------


def _domain_arg(text: str) -> str:
    from smdp.mail.addresses import parse_hostname

    domain = parse_hostname(text.rstrip("."))
    if domain is None or "." not in domain:
        raise CliError(f"{text!r} is not a domain name")
    return domain


def _txt(name: str, record: str) -> str:
    """A TXT record in zone-file syntax, cut into strings of at most 255 octets."""
    from smdp.mail.dkim import txt_strings

    return f"{name} IN TXT " + " ".join(f'"{part}"' for part in txt_strings(record))


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from smdp.mail.dkim import DkimError, SigningKey, generate_key

    domain = _domain_arg(args.domain)
    folder = Path(args.dir)
    path = (folder / f"{domain}.{args.selector}.dkim.pem").absolute()
    if path.exists() and not args.force:
        raise CliError(f"{path} exists: give --force to replace it (mail signed with the old "
                       "key fails to verify once its DNS record is replaced)")
    try:
        pem = generate_key(args.algorithm, args.bits)
        key = SigningKey.from_pem(domain, args.selector, args.algorithm, pem)
    except DkimError as exc:
        raise CliError(str(exc)) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if args.force:
            path.unlink(missing_ok=True)
        # Created 0600 from the start: the key is never readable by others,
        # not even between a write and a chmod.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from None
    size = f", {args.bits} bits" if args.algorithm == "rsa" else ""
    print(f"DKIM key for {domain} ({args.algorithm}{size}): {path}")
    print("\nAdd to the server's configuration:")
    print(f'[dkim."{domain}"]\nselector = "{args.selector}"\nkey = "{path}"\n'
          f'algorithm = "{args.algorithm}"')
    print("\nPublish in DNS (then `smdp admin dns-records` shows it with the other records):")
    print(_txt(key.record_name, key.public_record()))
    return 0


def _public_ips(config: Config, given: list[str], version: int) -> list[str]:
    """The addresses given on the command line, else the listeners' own
    addresses that are public (a listener on 0.0.0.0, ::, loopback or a
    private network says nothing about the address the world sees)."""
    import ipaddress

    found: list[str] = []
    for text in given:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise CliError(f"{text!r} is not an IP address") from None
        if ip.version != version:
            raise CliError(f"{text} is not an IPv{version} address")
        found.append(str(ip))
    if given:
        return found
    for _, listener in config.listeners():
        try:
            ip = ipaddress.ip_address(listener.host)
        except ValueError:
            continue
        if ip.version == version and ip.is_global and str(ip) not in found:
            found.append(str(ip))
    return found


def dns_records(config: Config, domain: str, args: argparse.Namespace) -> list[str]:
    """Every DNS record ``domain`` needs, as zone-file lines with comments."""
    import hashlib

    from smdp.mail.dkim import DkimError, SigningKey

    host = config.hostname.rstrip(".") + "."
    zone = domain + "."
    report_to = args.report_to or f"postmaster@{domain}"
    lines = [f"; DNS records for {domain}, whose mail server is {config.hostname}",
             "; (smdp admin dns-records; docs/smtp.md, \"DNS records\")",
             "", "; SMDP: where other SMDP servers find this one (docs/protocol.md 10.1)",
             f"_smdp._tcp.{zone} IN SRV 10 0 {config.peer_listener.port} {host}"]
    lines += ["", f"; the addresses of {config.hostname} (SRV and MX targets)"]
    ipv4 = _public_ips(config, args.ipv4 or [], 4)
    ipv6 = _public_ips(config, args.ipv6 or [], 6)
    if ipv4 or ipv6:  # a server reached over one version only needs no record of the other
        lines += [f"{host} IN A {ip}" for ip in ipv4] + [f"{host} IN AAAA {ip}" for ip in ipv6]
    else:
        lines += [f"{host} IN A <public IPv4 address: give --ipv4>",
                  f"{host} IN AAAA <public IPv6 address: give --ipv6, or leave it out>"]
    lines += ["", "; SMTP: where the rest of the world delivers mail for the domain (RFC 5321 5)",
              f"{zone} IN MX 10 {host}",
              "", "; SPF (RFC 7208): mail from the domain leaves from this server only",
              _txt(zone, f"v=spf1 a:{config.hostname} -all")]
    setting = config.dkim.get(domain)
    lines += ["", "; DKIM (RFC 6376): the key that signs the domain's mail sent by SMTP"]
    if setting is None:
        lines.append(f"; none configured: run `smdp dkim-keygen {domain}` and add its "
                     "[dkim] lines to the configuration")
    else:
        where = f'dkim."{domain}".key'
        try:
            key = SigningKey.from_setting(domain, setting, setting.key.read_bytes())
        except OSError as exc:
            raise CliError(f"{where}: cannot read {setting.key}: {exc.strerror}") from None
        except DkimError as exc:
            raise CliError(f"{where}: {setting.key}: {exc}") from None
        lines.append(_txt(key.record_name, key.public_record()))
    policy = (f"version: STSv1\nmode: {args.mta_sts_mode}\nmx: {config.hostname}\n"
              f"max_age: 604800\n")
    # The id must change whenever the policy does (RFC 8461 3.1): a digest of it.
    policy_id = hashlib.sha256(policy.encode()).hexdigest()[:20]
    lines += ["", "; DMARC (RFC 7489): what receivers do with mail that fails SPF and DKIM",
              _txt(f"_dmarc.{zone}", f"v=DMARC1; p={args.dmarc}; rua=mailto:{report_to}"),
              "",
              "; MTA-STS (RFC 8461): senders reach the MX over verified TLS only (mode enforce),",
              "; or deliver and report a failure (mode testing)",
              _txt(f"_mta-sts.{zone}", f"v=STSv1; id={policy_id}"),
              f"; and serve this file as https://mta-sts.{domain}/.well-known/mta-sts.txt",
              f"; (a web server with a certificate for mta-sts.{domain}):"]
    lines += [f";   {line}" for line in policy.splitlines()]
    lines += ["", "; TLS reporting (RFC 8460): where senders report TLS failures",
              _txt(f"_smtp._tls.{zone}", f"v=TLSRPTv1; rua=mailto:{report_to}")]
    return lines


def cmd_dns_records(args: argparse.Namespace) -> int:
    config = _config(args)
    domain = _domain_arg(args.domain)
    if not config.is_local(domain):
        raise CliError(f"{domain} is not a domain of this server (server.domains: "
                       f"{', '.join(config.domains)})")
    print("\n".join(dns_records(config, domain, args)))
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
    p = asub.add_parser("why", help="why an envelope is in its state: its decision, the "
                                    "reason and evidence, the sender's listing, the peer's "
                                    "quality")
    p.add_argument("entry", type=int, help="the envelope's id (as ENVS and the web app show)")
    group = asub.add_parser("group", help="local lists and aliases: addresses of ours that "
                                          "expand to their members (docs/lists.md)")
    gsub = group.add_subparsers(dest="group_cmd", required=True)
    p = gsub.add_parser("create", help="a new alias (anyone here may write to it) or list "
                                       "(members and owner post; posts carry List-Id)")
    p.add_argument("address")
    p.add_argument("--kind", choices=("alias", "list"), default="alias")
    p.add_argument("--owner", help="the user who runs it (required for a list)")
    p = gsub.add_parser("delete", help="delete a group and its members")
    p.add_argument("address")
    for name, text in (("add", "add members (addresses here or elsewhere, or groups)"),
                       ("remove", "remove members")):
        p = gsub.add_parser(name, help=text)
        p.add_argument("address")
        p.add_argument("members", nargs="+")
    p = gsub.add_parser("members", help="a group's members")
    p.add_argument("address")
    gsub.add_parser("list", help="every group, its kind, owner and size")
    p = gsub.add_parser("status", help="the owner's view: each recent post and every "
                                       "recipient's state")
    p.add_argument("address")
    p.add_argument("--posts", type=int, default=20, help="how many recent posts (20)")
    for name, text in (("grant-admin", "let a user open the web app's administrator pages"),
                       ("revoke-admin", "take that away again")):
        p = asub.add_parser(name, help=text)
        p.add_argument("address")
    for name, text in (("block", "refuse a peer server whatever its quality says"),
                       ("allow", "never block a peer server for its quality"),
                       ("unblock", "let the quality formula decide on a peer server again")):
        p = asub.add_parser(name, help=text)
        p.add_argument("server", help="the peer server's host name (smtp:<domain> for an "
                                      "SMTP sender's verified domain)")
        p.add_argument("--reason", default="", help="shown with the peer's status")
    p = asub.add_parser("backup", help="a consistent copy of the running server's SQLite "
                                       "store (docs/deployment.md)")
    p.add_argument("dest", help="the backup file, or a folder for a dated one")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--step-pages", type=int, default=PAGES_PER_STEP, metavar="N",
                   help=f"pages copied per step (default {PAGES_PER_STEP})")
    p.add_argument("--pause", type=_pause, default=PAUSE, metavar="SECONDS",
                   help=f"pause between steps, for a busy disk (default {PAUSE})")
    p = asub.add_parser("restore", help="put a backup in place of the store (the server "
                                        "stopped)")
    p.add_argument("backup", help="a file `smdp admin backup` wrote")
    p.add_argument("--force", action="store_true",
                   help="replace an existing store (what it holds is lost)")
    admin.set_defaults(func=cmd_admin)
    _add_dns_records_parser(asub)

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
    _add_dkim_keygen_parser(sub)
    return parser


def _add_dkim_keygen_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "dkim-keygen", help="make a DKIM key for a domain and print its DNS record",
        description="Writes a private key (mode 0600) for signing DOMAIN's mail sent by SMTP, "
                    "and prints the [dkim] lines for the configuration and the TXT record "
                    "to publish.")
    p.add_argument("domain")
    p.add_argument("--selector", default="smdp",
                   help="the key's name in DNS (default smdp; a new one for each new key)")
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa",
                   help="rsa (rsa-sha256, the default: every receiver verifies it) or "
                        "ed25519 (RFC 8463: not every receiver verifies it yet)")
    p.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    p.add_argument("--dir", default=".", help="where the key file goes (default: here)")
    p.add_argument("--force", action="store_true", help="replace an existing key file")
    p.set_defaults(func=cmd_dkim_keygen)


def _add_dns_records_parser(asub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = asub.add_parser(
        "dns-records", help="every DNS record a domain needs (SRV, MX, SPF, DKIM, DMARC, "
                            "MTA-STS)",
        description="Prints, in zone-file syntax, the records to publish for DOMAIN, derived "
                    "from the configuration; what it cannot know is asked for by option.")
    p.add_argument("domain")
    p.add_argument("--ipv4", action="append", metavar="ADDRESS",
                   help="the server's public IPv4 address (repeatable; default: a public "
                        "[listen] address, else a placeholder)")
    p.add_argument("--ipv6", action="append", metavar="ADDRESS", help="the same for IPv6")
    p.add_argument("--dmarc", choices=("none", "quarantine", "reject"), default="quarantine",
                   help="the DMARC policy (default quarantine)")
    p.add_argument("--report-to", metavar="ADDRESS",
                   help="where DMARC and TLS reports go (default postmaster@DOMAIN)")
    p.add_argument("--mta-sts-mode", choices=("testing", "enforce"), default="testing",
                   help="the MTA-STS policy mode (default testing: reports, no refusals)")
    p.set_defaults(func=cmd_dns_records)


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
