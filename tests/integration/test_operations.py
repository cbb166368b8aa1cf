"""Operational endpoints: health, readiness, metrics and the generated OpenAPI document."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from relay.http.openapi import build_openapi
from relay.keys import RUNTIME
from relay.store import latest_migration_version
from tests.helpers import SAMPLE_INPUT, auth, drop_database, wait_for

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
