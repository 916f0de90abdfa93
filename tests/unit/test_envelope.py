"""Envelope extraction (paper section 5.2 step 4) and the block codec (contract 2.3)."""

from __future__ import annotations

import base64
import binascii
import logging
import os
import random
import time
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smdp.core import envelope as env
from smdp.core.envelope import (
    MAX_BLOCK_OCTETS,
    MAX_HEADLINES,
    EnvelopeError,
    EnvelopeFields,
    EnvelopeSummary,
    decode_envelope_block,
    encode_envelope_block,
    extract_envelope,
)
from smdp.mail.mime import MAX_DEPTH
from smdp.mail.mime import text as mime_text
from tests.corpus import CORPUS, needs_corpus
from tests.speed import within

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def summary(**changes: object) -> EnvelopeSummary:
    base: dict[str, object] = {
        "subject": "",
        "from_name": "",
        "to": "",
        "cc": "",
        "date": "",
        "attachments": 0,
        "attachment_names": (),
        "headlines": (),
    }
    base.update(changes)
    return EnvelopeSummary(**base)  # type: ignore[arg-type]


def big_message(size: int = 680_000) -> bytes:
    """A message like the paper's average (section 6): text and a base64 attachment."""
    rnd = random.Random(7)
    blob = rnd.randbytes(int(size * 0.74))
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    text = b"Hello Bob,\r\n\r\nThe report is attached.\r\n" + b"Lorem ipsum dolor. " * 60
    return (
        b"From: Alice Example <alice@a.example>\r\nTo: Bob <bob@b.example>\r\n"
        b"Subject: =?utf-8?q?Quarterly_r=C3=A9port?=\r\nDate: Tue, 05 May 2026 10:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"=_outer_42\"\r\n\r\n"
        b"--=_outer_42\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + b"\r\n"
        b"--=_outer_42\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=\"report.pdf\"\r\n\r\n" + b64 + b"\r\n"
        b"--=_outer_42--\r\n"
    )


# ---------------------------------------------------------------------------
# Fixtures, one by one


def test_plain() -> None:
    s = extract_envelope(load("plain.eml"))
    assert s == EnvelopeSummary(
        subject="Lunch on Friday?",
        from_name="Alice Example",
        to="Bob <bob@b.example>",
        cc="",
        date="Tue, 05 May 2026 10:00:00 +0000",
        attachments=0,
        attachment_names=(),
        headlines=("Hi Bob,", "Are you free for lunch on Friday? The usual place at noon."),
    )


def test_headline_count_is_a_parameter() -> None:
    data = load("plain.eml")
    assert extract_envelope(data, headlines=0).headlines == ()
    assert extract_envelope(data, headlines=3).headlines[-1] == "Alice"
    assert len(extract_envelope(data, headlines=50).headlines) == 3
    assert extract_envelope(data, headlines=-4).headlines == ()


def test_alternative_prefers_text_plain() -> None:
    s = extract_envelope(load("alternative.eml"))
    assert s.from_name == "Example News"
    assert s.to == "bob@b.example, carol@b.example"
    assert s.cc == '"Dave D." <dave@c.example>'
    assert s.attachments == 0
    assert s.headlines == ("This week: three new articles.", "Read them online.")


def test_mixed_with_pdf_attachment() -> None:
    s = extract_envelope(load("mixed-pdf.eml"))
    assert s.attachments == 1
    assert s.attachment_names == ("report-q1.pdf",)
    # Quoted-printable UTF-8 body decoded.
    assert s.headlines == ("Hello Bob,", "Please find the quarterly réport attached.")


def test_nested_multiparts() -> None:
    s = extract_envelope(load("nested.eml"))
    # The inline cid: image of multipart/related is body, not an attachment;
    # RFC 2231 names (extended and continued) are decoded.
    assert s.attachments == 2
    assert s.attachment_names == ("lake été.jpg", "very long name.bin")
    assert s.headlines == ("Here are the photos.", "The lake was beautiful — see the first one.")


def test_broken_boundary_uses_the_delimiters_actually_written() -> None:
    s = extract_envelope(load("broken-boundary.eml"))
    assert s.subject == "Broken boundary"
    assert s.headlines == ("First visible line.", "Second visible line.")


def test_unknown_charset_falls_back_per_line() -> None:
    s = extract_envelope(load("unknown-charset.eml"))
    assert s.from_name == "Mystery Sender"
    # Unknown charsets decode as UTF-8/Windows-1252; punycode is never honoured.
    assert s.subject == "Hello there and bomb"
    assert s.headlines == ("Café is open.", "Naïve line in latin-1.")


