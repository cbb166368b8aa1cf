"""Configuration: every RELAY_* value is checked, and a bad one is named.

What `relay serve` does with a bad value (a subprocess) is in
tests/integration/test_config_cli.py.
"""

from __future__ import annotations

import ipaddress
import os

import pytest

from relay.core.config import ConfigError, Settings, load_settings, parse_duration


def test_duration_forms_parse_to_seconds() -> None:
    assert parse_duration("5s") == 5.0
    assert parse_duration("2m") == 120.0
    assert parse_duration("1h") == 3600.0
    assert parse_duration("250ms") == 0.25
    assert parse_duration("1d") == 86400.0
    assert parse_duration("12") == 12.0
    assert parse_duration(1.5) == 1.5


@pytest.mark.parametrize("value", ["5x", "", "s", "0s", "-1s", "5 seconds", True])
def test_malformed_or_non_positive_duration_is_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_retry_schedule_accepts_duration_forms_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAY_WEBHOOK_RETRY_SCHEDULE", "5s,2m,1h")
    monkeypatch.setenv("RELAY_POLL_INTERVAL_MIN_S", "500ms")
    monkeypatch.setenv("RELAY_POLL_INTERVAL_MAX_S", "1m")
    settings = load_settings()
    assert settings.webhook_retry_schedule == (5.0, 120.0, 3600.0)
    assert settings.poll_interval_min_s == 0.5
    assert settings.poll_interval_max_s == 60.0


def test_defaults_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 8080)
    assert settings.upstream_url == "https://api.mindvideo.ai"
    assert settings.roles == ("api", "poller", "dispatcher")
    assert (settings.poll_interval_min_s, settings.poll_interval_max_s) == (1.0, 30.0)
    assert settings.upstream_max_rps == 50
    assert settings.webhook_timeout_s == 10
    assert settings.webhook_retry_schedule == (
        5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800,
    )  # fmt: skip
    # Loopback, unspecified and link-local (IPv4 and IPv6); private ranges stay allowed.
    assert settings.webhook_deny_cidrs == tuple(
        ipaddress.ip_network(n)
        for n in ("127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10")
    )
    assert (settings.log_format, settings.log_level) == ("json", "info")
    assert settings.shutdown_grace_s == 20


def test_roles_keep_the_canonical_order_whatever_the_input_order() -> None:
    assert load_settings(roles="dispatcher, api").roles == ("api", "dispatcher")


def test_poll_interval_bounds_out_of_order_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="RELAY_POLL_INTERVAL_MAX_S"):
        load_settings(poll_interval_min_s="10s", poll_interval_max_s="5s")


def test_upstream_give_up_settings_default_and_accept_durations() -> None:
    defaults = Settings(database_url=None)
    assert (defaults.upstream_not_found_after_s, defaults.task_timeout_s) == (600.0, 86400.0)
    custom = Settings(upstream_not_found_after_s="10m", task_timeout_s="2h")
    assert (custom.upstream_not_found_after_s, custom.task_timeout_s) == (600.0, 7200.0)
