"""Issue 5 item 1: envelope extraction against a full parse with the email package.

The paper (section 6) extracts envelopes from 281 messages, 191 MB in all
(about 680 KB each), in 51 ms per message. Two workloads:

(a) the paper's shape, generated deterministically here: MIME messages with a
    text part (plain, or plain + HTML) and one to three base64 attachments,
    sizes spread around 680 KB so that 281 of them make 191 MB; the quick size
    takes the first messages of the same sequence;
(b) the real corpus (SpamAssassin ham and spam), mbox line stripped, CRLF.

Each message is handed to :func:`smdp.core.envelope.extract_envelope` and to the
naive baseline, a full parse with Python's ``email`` package
(``message_from_bytes(policy=default)``, ``walk()`` over every part with its
content type and attachment name, and ``get_body(...).get_content()``),
one after the other, so both see the same machine load. Reported: ms per
message, MB/s, peak memory allocated by each (tracemalloc, in a separate pass
so that tracing does not slow the timed pass) and the ratio baseline / smdp.
A third part measures both at message sizes from 10 KB to 25 MB: is the
extractor's memory flat in message size? There the input is one bytes object;
in the server a message is a :class:`smdp.mail.body.Body`, in a temporary file
once large, which extract_envelope reads a chunk at a time. A fourth part
measures that: peak memory and time of extract_envelope on a file-backed Body
of 1, 10 and 25 MB (``body_curve``: flat, the file never read whole), and on
the paper's 680 KB message as a file-backed Body against the same bytes
(``body_680kb``).

    python -m bench.envelopes [--size quick|full] [--results DIR]

writes ``envelopes.json`` as ``python -m bench.run --only envelopes`` does.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import gc
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    Settings,
    corpus_files,
    corpus_note,
    iter_corpus,
    percentile,
    ratio,
    settings_from_env,
    write_json,
)
from smdp.core.envelope import extract_envelope
from smdp.mail.body import CHUNK_SIZE, Body, BodyWriter

PAPER_MESSAGES = 281
PAPER_TOTAL = 191_000_000  # octets: 281 messages, "191 MB in all"
SEED = 20090601

_WORDS = (
    "the", "meeting", "report", "budget", "quarter", "project", "draft", "review", "team",
    "schedule", "figures", "attached", "please", "find", "below", "regards", "thanks",
    "update", "changes", "plan", "client", "contract", "delivery", "invoice", "summary",
    "notes", "minutes", "agenda", "proposal", "version", "final", "office",
)


def _text(rng: random.Random, octets: int) -> bytes:
    lines: list[bytes] = []
    used = 0
    while used < octets:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 12))).capitalize()
        raw = (line + ".\r\n").encode()
        lines.append(raw)
        used += len(raw)
    return b"".join(lines)


def _base64(payload: bytes) -> bytes:
    return base64.encodebytes(payload).replace(b"\n", b"\r\n")


_KINDS = (("application/pdf", "pdf"), ("image/jpeg", "jpg"), ("application/zip", "zip"),
          ("application/vnd.ms-excel", "xls"))


def paper_message(index: int, size: int) -> bytes:
    """Message ``index`` of the paper-shaped workload, about ``size`` octets."""
    rng = random.Random(SEED * 1000 + index)
    outer = f"=_outer_{index:04d}_{rng.getrandbits(48):012x}"
    inner = f"=_alt_{index:04d}_{rng.getrandbits(48):012x}"
    head = (
        f"From: Sender {index} <sender{index % 37}@origin.example>\r\n"
        f"To: Recipient <user{index % 11}@dest.example>\r\n"
        f"Subject: Report {index}: {' '.join(rng.choice(_WORDS) for _ in range(5))}\r\n"
        f"Date: Mon, 1 Jun 2009 {index % 24:02d}:{index % 60:02d}:00 +0300\r\n"
        f"Message-ID: <{index}.{rng.getrandbits(32)}@origin.example>\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{outer}"\r\n\r\n'
        "This is a multi-part message in MIME format.\r\n"
    ).encode()
    text = _text(rng, rng.randint(1_000, 8_000))
    if rng.random() < 0.5:
        body = (f"--{outer}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 7bit\r\n\r\n").encode() + text
    else:
        html = b"<html><body>" + text.replace(b"\r\n", b"<br>\r\n") + b"</body></html>\r\n"
        body = (
            f'--{outer}\r\nContent-Type: multipart/alternative; boundary="{inner}"\r\n\r\n'
            f"--{inner}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ).encode() + text + (
            f"--{inner}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        ).encode() + html + f"--{inner}--\r\n".encode()
    parts = [head, body]
    left = max(0, size - len(head) - len(body) - 200)
    count = rng.randint(1, 3)
    weights = [rng.random() + 0.2 for _ in range(count)]
    for k, weight in enumerate(weights):
        encoded = int(left * weight / sum(weights)) - 250
        raw_size = max(0, encoded * 57 // 78)  # base64: 4/3, plus CRLF every 76
        mime, ext = rng.choice(_KINDS)
        name = f"document-{index}-{k}.{ext}"
        parts.append((
            f'--{outer}\r\nContent-Type: {mime}; name="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
        ).encode() + _base64(rng.randbytes(raw_size)))
    parts.append(f"--{outer}--\r\n".encode())
    return b"".join(parts)


def paper_sizes() -> list[int]:
    """281 sizes spread 0.5x to 1.5x around 680 KB, summing to 191 MB."""
    rng = random.Random(SEED)
    raw = [rng.uniform(0.5, 1.5) for _ in range(PAPER_MESSAGES)]
    scale = PAPER_TOTAL / sum(raw)
    return [int(r * scale) for r in raw]


def full_parse(data: bytes) -> int:
    """The naive baseline: the email package's full parse; returns the part count."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    parts = 0
    for part in msg.walk():
        parts += 1
        part.get_content_type()
        if part.is_attachment():
            part.get_filename()
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is not None:
        body.get_content()
    return parts


