"""Housekeeping: expiry of held mail and removal of what nobody needs.

PRIOR-ART.md, "Expire held mail": the origin keeps a message at most
``delivery.expire_days`` (the envelope's Expires says until when); then every
recipient who has not decided ends ``expired`` and the body is deleted. The
destination marks the envelopes it still shows as expired. Records kept for
late reject-family decisions go after a second hold period, and the store
gives the freed space back (vacuum). With ``[notices] pending_interval`` set,
users with envelopes newly waiting for their decision get a notice
(docs/protocol.md, "Notices"), at most once per interval each. Each peer's
quality counters are sampled for the administrator's chart.
"""

from __future__ import annotations

import asyncio
import logging
import time

from smdp.server.services import Core

log = logging.getLogger("smdp.housekeeping")


def run_once(core: Core, now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    hold = core.config.delivery.expire_days * 86400.0
    done = {
        "expired_at_origin": core.origin.expire(now),
        "expired_at_destination": core.destination.expire(now),
        "purged": core.destination.purge(now - hold),
    }
    # The administrator's quality chart (docs/web.md): a sample of each
    # peer's counters that changed, at most one per sample_interval.
    policy = core.config.quality
    core.store.sample_quality(now, policy.sample_interval)
    core.store.drop_quality_samples(now - policy.sample_days * 86400.0)
    interval = core.config.notices.pending_interval
    if interval > 0:
        done["pending_notices"] = core.destination.notify_pending(now, interval)
    core.store.compact()
    if any(done.values()):
        log.info("housekeeping: %s", done)
    return done


async def housekeeping_loop(core: Core) -> None:
    interval = core.config.delivery.housekeeping_interval
    while True:
        try:
            run_once(core)
        except Exception:
            log.exception("housekeeping failed; trying again next round")
        await asyncio.sleep(interval)
