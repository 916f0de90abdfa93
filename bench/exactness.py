"""Differential check of the 'large' and 'extract' merges against 4a433bf.

    .venv/bin/python -m bench.exactness [EXAMPLES] [AREA ...]

Each area runs hypothesis with EXAMPLES examples (default 20,000), the old
revision's package (bench/revision.py) and the working tree's on the same
input, and requires equal results: the block readers (SMDP and SMTP, pieces
cut anywhere, small and real limits, take() as the ports stream), the
stuffers, submission's line ends with Body.no_bare_lf as the sessions set it,
prepare_submission_body, scan_header with and without keep, phrase_text and
display_name, _clean and _headline, the delimiter search, whole envelopes
(bytes and skeleton), long texts' headlines, and whole SMTP sessions.
"""

from __future__ import annotations

import dataclasses
import sys
import traceback
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smdp.core.envelope as new_env
import smdp.core.submission as new_sub
import smdp.mail.body as new_body
import smdp.mail.mime.header_text as new_ht
import smdp.mail.mime.headers as new_hd
import smdp.mail.mime.walk as new_walk
import smdp.protocol.framing as new_fr
import smdp.protocol.smtp.data as new_sd
from bench.revision import module_at

REV = "4a433bf"
old_fr = module_at(REV, "smdp.protocol.framing")
old_sd = module_at(REV, "smdp.protocol.smtp.data")
old_sub = module_at(REV, "smdp.core.submission")
old_body = module_at(REV, "smdp.mail.body")
old_env = module_at(REV, "smdp.core.envelope")
old_ht = module_at(REV, "smdp.mail.mime.header_text")
old_hd = module_at(REV, "smdp.mail.mime.headers")
old_walk = module_at(REV, "smdp.mail.mime.walk")


