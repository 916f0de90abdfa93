"""DKIM signing of one large message, two ways (docs/smtp.md, "DKIM").

    python -m bench.dkim_sign [--mib 25] [--algorithm rsa|ed25519]

``dkimpy``: ``dkim.sign()`` of dkimpy, which takes the whole message as one
bytes object. ``streaming``: ``smdp.mail.dkim.sign_message`` fed the
message's :class:`~smdp.mail.body.Body` chunk by chunk, the body spooled to a
temporary file as the store hands it out. Each way runs in a fresh process
(peak RSS is a process-wide high-water mark); the figure is the peak RSS
growth over the process's state just before signing, and the wall time of the
signing call. Not part of ``make bench``: the decision it supports is made.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _message_body(mib: int):  # type: ignore[no-untyped-def]
    from smdp.mail.body import BodyWriter

    writer = BodyWriter()
    writer.write(b"From: Alice <alice@a.example>\r\nTo: bob@b.example\r\n"
                 b"Subject: a large attachment\r\nDate: Wed, 2 Dec 2026 12:00:00 +0000\r\n"
                 b"Message-ID: <big@a.example>\r\nMIME-Version: 1.0\r\n"
                 b"Content-Type: application/octet-stream\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\n")
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n"
    block = line * 4096
    while writer.size < mib * 1024 * 1024:
        writer.write(block)
    return writer.finish()


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(way: str, mib: int, algorithm: str) -> None:
    from smdp.mail.dkim import SigningKey, generate_key, sign_message

    pem = generate_key(algorithm)
    body = _message_body(mib)
    before = _peak_kib()
    start = time.perf_counter()
    if way == "streaming":
        key = SigningKey.from_pem("a.example", "s1", algorithm, pem)
        sign_message(key, body.chunks())
    else:
        import dkim
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        if algorithm != "rsa":
            raise SystemExit("the dkimpy way is measured with rsa only")
        private = serialization.load_pem_private_key(pem, None)
        assert isinstance(private, rsa.RSAPrivateKey)
        pkcs1 = private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())
        message = body.read()  # dkimpy's API: the whole message, one bytes object
        dkim.sign(message, b"s1", b"a.example", pkcs1,
                  canonicalize=(b"relaxed", b"relaxed"))
    seconds = time.perf_counter() - start
    print(json.dumps({"way": way, "mib": mib, "seconds": round(seconds, 3),
                      "peak_growth_mib": round((_peak_kib() - before) / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=25)
    parser.add_argument("--algorithm", default="rsa")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.mib, args.algorithm)
        return
    for way in ("dkimpy", "streaming"):
        result = subprocess.run(
            [sys.executable, "-m", "bench.dkim_sign", "--child", way, "--mib", str(args.mib),
             "--algorithm", args.algorithm], capture_output=True, text=True, check=True)
        print(result.stdout.strip())


if __name__ == "__main__":
    main()
