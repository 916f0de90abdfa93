"""PNG plots of the scaling curves (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def envelope_plot(data: dict[str, Any], out: Path) -> Path | None:
    rows = data.get("size_curve")
    if not rows:
        return None
    kib = [r["message_kib"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(kib, [r["smdp_ms"] for r in rows], "o-", label="smdp extract_envelope")
    left.loglog(kib, [r["email_ms"] for r in rows], "s-", label="email package, full parse")
    left.axhline(1.0, color="grey", linestyle=":", label="aim: 1 ms at 680 KB")
    left.set_xlabel("message size (KiB)")
    left.set_ylabel("time per message (ms)")
    left.set_title("Envelope extraction time")
    left.legend(fontsize=8)
    right.loglog(kib, [r["smdp_peak_kib"] for r in rows], "o-", label="smdp extract_envelope")
    right.loglog(kib, [r["email_peak_kib"] for r in rows], "s-", label="email package")
    right.loglog(kib, kib, color="grey", linestyle=":", label="= message size")
    right.set_xlabel("message size (KiB)")
    right.set_ylabel("peak memory allocated (KiB, tracemalloc)")
    right.set_title("Extra memory while extracting")
    right.legend(fontsize=8)
    return _save(fig, out / "envelope_size.png")


def lists_plot(data: dict[str, Any], out: Path) -> Path | None:
    fig, ax = plt.subplots(figsize=(9, 4.5))
    drawn = False
    for backend, marker in (("sqlite", "o"), ("postgresql", "s")):
        by_size = data.get(backend) or {}
        sizes = sorted(int(k) for k in by_size if k.isdigit())
        if not sizes:
            continue
        for op, style in (("lookup_hit", "-"), ("add_in_txn", "--"), ("add", ":")):
            ax.semilogx(sizes, [by_size[str(n)]["ops"][op]["median_us"] for n in sizes],
                        marker=marker, linestyle=style, label=f"{backend} {op}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_yscale("log")
    ax.axhline(50, color="grey", linestyle=":", label="aim: 50 µs")
    ax.set_xlabel("entries in the user's white list")
    ax.set_ylabel("median latency (µs)")
    ax.set_title("List maintenance: lookup, add (in a transaction / committed)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, out / "lists.png")


def mailbox_plot(data: dict[str, Any], out: Path) -> Path | None:
    rows = data.get("mailbox")
    if not rows:
        return None
    n = [r["envelopes"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = {"login": "login", "stat": "STAT", "envs_page": "ENVS page (100)",
              "list_page": "LIST page (100), first numbered", "list": "LIST (all)",
              "envs": "ENVS (all pending)"}
    for op, label in labels.items():
        if f"{op}_ms" in rows[0]:  # the pages: measured since issue 15
            ax.loglog(n, [r[f"{op}_ms"] for r in rows], "o-", label=label)
    ax.set_xlabel("envelopes in the mailbox (half pending, half accepted)")
    ax.set_ylabel("time per command (ms)")
    ax.set_title("User port cost against mailbox size")
    ax.legend(fontsize=8)
    return _save(fig, out / "mailbox.png")


def message_size_plot(data: dict[str, Any], out: Path) -> Path | None:
    rows = (data.get("message_size") or {}).get("rows")
    if not rows:
        return None
    kib = [r["message_kib"] for r in rows]
    mib = [k / 1024 for k in kib]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.loglog(mib, [max(r["a_peak_growth_mib"], 0.05) for r in rows], "o-",
                label="origin a.example")
    left.loglog(mib, [max(r["b_peak_growth_mib"], 0.05) for r in rows], "s-",
                label="destination b.example")
    left.loglog(mib, mib, color="grey", linestyle=":", label="= message size")
    left.set_xlabel("message size (MiB)")
    left.set_ylabel("server peak RSS growth (MiB, VmHWM; 0 drawn at 0.05)")
    left.set_title("Server memory against message size")
    left.legend(fontsize=8)
    for key, label in (("submit_ms", "submit (user port)"),
                       ("envelope_arrival_ms", "envelope at destination"),
                       ("accept_to_stored_ms", "accept to stored (pull)")):
        right.loglog(mib, [max(r[key], 0.1) for r in rows], "o-", label=label)
    right.set_xlabel("message size (MiB)")
    right.set_ylabel("time (ms)")
    right.set_title("Time against message size")
    right.legend(fontsize=8)
    return _save(fig, out / "message_size.png")


def spam_plot(data: dict[str, Any], out: Path) -> Path | None:
    smdp, smtp = data.get("smdp"), data.get("smtp")
    if not smdp or not smtp:
        return None
    weeks = [w["week"] for w in smdp["weeks"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(weeks, [w["origin_to_destination"] / 1e6 for w in smtp["weeks"]], "s-",
              label="SMTP (aiosmtpd)")
    left.plot(weeks, [w["origin_to_destination"] / 1e6 for w in smdp["weeks"]], "o-",
              label="SMDP")
    left.set_xlabel("simulated week")
    left.set_ylabel("MB from origin to destination (cumulative)")
    left.set_title("Octets on the wire, 80% spam")
    left.legend(fontsize=8)
    right.plot(weeks, [w.get("ham_no_decision_share") for w in smdp["weeks"]], "o-",
               label="all ham")
    right.plot(weeks, [w.get("repeat_ham_no_decision_share") for w in smdp["weeks"]], "s-",
               label="repeat ham")
    right.axhline(0.9, color="grey", linestyle=":", label="aim: 90% of repeat ham")
    right.set_ylim(0, 1.05)
    right.set_xlabel("simulated week")
    right.set_ylabel("share delivered with no decision asked")
    right.set_title("White lists at work")
    right.legend(fontsize=8)
    return _save(fig, out / "spam_weeks.png")


def e2e_plot(data: dict[str, Any], out: Path) -> Path | None:
    smdp, smtp, pf = data.get("smdp") or {}, data.get("aiosmtpd") or {}, data.get("postfix") or {}
    sizes = [s for s in ("4k", "700k") if s in smdp and s in smtp]
    if not sizes:
        return None
    fig, axes = plt.subplots(1, 2 * len(sizes), figsize=(5 * len(sizes) + 2, 4.5))
    for i, size in enumerate(sizes):
        labels, rate, cpu = [], [], []
        for path in ("full", "direct", "reject"):
            run = smdp[size][path]["saturated"]
            labels.append(f"SMDP\n{path}")
            rate.append(run["mb_per_s"] if size == "700k" else run["msgs_per_s"])
            cpu.append(run["cpu_ms_per_msg"]["total"])
        run = smtp[size]["saturated"]
        labels.append("aiosmtpd\n+fsync")
        rate.append(run["mb_per_s"] if size == "700k" else run["msgs_per_s"])
        cpu.append(run["cpu_ms_per_msg"])
        if size in pf:
            labels.append("Postfix\nrelay")
            rate.append(pf[size]["mb_per_s"] if size == "700k" else pf[size]["msgs_per_s"])
            cpu.append(pf[size]["cpu_ms_per_msg"])
        colors = ["tab:blue"] * 3 + ["tab:orange", "tab:green"][: len(labels) - 3]
        left, right = axes[2 * i], axes[2 * i + 1]
        left.bar(labels, rate, color=colors)
        left.set_ylabel("MB/s" if size == "700k" else "messages/s")
        left.set_title(f"{size}: throughput")
        right.bar(labels, cpu, color=colors)
        right.set_ylabel("ms (sum of the server processes)")
        right.set_title(f"{size}: server CPU per message")
        for ax in (left, right):
            ax.tick_params(axis="x", labelsize=7)
    return _save(fig, out / "e2e.png")


OP_LABELS = {"submit": "submit (a.example)", "decide": "decide (b.example)",
             "stat": "STAT (b.example)", "envs": "ENVS (b.example)"}


def sessions_plot(data: dict[str, Any], out: Path) -> Path | None:
    rows = data.get("points")
    if not rows:
        return None
    n = [r["sessions"] for r in rows]
    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(14, 4.2))
    left.loglog(n, [r["operations_per_s"] for r in rows], "o-", label="user-port operations/s")
    left.loglog(n, [r["messages_per_s"] for r in rows], "s-", label="messages submitted/s")
    if all(r.get("arrived_at_destination_per_s") for r in rows):
        left.loglog(n, [r["arrived_at_destination_per_s"] for r in rows], "^--",
                    label="envelopes arrived at b.example/s")
    left.set_xlabel("concurrent user sessions")
    left.set_ylabel("per second (window)")
    left.set_title("Throughput against sessions")
    left.legend(fontsize=8)
    for op, label in OP_LABELS.items():
        points = [(r["sessions"], r["latency"][op]["p99_ms"]) for r in rows
                  if op in r["latency"]]
        if points:
            mid.loglog([x for x, _ in points], [max(y, 0.1) for _, y in points], "o-",
                       label=label)
    mid.set_xlabel("concurrent user sessions")
    mid.set_ylabel("p99 latency (ms)")
    mid.set_title("p99 latency against sessions")
    mid.legend(fontsize=8)
    right.semilogx(n, [r["server_cpu_ms_per_op"] or 0 for r in rows], "o-", color="tab:red",
                   label="server CPU ms/op, window")
    if all("server_cpu_ms_per_op_with_drain" in r for r in rows):
        right.semilogx(n, [r["server_cpu_ms_per_op_with_drain"] or 0 for r in rows], "o:",
                       color="tab:purple", label="server CPU ms/op, with the drain")
    right.set_xlabel("concurrent user sessions")
    right.set_ylabel("CPU ms per operation", color="tab:red")
    rss = right.twinx()
    rss.semilogx(n, [r["peak_rss_mib"]["origin"] for r in rows], "s--", color="tab:blue",
                 label="origin peak RSS")
    rss.semilogx(n, [r["peak_rss_mib"]["destination"] for r in rows], "^--",
                 color="tab:green", label="destination peak RSS")
    rss.set_ylabel("peak RSS (MiB, VmHWM)")
    right.set_ylim(bottom=0)
    right.set_title("Server CPU per operation (both) and memory")
    lines = right.get_legend_handles_labels()
    more = rss.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    return _save(fig, out / "sessions.png")


_STANDING_COLOURS = {"new": "#dddddd", "ok": "#d8f0d8", "alert": "#fde9b8",
                     "blocked": "#f6c6c6"}


def _quality_panel(ax: Any, series: list[dict[str, Any]], key: str, title: str,
                   label: str, shade: bool = True) -> None:
    """Quality(X) of ``key`` over simulated days, the thresholds, and the
    standing the server gave each reading as the background."""
    points = [p for p in series if p["key"] == key]
    if not points:
        return
    days = [p["day"] for p in points]
    for i, p in enumerate(points if shade else []):
        end = days[i + 1] if i + 1 < len(days) else days[i] + 0.5
        ax.axvspan(days[i], end, color=_STANDING_COLOURS.get(p["standing"], "white"),
                   linewidth=0)
    ax.plot(days, [p["value"] for p in points], "o-", markersize=3, label=label)
    for level, style in ((0.0, ":"), (-0.5, "--"), (0.1, ":"), (-0.4, "--")):
        ax.axhline(level, color="grey", linestyle=style, linewidth=0.7)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("simulated day")
    ax.set_ylabel("Quality(X), aged")
    ax.set_title(title, fontsize=9)


def quality_plot(data: dict[str, Any], out: Path) -> Path | None:
    """Issue 16 item 1: the four scenarios of bench/quality.py."""
    if "flood" not in data:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    host = "smdp.a.example"
    _quality_panel(axes[0][0], data["flood"]["series"], host,
                   "A flood: spam from 3 senders to 3 users, hourly, 3 days", host)
    poison = data["slow_poisoning"]
    _quality_panel(axes[0][1], poison["series"], host,
                   "Slow poisoning: one user rejects 16 a day, 4 accept", host)
    days = [p["day"] for p in poison["series"] if p["key"] == host]
    for mark, standing in (("^", "alert"), ("x", "blocked")):
        hits = [d for d, s in zip(days, poison["paper_rule"], strict=False) if s == standing]
        if hits:
            axes[0][1].plot(hits, [-0.95] * len(hits), mark, color="red",
                            label=f"the paper's rule alone: {standing}")
    _quality_panel(axes[1][0], data["recovery"]["series"], host,
                   "Recovery: blocked, then only wanted mail (probation 3/day)", host)
    comp = data["compromised_account"]
    _quality_panel(axes[1][1], comp["series"], comp["sender_key"],
                   "Compromised account (background: mallory's standing)",
                   "mallory@a.example")
    _quality_panel(axes[1][1], comp["series"], host,
                   "Compromised account (background: mallory's standing)",
                   "the server (ok throughout)", shade=False)
    taken = data["flood"].get("taken_per_round") or []
    if taken:
        more = axes[0][0].twinx()
        rounds = [n / 24 for n in range(len(taken))]
        total = [sum(taken[: n + 1]) for n in range(len(taken))]
        more.step(rounds, total, where="post", color="black", linewidth=0.8,
                  label="envelopes taken (cumulative)")
        more.set_ylabel("envelopes taken", fontsize=8)
        more.legend(fontsize=7, loc="center right")
    for ax in axes.flat:
        ax.legend(fontsize=7, loc="lower left")
    return _save(fig, out / "quality.png")


def draw_all(results: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made: list[Path | None] = []
    if "envelopes" in results:
        made.append(envelope_plot(results["envelopes"], out))
    if "lists" in results:
        made.append(lists_plot(results["lists"], out))
    if "scaling" in results:
        made.append(mailbox_plot(results["scaling"], out))
        made.append(message_size_plot(results["scaling"], out))
    if "sessions" in results:
        made.append(sessions_plot(results["sessions"], out))
    if "spam" in results:
        made.append(spam_plot(results["spam"], out))
    if "e2e" in results:
        made.append(e2e_plot(results["e2e"], out))
    if "quality" in results:
        made.append(quality_plot(results["quality"], out))
    return [p for p in made if p is not None]
