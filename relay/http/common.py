"""Parsing helpers shared by the handlers."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from relay.errors import FieldError, InvalidRequest
from relay.http.middlewares import pydantic_errors

M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request, model: type[M]) -> M:
    """The JSON body parsed into `model`: 400 when not JSON, 422 with pointers when invalid."""
    raw = await request.read()  # raises 413 past client_max_size
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "the request body is not valid JSON", [FieldError("/", str(exc))], status=400
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            "the request body must be a JSON object", [FieldError("/", "expected an object")]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest("the request is invalid", pydantic_errors(exc)) from None


def read_query(request: web.Request, model: type[M]) -> M:
    """Query parameters parsed into `model`; errors located at `/query/<name>`."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise InvalidRequest("invalid query parameters", pydantic_errors(exc, "/query")) from None


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(body, status=status)
