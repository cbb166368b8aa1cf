"""Parsing helpers shared by the handlers."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from relay.errors import FieldError, InvalidRequest, json_pointer
from relay.http.middlewares import pydantic_errors

M = TypeVar("M", bound=BaseModel)


# JSON allows U+0000 and lone surrogate escapes (\ud800) in strings; Postgres text and jsonb
# refuse both, so they are a 422 located at the string, not a 500 at insert time.
NUL_MESSAGE = "must not contain the NUL character (\\u0000)"
SURROGATE_MESSAGE = "must not contain unpaired surrogate escapes (\\ud800 to \\udfff)"


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and Postgres jsonb) does not.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which jsonb cannot store either
        raise ValueError(f"number {text} is out of range")
    return value


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return NUL_MESSAGE
    try:
        text.encode()
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def _unstorable_strings(value: Any, pointer: str) -> list[FieldError]:
    """Every string (or object key) the database cannot store, located by JSON pointer."""
    if isinstance(value, str):
        message = _string_problem(value)
        return [FieldError(pointer, message)] if message else []
    found: list[FieldError] = []
    if isinstance(value, dict):
        for key, item in value.items():
            child = pointer + json_pointer([key])
            if message := _string_problem(key):
                found.append(FieldError(child, message))
            found.extend(_unstorable_strings(item, child))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_unstorable_strings(item, f"{pointer}/{index}"))
    return found


async def read_body(request: web.Request, model: type[M]) -> M:
    """The JSON body parsed into `model`: 400 when not JSON, 422 with pointers when invalid."""
    raw = await request.read()  # raises 413 past client_max_size
    try:
        data = (
            json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
            if raw
            else None
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            "the request body is not valid JSON", [FieldError("/", str(exc))], status=400
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            "the request body must be a JSON object", [FieldError("/", "expected an object")]
        )
    errors = _unstorable_strings(data, "")
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest("the request is invalid", errors + pydantic_errors(exc)) from None
    if errors:
        raise InvalidRequest("the request is invalid", errors)
    return parsed


def read_query(request: web.Request, model: type[M]) -> M:
    """Query parameters parsed into `model`; errors located at `/query/<name>`."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise InvalidRequest("invalid query parameters", pydantic_errors(exc, "/query")) from None


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.json_response(body, status=status)
