"""The origin: what the sender's SMDP server does (assumptions 3, 4, 6; Table 2
origin column; Table 3 sender side).

It holds each submitted message until every recipient has decided, sends one
envelope per destination domain (or the whole message to recipients on the
sender's outbound white list), answers decisions, and serves pulls.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from smdp.core import decisions as d
from smdp.core.decisions import origin_side
from smdp.core.destination import deliver_notice
from smdp.core.envelope import encode_envelope_block, extract_envelope, new_token
from smdp.core.groups import expand
from smdp.core.jobs import queue_send
from smdp.core.notices import FailedRecipient, build_dsn, failure_of, header_of
from smdp.core.outcomes import DecisionOutcome, Kind, Outcome
from smdp.core.submission import SubmissionError, prepare_submission, prepare_submission_body
from smdp.mail.addresses import domain_of
from smdp.mail.body import Body
from smdp.mail.trace import client_name, received_field
from smdp.store import Store
from smdp.store.records import OutEnvelope, OutRecipient, User
from smdp.terms import Decision, DeliveryMode, ListedBy, ListKind, RecipientState, RouteKind

log = logging.getLogger("smdp.abuse")


@dataclass(slots=True)
class SubmitResult:
    msgid: str
    queued: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # Table 3: outbound black list
    direct: list[str] = field(default_factory=list)  # Table 3: outbound white list


class Answer(StrEnum):
    """What a destination said to one recipient of an envelope or a direct send."""

    TAKEN = "taken"
    UNAUTHORIZED = "unauthorized"  # a direct send to someone who has not authorized us
    REFUSED = "refused"  # a permanent refusal: the recipient fails with the reply
    DEFERRED = "deferred"  # a temporary refusal: the recipient goes again later


@dataclass(slots=True)
class Answers:
    """A transaction's recipients sorted by what to do with them."""

    taken: list[str] = field(default_factory=list)
    unauthorized: list[str] = field(default_factory=list)  # fall back to an envelope
    refused: dict[str, str] = field(default_factory=dict)  # recipient -> the reply
    deferred: list[str] = field(default_factory=list)  # a new envelope of their own
    first_deferral: str = ""  # why, when nobody was taken (the retry's reason)


def sort_answers(answers: list[tuple[str, Answer, str]], recipients: list[str],
                 *, direct: bool) -> Answers:
    """Sort the destination's per-recipient ``answers`` (recipient, answer,
    the reply as text). Recipients never asked (after a temporary refusal
    ended the exchange) are deferred too. "Not authorized" means something
    only to a direct send (protocol.md: fall back to an envelope); to an
    envelope it is a refusal like any other."""
    out = Answers()
    for rcpt, answer, reply in answers:
        if answer is Answer.UNAUTHORIZED and not direct:
            answer = Answer.REFUSED
        if answer is Answer.TAKEN:
            out.taken.append(rcpt)
        elif answer is Answer.UNAUTHORIZED:
            out.unauthorized.append(rcpt)
        elif answer is Answer.REFUSED:
            out.refused[rcpt] = reply
        else:
            out.deferred.append(rcpt)
            out.first_deferral = out.first_deferral or f"RCPT <{rcpt}>: {reply}"
    out.deferred += recipients[len(answers):]
    return out


