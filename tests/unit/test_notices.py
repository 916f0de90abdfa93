"""The notices the server writes to its users (``core/notices.py``; issue 10,
item 7): the delivery status notification parsed back with the standard
library's parser, field by field (RFC 3464), how each failure is reported,
and the notice of pending envelopes."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default

import pytest

from smdp.core.notices import (
    FailedRecipient,
    PendingItem,
    build_dsn,
    build_pending_notice,
    failure_of,
    header_of,
)
from smdp.terms import RecipientState

ARRIVAL = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
NOW = ARRIVAL + 3600


def parse(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def content(part: Message) -> str:
    """A text part's content, lines ended by LF (it travels with CRLF)."""
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def dsn(failed: list[FailedRecipient], subject: str = "lunch") -> EmailMessage:
    header = header_of(b"From: Alice <alice@a.example>\r\nTo: bob@b.example\r\n"
                       b"Subject: lunch\r\nMessage-ID: <1@a.example>\r\n\r\nAt noon?\r\n")
    return parse(build_dsn(hostname="smdp.a.example", to="alice@a.example", subject=subject,
                           arrival=ARRIVAL, header=header, failed=failed, now=NOW))


def status_blocks(report: EmailMessage) -> list[Message]:
    part = report.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return blocks


def test_a_dsn_is_a_multipart_report_of_three_parts_with_every_field() -> None:
    report = dsn([
        failure_of("bob@b.example", RecipientState.FAILED,
                   "550 5.1.1 <bob@b.example>: no such user here"),
        failure_of("carol@c.example", RecipientState.EXPIRED,
                   "expired: no decision before the message expired"),
    ])
    # The message itself: from the mail system, to the sender, never answered.
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@smdp.a.example>"
    assert report["To"] == "alice@a.example"
    assert report["Subject"] == "Undelivered mail: lunch"
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Date"] == "Tue, 14 Nov 2023 23:13:20 +0000"
    assert report["Message-ID"].endswith("@smdp.a.example>")
    assert report["MIME-Version"] == "1.0"
    text, _status, headers = report.get_payload()

    # 1: for people, each recipient and why.
    assert text.get_content_type() == "text/plain"
    body = content(text)
    assert "could not be delivered to the following 2 recipients" in body
    assert "<bob@b.example>: 550 5.1.1 <bob@b.example>: no such user here" in body
    assert "<carol@c.example>: expired: no decision before the message expired" in body

    # 2: message/delivery-status, the per-message block then one per recipient.
    message, bob, carol = status_blocks(report)
    assert dict(message.items()) == {"Reporting-MTA": "dns; smdp.a.example",
                                     "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000"}
    assert dict(bob.items()) == {
        "Final-Recipient": "rfc822; bob@b.example",
        "Action": "failed",
        "Status": "5.1.1",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@b.example>: no such user here",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
    }
    assert dict(carol.items()) == {  # no reply said why: no Diagnostic-Code
        "Final-Recipient": "rfc822; carol@c.example",
        "Action": "failed",
        "Status": "5.4.7",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 23:13:20 +0000",
    }

    # 3: the original message's header, and nothing of its body.
    assert headers.get_content_type() == "text/rfc822-headers"
    assert content(headers) == (
        "From: Alice <alice@a.example>\nTo: bob@b.example\nSubject: lunch\n"
        "Message-ID: <1@a.example>\n")