def test_encoded_words_utf8_split_across_words() -> None:
    s = extract_envelope(load("subject-utf8.eml"))
    assert s.subject == "日本語の件名 and more"
    assert s.from_name == "Jörg Müller"
    assert s.to == "Björn <bjorn@b.example>"
    assert s.headlines == ("Grüße aus München.",)


def test_encoded_words_latin1() -> None:
    s = extract_envelope(load("subject-latin1.eml"))
    assert s.subject == "Café crème brûlée"
    assert s.from_name == "François"
    assert s.headlines == ("Crème brûlée pour tout le monde.",)


def test_raw_8bit_headers() -> None:
    s = extract_envelope(load("raw-8bit-header.eml"))
    assert s.subject == "Réunion à 9h"
    assert s.from_name == "Renée Dupont"
    assert s.to == "Zoë <zoe@b.example>"  # Latin-1 bytes, not UTF-8


def test_empty_message_id_does_not_matter() -> None:
    s = extract_envelope(load("empty-message-id.eml"))
    assert s.subject == "Buy now"
    assert s.headlines == ("Cheap stuff.",)


def test_missing_headers() -> None:
    s = extract_envelope(load("missing-headers.eml"))
    assert (s.subject, s.from_name, s.to, s.cc, s.date) == ("", "", "", "", "")
    assert s.headlines == ("Just a body, no From, no Subject, no Date.",)


def test_no_blank_line_body_starts_at_first_non_header_line() -> None:
    s = extract_envelope(load("no-blank-line.eml"))
    assert s.subject == "No separator"
    assert s.headlines[0] == "This line is not a header, so the body starts here."


def test_huge_header_is_capped() -> None:
    data = load("huge-header.eml")
    assert len(data) > 100_000
    s = extract_envelope(data)
    assert s.subject.startswith("word00000 word00001")
    # 998 characters, but also a "Subject: " line of at most 998 octets.
    assert len(s.subject) <= 998
    assert len(("Subject: " + s.subject).encode()) <= 998
    assert s.headlines == ("Body after a huge header.",)


def test_deep_nesting_is_cut_at_max_depth() -> None:
    s = extract_envelope(load("deep-nesting.eml"))
    assert s.subject == "Deep nesting"
    # 50 levels: the text at the bottom is past MAX_DEPTH and is not read.
    assert s.headlines == ()
    assert s.attachments == 0


def test_shallow_nesting_within_the_cap_is_read() -> None:
    depth = MAX_DEPTH - 1
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    data = ("Subject: x\r\n" + opening + "Content-Type: text/plain\r\n\r\nBottom.\r\n" + closing)
    assert extract_envelope(data.encode()).headlines == ("Bottom.",)


def test_html_only_is_stripped_of_tags() -> None:
    s = extract_envelope(load("html-only.eml"), headlines=3)
    assert s.headlines == (
        "Thank you for your order & your trust.",
        "It ships tomorrow.",
        "Third line",
    )


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_every_fixture_round_trips_through_the_block(name: str) -> None:
    s = env._extract(load(name), 2)  # the unguarded extractor: no bug hidden by the net
    block = encode_envelope_block(s, expires="2026-05-12T10:00:00Z")
    assert len(block) <= MAX_BLOCK_OCTETS
    assert decode_envelope_block(block) == EnvelopeFields(s, "2026-05-12T10:00:00Z")


# ---------------------------------------------------------------------------
# Attachment status


def _mixed(*parts: str, subtype: str = "mixed") -> bytes:
    body = "".join(f"--XX\r\n{part}\r\n" for part in parts) + "--XX--\r\n"
    return f'Subject: t\r\nContent-Type: multipart/{subtype}; boundary="XX"\r\n\r\n{body}'.encode()


def test_attachment_rules() -> None:
    data = _mixed(
        "Content-Type: text/plain\r\n\r\nBody text.",
        "Content-Type: text/plain\r\nContent-Disposition: inline\r\n\r\nfooter, not counted",
        "Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nnotes",
        'Content-Type: text/csv; name="data.csv"\r\n\r\na,b',
        "Content-Type: application/octet-stream\r\n\r\nAAAA",
        "Content-Type: message/rfc822\r\n\r\nSubject: fwd\r\n\r\nx",
    )
    s = extract_envelope(data)
    assert s.attachments == 4
    assert s.attachment_names == ("data.csv",)
    assert s.headlines == ("Body text.",)


def test_non_text_alternative_is_not_an_attachment() -> None:
    data = _mixed(
        "Content-Type: text/plain\r\n\r\nPlain.",
        "Content-Type: application/pdf\r\n\r\n%PDF",
        subtype="alternative",
    )
    assert extract_envelope(data).attachments == 0