def _smdp(data: bytes) -> object:
    return extract_envelope(data)


def _peak(fn: Callable[[Any], object], data: Any) -> tuple[int, bool]:
    """Peak octets allocated while ``fn(data)`` runs (the input itself not counted)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    ok = True
    try:
        fn(data)
    except Exception:
        ok = False
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, ok


def _time(fn: Callable[[Any], object], data: Any, repeats: int) -> tuple[float, bool]:
    """The best of ``repeats`` wall times, seconds; False when ``fn`` raised."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            fn(data)
        except Exception:
            return time.perf_counter() - start, False
        best = min(best, time.perf_counter() - start)
    return best, True


def _workload(messages: list[bytes] | None, make: Callable[[int], bytes] | None, count: int,
              repeats: int, memory_every: int) -> dict[str, Any]:
    """Time (and sample the memory of) both methods over one workload."""
    octets = 0
    times: dict[str, list[float]] = {"smdp": [], "email": []}
    peaks: dict[str, list[int]] = {"smdp": [], "email": []}
    peak_sizes: list[int] = []
    errors = {"smdp": 0, "email": 0}
    for i in range(count):
        data = messages[i] if messages is not None else make(i)  # type: ignore[misc]
        octets += len(data)
        # Alternate which goes first, so neither always finds a warmer cache.
        order = (("smdp", _smdp), ("email", full_parse))
        for name, fn in order if i % 2 == 0 else order[::-1]:
            seconds, ok = _time(fn, data, repeats)
            times[name].append(seconds)
            if not ok:
                errors[name] += 1
        if memory_every and i % memory_every == 0:
            peak_sizes.append(len(data))
            for name, fn in order:
                peak, _ok = _peak(fn, data)
                peaks[name].append(peak)
    out: dict[str, Any] = {"messages": count, "octets": octets,
                           "mean_message_kb": round(octets / count / 1000, 1) if count else 0}
    for name in ("smdp", "email"):
        total = sum(times[name])
        ms = [t * 1000 for t in times[name]]
        out[name] = {
            "total_s": round(total, 3),
            "ms_per_message": round(total * 1000 / count, 3) if count else 0,
            "median_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(max(ms), 3) if ms else 0,
            "mb_per_s": round(octets / 1e6 / total, 1) if total else None,
            "errors": errors[name],
            "peak_memory_kib_max": round(max(peaks[name]) / 1024, 1) if peaks[name] else None,
            "peak_memory_kib_median": (round(percentile([float(p) for p in peaks[name]], 50)
                                              / 1024, 1) if peaks[name] else None),
            "memory_samples": len(peaks[name]),
        }
    per_message = [e / s for s, e in zip(times["smdp"], times["email"], strict=True) if s > 0]
    out["ratio_email_over_smdp"] = ratio(out["email"]["total_s"], out["smdp"]["total_s"], 1)
    out["ratio_median_per_message"] = round(percentile(per_message, 50), 1)
    if peak_sizes:
        out["largest_sampled_message_kib"] = round(max(peak_sizes) / 1024, 1)
    return out


