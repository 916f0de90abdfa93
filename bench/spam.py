"""Issue 5 item 4: spam stays home.

A mix of 80% spam and 20% ham from the corpus goes from a.example to
b.example, two real ``smdp serve`` processes on loopback with SQLite stores.
Simulated recipients at b.example decide by the corpus label: spam is rejected
(REJECT&SPAM, or REJECT&SPAMMER 30% of the time), ham accepted (ACCEPT&AUTH
with probability 0.3 the first time a recipient hears from a sender, 0.8 on
later messages, else ACCEPT).

Senders are accounts at a.example (the origin writes From itself, assumption
3): each corpus From address is hashed to one of a few ham accounts
(``friendN``), each of which writes to one b.example user, or to one of
many spam accounts (``bulkN``), which write to any user. The recipients tell
ham from spam by the sender account, which stands for the corpus label.

Counting relays on 127.0.0.1 sit on both peer connections (a.example's peer
map points at one, b.example's at the other), so the octets that cross from
origin to destination are counted on the sockets: envelopes and direct sends
on a's connections, pulled bodies on b's. In the same run the same messages
(same bytes) go over SMTP to an aiosmtpd server behind the same kind of relay:
the baseline, in which every message crosses and is stored.

The mix is sent in batches ("weeks"); after each, the recipients decide what
is pending and the pulls finish. Reported per week: octets each way, and the
share of ham delivered with no decision asked (white lists at work, either
side of Table 3).

Last, the quality indicator (section 5.3): a fresh pair in which a.example
sends 90% spam, with ``[quality] min_messages = 10, block_below = -0.5`` at
b.example; recipients decide when their backlog exceeds a lag of 0, 10 or 25
envelopes. Reported: how many envelopes b.example stored before it answered
554 to the spamming peer.
"""

from __future__ import annotations

import random
import smtplib
import sqlite3
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from tests.integration.harness import Server, free_ports, make_pair, running, wait_until

from bench.common import Settings, corpus_files, corpus_note, ratio, to_wire
from bench.relay import CountingRelay
from smdp.client.session import ClientError, UserClient
from smdp.core.submission import SubmissionError, prepare_submission
from smdp.mail.mime import scan_header
from smdp.protocol import user as wire
from smdp.terms import Decision

# Section 5.3 alone, as before issue 16 item 1: counters that never age, no
# rejecting users needed, no hysteresis, no probation (docs/protocol.md 11.3).
PAPER_QUALITY = ("[quality]\nhalf_life = \"never\"\nmin_deciders = 0\nmargin = 0\n"
                 "probation_per_day = 0\n")

SEED = 4
A_HOST = "smdp.a.example"
_AUTHOR_FIELDS = frozenset({"from", "sender", "resent-from", "resent-sender", "bcc"})
MAX_LINE = 990  # data lines at most 1000 octets with CRLF (and a stuffed dot)


@dataclass
class Mail:
    label: str  # "ham" or "spam"
    name: str
    account: str
    recipient: str
    data: bytes
    week: int = 0
    repeat: bool = False  # ham from a (sender, recipient) pair seen before
    msgid: str = ""
    submit_reply: str = ""


@dataclass
class Population:
    ham_accounts: list[str]
    spam_accounts: list[str]
    recipients: list[str]


def _from_key(data: bytes) -> int:
    block = scan_header(data, keep=frozenset({"from"}), limit=256 * 1024)
    value = block.fields[0].value if block.fields else b""
    return zlib.crc32(value.strip().lower())


def _rewrite(data: bytes, account: str) -> bytes | None:
    """The corpus message as the account submits it: author fields gone, From its own.

    None when the origin would refuse it (a line too long, control characters
    in the header, ...): checked with the server's own ``prepare_submission``.
    """
    block = scan_header(data, limit=1024 * 1024)
    if block.truncated:
        return None
    cut = bytearray()
    pos = 0
    for f in block.fields:
        if f.key in _AUTHOR_FIELDS:
            cut += data[pos:f.start]
            pos = f.end
    cut += data[pos:]
    raw = b"From: " + account.encode() + b"\r\n" + bytes(cut)
    try:
        prepared = prepare_submission(raw, identities=[account], sender=account,
                                      hostname=A_HOST)
    except (SubmissionError, ValueError):
        return None
    if any(len(line) > MAX_LINE for line in prepared.split(b"\r\n")):
        return None
    return prepared


