"""Issues 11 and 12, item 7: smdp's SMTP doors against aiosmtpd with fsync and
Postfix, each in the same run, on loopback.

- ``submission`` (issue 11): async SMTP clients (``e2e.SmtpSession``, one
  session per account, AUTH PLAIN over loopback) submit 4 KB messages to
  a.example's submission port (``[listen] submission``); the 250 comes once
  the message is stored and its envelope queued (SQLite, synchronous=FULL).
  a.example delivers the envelopes to b.example meanwhile, as it would.
  Against: the same clients and messages to aiosmtpd writing each message to
  its own file with fsync before the 250 (``e2e.SmtpdProcess``).
- ``outbound`` (issue 11): the same clients submit to a.example, which has
  ``[smtp] outbound = true`` and finds c.example's MX (127.0.0.1) in a
  stand-in DNS (``tests/integration/faults.StandInDns``, negative answers
  with an SOA so that they may be cached, as a real zone's are), signs each
  message with a 2048-bit RSA DKIM key and delivers it to smtp-sink (its
  ``outbound_port``). Against: the same messages submitted to Postfix
  (``e2e.PostfixRelay``) relaying them to the same smtp-sink. Timed from the
  first submission until the sink has counted every message: both receive,
  queue durably and relay.
- ``inbound`` (issue 12): the same clients send 4 KB and 700 KB messages to
  b.example's MX (``[listen] mx``) for its users, MAIL FROM a.example, whose
  SPF (127.0.0.0/8) and DMARC records a stand-in DNS serves; the MX checks
  SPF, DKIM and DMARC there (``[smtp] sender_auth``, on by default) and holds
  each message for its recipient (an envelope to decide). Once more with
  ``sender_auth = false``, as the baselines check nothing. Against: aiosmtpd
  with fsync and Postfix receiving the same load (time to the last 250; for
  Postfix, also until it has relayed all to its sink).

CPU per message is the server's (Postfix: master and its daemons) utime +
stime over the timed window. The spam-mix replay at the MX is in
``bench/spam.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Settings, ratio, vm_kib
from bench.e2e import (
    KIB,
    PHASE_TIMEOUT_S,
    RECIPIENTS,
    SERVER_EXTRA,
    E2EError,
    PostfixRelay,
    Sink,
    SmtpdProcess,
    Workload,
    build_workloads,
    postfix_unavailable,
    smtp_run,
    tree_cpu_s,
)
from bench.e2e import cpu_s as process_cpu_s


def _counts(settings: Settings) -> tuple[dict[str, int], int]:
    counts = {"4k": settings.pick(2000, 10000), "700k": settings.pick(60, 300)}
    return counts, settings.pick(20, 50)


def _accounts(server: Any, concurrency: int) -> None:
    for i in range(concurrency):
        server.add_user(f"f{i}@a.example")


@contextlib.contextmanager
def _postfix(root: Path) -> Iterator[PostfixRelay | None]:
    """A throwaway Postfix relaying to its smtp-sink, or None where it cannot run."""
    if postfix_unavailable() is not None:
        yield None
        return
    relay = PostfixRelay(root / "postfix")
    try:
        yield relay
    finally:
        relay.stop()


async def _through_sink(port: int, sink: Sink, wl: Workload, n: int, concurrency: int,
                        recipients: list[str], *, pid: int, cpu: Callable[[], float],
                        login: bool) -> dict[str, Any]:
    """Submit ``n`` messages, then wait until ``sink`` has counted them all:
    messages/s from the first submission to the last arrival at the sink."""
    before = sink.count()
    cpu0 = cpu()
    r = await smtp_run(port, wl, n, concurrency, recipients, pid=pid, cpu=cpu, login=login)
    t0 = r.pop("t0")
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while sink.count() < before + n:
        if time.monotonic() > deadline:
            raise E2EError(f"smtp-sink counted {sink.count() - before} of {n}")
        await asyncio.sleep(0.005)
    elapsed = time.monotonic() - t0
    used = cpu() - cpu0
    return {
        "messages": n, "octets": r["octets"], "elapsed_s": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed, 1), "mb_per_s": round(r["octets"] / elapsed / 1e6, 2),
        "received_msgs_per_s": r["msgs_per_s"],
        "submit_latency": r["latency"],
        "cpu_ms_per_msg": round(used / n * 1000, 2),
        "peak_mib": round(vm_kib(pid) / KIB, 1),
        "client_cpu_share": r["client_cpu_share"],
    }


# ---------------------------------------------------------------------------


async def _submission(root: Path, wl: Workload, n: int, concurrency: int) -> dict[str, Any]:
    from tests.integration.harness import free_ports, make_pair, running

    (root / "smdp").mkdir()
    a, b = make_pair(root / "smdp", extra_a=SERVER_EXTRA, extra_b=SERVER_EXTRA,
                     backend="sqlite")
    a.submission_port = free_ports(1)[0]
    a.write_config()
    _accounts(a, concurrency)
    recipients = [f"user{i}@b.example" for i in range(RECIPIENTS)]
    for user in recipients:
        b.add_user(user)
    out: dict[str, Any] = {"messages": n, "concurrency": concurrency}
    with running(a, b):
        assert a.proc is not None and a.submission_port is not None
        pid = a.proc.pid
        await smtp_run(a.submission_port, wl, concurrency, concurrency, recipients, pid=pid,
                       login=True)
        r = await smtp_run(a.submission_port, wl, n, concurrency, recipients, pid=pid,
                           login=True)
        r.pop("t0")
        out["smdp"] = r
    print(f"    smdp submission: {out['smdp']['msgs_per_s']} msgs/s", flush=True)
    server = SmtpdProcess(root)
    try:
        await smtp_run(server, wl, concurrency, concurrency, recipients)
        r = await smtp_run(server, wl, n, concurrency, recipients)
        r.pop("t0")
        out["aiosmtpd"] = r
    finally:
        server.stop()
    print(f"    aiosmtpd: {out['aiosmtpd']['msgs_per_s']} msgs/s", flush=True)
    out["ratio_msgs"] = ratio(out["smdp"]["msgs_per_s"], out["aiosmtpd"]["msgs_per_s"])
    out["ratio_cpu"] = ratio(out["smdp"]["cpu_ms_per_msg"], out["aiosmtpd"]["cpu_ms_per_msg"])
    return out


async def _outbound(root: Path, wl: Workload, n: int, concurrency: int) -> dict[str, Any]:
    from tests.integration.faults import StandInDns
    from tests.integration.harness import Server, free_ports, running

    from smdp.mail.dkim import generate_key

    out: dict[str, Any] = {"messages": n, "concurrency": concurrency,
                           "dkim": "rsa-sha256, 2048-bit key (smdp); Postfix does not sign"}
    recipients = [f"user{i}@c.example" for i in range(RECIPIENTS)]
    with contextlib.ExitStack() as stack:
        relay = stack.enter_context(_postfix(root))
        if relay is not None:
            sink = relay.sink
        else:
            sink = Sink(root, free_ports(1)[0], "sink")
            stack.callback(sink.stop)
            out["postfix"] = {"skipped": postfix_unavailable()}
        dns = stack.enter_context(StandInDns())
        dns.mx["c.example"] = [(10, "mx.c.example")]
        dns.hosts["mx.c.example"] = ["127.0.0.1"]
        dns.negative_ttl = 300  # cut to 60 s by routing, as any zone's SOA minimum
        key = root / "a.example.dkim.pem"
        key.write_bytes(generate_key("rsa"))
        key.chmod(0o600)
        folder = root / "outbound"
        folder.mkdir()
        peer, user, submission = free_ports(3)
        a = Server("a.example", "smdp.a.example", folder, peer, user,
                   dns.config + f"[smtp]\noutbound = true\noutbound_port = {sink.port}\n"
                   f'[dkim."a.example"]\nselector = "s1"\nkey = "{key}"\n' + SERVER_EXTRA,
                   backend="sqlite", submission_port=submission)
        a.write_config()
        _accounts(a, concurrency)
        with running(a):
            assert a.proc is not None
            pid = a.proc.pid

            def cpu() -> float:
                return process_cpu_s(pid)

            await _through_sink(submission, sink, wl, concurrency, concurrency, recipients,
                                pid=pid, cpu=cpu, login=True)
            questions = len(dns.questions)
            out["smdp"] = await _through_sink(submission, sink, wl, n, concurrency,
                                              recipients, pid=pid, cpu=cpu, login=True)
            out["smdp"]["dns_questions"] = len(dns.questions) - questions
        print(f"    smdp outbound: {out['smdp']['msgs_per_s']} msgs/s, "
              f"{out['smdp']['cpu_ms_per_msg']} ms CPU/msg", flush=True)
        if relay is not None:
            master = relay.master

            def pf_cpu() -> float:
                return tree_cpu_s(master)

            await _through_sink(relay.port, sink, wl, concurrency, concurrency, recipients,
                                pid=master, cpu=pf_cpu, login=False)
            out["postfix"] = await _through_sink(relay.port, sink, wl, n, concurrency,
                                                 recipients, pid=master, cpu=pf_cpu,
                                                 login=False)
            print(f"    postfix relay: {out['postfix']['msgs_per_s']} msgs/s", flush=True)
            out["ratio_msgs"] = ratio(out["smdp"]["msgs_per_s"], out["postfix"]["msgs_per_s"])
            out["ratio_cpu"] = ratio(out["smdp"]["cpu_ms_per_msg"],
                                     out["postfix"]["cpu_ms_per_msg"])
    return out


async def _mx_runs(root: Path, name: str, extra: str, loads: dict[str, Workload],
                   counts: dict[str, int], concurrency: int,
                   recipients: list[str]) -> dict[str, Any]:
    from tests.integration.harness import Server, free_ports, running

    folder = root / name
    folder.mkdir()
    peer, user, mx = free_ports(3)
    b = Server("b.example", "smdp.b.example", folder, peer, user, extra + SERVER_EXTRA,
               backend="sqlite", mx_port=mx)
    b.write_config()
    for rcpt in recipients:
        b.add_user(rcpt)
    out: dict[str, Any] = {}
    with running(b):
        assert b.proc is not None
        for size, wl in loads.items():
            await smtp_run(mx, wl, min(concurrency, counts[size]), concurrency, recipients,
                           pid=b.proc.pid)
            r = await smtp_run(mx, wl, counts[size], concurrency, recipients, pid=b.proc.pid)
            r.pop("t0")
            out[size] = r
            print(f"    {name} {size}: {r['msgs_per_s']} msgs/s, {r['mb_per_s']} MB/s",
                  flush=True)
    return out


async def _inbound(root: Path, loads: dict[str, Workload], counts: dict[str, int],
                   concurrency: int) -> dict[str, Any]:
    from tests.integration.auth_dns import publish_dmarc, publish_spf
    from tests.integration.faults import StandInDns

    recipients = [f"user{i}@b.example" for i in range(RECIPIENTS)]
    out: dict[str, Any] = {"counts": counts, "concurrency": concurrency,
                           "smdp": {}, "aiosmtpd": {}, "postfix": {}, "ratios": {}}
    with StandInDns() as dns:
        # The MX checks SPF, DKIM and DMARC ([smtp] sender_auth, on by
        # default) through this DNS: a.example's SPF passes for 127.0.0.1.
        publish_spf(dns, "a.example")
        publish_dmarc(dns, "a.example", "v=DMARC1; p=none")
        out["smdp"] = await _mx_runs(root, "smdp", dns.config, loads, counts, concurrency,
                                     recipients)
        questions = len(dns.questions)
    # The authenticator's resolver caches answers for their TTL: a few in all.
    out["dns_questions"] = questions
    # What the baselines do: no sender authentication at all.
    out["smdp_no_sender_auth"] = await _mx_runs(
        root, "smdp-no-auth", "[smtp]\nsender_auth = false\n", loads, counts, concurrency,
        recipients)
    server = SmtpdProcess(root)
    try:
        for size, wl in loads.items():
            await smtp_run(server, wl, min(concurrency, counts[size]), concurrency, recipients)
            r = await smtp_run(server, wl, counts[size], concurrency, recipients)
            r.pop("t0")
            out["aiosmtpd"][size] = r
    finally:
        server.stop()
    with _postfix(root) as relay:
        if relay is None:
            out["postfix"] = {"skipped": postfix_unavailable()}
        else:
            master = relay.master

            def pf_cpu() -> float:
                return tree_cpu_s(master)

            for size, wl in loads.items():
                await _through_sink(relay.port, relay.sink, wl, min(concurrency, counts[size]),
                                    concurrency, recipients, pid=master, cpu=pf_cpu,
                                    login=False)
                r = await _through_sink(relay.port, relay.sink, wl, counts[size], concurrency,
                                        recipients, pid=master, cpu=pf_cpu, login=False)
                out["postfix"][size] = r
    for size in loads:
        s, a, p = out["smdp"][size], out["aiosmtpd"][size], out["postfix"].get(size)
        bare = out["smdp_no_sender_auth"][size]
        out["ratios"][f"{size}_no_sender_auth_over_aiosmtpd_msgs"] = ratio(bare["msgs_per_s"],
                                                                          a["msgs_per_s"])
        out["ratios"][f"{size}_over_aiosmtpd_msgs"] = ratio(s["msgs_per_s"], a["msgs_per_s"])
        out["ratios"][f"{size}_over_aiosmtpd_mb"] = ratio(s["mb_per_s"], a["mb_per_s"])
        if p:
            out["ratios"][f"{size}_over_postfix_received_msgs"] = ratio(
                s["msgs_per_s"], p["received_msgs_per_s"])
            out["ratios"][f"{size}_over_postfix_relayed_msgs"] = ratio(s["msgs_per_s"],
                                                                     p["msgs_per_s"])
    return out


PARTS = ("submission", "outbound", "inbound")


def run(settings: Settings, parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
    counts, concurrency = _counts(settings)
    loads = build_workloads(settings, counts)
    result: dict[str, Any] = {
        "aims": {"submission_over_aiosmtpd_at_least": 1.0,
                 "outbound_over_postfix_relay_at_least": 1.0,
                 "inbound_over_aiosmtpd_and_postfix_at_least": 1.0},
        "setup": {"concurrency": concurrency, "recipients": RECIPIENTS,
                  "messages": {size: {"count": counts[size], "distinct": len(wl.bodies),
                                      "mean_octets": round(wl.mean_octets),
                                      "source": wl.source} for size, wl in loads.items()}},
    }
    with tempfile.TemporaryDirectory(prefix="smdp-bench-smtp-") as tmp:
        root = Path(tmp)
        for part in parts:
            print(f"  {part} ...", flush=True)
            (root / part).mkdir()
            try:
                if part == "submission":
                    result[part] = asyncio.run(_submission(root / part, loads["4k"],
                                                           counts["4k"], concurrency))
                elif part == "outbound":
                    result[part] = asyncio.run(_outbound(root / part, loads["4k"],
                                                         counts["4k"], concurrency))
                else:
                    result[part] = asyncio.run(_inbound(root / part, loads, counts,
                                                        concurrency))
            except Exception as exc:  # one part's failure leaves the others' figures
                import traceback

                result[part] = {"error": f"{exc!r}\n{traceback.format_exc()[-1500:]}"}
                print(result[part]["error"], flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bench.common import settings_from_env, write_json

    parser = argparse.ArgumentParser(description="SMTP doors against aiosmtpd and Postfix")
    parser.add_argument("--parts", default=",".join(PARTS))
    args = parser.parse_args(argv)
    settings = settings_from_env()
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    write_json(settings.results / "smtp.json", run(settings, parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
