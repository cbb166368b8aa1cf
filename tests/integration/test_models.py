"""Models beyond the shipped one: GET /v1/models, RELAY_MODEL_SCHEMAS_DIR, RELAY_UNKNOWN_MODELS."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp.test_utils import TestClient

from relay.intake.catalog import ModelCatalog
from tests.helpers import SAMPLE_INPUT, auth, read_problem

ACME_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"prompt": {"type": "string"}, "seconds": {"type": "integer", "maximum": 8}},
    "required": ["prompt"],
    "additionalProperties": False,
}


def schemas_dir(tmp_path: Path) -> Path:
    """A folder as the chart's ConfigMap mounts it: one `<model>.schema.json` per model."""
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "acme-video.schema.json").write_text(json.dumps(ACME_SCHEMA))
    (folder / "README.txt").write_text("not a schema: ignored")
    return folder


async def test_models_lists_the_shipped_model_with_its_input_schema(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    resp = await relay_app.get("/v1/models", headers=auth(client))
    assert resp.status == 200
    body = await resp.json()
    assert body["unknown_models"] == "reject"
    assert [m["name"] for m in body["data"]] == ["kling-video-o1"]
    assert body["data"][0]["input_schema"] == ModelCatalog().schema("kling-video-o1")


async def test_models_needs_a_key(relay_app: TestClient) -> None:
    await read_problem(await relay_app.get("/v1/models"), 401)


async def test_schemas_dir_adds_models_that_are_listed_and_validated(
    start_relay, new_client, sim, tmp_path: Path
) -> None:
    api = await start_relay(model_schemas_dir=schemas_dir(tmp_path))
    client = await new_client()
    listed = await (await api.get("/v1/models", headers=auth(client))).json()
    assert [m["name"] for m in listed["data"]] == ["acme-video", "kling-video-o1"]
    assert listed["data"][0]["input_schema"] == ACME_SCHEMA

    bad = {"model": "acme-video", "input": {"prompt": "x", "seconds": 30}}
    problem = await read_problem(await api.post("/v1/tasks", json=bad, headers=auth(client)), 422)
    assert [e["loc"] for e in problem["errors"]] == ["/input/seconds"]
    assert sim.requests_to("submit") == []

    good = {"model": "acme-video", "input": {"prompt": "a fox", "seconds": 5}}
    resp = await api.post("/v1/tasks", json=good, headers=auth(client))
    assert resp.status == 202, await resp.text()
    [sent] = sim.requests_to("submit")
    assert sent.json["model"] == "acme-video"

    # The OpenAPI document describes the added model's input too.
    spec = await (await api.get("/openapi.json")).json()
    variants = spec["components"]["schemas"]["TaskCreate"]["oneOf"]
    assert {v["properties"]["model"]["const"] for v in variants} == {"acme-video", "kling-video-o1"}


async def test_unknown_model_is_refused_by_default(relay_app: TestClient, new_client, sim) -> None:
    client = await new_client()
    body = {"model": "kling-video-o9", "input": SAMPLE_INPUT}
    problem = await read_problem(
        await relay_app.post("/v1/tasks", json=body, headers=auth(client)), 422
    )
    assert [e["loc"] for e in problem["errors"]] == ["/model"]
    assert sim.requests_to("submit") == []


async def test_forward_sends_an_unknown_model_upstream_with_its_input_unchecked(
    start_relay, new_client, sim
) -> None:
    api = await start_relay(unknown_models="forward")
    client = await new_client()
    listed = await (await api.get("/v1/models", headers=auth(client))).json()
    assert listed["unknown_models"] == "forward"
    body = {"model": "kling-video-o9", "input": {"anything": ["goes", 1]}}
    resp = await api.post("/v1/tasks", json=body, headers=auth(client))
    assert resp.status == 202, await resp.text()
    [sent] = sim.requests_to("submit")
    assert sent.json == {"model": "kling-video-o9", "input": {"anything": ["goes", 1]}}

    # A known model is still checked against its schema.
    known = {"model": "kling-video-o1", "input": {**SAMPLE_INPUT, "duration": 7}}
    problem = await read_problem(await api.post("/v1/tasks", json=known, headers=auth(client)), 422)
    assert [e["loc"] for e in problem["errors"]] == ["/input/duration"]

    # Subscriptions may filter on a forwarded model as well.
    sub = {"url": "https://hooks.example.com/relay", "models": ["kling-video-o9"]}
    resp = await api.post("/v1/subscriptions", json=sub, headers=auth(client))
    assert resp.status == 201, await resp.text()


async def test_openapi_documents_the_models_route(relay_app: TestClient) -> None:
    spec = await (await relay_app.get("/openapi.json")).json()
    op = spec["paths"]["/v1/models"]["get"]
    assert op["security"] == [{"bearer": []}]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ModelList"}
    model_list = spec["components"]["schemas"]["ModelList"]
    assert set(model_list["required"]) == {"data", "unknown_models"}
