"""Submission at the origin: assumption 3 (no spoofing) and Table 5 ("From: is added")."""

from __future__ import annotations

import contextlib
import email
import email.policy
import gc
import itertools
import re
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.utils import getaddresses
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smdp.core import submission
from smdp.core.envelope import extract_envelope
from smdp.core.submission import SubmissionError, prepare_submission, prepare_submission_body
from smdp.mail.body import CHUNK_SIZE, Body, BodyWriter
from smdp.mail.mime import MAX_HEADER_OCTETS, mbox_line_end, scan_header
from smdp.mail.mime.headers import MBOX_DECIDED

IDS = ("alice@a.example", "Alice.Work@A.example")
NOW = datetime(2026, 5, 5, 10, 0, 0, tzinfo=UTC)


def submit(raw: bytes, **kwargs: object) -> bytes:
    options: dict[str, object] = {
        "identities": IDS,
        "sender": "alice@a.example",
        "hostname": "smdp.a.example",
        "now": NOW,
    }
    options.update(kwargs)
    return prepare_submission(raw, **options)  # type: ignore[arg-type]


def parsed_from(data: bytes) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    return [addr for _, addr in getaddresses(msg.get_all("From", []))]


def test_adds_from_date_and_message_id() -> None:
    out = submit(b"Subject: hi\n\nHello\n")
    lines = out.split(b"\r\n")
    assert lines[0] == b"From: alice@a.example"
    assert lines[1] == b"Date: Tue, 05 May 2026 10:00:00 +0000"
    assert re.fullmatch(rb"Message-ID: <[a-z2-7]{26}@smdp\.a\.example>", lines[2])
    assert out.endswith(b"Subject: hi\r\n\r\nHello\r\n")


def test_message_ids_are_random() -> None:
    assert submit(b"Subject: x\r\n\r\n") != submit(b"Subject: x\r\n\r\n")


def test_keeps_existing_headers_and_the_exact_body() -> None:
    raw = (
        b"From: Alice <ALICE@a.example>\r\nDate: Mon, 04 May 2026 09:00:00 +0000\r\n"
        b"Message-ID: <mine@a.example>\r\nSubject: s\r\n\r\nbody\r\n.dot line\r\n"
    )
    assert submit(raw) == raw


def test_own_address_in_display_name_is_fine() -> None:
    raw = b'From: "Alice, reach me at alice@a.example." <alice@a.example>\r\n\r\n'
    assert submit(raw).endswith(raw)


def test_secondary_identity_is_allowed_case_insensitively() -> None:
    out = submit(b"From: alice.work@a.example\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nb\r\n")
    assert out.startswith(b"From: alice.work@a.example\r\n")


def test_date_uses_now_and_naive_is_utc() -> None:
    cet = timezone(timedelta(hours=2))
    out = submit(b"Subject: x\r\n\r\n", now=datetime(2026, 5, 5, 12, 0, tzinfo=cet))
    assert b"Date: Tue, 05 May 2026 12:00:00 +0200\r\n" in out
    out = submit(b"Subject: x\r\n\r\n", now=datetime(2026, 5, 5, 12, 0))
    assert b"Date: Tue, 05 May 2026 12:00:00 +0000\r\n" in out


def test_default_now_is_current_time() -> None:
    out = prepare_submission(
        b"Subject: x\r\n\r\n", identities=IDS, sender="alice@a.example", hostname="h.example"
    )
    date = email.message_from_bytes(out, policy=email.policy.default)["Date"].datetime
    assert abs((date - datetime.now(UTC)).total_seconds()) < 60


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n"),
        (b"a\r\nb", b"a\r\nb\r\n"),
        (b"a\r\r\nb\n\r", b"a\r\n\r\nb\r\n\r\n"),
    ],
)
def test_line_ends_become_crlf(raw: bytes, expected: bytes) -> None:
    out = submit(b"Subject: t\n\n" + raw)
    assert out.endswith(b"Subject: t\r\n\r\n" + expected)


def test_bare_cr_cannot_hide_a_from_in_the_subject() -> None:
    # Readers (the email package included) break lines at a bare CR.
    with pytest.raises(SubmissionError, match=re.escape("From <evil@x.example>")):
        submit(b"Subject: hi\rFrom: evil@x.example\r\n\r\nbody")


