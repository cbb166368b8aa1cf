"""OpenAPI 3.1 generated from the routes and the pydantic models their handlers use.

Each handler declares its contract with `@documented(...)`; `/openapi.json` walks the
router, so a route without documentation or a model change can never drift from the spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from relay import __version__
from relay.core.vocabulary import EVENT_TYPES
from relay.http.schemas import Problem, WebhookEvent
from relay.intake.catalog import ModelCatalog
from relay.keys import CATALOG

H = TypeVar("H", bound=Callable[..., Any])
_DOC_ATTR = "__relay_openapi__"
# Methods an auditor key is refused (see relay.http.middlewares.authenticate).
WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
PROBLEM_STATUSES = {
    400: "Malformed request",
    401: "Missing, unknown or revoked API key",
    403: "Forbidden: the key may not do this (an auditor key reads everything and changes nothing)",
    404: "Not found (or another client's)",
    409: "Conflict",
    413: "Body over 1 MiB",
    422: "Validation failed; one entry per violation",
    500: "Internal error",
    502: "Upstream error",
    503: "Upstream unavailable",
}


@dataclass(frozen=True)
class RouteDoc:
    """What a route takes and answers."""

    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True
    content_type: str = "application/json"
    # More media types the success answer may have (chosen by a query parameter, say).
    other_content_types: tuple[str, ...] = ()


def documented(
    summary: str,
    responses: dict[int, type[BaseModel] | None],
    *,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    headers: dict[str, str] | None = None,
    auth: bool = True,
    content_type: str = "application/json",
    other_content_types: tuple[str, ...] = (),
) -> Callable[[H], H]:
    """Attach the route's contract to its handler."""

    def mark(handler: H) -> H:
        setattr(
            handler,
            _DOC_ATTR,
            RouteDoc(
                summary,
                responses,
                body,
                query,
                errors,
                headers or {},
                auth,
                content_type,
                other_content_types,
            ),
        )
        return handler

    return mark


def _collect_models(docs: list[RouteDoc]) -> list[type[BaseModel]]:
    # WebhookEvent: the body of every webhook request (see `webhooks`), whatever routes exist.
    models: dict[str, type[BaseModel]] = {"Problem": Problem, "WebhookEvent": WebhookEvent}
    for doc in docs:
        for model in (doc.body, *doc.responses.values()):
            if model is not None:
                models[model.__name__] = model
    return list(models.values())


def _task_create_per_model(base: dict[str, Any], catalog: ModelCatalog) -> dict[str, Any]:
    """`TaskCreate` as one variant per model, each with that model's own input schema.

    The input schemas are the same files the handler validates with, so the document is
    exactly as strict as the API.
    """
    variants = []
    for name in catalog.names:
        properties = {
            **base["properties"],
            "model": {"const": name, "title": "Model"},
            "input": catalog.schema(name),
        }
        variants.append({**base, "title": f"TaskCreate ({name})", "properties": properties})
    if catalog.unknown_models == "forward":
        # RELAY_UNKNOWN_MODELS=forward: any other model, its input judged by upstream.
        other = {**base["properties"], "model": {"not": {"enum": catalog.names}, "type": "string"}}
        variants.append({**base, "title": "TaskCreate (other models)", "properties": other})
    return {"title": base.get("title", "TaskCreate"), "oneOf": variants}


