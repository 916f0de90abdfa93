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
import base64
import binascii
import contextlib
import contextvars
import hashlib
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import web

from smdp.config import Listener
from smdp.core import unsubscribe
from smdp.core.destination import decided_by
from smdp.core.envelope import decode_envelope_block
from smdp.core.lists import parse_list_request
from smdp.core.mx import quality_keys
from smdp.core.outcomes import Outcome
from smdp.core.quality import judge
from smdp.core.submission import SubmissionError
from smdp.mail.addresses import domain_of
from smdp.mail.compose import (
    AttachedFile,
    ComposeError,
    RecipientError,
    compose_message,
    parse_recipients,
)
from smdp.server.accounts import AccountError
from smdp.server.discovery import with_inbound_server
from smdp.server.replies import decision_text
from smdp.server.services import WebPort
from smdp.server.web import reading
from smdp.server.web.admin import AdminApi
from smdp.server.web.errors import ApiError
from smdp.server.web.sessions import WebSession, WebSessions
from smdp.store.records import InEnvelope, MailboxEntry, User
from smdp.terms import Decision, EntryState

log = logging.getLogger("smdp.web")

COOKIE = "smdp_session"
CSRF_HEADER = "X-CSRF-Token"
# API tokens (docs/api.md, "Tokens"): a prefix a secret scanner can match,
# then 256 random bits; names short enough for a line of the settings page.
TOKEN_PREFIX = "smdp_"
MAX_TOKEN_NAME = 100
MAX_TOKENS = 100  # per user
# "Last used" is a write: at most one a minute per token, not one a request.
TOKEN_TOUCH_EVERY = 60.0
# The Sent view's live event watches the recipients of this many of the
# user's newest messages (the most one page of the view shows).
SENT_WATCHED = 200
# A request's caller once found (with the request, and the hash of its token
# if it came with one), so that the guard's check and the handler's do not
# both read the store. A context variable, set afresh by the guard for each
# request: aiohttp's typed request keys are newer than the aiohttp we need.
_CALLER: contextvars.ContextVar[
    tuple[web.Request, WebSession | None, User, str] | None] = contextvars.ContextVar(
        "smdp_web_caller", default=None)
