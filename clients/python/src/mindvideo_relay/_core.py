"""What both clients share: each operation as a Call (request + how to read the answer),
the retry policy, problem+json parsing and the feed/page bookkeeping.

The sync and async clients differ only in how they send a Call and how they wait between
attempts; everything about the relay's API is written once, here.
"""

from __future__ import annotations

import email.utils
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from mindvideo_relay._version import __version__
from mindvideo_relay.errors import FieldError, RelayConnectionError, RelayError, error_class
from mindvideo_relay.models import (
    Delivery,
    Event,
    HistoryEntry,
    Page,
    SubmittedTask,
    Subscription,
    Task,
)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_RETRIES = 3
# Backoff before retry n (from 0) is BACKOFF_BASE_S * 2**n, capped, with jitter so many
# clients that failed together do not come back together.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
# A Retry-After longer than this is not waited for: the error goes to the caller, who knows
# better than a library whether a minute-long stall is acceptable.
MAX_RETRY_AFTER_S = 60.0
# Statuses worth another try of a request that is safe to repeat: rate limiting and server
# or gateway failures. 501 (not implemented) will not change on a retry.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# The relay's limit on Idempotency-Key (checked here so the mistake is found before sending).
IDEMPOTENCY_KEY_MAX = 255

USER_AGENT = f"mindvideo-relay-client/{__version__} python-httpx/{httpx.__version__}"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API operation: the request to send and how to turn a 2xx answer into a result.

    `retryable` marks requests that are safe to send again after a connection error or a
    retryable status: reads, PATCH, and a submission carrying its Idempotency-Key.
    """

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retryable: bool = False


# --- answers -----------------------------------------------------------------------------


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The answer's Retry-After in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> RelayError:
    """The exception for an error answer: problem+json fields when the body has them."""
    status = response.status_code
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("detail" in body or "title" in body):
        errors = [
            FieldError(str(e.get("loc", "")), str(e.get("message", "")))
            for e in body.get("errors") or []
            if isinstance(e, dict)
        ]
        detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
        title = str(body.get("title") or response.reason_phrase)
        problem_type = str(body.get("type") or "about:blank")
    else:
        # Not a problem document (a proxy's HTML page, an empty body): keep an excerpt.
        errors = []
        title = response.reason_phrase
        detail = response.text[:500].strip() or title
        problem_type = "about:blank"
    return error_class(status)(
        detail,
        status=status,
        title=title,
        type=problem_type,
        errors=errors,
        retry_after=retry_after_seconds(response),
        body=body,
    )


def read_json(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer; an error answer raises its RelayError."""
    if response.is_error:
        raise error_from_response(response)
    return response.json()


def _reader(build: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], T]:
    return lambda response: build(read_json(response))


def _page_reader(item: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], Page[T]]:
    return lambda response: Page.from_json(read_json(response), item)


def _list_reader(item: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], list[T]]:
    return lambda response: [item(x) for x in read_json(response)["data"]]


def _read_nothing(response: httpx.Response) -> None:
    if response.is_error:
        raise error_from_response(response)


def connection_error(exc: httpx.TransportError, call: Call[Any]) -> RelayConnectionError:
    """The RelayConnectionError for a request that got no answer."""
    return RelayConnectionError(
        f"{call.method} {call.path}: no answer from the relay ({type(exc).__name__}: {exc})"
    )