def test_attachment_names_are_sanitised_and_capped() -> None:
    parts = [
        'Content-Type: application/x\r\nContent-Disposition: attachment; '
        f'filename="file{i}.bin"\r\n\r\nAA'
        for i in range(15)
    ]
    parts.insert(
        0,
        "Content-Type: application/x\r\nContent-Disposition: attachment; "
        'filename="invoice\u202efdp.exe"\r\n\r\nAA',
    )
    parts.insert(
        1,
        'Content-Type: application/x\r\nContent-Disposition: attachment; filename="a, b; c.txt"'
        "\r\n\r\nAA",
    )
    s = extract_envelope(_mixed(*parts))
    assert s.attachments == 17
    assert len(s.attachment_names) == 10
    # The right-to-left override that disguises an .exe is gone, and the
    # field's delimiters cannot appear inside a name.
    assert s.attachment_names[0] == "invoice fdp.exe"
    assert s.attachment_names[1] == "a_ b_ c.txt"


def test_encoded_word_filename_and_rfc2231_charset() -> None:
    s = extract_envelope(
        _mixed(
            'Content-Type: application/x; name="=?utf-8?b?w6nDqS5wZGY=?="\r\n\r\nAA',
            "Content-Type: application/x\r\nContent-Disposition: attachment;"
            " filename*=iso-8859-1'fr'r%E9sum%E9.txt\r\n\r\nAA",
        )
    )
    assert s.attachment_names == ("éé.pdf", "résumé.txt")


def test_long_attachment_names_fit_the_line() -> None:
    parts = [
        "Content-Type: application/x\r\nContent-Disposition: attachment; "
        f'filename="{chr(0x4E00 + i) * 300}"\r\n\r\nAA'
        for i in range(5)
    ]
    s = extract_envelope(_mixed(*parts))
    assert s.attachments == 5
    line = encode_envelope_block(s, expires="").split(b"\r\n")[5]
    assert line.startswith(b"Attachments: 5; ")
    assert len(line) <= 998


# ---------------------------------------------------------------------------
# Headlines


def test_headlines_from_base64_text_and_caps() -> None:
    text = ("\n\n   \n" + "x" * 500 + "\nsecond\tline\x00 here\n").encode()
    data = (
        b"Subject: t\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(text)
    )
    s = extract_envelope(data)
    assert s.headlines == ("x" * 200, "second line here")


def test_headlines_from_a_long_text_part_decode_only_a_prefix() -> None:
    text = "\n" * 50_000 + "late line\n" + "filler\n" * 100_000
    data = b"Subject: t\r\n\r\n" + text.encode()
    assert extract_envelope(data, headlines=1).headlines == ("late line",)


def test_plain_part_without_text_falls_back_to_html() -> None:
    data = _mixed(
        "Content-Type: text/plain\r\n\r\n   ",
        "Content-Type: text/html\r\n\r\n<p>From &lt;html&gt;</p>",
        subtype="alternative",
    )
    assert extract_envelope(data).headlines == ("From <html>",)


def test_html_unclosed_script_and_angle_brackets() -> None:
    data = b"Content-Type: text/html\r\n\r\n<p>shown</p>a < b > c<script>never shown"
    assert extract_envelope(data).headlines == ("shown", "a < b > c")


def test_control_and_bidi_characters_are_removed() -> None:
    data = "Subject: a\x1b[31mred\x7f \u202eevil\u2028x\x85\r\nFrom: \x00Bob\x00 <b@x>\r\n\r\n"
    s = extract_envelope(data.encode())
    assert s.subject == "a [31mred evil x"
    assert s.from_name == "Bob"
    # Lone surrogates (from odd codecs) cannot be encoded: they go too.
    block = encode_envelope_block(summary(subject="a\ud800b"), expires="")
    assert block.startswith(b"Subject: a b\r\n")


def test_mbox_from_line_is_skipped() -> None:
    data = b"From alice@a.example Mon Jan  1 00:00:00 2026\nSubject: hi\n\nbody\n"
    s = extract_envelope(data)
    assert s.subject == "hi" and s.headlines == ("body",)


def test_text_starting_with_from_is_not_taken_for_an_mbox_line() -> None:
    # No header follows it: the line is the message's first line of text.
    s = extract_envelope(b"From now on we meet at ten.\nSee you there.\n")
    assert s.subject == "" and s.headlines == ("From now on we meet at ten.", "See you there.")


# ---------------------------------------------------------------------------
# Headlines a recipient can use (issue 10): the sender's own lines, not the
# attribution, the quote, a separator or the signature