def select_mix(corpus: Path, total: int, spam_share: float, pop: Population,
               rng: random.Random) -> list[Mail]:
    """``total`` corpus messages, ``spam_share`` of them spam, in a seeded random order."""
    files = corpus_files(corpus)
    by_label: dict[str, list[Path]] = defaultdict(list)
    for label, path in files:
        by_label[label].append(path)
    want = {"spam": round(total * spam_share), "ham": total - round(total * spam_share)}
    mails: list[Mail] = []
    for label in ("ham", "spam"):
        paths = by_label[label][:]
        rng.shuffle(paths)
        taken = 0
        for path in paths:
            if taken >= want[label]:
                break
            data = to_wire(path.read_bytes())
            key = _from_key(data)
            if label == "ham":
                index = key % len(pop.ham_accounts)
                account = pop.ham_accounts[index]
                recipient = pop.recipients[index % len(pop.recipients)]
            else:
                account = pop.spam_accounts[key % len(pop.spam_accounts)]
                recipient = rng.choice(pop.recipients)
            prepared = _rewrite(data, account)
            if prepared is None:
                continue
            mails.append(Mail(label, str(path.relative_to(corpus)), account, recipient,
                              prepared))
            taken += 1
    rng.shuffle(mails)
    seen: set[tuple[str, str]] = set()
    for mail in mails:
        pair = (mail.account, mail.recipient)
        mail.repeat = mail.label == "ham" and pair in seen
        seen.add(pair)
    return mails


# ---------------------------------------------------------------------------
# Recipients


