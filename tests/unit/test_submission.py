"""Submission at the origin: assumption 3 (no spoofing) and Table 5 ("From: is added")."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.utils import getaddresses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smdp.core.envelope import MAX_HEADER_OCTETS, extract_envelope
from smdp.core.submission import SubmissionError, prepare_submission

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
    with pytest.raises(SubmissionError):
        submit(b"From: alice@a.example\r\nFrom: mallory@x.example\r\n\r\n")


def test_several_own_froms_are_kept() -> None:
    out = submit(b"From: alice@a.example\r\nFrom: alice.work@a.example\r\n\r\n")
    assert parsed_from(out) == ["alice@a.example", "alice.work@a.example"]


@pytest.mark.parametrize("value", [b"", b"undisclosed-recipients:;", b"Alice"])
def test_from_without_address_is_refused(value: bytes) -> None:
    with pytest.raises(SubmissionError):
        submit(b"From: " + value + b"\r\n\r\n")


@pytest.mark.parametrize("name", [b"Sender", b"Resent-From", b"Resent-Sender", b"FROM", b"from "])
def test_other_author_fields_are_checked(name: bytes) -> None:
    with pytest.raises(SubmissionError, match=re.escape("mallory@x.example")):
        submit(name + b": mallory@x.example\r\n\r\n")
    submit(name + b": alice@a.example\r\n\r\n")


def test_folded_from_is_checked() -> None:
    with pytest.raises(SubmissionError):
        submit(b"From: Alice\r\n <mallory@x.example>\r\n\r\n")


def test_hostile_from_values_give_submission_errors() -> None:
    for value in [b"(" * 3000, b'"' * 3000, b"<" * 3000, b"a" * 5000]:
        with pytest.raises(SubmissionError):
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
    with pytest.raises(SubmissionError) as caught:
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