def _text(body: str) -> bytes:
    return ("Subject: s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body).encode("utf-8")


@pytest.mark.parametrize(("body", "headlines"), [
    # Bottom-posted reply: the attribution and the quote come first.
    ("On 04/24/2010 03:20 PM, Lisi wrote:\n> Is the meeting on?\n> At ten?\n\n"
     "Yes, at ten.\nBring the slides.\n", ("Yes, at ten.", "Bring the slides.")),
    ("Lisi wrote:\n> Coffee?\nSure.\n", ("Sure.",)),
    ("Le 24/04/2010 15:20, Lisi a écrit :\n> Café ?\nD'accord.\nÀ demain.\n",
     ("D'accord.", "À demain.")),
    ("Am 24.04.2010 15:20, schrieb Lisi:\n> Kaffee?\nGut.\nBis morgen.\n",
     ("Gut.", "Bis morgen.")),
    ("Lisi schrieb:\n>> Kaffee?\n> Ja.\nGut.\n", ("Gut.",)),
    # KMail's, without the colon: an attribution only before a quote.
    ("On Monday 09 September 2002 09:51 pm, Geege Schuman wrote\n> dreams\nIndeed.\n",
     ("Indeed.",)),
    ("I wrote\nthe report.\n", ("I wrote", "the report.")),
    # An attribution its mail program wrapped before the verb.
    ("On Sat, Apr 24, 2010 at 3:20 PM, Lisi Reisz <lisi@example.com>\nwrote:\n"
     "> Lunch?\nFine by me.\n", ("Fine by me.",)),
    # Quoted lines however indented, and separators of every kind.
    ("  > quoted\n-----\nThe real text.\n=====\n_____\n*****\n--- Sponsor ---~->\n"
     "More text.\n",
     ("The real text.", "More text.")),
    # Top-posted replies over the quoted original (Outlook's two forms).
    ("Thanks, done.\n\n-----Original Message-----\nFrom: Lisi\nSent: Monday\n\n"
     "Please do it.\n", ("Thanks, done.",)),
    ("Done.\n________________________________\nFrom: Lisi\nSent: Monday\nPlease.\n",
     ("Done.",)),
    # The signature delimiter "-- " and everything after it.
    ("See you.\n-- \nJohn Smith\nACME Corp\n", ("See you.",)),
    # An ordinary line that ends in a colon is the sender's own.
    ("Agenda:\nBudget\n", ("Agenda:", "Budget")),
])
def test_headlines_skip_attributions_quotes_separators_and_signatures(
    body: str, headlines: tuple[str, ...]
) -> None:
    assert extract_envelope(_text(body)).headlines == headlines


@pytest.mark.parametrize(("body", "headlines"), [
    ("> only a quote\n> and more of it\n", ("> only a quote", "> and more of it")),
    ("Lisi wrote:\n> Coffee?\n", ("Lisi wrote:", "> Coffee?")),
    ("-- \nJohn Smith\n", ("--", "John Smith")),
    ("-----\n=====\n", ("-----", "=====")),
])
def test_headlines_fall_back_to_the_first_lines_when_nothing_else_is_there(
    body: str, headlines: tuple[str, ...]
) -> None:
    assert extract_envelope(_text(body)).headlines == headlines


def test_own_text_after_a_long_quote_is_found() -> None:
    body = "Lisi wrote:\n" + "> quoted line\n" * 150 + "My answer.\n"
    assert extract_envelope(_text(body)).headlines == ("My answer.",)


@pytest.mark.parametrize(("from_value", "name"), [
    (b'"" Angles " Puglisi" <angles@x.example>', "Angles Puglisi"),
    (b'"John" "Smith" <john@x.example>', "John Smith"),
    (b'John "Q." Smith <john@x.example>', "John Q. Smith"),
    (b'"Smith, John \\"JS\\"" <john@x.example>', 'Smith, John "JS"'),
    (b"John (the boss) Smith <john@x.example>", "John Smith"),
    (b"=?utf-8?q?J=C3=B6rg?= =?utf-8?q?_M=C3=BCller?= <j@x.example>", "Jörg Müller"),
    (b'=?utf-8?q?Ren=C3=A9e?= "Dupont" <r@x.example>', "Renée Dupont"),
    (b'"=?iso-8859-1?q?Fran=E7ois?=" <f@x.example>', "François"),
    (b"<nobody@x.example>", ""),
])
def test_display_names_are_read_as_rfc_5322_phrases(from_value: bytes, name: str) -> None:
    data = b"From: " + from_value + b"\r\nSubject: s\r\n\r\nbody\r\n"
    assert extract_envelope(data).from_name == name


# ---------------------------------------------------------------------------
# Robustness and cost


def test_extract_envelope_never_raises_even_on_a_bug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(message: bytes, headlines: int) -> EnvelopeSummary:
        raise RuntimeError("bug")

    monkeypatch.setattr(env, "_extract", broken)
    with caplog.at_level(logging.ERROR, logger="smdp.core.envelope"):
        assert extract_envelope(b"Subject: x\r\n\r\n") == env.EMPTY_SUMMARY
    assert "envelope extraction failed" in caplog.text


def test_extract_accepts_bytearray_and_memoryview() -> None:
    data = load("plain.eml")
    expected = extract_envelope(data)
    assert extract_envelope(bytearray(data)) == expected  # type: ignore[arg-type]
    assert extract_envelope(memoryview(data)) == expected  # type: ignore[arg-type]


def test_big_message_is_fast_and_correct() -> None:
    data = big_message()
    assert len(data) > 680_000
    s = extract_envelope(data)
    assert s.subject == "Quarterly réport"
    assert s.attachments == 1 and s.attachment_names == ("report.pdf",)
    assert s.headlines == ("Hello Bob,", "The report is attached.")
    runs = 20
    started = time.perf_counter()
    for _ in range(runs):
        extract_envelope(data)
    per_message = (time.perf_counter() - started) / runs
    # Target well under 1 ms; the bound is loose so a loaded CI box passes.
    assert per_message < within(0.02)


@pytest.mark.parametrize(
    "data",
    [
        # Each of these was quadratic or recursive in a first version or in the
        # email package; all must stay linear.
        b"Content-Type: text/html ; " + b"; " * 100_000 + b"\r\n\r\nx",
        b"From: " + b"(" * 200_000 + b"\r\n\r\nx",
        b"Content-Type: text/html\r\n\r\n" + b"<" * 300_000,
        b"Content-Type: text/html\r\n\r\n<!--" + b"x" * 300_000,
        b"Subject: " + b"=?" * 200_000 + b"\r\n\r\nx",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--bx\r\n" * 50_000,
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" * 20_000,
        b"Content-Type: text/plain; " + b'a="' * 100_000 + b"\r\n\r\nx",
        b"Content-Type: text/plain; charset=punycode\r\n\r\n" + b"a-" * 100_000,
    ],
)
def test_hostile_inputs_stay_cheap(data: bytes) -> None:
    started = time.perf_counter()
    env._extract(data, 2)
    assert time.perf_counter() - started < within(1.0)


_FIXTURE_BYTES = [
    p.read_bytes() for p in sorted(FIXTURES.glob("*.eml")) if p.stat().st_size < 10_000
]


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_FIXTURE_BYTES)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(
            st.sampled_from(
                [b"\r", b"\n", b"\x00", b"--", b"=?", b"?=", b'"', b";", b"(", b"<", b"\xff",
                 b"\r\n\r\n", b"boundary=", b"=?utf-8?b?", b"Content-Type: multipart/mixed"]
            )
            | st.binary(max_size=8)
        )
        if op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + len(chunk)]
        else:
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), mutated_fixture()))
def test_extract_never_raises(data: bytes) -> None:
    s = env._extract(data, 3)
    block = encode_envelope_block(s, expires="2026-01-01T00:00:00Z")
    assert len(block) <= MAX_BLOCK_OCTETS
    assert decode_envelope_block(block).summary == s
    for line in block.split(b"\r\n"):
        assert len(line) <= 998
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line


