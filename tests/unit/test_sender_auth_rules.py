"""The pure rules of sender authentication (core/sender_auth.py): the From
domain, the organisational domain, alignment, the DMARC record, policy
discovery, the DMARC result and verified domain, and Authentication-Results.
No DNS: discovery is given its TXT records by a dict."""

from __future__ import annotations

import asyncio
import re

import pytest

from smdp.core.sender_auth import (
    MAX_FROM_FIELD,
    MAX_HEADER_SECTION,
    AuthResults,
    DkimSignatureCheck,
    DmarcRecord,
    FromDomain,
    NoAuthentication,
    SpfCheck,
    aligned,
    applicable_policy,
    ar_value,
    authentication_results_field,
    authentication_results_header,
    discover_dmarc,
    dkim_signature_tags,
    evaluate_dmarc,
    header_fields,
    is_dmarc_candidate,
    normalize_domain,
    organizational_domain,
    parse_dmarc_record,
    parse_from_domain,
    results_from_json,
    results_to_json,
    select_dmarc_record,
    spf_identity,
    summary,
)


def msg(*headers: str, body: str = "body\r\n") -> bytes:
    return ("".join(h + "\r\n" for h in headers) + "\r\n" + body).encode()


# -- domains ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("a.example", "a.example"),
    ("A.Example.", "a.example"),
    ("  mail.a.example ", "mail.a.example"),
    ("bücher.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ("a-b.example", "a-b.example"),
    ("", ""),
    (".", ""),
    ("[127.0.0.1]", ""),
    ("a..example", ""),
    ("-a.example", ""),
    ("a-.example", ""),
    ("a_b.example", ""),
    ("a b.example", ""),
    ("a@b.example", ""),
    ("x" * 64 + ".example", ""),
    ("x" * 63 + ".example", "x" * 63 + ".example"),
    (".".join(["abcdefghi"] * 26), ""),  # 259 characters
    ("ü" * 70 + ".de", ""),  # a U-label IDNA cannot encode
])
def test_normalize_domain(name: str, expected: str) -> None:
    assert normalize_domain(name) == expected


