"""Webhook-specific test helpers: tasks through their statuses, subscriptions, deliveries.

The shared ones (submit_task, get_json, auth, wait_for...) are in tests/helpers.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient

from relay.core.store import OUTBOX_CHANNEL, Db, Store
from relay.delivery.dispatcher import Dispatcher
from relay.history.transitions import NewHistoryEntry, TaskOutcome, record_task_outcomes
from tests.helpers import auth, get_json, wait_for


async def listen_backends(store: Store) -> list[int]:
    """Backend pids of this database's connections listening for the outbox."""
    rows = await store.pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE $1",
        f"LISTEN%{OUTBOX_CHANNEL}%",
    )
    return [r["pid"] for r in rows]


async def advance(store: Store, task_id: str, status: str, **fields: Any) -> None:
    """Record a status change the way the poller does (outbox in the same transaction)."""
    row = await store.fetchrow("get_task", id=task_id, scope=None)
    assert row is not None
    if status == "succeeded":
        fields.setdefault("output", {"video_url": f"https://cdn.example/{task_id}.mp4"})
        fields.setdefault("cost_actual", 0.0756)
    outcome = TaskOutcome.from_row(
        row,
        status=status,
        entries=[NewHistoryEntry.status_change(row["status"], status, "upstream")],
        **fields,
    )
    async with store.transaction() as db:
        await record_task_outcomes(db, None, [outcome])


async def subscribe(api: TestClient, client: dict[str, str], url: str, **body: Any) -> dict:
    """POST /v1/subscriptions; returns the created subscription (with its secret)."""
    resp = await api.post("/v1/subscriptions", json={"url": url, **body}, headers=auth(client))
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def task_deliveries(
    api: TestClient, client: dict[str, str], task_id: str
) -> list[dict[str, Any]]:
    """GET /v1/tasks/{id}/deliveries data."""
    return (await get_json(api, client, f"/v1/tasks/{task_id}/deliveries"))["data"]


async def wait_for_delivery(
    api: TestClient, client: dict[str, str], task_id: str, status: str, *, count: int = 1
) -> list[dict[str, Any]]:
    """Wait until `count` deliveries of the task have `status`; returns all its deliveries."""

    async def reached() -> list[dict[str, Any]] | None:
        found = await task_deliveries(api, client, task_id)
        return found if sum(d["status"] == status for d in found) >= count else None

    return await wait_for(reached)


async def claim_as(db: Db, owner: str) -> list[Any]:
    """The dispatcher's claim statement run by hand: what `owner` would lease now (up to 10)."""
    return await db.fetch(
        "claim_due_deliveries",
        owner=owner,
        batch_size=10,
        lease_s=60.0,
        now=datetime.now(UTC),
        per_target_limit=8,
        in_flight={},
    )


async def expire_leases(store: Store) -> None:
    """Make every waiting delivery due now (a lease expiring, a retry time arriving)."""
    await store.pool.execute(
        "UPDATE deliveries SET next_attempt_at = now(), leased_until = NULL"
        " WHERE status IN ('pending', 'failed')"
    )


async def deliver_all(dispatcher: Dispatcher) -> None:
    """Run passes until nothing is due (retries whose time has not come stay waiting)."""
    while await dispatcher.run_once():
        pass
