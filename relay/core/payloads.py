"""The JSON shapes the contract shows, built from database rows (no aiohttp here)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from relay.core.vocabulary import EVENT_TYPES


def iso(value: datetime | None) -> str | None:
    """UTC with milliseconds and Z, as the contract shows timestamps."""
    if value is None:
        return None
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def task_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The task object of `GET /v1/tasks/{id}` (and of every webhook's `data`)."""
    return {
        "id": row["id"],
        "model": row["model"],
        "status": row["status"],
        "upstream_task_id": row["upstream_task_id"],
        "upstream_request_id": row["upstream_request_id"],
        "cost_estimate": row["cost_estimate"],
        "cost_actual": row["cost_actual"],
        "output": row["output"],
        "error": row["error"],
        "metadata": row["metadata"],
        "webhook_url": row["webhook_url"],
        "webhook_events": list(row["webhook_events"]) if row["webhook_events"] else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "completed_at": iso(row["completed_at"]),
        "client": row["client_name"],
    }


def history_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of `GET /v1/tasks/{id}/events`."""
    return {
        "id": row["id"],
        "seq": row["seq"],
        "type": row["type"],
        "from_status": row["from_status"],
        "to_status": row["to_status"],
        "source": row["source"],
        "upstream_event": row["upstream_event"],
        "created_at": iso(row["created_at"]),
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }


def subscription_json(row: Mapping[str, Any], *, secret: str | None = None) -> dict[str, Any]:
    """A subscription; the secret only when just created or rotated."""
    body = {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]) if row["events"] is not None else list(EVENT_TYPES),
        "models": list(row["models"]) if row["models"] is not None else None,
        "description": row["description"],
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _parked(when: datetime | None) -> bool:
    # A delivery waiting for a disabled subscription is due at 'infinity', which asyncpg
    # reads as datetime.max: it has no next attempt time until the subscription is enabled.
    return when is not None and when.year == datetime.max.year


def _next_attempt_at(row: Mapping[str, Any]) -> datetime | None:
    """When the next attempt is due: while one is in flight, when its lease runs out."""
    due = row["next_attempt_at"]
    leased_until = row.get("leased_until")
    if leased_until is not None and due is not None and leased_until > due:
        return leased_until
    return due


def delivery_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A webhook delivery (with `attempts` when the row carries them)."""
    body = {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "task_id": row["task_id"],
        "subscription_id": row["subscription_id"],
        "url": row["url"],
        "status": row["status"],
        "attempt_count": row["attempt_count"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "next_attempt_at": iso(_next_attempt_at(row))
        if row["status"] in ("pending", "failed") and not _parked(row["next_attempt_at"])
        else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "delivered_at": iso(row["delivered_at"]),
    }
    if "attempts" in row.keys():
        body["attempts"] = row["attempts"]
    return body


def webhook_body(
    event_id: str, event_type: str, at: datetime, task: dict[str, Any]
) -> dict[str, Any]:
    """The webhook body: `{"id", "type", "timestamp", "data": <task object>}`."""
    return {"id": event_id, "type": event_type, "timestamp": iso(at), "data": task}


def subscription_test_body(
    event_id: str, event_type: str, at: datetime, subscription_id: str
) -> dict[str, Any]:
    """The body of a subscription's test event: `data` names the subscription, no task."""
    return {
        "id": event_id,
        "type": event_type,
        "timestamp": iso(at),
        "data": {
            "subscription_id": subscription_id,
            "message": "a test event sent on request; it belongs to no task",
        },
    }
