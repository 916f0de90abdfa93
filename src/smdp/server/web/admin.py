"""The administrator's side of the web API (issue 13 item 3; docs/api.md,
"Administration"): peers and their quality over time, blocking and allowing
by hand, suspended senders and spam reports, the delivery queue with a
retry-now, accounts, and health. Only for accounts marked administrator
(``smdp admin grant-admin``); anyone else is refused with 403 (the paths are
no secret: /api/openapi.json lists them for everyone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from smdp.config import Config, Listener
from smdp.core.quality import ALLOWED_BY_HAND, BLOCKED_BY_HAND, judge
from smdp.server.services import WebPort
from smdp.server.web.errors import ApiError
from smdp.server.web.sessions import WebSession
from smdp.store import Store
from smdp.store.records import Quality, User

log = logging.getLogger("smdp.web")

# How far back the quality chart reaches at most.
MAX_HISTORY_DAYS = 366
MAX_REASON = 200


class Host(Protocol):
    """What the admin routes need of the web app (api.py's WebApp)."""

    port: WebPort
    store: Store
    config: Config

    def _require(self, request: web.Request) -> tuple[WebSession | None, User]: ...

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]: ...

    @staticmethod
    def _int(text: str, what: str, low: int, high: int) -> int: ...


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AdminApi:
    def __init__(self, host: Host,
                 listeners: Callable[[], dict[str, Listener]] | None = None) -> None:
        self.host = host
        self.store = host.store
        self.listeners = listeners

    def register(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]]]] = [
            ("GET", "/api/admin/peers", self.peers),
            ("GET", "/api/admin/peers/{server}/history", self.history),
            ("POST", "/api/admin/peers/{server}", self.override),
            ("GET", "/api/admin/senders", self.senders),
            ("POST", "/api/admin/senders/{address}", self.suspension),
            ("GET", "/api/admin/queue", self.queue),
            ("POST", "/api/admin/queue/{id}/retry", self.retry),
            ("GET", "/api/admin/accounts", self.accounts),
            ("GET", "/api/admin/health", self.health),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, handler)

    def _admin(self, request: web.Request) -> User:
        _session, user = self.host._require(request)
        if not self.store.is_admin(user.id):
            raise ApiError(403, "for administrators only")
        return user

    def _peer(self, q: Quality) -> dict[str, Any]:
        verdict = judge(q, self.host.config.quality)
        return {"server": q.server, "messages": q.messages, "votes": q.votes,
                "value": round(q.value, 4), "standing": str(verdict.status),
                "reason": verdict.reason, "override": q.override,
                "override_reason": q.override_reason, "override_at": _iso(q.override_at)}

    async def peers(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response({"peers": [self._peer(q) for q in self.store.all_quality()]})

    async def history(self, request: web.Request) -> web.Response:
        """The chart's points: (time, messages, votes, quality) per sample."""
        self._admin(request)
        server = request.match_info["server"]
        days = self.host._int(request.query.get("days", "30"), "days", 1, MAX_HISTORY_DAYS)
        since = time.time() - days * 86400.0
        points = [{"at": _iso(at), "messages": m, "votes": v,
                   "value": round(v / m, 4) if m else 0.0}
                  for at, m, v in self.store.quality_history(server, since)]
        return web.json_response({"server": server, "points": points})

    async def override(self, request: web.Request) -> web.Response:
        """``{"override": "blocked" | "allowed" | null, "reason"}``: the same as
        ``smdp admin block | allow | unblock``."""
        user = self._admin(request)
        body = await self.host._json(request)
        override, reason = body.get("override"), body.get("reason", "")
        if override not in (BLOCKED_BY_HAND, ALLOWED_BY_HAND, None) \
                or not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise ApiError(400, "send {\"override\": \"blocked\", \"allowed\" or null, "
                                f"\"reason\": at most {MAX_REASON} characters}}")
        server = request.match_info["server"]
        self.store.set_override(server, override, " ".join(reason.split()))
        _log_change(user, f"peer {server} override={override}")
        return web.json_response(self._peer(self.store.quality(server)))

    async def senders(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response({
            "reports": [{"sender": sender, "reports": count}
                        for sender, count in self.store.spam_reports()],
            "suspended": [{"address": address, "reason": reason}
                          for address, reason in self.store.suspended_users()]})

    async def suspension(self, request: web.Request) -> web.Response:
        """``{"suspended": false}`` lifts a suspension (after investigating);
        ``{"suspended": true, "reason"}`` suspends a local sender."""
        user = self._admin(request)
        body = await self.host._json(request)
        suspended, reason = body.get("suspended"), body.get("reason", "")
        if not isinstance(suspended, bool) or not isinstance(reason, str) \
                or len(reason) > MAX_REASON:
            raise ApiError(400, "send {\"suspended\": true or false, \"reason\": at most "
                                f"{MAX_REASON} characters}}")
        address = request.match_info["address"].lower()
        target = self.store.user_by_address(address)
        if target is None:
            raise ApiError(404, f"no account {address} here")
        self.store.set_suspension(
            target.id, (" ".join(reason.split()) or "suspended by the administrator")
            if suspended else None)
        _log_change(user, f"sender {address} suspended={suspended}")
        return web.json_response({"address": target.main_address,
                                  "suspended": self.store.suspension(target.id)})

    async def queue(self, request: web.Request) -> web.Response:
        """The delivery queue, soonest first, and its depth and oldest job
        per peer."""
        self._admin(request)
        jobs = self.store.queue_schedule()
        now = time.time()
        return web.json_response({
            "jobs": [{"id": j.id, "kind": j.kind, "key": j.key, "peer": j.peer,
                      "attempts": j.attempts, "last_error": j.last_error,
                      "next_attempt": _iso(j.next_attempt), "created_at": _iso(j.created_at),
                      "running": j.claimed_until is not None and j.claimed_until > now}
                     for j in jobs],
            "peers": [{"peer": peer, "jobs": count, "oldest": _iso(first)}
                      for peer, count, first in self.store.queue_by_peer()]})

    async def retry(self, request: web.Request) -> web.Response:
        user = self._admin(request)
        job_id = self.host._int(request.match_info["id"], "job id", 1, 2**62)
        if not self.store.retry_now(job_id, time.time()):
            raise ApiError(409, f"job {job_id} is not waiting (it is running now, or done)")
        self.host.port.outbox.wake()
        _log_change(user, f"job {job_id} retry now")
        return web.json_response({"id": job_id, "retrying": True})

    async def accounts(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response({"accounts": [
            {"address": u.main_address, "identities": self.store.identities(u.id),
             "admin": self.store.is_admin(u.id), "suspended": self.store.suspension(u.id)}
            for u in self.store.users()]})

    async def health(self, request: web.Request) -> web.Response:
        self._admin(request)
        waiting = self.store.queue_by_peer()
        oldest = min((first for _peer, _count, first in waiting), default=None)
        try:
            schema: int | None = self.store.schema_version()
            store_ok, store_error = True, ""
        except Exception as exc:  # the store's own failure is the news here
            schema, store_ok, store_error = None, False, str(exc)
        listeners = self.listeners() if self.listeners is not None else {}
        return web.json_response({
            "listeners": {name: str(where) for name, where in listeners.items()},
            "store": {"ok": store_ok, "backend": self.host.config.store_backend,
                      "schema_version": schema, "error": store_error},
            "queue": {"depth": sum(count for _peer, count, _first in waiting),
                      "oldest": _iso(oldest),
                      "oldest_age_seconds": round(time.time() - oldest, 1)
                      if oldest is not None else None}})


def _log_change(user: User, what: str) -> None:
    log.info("admin change by=%s %s", user.main_address, what)
