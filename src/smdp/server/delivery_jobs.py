"""What each queue job does over a peer session (``smdp.terms.JobKind``):

- ``send-envelope``: section 5.2 step 4, one envelope to one destination domain;
- ``send-direct``: Table 3 sender side, the whole message to white-listed recipients;
- ``report-decision``: Table 2, the recipient's decision to the origin, and for
  an accept the pull of the whole message (step 7);
- ``send-smtp``: the whole message by SMTP to a domain without an SMDP server
  (docs/smtp.md). With ``[smtp] outbound`` on, a send job whose domain routing
  finds to be an SMTP domain moves its recipients to such a job first.

The replies are read here and handed to the rules as typed answers
(``peer_client.answer_of``); what becomes of each recipient is decided in
``core/origin.py`` and ``core/destination.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from smdp.core.jobs import BadJob, DecisionJob, SendJob, decode_job
from smdp.core.origin import sort_answers
from smdp.mail.addresses import domain_of
from smdp.mail.body import stored_chunks
from smdp.protocol import peer as wire
from smdp.server.delivery import PermanentFailure, Route, TemporaryFailure
from smdp.server.discovery import Discovery
from smdp.server.peer_client import PeerLink, PulledMessage, answer_of, check, open_session
from smdp.server.routing import PermanentRouteFailure, Router, SmtpRoute, TemporaryRouteFailure
from smdp.server.services import Core
from smdp.server.tls import TlsPolicy
from smdp.store.records import Job
from smdp.terms import JobKind

log = logging.getLogger("smdp.delivery")


def _listed(key: str, addresses: Iterable[str]) -> str:
    """`` key=a,b`` for a log line; nothing when there are none."""
    names = list(addresses)
    return f" {key}={','.join(names)}" if names else ""


class PeerJobs:
    """The ``JobRunner`` of the delivery worker: jobs carried out over peer
    sessions, one session per route, opened on first use."""

    timeout = 30.0  # seconds for any one network step

    def __init__(self, core: Core, tls: TlsPolicy, discovery: Discovery,
                 router: Router | None = None) -> None:
        self.core = core
        self.store = core.store
        self.tls = tls
        self.discovery = discovery
        # [smtp] outbound: routes domains without an SMDP server to SMTP.
        # None (off): such a domain fails for good with 5.1.2, as it always has.
        self.router = router

    def route_of(self, job: Job) -> str:
        """The peer domain a job talks to (jobs of unknown records go anywhere)."""
        store = self.store
        try:
            work = decode_job(job)
        except BadJob:
            return ""
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
        if isinstance(work, DecisionJob):
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
        if isinstance(work, DecisionJob):
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
                discovery=self.discovery, timeout=self.timeout)
        link: PeerLink = route.session
        return link

    # -- section 5.2 step 4: the envelope (or Table 3's whole message) -------------

    async def send(self, job: SendJob, route: Route, *, direct: bool) -> None:
        store, origin = self.store, self.core.origin
        env = store.out_envelope(job.envid)
        if env is None:
            return
        msg = store.out_message(env.message_id)
        assert msg is not None
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
        if direct:
            origin.direct_sent(envid, answers.taken, answers.unauthorized, answers.refused,
                               answers.deferred)
        else:
            origin.envelope_sent(envid, answers.refused, answers.deferred)
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
        """EXTENSION POINT (issue 11, item 2): the SMTP client that delivers
        ``job``'s message to its domain's MX hosts (``Router.route`` gives
        them) is not written yet. Until it is, the job waits in the queue,
        retried with backoff like any temporary failure."""
        raise TemporaryFailure("waiting for outbound SMTP, not yet enabled")

    # -- Table 2 and section 5.2 step 7: the decision and the pull -----------------

    async def report_decision(self, job: DecisionJob, route: Route) -> None:
        store, destination = self.store, self.core.destination
        entry = store.mailbox_entry(job.entry)
        if entry is None or entry.decision is None:
            return
        env = store.in_envelope(entry.envelope_id)
        assert env is not None
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
