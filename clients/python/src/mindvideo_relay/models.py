"""Typed views of the relay's JSON objects: tasks, history, subscriptions, deliveries, events.

Every model is a frozen dataclass built with `from_json`. Fields the relay adds later are not
lost: the object as received stays in `raw` (left out of equality and repr), so a newer relay
never breaks an older client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


def parse_timestamp(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as the relay writes it (`2026-11-23T12:00:00.000Z`), or None."""
    if value is None:
        return None
    return datetime.fromisoformat(value)


def _required_timestamp(value: str) -> datetime:
    parsed = parse_timestamp(value)
    assert parsed is not None
    return parsed


@dataclass(frozen=True)
class Task:
    """A task, as `GET /v1/tasks/{id}` returns it (and as every webhook's `data` carries it)."""

    id: str
    model: str
    status: str
    upstream_task_id: str | None
    upstream_request_id: str | None
    cost_estimate: float | None
    cost_actual: float | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    metadata: dict[str, Any] | None
    webhook_url: str | None
    webhook_events: list[str] | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """True once the task is `succeeded`, `failed` or `cancelled` (it changes no more)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Task:
        """The task in a relay answer."""
        return cls(**_task_fields(body), raw=dict(body))


def _task_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": body["id"],
        "model": body["model"],
        "status": body["status"],
        "upstream_task_id": body.get("upstream_task_id"),
        "upstream_request_id": body.get("upstream_request_id"),
        "cost_estimate": body.get("cost_estimate"),
        "cost_actual": body.get("cost_actual"),
        "output": body.get("output"),
        "error": body.get("error"),
        "metadata": body.get("metadata"),
        "webhook_url": body.get("webhook_url"),
        "webhook_events": body.get("webhook_events"),
        "created_at": _required_timestamp(body["created_at"]),
        "updated_at": _required_timestamp(body["updated_at"]),
        "completed_at": parse_timestamp(body.get("completed_at")),
    }


@dataclass(frozen=True)
class SubmittedTask(Task):
    """What `submit` returns: the task, the idempotency key used, and whether it was a replay.

    `replayed` is True when the relay answered `200` with `Idempotent-Replayed: true`: a task
    with this key and body already existed, and nothing new was created or sent upstream.
    """

    idempotency_key: str = ""
    replayed: bool = False

    @classmethod
    def from_answer(
        cls, body: Mapping[str, Any], *, idempotency_key: str, replayed: bool
    ) -> SubmittedTask:
        """The submitted task from the relay's answer to `POST /v1/tasks`."""
        return cls(
            **_task_fields(body),
            raw=dict(body),
            idempotency_key=idempotency_key,
            replayed=replayed,
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a task's append-only audit history (`GET /v1/tasks/{id}/events`)."""

    id: str
    seq: int
    type: str
    from_status: str | None
    to_status: str | None
    source: str
    upstream_event: dict[str, Any] | None
    created_at: datetime
    # Hash chain of the history, on relays that keep one (None otherwise).
    hash: str | None = None
    prev_hash: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> HistoryEntry:
        """A history entry in a relay answer."""
        return cls(
            id=body["id"],
            seq=body["seq"],
            type=body["type"],
            from_status=body.get("from_status"),
            to_status=body.get("to_status"),
            source=body["source"],
            upstream_event=body.get("upstream_event"),
            created_at=_required_timestamp(body["created_at"]),
            hash=body.get("hash"),
            prev_hash=body.get("prev_hash"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class Subscription:
    """A standing webhook subscription; `secret` is set only on create and rotate."""

    id: str
    url: str
    events: list[str]
    models: list[str] | None
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    secret: str | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Subscription:
        """A subscription in a relay answer."""
        return cls(
            id=body["id"],
            url=body["url"],
            events=list(body["events"]),
            models=body.get("models"),
            description=body.get("description"),
            enabled=body["enabled"],
            disabled_reason=body.get("disabled_reason"),
            created_at=_required_timestamp(body["created_at"]),
            updated_at=_required_timestamp(body["updated_at"]),
            secret=body.get("secret"),
            raw=dict(body),
        )


@dataclass(frozen=True)
class Attempt:
    """One attempt at delivering a webhook."""

    attempt: int
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    latency_ms: float
    started_at: datetime
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Attempt:
        """An attempt in a relay answer."""
        return cls(
            attempt=body["attempt"],
            status_code=body.get("status_code"),
            response_excerpt=body.get("response_excerpt"),
            error=body.get("error"),
            latency_ms=body["latency_ms"],
            started_at=_required_timestamp(body["started_at"]),
            raw=dict(body),
        )


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery: one event to one URL, with its attempts when the relay lists them."""

    id: str
    event_id: str
    event_type: str
    task_id: str
    subscription_id: str | None
    url: str
    status: str
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    attempts: list[Attempt] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Delivery:
        """A delivery in a relay answer."""
        attempts = body.get("attempts")
        return cls(
            id=body["id"],
            event_id=body["event_id"],
            event_type=body["event_type"],
            task_id=body["task_id"],
            subscription_id=body.get("subscription_id"),
            url=body["url"],
            status=body["status"],
            attempt_count=body["attempt_count"],
            last_status_code=body.get("last_status_code"),
            last_error=body.get("last_error"),
            next_attempt_at=parse_timestamp(body.get("next_attempt_at")),
            created_at=_required_timestamp(body["created_at"]),
            updated_at=_required_timestamp(body["updated_at"]),
            delivered_at=parse_timestamp(body.get("delivered_at")),
            attempts=[Attempt.from_json(a) for a in attempts] if attempts is not None else None,
            raw=dict(body),
        )


@dataclass(frozen=True)
class Event:
    """A webhook body, as delivered and as the event feed (`GET /v1/events`) lists it.

    `id` is the `webhook-id` header too: the same on every retry, so receivers dedupe on it.
    """

    id: str
    type: str
    timestamp: datetime
    data: Task
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Event:
        """An event body."""
        return cls(
            id=body["id"],
            type=body["type"],
            timestamp=_required_timestamp(body["timestamp"]),
            data=Task.from_json(body["data"]),
            raw=dict(body),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: its items and the cursor of the next page (None: no more yet)."""

    data: list[T]
    next_cursor: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any], item: Callable[[Mapping[str, Any]], T]) -> Page[T]:
        """A page answer whose items are built with `item`."""
        return cls([item(x) for x in body["data"]], body.get("next_cursor"))