def _size_curve(sizes: list[int]) -> list[dict[str, Any]]:
    """Time and memory of both methods against message size (one attachment each)."""
    rows = []
    for size in sizes:
        data = paper_message(10_000 + size % 997, size)
        repeats = 3 if size <= 5_000_000 else 1
        smdp_s, _ = _time(_smdp, data, repeats)
        email_s, email_ok = _time(full_parse, data, repeats)
        smdp_peak, _ = _peak(_smdp, data)
        email_peak, _ = _peak(full_parse, data)
        rows.append({
            "message_kib": round(len(data) / 1024, 1),
            "smdp_ms": round(smdp_s * 1000, 3),
            "email_ms": round(email_s * 1000, 3),
            "ratio": ratio(email_s, smdp_s, 1),
            "smdp_peak_kib": round(smdp_peak / 1024, 1),
            "email_peak_kib": round(email_peak / 1024, 1),
            "email_ok": email_ok,
        })
        del data
    return rows


def file_body(data: bytes) -> Body:
    """``data`` as the server holds a large message: a Body in a temporary file."""
    writer = BodyWriter(threshold=0)
    for start in range(0, len(data), CHUNK_SIZE):
        writer.write(data[start : start + CHUNK_SIZE])
    return writer.finish()


def _body_curve(sizes: list[int]) -> list[dict[str, Any]]:
    """Peak memory and time of extract_envelope on a file-backed Body, by size."""
    rows = []
    for size in sizes:
        data = paper_message(20_000 + size % 997, size)
        expected = extract_envelope(data)
        body = file_body(data)
        octets = len(data)
        del data
        peak, _ = _peak(_smdp, body)
        seconds, _ = _time(_smdp, body, 3)
        rows.append({
            "message_mb": round(octets / 1e6, 1),
            "message_kib": round(octets / 1024, 1),
            "body_peak_kib": round(peak / 1024, 1),
            "body_ms": round(seconds * 1000, 3),
            "same_as_bytes": extract_envelope(body) == expected,
        })
    return rows


def _body_680kb(repeats: int) -> dict[str, Any]:
    """The paper's average message, as bytes and as a file-backed Body."""
    data = paper_message(0, 680_000)
    body = file_body(data)
    bytes_s, _ = _time(_smdp, data, repeats)
    body_s, _ = _time(_smdp, body, repeats)
    return {
        "message_kib": round(len(data) / 1024, 1),
        "bytes_ms": round(bytes_s * 1000, 3),
        "body_ms": round(body_s * 1000, 3),
        "ratio_body_over_bytes": ratio(body_s, bytes_s),
        "bytes_peak_kib": round(_peak(_smdp, data)[0] / 1024, 1),
        "body_peak_kib": round(_peak(_smdp, body)[0] / 1024, 1),
        "same_as_bytes": extract_envelope(body) == extract_envelope(data),
    }


def run(settings: Settings) -> dict[str, Any]:
    sizes = paper_sizes()
    count = PAPER_MESSAGES  # the paper's workload at both sizes (a few seconds)
    result: dict[str, Any] = {
        "aims": {"ms_per_680kb_message": 1.0, "ratio_at_least": 10.0,
                 "memory": "flat in message size",
                 "body_memory": "flat in message size, a file-backed Body never read whole"},
        "paper": {"ms_per_message": 51.0, "messages": PAPER_MESSAGES, "octets": PAPER_TOTAL,
                  "machine": "2.13 GHz Core2Duo E6400, process capped at 37% of the CPU"},
    }
    result["paper_shape"] = _workload(None, lambda i: paper_message(i, sizes[i]), count,
                                      repeats=settings.pick(1, 3),
                                      memory_every=settings.pick(10, 4))
    curve_sizes = [10_000, 100_000, 680_000, 2_000_000, 5_000_000, 25_000_000]
    result["size_curve"] = _size_curve(curve_sizes)
    result["body_curve"] = _body_curve([1_000_000, 10_000_000, 25_000_000])
    result["body_680kb"] = _body_680kb(settings.pick(20, 100))
    note = corpus_note(settings.corpus)
    if note:
        result["corpus"] = {"skipped": note}
        return result
    files = corpus_files(settings.corpus)
    messages = [m.data for m in iter_corpus(settings.corpus, files)]
    result["corpus"] = _workload(messages, None, len(messages), repeats=1,
                                 memory_every=settings.pick(10, 1))
    result["corpus"]["ham"] = sum(1 for label, _ in files if label == "ham")
    result["corpus"]["spam"] = sum(1 for label, _ in files if label == "spam")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="envelope extraction against a full email parse (issue 5 item 1)")
    parser.add_argument("--size", choices=("quick", "full"), default=None,
                        help="default: $BENCH_SIZE, else quick")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder for envelopes.json (default: bench/results)")
    args = parser.parse_args(argv)
    settings = settings_from_env(args.size, args.results)
    started = time.monotonic()
    data = run(settings)
    data["size"] = settings.size
    data["elapsed_s"] = round(time.monotonic() - started, 1)
    path = settings.results / "envelopes.json"
    write_json(path, data)
    print(f"envelopes: {data['elapsed_s']:.1f} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
