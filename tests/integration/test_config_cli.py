"""Configuration at start-up: `relay` stops on a bad RELAY_* value with exit 2 and names it.

These run `relay` as a subprocess; the Settings rules themselves are in tests/unit/test_config.py.
"""

from __future__ import annotations

import pytest

from tests.helpers import relay_env, run_relay

BAD_SETTINGS = [
    ("RELAY_PORT", "abc"),
    ("RELAY_ROLES", "api,bogus"),
    ("RELAY_WEBHOOK_RETRY_SCHEDULE", "5x"),
    ("RELAY_POLL_INTERVAL_MAX_S", "0.5"),  # below the minimum set alongside it
    ("RELAY_LOG_FORMAT", "xml"),
    ("RELAY_UPSTREAM_URL", "ftp://x"),
    ("RELAY_WEBHOOK_DENY_CIDRS", "notacidr"),
    ("RELAY_DATABASE_URL", "mysql://db/relay"),
    ("RELAY_WEBHOOK_TIMEOUT_S", "-3s"),
    ("RELAY_WEBHOOK_RETRY_SCHEDULE", ""),
    ("RELAY_WEBHOOK_RETRY_SCHEDULE", " , "),
]


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS, ids=[v for v, _ in BAD_SETTINGS])
async def test_bad_setting_stops_serve_with_exit_2_and_one_line_naming_it(
    variable: str, value: str
) -> None:
    env = relay_env(**{variable: value})
    if variable == "RELAY_POLL_INTERVAL_MAX_S":
        env["RELAY_POLL_INTERVAL_MIN_S"] = "2s"
    run = await run_relay("serve", env=env, timeout=30)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert variable in lines[0]
    assert run.stdout == ""


async def test_bad_roles_flag_is_a_configuration_error_naming_relay_roles() -> None:
    run = await run_relay("serve", "--roles", "api,bogus", env=relay_env(), timeout=30)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert "RELAY_ROLES" in run.stderr


async def test_unknown_command_is_usage_error_exit_2() -> None:
    run = await run_relay("frobnicate", env=relay_env(), timeout=30)
    assert run.returncode == 2
    assert len(run.stderr.strip().splitlines()) == 1
