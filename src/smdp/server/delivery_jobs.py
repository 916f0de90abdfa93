"""What each queue job does over a peer session (``smdp.terms.JobKind``):

- ``send-envelope``: section 5.2 step 4, one envelope to one destination domain;
- ``send-direct``: Table 3 sender side, the whole message to white-listed recipients;
- ``report-decision``: Table 2, the recipient's decision to the origin, and for
  an accept the pull of the whole message (step 7);
- ``send-smtp``: the whole message by SMTP to a domain without an SMDP server
  (docs/smtp.md). With ``[smtp] outbound`` on, a send job whose domain routing
  finds to be an SMTP domain moves its recipients to such a job first;
- ``unsubscribe``: RFC 8058's one-click POST for a user's UNSUB (docs/lists.md),
  over HTTPS rather than a peer session (``server/unsubscribe.py``).

The replies are read here and handed to the rules as typed answers
(``peer_client.answer_of``); what becomes of each recipient is decided in
``core/origin.py`` and ``core/destination.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from smdp.core import unsubscribe as unsub
from smdp.core.jobs import BadJob, DecisionJob, SendJob, UnsubscribeJob, decode_job
from smdp.core.mta_sts import Policy, TlsOutcome, Verdict, decide, requirement
from smdp.core.origin import sort_answers
from smdp.mail.addresses import domain_of
from smdp.mail.body import stored_chunks
from smdp.mail.dkim import DkimError, MessageSigner
from smdp.protocol import peer as wire
from smdp.protocol import smtp
from smdp.protocol.smtp import Capabilities
from smdp.server.delivery import PermanentFailure, Route, TemporaryFailure
from smdp.server.discovery import Discovery
from smdp.server.dkim_keys import SigningKeys
from smdp.server.durable_io import DurableGate
from smdp.server.mta_sts import MtaSts, handshake_outcome, mx_context
from smdp.server.mta_sts import from_config as mta_sts_from_config
from smdp.server.peer_client import PeerLink, PulledMessage, answer_of, check, open_session
from smdp.server.routing import (
    MxHost,
    PermanentRouteFailure,
    Router,
    SmtpRoute,
    TemporaryRouteFailure,
)
from smdp.server.services import Core
from smdp.server.smtp_client import OutcomeUnknown, SessionLost, SmtpLink
from smdp.server.tls import TlsPolicy
from smdp.server.unsubscribe import Refused, TryLater, one_click
from smdp.store.records import Job, OutMessage
from smdp.terms import JobKind

log = logging.getLogger("smdp.delivery")


def _listed(key: str, addresses: Iterable[str]) -> str:
    """`` key=a,b`` for a log line; nothing when there are none."""
    names = list(addresses)
    return f" {key}={','.join(names)}" if names else ""


class _NextHost(Exception):
    """This MX host (this address) cannot take the message now: try the
    next. ``tls``: the TLS record when a policy refused the session."""

    def __init__(self, reason: str, tls: str = "", *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.tls = tls
        self.permanent = permanent  # this host never will (no SMTPUTF8)


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A stored message as it leaves by SMTP."""

    message_id: int
    sender: str
    size: int
    head: bytes  # the DKIM-Signature field, or b""
    eight_bit: bool


@dataclass(slots=True)
class _Attempt:
    """One SMTP session's outcome, per recipient (each -> the reply)."""

    host: str
    tls: str
    delivered: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    deferred: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Tried:
    """What trying every MX host came to: a session's answer, or why not."""

    attempt: _Attempt | None = None
    failures: list[str] = field(default_factory=list)
    permanent: bool = True  # every host failed in a way retrying will not change
    tls_refusal: str = ""  # the TLS record of the last host a policy refused


def _sort(attempt: _Attempt, replies: Iterable[tuple[str, smtp.Reply]]) -> None:
    for rcpt, reply in replies:
        said = f"{reply} (from {attempt.host})"
        if 200 <= reply.code < 300:
            attempt.delivered[rcpt] = said
        elif reply.code >= 500:
            attempt.refused[rcpt] = said
        else:
            attempt.deferred[rcpt] = said


