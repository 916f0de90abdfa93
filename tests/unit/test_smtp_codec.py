"""The SMTP codec (docs/smtp.md, "The SMTP codec"): every command, every reply
text, every refusal, pipelining, the smuggling variants, STARTTLS injection,
the AUTH exchanges and the limits at their exact edges."""

from __future__ import annotations

import base64
from collections.abc import Iterable

import pytest

from smdp.protocol import smtp
from smdp.protocol.framing import LineBuffer
from smdp.protocol.smtp import (
    CLOSED,
    NEED_DATA,
    Auth,
    AuthCancel,
    AuthResponse,
    BlockChunk,
    Data,
    DataComplete,
    DataEnd,
    DataFailed,
    DataPart,
    DataStart,
    Helo,
    Help,
    Mail,
    Noop,
    ProtocolUsageError,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    SmtpClientConnection,
    SmtpServerConnection,
    SmtpState,
    StartTls,
    Vrfy,
)

HOST = "mx.here.example"
MAX_SIZE = 1000
G, R, AI, TS, TR, DI, CL = (SmtpState.GREETED, SmtpState.READY, SmtpState.AUTH_IN,
                            SmtpState.TXN_STARTED, SmtpState.TXN_RCPT, SmtpState.DATA_IN,
                            SmtpState.CLOSED)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


PLAIN = b64("\0alice\0pw")


def server(**overrides: object) -> SmtpServerConnection:
    kwargs: dict[str, object] = {"max_message_size": MAX_SIZE, "starttls": True,
                                 "auth_mechanisms": ("PLAIN", "LOGIN"),
                                 "auth_requires_tls": False} | overrides
    return SmtpServerConnection(HOST, **kwargs)  # type: ignore[arg-type]


def step(conn: SmtpServerConnection, data: bytes | str) -> tuple[object, bytes]:
    """Feed ``data`` (a str gets CRLF), return the next event and what was sent."""
    raw = (data + "\r\n").encode() if isinstance(data, str) else data
    conn.receive_data(raw)
    event = conn.next_event()
    return event, conn.data_to_send()


def answer(conn: SmtpServerConnection, event: object) -> None:
    """A well-behaved application that says yes to everything."""
    if isinstance(event, smtp.Helo | Mail | Rcpt | DataStart | DataComplete | Rset | Noop
                  | Quit | StartTls | Auth):
        conn.ok()


def run(conn: SmtpServerConnection, data: bytes | str) -> tuple[list[object], bytes]:
    """Feed ``data``, answer every event yes, return the events and all that was sent."""
    raw = (data + "\r\n").encode() if isinstance(data, str) else data
    if raw:  # b"" would be the end of the input
        conn.receive_data(raw)
    events: list[object] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is CLOSED:
            return events, conn.data_to_send()
        events.append(event)
        answer(conn, event)


SETUP: dict[SmtpState, list[str]] = {
    G: [],
    R: ["EHLO c.example"],
    AI: ["EHLO c.example", "AUTH LOGIN"],
    TS: ["EHLO c.example", "MAIL FROM:<s@b.example>"],
    TR: ["EHLO c.example", "MAIL FROM:<s@b.example>", "RCPT TO:<r@here.example>"],
    DI: ["EHLO c.example", "MAIL FROM:<s@b.example>", "RCPT TO:<r@here.example>", "DATA"],
}


def at_state(state: SmtpState, **overrides: object) -> SmtpServerConnection:
    conn = server(**overrides)
    for line in SETUP[state]:
        run(conn, line)
    assert conn.state is state
    return conn


# One valid line per verb, and its event (None: the connection answers it).
SAMPLES: dict[str, tuple[str, object]] = {
    "EHLO": ("EHLO c.example", Helo("c.example")),
    "HELO": ("helo c.example", Helo("c.example", extended=False)),
    "MAIL": ("MAIL FROM:<s@b.example>", Mail("s@b.example")),
    "RCPT": ("RCPT TO:<r@here.example>", Rcpt("r@here.example")),
    "DATA": ("DATA", DataStart()),
    "RSET": ("RSET", Rset()),
    "NOOP": ("NOOP", Noop()),
    "QUIT": ("QUIT", Quit()),
    "STARTTLS": ("STARTTLS", StartTls()),
    "AUTH": (f"AUTH PLAIN {PLAIN}", Auth("PLAIN", "alice", "pw")),
    "VRFY": ("VRFY alice", None),
    "HELP": ("HELP", None),
}


def test_samples_cover_every_verb() -> None:
    assert set(SAMPLES) == smtp.VERBS


# -- greeting and EHLO ----------------------------------------------------------


def test_greeting() -> None:
    assert server().greeting() == b"220 mx.here.example ESMTP ready\r\n"


def test_ehlo_lists_what_the_connection_was_told_to_offer() -> None:
    events, out = run(server(), "EHLO c.example")
    assert events == [Helo("c.example")]
    assert out == (b"250-mx.here.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
                   b"250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n"
                   b"250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")


def test_ehlo_offers_auth_only_over_tls_when_told_so() -> None:
    _, out = run(server(auth_requires_tls=True), "EHLO c.example")
    assert b"AUTH" not in out
    _, out = run(server(auth_requires_tls=True, tls=True), "EHLO c.example")
    assert out.endswith(b"250 AUTH PLAIN LOGIN\r\n")
    assert b"STARTTLS" not in out  # already over TLS
    _, out = run(server(starttls=False, auth_mechanisms=()), "EHLO c.example")
    assert out.endswith(b"250 ENHANCEDSTATUSCODES\r\n")


def test_helo_is_one_line_and_refuses_parameters_later() -> None:
    conn = server()
    events, out = run(conn, "HELO c.example")
    assert events == [Helo("c.example", extended=False)] and out == b"250 mx.here.example Hello\r\n"
    _, out = run(conn, "MAIL FROM:<s@b.example> SIZE=10")
    assert out == b"555 5.5.4 MAIL parameters need EHLO\r\n"


def test_ehlo_keeps_the_name_as_sent_and_needs_one_token() -> None:
    conn = server()
    assert run(conn, "EHLO Client_Name")[0] == [Helo("Client_Name")]
    assert run(conn, "EHLO [192.0.2.1]")[0] == [Helo("[192.0.2.1]")]
    assert run(conn, "EHLO")[1] == b"501 5.5.4 Syntax: EHLO hostname\r\n"
    assert run(conn, "HELO a b")[1] == b"501 5.5.4 Syntax: HELO hostname\r\n"
    assert run(conn, "EHLO " + "a" * 256)[1] == b"501 5.5.4 Syntax: EHLO hostname\r\n"