# --- the retry policy --------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a call again and how long to wait first (None: do not retry)."""

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base_s: float = BACKOFF_BASE_S
    backoff_max_s: float = BACKOFF_MAX_S
    max_retry_after_s: float = MAX_RETRY_AFTER_S

    def backoff(self, attempt: int) -> float:
        """Jittered exponential delay before retry number `attempt` (from 0)."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return ceiling * random.uniform(0.5, 1.0)

    def after_error(self, call: Call[Any], attempt: int) -> float | None:
        """Delay before retrying a call whose attempt `attempt` got no answer."""
        if not call.retryable or attempt >= self.max_retries:
            return None
        return self.backoff(attempt)

    def after_answer(self, call: Call[Any], attempt: int, response: httpx.Response) -> float | None:
        """Delay before retrying a call whose attempt `attempt` got this answer."""
        if response.status_code not in RETRY_STATUSES:
            return None
        if not call.retryable or attempt >= self.max_retries:
            return None
        asked = retry_after_seconds(response)
        if asked is None:
            return self.backoff(attempt)
        if asked > self.max_retry_after_s:
            return None
        return max(asked, self.backoff(attempt) / 2)


# --- the operations ----------------------------------------------------------------------


def _id(value: str) -> str:
    """An id as one path segment (never a way to reach another path)."""
    return quote(value, safe="")


def _timestamp(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def _params(**values: Any) -> dict[str, str]:
    """Query parameters, leaving out those not given."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple | set | frozenset):
            out[name] = ",".join(value)
        else:
            out[name] = str(value)
    return out


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key (a random UUID)."""
    return str(uuid.uuid4())


def submit_call(
    model: str,
    input: Mapping[str, Any],
    *,
    webhook_url: str | None,
    webhook_events: Iterable[str] | None,
    metadata: Mapping[str, Any] | None,
    idempotency_key: str | None,
) -> Call[SubmittedTask]:
    """`POST /v1/tasks` with an Idempotency-Key (generated when not given), so retries are safe."""
    key = idempotency_key if idempotency_key is not None else new_idempotency_key()
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise ValueError(f"idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
    body: dict[str, Any] = {"model": model, "input": dict(input)}
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    if webhook_events is not None:
        body["webhook_events"] = list(webhook_events)
    if metadata is not None:
        body["metadata"] = dict(metadata)

    def read(response: httpx.Response) -> SubmittedTask:
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return SubmittedTask.from_answer(
            read_json(response), idempotency_key=key, replayed=replayed
        )

    return Call(
        "POST", "/v1/tasks", read, json=body, headers={"Idempotency-Key": key}, retryable=True
    )


def get_task_call(task_id: str) -> Call[Task]:
    """`GET /v1/tasks/{id}`."""
    return Call("GET", f"/v1/tasks/{_id(task_id)}", _reader(Task.from_json), retryable=True)


def cancel_task_call(task_id: str) -> Call[Task]:
    """`POST /v1/tasks/{id}/cancel`."""
    return Call("POST", f"/v1/tasks/{_id(task_id)}/cancel", _reader(Task.from_json))


def task_history_call(task_id: str) -> Call[list[HistoryEntry]]:
    """`GET /v1/tasks/{id}/events`: the task's history, oldest first."""
    return Call(
        "GET",
        f"/v1/tasks/{_id(task_id)}/events",
        _list_reader(HistoryEntry.from_json),
        retryable=True,
    )


def task_deliveries_call(task_id: str) -> Call[list[Delivery]]:
    """`GET /v1/tasks/{id}/deliveries`: every delivery of the task, with attempts."""
    return Call(
        "GET",
        f"/v1/tasks/{_id(task_id)}/deliveries",
        _list_reader(Delivery.from_json),
        retryable=True,
    )