# ---------------------------------------------------------------------------
# Envelope block codec (contract 2.3)


def test_encode_exact_format() -> None:
    s = summary(
        subject="Quarterly réport",
        from_name="Alice",
        to="Bob <bob@b.example>",
        date="Tue, 05 May 2026 10:00:00 +0000",
        attachments=2,
        attachment_names=("a.pdf", "b.png"),
        headlines=("Hello Bob,", ".starts with a dot"),
    )
    block = encode_envelope_block(s, expires="2026-05-12T10:00:00Z")
    assert block == (
        "Subject: Quarterly réport\r\n"
        "From-Name: Alice\r\n"
        "To: Bob <bob@b.example>\r\n"
        "Cc:\r\n"
        "Date: Tue, 05 May 2026 10:00:00 +0000\r\n"
        "Attachments: 2; a.pdf, b.png\r\n"
        "Headline: Hello Bob,\r\n"
        "Headline: .starts with a dot\r\n"
        "Expires: 2026-05-12T10:00:00Z\r\n"
    ).encode()


def test_encode_sanitises_what_it_is_given() -> None:
    s = summary(subject="line\r\nInjected: yes", headlines=("a\nb", "", "c"), attachments=-3)
    block = encode_envelope_block(s, expires="soon\r\nX: y")
    lines = block.decode().split("\r\n")
    assert lines[0] == "Subject: line Injected: yes"
    assert "Attachments: 0" in lines
    assert [x for x in lines if x.startswith("Headline")] == ["Headline: a b", "Headline: c"]
    assert lines[-2] == "Expires: soon X: y"