def test_a_refused_ehlo_leaves_the_state() -> None:
    conn = server()
    _event, _ = step(conn, "EHLO c.example")
    conn.reply(554, "Go away", "5.7.1")
    assert conn.data_to_send() == b"554 5.7.1 Go away\r\n"
    assert conn.state is G


# -- unknown commands and sequence ------------------------------------------------


@pytest.mark.parametrize("line", ["BDAT 10 LAST", "EXPN list", "XYZZY", "MAILFROM:<a@b>",
                                  "\xe9HLO x"])
def test_unknown_commands(line: str) -> None:
    assert run(at_state(R), line)[1] == b"500 5.5.1 Command unrecognized\r\n"


@pytest.mark.parametrize(("state", "line", "reply"), [
    (G, "MAIL FROM:<s@b.example>", "503 5.5.1 Bad sequence of commands: send EHLO or HELO first"),
    (G, "STARTTLS", "503 5.5.1 Bad sequence of commands: send EHLO or HELO first"),
    (R, "RCPT TO:<r@here.example>", "503 5.5.1 Bad sequence of commands: send MAIL first"),
    (R, "DATA", "503 5.5.1 Bad sequence of commands: send MAIL first"),
    (TS, "DATA", "503 5.5.1 Bad sequence of commands: send RCPT first"),
    (TS, "MAIL FROM:<s@b.example>", "503 5.5.1 Bad sequence of commands: nested MAIL command"),
    (TR, "MAIL FROM:<s@b.example>", "503 5.5.1 Bad sequence of commands: nested MAIL command"),
    (TR, "AUTH PLAIN", "503 5.5.1 Bad sequence of commands: "
                       "AUTH not allowed inside a mail transaction; send RSET first"),
    (TS, "STARTTLS", "503 5.5.1 Bad sequence of commands: "
                     "STARTTLS not allowed inside a mail transaction; send RSET first"),
])
def test_sequence_errors(state: SmtpState, line: str, reply: str) -> None:
    conn = at_state(state)
    assert run(conn, line) == ([], reply.encode() + b"\r\n")
    assert conn.state is state


def test_data_after_every_recipient_was_refused() -> None:
    conn = at_state(TS)
    _event, _ = step(conn, "RCPT TO:<nobody@here.example>")
    conn.reply(550, "No such user", "5.1.1")
    assert conn.data_to_send() == b"550 5.1.1 No such user\r\n"
    assert run(conn, "DATA")[1] == b"554 5.5.1 No valid recipients\r\n"


@pytest.mark.parametrize(("state", "line"), [(TR, "DATA x"), (TR, "RSET now"),
                                             (TR, "QUIT please"), (R, "STARTTLS x")])
def test_commands_without_arguments(state: SmtpState, line: str) -> None:
    conn = at_state(state)
    verb = line.split()[0]
    assert run(conn, line)[1] == f"501 5.5.4 Syntax: {verb}\r\n".encode()


def test_noop_ignores_its_argument_and_rset_ends_the_transaction() -> None:
    conn = at_state(TR)
    assert run(conn, "NOOP whatever") == ([Noop()], b"250 2.0.0 OK\r\n")
    assert conn.state is TR
    assert run(conn, "RSET") == ([Rset()], b"250 2.0.0 Reset\r\n")
    assert conn.state is R


def test_vrfy_and_help_are_answered_by_the_connection() -> None:
    conn = at_state(TR)
    assert run(conn, "VRFY alice") == ([], b"252 2.5.0 Cannot VRFY user, but will accept "
                                           b"message and attempt delivery\r\n")
    assert run(conn, "VRFY")[1] == b"501 5.5.4 Syntax: VRFY string\r\n"
    assert run(conn, "HELP mail") == ([], b"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET "
                                          b"NOOP QUIT VRFY HELP STARTTLS AUTH; see RFC 5321\r\n")
    assert conn.state is TR


def test_quit_closes_and_drops_the_rest() -> None:
    conn = at_state(TR)
    events, out = run(conn, "QUIT\r\nNOOP")
    assert events == [Quit()] and out == b"221 2.0.0 Bye\r\n"
    assert conn.state is CL and conn.next_event() is CLOSED


def test_eof_in_the_middle_of_a_message_closes() -> None:
    conn = at_state(DI)
    conn.receive_data(b"half a line")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


# -- MAIL ------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "event"), [
    ("MAIL FROM:<s@b.example>", Mail("s@b.example")),
    ("mail from: <S@B.Example>", Mail("S@B.Example")),
    ("MAIL FROM:<>", Mail("")),
    ("MAIL FROM:<> SIZE=0", Mail("", size=0)),
    ("MAIL FROM:<s@b.example> SIZE=1000 BODY=8bitmime SMTPUTF8",
     Mail("s@b.example", 1000, "8BITMIME", True)),
    ("MAIL FROM:<s@b.example> BODY=7BIT", Mail("s@b.example", body="7BIT")),
    ("MAIL FROM:<s@b.example> AUTH=<>", Mail("s@b.example", auth="<>")),
    ("MAIL FROM:<s@b.example> AUTH=s+2Bx@b.example", Mail("s@b.example", auth="s+x@b.example")),
    ("MAIL FROM:<jö@bé.example> SMTPUTF8", Mail("jö@bé.example", smtputf8=True)),
    ("MAIL FROM:<@relay.example:s@b.example>", Mail("s@b.example", route=("relay.example",))),
])
def test_mail(line: str, event: Mail) -> None:
    conn = at_state(R)
    events, out = run(conn, line)
    assert events == [event] and out == b"250 2.1.0 Sender OK\r\n"
    assert conn.state is TS


