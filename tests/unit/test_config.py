from __future__ import annotations

from pathlib import Path

import pytest

from smdp.config import ConfigError, load_config, parse_config

MINIMAL = {"server": {"hostname": "SMDP.A.example", "domains": ["A.example"]}}


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, tmp_path)
    assert config.hostname == "smdp.a.example"
    assert config.domains == ("a.example",)
    assert str(config.peer_listener) == "127.0.0.1:2525"
    assert str(config.user_listener) == "127.0.0.1:1110"
    assert config.store_path == tmp_path / "smdp.sqlite3"
    assert config.limits.max_message_size == 25 * 1024 * 1024
    assert config.quality.min_messages == 10
    assert config.delivery.expire_days == 30
    assert config.is_local("A.EXAMPLE") and not config.is_local("b.example")


def test_full_config_file(tmp_path: Path) -> None:
    path = tmp_path / "smdp.toml"
    path.write_text("""
[server]
hostname = "smdp.a.example"
domains = ["a.example", "a.test"]
[listen]
peer = "[::1]:0"
user = "127.0.0.1:0"
[store]
path = "/var/lib/smdp/a.sqlite3"
[limits]
max_recipients = 5
idle_timeout = 10
[quality]
min_messages = 3
alert_below = 0.2
block_below = -0.1
[delivery]
retry_initial = 1
[dns]
nameservers = ["127.0.0.1:5353"]
[peers."B.example"]
hostname = "smdp.b.example"
address = "127.0.0.1"
port = 2600
[peers."c.example"]
hostname = "smdp.c.example"
""")
    config = load_config(path)
    assert config.peer_listener.host == "::1"
    assert config.store_path == Path("/var/lib/smdp/a.sqlite3")
    assert config.limits.max_recipients == 5 and config.limits.idle_timeout == 10.0
    assert config.quality.block_below == -0.1
    assert config.delivery.retry_initial == 1.0
    assert config.dns_nameservers == (("127.0.0.1", 5353),)
    assert config.peers["b.example"].port == 2600
    assert config.peers["c.example"].address == "smdp.c.example"
    assert config.peers["c.example"].port == 2525


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "server.hostname is required"),
        ({"server": {"hostname": "h"}}, "server.domains is required"),
        ({"server": {"hostname": "h", "domains": []}}, "at least one domain"),
        ({**MINIMAL, "bogus": {}}, "unknown setting config.bogus"),
        ({**MINIMAL, "limits": {"max_recipients": "ten"}}, "limits.max_recipients must be a int"),
        ({**MINIMAL, "limits": {"max_recipients": True}}, "limits.max_recipients must be a int"),
        ({**MINIMAL, "limits": {"max_recipients": 0}}, "limits.max_recipients must be positive"),
        ({**MINIMAL, "limits": {"max_command_line": 100}}, "at least 512"),
        ({**MINIMAL, "limits": {"frobs": 1}}, "unknown setting limits.frobs"),
        ({**MINIMAL, "listen": {"peer": "localhost"}}, "listen.peer must look like"),
        ({**MINIMAL, "listen": {"peer": "h:70000"}}, "out of range"),
        ({**MINIMAL, "quality": {"block_below": -2}}, "must lie in [-1, 1]"),
        ({**MINIMAL, "quality": {"min_messages": 0}}, "at least 1"),
        ({**MINIMAL, "quality": {"min_deciders": -1}}, "quality.min_deciders must be 0"),
        ({**MINIMAL, "quality": {"margin": -0.1}}, "quality.margin must lie in [0, 2]"),
        ({**MINIMAL, "quality": {"margin": 2.5}}, "quality.margin must lie in [0, 2]"),
        ({**MINIMAL, "quality": {"probation_per_day": -1}}, "probation_per_day must be 0"),
        ({**MINIMAL, "quality": {"half_life": "soon"}}, "quality.half_life must be seconds"),
        ({**MINIMAL, "quality": {"half_life": "3w"}}, "quality.half_life must be seconds"),
        ({**MINIMAL, "quality": {"half_life": "-1d"}}, "must be 0 (never) or a positive"),
        ({**MINIMAL, "quality": {"half_life": "inf"}}, "must be 0 (never) or a positive"),
        ({**MINIMAL, "quality": {"half_life": True}}, "quality.half_life must be a float"),
        ({**MINIMAL, "store": {"backend": "oracle"}}, "not supported"),
        ({**MINIMAL, "peers": {"b.example": {"port": 1}}}, "peers.b.example.hostname is required"),
        ({**MINIMAL, "delivery": {"expire_days": -1}}, "delivery.expire_days must be positive"),
        ({**MINIMAL, "delivery": {"retry_initial": 0}}, "delivery.retry_initial must be positive"),
        ({**MINIMAL, "delivery": {"in_flow_delay": -1}},
         "delivery.in_flow_delay must be positive or 0"),
        ({**MINIMAL, "store": {"spool_dir": "no-such-dir"}}, "is not a directory"),
        ({**MINIMAL, "notices": {"pending_interval": -1}},
         "notices.pending_interval must be positive or 0"),
        ({**MINIMAL, "notices": {"delivery_reports": "yes"}},
         "notices.delivery_reports must be a bool"),
        ({**MINIMAL, "notices": {"daily": True}}, "unknown setting notices.daily"),
        ({**MINIMAL, "smtp": {"outbound": "yes"}}, "smtp.outbound must be a bool"),
        ({**MINIMAL, "smtp": {"inbound": True}}, "unknown setting smtp.inbound"),
        ({**MINIMAL, "smtp": {"outbound_port": 0}}, "smtp.outbound_port must be a port number"),
        ({**MINIMAL, "smtp": {"outbound_port": 65536}},
         "smtp.outbound_port must be a port number"),
        ({**MINIMAL, "smtp": {"outbound_port": "25"}}, "smtp.outbound_port must be a int"),
        ({**MINIMAL, "security": {"password_memory_kib": 1}}, "at least 8"),
        ({"server": {**MINIMAL["server"], "event_loop": "trio"}},
         "server.event_loop must be 'auto', 'asyncio' or 'uvloop', not 'trio'"),
        ({"server": {**MINIMAL["server"], "event_loop": True}}, "server.event_loop must be a str"),
    ],
)
def test_invalid_settings_name_the_key(tmp_path: Path, doc: dict[str, object],
                                       message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nhostname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_in_flow_delay_zero_turns_the_control_off(tmp_path: Path) -> None:
    config = parse_config({**MINIMAL, "delivery": {"in_flow_delay": 0}}, tmp_path)
    assert config.delivery.in_flow_delay == 0.0
    assert parse_config(MINIMAL, tmp_path).delivery.in_flow_delay == 1.0  # Postfix's default


def test_notices_default_to_reports_on_and_pending_notices_off(tmp_path: Path) -> None:
    """docs/configuration.md [notices]; the demo turns pending notices on."""
    default = parse_config(MINIMAL, tmp_path).notices
    assert (default.delivery_reports, default.pending_interval) == (True, 0.0)
    set_ = parse_config({**MINIMAL, "notices": {"delivery_reports": False,
                                                "pending_interval": 600}}, tmp_path).notices
    assert (set_.delivery_reports, set_.pending_interval) == (False, 600.0)


def test_the_demo_sends_pending_notices(tmp_path: Path) -> None:
    from smdp.server.demo import write_configs

    for path in write_configs(tmp_path, 40000):
        assert load_config(path).notices.pending_interval == 3600.0


def test_smtp_tls_defaults_to_opportunistic_with_mta_sts(tmp_path: Path) -> None:
    tls = parse_config(MINIMAL, tmp_path).smtp_tls
    assert (tls.mode, tls.require_verified, tls.mta_sts, tls.ca) == (
        "opportunistic", (), True, None)
    assert not tls.requires_verified("b.example")


def test_smtp_tls_settings(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("anchors")
    tls = parse_config({**MINIMAL, "smtp": {"tls": {
        "require_verified": ["B.example.", "c.example", "b.example"], "mta_sts": False,
        "ca": "ca.pem"}}}, tmp_path).smtp_tls
    assert tls.require_verified == ("b.example", "c.example")
    assert tls.requires_verified("B.EXAMPLE") and not tls.requires_verified("d.example")
    assert (tls.mta_sts, tls.ca) == (False, tmp_path / "ca.pem")
    everywhere = parse_config({**MINIMAL, "smtp": {"tls": {"mode": "require_verified"}}},
                              tmp_path).smtp_tls
    assert everywhere.requires_verified("any.example")


@pytest.mark.parametrize(("table", "message"), [
    ({"mode": "strict"}, "smtp.tls.mode must be 'opportunistic' or 'require_verified', "
                         "not 'strict'"),
    ({"require_verified": "b.example"}, "smtp.tls.require_verified must be a list"),
    ({"require_verified": [1]}, "smtp.tls.require_verified[] must be a str"),
    ({"require_verified": ["not a domain"]},
     "smtp.tls.require_verified: 'not a domain' is not a domain name"),
    ({"require_verified": ["localhost"]}, "'localhost' is not a domain name"),
    ({"mta_sts": "yes"}, "smtp.tls.mta_sts must be a bool"),
    ({"ca": "missing.pem"}, "smtp.tls.ca: cannot read"),
    ({"dane": True}, "unknown setting smtp.tls.dane"),
])
def test_invalid_smtp_tls_settings_name_the_key(tmp_path: Path, table: dict[str, object],
                                                message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "smtp": {"tls": table}}, tmp_path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def _dkim(entry: object) -> dict[str, object]:
    return {**MINIMAL, "dkim": {"a.example": entry}}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**MINIMAL, "dkim": []}, "dkim must be a dict"),
        ({**MINIMAL, "dkim": {"b.example": {"selector": "s1", "key": "k.pem"}}},
         "dkim.b.example: b.example is not one of server.domains"),
        (_dkim("s1"), "dkim.a.example must be a dict"),
        (_dkim({"key": "k.pem"}), "dkim.a.example.selector is required"),
        (_dkim({"selector": "s1"}), "dkim.a.example.key is required"),
        (_dkim({"selector": "s_1", "key": "k.pem"}), "dkim.a.example.selector must be DNS labels"),
        (_dkim({"selector": "-s", "key": "k.pem"}), "dkim.a.example.selector must be DNS labels"),
        (_dkim({"selector": "s1", "key": "k.pem", "algorithm": "dsa"}),
         "dkim.a.example.algorithm must be 'rsa' or 'ed25519', not 'dsa'"),
        (_dkim({"selector": "s1", "key": "missing.pem"}), "dkim.a.example.key: cannot read"),
        (_dkim({"selector": "s1", "key": "k.pem", "bits": 2048}),
         "unknown setting dkim.a.example.bits"),
    ],
)
def test_invalid_dkim_settings_name_the_key(tmp_path: Path, doc: dict[str, object],
                                            message: str) -> None:
    (tmp_path / "k.pem").write_text("a key")
    with pytest.raises(ConfigError) as info:
        parse_config(doc, tmp_path)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_dkim_settings(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "a.pem").write_text("a key")
    config = parse_config(
        {"server": {"hostname": "smdp.a.example", "domains": ["a.example", "b.example"]},
         "dkim": {"A.example": {"selector": "2026.s1", "key": "keys/a.pem",
                                "algorithm": "ed25519"},
                  "b.example": {"selector": "s1", "key": str(tmp_path / "keys" / "a.pem")}}},
        tmp_path)
    a, b = config.dkim["a.example"], config.dkim["b.example"]
    assert (a.selector, a.key, a.algorithm) == ("2026.s1", tmp_path / "keys" / "a.pem", "ed25519")
    assert (b.selector, b.algorithm) == ("s1", "rsa")
    assert parse_config(MINIMAL, tmp_path).dkim == {}  # type: ignore[arg-type]


