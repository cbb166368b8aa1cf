"""Settings: the only place the environment is read."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from relay.core.schema_files import UnknownModels, load_schema_dir

ROLES = ("api", "poller", "dispatcher")
# Webhook targets never called by default: what a receiver URL could use to reach the relay's
# own pod (loopback, and the unspecified address that dials it) or the cloud metadata service
# (link-local). IPv4-mapped IPv6 forms (::ffff:127.0.0.1) are checked as their IPv4 address.
# Private ranges stay allowed: internal receivers live there. Tests and the demo, whose
# receivers run on loopback, set the variable without loopback.
DEFAULT_WEBHOOK_DENY_CIDRS = (
    "127.0.0.0/8", "::1/128", "0.0.0.0/8", "::/128", "169.254.0.0/16", "fe80::/10",
)  # fmt: skip
T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from `12`, `1.5`, `250ms`, `5s`, `2m`, `1h` or `1d`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 2m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 5s, 2m or 1h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def split_commas(value: object) -> list[str]:
    """The non-empty, stripped items of a comma-separated string (or of a list)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return [str(part).strip() for part in value]
    raise ValueError("expected a comma-separated list")


class Settings(BaseSettings):
    """Every `RELAY_*` setting of the contract, plus a few tuning knobs with safe defaults."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", frozen=True)

    database_url: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    upstream_url: str = "https://api.mindvideo.ai"
    upstream_api_key: SecretStr | None = None
    roles: Annotated[tuple[str, ...], NoDecode] = ROLES
    poll_interval_min_s: float = 1.0
    poll_interval_max_s: float = 30.0
    # The detection delay the poll scheduler aims for around a task's expected transition
    # (polls there come twice this far apart); smaller costs more upstream requests.
    poll_target_delay_s: float = 1.75
    upstream_max_rps: float = Field(50.0, gt=0)
    upstream_timeout_s: float = 30.0
    webhook_timeout_s: float = 10.0
    webhook_retry_schedule: Annotated[tuple[float, ...], NoDecode] = (
        5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800,
    )  # fmt: skip
    # A subscription every delivery attempt of which has failed this long is disabled (with a
    # reason) until re-enabled: 5 days, as Svix does, outlasts any outage worth waiting for.
    webhook_disable_after_s: float = 432000.0
    webhook_deny_cidrs: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = tuple(ipaddress.ip_network(n) for n in DEFAULT_WEBHOOK_DENY_CIDRS)
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: float = 20.0
    # How long terminal tasks and their history are kept (days); None keeps them forever.
    retention_days: int | None = Field(None, ge=1)
    # More `<model>.schema.json` files (e.g. a mounted ConfigMap) next to the shipped ones.
    model_schemas_dir: Path | None = None
    # A model without a schema: refused with 422 (reject) or sent upstream unchecked (forward).
    unknown_models: UnknownModels = "reject"

    # Tuning knobs (not part of the contract; defaults suit one replica on two cores).
    poll_batch_size: int = Field(500, ge=1, le=5000)
    poll_lease_s: float = 30.0
    poll_concurrency: int = Field(64, ge=1, le=1024)
    dispatch_batch_size: int = Field(200, ge=1, le=5000)
    dispatch_concurrency: int = Field(64, ge=1, le=1024)
    dispatch_per_target_concurrency: int = Field(8, ge=1, le=256)
    dispatch_idle_poll_s: float = 1.0
    db_pool_size: int = Field(10, ge=2, le=200)
    secret_rotation_overlap_s: float = 86400.0
    # On top of the webhook timeout: covers DNS, reading the bounded response and the
    # completion write, so a live dispatcher never loses its lease mid-attempt.
    dispatch_lease_margin_s: float = 20.0
    # How often the janitor publishes an audit checkpoint (and checks partitions).
    audit_checkpoint_interval_s: float = 600.0
    # Upstream answering 404 for a task this long fails it (`upstream_not_found`): long
    # enough to ride out an upstream restart that briefly forgets tasks it still has.
    upstream_not_found_after_s: float = 600.0
    # A task not terminal after this long is asked to cancel upstream and fails (`timed_out`).
    task_timeout_s: float = 86400.0

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("upstream_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, value: object) -> tuple[str, ...]:
        roles = split_commas(value)
        unknown = sorted(set(roles) - set(ROLES))
        if unknown or not roles:
            raise ValueError(f"roles must be a subset of {','.join(ROLES)}")
        return tuple(r for r in ROLES if r in roles)

    @field_validator(
        "poll_interval_min_s",
        "poll_interval_max_s",
        "poll_target_delay_s",
        "upstream_timeout_s",
        "webhook_timeout_s",
        "webhook_disable_after_s",
        "shutdown_grace_s",
        "poll_lease_s",
        "dispatch_idle_poll_s",
        "secret_rotation_overlap_s",
        "dispatch_lease_margin_s",
        "audit_checkpoint_interval_s",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("upstream_not_found_after_s", "task_timeout_s", mode="before")
    @classmethod
    def _give_up_after(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: object) -> tuple[float, ...]:
        schedule = tuple(parse_duration(part) for part in split_commas(value))
        if not schedule:  # no retries at all would turn every failed delivery dead at once
            raise ValueError("must list at least one duration, e.g. 5s,30s,2m")
        return schedule

    @field_validator("webhook_deny_cidrs", mode="before")
    @classmethod
    def _cidrs(cls, value: object) -> tuple[object, ...]:
        return tuple(ipaddress.ip_network(part, strict=False) for part in split_commas(value))

    @field_validator("model_schemas_dir")
    @classmethod
    def _schemas_dir(cls, value: Path | None) -> Path | None:
        if value is not None:
            if not value.is_dir():
                raise ValueError(f"{value} is not a directory")
            # Loaded once here so a bad file stops start-up naming it (and this variable).
            load_schema_dir(value)
        return value

    @field_validator("log_format", "log_level", "unknown_models", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _interval_order(self) -> Settings:
        if self.poll_interval_max_s < self.poll_interval_min_s:
            raise ValueError("poll_interval_max_s: must be >= RELAY_POLL_INTERVAL_MIN_S")
        return self

    @property
    def dispatch_lease_s(self) -> float:
        """A delivery lease outlives one attempt by a margin, so two dispatchers never overlap."""
        return self.webhook_timeout_s + self.dispatch_lease_margin_s


def settings_subset(cls: type[T], settings: Settings) -> T:
    """A dataclass holding some settings, filled from `settings` by field name.

    Components take only the values they read; naming the fields as in `Settings` keeps
    the two in step (a misspelt field fails at start-up, not at first use).
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: getattr(settings, f.name) for f in fields})