@pytest.mark.parametrize(("line", "reply"), [
    ("MAIL <s@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
    ("MAIL TO:<s@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]"),
    ("MAIL FROM:s@b.example", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<s@b.example", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<s@b.example>SIZE=1", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<s..t@b.example>", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<s@-b.example>", "501 5.1.7 Bad sender address syntax"),
    ("MAIL FROM:<s@b.example> SIZE=x", "501 5.5.4 SIZE=<octets> needs a number"),
    ("MAIL FROM:<s@b.example> SIZE", "501 5.5.4 SIZE=<octets> needs a number"),
    ("MAIL FROM:<s@b.example> SIZE=1001",
     "552 5.3.4 Message size exceeds fixed maximum message size (1000 octets)"),
    ("MAIL FROM:<s@b.example> SIZE=1 SIZE=2", "501 5.5.4 Repeated parameter SIZE"),
    ("MAIL FROM:<s@b.example> BODY=BINARYMIME", "501 5.5.4 BODY must be 7BIT or 8BITMIME"),
    ("MAIL FROM:<s@b.example> SMTPUTF8=yes", "501 5.5.4 SMTPUTF8 takes no value"),
    ("MAIL FROM:<s@b.example> AUTH=a=b", "501 5.5.4 Bad parameter syntax"),
    ("MAIL FROM:<s@b.example> AUTH=a+zz", "501 5.5.4 AUTH=<mailbox> must be xtext"),
    ("MAIL FROM:<s@b.example> RET=FULL", "555 5.5.4 Unsupported parameter RET"),
    ("MAIL FROM:<s@b.example> -X=1", "501 5.5.4 Bad parameter syntax"),
    ("MAIL FROM:<jö@b.example>", "553 5.6.7 Non-ASCII sender address needs SMTPUTF8"),
    ("MAIL FROM:<s@b.example>\x07", "501 5.5.4 Invalid characters in command"),
])
def test_mail_refusals(line: str, reply: str) -> None:
    conn = at_state(R)
    assert run(conn, line) == ([], reply.encode() + b"\r\n")
    assert conn.state is R


def test_mail_refuses_invalid_utf8() -> None:
    conn = at_state(R)
    assert run(conn, b"MAIL FROM:<j\xff@b.example>\r\n")[1] == (
        b"501 5.5.4 Invalid UTF-8 in command\r\n")


def test_auth_parameter_only_where_auth_is_offered() -> None:
    conn = at_state(R, auth_mechanisms=())
    assert run(conn, "MAIL FROM:<s@b.example> AUTH=<>")[1] == (
        b"555 5.5.4 Unsupported parameter AUTH\r\n")


def test_mail_needs_auth_on_a_submission_port() -> None:
    conn = at_state(R, auth_required=True)
    assert run(conn, "MAIL FROM:<s@b.example>")[1] == b"530 5.7.0 Authentication required\r\n"
    run(conn, f"AUTH PLAIN {PLAIN}")
    assert run(conn, "MAIL FROM:<s@b.example>")[0] == [Mail("s@b.example")]


# -- RCPT and the RFC 5321 4.1.2 path grammar ---------------------------------------


@pytest.mark.parametrize(("path", "event"), [
    ("<r@here.example>", Rcpt("r@here.example")),
    ("<Postmaster>", Rcpt("Postmaster")),
    ("<postmaster>", Rcpt("postmaster")),
    ('<"john doe"@here.example>', Rcpt('"john doe"@here.example')),
    ('<"a@b"@here.example>', Rcpt('"a@b"@here.example')),
    ('<"a\\"b"@here.example>', Rcpt('"a\\"b"@here.example')),
    ("<a%b@here.example>", Rcpt("a%b@here.example")),
    ("<b!a@here.example>", Rcpt("b!a@here.example")),
    ("<r@[192.0.2.1]>", Rcpt("r@[192.0.2.1]")),
    ("<r@[255.255.255.255]>", Rcpt("r@[255.255.255.255]")),
    ("<r@[IPv6:2001:db8::1]>", Rcpt("r@[IPv6:2001:db8::1]")),
    ("<r@[IPv6:::ffff:192.0.2.1]>", Rcpt("r@[IPv6:::ffff:192.0.2.1]")),
    ("<r@[x-tag:stuff]>", Rcpt("r@[x-tag:stuff]")),
    ("<@a.example,@b.example:u@c.example>", Rcpt("u@c.example", ("a.example", "b.example"))),
    ("<r@localhost>", Rcpt("r@localhost")),
    ("<r@[IPv6:2001:db8::1]>", Rcpt("r@[IPv6:2001:db8::1]")),
])
def test_rcpt_paths(path: str, event: Rcpt) -> None:
    conn = at_state(TS)
    assert run(conn, f"RCPT TO:{path}") == ([event], b"250 2.1.5 Recipient OK\r\n")
    assert conn.state is TR


@pytest.mark.parametrize("path", [
    "<r@here.example", "r@here.example", "<>", "<r>", "<@a.example:>", "<r@>", "<@r>",
    "<r@here..example>", "<r.@here.example>", "<.r@here.example>", '<"r@here.example>',
    "<r@[256.1.1.1]>", "<r@[1.2.3]>", "<r@[IPv6:2001:db8::g]>", "<r@[IPv6:fe80::1%eth0]>",
    "<r@[ipv6:zz]>", "<r@[]>", "<r@[no colon]>", "<r@here.example-> ", "<r s@here.example>",
    "<@a.example,b.example:u@c.example>", "<a@b@here.example>",
])
def test_rcpt_bad_paths(path: str) -> None:
    conn = at_state(TS)
    assert run(conn, f"RCPT TO:{path}") == ([], b"501 5.1.3 Bad recipient address syntax\r\n")
    assert conn.state is TS


def test_rcpt_syntax_and_parameters() -> None:
    conn = at_state(TS)
    assert run(conn, "RCPT <r@here.example>")[1] == b"501 5.5.4 Syntax: RCPT TO:<address>\r\n"
    assert run(conn, "RCPT TO:<r@here.example> NOTIFY=NEVER")[1] == (
        b"555 5.5.4 RCPT parameters are not supported\r\n")
    assert run(conn, "RCPT TO:<r@here.example> N@=x")[1] == b"501 5.5.4 Bad parameter syntax\r\n"
    assert run(conn, "RCPT TO:<r@here.example>x")[1] == (
        b"501 5.1.3 Bad recipient address syntax\r\n")
    assert run(conn, "rcpt to: <r@here.example>  ")[0] == [Rcpt("r@here.example")]


def test_utf8_recipients_only_in_an_smtputf8_transaction() -> None:
    conn = at_state(TS)
    assert run(conn, "RCPT TO:<rö@here.example>")[1] == (
        b"553 5.6.7 Non-ASCII recipient address needs SMTPUTF8\r\n")
    conn = at_state(R)
    run(conn, "MAIL FROM:<s@b.example> SMTPUTF8")
    assert run(conn, "RCPT TO:<rö@hére.example>")[0] == [Rcpt("rö@hére.example")]
    run(conn, "RSET")
    run(conn, "MAIL FROM:<s@b.example>")
    assert run(conn, "RCPT TO:<rö@here.example>")[0] == []


def test_address_lengths_at_their_edges() -> None:
    conn = at_state(TS)
    local = "l" * 64
    assert run(conn, f"RCPT TO:<{local}@here.example>")[0] == [Rcpt(f"{local}@here.example")]
    too_long = b"501 5.1.3 The recipient address is too long (RFC 5321 4.5.3.1)\r\n"
    assert run(conn, f"RCPT TO:<l{local}@here.example>")[1] == too_long
    # A path of 256 octets with its brackets: <a@ + 252 + >.
    labels = ".".join(["d" * 63] * 3) + "." + "e" * 60
    assert len(labels) == 252
    assert run(conn, f"RCPT TO:<a@{labels}>")[0] == [Rcpt(f"a@{labels}")]
    assert run(conn, f"RCPT TO:<ab@{labels}>")[1] == too_long
    domain = ".".join(["d" * 63] * 4)  # 255 octets, path too long though
    assert run(conn, f"RCPT TO:<a@{domain}>")[1] == too_long
    assert run(conn, f"RCPT TO:<a@{domain}d>")[1] == too_long
    ümlaut = "ü" * 32  # 64 octets in UTF-8
    conn = at_state(R)
    run(conn, "MAIL FROM:<s@b.example> SMTPUTF8")
    assert run(conn, f"RCPT TO:<{ümlaut}@x.example>")[0] == [Rcpt(f"{ümlaut}@x.example")]
    assert run(conn, f"RCPT TO:<a{ümlaut}@x.example>")[1] == too_long


def test_split_mailbox() -> None:
    assert smtp.split_mailbox('"a@b"@Here.Example') == smtp.Mailbox("a@b", "Here.Example",
                                                                      True, False)
    assert smtp.split_mailbox('"a\\"b"@x') == smtp.Mailbox('a"b', "x", True, False)
    assert smtp.split_mailbox("r@[192.0.2.1]") == smtp.Mailbox("r", "[192.0.2.1]", False, True)
    assert smtp.split_mailbox("a%b@x") == smtp.Mailbox("a%b", "x", False, False)


def test_recipients_at_the_limit() -> None:
    conn = at_state(TS)
    for n in range(100):
        assert run(conn, f"RCPT TO:<r{n}@here.example>")[1] == b"250 2.1.5 Recipient OK\r\n"
    assert run(conn, "RCPT TO:<r100@here.example>")[1] == b"452 4.5.3 Too many recipients\r\n"
    assert conn.state is TR
    conn = at_state(TS, max_recipients=1)
    run(conn, "RCPT TO:<a@here.example>")
    assert run(conn, "RCPT TO:<b@here.example>")[1] == b"452 4.5.3 Too many recipients\r\n"


def test_refused_recipients_do_not_count_toward_the_limit() -> None:
    conn = at_state(TS, max_recipients=1)
    step(conn, "RCPT TO:<a@here.example>")
    conn.reply(550, "No", "5.1.1")
    assert run(conn, "RCPT TO:<b@here.example>")[0] == [Rcpt("b@here.example")]


# -- DATA -------------------------------------------------------------------------


def test_data_is_unstuffed_and_answered() -> None:
    conn = at_state(TR)
    events, out = run(conn, "DATA")
    assert events == [DataStart()] and out == b"354 End data with <CR><LF>.<CR><LF>\r\n"
    events, out = run(conn, b"Subject: x\r\n\r\n..dot\r\n...\r\nend\r\n.\r\n")
    assert events == [DataComplete(b"Subject: x\r\n\r\n.dot\r\n..\r\nend\r\n")]
    assert out == b"250 2.0.0 Message accepted for delivery\r\n"
    assert conn.state is R


def test_an_empty_message() -> None:
    conn = at_state(DI)
    assert run(conn, b".\r\n")[0] == [DataComplete(b"")]


def test_the_message_arrives_in_chunks_when_streamed() -> None:
    conn = at_state(DI, stream_threshold=10)
    events, _ = run(conn, b"line one\r\n")
    assert events == [BlockChunk(b"line one\r\n")]
    events, _ = run(conn, b"..two\r\nthree\r\n")
    assert events == [BlockChunk(b".two\r\nthree\r\n")]
    events, _ = run(conn, b"four\r\n.\r\n")
    assert events == [DataComplete(b"four\r\n")]


def test_the_message_may_be_refused_at_its_end() -> None:
    conn = at_state(DI)
    _event, _ = step(conn, b"x\r\n.\r\n")
    conn.reply(451, "Try later", "4.3.0")
    assert conn.data_to_send() == b"451 4.3.0 Try later\r\n"
    assert conn.state is R


MESSAGE_AFTER = b"MAIL FROM:<forged@victim.example>\r\nRCPT TO:<r@here.example>\r\nDATA\r\n"


@pytest.mark.parametrize("variant", [
    b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r.\r", b"\r\n.\r", b"\r\n.\n", b"\n.\r",
])
def test_smuggling_variants_never_end_the_message(variant: bytes) -> None:
    """The 2023 SMTP smuggling advisories: only CRLF.CRLF ends the data; a
    message holding a bare variant is read to its real end and refused."""
    wire = b"Subject: real\r\n\r\nhello" + variant + MESSAGE_AFTER + b"forged\r\n.\r\nNOOP\r\n"
    for cut in range(len(wire) + 1):
        conn = at_state(DI)
        events_a, out_a = run(conn, wire[:cut])
        events_b, out_b = run(conn, wire[cut:])
        assert [e for e in events_a + events_b if not isinstance(e, BlockChunk)] == [
            DataFailed(smtp.BARE_LINE_END_REASON), Noop()]
        assert out_a + out_b == (
            b"554 5.6.0 Message refused: it holds a bare CR or LF; every line must end "
            b"with CRLF (RFC 5321 2.3.8)\r\n250 2.0.0 OK\r\n")


@pytest.mark.parametrize("body", [b"a\rb\r\n", b"a\nb\r\n", b"a\r\r\n", b"\n", b"x\r\n\n\r\n"])
def test_any_bare_cr_or_lf_refuses_the_message(body: bytes) -> None:
    conn = at_state(DI, stream_threshold=1)
    events, out = run(conn, b"ok\r\n" + body + b"more\r\n.\r\n")
    assert [e for e in events if not isinstance(e, BlockChunk)] == [
        DataFailed(smtp.BARE_LINE_END_REASON)]
    assert out.startswith(b"554 5.6.0 ")
    assert conn.state is R


def test_text_line_limit_at_its_edge() -> None:
    conn = at_state(DI, max_message_size=5000)
    ok = b"x" * 998 + b"\r\n"  # 1000 octets with CRLF
    assert run(conn, ok + b"." + ok + b".\r\n")[0] == [DataComplete(ok + ok)]  # stuffed dot free
    run(conn, "MAIL FROM:<s@b.example>\r\nRCPT TO:<r@here.example>\r\nDATA")
    events, out = run(conn, b"y" * 999 + b"\r\n.\r\n")
    assert events == [DataFailed(smtp.LINE_TOO_LONG_REASON)]
    assert out == (b"554 5.6.0 Message refused: a line is longer than 1000 octets "
                   b"(RFC 5321 4.5.3.1.6)\r\n")


def test_an_endless_line_is_not_held() -> None:
    conn = at_state(DI)
    for _ in range(50):
        run(conn, b"z" * 1000)
        assert conn.buffered <= 1002
    events, _out = run(conn, b"\r\n.\r\nNOOP\r\n")
    assert events == [DataFailed(smtp.LINE_TOO_LONG_REASON), Noop()]


def test_message_size_at_its_edge() -> None:
    conn = at_state(DI)
    body = (b"a" * 98 + b"\r\n") * 10  # 1000 octets
    assert run(conn, body + b".\r\n")[0] == [DataComplete(body)]
    run(conn, "MAIL FROM:<s@b.example>\r\nRCPT TO:<r@here.example>\r\nDATA")
    events, out = run(conn, body + b"b\r\n.\r\n")
    assert events == [DataFailed(smtp.TOO_BIG_REASON)]
    assert out == b"552 5.3.4 Message size exceeds fixed maximum message size (1000 octets)\r\n"


# -- limits on command lines ------------------------------------------------------


def test_command_line_at_its_edge() -> None:
    conn = at_state(R)
    noop = "NOOP " + "x" * (512 - 7)  # 512 octets with CRLF
    assert run(conn, noop)[0] == [Noop()]
    assert run(conn, noop + "x") == ([], b"500 5.5.2 Line too long\r\n")
    conn = at_state(R, max_command_line=100)
    assert run(conn, "NOOP " + "x" * 93)[0] == [Noop()]
    assert run(conn, "NOOP " + "x" * 94)[1] == b"500 5.5.2 Line too long\r\n"


def test_mail_has_room_for_its_extensions() -> None:
    conn = at_state(R)
    head = "MAIL FROM:<s@b.example> AUTH="
    line = head + "x" * (512 + smtp.MAIL_EXTENSION_ROOM - 2 - len(head))
    assert smtp.MAIL_EXTENSION_ROOM == 549
    assert len(line) + 2 == 1061
    assert run(conn, line)[0] == [Mail("s@b.example", auth="x" * (1061 - 2 - len(head)))]
    run(conn, "RSET")
    assert run(conn, line + "x")[1] == b"500 5.5.2 Line too long\r\n"
    assert run(conn, "RCPT TO:<" + "x" * 600 + ">")[1] == b"500 5.5.2 Line too long\r\n"


def test_auth_lines_up_to_12288_octets() -> None:
    conn = at_state(R)
    run(conn, "AUTH PLAIN")
    response = b64(b"\0alice\0" + b"p" * 9200)
    assert len(response) <= 12286
    events, _ = run(conn, response)
    assert events == [Auth("PLAIN", "alice", "p" * 9200)]
    conn = at_state(R)
    line = "AUTH PLAIN " + "A" * (12288 - 2 - 11)  # read, but not base64 (length)
    assert run(conn, line)[1] == b"501 5.5.2 Cannot decode response (base64 expected)\r\n"
    assert run(conn, line + "AAAA")[1] == b"500 5.5.2 Line too long\r\n"


def test_a_line_over_every_limit_is_dropped_as_it_arrives() -> None:
    conn = at_state(R)
    for _ in range(20):
        run(conn, b"N" * 1000)
        assert conn.buffered <= smtp.AUTH_LINE + 2
    assert run(conn, b"\r\nNOOP\r\n") == ([Noop()], b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n")


# -- STARTTLS ---------------------------------------------------------------------


def test_starttls_forgets_the_session_and_drops_injected_plaintext() -> None:
    conn = at_state(R)
    run(conn, f"AUTH PLAIN {PLAIN}")
    assert conn.authenticated == "alice"
    # CVE-2011-0411: commands pipelined after STARTTLS arrived in plaintext.
    events, out = run(conn, b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert events == [StartTls()] and out == b"220 2.0.0 Ready to start TLS\r\n"
    assert conn.state is G and conn.tls and conn.authenticated is None
    assert conn.next_event() is NEED_DATA
    assert run(conn, "MAIL FROM:<s@b.example>")[1].startswith(b"503 ")
    _, out = run(conn, "EHLO c.example")
    assert b"STARTTLS" not in out
    assert run(conn, "STARTTLS")[1] == (
        b"503 5.5.1 Bad sequence of commands: TLS already active\r\n")


def test_starttls_refused_keeps_the_plaintext_session() -> None:
    conn = at_state(R)
    step(conn, "STARTTLS")
    conn.reply(454, "TLS not available", "4.7.0")
    assert conn.data_to_send() == b"454 4.7.0 TLS not available\r\n"
    assert conn.state is R and not conn.tls
    assert run(at_state(R, starttls=False), "STARTTLS")[1] == b"502 5.5.1 STARTTLS not offered\r\n"


# -- AUTH -------------------------------------------------------------------------


def test_auth_plain_with_initial_response() -> None:
    conn = at_state(R)
    events, out = run(conn, f"AUTH PLAIN {b64('admin' + chr(0) + 'alice' + chr(0) + 'pw')}")
    assert events == [Auth("PLAIN", "alice", "pw", "admin")]
    assert out == b"235 2.7.0 Authentication successful\r\n"
    assert conn.authenticated == "alice" and conn.state is R
    assert run(conn, f"AUTH PLAIN {PLAIN}")[1] == (
        b"503 5.5.1 Bad sequence of commands: already authenticated\r\n")


def test_auth_plain_with_a_continuation() -> None:
    conn = at_state(R)
    assert run(conn, "auth plain") == ([], b"334 \r\n")
    assert conn.state is AI
    assert run(conn, PLAIN)[0] == [Auth("PLAIN", "alice", "pw")]
    assert conn.state is R


def test_auth_login() -> None:
    conn = at_state(R)
    assert run(conn, "AUTH LOGIN") == ([], b"334 VXNlcm5hbWU6\r\n")
    assert run(conn, b64("alice")) == ([], b"334 UGFzc3dvcmQ6\r\n")
    assert conn.state is AI
    assert run(conn, b64("pw"))[0] == [Auth("LOGIN", "alice", "pw")]
    conn = at_state(R)
    assert run(conn, f"AUTH LOGIN {b64('alice')}") == ([], b"334 UGFzc3dvcmQ6\r\n")
    assert run(conn, b64("pw"))[0] == [Auth("LOGIN", "alice", "pw")]


def test_a_refused_auth_goes_back_to_ready() -> None:
    conn = at_state(R)
    run(conn, "AUTH PLAIN")
    _event, _ = step(conn, PLAIN)
    conn.reply(535, "Authentication credentials invalid", "5.7.8")
    assert conn.data_to_send() == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert conn.state is R and conn.authenticated is None


@pytest.mark.parametrize(("lines", "reply"), [
    (["AUTH PLAIN", "*"], "501 5.7.0 Authentication cancelled"),
    (["AUTH LOGIN", b64("alice"), "*"], "501 5.7.0 Authentication cancelled"),
    (["AUTH PLAIN", "not base64!"], "501 5.5.2 Cannot decode response (base64 expected)"),
    (["AUTH PLAIN", "QUJ"], "501 5.5.2 Cannot decode response (base64 expected)"),
    (["AUTH PLAIN", b64("alice\0pw")], "501 5.5.2 Malformed PLAIN response (RFC 4616)"),
    (["AUTH PLAIN", b64("\0\0pw")], "501 5.5.2 Malformed PLAIN response (RFC 4616)"),
    (["AUTH PLAIN", b64(b"\0\xff\0pw")], "501 5.5.2 Malformed PLAIN response (RFC 4616)"),
    (["AUTH PLAIN ="], "501 5.5.2 Malformed PLAIN response (RFC 4616)"),
    (["AUTH LOGIN", ""], "501 5.5.2 Empty user name"),
    (["AUTH LOGIN", b64(b"\xff")], "501 5.5.2 Malformed LOGIN response (UTF-8 expected)"),
    (["AUTH CRAM-MD5"], "504 5.5.4 Unrecognized authentication type"),
    (["AUTH"], "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
    (["AUTH PLAIN a b"], "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
])
def test_auth_refusals_end_the_exchange(lines: list[str], reply: str) -> None:
    conn = at_state(R)
    out = b""
    for line in lines:
        out = run(conn, line)[1]
    assert out == reply.encode() + b"\r\n"
    assert conn.state is R
    assert run(conn, "NOOP")[0] == [Noop()]


def test_auth_where_it_is_not_offered() -> None:
    assert run(at_state(R, auth_mechanisms=()), "AUTH PLAIN")[1] == (
        b"502 5.5.1 AUTH not offered\r\n")
    assert run(at_state(R, auth_requires_tls=True), f"AUTH PLAIN {PLAIN}")[1] == (
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")
    assert run(at_state(R, auth_requires_tls=True, tls=True),
               f"AUTH PLAIN {PLAIN}")[0] == [Auth("PLAIN", "alice", "pw")]
    assert run(at_state(R, auth_mechanisms=("PLAIN",)), "AUTH LOGIN")[1] == (
        b"504 5.5.4 Unrecognized authentication type\r\n")
    with pytest.raises(ValueError):
        server(auth_mechanisms=("CRAM-MD5",))


def test_inside_an_exchange_every_line_is_a_response() -> None:
    conn = at_state(R)
    run(conn, "AUTH PLAIN")
    assert run(conn, "QUIT")[1] == b"501 5.5.2 Malformed PLAIN response (RFC 4616)\r\n"
    assert conn.state is R
    run(conn, "AUTH PLAIN")
    assert run(conn, "A" * 12289)[1] == b"500 5.5.2 Line too long\r\n"
    assert conn.state is R


# -- pipelining -------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order() -> None:
    conn = at_state(R)
    events, out = run(conn, "MAIL FROM:<s@b.example>\r\nRCPT TO:<a@here.example>\r\n"
                            "RCPT TO:<bad>\r\nRCPT TO:<b@here.example>\r\nDATA")
    assert events == [Mail("s@b.example"), Rcpt("a@here.example"), Rcpt("b@here.example"),
                      DataStart()]
    assert out == (b"250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n"
                   b"501 5.1.3 Bad recipient address syntax\r\n250 2.1.5 Recipient OK\r\n"
                   b"354 End data with <CR><LF>.<CR><LF>\r\n")


def test_a_reply_is_owed_before_the_next_event() -> None:
    conn = at_state(R)
    step(conn, "NOOP\r\nNOOP")
    with pytest.raises(ProtocolUsageError):
        conn.next_event()


# -- the answer API ---------------------------------------------------------------


def test_ok_gives_each_events_usual_answer() -> None:
    conn = at_state(TR)
    step(conn, "RCPT TO:<x@here.example>")
    conn.ok("Fine")
    assert conn.data_to_send() == b"250 2.1.5 Fine\r\n"


def test_reply_checks_what_it_is_given() -> None:
    conn = at_state(TR)
    step(conn, "RCPT TO:<x@here.example>")
    for code, status in [(354, None), (250, "5.0.0"), (250, "2.0"), (550, "2.1.1"),
                         (199, None), (250, "2.1000.0")]:
        with pytest.raises(ProtocolUsageError):
            conn.reply(code, "x", status)
    with pytest.raises(ProtocolUsageError):
        conn.reply(250, "a\r\nb")
    with pytest.raises(ProtocolUsageError):
        conn.reply(250, [])
    conn.reply(452, ["Mailbox full", "try later"], "4.2.2")
    assert conn.data_to_send() == b"452-4.2.2 Mailbox full\r\n452 4.2.2 try later\r\n"
    with pytest.raises(ProtocolUsageError):
        conn.reply(250, "nothing owed")
    step(conn, "DATA")
    with pytest.raises(ProtocolUsageError):
        conn.reply(354, "go", "2.0.0")
    with pytest.raises(ProtocolUsageError):
        conn.reply(250, "go")
    conn.reply(354, "go")
    conn = at_state(R)
    step(conn, "EHLO c.example")
    with pytest.raises(ProtocolUsageError):
        conn.reply(250, "hi", "2.0.0")
    with pytest.raises(ProtocolUsageError):
        conn.reply(251, "hi")
    step_conn = at_state(R)
    step(step_conn, "QUIT")
    with pytest.raises(ProtocolUsageError):
        step_conn.reply(250, "bye")


def test_default_status_is_the_class_one() -> None:
    conn = at_state(R)
    conn.receive_data(b"NOOP\r\nNOOP\r\nNOOP\r\n")
    for code, text in [(250, "fine"), (421, "shutting down"), (554, "no")]:
        conn.next_event()
        conn.reply(code, text)
    assert conn.data_to_send() == b"250 2.0.0 fine\r\n421 4.0.0 shutting down\r\n554 5.0.0 no\r\n"


# -- the client -------------------------------------------------------------------


def client_ready(caps: Iterable[str] = ("PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8",
                                        "STARTTLS", "AUTH PLAIN LOGIN")) -> SmtpClientConnection:
    c = SmtpClientConnection()
    c.receive_data(b"220 mx ESMTP\r\n")
    assert c.next_event() == Reply(220, ["mx ESMTP"], "<greeting>")
    assert c.send(Helo("me.example")) == b"EHLO me.example\r\n"
    lines = ["mx", *caps]
    c.receive_data("".join(f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                           for i, line in enumerate(lines)).encode())
    assert c.next_event() == Reply(250, lines, "EHLO")
    return c


def test_client_parses_capabilities() -> None:
    c = client_ready(["pipelining", "SIZE", "AUTH=LOGIN PLAIN", "X-FOO bar baz", "",
                      "ENHANCEDSTATUSCODES"])
    caps = c.capabilities
    assert caps is not None
    assert caps.pipelining and caps.size == 0 and caps.auth == {"LOGIN", "PLAIN"}
    assert caps.enhanced_status_codes and not caps.starttls and not caps.eightbitmime
    assert ("X-FOO", ("bar", "baz")) in caps.keywords
    c = client_ready()
    assert c.capabilities == smtp.Capabilities(
        pipelining=True, size=1000, eightbitmime=True, smtputf8=True, starttls=True,
        auth=frozenset({"PLAIN", "LOGIN"}),
        keywords=(("PIPELINING", ()), ("SIZE", ("1000",)), ("8BITMIME", ()), ("SMTPUTF8", ()),
                  ("STARTTLS", ()), ("AUTH", ("PLAIN", "LOGIN"))))


def test_client_pipelines_a_transaction_and_matches_the_replies() -> None:
    c = client_ready()
    wire = c.pipeline([Mail("s@b.example", size=10, body="8BITMIME"), Rcpt("a@x.example"),
                       Rcpt("b@x.example"), DataStart()])
    assert wire == (b"MAIL FROM:<s@b.example> SIZE=10 BODY=8BITMIME\r\n"
                    b"RCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\nDATA\r\n")
    c.receive_data(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
    replies = [c.next_event() for _ in range(4)]
    assert [(r.code, r.to) for r in replies if isinstance(r, Reply)] == [
        (250, "MAIL"), (250, "RCPT"), (550, "RCPT"), (354, "DATA")]
    assert isinstance(replies[2], Reply) and replies[2].status == "5.1.1"
    assert str(replies[2]) == "550 5.1.1 no such user"
    assert c.send(DataPart(b".a\nb\r")) == b"..a\r\nb"
    assert c.send(DataPart(b"\n.\r.x")) == b"\r\n..\r\n..x"
    assert c.send(DataEnd()) == b"\r\n.\r\n"
    c.receive_data(b"250 2.0.0 queued\r\n")
    assert c.next_event() == Reply(250, ["2.0.0 queued"], "<end of data>")


def test_client_holds_mail_to_what_was_offered() -> None:
    c = client_ready(["8BITMIME"])
    assert c.send(Mail("s@b.example", size=10, auth="<>")) == b"MAIL FROM:<s@b.example>\r\n"
    c = client_ready(["SIZE 5"])
    with pytest.raises(ProtocolUsageError):
        c.send(Mail("s@b.example", smtputf8=True))
    with pytest.raises(ProtocolUsageError):
        c.send(Mail("s@b.example", body="8BITMIME"))
    with pytest.raises(ProtocolUsageError):
        c.pipeline([Mail("s@b.example"), Rcpt("a@x.example")])
    c = client_ready()
    assert c.send(Mail("", size=3, smtputf8=True, auth="a+b=c")) == (
        b"MAIL FROM:<> SIZE=3 SMTPUTF8 AUTH=a+2Bb+3Dc\r\n")
    with pytest.raises(ProtocolUsageError):
        c.pipeline([DataStart(), Rcpt("a@x.example")])
    with pytest.raises(ProtocolUsageError):
        c.send(Mail("bad address"))
    with pytest.raises(ProtocolUsageError):
        c.send(Mail("jö@x.example"))
    with pytest.raises(ProtocolUsageError):
        c.send(Mail("s@x.example", size=-1))
    with pytest.raises(ProtocolUsageError):
        c.send(Mail("s@x.example", body="BINARYMIME"))


def test_client_sends_the_message_only_after_354() -> None:
    c = client_ready()
    with pytest.raises(ProtocolUsageError):
        c.send(DataPart(b"x"))
    c.send(DataStart())
    with pytest.raises(ProtocolUsageError):
        c.send(DataPart(b"x"))
    c.receive_data(b"554 5.5.1 No valid recipients\r\n")
    assert c.next_event() == Reply(554, ["5.5.1 No valid recipients"], "DATA")
    with pytest.raises(ProtocolUsageError):
        c.send(Data(b"x"))
    c.send(DataStart())
    c.receive_data(b"354 go\r\n")
    c.next_event()
    with pytest.raises(ProtocolUsageError):
        c.send(Noop())
    assert c.send(Data(b"")) == b".\r\n"
    assert c.send(Noop()) == b"NOOP\r\n"


def test_client_writes_every_command() -> None:
    c = client_ready()
    assert c.send(Helo("me.example", extended=False)) == b"HELO me.example\r\n"
    assert c.send(Rcpt("Postmaster")) == b"RCPT TO:<Postmaster>\r\n"
    assert c.send(Rcpt("u@c.example", ("a.example",))) == b"RCPT TO:<@a.example:u@c.example>\r\n"
    assert c.send(Auth("PLAIN", "alice", "pw")) == f"AUTH PLAIN {PLAIN}\r\n".encode()
    assert c.send(AuthResponse(b"alice")) == f"{b64('alice')}\r\n".encode()
    assert c.send(AuthResponse(b"")) == b"\r\n"
    assert c.send(AuthCancel()) == b"*\r\n"
    assert c.send(Vrfy("alice")) == b"VRFY alice\r\n"
    assert c.send(Help()) == b"HELP\r\n"
    assert c.send(Help("MAIL")) == b"HELP MAIL\r\n"
    assert c.send(Rset()) == b"RSET\r\n"
    assert c.send(Quit()) == b"QUIT\r\n"
    for bad in (Auth("LOGIN", "a", "b"), Auth("PLAIN", "", "b"), Helo("two words"),
                Vrfy(""), Rcpt("x")):
        with pytest.raises(ProtocolUsageError):
            c.send(bad)


def test_client_reads_replies_strictly() -> None:
    c = SmtpClientConnection()
    c.receive_data(b"220-mx\r\n220-more\r\n220 done\r\n421 4.3.2 bye\r\n")
    assert c.next_event() == Reply(220, ["mx", "more", "done"], "<greeting>")
    reply = c.next_event()
    assert reply == Reply(421, ["4.3.2 bye"], "<unasked>")
    assert isinstance(reply, Reply) and reply.transient and not reply.ok
    for wire in (b"250-a\r\n251 b\r\n", b"hello\r\n", b"600 x\r\n", b"25 x\r\n"):
        c = SmtpClientConnection()
        c.receive_data(wire)
        with pytest.raises(RemoteProtocolError):
            c.next_event()
        with pytest.raises(RemoteProtocolError):
            c.next_event()
    c = SmtpClientConnection()
    c.receive_data(b"220-x\r\n" * 1000)
    with pytest.raises(RemoteProtocolError):
        c.next_event()
    c = SmtpClientConnection()
    c.receive_data(b"220\r\n")
    reply = c.next_event()
    assert reply == Reply(220, [""], "<greeting>")
    assert isinstance(reply, Reply) and reply.status is None


def test_client_starttls_sequencing() -> None:
    c = client_ready()
    c.send(StartTls())
    with pytest.raises(ProtocolUsageError):
        c.start_tls()  # the 220 has not been read
    c.receive_data(b"220 2.0.0 Ready\r\n")
    assert c.next_event() == Reply(220, ["2.0.0 Ready"], "STARTTLS")
    c.start_tls()
    assert c.capabilities is None
    c = client_ready()
    c.send(StartTls())
    c.receive_data(b"220 2.0.0 Ready\r\n250 injected\r\n")
    c.next_event()
    with pytest.raises(RemoteProtocolError):
        c.start_tls()


def test_client_and_server_talk() -> None:
    srv = server()
    cli = SmtpClientConnection()

    def exchange(wire: bytes) -> list[Reply]:
        srv.receive_data(wire)
        while True:
            event = srv.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            answer(srv, event)
        cli.receive_data(srv.data_to_send())
        replies = []
        while (reply := cli.next_event()) is not NEED_DATA:
            assert isinstance(reply, Reply)
            replies.append(reply)
        return replies

    cli.receive_data(srv.greeting())
    assert cli.next_event() == Reply(220, [f"{HOST} ESMTP ready"], "<greeting>")
    exchange(cli.send(Helo("me.example")))
    assert cli.capabilities is not None and cli.capabilities.auth == {"PLAIN", "LOGIN"}
    assert [r.code for r in exchange(cli.send(Auth("PLAIN", "alice", "pw")))] == [235]
    assert srv.authenticated == "alice"
    replies = exchange(cli.pipeline([Mail("s@b.example", size=12), Rcpt("r@here.example"),
                                     DataStart()]))
    assert [(r.code, r.status) for r in replies] == [(250, "2.1.0"), (250, "2.1.5"), (354, None)]
    replies = exchange(cli.send(DataPart(b"hello\n.x")) + cli.send(DataEnd()))
    assert [r.code for r in replies] == [250]
    assert [r.code for r in exchange(cli.send(Quit()))] == [221]
    assert srv.state is CL


def test_the_stuffer_and_the_reader_refuse_misuse() -> None:
    stuffer = smtp.SmtpDotStuffer()
    assert stuffer.feed(b"") == b"" and stuffer.feed(b"\r") == b""
    assert stuffer.end() == b"\r\n.\r\n"
    with pytest.raises(ProtocolUsageError):
        stuffer.feed(b"x")
    with pytest.raises(ProtocolUsageError):
        stuffer.end()
    assert smtp.smtp_dot_stuff(b"") == b".\r\n"
    assert smtp.smtp_dot_stuff(b".a\rb") == b"..a\r\nb\r\n.\r\n"
    reader = smtp.SmtpDataReader(1000, 1000)
    lines = LineBuffer(1000)
    lines.feed(b".\r\nNOOP\r\n")
    assert reader.consume(lines) and reader.consume(lines)
    assert reader.result() == b"" and lines.buffered == 6


def test_client_odds_and_ends() -> None:
    c = client_ready(["BAD_KEYWORD", "8BITMIME"])
    assert c.capabilities is not None
    assert [k for k, _ in c.capabilities.keywords] == ["8BITMIME"]
    with pytest.raises(ProtocolUsageError):
        c.send(Rcpt("a@b.example>x"))
    with pytest.raises(ProtocolUsageError):
        c.send(smtp.DataComplete(b"x"))  # type: ignore[arg-type]
    assert Reply(250, ["a", "b"]).text == "a\nb"


def test_passwords_stay_out_of_event_reprs() -> None:
    assert "pw" not in repr(Auth("PLAIN", "alice", "pw"))
    assert "secret" not in repr(AuthResponse(b"secret"))


def test_client_sends_a_message_from_an_iterator_of_chunks() -> None:
    c = client_ready()
    c.send(DataStart())
    c.receive_data(b"354 go\r\n")
    c.next_event()
    taken: list[bytes] = []

    def chunks() -> Iterable[bytes]:
        for piece in (b"Subject: x\r\n\r\n.", b"a\n", b"\r", b"\n.\r\n"):
            taken.append(piece)
            yield piece

    pieces = c.send_message(chunks())
    assert next(pieces) == b"Subject: x\r\n\r\n.." and len(taken) == 1  # lazily
    assert b"".join(pieces) == b"a\r\n\r\n..\r\n.\r\n"
    with pytest.raises(ProtocolUsageError):
        c.send(DataPart(b"late"))


@pytest.mark.parametrize(("pieces", "expected"), [
    # Plain pieces pass as they are (issue 15 item 4) ...
    ([b"a\r\n", b"b\r\nc", b"\r\n.\r\n"], b"a\r\nb\r\nc\r\n"),
    ([b"a\r\n.", b".b\r\n.\r\n"], b"a\r\n.b\r\n"),
    # ... but a bare LF first in a read, or a bare CR in a plain one, still
    # refuses the message.
    ([b"a\r\n", b"\nb\r\n", b".\r\n"], None),
    ([b"a\rb\r\n", b"c\r\n", b".\r\n"], None),
    ([b"ok\r\n", b"a\rb\r\n", b".\r\n"], None),
])
def test_the_smtp_reader_in_pieces(pieces: list[bytes], expected: bytes | None) -> None:
    reader = smtp.SmtpDataReader(1000, 1000)
    lines = LineBuffer(1000)
    for piece in pieces:
        lines.feed(piece)
        reader.consume(lines)
    assert reader.done
    if expected is None:
        assert reader.bare_line_end and reader.failed
    else:
        assert reader.result() == expected