def tasks_page_call(
    *,
    status: str | None,
    model: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[Page[Task]]:
    """`GET /v1/tasks`: one page, newest first."""
    params = _params(
        status=status,
        model=model,
        created_after=_timestamp(created_after) if created_after is not None else None,
        created_before=_timestamp(created_before) if created_before is not None else None,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/v1/tasks", _page_reader(Task.from_json), params=params, retryable=True)


def create_subscription_call(
    url: str,
    *,
    events: Iterable[str] | None,
    models: Iterable[str] | None,
    description: str | None,
) -> Call[Subscription]:
    """`POST /v1/subscriptions` (the answer carries the secret)."""
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = list(events)
    if models is not None:
        body["models"] = list(models)
    if description is not None:
        body["description"] = description
    return Call("POST", "/v1/subscriptions", _reader(Subscription.from_json), json=body)


def get_subscription_call(subscription_id: str) -> Call[Subscription]:
    """`GET /v1/subscriptions/{id}`."""
    return Call(
        "GET",
        f"/v1/subscriptions/{_id(subscription_id)}",
        _reader(Subscription.from_json),
        retryable=True,
    )


def subscriptions_page_call(*, limit: int | None, cursor: str | None) -> Call[Page[Subscription]]:
    """`GET /v1/subscriptions`: one page, newest first."""
    return Call(
        "GET",
        "/v1/subscriptions",
        _page_reader(Subscription.from_json),
        params=_params(limit=limit, cursor=cursor),
        retryable=True,
    )


def update_subscription_call(
    subscription_id: str, changes: Mapping[str, Any]
) -> Call[Subscription]:
    """`PATCH /v1/subscriptions/{id}`: setting fields is idempotent, so it may be retried."""
    return Call(
        "PATCH",
        f"/v1/subscriptions/{_id(subscription_id)}",
        _reader(Subscription.from_json),
        json=dict(changes),
        retryable=True,
    )


def delete_subscription_call(subscription_id: str) -> Call[None]:
    """`DELETE /v1/subscriptions/{id}` (not retried: a repeat would answer 404)."""
    return Call("DELETE", f"/v1/subscriptions/{_id(subscription_id)}", _read_nothing)


def rotate_secret_call(subscription_id: str) -> Call[Subscription]:
    """`POST /v1/subscriptions/{id}/rotate-secret` (never retried: it would rotate twice)."""
    return Call(
        "POST",
        f"/v1/subscriptions/{_id(subscription_id)}/rotate-secret",
        _reader(Subscription.from_json),
    )


def deliveries_page_call(
    *,
    status: str | None,
    subscription_id: str | None,
    task_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Call[Page[Delivery]]:
    """`GET /v1/deliveries`: one page, newest first."""
    params = _params(
        status=status, subscription_id=subscription_id, task_id=task_id, limit=limit, cursor=cursor
    )
    return Call(
        "GET", "/v1/deliveries", _page_reader(Delivery.from_json), params=params, retryable=True
    )


def get_delivery_call(delivery_id: str) -> Call[Delivery]:
    """`GET /v1/deliveries/{id}` (with its attempts)."""
    return Call(
        "GET", f"/v1/deliveries/{_id(delivery_id)}", _reader(Delivery.from_json), retryable=True
    )


def retry_delivery_call(delivery_id: str) -> Call[Delivery]:
    """`POST /v1/deliveries/{id}/retry`: send a failed or dead delivery again."""
    return Call("POST", f"/v1/deliveries/{_id(delivery_id)}/retry", _reader(Delivery.from_json))


def events_page_call(
    *, after: str | None, types: Iterable[str] | None, limit: int | None
) -> Call[Page[Event]]:
    """`GET /v1/events`: one page of the event feed, oldest first."""
    params = _params(after=after, types=list(types) if types is not None else None, limit=limit)
    return Call("GET", "/v1/events", _page_reader(Event.from_json), params=params, retryable=True)


def subscription_changes(
    *,
    url: str | None,
    events: Iterable[str] | None,
    models: Iterable[str] | None,
    description: str | None,
    enabled: bool | None,
) -> dict[str, Any]:
    """A PATCH body from the arguments given (None: leave that field as it is)."""
    changes: dict[str, Any] = {}
    if url is not None:
        changes["url"] = url
    if events is not None:
        changes["events"] = list(events)
    if models is not None:
        changes["models"] = list(models)
    if description is not None:
        changes["description"] = description
    if enabled is not None:
        changes["enabled"] = enabled
    return changes


# --- client settings and feed bookkeeping ------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Where the relay is, the key, and how requests are made (shared by both clients)."""

    base_url: str
    api_key: str
    user_agent: str = USER_AGENT

    def url(self, path: str) -> str:
        """The absolute URL of an API path."""
        return self.base_url.rstrip("/") + path

    def headers(self, call: Call[Any]) -> dict[str, str]:
        """Every header of a call: the key, the user agent, and the call's own."""
        return {
            "Authorization": f"Bearer {self.api_key}",
            "User-Agent": self.user_agent,
            "Accept": "application/json",
            **call.headers,
        }


def timeout_of(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    """An httpx Timeout from seconds (None: the default)."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(DEFAULT_TIMEOUT_S if timeout is None else timeout)


class FeedBuffer(Generic[T]):
    """Pages followed by next_cursor, handed out one item at a time (sync and async alike)."""

    def __init__(self, cursor: str | None) -> None:
        self.cursor = cursor
        self.done = False
        self._items: deque[T] = deque()

    def needs_page(self) -> bool:
        """True when no item is buffered and more pages may follow."""
        return not self._items and not self.done

    def add(self, page: Page[T]) -> None:
        """Buffer a fetched page and move the cursor on (a null next_cursor ends the feed)."""
        self._items.extend(page.data)
        if page.next_cursor is None:
            self.done = True
        else:
            self.cursor = page.next_cursor

    def take(self) -> T | None:
        """The next buffered item, or None when the feed is over."""
        return self._items.popleft() if self._items else None
