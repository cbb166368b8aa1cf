"""Where settings come from besides plain variables: secret files, and typos caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.core.config import (
    ConfigError,
    known_variables,
    load_settings,
    secret_file_values,
    unknown_variable_errors,
)

DB_URL = "postgresql://relay:s3cret@db/relay"


def test_secret_files_are_read_with_the_trailing_newline_dropped(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(DB_URL + "\n")
    (tmp_path / "key").write_text("sk-upstream\r\n")
    values = secret_file_values(
        {
            "RELAY_DATABASE_URL_FILE": str(tmp_path / "url"),
            "RELAY_UPSTREAM_API_KEY_FILE": str(tmp_path / "key"),
        }
    )
    assert values == {"database_url": DB_URL, "upstream_api_key": "sk-upstream"}


def test_only_one_trailing_newline_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(" key with spaces \n\n")
    values = secret_file_values({"RELAY_UPSTREAM_API_KEY_FILE": str(tmp_path / "key")})
    assert values == {"upstream_api_key": " key with spaces \n"}


def test_no_file_variables_means_nothing_read() -> None:
    assert secret_file_values({"RELAY_DATABASE_URL": DB_URL}) == {}


def test_a_secret_given_both_ways_is_an_error_naming_both(tmp_path: Path) -> None:
    (tmp_path / "url").write_text(DB_URL)
    environ = {"RELAY_DATABASE_URL": DB_URL, "RELAY_DATABASE_URL_FILE": str(tmp_path / "url")}
    with pytest.raises(ConfigError) as raised:
        secret_file_values(environ)
    assert "RELAY_DATABASE_URL," in str(raised.value)
    assert "RELAY_DATABASE_URL_FILE" in str(raised.value)


def test_an_unreadable_secret_file_names_its_variable_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"^RELAY_UPSTREAM_API_KEY_FILE: cannot read .*nope"):
        secret_file_values({"RELAY_UPSTREAM_API_KEY_FILE": str(missing)})


def test_load_settings_uses_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "url").write_text(DB_URL + "\n")
    (tmp_path / "key").write_text("sk-upstream\n")
    monkeypatch.setenv("RELAY_DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("RELAY_UPSTREAM_API_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.delenv("RELAY_DATABASE_URL", raising=False)
    monkeypatch.delenv("RELAY_UPSTREAM_API_KEY", raising=False)
    settings = load_settings()
    assert settings.database_url == DB_URL
    assert settings.upstream_api_key is not None
    assert settings.upstream_api_key.get_secret_value() == "sk-upstream"


def test_an_invalid_value_from_a_file_names_the_file_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text("mysql://db/relay\n")
    monkeypatch.setenv("RELAY_DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.delenv("RELAY_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match=r"RELAY_DATABASE_URL \(from RELAY_DATABASE_URL_FILE\)"):
        load_settings()


def test_every_setting_and_file_variable_is_known() -> None:
    known = known_variables()
    assert {"RELAY_PORT", "RELAY_DATABASE_URL", "RELAY_DATABASE_URL_FILE"} <= known
    assert {"RELAY_UPSTREAM_API_KEY_FILE", "RELAY_MODEL_SCHEMAS_DIR"} <= known
    assert "RELAY_PORT_FILE" not in known  # only secrets come from files
    assert unknown_variable_errors({name: "x" for name in known}) == []


def test_a_misspelt_setting_is_named_with_the_closest_known_one() -> None:
    errors = unknown_variable_errors({"RELAY_POLL_INTERVAL_MAX": "60", "PATH": "/bin"})
    assert errors == [
        "RELAY_POLL_INTERVAL_MAX: is not a setting of the relay; "
        "did you mean RELAY_POLL_INTERVAL_MAX_S?"
    ]


def test_an_unknown_setting_with_nothing_close_is_still_named() -> None:
    assert unknown_variable_errors({"RELAY_ZZZ": "1"}) == [
        "RELAY_ZZZ: is not a setting of the relay"
    ]


def test_lower_case_variables_are_checked_too() -> None:
    # pydantic-settings matches names case-insensitively, so a lower-case typo is a typo too.
    assert unknown_variable_errors({"relay_prot": "1"})[0].startswith("relay_prot:")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RELAY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"),
        ("RELAY_MINDVIDEO_RELAY_SERVICE_HOST", "10.0.0.7"),
        ("RELAY_MINDVIDEO_RELAY_SERVICE_PORT", "80"),
        ("RELAY_MINDVIDEO_RELAY_SERVICE_PORT_HTTP", "80"),
        ("RELAY_MINDVIDEO_RELAY_PORT", "tcp://10.0.0.7:80"),
        ("RELAY_MINDVIDEO_RELAY_PORT_80_TCP", "tcp://10.0.0.7:80"),
        ("RELAY_MINDVIDEO_RELAY_PORT_80_TCP_ADDR", "10.0.0.7"),
        ("RELAY_MINDVIDEO_RELAY_PORT_80_TCP_PROTO", "tcp"),
    ],
)
def test_test_suite_and_service_link_variables_are_not_typos(name: str, value: str) -> None:
    assert unknown_variable_errors({name: value}) == []


def test_a_port_variable_that_is_no_service_link_is_still_a_typo() -> None:
    errors = unknown_variable_errors({"RELAY_UPSTREAM_PORT": "8080"})
    assert len(errors) == 1


def test_load_settings_stops_on_an_unknown_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LOG_LEVL", "debug")
    with pytest.raises(ConfigError, match=r"RELAY_LOG_LEVL: .*did you mean RELAY_LOG_LEVEL"):
        load_settings()


def test_model_schemas_dir_with_a_broken_file_names_the_variable_and_file(tmp_path: Path) -> None:
    (tmp_path / "acme.schema.json").write_text("[")
    with pytest.raises(ConfigError, match=r"^RELAY_MODEL_SCHEMAS_DIR: acme\.schema\.json: "):
        load_settings(model_schemas_dir=str(tmp_path))


def test_model_schemas_dir_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^RELAY_MODEL_SCHEMAS_DIR: .* is not a directory"):
        load_settings(model_schemas_dir=str(tmp_path / "missing"))


def test_unknown_models_policy_is_reject_or_forward() -> None:
    assert load_settings().unknown_models == "reject"
    assert load_settings(unknown_models="FORWARD").unknown_models == "forward"
    with pytest.raises(ConfigError, match=r"^RELAY_UNKNOWN_MODELS: "):
        load_settings(unknown_models="allow")