@dataclass
class Recipients:
    """The simulated recipients at b.example: they decide by the sender's class."""

    rng: random.Random
    ham_accounts: frozenset[str]
    known: set[tuple[str, str]] = field(default_factory=set)
    decisions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Pairs the recipient put on a list (ACCEPT&AUTH: white, REJECT&SPAMMER:
    # black). Table 3 says their later mail needs no decision, so asking
    # again would be a defect of the servers, not of the simulated people.
    listed: set[tuple[str, str]] = field(default_factory=set)
    asked_again: int = 0

    def option(self, user: str, sender: str) -> Decision:
        pair = (user, sender)
        if pair in self.listed:
            self.asked_again += 1
        if sender in self.ham_accounts:
            p_auth = 0.8 if pair in self.known else 0.3
            self.known.add(pair)
            choice = (Decision.ACCEPT_AUTH if self.rng.random() < p_auth
                      else Decision.ACCEPT)
        else:
            choice = (Decision.REJECT_SPAMMER if self.rng.random() < 0.3
                      else Decision.REJECT_SPAM)
        if choice in (Decision.ACCEPT_AUTH, Decision.REJECT_SPAMMER):
            self.listed.add(pair)
        return choice

    def decide_pending(self, b: Server, users: list[str]) -> int:
        done = 0
        for user in users:
            c = b.client(user)
            try:
                lines = c.call(wire.Envs(False)).lines or []
                while lines:
                    entry, _state, sender = lines.pop(0).split(" ", 3)[:3]
                    option = self.option(user, sender)
                    try:
                        c.call(wire.UserDecision(option, int(entry)))
                    except ClientError as exc:
                        if "already" not in str(exc):
                            raise
                    self.decisions[wire.DECISION_VERBS[option]] += 1
                    done += 1
                    if option in (Decision.ACCEPT_AUTH, Decision.REJECT_SPAMMER):
                        # The list settled this sender's other pending envelopes:
                        # look again, as a reader's screen would.
                        lines = c.call(wire.Envs(False)).lines or []
            finally:
                c.quit()
        return done

    def pending(self, b: Server) -> int:
        return int(b.query("SELECT COUNT(*) FROM mailbox WHERE state='pending'")[0][0])


def _queues_empty(*servers: Server) -> bool:
    return all(s.query("SELECT COUNT(*) FROM queue")[0][0] == 0 for s in servers)


MAX_SESSIONS = 20  # below the server's default cap of 50 sessions per client address


def _submit(clients: dict[str, UserClient], a: Server, mail: Mail) -> None:
    """Submit over the account's session (kept open; the oldest closed beyond 20)."""
    c = clients.pop(mail.account, None)
    if c is None:
        if len(clients) >= MAX_SESSIONS:
            clients.pop(next(iter(clients))).quit()
        c = a.client(mail.account)
    clients[mail.account] = c
    reply = c.submit([mail.recipient], mail.data)
    mail.submit_reply = reply
    mail.msgid = reply.split("queued as ")[1].split()[0]


# ---------------------------------------------------------------------------
# The mix, over SMDP and over SMTP


# No quality verdict in the mix (min_messages out of reach): an 80% spam mix
# would get a.example blocked, which is measured separately. Quality never
# blocks here (this run measures bytes, not blocking), and the flood quotas
# sit above the replay's volume: it replays weeks in seconds.
_MIX_LIMITS = ("[quality]\nmin_messages = 1000000000\n"
               "[abuse]\nenvelopes_per_new_peer_per_hour = 1000000\n"
               "envelopes_per_recipient_per_hour = 1000000\n")


def _smdp_mix(root: Path, mails: list[Mail], weeks: int, pop: Population,
              timeout: float) -> dict[str, Any]:
    a, b = make_pair(root, extra_b=_MIX_LIMITS, backend="sqlite")
    to_b = CountingRelay(b.peer_port).start()
    to_a = CountingRelay(a.peer_port).start()
    try:
        a.peers = {"b.example": (b.hostname, to_b.port)}
        b.peers = {"a.example": (a.hostname, to_a.port)}
        a.write_config()
        b.write_config()
        for account in pop.ham_accounts + pop.spam_accounts:
            a.add_user(account)
        for user in pop.recipients:
            b.add_user(user)
        recipients = Recipients(random.Random(SEED), frozenset(pop.ham_accounts))
        per_week: list[dict[str, Any]] = []
        with running(a, b):
            started = time.monotonic()
            for week in range(weeks):
                batch = [m for m in mails if m.week == week]
                clients: dict[str, UserClient] = {}
                try:
                    for mail in batch:
                        _submit(clients, a, mail)
                finally:
                    for c in clients.values():
                        c.quit()
                wait_until(lambda: _queues_empty(a), timeout, "envelopes sent")
                for _ in range(3):
                    recipients.decide_pending(b, pop.recipients)
                    wait_until(lambda: _queues_empty(a, b), timeout, "decisions and pulls")
                    if recipients.pending(b) == 0:
                        break
                per_week.append({"week": week + 1, "messages": len(batch),
                                 "origin_to_destination": to_b.up + to_a.down,
                                 "destination_to_origin": to_b.down + to_a.up})
            elapsed = time.monotonic() - started
            out_rows = a.query(
                "SELECT m.msgid, r.recipient, r.state, e.mode FROM out_messages m "
                "JOIN out_recipients r ON r.message_id = m.id "
                "LEFT JOIN out_envelopes e ON e.envid = r.envid")
            in_rows = b.query(
                "SELECT e.envid, m.state, m.reason FROM mailbox m "
                "JOIN in_envelopes e ON e.id = m.envelope_id")
            env_of = dict(a.query("SELECT m.msgid, e.envid FROM out_envelopes e "
                                  "JOIN out_messages m ON m.id = e.message_id "
                                  "ORDER BY e.rowid"))
            stored = b.query(
                "SELECT COUNT(*), "
                "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM in_body_chunks), "
                "COALESCE(SUM(LENGTH(block)), 0), "
                "COALESCE(SUM(has_body), 0) FROM in_envelopes")[0]
            quality = b.query("SELECT messages, votes FROM peer_quality "
                              "WHERE server NOT LIKE 'sender:%'")
        db_octets = sum(p.stat().st_size for p in root.glob("b.example.sqlite3*"))
    finally:
        to_b.stop()
        to_a.stop()
    # Per message: how it ended, and whether its recipient was asked.
    state = {m: (s, mode) for m, _r, s, mode in out_rows}
    at_b = {envid: (s, reason) for envid, s, reason in in_rows}
    outcome: dict[str, dict[str, int]] = {"ham": defaultdict(int), "spam": defaultdict(int)}
    weekly_ham: list[dict[str, int]] = [defaultdict(int) for _ in range(weeks)]
    for mail in mails:
        origin_state, mode = state.get(mail.msgid, ("missing", None))
        dest = at_b.get(env_of.get(mail.msgid, ""), (None, ""))
        if origin_state == "refused":
            kind = "refused at the source (sender's black list)"
        elif mode == "direct":
            kind = "sent directly (sender's white list)"
        elif dest[1].startswith("sender is on your white list"):
            kind = "accepted by the recipient's white list"
        elif dest[1].startswith("sender is on your black list"):
            kind = "rejected by the recipient's black list"
        elif dest[1] == "your decision":
            kind = "decided by the recipient"
        else:
            kind = f"other: {origin_state}/{dest[0]}"
        outcome[mail.label][kind] += 1
        if mail.label == "ham":
            w = weekly_ham[mail.week]
            auto = kind in ("sent directly (sender's white list)",
                            "accepted by the recipient's white list")
            w["ham"] += 1
            w["ham_auto"] += auto
            w["repeat"] += mail.repeat
            w["repeat_auto"] += mail.repeat and auto
            w["delivered"] += origin_state == "delivered"
    for summary, row in zip(per_week, weekly_ham, strict=True):
        summary |= dict(row)
        summary["ham_no_decision_share"] = ratio(row["ham_auto"], row["ham"], 3)
        summary["repeat_ham_no_decision_share"] = ratio(row["repeat_auto"], row["repeat"], 3)
    return {
        "elapsed_s": round(elapsed, 1),
        "origin_to_destination_octets": to_b.up + to_a.down,
        "destination_to_origin_octets": to_b.down + to_a.up,
        "peer_connections": to_b.connections + to_a.connections,
        "stored_at_destination": {"envelopes": stored[0], "bodies": stored[3],
                                  "body_octets": stored[1], "envelope_block_octets": stored[2],
                                  "octets": stored[1] + stored[2],
                                  "sqlite_file_octets": db_octets},
        "outcomes": {k: dict(v) for k, v in outcome.items()},
        "decisions": dict(recipients.decisions),
        "asked_again_after_listing": recipients.asked_again,
        "peer_quality_at_b": [list(r) for r in quality],
        "weeks": per_week,
    }


def _mx_mix(root: Path, mails: list[Mail], weeks: int, pop: Population) -> dict[str, Any]:
    """The same mix arriving by SMTP at b.example's MX (issue 12 item 7), a
    ``smdp serve`` process with its own sender authentication (``[smtp]
    sender_auth``, on by default) asking a stand-in DNS on loopback. Each
    message is sent by its account from 127.0.0.1, which a.example's SPF
    record allows, with a DMARC record for a.example, so that its From is
    verified and a white or black list of the recipient applies to it (Table 3
    for SMTP mail, docs/smtp.md). The same recipients decide what is held."""
    from tests.integration.auth_dns import publish_dmarc, publish_spf
    from tests.integration.faults import StandInDns

    with StandInDns() as dns:
        publish_spf(dns, "a.example")
        publish_dmarc(dns, "a.example", "v=DMARC1; p=none")
        peer, user, mx_port = free_ports(3)
        b = Server("b.example", "smdp.b.example", root, peer, user, dns.config + _MIX_LIMITS,
                   backend="sqlite", mx_port=mx_port)
        b.write_config()
        for address in pop.recipients:
            b.add_user(address)
        db = b.db_path
        b.start()
        recipients = Recipients(random.Random(SEED), frozenset(pop.ham_accounts))
        per_week: list[dict[str, Any]] = []
        kinds: dict[str, dict[str, int]] = {"ham": defaultdict(int), "spam": defaultdict(int)}
        received = 0
        started = time.monotonic()
        store = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30,
                                isolation_level=None)
        try:
            last = 0
            for week in range(weeks):
                row: dict[str, Any] = defaultdict(int)
                row["week"] = week + 1
                with smtplib.SMTP("127.0.0.1", mx_port, local_hostname="mx.a.example",
                                  timeout=30) as smtp:
                    for mail in (m for m in mails if m.week == week):
                        try:
                            smtp.sendmail(mail.account, [mail.recipient], mail.data)
                        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
                            kind = "refused (recipient's black list)"
                        else:
                            received += len(mail.data)
                            new = store.execute(
                                "SELECT id, state, reason FROM mailbox WHERE id > ? "
                                "ORDER BY id", (last,)).fetchall()
                            last = new[-1][0] if new else last
                            kind = ("delivered by the recipient's white list"
                                    if any(st == "accepted" for _i, st, _r in new)
                                    else "held for a decision")
                        kinds[mail.label][kind] += 1
                        if mail.label == "ham":
                            auto = kind.startswith("delivered")
                            row["ham"] += 1
                            row["ham_auto"] += auto
                            row["repeat"] += mail.repeat
                            row["repeat_auto"] += mail.repeat and auto
                # Before anyone decides: what the week's held mail occupies.
                row["held_body_octets"] = store.execute(
                    "SELECT COALESCE(SUM(LENGTH(data)), 0) FROM in_body_chunks WHERE "
                    "envelope_id IN (SELECT envelope_id FROM mailbox WHERE state = 'pending')"
                ).fetchone()[0]
                for _ in range(3):
                    recipients.decide_pending(b, pop.recipients)
                    if _pending(store) == 0:
                        break
                row["ham_no_decision_share"] = ratio(row["ham_auto"], row["ham"], 3)
                row["repeat_ham_no_decision_share"] = ratio(row["repeat_auto"],
                                                            row["repeat"], 3)
                row["received_octets"] = received
                per_week.append(dict(row))
            elapsed = time.monotonic() - started
            stored = store.execute(
                "SELECT COUNT(*), (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM in_body_chunks), "
                "COALESCE(SUM(LENGTH(block)), 0), COALESCE(SUM(has_body), 0) "
                "FROM in_envelopes").fetchone()
        finally:
            store.close()
            b.stop()
    return {
        "elapsed_s": round(elapsed, 1),
        "origin_to_destination_octets": received,
        "stored_at_destination": {"envelopes": stored[0], "bodies": stored[3],
                                  "body_octets": stored[1], "envelope_block_octets": stored[2],
                                  "octets": stored[1] + stored[2],
                                  "peak_held_body_octets": max(
                                      (w["held_body_octets"] for w in per_week), default=0)},
        "outcomes": {k: dict(v) for k, v in kinds.items()},
        "decisions": dict(recipients.decisions),
        "asked_again_after_listing": recipients.asked_again,
        "weeks": per_week,
    }


