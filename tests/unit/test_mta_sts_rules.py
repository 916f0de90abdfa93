"""``smdp.core.mta_sts``: the TXT record (RFC 8461 3.1), the policy file
(3.2), MX matching (4.1), and the decision table of outbound TLS."""

from __future__ import annotations

import pytest

from smdp.config import SmtpTlsSettings
from smdp.core.mta_sts import (
    MAX_AGE_LIMIT,
    MAX_POLICY_SIZE,
    Mode,
    Policy,
    PolicyError,
    TlsOutcome,
    decide,
    parse_policy,
    parse_txt_records,
    requirement,
)

# -- the TXT record -------------------------------------------------------------------

RFC_TXT = "v=STSv1; id=20160831085700Z;"  # RFC 8461 3.1's example


@pytest.mark.parametrize(("records", "expected"), [
    ([RFC_TXT], "20160831085700Z"),
    (["v=STSv1; id=20160831085700Z"], "20160831085700Z"),  # the final ";" is optional
    (["v=STSv1;id=abc"], "abc"),
    (["v=STSv1 ;\tid=abc ; "], "abc"),  # blanks around each ";"
    (["v=STSv1; id=abc; ext_1=x-y"], "abc"),  # extensions are ignored
    (["v=STSv1; foo.bar=1; id=abc"], "abc"),  # the id need not come first
    (["v=STSv1; id=" + "a" * 32], "a" * 32),
    # Other TXT records at the name are discarded; one MTA-STS record remains.
    (["v=spf1 -all", RFC_TXT], "20160831085700Z"),
    (["v=STSv1", "v=STSv1; id=abc"], "abc"),  # "v=STSv1" alone is not one
    (["v=STSv10; id=x", "v=STSv1; id=abc"], "abc"),
])
def test_a_valid_txt_record_gives_its_id(records: list[str], expected: str) -> None:
    assert parse_txt_records(records) == expected


@pytest.mark.parametrize("records", [
    [],
    ["v=spf1 -all"],
    ["v=STSv1; id=abc", "v=STSv1; id=def"],  # two records: no policy (3.1)
    ["v=STSv1; id=abc", "v=STSv1; id=abc"],  # even the same twice
    ["v=STSv1; id=abc", "v=STSv1; junk"],  # the second is invalid, but still counts
    ["v=STSv1;"],  # no id
    ["v=STSv1; ext=1"],  # no id
    ["v=STSv1; id=" + "a" * 33],  # longer than 32
    ["v=STSv1; id=abc-def"],  # not letters and digits
    ["v=STSv1; id="],
    ["v=STSv1; id=a; id=b"],  # two ids
    ["v=STSv1; id=abc;; ext=1"],  # an empty field
    ["v=STSv1; id=abc extra"],  # blanks outside a delimiter
    ["v=STSv1; id=abc; e=x=y"],  # "=" inside an extension value
    ["v=STSv1; id=abc; _e=1"],  # an extension name starts with a letter or digit
    ["v=STSv1; id=abc; e=caf\u00e9"],  # not US-ASCII
    ["V=STSv1; id=abc"],  # case-sensitive
    [" v=STSv1; id=abc"],  # must begin with it
    ["v=STSv1: id=abc"],
])
def test_an_unusable_txt_answer_is_no_policy(records: list[str]) -> None:
    assert parse_txt_records(records) is None


# -- the policy file ------------------------------------------------------------------

RFC_POLICY = ("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
              "mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n")


def test_rfc_8461s_example_policy() -> None:
    assert parse_policy(RFC_POLICY) == Policy(
        Mode.ENFORCE, 604800, ("mail.example.com", "*.example.net", "backupmx.example.com"))


@pytest.mark.parametrize("text", [
    RFC_POLICY.replace("\r\n", "\n"),  # LF lines
    RFC_POLICY.rstrip("\r\n"),  # no final terminator
    RFC_POLICY.replace("\r\n", "\n", 2),  # mixed
    RFC_POLICY.replace(": ", ":"),  # no blank after the colon
    RFC_POLICY.replace(": ", ":\t "),
    RFC_POLICY.replace("\r\n", "  \r\n"),  # blanks ending a line
    "max_age: 604800\nmx: mail.example.com\nmx: *.example.net\nmx: backupmx.example.com\n"
    "mode: enforce\nversion: STSv1\n",  # any order
    RFC_POLICY + "unknown_key: any value \u00e9 here\nx.y-z: 1\n",  # unknown keys ignored
    RFC_POLICY + "mode: testing\nmax_age: 5\nversion: STSv1\n",  # first of a repeat counts
    RFC_POLICY.replace("mail.example.com", "MAIL.Example.COM"),
])
def test_policy_variants_that_read_the_same(text: str) -> None:
    assert parse_policy(text) == parse_policy(RFC_POLICY)


