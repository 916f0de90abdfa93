"""What each adapter is given: the few collaborators it uses, by name.

The app (``app.py``) builds these once and hands each port and the delivery
worker its own; nothing reaches into the app. A test builds any of them from
real parts (a SQLite store in a temporary folder, a ``Config``, a
``Discovery`` with a static map) without starting a server.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from smdp.config import Config
from smdp.core.destination import Destination
from smdp.core.lists import Lists
from smdp.core.origin import Origin
from smdp.core.sender_auth import SenderAuthenticator
from smdp.server.accounts import Accounts
from smdp.server.discovery import Discovery
from smdp.server.greylist import Greylist
from smdp.server.metrics import Metrics
from smdp.server.ratelimit import Window
from smdp.server.tls import TlsPolicy
from smdp.store import Store


@dataclass(frozen=True, slots=True)
class Core:
    """The rules over one store, and the settings they run under."""

    config: Config
    store: Store
    origin: Origin
    destination: Destination
    lists: Lists
    # What the adapters count for the operator (docs/operations.md).
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.destination.decided = self.metrics.decided

    @classmethod
    def build(cls, config: Config, store: Store) -> Core:
        return cls(
            config, store,
            Origin(store, hostname=config.hostname, expire_days=config.delivery.expire_days,
                   spam_reports_per_day=config.abuse.spam_reports_per_day,
                   delivery_reports=config.notices.delivery_reports,
                   max_message_size=config.limits.max_message_size),
            Destination(store, quality=config.quality, hostname=config.hostname),
            Lists(store),
        )


class Outbox(Protocol):
    """What the user port needs of the delivery worker."""

    def wake(self) -> None:
        """New work is queued: look now rather than at the next poll."""

    async def room_for_submission(self, domains: Iterable[str]) -> float:
        """In-flow control: wait while delivery to ``domains`` lags."""


class PeerQuotas:
    """Issue 4, envelope floods: envelopes per peer and per recipient, per hour."""

    def __init__(self) -> None:
        self.by_peer = Window(3600.0)
        self.by_recipient = Window(3600.0)


class LoginThrottle:
    """Issue 4, password guessing: each failed login slows the next replies
    to the same client and for the same account name."""

    def __init__(self, config: Config) -> None:
        self.abuse = config.abuse
        self.by_client = Window(900.0)
        self.by_account = Window(900.0)

    def failed(self, client: str, name: str) -> float:
        """Record a failed login; the delay before its reply, in seconds."""
        by_client = self.by_client.add(client)
        by_account = self.by_account.add(name.lower())
        excess = max(by_client - self.abuse.login_failures_per_client,
                     by_account - self.abuse.login_failures_per_account)
        if excess <= 0:
            return 0.2
        return float(min(self.abuse.login_delay_max, 0.5 * 2 ** min(excess, 16)))


@dataclass(frozen=True, slots=True)
class PeerPort:
    """The peer port's collaborators (Table 4)."""

    core: Core
    tls: TlsPolicy
    discovery: Discovery
    quotas: PeerQuotas


@dataclass(frozen=True, slots=True)
class UserPort:
    """The user port's collaborators (Table 5)."""

    core: Core
    tls: TlsPolicy
    discovery: Discovery
    accounts: Accounts
    outbox: Outbox
    logins: LoginThrottle


@dataclass(frozen=True, slots=True)
class SubmissionPort:
    """The submission port's collaborators (RFC 6409, RFC 8314; docs/smtp.md).

    ``accounts`` and ``logins`` are the user port's own objects: the same
    accounts, and failed logins on either port slow down the other too.
    """

    core: Core
    tls: TlsPolicy
    accounts: Accounts
    outbox: Outbox
    logins: LoginThrottle


@dataclass(frozen=True, slots=True)
class ImapPort:
    """The IMAP port's collaborators (issue 14; docs/imap.md): the user
    port's own accounts and login windows, like submission's, and the
    delivery worker to wake when a decision queued work."""

    core: Core
    tls: TlsPolicy
    accounts: Accounts
    outbox: Outbox
    logins: LoginThrottle


@dataclass(frozen=True, slots=True)
class WebPort:
    """The web app's collaborators (issue 13; docs/web.md): the user port's
    own accounts and login windows, so a password guessed on one door is
    slowed down on every other."""

    core: Core
    tls: TlsPolicy
    discovery: Discovery
    accounts: Accounts
    outbox: Outbox
    logins: LoginThrottle


@dataclass(frozen=True, slots=True)
class MxPort:
    """The MX's collaborators (issue 12; docs/smtp.md, "The MX").

    ``quotas`` is the peer port's own object: messages per recipient and hour
    count across both doors, and the MX keys its per-sender window by the
    client's address. ``authenticator`` checks SPF at MAIL FROM and DKIM and
    DMARC after the message (``core/sender_auth.py``).
    """

    core: Core
    tls: TlsPolicy
    quotas: PeerQuotas
    authenticator: SenderAuthenticator
    greylist: Greylist | None = None  # [smtp] greylist_delay; None: off
