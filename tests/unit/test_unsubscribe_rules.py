"""UNSUB's rules (docs/lists.md): which way the server takes, and the guard
that keeps a sender-chosen URL from reaching anything but a public address."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest

from smdp.certs import make_ca, make_cert, write_issued
from smdp.config import UnsubscribeSettings
from smdp.core.origin import Origin
from smdp.core.sender_auth import (
    AuthResults,
    DkimSignatureCheck,
    SpfCheck,
    authentication_results_header,
    passing_dkim,
)
from smdp.core.unsubscribe import (
    MAILTO,
    ONE_CLICK,
    NoWay,
    Plan,
    Requested,
    dkim_covers_unsubscribe,
    plan,
    request,
    request_mail,
    uris,
)
from smdp.server.unsubscribe import Refused, TryLater, forbidden, one_click, public_addresses
from smdp.store import Store, open_store
from smdp.store.records import User
from smdp.terms import EntryState, JobKind


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.9.9.9", "::1", "10.0.0.1", "10.255.1.2", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fc00::1", "224.0.0.1", "ff02::1", "0.0.0.0", "::",
    "240.0.0.1", "100.64.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "2002:7f00:1::1",
    "192.0.2.1", "not-an-address",
])
def test_the_guard_refuses_every_address_that_is_not_public(address: str) -> None:
    assert forbidden(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"])
def test_the_guard_lets_public_addresses_through(address: str) -> None:
    assert forbidden(address) is None


def test_the_test_switch_allows_loopback_only() -> None:
    assert forbidden("127.0.0.1", allow_loopback=True) is None
    assert forbidden("::1", allow_loopback=True) is None
    assert forbidden("10.0.0.1", allow_loopback=True) == "10.0.0.1 is a private address"
    assert forbidden("169.254.1.1", allow_loopback=True) == "169.254.1.1 is a link-local address"


def _resolver(answers: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    async def lookup(host: str, _port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such name")
        return answers[host]
    return lookup


def _public(url: str, answers: dict[str, list[str]] | None = None, *,
            allow_loopback: bool = False) -> tuple[str, int, list[str]]:
    if answers is None:
        return asyncio.run(public_addresses(url, allow_loopback=allow_loopback))
    return asyncio.run(public_addresses(url, allow_loopback=allow_loopback,
                                        lookup=_resolver(answers)))


def test_names_are_checked_by_every_address_they_resolve_to() -> None:
    dns = {"list.example": ["203.0.113.7", "8.8.4.4"], "inside.example": ["10.0.0.5"],
           "meta.example": ["169.254.169.254"], "mixed.example": ["8.8.8.8", "192.168.0.1"],
           "six.example": ["::1"], "empty.example": []}
    assert _public("https://x.example/", {"x.example": ["8.8.8.8"]}) == (
        "x.example", 443, ["8.8.8.8"])
    for name, why in (("inside.example", "10.0.0.5 is a private"),
                      ("meta.example", "169.254.169.254 is a link-local"),
                      ("mixed.example", "192.168.0.1 is a private"),
                      ("six.example", "::1 is a loopback"),
                      ("list.example", "203.0.113.7 is a private")):  # TEST-NET-3
        with pytest.raises(Refused, match=why):
            _public(f"https://{name}/u", dns)
    with pytest.raises(TryLater, match="has no address"):
        _public("https://empty.example/", dns)
    with pytest.raises(TryLater, match="cannot resolve"):
        _public("https://unknown.example/", dns)


def test_localhost_through_the_system_resolver_is_refused() -> None:
    with pytest.raises(Refused, match="loopback"):
        _public("https://localhost:8443/unsub")
    assert _public("https://127.0.0.1:8443/", allow_loopback=True)[2] == ["127.0.0.1"]


@pytest.mark.parametrize("url, why", [
    ("http://8.8.8.8/u", "only https"), ("ftp://8.8.8.8/", "only https"),
    ("https:///nohost", "no host"), ("https://8.8.8.8:99999/", "bad port"),
    ("https://user:pw@8.8.8.8/", "user name or password"),
    ("https://[::1]/u", "::1 is a loopback"), ("https://10.1.1.1/u", "private"),
    ("https://8.8.8.8/a b", "not a URL this server sends to"),
    ("https://b\u00fccher.example/", "not a URL this server sends to"),
])
def test_urls_the_guard_refuses(url: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        _public(url, {})


def test_an_unreachable_list_is_tried_again_later() -> None:
    settings = UnsubscribeSettings(timeout=2.0, allow_loopback=True)
    with pytest.raises(TryLater, match="cannot connect"):
        asyncio.run(one_click("https://127.0.0.1:1/u", settings))


def test_the_way_taken() -> None:
    both = "<mailto:leave@list.example?subject=bye>, <https://list.example/u?x=1>"
    assert plan(both, one_click=True) == Plan(ONE_CLICK, "https://list.example/u?x=1")
    assert plan(both, one_click=False) == Plan(MAILTO, "leave@list.example", "bye", "")
    assert plan("<mailto:Leave@List.Example>", one_click=True) == Plan(
        MAILTO, "leave@list.example", "unsubscribe", "")
    assert plan("<mailto:a@list.example?body=remove%20me>", one_click=False).body == "remove me"
    with pytest.raises(NoWay, match="only a web page"):
        plan("<http://list.example/u>", one_click=True)
    with pytest.raises(NoWay, match="no List-Unsubscribe"):
        plan("", one_click=True)
    with pytest.raises(NoWay, match="no way this server can take"):
        plan("<mailto:a@x.example,b@x.example>, <mailto:not-an-address>, <gopher://x>",
             one_click=False)
    assert uris("<a>, <>, junk <b>") == ["a", "b"]


COVERING = (b"DKIM-Signature: v=1; a=rsa-sha256; d=list.example; s=s1;\r\n"
          b"\th=from:to:subject:List-Unsubscribe:\r\n\t list-unsubscribe-post; bh=x;\r\n"
          b"\tb=AbCd/123xyz;\r\n"
          b"From: a@list.example\r\n")
VERIFIED = {("list.example", "AbCd/123")}


def test_dkim_must_cover_both_fields() -> None:
    assert dkim_covers_unsubscribe(COVERING, "list.example", VERIFIED)
    # The signer's subdomain:
    assert dkim_covers_unsubscribe(COVERING, "news.list.example", VERIFIED)
    assert not dkim_covers_unsubscribe(COVERING, "other.example", VERIFIED)
    half = COVERING.replace(b":\r\n\t list-unsubscribe-post", b"")
    assert not dkim_covers_unsubscribe(half, "list.example", VERIFIED)
    assert not dkim_covers_unsubscribe(b"From: a@list.example\r\n", "list.example", VERIFIED)
    assert not dkim_covers_unsubscribe(b"DKIM-Signature: v=1; h=list-unsubscribe\r\n",
                                       "list.example", VERIFIED)


def test_only_a_signature_that_verified_counts() -> None:
    """RFC 8058 4 asks for a valid signature: a covering field of the right
    domain that did not verify (added on the way) promises nothing, and a
    twin of a verified one (the same d= and b= prefix) that does not cover
    the fields makes neither count."""
    assert not dkim_covers_unsubscribe(COVERING, "list.example", set())
    assert not dkim_covers_unsubscribe(COVERING, "list.example", {("list.example", "Other123")})
    assert not dkim_covers_unsubscribe(COVERING, "list.example", {("x.example", "AbCd/123")})
    twin = (b"DKIM-Signature: v=1; d=list.example; s=s1; h=from:to; bh=x; b=AbCd/123other;\r\n"
            + COVERING)
    assert not dkim_covers_unsubscribe(twin, "list.example", VERIFIED)


def test_the_signatures_that_passed_are_read_back_from_authentication_results() -> None:
    results = AuthResults(
        client_ip="192.0.2.1", helo="mail.list.example", mail_from="bounce@list.example",
        spf=SpfCheck("pass", "list.example"),
        dkim=(DkimSignatureCheck("pass", "List.Example", "s1",
                                 signature_prefix="AbCd/123"),
              DkimSignatureCheck("fail", "list.example", "s2", "bad signature",
                                 signature_prefix="Zz9+Zz9+"),
              DkimSignatureCheck("pass", "other.example", "s1",
                                 signature_prefix="Qq1Qq1Qq")),
        from_domain="list.example", dmarc="pass", dmarc_policy="reject",
        verified_domain="list.example")
    written = authentication_results_header("smdp.b.example", results).replace("\r\n\t", " ")
    assert passing_dkim(written) == {("list.example", "AbCd/123"), ("other.example", "Qq1Qq1Qq")}
    assert passing_dkim("") == set()
    assert passing_dkim("smdp.b.example; dkim=pass header.d=list.example") == set()


def test_the_request_mail() -> None:
    raw = request_mail(sender="bob@b.example", hostname="smdp.b.example",
                       mail=Plan(MAILTO, "leave@list.example", "bye"))
    assert b"To: <leave@list.example>\r\nSubject: bye\r\n" in raw
    assert b"Auto-Submitted: auto-generated\r\n" in raw
    assert raw.endswith(b"Please unsubscribe <bob@b.example>. (Sent by smdp.b.example "
                        b"for its user.)\r\n")


async def _scripted(answers: list[bytes], tmp_path: Path,
                    settings_timeout: float = 3.0) -> list[str | Exception]:
    """one_click against a real TLS server on loopback that answers each
    connection with the next of ``answers`` (raw bytes; b"" closes at once,
    b"hang" never answers)."""
    ca = make_ca("unit CA")
    cert, key = write_issued(make_cert("x", issuer=ca, addresses=("127.0.0.1",)), tmp_path, "s")
    ca_path, _ = write_issued(ca, tmp_path, "ca")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    queue = list(answers)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        said = queue.pop(0)
        if said == b"abort":  # a reset in the middle of the exchange
            await reader.read(5)
            writer.transport.abort()
            return
        with contextlib.suppress(Exception):
            await reader.readuntil(b"One-Click")
            if said == b"hang":
                await asyncio.sleep(10)
            writer.write(said)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    settings = UnsubscribeSettings(timeout=settings_timeout, ca=ca_path, allow_loopback=True)
    results: list[str | Exception] = []
    async with server:
        while queue:
            try:
                results.append(await one_click(f"https://127.0.0.1:{port}/u", settings))
            except (Refused, TryLater) as exc:
                results.append(exc)
    return results


def _run(answers: list[bytes], tmp_path: Path, timeout: float = 3.0) -> list[str | Exception]:
    return asyncio.run(_scripted(answers, tmp_path, timeout))


def test_the_answers_of_the_list(tmp_path: Path) -> None:
    moved = b"HTTP/1.1 308 Permanent Redirect\r\nLocation: /v\r\n\r\n"
    ok = b"HTTP/1.1 204 No Content\r\n\r\n"
    got = _run([moved, ok, b"HTTP/1.1 404 Not Found\r\n\r\n", b"HTTP/1.1 429 Slow down\r\n\r\n",
                b"SSH-2.0-nope\r\n\r\n", b"", b"HTTP/1.1 200 OK\r\nX: " + b"y" * 20000 +
                b"\r\n\r\n", b"HTTP/1.1 302 Found\r\n\r\n"], tmp_path)
    assert got[0] == "the list answered 204 to the one-click POST to 127.0.0.1"  # redirected
    assert isinstance(got[1], Refused) and "answered 404" in str(got[1])
    assert isinstance(got[2], TryLater) and "answered 429" in str(got[2])
    assert isinstance(got[3], TryLater) and "did not answer HTTP" in str(got[3])
    assert isinstance(got[4], TryLater) and "without an answer" in str(got[4])
    assert isinstance(got[5], Refused) and "over 16384 octets" in str(got[5])
    assert isinstance(got[6], Refused) and "answered 302" in str(got[6])  # no Location


def test_a_cut_answer_counts_by_its_status_and_a_reset_is_tried_again(tmp_path: Path) -> None:
    got = _run([b"HTTP/1.1 202 Accepted\r\nX: y", b"abort"], tmp_path)
    assert got[0] == "the list answered 202 to the one-click POST to 127.0.0.1"
    assert isinstance(got[1], TryLater)


def test_redirects_are_followed_a_few_times_only(tmp_path: Path) -> None:
    loop = b"HTTP/1.1 307 Again\r\nLocation: /again\r\n\r\n"
    got = _run([loop] * 4, tmp_path)
    assert len(got) == 1 and isinstance(got[0], Refused)
    assert str(got[0]) == "more than 3 redirects"


def test_a_list_that_never_answers_is_tried_again_later(tmp_path: Path) -> None:
    got = _run([b"hang"], tmp_path, timeout=0.5)
    assert isinstance(got[0], TryLater) and "no answer within 0.5 seconds" in str(got[0])


BLOCK = ("Subject: news\r\nList-Id: news.list.example\r\n"
         "List-Unsubscribe: <https://list.example/u>, <mailto:leave@list.example>\r\n"
         "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
SIGNED = (b"DKIM-Signature: v=1; d=list.example; h=from:list-unsubscribe:"
          b"list-unsubscribe-post; b=x\r\nFrom: news@list.example\r\n\r\nBody.\r\n")


#: How the MX recorded SIGNED's signature as verified (header.b: its b=).
AUTH = "mx; dkim=pass header.d=list.example header.b=x"


def _smtp_entry(store: Store, bob: User, n: int, body: bytes | None) -> int:
    with store.transaction():
        env = store.insert_in_envelope(
            envid=f"s{n}", origin_server="list.example", sender="news@list.example",
            size=len(body or b""), block=BLOCK, subject="news", body=body,
            smtp_auth=AUTH, verified_domain="list.example")
        return store.insert_mailbox_entry(bob.id, env, "bob@b.example", EntryState.PENDING)


def test_smtp_mail_gets_one_click_only_under_a_signature_that_covers_it(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "u.sqlite3"))
    bob = store.create_user("bob@b.example", "h")
    origin = Origin(store, hostname="smdp.b.example", expire_days=5)
    signed = _smtp_entry(store, bob, 1, SIGNED)
    got = request(store, origin, bob, signed)
    assert got == Requested(True, f"envelope {signed} unsubscribe pending by one-click POST "
                                  "to https://list.example/u")
    assert [job.kind for job in store.jobs()] == [JobKind.UNSUBSCRIBE]
    unsigned = _smtp_entry(store, bob, 2, SIGNED.replace(b":list-unsubscribe-post", b""))
    gone = _smtp_entry(store, bob, 3, SIGNED)
    # Rejected, and the message dropped: the signature can no longer be read.
    store.update_mailbox_entry(gone, state=EntryState.REJECTED)
    assert store.drop_smtp_bodies([EntryState.PENDING], store.mailbox_entry(gone).envelope_id) == 1
    for entry in (unsigned, gone):
        text = request(store, origin, bob, entry).text
        assert text.startswith(f"envelope {entry} unsubscribe done by mail to "
                               "leave@list.example: sent as message ")
    store.set_suspension(bob.id, "too many reports")
    refused = _smtp_entry(store, bob, 4, b"From: news@list.example\r\n\r\nx\r\n")
    assert request(store, origin, bob, refused) == Requested(
        False, f"envelope {refused}: the request cannot be mailed: sending is suspended for "
               "this account (too many reports); contact your administrator")
    assert store.unsubscribe_of_entry(refused) is None
