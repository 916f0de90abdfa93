"""RFC 8058 one-click unsubscribe, carried out for a user (UNSUB; docs/lists.md).

The URL comes from a message's sender, so the server must not become a tool
for reaching what only it can reach (server-side request forgery): only
``https:``, every address the host name resolves to must be a public one
(no loopback, private, link-local, shared, multicast, reserved or
unspecified address; an IPv4 address inside IPv6 counts as itself), the
connection goes to an address that was checked (never a second lookup),
a redirect is followed only to a URL that passes the same checks, at most
``MAX_REDIRECTS`` times, the whole exchange has one deadline and the answer
is read only up to ``MAX_ANSWER_OCTETS``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin, urlsplit

from smdp.config import UnsubscribeSettings

AddressLookup = Callable[[str, int], Awaitable[list[str]]]

MAX_REDIRECTS = 3
MAX_ANSWER_OCTETS = 16384  # the status line and header; the body is never read
_BODY = b"List-Unsubscribe=One-Click"
_URL_CHARS = re.compile(r"[\x21-\x7e]{1,2000}")


class Refused(Exception):
    """The URL may not be contacted (the guard), or the list said no for good."""


class TryLater(Exception):
    """The list could not be reached or answered 5xx/429: the job retries."""


async def _getaddrinfo(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def forbidden(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why the POST may not go to ``address`` (an IP address as text), or
    None when it is a public address. ``allow_loopback``: the tests' switch
    ([unsubscribe] allow_loopback)."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            return forbidden(str(inner), allow_loopback=allow_loopback)
    for test, what in ((ip.is_loopback, "a loopback"), (ip.is_multicast, "a multicast"),
                       (ip.is_link_local, "a link-local"), (ip.is_unspecified, "an unspecified"),
                       (ip.is_private, "a private"), (ip.is_reserved, "a reserved")):
        if test:
            if what == "a loopback" and allow_loopback:
                return None
            return f"{address} is {what} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


async def public_addresses(url: str, *, allow_loopback: bool = False,
                           lookup: AddressLookup = _getaddrinfo) -> tuple[str, int, list[str]]:
    """The host, port and addresses the POST may go to for ``url``; Refused
    when it is not https, or when any address its host resolves to is
    forbidden (a name whose answers mix public and private addresses is
    refused whole: the sender chose its DNS too)."""
    if not _URL_CHARS.fullmatch(url):
        # RFC 3986 URLs are printable ASCII without spaces; anything else
        # (a redirect's Location included) could bend the request line.
        raise Refused(f"not a URL this server sends to: {url[:100]!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise Refused(f"only https URLs are contacted, not {url[:100]}")
    host = parts.hostname
    if not host:
        raise Refused(f"no host in {url[:100]}")
    try:
        port = parts.port or 443
    except ValueError:
        raise Refused(f"bad port in {url[:100]}") from None
    if parts.username is not None or parts.password is not None:
        raise Refused("a URL with a user name or password is not contacted")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        addresses = [host]
    except ValueError:
        try:
            addresses = await lookup(host, port)
        except (OSError, UnicodeError) as exc:
            raise TryLater(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise TryLater(f"{host} has no address")
    for address in addresses:
        why = forbidden(address, allow_loopback=allow_loopback)
        if why is not None:
            raise Refused(f"{host} resolves to {why}: not contacted")
    return host, port, list(dict.fromkeys(addresses))


def _context(settings: UnsubscribeSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(settings.ca) if settings.ca is not None else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _post_once(url: str, host: str, port: int, addresses: list[str],
                     context: ssl.SSLContext) -> tuple[int, str]:
    """One POST; the status code and the Location header ("" if none)."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    last: Exception | None = None
    for address in addresses:
        try:
            reader, writer = await asyncio.open_connection(
                address, port, ssl=context, server_hostname=host, limit=MAX_ANSWER_OCTETS)
        except (OSError, ssl.SSLError) as exc:
            last = exc
            continue
        try:
            # The URL's own host and port, as written (no user info: refused).
            writer.write(
                f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: smdp\r\n"
                f"Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(_BODY)}\r\nConnection: close\r\n\r\n".encode("ascii")
                + _BODY)
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise Refused(f"the answer's header from {host} is over "
                              f"{MAX_ANSWER_OCTETS} octets") from None
            except asyncio.IncompleteReadError as exc:
                head = exc.partial
                if not head:
                    raise TryLater(f"{host} closed the connection without an answer") from None
        except (OSError, ssl.SSLError) as exc:
            raise TryLater(f"{host}: {exc}") from None
        finally:
            writer.close()
        return _status(head, host)
    raise TryLater(f"cannot connect to {host} port {port}: {last}")


def _status(head: bytes, host: str) -> tuple[int, str]:
    lines = head.decode("latin-1").split("\r\n")
    words = lines[0].split(" ", 2)
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise TryLater(f"{host} did not answer HTTP: {lines[0][:100]!r}")
    location = ""
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "location":
            location = value.strip()
    return int(words[1]), location


async def one_click(url: str, settings: UnsubscribeSettings, *,
                    lookup: AddressLookup = _getaddrinfo) -> str:
    """POST ``List-Unsubscribe=One-Click`` to ``url`` (RFC 8058 3.2); what
    the list answered, for the record. Refused for a URL the guard refuses
    or a 4xx; TryLater for what may pass (unreachable, 5xx, 429)."""
    context = _context(settings)
    try:
        async with asyncio.timeout(settings.timeout):
            for _hop in range(MAX_REDIRECTS + 1):
                host, port, addresses = await public_addresses(
                    url, allow_loopback=settings.allow_loopback, lookup=lookup)
                code, location = await _post_once(url, host, port, addresses, context)
                if 300 <= code < 400 and location:
                    url = urljoin(url, location)
                    continue
                if 200 <= code < 300:
                    return f"the list answered {code} to the one-click POST to {host}"
                if code >= 500 or code == 429:
                    raise TryLater(f"{host} answered {code}")
                raise Refused(f"{host} answered {code} to the one-click POST")
    except TimeoutError:
        raise TryLater(f"no answer within {settings.timeout:g} seconds") from None
    raise Refused(f"more than {MAX_REDIRECTS} redirects")
