"""The task API: input validation as problems, the task object, listing and pagination."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.upstream.simulator import SimulatorState
from tests.helpers import SAMPLE_INPUT, auth, read_problem
from tests.helpers import submit as create

NewClient = Callable[..., Awaitable[dict[str, str]]]
MODEL = "kling-video-o1"
TASK_KEYS = {
    "id", "model", "status", "upstream_task_id", "upstream_request_id", "cost_estimate",
    "cost_actual", "output", "error", "metadata", "webhook_url", "webhook_events",
    "created_at", "updated_at", "completed_at", "client",
}  # fmt: skip
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ONE_MIB = 1024 * 1024
HOOK = "https://svc.internal/hooks/video"


def body(**changes: Any) -> dict[str, Any]:
    """A valid POST /v1/tasks body with `changes` applied (input changes merge)."""
    base: dict[str, Any] = {"model": MODEL, "input": dict(SAMPLE_INPUT)}
    if "input" in changes:
        base["input"] = {**base["input"], **changes.pop("input")}
    return {**base, **changes}


def raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def without_prompt() -> dict[str, Any]:
    return {"model": MODEL, "input": {"duration": 5}}


def sized_body(total: int) -> bytes:
    """A valid body of exactly `total` bytes (the prompt takes up the slack)."""
    skeleton = raw(body(input={"prompt": ""}))
    padded = raw(body(input={"prompt": "x" * (total - len(skeleton))}))
    assert len(padded) == total
    return padded


async def count_tasks(store: Store) -> int:
    return await store.pool.fetchval("SELECT count(*) FROM tasks")


# (request body bytes, extra headers, expected status, expected error locations)
BAD_REQUESTS: dict[str, tuple[bytes, dict[str, str], int, list[str] | None]] = {
    "malformed_json": (b'{"model": "kling-video-o1", "input": {', {}, 400, ["/"]),
    "nan_is_not_json": (
        b'{"model": "kling-video-o1", "input": {"prompt": "x"}, "metadata": {"a": NaN}}',
        {},
        400,
        ["/"],
    ),
    "number_out_of_range": (
        b'{"model": "kling-video-o1", "input": {"prompt": "x"}, "metadata": {"a": 1e400}}',
        {},
        400,
        ["/"],
    ),
    "not_utf8": (b'{"model": "\xff\xfe"}', {}, 400, ["/"]),
    "empty_body": (b"", {}, 422, ["/"]),
    "array_body": (b"[1, 2]", {}, 422, ["/"]),
    "string_body": (b'"kling-video-o1"', {}, 422, ["/"]),
    "body_over_1_mib": (sized_body(ONE_MIB + 1), {}, 413, None),
    "unknown_model": (raw(body(model="kling-video-o9")), {}, 422, ["/model"]),
    "missing_model": (raw({"input": SAMPLE_INPUT}), {}, 422, ["/model"]),
    "missing_input": (raw({"model": MODEL}), {}, 422, ["/input"]),
    "input_not_object": (raw({"model": MODEL, "input": "go"}), {}, 422, ["/input"]),
    "bad_duration": (raw(body(input={"duration": 7})), {}, 422, ["/input/duration"]),
    "bad_mode": (raw(body(input={"mode": "ultra"})), {}, 422, ["/input/mode"]),
    "missing_prompt": (raw(without_prompt()), {}, 422, ["/input/prompt"]),
    "empty_prompt": (raw(body(input={"prompt": ""})), {}, 422, ["/input/prompt"]),
    "extra_input_property": (raw(body(input={"fps": 30})), {}, 422, ["/input/fps"]),
    "three_image_urls": (
        raw(body(input={"image_urls": ["https://a/1.png", "https://a/2.png", "https://a/3.png"]})),
        {},
        422,
        ["/input/image_urls"],
    ),
    "prompt_names_missing_image": (
        raw(body(input={"prompt": "<<<image_2>>> walks", "image_urls": ["https://a/1.png"]})),
        {},
        422,
        ["/input/prompt"],
    ),
    "nul_in_prompt": (raw(body(input={"prompt": "a\u0000b"})), {}, 422, ["/input/prompt"]),
    "nul_in_metadata_key": (raw(body(metadata={"a\u0000": 1})), {}, 422, ["/metadata/a\u0000"]),
    "lone_surrogate_in_prompt": (
        b'{"model": "kling-video-o1", "input": {"prompt": "a\\ud800b"}}',
        {},
        422,
        ["/input/prompt"],
    ),
    "metadata_over_4_kib": (raw(body(metadata={"blob": "x" * 4096})), {}, 422, ["/metadata"]),
    "metadata_not_object": (raw(body(metadata=["A-17"])), {}, 422, ["/metadata"]),
    "webhook_url_not_url": (raw(body(webhook_url="not a url")), {}, 422, ["/webhook_url"]),
    "webhook_url_not_http": (raw(body(webhook_url="ftp://x/hook")), {}, 422, ["/webhook_url"]),
    "webhook_url_in_denied_network": (
        raw(body(webhook_url="http://169.254.169.254/latest/meta-data")),
        {},
        422,
        ["/webhook_url"],
    ),
    "webhook_events_unknown": (
        raw(body(webhook_url=HOOK, webhook_events=["task.succeeded", "task.exploded"])),
        {},
        422,
        ["/webhook_events/1"],
    ),
    "webhook_events_empty": (
        raw(body(webhook_url=HOOK, webhook_events=[])),
        {},
        422,
        ["/webhook_events"],
    ),
    "webhook_events_not_list": (
        raw(body(webhook_url=HOOK, webhook_events="task.failed")),
        {},
        422,
        ["/webhook_events"],
    ),
    "extra_top_level_property": (raw(body(priority="high")), {}, 422, ["/priority"]),
    "idempotency_key_over_255": (
        raw(body()),
        {"Idempotency-Key": "k" * 256},
        400,
        ["/headers/Idempotency-Key"],
    ),
    "idempotency_key_empty": (
        raw(body()),
        {"Idempotency-Key": ""},
        400,
        ["/headers/Idempotency-Key"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_request_is_a_problem_and_nothing_is_stored_or_sent_upstream(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store, case: str
) -> None:
    data, headers, status, expected_locs = BAD_REQUESTS[case]
    client = await new_client()
    resp = await relay_app.post(
        "/v1/tasks",
        data=data,
        headers={**auth(client), "Content-Type": "application/json", **headers},
    )
    problem = await read_problem(resp, status)
    if expected_locs is None:
        assert "errors" not in problem
    else:
        assert [e["loc"] for e in problem["errors"]] == expected_locs
        assert all(isinstance(e["message"], str) and e["message"] for e in problem["errors"])
    assert sim.requests_to("submit") == []
    assert await count_tasks(store) == 0


async def test_unknown_model_problem_lists_the_known_models(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.post("/v1/tasks", json=body(model="veo-9"), headers=auth(client))
    problem = await read_problem(resp, 422)
    assert MODEL in problem["detail"]
    assert problem["errors"] == [{"loc": "/model", "message": f"must be one of: {MODEL}"}]


async def test_unknown_model_still_reports_the_other_violations(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    payload = body(model="veo-9", metadata={"blob": "x" * 5000})
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert [e["loc"] for e in problem["errors"]] == ["/model", "/metadata"]


async def test_every_schema_violation_is_its_own_error_entry(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    payload = {
        "model": MODEL,
        "input": {"duration": 7, "mode": "ultra", "fps": 30, "image_urls": ["a", "b", "c"]},
        "metadata": {"blob": "x" * 5000},
    }
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert sorted(e["loc"] for e in problem["errors"]) == [
        "/input/duration",
        "/input/fps",
        "/input/image_urls",
        "/input/mode",
        "/input/prompt",
        "/metadata",
    ]
    assert sim.requests_to("submit") == []
    assert await count_tasks(store) == 0


async def test_body_of_exactly_1_mib_is_accepted(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.post(
        "/v1/tasks",
        data=sized_body(ONE_MIB),
        headers={**auth(client), "Content-Type": "application/json"},
    )
    assert resp.status == 202, await resp.text()


async def test_metadata_limit_counts_utf8_bytes_not_escapes(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    # 1,500 "é" are 3,000 UTF-8 bytes, but 9,000 once \\u-escaped.
    task = await create(relay_app, client, body(metadata={"note": "é" * 1500}))
    assert task["metadata"] == {"note": "é" * 1500}


async def test_new_task_is_202_with_the_contract_task_object(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState
) -> None:
    client = await new_client()
    payload = body(
        input={"aspect_ratio": "16:9"},
        webhook_url="https://svc-a.internal/hooks/video",
        webhook_events=["task.succeeded", "task.failed"],
        metadata={"order_id": "A-17"},
    )
    task = await create(relay_app, client, payload)
    assert set(task) == TASK_KEYS
    assert task["id"].startswith("tsk_")
    assert task["model"] == MODEL
    assert task["status"] == "queued"
    assert task["upstream_task_id"].startswith("task_")
    assert task["upstream_request_id"].startswith("req_")
    assert task["cost_estimate"] == pytest.approx(0.0756)
    assert (task["cost_actual"], task["output"], task["error"]) == (None, None, None)
    assert task["metadata"] == {"order_id": "A-17"}
    assert task["webhook_url"] == "https://svc-a.internal/hooks/video"
    assert task["webhook_events"] == ["task.succeeded", "task.failed"]
    assert TIMESTAMP.match(task["created_at"]) and TIMESTAMP.match(task["updated_at"])
    assert task["completed_at"] is None
    [submit] = sim.requests_to("submit")
    assert submit.json == {"model": MODEL, "input": payload["input"]}


async def test_get_task_returns_the_task_object(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    task = await create(relay_app, client)
    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=auth(client))
    assert resp.status == 200
    assert await resp.json() == task


async def test_unknown_task_id_is_404_problem(relay_app: TestClient, new_client: NewClient) -> None:
    client = await new_client()
    resp = await relay_app.get("/v1/tasks/tsk_doesnotexist", headers=auth(client))
    await read_problem(resp, 404)


async def test_nul_in_a_task_id_is_404_problem(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.get("/v1/tasks/tsk_x%00y", headers=auth(client))
    await read_problem(resp, 404)


async def test_nul_in_a_query_value_is_422_at_its_parameter(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.get("/v1/tasks?model=kling%00", headers=auth(client))
    problem = await read_problem(resp, 422)
    assert [e["loc"] for e in problem["errors"]] == ["/query/model"]


async def test_wrong_method_is_405_problem_naming_the_allowed_ones(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.delete("/v1/tasks", headers=auth(client))
    await read_problem(resp, 405)
    assert {m.strip() for m in resp.headers["Allow"].split(",")} >= {"GET", "POST"}


async def list_tasks(relay_app: TestClient, client: dict[str, str], **query: Any) -> Any:
    resp = await relay_app.get(
        "/v1/tasks", params={k: str(v) for k, v in query.items()}, headers=auth(client)
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_list_is_newest_first_with_default_page_of_50(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    ids = [(await create(relay_app, client))["id"] for _ in range(3)]
    page = await list_tasks(relay_app, client)
    assert [t["id"] for t in page["data"]] == ids[::-1]
    assert page["next_cursor"] is None
    assert all(set(t) == TASK_KEYS for t in page["data"])


async def test_list_filters_by_status(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState
) -> None:
    client = await new_client()
    queued = await create(relay_app, client)
    sim.fail_next("submit", 1, 402)
    failed = await create(relay_app, client)
    assert failed["status"] == "failed"
    assert [t["id"] for t in (await list_tasks(relay_app, client, status="failed"))["data"]] == [
        failed["id"]
    ]
    assert [t["id"] for t in (await list_tasks(relay_app, client, status="queued"))["data"]] == [
        queued["id"]
    ]
    assert (await list_tasks(relay_app, client, status="succeeded"))["data"] == []


async def test_list_filters_by_model(relay_app: TestClient, new_client: NewClient) -> None:
    client = await new_client()
    task = await create(relay_app, client)
    assert [t["id"] for t in (await list_tasks(relay_app, client, model=MODEL))["data"]] == [
        task["id"]
    ]
    assert (await list_tasks(relay_app, client, model="kling-video-o2"))["data"] == []


async def test_list_created_after_a_tasks_own_timestamp_excludes_that_task(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    first = await create(relay_app, client)
    second = await create(relay_app, client)
    while second["created_at"] == first["created_at"]:  # same millisecond: one more
        second = await create(relay_app, client)
    page = await list_tasks(relay_app, client, created_after=first["created_at"])
    ids = [t["id"] for t in page["data"]]
    assert first["id"] not in ids
    assert second["id"] in ids


async def test_list_created_before_a_tasks_own_timestamp_excludes_that_task(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    first = await create(relay_app, client)
    second = await create(relay_app, client)
    while second["created_at"] == first["created_at"]:  # same millisecond: one more
        second = await create(relay_app, client)
    page = await list_tasks(relay_app, client, created_before=second["created_at"])
    assert [t["id"] for t in page["data"]] == [first["id"]]
    both = await list_tasks(
        relay_app, client, created_after=first["created_at"], created_before=second["created_at"]
    )
    assert both["data"] == []


async def test_the_task_object_names_its_client(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client("svc-video")
    task = await create(relay_app, client)
    assert task["client"] == "svc-video"
    assert (await list_tasks(relay_app, client))["data"][0]["client"] == "svc-video"


async def test_list_created_after_without_offset_means_utc(
    relay_app: TestClient, new_client: NewClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run the server in a zone far from UTC: a naive timestamp must not follow it.
    monkeypatch.setenv("TZ", "Pacific/Pago_Pago")  # UTC-11
    time.tzset()
    try:
        client = await new_client()
        task = await create(relay_app, client)
        before = task["created_at"].removesuffix("Z")[:-4]  # whole seconds, no offset
        page = await list_tasks(relay_app, client, created_after=before)
        assert [t["id"] for t in page["data"]] == [task["id"]]
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"limit": "0"}, "/query/limit"),
        ({"limit": "201"}, "/query/limit"),
        ({"limit": "ten"}, "/query/limit"),
        ({"status": "done"}, "/query/status"),
        ({"created_after": "yesterday"}, "/query/created_after"),
        ({"created_before": "tomorrow"}, "/query/created_before"),
        ({"sort": "asc"}, "/query/sort"),
    ],
)
async def test_bad_list_query_is_422_located_in_the_query(
    relay_app: TestClient, new_client: NewClient, query: dict[str, str], loc: str
) -> None:
    client = await new_client()
    resp = await relay_app.get("/v1/tasks", params=query, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert [e["loc"] for e in problem["errors"]] == [loc]


@pytest.mark.parametrize("limit", [1, 200])
async def test_limit_bounds_are_inclusive(
    relay_app: TestClient, new_client: NewClient, limit: int
) -> None:
    client = await new_client()
    await create(relay_app, client)
    await create(relay_app, client)
    page = await list_tasks(relay_app, client, limit=limit)
    assert len(page["data"]) == min(limit, 2)
    assert (page["next_cursor"] is None) == (limit >= 2)


async def test_pagination_never_skips_or_repeats_while_tasks_are_created(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    original = [(await create(relay_app, client))["id"] for _ in range(25)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query: dict[str, Any] = {"limit": 7}
        if cursor:
            query["cursor"] = cursor
        page = await list_tasks(relay_app, client, **query)
        ids = [t["id"] for t in page["data"]]
        assert ids == sorted(ids, reverse=True)  # newest first within the page
        seen.extend(ids)
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(ids) == 7
        for _ in range(3):  # new tasks arrive between page reads
            await create(relay_app, client)
    assert len(seen) == len(set(seen))
    assert set(original) <= set(seen)
    assert pages == 4  # 7 + 7 + 7 + 4: the newer tasks sort before the cursor


async def test_exact_last_page_has_null_cursor(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    for _ in range(4):
        await create(relay_app, client)
    first = await list_tasks(relay_app, client, limit=2)
    assert first["next_cursor"] is not None
    second = await list_tasks(relay_app, client, limit=2, cursor=first["next_cursor"])
    assert len(second["data"]) == 2
    assert second["next_cursor"] is None