def test_policy_bytes_are_utf8_and_at_most_64_kib() -> None:
    assert parse_policy(RFC_POLICY.encode()) == parse_policy(RFC_POLICY)
    padding = "x: " + "y" * 100 + "\n"
    big = RFC_POLICY + padding * ((MAX_POLICY_SIZE - len(RFC_POLICY)) // len(padding))
    assert len(big) <= MAX_POLICY_SIZE
    assert parse_policy(big.encode()).mode is Mode.ENFORCE
    with pytest.raises(PolicyError, match="larger than 65536"):
        parse_policy((big + padding).encode())
    with pytest.raises(PolicyError, match="not UTF-8"):
        parse_policy(RFC_POLICY.encode() + b"x: \xff\n")


def test_max_age_edges() -> None:
    def age(value: str) -> int:
        return parse_policy(RFC_POLICY.replace("604800", value)).max_age

    assert age("0") == 0
    assert age("31557600") == MAX_AGE_LIMIT
    assert age("31557601") == MAX_AGE_LIMIT  # capped, not dropped
    assert age("9999999999") == MAX_AGE_LIMIT  # ten digits
    for bad in ("99999999999", "-1", "1.5", "", "1e6", "0x10"):
        with pytest.raises(PolicyError, match="max_age"):
            age(bad)


def test_mode_none_needs_no_mx() -> None:
    policy = parse_policy("version: STSv1\nmode: none\nmax_age: 86400\n")
    assert policy == Policy(Mode.NONE, 86400, ())
    with pytest.raises(PolicyError, match="at least one mx"):
        parse_policy("version: STSv1\nmode: testing\nmax_age: 86400\n")


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("\n", "not 'key: value'"),
    (RFC_POLICY.replace("version: STSv1\r\n", ""), "no version"),
    (RFC_POLICY.replace("mode: enforce\r\n", ""), "no mode"),
    (RFC_POLICY.replace("max_age: 604800\r\n", ""), "no max_age"),
    (RFC_POLICY.replace("STSv1", "STSv2"), "version 'STSv2'"),
    (RFC_POLICY.replace("STSv1", "stsv1"), "version"),  # case-sensitive
    (RFC_POLICY.replace("enforce", "Enforce"), "mode 'Enforce'"),
    (RFC_POLICY.replace("enforce", "reject"), "mode 'reject'"),
    (RFC_POLICY.replace("mode:", "Mode:"), "no mode"),  # an unknown key; mode missing
    (RFC_POLICY + "mode: bogus\n", "mode 'bogus'"),  # a repeat must still be valid
    (RFC_POLICY.replace("\r\nmode", "\r\n\r\nmode"), "not 'key: value'"),  # a blank line
    (RFC_POLICY.replace("version: ", "version = "), "not 'key: value'"),
    (RFC_POLICY.replace("version:", "version :"), "not 'key: value'"),
    (RFC_POLICY.replace("version:", " version:"), "not 'key: value'"),
    (RFC_POLICY + "_x: 1\n", "not 'key: value'"),
    (RFC_POLICY + "x:\n", "no valid value"),
    (RFC_POLICY + "x: a\rb\n", "no valid value"),  # a bare CR
    (RFC_POLICY.replace("mail.example.com", "*.*.example.com"), "mx"),
    (RFC_POLICY.replace("mail.example.com", "mail.*.com"), "mx"),
    (RFC_POLICY.replace("mail.example.com", "*example.com"), "mx"),
    (RFC_POLICY.replace("mail.example.com", "mail.example.com."), "mx"),
    (RFC_POLICY.replace("mail.example.com", "-mail.example.com"), "mx"),
    (RFC_POLICY.replace("mail.example.com", "m\u00e4il.example.com"), "A-labels"),
    (RFC_POLICY.replace("mail.example.com", "mail.example.com:25"), "mx"),
    (RFC_POLICY.replace("mail.example.com", "*."), "mx"),
])
def test_an_invalid_policy_is_refused(text: str, why: str) -> None:
    with pytest.raises(PolicyError, match=why):
        parse_policy(text)