@pytest.mark.parametrize(
    "from_value",
    [
        b"mallory@x.example",
        b"Alice <alice@a.example>, mallory@x.example",
        b'"alice@a.example" <mallory@x.example>',
        b'"mallory@x.example" <alice@a.example>',  # display-name spoofing
        b"=?utf-8?q?mallory=40x=2Eexample?= <alice@a.example>",
        b"alice@a.example (mallory@x.example)",
        b"alice@a.example <mallory@x.example>",
        b"mallory(comment)@x.example",
        b"alice@a.example)<mallory@x.example>",
        b"alice",
    ],
)
def test_foreign_from_is_refused(from_value: bytes) -> None:
    with pytest.raises(SubmissionError, match="is not one of your identities"):
        submit(b"From: " + from_value + b"\r\nSubject: s\r\n\r\nbody\r\n")


def test_error_text_names_the_address() -> None:
    with pytest.raises(SubmissionError) as caught:
        submit(b"From: Mallory <mallory@x.example>\r\n\r\n")
    assert str(caught.value) == "From <mallory@x.example> is not one of your identities"


def test_one_foreign_from_among_several_is_refused() -> None:
    with pytest.raises(SubmissionError, match=re.escape("From <mallory@x.example> is not one")):
        submit(b"From: alice@a.example\r\nFrom: mallory@x.example\r\n\r\n")


def test_several_own_froms_are_kept() -> None:
    out = submit(b"From: alice@a.example\r\nFrom: alice.work@a.example\r\n\r\n")
    assert parsed_from(out) == ["alice@a.example", "alice.work@a.example"]


@pytest.mark.parametrize(("value", "error"), [
    (b"", "The From header has no address."),
    (b"undisclosed-recipients:;", "The From header has no address."),
    (b"Alice", "From <Alice> is not one of your identities"),  # a bare word reads as a local part
])
def test_from_without_address_is_refused(value: bytes, error: str) -> None:
    with pytest.raises(SubmissionError, match=re.escape(error)):
        submit(b"From: " + value + b"\r\n\r\n")


@pytest.mark.parametrize("name", [b"Sender", b"Resent-From", b"Resent-Sender", b"FROM", b"from "])
def test_other_author_fields_are_checked(name: bytes) -> None:
    with pytest.raises(SubmissionError, match=re.escape("mallory@x.example")):
        submit(name + b": mallory@x.example\r\n\r\n")


