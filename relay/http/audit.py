"""Audit routes: the action log (who did what), task export, usage and cost."""

from __future__ import annotations

from contextlib import aclosing
from datetime import UTC, datetime
from typing import Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from relay.audit import action_log as actions
from relay.audit import export, usage
from relay.core.errors import FieldError, InvalidRequest
from relay.http.common import json_response, read_query
from relay.http.openapi import documented
from relay.http.schemas import ActionPage, UsageReport
from relay.keys import CLIENT, STORE

log = structlog.get_logger(__name__)
routes = web.RouteTableDef()


def _utc(value: datetime | None) -> datetime | None:
    # The API speaks UTC: a time without an offset is UTC, never the server's local zone.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _check_range(
    start: datetime | None, end: datetime | None, start_name: str, end_name: str
) -> None:
    if start is not None and end is not None and end <= start:
        raise InvalidRequest(
            f"{end_name} must be later than {start_name}",
            [FieldError(f"/query/{end_name}", f"must be later than {start_name}")],
        )


class AuditLogQuery(BaseModel):
    """`GET /v1/audit-log` query parameters; every filter is optional."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = Field(None, max_length=300, description='client name or "cli:<user>"')
    action: str | None = Field(None, max_length=100, description="e.g. task.cancel_requested")
    resource_type: str | None = Field(
        None, max_length=100, description="task, subscription, delivery or client"
    )
    resource_id: str | None = Field(None, max_length=300)
    from_: datetime | None = Field(None, alias="from", description="at or after (inclusive)")
    to: datetime | None = Field(None, description="before (exclusive)")
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=100)

    _utc_times = field_validator("from_", "to")(_utc)


@routes.get("/v1/audit-log")
@documented(
    "Who did what: the action log, newest first (admin keys only)",
    {200: ActionPage},
    query=AuditLogQuery,
    errors=(403,),
)
async def audit_log(request: web.Request) -> web.Response:
    """A page of the action log, filtered by actor, action, resource and time."""
    client = request[CLIENT]
    actions.require_audit_reader(client)  # before parsing: a client learns nothing else
    query = read_query(request, AuditLogQuery)
    _check_range(query.from_, query.to, "from", "to")
    page, next_cursor = await actions.list_actions(
        request.app[STORE],
        client,
        actor=query.actor,
        action=query.action,
        resource_type=query.resource_type,
        resource_id=query.resource_id,
        from_at=query.from_,
        to_at=query.to,
        cursor=query.cursor,
        limit=query.limit,
    )
    return json_response(
        {"data": [actions.action_json(r) for r in page], "next_cursor": next_cursor}
    )


class ExportQuery(BaseModel):
    """`GET /v1/tasks/export`: tasks created in [created_after, created_before)."""

    model_config = ConfigDict(extra="forbid")

    created_after: datetime | None = Field(
        None, description="created at or after this time (inclusive)"
    )
    created_before: datetime | None = Field(
        None, description="created before this time (exclusive)"
    )
    format: Literal["jsonl", "csv"] = "jsonl"

    _utc_times = field_validator("created_after", "created_before")(_utc)


@routes.get("/v1/tasks/export")
@documented(
    "Every task created in a range with its history, streamed: JSON lines (one task with "
    "its `history` per line) or CSV (one row per history entry)",
    {200: None},
    query=ExportQuery,
    content_type=export.CONTENT_TYPES["jsonl"],
    other_content_types=(export.CONTENT_TYPES["csv"],),
)
async def export_tasks(request: web.Request) -> web.StreamResponse:
    """Stream the export; a client gets its own tasks, an admin everyone's."""
    query = read_query(request, ExportQuery)
    _check_range(query.created_after, query.created_before, "created_after", "created_before")
    what = export.ExportRange(request[CLIENT].scope, query.created_after, query.created_before)
    async with aclosing(export.export_chunks(request.app[STORE], what, query.format)) as chunks:
        # The first chunk is read before answering, so a database that is down answers 503
        # (through the error middleware) instead of an empty 200.
        first = await anext(chunks, None)
        response = web.StreamResponse(
            headers={
                "Content-Type": f"{export.CONTENT_TYPES[query.format]}; charset=utf-8",
                "Content-Disposition": f'attachment; filename="tasks.{query.format}"',
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if first is not None:
                await response.write(first.encode())
            async for chunk in chunks:
                await response.write(chunk.encode())
        except Exception as exc:
            # The status line is gone: no problem+json can follow. Cutting the connection
            # before the last chunk tells the caller the export is incomplete.
            log.warning("export_interrupted", error=type(exc).__name__)
            if request.transport is not None:
                request.transport.abort()
            return response
    await response.write_eof()
    return response


class UsageQuery(BaseModel):
    """`GET /v1/usage`: tasks created in [from, to), grouped."""

    model_config = ConfigDict(extra="forbid")

    from_: datetime | None = Field(None, alias="from", description="at or after (inclusive)")
    to: datetime | None = Field(None, description="before (exclusive)")
    group_by: Literal["day", "model", "client"] = Field(
        "day", description="day (UTC), model or client (a client sees only itself)"
    )

    _utc_times = field_validator("from_", "to")(_utc)


@routes.get("/v1/usage")
@documented(
    "Tasks counted by status with summed costs, per day, model or client",
    {200: UsageReport},
    query=UsageQuery,
)
async def usage_report(request: web.Request) -> web.Response:
    """Usage of the caller's tasks (an admin: everyone's)."""
    query = read_query(request, UsageQuery)
    _check_range(query.from_, query.to, "from", "to")
    report = await usage.usage(
        request.app[STORE],
        request[CLIENT],
        group_by=query.group_by,
        from_at=query.from_,
        to_at=query.to,
    )
    return json_response(report)