def _link_created_resources(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links from each `POST /collection` to the `/collection/{id}...` operations.

    A client (or a fuzzer's stateful phase) can then follow a created resource's `id`.
    """
    for collection, ops in paths.items():
        create = ops.get("post")
        if create is None:
            continue
        links = {}
        for path, targets in paths.items():
            rest = path.removeprefix(collection + "/")
            if rest == path or not rest.startswith("{"):
                continue
            param = rest[1 : rest.index("}")]
            for target in targets.values():
                links[target["operationId"]] = {
                    "operationId": target["operationId"],
                    "parameters": {param: "$response.body#/id"},
                }
        if not links:
            continue
        for status, response in create["responses"].items():
            if status.startswith("2") and "content" in response:
                response["links"] = links


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def build_openapi(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of `app`."""
    routes: list[tuple[str, str, RouteDoc]] = []
    for route in app.router.routes():
        doc = getattr(route.handler, _DOC_ATTR, None)
        if doc is None or route.method == "HEAD" or route.resource is None:
            continue
        routes.append((route.method.lower(), route.resource.canonical, doc))
    models = _collect_models([doc for _, _, doc in routes])
    _, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    components = defs.get("$defs", {})
    if CATALOG in app and "TaskCreate" in components:
        components["TaskCreate"] = _task_create_per_model(components["TaskCreate"], app[CATALOG])

    def ref(model: type[BaseModel]) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    paths: dict[str, dict[str, Any]] = {}
    for method, path, doc in sorted(routes, key=lambda r: (r[1], r[0])):
        slug = path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
        op: dict[str, Any] = {
            "summary": doc.summary,
            "operationId": f"{method}_{slug}",
            "responses": {},
        }
        params = [
            {"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for p in path.split("/")
            if p.startswith("{")
        ]
        if doc.query is not None:
            params += _query_parameters(doc.query)
        params += [
            {
                "name": name,
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": 255},
                "description": text,
            }
            for name, text in doc.headers.items()
        ]
        if params:
            op["parameters"] = params
        if doc.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(doc.body)}},
            }
        for status, model in doc.responses.items():
            response: dict[str, Any] = {"description": "OK" if status < 300 else str(status)}
            if model is not None:
                response["content"] = {doc.content_type: {"schema": ref(model)}}
            elif doc.content_type != "application/json":
                response["content"] = {
                    media: {"schema": {"type": "string"}}
                    for media in (doc.content_type, *doc.other_content_types)
                }
            op["responses"][str(status)] = response
        error_statuses = set(doc.errors) | {500}
        if doc.auth:
            error_statuses |= {401}
            if method in WRITE_METHODS:
                error_statuses |= {403}
        if doc.body is not None:
            error_statuses |= {400, 413, 422}
        if doc.query is not None or params:
            error_statuses |= {422} if doc.query is not None else set()
        for status in sorted(error_statuses):
            op["responses"][str(status)] = {
                "description": PROBLEM_STATUSES[status],
                "content": {"application/problem+json": {"schema": ref(Problem)}},
            }
        if doc.auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[method] = op
    _link_created_resources(paths)
    webhooks, webhook_schemas = build_webhooks()
    components.update(webhook_schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "mindvideo-relay", "version": __version__},
        "paths": paths,
        "webhooks": webhooks,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


# The Standard Webhooks headers of every webhook request (contract section 5).
WEBHOOK_HEADERS = (
    (
        "webhook-id",
        "The event id (`evt_...`): the same on every retry of this event; dedupe on it",
        {"type": "string", "pattern": "^evt_[A-Za-z0-9]+$"},
    ),
    (
        "webhook-timestamp",
        "Unix seconds of this attempt; refuse requests too far from your clock",
        {"type": "string", "pattern": "^[0-9]+$"},
    ),
    (
        "webhook-signature",
        "Space-separated `v1,<base64 HMAC-SHA256>` over `{webhook-id}.{webhook-timestamp}.{body}`"
        " keyed with the base64-decoded secret after `whsec_`; two signatures while a secret"
        " rotation overlaps. Verify with any Standard Webhooks library",
        {"type": "string", "pattern": "^v1,[A-Za-z0-9+/]+={0,2}( v1,[A-Za-z0-9+/]+={0,2})*$"},
    ),
)


def _event_schema_name(event_type: str) -> str:
    """`task.succeeded` -> `TaskSucceededEvent` (component names allow no free-form dots)."""
    return "".join(part.capitalize() for part in event_type.split(".")) + "Event"


def build_webhooks() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI 3.1 `webhooks` object: one POST per event type, and their body schemas.

    A receiver generated from the document sees the signed headers and, per event type, a
    body whose `type` is that event and whose task `data` is in the status it names.
    """
    webhooks: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for event_type in EVENT_TYPES:
        name = _event_schema_name(event_type)
        status = event_type.removeprefix("task.")
        schemas[name] = {
            "title": name,
            "description": f"The body of a `{event_type}` webhook: the task as it entered "
            f"`{status}`; the same JSON `GET /v1/events` lists",
            "allOf": [{"$ref": "#/components/schemas/WebhookEvent"}],
            "properties": {
                "type": {"const": event_type},
                "data": {"properties": {"status": {"const": status}}},
            },
        }
        webhooks[event_type] = {
            "post": {
                "summary": f"A task entered `{status}`",
                "operationId": f"webhook_{event_type.replace('.', '_')}",
                "description": "Sent to every matching subscription's URL (and the task's own "
                "`webhook_url`), signed per Standard Webhooks; at least once, in order per "
                "task and receiver",
                "parameters": [
                    {
                        "name": header,
                        "in": "header",
                        "required": True,
                        "description": text,
                        "schema": schema,
                    }
                    for header, text, schema in WEBHOOK_HEADERS
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}
                    },
                },
                "responses": {
                    "2XX": {"description": "Received: the delivery succeeded"},
                    "410": {"description": "Gone: the subscription is disabled, no retries"},
                    "default": {
                        "description": "A failed attempt, retried per "
                        "RELAY_WEBHOOK_RETRY_SCHEDULE (Retry-After on 429/503 honoured)"
                    },
                },
            }
        }
    return webhooks, schemas


routes = web.RouteTableDef()


@routes.get("/openapi.json")
@documented("This OpenAPI 3.1 document", {200: None}, auth=False)
async def openapi_json(request: web.Request) -> web.Response:
    """This API's OpenAPI 3.1 document."""
    return web.json_response(build_openapi(request.app))