@pytest.mark.parametrize(("state", "detail", "hint", "status", "diagnostic"), [
    # A reply of the destination: its enhanced code, its text as the diagnostic.
    (RecipientState.FAILED, "550 5.1.1 <b@b.example>: no such user here", "", "5.1.1",
     "550 5.1.1 <b@b.example>: no such user here"),
    (RecipientState.FAILED, "ENVELOPE: 554 5.7.1 smdp.a.example blocked: low quality", "",
     "5.7.1", "554 5.7.1 smdp.a.example blocked: low quality"),
    # A temporary reply retried until the origin gave up: final now (5.x.y).
    (RecipientState.FAILED, "gave up after 30 attempts: RCPT <b@b.example>: 452 4.2.2 full",
     "5.4.7", "5.2.2", "452 4.2.2 full"),
    # No reply: what the origin knows (no SMDP server: 5.1.2; gave up: 5.4.7).
    (RecipientState.FAILED, "no SMDP server for c.example: NXDOMAIN", "5.1.2", "5.1.2", ""),
    (RecipientState.FAILED, "gave up after 30 attempts: cannot connect", "5.4.7", "5.4.7", ""),
    (RecipientState.FAILED, "unexpected message body", "", "5.0.0", ""),
    # A reply without an enhanced code is still the diagnostic.
    (RecipientState.FAILED, "DATA: 554 no", "", "5.0.0", "554 no"),
    (RecipientState.EXPIRED, "expired: no decision", "", "5.4.7", ""),
    (RecipientState.REFUSED, "refused at the source: recipient is on your black list", "",
     "5.7.1", ""),
])
def test_each_failure_is_reported_with_its_status(
    state: RecipientState, detail: str, hint: str, status: str, diagnostic: str,
) -> None:
    assert failure_of("b@b.example", state, detail, hint) == FailedRecipient(
        "b@b.example", status, detail, diagnostic)


def test_the_original_header_is_cut_at_the_blank_line_and_at_a_size() -> None:
    assert header_of(b"Subject: a\r\nTo: b@b.example\r\n\r\nbody\r\n") == \
        "Subject: a\nTo: b@b.example\n"
    assert header_of(b"Subject: a\n\nbody\n") == "Subject: a\n"
    assert header_of(b"Subject: only a header") == "Subject: only a header\n"
    huge = b"".join(b"X-Filler: %05d\r\n" % i for i in range(5000)) + b"\r\nbody"
    cut = header_of(huge)
    assert 30_000 < len(cut) <= 32 * 1024 and cut.endswith("\n")
    assert cut.splitlines()[-1].startswith("X-Filler: ")  # whole lines only


def test_a_dsn_for_a_non_ascii_subject_encodes_it() -> None:
    report = dsn([failure_of("b@b.example", RecipientState.EXPIRED, "expired")],
                 subject="Grüße")
    assert report["Subject"] == "Undelivered mail: Grüße"
    raw = build_dsn(hostname="h.example", to="a@h.example", subject="Grüße", arrival=0,
                    header="Subject: x\n", failed=[failure_of("b@b.example",
                                                              RecipientState.EXPIRED, "e")])
    assert b"Subject: Undelivered mail: =?utf-8?q?Gr=C3=BC=C3=9Fe?=" in raw


def test_the_pending_notice_lists_each_envelope_and_how_to_decide() -> None:
    notice = parse(build_pending_notice(
        hostname="smdp.b.example", to="bob@b.example", now=NOW, pending=[
            PendingItem(3, "alice@a.example", "lunch", ("At noon?", "The usual place."), False),
            PendingItem(7, "carol@c.example", "", (), True),
        ]))
    assert notice["From"] == "Mail Delivery System <MAILER-DAEMON@smdp.b.example>"
    assert notice["To"] == "bob@b.example"
    assert notice["Subject"] == "2 envelopes wait for your decision"
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice.get_content_type() == "text/plain"
    assert notice["Content-Transfer-Encoding"] == "7bit"
    text = content(notice)
    assert "2 messages wait for your decision (1 new since the last notice)" in text
    assert ("  Envelope 3\n    From:    alice@a.example\n    Subject: lunch\n"
            "    | At noon?\n    | The usual place.\n") in text
    assert "  Envelope 7  (new)\n    From:    carol@c.example\n    Subject: (no subject)\n" \
        in text
    assert "  smdp client --user bob@b.example COMMAND ID\n" in text
    for command in ("show", "accept", "accept-auth", "reject", "reject-spam",
                    "reject-spammer"):
        assert f"\n  {command} ID " in text
    assert "For example: smdp client --user bob@b.example accept 3\n" in text
    assert all(len(line) <= 78 for line in text.splitlines())


def test_one_pending_envelope_is_spoken_of_in_the_singular() -> None:
    notice = parse(build_pending_notice(
        hostname="smdp.b.example", to="bob@b.example", now=NOW,
        pending=[PendingItem(1, "alice@a.example", "lunch", (), True)]))
    assert notice["Subject"] == "1 envelope waits for your decision"
    text = content(notice)
    assert "1 message waits for your decision. Only its envelope is here" in text
