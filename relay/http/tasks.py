"""Task routes: submit, read, list, history, cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.core import tracing
from relay.core.errors import FieldError, InvalidRequest
from relay.core.payloads import history_json, task_json
from relay.core.vocabulary import TaskStatus
from relay.http.common import json_response, read_body, read_query
from relay.http.openapi import documented
from relay.http.schemas import HistoryPage, Task, TaskCreate, TaskPage
from relay.intake.validation import NewTask
from relay.keys import CLIENT, REQUEST_ID, TASKS

routes = web.RouteTableDef()
# Stripe and the MindVideo notes both bound idempotency keys; the contract says 255.
IDEMPOTENCY_KEY_MAX = 255


class TaskListQuery(BaseModel):
    """`GET /v1/tasks` query parameters."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = None
    model: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    client: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="only this client's tasks (for admin and auditor keys; a client key "
        "sees only its own tasks either way)",
    )
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=100)

    @field_validator("created_before")
    @classmethod
    def _before_in_utc(cls, value: datetime | None) -> datetime | None:
        # "before 12:00:00.123Z" already excludes every task of that millisecond.
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    @field_validator("created_after")
    @classmethod
    def _after_in_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # the API speaks UTC; never the server's local zone
            value = value.replace(tzinfo=UTC)
        if value.microsecond % 1000 == 0:
            # Timestamps are shown to the millisecond, so "after 12:00:00.123Z" means after
            # that whole millisecond: a task's own created_at then excludes the task.
            value += timedelta(microseconds=999)
        return value


@routes.post("/v1/tasks")
@documented(
    "Submit a task",
    {202: Task, 200: Task},
    body=TaskCreate,
    errors=(409,),
    headers={
        "Idempotency-Key": "Replays return the original task (200, header "
        "`Idempotent-Replayed: true`) for 24 h or more; 1 to 255 UTF-8 characters",
        "traceparent": "W3C Trace Context; sent with every webhook of the task so the "
        "receiver's trace links to the submission (an invalid value is ignored)",
    },
)
async def create_task(request: web.Request) -> web.Response:
    """Validate, store, submit upstream: 202 (new) or 200 (idempotent replay)."""
    key = _idempotency_key(request)
    body = await read_body(request, TaskCreate, also=request.app[TASKS].field_errors)
    new_task = NewTask(
        model=body.model,
        input=body.input,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        webhook_events=list(body.webhook_events) if body.webhook_events else None,
        metadata=body.metadata,
    )
    # Carried to the task's webhooks (docs/operations.md "Tracing"); an invalid header is ignored.
    traceparent = tracing.submission_traceparent(request.headers.get(tracing.TRACEPARENT_HEADER))
    row, created = await request.app[TASKS].create_task(
        request[CLIENT],
        new_task,
        key,
        request_id=request.get(REQUEST_ID),
        traceparent=traceparent,
    )
    response = json_response(task_json(row), status=202 if created else 200)
    response.headers["Location"] = f"/v1/tasks/{row['id']}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header, or None; 400 naming the header when it is unusable."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    problem = None
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        problem = "must be 1 to 255 characters"
    else:
        # aiohttp decodes header bytes as UTF-8, keeping undecodable bytes as lone
        # surrogates; Postgres text cannot store those, so they are refused here.
        try:
            key.encode()
        except UnicodeEncodeError:
            problem = "must be UTF-8 text (it holds bytes that are not)"
        else:
            if "\x00" in key:
                problem = "must not contain the NUL character"
    if problem is None:
        return key
    raise InvalidRequest(
        f"Idempotency-Key {problem}", [FieldError("/headers/Idempotency-Key", problem)], status=400
    )


@routes.get("/v1/tasks")
@documented("List tasks, newest first", {200: TaskPage}, query=TaskListQuery)
async def list_tasks(request: web.Request) -> web.Response:
    """Tasks newest first, keyset-paginated."""
    query = read_query(request, TaskListQuery)
    page, next_cursor = await request.app[TASKS].list_tasks(
        request[CLIENT],
        status=query.status,
        model=query.model,
        created_after=query.created_after,
        created_before=query.created_before,
        client_name=query.client,
        cursor=query.cursor,
        limit=query.limit,
    )
    return json_response({"data": [task_json(r) for r in page], "next_cursor": next_cursor})


@routes.get("/v1/tasks/{task_id}")
@documented("Get a task", {200: Task}, errors=(404,))
async def get_task(request: web.Request) -> web.Response:
    """One task."""
    row = await request.app[TASKS].get_task(request[CLIENT], request.match_info["task_id"])
    return json_response(task_json(row))


@routes.get("/v1/tasks/{task_id}/events")
@documented("A task's audit history, oldest first", {200: HistoryPage}, errors=(404,))
async def task_events(request: web.Request) -> web.Response:
    """The task's audit history, oldest first."""
    rows = await request.app[TASKS].task_history(request[CLIENT], request.match_info["task_id"])
    return json_response({"data": [history_json(r) for r in rows]})


@routes.post("/v1/tasks/{task_id}/cancel")
@documented("Ask upstream to cancel a task", {202: Task}, errors=(404, 409, 502, 503))
async def cancel_task(request: web.Request) -> web.Response:
    """Forward a cancellation upstream; 202 with the task as it stands."""
    row = await request.app[TASKS].cancel_task(
        request[CLIENT], request.match_info["task_id"], request_id=request.get(REQUEST_ID)
    )
    return json_response(task_json(row), status=202)