def test_encode_worst_case_fits_16_kib() -> None:
    wide = "\U0001f600" * 2000
    s = summary(
        subject=wide,
        from_name=wide,
        to=wide,
        cc=wide,
        date=wide,
        attachments=10**8,
        attachment_names=(wide,) * 20,
        headlines=(wide,) * 40,
    )
    block = encode_envelope_block(s, expires=wide)
    assert len(block) <= MAX_BLOCK_OCTETS
    assert all(len(line) <= 998 for line in block.split(b"\r\n"))
    decoded = decode_envelope_block(block)
    assert len(decoded.summary.headlines) == MAX_HEADLINES
    assert decode_envelope_block(encode_envelope_block(decoded.summary, expires="")).summary == (
        decoded.summary
    )


def test_decode_tolerates_missing_unknown_and_bad_fields() -> None:
    data = (
        b"X-Future: whatever\n"
        b"subject:   spaced  out  \n"
        b"Subject: second subject is ignored\r\n"
        b"no colon here\r\n"
        b"Attachments: lots\r\n"
        b"Headline: \xff\xfe bad utf-8\r\n"
        b"HEADLINE: upper\r\n"
        b"Headline:\r\n"
    )
    got = decode_envelope_block(data)
    assert got.summary == summary(
        subject="spaced out", headlines=("\ufffd\ufffd bad utf-8", "upper")
    )
    assert got.expires == ""


def test_decode_empty_block() -> None:
    assert decode_envelope_block(b"") == EnvelopeFields(summary(), "")


def test_decode_attachments_field() -> None:
    def att(value: bytes) -> tuple[int, tuple[str, ...]]:
        s = decode_envelope_block(b"Attachments: " + value + b"\r\n").summary
        return s.attachments, s.attachment_names

    assert att(b"3; a.pdf, b.png ,, c") == (3, ("a.pdf", "b.png", "c"))
    assert att(b"0") == (0, ())
    assert att(b"2;") == (2, ())
    assert att(b"-1; a") == (0, ())
    assert att(b"1234567890") == (0, ())
    assert att(b"12; " + b", ".join(b"f%d" % i for i in range(30)))[1] == tuple(
        f"f{i}" for i in range(10)
    )


def test_decode_enforces_caps() -> None:
    data = ("Subject: " + "s" * 5000 + "\r\nHeadline: " + "h" * 900 + "\r\n").encode()
    got = decode_envelope_block(data).summary
    assert len(got.subject) == 998 - len("Subject: ")
    assert got.headlines == ("h" * 200,)
    many = b"".join(b"Headline: %d\r\n" % i for i in range(50))
    assert len(decode_envelope_block(many).summary.headlines) == MAX_HEADLINES


def test_decode_size_limit() -> None:
    exact = b"X: " + b"a" * (MAX_BLOCK_OCTETS - 5) + b"\r\n"
    assert len(exact) == MAX_BLOCK_OCTETS
    decode_envelope_block(exact)
    with pytest.raises(EnvelopeError, match="Envelope block exceeds 16384 octets"):
        decode_envelope_block(exact + b"x")
    assert issubclass(EnvelopeError, ValueError)


# Values already clean and within every cap (at most 62 characters, the
# Expires cap being 64), so the round trip must be exact.
_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp", "Cf")), max_size=20
)
_WORDS = st.lists(_TEXT.filter(bool), max_size=3).map(" ".join)
# File names as the block carries them: no separators, single spaces.
_NAME = _WORDS.map(lambda s: " ".join(s.replace(",", " ").replace(";", " ").split())).filter(bool)


@given(
    subject=_WORDS,
    from_name=_WORDS,
    to=_WORDS,
    cc=_WORDS,
    date=_WORDS,
    attachments=st.integers(0, 10**6),
    names=st.lists(_NAME, max_size=10),
    headlines=st.lists(_WORDS.filter(bool), max_size=MAX_HEADLINES),
    expires=_WORDS,
)
def test_block_round_trips(
    subject: str,
    from_name: str,
    to: str,
    cc: str,
    date: str,
    attachments: int,
    names: list[str],
    headlines: list[str],
    expires: str,
) -> None:
    s = EnvelopeSummary(
        subject, from_name, to, cc, date, attachments, tuple(names), tuple(headlines)
    )
    assert decode_envelope_block(encode_envelope_block(s, expires=expires)) == EnvelopeFields(
        s, expires
    )


@given(st.binary(max_size=3000))
def test_decode_is_total_and_idempotent(data: bytes) -> None:
    first = decode_envelope_block(data)
    again = decode_envelope_block(encode_envelope_block(first.summary, expires=first.expires))
    assert again == first


# ---------------------------------------------------------------------------
# Optional: the shared corpus (absent on a fresh clone; see tests/corpus.py)