@pytest.mark.parametrize(("domain", "org"), [
    ("a.example", "a.example"),
    ("news.a.example", "a.example"),
    ("x.y.news.a.example", "a.example"),
    ("example", "example"),  # a public suffix is its own organisational domain
    ("co.uk", "co.uk"),
    ("bbc.co.uk", "bbc.co.uk"),
    ("news.bbc.co.uk", "bbc.co.uk"),
    ("Mail.Example.COM.", "example.com"),
    ("alice.github.io", "alice.github.io"),  # the private section counts too
    ("www.alice.github.io", "alice.github.io"),
    ("mail.bücher.de", "xn--bcher-kva.de"),
    ("", ""),
    ("[127.0.0.1]", ""),
])
def test_organizational_domain(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@pytest.mark.parametrize(("identifier", "from_domain", "relaxed", "strict"), [
    ("a.example", "a.example", True, True),
    ("A.EXAMPLE.", "a.example", True, True),
    ("mail.a.example", "a.example", True, False),
    ("a.example", "news.a.example", True, False),
    ("x.a.example", "y.a.example", True, False),
    ("b.example", "a.example", False, False),
    ("evil-a.example", "a.example", False, False),
    ("example", "a.example", False, False),  # a suffix never aligns with its domains
    ("bob.github.io", "alice.github.io", False, False),
    ("co.uk", "bbc.co.uk", False, False),
    ("", "a.example", False, False),
    ("a.example", "", False, False),
    ("", "", False, False),
])
def test_aligned(identifier: str, from_domain: str, relaxed: bool, strict: bool) -> None:
    assert aligned(identifier, from_domain, "r") is relaxed
    assert aligned(identifier, from_domain, "s") is strict


# -- header fields and the From domain -------------------------------------------------------------


def test_header_fields_unfolds_and_ignores_case_and_the_body() -> None:
    data = (b"Subject: one\r\nfrom: a@a.example\r\nFROM : folded\r\n\tacross lines\r\n"
            b"X-From: no\r\n\r\nFrom: in the body\r\n")
    assert header_fields(data, "From") == ["a@a.example", "folded\tacross lines"]
    assert header_fields(data, "subject") == ["one"]
    assert header_fields(data, "to") == []
    # bare LF line ends, and a message that is all header
    assert header_fields(b"From: x@a.example\nTo: y\n\nFrom: body", "from") == ["x@a.example"]
    assert header_fields(b"From: x@a.example", "from") == ["x@a.example"]
    # a continuation line before any field, and a line without a colon, are skipped
    assert header_fields(b" stray\r\nnot a field\r\n more\r\nFrom: z@a.example\r\n\r\n",
                         "from") == ["z@a.example"]


def test_header_fields_reads_a_bounded_header_section() -> None:
    filler = b"X-Filler: " + b"x" * 1000 + b"\r\n"
    count = MAX_HEADER_SECTION // len(filler)
    near_the_end = filler * (count - 1) + b"From: a@a.example\r\n\r\nbody"
    assert header_fields(near_the_end, "from") == ["a@a.example"]
    past_it = filler * (count + 1) + b"From: a@a.example\r\n\r\nbody"
    assert header_fields(past_it, "from") == []


@pytest.mark.parametrize(("from_field", "expected"), [
    ("alice@a.example", FromDomain("a.example")),
    ("Alice <alice@A.Example>", FromDomain("a.example")),
    ('"bob@b.example" <alice@a.example>', FromDomain("a.example")),
    ("alice@a.example (Alice, bob@b.example)", FromDomain("a.example")),
    ("=?utf-8?q?bob@b.example?= <alice@a.example>", FromDomain("a.example")),
    ("Ünï <ü@bücher.de>", FromDomain("xn--bcher-kva.de")),
    ("alice@a.example, mallory@evil.example",
     FromDomain("", "the From field holds 2 addresses")),
    ("friends: alice@a.example;", FromDomain("", "the From field holds a group")),
    ("", FromDomain("", "the From field holds no address")),
    ("undisclosed", FromDomain("", "the From field is malformed")),
    ("<alice@a.example> <mallory@evil.example>", FromDomain("", "the From field is malformed")),
    ("alice@", FromDomain("", "the From field cannot be parsed")),
    ("alice@[192.0.2.1]", FromDomain("", "the From address has no usable domain")),
    ("alice@a_b.example", FromDomain("", "the From address has no usable domain")),
])
def test_parse_from_domain(from_field: str, expected: FromDomain) -> None:
    assert parse_from_domain(msg(f"From: {from_field}", "To: b@b.example")) == expected


def test_parse_from_domain_wants_exactly_one_from_field() -> None:
    assert parse_from_domain(msg("To: b@b.example")) == FromDomain("", "no From field")
    two = msg("From: alice@a.example", "From: mallory@evil.example")
    assert parse_from_domain(two) == FromDomain("", "2 From fields")
    too_long = msg("From: " + "A" * MAX_FROM_FIELD + " <a@a.example>")
    assert parse_from_domain(too_long) == FromDomain("", "the From field is too long to parse")


@pytest.mark.parametrize(("mail_from", "helo", "identity"), [
    ("alice@a.example", "mx.c.example", ("alice@a.example", "a.example")),
    ("alice@A.Example", "", ("alice@A.Example", "a.example")),
    ("alice@[192.0.2.1]", "mx", ("alice@[192.0.2.1]", "")),
    ("", "mx.c.example", ("postmaster@mx.c.example", "mx.c.example")),
    ("", "[192.0.2.1]", ("", "")),
    ("", "", ("", "")),
])
def test_spf_identity(mail_from: str, helo: str, identity: tuple[str, str]) -> None:
    assert spf_identity(mail_from, helo) == identity


# -- the DMARC record and its discovery ------------------------------------------------------------


@pytest.mark.parametrize(("text", "record"), [
    ("v=DMARC1; p=reject", DmarcRecord("reject")),
    ("v=DMARC1;p=quarantine;sp=none;adkim=s;aspf=s;pct=20",
     DmarcRecord("quarantine", "none", "s", "s", 20)),
    (" v = DMARC1 ; P = Reject ; SP=Quarantine; ADKIM=S ", DmarcRecord("reject", "quarantine",
                                                                        "s", "r")),
    ("v=DMARC1; p=none; rua=mailto:d@a.example; fo=1; unknown=tag", DmarcRecord("none")),
    ("v=DMARC1; p=reject; p=none", DmarcRecord("reject")),  # the first of a repeated tag
    ("v=DMARC1; p=reject; sp=bogus; adkim=x; aspf=; pct=101", DmarcRecord("reject")),
    ("v=DMARC1; p=reject; pct=-1", DmarcRecord("reject")),
    ("v=DMARC1; p=reject; pct=0", DmarcRecord("reject", pct=0)),
    ("v=DMARC1; p=reject;; junk ;", DmarcRecord("reject")),
    # p= missing or invalid: p=none when there is a report address, else unusable
    ("v=DMARC1; rua=mailto:d@a.example", DmarcRecord("none")),
    ("v=DMARC1; p=bogus; rua=mailto:d@a.example", DmarcRecord("none")),
    ("v=DMARC1; p=bogus", None),
    ("v=DMARC1", None),
    ("v=DMARC1; rua=", None),
    # v=DMARC1 first, exactly
    ("p=reject; v=DMARC1", None),
    ("v=dmarc1; p=reject", None),
    ("v=DMARC2; p=reject", None),
    ("v=spf1 -all", None),
    ("", None),
])
def test_parse_dmarc_record(text: str, record: DmarcRecord | None) -> None:
    assert parse_dmarc_record(text) == record


@pytest.mark.parametrize(("text", "candidate"), [
    ("v=DMARC1; p=reject", True),
    ("v=DMARC1", True),
    (" v = DMARC1;p=none", True),
    ("v=DMARC10; p=reject", False),
    ("v=spf1 -all", False),
    ("p=reject; v=DMARC1", False),
    ("", False),
])
def test_is_dmarc_candidate(text: str, candidate: bool) -> None:
    assert is_dmarc_candidate(text) is candidate


def test_select_dmarc_record() -> None:
    assert select_dmarc_record([]) is None
    assert select_dmarc_record(["v=spf1 -all", "v=DMARC1; p=reject"]) == DmarcRecord("reject")
    assert select_dmarc_record(["v=DMARC1; p=reject", "v=DMARC1; p=none"]) is None
    assert select_dmarc_record(["hello", "v=spf1 -all"]) is None


class Zone:
    """TXT records by name, and the names asked, in order."""

    def __init__(self, records: dict[str, list[str]], fail: str = "") -> None:
        self.records = records
        self.fail = fail
        self.asked: list[str] = []

    def __call__(self, name: str) -> list[str]:
        self.asked.append(name)
        if name == self.fail:
            raise TimeoutError(name)
        return self.records.get(name, [])


def test_discover_dmarc_at_the_from_domain() -> None:
    zone = Zone({"_dmarc.news.a.example": ["v=DMARC1; p=quarantine"],
                 "_dmarc.a.example": ["v=DMARC1; p=reject"]})
    assert discover_dmarc("news.a.example", zone) == (DmarcRecord("quarantine"), False)
    assert zone.asked == ["_dmarc.news.a.example"]


def test_discover_dmarc_falls_back_to_the_organisational_domain() -> None:
    zone = Zone({"_dmarc.news.a.example": ["some other TXT record"],
                 "_dmarc.a.example": ["v=DMARC1; p=reject; sp=none"]})
    assert discover_dmarc("news.a.example", zone) == (DmarcRecord("reject", "none"), True)
    assert zone.asked == ["_dmarc.news.a.example", "_dmarc.a.example"]


def test_discover_dmarc_asks_once_for_an_organisational_domain() -> None:
    zone = Zone({})
    assert discover_dmarc("a.example", zone) == (None, False)
    assert zone.asked == ["_dmarc.a.example"]
    assert discover_dmarc("", zone) == (None, False)
    assert zone.asked == ["_dmarc.a.example"]


def test_discover_dmarc_stops_at_several_or_unusable_records() -> None:
    # RFC 7489 6.6.3: only an empty set sends discovery to the organisational domain.
    several = Zone({"_dmarc.news.a.example": ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
                    "_dmarc.a.example": ["v=DMARC1; p=reject"]})
    assert discover_dmarc("news.a.example", several) == (None, False)
    assert several.asked == ["_dmarc.news.a.example"]
    unusable = Zone({"_dmarc.news.a.example": ["v=DMARC1; p=bogus"],
                     "_dmarc.a.example": ["v=DMARC1; p=reject"]})
    assert discover_dmarc("news.a.example", unusable) == (None, False)
    several_at_org = Zone({"_dmarc.a.example": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]})
    assert discover_dmarc("news.a.example", several_at_org) == (None, True)


