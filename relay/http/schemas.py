"""Request and response models of the API; the handlers and /openapi.json both use them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from relay.core.vocabulary import DeliveryStatus, EventType, HistorySource, TaskStatus


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
    client: str = Field(description="name of the client that submitted the task")


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
        description="hash of the task's previous entry; 64 zeros for the first (docs/audit.md)"
    )
    hash: str = Field(
        description="sha256 (hex) of the canonical JSON of this entry, its task id and "
        "prev_hash (docs/audit.md)"
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
    event_type: str = Field(description="a task event type, or webhook.test for a test event")
    task_id: str | None = Field(description="null for a subscription's test event")
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


def _in_utc(value: datetime | None) -> datetime | None:
    # The API speaks UTC: a timestamp without a zone is UTC, never the server's local time.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class SubscriptionRecover(_Strict):
    """`POST /v1/subscriptions/{id}/recover` body."""

    since: datetime = Field(
        description="queue again what the subscription missed from this time on (UTC)"
    )

    since_in_utc = field_validator("since")(_in_utc)


class DeliveryRetryFilter(_Strict):
    """`POST /v1/deliveries/retry` body: which failed or dead deliveries to send again."""

    subscription_id: str | None = Field(None, max_length=100)
    status: Literal["failed", "dead"] | None = Field(
        None, description="only deliveries in this status (default: failed and dead)"
    )
    since: datetime | None = Field(None, description="only deliveries created from then on")
    task_id: str | None = Field(None, max_length=100)

    since_in_utc = field_validator("since")(_in_utc)


class BulkQueued(BaseModel):
    """How many deliveries a recover or bulk retry queued (at most 10,000 per call)."""

    queued: int
    more: bool = Field(description="more deliveries match: call again to queue them")


class SubscriptionTestData(BaseModel):
    """`data` of a `webhook.test` event."""

    subscription_id: str
    message: str


class SubscriptionTestEvent(BaseModel):
    """The body of `webhook.test`, sent by `POST /v1/subscriptions/{id}/test`."""

    id: str
    type: Literal["webhook.test"]
    timestamp: str
    data: SubscriptionTestData


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


class SigningSecret(BaseModel):
    """A client's new signing secret for per-task `webhook_url` (shown once)."""

    secret: str
    previous_secret_expires_at: str = Field(
        description="until then webhooks also carry a signature by the previous secret"
    )


# Audit: the action log and usage (export answers JSON lines or CSV, described in prose).


class Action(BaseModel):
    """One entry of the action log: who did what to which resource, and when."""

    id: str
    at: str
    actor: str = Field(description='the client\'s name, or "cli:<user>" for the command line')
    actor_key_prefix: str | None = Field(description="first characters of the API key used")
    action: str = Field(description="e.g. task.created, task.cancel_requested, delivery.retried")
    resource_type: str
    resource_id: str | None
    request_id: str | None = Field(description="the X-Request-Id of the request that did it")
    details: dict[str, Any]


class ActionPage(BaseModel):
    """A page of the action log, newest first."""

    data: list[Action]
    next_cursor: str | None


class StatusCounts(BaseModel):
    """Tasks per status."""

    queued: int
    processing: int
    succeeded: int
    failed: int
    cancelled: int


class UsageTotals(BaseModel):
    """Task counts and summed costs (a cost not reported yet counts as 0)."""

    tasks: int
    by_status: StatusCounts
    cost_estimate: float
    cost_actual: float


class UsageGroup(UsageTotals):
    """Usage of one day (YYYY-MM-DD, UTC), model or client."""

    key: str


class UsageReport(BaseModel):
    """`GET /v1/usage`: one entry per group, ordered by key, and the total."""

    group_by: Literal["day", "model", "client"]
    data: list[UsageGroup]
    total: UsageTotals