@pytest.mark.parametrize("name", [b"Sender", b"Resent-From", b"Resent-Sender"])
def test_an_own_author_field_other_than_from_still_gets_a_from(name: bytes) -> None:
    """Sender and the Resent-* fields may name the user, but none is a From:
    the server still writes one (Table 5), above the user's fields, kept as sent."""
    out = submit(name + b": Alice <alice@a.example>\r\nSubject: s\r\n\r\nbody\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"From: alice@a.example"
    assert lines[1] == b"Date: Tue, 05 May 2026 10:00:00 +0000"
    assert re.fullmatch(rb"Message-ID: <[a-z2-7]{26}@smdp\.a\.example>", lines[2])
    assert lines[3:] == [name + b": Alice <alice@a.example>", b"Subject: s"]
    assert body == b"body\r\n"


@pytest.mark.parametrize("name", [b"FROM", b"from "])
def test_an_own_from_in_any_spelling_is_the_from(name: bytes) -> None:
    raw = name + b": alice@a.example\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n"
    assert submit(raw) == raw  # nothing added: the user's From is the From


def test_folded_from_is_checked() -> None:
    with pytest.raises(SubmissionError, match=re.escape("From <mallory@x.example> is not one")):
        submit(b"From: Alice\r\n <mallory@x.example>\r\n\r\n")


def test_hostile_from_values_give_submission_errors() -> None:
    for value, error in [(b"(" * 3000, "The From header is malformed and cannot be checked."),
                         (b'"' * 3000, "From <<>> is not one of your identities"),
                         (b"<" * 3000, "From <<>> is not one of your identities"),
                         (b"a" * 5000, "The From header is too long.")]:
        with pytest.raises(SubmissionError, match=re.escape(error)):
            submit(b"From: " + value + b"\r\n\r\n")


@pytest.mark.parametrize("char", [b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x7f"])
def test_control_characters_in_header_are_refused(char: bytes) -> None:
    with pytest.raises(SubmissionError, match="control character"):
        submit(b"Subject: a" + char + b"From: evil@x.example\r\n\r\n")


def test_nul_in_body_is_not_a_header_matter() -> None:
    assert submit(b"Subject: a\r\n\r\nbinary\x00body\r\n").endswith(b"binary\x00body\r\n")


def test_no_blank_line_inserts_the_separator_where_the_header_stops() -> None:
    out = submit(b"Subject: hi\nFrom: alice@a.example\nHello there\nFrom: evil@x.example\n")
    assert out.endswith(
        b"Subject: hi\r\nFrom: alice@a.example\r\n\r\nHello there\r\nFrom: evil@x.example\r\n"
    )
    # Every reader now sees one From, the user's.
    assert parsed_from(out) == ["alice@a.example"]


def test_headers_only_message_gets_a_separator() -> None:
    out = submit(b"Subject: only a header")
    assert out.endswith(b"Subject: only a header\r\n\r\n")


def test_no_header_at_all_makes_everything_body() -> None:
    raw = b"Hello Bob,\nFrom: evil@x.example\n\nbye\n"
    out = submit(raw)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"From: alice@a.example\r\nDate: ")
    assert body == b"Hello Bob,\r\nFrom: evil@x.example\r\n\r\nbye\r\n"
    assert parsed_from(out) == ["alice@a.example"]


def test_leading_continuation_line_is_body() -> None:
    out = submit(b" indented\r\nFrom: evil@x.example\r\n\r\nx")
    assert parsed_from(out) == ["alice@a.example"]


def test_empty_message() -> None:
    out = submit(b"")
    assert out.startswith(b"From: alice@a.example\r\n") and out.endswith(b"\r\n\r\n")


# A message saved from an mbox file starts with the mbox "From " line
# (61% of the real mail tried in issue 10). Left in, it ended the header
# before its first field: the whole header became body text.
MBOX_MESSAGE = (
    b"From fork-admin@xent.com  Mon Sep 23 12:34:56 2002\n"
    b"X-Mailer: Mutt\nFrom: Alice <alice@a.example>\nSubject: Meeting moved\n"
    b"Date: Mon, 23 Sep 2002 12:34:56 +0000\nMessage-ID: <m1@a.example>\n\n"
    b"The meeting is at ten.\nSee you there.\n"
)


def test_mbox_from_line_is_dropped_and_the_header_kept() -> None:
    out = submit(MBOX_MESSAGE)
    assert out == MBOX_MESSAGE.split(b"\n", 1)[1].replace(b"\n", b"\r\n")
    assert out.startswith(b"X-Mailer: Mutt\r\nFrom: Alice <alice@a.example>\r\n")
    summary = extract_envelope(out)
    assert summary.subject == "Meeting moved" and summary.from_name == "Alice"
    assert summary.headlines == ("The meeting is at ten.", "See you there.")
    # The envelope of the stored message is the one the original gives.
    assert extract_envelope(MBOX_MESSAGE) == summary


def test_the_header_behind_an_mbox_line_is_checked() -> None:
    with pytest.raises(SubmissionError, match=re.escape("From <mallory@x.example>")):
        submit(b"From alice@a.example Mon Sep 23 12:34:56 2002\r\n"
               b"From: mallory@x.example\r\n\r\nhi\r\n")
    # Controls in the mbox line are not in the header: the line is dropped.
    out = submit(b"From a\x00b\nSubject: s\n\nx\n")
    assert b"\x00" not in out and b"Subject: s\r\n\r\nx\r\n" in out


def test_text_that_starts_with_from_is_kept() -> None:
    # Not an mbox line (no header field follows): the user's first line of text.
    out = submit(b"From now on we meet at ten.\nSee you.\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"From: alice@a.example\r\n")
    assert body == b"From now on we meet at ten.\r\nSee you.\r\n"


TRACE = b"Received: from [192.0.2.7] by smdp.a.example with SMDP-user id x; date\r\n"


def test_trace_fields_go_first_and_return_path_is_dropped() -> None:
    raw = (b"Return-Path: <old@x.example>\r\nFrom: alice@a.example\r\nDate: d\r\n"
           b"Message-ID: <m@a>\r\nreturn-path:<older@x.example>\r\nSubject: s\r\n\r\n"
           b"Return-Path: in the body stays\r\n")
    assert submit(raw, trace=TRACE) == TRACE + (
        b"From: alice@a.example\r\nDate: d\r\nMessage-ID: <m@a>\r\nSubject: s\r\n\r\n"
        b"Return-Path: in the body stays\r\n")
    assert submit(b"Subject: s\r\n\r\nx", trace=TRACE).startswith(TRACE + b"From: ")
    assert_same(raw, trace=TRACE)


def test_bcc_is_removed_and_the_rest_kept_in_order() -> None:
    raw = b"To: b@b.example\r\nBcc: secret@c.example,\r\n other@d.example\r\nSubject: s\r\n\r\nx"
    out = submit(raw)
    assert b"secret" not in out and b"other@d" not in out
    assert b"To: b@b.example\r\nSubject: s\r\n\r\nx\r\n" in out


def test_sender_must_be_an_identity() -> None:
    with pytest.raises(SubmissionError, match="not one of your identities"):
        submit(b"Subject: x\r\n\r\n", sender="bob@b.example")
    with pytest.raises(SubmissionError, match="invalid"):
        submit(b"Subject: x\r\n\r\n", sender="not an address")
    out = submit(b"Subject: x\r\n\r\n", sender="ALICE.work@a.example")
    assert out.startswith(b"From: ALICE.work@a.example\r\n")


def test_bad_hostname_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="hostname"):
        submit(b"Subject: x\r\n\r\n", hostname="bad host")


def test_oversized_header_is_refused() -> None:
    line = b"X-Filler: " + b"x" * 990 + b"\r\n"
    raw = line * (MAX_HEADER_OCTETS // len(line) + 2) + b"\r\nbody"
    with pytest.raises(SubmissionError, match="header is larger"):
        submit(raw)


def test_message_id_placeholder_is_kept_and_envelope_still_extracts() -> None:
    out = submit(b"Message-ID: <>\r\nSubject: weird\r\n\r\nbody")
    assert b"Message-ID: <>\r\n" in out and out.count(b"Message-ID") == 1
    assert extract_envelope(out).subject == "weird"


def test_error_text_is_one_bounded_line() -> None:
    with pytest.raises(SubmissionError, match=r"^From <m+$") as caught:  # cut at 200
        submit(b"From: " + b"m" * 1000 + b"@x.example\r\n\r\n")
    text = str(caught.value)
    assert len(text) <= 200 and "\r" not in text and "\n" not in text


# ---------------------------------------------------------------------------
# The property that matters: whatever is accepted, every reader's From is ours.

_LINES = st.sampled_from(
    [
        b"From: alice@a.example",
        b"From: Alice <Alice@A.Example>",
        b"from: alice.work@a.example",
        b"From: mallory@x.example",
        b"From: \"alice@a.example\" <mallory@x.example>",
        b"Sender: mallory@x.example",
        b"Sender: alice@a.example",
        b"Resent-From: Alice <alice.work@a.example>",
        b"Resent-Sender: alice@a.example",
        b"Subject: hello",
        b"Subject: =?utf-8?q?caf=C3=A9?=",
        b" folded continuation",
        b"\tFrom: mallory@x.example",
        b"From : mallory@x.example",
        b"not a header",
        b"",
        b"To: bob@b.example",
        b"Bcc: hidden@c.example",
        b"X-\xff: 8bit",
        b"Subject: a\rFrom: mallory@x.example",
        b"Subject: a\x0bFrom: mallory@x.example",
        b"From mallory@x.example Mon Sep 23 12:34:56 2002",
        b"From now on",
    ]
)
_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_LINES, _ENDS), max_size=12))
def test_accepted_messages_never_show_a_foreign_author(lines: list[tuple[bytes, bytes]]) -> None:
    raw = b"".join(line + end for line, end in lines)
    try:
        out = submit(raw)
    except SubmissionError:
        return
    msg = email.message_from_bytes(out, policy=email.policy.compat32)
    for field in ("From", "Sender", "Resent-From", "Resent-Sender"):
        for value in msg.get_all(field, []):
            for _, addr in getaddresses([value]):
                assert addr.lower() in {"alice@a.example", "alice.work@a.example"}
    assert msg.get_all("Bcc") is None
    assert len(msg.get_all("From", [])) >= 1
    # Idempotent: a stored message submitted again comes back unchanged.
    assert submit(out) == out


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_give_bytes_or_submission_error(raw: bytes) -> None:
    try:
        out = submit(raw)
    except SubmissionError:
        return
    assert out.endswith(b"\r\n")
    assert b"\r" not in out.replace(b"\r\n", b"")
    assert b"\n" not in out.replace(b"\r\n", b"")


