"""Idempotency-Key: a replay returns the original task and never reaches upstream again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.keys import RUNTIME
from relay.upstream.simulator import SimulatorState
from tests.helpers import SAMPLE_INPUT, auth, read_problem

NewClient = Callable[..., Awaitable[dict[str, str]]]
BODY = {"model": "kling-video-o1", "input": SAMPLE_INPUT, "metadata": {"order_id": "A-17"}}


async def post(
    relay_app: TestClient, client: dict[str, str], key: str | None, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = auth(client) | ({"Idempotency-Key": key} if key is not None else {})
    resp = await relay_app.post("/v1/tasks", json=body or BODY, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def task_rows(store: Store) -> list[str]:
    return [r["id"] for r in await store.pool.fetch("SELECT id FROM tasks ORDER BY id")]


async def test_same_key_same_body_is_200_with_the_original_task(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    status, first = await post(relay_app, client, "order-A-17")
    assert status == 202
    status, again = await post(relay_app, client, "order-A-17")
    assert status == 200
    assert again == first
    assert await task_rows(store) == [first["id"]]
    assert len(sim.requests_to("submit")) == 1
    assert sim.charges == 1


async def test_same_key_different_body_is_409(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    status, first = await post(relay_app, client, "k-1")
    assert status == 202
    changed = {**BODY, "input": {**SAMPLE_INPUT, "duration": 10}}
    resp = await relay_app.post(
        "/v1/tasks", json=changed, headers=auth(client) | {"Idempotency-Key": "k-1"}
    )
    problem = await read_problem(resp, 409)
    assert "Idempotency-Key" in problem["detail"]
    assert await task_rows(store) == [first["id"]]
    assert len(sim.requests_to("submit")) == 1


async def test_a_metadata_change_is_a_different_body(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    assert (await post(relay_app, client, "k-2"))[0] == 202
    status, _ = await post(relay_app, client, "k-2", {**BODY, "metadata": {"order_id": "A-18"}})
    assert status == 409


async def test_same_body_with_keys_in_another_order_is_a_replay(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState
) -> None:
    client = await new_client()
    status, first = await post(relay_app, client, "k-3")
    assert status == 202
    reordered = {
        "metadata": {"order_id": "A-17"},
        "input": dict(reversed(list(SAMPLE_INPUT.items()))),
        "model": "kling-video-o1",
    }
    status, again = await post(relay_app, client, "k-3", reordered)
    assert (status, again["id"]) == (200, first["id"])
    assert len(sim.requests_to("submit")) == 1


async def test_same_key_from_two_clients_is_independent(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    a, b = await new_client("a"), await new_client("b")
    status_a, task_a = await post(relay_app, a, "shared-key")
    status_b, task_b = await post(relay_app, b, "shared-key", {**BODY, "metadata": None})
    assert (status_a, status_b) == (202, 202)
    assert task_a["id"] != task_b["id"]
    assert sorted(await task_rows(store)) == sorted([task_a["id"], task_b["id"]])
    assert sim.charges == 2
    # Each client's replay finds its own task.
    assert (await post(relay_app, a, "shared-key"))[1]["id"] == task_a["id"]
    assert (await post(relay_app, b, "shared-key", {**BODY, "metadata": None}))[1]["id"] == (
        task_b["id"]
    )


async def test_requests_without_a_key_are_never_deduplicated(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    statuses = [(await post(relay_app, client, None))[0] for _ in range(2)]
    assert statuses == [202, 202]
    assert len(await task_rows(store)) == 2
    assert sim.charges == 2


async def test_concurrent_requests_with_one_key_create_exactly_one_task(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    answers = await asyncio.gather(*(post(relay_app, client, "race-1") for _ in range(10)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 9 + [202]
    ids = {body["id"] for _, body in answers}
    assert len(ids) == 1
    assert await task_rows(store) == list(ids)
    assert len(sim.requests_to("submit")) == 1
    assert sim.charges == 1
    assert await store.pool.fetchval("SELECT count(*) FROM idempotency_keys") == 1


async def test_concurrent_requests_with_one_key_and_different_bodies_create_one_task(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    bodies = [{**BODY, "metadata": {"n": n}} for n in range(6)]
    answers = await asyncio.gather(*(post(relay_app, client, "race-2", b) for b in bodies))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [202] + [409] * 5
    assert len(await task_rows(store)) == 1
    assert len(sim.requests_to("submit")) == 1


async def test_replay_of_a_deferred_task_sends_nothing_upstream(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, 503)
    status, first = await post(relay_app, client, "k-4")
    assert (status, first["upstream_task_id"]) == (202, None)
    status, again = await post(relay_app, client, "k-4")
    assert (status, again["id"], again["upstream_task_id"]) == (200, first["id"], None)
    assert len(sim.requests_to("submit")) == 1  # the failed first try only
    assert sim.charges == 0


async def test_rejected_request_does_not_use_up_its_key(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    bad = {**BODY, "input": {**SAMPLE_INPUT, "duration": 7}}
    assert (await post(relay_app, client, "k-5", bad))[0] == 422
    assert (await post(relay_app, client, "k-5"))[0] == 202


async def test_key_of_255_characters_is_accepted(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    key = "k" * 255
    status, first = await post(relay_app, client, key)
    assert status == 202
    status, again = await post(relay_app, client, key)
    assert (status, again["id"]) == (200, first["id"])


async def test_keys_are_kept_a_day_then_swept_by_the_background_loop(
    relay_app: TestClient, new_client: NewClient, store: Store, app: web.Application
) -> None:
    client = await new_client()
    status, day_old = await post(relay_app, client, "k-day")
    assert status == 202
    status, _ = await post(relay_app, client, "k-stale")
    assert status == 202
    await store.pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - CASE key"
        " WHEN 'k-day' THEN interval '47 hours' ELSE interval '49 hours' END"
    )
    await app[RUNTIME].loop("resubmitter").run_once()
    keys = await store.pool.fetch("SELECT key FROM idempotency_keys")
    assert [r["key"] for r in keys] == ["k-day"]
    status, again = await post(relay_app, client, "k-day")
    assert (status, again["id"]) == (200, day_old["id"])
    status, _ = await post(relay_app, client, "k-stale")
    assert status == 202  # the stale key is free again: a new task