def _run(fn: Callable[..., Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # the same exception type is "the same result"
        return ("raise", type(exc).__name__)


# -- wire bytes -----------------------------------------------------------------

WIRE_TOKENS = [b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n.\r\n", b"\n.\n",
               b"\n.\r\n", b".\r\n", b"a", b"abc", b"xyzxyzxyz", b"-", b" ", b"\r\r\n",
               b"\n\r", b"\xff", b"\r\n..", b"\r\n.\r"]
wire = st.lists(st.sampled_from(WIRE_TOKENS), max_size=40).map(b"".join)


@st.composite
def cut(draw: st.DrawFn, data: bytes) -> list[bytes]:
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


@st.composite
def reader_case(draw: st.DrawFn) -> tuple[list[bytes], int, int, int | None, bool]:
    data = draw(wire)
    if draw(st.booleans()):
        data += draw(st.sampled_from([b"\r\n.\r\n", b".\r\n", b"\n.\n"])) + draw(wire)
    pieces = draw(cut(data))
    max_line = draw(st.integers(3, 24))
    max_size = draw(st.integers(0, 300))
    threshold = draw(st.none() | st.integers(1, 40))
    smtp = draw(st.booleans())
    return pieces, max_line, max_size, threshold, smtp


def run_reader(fr: Any, sd: Any, case: Any) -> list[Any]:
    pieces, max_line, max_size, threshold, smtp = case
    lines = fr.LineBuffer(max_line)
    reader = (sd.SmtpDataReader if smtp else fr.DataBlockReader)(max_line, max_size)
    trace: list[Any] = []
    done = False
    for piece in pieces:
        lines.feed(piece)
        if done:
            continue
        done = reader.consume(lines)
        rec = [done, reader.size, reader.too_long_line, reader.too_big,
               getattr(reader, "bare_line_end", None), reader.held, bytes(lines._buf),
               reader._skipping]
        if threshold is not None and not done and reader.held >= threshold:
            rec.append(reader.take())
        trace.append(rec)
    if done:
        trace.append(_run(reader.result))
    trace.append(bytes(lines._buf))
    return trace


def check_reader_output_crlf(case: Any) -> None:
    """The hint Body.no_bare_lf relies on: every LF the new readers hand out ends a CRLF."""
    pieces, max_line, max_size, threshold, smtp = case
    lines = new_fr.LineBuffer(max_line)
    reader = (new_sd.SmtpDataReader if smtp else new_fr.DataBlockReader)(max_line, max_size)
    out = []
    for piece in pieces:
        lines.feed(piece)
        if reader.consume(lines):
            if not reader.failed:
                out.append(reader.result())
            break
        if threshold is not None and reader.held >= threshold:
            out.append(reader.take())
    whole = b"".join(out)
    assert whole.count(b"\n") == whole.count(b"\r\n"), whole


# -- stuffers -----------------------------------------------------------------

BODY_TOKENS = [b".", b"\r", b"\n", b"\r\n", b"\n.", b"\r\n.", b"a", b"bc", b"..", b" "]
body_bytes = st.lists(st.sampled_from(BODY_TOKENS), max_size=40).map(b"".join)


def run_stuffer(cls: Any, pieces: list[bytes]) -> list[bytes]:
    s = cls()
    return [s.feed(p) for p in pieces] + [s.end()]


# -- line ends / submission ---------------------------------------------------

def run_line_ends(mod: Any, pieces: list[bytes], hint: bool) -> list[bytes]:
    le = mod._LineEnds(no_bare_lf=hint) if hint else mod._LineEnds()
    return [le.feed(p) for p in pieces] + [le.end()]


# -- MIME -----------------------------------------------------------------------

def _case(draw: st.DrawFn, name: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in name)


EOLS = ["\r\n", "\n", "\r"]
NAMES = ["Subject", "From", "To", "Cc", "Date", "List-Id", "Auto-Submitted",
         "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type",
         "Content-Transfer-Encoding", "Content-Disposition", "Received", "X-To",
         "To-X", "MIME-Version"]
VALUE_TEXT = st.sampled_from([
    "hello", "Re: x", "=?utf-8?q?caf=C3=A9?=", "=?iso-8859-1?b?Y2Fm6Q==?=", "\"A B\" <a@b>",
    "a@b, c@d", "(c) x", "\"x\\\"y\" <q@r>", "  ", "", "caf\u00e9", "<l.example.org>",
    "auto-replied", "List-Unsubscribe=One-Click", "<mailto:u@x>", "x\ty", "\u202etxt",
    "Name (Comment) <a@b>", "\"\" Angles \" Puglisi\" <p@q>", "a\x0bb", "\x1c\x1d",
    "text/plain; charset=utf-8", "multipart/mixed; boundary=\"b\"", "base64",
    "quoted-printable", "attachment; filename=\"r-e-p.pdf\"", "\u00ff\u00fe",
])


@st.composite
def header(draw: st.DrawFn, extra: list[str] = ()) -> str:  # type: ignore[assignment]
    eol = draw(st.sampled_from(EOLS))
    out = []
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=7)) + list(extra):
        if name.startswith("\x00"):
            n, value = "Content-Type", name[1:]
        else:
            n, value = name, draw(VALUE_TEXT)
        n = _case(draw, n)
        blank = draw(st.sampled_from(["", " ", "\t", " \t"]))
        fold = draw(st.sampled_from(["", eol + " more", eol + "\tmore" + eol + " x"]))
        sp = draw(st.sampled_from([" ", "", "  "]))
        out.append(f"{n}{blank}:{sp}{value}{fold}{draw(st.sampled_from(EOLS + [eol] * 3))}")
    if draw(st.booleans()):
        out.append(draw(st.sampled_from(["not a field", " continuation", "From x", ""])) + eol)
    return "".join(out)


TEXT_LINES = st.sampled_from([
    "Hello there", "> quoted", "On Mon, A wrote:", "On Mon, 1 Jan 2020,", "A B wrote:",
    "-- ", "--", "-----Original Message-----", "From: x", "_____", "=====", "--- x ---",
    "", " ", "caf\u00e9", "\u202eevil", "x" * 90, "line\ttab", ">>", "Le 1 janv., X a écrit :",
    "----", "--b", "--b--", "-", "+++ a +++", "\u00a0nbsp", "\x00nul",
])


