"""Envelope extraction from a Body, chunk by chunk, through its skeleton (smdp.mail.mime.skeleton).

The property everywhere: ``extract_envelope`` of a Body read in chunks of any
size is the envelope of the same message given as bytes, while only a bounded
skeleton of the message is ever held.
"""

from __future__ import annotations

import base64
import gc
import random
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smdp.core import envelope as env
from smdp.core.envelope import extract_envelope
from smdp.mail.body import Body, BodyWriter
from smdp.mail.mime import MAX_HEADER_OCTETS
from smdp.mail.mime.skeleton import SKELETON_CAP, message_skeleton
from tests.corpus import CORPUS, needs_corpus
from tests.speed import within

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mail"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.eml"))


def file_body(data: bytes, *, threshold: int = 0, piece: int = 1 << 20) -> Body:
    """``data`` as a Body in a temporary file (past ``threshold``), written ``piece`` at a time."""
    writer = BodyWriter(threshold=threshold)
    for start in range(0, len(data), piece):
        writer.write(data[start : start + piece])
    return writer.finish()


def streamed(data: bytes, chunk: int, headlines: int = 2) -> env.EnvelopeSummary:
    return env._extract_body(file_body(data), headlines, chunk)


def skeleton(data: bytes, chunk: int = 256 * 1024) -> bytes:
    return message_skeleton(Body.of(data).chunks(chunk))


def mixed(*parts: bytes, boundary: bytes = b"b1", eol: bytes = b"\r\n",
          subtype: bytes = b"mixed", head: bytes = b"") -> bytes:
    out = [head, b"Content-Type: multipart/" + subtype + b"; boundary=\"" + boundary + b"\"" + eol,
           eol, b"preamble" + eol]
    for part in parts:
        out += [b"--" + boundary + eol, part, eol]
    out.append(b"--" + boundary + b"--" + eol)
    return b"".join(out)


def attachment(size: int, name: bytes = b"a.bin", eol: bytes = b"\r\n", seed: int = 1) -> bytes:
    blob = random.Random(seed).randbytes(size)
    return (b"Content-Type: application/octet-stream; name=\"" + name + b"\"" + eol
            + b"Content-Transfer-Encoding: base64" + eol + eol
            + base64.encodebytes(blob).replace(b"\n", eol))


def text_part(body: bytes, subtype: bytes = b"plain", eol: bytes = b"\r\n") -> bytes:
    return b"Content-Type: text/" + subtype + b"; charset=utf-8" + eol + eol + body