# ---------------------------------------------------------------------------
# prepare_submission_body: the same octets and errors from a Body, chunk by chunk


def submit_body(raw: Body, **kwargs: object) -> Body:
    options: dict[str, object] = {
        "identities": IDS,
        "sender": "alice@a.example",
        "hostname": "smdp.a.example",
        "now": NOW,
    }
    options.update(kwargs)
    return prepare_submission_body(raw, **options)  # type: ignore[arg-type]


@contextmanager
def fixed_message_ids() -> Iterator[None]:
    """Generated Message-IDs all alike, so that two results can be compared."""
    fake = SimpleNamespace(token_bytes=lambda n: bytes(n))
    with mock.patch.object(submission, "secrets", fake):
        yield


def outcome(fn: Callable[[], bytes]) -> bytes | tuple[str, str]:
    try:
        return fn()
    except SubmissionError as exc:
        return ("SubmissionError", str(exc))


def split(raw: bytes, cuts: list[int]) -> Body:
    """``raw`` as an in-memory Body whose chunks end at ``cuts``."""
    points = sorted({c for c in cuts if 0 < c < len(raw)})
    return Body(raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True))


def file_body(raw: bytes, threshold: int = 0) -> Body:
    writer = BodyWriter(threshold=threshold)
    writer.write(raw)
    return writer.finish()


