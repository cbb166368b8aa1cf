"""The MindVideo client: one ClientSession, explicit timeouts, a rate ceiling, Retry-After."""

from __future__ import annotations

import asyncio
import json as jsonlib
import math
import time
from typing import Any, Protocol

import aiohttp
import structlog

from relay import __version__
from relay.core import metrics
from relay.core.retry_after import parse_retry_after

log = structlog.get_logger(__name__)

# Consecutive 401/403 answers before the replica reports itself not ready: one refusal
# can be a blip while a key is rotated; a handful means the key is wrong.
AUTH_FAILURES_BEFORE_UNREADY = 3
# A Retry-After longer than this is capped: upstream asking for an hour should not stall
# a replica that long without another look.
MAX_RETRY_AFTER_S = 300.0


class UpstreamError(Exception):
    """Base of upstream failures; the message never carries the API key."""


class UpstreamUnavailable(UpstreamError):
    """Transient: 5xx, 429, 408, timeout, connection error. Try again later."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


class UpstreamAuthError(UpstreamError):
    """Upstream refuses our API key (401/403)."""

    def __init__(self, status: int):
        super().__init__(f"upstream refused the API key (HTTP {status})")
        self.status = status


class UpstreamRejected(UpstreamError):
    """A definitive 4xx answer about this request (e.g. invalid input, out of credit)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"upstream rejected the request: {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def as_task_error(self) -> dict[str, Any]:
        """The `error` object a failed task carries."""
        return {"code": self.code, "message": self.message, "upstream_status": self.status}


class UpstreamMalformed(UpstreamError):
    """A 2xx whose body is not what the endpoint returns."""


def number_field(value: Any, default: float | None = None) -> float | None:
    """A numeric field of an upstream answer as a float; `default` when absent or not a number.

    A number sent as a string (`"0.0756"`) is read too: upstream's JSON encoder may quote
    decimals, and the amount is what matters. Non-finite values are not amounts.
    """
    if isinstance(value, bool):
        return default
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return default
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return default


def _error_fields(body: Any, status: int) -> tuple[str, str]:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = str(err.get("code") or err.get("type") or f"http_{status}")
            message = str(err.get("message") or err.get("detail") or "")
            return code, message[:1000]
        if isinstance(err, str):
            return f"http_{status}", err[:1000]
    return f"http_{status}", ""


class RequestBudget(Protocol):
    """What the client needs of the upstream budget (relay.upstream.budget.UpstreamBudget)."""

    async def wait(self, wanted: int = 1, *, urgent: bool = True) -> int:
        """At least one token, waiting for it if need be."""
        ...


class UpstreamClient:
    """Calls MindVideo's task API. Shared by the API, the resubmitter and the poller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        *,
        budget: RequestBudget,
        timeout_s: float = 30.0,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"User-Agent": f"mindvideo-relay/{__version__}"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # Every request spends a token of the deployment-wide budget: callers that took one
        # already pass paid=True (submissions and polls); the others wait for one here.
        self._budget = budget
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(10.0, timeout_s))
        self._paused_until = 0.0
        self.auth_failures = 0

    @property
    def auth_failing(self) -> bool:
        """True after repeated 401/403: readiness turns false, tasks stay untouched."""
        return self.auth_failures >= AUTH_FAILURES_BEFORE_UNREADY

    @property
    def paused_for(self) -> float:
        """Seconds left of a replica-wide pause asked for by upstream (0 when none)."""
        return max(0.0, self._paused_until - time.monotonic())

    def pause(self, seconds: float) -> None:
        """Slow the whole replica: no request leaves before `seconds` from now."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def submit(
        self, idempotency_key: str, model: str, input: dict[str, Any], *, paid: bool = False
    ) -> dict[str, Any]:
        """POST /api/v1/tasks; the idempotency key is the relay's task id."""
        body = await self._request(
            "submit",
            "POST",
            "/api/v1/tasks",
            json={"model": model, "input": input},
            headers={"Idempotency-Key": idempotency_key},
            paid=paid,
        )
        if not isinstance(body, dict) or not isinstance(body.get("task_id"), str):
            raise UpstreamMalformed("submit answer has no task_id")
        return body

    async def get_task(self, upstream_task_id: str, *, paid: bool = False) -> dict[str, Any]:
        """GET /api/v1/tasks/{id}: the task's status, cost and output."""
        body = await self._request("get", "GET", f"/api/v1/tasks/{upstream_task_id}", paid=paid)
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise UpstreamMalformed("task answer has no status")
        return body

    async def get_events(
        self, upstream_task_id: str, *, paid: bool = False, urgent: bool = True
    ) -> list[dict[str, Any]]:
        """GET /api/v1/tasks/{id}/events, in any of the shapes the contract allows."""
        path = f"/api/v1/tasks/{upstream_task_id}/events"
        body = await self._request("events", "GET", path, paid=paid, urgent=urgent)
        events = body
        if isinstance(body, dict):
            events = body.get("events", body.get("data"))
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise UpstreamMalformed("events answer is not a list of event objects")
        return events

    async def cancel(self, upstream_task_id: str) -> dict[str, Any]:
        """POST /api/v1/tasks/{id}/cancel."""
        body = await self._request("cancel", "POST", f"/api/v1/tasks/{upstream_task_id}/cancel")
        return body if isinstance(body, dict) else {}

    async def _request(
        self,
        endpoint: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        paid: bool = False,
        urgent: bool = True,
    ) -> Any:
        wait = self._paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if not paid:
            await self._budget.wait(1, urgent=urgent)
        started = time.perf_counter()
        code = "error"
        try:
            async with self._session.request(
                method,
                self._base + path,
                json=json,
                headers={**self._headers, **(headers or {})},
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                code = str(resp.status)
                text = await resp.text()
                return self._interpret(endpoint, resp.status, resp.headers, text)
        except TimeoutError:
            code = "timeout"
            raise UpstreamUnavailable(f"{endpoint}: timed out") from None
        except aiohttp.ClientError as exc:
            code = "connection_error"
            raise UpstreamUnavailable(f"{endpoint}: {type(exc).__name__}") from None
        finally:
            metrics.UPSTREAM_REQUESTS.labels(endpoint, code).inc()
            metrics.UPSTREAM_SECONDS.labels(endpoint).observe(time.perf_counter() - started)

    def _interpret(self, endpoint: str, status: int, headers: Any, text: str) -> Any:
        try:
            body = jsonlib.loads(text) if text else None
        except ValueError:
            body = None
            if 200 <= status < 300:
                raise UpstreamMalformed(f"{endpoint}: body is not JSON") from None
        if 200 <= status < 300:
            self.auth_failures = 0
            metrics.UPSTREAM_AUTH_FAILING.set(0)
            return body
        if status in (401, 403):
            self.auth_failures += 1
            metrics.UPSTREAM_AUTH_FAILING.set(1 if self.auth_failing else 0)
            log.error(
                "upstream_auth_refused",
                endpoint=endpoint,
                status=status,
                consecutive=self.auth_failures,
                hint="check RELAY_UPSTREAM_API_KEY: upstream refuses it",
            )
            raise UpstreamAuthError(status)
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(headers.get("Retry-After"), time.time())
            if retry_after is not None:
                retry_after = min(retry_after, MAX_RETRY_AFTER_S)
            if retry_after and status in (429, 503):
                # Upstream is telling the whole account to slow down, not just this task.
                self.pause(retry_after)
            raise UpstreamUnavailable(f"{endpoint}: HTTP {status}", status, retry_after)
        code, message = _error_fields(body, status)
        raise UpstreamRejected(status, code, message)