# -- MX matching (4.1) ----------------------------------------------------------------

@pytest.mark.parametrize(("host", "matches"), [
    ("mail.example.com", True),
    ("MAIL.example.com.", True),  # case, and a final dot
    ("backupmx.example.com", True),
    ("mx1.example.net", True),  # *.example.net: one label
    ("example.net", False),  # the wildcard needs a label
    ("a.b.example.net", False),  # ... exactly one
    ("mail.example.com.evil", False),
    ("xmail.example.com", False),
    ("example.com", False),
    ("", False),
    (".example.net", False),
])
def test_mx_host_matching(host: str, matches: bool) -> None:
    assert parse_policy(RFC_POLICY).matches(host) is matches


# -- the decision ---------------------------------------------------------------------

OPPORTUNISTIC = SmtpTlsSettings()
REQUIRED = SmtpTlsSettings(require_verified=("example.com",))
EVERYWHERE = SmtpTlsSettings(mode="require_verified")
ENFORCE = Policy(Mode.ENFORCE, 86400, ("mx.example.com",))
TESTING = Policy(Mode.TESTING, 86400, ("mx.example.com",))
NONE = Policy(Mode.NONE, 86400, ())
LISTED, UNLISTED = "mx.example.com", "other.example.org"
N, H, C, U, V = (TlsOutcome.NOT_OFFERED, TlsOutcome.HANDSHAKE_FAILED,
                 TlsOutcome.CERTIFICATE_INVALID, TlsOutcome.UNVERIFIED, TlsOutcome.VERIFIED)

# (policy, settings, mx host, outcome) -> (delivered, recorded outcome)
TABLE: list[tuple[Policy | None, SmtpTlsSettings, str, TlsOutcome, bool, str]] = [
    # No policy, opportunistic: every outcome delivers.
    (None, OPPORTUNISTIC, LISTED, N, True, "not-offered (opportunistic)"),
    (None, OPPORTUNISTIC, LISTED, H, True, "handshake-failed (opportunistic)"),
    (None, OPPORTUNISTIC, LISTED, C, True, "certificate-invalid (opportunistic)"),
    (None, OPPORTUNISTIC, LISTED, U, True, "unverified (opportunistic)"),
    (None, OPPORTUNISTIC, LISTED, V, True, "verified (opportunistic)"),
    # mode none: as if there were no policy.
    (NONE, OPPORTUNISTIC, UNLISTED, N, True, "not-offered (opportunistic)"),
    (NONE, OPPORTUNISTIC, UNLISTED, V, True, "verified (opportunistic)"),
    # testing: delivered whatever happens; the reason says what enforce would do.
    (TESTING, OPPORTUNISTIC, LISTED, N, True, "not-offered (mta-sts testing)"),
    (TESTING, OPPORTUNISTIC, LISTED, H, True, "handshake-failed (mta-sts testing)"),
    (TESTING, OPPORTUNISTIC, LISTED, C, True, "certificate-invalid (mta-sts testing)"),
    (TESTING, OPPORTUNISTIC, LISTED, U, True, "unverified (mta-sts testing)"),
    (TESTING, OPPORTUNISTIC, LISTED, V, True, "verified (mta-sts testing)"),
    (TESTING, OPPORTUNISTIC, UNLISTED, V, True, "verified (mta-sts testing)"),
    # enforce, the MX listed: only verified TLS delivers.
    (ENFORCE, OPPORTUNISTIC, LISTED, N, False, "refused not-offered (mta-sts enforce)"),
    (ENFORCE, OPPORTUNISTIC, LISTED, H, False, "refused handshake-failed (mta-sts enforce)"),
    (ENFORCE, OPPORTUNISTIC, LISTED, C, False,
     "refused certificate-invalid (mta-sts enforce)"),
    (ENFORCE, OPPORTUNISTIC, LISTED, U, False, "refused unverified (mta-sts enforce)"),
    (ENFORCE, OPPORTUNISTIC, LISTED, V, True, "verified (mta-sts enforce)"),
    # enforce, the MX not listed: refused whatever TLS would give.
    (ENFORCE, OPPORTUNISTIC, UNLISTED, V, False, "refused verified (mta-sts enforce)"),
    (ENFORCE, OPPORTUNISTIC, UNLISTED, N, False, "refused not-offered (mta-sts enforce)"),
    (ENFORCE, REQUIRED, UNLISTED, V, False, "refused verified (mta-sts enforce)"),
    # require_verified for the domain: only verified TLS delivers.
    (None, REQUIRED, LISTED, N, False, "refused not-offered (require_verified)"),
    (None, REQUIRED, LISTED, H, False, "refused handshake-failed (require_verified)"),
    (None, REQUIRED, LISTED, C, False, "refused certificate-invalid (require_verified)"),
    (None, REQUIRED, LISTED, U, False, "refused unverified (require_verified)"),
    (None, REQUIRED, LISTED, V, True, "verified (require_verified)"),
    (TESTING, REQUIRED, UNLISTED, N, False, "refused not-offered (require_verified)"),
    (TESTING, REQUIRED, UNLISTED, V, True, "verified (require_verified)"),
    (NONE, REQUIRED, UNLISTED, V, True, "verified (require_verified)"),
    (ENFORCE, REQUIRED, LISTED, V, True, "verified (mta-sts enforce)"),
    (ENFORCE, REQUIRED, LISTED, C, False, "refused certificate-invalid (mta-sts enforce)"),
    # mode = "require_verified": every domain.
    (None, EVERYWHERE, LISTED, N, False, "refused not-offered (require_verified)"),
    (None, EVERYWHERE, LISTED, V, True, "verified (require_verified)"),
]