def chunkings(raw: bytes) -> list[Body]:
    size = len(raw)
    return [
        Body.of(raw),
        split(raw, list(range(1, size))),  # one octet at a time
        split(raw, list(range(2, size, 2))),
        split(raw, list(range(3, size, 7))),
        split(raw, [i + 1 for i, octet in enumerate(raw) if octet == 0x0D]),  # after every CR
        file_body(raw),
    ]


def assert_same(raw: bytes, **kwargs: object) -> None:
    with fixed_message_ids():
        expected = outcome(lambda: submit(raw, **kwargs))
        for body in chunkings(raw):
            got = outcome(lambda body=body: submit_body(body, **kwargs).read())  # type: ignore[misc]
            assert got == expected, (raw, body)


EXISTING_INPUTS = [
    b"Subject: hi\n\nHello\n",
    b"Subject: x\r\n\r\n",
    (b"From: Alice <ALICE@a.example>\r\nDate: Mon, 04 May 2026 09:00:00 +0000\r\n"
     b"Message-ID: <mine@a.example>\r\nSubject: s\r\n\r\nbody\r\n.dot line\r\n"),
    b'From: "Alice, reach me at alice@a.example." <alice@a.example>\r\n\r\n',
    b"From: alice.work@a.example\r\nDate: x\r\nMessage-ID: <1@x>\r\n\r\nb\r\n",
    *[b"Subject: t\n\n" + raw for raw in (b"a\nb\n", b"a\rb\r", b"a\r\nb", b"a\r\r\nb\n\r")],
    b"Subject: hi\rFrom: evil@x.example\r\n\r\nbody",
    *[b"From: " + v + b"\r\nSubject: s\r\n\r\nbody\r\n" for v in (
        b"mallory@x.example", b"Alice <alice@a.example>, mallory@x.example",
        b'"alice@a.example" <mallory@x.example>', b'"mallory@x.example" <alice@a.example>',
        b"=?utf-8?q?mallory=40x=2Eexample?= <alice@a.example>",
        b"alice@a.example (mallory@x.example)", b"alice@a.example <mallory@x.example>",
        b"mallory(comment)@x.example", b"alice@a.example)<mallory@x.example>", b"alice")],
    b"From: Mallory <mallory@x.example>\r\n\r\n",
    b"From: alice@a.example\r\nFrom: mallory@x.example\r\n\r\n",
    b"From: alice@a.example\r\nFrom: alice.work@a.example\r\n\r\n",
    *[b"From: " + v + b"\r\n\r\n" for v in (b"", b"undisclosed-recipients:;", b"Alice")],
    *[n + b": mallory@x.example\r\n\r\n" for n in (b"Sender", b"Resent-From", b"FROM", b"from ")],
    b"From: Alice\r\n <mallory@x.example>\r\n\r\n",
    *[b"From: " + v + b"\r\n\r\n" for v in (b"(" * 3000, b'"' * 3000, b"<" * 3000, b"a" * 5000)],
    *[b"Subject: a" + c + b"From: evil@x.example\r\n\r\n" for c in (b"\x00", b"\x0b", b"\x7f")],
    b"Subject: a\r\n\r\nbinary\x00body\r\n",
    b"Subject: hi\nFrom: alice@a.example\nHello there\nFrom: evil@x.example\n",
    b"Subject: only a header",
    b"Hello Bob,\nFrom: evil@x.example\n\nbye\n",
    b" indented\r\nFrom: evil@x.example\r\n\r\nx",
    b"",
    b"\r",
    b"\n",
    b"To: b@b.example\r\nBcc: secret@c.example,\r\n other@d.example\r\nSubject: s\r\n\r\nx",
    b"Message-ID: <>\r\nSubject: weird\r\n\r\nbody",
    b"From: " + b"m" * 1000 + b"@x.example\r\n\r\n",
    MBOX_MESSAGE,
    MBOX_MESSAGE.replace(b"\n", b"\r"),
    b"From a@b Mon Sep 23 12:34:56 2002\r\nFrom: mallory@x.example\r\n\r\nhi\r\n",
    b"From now on we meet at ten.\nSee you.\n",
    b"From x\n",
    b"From x\nSubj",
    b"From " + b"x" * 2000 + b"\nSubject: s\n\nbody\n",
]


