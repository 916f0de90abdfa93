"""The origin: what the sender's SMDP server does (assumptions 3, 4, 6; Table 2
origin column; Table 3 sender side).

It holds each submitted message until every recipient has decided, sends one
envelope per destination domain (or the whole message to recipients on the
sender's outbound white list), answers decisions, and serves pulls.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field

from smdp.core import decisions as d
from smdp.core.decisions import SmdpMessage, origin_side
from smdp.core.envelope import encode_envelope_block, extract_envelope
from smdp.core.submission import SubmissionError, prepare_submission, prepare_submission_body
from smdp.mail.body import Body
from smdp.store import Store
from smdp.store.records import OutRecipient, User

log = logging.getLogger("smdp.abuse")


def new_token() -> str:
    """128 random bits in lower-case base32: unguessable ids (contract 2.1)."""
    return base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()


@dataclass(slots=True)
class SubmitResult:
    msgid: str
    queued: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # Table 3: outbound black list
    direct: list[str] = field(default_factory=list)  # Table 3: outbound white list


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    code: int
    text: str
    # Set when the decision is answered with the pull: the stored message
    # whose body follows, and its size. The adapter streams the body from the
    # store a chunk at a time (it is held until RECEIVED, so it stays put).
    pull_message_id: int | None = None
    pull_size: int = 0


class Origin:
    def __init__(self, store: Store, *, hostname: str, expire_days: float,
                 spam_reports_per_day: int = 20) -> None:
        self.store = store
        self.hostname = hostname
        self.expire_seconds = expire_days * 86400.0
        self.spam_reports_per_day = spam_reports_per_day

    # -- submission (section 5.2 steps 1-4) -------------------------------------

    def submit(
        self, user: User, sender: str, recipients: list[str], raw: bytes | Body,
        *, spool_dir: str | None = None,
    ) -> SubmitResult:
        """Store the message durably, then queue its envelopes, in one transaction.

        Raises SubmissionError (assumption 3) before anything is stored. A
        large ``raw`` comes as a file-backed Body and is never read whole.
        """
        suspended = self.store.suspension(user.id)
        if suspended is not None:
            raise SubmissionError(
                f"sending is suspended for this account ({suspended}); "
                "contact your administrator"
            )
        identities = self.store.identities(user.id)
        if isinstance(raw, Body):
            body = prepare_submission_body(
                raw, identities=identities, sender=sender, hostname=self.hostname,
                spool_dir=spool_dir,
            )
        else:
            body = Body.of(prepare_submission(
                raw, identities=identities, sender=sender, hostname=self.hostname
            ))
        summary = extract_envelope(body)
        now = time.time()
        expires = now + self.expire_seconds
        block = encode_envelope_block(
            summary, expires=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        )
        result = SubmitResult(new_token())
        by_domain: dict[tuple[str, str], list[str]] = defaultdict(list)
        with self.store.transaction():
            message_id = self.store.insert_out_message(
                msgid=result.msgid, user_id=user.id, sender=sender, body=body,
                subject=summary.subject, summary=block.decode("utf-8"), expires_at=expires,
            )
            for rcpt in dict.fromkeys(recipients):  # a recipient named twice gets one copy
                domain = rcpt.rpartition("@")[2]
                listed = self.store.outbound_kind(user.id, rcpt)
                if listed == "black":
                    # Table 3, sender side: recipient in the sender's black list:
                    # reject the message, nothing is sent.
                    self.store.insert_out_recipient(
                        message_id, rcpt, domain, d.OUT_REFUSED,
                        None, "refused at the source: recipient is on your black list",
                    )
                    self.store.touch_outbound(user.id, rcpt)
                    result.refused.append(rcpt)
                    continue
                # Table 3, sender side: recipient in the sender's white list:
                # send the entire message directly, no envelope phase.
                mode = "direct" if listed == "white" else "envelope"
                if listed == "white":
                    self.store.touch_outbound(user.id, rcpt)
                    result.direct.append(rcpt)
                by_domain[(domain, mode)].append(rcpt)
                result.queued.append(rcpt)
            for (domain, mode), rcpts in by_domain.items():
                self._queue_envelope(message_id, domain, mode, rcpts)
            if not by_domain:
                self.store.drop_out_body(message_id)
        return result

    def _queue_envelope(
        self, message_id: int, domain: str, mode: str, rcpts: list[str],
        existing: dict[str, OutRecipient] | None = None,
    ) -> str:
        envid = new_token()
        self.store.insert_out_envelope(envid, message_id, domain, mode)
        for rcpt in rcpts:
            if existing and rcpt in existing:
                self.store.update_out_recipient(existing[rcpt].id, d.OUT_QUEUED, "", envid)
            else:
                self.store.insert_out_recipient(message_id, rcpt, domain, d.OUT_QUEUED, envid)
        kind = "send-direct" if mode == "direct" else "send-envelope"
        self.store.enqueue(kind, envid, json.dumps({"envid": envid}))
        return envid

    # -- outcome of sending an envelope or a whole message ----------------------

    def envelope_sent(self, envid: str, refused: dict[str, str],
                      deferred: list[str] | None = None) -> None:
        """The destination stored the envelope; ``refused`` maps recipient -> reply;
        ``deferred`` recipients were not taken this time and get an envelope of
        their own."""
        env = self.store.out_envelope(envid)
        with self.store.transaction():
            rcpts = {r.recipient: r for r in self.store.out_recipients_of_envelope(envid)}
            if deferred and env is not None:
                self._queue_envelope(env.message_id, env.domain, env.mode, deferred, rcpts)
            for r in rcpts.values():
                if r.state != d.OUT_QUEUED or r.recipient in (deferred or ()):
                    continue
                if r.recipient in refused:
                    self.store.update_out_recipient(r.id, d.OUT_FAILED, refused[r.recipient])
                else:
                    self.store.update_out_recipient(r.id, d.OUT_ENVELOPE_SENT)
            self._drop_body_when_done(envid)

    def direct_sent(self, envid: str, delivered: list[str], unauthorized: list[str],
                    refused: dict[str, str], deferred: list[str] | None = None) -> None:
        """The whole message went to ``delivered``; recipients who have not
        authorized the sender fall back to an envelope (contract 2.4)."""
        env = self.store.out_envelope(envid)
        if env is None:
            return
        with self.store.transaction():
            rcpts = {r.recipient: r for r in self.store.out_recipients_of_envelope(envid)}
            for rcpt in delivered:
                if rcpt in rcpts:
                    self.store.update_out_recipient(
                        rcpts[rcpt].id, d.OUT_DELIVERED, "delivered directly (white list)"
                    )
            for rcpt, reply in refused.items():
                if rcpt in rcpts:
                    self.store.update_out_recipient(rcpts[rcpt].id, d.OUT_FAILED, reply)
            fallback = [r for r in unauthorized if r in rcpts]
            if fallback:
                self._queue_envelope(env.message_id, env.domain, "envelope", fallback, rcpts)
            later = [r for r in deferred or () if r in rcpts]
            if later:
                self._queue_envelope(env.message_id, env.domain, "direct", later, rcpts)
            self._drop_body_when_done(envid)

    def delivery_failed(self, envid: str, reason: str) -> None:
        """Permanent failure (or retries exhausted) for every open recipient."""
        with self.store.transaction():
            for r in self.store.out_recipients_of_envelope(envid):
                if r.state == d.OUT_QUEUED:
                    self.store.update_out_recipient(r.id, d.OUT_FAILED, reason)
            self._drop_body_when_done(envid)

    # -- decisions from the destination (Table 2, origin column) -----------------

    def on_decision(
        self, envid: str, recipient: str, message: SmdpMessage, body_held: bool
    ) -> DecisionOutcome:
        env = self.store.out_envelope(envid)
        if env is None:
            return DecisionOutcome(550, f"5.1.0 Unknown envelope {envid}")
        rcpt = next(
            (r for r in self.store.out_recipients_of_envelope(envid) if r.recipient == recipient),
            None,
        )
        if rcpt is None:
            return DecisionOutcome(550, f"5.1.1 <{recipient}> is not a recipient of {envid}")
        msg = self.store.out_message(env.message_id)
        assert msg is not None  # out_envelopes rows cascade with their message
        effect = origin_side(message)
        already_rejected = rcpt.state in d.REJECTED_STATES
        if message.accepts and already_rejected:
            return DecisionOutcome(554, f"5.7.0 {envid} was rejected; message deleted")
        if message.accepts and rcpt.state in (d.OUT_FAILED, "expired"):
            return DecisionOutcome(554, f"5.7.0 {envid} is no longer held: {rcpt.detail}")
        pulling = message.accepts and rcpt.state != d.OUT_DELIVERED and not body_held
        if pulling and not msg.held:
            return DecisionOutcome(554, f"5.7.0 {envid} is no longer held")

        pull = False
        with self.store.transaction():
            if effect.add_to_white_list:
                self.store.put_outbound(msg.user_id, "white", recipient, "auto")
            if effect.add_to_black_list:
                self.store.put_outbound(msg.user_id, "black", recipient, "auto")
            if effect.report_spam:
                self.store.add_spam_report(
                    msg.user_id, msg.sender, recipient, message.value, envid
                )
                self._investigate(msg.user_id)
            if message.accepts:
                if not pulling:
                    new_state, detail = d.OUT_DELIVERED, f"{effect.state} by recipient"
                else:
                    pull = True
                    new_state, detail = effect.state, "transfer in progress"
            else:
                new_state, detail = effect.state, f"{effect.state} by recipient"
            self.store.update_out_recipient(rcpt.id, new_state, detail)
            self._drop_body_when_done(envid)
        if pull:
            return DecisionOutcome(150, f"{msg.size} octets follow", msg.id, msg.size)
        return DecisionOutcome(250, f"2.0.0 {message.value} recorded for <{recipient}>")

    def _investigate(self, user_id: int) -> None:
        """Table 2, SPAM at the origin: "investigate with sender". Past the
        configured rate of SPAM/SPAMMER reports, the sender's sending is
        suspended and the administrator alerted (issue 4, outgoing abuse)."""
        reports = self.store.count_spam_reports(user_id, time.time() - 86400.0)
        if reports < self.spam_reports_per_day or self.store.suspension(user_id):
            return
        user = self.store.user_by_id(user_id)
        reason = f"{reports} spam reports in 24 hours"
        self.store.set_suspension(user_id, reason)
        log.warning("ALERT: sending suspended for %s: %s",
                    user.main_address if user else user_id, reason)

    def on_received(self, envid: str) -> DecisionOutcome:
        """The destination confirms it stored the pulled body (contract 2.5)."""
        if self.store.out_envelope(envid) is None:
            return DecisionOutcome(550, f"5.1.0 Unknown envelope {envid}")
        with self.store.transaction():
            for r in self.store.out_recipients_of_envelope(envid):
                if r.state in ("accepted", "authorized"):
                    self.store.update_out_recipient(
                        r.id, d.OUT_DELIVERED, f"{r.state} by recipient"
                    )
            self._drop_body_when_done(envid)
        return DecisionOutcome(250, f"2.0.0 {envid} transfer confirmed")

    def _drop_body_when_done(self, envid: str) -> None:
        """Assumption 4 and 6: hold the message until every recipient decided."""
        env = self.store.out_envelope(envid)
        if env is None:
            return
        if all(r.state not in d.OUT_NEEDS_BODY for r in self.store.out_recipients(env.message_id)):
            self.store.drop_out_body(env.message_id)