class PeerJobs:
    """The ``JobRunner`` of the delivery worker: jobs carried out over peer
    sessions, one session per route, opened on first use."""

    timeout = 30.0  # seconds for any one network step
    # SMTP servers may be slow on purpose (a delayed greeting) or busy
    # (content checks after the end of data): RFC 5321 4.5.3.2 asks for 5
    # minutes per command and 10 for the end of data's reply. Giving up
    # early there would turn a slow 250 into a duplicate. Each is held
    # under half the claim lease, so that no other node takes the job.
    smtp_timeout = 300.0
    smtp_data_timeout = 600.0

    def __init__(self, core: Core, tls: TlsPolicy, discovery: Discovery,
                 router: Router | None = None, gate: DurableGate | None = None) -> None:
        self.core = core
        self.store = core.store
        # Group commit: what the worker tells another server (RECEIVED, a
        # decision, a message it holds) leaves only once the commits before
        # it are durable, as the server's answers do (durable_io).
        self.gate = gate
        self.tls = tls
        self.discovery = discovery
        # [smtp] outbound: routes domains without an SMDP server to SMTP.
        # None (off): such a domain fails for good with 5.1.2, as it always has.
        self.router = router
        self._mta_sts: MtaSts | None = None  # made on first use (outbound SMTP only)
        self.signing_keys = SigningKeys()

    def route_of(self, job: Job) -> str:
        """The peer domain a job talks to (jobs of unknown records go anywhere)."""
        store = self.store
        try:
            work = decode_job(job)
        except BadJob:
            return ""
        if isinstance(work, UnsubscribeJob):
            request = store.unsubscribe(work.unsubscribe)
            return f"https:{urlsplit(request.target).hostname or ''}" if request else ""
        if isinstance(work, DecisionJob | SendJob) and work.domain:
            return work.domain  # named when queued (older rows: read below)
        if isinstance(work, DecisionJob):
            entry = store.mailbox_entry(work.entry)
            env = store.in_envelope(entry.envelope_id) if entry else None
            # Decisions and pulls go to the sender's domain (protocol.md 8).
            return domain_of(env.sender) if env else ""
        out = store.out_envelope(work.envid)
        return out.domain if out else ""

    async def run(self, job: Job, route: Route) -> None:
        try:
            work = decode_job(job)
        except BadJob as exc:
            raise PermanentFailure(str(exc)) from None
        if isinstance(work, UnsubscribeJob):
            await self.unsubscribe(work)
        elif isinstance(work, DecisionJob):
            await self.report_decision(work, route)
        elif job.kind is JobKind.SEND_SMTP:
            await self.send_smtp(work, route)
        else:
            await self.send(work, route, direct=job.kind is JobKind.SEND_DIRECT)

    def give_up(self, job: Job, reason: str, status: str = "") -> None:
        try:
            work = decode_job(job)
        except BadJob:
            return  # nothing to tell anyone; the job is deleted
        if isinstance(work, UnsubscribeJob):
            self.store.set_unsubscribe_state(work.unsubscribe, unsub.FAILED, reason)
        elif isinstance(work, DecisionJob):
            self.core.destination.decision_refused(work.entry, reason)
        else:
            self.core.origin.delivery_failed(work.envid, reason, status)

    async def drop_session(self, route: Route) -> None:
        if route.session is not None:
            link, route.session = route.session, None
            await link.close()

    async def _session(self, route: Route) -> PeerLink:
        """The route's open peer session, opened (and greeted) on first use."""
        if route.session is None:
            route.session = await open_session(
                route.domain, config=self.core.config, tls=self.tls,
                discovery=self.discovery, timeout=self.timeout, gate=self.gate)
        link: PeerLink = route.session
        return link

    # -- section 5.2 step 4: the envelope (or Table 3's whole message) -------------

    async def send(self, job: SendJob, route: Route, *, direct: bool) -> None:
        store, origin = self.store, self.core.origin
        found = store.out_envelope_and_message(job.envid)
        if found is None:
            return
        env, msg = found
        rcpts = origin.open_recipients(job.envid)
        if not rcpts:
            return
        if direct and not msg.held:
            raise PermanentFailure("the message is no longer held")
        if route.session is None and await self._routed_by_smtp(job.envid, env.domain):
            return
        link = await self._session(route)
        envid = job.envid
        start: wire.PeerCommand = (wire.MailStart(msg.sender, envid, None) if direct
                                   else wire.EnvelopeStart(msg.sender, envid, None))
        what = "MAIL" if direct else "ENVELOPE"
        replies: list[tuple[str, wire.Reply]] = []  # (recipient, its RCPT reply)
        size_reply: wire.Reply | None = None
        data_reply: wire.Reply | None = None
        if link.pipelining:
            # The transaction in one write, its replies read afterwards
            # (protocol.md 6.1): two round trips per envelope instead of 4 + n.
            got = await link.pipeline(
                [start, *(wire.Rcpt(r) for r in rcpts), wire.SizeDecl(msg.size), wire.DataStart()]
            )
            check(got[0], what)
            replies = list(zip(rcpts, got[1:-2], strict=True))
            size_reply, data_reply = got[-2], got[-1]
        else:
            await link.expect(start, what)
            for rcpt in rcpts:
                reply = await link.command(wire.Rcpt(rcpt))
                assert isinstance(reply, wire.Reply)
                replies.append((rcpt, reply))
                if 400 <= reply.code < 500:
                    break  # the rest waits for a new envelope (below)
        answers = sort_answers(
            [(rcpt, answer_of(reply), f"{reply.code} {reply.text}") for rcpt, reply in replies],
            rcpts, direct=direct)
        if answers.deferred and not answers.taken:
            self._count("smdp", taken=0, refused=0, deferred=len(answers.deferred))
            raise TemporaryFailure(answers.first_deferral)
        if answers.taken:
            if data_reply is None:
                await link.expect(wire.SizeDecl(msg.size), "SIZE")
                reply = await link.command(wire.DataStart())
                assert isinstance(reply, wire.Reply)
                data_reply = reply
            else:
                assert size_reply is not None
                check(size_reply, "SIZE")
            if data_reply.code != 354:
                check(data_reply, "DATA")
                raise TemporaryFailure(f"DATA: {data_reply.code} {data_reply.text}")
            if direct:
                message_id = msg.id
                await link.send_body(
                    stored_chunks(lambda seq: store.out_body_chunk(message_id, seq)), msg.size
                )
            else:
                await link.expect(wire.Data(msg.summary.encode("utf-8")), "end of data")
        else:
            # No recipient taken: close the transaction, keep the session.
            await link.expect(wire.Rset(), "RSET")
        if answers.refused or answers.deferred or answers.unauthorized:
            # A failure to report, or more to send: recorded now.
            if direct:
                origin.direct_sent(envid, answers.taken, answers.unauthorized, answers.refused,
                                   answers.deferred, env=env)
            else:
                origin.envelope_sent(envid, answers.refused, answers.deferred, env=env)
        elif direct:
            # Every recipient took it: recorded with the job's deletion, in
            # one commit for the batch. Until then SENT shows them queued; a
            # crash before runs the job again, and the destination takes the
            # replay as said (protocol.md: a replayed envelope changes nothing).
            taken = answers.taken
            route.later.append(lambda: origin.direct_sent(envid, taken, [], {}, env=env))
        else:
            route.later.append(lambda: origin.envelope_sent(envid, {}, env=env))
        self._count("smdp", taken=len(answers.taken) + len(answers.unauthorized),
                    refused=len(answers.refused), deferred=len(answers.deferred))
        if direct and answers.taken:
            self.core.metrics.bytes.labels("out").inc(msg.size)
            for _rcpt in answers.taken:
                self.core.metrics.delivered(msg.created_at)
        log.info("%s envid=%s msgid=%s domain=%s sender=%s%s%s%s%s",
                 ("message sent directly" if direct else "envelope sent") if answers.taken
                 else ("message refused" if direct else "envelope refused"),
                 envid, msg.msgid, route.domain, msg.sender, _listed("to", answers.taken),
                 _listed("unauthorized", answers.unauthorized),
                 _listed("refused", answers.refused), _listed("deferred", answers.deferred))

    async def _routed_by_smtp(self, envid: str, domain: str) -> bool:
        """With ``[smtp] outbound`` on, route ``domain`` (docs/smtp.md,
        Routing): True when it is an SMTP domain and ``envid``'s open
        recipients were moved to a send-smtp job. An open session means the
        domain has an SMDP server: no need to ask again."""
        if self.router is None:
            return False
        routed = await self.router.route(domain)
        if isinstance(routed, TemporaryRouteFailure):
            raise TemporaryFailure(routed.reason, unreachable=True)
        if isinstance(routed, PermanentRouteFailure):
            raise PermanentFailure(routed.reason, status=routed.status)
        if not isinstance(routed, SmtpRoute):
            return False
        moved = self.core.origin.route_by_smtp(envid)
        log.info("routed by SMTP envid=%s domain=%s smtp-envid=%s mx=%s", envid, domain, moved,
                 ",".join(f"{host.name}/{host.preference}" for host in routed.hosts))
        return True

    # -- the whole message by SMTP ---------------------------------------------------

    async def send_smtp(self, job: SendJob, route: Route) -> None:
        """The whole message by SMTP to its domain's MX hosts (docs/smtp.md,
        "Outbound delivery"): route the domain again, then each MX host in
        order, each of its addresses, until one session settles the
        recipients. 2xx delivers, 5xx fails (with a notification), 4xx
        keeps a recipient queued for the job's retry; a host that cannot be
        reached, greets with an error or is refused by the TLS policy passes
        the turn to the next; when every host has, the job is retried."""
        store = self.store
        env = store.out_envelope(job.envid)
        if env is None:
            return
        msg = store.out_message(env.message_id)
        assert msg is not None
        rcpts = self.core.origin.open_recipients(job.envid)
        if not rcpts:
            return  # every recipient settled already: a replay sends nothing
        if not msg.held:
            raise PermanentFailure("the message is no longer held")
        if self.router is None:
            raise TemporaryFailure("outbound SMTP is switched off ([smtp] outbound = false)")
        routed = await self.router.route(env.domain)
        if isinstance(routed, TemporaryRouteFailure):
            raise TemporaryFailure(routed.reason, unreachable=True)
        if isinstance(routed, PermanentRouteFailure):
            raise PermanentFailure(routed.reason, status=routed.status)
        if not isinstance(routed, SmtpRoute):
            moved = self.core.origin.route_by_smdp(job.envid)
            log.info("routed by SMDP again envid=%s domain=%s smdp-envid=%s",
                     job.envid, env.domain, moved)
            return
        message = self._outgoing(msg)
        mta_sts = self._mta_sts_cache()
        policy = await mta_sts.policy(env.domain) if mta_sts is not None else None
        tried = await self._each_mx(env.domain, routed, policy, message, rcpts)
        if tried.tls_refusal and mta_sts is not None:
            # RFC 8461 5.1: before mail is held back by a policy, look for a
            # newer one (the domain may have changed its MX hosts or mode).
            newer = await mta_sts.policy(env.domain, fresh=True)
            if newer != policy:
                tried = await self._each_mx(env.domain, routed, newer, message, rcpts)
        if tried.attempt is not None:
            attempt = tried.attempt
            self._count("smtp", taken=len(attempt.delivered), refused=len(attempt.refused),
                        deferred=len(attempt.deferred))
            if attempt.delivered:
                self.core.metrics.bytes.labels("out").inc(msg.size)
                for _rcpt in attempt.delivered:
                    self.core.metrics.delivered(msg.created_at)
            self._settle(job.envid, msg.msgid, env.domain, attempt)
            return
        failures = tried.failures
        reason = "; ".join(failures) or f"no MX host of {env.domain} to try"
        if failures and tried.permanent:
            # RFC 3463 X.6.7: non-ASCII addresses, and no host takes them.
            raise PermanentFailure(reason, status="5.6.7")
        if tried.tls_refusal:
            # The reason a policy refused delivery is the recipients' detail
            # (docs/smtp.md, "What is recorded").
            self.core.origin.smtp_sent(job.envid, {}, {}, dict.fromkeys(rcpts, reason),
                                       tried.tls_refusal)
        raise TemporaryFailure(reason, unreachable=True)

    async def _each_mx(self, domain: str, routed: SmtpRoute, policy: Policy | None,
                       message: _Outgoing, rcpts: list[str]) -> _Tried:
        """Each MX host in order, each of its addresses, until a session
        gives an answer for the recipients."""
        tried = _Tried()
        for host in routed.hosts:
            need = requirement(domain, host.name, policy, self.core.config.smtp_tls)
            if need.refusal is not None:
                tried.failures.append(need.refusal)
                tried.tls_refusal = f"refused not-connected ({need.by})"
                tried.permanent = False
                continue
            for address in host.addresses:
                try:
                    tried.attempt = await self._smtp_session(domain, host, address, policy,
                                                             message, rcpts)
                except _NextHost as exc:
                    tried.failures.append(str(exc))
                    tried.tls_refusal = exc.tls or tried.tls_refusal
                    tried.permanent = tried.permanent and exc.permanent
                    continue
                return tried
        return tried

    def _count(self, route: str, *, taken: int, refused: int, deferred: int) -> None:
        sent = self.core.metrics.recipients_sent
        for outcome, n in (("taken", taken), ("refused", refused), ("deferred", deferred)):
            if n:
                sent.labels(route, outcome).inc(n)

    def _settle(self, envid: str, msgid: str, domain: str, attempt: _Attempt) -> None:
        self.core.origin.smtp_sent(envid, attempt.delivered, attempt.refused, attempt.deferred,
                                   attempt.tls)
        log.info("message sent by SMTP envid=%s msgid=%s domain=%s host=%s tls=%s%s%s%s",
                 envid, msgid, domain, attempt.host, attempt.tls,
                 _listed("to", attempt.delivered), _listed("refused", attempt.refused),
                 _listed("deferred", attempt.deferred))
        if attempt.deferred:
            raise TemporaryFailure(next(iter(attempt.deferred.values())))

    def _mta_sts_cache(self) -> MtaSts | None:
        if self._mta_sts is None and self.core.config.smtp_tls.mta_sts:
            self._mta_sts = mta_sts_from_config(self.core.config, self.store)
        return self._mta_sts

    def _outgoing(self, msg: OutMessage) -> _Outgoing:
        """One pass over the stored body: its DKIM-Signature (when the
        sender's domain has a ``[dkim]`` key) and whether it holds 8-bit
        octets (BODY=8BITMIME). The body is read again to be sent; neither
        pass holds more than a chunk."""
        message_id = msg.id
        signer: MessageSigner | None = None
        setting = self.core.config.dkim.get(domain_of(msg.sender)) if msg.sender else None
        if setting is not None:
            try:
                key = self.signing_keys.key(domain_of(msg.sender), setting)
            except (OSError, DkimError) as exc:
                # The operator's to fix; the mail waits rather than leave unsigned.
                raise TemporaryFailure(f"cannot sign with the DKIM key of "
                                       f"{domain_of(msg.sender)} ({setting.key}): {exc}"
                                       ) from None
            signer = MessageSigner(key)
        eight_bit = False
        for chunk in stored_chunks(lambda seq: self.store.out_body_chunk(message_id, seq)):
            eight_bit = eight_bit or not chunk.isascii()
            if signer is not None:
                signer.update(chunk)
        try:
            head = signer.signature() if signer is not None else b""
        except DkimError as exc:
            raise PermanentFailure(f"the message cannot be signed: {exc}") from None
        return _Outgoing(message_id, msg.sender, msg.size, head, eight_bit)

    async def _smtp_session(self, domain: str, host: MxHost, address: str,
                            policy: Policy | None, message: _Outgoing,
                            rcpts: list[str]) -> _Attempt:
        """One session with one address of one MX host. _NextHost when
        this host cannot take the transaction now (the next one may)."""
        link, caps, verdict = await self._secured_session(domain, host, address, policy)
        try:
            return await self._transaction(link, caps, verdict.record, message, rcpts)
        except OutcomeUnknown as exc:
            # The message may have arrived: no other host now; the retry may
            # deliver it twice (docs/smtp.md, "Outbound delivery").
            raise TemporaryFailure(str(exc)) from None
        except SessionLost as exc:
            raise _NextHost(str(exc)) from None
        finally:
            await link.close()

    async def _open(self, host: MxHost, address: str) -> tuple[SmtpLink, Capabilities | None]:
        try:
            lease = self.core.config.delivery.claim_lease / 2
            link = await SmtpLink.open(host.name, address, self.core.config.smtp.outbound_port,
                                       min(self.smtp_timeout, lease),
                                       min(self.smtp_data_timeout, lease), gate=self.gate)
        except SessionLost as exc:
            raise _NextHost(str(exc)) from None
        try:
            return link, await link.hello(self.core.config.hostname)
        except SessionLost as exc:
            await link.close()
            raise _NextHost(str(exc)) from None

    async def _secured_session(self, domain: str, host: MxHost, address: str,
                               policy: Policy | None,
                               ) -> tuple[SmtpLink, Capabilities | None, Verdict]:
        """A greeted session protected as the policy asks (docs/smtp.md,
        "For the SMTP sender"): STARTTLS whenever offered, then
        ``decide``. A refusal is _NextHost, with the TLS record."""
        settings = self.core.config.smtp_tls
        need = requirement(domain, host.name, policy, settings)
        link, caps = await self._open(host, address)
        if caps is None or not caps.starttls:
            verdict = decide(domain, host.name, policy, settings, TlsOutcome.NOT_OFFERED)
            if not verdict.deliver:
                await link.close()
                raise _NextHost(verdict.reason, verdict.record)
            return link, caps, verdict
        try:
            error = await link.starttls(mx_context(settings.ca, verify=need.verify), host.name)
        except SessionLost as exc:
            link.abort()
            raise _NextHost(str(exc)) from None
        outcome, detail = handshake_outcome(error, verified=need.verify)
        verdict = decide(domain, host.name, policy, settings, outcome, detail)
        if error is None:
            try:
                caps = await link.hello(self.core.config.hostname)  # RFC 3207: anew
            except SessionLost as exc:
                await link.close()
                raise _NextHost(str(exc)) from None
            if not verdict.deliver:
                await link.close()
                raise _NextHost(verdict.reason, verdict.record)
            return link, caps, verdict
        link.abort()
        if not verdict.deliver:
            raise _NextHost(verdict.reason, verdict.record)
        # Delivery may go on without what failed, on a new connection: after a
        # certificate not checked out (a testing policy), TLS without the
        # check; after a broken handshake, plaintext.
        link, caps = await self._open(host, address)
        if outcome is TlsOutcome.CERTIFICATE_INVALID and caps is not None and caps.starttls:
            try:
                error = await link.starttls(mx_context(settings.ca, verify=False), host.name)
                if error is None:
                    return link, await link.hello(self.core.config.hostname), verdict
            except SessionLost:
                pass
            link.abort()
            link, caps = await self._open(host, address)
        return link, caps, verdict

    async def _transaction(self, link: SmtpLink, caps: Capabilities | None, tls: str,
                           message: _Outgoing, rcpts: list[str]) -> _Attempt:
        """MAIL, every RCPT, DATA and the message, pipelined where offered.
        SessionLost before the end of data: nothing was delivered (the next
        host may do it); after it, the outcome is unknown, and the retry may
        deliver a second copy (the window SMTP itself has)."""
        attempt = _Attempt(link.where, tls)
        smtputf8 = not all(a.isascii() for a in (message.sender, *rcpts))
        if smtputf8 and (caps is None or not caps.smtputf8):
            raise _NextHost(f"{link.where} does not take non-ASCII addresses "
                            "(no SMTPUTF8, RFC 6531)", permanent=True)
        if caps is None:
            mail = smtp.Mail(message.sender)
        else:
            total = message.size + len(message.head)
            mail = smtp.Mail(message.sender, total,
                             "8BITMIME" if message.eight_bit and caps.eightbitmime else None,
                             smtputf8)
        commands: list[smtp.SmtpCommand] = [mail, *(smtp.Rcpt(r) for r in rcpts)]
        data_reply: smtp.Reply | None = None
        if caps is not None and caps.pipelining:
            replies = await link.pipeline([*commands, smtp.DataStart()])
            mail_reply, rcpt_replies, data_reply = replies[0], replies[1:-1], replies[-1]
        else:
            mail_reply = await link.command(mail)
            rcpt_replies = []
            if mail_reply.code == 250:
                for rcpt in rcpts:
                    rcpt_replies.append(await link.command(smtp.Rcpt(rcpt)))
        if mail_reply.code != 250:
            # The sender refused: every recipient shares the answer.
            _sort(attempt, [(rcpt, mail_reply) for rcpt in rcpts])
            return attempt
        accepted = [rcpt for rcpt, reply in zip(rcpts, rcpt_replies, strict=True)
                    if 200 <= reply.code < 300]
        _sort(attempt, [(rcpt, reply) for rcpt, reply in zip(rcpts, rcpt_replies, strict=True)
                        if not 200 <= reply.code < 300])
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                link.abort()  # a 354 with nobody to send to: send nothing (RFC 2920 3.1)
            return attempt
        if data_reply is None:
            data_reply = await link.command(smtp.DataStart())
        if data_reply.code != 354:
            _sort(attempt, [(rcpt, data_reply) for rcpt in accepted])
            return attempt
        message_id = message.message_id
        end = await link.send_message(
            message.head, stored_chunks(lambda seq: self.store.out_body_chunk(message_id, seq)),
            message.size)
        # RFC 5321 3.3: the reply to the end of data is every accepted
        # recipient's (a 5xx fails them all).
        _sort(attempt, [(rcpt, end) for rcpt in accepted])
        return attempt

    # -- UNSUB: RFC 8058 one-click, for a user --------------------------------------

    async def unsubscribe(self, job: UnsubscribeJob) -> None:
        """The POST of a pending request; its outcome is recorded for ENV.
        A retry keeps the request pending with the last error (the queue's)."""
        request = self.store.unsubscribe(job.unsubscribe)
        if request is None or request.state != unsub.PENDING:
            return  # done already (a replay), or its entry was purged
        settings = self.core.config.unsubscribe
        try:
            said = await one_click(request.target, settings)
        except Refused as exc:
            raise PermanentFailure(str(exc)) from None
        except TryLater as exc:
            self.store.set_unsubscribe_state(request.id, unsub.PENDING, f"will retry: {exc}")
            raise TemporaryFailure(str(exc)) from None
        self.store.set_unsubscribe_state(request.id, unsub.DONE, said)
        log.info("unsubscribed entry=%d target=%s: %s", request.entry_id, request.target, said)

    # -- Table 2 and section 5.2 step 7: the decision and the pull -----------------

    async def report_decision(self, job: DecisionJob, route: Route) -> None:
        store, destination = self.store, self.core.destination
        found = store.mailbox_entry_and_envelope(job.entry)
        if found is None:
            return
        entry, env = found
        if entry.decision is None:
            return
        decision = entry.decision
        # The pull goes to the server discovery gives for the sender's domain,
        # never to whoever delivered the envelope (contract 2.5).
        link = await self._session(route)
        held = env.has_body and decision.accepts
        reply = await link.command(
            wire.Decision(decision, env.envid, entry.recipient, held)
        )
        ids = (f"entry={entry.id} envid={env.envid} recipient={entry.recipient} "
               f"decision={decision.value} domain={route.domain}")
        if isinstance(reply, PulledMessage):
            log.info("decision sent %s", ids)
            destination.body_pulled(env.id, reply.body)
            log.info("message pulled %s size=%d", ids, env.size)
            self.core.metrics.pulls.labels("fetched").inc()
            self.core.metrics.bytes.labels("in").inc(env.size)
            log.info("message delivered entry=%d envid=%s recipient=%s how=pulled",
                     entry.id, env.envid, entry.recipient)
            await link.expect(wire.Received(env.envid), "RECEIVED")
            return
        if reply.code >= 500:
            log.info("decision refused %s reply=%d %s", ids, reply.code, reply.text)
            destination.decision_refused(entry.id, f"{reply.code} {reply.text}")
            return
        check(reply, decision.value)
        log.info("decision sent %s", ids)
        if decision.accepts:
            destination.body_pulled(env.id, None)
            if held:
                log.info("message delivered entry=%d envid=%s recipient=%s how=held-copy",
                         entry.id, env.envid, entry.recipient)
