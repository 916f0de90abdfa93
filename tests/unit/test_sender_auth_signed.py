"""The shortcut of server/sender_auth.py's DKIM check: a message whose header
section has no DKIM-Signature field is not handed to dkimpy (its parse of a
large message costs milliseconds); any message that has one still is."""

from __future__ import annotations

import pytest

from smdp.server.sender_auth import might_be_signed

BODY = b"Hello.\r\n" * 3


@pytest.mark.parametrize("header", [
    b"DKIM-Signature: v=1; a=rsa-sha256; d=a.example; s=s1; b=x\r\n",
    b"dkim-signature:v=1\r\n",
    b"DKIM-SIGNATURE \t: v=1\r\n",  # looser than dkimpy: it is asked, and decides
    b"Received: x\r\n\tby y\r\nDKIM-Signature: v=1\r\n",
])
def test_a_signature_field_is_seen(header: bytes) -> None:
    message = b"From: a@a.example\r\n" + header + b"Subject: x\r\n\r\n" + BODY
    assert might_be_signed(message)
    assert might_be_signed(message.replace(b"\r\n", b"\n"))  # dkimpy splits at LF too


@pytest.mark.parametrize("message", [
    b"From: a@a.example\r\nSubject: x\r\n\r\n" + BODY,
    # In the body, or folded into another field's value: not a field.
    b"From: a@a.example\r\n\r\nDKIM-Signature: v=1\r\n" + BODY,
    b"From: a@a.example\r\nSubject: about\r\n DKIM-Signature: v=1\r\n\r\n" + BODY,
    b"X-DKIM-Signature: v=1\r\n\r\n" + BODY,
])
def test_no_signature_field(message: bytes) -> None:
    assert not might_be_signed(message)
    assert not might_be_signed(message.replace(b"\r\n", b"\n"))
