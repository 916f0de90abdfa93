"""The markdown summary of one run (bench/results/summary.md): each aim of issue 5
beside the figure measured, then the tables behind them."""

from __future__ import annotations

from typing import Any


def _streamed(env: dict[str, Any]) -> str:
    """The same read from a message that is never in memory whole (a Body
    backed by a temporary file, as the servers hold large messages)."""
    curve = env.get("body_curve") or []
    if not curve:
        return ""
    parts = ", ".join(f"{p['body_peak_kib']:.0f} KiB at {p['message_mb']:.0f} MB" for p in curve)
    same = all(p.get("same_as_bytes") for p in curve)
    return f"; streamed from a file-backed body: {parts}" + ("" if same else " (RESULTS DIFFER)")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def aims(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    """[item, aim, measured, met] rows."""
    rows: list[list[str]] = []
    env = results.get("envelopes") or {}
    shape = env.get("paper_shape")
    if shape:
        ms = shape["smdp"]["ms_per_message"]
        rows.append(["1 envelope", "at most 1 ms per 680 KB message",
                     f"{ms:.3f} ms per message (mean {shape['mean_message_kb']:.0f} KB; "
                     f"paper: 51 ms)", _met(ms <= 1.0)])
        r = shape["ratio_email_over_smdp"]
        corpus = env.get("corpus") or {}
        rc = corpus.get("ratio_email_over_smdp")
        both = [x for x in (r, rc) if x is not None]
        on_corpus = (
            f"{_fmt(rc, 1)}x on the corpus (median per message "
            f"{_fmt(corpus.get('ratio_median_per_message'), 1)}x)" if rc is not None
            else "the corpus part was skipped (no corpus)")
        rows.append(["1 envelope", "at least 10x faster than a full email parse",
                     f"{_fmt(r, 1)}x on the paper's shape, {on_corpus}",
                     _met(all(x >= 10 for x in both) if both else None)
                     + ("" if rc is not None else " (paper's shape only)")])
    curve = env.get("size_curve")
    if curve:
        small, big = curve[0], curve[-1]
        flat = big["smdp_peak_kib"] <= 4 * max(small["smdp_peak_kib"], 64.0)
        rows.append(["1 envelope", "memory flat in message size (extraction)",
                     f"{small['smdp_peak_kib']:.0f} KiB at {small['message_kib']:.0f} KiB, "
                     f"{big['smdp_peak_kib']:.0f} KiB at {big['message_kib'] / 1024:.0f} MiB "
                     f"(email: {big['email_peak_kib'] / 1024:.0f} MiB)" + _streamed(env),
                     _met(flat)])
    lists = results.get("lists") or {}
    for backend in ("sqlite", "postgresql"):
        by_size = lists.get(backend) or {}
        sizes = sorted(int(k) for k in by_size if k.isdigit())
        if not sizes:
            if by_size.get("skipped"):
                rows.append([f"2 lists ({backend})", "at most 50 µs at 1,000,000 entries",
                             by_size["skipped"], "n/a"])
            continue
        n = sizes[-1]
        ops = by_size[str(n)]["ops"]
        worst = max(ops["lookup_hit"]["median_us"], ops["lookup_miss"]["median_us"],
                    ops["add_in_txn"]["median_us"], ops["delete_in_txn"]["median_us"])
        at_1m = n >= 1_000_000
        rows.append([
            f"2 lists ({backend})", "at most 50 µs at 1,000,000 entries",
            f"at {n:,} entries: lookup {ops['lookup_hit']['median_us']:.1f} µs, add "
            f"{ops['add_in_txn']['median_us']:.1f} µs, delete "
            f"{ops['delete_in_txn']['median_us']:.1f} µs inside a transaction; committed "
            f"(durable) add {ops['add']['median_us']:.0f} µs, delete "
            f"{ops['delete']['median_us']:.0f} µs"
            + ("" if at_1m else " (1,000,000 only at BENCH_SIZE=full)"),
            _met(worst <= 50) + ("" if at_1m else " (at the largest size run)")
            + ("; committed: " + _met(ops["add"]["median_us"] <= 50)),
        ])
        growth = lists.get(f"{backend}_growth") or {}
        if growth:
            last = growth[str(n)]
            rows.append([
                f"2 lists ({backend})", "growing like log n",
                f"{sizes[0]:,} -> {n:,}: lookup x{_fmt(last['lookup_hit'])}, add "
                f"x{_fmt(last['add_in_txn'])}, delete x{_fmt(last['delete_in_txn'])} "
                f"(log n grows x{last['log_n_ratio']})",
                _met(max(last["lookup_hit"] or 0, last["add_in_txn"] or 0,
                         last["delete_in_txn"] or 0) <= last["log_n_ratio"] * 1.5)])
    rows += e2e_aims(results.get("e2e") or {})
    rows += smtp_aims(results.get("smtp") or {})
    rows += imap_aims(results.get("imap") or {})
    spam = results.get("spam") or {}
    if spam.get("skipped"):
        rows.append(["4 spam", "all aims", spam["skipped"], "n/a"])
    elif "smdp_over_smtp" in spam:
        over = spam["smdp_over_smtp"]
        share = over["origin_to_destination"]
        rows.append(["4 spam", "at most 25% of SMTP's octets",
                     f"{share:.1%} origin->destination ({over['both_directions']:.1%} both "
                     f"ways; stored at the destination {over['stored_at_destination']:.1%})",
                     _met(share <= 0.25)])
        after = spam["after_warmup"]
        s = after["repeat_ham_no_decision_share"]
        rows.append(["4 spam", "at least 90% of repeat ham needs no decision after warm-up",
                     f"{_fmt(s, 3)} of {after['repeat_ham']} repeat ham after "
                     f"{spam['mix']['warmup_weeks']} warm-up weeks "
                     f"(all ham: {_fmt(after['ham_no_decision_share'], 3)}); decisions "
                     "asked for a sender the recipient had already listed: "
                     f"{spam['smdp'].get('asked_again_after_listing', 'n/a')}",
                     _met(s >= 0.9 if s is not None else None)])
        mx_after = spam.get("mx_after_warmup")
        if mx_after:
            mx = spam["mx"]
            rows.append(["12.7 spam mix at the MX", "figures beside the SMDP path's",
                         f"crossed {mx['origin_to_destination_octets'] / 1e6:.1f} MB (SMDP "
                         f"{spam['smdp']['origin_to_destination_octets'] / 1e6:.1f} MB); "
                         f"repeat ham with no decision after warm-up "
                         f"{_fmt(mx_after['repeat_ham_no_decision_share'], 3)} (SMDP "
                         f"{_fmt(after['repeat_ham_no_decision_share'], 3)}); decisions "
                         f"asked {sum(mx['decisions'].values())} (SMDP "
                         f"{sum(spam['smdp']['decisions'].values())})", "figures"])
        elif (spam.get("mx") or {}).get("error"):
            rows.append(["12.7 spam mix at the MX", "figures beside the SMDP path's",
                         f"failed: {spam['mx']['error']}", "n/a"])
        runs = spam.get("spamming_peer", {}).get("runs", [])
        if runs:
            through = [r["envelopes_through_before_block"] for r in runs]
            rows.append(["4 spam", "a spamming peer blocked within 50 envelopes",
                         ", ".join(f"{t if t is not None else 'not blocked'} envelopes "
                                   f"(decision lag {r['decision_lag_envelopes']})"
                                   for t, r in zip(through, runs, strict=True)),
                         _met(all(t is not None and t <= 50 for t in through))])
    scaling = results.get("scaling") or {}
    msg_rows = (scaling.get("message_size") or {}).get("rows")
    if msg_rows:
        big = msg_rows[-1]
        small = msg_rows[0]
        grows = big["a_peak_growth_mib"] > 4 * max(small["a_peak_growth_mib"], 1.0)
        rows.append(["5 scaling", "server memory does not grow with message size",
                     f"{big['message_kib'] / 1024:.0f} MiB message: origin peak +"
                     f"{big['a_peak_growth_mib']:.0f} MiB, destination +"
                     f"{big['b_peak_growth_mib']:.0f} MiB (1 KB message: +"
                     f"{small['a_peak_growth_mib']:.1f} / +{small['b_peak_growth_mib']:.1f} MiB)",
                     _met(not grows)])
    rows += sessions_aims(results.get("sessions") or {})
    rows += web_aims(results.get("web") or {})
    mailbox = scaling.get("mailbox")
    if mailbox:
        last = mailbox[-1]
        rows.append(["5 scaling", "mailbox 1,000 to 1,000,000 envelopes (curve)",
                     f"{last['envelopes']:,} envelopes: login {last['login_ms']:.1f} ms, "
                     f"STAT {last['stat_ms']:.1f} ms, a page of 100 envelopes "
                     f"{last.get('envs_page_ms', float('nan')):.1f} ms, "
                     f"ENVS (all) {last['envs_ms']:.0f} ms "
                     f"({last['envs_us_per_envelope']:.1f} µs per envelope)", "curve"])
    return rows


def render(results: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    m = info["machine"]
    out = [
        "# smdp benchmark summary",
        "",
        f"Size `{info['size']}`, run {info['started']}, {info['elapsed_s']:.0f} s in all. "
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}, load average at start {m['loadavg_at_start']}.",
        f"Corpus: `{info['corpus']}`" + ("" if info["corpus_present"] else " (absent)") + ".",
        "",
        "## Aims of issue 5",
        "",
    ]
    out += _table(["item", "aim", "measured", "verdict"], aims(results))
    for name, data in results.items():
        if "error" in data:
            out += [f"**{name} failed**:", "", "```", data["error"][-2000:], "```", ""]
    env = results.get("envelopes") or {}
    if "paper_shape" in env:
        out += ["## 1. Envelope extraction", ""]
        rows = []
        for label, w in (("paper's shape", env["paper_shape"]), ("corpus", env.get("corpus"))):
            if not w or "smdp" not in w:
                continue
            for method in ("smdp", "email"):
                r = w[method]
                rows.append([label, f"{w['messages']} msgs, {w['octets'] / 1e6:.0f} MB",
                             method, r["ms_per_message"], r["median_ms"], r["p99_ms"],
                             r["mb_per_s"], r["peak_memory_kib_max"], r["errors"]])
        out += _table(["workload", "size", "method", "ms/msg", "median ms", "p99 ms", "MB/s",
                       "peak KiB (max)", "errors"], rows)
        if (env.get("corpus") or {}).get("skipped"):
            out += [env["corpus"]["skipped"], ""]
        out += ["Against message size (one attachment):", ""]
        out += _table(["KiB", "smdp ms", "email ms", "ratio", "smdp peak KiB",
                       "email peak KiB"],
                      [[r["message_kib"], r["smdp_ms"], r["email_ms"], r["ratio"],
                        r["smdp_peak_kib"], r["email_peak_kib"]] for r in env["size_curve"]])
    lists = results.get("lists") or {}
    if "sqlite" in lists:
        out += ["## 2. List maintenance (median µs; p99 in brackets)", ""]
        rows = []
        for backend in ("sqlite", "postgresql"):
            by_size = lists.get(backend) or {}
            for key in sorted((k for k in by_size if k.isdigit()), key=int):
                ops = by_size[key]["ops"]
                rows.append([backend, int(key)] + [
                    f"{ops[op]['median_us']:.1f} ({ops[op]['p99_us']:.0f})"
                    for op in ("lookup_hit", "lookup_miss", "add_in_txn", "delete_in_txn",
                               "add", "delete")])
        out += _table(["backend", "entries", "lookup hit", "lookup miss", "add in txn",
                       "delete in txn", "add committed", "delete committed"], rows)
        if (lists.get("postgresql") or {}).get("skipped"):
            out += [lists["postgresql"]["skipped"], ""]
        tf = lists.get("text_file") or {}
        out += ["The paper's method in this run (text file, search line by line, append / "
                "rewrite, fsync): " + ", ".join(
                    f"{int(k):,} lines {v['search_and_add_or_delete']['median_us']:.0f} µs"
                    for k, v in tf.items()) + "; the paper: 9 ms at 1,000 lines.", ""]
    out += e2e_section(results.get("e2e") or {})
    out += smtp_section(results.get("smtp") or {})
    out += imap_section(results.get("imap") or {})
    spam = results.get("spam") or {}
    if "smdp" in spam:
        mix = spam["mix"]
        smdp, smtp = spam["smdp"], spam["smtp"]
        out += ["## 4. Spam stays home", "",
                f"{mix['messages']} corpus messages ({mix['spam']} spam, {mix['ham']} ham, "
                f"{mix['octets'] / 1e6:.1f} MB), {mix['weeks']} weeks, "
                f"{mix['ham_accounts']} ham and {mix['spam_accounts']} spam sender accounts, "
                f"{mix['recipients']} recipients.", ""]
        out += _table(["", "SMDP", "SMTP (aiosmtpd)", "SMDP / SMTP"], [
            ["octets origin -> destination", smdp["origin_to_destination_octets"],
             smtp["origin_to_destination_octets"],
             spam["smdp_over_smtp"]["origin_to_destination"]],
            ["octets destination -> origin", smdp["destination_to_origin_octets"],
             smtp["destination_to_origin_octets"], None],
            ["octets stored at the destination", smdp["stored_at_destination"]["octets"],
             smtp["stored_at_destination"]["octets"],
             spam["smdp_over_smtp"]["stored_at_destination"]],
        ])
        out += ["Outcomes: " + "; ".join(
            f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
            for label, d in smdp["outcomes"].items()), ""]
        out += _mx_mix_section(spam)
        out += _table(["week", "SMDP octets (cum.)", "SMTP octets (cum.)", "ham",
                       "ham, no decision", "repeat ham", "repeat ham, no decision"],
                      [[w["week"], w["origin_to_destination"], s["origin_to_destination"],
                        w.get("ham", 0), w.get("ham_no_decision_share"), w.get("repeat", 0),
                        w.get("repeat_ham_no_decision_share")]
                       for w, s in zip(smdp["weeks"], smtp["weeks"], strict=True)])
        runs = spam.get("spamming_peer", {}).get("runs", [])
        if runs:
            out += ["Spamming peer (90% spam; min_messages 10, block_below -0.5):", ""]
            out += _table(["decision lag", "submitted", "envelopes through", "blocked",
                           "quality at block"],
                          [[r["decision_lag_envelopes"], r["submitted"],
                            r["envelopes_through_before_block"], r["blocked"],
                            r["quality_at_block"]] for r in runs])
    scaling = results.get("scaling") or {}
    if scaling.get("mailbox"):
        out += ["## 5. Scaling", "", "Mailbox size (user port, median ms):", ""]
        out += _table(["envelopes", "login", "STAT", "ENVS page", "LIST page", "LIST",
                       "ENVS (pending)", "ENVS µs/envelope", "server VmHWM MiB"],
                      [[r["envelopes"], r["login_ms"], r["stat_ms"], r.get("envs_page_ms", "-"),
                        r.get("list_page_ms", "-"), r["list_ms"],
                        r["envs_ms"], r["envs_us_per_envelope"], r["server_vmhwm_mib"]]
                       for r in scaling["mailbox"]])
    msg = (scaling.get("message_size") or {}).get("rows")
    if msg:
        out += ["Message size (submitted at a.example, accepted and pulled by b.example):", ""]
        out += _table(["KiB", "submit ms", "envelope arrival ms", "accept to stored ms",
                       "origin peak +MiB", "destination peak +MiB"],
                      [[r["message_kib"], r["submit_ms"], r["envelope_arrival_ms"],
                        r["accept_to_stored_ms"], r["a_peak_growth_mib"],
                        r["b_peak_growth_mib"]] for r in msg])
    out += sessions_section(results.get("sessions") or {})
    out += web_section(results.get("web") or {})
    load = info.get("load")
    if load:
        out += ["Concurrent sessions: the last `make load` result (bench/results/load.json, "
                "not re-run by `make bench`): "
                f"{load.get('clients')} user + {load.get('peers')} peer sessions, "
                f"{load.get('operations_per_s')} operations/s, "
                f"{load.get('messages_per_s')} messages/s.", ""]
    if info.get("plots"):
        out += ["Plots: " + ", ".join(f"`{p}`" for p in info["plots"]), ""]
    return "\n".join(out)


# -- item 3: end to end on loopback (bench/e2e.py) ---------------------------------


def _spread(e2e: dict[str, Any], key: str) -> str:
    """`` (median of 3 rounds, 0.31 to 0.40)`` when the ratio has rounds."""
    s = (e2e.get("ratio_spread") or {}).get(key)
    if not s:
        return ""
    return f" (median of {len(s['rounds'])} rounds, {_fmt(s['min'])} to {_fmt(s['max'])})"


def e2e_aims(e2e: dict[str, Any]) -> list[list[str]]:
    smdp, smtp, pf = e2e.get("smdp") or {}, e2e.get("aiosmtpd") or {}, e2e.get("postfix") or {}
    if "4k" not in smdp or "4k" not in smtp:
        return []
    r = e2e.get("ratios") or {}
    full = smdp["4k"]["full"]["saturated"]
    rows = []
    if "4k" in pf:
        x = r.get("full_4k_over_postfix_relay_msgs")
        rows.append(["3 end to end", "full SMDP flow at least as fast as Postfix's relay (4 KB)",
                     f"{_fmt(x)}x{_spread(e2e, 'full_4k_over_postfix_relay_msgs')}: SMDP "
                     f"{full['msgs_per_s']:,.0f} msgs/s, Postfix relay "
                     f"{pf['4k']['msgs_per_s']:,.0f} msgs/s (last round)",
                     _met(x >= 1 if x else None)])
    else:
        rows.append(["3 end to end", "full SMDP flow at least as fast as Postfix's relay (4 KB)",
                     pf.get("skipped", "Postfix not run"), "n/a"])
    for size in ("4k", "700k"):
        if size not in smdp or size not in smtp:
            continue
        x = r.get(f"direct_{size}_over_aiosmtpd_msgs")
        c = r.get(f"direct_{size}_over_aiosmtpd_by_smtp_source_msgs")
        rows.append(["3 end to end", f"direct path at least as fast as aiosmtpd+fsync ({size})",
                     f"{_fmt(x)}x{_spread(e2e, f'direct_{size}_over_aiosmtpd_msgs')}: "
                     f"{smdp[size]['direct']['saturated']['msgs_per_s']:,.1f} "
                     f"against {smtp[size]['saturated']['msgs_per_s']:,.1f} msgs/s"
                     + (f" ({_fmt(c)}x against aiosmtpd driven by smtp-source)" if c else ""),
                     _met(min(v for v in (x, c) if v) >= 1 if x else None)])
    if "700k" in smdp and "700k" in smtp:
        x = r.get("full_700k_over_aiosmtpd_mb")
        s7, a7 = smdp["700k"]["full"]["saturated"], smtp["700k"]["saturated"]
        rows.append(["3 end to end", "700 KB: at least 5x aiosmtpd's receive throughput",
                     f"{_fmt(x)}x: full flow {s7['mb_per_s']:.1f} MB/s (direct "
                     f"{smdp['700k']['direct']['saturated']['mb_per_s']:.1f}) against "
                     f"{a7['mb_per_s']:.1f} MB/s; CPU {s7['cpu_ms_per_msg']['total']:.1f} ms/msg "
                     f"(both servers) against {a7['cpu_ms_per_msg']:.1f}",
                     _met(x >= 5 if x else None)])
    return rows


def e2e_section(e2e: dict[str, Any]) -> list[str]:
    smdp, smtp, pf = e2e.get("smdp") or {}, e2e.get("aiosmtpd") or {}, e2e.get("postfix") or {}
    if "4k" not in smdp:
        return []
    setup = e2e["setup"]
    out = ["## 3. End to end on loopback", "",
           f"{setup['concurrency']} concurrent sessions, {setup['recipients']} recipients; "
           + "; ".join(f"{k}: {v['count']} messages (paced {v['paced']}), mean "
                       f"{v['mean_octets']:,} octets, {v['source']}"
                       for k, v in setup["messages"].items()) + ".", ""]
    rows: list[list[Any]] = []
    for size in ("4k", "700k"):
        for path in ("full", "direct", "reject"):
            if size not in smdp:
                continue
            sat, pace = smdp[size][path]["saturated"], smdp[size][path]["paced"]
            rows.append([size, f"SMDP {path}", sat["msgs_per_s"], sat["mb_per_s"],
                         pace["latency"]["p50_ms"], pace["latency"]["p99_ms"],
                         sat["latency"]["p50_ms"], sat["cpu_ms_per_msg"]["total"],
                         f"{sat['peak_mib']['origin']:.0f} / {sat['peak_mib']['destination']:.0f}",
                         sat["client_cpu_share"]])
        if size in smtp:
            sat, pace = smtp[size]["saturated"], smtp[size]["paced"]
            rows.append([size, "aiosmtpd + fsync", sat["msgs_per_s"], sat["mb_per_s"],
                         pace["latency"]["p50_ms"], pace["latency"]["p99_ms"],
                         sat["latency"]["p50_ms"], sat["cpu_ms_per_msg"],
                         f"{sat['peak_mib']:.0f}", sat["client_cpu_share"]])
        if size in pf:
            p = pf[size]
            rows.append([size, "Postfix relay -> smtp-sink", p["msgs_per_s"], p["mb_per_s"],
                         None, None, p["latency_from_log"]["p50_ms"], p["cpu_ms_per_msg"],
                         f"{p['peak_mib']['largest_process']:.0f} (largest of "
                         f"{p['peak_mib']['processes']})", p["client_cpu_share"]])
        if f"wire_ceiling_{size}" in pf:
            w = pf[f"wire_ceiling_{size}"]
            rows.append([size, "smtp-source -> smtp-sink (wire)", w["msgs_per_s"], w["mb_per_s"],
                         None, None, None, None, None, None])
    out += _table(["size", "system / path", "msgs/s", "MB/s", "paced p50 ms", "paced p99 ms",
                   "saturated p50 ms", "CPU ms/msg", "peak MiB", "client CPU share"], rows)
    if pf.get("skipped"):
        out += [f"Postfix: {pf['skipped']}", ""]
    out += _store_work(smdp)
    check = smtp.get("smtp_source_4k")
    if check:
        out += [f"Client check: smtp-source (C) into the same aiosmtpd, 4 KB: "
                f"{check['msgs_per_s']:,.0f} msgs/s against our client's "
                f"{smtp['4k']['saturated']['msgs_per_s']:,.0f}.", ""]
    ratios = e2e.get("ratios") or {}
    spreads = e2e.get("ratio_spread") or {}
    if spreads:
        # bench/common.py alternate(): SMDP and each baseline in turn.
        out += [f"Ratios (same run; median of {e2e.get('rounds')} alternating rounds, lowest "
                "to highest): " + ", ".join(
                    f"{k} {_fmt(v['median'])} ({_fmt(v['min'])} to {_fmt(v['max'])})"
                    for k, v in spreads.items()), ""]
    elif ratios:
        out += ["Ratios (same run): " + ", ".join(f"{k} {_fmt(v)}" for k, v in ratios.items()),
                ""]
    return out


def _store_work(smdp: dict[str, Any]) -> list[str]:
    """Issue 15 item 1: what each server asked of its store per message."""
    rows: list[list[Any]] = []
    for size in ("4k", "700k"):
        for path in ("full", "direct", "reject"):
            runs = (smdp.get(size) or {}).get(path) or {}
            for mode in ("saturated", "paced"):
                per = (runs.get(mode) or {}).get("store_per_msg")
                if per:
                    rows.append([size, path, mode] + [
                        f"{per[side]['statements']:.1f} / {per[side]['transactions']:.2f} / "
                        f"{per[side]['commits']:.2f} / {per[side].get('fsyncs', 0):.2f}"
                        for side in ("origin", "destination")])
    if not rows:
        return []
    return ["Store work per message (statements / transactions / commits that wrote / "
            "fsyncs; aim on the full flow: at most 12 statements and 2 commits per server; "
            "with group commit one fsync covers many commits):", "",
            *_table(["size", "path", "run", "origin", "destination"], rows)]


def _mx_mix_section(spam: dict[str, Any]) -> list[str]:
    """The mix by SMTP at smdp's MX (issue 12 item 7), beside the SMDP path."""
    mx, smdp = spam.get("mx") or {}, spam["smdp"]
    if "weeks" not in mx:
        return [f"The mix at the MX failed: {mx['error']}", ""] if mx.get("error") else []
    after, mx_after = spam["after_warmup"], spam["mx_after_warmup"]
    out = ["The same mix by SMTP at smdp's MX (SPF pass and DMARC for a.example, so "
           "From is verified and the lists apply; the same recipients):", ""]
    out += _table(["", "SMDP", "SMTP at smdp's MX"], [
        ["octets origin -> destination", smdp["origin_to_destination_octets"],
         mx["origin_to_destination_octets"]],
        ["octets stored at the destination, at the end",
         smdp["stored_at_destination"]["octets"], mx["stored_at_destination"]["octets"]],
        ["body octets held awaiting decisions (peak of a week)", 0,
         mx["stored_at_destination"]["peak_held_body_octets"]],
        ["ham with no decision after warm-up", after["ham_no_decision_share"],
         mx_after["ham_no_decision_share"]],
        ["repeat ham with no decision after warm-up", after["repeat_ham_no_decision_share"],
         mx_after["repeat_ham_no_decision_share"]],
        ["decisions asked", sum(smdp["decisions"].values()), sum(mx["decisions"].values())],
    ])
    out += ["MX outcomes: " + "; ".join(
        f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items()))
        for label, d in mx["outcomes"].items()), ""]
    return out