def test_discover_dmarc_lets_a_dns_failure_through() -> None:
    with pytest.raises(TimeoutError):
        discover_dmarc("news.a.example", Zone({}, fail="_dmarc.a.example"))


def test_applicable_policy() -> None:
    assert applicable_policy(None, at_org_domain=False) == ""
    assert applicable_policy(DmarcRecord("reject", "none"), at_org_domain=False) == "reject"
    assert applicable_policy(DmarcRecord("reject", "none"), at_org_domain=True) == "none"
    assert applicable_policy(DmarcRecord("quarantine"), at_org_domain=True) == "quarantine"


# -- the DMARC result and the verified domain ------------------------------------------------------

A = FromDomain("a.example")
NEWS = FromDomain("news.a.example")
SPF_NONE = SpfCheck("none", "")


def dkim_pass(domain: str) -> DkimSignatureCheck:
    return DkimSignatureCheck("pass", domain, "s1")


@pytest.mark.parametrize(("author", "spf", "dkim", "record", "outcome"), [
    # aligned DKIM pass, with and without a record
    (A, SPF_NONE, [dkim_pass("a.example")], DmarcRecord("reject"),
     ("pass", "reject", "a.example")),
    (A, SPF_NONE, [dkim_pass("a.example")], None, ("none", "", "a.example")),
    # aligned SPF pass
    (A, SpfCheck("pass", "a.example"), [], DmarcRecord("none"), ("pass", "none", "a.example")),
    (A, SpfCheck("pass", "bounces.a.example"), [], None, ("none", "", "a.example")),
    # not aligned, or not passing
    (A, SpfCheck("pass", "b.example"), [dkim_pass("b.example")], DmarcRecord("reject"),
     ("fail", "reject", None)),
    (A, SpfCheck("softfail", "a.example"), [DkimSignatureCheck("fail", "a.example", "s1")],
     DmarcRecord("quarantine"), ("fail", "quarantine", None)),
    (A, SpfCheck("neutral", "a.example"), [DkimSignatureCheck("temperror", "a.example", "s")],
     None, ("none", "", None)),
    (A, SPF_NONE, [DkimSignatureCheck("policy", "a.example", "s")], None, ("none", "", None)),
    # one aligned pass among failures is enough
    (A, SPF_NONE, [DkimSignatureCheck("fail", "a.example", "s"), dkim_pass("b.example"),
                   dkim_pass("mail.a.example")], DmarcRecord("reject"),
     ("pass", "reject", "a.example")),
    # strict modes
    (NEWS, SpfCheck("pass", "a.example"), [dkim_pass("a.example")],
     DmarcRecord("reject", adkim="s", aspf="s"), ("fail", "reject", None)),
    (NEWS, SpfCheck("pass", "a.example"), [dkim_pass("news.a.example")],
     DmarcRecord("reject", adkim="s", aspf="s"), ("pass", "reject", "news.a.example")),
    (NEWS, SpfCheck("pass", "news.a.example"), [dkim_pass("a.example")],
     DmarcRecord("reject", adkim="s", aspf="s"), ("pass", "reject", "news.a.example")),
    (NEWS, SpfCheck("pass", "a.example"), [], DmarcRecord("reject", aspf="s", adkim="r"),
     ("fail", "reject", None)),
    (NEWS, SPF_NONE, [dkim_pass("a.example")], DmarcRecord("reject", aspf="s", adkim="r"),
     ("pass", "reject", "news.a.example")),
    # no single From domain: nothing to evaluate
    (FromDomain("", "2 From fields"), SpfCheck("pass", "a.example"), [dkim_pass("a.example")],
     DmarcRecord("reject"), ("permerror", "", None)),
])
def test_evaluate_dmarc(author: FromDomain, spf: SpfCheck, dkim: list[DkimSignatureCheck],
                        record: DmarcRecord | None,
                        outcome: tuple[str, str, str | None]) -> None:
    result = evaluate_dmarc(author, spf, dkim, record)
    assert (result.result, result.policy, result.verified_domain) == outcome


