"""The submitting request's `traceparent` travels with every webhook of its task.

These run with tracing off (no OTEL_* variables): propagation needs neither the otel extra
nor a collector. With tracing on, see tests/integration/test_tracing.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from relay.core import tracing
from relay.core.store import Store
from tests.helpers import TASK, auth, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import (
    advance,
    deliver_all,
    subscribe,
    wait_for_delivery,
)
from tests.receiver import Receiver

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def submit_traced(
    api: TestClient, client: dict[str, str], traceparent: str, **extra: Any
) -> tuple[int, dict[str, Any]]:
    """POST /v1/tasks with a traceparent header; returns (status, task)."""
    headers = {**auth(client), "traceparent": traceparent}
    resp = await api.post("/v1/tasks", json={**TASK, **extra}, headers=headers)
    assert resp.status in (200, 202), await resp.text()
    return resp.status, await resp.json()


async def test_every_webhook_of_a_traced_submission_carries_its_traceparent(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    assert not tracing.enabled()
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/subscribed"))
    _, task = await submit_traced(
        relay_app, client, TRACEPARENT, webhook_url=receiver.url("/per-task")
    )
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")
    await deliver_all(dispatchers.make())

    got = await receiver.wait_for_requests(6)
    # Both routes to a receiver (a subscription and the task's own URL), every event.
    assert sorted((r.path, r.event_type) for r in got) == sorted(
        (path, event)
        for path in ("/subscribed", "/per-task")
        for event in ("task.queued", "task.processing", "task.succeeded")
    )
    assert {r.headers.get("traceparent") for r in got} == {TRACEPARENT}


async def test_a_task_submitted_without_a_valid_traceparent_sends_none(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    untraced = await submit_task(relay_app, client)
    # A malformed header is ignored (W3C: start afresh), never a reason to refuse the task.
    status, invalid = await submit_traced(relay_app, client, TRACEPARENT.upper())
    assert status == 202
    traced_other = await submit_task(relay_app, client)  # a neighbour that must not leak in
    await deliver_all(dispatchers.make())

    got = await receiver.wait_for_requests(3)
    by_task = {r.json["data"]["id"]: r for r in got}
    assert by_task.keys() == {untraced["id"], invalid["id"], traced_other["id"]}
    assert all("traceparent" not in r.headers for r in got)
    for task_id in by_task:
        row = await store.fetchrow("get_task", id=task_id, scope=None)
        assert row is not None and row["traceparent"] is None


async def test_an_idempotent_replay_keeps_the_first_requests_traceparent(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    key = {"Idempotency-Key": "order-17"}
    first = await relay_app.post(
        "/v1/tasks",
        json={**TASK, "webhook_url": receiver.url("/hooks")},
        headers={**auth(client), **key, "traceparent": TRACEPARENT},
    )
    assert first.status == 202, await first.text()
    # The trace header is not part of the request: another one replays, not 409.
    replay = await relay_app.post(
        "/v1/tasks",
        json={**TASK, "webhook_url": receiver.url("/hooks")},
        headers={**auth(client), **key, "traceparent": other},
    )
    assert replay.status == 200, await replay.text()
    task = await first.json()
    assert (await replay.json())["id"] == task["id"]
    await deliver_all(dispatchers.make())

    await wait_for_delivery(relay_app, client, task["id"], "succeeded")
    (request,) = receiver.requests
    assert request.headers["traceparent"] == TRACEPARENT