def _pending(store: sqlite3.Connection) -> int:
    return int(store.execute("SELECT COUNT(*) FROM mailbox WHERE state='pending'").fetchone()[0])


class _Sink:
    """An aiosmtpd handler that keeps nothing but counts what it would store."""

    def __init__(self) -> None:
        self.messages = 0
        self.octets = 0

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        self.messages += 1
        self.octets += len(content)
        return "250 2.0.0 OK"


def _smtp_mix(mails: list[Mail], weeks: int) -> dict[str, Any]:
    sink = _Sink()
    port = free_ports(1)[0]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    counter = CountingRelay(port).start()
    per_week = []
    try:
        for week in range(weeks):
            with smtplib.SMTP("127.0.0.1", counter.port, local_hostname="mx.a.example",
                              timeout=30) as smtp:
                for mail in mails:
                    if mail.week == week:
                        smtp.sendmail(mail.account, [mail.recipient], mail.data)
            per_week.append({"week": week + 1, "origin_to_destination": counter.up,
                             "destination_to_origin": counter.down})
        time.sleep(0.2)  # the relay's last reads
    finally:
        counter.stop()
        controller.stop()
    return {"origin_to_destination_octets": counter.up,
            "destination_to_origin_octets": counter.down,
            "stored_at_destination": {"messages": sink.messages, "octets": sink.octets},
            "weeks": per_week}