def test_evaluate_dmarc_uses_sp_for_a_record_of_the_organisational_domain() -> None:
    record = DmarcRecord("reject", "quarantine")
    result = evaluate_dmarc(NEWS, SPF_NONE, [], record, at_org_domain=True)
    assert (result.result, result.policy) == ("fail", "quarantine")


def test_evaluate_dmarc_temperror_keeps_what_alignment_proved() -> None:
    verified = evaluate_dmarc(A, SPF_NONE, [dkim_pass("a.example")], None, lookup="temperror")
    assert (verified.result, verified.policy, verified.verified_domain) == (
        "temperror", "", "a.example")
    unverified = evaluate_dmarc(A, SPF_NONE, [], None, lookup="temperror")
    assert (unverified.result, unverified.verified_domain) == ("temperror", None)


def test_dkim_signature_tags() -> None:
    value = " v=1; a=rsa-sha256; d=A.example;\r\n\ts=s1; b=abc\r\n def ==; d=evil.example; =x; junk"
    assert dkim_signature_tags(value) == {"v": "1", "a": "rsa-sha256", "d": "A.example",
                                          "s": "s1", "b": "abcdef=="}


def test_no_authentication_verifies_nothing_but_reads_the_from_domain() -> None:
    spf = asyncio.run(NoAuthentication().check_spf("192.0.2.1", "h", "x@a.example"))
    assert spf == SpfCheck("none", "", "sender authentication is off")
    results = asyncio.run(NoAuthentication().authenticate(
        "192.0.2.1", "h", "x@a.example", SpfCheck("pass", "a.example"),
        msg("From: alice@a.example")))
    assert (results.from_domain, results.verified_domain, results.from_verified) == (
        "a.example", None, False)
    unauthenticated = AuthResults.unauthenticated("192.0.2.1", "h", "", "a.example")
    assert (unauthenticated.dmarc, unauthenticated.verified_domain) == ("none", None)


