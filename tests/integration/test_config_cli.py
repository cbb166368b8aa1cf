"""Configuration at start-up: `relay` stops on a bad RELAY_* value with exit 2 and names it.

These run `relay` as a subprocess; the Settings rules themselves are in tests/unit/test_config.py.
"""

from __future__ import annotations

from pathlib import Path

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


async def test_misspelt_variable_stops_serve_with_exit_2_naming_the_closest_setting() -> None:
    run = await run_relay("serve", env=relay_env(RELAY_WEBHOOK_TIMEOUT="5s"), timeout=30)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "RELAY_WEBHOOK_TIMEOUT:" in lines[0]
    assert "did you mean RELAY_WEBHOOK_TIMEOUT_S?" in lines[0]
    assert run.stdout == ""


async def test_secret_given_as_value_and_as_file_stops_with_exit_2_naming_both(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "api-key"
    secret.write_text("sk-from-file\n")
    env = relay_env(RELAY_UPSTREAM_API_KEY="sk-inline", RELAY_UPSTREAM_API_KEY_FILE=str(secret))
    run = await run_relay("serve", env=env, timeout=30)
    assert run.returncode == 2
    assert "RELAY_UPSTREAM_API_KEY, RELAY_UPSTREAM_API_KEY_FILE" in run.stderr
    assert "sk-" not in run.stderr  # neither secret is echoed


async def test_database_url_from_a_file_is_used_by_the_cli(tmp_path: Path) -> None:
    # A database URL read from the file reaches the connection attempt: the one-line
    # error names RELAY_DATABASE_URL with the file's host, password masked.
    url_file = tmp_path / "db-url"
    url_file.write_text("postgresql://relay:hunter2@127.0.0.1:1/relay\n")
    run = await run_relay(
        "migrate", env=relay_env(RELAY_DATABASE_URL_FILE=str(url_file)), timeout=30
    )
    assert run.returncode == 2
    assert "RELAY_DATABASE_URL (postgresql://relay:***@127.0.0.1:1/relay)" in run.stderr
    assert "hunter2" not in run.stderr