@pytest.mark.parametrize("raw", EXISTING_INPUTS)
def test_body_version_gives_the_same_octets_or_error(raw: bytes) -> None:
    assert_same(raw)


def test_body_version_checks_sender_and_hostname_first() -> None:
    for kwargs, exc, error in (
        ({"sender": "bob@b.example"}, SubmissionError, "The sender is not one of your identities."),
        ({"sender": "not an address"}, SubmissionError,
         "The sender address is invalid: The address contains a space."),
        ({"hostname": "bad host"}, ValueError,
         "Invalid hostname for Message-ID: The address contains a space."),
    ):
        with pytest.raises(exc, match=re.escape(error)):
            submit(b"Subject: x\r\n\r\n", **kwargs)
        with pytest.raises(exc, match=re.escape(error)):
            submit_body(Body.of(b"Subject: x\r\n\r\n"), **kwargs)


def test_body_version_default_time_and_random_ids() -> None:
    out = prepare_submission_body(Body.of(b"Subject: x\r\n\r\n"), identities=IDS,
                                  sender="alice@a.example", hostname="h.example").read()
    date = email.message_from_bytes(out, policy=email.policy.default)["Date"].datetime
    assert abs((date - datetime.now(UTC)).total_seconds()) < 60
    assert submit_body(Body.of(b"Subject: x\r\n\r\n")).read() != out


