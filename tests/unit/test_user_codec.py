"""The user port codec (wire contract section 3, Table 5, POP3)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smdp.protocol.user import (
    CLOSED,
    END_OF_BLOCK,
    FAILED_PASS,
    MAX_PASSWORD_OCTETS,
    NEED_DATA,
    TRANSITIONS,
    VERBS,
    Capa,
    DataCmd,
    Dele,
    Envs,
    EnvShow,
    GroupStatus,
    Ident,
    ListAdd,
    ListCmd,
    ListDel,
    Lists,
    MailCmd,
    Message,
    MessageComplete,
    MessageFailed,
    NewPass,
    Noop,
    Pass,
    Passwd,
    ProtocolUsageError,
    Quit,
    RcptCmd,
    RemoteProtocolError,
    Retr,
    Rset,
    Sent,
    Stat,
    Stls,
    Top,
    Uidl,
    Unsub,
    User,
    UserClientConnection,
    UserCommand,
    UserDecision,
    UserEvent,
    UserReply,
    UserServerConnection,
    UserState,
    answers_multiline,
    page_continuation,
    password_problem,
    sent_continuation,
)
from smdp.store.sqlscript import split_statements
from smdp.terms import Decision

HOST = "smdp.here.example"
MAX_SIZE = 1000
RETR_BODY = b"Subject: x\r\n\r\n.body\r\n"
LISTING = ["1 120", ".dotted"]

Event = UserEvent | object


def server(**overrides: int) -> UserServerConnection:
    kwargs = {"max_message_size": MAX_SIZE, "max_recipients": 3} | overrides
    return UserServerConnection(HOST, **kwargs)


def step(conn: UserServerConnection, data: bytes | str) -> tuple[Event, bytes]:
    raw = (data + "\r\n").encode() if isinstance(data, str) else data
    conn.receive_data(raw)
    event = conn.next_event()
    return event, conn.data_to_send()


def answer(conn: UserServerConnection, event: Event) -> None:
    """An application that says yes to everything."""
    match event:
        case MessageFailed():
            pass
        case Retr() | Top():
            conn.ok_block("message follows", RETR_BODY)
        case _ if answers_multiline(event):  # type: ignore[arg-type]
            conn.ok("listing follows", LISTING)
        case _:
            conn.ok("done")


def run(conn: UserServerConnection, chunks: Iterable[bytes]) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    out = bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            events.append(event)
            answer(conn, event)
        out += conn.data_to_send()
    return events, bytes(out)


LOGIN = ["USER alice", "PASS secret"]
SETUP: dict[UserState, list[str]] = {
    UserState.AUTHORIZATION: [],
    UserState.AUTH_PASS: ["USER alice"],
    UserState.TRANSACTION: LOGIN,
    UserState.NEW_PASS: [*LOGIN, "PASSWD secret"],
    UserState.COMPOSE: [*LOGIN, "MAIL"],
    UserState.COMPOSE_RCPT: [*LOGIN, "MAIL", "RCPT TO:<bob@b.example>"],
    UserState.COMPOSE_DATA: [*LOGIN, "MAIL", "RCPT TO:<bob@b.example>", "DATA"],
    UserState.CLOSED: ["QUIT"],
}


def at_state(state: UserState, **overrides: int) -> UserServerConnection:
    conn = server(**overrides)
    for line in SETUP[state]:
        event, out = step(conn, line)
        assert out == b"", out
        answer(conn, event)
        conn.data_to_send()
    assert conn.state is state
    return conn


SAMPLES: dict[str, tuple[str, UserEvent]] = {
    "USER": ("USER bob", User("bob")),
    "PASS": ("PASS two words ", Pass("two words ")),
    "CAPA": ("capa", Capa()),
    "STAT": ("STAT", Stat()),
    "LIST": ("LIST", ListCmd(None)),
    "UIDL": ("UIDL 2", Uidl(2)),
    "RETR": ("RETR 1", Retr(1)),
    "DELE": ("DEL 3", Dele(3)),
    "TOP": ("TOP 1 0", Top(1, 0)),
    "NOOP": ("NOOP", Noop()),
    "RSET": ("RSET", Rset()),
    "QUIT": ("QUIT", Quit()),
    "ENVS": ("ENVS all", Envs(all=True)),
    "ENV": ("ENV 7", EnvShow(7)),
    "UNSUB": ("unsub 7", Unsub(7)),
    "GROUP": ("group <team@a.example>", GroupStatus("team@a.example")),
    "ACCEPT": ("ACCEPT 7", UserDecision(Decision.ACCEPT, 7)),
    "ACCEPT&AUTH": ("accept&auth 7", UserDecision(Decision.ACCEPT_AUTH, 7)),
    "REJECT": ("REJECT 7", UserDecision(Decision.REJECT, 7)),
    "REJECT&SPAM": ("REJECT&SPAM 7", UserDecision(Decision.REJECT_SPAM, 7)),
    "REJECT&SPAMMER": ("REJECT&SPAMMER 7", UserDecision(Decision.REJECT_SPAMMER, 7)),
    "MAIL": ("MAIL FROM:<alice@Here.example>", MailCmd("alice@here.example")),
    "RCPT": ("RCPT TO:<carol@c.example>", RcptCmd("carol@c.example")),
    "DATA": ("DATA", DataCmd()),
    "SENT": ("SENT", Sent(None)),
    "LISTS": ("LISTS", Lists()),
    "LISTADD": (
        "LISTADD in-white <x@b.example> MX.b.example",
        ListAdd("in-white", "x@b.example", "mx.b.example"),
    ),
    "LISTDEL": ("LISTDEL out-black x@b.example", ListDel("out-black", "x@b.example", None)),
    "IDENT": ("IDENT", Ident()),
    "STLS": ("stls", Stls()),
    "PASSWD": ("passwd  old secret ", Passwd("old secret ")),
    "NEWPASS": ("NEWPASS n\u00e9w one", NewPass("n\u00e9w one")),
}

COMMAND_STATES = [s for s in UserState if s not in (UserState.COMPOSE_DATA, UserState.CLOSED)]


def test_samples_cover_every_verb() -> None:
    assert set(SAMPLES) == VERBS


def test_greeting() -> None:
    assert server().greeting() == b"+OK smdp.here.example SMDP user port ready\r\n"


@pytest.mark.parametrize("state", COMMAND_STATES, ids=lambda s: s.value)
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_command_in_every_state(state: UserState, verb: str) -> None:
    conn = at_state(state)
    line, expected = SAMPLES[verb]
    event, out = step(conn, line)
    if verb in TRANSITIONS.get(state, {}):
        assert event == expected
        assert out == b""
        assert conn.reply_owed == expected
        answer(conn, event)
        assert conn.state is TRANSITIONS[state][verb]
        assert conn.data_to_send().startswith(b"+OK ")
    else:
        assert event is NEED_DATA
        assert out.startswith(b"-ERR "), out
        assert out.count(b"\r\n") == 1 and out.endswith(b"\r\n")
        assert conn.state is state


@pytest.mark.parametrize(
    ("state", "verb"),
    [(s, verb) for s, row in TRANSITIONS.items() for verb in row if verb != END_OF_BLOCK],
    ids=lambda v: v.value if isinstance(v, UserState) else v,
)
def test_err_leaves_the_state_except_for_pass(state: UserState, verb: str) -> None:
    conn = at_state(state)
    event, _ = step(conn, SAMPLES[verb][0])
    assert event == SAMPLES[verb][1]
    conn.err("no")
    assert conn.data_to_send() == b"-ERR no\r\n"
    assert conn.state is FAILED_PASS.get(state, {}).get(verb, state)


def test_failed_password_needs_user_again() -> None:
    conn = at_state(UserState.AUTH_PASS)
    step(conn, "PASS wrong")
    conn.err("authentication failed")
    assert conn.data_to_send() == b"-ERR authentication failed\r\n"
    assert conn.state is UserState.AUTHORIZATION
    assert step(conn, "PASS wrong") == (NEED_DATA, b"-ERR send USER first\r\n")


def test_failed_newpass_needs_passwd_again() -> None:
    conn = at_state(UserState.NEW_PASS)
    step(conn, "NEWPASS fresh")
    conn.err("internal error; nothing was changed, try again")
    assert conn.state is UserState.TRANSACTION
    conn.data_to_send()
    assert step(conn, "NEWPASS fresh") == (
        NEED_DATA, b"-ERR send PASSWD with your current password first\r\n")


# The longest password the rule allows, in 2-octet characters plus one octet.
LONGEST = "\u00e9" * ((MAX_PASSWORD_OCTETS - 1) // 2) + "x" * ((MAX_PASSWORD_OCTETS - 1) % 2 + 1)


@pytest.mark.parametrize(("state", "verb", "event"), [
    (UserState.AUTH_PASS, "PASS", Pass(LONGEST)),
    (UserState.AUTH_PASS, "PWD", Pass(LONGEST, "PWD")),
    (UserState.TRANSACTION, "PASSWD", Passwd(LONGEST)),
    (UserState.NEW_PASS, "NEWPASS", NewPass(LONGEST)),
])
def test_the_longest_password_fits_every_command(state: UserState, verb: str,
                                                 event: UserEvent) -> None:
    assert len(LONGEST.encode()) == MAX_PASSWORD_OCTETS and password_problem(LONGEST) is None
    assert password_problem(LONGEST + "x") is not None
    line = UserClientConnection().send(event)  # type: ignore[arg-type]
    assert len(line) <= 512
    assert step(at_state(state), line) == (event, b"")


@given(st.text(max_size=600))
def test_the_password_rule_is_what_the_wire_carries(password: str) -> None:
    """protocol.md 12.3: a password the rule accepts reaches the server
    unchanged in each command that carries one; the client refuses any other."""
    commands: list[tuple[UserState, UserEvent]] = [
        (UserState.AUTH_PASS, Pass(password)), (UserState.AUTH_PASS, Pass(password, "PWD")),
        (UserState.TRANSACTION, Passwd(password)), (UserState.NEW_PASS, NewPass(password))]
    for state, command in commands:
        if password_problem(password) is not None:
            with pytest.raises(ProtocolUsageError):
                UserClientConnection().send(command)  # type: ignore[arg-type]
            continue
        line = UserClientConnection().send(command)  # type: ignore[arg-type]
        assert step(at_state(state), line) == (command, b"")


@given(st.text(max_size=600))
def test_the_server_reads_only_passwords_the_rule_allows(password: str) -> None:
    line = b"PASS " + password.encode("utf-8", "surrogatepass") + b"\r\n"
    event, _ = step(at_state(UserState.AUTH_PASS), line)
    if isinstance(event, Pass):
        assert password_problem(event.password) is None


def test_aliases() -> None:
    conn = at_state(UserState.AUTH_PASS)
    assert step(conn, "pwd s3cret")[0] == Pass("s3cret", "PWD")
    conn.ok("alice has 0 envelopes awaiting a decision and 0 messages (0 octets)")
    assert step(conn, "del 2")[0] == Dele(2)


def test_pwd_answers_multi_line_and_pass_single_line() -> None:
    conn = at_state(UserState.AUTH_PASS)
    step(conn, "PWD s3cret")
    conn.ok(
        "alice has 1 envelopes awaiting a decision and 1 messages (120 octets)",
        ["envelope 4 bob@b.example Lunch?", "message 1 120 .Re: lunch"],
    )
    assert conn.data_to_send() == (
        b"+OK alice has 1 envelopes awaiting a decision and 1 messages (120 octets)\r\n"
        b"envelope 4 bob@b.example Lunch?\r\n"
        b"message 1 120 .Re: lunch\r\n"
        b".\r\n"
    )
    conn = at_state(UserState.AUTH_PASS)
    step(conn, "PASS s3cret")
    with pytest.raises(ProtocolUsageError, match="is answered on one line"):
        conn.ok("x", ["a"])
    conn.ok("alice has 0 envelopes awaiting a decision and 0 messages (0 octets)")
    assert conn.data_to_send().count(b"\r\n") == 1


def test_multi_line_without_lines_sends_an_empty_block() -> None:
    conn = at_state(UserState.TRANSACTION)
    step(conn, "LIST")
    conn.ok("0 messages")
    assert conn.data_to_send() == b"+OK 0 messages\r\n.\r\n"
    step(conn, "LIST 1")
    conn.ok("1 120")
    assert conn.data_to_send() == b"+OK 1 120\r\n"


def test_err_to_a_multi_line_command_is_one_line() -> None:
    conn = at_state(UserState.TRANSACTION)
    step(conn, "RETR 9")
    conn.err("no such message")
    assert conn.data_to_send() == b"-ERR no such message\r\n"


def test_retr_block_is_dot_stuffed() -> None:
    conn = at_state(UserState.TRANSACTION)
    step(conn, "RETR 1")
    conn.ok_block("23 octets", b".hidden\n..two")
    assert conn.data_to_send() == b"+OK 23 octets\r\n..hidden\r\n...two\r\n.\r\n"


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("PASS  spaced  ", Pass("spaced  ")),
        ("PASS p\u00e4ss w\u00f6rd", Pass("p\u00e4ss w\u00f6rd")),
        ("USER  alice ", User("alice")),
        ("USER alice@here.example", User("alice@here.example")),
    ],
)
def test_credentials(line: str, command: UserEvent) -> None:
    conn = at_state(UserState.AUTH_PASS)
    assert step(conn, line)[0] == command


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("LIST 0012", ListCmd(12)),
        ("UIDL", Uidl(None)),
        ("TOP 2 10", Top(2, 10)),
        ("ENVS", Envs(False)),
        ("MAIL", MailCmd(None)),
        ("MAIL from: <alice@here.example>", MailCmd("alice@here.example")),
        ("SENT <a1.b2@here.example>", Sent("<a1.b2@here.example>")),
        ("SENT BEFORE m1", Sent(before="m1")),  # the next page (12.6)
        ("sent before m1", Sent(before="m1")),
        ("SENT BEFORE", Sent("BEFORE")),  # one argument: a message id
        ("LISTADD IN-BLACK x@b.example", ListAdd("in-black", "x@b.example", None)),
        (
            "LISTDEL in-white x@b.example mx.b.example",
            ListDel("in-white", "x@b.example", "mx.b.example"),
        ),
        ("RETR 9999999999", Retr(9999999999)),
    ],
)
def test_argument_forms(line: str, command: UserEvent) -> None:
    conn = at_state(UserState.TRANSACTION)
    assert step(conn, line)[0] == command


TRANSACTION_ERRORS = [
    ("FOO", "-ERR unknown command"),
    ("", "-ERR unknown command"),
    ("APOP alice 1234", "-ERR unknown command"),
    ("STLS", "-ERR STLS is allowed only before login"),
    ("l\u0131st", "-ERR unknown command"),
    (" LIST", "-ERR unknown command"),
    ("RETR", "-ERR syntax: RETR <n>"),
    ("RETR 1 2", "-ERR syntax: RETR <n>"),
    ("RETR 0", "-ERR message number must be a positive decimal integer"),
    ("RETR -1", "-ERR message number must be a positive decimal integer"),
    ("RETR +1", "-ERR message number must be a positive decimal integer"),
    ("RETR 1.5", "-ERR message number must be a positive decimal integer"),
    ("RETR \u00b2", "-ERR message number must be a positive decimal integer"),
    ("RETR \u0661", "-ERR message number must be a positive decimal integer"),
    ("RETR 12345678901", "-ERR message number must be a positive decimal integer"),
    ("DELE x", "-ERR message number must be a positive decimal integer"),
    ("DEL", "-ERR syntax: DEL <n>"),
    ("TOP 1", "-ERR syntax: TOP <n> <lines>"),
    ("TOP 0 1", "-ERR message number must be a positive decimal integer"),
    ("TOP 1 -1", "-ERR line count must be a non-negative decimal integer"),
    ("LIST 0", "-ERR message number must be a positive decimal integer"),
    ("LIST 1 2", "-ERR syntax: LIST [<n>]"),
    ("UIDL a", "-ERR message number must be a positive decimal integer"),
    ("STAT x", "-ERR STAT takes no argument"),
    ("QUIT now", "-ERR QUIT takes no argument"),
    ("ENVS SOME", "-ERR syntax: ENVS [ALL]"),
    ("ENVS ALL ALL", "-ERR syntax: ENVS [ALL]"),
    ("ENV", "-ERR syntax: ENV <n>"),
    ("ENV 0", "-ERR envelope id must be a positive decimal integer"),
    ("ACCEPT", "-ERR syntax: ACCEPT <envelope id>"),
    ("ACCEPT abc", "-ERR envelope id must be a positive decimal integer"),
    ("REJECT&SPAM 1 2", "-ERR syntax: REJECT&SPAM <envelope id>"),
    ("ACCEPT&", "-ERR unknown command"),
    ("MAIL FROM:alice@here.example", "-ERR syntax: MAIL [FROM:<identity>]"),
    ("MAIL TO:<alice@here.example>", "-ERR syntax: MAIL [FROM:<identity>]"),
    ("MAIL FROM:<alice>", "-ERR bad address <alice>"),
    ('MAIL FROM:<"a b"@here.example>', "-ERR syntax"),
    ("MAIL FROM:<\u00e4@here.example>", "-ERR bad address"),
    ("SENT a b", "-ERR syntax: SENT [<msgid>] or SENT BEFORE <msgid>"),
    ("SENT \u00e9", "-ERR syntax: SENT [<msgid>] or SENT BEFORE <msgid>"),
    ("SENT BEFORE a b", "-ERR syntax: SENT [<msgid>] or SENT BEFORE <msgid>"),
    ("SENT AFTER a", "-ERR syntax: SENT [<msgid>] or SENT BEFORE <msgid>"),
    ("SENT a\x01b", "-ERR control characters are not allowed"),
    ("SENT a\tb", "-ERR control characters are not allowed"),
    ("LISTS now", "-ERR LISTS takes no argument"),
    ("LISTADD", "-ERR syntax: LISTADD <list> <address> [<server>]"),
    ("LISTADD in-white a@b.example mx.b.example more", "-ERR syntax"),
    ("LISTADD gray a@b.example", "-ERR list must be one of"),
    ("LISTADD in-white nobody", "-ERR bad address nobody"),
    ("LISTADD out-white a@b.example mx.b.example", "-ERR outbound lists hold addresses only"),
    ("LISTDEL in-black a@b.example mx_b", "-ERR bad server name mx_b"),
    ("USER bob", "-ERR already logged in"),
    ("PASS x", "-ERR already logged in"),
    ("PWD x", "-ERR already logged in"),
    ("RCPT TO:<a@b.example>", "-ERR send MAIL first"),
    ("DATA", "-ERR send MAIL first"),
    ("NEWPASS x", "-ERR send PASSWD with your current password first"),
    ("PASSWD", "-ERR syntax: PASSWD <current password>"),
    ("PASSWD  ", "-ERR syntax: PASSWD <current password>"),
    ("PASSWD a\tb", "-ERR control characters are not allowed"),
    ("PASSWD " + "p" * 501, "-ERR the password is longer than 500 octets (UTF-8)"),
]


@pytest.mark.parametrize(("line", "reply"), TRANSACTION_ERRORS)
def test_errors_in_transaction(line: str, reply: str) -> None:
    conn = at_state(UserState.TRANSACTION)
    event, out = step(conn, line)
    assert event is NEED_DATA
    assert out.startswith(reply.encode()), out
    assert out.count(b"\r\n") == 1
    assert conn.state is UserState.TRANSACTION
    assert step(conn, "NOOP")[0] == Noop()


@pytest.mark.parametrize(
    ("state", "line", "reply"),
    [
        (UserState.AUTHORIZATION, "PASS secret", "-ERR send USER first"),
        (UserState.AUTHORIZATION, "PWD secret", "-ERR send USER first"),
        (UserState.AUTHORIZATION, "STAT", "-ERR log in first"),
        (UserState.AUTHORIZATION, "MAIL", "-ERR log in first"),
        (UserState.AUTHORIZATION, "USER", "-ERR syntax: USER <name>"),
        (UserState.AUTHORIZATION, "USER a b", "-ERR syntax: USER <name>"),
        (UserState.AUTHORIZATION, "USER " + "a" * 256, "-ERR syntax: USER <name>"),
        (UserState.AUTH_PASS, "PASS", "-ERR syntax: PASS <password>"),
        (UserState.AUTH_PASS, "PWD   ", "-ERR syntax: PWD <password>"),
        (UserState.AUTH_PASS, "PASS a\x00b", "-ERR control characters are not allowed"),
        (UserState.AUTH_PASS, "RETR 1", "-ERR log in first"),
        (UserState.COMPOSE, "DATA", "-ERR no recipient yet; send RCPT TO first"),
        (UserState.COMPOSE, "STAT", "-ERR finish the message with DATA or abandon it with RSET"),
        (UserState.COMPOSE, "MAIL", "-ERR finish the message"),
        (UserState.COMPOSE, "RCPT", "-ERR syntax: RCPT TO:<address>"),
        (UserState.COMPOSE, "RCPT TO:<bob>", "-ERR bad address <bob>"),
        (UserState.COMPOSE, "RCPT TO:<a@b.example> X", "-ERR syntax: RCPT TO:<address>"),
        (UserState.COMPOSE_RCPT, "DATA now", "-ERR DATA takes no argument"),
        (UserState.COMPOSE_RCPT, "ACCEPT 1", "-ERR finish the message"),
        (UserState.COMPOSE, "PASSWD x", "-ERR finish the message"),
        (UserState.AUTHORIZATION, "PASSWD x", "-ERR log in first"),
        (UserState.AUTH_PASS, "NEWPASS x", "-ERR log in first"),
        (UserState.AUTH_PASS, "PASS " + "\u00e9" * 251,
         "-ERR the password is longer than 500 octets (UTF-8)"),
        (UserState.NEW_PASS, "NEWPASS", "-ERR syntax: NEWPASS <new password>"),
        (UserState.NEW_PASS, "NEWPASS  ", "-ERR syntax: NEWPASS <new password>"),
        (UserState.NEW_PASS, "NEWPASS a\x7fb", "-ERR control characters are not allowed"),
        (UserState.NEW_PASS, "STAT",
         "-ERR send NEWPASS with the new password, or RSET to keep the current one"),
        (UserState.NEW_PASS, "PASSWD x", "-ERR send NEWPASS with the new password"),
        (UserState.NEW_PASS, "MAIL", "-ERR send NEWPASS with the new password"),
    ],
)
def test_errors_in_other_states(state: UserState, line: str, reply: str) -> None:
    conn = at_state(state)
    event, out = step(conn, line)
    assert event is NEED_DATA
    assert out.startswith(reply.encode()), out
    assert conn.state is state


def test_non_utf8_arguments() -> None:
    conn = at_state(UserState.AUTHORIZATION)
    assert step(conn, b"USER \xff\xfe\r\n") == (NEED_DATA, b"-ERR arguments must be UTF-8\r\n")
    assert step(conn, b"\xffUSER a\r\n") == (NEED_DATA, b"-ERR unknown command\r\n")


def test_too_many_recipients() -> None:
    conn = at_state(UserState.COMPOSE, max_recipients=2)
    step(conn, "RCPT TO:<a@b.example>")
    conn.err("refused by your black list")
    for name in ("b", "c"):
        answer(conn, step(conn, f"RCPT TO:<{name}@b.example>")[0])
    conn.data_to_send()
    assert step(conn, "RCPT TO:<d@b.example>") == (NEED_DATA, b"-ERR too many recipients\r\n")
    answer(conn, step(conn, "RSET")[0])
    assert conn.state is UserState.TRANSACTION
    answer(conn, step(conn, "MAIL")[0])
    assert step(conn, "RCPT TO:<d@b.example>")[0] == RcptCmd("d@b.example")


def test_over_long_command_line() -> None:
    conn = at_state(UserState.TRANSACTION)
    assert step(conn, "SENT " + "a" * 505)[1].startswith(b"-ERR syntax")  # 510 + CRLF: parsed
    assert step(conn, "SENT " + "a" * 506) == (NEED_DATA, b"-ERR line too long\r\n")
    assert step(conn, "NOOP " + "a" * 50_000) == (NEED_DATA, b"-ERR line too long\r\n")
    assert step(conn, "NOOP") == (Noop(), b"")


def test_message_block() -> None:
    conn = at_state(UserState.COMPOSE_DATA)
    event, out = step(conn, b"Subject: hi\r\n\r\n..x\nQUIT\r\n.\r\n")
    assert event == MessageComplete(b"Subject: hi\r\n\r\n.x\r\nQUIT\r\n")
    assert out == b""
    assert conn.state is UserState.TRANSACTION
    conn.ok("queued as m1 (1 recipients; 0 refused by your black list)")
    assert (
        conn.data_to_send() == b"+OK queued as m1 (1 recipients; 0 refused by your black list)\r\n"
    )
    # The recipients went with the message: composing starts afresh.
    assert step(conn, "DATA")[1] == b"-ERR send MAIL first\r\n"


def test_message_too_big() -> None:
    conn = at_state(UserState.COMPOSE_DATA)
    events, out = run(conn, [b"x" * 98 + b"\r\n"] * 11 + [b".\r\nNOOP\r\n"])
    assert events == [MessageFailed("too big"), Noop()]
    assert out == b"-ERR message exceeds fixed maximum of 1000 octets\r\n+OK done\r\n"
    assert conn.state is UserState.TRANSACTION


def test_message_line_too_long() -> None:
    conn = at_state(UserState.COMPOSE_DATA, max_line_length=100)
    events, out = run(conn, [b"a\r\n", b"b" * 99 + b"\r\n", b".\r\n"])
    assert events == [MessageFailed("line too long")]
    assert out == b"-ERR line too long; message refused\r\n"
    assert conn.state is UserState.TRANSACTION


def test_closed_after_quit() -> None:
    conn = at_state(UserState.TRANSACTION)
    step(conn, b"QUIT\r\nNOOP\r\n")
    conn.ok("bye")
    assert conn.data_to_send() == b"+OK bye\r\n"
    assert conn.next_event() is CLOSED
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is CLOSED
    assert conn.data_to_send() == b""


def test_eof() -> None:
    conn = at_state(UserState.COMPOSE_DATA)
    conn.receive_data(b"partial")
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED
    with pytest.raises(ProtocolUsageError, match="no event is waiting for an answer"):
        at_state(UserState.AUTHORIZATION).ok("nothing owed")


# -- usage errors ----------------------------------------------------------------


def test_usage_errors() -> None:
    conn = at_state(UserState.TRANSACTION)
    conn.receive_data(b"STAT\r\nNOOP\r\n")
    assert conn.next_event() == Stat()
    with pytest.raises(ProtocolUsageError, match="answer owed to Stat"):
        conn.next_event()
    with pytest.raises(ProtocolUsageError, match="is answered on one line"):
        conn.ok("1 2", ["not multi-line"])
    with pytest.raises(ProtocolUsageError, match="is answered on one line"):
        conn.ok_block("x", b"not multi-line")
    with pytest.raises(ProtocolUsageError, match="answer text must not hold CR, LF or NUL"):
        conn.ok("two\r\nlines")
    with pytest.raises(ProtocolUsageError, match="answer text must not hold CR, LF or NUL"):
        conn.err("two\nlines")
    conn.ok("1 120")
    assert conn.next_event() == Noop()
    conn.ok("")
    assert conn.data_to_send() == b"+OK 1 120\r\n+OK\r\n"
    step(conn, "LIST")
    with pytest.raises(ProtocolUsageError, match="answer text must not hold CR, LF or NUL"):
        conn.ok("x", ["bad\rline"])
    with pytest.raises(ProtocolUsageError, match="answer text must not hold CR, LF or NUL"):
        conn.ok_block("a\nb", b"")


# -- whole sessions -----------------------------------------------------------------

SESSION = (
    b"CAPA\r\n"
    b"USER alice\r\n"
    b"PWD secret\r\n"
    b"STAT\r\n"
    b"LIST\r\n"
    b"RETR 1\r\n"
    b"TOP 1 0\r\n"
    b"ENVS\r\n"
    b"ENV 4\r\n"
    b"ACCEPT&AUTH 4\r\n"
    b"MAIL\r\n"
    b"RCPT TO:<bob@b.example>\r\n"
    b"DATA\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"..dot\r\n"
    b".\r\n"
    b"SENT\r\n"
    b"LISTADD in-black spam@c.example mx.c.example\r\n"
    b"DELE 1\r\n"
    b"QUIT\r\n"
)
SESSION_EVENTS: list[Event] = [
    Capa(),
    User("alice"),
    Pass("secret", "PWD"),
    Stat(),
    ListCmd(None),
    Retr(1),
    Top(1, 0),
    Envs(False),
    EnvShow(4),
    UserDecision(Decision.ACCEPT_AUTH, 4),
    MailCmd(None),
    RcptCmd("bob@b.example"),
    DataCmd(),
    MessageComplete(b"Subject: hi\r\n\r\n.dot\r\n"),
    Sent(None),
    ListAdd("in-black", "spam@c.example", "mx.c.example"),
    Dele(1),
    Quit(),
]


def test_whole_session() -> None:
    conn = server()
    events, out = run(conn, [SESSION])
    assert events == SESSION_EVENTS
    assert conn.state is UserState.CLOSED
    assert out.startswith(b"+OK listing follows\r\n1 120\r\n..dotted\r\n.\r\n+OK done\r\n")


def test_whole_session_one_byte_at_a_time() -> None:
    reference = run(server(), [SESSION])
    events, out = run(server(), [SESSION[i : i + 1] for i in range(len(SESSION))])
    assert (events, out) == reference


def test_whole_session_with_bare_lf() -> None:
    events, _ = run(server(), [SESSION.replace(b"\r\n", b"\n")])
    assert events == SESSION_EVENTS


# -- client side ----------------------------------------------------------------------

CLIENT_WIRE: list[tuple[UserCommand | Message, bytes]] = [
    (User("alice"), b"USER alice\r\n"),
    (Pass("a secret"), b"PASS a secret\r\n"),
    (Pass("x", "PWD"), b"PWD x\r\n"),
    (Capa(), b"CAPA\r\n"),
    (Stat(), b"STAT\r\n"),
    (ListCmd(), b"LIST\r\n"),
    (ListCmd(2), b"LIST 2\r\n"),
    (Uidl(), b"UIDL\r\n"),
    (Uidl(3), b"UIDL 3\r\n"),
    (Retr(1), b"RETR 1\r\n"),
    (Dele(1), b"DELE 1\r\n"),
    (Top(1, 5), b"TOP 1 5\r\n"),
    (Noop(), b"NOOP\r\n"),
    (Rset(), b"RSET\r\n"),
    (Quit(), b"QUIT\r\n"),
    (Envs(), b"ENVS\r\n"),
    (Envs(all=True), b"ENVS ALL\r\n"),
    (EnvShow(4), b"ENV 4\r\n"),
    (UserDecision(Decision.REJECT_SPAMMER, 4), b"REJECT&SPAMMER 4\r\n"),
    (MailCmd(), b"MAIL\r\n"),
    (MailCmd("a@b.example"), b"MAIL FROM:<a@b.example>\r\n"),
    (RcptCmd("c@d.example"), b"RCPT TO:<c@d.example>\r\n"),
    (DataCmd(), b"DATA\r\n"),
    (Message(b".x\ny"), b"..x\r\ny\r\n.\r\n"),
    (Sent(), b"SENT\r\n"),
    (Sent("m1"), b"SENT m1\r\n"),
    (Sent(before="m1"), b"SENT BEFORE m1\r\n"),
    (Lists(), b"LISTS\r\n"),
    (
        ListAdd("in-white", "a@b.example", "mx.b.example"),
        b"LISTADD in-white a@b.example mx.b.example\r\n",
    ),
    (ListDel("out-black", "a@b.example"), b"LISTDEL out-black a@b.example\r\n"),
    (Ident(), b"IDENT\r\n"),
    (Stls(), b"STLS\r\n"),
    (Passwd("old one"), b"PASSWD old one\r\n"),
    (NewPass("n\u00e9w "), "NEWPASS n\u00e9w \r\n".encode()),
]


def test_client_serialises_every_command() -> None:
    client = UserClientConnection()
    for command, wire in CLIENT_WIRE:
        assert client.send(command) == wire


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (User("two words"), "bad name 'two words'"),
        (User(""), "bad name ''"),
        (Pass(""), "the password is empty"),
        (Pass(" leading"), "the password starts with a space"),
        (Pass("a\r\nQUIT"), "the password holds a control character"),
        (Passwd("\tx"), "the password holds a control character"),
        (NewPass(""), "the password is empty"),
        (NewPass(" x"), "the password starts with a space"),
        (NewPass("\udc80"), "the password is not valid Unicode text"),
        (NewPass("x" * 501), "the password is longer than 500 octets (UTF-8)"),
        (Pass("x", "APOP"), "password verb is PASS or PWD, not 'APOP'"),
        (ListCmd(0), "not a positive number in range: 0"),
        (Retr(-1), "not a positive number in range: -1"),
        (Top(1, -1), "TOP line count must not be negative"),
        (EnvShow(0), "not a positive number in range: 0"),
        (MailCmd("nobody"), "bad address 'nobody'"),
        (RcptCmd("a@b.example>\r\nDATA"), "bad address 'a@b.example>\\r\\nDATA'"),
        (Sent("two words"), "bad message id 'two words'"),
        (Sent(before="two words"), "bad message id 'two words'"),
        (Sent("m1", "m2"), "SENT takes a message id or BEFORE one, not both"),
        (ListAdd("gray", "a@b.example"), "unknown list 'gray'"),
        (ListAdd("in-white", "a@b.example", "bad server"), "bad server name 'bad server'"),
    ],
)
def test_client_refuses_malformed_commands(command: UserCommand, error: str) -> None:
    with pytest.raises(ProtocolUsageError, match=re.escape(error)):
        UserClientConnection().send(command)


@pytest.mark.parametrize(
    ("text", "more"),
    [
        ("250 recipient status line(s); more: SENT BEFORE m7", "m7"),
        ("3 recipient status line(s)", None),
        ("0 recipient status line(s)", None),
    ],
)
def test_a_sent_answer_names_its_next_page(text: str, more: str | None) -> None:
    assert sent_continuation(text) == more


def test_client_refuses_non_commands() -> None:
    with pytest.raises(ProtocolUsageError, match="not a user command: MessageComplete"):
        UserClientConnection().send(MessageComplete(b"x"))  # type: ignore[arg-type]


def test_client_reads_each_kind_of_answer() -> None:
    client = UserClientConnection()
    commands: list[UserCommand] = [Pass("x", "PWD"), ListCmd(1), Retr(1), Envs(), Stat(), Top(1, 0)]
    for command in commands:
        client.send(command)
    wire = (
        b"+OK ready\r\n"
        b"+OK alice has 0 envelopes\r\nmessage 1 10 Hi\r\n.\r\n"
        b"+OK 1 10\r\n"
        b"+OK 10 octets\r\n..a\r\nb\n.\r\n"
        b"-ERR not now\r\n"
        b"-ERR no\r\n"
        b"+OK\r\n.\r\n"
    )
    events: list[object] = []
    for i in range(len(wire)):
        client.receive_data(wire[i : i + 1])
        while (event := client.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [
        UserReply(True, "ready"),
        UserReply(True, "alice has 0 envelopes", lines=["message 1 10 Hi"]),
        UserReply(True, "1 10"),
        UserReply(True, "10 octets", body=b".a\r\nb\r\n"),
        UserReply(False, "not now"),
        UserReply(False, "no"),
        UserReply(True, "", body=b""),
    ]
    client.receive_data(b"")
    assert client.next_event() is CLOSED


def test_client_empty_listing() -> None:
    client = UserClientConnection()
    client.send(Lists())
    client.receive_data(b"+OK hi\r\n+OK no entries\r\n.\r\n")
    assert client.next_event() == UserReply(True, "hi")
    assert client.next_event() == UserReply(True, "no entries", lines=[])


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"OK\r\n", "malformed status line b'OK'"),
        (b"+ok lower\r\n", "malformed status line b'+ok lower'"),
        (b"+OKAY\r\n", "malformed status line b'+OKAY'"),
        (b"-ERRx\r\n", "malformed status line b'-ERRx'"),
        (b"+OK " + b"x" * 2000 + b"\r\n", "status line too long"),
    ],
)
def test_client_malformed_status(wire: bytes, error: str) -> None:
    client = UserClientConnection()
    client.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=re.escape(error)):
        client.next_event()
    with pytest.raises(RemoteProtocolError, match="the connection already failed"):
        client.next_event()


def test_client_block_too_big() -> None:
    client = UserClientConnection(max_message_size=5)
    client.send(Retr(1))
    client.receive_data(b"+OK hi\r\n+OK big\r\n0123456789\r\n.\r\n")
    assert client.next_event() == UserReply(True, "hi")
    with pytest.raises(RemoteProtocolError, match="multi-line answer exceeds a limit"):
        client.next_event()


def test_client_against_server() -> None:
    srv = server()
    client = UserClientConnection()
    client.receive_data(srv.greeting())
    assert client.next_event() == UserReply(True, f"{HOST} SMDP user port ready")
    replies = []
    commands: list[UserCommand] = [User("alice"), Pass("pw", "PWD"), Retr(1), ListCmd(), MailCmd()]
    for command in commands:
        srv.receive_data(client.send(command))
        answer(srv, srv.next_event())
        client.receive_data(srv.data_to_send())
        replies.append(client.next_event())
    assert replies == [
        UserReply(True, "done"),
        UserReply(True, "listing follows", lines=LISTING),
        UserReply(True, "message follows", body=RETR_BODY),
        UserReply(True, "listing follows", lines=LISTING),
        UserReply(True, "done"),
    ]


# -- pages (issue 15 item 6; protocol.md 12.4, 12.5) -------------------------------


@pytest.mark.parametrize(("event", "line"), [
    (Envs(), b"ENVS\r\n"),
    (Envs(True, after=0, limit=1), b"ENVS ALL AFTER 0 LIMIT 1\r\n"),
    (Envs(after=9_999_999_999), b"ENVS AFTER 9999999999\r\n"),
    (Envs(limit=1000), b"ENVS LIMIT 1000\r\n"),
    (ListCmd(after=3, limit=2), b"LIST AFTER 3 LIMIT 2\r\n"),
    (Uidl(limit=7), b"UIDL LIMIT 7\r\n"),
])
def test_a_page_is_asked_for_and_read_back(event: UserEvent, line: bytes) -> None:
    assert UserClientConnection().send(event) == line  # type: ignore[arg-type]
    assert step(at_state(UserState.TRANSACTION), line) == (event, b"")
    assert answers_multiline(event)


@pytest.mark.parametrize("event", [
    Envs(limit=0), Envs(limit=1001), Envs(after=-1), ListCmd(after=10**10), Uidl(limit=0)])
def test_the_client_never_sends_a_page_out_of_range(event: UserEvent) -> None:
    with pytest.raises(ProtocolUsageError):
        UserClientConnection().send(event)  # type: ignore[arg-type]


def test_the_continuation_of_a_page() -> None:
    assert page_continuation("2 envelope(s); more: ENVS ALL AFTER 17 LIMIT 2") == 17
    assert page_continuation("1 messages; more: LIST AFTER 1 LIMIT 1") == 1
    assert page_continuation("unique ids follow; more: UIDL AFTER 0 LIMIT 1000") == 0
    assert page_continuation("2 envelope(s)") is None
    assert page_continuation("2 envelope(s); more: ENVS AFTER x LIMIT 2") is None


def test_migration_scripts_split_at_their_statements() -> None:
    """A trigger's BEGIN ... END (SQLite) and a $$ body (PostgreSQL) hold
    semicolons that do not end the statement; a body left open is an error,
    not a statement silently dropped."""
    script = ("-- a comment; with a semicolon\nCREATE TABLE t (a INTEGER);\n"
              "CREATE TRIGGER t_i AFTER INSERT ON t BEGIN\n  UPDATE t SET a = CASE WHEN a = 1 "
              "THEN 2 ELSE 3 END;\n  DELETE FROM t;\nEND;\n"
              "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
              "  RETURN NULL;\nEND\n$$;\n"
              "CREATE TRIGGER t_u AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f();\n")
    statements = split_statements(script)
    assert [s.split()[:2] for s in statements] == [
        ["CREATE", "TABLE"], ["CREATE", "TRIGGER"], ["CREATE", "FUNCTION"], ["CREATE", "TRIGGER"]]
    assert statements[1].endswith("DELETE FROM t;\nEND") and "RETURN NULL;" in statements[2]
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("CREATE FUNCTION f() AS $$ SELECT 1; ")
