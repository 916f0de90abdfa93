"""Mailbox grammar of wire contract section 1 (dot-atom local part, LDH domain).

The codecs' reading of it (``parse_mailbox``, ``parse_hostname``) is tested here
too: it is the same grammar, written once.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smdp.mail.addresses import (
    Address,
    AddressError,
    normalize,
    parse_address,
    parse_hostname,
    parse_mailbox,
    parse_path,
)


def test_parse_keeps_local_case_and_lowers_domain() -> None:
    addr = parse_address("Alice.Smith+news@Mail.Example.ORG")
    assert addr == Address("Alice.Smith+news", "mail.example.org")
    assert str(addr) == "Alice.Smith+news@mail.example.org"


def test_address_is_frozen_and_slotted() -> None:
    addr = parse_address("a@b")
    with pytest.raises(AttributeError, match="cannot assign to field"):
        addr.local = "x"  # type: ignore[misc]
    assert not hasattr(addr, "__dict__")


@pytest.mark.parametrize(
    "text",
    [
        "a@b",
        "localhost-user@localhost",
        "!#$%&'*+-/=?^_`{|}~@example.org",
        "x@a-b.c-d.example",
        "x@123.example",
        "x@xn--bcher-kva.example",
        "a" * 64 + "@example.org",
        "a@" + ".".join(["b" * 63, "c" * 63, "d" * 63, "e" * 60]),  # 254 octets
    ],
)
def test_valid_addresses(text: str) -> None:
    assert str(parse_address(text)) == text.partition("@")[0] + "@" + text.partition("@")[2].lower()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("a b@c", "space"),
        ("a@b\r\n", "control character"),
        ("a\n@b", "control character"),
        ("a\x00@b", "control character"),
        ("a\t@b", "control character"),
        ("ü@example.org", "non-ASCII"),
        ('"a b"@example.org', "Quoted"),
        ("a@[192.0.2.1]", "IP address literals"),
        ("a@192.0.2.1", "all-numeric"),
        ("@example.org", "local part"),
        ("a@", "domain"),
        ("a", "no '@'"),
        ("a@b@c", "more than one"),
        (".a@b", "starts or ends with a dot"),
        ("a.@b", "starts or ends with a dot"),
        ("a..b@c", "consecutive dots"),
        ("a@b..c", "consecutive dots"),
        ("a@.b", "starts or ends with a dot"),
        ("a@b.", "starts or ends with a dot"),
        ("a@-b.c", "hyphen"),
        ("a@b-.c", "hyphen"),
        ("a@b_c.d", "'_'"),
        ("a(b)@c", "'('"),
        ("a,b@c", "','"),
        ("<a@b>", "angle brackets"),
        ("a" * 65 + "@example.org", "64"),
        ("a@" + "b" * 64 + ".org", "63"),
        ("a@" + ".".join(["b" * 63] * 4), "254"),
    ],
)
def test_invalid_addresses_have_a_clear_sentence(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    message = str(caught.value)
    assert reason in message
    assert message.endswith(".")
    # The reason is echoed into protocol replies: never a line break in it.
    assert "\r" not in message and "\n" not in message


def test_address_error_is_a_value_error() -> None:
    assert issubclass(AddressError, ValueError)


@pytest.mark.parametrize(
    ("arg", "keyword", "expected"),
    [
        ("From:<a@b>", "From", "a@b"),
        ("FROM:<a@B>", "From", "a@b"),
        ("from: <Alice@Example.org>", "From", "Alice@example.org"),
        ("To:<bob@b.example>", "To", "bob@b.example"),
        ("tO: <bob@b.example>", "To", "bob@b.example"),
    ],
)
def test_parse_path(arg: str, keyword: str, expected: str) -> None:
    assert str(parse_path(arg, keyword)) == expected


@pytest.mark.parametrize(
    ("arg", "keyword", "reason"),
    [
        ("From:a@b", "From", "angle brackets"),
        ("From:<a@b", "From", "angle brackets"),
        ("From:  <a@b>", "From", "angle brackets"),
        ("From:<a@b> SIZE=10", "From", "angle brackets"),
        ("To:<a@b>", "From", "Expected From:<address>"),
        ("From <a@b>", "From", "Expected From:<address>"),
        ("Fro", "From", "Expected"),
        ("From:<>", "From", "null path"),
        ("To:<@relay.example:a@b>", "To", "Source routes"),
        ("To:<<a@b>>", "To", "angle bracket"),
        ("To:<a b@c>", "To", "space"),
        ("To:<a@b\r\n>", "To", "control character"),
    ],
)
def test_parse_path_refusals(arg: str, keyword: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse_path(arg, keyword)


def test_normalize_lowercases_everything() -> None:
    assert normalize("Bob.Smith@Example.ORG") == "bob.smith@example.org"
    assert normalize("bob.smith@example.org") == normalize("BOB.SMITH@EXAMPLE.ORG")


def test_normalize_refuses_invalid() -> None:
    with pytest.raises(AddressError, match="The address contains a space"):
        normalize("not an address")


_ATEXT = st.sampled_from(
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
)
_ATOM = st.text(_ATEXT, min_size=1, max_size=10)
_LABEL = st.from_regex(r"\A[a-zA-Z]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?\Z")


@given(st.lists(_ATOM, min_size=1, max_size=4), st.lists(_LABEL, min_size=1, max_size=4))
def test_generated_addresses_round_trip(atoms: list[str], labels: list[str]) -> None:
    text = ".".join(atoms) + "@" + ".".join(labels)
    addr = parse_address(text)
    assert parse_address(str(addr)) == addr
    assert addr.local == ".".join(atoms)
    assert normalize(str(addr)) == normalize(normalize(text)) == text.lower()
    assert parse_path(f"To:<{text}>", "To") == addr


@given(st.text(max_size=80))
def test_parse_address_raises_only_address_error(text: str) -> None:
    try:
        addr = parse_address(text)
    except AddressError as exc:
        assert "\n" not in str(exc) and "\r" not in str(exc)
    else:
        assert text.isascii() and len(text) <= 254
        assert str(addr).lower() == text.lower()


# -- the codecs' reading: parse_mailbox, parse_hostname ------------------------


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("user@Example.ORG", "user@example.org"),
        ("User.Name+tag@a.b.example", "User.Name+tag@a.b.example"),
        ("x!#$%&'*+/=?^_`{|}~-y@localhost", "x!#$%&'*+/=?^_`{|}~-y@localhost"),
        ("a@" + "b" * 63 + ".example", "a@" + "b" * 63 + ".example"),
        ("a" * 64 + "@b.example", "a" * 64 + "@b.example"),
        ("", None),
        ("user", None),
        ("@b.example", None),
        ("user@", None),
        (".user@b.example", None),
        ("user.@b.example", None),
        ("us er@b.example", None),
        ("user@b..example", None),
        ("user@-b.example", None),
        ("user@b-.example", None),
        ("user@[127.0.0.1]", None),
        ("us\u00e9r@b.example", None),
        ("user@b\u00e9.example", None),
        ("user@b.example\n", None),
        ("a" * 65 + "@b.example", None),
    ],
)
def test_parse_mailbox(text: str, result: str | None) -> None:
    assert parse_mailbox(text) == result


def test_mailbox_length_limit_is_254() -> None:
    domain = ".".join(["b" * 63] * 3) + "." + "c" * 58
    assert len(domain) == 250
    assert parse_mailbox("aaa@" + domain) is not None  # 254 octets
    assert parse_mailbox("aaaa@" + domain) is None  # 255 octets


def test_parse_hostname() -> None:
    assert parse_hostname("MX.B.Example") == "mx.b.example"
    assert parse_hostname("localhost") == "localhost"
    assert parse_hostname("a_b.example") is None
    assert parse_hostname("") is None


@pytest.mark.parametrize("text", ["a@192.0.2.1", "a@123", "a@b.123"])
def test_the_wire_accepts_an_all_numeric_last_label(text: str) -> None:
    # protocol.md 5.1: the peer port accepts it; the user port's server
    # refuses it afterwards, with parse_address's reason.
    assert parse_mailbox(text) == text
    with pytest.raises(AddressError, match="all-numeric"):
        parse_address(text)


def test_parse_hostname_allows_an_all_numeric_last_label_and_253_octets() -> None:
    assert parse_hostname("192.0.2.1") == "192.0.2.1"
    name = ".".join(["b" * 63] * 3) + "." + "c" * 61
    assert len(name) == 253
    assert parse_hostname(name) == name
    assert parse_hostname(name + "c") is None
    assert parse_hostname("a\nb") is None
    assert parse_hostname("b\u00e9.example") is None


@given(st.text(max_size=80))
def test_parse_mailbox_is_parse_address_but_for_all_numeric_domains(text: str) -> None:
    try:
        expected: str | None = str(parse_address(text))
    except AddressError as exc:
        expected = text if "all-numeric" in str(exc) else None
        if expected is not None:
            local, _, domain = text.partition("@")
            expected = f"{local}@{domain.lower()}"
    assert parse_mailbox(text) == expected