@needs_corpus("malformed")
def test_corpus_malformed_messages() -> None:
    files = [p for p in (CORPUS / "malformed").rglob("*") if p.is_file()]
    assert files
    for path in files:
        s = env._extract(path.read_bytes(), 2)
        assert len(encode_envelope_block(s, expires="")) <= MAX_BLOCK_OCTETS


@needs_corpus("spamassassin")
def test_corpus_spamassassin_sample() -> None:
    files = sorted(p for p in (CORPUS / "spamassassin").rglob("*.eml") if p.is_file())
    sample = random.Random(int(os.environ.get("SMDP_CORPUS_SEED", "5"))).sample(
        files, min(600, len(files))
    )
    with_subject = 0
    for path in sample:
        s = env._extract(path.read_bytes(), 2)
        with_subject += bool(s.subject)
        assert decode_envelope_block(encode_envelope_block(s, expires="")).summary == s
    assert with_subject > len(sample) * 0.9


# ---------------------------------------------------------------------------
# Sanitising


def test_every_unsafe_character_is_unprintable() -> None:
    # _clean skips the _UNSAFE substitution for printable text.
    unsafe = [chr(c) for c in range(0x110000) if env._UNSAFE.match(chr(c))]
    assert unsafe and not any(c.isprintable() for c in unsafe)


def test_list_and_automated_sender_fields_travel_in_the_envelope() -> None:
    """Issue 16 item 3: RFC 2919 List-Id (its list-id only, lower case),
    RFC 3834 Auto-Submitted (the keyword), RFC 2369 List-Unsubscribe and
    RFC 8058's one-click promise; a message without them has the block it
    always had."""
    message = (b"From: Ann <ann@a.example>\r\nSubject: notes\r\n"
               b"List-Id: =?utf-8?q?D=C3=A9vs?= <Devs.Lists.A.example>\r\n"
               b"Auto-Submitted: Auto-Generated; reason=digest\r\n"
               b"List-Unsubscribe: <https://lists.a.example/u?id=7>,\r\n"
               b" <mailto:devs-leave@a.example>\r\n"
               b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nHello.\r\n")
    summary = extract_envelope(message)
    assert (summary.list_id, summary.auto_submitted, summary.list_unsubscribe,
            summary.one_click_unsubscribe) == (
        "devs.lists.a.example", "auto-generated",
        "<https://lists.a.example/u?id=7>, <mailto:devs-leave@a.example>", True)
    block = encode_envelope_block(summary, expires="")
    assert b"List-Id: devs.lists.a.example\r\n" in block
    assert b"Auto-Submitted: auto-generated\r\n" in block
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in block
    assert decode_envelope_block(block).summary == summary
    # Without a List-Unsubscribe, no one-click; junk is not a list-id.
    odd = extract_envelope(b"List-Id: no brackets here\r\nAuto-Submitted: ??\r\n"
                           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nx\r\n")
    assert (odd.list_id, odd.auto_submitted, odd.one_click_unsubscribe) == ("", "", False)
    plain = extract_envelope(b"Subject: plain\r\n\r\nx\r\n")
    assert b"List-" not in encode_envelope_block(plain, expires="")
    assert b"Auto-Submitted" not in encode_envelope_block(plain, expires="")


@pytest.mark.parametrize(("body", "expected"), [
    # The first lines read (_HEADLINE_FIRST beyond those wanted) end on the
    # first line of an attribution wrapped over two lines: not the sender's text.
    ("> q\r\n" * env._HEADLINE_FIRST
     + "own one\r\nOn Mon, 1 Jun 2009, Bob <b@x.example>\r\nwrote:\r\nown two\r\n",
     ("own one", "own two")),
    # Own lines only past the first lines read: the whole scan finds them.
    ("> q\r\n" * 12 + "late own\r\nand more\r\n", ("late own", "and more")),
    # Nothing but quotes: the first lines as they are.
    ("> a\r\n> b\r\n> c\r\n", ("> a", "> b")),
    # A signature inside the first lines ends the text there.
    ("just one\r\n-- \r\nsig a\r\nsig b\r\n" + "x\r\n" * 10, ("just one",)),
])
def test_headlines_read_a_few_lines_first_and_give_what_the_whole_scan_gives(
        body: str, expected: tuple[str, ...]) -> None:
    """Issue 15 item 5: the headlines come from the first few lines when they
    hold enough of the sender's own, judged with the line after each; the
    result is the one a scan of the first 200 lines gives."""
    data = f"Subject: s\r\n\r\n{body}".encode()
    assert extract_envelope(data, headlines=2).headlines == expected
    walk = env.walk_message(data, keep=env._SUMMARY_FIELDS)
    lines = env._part_lines(walk, env._HEADLINE_SCAN)
    assert tuple((env._own_lines(lines) or lines)[:2]) == expected


# ---------------------------------------------------------------------------
# Shortcuts (issue 15 item 5): each gives what the full steps give


@given(st.text(max_size=400), st.sampled_from([
    (env.MAX_SUBJECT_CHARS, env._SUBJECT_OCTETS), (env.MAX_DATE_CHARS, env._DATE_OCTETS),
    (env.MAX_HEADLINE_CHARS, env._HEADLINE_OCTETS), (5, 8), (64, 100), (40, 1000)]))
@example("\U0001f600" * 5, (5, 8))  # 5 characters, 20 octets: the octet cap cuts
@example("\u00e9" * 30 + " x", (64, 100))
def test_clean_shortcut_gives_what_every_step_gives(text: str, caps: tuple[int, int]) -> None:
    max_chars, max_octets = caps
    assert env._clean(text, max_chars, max_octets) == env._clean_steps(text, max_chars,
                                                                        max_octets)
    assert env._headline(text) == env._clean_steps(text, env.MAX_HEADLINE_CHARS,
                                                   env._HEADLINE_OCTETS)


_TEXT_LINES = ["own one", "own two", "> quoted", "", "   ", "-- ", "--", "_____",
               "-----Original Message-----", "From: someone", "Bob wrote:",
               "On Mon, 1 Jun 2009, Bob <b@x.example>", "wrote:", "caf\u00e9", "\x00",
               "x" * 250, "=== sponsor ===", "\u2028"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_TEXT_LINES), max_size=40),
       st.sampled_from(["\r\n", "\n", "\r"]), st.sampled_from(["utf-8", "utf-16", "latin-1"]),
       st.sampled_from(["", "base64", "quoted-printable"]), st.integers(1, 4),
       st.sampled_from([(8 * 1024, 64 * 1024, 256 * 1024), (64, 256, 1024), (16, 40, 100)]),
       st.sampled_from([env._HEADLINE_SCAN, 3, 7]))
