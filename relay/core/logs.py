"""structlog set-up: JSON lines (or console), contextvars, and secret redaction."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog

# Anything that looks like one of our secrets is masked wherever it appears in a log event.
_SECRET_PATTERNS = re.compile(
    r"(rk_[A-Za-z0-9_\-]{8,}|whsec_[A-Za-z0-9+/=_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._~+/=\-]+)"
)
REDACTED = "[REDACTED]"
_literal_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact value in every later log line (e.g. the upstream API key)."""
    if value and len(value) >= 4:
        _literal_secrets.add(value)


def redact(text: str) -> str:
    """Mask known secrets and secret-shaped tokens in a string."""
    for secret in _literal_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _SECRET_PATTERNS.sub(REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


def redact_secrets(_logger: object, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: the last line of defence against a secret reaching a log."""
    return {key: _redact_value(value) for key, value in event.items()}


def configure_logging(
    log_format: str = "json", level: str = "info", secrets_to_mask: Iterable[str | None] = ()
) -> None:
    """Configure structlog (and stdlib logging through it) once per process."""
    for secret in secrets_to_mask:
        register_secret(secret)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    # aiohttp and asyncpg log through stdlib: route them through the same redaction.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
