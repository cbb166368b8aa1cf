"""Request and response models of the API; the handlers and /openapi.json both use them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from relay.vocabulary import DeliveryStatus, EventType, HistorySource, TaskStatus


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskCreate(_Strict):
    """`POST /v1/tasks` body."""

    model: str = Field(min_length=1, max_length=200)
    input: dict[str, Any]
    webhook_url: AnyHttpUrl | None = None
    webhook_events: list[EventType] | None = Field(None, min_length=1)
    metadata: dict[str, Any] | None = None


class TaskError(BaseModel):
    """Why a task failed."""

    code: str
    message: str
    upstream_status: int | None = None


class Task(BaseModel):
    """The task object."""

    id: str
    model: str
    status: TaskStatus
    upstream_task_id: str | None
    upstream_request_id: str | None
    cost_estimate: float | None
    cost_actual: float | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    metadata: dict[str, Any] | None
    webhook_url: str | None
    webhook_events: list[str] | None
    created_at: str
    updated_at: str
    completed_at: str | None


class TaskPage(BaseModel):
    """A page of tasks."""

    data: list[Task]
    next_cursor: str | None


class HistoryEntry(BaseModel):
    """One line of a task's audit history."""

    id: str
    seq: int
    type: str
    from_status: str | None
    to_status: str | None
    source: HistorySource
    upstream_event: dict[str, Any] | None
    created_at: str
    prev_hash: str = Field(
        description="hash of the task's previous entry; 64 zeros for the first (README: Audit)"
    )
    hash: str = Field(
        description="sha256 (hex) of the canonical JSON of this entry, its task id and "
        "prev_hash (README: Audit)"
    )


class HistoryPage(BaseModel):
    """A task's history, oldest first."""

    data: list[HistoryEntry]


class SubscriptionCreate(_Strict):
    """`POST /v1/subscriptions` body."""

    url: AnyHttpUrl
    events: list[EventType] | None = Field(None, min_length=1)
    models: list[str] | None = Field(None, min_length=1)
    description: str | None = Field(None, max_length=1000)


class SubscriptionUpdate(_Strict):
    """`PATCH /v1/subscriptions/{id}` body; omitted fields stay as they are."""

    url: AnyHttpUrl | None = None
    events: list[EventType] | None = Field(None, min_length=1)
    models: list[str] | None = Field(None, min_length=1)
    description: str | None = Field(None, max_length=1000)
    enabled: bool | None = None


class Subscription(BaseModel):
    """A subscription (`secret` only on create and rotate)."""

    id: str
    url: str
    events: list[str]
    models: list[str] | None
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: str
    updated_at: str
    secret: str | None = None


class SubscriptionPage(BaseModel):
    """A page of subscriptions."""

    data: list[Subscription]
    next_cursor: str | None


class Attempt(BaseModel):
    """One delivery attempt."""

    attempt: int
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    latency_ms: float
    started_at: str


class Delivery(BaseModel):
    """A webhook delivery."""

    id: str
    event_id: str
    event_type: str
    task_id: str
    subscription_id: str | None
    url: str
    status: DeliveryStatus
    attempt_count: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    updated_at: str
    delivered_at: str | None
    attempts: list[Attempt] | None = None


class DeliveryPage(BaseModel):
    """A page of deliveries."""

    data: list[Delivery]
    next_cursor: str | None


class WebhookEvent(BaseModel):
    """A webhook body, as delivered and as listed by the event feed."""

    id: str
    type: EventType
    timestamp: str
    data: Task


class EventPage(BaseModel):
    """A page of the event feed."""

    data: list[WebhookEvent]
    next_cursor: str | None


class ProblemError(BaseModel):
    """One violation, located by JSON pointer."""

    loc: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemError] | None = None


class Health(BaseModel):
    """Liveness answer."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Readiness answer with each check's state."""

    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