def test_the_outbound_smtp_port_is_25_unless_set(tmp_path: Path) -> None:
    """docs/configuration.md [smtp] outbound_port: other values are for
    tests (a loopback server on a free port) and unusual setups."""
    assert parse_config(MINIMAL, tmp_path).smtp.outbound_port == 25
    assert parse_config({**MINIMAL, "smtp": {"outbound_port": 2525}},
                        tmp_path).smtp.outbound_port == 2525


def test_outbound_smtp_is_off_unless_turned_on(tmp_path: Path) -> None:
    """docs/configuration.md [smtp]: off, a domain without an SMDP server fails
    as it always has; on, it is routed to its MX hosts (docs/smtp.md)."""
    assert parse_config(MINIMAL, tmp_path).smtp.outbound is False
    assert parse_config({**MINIMAL, "smtp": {"outbound": True}}, tmp_path).smtp.outbound is True


def test_the_mx_listener_is_off_unless_set(tmp_path: Path) -> None:
    """docs/configuration.md [listen] mx (docs/smtp.md, "The MX")."""
    assert parse_config(MINIMAL, tmp_path).mx_listener is None
    config = parse_config({**MINIMAL, "listen": {"mx": "127.0.0.1:25"}}, tmp_path)
    assert str(config.mx_listener) == "127.0.0.1:25"
    assert ("mx", config.mx_listener) in config.listeners()
    with pytest.raises(ConfigError, match=r"listen\.mx must look like 'host:port'"):
        parse_config({**MINIMAL, "listen": {"mx": "25"}}, tmp_path)
    assert parse_config(MINIMAL, tmp_path).smtp.greylist_delay == 0.0  # off
    config = parse_config({**MINIMAL, "smtp": {"greylist_delay": 300}}, tmp_path)
    assert config.smtp.greylist_delay == 300.0
    with pytest.raises(ConfigError, match=r"smtp\.greylist_delay must be 0 \(off\) or positive"):
        parse_config({**MINIMAL, "smtp": {"greylist_delay": -1}}, tmp_path)
    assert parse_config(MINIMAL, tmp_path).smtp.sender_auth is True  # on by default
    assert parse_config({**MINIMAL, "smtp": {"sender_auth": False}},
                        tmp_path).smtp.sender_auth is False
    with pytest.raises(ConfigError, match=r"smtp\.sender_auth must be a bool"):
        parse_config({**MINIMAL, "smtp": {"sender_auth": "no"}}, tmp_path)


