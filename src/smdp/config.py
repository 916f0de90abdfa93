"""The server's configuration: one TOML file, validated into typed settings.

Every setting is documented in docs/configuration.md; an invalid file stops the
server at start with one sentence naming the key, never with a traceback.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The configuration is invalid; the message names the offending key."""


# [server] event_loop: what runs the server's asyncio loop. The default is
# what the measurement of docs/benchmarks.md ("Item 3: the event loop") supports.
EVENT_LOOPS = ("auto", "asyncio", "uvloop")
DEFAULT_EVENT_LOOP = "auto"


@dataclass(frozen=True, slots=True)
class PeerServer:
    """An SMDP server: who it is (EHLO identity) and where to connect.

    A setting ([peers] maps domains to them) as much as an answer of
    discovery, so it lives here, below both."""

    hostname: str
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_size: int = 25 * 1024 * 1024
    max_recipients: int = 100
    max_command_line: int = 1000
    max_line_length: int = 1000
    idle_timeout: float = 300.0
    max_sessions: int = 1000  # concurrent sessions per port
    max_sessions_per_client: int = 50  # concurrent sessions per client address, per port


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    """Section 5.3: thresholds on Quality(X) = Votes(X) / Messages(X)."""

    min_messages: int = 10
    alert_below: float = 0.0
    block_below: float = -0.5
    # Issue 16 item 1 (docs/protocol.md 11.3). Votes weigh half as much
    # after each half_life seconds (0: never age, the paper's counters).
    half_life: float = 30 * 86400.0
    # A worse standing needs this many distinct local users who rejected
    # the peer's mail within the last half_life: one recipient cannot sink it
    # (0: none needed, the paper's rule).
    min_deciders: int = 3
    # Hysteresis: a standing is left only once Quality(X) is this much above
    # the threshold that put the peer there.
    margin: float = 0.1
    # Envelopes a day a peer (or sender) blocked by its quality may still
    # send, to be judged by their recipients (0: none).
    probation_per_day: int = 10
    # How often each peer's counters are sampled for the administrator's
    # quality chart (docs/web.md), and how long samples are kept.
    sample_interval: float = 3600.0
    sample_days: float = 90.0


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    retry_initial: float = 2.0
    retry_max: float = 3600.0
    max_attempts: int = 30
    expire_days: float = 30.0
    poll_interval: float = 1.0
    claim_lease: float = 600.0  # seconds a node holds a queue entry before another may take it
    housekeeping_interval: float = 60.0  # seconds between expiry and cleanup runs
    # Postfix's in_flow_delay (and its default): while the delivery worker is
    # behind on a domain, a submission there waits up to this long for it to
    # catch up (0: never waits). Under make load's mix, 1 s finalised 194
    # recipients/s, 5 s only 83/s (submissions idled while the destination
    # was the bottleneck), none 168/s with twice the backlog left.
    in_flow_delay: float = 1.0


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    """Issue 4: limits against envelope floods, password guessing, slow senders
    and local senders reported as spammers."""

    login_failures_per_client: int = 10  # per 15 minutes, then replies slow down
    login_failures_per_account: int = 5  # per 15 minutes, then replies slow down
    login_delay_max: float = 10.0  # seconds: the slowest a failed login gets
    envelopes_per_peer_per_hour: int = 10_000
    envelopes_per_new_peer_per_hour: int = 100  # until the peer's quality is known
    envelopes_per_recipient_per_hour: int = 500
    envelopes_per_session: int = 1_000
    command_timeout: float = 60.0  # seconds for one command line to arrive whole
    min_data_rate: int = 1024  # bytes per second a DATA block must keep up ...
    data_grace: float = 30.0  # ... after this many seconds
    spam_reports_per_day: int = 20  # SPAM/SPAMMER reports before a sender is suspended


@dataclass(frozen=True, slots=True)
class NoticePolicy:
    """[notices]: mail this server writes to its own users (docs/protocol.md,
    "Notices"; issue 10, item 7)."""

    # A delivery status notification (RFC 3464) to the sender when recipients
    # fail for good (unknown user, no such domain, expiry, refused at the source).
    delivery_reports: bool = True
    # Seconds between notices of envelopes waiting for a user's decision
    # (sent by the housekeeping pass, only when a new one waits); 0: none.
    pending_interval: float = 0.0