@st.composite
def text_body(draw: st.DrawFn) -> str:
    eol = draw(st.sampled_from(EOLS))
    lines = draw(st.lists(TEXT_LINES, max_size=14))
    return eol.join(lines) + draw(st.sampled_from(["", eol]))


BOUNDARIES = ["b", "-b", "--", "b-", "a-b--c", "----=_Part_1", "-", "=_x", "xx"]


@st.composite
def entity(draw: st.DrawFn, depth: int = 0) -> str:
    eol = draw(st.sampled_from(EOLS))
    if depth < 2 and draw(st.integers(0, 2)) == 0:
        b = draw(st.sampled_from(BOUNDARIES))
        sub = draw(st.sampled_from(["mixed", "alternative", "digest"]))
        head = draw(header(extra=[f"\x00multipart/{sub}; boundary=\"{b}\""]))
        parts = draw(st.lists(entity(depth + 1), max_size=3))
        pre = draw(st.sampled_from(["", "preamble" + eol, "--" + b + "x" + eol, "-" * 5 + eol]))
        body = pre
        for p in parts:
            body += "--" + b + draw(st.sampled_from(["", " ", "\t"])) + eol + p + eol
        if draw(st.booleans()):
            body += "--" + b + "--" + draw(st.sampled_from(["", eol, " " + eol]))
        body += draw(st.sampled_from(["", "epilogue", eol + "--" + b + eol + "late"]))
        return head + eol + body
    ct = draw(st.sampled_from(["text/plain", "text/html", "text/plain; charset=iso-8859-1",
                               "application/pdf; name=\"a-b.pdf\"", "message/rfc822"]))
    head = draw(header(extra=["\x00" + ct]))
    body = draw(text_body())
    if ct == "text/html":
        body = "<p>" + body + "</p>"
    return head + draw(st.sampled_from([eol, ""])) + body


message = st.builds(lambda s, e: s.encode(e, "replace"), entity(),
                    st.sampled_from(["utf-8", "latin-1"]))
raw_message = st.one_of(message, st.binary(max_size=200), st.lists(
    st.sampled_from([b"-", b"--", b"b", b"\r\n", b"\n", b"Content-Type: multipart/mixed; "
                     b"boundary=b\n\n", b"--b\n", b"--b--\n", b"x", b"\r"]),
    max_size=30).map(b"".join))


def fields_of(block: Any) -> Any:
    return ([(f.name, f.value, f.start, f.end) for f in block.fields], block.end,
            block.body_start, block.separator, block.truncated)


def walk_of(w: Any) -> Any:
    return ([(f.name, f.value, f.start, f.end) for f in w.fields], w.values, w.parts,
            w.attachments, w.names,
            None if w.plain is None else dataclasses.astuple(w.plain),
            None if w.html is None else dataclasses.astuple(w.html))


# -- the areas ----------------------------------------------------------------

FAILS: list[str] = []


def area(fn: Callable[[int], Callable[[], None]]) -> Callable[[int], None]:
    def runner(n: int) -> None:
        test = fn(n)
        try:
            test()
            print(f"{fn.__name__}: {n} examples, no difference", flush=True)
        except Exception:
            FAILS.append(fn.__name__)
            print(f"{fn.__name__}: DIFFERENCE", flush=True)
            traceback.print_exc()
    runner.__name__ = fn.__name__
    return runner


