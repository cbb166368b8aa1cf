"""Settings: the only place the environment is read."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROLES = ("api", "poller", "dispatcher")
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
    webhook_deny_cidrs: Annotated[
        tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode
    ] = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_grace_s: float = 20.0
    # How long terminal tasks and their history are kept (days); None keeps them forever.
    retention_days: int | None = Field(None, ge=1)

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

    @field_validator("log_format", "log_level", mode="before")
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


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and explicit overrides); raise ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = first["msg"].removeprefix("Value error, ")
        if ":" in message and not field:
            field, message = message.split(":", 1)
        raise ConfigError(f"RELAY_{field.upper()}: {message.strip()}") from None