# ---------------------------------------------------------------------------
# Section 5.3: a spamming peer against the quality threshold


def _spamming_peer(root: Path, mails: list[Mail], pop: Population, lag: int,
                   limit: int) -> dict[str, Any]:
    # Flood quotas out of reach: this part measures the quality block alone.
    a, b = make_pair(root, extra_b=PAPER_QUALITY + "min_messages = 10\nblock_below = -0.5\n"
                     "[abuse]\nenvelopes_per_new_peer_per_hour = 1000000\n"
                     "envelopes_per_recipient_per_hour = 1000000\n", backend="sqlite")
    for account in pop.ham_accounts + pop.spam_accounts:
        a.add_user(account)
    for user in pop.recipients:
        b.add_user(user)
    recipients = Recipients(random.Random(SEED + lag), frozenset(pop.ham_accounts))
    sent = 0
    blocked_at: int | None = None
    clients: dict[str, UserClient] = {}
    with running(a, b):
        try:
            for mail in mails[:limit]:
                _submit(clients, a, mail)
                sent += 1

                def settled(msgid: str = mail.msgid) -> list[tuple[Any, ...]]:
                    return [r for r in a.query(
                        "SELECT r.state, r.detail FROM out_recipients r JOIN out_messages m "
                        "ON m.id = r.message_id WHERE m.msgid=?", (msgid,))
                        if r[0] != "queued"]

                [(state, detail)] = wait_until(settled, 30, "the envelope's fate")
                if state == "failed" and "blocked" in detail:
                    blocked_at = sent
                    break
                if recipients.pending(b) > lag:
                    recipients.decide_pending(b, pop.recipients)
        finally:
            for c in clients.values():
                c.quit()
        through = b.query("SELECT COUNT(*) FROM in_envelopes WHERE origin_server=?",
                          (A_HOST,))[0][0]
        quality = b.query("SELECT messages, votes FROM peer_quality WHERE server=?",
                          (A_HOST,))
    spam_through = sum(1 for m in mails[:sent] if m.label == "spam")
    return {"decision_lag_envelopes": lag, "submitted": sent,
            "spam_share_submitted": ratio(spam_through, sent, 2),
            "envelopes_through_before_block": through if blocked_at else None,
            "blocked": blocked_at is not None,
            "quality_at_block": ratio(quality[0][1], quality[0][0], 2) if quality else None,
            "messages_votes": list(quality[0]) if quality else None}