def test_body_version_oversized_header_is_refused() -> None:
    line = b"X-Filler: " + b"x" * 990 + b"\r\n"
    raw = line * (MAX_HEADER_OCTETS // len(line) + 2) + b"\r\nbody"
    with pytest.raises(SubmissionError, match="header is larger"):
        submit_body(file_body(raw))
    with pytest.raises(SubmissionError, match="header is larger"):
        submit_body(split(raw, list(range(1000, len(raw), 4093))))


def test_cr_and_lf_on_either_side_of_a_file_chunk() -> None:
    # A CR ending one 256 KiB chunk of the file and an LF starting the next.
    head = b"From: alice@a.example\r\nSubject: s\r\n\r\n"
    for line_end in (b"\r\n", b"\r", b"\n", b"\r\r", b"\n\r"):
        filler = b"x" * (CHUNK_SIZE - len(head) - 1)
        raw = head + filler + line_end + b"y" * 1000 + b"\r"
        with fixed_message_ids():
            expected = submit(raw)
            assert submit_body(file_body(raw)).read() == expected


def test_large_body_is_spooled_and_memory_stays_bounded(tmp_path: Path) -> None:
    piece = b"line of text\r\nbare lf\nbare cr\r" * 1000
    raw = b"From: alice@a.example\nSubject: big\n\n" + piece * 200  # about 7.6 MB
    body = file_body(raw)
    with fixed_message_ids():
        expected = submit(raw)
        gc.collect()
        tracemalloc.start()
        try:
            out = submit_body(body, spool_dir=str(tmp_path))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert not out.in_memory
    assert out.size == len(expected)
    assert out.read() == expected
    # The writer's in-memory part (1 MiB) and a few chunks, not the message.
    assert peak < 4 * 1024 * 1024
    small = submit_body(Body.of(b"Subject: s\r\n\r\nhi\r\n"))
    assert small.in_memory


def test_long_first_body_line_is_followed_not_held() -> None:
    # No blank line: the header stops at a line that is not a field, and that
    # line is 2 MB of field-name octets: only its end (no colon) decides.
    # With a colon it is a 2 MB field: the header is too large either way.
    for tail in (b"\r\nmore\r\n", b"", b" and then: a colon\r\n", b"  :field\r\n\r\nbody"):
        raw = b"Subject: s\r\n" + b"x" * 2_000_000 + tail
        with fixed_message_ids():
            expected = outcome(lambda raw=raw: submit(raw))  # type: ignore[misc]
            got = outcome(lambda raw=raw: submit_body(file_body(raw)).read())  # type: ignore[misc]
        assert got == expected


# Small limits make every path of the header read reachable with short input.
# The first scan no smaller than the module allows (``_FIRST_SCAN >=
# MBOX_DECIDED``, asserted there): smaller, a leading mbox line would be
# judged before it is known, which the module's own values never do.
_SMALL_LIMITS = (("MAX_HEADER_OCTETS", 128), ("_HEADER_SLACK", 32),
                 ("_FIRST_SCAN", MBOX_DECIDED))

_SOME_LINES = st.one_of(
    _LINES,
    st.builds(lambda n: b"X" * n, st.integers(40, 300)),
    st.builds(lambda n, end: b"X" * n + end, st.integers(40, 300), st.sampled_from([b":", b" :"])),
    st.builds(lambda n: b"Subject: " + b"v" * n, st.integers(40, 300)),
    st.builds(lambda n, c: b"XX" + b" " * n + c, st.integers(0, 200),
              st.sampled_from([b":", b"y"])),
    st.binary(max_size=30),
)


def _is_documented_difference(raw: bytes, got: object, expected: object) -> bool:
    """The one difference prepare_submission_body documents: an all-header message
    more than _HEADER_SLACK over the limit, refused rather than taken whole
    (counted after a leading mbox line, which both versions strip)."""
    data = submission._normalize_line_ends(raw)
    data = data[mbox_line_end(data):]
    block = scan_header(data, limit=submission.MAX_HEADER_OCTETS)
    return (
        isinstance(got, tuple)
        and "larger" in got[1]
        and not block.truncated
        and block.end == len(data) > submission.MAX_HEADER_OCTETS + submission._HEADER_SLACK
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_SOME_LINES, _ENDS), max_size=10), st.booleans(),
       st.lists(st.integers(1, 2000), max_size=8), st.booleans())
def test_body_version_matches_any_chunking(
    lines: list[tuple[bytes, bytes]], cut_last: bool, cuts: list[int], small_limits: bool
) -> None:
    raw = b"".join(line + end for line, end in lines)
    if cut_last:
        raw = raw[:-1]
    with contextlib.ExitStack() as stack:
        stack.enter_context(fixed_message_ids())
        if small_limits:
            for name, value in _SMALL_LIMITS:
                stack.enter_context(mock.patch.object(submission, name, value))
        expected = outcome(lambda: submit(raw))
        got = outcome(lambda: submit_body(split(raw, cuts)).read())
        if got != expected:
            assert small_limits and _is_documented_difference(raw, got, expected)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 600), max_size=6))
