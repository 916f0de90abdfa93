"""The web app's HTTP side (issue 13; docs/web.md, docs/api.md): the JSON API
the pages use, the pages themselves, and the rules every response follows.

A thin adapter like the other ports: every rule it applies belongs to the
core (``Destination.decide`` for the five options, ``Accounts`` for logins
and passwords), and what it shows is what ``ENVS`` and ``ENV`` show on the
user port, as JSON.

aiohttp, not Starlette with uvicorn: one maintained package that runs in the
server's own event loop as a protocol factory beside the other listeners
(``loop.create_server``), with streaming responses for server-sent events
and WebSocket support built in, and no second server framework to embed
(docs/web.md, "Why aiohttp").
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from smdp.core.envelope import decode_envelope_block
from smdp.core.mx import quality_keys
from smdp.core.quality import judge
from smdp.server.accounts import AccountError
from smdp.server.replies import decision_text
from smdp.server.services import WebPort
from smdp.server.web.sessions import WebSession, WebSessions
from smdp.store.records import InEnvelope, MailboxEntry, User
from smdp.terms import Decision, EntryState

log = logging.getLogger("smdp.web")

COOKIE = "smdp_session"
CSRF_HEADER = "X-CSRF-Token"
# The options as the API spells them (docs/api.md): Table 1's, in lower case.
DECISIONS = {
    "accept": Decision.ACCEPT,
    "accept-auth": Decision.ACCEPT_AUTH,
    "reject": Decision.REJECT,
    "reject-spam": Decision.REJECT_SPAM,
    "reject-spammer": Decision.REJECT_SPAMMER,
}
STATE_FILTERS: dict[str, list[str] | None] = {
    "pending": [EntryState.PENDING],
    "all": None,
    "accepted": [EntryState.ACCEPTED, EntryState.FETCHING],
    "rejected": [EntryState.REJECTED, EntryState.SPAM, EntryState.SPAMMER],
}
MAX_PAGE = 200
MAX_BATCH = 500  # envelopes decided in one request
MAX_SEARCH = 200  # characters of a search
# How often the events stream looks for new envelopes, and how often it
# says something anyway (proxies close connections that stay silent).
EVENTS_POLL = 1.0
EVENTS_KEEPALIVE = 15.0
# Every response, page or API: no script but our own files, no framing, no
# sniffing, no referrer leaving with an envelope id in it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
    "/api/openapi.json": ("openapi.json", "application/json"),
}
# Under /api/ without a session: logging in, and the API's own description.
_OPEN = frozenset({"/api/login", "/api/openapi.json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A refusal the client is told about: an HTTP status and one sentence."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address((address or "").partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class WebApp:
    """The application of one server: build it once, serve ``application``."""

    def __init__(self, port: WebPort, *, events_poll: float = EVENTS_POLL) -> None:
        self.port = port
        self.store = port.core.store
        self.config = port.core.config
        self.sessions = WebSessions()
        self.events_poll = events_poll
        self._stopping = asyncio.Event()
        self._assets = {
            path: (resources.files("smdp.server.web").joinpath("static", name).read_bytes(),
                   kind)
            for path, (name, kind) in _ASSETS.items()
        }

    def stop(self) -> None:
        """The server is stopping: open event streams end now."""
        self._stopping.set()

    def application(self) -> web.Application:
        # Request bodies are small JSON: 1 MiB is far above any of them.
        app = web.Application(middlewares=[self._guard], client_max_size=1 << 20)
        app.router.add_get("/", self.asset)
        app.router.add_get("/static/app.js", self.asset)
        app.router.add_get("/static/app.css", self.asset)
        app.router.add_get("/api/openapi.json", self.asset)
        app.router.add_post("/api/login", self.login)
        app.router.add_post("/api/logout", self.logout)
        app.router.add_get("/api/me", self.me)
        app.router.add_post("/api/password", self.password)
        app.router.add_get("/api/envelopes", self.envelopes)
        app.router.add_get("/api/envelopes/{id}", self.envelope)
        app.router.add_post("/api/decisions", self.decisions)
        app.router.add_get("/api/lists", self.lists)
        app.router.add_get("/api/events", self.events)
        return app

    # -- what every request goes through -------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._checked(request, handler)
        except ApiError as exc:
            response = _error(exc.status, exc.message)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/"):
                raise
            response = _error(exc.status, exc.reason)
        except Exception:
            log.exception("web request failed method=%s path=%s", request.method, request.path)
            response = _error(500, "internal error; the server log says more")
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
            if request.path.startswith("/api/"):
                response.headers["Cache-Control"] = "no-store"
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path not in _OPEN:
            self._require(request)  # before anything else: 401 for any /api/ path
        return await handler(request)

    def _require(self, request: web.Request) -> tuple[WebSession, User]:
        """The logged-in session and user of ``request``; for a change, its
        CSRF token checked too. ApiError 401 or 403 otherwise."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise ApiError(401, "log in first")
        if request.method in _UNSAFE_METHODS \
                and request.headers.get(CSRF_HEADER) != session.csrf:
            raise ApiError(403, f"missing or wrong {CSRF_HEADER} header")
        user = self.store.user_by_id(session.user_id)
        if user is None:  # the account was removed while logged in
            self.sessions.close(session.token)
            raise ApiError(401, "log in first")
        return session, user

    # -- pages --------------------------------------------------------------------------------

    async def asset(self, request: web.Request) -> web.Response:
        data, kind = self._assets[request.path]
        return web.Response(body=data, headers={"Content-Type": kind,
                                                "Cache-Control": "no-cache"})

    # -- logging in and out ------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        self._same_origin(request)
        client = request.remote or ""
        if not (request.secure or (self.config.allow_plaintext_login and _is_loopback(client))):
            raise ApiError(403, "TLS required for passwords (use the https address)")
        body = await self._json(request)
        address, password = body.get("address"), body.get("password")
        if not isinstance(address, str) or not isinstance(password, str):
            raise ApiError(400, "send a JSON object with \"address\" and \"password\" strings")
        user = await self.port.accounts.authenticate(address, password)
        if user is None:
            log.info("web login failed user=%s client=%s", address[:100], client)
            await asyncio.sleep(self.port.logins.failed(client, address))
            raise ApiError(401, "authentication failed")
        old = request.cookies.get(COOKIE)
        if old:
            self.sessions.close(old)  # a new token at every login: no fixation
        session = self.sessions.open(user.id)
        log.info("web login ok user=%s client=%s", user.main_address, client)
        response = web.json_response(self._me(user, session))
        response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict",
                            secure=request.secure, path="/")
        return response

    async def logout(self, request: web.Request) -> web.Response:
        session, _user = self._require(request)
        self.sessions.close(session.token)
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/")
        return response

    async def me(self, request: web.Request) -> web.Response:
        session, user = self._require(request)
        return web.json_response(self._me(user, session))

    def _me(self, user: User, session: WebSession) -> dict[str, Any]:
        return {"user": user.main_address, "identities": self.store.identities(user.id),
                "csrf": session.csrf}

    async def password(self, request: web.Request) -> web.Response:
        session, user = self._require(request)
        body = await self._json(request)
        current, new = body.get("current"), body.get("new")
        if not isinstance(current, str) or not isinstance(new, str):
            raise ApiError(400, "send a JSON object with \"current\" and \"new\" strings")
        if not await self.port.accounts.verify(user, current):
            await asyncio.sleep(self.port.logins.failed(request.remote or "", user.main_address))
            raise ApiError(403, "wrong password; the password was not changed")
        try:
            await self.port.accounts.change_password(user, new)
        except AccountError as exc:
            raise ApiError(400, str(exc)) from None
        ended = self.sessions.close_others(user.id, session.token)
        log.info("password changed user=%s via=web sessions_ended=%d", user.main_address, ended)
        return web.json_response({"changed": True, "other_sessions_ended": ended})

    # -- envelopes and decisions -------------------------------------------------------------

    async def envelopes(self, request: web.Request) -> web.Response:
        _session, user = self._require(request)
        query = request.query
        state = query.get("state", "pending")
        if state not in STATE_FILTERS:
            raise ApiError(400, f"state must be one of {', '.join(STATE_FILTERS)}")
        limit = self._int(query.get("limit", "50"), "limit", 1, MAX_PAGE)
        before = (self._int(query["before"], "before", 1, 2**62)
                  if "before" in query else None)
        search = query.get("q", "")
        if len(search) > MAX_SEARCH:
            raise ApiError(400, f"a search is at most {MAX_SEARCH} characters")
        page = self.store.mailbox_page(user.id, STATE_FILTERS[state], search=search,
                                       before=before, limit=limit + 1)
        more = len(page) > limit
        shown = [self._envelope(entry, env) for entry, env in page[:limit]]
        return web.json_response({"envelopes": shown,
                                  "next": shown[-1]["id"] if more else None})

    async def envelope(self, request: web.Request) -> web.Response:
        _session, user = self._require(request)
        entry_id = self._int(request.match_info["id"], "envelope id", 1, 2**62)
        entry = self.store.mailbox_entry(entry_id)
        # The same answer for another user's entry as for none at all.
        if entry is None or entry.user_id != user.id:
            raise ApiError(404, f"no envelope {entry_id} in your mailbox")
        env = self.store.in_envelope(entry.envelope_id)
        if env is None:
            raise ApiError(404, f"no envelope {entry_id} in your mailbox")
        return web.json_response(self._envelope(entry, env))

    async def decisions(self, request: web.Request) -> web.Response:
        """One of the five options on one or several envelopes; each gets its
        own result, as each would on the user port."""
        _session, user = self._require(request)
        body = await self._json(request)
        name, ids = body.get("decision"), body.get("ids")
        if not isinstance(name, str) or name not in DECISIONS:
            raise ApiError(400, f"decision must be one of {', '.join(DECISIONS)}")
        if (not isinstance(ids, list) or not ids or len(ids) > MAX_BATCH
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            raise ApiError(400, f"ids must be a list of 1 to {MAX_BATCH} envelope ids")
        decision = DECISIONS[name]
        results = []
        for entry_id in dict.fromkeys(ids):  # once each, in the order given
            result = self.port.core.destination.decide(user, entry_id, decision)
            entry = result.entry
            message = result.outcome.reason
            if result.outcome.ok and entry is not None:
                env = self.store.in_envelope(entry.envelope_id)
                message = decision_text(decision, result.outcome, entry.state,
                                        env.sender if env else "the sender")
            results.append({"id": entry_id, "ok": result.outcome.ok,
                            "state": str(entry.state) if entry is not None else None,
                            "message": message})
        if any(r["ok"] for r in results):
            self.port.outbox.wake()
        log.info("web decision user=%s decision=%s ids=%d ok=%d", user.main_address, name,
                 len(results), sum(1 for r in results if r["ok"]))
        return web.json_response({"results": results})

    async def lists(self, request: web.Request) -> web.Response:
        _session, user = self._require(request)
        return web.json_response({"entries": [
            {"list": f"{e.direction}-{e.kind}", "address": e.address, "server": e.server,
             "how": str(e.how), "added": _iso(e.added_at), "uses": e.uses}
            for e in self.store.list_entries(user.id)]})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``envelopes`` with the newest pending entry's
        id whenever it changes, so the page fetches its first page again."""
        session, user = self._require(request)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            **SECURITY_HEADERS})
        await response.prepare(request)
        newest: int | None = -1
        quiet_since = time.monotonic()
        while not self._stopping.is_set() and self.sessions.get(session.token) is not None:
            page = self.store.mailbox_page(user.id, [EntryState.PENDING], limit=1)
            now_newest = page[0][0].id if page else None
            if now_newest != newest:
                newest = now_newest
                await response.write(
                    f"event: envelopes\ndata: {json.dumps({'newest': newest})}\n\n".encode())
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE:
                await response.write(b": still here\n\n")
                quiet_since = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.events_poll)
        return response

    def _envelope(self, entry: MailboxEntry, env: InEnvelope) -> dict[str, Any]:
        summary = decode_envelope_block(env.block.encode("utf-8")).summary
        return {
            "id": entry.id,
            "state": "deleted" if entry.deleted else str(entry.state),
            "decision": {v: k for k, v in DECISIONS.items()}.get(entry.decision)
            if entry.decision else None,
            "reason": entry.reason,
            "sender": env.sender,
            "sender_name": summary.from_name,
            "server": env.origin_server,
            "quality": self._quality(env),
            "recipient": entry.recipient,
            "subject": env.subject,
            "to": summary.to,
            "cc": summary.cc,
            "date": summary.date,
            "attachments": {"count": summary.attachments,
                            "names": list(summary.attachment_names)},
            "headlines": list(summary.headlines),
            "size": env.size,
            "received_at": _iso(env.received_at),
            "via": "smtp" if env.via_smtp else "smdp",
            "verified": env.verified_domain,
            "authentication_results": env.smtp_auth,
        }

    def _quality(self, env: InEnvelope) -> dict[str, Any] | None:
        """Section 5.3's indicator for the sending server (for SMTP mail, its
        verified domain; nothing when none was verified)."""
        if env.via_smtp:
            keys = quality_keys(env.verified_domain, None)
            if not keys:
                return None
            key = keys[0]
        else:
            key = env.origin_server
        quality = self.store.quality(key)
        verdict = judge(quality, self.config.quality)
        return {"value": round(quality.value, 4), "messages": quality.messages,
                "votes": quality.votes, "standing": str(verdict.status)}

    # -- reading requests --------------------------------------------------------------------

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return body

    @staticmethod
    def _int(text: str, what: str, low: int, high: int) -> int:
        if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
            raise ApiError(400, f"{what} must be a whole number from {low} to {high}")
        return int(text)

    @staticmethod
    def _same_origin(request: web.Request) -> None:
        """A login posted by another site's page (login CSRF: the victim
        would be logged in as the attacker) is refused: a browser names the
        page's origin in ``Origin``."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            raise ApiError(403, "cross-site request refused")
