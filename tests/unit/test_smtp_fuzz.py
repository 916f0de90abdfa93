"""Property tests of the SMTP codec, as test_codec_fuzz does for the SMDP ports:
hostile bytes in arbitrary splits into the server (it never raises, answers
only with well-formed reply lines, keeps its buffer bounded), hostile bytes
into the client (only RemoteProtocolError), and round trips client <-> server."""

from __future__ import annotations

import random
import re
import string

from hypothesis import given
from hypothesis import strategies as st

from smdp.protocol import smtp
from smdp.protocol.framing import LineBuffer
from tests.unit.test_codec_fuzz import (
    BLOCK_PIECES,
    FUZZ,
    assert_lines,
    cuts,
    edits,
    mutate,
    near_cuts,
    split,
)

REPLY = re.compile(rb"[2-5][0-9]{2}[ -][^\r\n]*\r\n")
AUTO_REPLY = re.compile(rb"[2-5][0-9]{2} [^\r\n]*\r\n|334 [A-Za-z0-9+/=]*\r\n")

SEED_LINES = [
    "EHLO c.example", "HELO c.example", "MAIL FROM:<s@b.example>", "MAIL FROM:<>",
    "MAIL FROM:<s@b.example> SIZE=100 BODY=8BITMIME SMTPUTF8 AUTH=<>",
    "MAIL FROM:<jö@b.example> SMTPUTF8", "RCPT TO:<r@here.example>",
    'RCPT TO:<"a@b"@[192.0.2.1]>', "RCPT TO:<@a.example,@b.example:u@c.example>",
    "RCPT TO:<Postmaster>", "RCPT TO:<r@[IPv6:2001:db8::1]>", "DATA", "RSET", "NOOP", "QUIT",
    "VRFY x", "HELP", "STARTTLS", "AUTH PLAIN", "AUTH LOGIN", "AUTH PLAIN AGEAYg==", "YQ==",
    "*", "Subject: hi", "..dot", ".", "", "x" * 120,
]
FRAGMENTS = [
    ["MAIL FROM:<s@b.example>", "RCPT TO:<r@here.example>", "DATA", "Subject: hi", "", "..x",
     "."],
    ["MAIL FROM:<s@b.example>", "RCPT TO:<a@here.example>", "RCPT TO:<b@here.example>",
     "RCPT TO:<c@here.example>", "DATA", "w" * 59, "w" * 150, "."],
    ["AUTH LOGIN", "YWxpY2U=", "cHc="],
    ["STARTTLS", "EHLO c.example", "AUTH PLAIN AGFsaWNlAHB3"],
]
SMUGGLE = [b"\n.\r\n", b"\r.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\n"]


def sessions() -> st.SearchStrategy[bytes]:
    pieces = st.sampled_from(SEED_LINES).map(lambda line: [line]) | st.sampled_from(FRAGMENTS)
    return st.tuples(
        st.booleans(), st.lists(pieces, max_size=25), st.sampled_from(["\r\n", "\n", "\r"]),
        st.lists(st.sampled_from(SMUGGLE), max_size=2),
    ).map(lambda t: "".join(
        line + t[2] for line in (["EHLO c.example"] if t[0] else []) + [x for p in t[1] for x in p]
    ).encode() + b"".join(t[3]))


hostile = st.one_of(
    st.binary(max_size=1500),
    sessions(),
    st.tuples(sessions(), edits).map(lambda t: mutate(*t)),
)


def app(conn: smtp.SmtpServerConnection, event: object, rng: random.Random) -> bytes:
    if isinstance(event, smtp.DataFailed | smtp.BlockChunk):
        return b""
    if rng.random() < 0.2:
        conn.reply(rng.choice([451, 550, 554]), ["no", "really"] if rng.random() < 0.5 else "no")
    else:
        conn.ok()
    return conn.data_to_send()


@FUZZ
@given(data=hostile, cut=cuts, seed=st.integers(0, 2**32),
       threshold=st.none() | st.integers(1, 50))
def test_server_survives_hostile_input(data: bytes, cut: list[int], seed: int,
                                       threshold: int | None) -> None:
    rng = random.Random(seed)
    conn = smtp.SmtpServerConnection(
        "here.example", max_message_size=200, max_recipients=2, max_command_line=80,
        max_line_length=60, starttls=True, auth_mechanisms=("PLAIN", "LOGIN"),
        auth_requires_tls=False, stream_threshold=threshold,
    )
    for chunk in [*split(data, cut), b""]:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            assert_lines(conn.data_to_send(), AUTO_REPLY)
            if event is smtp.NEED_DATA:
                assert conn.buffered <= smtp.AUTH_LINE + 2
                break
            if event is smtp.CLOSED:
                break
            assert_lines(app(conn, event, rng), REPLY)
        if conn.state is smtp.SmtpState.CLOSED:
            break
    assert conn.next_event() is smtp.CLOSED