def test_body_version_random_bytes(raw: bytes, cuts: list[int]) -> None:
    with fixed_message_ids():
        assert outcome(lambda: submit_body(split(raw, cuts)).read()) == outcome(
            lambda: submit(raw)
        )


@contextmanager
def small_limits() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for name, value in _SMALL_LIMITS:
            stack.enter_context(mock.patch.object(submission, name, value))
        yield


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: s\r\n" + b"X" * 400 + b"\r\nbody\r\n",  # a long line that is body
        b"Subject: s\r\n" + b"X" * 400,
        b"Subject: s\r\n" + b"X" * 400 + b"   y\r\n",  # name octets, blanks, no colon
        b"Subject: s\r\n" + b"X" * 400 + b"  \t",
        b"X" * 400 + b"\r\n\r\n",  # no header at all
        b"Subject: s\r\n" + b"X" * 400 + b"   :v\r\n\r\nb",  # a long field: too large
        b"Subject: s\r\n" + b"X" * 400 + b":v\r\n\r\nb",
        b"Subject: " + b"v" * 400 + b"\r\n\r\nbody",
        b"Subject: s\r\n" * 30 + b"\r\nbody",
    ],
)
def test_long_lines_around_the_header_limit(raw: bytes) -> None:
    with small_limits():
        assert_same(raw)


def test_the_documented_difference() -> None:
    # All header, its last line crossing the limit by more than the slack:
    # prepare_submission takes it whole, prepare_submission_body refuses it.
    # (Longer than the first scan: a message read whole at once is decided whole.)
    raw = b"Subject: s\r\nX-Long: " + b"v" * (2 * MBOX_DECIDED)
    with small_limits(), fixed_message_ids():
        assert submit(raw).endswith(b"v\r\n\r\n")
        with pytest.raises(SubmissionError, match="larger"):
            submit_body(file_body(raw))
        assert _is_documented_difference(raw, outcome(lambda: submit_body(Body.of(raw)).read()),
                                         submit(raw))


def test_a_leading_mbox_line_does_not_count_towards_the_header_limit() -> None:
    """Found by test_body_version_matches_any_chunking: the streamed version
    counted the mbox line in the header's size, and refused a header under
    the limit that the whole-bytes version took."""
    raw = b"From mallory@x.example Mon Sep 23 12:34:56 2002\r\n" + b"X" * 108 + b" :\r\n"
    with contextlib.ExitStack() as stack:
        stack.enter_context(fixed_message_ids())
        for name, value in _SMALL_LIMITS:
            stack.enter_context(mock.patch.object(submission, name, value))
        whole = submit(raw)
        assert submit_body(split(raw, [])).read() == whole
        assert whole.endswith(b"\r\n" + b"X" * 108 + b" :\r\n\r\n")


def _line_ends_reference(raw: bytes) -> bytes:
    """Every CRLF, bare LF and bare CR made CRLF, the whole message at once,
    and a final CRLF unless it is empty or ends with a line end."""
    out = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return out + b"\r\n" if out and not out.endswith(b"\r\n") else out


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"ab", b"x" * 20 + b"\r\n", b".",
                                 b"\r\n\r\n"]) | st.binary(max_size=8), max_size=30)
       .map(b"".join),
       st.lists(st.integers(0, 300), max_size=12))
def test_line_ends_in_any_pieces_match_the_whole(raw: bytes, cuts: list[int]) -> None:
    # Pieces already all CRLF pass through as they are (issue 15 item 4);
    # the others, and those cut inside a CRLF, must come out the same.
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    lines = submission._LineEnds()
    got = b"".join(lines.feed(raw[a:b]) for a, b in itertools.pairwise(points))
    assert got + lines.end() == _line_ends_reference(raw)
    # The same with every LF made CRLF first, told so (what the ports' data
    # readers give: Body.no_bare_lf); a bare CR is still found.
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    points = sorted({min(c, len(crlf)) for c in cuts} | {0, len(crlf)})
    lines = submission._LineEnds(no_bare_lf=True)
    got = b"".join(lines.feed(crlf[a:b]) for a, b in itertools.pairwise(points))
    assert got + lines.end() == _line_ends_reference(crlf)