# ---------------------------------------------------------------------------
# The fixtures and real shapes


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 256 * 1024])
def test_fixtures_give_the_same_envelope(name: str, chunk: int) -> None:
    data = (FIXTURES / name).read_bytes()
    for headlines in (2, 10):
        assert streamed(data, chunk, headlines) == extract_envelope(data, headlines=headlines)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_through_the_public_api_lf_and_mbox(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    lf = data.replace(b"\r\n", b"\n")
    for variant in (data, lf, b"From alice@a.example Mon Jun  1 10:00:00 2009\n" + lf):
        assert extract_envelope(file_body(variant)) == extract_envelope(variant)
        # In memory and small: the bytes path, same answer.
        assert extract_envelope(Body.of(variant)) == extract_envelope(variant)


def paper_like(size: int, *, eol: bytes = b"\r\n", alternative: bool = True) -> bytes:
    text = b"".join(b"Line %d of the report, with some words.%s" % (i, eol) for i in range(80))
    if alternative:
        html = b"<html><body><p>Hello <b>Bob</b></p>" + eol + b"<p>-- </p></body></html>" + eol
        body = mixed(text_part(b"Hello Bob," + eol + eol + text, eol=eol),
                     text_part(html, b"html", eol), boundary=b"=_alt_1", eol=eol,
                     subtype=b"alternative")
    else:
        body = text_part(b"Hello Bob," + eol + text, eol=eol)
    parts = [body]
    for k in range(3):
        parts.append(attachment(max(0, size // 4), b"doc%d.pdf" % k, eol, seed=k))
    head = (b"From: Alice <alice@a.example>" + eol + b"To: Bob <bob@b.example>" + eol
            + b"Subject: =?utf-8?q?r=C3=A9port?=" + eol + b"MIME-Version: 1.0" + eol)
    return mixed(*parts, boundary=b"----=_Part_0_12345.67890", eol=eol, head=head)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("alternative", [True, False])
def test_large_mime_messages(eol: bytes, alternative: bool) -> None:
    data = paper_like(900_000, eol=eol, alternative=alternative)
    expected = extract_envelope(data)
    assert expected.attachments == 3 and expected.headlines
    for chunk in (1000, 4096, 65_537, 256 * 1024):
        assert streamed(data, chunk) == expected
    # Attachments are dropped: the skeleton is a few KiB.
    assert len(skeleton(data)) < 16 * 1024


def test_html_only_and_text_windows_at_the_step_sizes() -> None:
    # _body_lines decodes 8, 64, then 256 KiB (text) or 16, 128 KiB (html):
    # parts just under, at and over each step, text found only deep inside.
    for size in (8 * 1024, 64 * 1024, 128 * 1024, 256 * 1024):
        for delta in (-3, -2, -1, 0, 1, 2, 3, 100):
            for subtype in (b"plain", b"html"):
                filler = b"\r\n" * ((size + delta - 40) // 2)
                body = filler + b"deep line one\r\ndeep line two\r\n"
                data = mixed(text_part(body, subtype), attachment(300_000))
                expected = extract_envelope(data)
                for chunk in (997, 256 * 1024):
                    assert streamed(data, chunk) == expected, (size, delta, subtype, chunk)


def test_a_long_text_part_then_attachments() -> None:
    body = b"".join(b"line %d -- a dash, --not a delimiter\r\n" % i for i in range(20_000))
    data = mixed(text_part(b"\r\n" * 50_000 + body), attachment(200_000), attachment(10, b"b"))
    expected = extract_envelope(data)
    assert expected.attachments == 2
    for chunk in (4096, 256 * 1024):
        assert streamed(data, chunk) == expected


def test_nested_multiparts_and_inline_parts() -> None:
    related = mixed(text_part(b"<p>hi <img src=cid:x></p>\r\n", b"html"),
                    b"Content-Type: image/png\r\nContent-ID: <x>\r\n\r\niVBORw0KGgo=\r\n",
                    boundary=b"rel", subtype=b"related")
    alternative = mixed(text_part(b"hi\r\n"), related, boundary=b"alt", subtype=b"alternative")
    data = mixed(alternative, attachment(100_000), text_part(b"second text\r\n"),
                 b"Content-Type: message/rfc822\r\n\r\n" + mixed(
                     text_part(b"inner\r\n"), attachment(5000, b"inner.bin"), boundary=b"in",
                     head=b"Subject: inner\r\n"),
                 boundary=b"out")
    expected = extract_envelope(data)
    assert expected.attachments == 2
    for chunk in (1, 13, 500, 256 * 1024):
        assert streamed(data, chunk, 10) == extract_envelope(data, headlines=10)


def test_broken_and_missing_boundaries_are_guessed_the_same() -> None:
    parts = [text_part(b"guessed text\r\n"), attachment(50_000)]
    wrong = mixed(*parts, boundary=b"real").replace(b'boundary="real"', b'boundary="declared"')
    missing = wrong.replace(b'; boundary="declared"', b"")
    unused = mixed(text_part(b"just text\r\n" * 10))
    unused = unused.replace(b"--b1", b"==b1")
    for data in (wrong, missing, unused):
        expected = extract_envelope(data)
        for chunk in (1, 7, 4096, 256 * 1024):
            assert streamed(data, chunk) == expected


def test_parts_without_headers_and_fake_delimiters_in_text() -> None:
    text = (b"Hi,\r\n-- \r\nsig\r\n--b1x not a delimiter\r\n--b1 trailing\r\n"
            b"--other\r\nContent-Type: application/pdf\r\n\r\nstill text\r\n")
    data = mixed(b"\r\nheaderless part\r\n", text_part(text), b"no blank line\r\nmore\r\n",
                 attachment(30_000))
    expected = extract_envelope(data, headlines=10)
    for chunk in (1, 2, 5, 33, 256 * 1024):
        assert streamed(data, chunk, 10) == expected


def test_bare_cr_and_mixed_line_ends() -> None:
    data = mixed(text_part(b"one\rtwo\r\n"), attachment(20_000), eol=b"\r\n")
    for variant in (data, data.replace(b"\r\n", b"\r"), data.replace(b"\r\n", b"\n\r")):
        expected = extract_envelope(variant)
        for chunk in (1, 2, 3, 4096):
            assert streamed(variant, chunk) == expected


def test_body_with_memory_and_file_pieces() -> None:
    data = paper_like(200_000)
    cut = 1234
    body = file_body(data[cut:]).prefixed(data[:cut])
    assert not body.in_memory
    assert extract_envelope(body) == extract_envelope(data)


@needs_corpus("spamassassin")
def test_corpus_sample_any_chunking() -> None:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix in ("", ".eml"))
    rng = random.Random(11)
    for path in rng.sample(files, min(800, len(files))):
        raw = path.read_bytes()
        for data in (raw, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")):
            chunk = rng.choice([rng.randint(1, 60), rng.randint(61, 9000), 256 * 1024])
            assert streamed(data, max(chunk, len(data) // 3000)) == extract_envelope(data), path


# ---------------------------------------------------------------------------
# Generated messages, any chunking

_WORDS = ["hello", "report", "-- ", "--", "----", "From here", "a: b", " folded", "", "--x",
          "=?utf-8?q?caf=C3=A9?=", "<p>para</p>", "\u00e9t\u00e9", "-"]


@st.composite
def text_body(draw: st.DrawFn, eol: bytes) -> bytes:
    lines = draw(st.lists(st.sampled_from(_WORDS), max_size=12))
    return b"".join(line.encode() + eol for line in lines)


@st.composite
def entity(draw: st.DrawFn, eol: bytes, depth: int, boundaries: list[bytes]) -> bytes:
    kinds = ["plain", "html", "attachment", "headerless", "rfc822"]
    if depth < 3:
        kinds += ["multipart", "multipart"]
    kind = draw(st.sampled_from(kinds))
    if kind == "plain":
        return text_part(draw(text_body(eol)), b"plain", eol)
    if kind == "html":
        return text_part(b"<div>" + draw(text_body(eol)) + b"</div>" + eol, b"html", eol)
    if kind == "attachment":
        size = draw(st.sampled_from([0, 1, 100, 3000, 40_000]))
        return attachment(size, draw(st.sampled_from([b"a.pdf", b"b c.txt"])), eol,
                          seed=draw(st.integers(0, 5)))
    if kind == "headerless":
        return eol + draw(text_body(eol))
    if kind == "rfc822":
        return b"Content-Type: message/rfc822" + eol + eol + b"Subject: in" + eol + eol + b"x" + eol
    boundary = draw(st.sampled_from([b"x", b"=_a", b"----=_Part_1", b"b-" + bytes([65 + depth])]))
    boundaries.append(boundary)
    children = draw(st.lists(entity(eol, depth + 1, boundaries), min_size=0, max_size=4))
    subtype = draw(st.sampled_from([b"mixed", b"alternative", b"related", b"digest"]))
    out = [b"Content-Type: multipart/" + subtype + b"; boundary=\"" + boundary + b"\"" + eol, eol]
    if draw(st.booleans()):
        out.append(draw(text_body(eol)))
    for child in children:
        out += [b"--" + boundary + eol, child, eol]
    if draw(st.booleans()):
        out.append(b"--" + boundary + b"--" + eol)
    if draw(st.booleans()):
        out.append(draw(text_body(eol)))
    return b"".join(out)


@st.composite
def message(draw: st.DrawFn) -> bytes:
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    head = b"From: A <a@a.example>" + eol + b"Subject: s" + eol
    data = head + draw(entity(eol, 0, []))
    if draw(st.booleans()):
        data = b"From a@a.example Mon Jun  1 10:00:00 2009\n" + data
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message(), st.integers(1, 300), st.integers(1, 12), st.integers(0, 2000))
def test_generated_messages_any_chunking(data: bytes, chunk: int, headlines: int,
                                         threshold: int) -> None:
    chunk = max(chunk, len(data) // 2000)
    body = file_body(data, threshold=threshold, piece=max(1, chunk // 3 + 1))
    assert env._extract_body(body, headlines, chunk) == extract_envelope(data, headlines=headlines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIXTURE_NAMES), st.data())
def test_fixtures_mutated_any_chunking(name: str, data: st.DataObject) -> None:
    raw = bytearray((FIXTURES / name).read_bytes())
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(
            st.sampled_from([b"\r", b"\n", b"--", b"-", b"\r\n--", b" ", b"\n\n"])
        )
    message_bytes = bytes(raw)
    chunk = data.draw(st.integers(1, 400))
    assert streamed(message_bytes, chunk) == extract_envelope(message_bytes)


# ---------------------------------------------------------------------------
# Bounds on hostile input


def test_only_delimiter_lines_stay_bounded() -> None:
    data = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"--x\r\n" * 1_000_000
    started = time.perf_counter()
    kept = skeleton(data)
    assert time.perf_counter() - started < within(5)
    assert len(kept) <= SKELETON_CAP
    summary = extract_envelope(file_body(data))
    assert summary == extract_envelope(data)  # here nothing is short: no attachments at all


def test_the_skeleton_cap_holds_and_ends_on_a_line() -> None:
    big_text = text_part(b"x" * 300_000 + b"\r\n")
    data = mixed(*([big_text] * 20), attachment(1000))
    kept = skeleton(data)
    assert len(kept) <= SKELETON_CAP
    assert kept.endswith((b"\n", b"\r"))
    # Past the cap the attachment after 20 inline text parts of 300 KB is not seen.
    assert extract_envelope(file_body(data)).attachments <= extract_envelope(data).attachments


@pytest.mark.parametrize(
    "data",
    [
        b"Subject: x\r\n\r\n" + b"-" * 3_000_000,
        b"Subject: x\r\n\r\n" + b"\r--x" * 500_000,
        b"X: " + b"a" * 3_000_000,
        b"From " + b"x" * 3_000_000,
        b"From x\nX: a\r\n" * 300_000,
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n" + b"A: " + b"b" * 3_000_000,
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x" + b" " * 200_000 + b"\r\nhi",
        b"Content-Type: multipart/mixed; boundary=x\r\n\r\n" + b"a--x\r\n" * 300_000,
        b"Content-Type: multipart/mixed\r\n\r\n" + b"--y\r\n" * 300_000,
        b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                 for i in range(200)),
    ],
    ids=["dashes", "cr-dash-lines", "huge-header-line", "huge-mbox-line", "header-over-limit",
         "huge-part-header", "blanks-after-delimiter", "mid-line-delimiters",
         "guessed-lines", "many-boundaries"],
)
def test_hostile_inputs_are_bounded_and_agree(data: bytes) -> None:
    started = time.perf_counter()
    kept = skeleton(data)
    assert len(kept) <= SKELETON_CAP
    assert streamed(data, 256 * 1024) == extract_envelope(data)
    assert time.perf_counter() - started < within(10)


def test_header_past_the_limit_is_truncated_the_same() -> None:
    line = b"X-Filler: " + b"y" * 990 + b"\r\n"
    head = b"Subject: big\r\n" + line * (MAX_HEADER_OCTETS // len(line) + 2)
    data = head + b"Content-Type: text/plain\r\n\r\nbody text\r\n"
    for chunk in (1000, 65_536, 256 * 1024):
        got = streamed(data, chunk)
        assert got == extract_envelope(data)
        assert got.subject == "big" and not got.headlines


def _peak(fn: object, *args: object) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn(*args)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_flat_in_message_size() -> None:
    peaks = []
    for size in (1_000_000, 8_000_000):
        data = paper_like(size)
        body = file_body(data)
        expected = extract_envelope(data)
        del data
        assert extract_envelope(body) == expected
        peaks.append(_peak(extract_envelope, body))
    # A few chunks of 256 KiB and a small skeleton, whatever the size.
    assert max(peaks) < 2 * 1024 * 1024
    assert peaks[1] < peaks[0] * 1.5 + 256 * 1024


def test_steps_are_taken_per_state_change_not_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from smdp.mail.mime import skeleton as module

    steps = 0
    counted = dict(module._STEPS)

    def counting(step: object) -> object:
        def run(*args: object) -> int:
            nonlocal steps
            steps += 1
            return step(*args)  # type: ignore[operator, no-any-return]
        return run

    for state, step in counted.items():
        monkeypatch.setitem(module._STEPS, state, counting(step))
    head = b"".join(b"Received: from relay%d\r\n" % i for i in range(2000))
    data = head + b"Subject: x\r\n\r\nbody\r\n"
    assert message_skeleton(Body.of(data).chunks(len(data))) == data
    assert steps < 10
