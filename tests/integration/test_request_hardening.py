"""Hostile or careless requests: raw header bytes, deep JSON, mixed mistakes, readable problems."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.http.common import MAX_JSON_DEPTH
from relay.upstream.simulator import SimulatorState
from tests.helpers import SAMPLE_INPUT, auth, read_problem

NewClient = Callable[..., Awaitable[dict[str, str]]]
MODEL = "kling-video-o1"
DEEP = 1000  # far past the limit, and past Python's own recursion limit


async def raw_request(relay_app: TestClient, head: bytes, body: bytes) -> tuple[int, dict, bytes]:
    """Send bytes exactly as given (no client library re-encodes the headers)."""
    assert relay_app.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", relay_app.server.port)
    try:
        writer.write(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header_block, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return int(status_line.split()[1]), headers, payload


@pytest.mark.parametrize("key", [b"caf\xe9", b"\xff\xfe\xfd", b"ok-\xc3"], ids=repr)
async def test_idempotency_key_that_is_not_utf8_is_400_naming_the_header(
    relay_app: TestClient, new_client: NewClient, store: Store, key: bytes
) -> None:
    client = await new_client()
    body = json.dumps({"model": MODEL, "input": SAMPLE_INPUT}).encode()
    head = (
        b"POST /v1/tasks HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Authorization: " + client["Authorization"].encode() + b"\r\n"
        b"Idempotency-Key: " + key + b"\r\n"
    )
    status, headers, payload = await raw_request(relay_app, head, body)
    assert status == 400, payload
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(payload)
    assert [e["loc"] for e in problem["errors"]] == ["/headers/Idempotency-Key"]
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 0


def nested(depth: int, leaf: Any = 1) -> Any:
    """`depth` levels of alternating objects and arrays around `leaf`."""
    value = leaf
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


def deep_text(depth: int) -> str:
    # json.dumps itself recurses: build the text by hand.
    return "[" * depth + "1" + "]" * depth


DEEP_BODIES = {
    "top_level": (
        '{"model": "kling-video-o1", "input": {"prompt": "x"}, "deep": ' + deep_text(DEEP) + "}",
        "/deep",
    ),
    "in_input": (
        '{"model": "kling-video-o1", "input": {"prompt": ' + deep_text(DEEP) + "}}",
        "/input/prompt",
    ),
    "in_metadata": (
        '{"model": "kling-video-o1", "input": {"prompt": "x"}, "metadata": {"k": '
        + deep_text(DEEP)
        + "}}",
        "/metadata/k",
    ),
    "whole_body": (deep_text(DEEP), ""),
}


@pytest.mark.parametrize("case", list(DEEP_BODIES))
async def test_json_nested_past_the_limit_is_422_naming_where(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store, case: str
) -> None:
    text, where = DEEP_BODIES[case]
    client = await new_client()
    resp = await relay_app.post(
        "/v1/tasks",
        data=text.encode(),
        headers={**auth(client), "Content-Type": "application/json"},
    )
    problem = await read_problem(resp, 422)
    [error] = problem["errors"]
    assert error["loc"].startswith(where + "/")
    assert str(MAX_JSON_DEPTH) in error["message"]
    assert sim.requests_to("submit") == []
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 0


async def test_json_nested_to_exactly_the_limit_is_accepted(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    # The body object is level 1 and metadata level 2: the rest may go to the limit.
    payload = {"model": MODEL, "input": SAMPLE_INPUT, "metadata": {"k": nested(MAX_JSON_DEPTH - 2)}}
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    assert resp.status == 202, await resp.text()
    payload["metadata"] = {"k": nested(MAX_JSON_DEPTH - 1)}
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert problem["errors"][0]["loc"].startswith("/metadata/k/")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_deep_json_to_the_subscription_endpoints_is_422(
    relay_app: TestClient, new_client: NewClient, method: str
) -> None:
    client = await new_client()
    path = "/v1/subscriptions"
    if method == "PATCH":
        resp = await relay_app.post(
            path, json={"url": "https://a.internal/h"}, headers=auth(client)
        )
        assert resp.status == 201
        path += "/" + (await resp.json())["id"]
    text = '{"url": "https://a.internal/h", "models": ' + deep_text(DEEP) + "}"
    resp = await relay_app.request(
        method,
        path,
        data=text.encode(),
        headers={**auth(client), "Content-Type": "application/json"},
    )
    problem = await read_problem(resp, 422)
    assert problem["errors"][0]["loc"].startswith("/models/")


# Validation: every mistake at once, in sentences.


async def test_body_and_input_mistakes_are_reported_together(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    payload = {
        "model": MODEL,
        "input": {"prompt": "x", "duration": 7},
        "webhook_url": "https://svc.internal/h",
        "webhook_events": ["task.exploded"],
    }
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert sorted(e["loc"] for e in problem["errors"]) == ["/input/duration", "/webhook_events/0"]


async def test_body_mistake_with_an_unknown_model_reports_both(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    payload = {"model": "veo-9", "input": {"prompt": "x"}, "priority": "high"}
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert sorted(e["loc"] for e in problem["errors"]) == ["/model", "/priority"]


async def test_body_mistake_with_unstorable_metadata_reports_both(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    text = '{"model": "kling-video-o1", "input": {"prompt": "x"}, "priority": 1, '
    text += '"metadata": {"note": "a\\ud800b"}}'
    resp = await relay_app.post(
        "/v1/tasks",
        data=text.encode(),
        headers={**auth(client), "Content-Type": "application/json"},
    )
    problem = await read_problem(resp, 422)
    assert sorted(e["loc"] for e in problem["errors"]) == ["/metadata/note", "/priority"]


async def test_webhook_events_without_webhook_url_is_422(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    payload = {"model": MODEL, "input": SAMPLE_INPUT, "webhook_events": ["task.failed"]}
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert [e["loc"] for e in problem["errors"]] == ["/webhook_events"]
    assert "webhook_url" in problem["errors"][0]["message"]


async def test_duplicate_webhook_event_types_are_422_at_the_repeat(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    payload = {
        "model": MODEL,
        "input": SAMPLE_INPUT,
        "webhook_url": "https://svc.internal/h",
        "webhook_events": ["task.failed", "task.succeeded", "task.failed"],
    }
    resp = await relay_app.post("/v1/tasks", json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert [e["loc"] for e in problem["errors"]] == ["/webhook_events/2"]
    assert not problem["errors"][0]["message"].startswith("Value error")


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_subscription_mistakes_are_422_at_their_entries(
    relay_app: TestClient, new_client: NewClient, method: str
) -> None:
    client = await new_client()
    path = "/v1/subscriptions"
    if method == "PATCH":
        resp = await relay_app.post(
            path, json={"url": "https://a.internal/h"}, headers=auth(client)
        )
        path += "/" + (await resp.json())["id"]
    payload = {
        "url": "https://a.internal/h",
        "events": ["task.failed", "task.failed"],
        "models": [MODEL, "veo-9"],
    }
    resp = await relay_app.request(method, path, json=payload, headers=auth(client))
    problem = await read_problem(resp, 422)
    assert sorted(e["loc"] for e in problem["errors"]) == ["/events/1", "/models/1"]
    messages = " ".join(e["message"] for e in problem["errors"])
    assert "veo-9" in messages and MODEL in messages
    assert "Value error" not in messages


async def test_problem_messages_carry_no_pydantic_prefix(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.get("/v1/events?types=task.exploded", headers=auth(client))
    problem = await read_problem(resp, 422)
    assert problem["errors"][0]["message"].startswith("unknown event type")


# Headers that say what happened.


async def test_created_task_has_location_and_a_replay_says_so(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    headers = {**auth(client), "Idempotency-Key": "loc-1"}
    payload = {"model": MODEL, "input": SAMPLE_INPUT}
    first = await relay_app.post("/v1/tasks", json=payload, headers=headers)
    assert first.status == 202
    task = await first.json()
    assert first.headers["Location"] == f"/v1/tasks/{task['id']}"
    assert "Idempotent-Replayed" not in first.headers
    again = await relay_app.post("/v1/tasks", json=payload, headers=headers)
    assert again.status == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/v1/tasks/{task['id']}"
    located = await relay_app.get(again.headers["Location"], headers=auth(client))
    assert (await located.json())["id"] == task["id"]


async def test_created_subscription_has_location(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    resp = await relay_app.post(
        "/v1/subscriptions", json={"url": "https://a.internal/h"}, headers=auth(client)
    )
    assert resp.status == 201
    assert resp.headers["Location"] == f"/v1/subscriptions/{(await resp.json())['id']}"