@dataclass(frozen=True, slots=True)
class UnsubscribeSettings:
    """[unsubscribe]: how the server leaves a list for its user (UNSUB;
    docs/lists.md). The URL of a one-click POST is chosen by the sender, so
    only https to public addresses is ever contacted."""

    timeout: float = 10.0  # seconds for the whole POST, connection to answer
    # Trust anchors for the list's HTTPS certificate; None: the system store.
    ca: Path | None = None
    # FOR TESTS ONLY: let the POST reach loopback addresses (the tests' own
    # HTTPS server on 127.0.0.1). Never set it on a real server: any
    # sender could then make it post to services on its own host.
    allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """[smtp]: mail to domains without an SMDP server (docs/smtp.md)."""

    # False: such a domain fails for good ("no SMDP server", 5.1.2), as
    # before SMTP existed. True: its recipients are routed to its MX hosts
    # and queued as send-smtp jobs (docs/smtp.md, "Routing").
    outbound: bool = False
    # The port outbound SMTP connects to on every MX host: 25, the port of
    # mail between domains (RFC 5321). Another value is for tests (a
    # loopback server on a free port) and unusual setups only.
    outbound_port: int = 25
    # Greylisting at the MX (issue 12 item 4; docs/smtp.md, "Greylisting"):
    # seconds a first-time (MAIL FROM, client prefix) pair waits; 0: off.
    greylist_delay: float = 0.0
    # SPF, DKIM and DMARC on mail arriving at the MX (issue 12 item 2;
    # docs/smtp.md, "Sender authentication"), through [dns] nameservers.
    # False: nothing is checked, no From is ever verified, so no SMTP mail
    # matches a white-list entry and all of it is held for a decision.
    sender_auth: bool = True


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """[tls]: this server's certificate, whom it trusts, and whether peers
    without TLS are refused (docs/protocol.md section 15)."""

    cert: Path | None = None  # PEM chain: shown on both ports and as client certificate
    key: Path | None = None
    ca: Path | None = None  # trust anchors for peer certificates; None: the system store
    require: bool = False  # parsed default: True when a certificate is configured
    # ``require`` was written in the file, not taken by default: without a
    # certificate, only an explicit ``require = false`` lets the listeners
    # leave loopback (docs/protocol.md 15.4).
    require_explicit: bool = False


@dataclass(frozen=True, slots=True)
class SmtpTlsSettings:
    """[smtp.tls]: how mail that leaves by SMTP is protected in transit
    (docs/smtp.md, "Transport security (STARTTLS, MTA-STS)")."""

    # "opportunistic": STARTTLS when offered, delivered without it otherwise
    # (unless MTA-STS or require_verified says more); "require_verified":
    # every SMTP domain needs STARTTLS with a verified certificate.
    mode: str = "opportunistic"
    # Domains whose mail leaves only over TLS with a verified certificate.
    require_verified: tuple[str, ...] = ()
    # Honour MTA-STS policies (RFC 8461); off only on closed networks.
    mta_sts: bool = True
    # Trust anchors for MX certificates and MTA-STS policy hosts; None: the
    # system store (not [tls] ca, which vouches for SMDP peers).
    ca: Path | None = None

    def requires_verified(self, domain: str) -> bool:
        return self.mode == "require_verified" or domain.lower() in self.require_verified


@dataclass(frozen=True, slots=True)
class PeerTrust:
    """[peers."domain"] ca / pin_sha256: how that domain's server is verified
    instead of by [tls] ca (private networks)."""

    ca: Path | None = None  # only certificates issued by (or equal to) these count
    pin_sha256: str | None = None  # only this exact certificate counts