def test_submission_listeners_are_off_unless_set(tmp_path: Path) -> None:
    """docs/configuration.md [listen] submission, submission_tls (docs/smtp.md)."""
    config = parse_config(MINIMAL, tmp_path)
    assert (config.submission_listener, config.submission_tls_listener) == (None, None)
    assert [key for key, _ in config.listeners()] == ["peer", "user"]
    config = parse_config({**MINIMAL, "listen": {"submission": "127.0.0.1:587"}}, tmp_path)
    assert str(config.submission_listener) == "127.0.0.1:587"
    assert ("submission", config.submission_listener) in config.listeners()
    with pytest.raises(ConfigError, match=r"listen\.submission_tls needs tls\.cert and tls\.key"):
        parse_config({**MINIMAL, "listen": {"submission_tls": "127.0.0.1:465"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"listen\.submission must look like 'host:port'"):
        parse_config({**MINIMAL, "listen": {"submission": "587"}}, tmp_path)


def test_imap_listeners_are_off_unless_set(tmp_path: Path) -> None:
    """docs/configuration.md [listen] imap, imap_tls (docs/imap.md)."""
    config = parse_config(MINIMAL, tmp_path)
    assert (config.imap_listener, config.imap_tls_listener) == (None, None)
    config = parse_config({**MINIMAL, "listen": {"imap": "127.0.0.1:143"}}, tmp_path)
    assert str(config.imap_listener) == "127.0.0.1:143"
    assert ("imap", config.imap_listener) in config.listeners()
    with pytest.raises(ConfigError, match=r"listen\.imap_tls needs tls\.cert and tls\.key"):
        parse_config({**MINIMAL, "listen": {"imap_tls": "127.0.0.1:993"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"listen\.imap must look like 'host:port'"):
        parse_config({**MINIMAL, "listen": {"imap": "143"}}, tmp_path)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30d", 30 * 86400.0), ("12h", 43200.0), ("90m", 5400.0), ("45s", 45.0), ("1.5d", 129600.0),
    (" 2D ", 172800.0), ("never", 0.0), ("Never", 0.0), ("600", 600.0), (600, 600.0),
    (0, 0.0), (2.5, 2.5),
])
def test_the_quality_half_life_is_a_duration(text: object, seconds: float) -> None:
    """Issue 16 item 1: ``[quality] half_life`` as seconds or with a unit."""
    config = parse_config({**MINIMAL, "quality": {"half_life": text}}, Path("."))
    assert config.quality.half_life == seconds


def test_the_quality_rules_defaults() -> None:
    """docs/configuration.md, [quality]: the documented defaults."""
    quality = parse_config(MINIMAL, Path(".")).quality
    assert (quality.half_life, quality.min_deciders, quality.margin,
            quality.probation_per_day) == (30 * 86400.0, 3, 0.1, 10)


@pytest.mark.parametrize("setting", ["auto", "asyncio", "uvloop"])
def test_the_event_loop_setting(tmp_path: Path, setting: str) -> None:
    doc = {"server": {**MINIMAL["server"], "event_loop": setting}}
    assert parse_config(doc, tmp_path).event_loop == setting


def test_the_event_loop_defaults_to_what_the_measurement_supports(tmp_path: Path) -> None:
    # docs/benchmarks.md, "Item 3: the event loop".
    assert parse_config(MINIMAL, tmp_path).event_loop == "auto"
