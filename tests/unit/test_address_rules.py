"""Each malformed address is refused for its own reason, in the words the
user reads: a refusal for the wrong reason hides the real mistake (and was
how several mutants of mail/addresses.py survived)."""

from __future__ import annotations

import pytest

from smdp.mail.addresses import AddressError, domain_of, parse_address, parse_path


@pytest.mark.parametrize(("text", "reason"), [
    # Either bracket alone is already the mistake, not a later symptom of it.
    ("<a@b.example", "The address must be given without angle brackets here."),
    ("a@b.example>", "The address must be given without angle brackets here."),
    # A character above "." in ASCII that atext lacks.
    ("a:b@b.example", "The local part contains ':', which is not allowed in an unquoted "
                      "local part."),
    ("a;b@b.example", "The local part contains ';', which is not allowed in an unquoted "
                      "local part."),
])
def test_parse_address_names_the_mistake(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as refused:
        parse_address(text)
    assert str(refused.value) == reason


@pytest.mark.parametrize(("arg", "reason"), [
    # A source route needs both the leading @ and the colon (RFC 5321 4.1.2).
    ("FROM:<@relay.example:a@b.example>", "Source routes are not supported."),
    ("FROM:<@b.example>", "The local part (before the '@') is empty."),
    ("FROM:<a:b@b.example>", "The local part contains ':', which is not allowed in an "
                             "unquoted local part."),
    # One stray bracket is enough to be refused as one.
    ("FROM:<a<b@b.example>", "The address contains a stray angle bracket."),
    ("FROM:<a>b@b.example>", "The address contains a stray angle bracket."),
])
def test_parse_path_names_the_mistake(arg: str, reason: str) -> None:
    with pytest.raises(AddressError) as refused:
        parse_path(arg, "FROM")
    assert str(refused.value) == reason


def test_the_domain_of_an_address_is_after_its_last_at_lower_cased() -> None:
    assert domain_of("Bob@B.Example") == "b.example"
    assert domain_of('"a@b"@c.example') == "c.example"