# -- Authentication-Results ------------------------------------------------------------------------


def results(**changes: object) -> AuthResults:
    base: dict[str, object] = dict(
        client_ip="192.0.2.1", helo="mx.a.example", mail_from="alice@a.example",
        from_domain="a.example", spf=SpfCheck("pass", "a.example"),
        dkim=(DkimSignatureCheck("pass", "a.example", "s1", algorithm="rsa-sha256",
                                 signature_prefix="abcdefgh"),),
        dmarc="pass", dmarc_policy="reject", verified_domain="a.example")
    base.update(changes)
    return AuthResults(**base)  # type: ignore[arg-type]


def unfold(value: str) -> str:
    return re.sub(r"\r\n[ \t]", " ", value)


def test_the_header_names_every_method_and_property() -> None:
    value = authentication_results_header("mx.b.example", results())
    assert unfold(value) == (
        "mx.b.example; spf=pass smtp.mailfrom=alice@a.example; dkim=pass header.d=a.example "
        "header.s=s1 header.a=rsa-sha256 header.b=abcdefgh; dmarc=pass (p=reject) "
        "header.from=a.example")


def test_the_header_without_signatures_from_or_policy() -> None:
    value = authentication_results_header("mx.b.example", results(
        mail_from="", spf=SpfCheck("none", "mx.a.example"), dkim=(), dmarc="permerror",
        dmarc_policy="", from_domain="", verified_domain=None))
    assert unfold(value) == ("mx.b.example; spf=none smtp.helo=mx.a.example; dkim=none; "
                             "dmarc=permerror")
    bare = authentication_results_header("mx.b.example", results(
        mail_from="", helo="", dkim=(DkimSignatureCheck("permerror", "", ""),)))
    assert unfold(bare).startswith("mx.b.example; spf=pass; dkim=permerror; dmarc=pass")


def test_the_header_gives_reasons_and_several_signatures() -> None:
    value = unfold(authentication_results_header("mx.b.example", results(
        spf=SpfCheck("fail", "a.example", "SPF fail - not authorized"),
        dkim=(DkimSignatureCheck("fail", "a.example", "s1", "the body hash does not match"),
              DkimSignatureCheck("pass", "list.example", "k2")),
        dmarc="fail")))
    assert 'spf=fail reason="SPF fail - not authorized" smtp.mailfrom=alice@a.example;' in value
    assert ('dkim=fail reason="the body hash does not match" header.d=a.example '
            "header.s=s1; dkim=pass header.d=list.example header.s=k2; dmarc=fail") in value


