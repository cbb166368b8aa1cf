"""Operational endpoints: health, readiness, metrics and the generated OpenAPI document."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from relay.core.store import latest_migration_version
from relay.core.vocabulary import EVENT_TYPES
from relay.delivery.signing import webhook_headers
from relay.http.openapi import build_openapi
from relay.keys import RUNTIME
from tests.helpers import SAMPLE_INPUT, auth, drop_database, get_json, submit_task, wait_for

CONTRACT_SERIES = (
    "relay_tasks_in_flight",
    "relay_upstream_requests_total",
    "relay_upstream_request_seconds",
    "relay_polls_total",
    "relay_webhook_deliveries_total",
    "relay_webhook_delivery_seconds",
    "relay_webhook_lag_seconds",
    "relay_outbox_pending",
)


async def test_healthz_and_readyz_answer_without_a_key(relay_app: TestClient) -> None:
    assert (await relay_app.get("/healthz")).status == 200
    ready = await relay_app.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {
        "database": "ok",
        "schema": "ok",
        "upstream_auth": "ok",
    }


async def test_readyz_is_503_while_the_schema_is_behind(relay_app: TestClient, store) -> None:
    await store.pool.execute(
        "DELETE FROM schema_migrations WHERE version = $1", latest_migration_version()
    )
    ready = await relay_app.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["schema"].startswith("at ")


async def test_readyz_is_503_when_the_database_stops_answering(
    relay_app: TestClient, store, postgres_url: str, database_url: str
) -> None:
    assert (await relay_app.get("/readyz")).status == 200
    await store.close()
    await drop_database(postgres_url, database_url)
    ready = await relay_app.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"]["database"].startswith("unavailable")
    assert (await relay_app.get("/healthz")).status == 200, "alive, just not ready"


async def test_metrics_expose_the_contract_series_after_a_lifecycle(
    relay_app: TestClient, app, new_client, sim, store
) -> None:
    client = await new_client()
    resp = await relay_app.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(client)
    )
    assert resp.status == 201
    resp = await relay_app.post(
        "/v1/tasks", json={"model": "kling-video-o1", "input": SAMPLE_INPUT}, headers=auth(client)
    )
    assert resp.status == 202
    sim.advance(30)
    poller = app[RUNTIME].loop("poller")

    async def finished() -> bool:
        await poller.run_once()
        return (await store.pool.fetchval("SELECT status FROM tasks")) == "succeeded"

    await wait_for(finished)
    await app[RUNTIME].loop("dispatcher").run_once()  # port 9: a failed attempt
    text = await (await relay_app.get("/metrics")).text()
    for series in CONTRACT_SERIES:
        assert f"\n{series}" in text or text.startswith(series) or f"# TYPE {series}" in text
    assert 'relay_upstream_requests_total{code="200",endpoint="submit"}' in text
    assert "relay_outbox_pending 3.0" in text  # queued, processing, succeeded: none delivered
    assert 'relay_webhook_deliveries_total{result="failed"}' in text
    assert "tsk_" not in text and "sub_" not in text, "no ids in labels"


async def test_openapi_documents_every_route_with_problem_answers(relay_app: TestClient) -> None:
    resp = await relay_app.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in relay_app.server.app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented
    for path, ops in doc["paths"].items():
        for op in ops.values():
            if path.startswith("/v1"):
                problem = op["responses"]["401"]["content"]["application/problem+json"]
                assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    create = doc["paths"]["/v1/tasks"]["post"]
    assert {"200", "202", "400", "409", "413", "422"} <= create["responses"].keys()
    assert build_openapi(relay_app.server.app) == doc


def _webhook_body_validator(doc: dict[str, Any], event_type: str) -> Draft202012Validator:
    """A validator for the body the document gives `event_type`, refs resolved in `doc`."""
    registry = Registry().with_resource("urn:relay-openapi", DRAFT202012.create_resource(doc))
    pointer = f"/webhooks/{event_type}/post/requestBody/content/application~1json/schema"
    return Draft202012Validator({"$ref": f"urn:relay-openapi#{pointer}"}, registry=registry)


async def test_openapi_webhooks_describe_each_event_with_headers_and_payload(
    relay_app: TestClient, new_client
) -> None:
    doc = await (await relay_app.get("/openapi.json")).json()
    assert sorted(doc["webhooks"]) == sorted(EVENT_TYPES)
    for event_type, item in doc["webhooks"].items():
        op = item["post"]
        headers = {p["name"]: p for p in op["parameters"] if p["in"] == "header"}
        assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert all(p["required"] for p in headers.values())
        assert "2XX" in op["responses"], event_type

    # A real event body (the feed lists them exactly as webhooks carry them) fits the schema
    # of its own type and no other; real signature headers fit the header schemas.
    client = await new_client()
    await submit_task(relay_app, client)
    [event] = (await get_json(relay_app, client, "/v1/events"))["data"]
    assert event["type"] == "task.queued"
    assert list(_webhook_body_validator(doc, "task.queued").iter_errors(event)) == []
    assert not _webhook_body_validator(doc, "task.succeeded").is_valid(event)
    assert not _webhook_body_validator(doc, "task.queued").is_valid({**event, "data": {}})

    secrets = ["whsec_" + base64.b64encode(b"s" * 24).decode(), "whsec_" + "A" * 32]
    sent = webhook_headers(secrets, event["id"], 1763899200, json.dumps(event).encode())
    params = doc["webhooks"]["task.queued"]["post"]["parameters"]
    for param in params:
        assert re.fullmatch(param["schema"]["pattern"], sent[param["name"]]), param["name"]
