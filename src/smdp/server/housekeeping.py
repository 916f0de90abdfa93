"""Housekeeping: expiry of held mail and removal of what nobody needs.

PRIOR-ART.md, "Expire held mail": the origin keeps a message at most
``delivery.expire_days`` (the envelope's Expires says until when); then every
recipient who has not decided ends ``expired`` and the body is deleted. The
destination marks the envelopes it still shows as expired. Records kept for
late reject-family decisions go after a second hold period, and the store
gives the freed space back (vacuum).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smdp.server.app import SmdpServer

log = logging.getLogger("smdp.housekeeping")


def run_once(app: SmdpServer, now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    store = app.store
    hold = app.config.delivery.expire_days * 86400.0
    done = {
        "expired_at_origin": store.expire_out_messages(now),
        "expired_at_destination": app.destination.expire(now),
        "purged": store.purge(now - hold),
    }
    store.compact()
    if any(done.values()):
        log.info("housekeeping: %s", done)
    return done


async def housekeeping_loop(app: SmdpServer) -> None:
    interval = app.config.delivery.housekeeping_interval
    while True:
        try:
            run_once(app)
        except Exception:
            log.exception("housekeeping failed; trying again next round")
        await asyncio.sleep(interval)
