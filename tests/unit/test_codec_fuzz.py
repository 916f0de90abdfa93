"""Property tests: hostile bytes into both server connections, and round trips.

The servers must never raise on peer input, must answer only with well-formed
reply lines, and must keep their buffers bounded; a client's bytes must come out
of the server as the very command the client sent.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smdp import terms
from smdp.protocol import peer, user
from smdp.protocol.framing import (
    LINE_TOO_LONG,
    DataBlockReader,
    LineBuffer,
    dot_stuff,
    dot_unstuff,
    normalize_line_ends,
)

# SMDP_FUZZ_EXAMPLES=5000 for a deeper run; the default keeps the suite quick.
FUZZ = settings(
    max_examples=int(os.environ.get("SMDP_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

ENVID = "abcdefghijklmnopqrstuvwxyz"
PEER_REPLY = re.compile(rb"[0-9]{3}[ -][^\r\n]*\r\n")
PEER_AUTO_REPLY = re.compile(rb"[0-9]{3} [^\r\n]*\r\n")
USER_REPLY = re.compile(rb"(\+OK|-ERR)( [^\r\n]*)?\r\n")
USER_AUTO_REPLY = re.compile(rb"-ERR [^\r\n]*\r\n")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for pos, kind, byte in edits:
        if not buf:
            buf.append(byte)
            continue
        pos %= len(buf)
        if kind == 0:
            buf[pos] = byte
        elif kind == 1:
            buf.insert(pos, byte)
        else:
            del buf[pos]
    return bytes(buf)


def assert_lines(out: bytes, pattern: re.Pattern[bytes]) -> None:
    for line in out.splitlines(keepends=True):
        assert pattern.fullmatch(line), (line, out)


# -- seeds: every command of both ports, plus block lines --------------------------

PEER_SEED_LINES = [
    "HELO b.example",
    "EHLO b.example",
    f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=100",
    f"MAIL From:<s@b.example> ID={ENVID} SIZE=5",
    f"MAIL From:<s@b.example> ID={ENVID}",
    "RCPT To:<r@here.example>",
    "RCPT To:<q@here.example>",
    "SIZE=5",
    "SIZE=999999",
    "DATA",
    f"ACCEPT {ENVID} To:<r@here.example>",
    f"AUTHORIZE {ENVID} To:<r@here.example> BODY=HELD",
    f"REJECT {ENVID} To:<r@here.example>",
    f"SPAM {ENVID} To:<r@here.example>",
    f"SPAMMER {ENVID} To:<r@here.example>",
    f"RECEIVED {ENVID}",
    "RSET",
    "NOOP",
    "QUIT",
    "STARTTLS",
    "Subject: hello",
    "..dotted",
    ".",
    "",
    "x" * 120,
]

USER_SEED_LINES = [
    "USER alice",
    "PASS secret",
    "PWD secret",
    "CAPA",
    "STAT",
    "LIST",
    "LIST 1",
    "UIDL",
    "RETR 1",
    "DELE 1",
    "DEL 2",
    "TOP 1 3",
    "NOOP",
    "RSET",
    "QUIT",
    "ENVS",
    "ENVS ALL",
    "ENV 3",
    "ACCEPT 3",
    "ACCEPT&AUTH 3",
    "REJECT 3",
    "REJECT&SPAM 3",
    "REJECT&SPAMMER 3",
    "MAIL",
    "MAIL FROM:<alice@here.example>",
    "RCPT TO:<bob@b.example>",
    "DATA",
    "SENT",
    "LISTS",
    "LISTADD in-white a@b.example mx.b.example",
    "LISTDEL out-black a@b.example",
    "IDENT",
    "STLS",
    "Subject: hi",
    "..dotted",
    ".",
    "",
    "y" * 120,
]


# Whole exchanges, so that random sessions reach the deeper states often.
PEER_FRAGMENTS = [
    [
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=100",
        "RCPT To:<r@here.example>",
        "DATA",
        "Subject: hi",
        "..dot",
        ".",
    ],
    [
        f"MAIL From:<s@b.example> ID={ENVID}",
        "RCPT To:<r@here.example>",
        "SIZE=5",
        "DATA",
        "abc",
        ".",
    ],
    [
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1",
        "RCPT To:<r@here.example>",
        "RCPT To:<q@here.example>",
        "RCPT To:<p@here.example>",
        "DATA",
        "x" * 59,
        "y" * 150,
        "z" * 80,
        ".",
    ],
    [f"ACCEPT {ENVID} To:<r@here.example>", f"RECEIVED {ENVID}"],
]
USER_FRAGMENTS = [
    ["MAIL", "RCPT TO:<bob@b.example>", "DATA", "Subject: hi", "", "..x", "."],
    ["MAIL", "RCPT TO:<a@b.example>", "RCPT TO:<b@b.example>", "RCPT TO:<c@b.example>", "DATA"]
    + ["w" * 58] * 5
    + ["."],
    ["PWD secret", "RETR 1", "TOP 1 0", "LIST", "UIDL 1"],
]


def session(
    lines: list[str], fragments: list[list[str]], prefix: list[str]
) -> st.SearchStrategy[bytes]:
    pieces = st.sampled_from(lines).map(lambda line: [line]) | st.sampled_from(fragments)
    return st.tuples(
        st.booleans(),
        st.lists(pieces, max_size=25),
        st.sampled_from(["\r\n", "\n"]),
    ).map(
        lambda t: "".join(
            line + t[2] for line in (prefix if t[0] else []) + [x for p in t[1] for x in p]
        ).encode()
    )


edits = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.integers(0, 255)), max_size=8
)
cuts = st.lists(st.integers(0, 10_000), max_size=20)
hostile_peer = st.one_of(
    st.binary(max_size=1500),
    session(PEER_SEED_LINES, PEER_FRAGMENTS, ["EHLO b.example"]),
    st.tuples(session(PEER_SEED_LINES, PEER_FRAGMENTS, ["EHLO b.example"]), edits).map(
        lambda t: mutate(*t)
    ),
)
hostile_user = st.one_of(
    st.binary(max_size=1500),
    session(USER_SEED_LINES, USER_FRAGMENTS, ["USER alice", "PASS secret"]),
    st.tuples(session(USER_SEED_LINES, USER_FRAGMENTS, ["USER alice", "PASS secret"]), edits).map(
        lambda t: mutate(*t)
    ),
)


# -- the peer server under hostile input ------------------------------------------


def peer_app(conn: peer.PeerServerConnection, event: object, rng: random.Random) -> bytes:
    yes = rng.random() < 0.8
    match event:
        case peer.DataFailed():
            return b""
        case peer.DataStart():
            conn.reply(354 if yes else 451, "go ahead" if yes else "4.3.1 later")
        case peer.Quit():
            conn.reply(221 if yes else 554, "bye")
        case peer.Decision() if event.wants_body and yes:
            conn.send_body(150, "n octets follow", b"a\n.b\n")
            out = conn.data_to_send()
            assert out == b"150 n octets follow\r\na\r\n..b\r\n.\r\n"
            return b""
        case peer.Helo() if yes:
            conn.reply(250, ["here hello", "SMDP 1", "SIZE 200", "STARTTLS"])
        case peer.StartTls():
            conn.reply(220 if yes else 454, "2.0.0 Ready" if yes else "4.7.0 TLS not available")
        case _:
            conn.reply(250 if yes else 550, "2.0.0 OK" if yes else "5.7.1 no")
    return conn.data_to_send()


@FUZZ
@given(data=hostile_peer, cut=cuts, seed=st.integers(0, 2**32))
def test_peer_server_survives_hostile_input(data: bytes, cut: list[int], seed: int) -> None:
    rng = random.Random(seed)
    conn = peer.PeerServerConnection(
        "here.example",
        max_message_size=200,
        max_recipients=2,
        max_command_line=80,
        max_line_length=60,
    )
    bound = 80 + 2
    chunks = [*split(data, cut), b""]
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            assert_lines(conn.data_to_send(), PEER_AUTO_REPLY)
            if event is peer.NEED_DATA:
                assert conn.buffered <= bound
                break
            if event is peer.CLOSED:
                break
            assert_lines(peer_app(conn, event, rng), PEER_REPLY)
        if conn.state is peer.PeerState.CLOSED:
            break
    assert conn.next_event() is peer.CLOSED


# -- the user server under hostile input ------------------------------------------


def user_app(conn: user.UserServerConnection, event: object, rng: random.Random) -> bytes:
    if isinstance(event, user.MessageFailed):
        return b""
    if rng.random() < 0.25:
        conn.err("refused")
        out = conn.data_to_send()
        assert out == b"-ERR refused\r\n"
        return out
    if isinstance(event, user.Retr | user.Top):
        conn.ok_block("follows", b".x\ny")
        assert conn.data_to_send() == b"+OK follows\r\n..x\r\ny\r\n.\r\n"
        return b""
    if user.answers_multiline(event):  # type: ignore[arg-type]
        conn.ok("listing", ["a", ".b"])
        assert conn.data_to_send() == b"+OK listing\r\na\r\n..b\r\n.\r\n"
        return b""
    conn.ok("done")
    return conn.data_to_send()


@FUZZ
@given(data=hostile_user, cut=cuts, seed=st.integers(0, 2**32))
def test_user_server_survives_hostile_input(data: bytes, cut: list[int], seed: int) -> None:
    rng = random.Random(seed)
    conn = user.UserServerConnection(
        "here.example",
        max_message_size=200,
        max_recipients=2,
        max_command_line=80,
        max_line_length=60,
    )
    bound = 80 + 2
    for chunk in [*split(data, cut), b""]:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            assert_lines(conn.data_to_send(), USER_AUTO_REPLY)
            if event is user.NEED_DATA:
                assert conn.buffered <= bound
                break
            if event is user.CLOSED:
                break
            assert_lines(user_app(conn, event, rng), USER_REPLY)
        if conn.state is user.UserState.CLOSED:
            break
    assert conn.next_event() is user.CLOSED


# -- clients under hostile input: only the documented error escapes ---------------


@FUZZ
@given(data=st.binary(max_size=800), cut=cuts)
def test_clients_raise_only_remote_protocol_error(data: bytes, cut: list[int]) -> None:
    pc = peer.PeerClientConnection(max_line_length=100, max_message_size=100)
    pc.send(peer.Decision(terms.Decision.ACCEPT, ENVID, "r@a.example"))
    uc = user.UserClientConnection(max_line_length=100, max_message_size=100)
    uc.send(user.Retr(1))
    uc.send(user.ListCmd())
    for client in (pc, uc):
        try:
            for chunk in split(data, cut):
                client.receive_data(chunk)
                while client.next_event() not in (peer.NEED_DATA, peer.CLOSED):
                    pass
                assert client.buffered <= 102
        except peer.RemoteProtocolError:
            pass


# -- round trips: client bytes -> server events -----------------------------------

atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
atom = st.text(atext, min_size=1, max_size=8)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
domains = st.lists(label, min_size=1, max_size=4).map(".".join)
mailboxes = st.builds(
    lambda local, domain: f"{'.'.join(local)}@{domain}",
    st.lists(atom, min_size=1, max_size=3),
    domains,
)
envids = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=26, max_size=26)
sizes = st.integers(0, 10_000)
bodies = st.binary(max_size=3000)

peer_commands = st.one_of(
    st.builds(peer.Helo, domains, st.booleans()),
    st.builds(peer.EnvelopeStart, mailboxes, envids, st.none() | sizes),
    st.builds(peer.MailStart, mailboxes, envids, st.none() | sizes),
    st.builds(peer.Rcpt, mailboxes),
    st.builds(peer.SizeDecl, sizes),
    st.just(peer.DataStart()),
    st.builds(peer.Data, bodies),
    st.builds(
        peer.Decision,
        st.sampled_from(
            [terms.Decision.REJECT, terms.Decision.REJECT_SPAM, terms.Decision.REJECT_SPAMMER]
        ),
        envids,
        mailboxes,
    ),
    st.builds(
        peer.Decision,
        st.sampled_from([terms.Decision.ACCEPT, terms.Decision.ACCEPT_AUTH]),
        envids,
        mailboxes,
        st.booleans(),
    ),
    st.builds(peer.Received, envids),
    st.just(peer.Rset()),
    st.just(peer.Noop()),
    st.just(peer.Quit()),
    st.just(peer.StartTls()),
)

PEER_SETUP = {
    peer.PeerState.GREETED: [],
    peer.PeerState.READY: ["HELO b.example"],
    peer.PeerState.TXN_STARTED: [
        "HELO b.example",
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1",
    ],
    peer.PeerState.TXN_RCPT: [
        "HELO b.example",
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1",
        "RCPT To:<r@here.example>",
    ],
    peer.PeerState.DATA_IN: [
        "HELO b.example",
        f"ENVELOPE From:<s@b.example> ID={ENVID} SIZE=1",
        "RCPT To:<r@here.example>",
        "DATA",
    ],
}


def peer_server_in(state: peer.PeerState) -> peer.PeerServerConnection:
    conn = peer.PeerServerConnection("here.example", max_message_size=10**6, max_recipients=100)
    for line in PEER_SETUP[state]:
        conn.receive_data(line.encode() + b"\r\n")
        event = conn.next_event()
        conn.reply(354 if isinstance(event, peer.DataStart) else 250, "ok")
    assert conn.state is state
    conn.data_to_send()
    return conn


@FUZZ
@given(command=peer_commands, cut=cuts, data=st.data())
def test_peer_round_trip(command: peer.PeerCommand, cut: list[int], data: st.DataObject) -> None:
    client = peer.PeerClientConnection()
    wire = client.send(command)
    if isinstance(command, peer.Data):
        state = peer.PeerState.DATA_IN
        expected: object = peer.DataComplete(normalize_line_ends(command.body))
    else:
        verb = type(command).__name__
        allowed = [
            s
            for s, row in peer.TRANSITIONS.items()
            for cmd in row
            if s in PEER_SETUP and cmd == wire.split(b" ")[0].split(b"=")[0].strip().decode()
        ]
        assert allowed, verb
        state = data.draw(st.sampled_from(allowed))
        expected = command
    conn = peer_server_in(state)
    events = []
    for chunk in split(wire, cut):
        conn.receive_data(chunk)
        event = conn.next_event()
        if event is not peer.NEED_DATA:
            events.append(event)
    assert events == [expected]
    assert conn.data_to_send() == b""


user_commands = st.one_of(
    st.builds(user.User, st.text(string.ascii_letters + "@.-_", min_size=1, max_size=30)),
    st.builds(
        user.Pass,
        st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x2FF, exclude_characters="\x7f"),
            min_size=1,
            max_size=20,
        ).flatmap(lambda head: st.text(" ab\u00e9", max_size=5).map(lambda tail: head + tail)),
        st.sampled_from(["PASS", "PWD"]),
    ),
    st.just(user.Capa()),
    st.just(user.Stat()),
    st.builds(user.ListCmd, st.none() | st.integers(1, 10**9)),
    st.builds(user.Uidl, st.none() | st.integers(1, 10**9)),
    st.builds(user.Retr, st.integers(1, 10**9)),
    st.builds(user.Dele, st.integers(1, 10**9)),
    st.builds(user.Top, st.integers(1, 10**9), st.integers(0, 10**9)),
    st.just(user.Noop()),
    st.just(user.Rset()),
    st.just(user.Quit()),
    st.builds(user.Envs, st.booleans()),
    st.builds(user.EnvShow, st.integers(1, 10**9)),
    st.builds(user.UserDecision, st.sampled_from(list(terms.Decision)), st.integers(1, 10**9)),
    st.builds(user.MailCmd, st.none() | mailboxes),
    st.builds(user.RcptCmd, mailboxes),
    st.just(user.DataCmd()),
    st.builds(user.Message, bodies),
    st.builds(user.Sent, st.none() | st.from_regex(r"[!-~]{1,40}", fullmatch=True)),
    st.just(user.Lists()),
    st.builds(
        user.ListAdd, st.sampled_from(["in-white", "in-black"]), mailboxes, st.none() | domains
    ),
    st.builds(user.ListDel, st.sampled_from(["out-white", "out-black"]), mailboxes),
    st.just(user.Ident()),
    st.just(user.Stls()),
)

USER_SETUP = {
    user.UserState.AUTHORIZATION: [],
    user.UserState.AUTH_PASS: ["USER alice"],
    user.UserState.TRANSACTION: ["USER alice", "PASS pw"],
    user.UserState.COMPOSE: ["USER alice", "PASS pw", "MAIL"],
    user.UserState.COMPOSE_RCPT: ["USER alice", "PASS pw", "MAIL", "RCPT TO:<b@c.example>"],
    user.UserState.COMPOSE_DATA: [
        "USER alice",
        "PASS pw",
        "MAIL",
        "RCPT TO:<b@c.example>",
        "DATA",
    ],
}


def user_server_in(state: user.UserState) -> user.UserServerConnection:
    conn = user.UserServerConnection("here.example", max_message_size=10**6, max_recipients=100)
    for line in USER_SETUP[state]:
        conn.receive_data(line.encode() + b"\r\n")
        assert conn.next_event() is not user.NEED_DATA
        conn.ok("ok")
    assert conn.state is state
    conn.data_to_send()
    return conn


def _user_verb(wire: bytes) -> str:
    verb = wire.split(b"\r\n")[0].split(b" ")[0].decode().upper()
    return {"DEL": "DELE", "PWD": "PASS"}.get(verb, verb)


@FUZZ
@given(command=user_commands, cut=cuts, data=st.data())
def test_user_round_trip(command: user.UserCommand, cut: list[int], data: st.DataObject) -> None:
    client = user.UserClientConnection()
    wire = client.send(command)
    if isinstance(command, user.Message):
        state = user.UserState.COMPOSE_DATA
        expected: object = user.MessageComplete(normalize_line_ends(command.body))
    else:
        verb = _user_verb(wire)
        allowed = [s for s, row in user.TRANSITIONS.items() if s in USER_SETUP and verb in row]
        assert allowed, verb
        state = data.draw(st.sampled_from(allowed))
        expected = command
    conn = user_server_in(state)
    events = []
    for chunk in split(wire, cut):
        conn.receive_data(chunk)
        event = conn.next_event()
        if event is not user.NEED_DATA:
            events.append(event)
    assert events == [expected]
    assert conn.data_to_send() == b""


# -- framing properties -----------------------------------------------------------


@FUZZ
@given(body=st.binary(max_size=5000) | session(PEER_SEED_LINES, PEER_FRAGMENTS, []), cut=cuts)
def test_dot_stuff_round_trip(body: bytes, cut: list[int]) -> None:
    wire = dot_stuff(body)
    normal = normalize_line_ends(body)
    assert dot_unstuff(wire, max_line=1 << 30, max_size=1 << 62) == normal
    assert normal == b"" or normal.endswith(b"\r\n")
    assert b"\n" not in normal.replace(b"\r\n", b"")
    lines = LineBuffer(10**6)
    reader = DataBlockReader(10**6, 10**9)
    for chunk in split(wire + b"NEXT\r\n", cut):
        lines.feed(chunk)
        reader.consume(lines)
    assert reader.done and reader.result() == normal
    assert reader.size == len(normal)
    assert lines.next_line() == b"NEXT"


def reference_lines(data: bytes, max_line: int) -> list[object]:
    out: list[object] = []
    for piece in data.split(b"\n")[:-1]:
        content = piece[:-1] if piece.endswith(b"\r") else piece
        out.append(content if len(content) <= max_line - 2 else LINE_TOO_LONG)
    return out


@FUZZ
@given(
    data=st.lists(
        st.binary(max_size=40) | st.sampled_from([b"\r\n", b"\n", b"\r", b"x" * 30]), max_size=40
    ).map(b"".join),
    cut=cuts,
    max_line=st.integers(3, 40),
)
def test_line_buffer_matches_a_simple_model(data: bytes, cut: list[int], max_line: int) -> None:
    buf = LineBuffer(max_line)
    got: list[object] = []
    for chunk in split(data, cut):
        buf.feed(chunk)
        while (line := buf.next_line()) is not None:
            got.append(line)
        assert buf.buffered <= max_line
    assert got == reference_lines(data, max_line)


def reference_block(wire: bytes, max_line: int) -> tuple[list[bytes], int] | None:
    """The block a data reader should give for ``wire``, one line at a time:
    (its lines' contents, unstuffed; the offset just past the terminator), or
    None when ``wire`` holds no terminator."""
    lines: list[bytes] = []
    pos = 0
    while (lf := wire.find(b"\n", pos)) >= 0:
        raw = wire[pos:lf]
        pos = lf + 1
        content = raw[:-1] if raw.endswith(b"\r") else raw
        if content == b".":
            return lines, pos
        lines.append(content[1:] if content.startswith(b".") else content)
    return None


# Octets that matter to the reader's fast path (issue 15 item 4): line ends of
# both kinds, CRs, dots at line starts, lines about the limit's length.
BLOCK_PIECES = st.lists(
    # Plain lines most of the time, so that whole pieces of the wire have none
    # of the rest and go the fast way.
    st.sampled_from([b"\r\n", b"x" * 9 + b"\r\n", b"y" * 14 + b"\r\n", b"ab"])
    | st.sampled_from([b"\n", b"\r", b".", b"..", b"\r\n.", b"\n.", b"\r\n.\r\n"])
    | st.binary(max_size=12),
    max_size=60,
).map(lambda pieces: b"".join(pieces) + b"\r\n.\r\n")  # ended, if nothing ended it before
near_cuts = st.lists(st.integers(0, 300), max_size=30)


@FUZZ
@given(wire=BLOCK_PIECES, cut=near_cuts, takes=near_cuts, max_line=st.integers(3, 18),
       max_size=st.integers(0, 300))
def test_data_block_reader_matches_a_line_by_line_model(
        wire: bytes, cut: list[int], takes: list[int], max_line: int, max_size: int) -> None:
    """The reader, fed in any pieces and taken from at any points, gives what
    reading the block line by line gives: the same content, size and limits."""
    lines = LineBuffer(max_line)
    reader = DataBlockReader(max_line, max_size)
    taken: list[bytes] = []
    fed = 0
    for chunk in split(wire + b"NEXT\r\n", cut):
        lines.feed(chunk)
        fed += len(chunk)
        if reader.done or reader.consume(lines):
            continue  # the rest only fed: it stays for the commands
        if any(fed - len(chunk) < t <= fed for t in takes):
            taken.append(reader.take())
    model = reference_block(wire, max_line)
    assert model is not None
    contents, end = model
    assert reader.done
    too_long = any(len(c) > max_line - 2 for c in contents)
    size = sum(len(c) + 2 for c in contents)
    assert reader.failed == (too_long or size > max_size)
    if reader.too_long_line:
        assert too_long
    if reader.too_big:
        assert size > max_size
    if not reader.failed:
        assert b"".join(taken) + reader.result() == b"".join(c + b"\r\n" for c in contents)
        assert reader.size == size
    # What follows the terminator stays buffered, to the octet.
    rest = (wire + b"NEXT\r\n")[end:]
    first = rest.split(b"\n", 1)[0].removesuffix(b"\r")
    if len(first) <= max_line - 2:
        assert lines.next_line() == first