class ConfigError(Exception):
    """A setting is invalid; the message names the environment variable."""


# Settings that may instead be read from a file (a mounted Kubernetes Secret): the
# variable's name with `_FILE` appended holds the path.
SECRET_FILE_SETTINGS = ("database_url", "upstream_api_key")
FILE_SUFFIX = "_FILE"
# RELAY_* variables that are not settings of the service but are legitimately set beside it:
# the test suite's database (tests, benchmarks and scripts/fuzz_api.py read it).
FOREIGN_VARIABLES = frozenset({"RELAY_TEST_DATABASE_URL"})
# Variables Kubernetes (service links) and Docker (--link) inject for a Service or container
# named `relay...`: never settings, so not typos either.
_LINK_VARIABLE = re.compile(
    r"^RELAY_\w*?(_SERVICE_HOST|_SERVICE_PORT(_\w+)?|_PORT_\d+_(TCP|UDP|SCTP)(_ADDR|_PORT|_PROTO)?)$"
)
_LINK_PORT_VALUE = re.compile(r"^(tcp|udp|sctp)://")


def known_variables() -> frozenset[str]:
    """Every RELAY_* variable the service reads."""
    names = {f"RELAY_{name.upper()}" for name in Settings.model_fields}
    names |= {f"RELAY_{name.upper()}{FILE_SUFFIX}" for name in SECRET_FILE_SETTINGS}
    return frozenset(names)