class Origin:
    def __init__(self, store: Store, *, hostname: str, expire_days: float,
                 spam_reports_per_day: int = 20, delivery_reports: bool = True,
                 max_message_size: int | None = None) -> None:
        self.store = store
        # The largest message a destination takes (its SIZE limit; ours, as
        # every server of a deployment shares [limits]): a submission that
        # grows past it with the fields added here is refused now, not
        # accepted and then refused by every destination.
        self.max_message_size = max_message_size
        self.hostname = hostname
        self.expire_seconds = expire_days * 86400.0
        self.spam_reports_per_day = spam_reports_per_day
        # [notices] delivery_reports: a DSN to the sender for each failure batch.
        self.delivery_reports = delivery_reports

    # -- submission (section 5.2 steps 1-4) -------------------------------------

    def submit(
        self, user: User, sender: str, recipients: list[str], raw: bytes | Body,
        *, spool_dir: str | None = None, client: str = "", protocol: str = "SMDP-user",
    ) -> SubmitResult:
        """Store the message durably, then queue its envelopes, in one transaction.

        Raises SubmissionError (assumption 3) before anything is stored. A
        large ``raw`` comes as a file-backed Body and is never read whole.
        The stored message starts with this hop's Received field (protocol.md
        8.4), naming ``client`` (the user's IP address), so that the size
        the origin declares is the size of what it sends. ``protocol`` is
        that field's ``with`` word (RFC 3848 ``ESMTPSA`` on the submission port).
        """
        suspended = self.store.suspension(user.id)
        if suspended is not None:
            raise SubmissionError(
                f"sending is suspended for this account ({suspended}); "
                "contact your administrator", Kind.SUSPENDED,
            )
        identities = self.store.identities(user.id)
        # Local lists and aliases become their members here (docs/lists.md);
        # a list post carries its List-Id and List-Unsubscribe after our Received.
        expansion = expand(self.store, user, sender, recipients)
        recipients = expansion.recipients
        result = SubmitResult(new_token())
        trace = received_field(source=client_name(client), host=self.hostname,
                               protocol=protocol, ident=result.msgid,
                               when=datetime.now(UTC)) + expansion.fields()
        if isinstance(raw, Body):
            body = prepare_submission_body(
                raw, identities=identities, sender=sender, hostname=self.hostname,
                spool_dir=spool_dir, trace=trace,
            )
        else:
            body = Body.of(prepare_submission(
                raw, identities=identities, sender=sender, hostname=self.hostname,
                trace=trace,
            ))
        if self.max_message_size is not None and body.size > self.max_message_size:
            raise SubmissionError(
                f"the message is {body.size} octets with the fields this server adds "
                f"(Received, and From, Date and Message-ID where missing), over the "
                f"maximum of {self.max_message_size}; send a smaller message",
                Kind.TOO_LARGE,
            )
        summary = extract_envelope(body)
        now = time.time()
        expires = now + self.expire_seconds
        block = encode_envelope_block(
            summary, expires=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        )
        by_domain: dict[tuple[str, DeliveryMode], list[str]] = defaultdict(list)
        with self.store.transaction():
            message_id = self.store.insert_out_message(
                msgid=result.msgid, user_id=user.id, sender=sender, body=body,
                subject=summary.subject, summary=block.decode("utf-8"), expires_at=expires,
            )
            for group in expansion.groups:
                self.store.add_group_post(message_id, group.id)
            for rcpt in dict.fromkeys(recipients):  # a recipient named twice gets one copy
                domain = domain_of(rcpt)
                listed = self.store.outbound_kind(user.id, rcpt)
                if listed == ListKind.BLACK:
                    # Table 3, sender side: recipient in the sender's black list:
                    # reject the message, nothing is sent.
                    self.store.insert_out_recipient(
                        message_id, rcpt, domain, RecipientState.REFUSED,
                        None, "refused at the source: recipient is on your black list",
                    )
                    self.store.touch_outbound(user.id, rcpt)
                    result.refused.append(rcpt)
                    continue
                # Table 3, sender side: recipient in the sender's white list:
                # send the entire message directly, no envelope phase.
                mode = DeliveryMode.DIRECT if listed == ListKind.WHITE else DeliveryMode.ENVELOPE
                if mode is DeliveryMode.DIRECT:
                    self.store.touch_outbound(user.id, rcpt)
                    result.direct.append(rcpt)
                by_domain[(domain, mode)].append(rcpt)
                result.queued.append(rcpt)
            for (domain, mode), rcpts in by_domain.items():
                self._queue_envelope(message_id, domain, mode, rcpts)
            # Refused at the source by the sender's own list: the sender's
            # server refused it, so the sender is told (docs/protocol.md, Notices).
            self._report_failures(message_id, [
                failure_of(r, RecipientState.REFUSED,
                           "refused at the source: recipient is on your black list")
                for r in result.refused])
            if not by_domain:
                self.store.drop_out_body(message_id)
        return result

    def _queue_envelope(
        self, message_id: int, domain: str, mode: DeliveryMode, rcpts: list[str],
        existing: dict[str, OutRecipient] | None = None,
    ) -> str:
        envid = new_token()
        route = RouteKind.SMTP if mode is DeliveryMode.SMTP else RouteKind.SMDP
        self.store.insert_out_envelope(envid, message_id, domain, mode)
        for rcpt in rcpts:
            if existing and rcpt in existing:
                self.store.update_out_recipient(
                    existing[rcpt].id, RecipientState.QUEUED, "", envid, route)
            else:
                self.store.insert_out_recipient(
                    message_id, rcpt, domain, RecipientState.QUEUED, envid, route=route)
        queue_send(self.store, envid, mode, domain)
        return envid

    def route_by_smtp(self, envid: str) -> str | None:
        """Discovery found that ``envid``'s domain has no SMDP server but
        takes mail by SMTP (docs/smtp.md, Routing): its recipients still to
        be sent to move, in one transaction, to a new envelope that leaves by
        SMTP (route ``smtp``, job ``send-smtp``). Returns that envelope's id
        (None when nobody was left to move). The old envelope keeps no open
        recipient, so its own job ends with nothing to send."""
        return self._move_queued(envid, DeliveryMode.SMTP)

    def choose_identity(self, user: User, identity: str | None) -> Outcome:
        """Assumption 3, no spoofing: a message goes out under one of the
        user's own identities (the main one unless another is named). The
        reason of a DONE outcome is the identity chosen."""
        identities = self.store.identities(user.id)
        if identity is None:
            return Outcome(Kind.DONE, identities[0])
        chosen = identity.lower()
        if chosen not in identities:
            return Outcome(Kind.NOT_YOUR_IDENTITY, f"{identity} is not one of your identities")
        return Outcome(Kind.DONE, chosen)

    def open_recipients(self, envid: str) -> list[str]:
        """The recipients of ``envid`` still to be sent to."""
        return [r.recipient for r in self.store.out_recipients_of_envelope(envid)
                if r.state is RecipientState.QUEUED]

    # -- outcome of sending an envelope or a whole message ----------------------

    def envelope_sent(self, envid: str, refused: dict[str, str],
                      deferred: list[str] | None = None, *,
                      env: OutEnvelope | None = None) -> None:
        """The destination stored the envelope; ``refused`` maps recipient -> reply;
        ``deferred`` recipients were not taken this time and get an envelope of
        their own. ``env``: the envelope's record, when the caller has it."""
        env = env or self.store.out_envelope(envid)
        with self.store.transaction():
            rcpts = {r.recipient: r for r in self.store.out_recipients_of_envelope(envid)}
            if deferred and env is not None:
                self._queue_envelope(env.message_id, env.domain, env.mode, deferred, rcpts)
            failed: list[FailedRecipient] = []
            for r in rcpts.values():
                if r.state is not RecipientState.QUEUED or r.recipient in (deferred or ()):
                    continue
                if r.recipient in refused:
                    self.store.update_out_recipient(
                        r.id, RecipientState.FAILED, refused[r.recipient])
                    failed.append(failure_of(r.recipient, RecipientState.FAILED,
                                             refused[r.recipient]))
                else:
                    self.store.update_out_recipient(r.id, RecipientState.ENVELOPE_SENT)
            if env is not None:
                self._report_failures(env.message_id, failed)
                moved = [RecipientState.FAILED] if failed else [RecipientState.ENVELOPE_SENT]
                self._drop_body_when_done(env.message_id, *moved)

    def direct_sent(self, envid: str, delivered: list[str], unauthorized: list[str],
                    refused: dict[str, str], deferred: list[str] | None = None, *,
                    env: OutEnvelope | None = None) -> None:
        """The whole message went to ``delivered``; recipients who have not
        authorized the sender fall back to an envelope (contract 2.4)."""
        env = env or self.store.out_envelope(envid)
        if env is None:
            return
        with self.store.transaction():
            rcpts = {r.recipient: r for r in self.store.out_recipients_of_envelope(envid)}
            for rcpt in delivered:
                if rcpt in rcpts:
                    self.store.update_out_recipient(
                        rcpts[rcpt].id, RecipientState.DELIVERED,
                        "delivered directly (white list)",
                    )
            failed: list[FailedRecipient] = []
            for rcpt, reply in refused.items():
                if rcpt in rcpts and rcpts[rcpt].state is RecipientState.QUEUED:
                    self.store.update_out_recipient(rcpts[rcpt].id, RecipientState.FAILED, reply)
                    failed.append(failure_of(rcpt, RecipientState.FAILED, reply))
            self._report_failures(env.message_id, failed)
            fallback = [r for r in unauthorized if r in rcpts]
            if fallback:
                self._queue_envelope(env.message_id, env.domain, DeliveryMode.ENVELOPE,
                                     fallback, rcpts)
            later = [r for r in deferred or () if r in rcpts]
            if later:
                self._queue_envelope(env.message_id, env.domain, DeliveryMode.DIRECT,
                                     later, rcpts)
            self._drop_body_when_done(env.message_id)

    def smtp_sent(self, envid: str, delivered: dict[str, str], refused: dict[str, str],
                  deferred: dict[str, str], tls: str = "") -> None:
        """What one SMTP attempt for ``envid`` came to (docs/smtp.md,
        "Outbound delivery"), in one transaction: ``delivered`` recipients
        (recipient -> the server's reply to the end of data) are delivered,
        ``refused`` ones (-> the 5xx reply) fail, and their sender gets a
        delivery status notification; ``deferred`` ones (-> why: a 4xx
        reply, a refused TLS session) stay queued for the job's retry, the
        reason their detail. ``tls``: the TLS outcome to keep with every
        recipient named (``Verdict.record``). Only recipients still queued
        change: a replayed job never settles anyone twice."""
        env = self.store.out_envelope(envid)
        if env is None:
            return
        with self.store.transaction():
            rcpts = {r.recipient: r for r in self.store.out_recipients_of_envelope(envid)
                     if r.state is RecipientState.QUEUED}
            if tls:
                self.store.set_recipients_tls(
                    [rcpts[r].id for r in (*delivered, *refused, *deferred) if r in rcpts], tls)
            for rcpt, reply in delivered.items():
                if rcpt in rcpts:
                    self.store.update_out_recipient(rcpts[rcpt].id, RecipientState.DELIVERED,
                                                    reply)
            failed: list[FailedRecipient] = []
            for rcpt, reply in refused.items():
                if rcpt in rcpts:
                    self.store.update_out_recipient(rcpts[rcpt].id, RecipientState.FAILED, reply)
                    failed.append(failure_of(rcpt, RecipientState.FAILED, reply))
            for rcpt, why in deferred.items():
                if rcpt in rcpts:
                    self.store.update_out_recipient(rcpts[rcpt].id, RecipientState.QUEUED, why)
            self._report_failures(env.message_id, failed)
            self._drop_body_when_done(env.message_id)

    def route_by_smdp(self, envid: str) -> str | None:
        """The reverse of ``route_by_smtp``: an SMTP envelope's domain has an
        SMDP server now, so its queued recipients go back to an envelope of
        their own (route ``smdp``). Returns its id (None: nobody moved)."""
        return self._move_queued(envid, DeliveryMode.ENVELOPE)

    def _move_queued(self, envid: str, mode: DeliveryMode) -> str | None:
        """``envid``'s recipients still queued move, in one transaction, to a
        new envelope of ``mode``; its id, or None when nobody was queued."""
        env = self.store.out_envelope(envid)
        if env is None:
            return None
        with self.store.transaction():
            rcpts = {r.recipient: r for r in self.store.out_recipients_of_envelope(envid)
                     if r.state is RecipientState.QUEUED}
            if not rcpts:
                return None
            return self._queue_envelope(env.message_id, env.domain, mode, list(rcpts), rcpts)

    def delivery_failed(self, envid: str, reason: str, status: str = "") -> None:
        """Permanent failure (or retries exhausted) for every open recipient.
        ``status``: the RFC 3463 code the sender's report gives when
        ``reason`` holds no reply of the destination that says better."""
        with self.store.transaction():
            failed: list[FailedRecipient] = []
            message_id = None
            for r in self.store.out_recipients_of_envelope(envid):
                message_id = r.message_id
                if r.state is RecipientState.QUEUED:
                    self.store.update_out_recipient(r.id, RecipientState.FAILED, reason)
                    failed.append(failure_of(r.recipient, RecipientState.FAILED, reason, status))
            if message_id is not None:
                self._report_failures(message_id, failed)
            else:
                env = self.store.out_envelope(envid)
                message_id = env.message_id if env is not None else None
            if message_id is not None:
                self._drop_body_when_done(message_id)

    # -- decisions from the destination (Table 2, origin column) -----------------

    def on_decision(
        self, envid: str, recipient: str, decision: Decision, body_held: bool
    ) -> DecisionOutcome:
        found = self.store.out_envelope_and_message(envid)
        if found is None:
            return DecisionOutcome(Kind.UNKNOWN, f"Unknown envelope {envid}")
        env, msg = found
        rcpt = next(
            (r for r in self.store.out_recipients_of_envelope(envid) if r.recipient == recipient),
            None,
        )
        if rcpt is None:
            return DecisionOutcome(Kind.NOT_A_RECIPIENT,
                                   f"<{recipient}> is not a recipient of {envid}")
        effect = origin_side(decision)
        # Table 2's "send the entire message" column says which decisions accept.
        if effect.send_message and rcpt.state in d.REJECTED_RECIPIENTS:
            # Assumption 6: the rejection deleted the message for this recipient.
            return DecisionOutcome(Kind.ALREADY_REJECTED, f"{envid} was rejected; message deleted")
        if effect.send_message and rcpt.state in d.LOST_RECIPIENTS:
            return DecisionOutcome(Kind.NOT_HELD, f"{envid} is no longer held: {rcpt.detail}")
        pulling = (effect.send_message and rcpt.state is not RecipientState.DELIVERED
                   and not body_held)
        if pulling and not msg.held:
            return DecisionOutcome(Kind.NOT_HELD, f"{envid} is no longer held")

        with self.store.transaction():
            if effect.add_to_white_list:
                self.store.put_outbound(msg.user_id, ListKind.WHITE, recipient, ListedBy.AUTO)
            if effect.add_to_black_list:
                self.store.put_outbound(msg.user_id, ListKind.BLACK, recipient, ListedBy.AUTO)
            if effect.report_spam:
                self.store.add_spam_report(
                    msg.user_id, msg.sender, recipient, decision.value, envid
                )
                self._investigate(msg.user_id)
            if effect.send_message and not pulling:
                new_state, detail = RecipientState.DELIVERED, f"{effect.state} by recipient"
            elif effect.send_message:
                new_state, detail = effect.state, "transfer in progress"
            else:
                new_state, detail = effect.state, f"{effect.state} by recipient"
            self.store.update_out_recipient(rcpt.id, new_state, detail)
            self._drop_body_when_done(env.message_id, new_state)
        if pulling:
            return DecisionOutcome(Kind.PULL, f"{msg.size} octets follow", msg.id, msg.size,
                                   msg.created_at)
        return DecisionOutcome(Kind.DONE, f"{decision.value} recorded for <{recipient}>")

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

    def on_received(self, envid: str, env: OutEnvelope | None = None) -> Outcome:
        """The destination confirms it stored the pulled body (contract 2.5).
        ``env``: the envelope's record, when the caller has read it."""
        env = env or self.store.out_envelope(envid)
        if env is None:
            return Outcome(Kind.UNKNOWN, f"Unknown envelope {envid}")
        with self.store.transaction():
            for r in self.store.out_recipients_of_envelope(envid):
                if r.state in d.PULLING_RECIPIENTS:
                    self.store.update_out_recipient(
                        r.id, RecipientState.DELIVERED, f"{r.state} by recipient"
                    )
            self._drop_body_when_done(env.message_id)
        return Outcome(Kind.DONE, f"{envid} transfer confirmed")

    def expire(self, now: float) -> int:
        """PRIOR-ART.md, "Expire held mail": every recipient still undecided
        when the message's hold time ends is ``expired``, and the body goes.
        Returns the messages expired."""
        detail = "expired: no decision before the message expired"

        def report(message_id: int) -> None:
            self._report_failures(message_id, [
                failure_of(r.recipient, RecipientState.EXPIRED, detail)
                for r in self.store.out_recipients(message_id) if r.state in d.NEEDS_BODY])

        return self.store.expire_out_messages(
            now, open_states=d.NEEDS_BODY, expired=RecipientState.EXPIRED,
            detail=detail, before_expiry=report,
        )

    def _report_failures(self, message_id: int, failed: list[FailedRecipient]) -> None:
        """Issue 10, item 7 (a): the sender of ``message_id`` gets one delivery
        status notification naming the recipients of this batch that failed
        for good, stored in their mailbox inside the caller's transaction, the
        one that records the failures: a crash loses neither or both, and a
        recipient fails only once, so it is never reported twice. Call it
        while the body is still held (its header is quoted)."""
        if not failed or not self.delivery_reports:
            return
        msg = self.store.out_message(message_id)
        if msg is None or not msg.sender:
            return  # the null sender is never told anything (RFC 3464: no loops)
        user = self.store.user_by_id(msg.user_id)
        if user is None:
            return
        start = self.store.out_body_chunk(message_id, 0)
        header = header_of(start) if start else f"Subject: {msg.subject}\n"
        raw = build_dsn(hostname=self.hostname, to=msg.sender, subject=msg.subject,
                        arrival=msg.created_at, header=header, failed=failed)
        deliver_notice(self.store, hostname=self.hostname, user_id=user.id,
                       recipient=msg.sender, raw=raw)

    def _drop_body_when_done(self, message_id: int, *moved_to: RecipientState) -> None:
        """Assumption 4 and 6: hold the message until every recipient decided.

        ``moved_to``: the states recipients just took, where the caller knows
        them. A recipient moving into a state that still needs the body (sent,
        accepted, pulling) cannot be the last to let it go, so the check (a
        statement per state change) is only run when one moved out of them;
        every move out of them runs it, so the body still goes with the last."""
        if moved_to and all(state in d.NEEDS_BODY for state in moved_to):
            return
        self.store.drop_out_body_if_done(message_id, d.NEEDS_BODY)
