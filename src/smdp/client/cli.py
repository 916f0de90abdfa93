"""``smdp client``: the user's side of Table 5 from the command line."""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smdp.client import compose, views
from smdp.client.session import ClientError, UserClient
from smdp.errors import CliError
from smdp.mail.addresses import domain_of
from smdp.protocol import user as wire
from smdp.terms import Decision

DECISIONS = {decision.word: decision for decision in Decision}


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
    p.add_argument("--limit", type=int, choices=range(1, wire.MAX_PAGE + 1), metavar="N",
                   help=f"one page of at most N (1 to {wire.MAX_PAGE}) envelopes, "
                        "instead of all of them")
    p.add_argument("--after", type=int, default=None, metavar="ID",
                   help="with --limit: the page after entry ID (the AFTER of the last "
                        "page's 'more:')")
    # One id per mailbox entry, from its envelope to its message: the ID
    # column of inbox. It never changes and is never given to another entry.
    p = csub.add_parser("show", help="show one envelope in full")
    p.add_argument("id", type=int, help="the entry's ID (see inbox)")
    for name, option in DECISIONS.items():
        verb = wire.DECISION_VERBS[option].lower()
        p = csub.add_parser(name, help=f"Table 1: {verb} an envelope")
        p.add_argument("id", type=int, help="the entry's ID (see inbox)")
    p = csub.add_parser("unsubscribe", help="leave the mailing list that sent an envelope "
                        "(one-click or by mail, as the list offers; docs/lists.md)")
    p.add_argument("id", type=int, help="the entry's ID (see inbox)")
    p = csub.add_parser("group", help="the owner's view of a list or alias of yours: each "
                        "recent post and every recipient's state (docs/lists.md)")
    p.add_argument("address")
    p = csub.add_parser("read", help="print an accepted message")
    p.add_argument("id", type=int, help="the entry's ID (see inbox)")
    p = csub.add_parser("delete", help="delete an accepted message from your mailbox")
    p.add_argument("id", type=int, help="the entry's ID (see inbox)")
    p = csub.add_parser(
        "send", help="compose and send a message (--subject), or send a prepared one (--raw)",
        description="Composes a text message: the body is the text of --file or stdin "
                    "(UTF-8), the header comes from --to, --subject and --name; whatever "
                    "needs encoding is encoded. --raw FILE sends a whole RFC 5322 message "
                    "as it is instead.")
    p.add_argument("--to", action="append", required=True,
                   help="a recipient, ADDRESS or 'NAME <ADDRESS>' (repeatable)")
    p.add_argument("--from", dest="identity", help="one of your identities (default: main)")
    p.add_argument("--subject", help="the subject; required to compose ('' for none)")
    p.add_argument("--name", help="your display name in the From field")
    p.add_argument("--file", help="the body text (default: stdin)")
    p.add_argument("--raw", metavar="FILE",
                   help="send FILE (- for stdin), a prepared message, as it is")
    p = csub.add_parser("sent", help="status of your sent messages, per recipient")
    p.add_argument("msgid", nargs="?")
    p.add_argument("--before", metavar="MSGID",
                   help="the page of messages sent before MSGID (100 a page, newest first)")
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


def _send_input(args: argparse.Namespace) -> bytes:
    """What ``send`` reads, before connecting: a prepared message (--raw) or
    the text of one to compose (which needs --subject, even an empty one)."""
    if args.raw is not None:
        if args.subject is not None or args.file or args.name is not None:
            raise CliError("--raw sends a prepared message as it is: "
                           "no --subject, --file or --name with it")
        source = args.raw
    elif args.subject is None:
        raise CliError("send composes a message: give --subject (--subject '' for none), "
                       "or send a prepared message as it is with --raw FILE")
    else:
        source = args.file
    if source in (None, "-"):
        if sys.stdin.isatty():
            print("Type the message; end it with Ctrl-D on a line of its own.",
                  file=sys.stderr)
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}") from None


def _message(args: argparse.Namespace, data: bytes, client: UserClient) -> bytes:
    if args.raw is not None:
        return data
    sender = args.identity
    if args.name is not None and sender is None:
        sender = (client.call(wire.Ident()).lines or [args.user])[0]  # main identity first
    return compose.compose(
        to=compose.recipients(args.to), subject=args.subject,
        text=compose.text_of(data, args.file if args.file not in (None, "-")
                             else "the text on stdin"),
        domain=domain_of(sender or args.user), sender=sender, name=args.name)


def _print(reply: wire.UserReply) -> None:
    print(reply.text)
    for line in reply.lines or []:
        print(f"  {line}")


def run_client(args: argparse.Namespace, password: str,
               new_password: str | None = None) -> int:

    host, _, port = args.server.rpartition(":")
    if not port.isdigit():
        raise CliError(f"--server must be HOST:PORT, not {args.server!r}")
    data = b""
    if args.client_cmd == "send":
        rcpts = [a.addr_spec for a in compose.recipients(args.to)]
        data = _send_input(args)
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
                print(views.inbox(reply))
            elif cmd == "envelopes":
                if args.limit is None:
                    print(views.envelopes(client.envelopes(args.all)))
                else:  # one page, its answer naming the next (protocol.md 12.5)
                    print(views.envelopes(client.call(
                        wire.Envs(args.all, after=args.after, limit=args.limit))))
            elif cmd == "show":
                _print(client.call(wire.EnvShow(args.id)))
            elif cmd in DECISIONS:
                _print(client.call(wire.UserDecision(DECISIONS[cmd], args.id)))
            elif cmd == "unsubscribe":
                _print(client.call(wire.Unsub(args.id)))
            elif cmd == "group":
                _print(client.call(wire.GroupStatus(args.address)))
            elif cmd == "read":
                body = client.read(args.id)
                sys.stdout.write(body.decode("utf-8", "replace").replace("\r\n", "\n"))
            elif cmd == "delete":
                print(client.delete(args.id))
            elif cmd == "send":
                print(client.submit(rcpts, _message(args, data, client), args.identity))
            elif cmd == "sent":
                reply = client.call(wire.Sent(args.msgid, args.before))
                _print(reply)
                if (older := wire.sent_continuation(reply.text)) is not None:
                    print(f"older messages: sent --before {older}")
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