@FUZZ
@given(data=st.binary(max_size=800), cut=cuts)
def test_client_raises_only_remote_protocol_error(data: bytes, cut: list[int]) -> None:
    client = smtp.SmtpClientConnection(max_line_length=100)
    client.send(smtp.Helo("me.example"))
    client.send(smtp.DataStart())
    try:
        for chunk in split(data, cut):
            client.receive_data(chunk)
            while client.next_event() not in (smtp.NEED_DATA, smtp.CLOSED):
                pass
            assert client.buffered <= 102
    except smtp.RemoteProtocolError:
        pass


# -- round trips ----------------------------------------------------------------------

atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
atom = st.text(atext, min_size=1, max_size=8)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
domains = st.lists(label, min_size=1, max_size=4).map(".".join)
quoted = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
literals = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: "[{}.{}.{}.{}]".format(*t)),
    st.from_type(int).map(lambda n: f"[IPv6:2001:db8::{abs(n) % 65536:x}]"),
)
mailboxes = st.builds(lambda local, domain: f"{local}@{domain}",
                      st.lists(atom, min_size=1, max_size=3).map(".".join) | quoted,
                      domains | literals)
routes = st.lists(domains, max_size=2).map(tuple)
xtexts = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20)
passwords = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=20)

commands = st.one_of(
    st.builds(smtp.Helo, st.from_regex(r"[!-~]{1,30}", fullmatch=True), st.booleans()),
    st.builds(smtp.Mail, st.just("") | mailboxes, st.none() | st.integers(0, 1000),
              st.sampled_from([None, "7BIT", "8BITMIME"]), st.booleans(),
              st.none() | xtexts, routes).filter(lambda m: m.sender or not m.route),
    st.builds(smtp.Rcpt, mailboxes, routes),
    st.builds(smtp.Auth, st.just("PLAIN"), passwords, passwords, st.just("") | passwords),
    st.just(smtp.DataStart()), st.just(smtp.Rset()), st.just(smtp.Noop()),
    st.just(smtp.Quit()), st.just(smtp.StartTls()),
)
SETUP = {
    smtp.Helo: [], smtp.Mail: ["EHLO c.example"], smtp.Auth: ["EHLO c.example"],
    smtp.Rcpt: ["EHLO c.example", "MAIL FROM:<s@b.example> SMTPUTF8"],
    smtp.DataStart: ["EHLO c.example", "MAIL FROM:<s@b.example>", "RCPT TO:<r@here.example>"],
    smtp.Rset: [], smtp.Noop: [], smtp.Quit: [], smtp.StartTls: ["EHLO c.example"],
}


def ready_server(lines: list[str], **limits: object) -> smtp.SmtpServerConnection:
    conn = smtp.SmtpServerConnection("here.example", **{  # type: ignore[arg-type]
        "max_message_size": 10**6, "starttls": True, "auth_mechanisms": ("PLAIN",),
        "auth_requires_tls": False} | limits)
    for line in lines:
        conn.receive_data(line.encode() + b"\r\n")
        conn.next_event()
        conn.ok()
    conn.data_to_send()
    return conn


@FUZZ
@given(command=commands, cut=cuts)
def test_commands_round_trip(command: smtp.SmtpCommand, cut: list[int]) -> None:
    wire = smtp.SmtpClientConnection().send(command)
    conn = ready_server(SETUP[type(command)])
    events = []
    for chunk in split(wire, cut):
        conn.receive_data(chunk)
        event = conn.next_event()
        if event is not smtp.NEED_DATA:
            events.append(event)
    assert events == [command]
    assert conn.data_to_send() == b""


@FUZZ
@given(body=st.binary(max_size=3000), pieces=cuts, cut=cuts,
       threshold=st.none() | st.integers(1, 500))
