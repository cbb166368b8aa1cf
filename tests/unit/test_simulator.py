"""The MindVideo simulator behaves like the upstream the relay is built against."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import re
import statistics
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.upstream.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    add_simulator_arguments,
    config_from_args,
    create_simulator_app,
    draw_realistic_times,
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


# Realistic timing, true transition times and request counts (issue 9.1).

KLING_MEDIANS = {(5, "std"): 150.0, (10, "std"): 240.0, (5, "pro"): 210.0, (10, "pro"): 336.0}


def realistic_state(seed: int = 11, **config: Any) -> SimulatorState:
    return SimulatorState(SimulatorConfig(seed=seed, timing="realistic", **config), lambda: 0.0)


def submit_in_process(state: SimulatorState, count: int, **model_input: Any) -> list[str]:
    model_input = {"prompt": "x", **model_input}
    return [state.submit("kling-video-o1", model_input, None)["task_id"] for _ in range(count)]


def drawn(state: SimulatorState, ids: list[str]) -> list[tuple[float, float]]:
    reports = [state.task_report(task_id) for task_id in ids]
    return [(r["queued_s"], r["processing_s"]) for r in reports]


def test_realistic_draws_repeat_per_seed_in_submit_order_whatever_else_draws() -> None:
    quiet = realistic_state()
    first = drawn(quiet, submit_in_process(quiet, 20))
    # Fault draws between submits use the other sequence, so the timings stay the same.
    busy = realistic_state(rate_429=0.5, malformed_rate=0.5)
    ids = []
    for _ in range(20):
        busy.take_fault("get")
        busy.draw_malformed("get")
        ids += submit_in_process(busy, 1)
    assert drawn(busy, ids) == first
    other = realistic_state(seed=12)
    assert drawn(other, submit_in_process(other, 20)) != first
    assert len(set(first)) == 20


@pytest.mark.parametrize(("duration", "mode"), list(KLING_MEDIANS))
def test_realistic_kling_draws_have_the_documented_shape(duration: int, mode: str) -> None:
    rng = random.Random(f"{duration}{mode}")
    draws = [
        draw_realistic_times(rng, "kling-video-o1", {"duration": duration, "mode": mode})
        for _ in range(2000)
    ]
    queued = [d.queued_s for d in draws]
    assert 10 <= min(queued) and max(queued) <= 30
    assert statistics.mean(queued) == pytest.approx(20, abs=1)
    processing = sorted(d.processing_s for d in draws)
    assert statistics.median(processing) == pytest.approx(KLING_MEDIANS[duration, mode], rel=0.05)
    # sigma 0.22: the 16th..84th percentiles sit near exp(-0.22)..exp(0.22) of the median.
    low, high = processing[320], processing[1680]
    assert high / low == pytest.approx(math.exp(0.44), rel=0.1)
    for d in draws[:10]:  # the progress event comes halfway through processing
        assert d.progress_after == pytest.approx(d.queued_s + d.processing_s / 2)


def test_realistic_pro_is_longer_than_std_and_ten_seconds_than_five() -> None:
    def median(**model_input: Any) -> float:
        state = realistic_state(seed=4)
        return statistics.median(
            p for _, p in drawn(state, submit_in_process(state, 400, **model_input))
        )

    std5, std10 = median(duration=5, mode="std"), median(duration=10, mode="std")
    pro5, pro10 = median(duration=5, mode="pro"), median(duration=10, mode="pro")
    assert std5 < std10 and pro5 < pro10
    assert pro5 / std5 == pytest.approx(1.4, rel=0.05)
    assert pro10 / std10 == pytest.approx(1.4, rel=0.05)
    assert median() == pytest.approx(std5, rel=0.1)  # no duration/mode: 5 s std


def test_models_without_a_profile_get_the_generic_distribution() -> None:
    rng = random.Random(2)
    draws = [draw_realistic_times(rng, "some-other-model", {}) for _ in range(1000)]
    assert statistics.median(d.processing_s for d in draws) == pytest.approx(120, rel=0.05)
    assert all(5 <= d.queued_s <= 20 for d in draws)


def test_time_scale_shrinks_realistic_and_fixed_timings() -> None:
    normal, fast = realistic_state(), realistic_state(time_scale=0.05)
    slow_draws = drawn(normal, submit_in_process(normal, 10))
    fast_draws = drawn(fast, submit_in_process(fast, 10))
    for (q, p), (fq, fp) in zip(slow_draws, fast_draws, strict=True):
        assert fq == pytest.approx(q * 0.05, abs=1e-5)
        assert fp == pytest.approx(p * 0.05, abs=1e-5)

    fixed = SimulatorState(SimulatorConfig(task_duration_s=10, time_scale=0.5), lambda: 0.0)
    (task_id,) = submit_in_process(fixed, 1)
    fixed.advance(4.9)
    assert fixed.task_body(task_id)["status"] == "processing"
    fixed.advance(0.1)
    assert fixed.task_body(task_id)["status"] == "succeeded"


def test_bulk_tasks_follow_the_timing_unless_given_a_duration() -> None:
    state = realistic_state()
    drawn_ids = state.create_tasks_bulk(20)
    assert len(set(drawn(state, drawn_ids))) == 20
    assert all(10 <= q <= 30 for q, _ in drawn(state, drawn_ids))
    fixed_ids = state.create_tasks_bulk(3, duration_s=8.0)
    assert drawn(state, fixed_ids) == [(2.0, 6.0)] * 3


async def test_realistic_task_walks_its_drawn_timeline_and_reports_true_times(
    make_client: MakeClient,
) -> None:
    client, state = await make_client(timing="realistic")
    task_id = await submit_ok(client)
    report = await (await client.get(f"/_sim/tasks/{task_id}")).json()
    queued_s, processing_s = report["queued_s"], report["processing_s"]
    assert 10 <= queued_s <= 30 and processing_s > 0
    assert report["status"] == "queued"
    assert (report["processing_at"], report["completed_at"]) == (None, None)
    assert report["model"] == "kling-video-o1"

    state.advance(queued_s - 0.01)
    assert (await get_task(client, task_id))["status"] == "queued"
    state.advance(0.02)
    assert (await get_task(client, task_id))["status"] == "processing"
    report = await (await client.get(f"/_sim/tasks/{task_id}")).json()
    assert report["processing_at"] == pytest.approx(report["created_at"] + queued_s, abs=1e-5)
    assert report["completed_at"] is None

    state.advance(processing_s / 2)
    events = await get_events(client, task_id)
    assert [e["type"] for e in events] == ["status_changed", "status_changed", "progress"]
    state.advance(processing_s / 2)
    assert (await get_task(client, task_id))["status"] == "succeeded"
    report = await (await client.get(f"/_sim/tasks/{task_id}")).json()
    assert report["status"] == "succeeded"
    total = queued_s + processing_s
    assert report["completed_at"] == pytest.approx(report["created_at"] + total, abs=1e-5)
    # The true times are on the clock of the events' created_at (millisecond precision).
    events = await get_events(client, task_id)
    stamps = [datetime.fromisoformat(e["created_at"]).timestamp() for e in events]
    expected = [report["created_at"], report["processing_at"], report["completed_at"]]
    assert [stamps[0], stamps[1], stamps[3]] == pytest.approx(expected, abs=0.002)


async def test_cancelled_task_reports_when_it_was_cancelled(make_client: MakeClient) -> None:
    client, state = await make_client()
    task_id = await submit_ok(client)
    state.advance(0.5)
    await client.post(f"/api/v1/tasks/{task_id}/cancel", headers=AUTH)
    report = state.task_report(task_id)
    assert report["status"] == "cancelled"
    assert report["processing_at"] is None
    assert report["completed_at"] == pytest.approx(report["created_at"] + 0.5, abs=1e-5)


async def test_task_list_pages_with_offset_and_limit(make_client: MakeClient) -> None:
    client, state = await make_client()
    ids = state.create_tasks_bulk(5)
    body = await (await client.get("/_sim/tasks")).json()
    assert [t["task_id"] for t in body["tasks"]] == ids
    assert body["now"] == pytest.approx(state.unix_time(), abs=1e-5)
    page = await (await client.get("/_sim/tasks", params={"offset": 1, "limit": 2})).json()
    assert [t["task_id"] for t in page["tasks"]] == ids[1:3]
    for bad in ({"limit": "ten"}, {"offset": "-1"}):
        resp = await client.get("/_sim/tasks", params=bad)
        assert resp.status == 400
        assert next(iter(bad)) in (await resp.json())["error"]["message"]
    assert (await client.get("/_sim/tasks/task_missing")).status == 404


async def test_requests_are_counted_per_task_and_per_endpoint(make_client: MakeClient) -> None:
    client, state = await make_client()
    task_id = (await (await submit(client, **{"Idempotency-Key": "k"})).json())["task_id"]
    await submit(client, **{"Idempotency-Key": "k"})  # a replay names the same task
    other = await submit_ok(client)
    for _ in range(3):
        await get_task(client, task_id)
    await client.get(f"/api/v1/tasks/{task_id}", headers={"Authorization": "Bearer wrong"})
    await get_events(client, task_id)
    await client.post(f"/api/v1/tasks/{task_id}/cancel", headers=AUTH)
    await client.post(f"/api/v1/tasks/{task_id}/cancel", headers=AUTH)  # 409
    await client.get("/api/v1/tasks/task_missing", headers=AUTH)  # 404, no task to count on
    state.fail_next("submit", 1, 503)
    await submit(client)

    assert state.task_request_counts(task_id) == {"submit": 2, "get": 4, "events": 1, "cancel": 2}
    assert state.task_request_counts(other) == {"submit": 1, "get": 0, "events": 0, "cancel": 0}
    by_endpoint = {"submit": 4, "get": 5, "events": 1, "cancel": 2, "other": 0}
    errors = {"submit": 1, "get": 2, "events": 0, "cancel": 1, "other": 0}
    assert state.request_counts() == {"requests": by_endpoint, "errors": errors}

    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests_by_endpoint"] == by_endpoint
    assert stats["errors_by_endpoint"] == errors
    assert stats["requests"] == 12 and stats["tasks"] == 2
    report = await (await client.get(f"/_sim/tasks/{task_id}")).json()
    assert report["requests"] == {"submit": 2, "get": 4, "events": 1, "cancel": 2}


async def test_control_api_switches_timing_and_rejects_bad_values(
    make_client: MakeClient,
) -> None:
    client, state = await make_client()
    resp = await client.patch("/_sim/config", json={"timing": "realistic", "time_scale": 1})
    assert resp.status == 200
    assert (await resp.json())["timing"] == "realistic"
    assert state.config.time_scale == 1.0 and isinstance(state.config.time_scale, float)
    for field, value in (("timing", "slow"), ("time_scale", 0), ("time_scale", "fast")):
        bad = await client.patch("/_sim/config", json={field: value})
        assert bad.status == 400
        assert field in (await bad.json())["error"]["message"]
    assert (state.config.timing, state.config.time_scale) == ("realistic", 1.0)
    with pytest.raises(ValueError, match="timing"):
        SimulatorConfig(timing="slow")
    with pytest.raises(ValueError, match="time_scale"):
        SimulatorConfig(time_scale=-1)


def simulator_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_simulator_arguments(parser)
    return parser


def test_timing_comes_from_env_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_from_args(simulator_parser().parse_args([])) == SimulatorConfig()
    monkeypatch.setenv("MINDVIDEO_SIM_TIMING", "realistic")
    monkeypatch.setenv("MINDVIDEO_SIM_TIME_SCALE", "0.05")
    monkeypatch.setenv("MINDVIDEO_SIM_SEED", "9")
    config = config_from_args(simulator_parser().parse_args([]))
    assert (config.timing, config.time_scale, config.seed) == ("realistic", 0.05, 9)
    args = simulator_parser().parse_args(["--timing", "fixed", "--time-scale", "2"])
    assert (config_from_args(args).timing, config_from_args(args).time_scale) == ("fixed", 2.0)


@pytest.mark.parametrize(
    ("env", "value"), [("TIMING", "slow"), ("TIME_SCALE", "0"), ("TIME_SCALE", "x")]
)
def test_bad_timing_env_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str, value: str
) -> None:
    monkeypatch.setenv(f"MINDVIDEO_SIM_{env}", value)
    with pytest.raises(SystemExit) as exit_info:
        simulator_parser().parse_args([])
    assert exit_info.value.code == 2
    assert f"--{env.lower().replace('_', '-')}" in capsys.readouterr().err


def test_help_names_the_env_variable_of_every_flag() -> None:
    text = simulator_parser().format_help()
    flags = set(re.findall(r"--[a-z0-9-]+", text)) - {"--help"}
    assert {"--timing", "--time-scale", "--seed", "--no-event-ids"} <= flags
    for flag in flags:
        assert "MINDVIDEO_SIM_" + flag.removeprefix("--").upper().replace("-", "_") in text
