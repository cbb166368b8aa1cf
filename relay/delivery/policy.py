"""What a webhook attempt produced and what happens next: success, retry, or dead.

Pure rules (no I/O but reading a response body), so the retry schedule, jitter,
Retry-After and 410 handling are tested without a receiver.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import aiohttp

from relay.core.egress import DeniedAddress

# Acknowledgement bodies are tiny; reading at most this much keeps a hostile or broken
# receiver from making us buffer megabytes, while small bodies are read whole so the
# connection can be reused.
RESPONSE_READ_LIMIT = 64 * 1024
# What an attempt record keeps of the response body: enough to show a receiver's error.
RESPONSE_EXCERPT_BYTES = 1024
# Errors are stored and shown to clients; a bound keeps one odd exception from bloating rows.
ERROR_MAX_CHARS = 500
# The retry schedule is spread by ±20% so receivers recovering from an outage are not hit
# by every queued delivery at the same second.
RETRY_JITTER = 0.2
# A receiver's Retry-After is honoured when longer than the schedule, but cannot park a
# delivery for more than a day.
RETRY_AFTER_MAX_S = 86400.0
# Statuses whose Retry-After header means "come back later" (RFC 9110).
RETRY_AFTER_STATUSES = frozenset({429, 503})


class AttemptResult(NamedTuple):
    """What one HTTP attempt produced (a tuple: one is made per attempt, cheaply)."""

    status_code: int | None
    response_excerpt: str | None
    error: str | None
    latency_s: float
    # Epoch seconds: stored as is (Postgres makes the timestamp), no datetime per attempt.
    started_at_s: float
    retry_after_s: float | None = None

    @property
    def succeeded(self) -> bool:
        """Any 2xx is a success; everything else (3xx included) is a failed attempt."""
        return self.status_code is not None and 200 <= self.status_code < 300


class NextStep(NamedTuple):
    """Where a delivery goes after an attempt."""

    status: str
    retry_delay_s: float | None
    retry_index: int
    disable_subscription: bool = False


def plan_next_step(result: AttemptResult, retry_index: int, schedule: Sequence[float]) -> NextStep:
    """Succeeded, retry after the (jittered) schedule or Retry-After, or dead.

    410 Gone is final: the delivery is dead and its subscription is disabled.
    """
    if result.succeeded:
        return NextStep("succeeded", None, retry_index)
    if result.status_code == 410:
        return NextStep("dead", None, retry_index, disable_subscription=True)
    if retry_index >= len(schedule):
        return NextStep("dead", None, retry_index)
    delay = schedule[retry_index] * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    if result.retry_after_s is not None:
        delay = max(delay, min(result.retry_after_s, RETRY_AFTER_MAX_S))
    return NextStep("failed", delay, retry_index + 1)


def attempt_error_text(exc: BaseException, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_s:g}s"
    cause = exc.__cause__ if isinstance(exc.__cause__, DeniedAddress) else None
    if cause is not None:
        return f"denied: {cause}"
    return f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]


def status_error_text(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status} (redirects are not followed)"
    return f"HTTP {status}"


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def response_excerpt(body: bytes) -> str | None:
    if not body:
        return None
    # Postgres text cannot hold NUL; a binary error page is shown as best it can be.
    return body[:RESPONSE_EXCERPT_BYTES].decode("utf-8", errors="replace").replace("\x00", "")
