"""The MindVideo simulator behaves like the upstream the relay is built against."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.upstream.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
)

AUTH = {"Authorization": "Bearer sim-key"}
PRO_INPUT = {"prompt": "A skyline at golden hour", "duration": 5, "mode": "pro"}
# A frozen base clock: only state.advance() moves time, so tests never race the wall clock.
FROZEN = 1_000.0

MakeClient = Callable[..., Awaitable[tuple[TestClient, SimulatorState]]]


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    async def make(**config: Any) -> tuple[TestClient, SimulatorState]:
        config.setdefault("seed", 7)
        app = create_simulator_app(SimulatorConfig(**config), clock=lambda: FROZEN)
        return await aiohttp_client(app), app[SIM_STATE]

    return make


async def submit(client: TestClient, body: Any = None, **headers: str) -> Any:
    payload = body if body is not None else {"model": "kling-video-o1", "input": PRO_INPUT}
    return await client.post("/api/v1/tasks", json=payload, headers={**AUTH, **headers})


async def submit_ok(client: TestClient) -> str:
    resp = await submit(client)
    assert resp.status == 200
    return (await resp.json())["task_id"]


async def get_task(client: TestClient, task_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
    assert resp.status == 200
    return await resp.json()


async def get_events(client: TestClient, task_id: str) -> Any:
    resp = await client.get(f"/api/v1/tasks/{task_id}/events", headers=AUTH)
    assert resp.status == 200
    return await resp.json()


async def test_missing_or_wrong_bearer_key_is_401(make_client: MakeClient) -> None:
    client, state = await make_client()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "sim-key"}):
        resp = await client.get("/api/v1/tasks/task_x", headers=headers)
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"
    assert [r.status for r in state.requests] == [401, 401, 401]


async def test_submit_returns_queued_task_with_pro_price(make_client: MakeClient) -> None:
    client, state = await make_client()
    resp = await submit(client)
    assert resp.status == 200
    body = await resp.json()
    assert body["task_id"].startswith("task_")
    assert body["request_id"].startswith("req_")
    assert body["status"] == "queued"
    assert body["cost_estimate"] == 0.0756
    assert state.charges == 1


async def test_std_price_scales_with_duration(make_client: MakeClient) -> None:
    client, _ = await make_client()
    resp = await submit(
        client, {"model": "kling-video-o1", "input": {"prompt": "x", "duration": 10}}
    )
    assert (await resp.json())["cost_estimate"] == 0.084


async def test_same_key_same_payload_replays_without_second_charge(
    make_client: MakeClient,
) -> None:
    client, state = await make_client()
    first = await (await submit(client, **{"Idempotency-Key": "rt_1"})).json()
    resp = await submit(client, **{"Idempotency-Key": "rt_1"})
    assert resp.status == 200
    assert (await resp.json())["task_id"] == first["task_id"]
    assert state.charges == 1


async def test_same_key_different_body_is_409(make_client: MakeClient) -> None:
    client, state = await make_client()
    await submit(client, **{"Idempotency-Key": "rt_1"})
    other = {"model": "kling-video-o1", "input": {**PRO_INPUT, "prompt": "different"}}
    resp = await submit(client, other, **{"Idempotency-Key": "rt_1"})
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "idempotency_conflict"
    assert state.charges == 1


@pytest.mark.parametrize(
    "model_input",
    [{}, {"prompt": ""}, {"prompt": "x", "duration": 7}, {"prompt": "x", "colour": "red"}],
)
async def test_input_failing_the_schema_is_422(
    make_client: MakeClient, model_input: dict[str, Any]
) -> None:
    client, state = await make_client()
    resp = await submit(client, {"model": "kling-video-o1", "input": model_input})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "invalid_input"
    assert state.charges == 0


async def test_unknown_model_is_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    resp = await submit(client, {"model": "no-such-model", "input": {"prompt": "x"}})
    assert resp.status == 404
    assert "error" in await resp.json()


async def test_unknown_task_is_404(make_client: MakeClient) -> None:
    client, _ = await make_client()
    resp = await client.get("/api/v1/tasks/task_missing", headers=AUTH)
    assert resp.status == 404


async def test_task_walks_queued_processing_succeeded_with_growing_events(
    make_client: MakeClient,
) -> None:
    client, state = await make_client(task_duration_s=10.0)
    task_id = await submit_ok(client)
    seen: list[list[dict[str, Any]]] = []

    task = await get_task(client, task_id)
    assert (task["status"], task["output"], task["cost_actual"]) == ("queued", None, None)
    seen.append(await get_events(client, task_id))

    state.advance(3)  # 30%: past the 25% mark
    assert (await get_task(client, task_id))["status"] == "processing"
    seen.append(await get_events(client, task_id))

    state.advance(4)  # 70%: the progress event is out
    seen.append(await get_events(client, task_id))

    state.advance(3)  # 100%
    task = await get_task(client, task_id)
    assert task["status"] == "succeeded"
    assert task["cost_actual"] == task["cost_estimate"] == 0.0756
    assert task["output"] == {
        "videos": [{"url": f"https://cdn.sim.mindvideo.invalid/{task_id}.mp4"}]
    }
    assert task["error"] is None
    seen.append(await get_events(client, task_id))

    assert [len(events) for events in seen] == [1, 2, 3, 4]
    for shorter, longer in itertools.pairwise(seen):
        assert longer[: len(shorter)] == shorter  # the list only grows, order is stable
    final = seen[-1]
    assert [(e["type"], e["status"]) for e in final] == [
        ("status_changed", "queued"),
        ("status_changed", "processing"),
        ("progress", "processing"),
        ("status_changed", "succeeded"),
    ]
    assert final[2]["progress"] == 60
    assert [e["id"] for e in final] == [f"uev_{task_id}_{n}" for n in range(1, 5)]
    assert all(e["created_at"].endswith("Z") and len(e["created_at"]) == 24 for e in final)


async def test_failure_rate_one_ends_failed_with_error(make_client: MakeClient) -> None:
    client, state = await make_client(failure_rate=1.0)
    task_id = await submit_ok(client)
    state.advance(60)
    task = await get_task(client, task_id)
    assert task["status"] == "failed"
    assert task["error"]["code"] == "generation_failed"
    assert task["output"] is None
    assert task["cost_actual"] is None


@pytest.mark.parametrize("shape", ["events", "data"])
async def test_events_can_be_wrapped_in_an_object(make_client: MakeClient, shape: str) -> None:
    client, _ = await make_client(events_shape=shape)
    task_id = await submit_ok(client)
    body = await get_events(client, task_id)
    assert list(body) == [shape]
    assert body[shape][0]["status"] == "queued"


async def test_rotate_cycles_through_the_three_shapes(make_client: MakeClient) -> None:
    client, _ = await make_client(events_shape="rotate")
    task_id = await submit_ok(client)
    bodies = [await get_events(client, task_id) for _ in range(4)]
    assert isinstance(bodies[0], list)
    assert list(bodies[1]) == ["events"]
    assert list(bodies[2]) == ["data"]
    assert isinstance(bodies[3], list)


async def test_events_without_ids(make_client: MakeClient) -> None:
    client, state = await make_client(event_ids=False)
    task_id = await submit_ok(client)
    state.advance(10)
    events = await get_events(client, task_id)
    assert len(events) == 4
    assert all("id" not in e for e in events)


async def test_positive_events_lag_hides_recent_events(make_client: MakeClient) -> None:
    client, state = await make_client(task_duration_s=4.0, events_lag_s=2.0)
    task_id = await submit_ok(client)
    state.advance(4)
    assert (await get_task(client, task_id))["status"] == "succeeded"
    assert [e["status"] for e in await get_events(client, task_id)][-1] == "processing"
    state.advance(2)
    assert [e["status"] for e in await get_events(client, task_id)][-1] == "succeeded"


async def test_negative_events_lag_shows_events_before_status(make_client: MakeClient) -> None:
    client, state = await make_client(task_duration_s=4.0, events_lag_s=-2.0)
    task_id = await submit_ok(client)
    state.advance(4)
    assert [e["status"] for e in await get_events(client, task_id)][-1] == "succeeded"
    assert (await get_task(client, task_id))["status"] == "processing"


async def test_fail_next_answers_503_with_retry_after_then_recovers(
    make_client: MakeClient,
) -> None:
    client, state = await make_client()
    state.fail_next("submit", 2, 503, retry_after=3)
    for _ in range(2):
        resp = await submit(client)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "3"
        assert (await resp.json())["error"]["code"] == "service_unavailable"
    assert (await submit(client)).status == 200
    assert state.charges == 1


async def test_fail_next_with_a_custom_402_body(make_client: MakeClient) -> None:
    client, state = await make_client()
    task_id = await submit_ok(client)
    body = {"error": {"code": "insufficient_credits", "message": "top up"}}
    state.fail_next("any", 1, 402, body)
    resp = await client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
    assert resp.status == 402
    assert await resp.json() == body
    assert "Retry-After" not in resp.headers
    assert (await client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)).status == 200


async def test_random_429_carries_retry_after(make_client: MakeClient) -> None:
    client, _ = await make_client(rate_429=1.0, retry_after_s=0.5)
    resp = await submit(client)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "0.5"


async def test_cancel_then_cancel_again_is_409(make_client: MakeClient) -> None:
    client, _ = await make_client()
    task_id = await submit_ok(client)
    resp = await client.post(f"/api/v1/tasks/{task_id}/cancel", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    assert (await get_task(client, task_id))["status"] == "cancelled"
    assert [e["status"] for e in await get_events(client, task_id)] == ["queued", "cancelled"]
    again = await client.post(f"/api/v1/tasks/{task_id}/cancel", headers=AUTH)
    assert again.status == 409


async def test_cancel_after_success_is_409(make_client: MakeClient) -> None:
    client, state = await make_client()
    task_id = await submit_ok(client)
    state.advance(60)
    resp = await client.post(f"/api/v1/tasks/{task_id}/cancel", headers=AUTH)
    assert resp.status == 409


async def test_force_status_sets_any_status_and_appends_an_event(
    make_client: MakeClient,
) -> None:
    client, state = await make_client()
    task_id = await submit_ok(client)
    state.advance(2)
    state.force_status(task_id, "paused")
    state.advance(60)  # a forced status holds; the natural lifecycle stops there
    assert (await get_task(client, task_id))["status"] == "paused"
    events = await get_events(client, task_id)
    assert [e["status"] for e in events] == ["queued", "processing", "paused"]

    resp = await client.post(f"/_sim/tasks/{task_id}/status", json={"status": "succeeded"})
    assert resp.status == 200
    task = await get_task(client, task_id)
    assert task["status"] == "succeeded"
    assert task["output"] is not None


async def test_malformed_rate_one_gives_a_body_that_is_not_a_task(
    make_client: MakeClient,
) -> None:
    client, state = await make_client()
    task_id = await submit_ok(client)
    state.config.malformed_rate = 1.0
    for _ in range(6):
        resp = await client.get(f"/api/v1/tasks/{task_id}", headers=AUTH)
        assert resp.status == 200
        try:
            body = json.loads(await resp.text())
        except ValueError:
            continue
        assert not (isinstance(body, dict) and "task_id" in body and "status" in body)


async def test_bulk_creation_makes_tasks_without_charging(make_client: MakeClient) -> None:
    client, state = await make_client(task_duration_s=1.0)
    ids = state.create_tasks_bulk(1000, duration_s=2.0)
    assert len(set(ids)) == 1000
    resp = await client.post("/_sim/bulk", json={"count": 5})
    more = (await resp.json())["task_ids"]
    assert len(more) == 5
    state.advance(1.5)
    assert (await get_task(client, ids[0]))["status"] == "processing"
    assert (await get_task(client, more[0]))["status"] == "succeeded"
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["tasks"] == 1005
    assert stats["charges"] == 0


async def test_request_log_records_idempotency_key_and_redacts_authorization(
    make_client: MakeClient,
) -> None:
    client, state = await make_client()
    await submit(client, **{"Idempotency-Key": "rt_42"})
    await client.get("/_sim/stats")  # control calls stay out of the log
    (recorded,) = state.requests
    assert recorded.endpoint == "submit"
    assert recorded.method == "POST"
    assert recorded.status == 200
    assert recorded.header("Idempotency-Key") == "rt_42"
    assert recorded.header("Authorization") == "<redacted>"
    assert recorded.json == {"model": "kling-video-o1", "input": PRO_INPUT}
    assert state.requests_to("submit") == [recorded]

    logged = await (await client.get("/_sim/requests")).json()
    assert "sim-key" not in json.dumps(logged)


async def test_control_api_patches_config_and_queues_faults(make_client: MakeClient) -> None:
    client, state = await make_client()
    resp = await client.patch("/_sim/config", json={"events_shape": "data", "latency_s": 0})
    assert resp.status == 200
    assert state.config.events_shape == "data"
    bad = await client.patch("/_sim/config", json={"no_such_knob": 1})
    assert bad.status == 400
    resp = await client.post("/_sim/fail", json={"endpoint": "get", "count": 1, "status": 429})
    assert resp.status == 200
    assert (await client.get("/api/v1/tasks/task_x", headers=AUTH)).status == 429


async def test_seed_makes_outcomes_reproducible() -> None:
    def outcomes() -> list[str]:
        state = SimulatorState(SimulatorConfig(seed=3, failure_rate=0.5), clock=lambda: 0.0)
        ids = state.create_tasks_bulk(50)
        state.advance(60)
        return [state.task_body(task_id)["status"] for task_id in ids]

    first = outcomes()
    assert first == outcomes()
    assert {"succeeded", "failed"} == set(first)
