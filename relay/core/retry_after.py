"""The Retry-After header (RFC 9110 10.2.3), read the same way for upstream and receivers."""

from __future__ import annotations

import email.utils
from datetime import UTC


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds asked for by a Retry-After header (delay-seconds or HTTP-date), or None.

    Shared by the upstream client and the webhook dispatcher; each caller applies its cap.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)