@dataclass(frozen=True, slots=True)
class DkimSetting:
    """[dkim."domain"]: how that domain's mail leaving by SMTP is signed
    (docs/smtp.md, "DKIM"); the key file is read, and kept while it is
    unchanged, by ``smdp.server.dkim_keys``."""

    selector: str
    key: Path
    algorithm: str = "rsa"  # "rsa" (rsa-sha256) or "ed25519" (ed25519-sha256, RFC 8463)


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str
    domains: tuple[str, ...]
    node: str  # this process's name in queue claims; distinct per node sharing a store
    peer_listener: Listener
    user_listener: Listener
    store_path: Path
    store_backend: str = "sqlite"
    store_dsn: str = ""  # PostgreSQL connection string (backend = "postgresql")
    # Where bodies larger than 1 MiB wait while they arrive, before the store
    # has them (anonymous files, gone on close or crash); None: the system's
    # temporary directory.
    spool_dir: str | None = None
    # SQLite: concurrent commits share one fsync of the WAL, every answer
    # held until the commits before it are durable (smdp.store.group_commit);
    # False: an fsync per commit, on the event loop's thread.
    group_commit: bool = True
    limits: Limits = field(default_factory=Limits)
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    delivery: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    abuse: AbusePolicy = field(default_factory=AbusePolicy)
    notices: NoticePolicy = field(default_factory=NoticePolicy)
    unsubscribe: UnsubscribeSettings = field(default_factory=UnsubscribeSettings)
    peers: dict[str, PeerServer] = field(default_factory=dict)
    dns_nameservers: tuple[tuple[str, int], ...] = ()
    tls: TlsSettings = field(default_factory=TlsSettings)
    smtp_tls: SmtpTlsSettings = field(default_factory=SmtpTlsSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    peer_trust: dict[str, PeerTrust] = field(default_factory=dict)
    dkim: dict[str, DkimSetting] = field(default_factory=dict)
    # Implicit-TLS listeners (TLS from the first byte), beside the STARTTLS ports.
    peer_tls_listener: Listener | None = None
    user_tls_listener: Listener | None = None
    # The submission port for mail clients (RFC 6409, STARTTLS; 587 by
    # convention) and its implicit-TLS twin (RFC 8314; 465): off unless set.
    submission_listener: Listener | None = None
    submission_tls_listener: Listener | None = None
    # The MX for mail from the SMTP world (issue 12; port 25 by convention):
    # off unless set.
    mx_listener: Listener | None = None
    # The web app (issue 13; docs/web.md): HTTPS with the user port's
    # certificate, plain HTTP only where passwords may go without TLS.
    web_listener: Listener | None = None
    # Prometheus metrics, /healthz and /readyz (issue 16; docs/operations.md):
    # plain HTTP, off unless set; for loopback or an internal network.
    metrics_listener: Listener | None = None
    # "text" (one line a record) or "json" (one object a line, for log
    # collectors); docs/operations.md.
    log_format: str = "text"
    # "auto" (uvloop when it imports), "asyncio" (never uvloop) or "uvloop"
    # (required); docs/configuration.md, docs/benchmarks.md section 11.
    event_loop: str = DEFAULT_EVENT_LOOP
    # IMAP for mail clients (issue 14; docs/imap.md; 143 by convention,
    # STARTTLS) and its implicit-TLS twin (993): off unless set.
    imap_listener: Listener | None = None
    imap_tls_listener: Listener | None = None
    # [web] https: whether the web listener speaks HTTPS (the user port's
    # certificate). Default: when [tls] has a certificate. Plain HTTP only on
    # loopback, where passwords may also go without TLS (docs/web.md).
    web_https: bool = False
    # Passwords over a connection without TLS: only ever on loopback, and only
    # when this is set (the demo and the tests).
    allow_plaintext_login: bool = False
    # Argon2 cost; lowered only by tests and the demo, never below the floor.
    password_memory_kib: int = 65536
    password_time_cost: int = 3
    config_path: Path | None = None

    def is_local(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def listeners(self) -> list[tuple[str, Listener]]:
        """Every port this server listens on, by its [listen] key."""
        found = [("peer", self.peer_listener), ("user", self.user_listener),
                 ("peer_tls", self.peer_tls_listener), ("user_tls", self.user_tls_listener),
                 ("submission", self.submission_listener),
                 ("submission_tls", self.submission_tls_listener),
                 ("mx", self.mx_listener), ("web", self.web_listener),
                 ("metrics", self.metrics_listener),
                 ("imap", self.imap_listener), ("imap_tls", self.imap_tls_listener)]
        return [(key, listener) for key, listener in found if listener is not None]


def _need(table: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}.{key} is required")
    return _check(table[key], kind, f"{where}.{key}")


def _check(value: Any, kind: type, name: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be a {kind.__name__}, not {value!r}")
    return value


def _opt(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    if key not in table:
        return default
    return _check(table[key], kind, f"{where}.{key}")


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: Any, name: str) -> float:
    """Seconds from a number or a text such as "30d", "12h", "90m", "45s";
    "never" (or 0) is 0."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "never":
            return 0.0
        unit = _UNITS.get(text[-1:])
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1.0)
        except ValueError:
            raise ConfigError(f"{name} must be seconds or a duration such as \"30d\", "
                              f"not {value!r}") from None
    else:
        seconds = _check(value, float, name)
    if not 0.0 <= seconds < float("inf"):
        raise ConfigError(f"{name} must be 0 (never) or a positive duration, not {value!r}")
    return seconds


def _listener(text: str, name: str) -> Listener:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(f"{name} must look like 'host:port', not {text!r}")
    host = host.strip("[]")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: port {port} is out of range")
    if not host:
        raise ConfigError(f"{name}: the host is missing")
    return Listener(host, port)


# Settings for which 0 turns a feature off; every other number must be positive.
_ZERO_MEANS_OFF = frozenset({"delivery.in_flow_delay", "notices.pending_interval"})


def _positive(value: float, name: str) -> None:
    zero_means_off = name in _ZERO_MEANS_OFF
    if zero_means_off and value == 0:
        return
    if value <= 0:
        raise ConfigError(f"{name} must be positive{' or 0' if zero_means_off else ''}, "
                          f"not {value}")


def _reject_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"unknown setting {where}.{unknown[0]}")


def parse_config(data: dict[str, Any], base_dir: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML document; relative paths are taken from base_dir."""
    _reject_unknown(data, {"server", "listen", "store", "limits", "quality", "delivery",
                           "peers", "dns", "security", "abuse", "tls", "notices", "smtp",
                           "dkim", "web", "unsubscribe"},
                    "config")
    server = _check(data.get("server", {}), dict, "server")
    _reject_unknown(server, {"hostname", "domains", "node", "log_format", "event_loop"},
                    "server")
    log_format = _opt(server, "log_format", str, "text", "server")
    if log_format not in ("text", "json"):
        raise ConfigError(f"server.log_format must be 'text' or 'json', not {log_format!r}")
    event_loop = _opt(server, "event_loop", str, DEFAULT_EVENT_LOOP, "server")
    if event_loop not in EVENT_LOOPS:
        raise ConfigError("server.event_loop must be 'auto', 'asyncio' or 'uvloop', "
                          f"not {event_loop!r}")
    hostname = _need(server, "hostname", str, "server").lower()
    domains_raw = _need(server, "domains", list, "server")
    if not domains_raw:
        raise ConfigError("server.domains must list at least one domain")
    domains = tuple(_check(d, str, "server.domains[]").lower() for d in domains_raw)

    listen = _check(data.get("listen", {}), dict, "listen")
    _reject_unknown(listen, {"peer", "user", "peer_tls", "user_tls", "submission",
                             "submission_tls", "mx", "web", "metrics", "imap",
                             "imap_tls"}, "listen")
    peer_listener = _listener(_opt(listen, "peer", str, "127.0.0.1:2525", "listen"), "listen.peer")
    user_listener = _listener(_opt(listen, "user", str, "127.0.0.1:1110", "listen"), "listen.user")
    tls_listeners = {
        key: _listener(_check(listen[key], str, f"listen.{key}"), f"listen.{key}")
        for key in ("peer_tls", "user_tls", "submission_tls", "imap_tls") if key in listen
    }
    submission_listener = (
        _listener(_check(listen["submission"], str, "listen.submission"), "listen.submission")
        if "submission" in listen else None)
    mx_listener = (_listener(_check(listen["mx"], str, "listen.mx"), "listen.mx")
                   if "mx" in listen else None)
    web_listener = (_listener(_check(listen["web"], str, "listen.web"), "listen.web")
                    if "web" in listen else None)
    metrics_listener = (
        _listener(_check(listen["metrics"], str, "listen.metrics"), "listen.metrics")
        if "metrics" in listen else None)
    imap_listener = (_listener(_check(listen["imap"], str, "listen.imap"), "listen.imap")
                     if "imap" in listen else None)

    store = _check(data.get("store", {}), dict, "store")
    _reject_unknown(store, {"backend", "path", "dsn", "spool_dir", "group_commit"}, "store")
    group_commit = _opt(store, "group_commit", bool, True, "store")
    backend = _opt(store, "backend", str, "sqlite", "store")
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"store.backend {backend!r} is not supported (use 'sqlite' or 'postgresql')"
        )
    dsn = _opt(store, "dsn", str, "", "store")
    if backend == "postgresql" and not dsn:
        raise ConfigError("store.dsn is required when store.backend is 'postgresql'")
    store_path = Path(_opt(store, "path", str, "smdp.sqlite3", "store"))
    spool_setting = _opt(store, "spool_dir", str, "", "store")
    spool_dir = str(base_dir / spool_setting) if spool_setting else None
    if spool_dir is not None and not Path(spool_dir).is_dir():
        raise ConfigError(f"store.spool_dir {spool_dir!r} is not a directory")
    if not store_path.is_absolute():
        store_path = base_dir / store_path

    lim = _check(data.get("limits", {}), dict, "limits")
    _reject_unknown(lim, set(Limits.__dataclass_fields__), "limits")
    d = Limits()
    limits = Limits(
        max_message_size=_opt(lim, "max_message_size", int, d.max_message_size, "limits"),
        max_recipients=_opt(lim, "max_recipients", int, d.max_recipients, "limits"),
        max_command_line=_opt(lim, "max_command_line", int, d.max_command_line, "limits"),
        max_line_length=_opt(lim, "max_line_length", int, d.max_line_length, "limits"),
        idle_timeout=_opt(lim, "idle_timeout", float, d.idle_timeout, "limits"),
        max_sessions=_opt(lim, "max_sessions", int, d.max_sessions, "limits"),
        max_sessions_per_client=_opt(lim, "max_sessions_per_client", int,
                                     d.max_sessions_per_client, "limits"),
    )
    for name in Limits.__dataclass_fields__:
        _positive(getattr(limits, name), f"limits.{name}")
    if limits.max_command_line < 512:
        raise ConfigError("limits.max_command_line must be at least 512 (RFC 5321 4.5.3.1.4)")

    q = _check(data.get("quality", {}), dict, "quality")
    _reject_unknown(q, set(QualityPolicy.__dataclass_fields__), "quality")
    dq = QualityPolicy()
    quality = QualityPolicy(
        min_messages=_opt(q, "min_messages", int, dq.min_messages, "quality"),
        alert_below=_opt(q, "alert_below", float, dq.alert_below, "quality"),
        block_below=_opt(q, "block_below", float, dq.block_below, "quality"),
        sample_interval=_opt(q, "sample_interval", float, dq.sample_interval, "quality"),
        sample_days=_opt(q, "sample_days", float, dq.sample_days, "quality"),
        half_life=_duration(q.get("half_life", dq.half_life), "quality.half_life"),
        min_deciders=_opt(q, "min_deciders", int, dq.min_deciders, "quality"),
        margin=_opt(q, "margin", float, dq.margin, "quality"),
        probation_per_day=_opt(q, "probation_per_day", int, dq.probation_per_day, "quality"),
    )
    _positive(quality.sample_interval, "quality.sample_interval")
    _positive(quality.sample_days, "quality.sample_days")
    if quality.min_messages < 1:
        raise ConfigError("quality.min_messages must be at least 1")
    if quality.min_deciders < 0:
        raise ConfigError("quality.min_deciders must be 0 (the paper's rule) or more")
    if not 0.0 <= quality.margin <= 2.0:
        raise ConfigError("quality.margin must lie in [0, 2]")
    if quality.probation_per_day < 0:
        raise ConfigError("quality.probation_per_day must be 0 or more")
    for name in ("alert_below", "block_below"):
        if not -1.0 <= getattr(quality, name) <= 1.0:
            raise ConfigError(f"quality.{name} must lie in [-1, 1] (the range of Quality(X))")

    dl = _check(data.get("delivery", {}), dict, "delivery")
    _reject_unknown(dl, set(DeliveryPolicy.__dataclass_fields__), "delivery")
    dd = DeliveryPolicy()
    delivery = DeliveryPolicy(**{
        name: _opt(dl, name, type(getattr(dd, name)), getattr(dd, name), "delivery")
        for name in DeliveryPolicy.__dataclass_fields__
    })
    for name in DeliveryPolicy.__dataclass_fields__:
        _positive(getattr(delivery, name), f"delivery.{name}")

    ab = _check(data.get("abuse", {}), dict, "abuse")
    _reject_unknown(ab, set(AbusePolicy.__dataclass_fields__), "abuse")
    da = AbusePolicy()
    abuse = AbusePolicy(**{
        name: _opt(ab, name, type(getattr(da, name)), getattr(da, name), "abuse")
        for name in AbusePolicy.__dataclass_fields__
    })
    for name in AbusePolicy.__dataclass_fields__:
        _positive(getattr(abuse, name), f"abuse.{name}")

    nt = _check(data.get("notices", {}), dict, "notices")
    _reject_unknown(nt, set(NoticePolicy.__dataclass_fields__), "notices")
    dn = NoticePolicy()
    notices = NoticePolicy(
        delivery_reports=_opt(nt, "delivery_reports", bool, dn.delivery_reports, "notices"),
        pending_interval=_opt(nt, "pending_interval", float, dn.pending_interval, "notices"),
    )
    _positive(notices.pending_interval, "notices.pending_interval")

    un = _check(data.get("unsubscribe", {}), dict, "unsubscribe")
    _reject_unknown(un, {"timeout", "ca", "allow_loopback"}, "unsubscribe")
    unsubscribe = UnsubscribeSettings(
        timeout=_opt(un, "timeout", float, 10.0, "unsubscribe"),
        ca=_file(un, "ca", "unsubscribe", base_dir),
        allow_loopback=_opt(un, "allow_loopback", bool, False, "unsubscribe"),
    )
    _positive(unsubscribe.timeout, "unsubscribe.timeout")

    tls = _parse_tls(_check(data.get("tls", {}), dict, "tls"), base_dir)
    web_table = _check(data.get("web", {}), dict, "web")
    _reject_unknown(web_table, {"https"}, "web")
    web_https = _opt(web_table, "https", bool, tls.cert is not None, "web")
    if web_https and tls.cert is None:
        raise ConfigError("web.https = true needs tls.cert and tls.key (the user port's "
                          "certificate), or web.https = false on a loopback listener")
    for key in tls_listeners:
        if tls.cert is None:
            raise ConfigError(f"listen.{key} needs tls.cert and tls.key")

    smtp_table = _check(data.get("smtp", {}), dict, "smtp")
    _reject_unknown(smtp_table, {"tls", *SmtpSettings.__dataclass_fields__}, "smtp")
    smtp_tls = _parse_smtp_tls(_check(smtp_table.get("tls", {}), dict, "smtp.tls"), base_dir)

    peers_raw = _check(data.get("peers", {}), dict, "peers")
    peers: dict[str, PeerServer] = {}
    peer_trust: dict[str, PeerTrust] = {}
    for domain, entry in peers_raw.items():
        where = f"peers.{domain}"
        entry = _check(entry, dict, where)
        _reject_unknown(entry, {"hostname", "address", "port", "ca", "pin_sha256"}, where)
        trust = _peer_trust(entry, where, base_dir)
        if trust is not None:
            peer_trust[domain.lower()] = trust
        if trust is not None and "hostname" not in entry:
            continue  # only how to verify the domain's server; discovery stays DNS
        peers[domain.lower()] = PeerServer(
            hostname=_need(entry, "hostname", str, where).lower(),
            address=_opt(entry, "address", str, _need(entry, "hostname", str, where), where),
            port=_opt(entry, "port", int, 2525, where),
        )

    dns = _check(data.get("dns", {}), dict, "dns")
    _reject_unknown(dns, {"nameservers"}, "dns")
    nameservers = tuple(
        (ls.host, ls.port)
        for ls in (_listener(_check(n, str, "dns.nameservers[]"), "dns.nameservers[]")
                   for n in _opt(dns, "nameservers", list, [], "dns"))
    )

    outbound_port = _opt(smtp_table, "outbound_port", int, 25, "smtp")
    if isinstance(outbound_port, bool) or not 1 <= outbound_port <= 65535:
        raise ConfigError(f"smtp.outbound_port must be a port number (1-65535), "
                          f"not {outbound_port!r}")
    greylist_delay = _opt(smtp_table, "greylist_delay", float, 0.0, "smtp")
    if greylist_delay < 0:
        raise ConfigError(f"smtp.greylist_delay must be 0 (off) or positive, "
                          f"not {greylist_delay}")
    smtp = SmtpSettings(outbound=_opt(smtp_table, "outbound", bool, False, "smtp"),
                        outbound_port=outbound_port, greylist_delay=greylist_delay,
                        sender_auth=_opt(smtp_table, "sender_auth", bool, True, "smtp"))

    sec = _check(data.get("security", {}), dict, "security")
    _reject_unknown(sec, {"password_memory_kib", "password_time_cost",
                          "allow_plaintext_login"}, "security")
    memory = _opt(sec, "password_memory_kib", int, 65536, "security")
    if memory < 8:
        raise ConfigError("security.password_memory_kib must be at least 8")
    time_cost = _opt(sec, "password_time_cost", int, 3, "security")
    _positive(time_cost, "security.password_time_cost")

    return Config(
        hostname=hostname,
        domains=domains,
        node=_opt(server, "node", str, hostname, "server"),
        log_format=log_format,
        event_loop=event_loop,
        peer_listener=peer_listener,
        user_listener=user_listener,
        store_path=store_path,
        store_backend=backend,
        store_dsn=dsn,
        spool_dir=spool_dir,
        group_commit=group_commit,
        limits=limits,
        quality=quality,
        delivery=delivery,
        abuse=abuse,
        notices=notices,
        unsubscribe=unsubscribe,
        peers=peers,
        dns_nameservers=nameservers,
        tls=tls,
        smtp_tls=smtp_tls,
        smtp=smtp,
        peer_trust=peer_trust,
        dkim=_parse_dkim(_check(data.get("dkim", {}), dict, "dkim"), domains, base_dir),
        peer_tls_listener=tls_listeners.get("peer_tls"),
        user_tls_listener=tls_listeners.get("user_tls"),
        submission_listener=submission_listener,
        submission_tls_listener=tls_listeners.get("submission_tls"),
        mx_listener=mx_listener,
        web_listener=web_listener,
        metrics_listener=metrics_listener,
        imap_listener=imap_listener,
        imap_tls_listener=tls_listeners.get("imap_tls"),
        web_https=web_https,
        allow_plaintext_login=_opt(sec, "allow_plaintext_login", bool, False, "security"),
        password_memory_kib=memory,
        password_time_cost=time_cost,
        config_path=source,
    )


def _file(table: dict[str, Any], key: str, where: str, base_dir: Path) -> Path | None:
    """An optional file setting, relative to the configuration's folder; it
    must exist now, so that a typo stops the server at start, not at the
    first handshake."""
    if key not in table:
        return None
    path = Path(_check(table[key], str, f"{where}.{key}"))
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise ConfigError(f"{where}.{key}: cannot read {path}")
    return path


def _parse_tls(table: dict[str, Any], base_dir: Path) -> TlsSettings:
    _reject_unknown(table, {"cert", "key", "ca", "require"}, "tls")
    cert = _file(table, "cert", "tls", base_dir)
    key = _file(table, "key", "tls", base_dir)
    if (cert is None) != (key is None):
        raise ConfigError("tls.cert and tls.key go together: give both or neither")
    # Secure by default: a server that can prove who it is demands the same
    # of its peers, unless the administrator explicitly says otherwise.
    require = _opt(table, "require", bool, cert is not None, "tls")
    if require and cert is None:
        raise ConfigError("tls.require = true needs tls.cert and tls.key: without a "
                          "certificate this server cannot prove it speaks for its domains")
    return TlsSettings(cert=cert, key=key, ca=_file(table, "ca", "tls", base_dir),
                       require=require, require_explicit="require" in table)


_SMTP_TLS_MODES = ("opportunistic", "require_verified")


def _parse_smtp_tls(table: dict[str, Any], base_dir: Path) -> SmtpTlsSettings:
    _reject_unknown(table, {"mode", "require_verified", "mta_sts", "ca"}, "smtp.tls")
    mode = _opt(table, "mode", str, "opportunistic", "smtp.tls")
    if mode not in _SMTP_TLS_MODES:
        raise ConfigError(f"smtp.tls.mode must be 'opportunistic' or 'require_verified', "
                          f"not {mode!r}")
    domains = []
    for item in _opt(table, "require_verified", list, [], "smtp.tls"):
        name = _check(item, str, "smtp.tls.require_verified[]").strip().rstrip(".").lower()
        if not _DOMAIN_RE.fullmatch(name):
            raise ConfigError(f"smtp.tls.require_verified: {item!r} is not a domain name")
        domains.append(name)
    return SmtpTlsSettings(mode=mode, require_verified=tuple(dict.fromkeys(domains)),
                           mta_sts=_opt(table, "mta_sts", bool, True, "smtp.tls"),
                           ca=_file(table, "ca", "smtp.tls", base_dir))


_DOMAIN_RE = re.compile(r"(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
                        r"(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+")


# A selector is one or more DNS labels (RFC 6376 3.1): letters, digits, hyphens.
_SELECTOR_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


def _parse_dkim(table: dict[str, Any], domains: tuple[str, ...],
                base_dir: Path) -> dict[str, DkimSetting]:
    settings: dict[str, DkimSetting] = {}
    for domain, entry in table.items():
        where = f"dkim.{domain}"
        entry = _check(entry, dict, where)
        _reject_unknown(entry, {"selector", "key", "algorithm"}, where)
        if domain.lower() not in domains:
            raise ConfigError(f"{where}: {domain} is not one of server.domains; only mail "
                              "from this server's own domains is signed")
        selector = _need(entry, "selector", str, where)
        if not _SELECTOR_RE.fullmatch(selector):
            raise ConfigError(f"{where}.selector must be DNS labels (letters, digits, '-', "
                              f"separated by '.'), not {selector!r}")
        algorithm = _opt(entry, "algorithm", str, "rsa", where)
        if algorithm not in ("rsa", "ed25519"):
            raise ConfigError(f"{where}.algorithm must be 'rsa' or 'ed25519', not {algorithm!r}")
        _need(entry, "key", str, where)
        key = _file(entry, "key", where, base_dir)
        assert key is not None  # _need saw it
        settings[domain.lower()] = DkimSetting(selector=selector, key=key, algorithm=algorithm)
    return settings


def _peer_trust(entry: dict[str, Any], where: str, base_dir: Path) -> PeerTrust | None:
    ca = _file(entry, "ca", where, base_dir)
    pin = None
    if "pin_sha256" in entry:
        text = _check(entry["pin_sha256"], str, f"{where}.pin_sha256")
        pin = normalize_fingerprint(text)
        if pin is None:
            raise ConfigError(f"{where}.pin_sha256 must be 64 hexadecimal digits "
                              f"(colons allowed), not {text!r}")
    if ca is None and pin is None:
        return None
    return PeerTrust(ca=ca, pin_sha256=pin)


_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")


def normalize_fingerprint(text: str) -> str | None:
    """A SHA-256 fingerprint as ``AB:CD:...`` (openssl's form) or plain hex,
    in plain lower-case hex; None if malformed."""
    value = text.strip().replace(":", "").lower()
    return value if _FINGERPRINT_RE.fullmatch(value) else None


def load_config(path: Path | str) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_config(data, path.parent.resolve(), path)