@pytest.mark.parametrize(("text", "value"), [
    ("a.example", "a.example"),
    ("alice@a.example", "alice@a.example"),
    ("first.last+tag@a.example", "first.last+tag@a.example"),
    ("rsa-sha256", "rsa-sha256"),
    ("abc+/=", '"abc+/="'),  # "/" and "=" are tspecials: quoted
    ('"odd local"@a.example', '"\\"odd local\\"@a.example"'),
    ("a b", '"a b"'),
    ("semi;colon", '"semi;colon"'),
    ("back\\slash", '"back\\\\slash"'),
    ("(comment)", '"(comment)"'),
    ("ünï@bücher.de", '"ünï@bücher.de"'),
    ("", '""'),
    ("x\r\nInjected: yes", '"x Injected: yes"'),
    ("a@", '"a@"'),
    ("@a.example", '"@a.example"'),
])
def test_ar_value_quotes_what_is_not_a_token_or_an_address(text: str, value: str) -> None:
    assert ar_value(text) == value


def test_odd_values_are_quoted_and_cannot_inject_fields() -> None:
    value = authentication_results_header("mx b", results(
        mail_from='"bad\r\nX-Evil: 1"@a.example', helo="h",
        spf=SpfCheck("fail", "a.example", 'has "quotes" and \\ and\r\nX-Evil: 2'),
        dkim=(DkimSignatureCheck("permerror", "d;=x", "s (1)", "it broke (badly)"),)))
    assert "\r\nX-Evil" not in value and "\nX-Evil" not in value
    flat = unfold(value)
    assert flat.startswith('"mx b"; spf=fail reason="has \\"quotes\\" and \\\\ and X-Evil: 2" '
                           'smtp.mailfrom="\\"bad X-Evil: 1\\"@a.example";')
    assert 'dkim=permerror reason="it broke (badly)" header.d="d;=x" header.s="s (1)";' in flat


def test_a_policy_comment_is_escaped() -> None:
    flat = unfold(authentication_results_header(
        "mx", results(dmarc_policy="re(j)ect")))  # not a policy, but never unbalanced
    assert "dmarc=pass (p=re\\(j\\)ect)" in flat


def test_long_headers_fold_at_78_characters_between_words() -> None:
    many = tuple(DkimSignatureCheck("pass", f"signer{i}.some-long-domain.example",
                                    f"selector{i}", algorithm="ed25519-sha256",
                                    signature_prefix="ABCDEFGH") for i in range(6))
    value = authentication_results_header("mx.b.example", results(dkim=many))
    lines = ("Authentication-Results: " + value).split("\r\n")
    assert len(lines) > 6
    assert all(len(line) <= 78 for line in lines), lines
    assert all(line.startswith("\t") and not line.startswith("\t ") for line in lines[1:])
    # nothing is lost or split: unfolding gives the words of the one-line form
    words = unfold(value).split(" ")
    assert "header.d=signer5.some-long-domain.example" in words
    assert unfold(value).count("dkim=pass") == 6


def test_a_word_longer_than_a_line_stays_whole() -> None:
    long_selector = "s" * 100
    value = authentication_results_header("mx.b.example", results(
        dkim=(DkimSignatureCheck("pass", "a.example", long_selector),)))
    assert f"header.s={long_selector};" in value.split("\r\n\t")


def test_authentication_results_field_is_a_whole_header_line() -> None:
    field = authentication_results_field("mx.b.example", results())
    assert field.startswith(b"Authentication-Results: mx.b.example; spf=pass")
    assert field.endswith(b"\r\n") and not field.endswith(b"\r\n\r\n")
    utf8 = authentication_results_field("mx", results(mail_from="ü@bücher.de"))
    assert 'smtp.mailfrom="ü@bücher.de"'.encode() in utf8


def test_summary() -> None:
    assert summary(results()) == "spf=pass dkim=pass dmarc=pass; From verified: a.example"
    assert summary(results(dkim=(), dmarc="none", verified_domain=None)) == (
        "spf=pass dkim=none dmarc=none; From not verified")
    two = (DkimSignatureCheck("fail", "a", "s"), DkimSignatureCheck("pass", "b", "s"))
    assert summary(results(dkim=two)).startswith("spf=pass dkim=fail,pass dmarc=pass")


def test_results_round_trip_through_json() -> None:
    for original in (results(), results(dkim=(), verified_domain=None, mail_from="ü@bücher.de"),
                     AuthResults.unauthenticated("::1", "", "", "")):
        text = results_to_json(original)
        assert "\n" not in text
        assert results_from_json(text) == original
    with pytest.raises(ValueError):
        results_from_json("[]")
    with pytest.raises(ValueError):
        results_from_json("not json")
