"""Trace fields (RFC 5321 section 4.4): where a message has been, for its reader.

Each server a message passes through puts a ``Received`` field at the top of
it; the server that delivers it to a mailbox adds ``Return-Path`` (the
envelope sender) and ``Delivered-To`` (the mailbox), which mail fetchers
(getmail, fetchmail) read rather than guess. docs/protocol.md section 8.4 says
which SMDP server adds which, and when.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from email.utils import format_datetime

__all__ = ["client_name", "delivery_fields", "received_field"]

_CRLF = b"\r\n"


def _token(text: str) -> str:
    """``text`` safe inside a trace field: printable ASCII, no blanks, never empty.

    Every value comes from a checked address, host name or id; this only makes
    sure that no value can ever break the field's line or its syntax.
    """
    cleaned = "".join(c for c in text if "!" <= c <= "~" and c not in "();")
    return cleaned or "unknown"


def client_name(address: str) -> str:
    """How a Received field names a client known by its IP address: an address
    literal (RFC 5321 4.1.3), ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return "unknown"  # a Unix socket, or no peer address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"[{ip.ipv4_mapped}]"
        return f"[IPv6:{ip}]"
    return f"[{ip}]"


def received_field(*, source: str, host: str, protocol: str, ident: str | None,
                   when: datetime, address: str | None = None) -> bytes:
    """``Received: from <source> by <host> with <protocol> id <ident>; <date>``,
    one line with its CRLF (RFC 5321 4.4 Time-stamp-line). ``when`` must be aware.
    ``address``: the client's IP address, written after the source as
    ``([192.0.2.1])`` (the TCP-info of RFC 5321's Extended-Domain)."""
    text = f"Received: from {_token(source)}"
    if address is not None:
        text += f" ({client_name(address)})"
    text += f" by {_token(host)} with {_token(protocol)}"
    if ident:
        text += f" id {_token(ident)}"
    text += f"; {format_datetime(when)}"
    return text.encode("ascii") + _CRLF


def delivery_fields(sender: str, recipient: str) -> bytes:
    """``Return-Path`` and ``Delivered-To`` of a message delivered to the mailbox
    of ``recipient``, sent by ``sender`` ("" for the null reverse path ``<>``)."""
    reverse = _token(sender) if sender else ""
    return (f"Return-Path: <{reverse}>".encode("ascii") + _CRLF
            + f"Delivered-To: {_token(recipient)}".encode("ascii") + _CRLF)