def test_messages_round_trip(body: bytes, pieces: list[int], cut: list[int],
                             threshold: int | None) -> None:
    client = smtp.SmtpClientConnection()
    client.send(smtp.DataStart())
    client.receive_data(b"220 x\r\n354 go\r\n")
    client.next_event()
    client.next_event()
    wire = b"".join(client.send(smtp.DataPart(p)) for p in split(body, pieces))
    wire += client.send(smtp.DataEnd())
    assert wire == smtp.smtp_dot_stuff(body)
    conn = ready_server(SETUP[smtp.DataStart] + ["DATA"], max_line_length=10**6,
                        stream_threshold=threshold)
    got = b""
    done = []
    for chunk in split(wire, cut):
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not smtp.NEED_DATA:
            if isinstance(event, smtp.BlockChunk):
                got += event.data
            else:
                done.append(event)
                conn.ok()
    assert len(done) == 1 and isinstance(done[0], smtp.DataComplete)
    assert got + done[0].data == smtp.smtp_normalize(body)


reply_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF,
                                   blacklist_categories=("Cc", "Cs")), max_size=40)


@FUZZ
@given(code=st.sampled_from([250, 251, 421, 450, 451, 550, 554]),
       lines=st.lists(reply_text, min_size=1, max_size=4), detail=st.integers(0, 999),
       cut=cuts)
def test_replies_round_trip(code: int, lines: list[str], detail: int, cut: list[int]) -> None:
    conn = ready_server([])
    conn.receive_data(b"NOOP\r\n")
    conn.next_event()
    status = f"{code // 100}.{detail % 8}.{detail}"
    conn.reply(code, lines, status)
    client = smtp.SmtpClientConnection()
    client.receive_data(b"220 x\r\n")
    client.next_event()
    client.send(smtp.Noop())
    replies = []
    for chunk in split(conn.data_to_send(), cut):
        client.receive_data(chunk)
        while (reply := client.next_event()) is not smtp.NEED_DATA:
            replies.append(reply)
    assert replies == [smtp.Reply(code, [f"{status} {line}".rstrip(" ") for line in lines],
                                  "NOOP")]
    assert isinstance(replies[0], smtp.Reply) and replies[0].status == status


@FUZZ
@given(body=st.binary(max_size=2000), pieces=cuts)
def test_dot_stuffer_is_independent_of_the_cut(body: bytes, pieces: list[int]) -> None:
    stuffer = smtp.SmtpDotStuffer()
    wire = b"".join(stuffer.feed(p) for p in split(body, pieces)) + stuffer.end()
    assert wire == smtp.smtp_dot_stuff(body)
    # Nothing a lax receiver could take for the end: no bare CR or LF at all.
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")


def smtp_reference(wire: bytes) -> tuple[list[bytes], int] | None:
    """SMTP's reading of a message, one CRLF-ended line at a time: (the lines'
    contents, unstuffed; the offset past the terminator), None without one."""
    lines: list[bytes] = []
    pos = 0
    while (end := wire.find(b"\r\n", pos)) >= 0:
        line = wire[pos:end]
        pos = end + 2
        if line == b".":
            return lines, pos
        lines.append(line[1:] if line.startswith(b".") else line)
    return None


@FUZZ
@given(wire=BLOCK_PIECES, cut=near_cuts, takes=near_cuts, max_line=st.integers(3, 18),
       max_size=st.integers(0, 300))
def test_smtp_data_reader_matches_a_line_by_line_model(
        wire: bytes, cut: list[int], takes: list[int], max_line: int, max_size: int) -> None:
    """The SMTP reader, fed in any pieces (issue 15 item 4: plain ones pass
    as they are), ends where SMTP's reading ends, fails where a line holds a
    bare CR or LF or breaks a limit, and otherwise gives the content."""
    lines = LineBuffer(max_line)
    reader = smtp.SmtpDataReader(max_line, max_size)
    taken: list[bytes] = []
    fed = 0
    for chunk in split(wire + b"NEXT\r\n", cut):
        lines.feed(chunk)
        fed += len(chunk)
        if reader.done or reader.consume(lines):
            continue
        if any(fed - len(chunk) < t <= fed for t in takes):
            taken.append(reader.take())
    model = smtp_reference(wire)
    assert model is not None
    contents, _end = model
    assert reader.done
    bare = any(b"\r" in c or b"\n" in c for c in contents)
    too_long = any(len(c) > max_line - 2 for c in contents)
    size = sum(len(c) + 2 for c in contents)
    assert reader.failed == (bare or too_long or size > max_size)
    if reader.too_long_line:
        assert too_long or bare
    if reader.too_big:
        assert size > max_size or bare
    if not reader.failed:
        assert b"".join(taken) + reader.result() == b"".join(c + b"\r\n" for c in contents)
        assert reader.size == size
