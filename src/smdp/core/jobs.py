"""The durable queue's jobs as typed values.

Every step that crosses the network is a queue row written in the same
transaction as its cause (docs/architecture.md, "Life of a message"). The rules
create jobs here; the delivery adapter reads them back with ``decode_job``.
The payload is kept as the same small JSON object as always, so rows queued
by an older version still run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from smdp.store import Store
from smdp.store.records import Job
from smdp.terms import DeliveryMode, JobKind


@dataclass(frozen=True, slots=True)
class SendJob:
    """Section 5.2 step 4 (an envelope), Table 3's direct send (the whole
    message) or the whole message by SMTP: one outbound envelope to its
    destination domain."""

    envid: str
    # The destination domain, for the worker's choice of session without a
    # read (issue 15 item 1); "" in the rows of older versions.
    domain: str = field(default="", compare=False)


# Table 3, sender side: how an outbound envelope travels names its job; a
# domain without an SMDP server gets the whole message by SMTP (docs/smtp.md).
SEND_JOBS = {DeliveryMode.ENVELOPE: JobKind.SEND_ENVELOPE, DeliveryMode.DIRECT: JobKind.SEND_DIRECT,
             DeliveryMode.SMTP: JobKind.SEND_SMTP}


@dataclass(frozen=True, slots=True)
class DecisionJob:
    """Table 2: a recipient's decision on one mailbox entry, to the origin
    (and for an accept, the pull of section 5.2 step 7)."""

    entry: int
    domain: str = field(default="", compare=False)  # the origin's (the sender's) domain


@dataclass(frozen=True, slots=True)
class UnsubscribeJob:
    """UNSUB: the one-click POST of one unsubscribe request (docs/lists.md)."""

    unsubscribe: int


class BadJob(ValueError):
    """A queue row whose payload this version cannot read."""


def queue_send(store: Store, envid: str, mode: DeliveryMode, domain: str = "") -> None:
    store.enqueue(SEND_JOBS[mode], envid, json.dumps({"envid": envid, "domain": domain}))


def queue_decision(store: Store, envid: str, entry_id: int, domain: str = "") -> None:
    # Keyed by the envelope: decisions on one envelope run in order.
    store.enqueue(JobKind.REPORT_DECISION, envid,
                  json.dumps({"entry": entry_id, "domain": domain}))


def queue_unsubscribe(store: Store, unsub_id: int) -> None:
    store.enqueue(JobKind.UNSUBSCRIBE, f"unsubscribe-{unsub_id}",
                  json.dumps({"unsubscribe": unsub_id}))


def decode_job(job: Job) -> SendJob | DecisionJob | UnsubscribeJob:
    try:
        payload = json.loads(job.payload)
        if job.kind is JobKind.UNSUBSCRIBE:
            return UnsubscribeJob(int(payload["unsubscribe"]))
        if job.kind is JobKind.REPORT_DECISION:
            return DecisionJob(int(payload["entry"]), str(payload.get("domain", "")))
        return SendJob(str(payload["envid"]), str(payload.get("domain", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadJob(f"job {job.id} ({job.kind}): unreadable payload {job.payload!r}") from exc