def unknown_variable_errors(environ: Mapping[str, str]) -> list[str]:
    """One message per RELAY_* variable that is no setting, naming the closest known one.

    A misspelt setting would otherwise be ignored and its default used without a word.
    """
    known = known_variables()
    messages = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("RELAY_") or upper in known or upper in FOREIGN_VARIABLES:
            continue
        if _LINK_VARIABLE.match(upper) or (
            upper.endswith("_PORT") and _LINK_PORT_VALUE.match(environ[name])
        ):
            continue
        # Compared without the shared prefix, which would make every name look close.
        suffixes = sorted(k.removeprefix("RELAY_") for k in known)
        close = difflib.get_close_matches(upper.removeprefix("RELAY_"), suffixes, n=1)
        hint = f"; did you mean RELAY_{close[0]}?" if close else ""
        messages.append(f"{name}: is not a setting of the relay{hint}")
    return messages


def secret_file_values(environ: Mapping[str, str]) -> dict[str, str]:
    """The secret settings given as files (`RELAY_<NAME>_FILE`), read, by field name.

    One trailing newline is dropped (`echo secret > file` and most editors add it). A
    setting given both ways is refused: which one wins would be a guess.
    """
    values = {}
    for field in SECRET_FILE_SETTINGS:
        variable = f"RELAY_{field.upper()}"
        file_variable = variable + FILE_SUFFIX
        path = environ.get(file_variable)
        if path is None:
            continue
        if variable in environ:
            raise ConfigError(f"{variable}, {file_variable}: both are set; set only one of them")
        try:
            content = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"{file_variable}: cannot read {path}: {reason}") from None
        values[field] = content.removesuffix("\n").removesuffix("\r")
    return values


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and explicit overrides); raise ConfigError naming the variable.

    Unknown RELAY_* variables and unreadable `_FILE` secrets stop here too.
    """
    environ = dict(os.environ)
    unknown = unknown_variable_errors(environ)
    if unknown:
        raise ConfigError(unknown[0] if len(unknown) == 1 else "; ".join(unknown))
    otel_trace_exporters(environ)  # an exporter the relay lacks stops start-up here, named
    from_files = secret_file_values(environ)
    try:
        return Settings(**{**from_files, **overrides})  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = first["msg"].removeprefix("Value error, ")
        if ":" in message and not field:
            field, message = message.split(":", 1)
        variable = f"RELAY_{field.upper()}"
        if field in from_files:
            variable += f" (from {variable}{FILE_SUFFIX})"
        raise ConfigError(f"{variable}: {message.strip()}") from None


# Tracing (relay.core.tracing): the OpenTelemetry SDK's own standard variables, not settings of the
# relay, so RELAY_* rules do not apply. The SDK reads the rest (endpoint, headers, sampler,
# resource); only whether to trace at all, and through which exporters, is decided here.
OTEL_TRACE_EXPORTERS = ("otlp", "console")


def otel_trace_exporters(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The span exporters OTEL_* asks for; empty when tracing is not asked for.

    Traces are asked for by `OTEL_TRACES_EXPORTER` (`otlp`, `console`, comma-separated;
    `none` turns tracing off) or, that unset, by an OTLP endpoint
    (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    `OTEL_SDK_DISABLED=true` turns it off whatever else is set. Raises ConfigError naming
    an exporter the relay does not ship.
    """
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return ()
    names = [name.lower() for name in split_commas(env.get("OTEL_TRACES_EXPORTER", ""))]
    if not names:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ("otlp",) if endpoint else ()
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in OTEL_TRACE_EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {unknown[0]!r} is not available; "
            f"use {', '.join(OTEL_TRACE_EXPORTERS)} or none"
        )
    return tuple(dict.fromkeys(names))