# ---------------------------------------------------------------------------


def _population(settings: Settings) -> Population:
    ham = settings.pick(30, 60)
    spam = settings.pick(80, 150)
    users = settings.pick(8, 10)
    return Population([f"friend{i}@a.example" for i in range(ham)],
                      [f"bulk{i}@a.example" for i in range(spam)],
                      [f"user{i}@b.example" for i in range(users)])


def run(settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = {
        "aims": {"smdp_share_of_smtp_octets_at_most": 0.25,
                 "repeat_ham_no_decision_after_warmup_at_least": 0.90,
                 "spamming_peer_blocked_within_envelopes": 50},
    }
    note = corpus_note(settings.corpus)
    if note:
        result["skipped"] = note
        return result
    total = settings.pick(1000, 2250)  # the corpus has 1,872 usable spam messages
    weeks = settings.pick(10, 12)
    warmup = max(1, weeks // 4)
    pop = _population(settings)
    rng = random.Random(SEED)
    mails = select_mix(settings.corpus, total, 0.8, pop, rng)
    for i, mail in enumerate(mails):
        mail.week = i * weeks // len(mails)
    result["mix"] = {"messages": len(mails), "spam": sum(m.label == "spam" for m in mails),
                     "ham": sum(m.label == "ham" for m in mails),
                     "repeat_ham": sum(m.repeat for m in mails),
                     "octets": sum(len(m.data) for m in mails), "weeks": weeks,
                     "warmup_weeks": warmup, "ham_accounts": len(pop.ham_accounts),
                     "spam_accounts": len(pop.spam_accounts),
                     "recipients": len(pop.recipients)}
    with tempfile.TemporaryDirectory(prefix="smdp-bench-spam-") as tmp:
        root = Path(tmp)
        (root / "mix").mkdir()
        smdp = _smdp_mix(root / "mix", mails, weeks, pop, timeout=settings.pick(120, 600))
        smtp = _smtp_mix(mails, weeks)
        result["smdp"] = smdp
        result["smtp"] = smtp
        (root / "mx").mkdir()
        try:
            mx = _mx_mix(root / "mx", mails, weeks, pop)
        except Exception as exc:  # the other parts' figures stand
            mx = {"error": repr(exc)}
        result["mx"] = mx
        if "weeks" in mx:
            after_mx = [w for w in mx["weeks"] if w["week"] > warmup]
            result["mx_after_warmup"] = {
                "ham": sum(w.get("ham", 0) for w in after_mx),
                "ham_no_decision_share": ratio(sum(w.get("ham_auto", 0) for w in after_mx),
                                               sum(w.get("ham", 0) for w in after_mx), 3),
                "repeat_ham": sum(w.get("repeat", 0) for w in after_mx),
                "repeat_ham_no_decision_share": ratio(
                    sum(w.get("repeat_auto", 0) for w in after_mx),
                    sum(w.get("repeat", 0) for w in after_mx), 3),
            }
        result["smdp_over_smtp"] = {
            "origin_to_destination": ratio(smdp["origin_to_destination_octets"],
                                           smtp["origin_to_destination_octets"], 3),
            "both_directions": ratio(
                smdp["origin_to_destination_octets"] + smdp["destination_to_origin_octets"],
                smtp["origin_to_destination_octets"] + smtp["destination_to_origin_octets"], 3),
            "stored_at_destination": ratio(smdp["stored_at_destination"]["octets"],
                                           smtp["stored_at_destination"]["octets"], 3),
        }
        after = [w for w in smdp["weeks"] if w["week"] > warmup]
        result["after_warmup"] = {
            "ham": sum(w.get("ham", 0) for w in after),
            "ham_no_decision_share": ratio(sum(w.get("ham_auto", 0) for w in after),
                                           sum(w.get("ham", 0) for w in after), 3),
            "repeat_ham": sum(w.get("repeat", 0) for w in after),
            "repeat_ham_no_decision_share": ratio(sum(w.get("repeat_auto", 0) for w in after),
                                                  sum(w.get("repeat", 0) for w in after), 3),
        }
        # The spamming peer: 90% spam, in the mix's order.
        spam = [m for m in mails if m.label == "spam"]
        ham = [m for m in mails if m.label == "ham"]
        stream = []
        for i in range(min(len(spam), 9 * len(ham), 90)):
            stream.append(spam[i])
            if i % 9 == 8:
                stream.append(ham[i // 9])
        peers = []
        for lag in (0, 10, 25):
            folder = root / f"peer-lag-{lag}"
            folder.mkdir()
            peers.append(_spamming_peer(folder, stream, pop, lag, limit=len(stream)))
        result["spamming_peer"] = {"spam_share": 0.9, "min_messages": 10, "block_below": -0.5,
                                   "runs": peers}
    return result
