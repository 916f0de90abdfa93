"""Trace fields (smdp.mail.trace, protocol.md 8.4)."""

from __future__ import annotations

from datetime import UTC, datetime

from smdp.mail.trace import client_name, delivery_fields, received_field

WHEN = datetime(2026, 12, 2, 16, 30, 5, tzinfo=UTC)


def test_received_field() -> None:
    assert received_field(source="[127.0.0.1]", host="smdp.a.example", protocol="SMDP-user",
                          ident="abc234", when=WHEN) == (
        b"Received: from [127.0.0.1] by smdp.a.example with SMDP-user id abc234; "
        b"Wed, 02 Dec 2026 16:30:05 +0000\r\n")
    assert received_field(source="smdp.a.example", host="smdp.b.example", protocol="SMDP",
                          ident=None, when=WHEN) == (
        b"Received: from smdp.a.example by smdp.b.example with SMDP; "
        b"Wed, 02 Dec 2026 16:30:05 +0000\r\n")


def test_no_value_can_break_the_line_or_the_syntax() -> None:
    field = received_field(source="a\r\nX-Evil: 1", host="", protocol="SMDP (x); y",
                           ident="i d", when=WHEN)
    assert field.count(b"\r\n") == 1 and field.endswith(b"\r\n")
    assert field.startswith(b"Received: from aX-Evil:1 by unknown with SMDPxy id id; ")


def test_client_names_are_address_literals() -> None:
    assert client_name("192.0.2.7") == "[192.0.2.7]"
    assert client_name("2001:db8::1") == "[IPv6:2001:db8::1]"
    assert client_name("::ffff:127.0.0.1") == "[127.0.0.1]"
    assert client_name("fe80::1%eth0") == "[IPv6:fe80::1]"
    assert client_name("?") == client_name("") == "unknown"


def test_delivery_fields() -> None:
    assert delivery_fields("alice@a.example", "bob@b.example") == (
        b"Return-Path: <alice@a.example>\r\nDelivered-To: bob@b.example\r\n")
    # The null reverse path of a notification (RFC 5321 4.5.5).
    assert delivery_fields("", "bob@b.example").startswith(b"Return-Path: <>\r\n")