def test_one_pass_headlines_are_those_of_the_whole_scan(
        lines: list[str], end: str, charset: str, encoding: str, wanted: int,
        steps: tuple[int, int, int], scan: int) -> None:
    """_plain_headlines reads a plain text's lines once, in its first step only,
    and stops early: where it answers, the answer is the 200-line scan's, also
    when the scan reads a longer prefix (small steps here) or fewer lines."""
    raw = end.join(lines).encode(charset, "replace")
    if encoding == "base64":
        raw = base64.encodebytes(raw)
    elif encoding == "quoted-printable":
        raw = binascii.b2a_qp(raw)
    data = (f"Subject: s\r\nContent-Type: text/plain; charset={charset}\r\n"
            f"Content-Transfer-Encoding: {encoding or '8bit'}\r\n\r\n").encode() + raw
    walk = env.walk_message(data, keep=env._SUMMARY_FIELDS)
    with mock.patch.object(mime_text, "TEXT_STEPS", steps), \
            mock.patch.object(env, "_HEADLINE_SCAN", scan):
        found = env._plain_headlines(walk, wanted)
        shown = env._part_lines(walk, scan)
    if found is not None:
        assert found == tuple((env._own_lines(shown) or shown)[:wanted])
    else:  # what is not settled there: nothing shown, or more to read
        assert not shown or len(data) - walk.plain.start > steps[0]  # type: ignore[union-attr]


def test_one_pass_headlines_answer_most_texts_and_leave_html_to_the_scan() -> None:
    def walk(data: bytes) -> env.Walk:
        return env.walk_message(data, keep=env._SUMMARY_FIELDS)

    # Settled early: two own lines, then whatever follows is not read.
    assert env._plain_headlines(walk(b"\r\n> q\r\none\r\ntwo\r\nthree\r\n"), 2) == (
        "one", "two")
    # A signature after the first line: nothing more of the sender's.
    assert env._plain_headlines(walk(b"\r\nonly\r\n-- \r\nsig\r\n"), 2) == ("only",)
    # Nothing of the sender's: the first lines as they are.
    assert env._plain_headlines(walk(b"\r\n> a\r\n> b\r\n"), 2) == ("> a", "> b")
    # No plain part, or a plain part that shows nothing: left to the scan.
    html = b"Content-Type: text/html\r\n\r\n<p>hi</p>\r\n"
    assert env._plain_headlines(walk(html), 2) is None
    assert env._plain_headlines(walk(b"\r\n   \r\n"), 2) is None
    # Over 8 KiB of quotes (under 200 lines) and no own line: the scan reads further.
    assert env._plain_headlines(walk(b"\r\n" + (b"> " + b"q" * 100 + b"\r\n") * 100), 2) is None