@pytest.mark.parametrize(("policy", "settings", "mx", "outcome", "delivered", "record"), TABLE)
def test_the_decision_table(policy: Policy | None, settings: SmtpTlsSettings, mx: str,
                            outcome: TlsOutcome, delivered: bool, record: str) -> None:
    verdict = decide("example.com", mx, policy, settings, outcome)
    assert (verdict.deliver, verdict.record) == (delivered, record)
    assert bool(verdict.reason) or verdict.deliver  # a refusal always says why


def test_require_verified_names_domains_exactly() -> None:
    assert decide("EXAMPLE.com.", LISTED, None, REQUIRED, N).deliver is False
    assert decide("sub.example.com", LISTED, None, REQUIRED, N).deliver is True
    assert decide("example.org", LISTED, None, REQUIRED, N).deliver is True


def test_the_reasons_say_who_requires_what() -> None:
    verdict = decide("example.com", LISTED, ENFORCE, OPPORTUNISTIC, C, "unable to get issuer")
    assert verdict.reason == (
        "the MTA-STS policy of example.com (mode enforce) requires TLS with a verified "
        "certificate, and mx.example.com showed a certificate that is not valid for it "
        "(unable to get issuer)")
    assert decide("example.com", LISTED, None, REQUIRED, N).reason == (
        "[smtp.tls] require_verified for example.com requires TLS with a verified "
        "certificate, and mx.example.com did not offer STARTTLS")
    assert decide("example.com", UNLISTED, ENFORCE, OPPORTUNISTIC, V).reason == (
        "other.example.org is not an MX host the MTA-STS policy of example.com lists "
        "(mode enforce)")
    assert decide("example.com", LISTED, TESTING, OPPORTUNISTIC, H).reason == (
        "mx.example.com failed the TLS handshake; the MTA-STS policy of example.com "
        "would refuse this (mode testing: delivered)")
    assert decide("example.com", LISTED, None, OPPORTUNISTIC, N).reason == ""


def test_the_requirement_is_known_before_connecting() -> None:
    assert requirement("example.com", UNLISTED, ENFORCE, OPPORTUNISTIC).refusal is not None
    listed = requirement("example.com", LISTED, ENFORCE, OPPORTUNISTIC)
    assert (listed.refusal, listed.verified, listed.verify) == (None, True, True)
    testing = requirement("example.com", LISTED, TESTING, OPPORTUNISTIC)
    assert (testing.verified, testing.verify) == (False, True)  # verified to be recorded
    plain = requirement("example.com", LISTED, None, OPPORTUNISTIC)
    assert (plain.verified, plain.verify, plain.by) == (False, False, "opportunistic")
