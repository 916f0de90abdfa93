"""DKIM signing (mail/dkim.py): every signature is checked by verifiers that
share no code with the signer: dkimpy's ``dkim.verify`` and, where the Debian
package ``opendkim`` is installed, OpenDKIM's C library (``opendkim -t``, its
test mode, with the key record given as test DNS data)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed
from hypothesis import example, given
from hypothesis import strategies as st

from smdp.config import DkimSetting
from smdp.mail.body import BodyWriter
from smdp.mail.dkim import (
    MAX_HEADER_BLOCK,
    BodyHasher,
    DkimError,
    MessageSigner,
    SigningKey,
    generate_key,
    sign_message,
    txt_strings,
)

ALGORITHMS = ("rsa", "ed25519")
# One key of each kind for the module: RSA key generation is slow.
KEYS = {alg: SigningKey.from_pem("a.example", "s1", alg, generate_key(alg)) for alg in ALGORITHMS}

HEADER = (b"From: Alice <alice@a.example>\r\n"
          b"To: Bob <bob@b.example>,\r\n\tCarol <carol@c.example>\r\n"
          b"Cc: dave@d.example\r\n"
          b"Subject:  a   folded\r\n   subject\t line  \r\n"
          b"Date: Wed, 2 Dec 2026 12:00:00 +0000\r\n"
          b"Message-ID: <m1@a.example>\r\n"
          b"List-Id: <team.a.example>\r\n"
          b"X-Not-Signed: anything\r\n"
          b"MIME-Version: 1.0\r\n"
          b"Content-Type: text/plain; charset=utf-8\r\n")
BODY = b"Hello  \t Bob,\r\n\r\nsee you   \r\ntomorrow.\r\n\r\n\r\n"
MESSAGE = HEADER + b"\r\n" + BODY


def dkimpy_verifies(key: SigningKey, signed: bytes) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return key.public_record().encode() if name.decode() == key.record_name else b""

    return bool(dkim.verify(signed, dnsfunc=dnsfunc))


OPENDKIM = shutil.which("opendkim") or next(
    (p for p in ("/usr/sbin/opendkim",) if Path(p).exists()), None)


def opendkim_verifies(key: SigningKey, signed: bytes, tmp_path: Path) -> bool:
    """OpenDKIM's verdict: ``opendkim -t`` verifies a message file and says
    "verification (...) succeeded" or "... failed" (its exit status is 0
    either way); ``TestDNSData`` stands in for DNS."""
    if OPENDKIM is None:
        print("opendkim not installed (Debian package opendkim): the second verifier skipped")
        pytest.skip("opendkim is not installed (Debian package opendkim)")
    keys = tmp_path / "keys"
    keys.write_text(f"{key.record_name.rstrip('.')} {key.public_record()}\n")
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nTestDNSData file:{keys}\nSyslog no\n")
    message = tmp_path / "message.eml"
    message.write_bytes(signed)
    result = subprocess.run([OPENDKIM, "-x", str(conf), "-t", str(message)],
                            capture_output=True, text=True, timeout=30)
    said = result.stdout + result.stderr
    if re.search(r"verification \(s=s1, d=a\.example.*\) succeeded", said):
        return True
    assert "failed" in said, said
    return False


def both_verify(key: SigningKey, signed: bytes, tmp_path: Path) -> bool:
    ours = dkimpy_verifies(key, signed)
    theirs = opendkim_verifies(key, signed, tmp_path) if OPENDKIM else ours
    assert ours == theirs, "dkimpy and OpenDKIM disagree"
    return ours


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_signed_message_verifies(alg: str, tmp_path: Path) -> None:
    key = KEYS[alg]
    sig = sign_message(key, [MESSAGE])
    assert sig.startswith(b"DKIM-Signature: v=1; a=" + {"rsa": b"rsa-sha256",
                                                         "ed25519": b"ed25519-sha256"}[alg])
    assert b"c=relaxed/relaxed;" in sig and sig.endswith(b"\r\n")
    assert all(len(line) <= 78 for line in sig.split(b"\r\n"))
    assert dkimpy_verifies(key, sig + MESSAGE)
    if OPENDKIM is None:
        print("opendkim not installed (Debian package opendkim): only dkimpy verified")
    else:
        assert opendkim_verifies(key, sig + MESSAGE, tmp_path)


def test_the_recommended_fields_are_signed_and_from_oversigned() -> None:
    sig = sign_message(KEYS["ed25519"], [MESSAGE]).decode()
    h = re.search(r"h=([^;]*);", sig)
    assert h is not None
    assert re.sub(r"\s", "", h.group(1)).split(":") == [
        "from", "to", "cc", "subject", "date", "message-id", "list-id", "mime-version",
        "content-type", "from"]


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_large_body_in_odd_chunks_signs_as_the_whole(alg: str, tmp_path: Path) -> None:
    key = KEYS[alg]
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVph  \t YmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5\r\n"
    writer = BodyWriter(threshold=1024 * 1024)  # spooled to a file, as the store hands it
    writer.write(HEADER + b"\r\n")
    while writer.size < 5 * 1024 * 1024:
        writer.write(line * 997)
    writer.write(b"last line  \r\n\r\n \r\n")
    body = writer.finish()
    assert not body.in_memory
    whole = sign_message(key, [body.read()], timestamp=1_700_000_000)
    for size in (1, 8191, 65537, 262144):
        chunks = body.chunks(size) if size > 1 else iter(
            [body.head(3), body.tail(3).head(1), *body.tail(4).chunks(4093)])
        assert sign_message(key, chunks, timestamp=1_700_000_000) == whole, size
    assert both_verify(key, whole + body.read(), tmp_path)


@pytest.mark.parametrize("message", [
    HEADER + b"\r\n",  # a blank line, then nothing
    HEADER,  # no blank line: all header
    HEADER + b"\r\n\r\n\r\n \t \r\n",  # only empty (and blank) lines: canonically empty
], ids=["blank-line", "no-blank-line", "empty-lines"])
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_an_empty_body_signs(alg: str, message: bytes, tmp_path: Path) -> None:
    key = KEYS[alg]
    sig = sign_message(key, [message])
    # RFC 6376 3.4.4: an empty body's relaxed form is empty.
    empty = hashlib.sha256(b"").digest()
    assert b"bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;" in sig.replace(b"\r\n\t", b" ")
    assert __import__("base64").b64encode(empty) == b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    if message == HEADER:  # what goes on the wire ends the header with CRLF, then the blank
        message = HEADER + b"\r\n"
    assert both_verify(key, sig + message, tmp_path)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_relaxed_survives_refolding_and_whitespace(alg: str, tmp_path: Path) -> None:
    key = KEYS[alg]
    sig = sign_message(key, [MESSAGE])
    refolded = (MESSAGE.replace(b"To: Bob <bob@b.example>,\r\n\tCarol",
                                b"To:   Bob <bob@b.example>, Carol")
                .replace(b"Hello  \t Bob,", b"Hello Bob,\t "))
    assert both_verify(key, sig + refolded, tmp_path)


@pytest.mark.parametrize("change", [
    (b"Subject:  a   folded", b"Subject:  a   FOLDED"),  # a signed header
    (b"Date: Wed, 2 Dec", b"Date: Thu, 3 Dec"),
    (b"see you", b"see yo"),  # the body
    (b"tomorrow.\r\n", b"tomorrow.\r\nP.S.\r\n"),  # something appended to the body
    (b"From: Alice", b"From: Mallory <m@evil.example>\r\nFrom: Alice"),  # a From added
], ids=["subject", "date", "body", "appended", "second-from"])
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_change_breaks_the_signature(alg: str, change: tuple[bytes, bytes],
                                       tmp_path: Path) -> None:
    key = KEYS[alg]
    sig = sign_message(key, [MESSAGE])
    assert both_verify(key, sig + MESSAGE, tmp_path)
    assert not both_verify(key, sig + MESSAGE.replace(*change, 1), tmp_path)


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_a_long_field_list_is_folded_and_verifies(alg: str, tmp_path: Path) -> None:
    lists = b"".join(b"List-%s: <https://lists.a.example/%d>\r\n" % (kind, n)
                     for n, kind in enumerate([b"Id", b"Help", b"Unsubscribe", b"Subscribe",
                                               b"Post", b"Owner", b"Archive",
                                               b"Unsubscribe-Post"] * 2))
    message = HEADER + b"Reply-To: r@a.example\r\nIn-Reply-To: <x@b.example>\r\n" \
        b"References: <x@b.example>\r\nContent-Transfer-Encoding: 8bit\r\n" + lists + \
        b"\r\n" + BODY
    sig = sign_message(KEYS[alg], [message])
    h = re.search(rb"h=([^;]*);", sig)
    assert h is not None and b"\r\n\t" in h.group(1)  # folded inside the list
    names = re.sub(rb"\s", b"", h.group(1)).split(b":")
    assert names.count(b"list-unsubscribe-post") == 2 and names.count(b"from") == 2
    assert len(names) == 9 + 4 + 16 + 1  # HEADER's, the four added, the lists, From again
    assert all(len(line) <= 78 for line in sig.split(b"\r\n"))
    assert both_verify(KEYS[alg], sig + message, tmp_path)


def test_an_unsigned_field_may_change() -> None:
    key = KEYS["ed25519"]
    sig = sign_message(key, [MESSAGE])
    assert dkimpy_verifies(key, sig + MESSAGE.replace(b"X-Not-Signed: anything",
                                                      b"X-Not-Signed: changed"))


def test_a_bare_lf_message_signs_as_its_crlf_form() -> None:
    key = KEYS["rsa"]
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert sign_message(key, [lf], timestamp=5) == sign_message(key, [MESSAGE], timestamp=5)


# The relaxed body hash never depends on where the chunks are cut, and agrees
# with dkimpy's whole-message canonicalization (as the SMTP sender puts the
# body on the wire: lines end in CRLF, the last one too).
@given(
    lines=st.lists(st.text(alphabet="ab \t\r", max_size=12), max_size=12),
    ends=st.lists(st.sampled_from(["\r\n", "\n"]), min_size=12, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
# A bare CR just before the empty lines that end the body is content.
@example(lines=["a\r", "", ""], ends=["\r\n"] * 12, cuts=[])
@example(lines=["a", "\r", ""], ends=["\r\n"] * 12, cuts=[3])
def test_body_hash_is_chunk_invariant_and_agrees_with_dkimpy(
    lines: list[str], ends: list[str], cuts: list[int]
) -> None:
    body = "".join(line + end for line, end in zip(lines, ends, strict=False)).encode()
    hasher = BodyHasher()
    start = 0
    for cut in sorted(cuts):
        hasher.update(body[start:cut])
        start = max(start, cut)
    hasher.update(body[start:])
    wire = b"\r\n".join(re.split(rb"\r?\n", body))
    assert hasher.digest() == hashlib.sha256(Relaxed.canonicalize_body(wire)).digest()


def test_a_very_long_line_is_hashed_as_it_comes() -> None:
    # (dkimpy's regular expressions take minutes over a long run of blanks,
    # so the last two are checked against their canonical form by hand.)
    for line, canonical in [
        ((b"x \t " * 100_000) + b"  \r\n" + b"\r\n" * 10, b"x " * 100_000 + b"\r\n"),
        (b"x" + b" " * 300_000 + b"y" + b"\t" * 300_000 + b"\r\n", b"x y\r\n"),
        (b" " * 300_000 + b"\r\n", b""),
    ]:
        hasher = BodyHasher()
        for i in range(0, len(line), 5000):
            hasher.update(line[i:i + 5000])
            assert len(hasher._carry) <= BodyHasher._CARRY_LIMIT + 5000
        assert hasher.digest() == hashlib.sha256(canonical.replace(b" \r\n", b"\r\n")).digest()
    first = (b"x \t " * 100_000) + b"  \r\n"
    assert Relaxed.canonicalize_body(first) == (b"x " * 100_000)[:-1] + b"\r\n"


def test_refusals() -> None:
    with pytest.raises(DkimError, match="no From field"):
        sign_message(KEYS["rsa"], [b"To: b@b.example\r\n\r\nbody\r\n"])
    signer = MessageSigner(KEYS["rsa"])
    with pytest.raises(DkimError, match="header block is longer"):
        for _ in range(MAX_HEADER_BLOCK // 1000 + 2):
            signer.update(b"X-Long: " + b"y" * 990 + b"\r\n")


def test_keys() -> None:
    rsa_pem = generate_key("rsa", 1024)
    with pytest.raises(DkimError, match="not an ed25519 private key"):
        SigningKey.from_pem("a.example", "s1", "ed25519", rsa_pem)
    with pytest.raises(DkimError, match="not an unencrypted PEM private key"):
        SigningKey.from_pem("a.example", "s1", "rsa", b"nonsense")
    with pytest.raises(DkimError, match="unknown DKIM algorithm 'dsa'"):
        SigningKey.from_pem("a.example", "s1", "dsa", rsa_pem)
    with pytest.raises(DkimError, match="is not a DKIM selector"):
        SigningKey.from_pem("a.example", "s_1", "rsa", rsa_pem)
    with pytest.raises(DkimError, match="out of range"):
        generate_key("rsa", 512)
    with pytest.raises(DkimError, match="unknown DKIM algorithm"):
        generate_key("dsa")
    key = SigningKey.from_pem("A.Example.", "2026.s1", "rsa", rsa_pem)
    assert key.record_name == "2026.s1._domainkey.a.example."
    setting = DkimSetting(selector="s2", key=Path("unused"), algorithm="rsa")
    assert SigningKey.from_setting("a.example", setting, rsa_pem).record_name == \
        "s2._domainkey.a.example."
    assert KEYS["ed25519"].public_record().startswith("v=DKIM1; k=ed25519; p=")
    assert len(KEYS["ed25519"].public_record()) == len("v=DKIM1; k=ed25519; p=") + 44


def test_txt_strings_are_at_most_255_octets() -> None:
    record = KEYS["rsa"].public_record()
    strings = txt_strings(record)
    assert "".join(strings) == record
    assert [len(s) for s in strings] == [255, len(record) - 255]
    assert txt_strings("v=DKIM1") == ["v=DKIM1"]