# The options as the API spells them (docs/api.md): Table 1's, in lower case.
DECISIONS = {decision.word: decision for decision in Decision}
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
# sniffing, no referrer leaving with an envelope id in it. The page frames
# one thing, our own sandboxed HTML body of a message (frame-src 'self').
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; frame-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"),
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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


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

    def __init__(self, port: WebPort, *, events_poll: float = EVENTS_POLL,
                 listeners: Callable[[], dict[str, Listener]] | None = None) -> None:
        self.port = port
        self.store = port.core.store
        self.config = port.core.config
        self.sessions = WebSessions()
        self.events_poll = events_poll
        self._stopping = asyncio.Event()
        self.admin = AdminApi(self, listeners)
        self._assets = {
            path: (resources.files("smdp.server.web").joinpath("static", name).read_bytes(),
                   kind)
            for path, (name, kind) in _ASSETS.items()
        }

    def stop(self) -> None:
        """The server is stopping: open event streams end now."""
        self._stopping.set()

    def application(self) -> web.Application:
        # The largest request is a message composed with its attachments, in
        # base64 (4/3 of the octets) inside JSON: room for the largest message.
        largest = self.config.limits.max_message_size * 4 // 3 + (1 << 20)
        app = web.Application(middlewares=[self._guard], client_max_size=largest)
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
        app.router.add_post("/api/envelopes/{id}/unsubscribe", self.unsubscribe)
        app.router.add_post("/api/decisions", self.decisions)
        app.router.add_get("/api/lists", self.lists)
        app.router.add_post("/api/lists", self.edit_list)
        app.router.add_post("/api/messages", self.compose)
        app.router.add_get("/api/sent", self.sent)
        app.router.add_get("/api/messages/{id}", self.message)
        app.router.add_get("/api/messages/{id}/html", self.message_html)
        app.router.add_get("/api/messages/{id}/attachments/{n}", self.message_attachment)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/tokens", self.tokens)
        app.router.add_post("/api/tokens", self.new_token)
        app.router.add_delete("/api/tokens/{id}", self.revoke_token)
        self.admin.register(app.router)
        return app

    # -- what every request goes through -------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
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
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if request.path.startswith("/api/"):
                response.headers["Cache-Control"] = "no-store"
            # The server's own time for the request (W3C Server Timing):
            # what the browser's tools and bench/web.py read.
            response.headers["Server-Timing"] = \
                f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return response

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        reset = _CALLER.set(None)
        try:
            if request.path.startswith("/api/") and request.path not in _OPEN:
                self._require(request)  # before anything else: 401 for any /api/ path
            return await handler(request)
        finally:
            _CALLER.reset(reset)

    def _require(self, request: web.Request) -> tuple[WebSession | None, User]:
        """The caller of ``request``: its logged-in session and user, or (no
        session) the user of its API token. For a change by session, the
        CSRF token checked too. ApiError 401 or 403 otherwise."""
        known = _CALLER.get()
        if known is not None and known[0] is request:
            return known[1], known[2]
        authorization = request.headers.get("Authorization")
        session: WebSession | None = None
        digest = ""
        if authorization is not None:
            user, digest = self._bearer(authorization)
        else:
            session, user = self._by_session(request)
        _CALLER.set((request, session, user, digest))
        return session, user

    def _by_session(self, request: web.Request) -> tuple[WebSession, User]:
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

    def _bearer(self, authorization: str) -> tuple[User, str]:
        """The owner of the API token in ``Authorization: Bearer``, and the
        token's hash. No CSRF
        token is asked: a browser never adds this header to another site's
        request by itself, as it adds a cookie."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "send \"Authorization: Bearer <token>\" or log in")
        digest = _digest(token.strip())
        found = self.store.api_token_by_hash(digest)
        user = self.store.user_by_id(found.user_id) if found is not None else None
        if found is None or user is None:
            raise ApiError(401, "unknown or revoked token")
        now = time.time()
        if found.last_used is None or now - found.last_used > TOKEN_TOUCH_EVERY:
            self.store.touch_api_token(found.id, now)
        return user, digest

    def _session_only(self, request: web.Request, what: str) -> tuple[WebSession, User]:
        session, user = self._require(request)
        if session is None:
            raise ApiError(403, f"{what} needs a logged-in session, not a token")
        return session, user

    def _alive(self, request: web.Request, session: WebSession | None) -> bool:
        """Whether the caller of a long request (the events stream) may still
        be served: its session open, its token not revoked."""
        if session is not None:
            return self.sessions.get(session.token) is not None
        known = _CALLER.get()
        return known is not None and known[0] is request \
            and self.store.api_token_by_hash(known[3]) is not None

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
            self.port.core.metrics.login_failures.labels("web").inc()
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
        session, _user = self._session_only(request, "logging out")
        self.sessions.close(session.token)
        response = web.Response(status=204)
        response.del_cookie(COOKIE, path="/")
        return response

    async def me(self, request: web.Request) -> web.Response:
        session, user = self._require(request)
        return web.json_response(self._me(user, session))

    def _me(self, user: User, session: WebSession | None) -> dict[str, Any]:
        return {"user": user.main_address, "identities": self.store.identities(user.id),
                "csrf": session.csrf if session is not None else None,
                "admin": self.store.is_admin(user.id)}

    async def password(self, request: web.Request) -> web.Response:
        session, user = self._require(request)
        body = await self._json(request)
        current, new = body.get("current"), body.get("new")
        if not isinstance(current, str) or not isinstance(new, str):
            raise ApiError(400, "send a JSON object with \"current\" and \"new\" strings")
        if not await self.port.accounts.verify(user, current):
            self.port.core.metrics.login_failures.labels("web").inc()
            await asyncio.sleep(self.port.logins.failed(request.remote or "", user.main_address))
            raise ApiError(403, "wrong password; the password was not changed")
        try:
            await self.port.accounts.change_password(user, new)
        except AccountError as exc:
            raise ApiError(400, str(exc)) from None
        # By token, every session ends; the tokens themselves all died with
        # the old password (Accounts.change_password).
        ended = self.sessions.close_others(user.id, session.token if session else "")
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
        # One read of Quality(X) per sending server on the page, not per envelope.
        qualities: dict[str, dict[str, Any] | None] = {}
        shown = [self._envelope(entry, env, qualities) for entry, env in page[:limit]]
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

    async def unsubscribe(self, request: web.Request) -> web.Response:
        """The user port's UNSUB (docs/lists.md): leave the envelope's list."""
        _session, user = self._require(request)
        entry_id = self._int(request.match_info["id"], "envelope id", 1, 2**62)
        entry = self.store.mailbox_entry(entry_id)
        if entry is None or entry.user_id != user.id:
            raise ApiError(404, f"no envelope {entry_id} in your mailbox")
        done = unsubscribe.request(self.store, self.port.core.origin, user, entry_id)
        if not done.ok:
            raise ApiError(400, done.text)
        self.port.outbox.wake()
        return web.json_response({"message": done.text})

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
             "how": str(e.how), "added": _iso(e.added_at), "uses": e.uses,
             "last_used": _iso(e.last_used)}
            for e in self.store.list_entries(user.id)]})

    async def edit_list(self, request: web.Request) -> web.Response:
        """``{"action": "add" | "remove", "list", "address"[, "server"]}``: the
        user port's LISTADD and LISTDEL (protocol.md 12.7)."""
        _session, user = self._require(request)
        body = await self._json(request)
        action, name, address = body.get("action"), body.get("list"), body.get("address")
        server = body.get("server")
        if action not in ("add", "remove") or not isinstance(name, str) \
                or not isinstance(address, str) or not isinstance(server, (str, type(None))):
            raise ApiError(400, "send {\"action\": \"add\" or \"remove\", \"list\", "
                                "\"address\"} and, for inbound lists, \"server\" if you know it")
        parsed = parse_list_request(name, address, server)
        if not isinstance(parsed, Outcome):
            parsed = await with_inbound_server(parsed, self.port.discovery)
        if isinstance(parsed, Outcome):
            raise ApiError(400, parsed.reason)
        outcome = self.port.core.lists.edit(user.id, parsed, adding=action == "add")
        if not outcome.ok:
            raise ApiError(404 if action == "remove" else 400, outcome.reason)
        return web.json_response({"message": outcome.reason})

    # -- sending ------------------------------------------------------------------------------

    async def compose(self, request: web.Request) -> web.Response:
        """A message from its parts, submitted as the user port submits one
        (the origin's rules: From forced to the identity, Bcc stripped, held
        here, envelopes out; docs/api.md, "Sending")."""
        _session, user = self._require(request)
        body = await self._json(request)
        fields = {key: body.get(key) for key in ("to", "cc", "bcc")}
        subject, text = body.get("subject", ""), body.get("text", "")
        identity, files = body.get("from"), body.get("attachments", [])
        if (not all(isinstance(v, (list, type(None))) and all(isinstance(x, str)
                                                               for x in v or [])
                    for v in fields.values())
                or not isinstance(subject, str) or not isinstance(text, str)
                or not isinstance(identity, (str, type(None))) or not isinstance(files, list)):
            raise ApiError(400, "send \"to\", \"cc\", \"bcc\" as lists of addresses, "
                                "\"subject\" and \"text\" as strings, \"from\" as one of "
                                "your identities, \"attachments\" as a list")
        try:
            addresses = {key: parse_recipients(values or []) for key, values in fields.items()}
        except RecipientError as exc:
            raise ApiError(400, f"{exc.value!r} is not an address; nothing was sent") from None
        everyone = [a.addr_spec.lower() for key in ("to", "cc", "bcc") for a in addresses[key]]
        if not everyone:
            raise ApiError(400, "name at least one recipient; nothing was sent")
        chosen = self.port.core.origin.choose_identity(user, identity)
        if not chosen.ok:
            raise ApiError(400, chosen.reason)
        attached = [self._attached(item, n) for n, item in enumerate(files, 1)]
        try:
            raw = compose_message(to=addresses["to"], cc=addresses["cc"], subject=subject,
                                  text=text, domain=domain_of(chosen.reason),
                                  attachments=attached)
        except ComposeError as exc:
            raise ApiError(400, f"{exc}; nothing was sent") from None
        rcpts = list(dict.fromkeys(everyone))
        await self.port.outbox.room_for_submission(domain_of(r) for r in rcpts)
        try:
            result = self.port.core.origin.submit(
                user, chosen.reason, rcpts, raw, spool_dir=self.config.spool_dir,
                client=request.remote or "", protocol="HTTPS" if request.secure else "HTTP")
        except SubmissionError as exc:
            raise ApiError(400, str(exc)) from None
        except OSError as exc:  # a full disk while spooling
            log.error("cannot spool a web submission: %s", exc)
            raise ApiError(507, "insufficient storage on the server; nothing was stored, "
                                "try later") from None
        self.port.outbox.wake()
        log.info("web submission msgid=%s user=%s from=%s to=%s", result.msgid,
                 user.main_address, chosen.reason, ",".join(rcpts))
        return web.json_response({"msgid": result.msgid, "queued": result.queued,
                                  "direct": result.direct, "refused": result.refused},
                                 status=201)

    @staticmethod
    def _attached(item: object, n: int) -> AttachedFile:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("data"), str):
            raise ApiError(400, f"attachment {n} must be {{\"name\", \"type\", \"data\"}} "
                                "with data in base64")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"attachment {n}'s data is not base64") from None
        kind = item.get("type")
        return AttachedFile(item["name"], kind if isinstance(kind, str) else "", data)

    async def sent(self, request: web.Request) -> web.Response:
        """The user's sent messages, newest first, each recipient's state and
        route (the user port's SENT, protocol.md 12.6)."""
        _session, user = self._require(request)
        before = (self._int(request.query["before"], "before", 1, 2**62)
                  if "before" in request.query else None)
        limit = self._int(request.query.get("limit", "50"), "limit", 1, MAX_PAGE)
        messages = self.store.out_messages_of(user.id, limit + 1, before=before)
        more = len(messages) > limit
        shown = []
        for msg in messages[:limit]:
            shown.append({
                "id": msg.id, "msgid": msg.msgid, "from": msg.sender, "subject": msg.subject,
                "size": msg.size, "created_at": _iso(msg.created_at), "held": msg.held,
                "recipients": [
                    {"recipient": r.recipient, "state": str(r.state), "route": str(r.route),
                     "detail": r.detail, "updated_at": _iso(r.updated_at)}
                    for r in self.store.out_recipients(msg.id)]})
        return web.json_response({"messages": shown,
                                  "next": shown[-1]["id"] if more else None})

    # -- API tokens ------------------------------------------------------------------------

    async def tokens(self, request: web.Request) -> web.Response:
        _session, user = self._require(request)
        return web.json_response({"tokens": [
            {"id": t.id, "name": t.name, "created": _iso(t.created_at),
             "last_used": _iso(t.last_used)} for t in self.store.api_tokens(user.id)]})

    async def new_token(self, request: web.Request) -> web.Response:
        """``{"name"}``: a new token, its secret in this answer only. Made
        from a session: a leaked token cannot breed tokens that outlive its
        revocation."""
        _session, user = self._session_only(request, "making a token")
        body = await self._json(request)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_TOKEN_NAME \
                or not name.isprintable():
            raise ApiError(400, f"name the token: 1 to {MAX_TOKEN_NAME} printable characters")
        name = " ".join(name.split())
        if len(self.store.api_tokens(user.id)) >= MAX_TOKENS:
            raise ApiError(400, f"at most {MAX_TOKENS} tokens; revoke one first")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        token_id = self.store.add_api_token(user.id, name, _digest(secret), now)
        log.info("web token made user=%s id=%d", user.main_address, token_id)
        return web.json_response({"id": token_id, "name": name, "token": secret,
                                  "created": _iso(now), "last_used": None}, status=201)

    async def revoke_token(self, request: web.Request) -> web.Response:
        _session, user = self._require(request)
        token_id = self._int(request.match_info["id"], "token id", 1, 2**62)
        if not self.store.drop_api_token(user.id, token_id):
            raise ApiError(404, f"no token {token_id} of yours")
        log.info("web token revoked user=%s id=%d", user.main_address, token_id)
        return web.Response(status=204)

    # -- reading accepted mail -----------------------------------------------------------

    def _readable(self, request: web.Request) -> tuple[MailboxEntry, bytes]:
        """The user's accepted message named in the path, whole. 404 for what
        is not this user's, 409 for an envelope whose message is not here."""
        _session, user = self._require(request)
        entry_id = self._int(request.match_info["id"], "message id", 1, 2**62)
        entry = self.store.mailbox_entry(entry_id)
        if entry is None or entry.user_id != user.id or entry.deleted:
            raise ApiError(404, f"no message {entry_id} in your mailbox")
        env = self.store.in_envelope(entry.envelope_id)
        raw = self.store.in_body(entry.envelope_id) \
            if env is not None and env.has_body and entry.state is EntryState.ACCEPTED else None
        if raw is None:
            raise ApiError(409, f"message {entry_id} is not in your mailbox yet "
                                f"(its envelope is {entry.state}); accept it first")
        return entry, raw

    async def message(self, request: web.Request) -> web.Response:
        entry, raw = self._readable(request)
        view = await asyncio.to_thread(reading.read, raw)
        return web.json_response({
            "id": entry.id, "headers": view.headers, "text": view.text,
            "has_html": view.has_html,
            "attachments": [{"number": a.number, "name": a.name, "type": a.content_type,
                             "size": a.size} for a in view.attachments]})

    async def message_html(self, request: web.Request) -> web.Response:
        """The HTML body, inert, for a sandboxed frame of the page (docs/web.md)."""
        entry, raw = self._readable(request)
        html = await asyncio.to_thread(reading.html_body, raw)
        if html is None:
            raise ApiError(404, f"message {entry.id} has no HTML body")
        remote = request.query.get("remote") == "1"
        cleaned, blocked = await asyncio.to_thread(reading.sanitize, html, remote=remote)
        images = "data: cid: http: https:" if remote else "data: cid:"
        page = ('<!doctype html><meta charset="utf-8"><base target="_blank">'
                f"{cleaned}")
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers={
            # No script at all, whatever slipped through; no frame but ours.
            "Content-Security-Policy": (
                f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; "
                "frame-ancestors 'self'; sandbox allow-popups "
                "allow-popups-to-escape-sandbox"),
            "X-Frame-Options": "SAMEORIGIN",
            "X-Remote-Content-Blocked": str(blocked),
        })

    async def message_attachment(self, request: web.Request) -> web.Response:
        entry, raw = self._readable(request)
        number = self._int(request.match_info["n"], "attachment number", 1, 10_000)
        found = await asyncio.to_thread(reading.attachment, raw, number)
        if found is None:
            raise ApiError(404, f"message {entry.id} has no attachment {number}")
        meta, data = found
        # Always a download, never shown in our origin: an HTML or SVG
        # attachment would otherwise run as our page.
        return web.Response(body=data, headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{quote(meta.name, safe='')}",
        })

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``envelopes`` with the newest pending entry's
        id whenever it changes, so the page fetches its first page again;
        ``sent`` whenever a recipient of one of the user's newest sent
        messages changes state, so the Sent view asks again."""
        session, user = self._require(request)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            **SECURITY_HEADERS})
        await response.prepare(request)
        newest: int | None = -1
        sent: float | None = -1.0
        quiet_since = time.monotonic()
        # A browser closes the stream whenever it likes (a tab closed, a
        # page left): the next write finds the connection gone, and that is
        # the end of the stream, not an error.
        with contextlib.suppress(ConnectionResetError):
            while not self._stopping.is_set() and self._alive(request, session):
                page = self.store.mailbox_page(user.id, [EntryState.PENDING], limit=1)
                now_newest = page[0][0].id if page else None
                now_sent = self.store.sent_changed(user.id, SENT_WATCHED)
                said = False
                if now_newest != newest:
                    newest = now_newest
                    await response.write(
                        f"event: envelopes\ndata: {json.dumps({'newest': newest})}\n\n"
                        .encode())
                    said = True
                if now_sent != sent:
                    sent = now_sent
                    await response.write(
                        f"event: sent\ndata: {json.dumps({'changed': _iso(sent)})}\n\n"
                        .encode())
                    said = True
                if said:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > EVENTS_KEEPALIVE:
                    await response.write(b": still here\n\n")
                    quiet_since = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.events_poll)
        return response

    def _envelope(self, entry: MailboxEntry, env: InEnvelope,
                  qualities: dict[str, dict[str, Any] | None] | None = None) -> dict[str, Any]:
        summary = decode_envelope_block(env.block.encode("utf-8")).summary
        return {
            "id": entry.id,
            "state": "deleted" if entry.deleted else str(entry.state),
            "decision": entry.decision.word if entry.decision else None,
            "decided_by": decided_by(entry),
            "reason": entry.reason,
            "sender": env.sender,
            "sender_name": summary.from_name,
            "server": env.origin_server,
            "quality": self._quality(env, {} if qualities is None else qualities),
            "recipient": entry.recipient,
            "subject": env.subject,
            "to": summary.to,
            "cc": summary.cc,
            "date": summary.date,
            "attachments": {"count": summary.attachments,
                            "names": list(summary.attachment_names)},
            "headlines": list(summary.headlines),
            "list_id": summary.list_id or None,
            "auto_submitted": summary.auto_submitted or None,
            "list_unsubscribe": summary.list_unsubscribe or None,
            "size": env.size,
            "received_at": _iso(env.received_at),
            "via": "smtp" if env.via_smtp else "smdp",
            "verified": env.verified_domain,
            "authentication_results": env.smtp_auth,
        }

    def _quality(self, env: InEnvelope,
                 known: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
        """Section 5.3's indicator for the sending server (for SMTP mail, its
        verified domain; nothing when none was verified); ``known``: those
        already read for this answer, by key."""
        if env.via_smtp:
            keys = quality_keys(env.verified_domain, None)
            if not keys:
                return None
            key = keys[0]
        else:
            key = env.origin_server
        if key not in known:
            known[key] = self._read_quality(key)
        return known[key]

    def _read_quality(self, key: str) -> dict[str, Any]:
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