# -- issues 11 and 12, item 7: the SMTP doors (bench/smtp.py) -----------------------


def _x(value: float | None) -> str:
    return f"{_fmt(value)}x"


def smtp_aims(data: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    sub = data.get("submission") or {}
    if "smdp" in sub:
        x = sub["ratio_msgs"]
        rows.append(["11.7 submission", "4 KB at least as fast as aiosmtpd+fsync",
                     f"{_x(x)}: {sub['smdp']['msgs_per_s']:,.0f} against "
                     f"{sub['aiosmtpd']['msgs_per_s']:,.0f} msgs/s",
                     _met(x >= 1 if x else None)])
    elif sub:
        rows.append(["11.7 submission", "4 KB at least as fast as aiosmtpd+fsync",
                     "failed: see the section", "n/a"])
    out = data.get("outbound") or {}
    if "smdp" in out:
        pf = out.get("postfix") or {}
        x = out.get("ratio_msgs")
        rows.append(["11.7 outbound", "SMTP delivery to smtp-sink at least as fast as Postfix",
                     f"{_x(x)}: {out['smdp']['msgs_per_s']:,.0f} against "
                     f"{pf['msgs_per_s']:,.0f} msgs/s" if "msgs_per_s" in pf
                     else pf.get("skipped", "Postfix not run"),
                     _met(x >= 1 if x else None)])
    inbound = data.get("inbound") or {}
    r = inbound.get("ratios") or {}
    for size in ("4k", "700k"):
        if size not in (inbound.get("smdp") or {}):
            continue
        a = r.get(f"{size}_over_aiosmtpd_msgs")
        p = r.get(f"{size}_over_postfix_received_msgs")
        bare = r.get(f"{size}_no_sender_auth_over_aiosmtpd_msgs")
        rows.append(["12.7 inbound MX", f"{size} at least as fast as aiosmtpd+fsync and Postfix",
                     f"{_x(a)} aiosmtpd, " + (f"{_x(p)} Postfix (received)" if p
                                              else "Postfix not run")
                     + (f" ({_x(bare)} aiosmtpd without sender authentication)" if bare
                        else "")
                     + f": {inbound['smdp'][size]['msgs_per_s']:,.1f} msgs/s, "
                     f"{inbound['smdp'][size]['mb_per_s']:,.1f} MB/s",
                     _met(min(v for v in (a, p) if v) >= 1 if a else None)])
    return rows


def smtp_section(data: dict[str, Any]) -> list[str]:
    if not data or "setup" not in data:
        return []
    setup = data["setup"]
    out = ["## SMTP doors (issues 11 and 12, item 7)", "",
           f"{setup['concurrency']} concurrent SMTP sessions; "
           + "; ".join(f"{k}: {v['count']} messages, mean {v['mean_octets']:,} octets, "
                       f"{v['source']}" for k, v in setup["messages"].items()) + ".", ""]
    rows: list[list[Any]] = []
    sub = data.get("submission") or {}
    for name, label in (("smdp", "smdp submission port (AUTH)"),
                        ("aiosmtpd", "aiosmtpd + fsync")):
        if name in sub:
            s = sub[name]
            rows.append(["submission 4k", label, s["msgs_per_s"], s["mb_per_s"],
                         s["latency"]["p50_ms"], s["cpu_ms_per_msg"], s["client_cpu_share"]])
    ob = data.get("outbound") or {}
    for name, label in (("smdp", "smdp: submission -> DKIM -> SMTP -> smtp-sink"),
                        ("postfix", "Postfix relay -> smtp-sink")):
        s = ob.get(name) or {}
        if "msgs_per_s" in s:
            rows.append(["outbound 4k", label, s["msgs_per_s"], s["mb_per_s"],
                         s["submit_latency"]["p50_ms"], s["cpu_ms_per_msg"],
                         s["client_cpu_share"]])
    inbound = data.get("inbound") or {}
    for size in ("4k", "700k"):
        for name, label in (("smdp", "smdp MX (SPF, DKIM, DMARC; held)"),
                            ("smdp_no_sender_auth", "smdp MX, sender_auth = false (held)"),
                            ("aiosmtpd", "aiosmtpd + fsync"),
                            ("postfix", "Postfix (received; relayed in brackets)")):
            s = (inbound.get(name) or {}).get(size)
            if not s:
                continue
            if name == "postfix":
                rows.append([f"inbound {size}", label,
                             f"{s['received_msgs_per_s']:,.1f} ({s['msgs_per_s']:,.1f})",
                             s["mb_per_s"], s["submit_latency"]["p50_ms"],
                             s["cpu_ms_per_msg"], s["client_cpu_share"]])
            else:
                rows.append([f"inbound {size}", label, s["msgs_per_s"], s["mb_per_s"],
                             s["latency"]["p50_ms"], s["cpu_ms_per_msg"],
                             s["client_cpu_share"]])
    out += _table(["part", "system", "msgs/s", "MB/s", "p50 ms", "CPU ms/msg",
                   "client CPU share"], rows)
    for part in ("submission", "outbound", "inbound"):
        part_data = data.get(part) or {}
        if "error" in part_data:
            out += [f"{part} failed: `{part_data['error'].splitlines()[0]}`", ""]
        pf = part_data.get("postfix") or {}
        if isinstance(pf, dict) and pf.get("skipped"):
            out += [f"{part}: {pf['skipped']}", ""]
    ratios = {"submission": sub.get("ratio_msgs"), "outbound": ob.get("ratio_msgs")}
    ratios |= {f"inbound {k}": v for k, v in (inbound.get("ratios") or {}).items()}
    out += ["Ratios (same run): " + ", ".join(f"{k} {_fmt(v)}" for k, v in ratios.items()
                                             if v is not None), ""]
    return out


# -- issue 14, item 6: the IMAP port against Dovecot (bench/imap.py) ---------------

IMAP_OPS = (("select", "SELECT INBOX"), ("headers", "FETCH 1:* header fields"),
            ("bodies", "FETCH of 1,000 bodies"), ("idle", "IDLE notification"))


def imap_aims(data: dict[str, Any]) -> list[list[str]]:
    if "smdp" not in data:
        return [["14.6 IMAP", "within 2x of Dovecot", "failed: see the section", "n/a"]] \
            if data else []
    ratios = data.get("ratios")
    if not ratios:
        return [["14.6 IMAP", "within 2x of Dovecot",
                 (data.get("dovecot") or {}).get("skipped", "Dovecot not run"), "n/a"]]
    aim = data["aims"]["over_dovecot_at_most"]
    return [["14.6 IMAP", f"{label} within {aim:g}x of Dovecot",
             f"{_x(ratios[op])}: {data['smdp'][op]['seconds']['median'] * 1000:,.0f} against "
             f"{data['dovecot'][op]['seconds']['median'] * 1000:,.0f} ms",
             _met(ratios[op] <= aim if ratios[op] is not None else None)]
            for op, label in IMAP_OPS]


def imap_section(data: dict[str, Any]) -> list[str]:
    if "setup" not in data or "smdp" not in data:
        return []
    setup = data["setup"]
    out = ["## IMAP against Dovecot (issue 14, item 6)", "",
           f"{setup['messages']:,} messages ({setup['source']}, {setup['octets'] / 1e6:.0f} MB) "
           f"in both; {setup['rounds']} alternating rounds after a first use, "
           f"{setup['idle_rounds']} IDLE notifications each; "
           + (f"Dovecot {setup['dovecot']}." if setup.get("dovecot") else "no Dovecot."), ""]
    rows = []
    for op, label in IMAP_OPS:
        row: list[Any] = [label]
        for name in ("smdp", "dovecot"):
            r = (data.get(name) or {}).get(op)
            row.append(f"{r['seconds']['median'] * 1000:,.0f} ({r['seconds']['min'] * 1000:,.0f}"
                       f"-{r['seconds']['max'] * 1000:,.0f})" if r else "n/a")
        row.append((data.get("ratios") or {}).get(op))
        row.append((data.get("cpu_ratios") or {}).get(op))
        first = [(data.get(name) or {}).get("first_use_s", {}).get(op) for name in
                 ("smdp", "dovecot")]
        row.append(f"{first[0] * 1000:,.0f} / {first[1] * 1000:,.0f}" if None not in first
                   else "n/a")
        rows.append(row)
    out += _table(["operation", "smdp ms (min-max)", "Dovecot ms (min-max)", "smdp / Dovecot",
                   "CPU smdp / Dovecot", "first use ms (smdp / Dovecot)"], rows)
    skipped = (data.get("dovecot") or {}).get("skipped")
    if skipped:
        out += [skipped, ""]
    return out


# -- item 5: concurrent sessions, 10 to 1,000 (bench/sessions.py) -------------------


def _p(latency: dict[str, Any], op: str) -> str:
    r = latency.get(op)
    return f"{r['p50_ms']:,.1f} / {r['p99_ms']:,.0f}" if r else "n/a"


def sessions_aims(data: dict[str, Any]) -> list[list[str]]:
    rows = data.get("points")
    if not rows:
        return []
    last, first = rows[-1], rows[0]
    errors = data.get("errors_total", 0)
    return [["5 scaling", f"concurrent sessions {first['sessions']:,} to "
             f"{last['sessions']:,} (curve; errors must be 0)",
             f"{last['sessions']:,} sessions: {last['operations_per_s']:,.0f} ops/s, "
             f"{last['messages_per_s']:,.0f} msgs/s, p99 submit "
             f"{last['latency'].get('submit', {}).get('p99_ms', 0):,.0f} ms, ENVS "
             f"{last['latency'].get('envs', {}).get('p99_ms', 0):,.0f} ms; server CPU "
             f"{_fmt(last.get('server_cpu_ms_per_op_with_drain'))} ms/op with the drain "
             f"({_fmt(first.get('server_cpu_ms_per_op_with_drain'))} at {first['sessions']}); "
             f"errors {errors}",
             "curve" if not errors else f"curve; {errors} ERRORS"]]


def sessions_section(data: dict[str, Any]) -> list[str]:
    rows = data.get("points")
    if not rows:
        return []
    setup = data["setup"]
    out = ["## 5. Scaling: concurrent sessions", "",
           "Concurrent user sessions (`bench/sessions.py`; a fresh pair of servers per point, "
           f"all sessions logged in before a {setup['window_s']:.0f} s window; half submit at "
           "a.example, half list, decide and read at b.example; latency p50 / p99 ms):", ""]
    out += _table(["sessions", "ops/s", "msgs/s", "arrived at b /s", "submit", "decide",
                   "STAT", "ENVS",
                   "server CPU ms/op (window / with drain)", "server cores", "client CPU",
                   "peak RSS MiB (a / b)", "queued at end (a / b)", "drain s", "errors"],
                  [[r["sessions"], r["operations_per_s"], r["messages_per_s"],
                    r.get("arrived_at_destination_per_s"), _p(r["latency"], "submit"),
                    _p(r["latency"], "decide"),
                    _p(r["latency"], "stat"), _p(r["latency"], "envs"),
                    f"{_fmt(r['server_cpu_ms_per_op'])} / "
                    f"{_fmt(r.get('server_cpu_ms_per_op_with_drain'))}",
                    r["server_cores_used"], r["client_cpu_share"],
                    f"{r['peak_rss_mib']['origin']:.0f} / {r['peak_rss_mib']['destination']:.0f}",
                    f"{r['queue_at_stop']['origin']} / {r['queue_at_stop']['destination']}",
                    f"{r.get('drain_s', 'n/a')}" + ("" if r.get("drained", True)
                                                    else " (not drained)"),
                    r["error_count"]] for r in rows])
    for r in rows:
        if r["error_count"]:
            out += [f"Errors at {r['sessions']} sessions: {r['errors']}; e.g. "
                    + "; ".join(r["error_samples"][:3]), ""]
    return out


def _ms(r: dict[str, Any]) -> str:
    return f"{r['median_ms']:,.1f} / {r['p95_ms']:,.1f}"


def web_aims(data: dict[str, Any]) -> list[list[str]]:
    """Issue 13 item 7: the web app with 10,000 envelopes (bench/web.py)."""
    if "first_page" not in data:
        return []
    page, decision = data["first_page"]["server"], data["decision"]["server"]
    n = f"{data['envelopes']:,}"
    return [
        ["13 web", f"first page of a {n}-envelope mailbox under "
         f"{data['aims_ms']['first_page']:.0f} ms of server time",
         f"median {page['median_ms']:.1f} ms, p95 {page['p95_ms']:.1f} ms",
         _met(data["met"]["first_page"])],
        ["13 web", f"a decision round trip under {data['aims_ms']['decision']:.0f} ms",
         f"server median {decision['median_ms']:.1f} ms, p95 {decision['p95_ms']:.1f} ms "
         f"(loopback round trip p95 {data['decision']['round_trip']['p95_ms']:.1f} ms)",
         _met(data["met"]["decision"])],
    ]


def web_section(data: dict[str, Any]) -> list[str]:
    if "first_page" not in data:
        return []
    out = ["## The web app (issue 13)", "",
           f"`bench/web.py`: one mailbox of {data['envelopes']:,} pending envelopes; "
           "milliseconds, median / p95, the server's own time (`Server-Timing`) and the "
           "round trip on loopback:", ""]
    names = {"first_page": "first page (50 waiting)", "search_page": "a search (1 in 50)",
             "all_page": "first page of all states", "decision": "one decision (reject)",
             "first_page_after_decisions": "first page after the decisions"}
    out += _table(["request", "count", "server", "round trip"],
                  [[label, data[key]["server"]["count"], _ms(data[key]["server"]),
                    _ms(data[key]["round_trip"])] for key, label in names.items()])
    return out
