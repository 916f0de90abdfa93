"""``smdp client``: the user's side of Table 5 from the command line."""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

from smdp.client.session import ClientError, UserClient
from smdp.errors import CliError
from smdp.protocol import user as wire
from smdp.terms import Decision

DECISIONS = {
    "accept": Decision.ACCEPT,
    "accept-auth": Decision.ACCEPT_AUTH,
    "reject": Decision.REJECT,
    "reject-spam": Decision.REJECT_SPAM,
    "reject-spammer": Decision.REJECT_SPAMMER,
}


def add_client_parser(sub: Any, func: Callable[[argparse.Namespace], int]) -> None:
    client = sub.add_parser(
        "client", help="use an SMDP server as a user (Table 5)",
        description="Password: --password-stdin, or the SMDP_PASSWORD variable, or a prompt.",
    )
    client.add_argument("--server", default="127.0.0.1:1110", help="user port, HOST:PORT")
    client.add_argument("--tls", choices=["starttls", "implicit"],
                        help="TLS: STLS on the user port, or a TLS-only port (user_tls); "
                             "a server takes passwords without TLS only from loopback")
    client.add_argument("--cafile", help="verify the server against this CA (PEM) "
                                         "instead of the system trust store")
    client.add_argument("--tls-name", help="the name the server's certificate must carry "
                                           "(default: the host of --server)")
    client.add_argument("--user", "-u", required=True, help="your address (any identity)")
    client.add_argument("--password-stdin", action="store_true")
    csub = client.add_subparsers(dest="client_cmd", required=True)
    csub.add_parser("inbox", help="envelopes awaiting a decision and messages (Table 5 pwd)")
    p = csub.add_parser("envelopes", help="list envelopes (pending ones unless --all)")
    p.add_argument("--all", action="store_true")
    p = csub.add_parser("show", help="show one envelope in full")
    p.add_argument("id", type=int)
    for name, option in DECISIONS.items():
        verb = wire.DECISION_VERBS[option].lower()
        p = csub.add_parser(name, help=f"Table 1: {verb} an envelope")
        p.add_argument("id", type=int)
    p = csub.add_parser("read", help="print message N (POP3 RETR)")
    p.add_argument("n", type=int)
    p = csub.add_parser("delete", help="delete message N (POP3 DELE)")
    p.add_argument("n", type=int)
    p = csub.add_parser("send", help="send a message; the body comes from --file or stdin")
    p.add_argument("--to", action="append", required=True, help="a recipient (repeatable)")
    p.add_argument("--from", dest="identity", help="one of your identities (default: main)")
    p.add_argument("--subject", help="build the header from --subject and --to")
    p.add_argument("--file", help="a whole RFC 5322 message, or the body with --subject")
    p = csub.add_parser("sent", help="status of your sent messages, per recipient")
    p.add_argument("msgid", nargs="?")
    csub.add_parser("lists", help="your white and black lists")
    for name in ("list-add", "list-del"):
        p = csub.add_parser(name, help=f"{name.split('-')[1]} a list entry")
        p.add_argument("list", choices=["in-white", "in-black", "out-white", "out-black"])
        p.add_argument("address")
        p.add_argument("list_server", nargs="?", metavar="server",
                       help="SMDP server (inbound lists; default: found by discovery)")
    csub.add_parser("identities", help="your main and secondary identities")
    p = csub.add_parser(
        "passwd", help="change your password (asked twice on a terminal)",
        description="The current password as for every command; the new one from "
                    "--new-password-stdin (the line after the current one with "
                    "--password-stdin), or the SMDP_NEW_PASSWORD variable, or a prompt.")
    p.add_argument("--new-password-stdin", action="store_true",
                   help="read the new password from stdin")
    client.set_defaults(func=func)


def _compose(args: argparse.Namespace) -> bytes:
    raw = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
    if args.subject is None:
        return raw
    header = (
        f"To: {', '.join(args.to)}\r\nSubject: {args.subject}\r\n"
        f"Date: {formatdate(localtime=True)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return header.encode("utf-8") + raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _print(reply: wire.UserReply) -> None:
    print(reply.text)
    for line in reply.lines or []:
        print(f"  {line}")


def run_client(args: argparse.Namespace, password: str,
               new_password: str | None = None) -> int:

    host, _, port = args.server.rpartition(":")
    if not port.isdigit():
        raise CliError(f"--server must be HOST:PORT, not {args.server!r}")
    try:
        message = _compose(args) if args.client_cmd == "send" else b""
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    context = None
    if args.cafile:
        try:
            context = ssl.create_default_context(cafile=args.cafile)
        except (OSError, ssl.SSLError) as exc:
            raise CliError(f"cannot use --cafile {args.cafile}: {exc}") from None
    try:
        client = UserClient(host.strip("[]") or "127.0.0.1", int(port), tls=args.tls,
                            context=context, server_name=args.tls_name)
        try:
            reply = client.login(args.user, password,
                                 verb="PWD" if args.client_cmd == "inbox" else "PASS")
            cmd = args.client_cmd
            if cmd == "inbox":
                _print(reply)
            elif cmd == "envelopes":
                _print(client.call(wire.Envs(args.all)))
            elif cmd == "show":
                _print(client.call(wire.EnvShow(args.id)))
            elif cmd in DECISIONS:
                _print(client.call(wire.UserDecision(DECISIONS[cmd], args.id)))
            elif cmd == "read":
                body = client.call(wire.Retr(args.n)).body or b""
                sys.stdout.write(body.decode("utf-8", "replace").replace("\r\n", "\n"))
            elif cmd == "delete":
                _print(client.call(wire.Dele(args.n)))
            elif cmd == "send":
                print(client.submit(args.to, message, args.identity))
            elif cmd == "sent":
                _print(client.call(wire.Sent(args.msgid)))
            elif cmd == "lists":
                _print(client.call(wire.Lists()))
            elif cmd == "list-add":
                _print(client.call(wire.ListAdd(args.list, args.address, args.list_server)))
            elif cmd == "list-del":
                _print(client.call(wire.ListDel(args.list, args.address, args.list_server)))
            elif cmd == "identities":
                _print(client.call(wire.Ident()))
            elif cmd == "passwd":
                assert new_password is not None
                _print(client.change_password(password, new_password))
        finally:
            client.quit()
    except ClientError as exc:
        raise CliError(str(exc)) from None
    except wire.ProtocolUsageError as exc:  # an argument the wire cannot carry
        raise CliError(f"{exc}: nothing was sent; correct it and run the command again") from None
    return 0