def cfg(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@area
def readers(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(reader_case())
    def t(case: Any) -> None:
        a, b = run_reader(old_fr, old_sd, case), run_reader(new_fr, new_sd, case)
        assert a == b, (case, a, b)
        check_reader_output_crlf(case)
    return t


@area
def stuffers(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(st.data())
    def t(data: Any) -> None:
        body = data.draw(body_bytes)
        pieces = data.draw(cut(body))
        for o, c in ((old_fr.DotStuffer, new_fr.DotStuffer),
                     (old_sd.SmtpDotStuffer, new_sd.SmtpDotStuffer)):
            a, b = run_stuffer(o, pieces), run_stuffer(c, pieces)
            assert a == b, (c, pieces, a, b)
    return t


@area
def line_ends(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(st.data())
    def t(data: Any) -> None:
        body = data.draw(body_bytes)
        hint = body.count(b"\n") == body.count(b"\r\n")  # the hint when true
        pieces = data.draw(cut(body))
        a = b"".join(run_line_ends(old_sub, pieces, False))
        b = b"".join(run_line_ends(new_sub, pieces, hint))
        assert a == b, (pieces, hint, a, b)
    return t


@area
def submission(n: int) -> Callable[[], None]:
    kw = dict(identities=["a@example.org"], sender="a@example.org",
              hostname="mx.example.org",
              now=__import__("datetime").datetime(2026, 1, 1,
                                                  tzinfo=__import__("datetime").timezone.utc))

    @cfg(n)
    @given(st.data())
    def t(data: Any) -> None:
        head = data.draw(st.sampled_from([b"Subject: x\r\n\r\n", b"From: a@example.org\r\n\r\n",
                                          b"", b"Subject: y\r\n", b"From x\r\nTo: b\r\n\r\n"]))
        body = head + data.draw(body_bytes)
        hint = body.count(b"\n") == body.count(b"\r\n")
        pieces = data.draw(cut(body))
        ob = old_body.Body(pieces)
        nb = new_body.Body(pieces, no_bare_lf=hint)
        a = _run(lambda: old_sub.prepare_submission_body(ob, **kw).read())
        b = _run(lambda: new_sub.prepare_submission_body(nb, **kw).read())
        # Message-ID differs by a random token: compare all but that line.
        def strip(r: Any) -> Any:
            if r[0] != "ok":
                return r
            return b"\n".join(x for x in r[1].split(b"\n") if not x.lower().startswith(
                b"message-id"))
        assert strip(a) == strip(b), (pieces, hint, a, b)
        # Body itself
        for size in (1, 2, 3, 7, 1 << 18):
            assert list(old_body.Body(pieces).chunks(size)) == list(nb.chunks(size))
            assert [bytes(v) for v in nb.views(size)] == list(nb.chunks(size))
        assert old_body.Body(pieces).read() == nb.read()
    return t


@area
def headers(n: int) -> Callable[[], None]:
    keeps = [None, frozenset({"to", "cc", "subject"}), frozenset({"content-type"}),
             new_walk.MIME_FIELDS | {"to", "from", "list-id"}, frozenset({"x"})]

    @cfg(n)
    @given(raw_message, st.sampled_from(keeps), st.none() | st.integers(0, 60),
           st.integers(0, 5))
    def t(data: bytes, keep: Any, limit: Any, start: int) -> None:
        start = min(start, len(data))
        a = _run(lambda: fields_of(old_hd.scan_header(data, start, keep=keep, limit=limit)))
        b = _run(lambda: fields_of(new_hd.scan_header(data, start, keep=keep, limit=limit)))
        assert a == b, (data, keep, limit, a, b)
    return t


@area
def phrases(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(st.text(alphabet=st.sampled_from(list(' \t\r\n"()\\<>abc=?\x0b\x1c\x85\u00e9.,;:@')),
                   max_size=30))
    def t(text: str) -> None:
        assert _run(lambda: old_ht.phrase_text(text)) == _run(lambda: new_ht.phrase_text(text))
        raw = text.encode("utf-8")
        assert _run(lambda: old_ht.display_name(raw)) == _run(lambda: new_ht.display_name(raw))
    return t


@area
def clean(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(st.text(max_size=60), st.integers(0, 20), st.integers(0, 80))
    def t(text: str, chars: int, octets: int) -> None:
        assert old_env._clean(text, chars, octets) == new_env._clean(text, chars, octets)
        assert old_env._headline(text) == new_env._headline(text)
        assert old_env._headline(text * 40) == new_env._headline(text * 40)
    return t


@area
def delimiter(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(st.lists(st.sampled_from([b"-", b"--", b"b", b"-b", b"x", b"\n"]), max_size=40)
           .map(b"".join), st.sampled_from([b"--b", b"---", b"--", b"--b-", b"----"]),
           st.integers(0, 10), st.integers(0, 80), st.integers(1, 6))
    def t(data: bytes, delim: bytes, pos: int, end: int, window: int) -> None:
        assert data.find(delim, pos, end) == new_walk._find_delimiter(data, delim, pos, end,
                                                                      window)
    return t


@area
def envelopes(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(raw_message, st.integers(0, 3), st.sampled_from([1, 2, 5, 64]))
    def t(data: bytes, headlines: int, chunk: int) -> None:
        a = _run(lambda: dataclasses.astuple(old_env._extract(data, headlines)))
        b = _run(lambda: dataclasses.astuple(new_env._extract(data, headlines)))
        assert a == b, (data, headlines, a, b)
        w = _run(lambda: walk_of(old_walk.walk_message(data, keep=frozenset({"to"}))))
        v = _run(lambda: walk_of(new_walk.walk_message(data, keep=frozenset({"to"}))))
        assert w == v, (data, w, v)
        body_a = old_body.Body([data[i:i + chunk] for i in range(0, len(data), chunk)])
        body_b = new_body.Body([data[i:i + chunk] for i in range(0, len(data), chunk)])
        a = _run(lambda: dataclasses.astuple(old_env._extract_body(body_a, headlines, chunk)))
        b = _run(lambda: dataclasses.astuple(new_env._extract_body(body_b, headlines, chunk)))
        assert a == b, (data, headlines, chunk, a, b)
    return t


AREAS = {f.__name__: f for f in (readers, stuffers, line_ends, submission, headers, phrases,
                                  clean, delimiter, envelopes)}


def main() -> int:
    args = sys.argv[1:]
    n = int(args[0]) if args else 20_000
    for name in args[1:] or list(AREAS):
        AREAS[name](n)
    print("differences in:", FAILS or "none")
    return 1 if FAILS else 0



# -- long texts: the one-pass headlines against the growing-prefix scan ---------

LONG_LINES = st.sampled_from([
    "Hello there", "> quoted", "On Mon, A wrote:", "-- ", "-----Original Message-----",
    "From: x", "=====", "", "caf\u00e9", "x" * 300, "y" * 3000, "z" * 9000, "\u00e9t\u00e9",
    "A B wrote:", ">", "On 1 Jan,", "text with a -- dash",
])


@st.composite
def long_message(draw: st.DrawFn) -> bytes:
    sep = draw(st.sampled_from(["\n", "\r\n", "\r", "\x0c", "\u2028", "\x85"]))
    lines = draw(st.lists(LONG_LINES, max_size=260))
    if draw(st.booleans()):
        # Few lines in the first step's 8 KiB, the rest after a long line.
        lines = [*draw(st.lists(LONG_LINES.filter(lambda x: len(x) < 100), max_size=6)),
                 "w" * draw(st.integers(7000, 9000)), *lines[:20]]
    charset = draw(st.sampled_from(["", "utf-8", "iso-8859-1", "utf-16", "us-ascii"]))
    text = sep.join(lines)
    mixed = draw(st.booleans())
    if charset == "utf-16":
        raw = text.encode("utf-16")
    elif mixed:
        # Mislabelled: some lines UTF-8, some Latin-1 (bytes_to_text decides per LF line).
        codecs = draw(st.lists(st.sampled_from(["utf-8", "latin-1"]), min_size=len(lines),
                               max_size=len(lines)))
        raw = b"".join(line.encode(c, "replace") + sep.encode("utf-8", "replace")
                       for c, line in zip(codecs, lines, strict=True))
    else:
        raw = text.encode(charset or "utf-8", "replace")
    cte = draw(st.sampled_from(["", "base64", "quoted-printable"]))
    if cte == "base64":
        import base64
        enc = base64.encodebytes(raw)
    elif cte == "quoted-printable":
        import binascii
        enc = binascii.b2a_qp(raw)
    else:
        enc = raw
    head = "Subject: s\r\nContent-Type: text/plain"
    if charset:
        head += f"; charset={charset}"
    if cte:
        head += f"\r\nContent-Transfer-Encoding: {cte}"
    return head.encode() + b"\r\n\r\n" + enc


@area
def long_texts(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(long_message(), st.integers(1, 10))
    def t(data: bytes, headlines: int) -> None:
        a = _run(lambda: old_env._extract(data, headlines).headlines)
        b = _run(lambda: new_env._extract(data, headlines).headlines)
        assert a == b, (data[:300], headlines, a, b)
    return t


AREAS["long_texts"] = long_texts


# -- a whole SMTP session, pipelined, in pieces --------------------------------

old_sc = module_at(REV, "smdp.protocol.smtp.connection")
import smdp.protocol.smtp.connection as new_sc  # noqa: E402


def run_session(sc: Any, pieces: list[bytes], threshold: int | None, size: int) -> list[Any]:
    conn = sc.SmtpServerConnection("mx.example.org", max_message_size=size,
                                   max_line_length=40, stream_threshold=threshold)
    trace: list[Any] = [conn.greeting()]
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            name = type(event).__name__
            trace.append((name, {k: v for k, v in getattr(event, "__dict__", {}).items()}
                          if hasattr(event, "__dict__") else repr(event)
                          if name not in ("Pending", "Sentinel") else str(event)))
            if name in ("Helo", "Mail", "Rcpt", "DataStart", "Rset", "Noop", "Quit",
                        "DataComplete"):
                conn.ok()
            elif name not in ("BlockChunk", "DataFailed"):
                break
        trace.append(conn.data_to_send())
    return trace


@area
def smtp_sessions(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(st.data())
    def t(data: st.DataObject) -> None:
        head = b"EHLO a\r\nMAIL FROM:<a@b.org>\r\nRCPT TO:<c@d.org>\r\nDATA\r\n"
        body = data.draw(wire)
        tail = data.draw(st.sampled_from([b"\r\n.\r\n", b".\r\n", b"\n.\n", b""]))
        after = data.draw(st.sampled_from([b"", b"QUIT\r\n", b"MAIL FROM:<x@y.org>\r\n"]))
        stream = head + body + tail + after
        pieces = data.draw(cut(stream))
        threshold = data.draw(st.none() | st.integers(1, 30))
        size = data.draw(st.integers(0, 200))
        a = _run(lambda: run_session(old_sc, pieces, threshold, size))
        b = _run(lambda: run_session(new_sc, pieces, threshold, size))
        assert repr(a) == repr(b), (pieces, threshold, size, a, b)
    return t


AREAS["smtp_sessions"] = smtp_sessions


# -- the readers at the ports' own limits, on bodies of a few KB ---------------

@st.composite
def big_reader_case(draw: st.DrawFn) -> tuple[list[bytes], int, int, int | None, bool]:
    out = []
    for _ in range(draw(st.integers(0, 12))):
        start = draw(st.sampled_from([b"", b".", b"..", b"-"]))
        size = draw(st.sampled_from([0, 1, 995, 996, 997, 998, 999, 1000, 1500]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"]))
        out.append(start + b"x" * size + end)
    data = b"".join(out) + draw(st.sampled_from([b"\r\n.\r\n", b".\r\n", b"\n.\n", b""]))
    pieces = draw(cut(data))
    return (pieces, 1000, draw(st.sampled_from([0, 2000, 5000, 10**6])),
            draw(st.none() | st.sampled_from([1, 1000, 4096])), draw(st.booleans()))


@area
def readers_big(n: int) -> Callable[[], None]:
    @cfg(n)
    @given(big_reader_case())
    def t(case: Any) -> None:
        a, b = run_reader(old_fr, old_sd, case), run_reader(new_fr, new_sd, case)
        assert a == b, (case, a, b)
        check_reader_output_crlf(case)
    return t


AREAS["readers_big"] = readers_big


if __name__ == "__main__":
    sys.exit(main())
