"""Logged-in browsers of the web app (issue 13 item 5; docs/web.md, "Security").

A session is a random token in an HttpOnly, SameSite=Strict cookie, kept
in this process's memory: a restart logs everyone out, which costs a login
and nothing else (no mail state lives here). Each session has its own CSRF
token, which every request that changes something must echo in a header;
the cookie alone proves nothing a cross-site page could not make the
browser send.

Sessions end after ``IDLE`` seconds without a request and ``LIFETIME``
seconds after the login, whichever comes first; a login always makes a new
token (no fixation), and a password change ends every other session of the
user.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

IDLE = 12 * 3600.0
LIFETIME = 7 * 86400.0
# Per process: far more browsers than one server has users, and a bound on
# what logins by a flood of clients can make us hold.
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class WebSession:
    token: str
    user_id: int
    csrf: str
    created: float
    seen: float


class WebSessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_token: dict[str, WebSession] = {}

    def open(self, user_id: int) -> WebSession:
        """A new session for ``user_id``, with tokens of 256 random bits."""
        now = self._clock()
        self._sweep(now)
        if len(self._by_token) >= MAX_SESSIONS:
            # The least recently seen goes: its owner logs in again.
            oldest = min(self._by_token.values(), key=lambda s: s.seen)
            del self._by_token[oldest.token]
        session = WebSession(secrets.token_urlsafe(32), user_id, secrets.token_urlsafe(32),
                             now, now)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None) -> WebSession | None:
        """The live session of ``token``, its idle clock restarted; None when
        there is none or it has ended."""
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > IDLE or now - session.created > LIFETIME:
            del self._by_token[token]
            return None
        session.seen = now
        return session

    def close(self, token: str) -> None:
        self._by_token.pop(token, None)

    def close_others(self, user_id: int, keep: str) -> int:
        """End every session of ``user_id`` but ``keep``; how many ended."""
        gone = [t for t, s in self._by_token.items() if s.user_id == user_id and t != keep]
        for token in gone:
            del self._by_token[token]
        return len(gone)

    def _sweep(self, now: float) -> None:
        gone = [t for t, s in self._by_token.items()
                if now - s.seen > IDLE or now - s.created > LIFETIME]
        for token in gone:
            del self._by_token[token]
