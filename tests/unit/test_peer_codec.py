"""The peer port codec (wire contract section 2, Table 4)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import pytest

from smdp import terms
from smdp.protocol._connection import MAX_REPLY_LINES
from smdp.protocol.peer import (
    CLOSED,
    END_OF_BLOCK,
    NEED_DATA,
    TRANSITIONS,
    VERBS,
    Data,
    DataComplete,
    DataFailed,
    DataStart,
    Decision,
    EnvelopeStart,
    Helo,
    MailStart,
    Noop,
    PeerClientConnection,
    PeerCommand,
    PeerEvent,
    PeerServerConnection,
    PeerState,
    ProtocolUsageError,
    PulledBody,
    Quit,
    Rcpt,
    Received,
    RemoteProtocolError,
    Reply,
    Rset,
    SizeDecl,
    StartTls,
)

ENVID = "abcdefghijklmnopqrstuvwxyz"
OTHER_ENVID = "234567abcdefghijklmnopqrst"
HOST = "mx.here.example"
MAX_SIZE = 1000

Event = PeerEvent | object


def server(**overrides: int) -> PeerServerConnection:
    kwargs = {"max_message_size": MAX_SIZE, "max_recipients": 3} | overrides
    return PeerServerConnection(HOST, **kwargs)


def step(conn: PeerServerConnection, data: bytes | str) -> tuple[Event, bytes]:
    """Feed ``data`` (a str gets CRLF), return the next event and what was sent."""
    raw = (data + "\r\n").encode("latin-1") if isinstance(data, str) else data
    conn.receive_data(raw)
    event = conn.next_event()
    return event, conn.data_to_send()


def answer(conn: PeerServerConnection, event: Event) -> None:
    """A well-behaved application that says yes to everything."""
    match event:
        case DataStart():
            conn.reply(354, "Send data, end with <CRLF>.<CRLF>")
        case Quit():
            conn.reply(221, f"2.0.0 {HOST} closing")
        case Decision() if event.wants_body:
            conn.send_body(150, "5 octets follow", b"hello")
        case StartTls():
            conn.reply(220, "2.0.0 Ready to start TLS")
        case DataFailed():
            pass
        case _:
            conn.reply(250, "2.0.0 OK")


# The first reply line `answer` gives to each sample of SAMPLES (others: 250);
# the AUTHORIZE sample says BODY=HELD, so it wants no body.
ANSWER_CODES = {"DATA": b"354 ", "QUIT": b"221 ", "STARTTLS": b"220 ", "ACCEPT": b"150 "}


def run(
    conn: PeerServerConnection,
    chunks: Iterable[bytes],
    respond: Callable[[PeerServerConnection, Event], None] = answer,
) -> tuple[list[Event], bytes]:
    events: list[Event] = []
    out = bytearray()
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            events.append(event)
            respond(conn, event)
        out += conn.data_to_send()
    return events, bytes(out)


# Commands that take a connection to each state, answered positively.
SETUP: dict[PeerState, list[str]] = {
    PeerState.GREETED: [],
    PeerState.READY: ["EHLO b.example"],
    PeerState.TXN_STARTED: [
        "EHLO b.example",
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=100",
    ],
    PeerState.TXN_RCPT: [
        "EHLO b.example",
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=100",
        "RCPT To:<r@here.example>",
    ],
    PeerState.DATA_IN: [
        "EHLO b.example",
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=100",
        "RCPT To:<r@here.example>",
        "DATA",
    ],
    PeerState.CLOSED: ["QUIT"],
}


def at_state(state: PeerState, **overrides: int) -> PeerServerConnection:
    conn = server(**overrides)
    for line in SETUP[state]:
        event, out = step(conn, line)
        assert out == b"", out
        answer(conn, event)
        conn.data_to_send()
    assert conn.state is state
    return conn


# One valid line per verb, with the event it must produce.
SAMPLES: dict[str, tuple[str, PeerEvent]] = {
    "HELO": ("HELO b.example", Helo("b.example")),
    "EHLO": ("ehlo B.Example", Helo("b.example", extended=True)),
    "ENVELOPE": (
        f"ENVELOPE From:<s@B.example> ID={ENVID} SIZE=10",
        EnvelopeStart("s@b.example", ENVID, 10),
    ),
    "MAIL": (f"MAIL FROM:<s@b.example> id={ENVID}", MailStart("s@b.example", ENVID, None)),
    "RCPT": ("RCPT To:<r2@here.example>", Rcpt("r2@here.example")),
    "SIZE": ("SIZE=10", SizeDecl(10)),
    "DATA": ("DATA", DataStart()),
    "ACCEPT": (
        f"ACCEPT {ENVID} To:<r@here.example>",
        Decision(terms.Decision.ACCEPT, ENVID, "r@here.example"),
    ),
    "AUTHORIZE": (
        f"AUTHORIZE {ENVID} To:<r@here.example> BODY=HELD",
        Decision(terms.Decision.ACCEPT_AUTH, ENVID, "r@here.example", body_held=True),
    ),
    "REJECT": (
        f"REJECT {ENVID} To:<r@here.example>",
        Decision(terms.Decision.REJECT, ENVID, "r@here.example"),
    ),
    "SPAM": (
        f"spam {ENVID} to:<r@here.example>",
        Decision(terms.Decision.REJECT_SPAM, ENVID, "r@here.example"),
    ),
    "SPAMMER": (
        f"SPAMMER {ENVID}  To:<r@here.example>",
        Decision(terms.Decision.REJECT_SPAMMER, ENVID, "r@here.example"),
    ),
    "RECEIVED": (f"RECEIVED {ENVID}", Received(ENVID)),
    "RSET": ("RSET", Rset()),
    "NOOP": ("NOOP anything goes", Noop()),
    "QUIT": ("QUIT", Quit()),
    "STARTTLS": ("starttls", StartTls()),
}

COMMAND_STATES = [s for s in PeerState if s not in (PeerState.DATA_IN, PeerState.CLOSED)]


def test_samples_cover_every_verb() -> None:
    assert set(SAMPLES) == VERBS


def test_greeting() -> None:
    assert server().greeting() == b"220 mx.here.example SMDP ready\r\n"


@pytest.mark.parametrize("state", COMMAND_STATES, ids=lambda s: s.value)
@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_command_in_every_state(state: PeerState, verb: str) -> None:
    conn = at_state(state)
    line, expected = SAMPLES[verb]
    event, out = step(conn, line)
    if verb in TRANSITIONS.get(state, {}):
        assert event == expected
        assert out == b""
        assert conn.reply_owed == expected
        answer(conn, event)
        assert conn.state is TRANSITIONS[state][verb]
        assert conn.data_to_send().startswith(ANSWER_CODES.get(verb, b"250 "))
    else:
        assert event is NEED_DATA
        assert out.startswith(b"503 5.5.1 Bad sequence of commands: "), out
        assert out.endswith(b"\r\n") and out.count(b"\r\n") == 1
        assert conn.state is state


@pytest.mark.parametrize(
    ("state", "verb"),
    [(s, verb) for s, row in TRANSITIONS.items() for verb in row if verb != END_OF_BLOCK],
    ids=lambda v: v.value if isinstance(v, PeerState) else v,
)
def test_negative_reply_leaves_the_state(state: PeerState, verb: str) -> None:
    conn = at_state(state)
    event, _ = step(conn, SAMPLES[verb][0])
    assert event == SAMPLES[verb][1]
    conn.reply(550, "5.7.1 no")
    assert conn.data_to_send() == b"550 5.7.1 no\r\n"
    assert conn.state is state
    assert step(conn, "NOOP")[0] == Noop()


def test_lines_inside_a_block_are_data_not_commands() -> None:
    conn = at_state(PeerState.DATA_IN)
    event, out = step(conn, b"QUIT\r\nRSET\r\n..\r\n.\r\n")
    assert event == DataComplete(b"QUIT\r\nRSET\r\n.\r\n")
    assert out == b""
    assert conn.state is PeerState.READY
    conn.reply(250, f"2.0.0 {ENVID} stored")
    assert conn.data_to_send() == f"250 2.0.0 {ENVID} stored\r\n".encode()
    assert conn.state is PeerState.READY


def test_block_end_returns_to_ready_even_when_refused() -> None:
    conn = at_state(PeerState.DATA_IN)
    event, _ = step(conn, b"x\r\n.\r\n")
    assert isinstance(event, DataComplete)
    conn.reply(451, "4.3.0 try later")
    assert conn.data_to_send() == b"451 4.3.0 try later\r\n"
    assert conn.state is PeerState.READY
    # The transaction is gone: RCPT is out of sequence now.
    assert step(conn, "RCPT To:<r@here.example>")[1].startswith(b"503 ")


def test_closed_after_quit_ignores_input() -> None:
    conn = at_state(PeerState.READY)
    assert step(conn, "QUIT")[0] == Quit()
    conn.reply(221, "2.0.0 bye")
    assert conn.data_to_send() == b"221 2.0.0 bye\r\n"
    assert conn.state is PeerState.CLOSED
    assert step(conn, "NOOP") == (CLOSED, b"")
    assert conn.next_event() is CLOSED


def test_pipelined_lines_after_quit_are_dropped() -> None:
    conn = at_state(PeerState.READY)
    event, _ = step(conn, b"QUIT\r\nNOOP\r\n")
    assert event == Quit()
    conn.reply(221, "bye")
    assert conn.next_event() is CLOSED
    assert conn.buffered == 0


# -- errors answered by the connection itself ---------------------------------

LONG_ADDR = "a" * 64 + "@" + ".".join(["b" * 60] * 3) + ".example"

READY_ERRORS = [
    ("FOO", "500 5.5.1 Unknown command"),
    ("", "500 5.5.1 Unknown command"),
    (" HELO a.example", "500 5.5.1 Unknown command"),
    ("H\xc9LO a.example", "500 5.5.1 Unknown command"),
    ("SIZE 10", "503 5.5.1 Bad sequence"),
    ("HELO", "501 5.5.4 Syntax: HELO <hostname>"),
    ("HELO a.example extra", "501 5.5.4 Syntax"),
    ("HELO bad_host!", "501 5.5.4 Bad hostname"),
    ("HELO -a.example", "501 5.5.4 Bad hostname"),
    ("HELO caf\xe9.example", "501 5.5.4 Invalid characters"),
    ("HELO a.example\x00", "501 5.5.4 Invalid characters"),
    ("HELO a\rb.example", "501 5.5.4 Invalid characters"),
    ("ENVELOPE", "501 5.5.4 Syntax"),
    ("ENVELOPE To:<s@b.example> ID=" + ENVID, "501 5.5.4 Syntax"),
    ("ENVELOPE From:s@b.example ID=" + ENVID, "501 5.5.4 Syntax"),
    ("ENVELOPE From:<s@b.example>", "501 5.5.4 ID=<envid> required"),
    ("ENVELOPE From:<s@b.example> ID=short", "501 5.5.4 ID=<envid> required"),
    ("ENVELOPE From:<s@b.example> ID=" + ENVID.upper(), "501 5.5.4 ID=<envid> required"),
    ("ENVELOPE From:<s@b.example> ID=" + ENVID + "a", "501 5.5.4 ID=<envid> required"),
    ("ENVELOPE From:<s@b.example> ID=abcdefghijklmnopqrstuvwxy1", "501 5.5.4 ID=<envid>"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=abc", "501 5.5.4 Bad SIZE"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=-1", "501 5.5.4 Bad SIZE"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=", "501 5.5.4 Bad parameter"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1{'0' * 30}", "501 5.5.4 Bad SIZE"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} FOO=1", "501 5.5.4 Unknown parameter FOO"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} BODY", "501 5.5.4 Bad parameter"),
    (f"ENVELOPE From:<s@b.example> ID={ENVID} ID={ENVID}", "501 5.5.4 Repeated parameter"),
    (
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1001",
        "552 5.3.4 Message size exceeds fixed maximum of 1000",
    ),
    (f"MAIL From:<> ID={ENVID}", "501 5.5.4 Bad address"),
    (f'MAIL From:<"q r"@b.example> ID={ENVID}', "501 5.5.4 Syntax"),
    (f'MAIL From:<"q"@b.example> ID={ENVID}', "501 5.5.4 Bad address"),
    (f"MAIL From:<@relay.example:s@b.example> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<s@[192.0.2.1]> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<s..t@b.example> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<s@b_c.example> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<s@b.example.> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<{'a' * 65}@b.example> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<{LONG_ADDR}> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<s@{'b' * 64}.example> ID={ENVID}", "501 5.5.4 Bad address"),
    (f"MAIL From:<s\xe9@b.example> ID={ENVID}", "501 5.5.4 Invalid characters"),
    (f"REJECT {ENVID} To:<r@here.example> BODY=HELD", "501 5.5.4 BODY=HELD only"),
    (f"SPAM {ENVID} To:<r@here.example> BODY=HELD", "501 5.5.4 BODY=HELD only"),
    (f"ACCEPT {ENVID} To:<r@here.example> BODY=NOW", "501 5.5.4 BODY=HELD only"),
    (f"ACCEPT {ENVID} To:<r@here.example> X=1", "501 5.5.4 Unknown parameter X"),
    ("ACCEPT nope To:<r@here.example>", "501 5.5.4 Syntax: ACCEPT <envid> To:<address>"),
    (f"ACCEPT {ENVID}", "501 5.5.4 Syntax"),
    (f"ACCEPT To:<r@here.example> {ENVID}", "501 5.5.4 Syntax"),
    (f"ACCEPT {ENVID} To:<r>", "501 5.5.4 Bad address <r>"),
    ("RECEIVED", "501 5.5.4 Syntax: RECEIVED <envid>"),
    (f"RECEIVED {ENVID} extra", "501 5.5.4 Syntax: RECEIVED <envid>"),
    ("RSET now", "501 5.5.4 Syntax: RSET"),
    ("QUIT now", "501 5.5.4 Syntax: QUIT"),
    ("RCPT To:<r@here.example>", "503 5.5.1 Bad sequence of commands: no transaction"),
    ("DATA", "503 5.5.1 Bad sequence of commands: no transaction"),
    ("SIZE=10", "503 5.5.1 Bad sequence of commands: no transaction"),
]


@pytest.mark.parametrize(("line", "reply"), READY_ERRORS)
def test_errors_in_ready(line: str, reply: str) -> None:
    conn = at_state(PeerState.READY)
    event, out = step(conn, line)
    assert event is NEED_DATA
    assert out.startswith(reply.encode("latin-1")), out
    assert out.endswith(b"\r\n") and out.count(b"\r\n") == 1
    assert conn.state is PeerState.READY
    # The session goes on.
    assert step(conn, "NOOP")[0] == Noop()


TXN_ERRORS = [
    ("SIZE=abc", "501 5.5.4 Bad SIZE"),
    ("SIZE 10", "501 5.5.4 Syntax: SIZE=<n>"),
    ("SIZE=10 20", "501 5.5.4 Bad SIZE"),
    ("SIZE=1001", "552 5.3.4 Message size exceeds fixed maximum of 1000"),
    ("DATA now", "501 5.5.4 Syntax: DATA"),
    ("RCPT", "501 5.5.4 Syntax: RCPT To:<address>"),
    ("RCPT To:<r@here.example> NOTIFY=NEVER", "501 5.5.4 Syntax: RCPT To:<address>"),
    ("RCPT From:<r@here.example>", "501 5.5.4 Syntax"),
    ("RCPT To:<r@here..example>", "501 5.5.4 Bad address"),
    ("HELO b.example", "503 5.5.1 Bad sequence of commands: HELO not allowed inside"),
    (f"MAIL From:<s@b.example> ID={ENVID}", "503 5.5.1 Bad sequence of commands: MAIL"),
    (f"ACCEPT {ENVID} To:<r@here.example>", "503 5.5.1 Bad sequence of commands: ACCEPT"),
    (f"RECEIVED {ENVID}", "503 5.5.1 Bad sequence of commands: RECEIVED"),
]


@pytest.mark.parametrize(("line", "reply"), TXN_ERRORS)
def test_errors_in_transaction(line: str, reply: str) -> None:
    conn = at_state(PeerState.TXN_RCPT)
    event, out = step(conn, line)
    assert event is NEED_DATA
    assert out.startswith(reply.encode()), out
    assert conn.state is PeerState.TXN_RCPT


def test_sequence_errors_before_hello() -> None:
    conn = server()
    for line in ["MAIL From:<s@b.example> ID=" + ENVID, f"ACCEPT {ENVID} To:<r@h.example>"]:
        event, out = step(conn, line)
        assert event is NEED_DATA
        assert out == b"503 5.5.1 Bad sequence of commands: send HELO or EHLO first\r\n"


def test_sequence_is_checked_before_syntax() -> None:
    conn = server()
    assert step(conn, "RCPT garbage")[1].startswith(b"503 ")


def test_data_without_size_then_with_size_command() -> None:
    conn = at_state(PeerState.READY)
    for line in [f"MAIL From:<s@b.example> ID={ENVID}", "RCPT To:<r@here.example>"]:
        answer(conn, step(conn, line)[0])
    conn.data_to_send()
    assert step(conn, "DATA") == (NEED_DATA, b"503 5.5.1 SIZE required before DATA\r\n")
    event, _ = step(conn, "SIZE=6")
    assert event == SizeDecl(6)
    conn.reply(250, "2.3.0 Size 6 ok")
    assert step(conn, "DATA") == (DataStart(), b"250 2.3.0 Size 6 ok\r\n")
    conn.reply(354, "go")
    event, _ = step(conn, b"1234\r\n.\r\n")
    assert event == DataComplete(b"1234\r\n")


def test_refused_size_is_not_recorded() -> None:
    conn = at_state(PeerState.READY)
    for line in [f"MAIL From:<s@b.example> ID={ENVID}", "RCPT To:<r@here.example>"]:
        answer(conn, step(conn, line)[0])
    assert step(conn, "SIZE=5")[0] == SizeDecl(5)
    conn.reply(552, "5.3.4 not today")
    conn.data_to_send()
    assert step(conn, "DATA")[1].startswith(b"503 5.5.1 SIZE required")


def test_too_many_recipients_counts_only_accepted_ones() -> None:
    conn = at_state(PeerState.TXN_STARTED, max_recipients=2)
    event, _ = step(conn, "RCPT To:<a@here.example>")
    conn.reply(550, "5.1.1 no such user")
    for name in ("b", "c"):
        event, _ = step(conn, f"RCPT To:<{name}@here.example>")
        assert event == Rcpt(f"{name}@here.example")
        conn.reply(250, "ok")
    conn.data_to_send()
    assert step(conn, "RCPT To:<d@here.example>") == (
        NEED_DATA,
        b"452 4.5.3 Too many recipients\r\n",
    )
    # A new transaction starts counting afresh.
    answer(conn, step(conn, "RSET")[0])
    answer(conn, step(conn, f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1")[0])
    assert step(conn, "RCPT To:<d@here.example>")[0] == Rcpt("d@here.example")


def test_data_after_all_recipients_refused() -> None:
    conn = at_state(PeerState.TXN_STARTED)
    step(conn, "RCPT To:<a@here.example>")
    conn.reply(550, "5.7.1 a has not authorized s@b.example; send an envelope")
    conn.data_to_send()
    assert step(conn, "DATA") == (NEED_DATA, b"554 5.5.1 No valid recipients\r\n")
    assert conn.state is PeerState.TXN_STARTED


def test_data_before_any_recipient_is_a_sequence_error() -> None:
    conn = at_state(PeerState.TXN_STARTED)
    assert step(conn, "DATA")[1] == b"503 5.5.1 Bad sequence of commands: send RCPT first\r\n"


@pytest.mark.parametrize("max_command_line", [64, 1000])
def test_over_long_command_line(max_command_line: int) -> None:
    conn = at_state(PeerState.READY, max_command_line=max_command_line)
    name = "a" * (max_command_line - 7)
    ok_line = "HELO " + name
    assert len(ok_line) == max_command_line - 2
    # The longest line reaches the parser: a 57-octet label is a hostname; 993
    # octets are not (a label has at most 63), and the parser says so, not the
    # line reader.
    event, out = step(conn, ok_line)
    if max_command_line == 64:
        assert (event, out) == (Helo(name), b"")
        conn.reply(250, "ok")
        conn.data_to_send()
    else:
        assert (event, out) == (NEED_DATA, f"501 5.5.4 Bad hostname {name}\r\n".encode())
    event, out = step(conn, "NOOP" + "x" * (max_command_line - 5))
    assert (event, out) == (NEED_DATA, b"500 5.5.2 Line too long\r\n")
    event, out = step(conn, "NOOP " + "y" * 100_000)
    assert (event, out) == (NEED_DATA, b"500 5.5.2 Line too long\r\n")
    assert step(conn, "NOOP") == (Noop(), b"")


def test_over_long_line_streamed_without_end_stays_bounded() -> None:
    conn = at_state(PeerState.READY)
    for _ in range(1000):
        conn.receive_data(b"A" * 997)
        assert conn.next_event() is NEED_DATA
        assert conn.buffered <= 1000
    event, out = step(conn, b"\r\nNOOP\r\n")
    assert event == Noop()
    assert out == b"500 5.5.2 Line too long\r\n"


def _open_data(conn: PeerServerConnection, start: str) -> None:
    for line in [start, "RCPT To:<r@here.example>", "DATA"]:
        answer(conn, step(conn, line)[0])
    conn.data_to_send()
    assert conn.state is PeerState.DATA_IN


def test_oversize_envelope_block_is_read_to_its_end_and_refused() -> None:
    conn = at_state(PeerState.READY)
    _open_data(conn, f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=10")
    body = b"Subject: " + b"x" * 90 + b"\r\n"
    events, out = run(conn, [body] * 11 + [b".\r\nNOOP\r\n"])
    assert events == [DataFailed("too big"), Noop()]
    assert out == b"552 5.3.4 Message size exceeds fixed maximum of 1000\r\n250 2.0.0 OK\r\n"
    assert conn.state is PeerState.READY


def test_envelope_block_is_not_held_to_the_message_size() -> None:
    # SIZE describes the message (2.3); the envelope block only obeys the limit.
    conn = at_state(PeerState.READY)
    _open_data(conn, f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=10")
    event, _ = step(conn, b"Subject: a longer subject line\r\n.\r\n")
    assert event == DataComplete(b"Subject: a longer subject line\r\n")


def test_over_long_data_line_refuses_the_block() -> None:
    conn = at_state(PeerState.READY, max_line_length=100)
    _open_data(conn, f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=10")
    events, out = run(conn, [b"ok\r\n", b"x" * 300, b"\r\n.x\r\n", b".\r\n"])
    assert events == [DataFailed("line too long")]
    assert out == b"500 5.5.2 Line too long\r\n"
    assert conn.state is PeerState.READY


@pytest.mark.parametrize(
    ("size", "body", "ok"),
    [(7, b"hello\n", True), (8, b"hello\n", False), (6, b"hello\n", False), (0, b"", True)],
)
def test_mail_block_must_match_its_size(size: int, body: bytes, ok: bool) -> None:
    conn = at_state(PeerState.READY)
    _open_data(conn, f"MAIL From:<s@b.example> ID={ENVID} SIZE={size}")
    wire = body.replace(b"\n", b"\r\n") + b".\r\n"
    event, out = step(conn, wire)
    if ok:
        assert event == DataComplete(body.replace(b"\n", b"\r\n"))
        assert out == b""
    else:
        assert event == DataFailed("size mismatch")
        assert out == b"554 5.3.4 Size mismatch\r\n"
        assert conn.reply_owed is None
    assert conn.state is PeerState.READY


def test_much_larger_mail_block_is_not_stored() -> None:
    conn = at_state(PeerState.READY)
    _open_data(conn, f"MAIL From:<s@b.example> ID={ENVID} SIZE=10")
    events, out = run(conn, [b"y" * 50 + b"\r\n"] * 100 + [b".\r\n"])
    assert events == [DataFailed("size mismatch")]
    assert out == b"554 5.3.4 Size mismatch\r\n"


# -- the session as a whole -----------------------------------------------------

SESSION = (
    "EHLO b.example\r\n"
    f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=42\r\n"
    "RCPT To:<r1@here.example>\r\n"
    "RCPT To:<r2@here.example>\r\n"
    "DATA\r\n"
    "Subject: hi\r\n"
    "..a dot\r\n"
    ".\r\n"
    f"MAIL From:<s@b.example> ID={OTHER_ENVID}\r\n"
    "RCPT To:<r1@here.example>\r\n"
    "SIZE=3\r\n"
    "DATA\r\n"
    "x\r\n"
    ".\r\n"
    f"ACCEPT {ENVID} To:<r1@here.example>\r\n"
    f"AUTHORIZE {ENVID} To:<r2@here.example> BODY=HELD\r\n"
    f"RECEIVED {ENVID}\r\n"
    f"SPAMMER {OTHER_ENVID} To:<r1@here.example>\r\n"
    "RSET\r\n"
    "NOOP\r\n"
    "QUIT\r\n"
).encode()

SESSION_EVENTS: list[Event] = [
    Helo("b.example", extended=True),
    EnvelopeStart("s@b.example", ENVID, 42),
    Rcpt("r1@here.example"),
    Rcpt("r2@here.example"),
    DataStart(),
    DataComplete(b"Subject: hi\r\n.a dot\r\n"),
    MailStart("s@b.example", OTHER_ENVID, None),
    Rcpt("r1@here.example"),
    SizeDecl(3),
    DataStart(),
    DataComplete(b"x\r\n"),
    Decision(terms.Decision.ACCEPT, ENVID, "r1@here.example"),
    Decision(terms.Decision.ACCEPT_AUTH, ENVID, "r2@here.example", body_held=True),
    Received(ENVID),
    Decision(terms.Decision.REJECT_SPAMMER, OTHER_ENVID, "r1@here.example"),
    Rset(),
    Noop(),
    Quit(),
]


def test_whole_session_at_once() -> None:
    conn = server()
    events, out = run(conn, [SESSION])
    assert events == SESSION_EVENTS
    assert conn.state is PeerState.CLOSED
    assert b"150 5 octets follow\r\nhello\r\n.\r\n" in out


def test_whole_session_one_byte_at_a_time() -> None:
    reference = run(server(), [SESSION])
    conn = server()
    events, out = run(conn, [SESSION[i : i + 1] for i in range(len(SESSION))])
    assert (events, out) == reference


def test_whole_session_with_bare_lf() -> None:
    conn = server()
    events, _ = run(conn, [SESSION.replace(b"\r\n", b"\n")])
    assert events == SESSION_EVENTS


def test_eof_closes_after_buffered_commands() -> None:
    conn = at_state(PeerState.READY)
    conn.receive_data(b"NOOP\r\nQUI")
    conn.receive_data(b"")
    assert conn.next_event() == Noop()
    conn.reply(250, "ok")
    assert conn.next_event() is CLOSED
    assert conn.state is PeerState.CLOSED


def test_eof_inside_a_block() -> None:
    conn = at_state(PeerState.DATA_IN)
    conn.receive_data(b"half a body\r\n")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


def test_receive_after_eof_is_a_usage_error() -> None:
    conn = server()
    conn.receive_data(b"")
    with pytest.raises(ProtocolUsageError, match="after EOF"):
        conn.receive_data(b"NOOP\r\n")


# -- the application's side of the contract ------------------------------------


def test_multi_line_reply() -> None:
    conn = server()
    step(conn, "EHLO b.example")
    conn.reply(250, [f"{HOST} hello b.example", "SMDP 1", "SIZE 1000"])
    assert conn.data_to_send() == (
        b"250-mx.here.example hello b.example\r\n250-SMDP 1\r\n250 SIZE 1000\r\n"
    )


def test_pull_reply_is_line_then_block() -> None:
    conn = at_state(PeerState.READY)
    event, _ = step(conn, f"ACCEPT {ENVID} To:<r@here.example>")
    assert isinstance(event, Decision) and event.wants_body
    conn.send_body(150, "9 octets follow", b".a\nb")
    assert conn.data_to_send() == b"150 9 octets follow\r\n..a\r\nb\r\n.\r\n"
    assert conn.state is PeerState.READY


def test_pull_may_be_refused() -> None:
    conn = at_state(PeerState.READY)
    step(conn, f"ACCEPT {ENVID} To:<r@here.example>")
    conn.reply(554, f"5.7.0 {ENVID} was rejected; message deleted")
    assert conn.data_to_send() == f"554 5.7.0 {ENVID} was rejected; message deleted\r\n".encode()


def test_next_event_while_a_reply_is_owed() -> None:
    conn = server()
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    assert conn.next_event() == Noop()
    with pytest.raises(ProtocolUsageError, match="reply owed to Noop"):
        conn.next_event()
    conn.reply(250, "ok")
    assert conn.next_event() == Noop()


@pytest.mark.parametrize(
    ("line", "code", "text", "error"),
    [
        ("NOOP", 250, "two\r\nlines", "reply text must not hold CR, LF or NUL"),
        ("NOOP", 250, "nul\x00", "reply text must not hold CR, LF or NUL"),
        ("NOOP", 250, [], "a reply needs at least one line"),
        ("NOOP", 354, "not for NOOP", "reply code 354 does not fit Noop()"),
        ("NOOP", 150, "1xx is for send_body", "reply code 150 does not fit Noop()"),
        ("NOOP", 600, "no such code", "reply code 600 does not fit Noop()"),
        ("NOOP", 99, "no such code", "reply code 99 does not fit Noop()"),
    ],
)
def test_bad_replies_are_usage_errors(line: str, code: int, text: str | list[str],
                                      error: str) -> None:
    conn = at_state(PeerState.READY)
    step(conn, line)
    with pytest.raises(ProtocolUsageError, match=re.escape(error)):
        conn.reply(code, text)
    assert conn.data_to_send() == b""
    assert conn.reply_owed is not None


def test_data_must_be_answered_354_or_refused() -> None:
    conn = at_state(PeerState.TXN_RCPT)
    step(conn, "DATA")
    with pytest.raises(ProtocolUsageError, match="DATA is answered 354, 4xx or 5xx"):
        conn.reply(250, "ok")
    conn.reply(451, "4.3.1 no space")
    assert conn.state is PeerState.TXN_RCPT


def test_send_body_only_answers_a_pull() -> None:
    conn = at_state(PeerState.READY)
    with pytest.raises(ProtocolUsageError, match="no event is waiting for a reply"):
        conn.send_body(150, "x", b"x")
    step(conn, f"ACCEPT {ENVID} To:<r@here.example> BODY=HELD")
    with pytest.raises(ProtocolUsageError, match="answers ACCEPT/AUTHORIZE without BODY=HELD"):
        conn.send_body(150, "x", b"x")
    conn.reply(250, "ok")
    step(conn, f"ACCEPT {ENVID} To:<r@here.example>")
    with pytest.raises(ProtocolUsageError, match="the pull is answered with a 1xx code"):
        conn.send_body(250, "x", b"x")
    with pytest.raises(ProtocolUsageError, match="reply text must not hold CR, LF or NUL"):
        conn.send_body(150, "a\nb", b"x")


def test_reply_without_event_is_a_usage_error() -> None:
    with pytest.raises(ProtocolUsageError, match="no event is waiting for a reply"):
        server().reply(250, "ok")


def test_hostname_with_newline_is_refused() -> None:
    with pytest.raises(ProtocolUsageError, match="reply text must not hold CR, LF or NUL"):
        PeerServerConnection("a\r\nb", max_message_size=1, max_recipients=1)


# -- client side ----------------------------------------------------------------


def client_with_greeting() -> PeerClientConnection:
    client = PeerClientConnection()
    client.receive_data(b"220 mx.a.example SMDP ready\r\n")
    assert client.next_event() == Reply(220, ["mx.a.example SMDP ready"])
    return client


def test_client_serialises_every_command() -> None:
    client = PeerClientConnection()
    commands: list[tuple[PeerCommand, bytes]] = [
        (Helo("b.example"), b"HELO b.example\r\n"),
        (Helo("b.example", extended=True), b"EHLO b.example\r\n"),
        (
            EnvelopeStart("s@b.example", ENVID, 7),
            f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=7\r\n".encode(),
        ),
        (MailStart("s@b.example", ENVID), f"MAIL From:<s@b.example> ID={ENVID}\r\n".encode()),
        (Rcpt("r@a.example"), b"RCPT To:<r@a.example>\r\n"),
        (SizeDecl(12), b"SIZE=12\r\n"),
        (DataStart(), b"DATA\r\n"),
        (Data(b"a\n.b"), b"a\r\n..b\r\n.\r\n"),
        (
            Decision(terms.Decision.ACCEPT, ENVID, "r@a.example", body_held=True),
            f"ACCEPT {ENVID} To:<r@a.example> BODY=HELD\r\n".encode(),
        ),
        (
            Decision(terms.Decision.REJECT_SPAM, ENVID, "r@a.example"),
            f"SPAM {ENVID} To:<r@a.example>\r\n".encode(),
        ),
        (Received(ENVID), f"RECEIVED {ENVID}\r\n".encode()),
        (Rset(), b"RSET\r\n"),
        (Noop(), b"NOOP\r\n"),
        (Quit(), b"QUIT\r\n"),
        (StartTls(), b"STARTTLS\r\n"),
    ]
    for command, wire in commands:
        assert client.send(command) == wire


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (Helo("bad host"), "bad hostname 'bad host'"),
        (Helo("b.example\r\nQUIT"), "bad hostname 'b.example\\r\\nQUIT'"),
        (EnvelopeStart("s@b.example", "short"), "bad envelope id 'short'"),
        (EnvelopeStart("s@b.example\r\nRSET", ENVID), "bad address 's@b.example\\r\\nRSET'"),
        (MailStart("s@b.example", ENVID, -1), "bad size -1"),
        (Rcpt("<r@a.example>"), "bad address '<r@a.example>'"),
        (SizeDecl(-5), "bad size -5"),
        (Decision(terms.Decision.REJECT, ENVID, "r@a.example", body_held=True),
         "BODY=HELD only goes with ACCEPT or AUTHORIZE"),
        (Received(ENVID.upper()), f"bad envelope id '{ENVID.upper()}'"),
    ],
)
def test_client_refuses_malformed_commands(command: PeerCommand, error: str) -> None:
    with pytest.raises(ProtocolUsageError, match=re.escape(error)):
        PeerClientConnection().send(command)


def test_client_refuses_non_commands() -> None:
    with pytest.raises(ProtocolUsageError, match="not a peer command: DataComplete"):
        PeerClientConnection().send(DataComplete(b"x"))  # type: ignore[arg-type]


def test_client_parses_multi_line_reply_split_anywhere() -> None:
    client = client_with_greeting()
    client.send(Helo("b.example", extended=True))
    wire = b"250-mx.a.example hello b.example\r\n250-SMDP 1\r\n250 SIZE 1000\r\n"
    events: list[object] = []
    for i in range(len(wire)):
        client.receive_data(wire[i : i + 1])
        while (event := client.next_event()) is not NEED_DATA:
            events.append(event)
    assert events == [Reply(250, ["mx.a.example hello b.example", "SMDP 1", "SIZE 1000"])]
    reply = events[0]
    assert isinstance(reply, Reply) and reply.ok
    assert reply.text == "mx.a.example hello b.example\nSMDP 1\nSIZE 1000"


def test_client_reply_ok_and_text() -> None:
    assert Reply(354, ["go"]).ok
    assert not Reply(550, ["no"]).ok
    assert not Reply(150, ["x"]).ok
    assert Reply(250, ["one"]).text == "one"


def test_client_pull_reads_the_block() -> None:
    client = client_with_greeting()
    client.send(Decision(terms.Decision.ACCEPT_AUTH, ENVID, "r@a.example"))
    client.send(Received(ENVID))
    client.receive_data(b"150 7 octets follow\r\n..x\r\ny\n.\r\n250 2.0.0 done\r\n")
    assert client.next_event() == PulledBody(150, "7 octets follow", b".x\r\ny\r\n")
    assert client.next_event() == Reply(250, ["2.0.0 done"])
    assert client.next_event() is NEED_DATA


def test_client_pull_refused_is_a_plain_reply() -> None:
    client = client_with_greeting()
    client.send(Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    client.receive_data(b"550 5.1.0 Unknown envelope\r\n")
    assert client.next_event() == Reply(550, ["5.1.0 Unknown envelope"])


def test_client_body_held_decision_is_no_pull() -> None:
    client = client_with_greeting()
    client.send(Decision(terms.Decision.ACCEPT, ENVID, "r@a.example", body_held=True))
    client.send(Noop())
    client.receive_data(b"150 odd\r\n250 ok\r\n")
    assert client.next_event() == Reply(150, ["odd"])
    assert client.next_event() == Reply(250, ["ok"])


def test_client_pull_too_big() -> None:
    client = PeerClientConnection(max_message_size=10)
    client.send(Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    client.receive_data(b"220 hi\r\n150 big\r\n" + b"x" * 50 + b"\r\n.\r\n")
    assert client.next_event() == Reply(220, ["hi"])
    with pytest.raises(RemoteProtocolError, match="pulled body exceeds 10 octets"):
        client.next_event()
    with pytest.raises(RemoteProtocolError, match="the connection already failed"):
        client.next_event()


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"hello\r\n", "malformed reply line b'hello'"),
        (b"25 short\r\n", "malformed reply line b'25 short'"),
        (b"2500 long\r\n", "malformed reply line b'2500 long'"),
        (b"250_x\r\n", "malformed reply line b'250_x'"),
        (b"250-a\r\n251 b\r\n", "multi-line reply changes its code"),
        (b"2" * 2000 + b"\r\n", "reply line too long"),
    ],
)
def test_client_malformed_replies(wire: bytes, error: str) -> None:
    client = PeerClientConnection()
    client.receive_data(wire)
    with pytest.raises(RemoteProtocolError, match=re.escape(error)):
        client.next_event()


def test_client_bare_code_and_eof() -> None:
    client = PeerClientConnection()
    client.receive_data(b"220\r\n421 4.4.2 closing\r\n250-part")
    client.receive_data(b"")
    assert client.next_event() == Reply(220, [""])
    assert client.next_event() == Reply(421, ["4.4.2 closing"])
    assert client.next_event() is CLOSED
    with pytest.raises(ProtocolUsageError, match="after EOF"):
        client.receive_data(b"x")


def test_client_against_server() -> None:
    """The client's bytes drive the server, the server's replies drive the client."""
    srv = server()
    client = PeerClientConnection()
    client.receive_data(srv.greeting())
    assert client.next_event() == Reply(220, [f"{HOST} SMDP ready"])
    replies: list[object] = []
    commands: list[PeerCommand] = [
        Helo("b.example"),
        EnvelopeStart("s@b.example", ENVID, 5),
        Rcpt("r@here.example"),
        DataStart(),
        Data(b"Subject: x\n"),
        Decision(terms.Decision.ACCEPT, ENVID, "r@here.example"),
        Received(ENVID),
        Quit(),
    ]
    for command in commands:
        srv.receive_data(client.send(command))
        event = srv.next_event()
        if isinstance(command, Data):
            assert event == DataComplete(b"Subject: x\r\n")
        answer(srv, event)
        client.receive_data(srv.data_to_send())
        replies.append(client.next_event())
    assert [type(r).__name__ for r in replies] == ["Reply"] * 5 + ["PulledBody", "Reply", "Reply"]
    assert replies[3] == Reply(354, ["Send data, end with <CRLF>.<CRLF>"])
    assert replies[5] == PulledBody(150, "5 octets follow", b"hello\r\n")
    assert srv.state is PeerState.CLOSED


def test_a_repeated_pulling_decision_may_be_answered_250() -> None:
    """After RECEIVED the origin has nothing to transfer: 250, no block."""
    conn = at_state(PeerState.READY)
    step(conn, f"ACCEPT {ENVID} To:<r@here.example>")
    conn.reply(250, "2.0.0 ACCEPT recorded; already transferred")
    assert conn.data_to_send() == b"250 2.0.0 ACCEPT recorded; already transferred\r\n"
    assert conn.state is PeerState.READY


def test_client_takes_a_reply_of_max_reply_lines_and_no_more() -> None:
    """The shared MultilineReply: MAX_REPLY_LINES lines make one reply; a
    peer that goes on past them fails the connection."""
    client = PeerClientConnection()
    client.receive_data(b"220-x\r\n" * (MAX_REPLY_LINES - 1) + b"220 last\r\n")
    reply = client.next_event()
    assert isinstance(reply, Reply) and len(reply.lines) == MAX_REPLY_LINES
    client = PeerClientConnection()
    client.receive_data(b"220-x\r\n" * MAX_REPLY_LINES)
    with pytest.raises(RemoteProtocolError, match="multi-line reply too long"):
        client.next_event()
