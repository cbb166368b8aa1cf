"""Model routes: which models the relay accepts, and the input schema of each."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from relay.http.common import json_response
from relay.http.openapi import documented
from relay.keys import CATALOG

routes = web.RouteTableDef()


class ModelInfo(BaseModel):
    """A model with a schema: tasks naming it have their `input` checked against it."""

    name: str
    input_schema: dict[str, Any] = Field(
        description="The JSON Schema (2020-12) a task's `input` must satisfy"
    )


class ModelList(BaseModel):
    """`GET /v1/models`: the models with a schema, and what happens to any other model."""

    data: list[ModelInfo]
    unknown_models: Literal["reject", "forward"] = Field(
        description="`reject`: a task naming a model not listed is 422; `forward`: it is "
        "sent upstream with its input unchecked (RELAY_UNKNOWN_MODELS)"
    )


@routes.get("/v1/models")
@documented("List the models and their input schemas", {200: ModelList})
async def list_models(request: web.Request) -> web.Response:
    """Every model with a schema (shipped and RELAY_MODEL_SCHEMAS_DIR), sorted by name."""
    catalog = request.app[CATALOG]
    return json_response(
        {
            "data": [
                {"name": name, "input_schema": catalog.schema(name)} for name in catalog.names
            ],
            "unknown_models": catalog.unknown_models,
        }
    )
