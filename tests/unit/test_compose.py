"""What ``smdp client send`` composes (client/compose.py): the standard
library's email package with the SMTP policy, choosing for each text the
transfer encoding it needs, and refusing only what cannot be a message."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from smdp.client.compose import compose, recipients, text_of, transfer_encoding
from smdp.errors import CliError


@pytest.mark.parametrize(("text", "cte"), [
    ("plain\nascii\n", "7bit"),
    ("x" * 998 + "\n", "7bit"),  # RFC 5322 2.1.1: 998 octets is still a line
    ("x" * 999 + "\n", "quoted-printable"),
    ("é" * 499 + "\n", "8bit"),  # 998 octets of UTF-8
    ("é" * 500 + "\n", "quoted-printable"),
    ("naïve café\n", "8bit"),
    ("a NUL \x00 here\n", "quoted-printable"),
    ("tab\tand form feed\f\n", "7bit"),
])
def test_the_transfer_encoding_a_text_needs(text: str, cte: str) -> None:
    assert transfer_encoding(text) == cte
    data = compose(to=recipients(["bob@b.example"]), subject="s", text=text,
                   domain="a.example")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Content-Transfer-Encoding"] == cte
    assert msg.get_content().replace("\r\n", "\n") == text
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_an_empty_subject_is_no_subject_field() -> None:
    data = compose(to=recipients(["bob@b.example"]), subject="", text="x\n", domain="a.example")
    assert b"\r\nSubject:" not in data and data.startswith(b"To: bob@b.example\r\n")


@pytest.mark.parametrize("subject", ["two\nlines", "carriage\rreturn"])
def test_no_header_can_be_injected(subject: str) -> None:
    with pytest.raises(CliError, match="cannot compose the message"):
        compose(to=recipients(["bob@b.example"]), subject=subject, text="x",
                domain="a.example")


@pytest.mark.parametrize("value", ["not-an-address", "", "<>", "bob@b.example trailing",
                                   "Bob <bob>"])
def test_a_recipient_that_is_not_an_address(value: str) -> None:
    with pytest.raises(CliError, match="is not an address"):
        recipients([value])


def test_recipients_with_names_and_commas() -> None:
    found = recipients(['"Smith, Bob" <bob@b.example>, carol@c.example', "Zoë <z@d.example>"])
    assert [(a.display_name, a.addr_spec) for a in found] == [
        ("Smith, Bob", "bob@b.example"), ("", "carol@c.example"), ("Zoë", "z@d.example")]


def test_a_text_that_is_not_utf8_points_to_raw() -> None:
    assert text_of("Grüße\n".encode(), "the text on stdin") == "Grüße\n"
    with pytest.raises(CliError, match=r"^body\.txt is not UTF-8 text; .* use --raw$"):
        text_of("Grüße\n".encode("latin-1"), "body.txt")
