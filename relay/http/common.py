"""Parsing helpers shared by the handlers."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from relay.core.errors import FieldError, InvalidRequest, json_pointer
from relay.core.json_codec import dumps
from relay.http.middlewares import pydantic_errors

M = TypeVar("M", bound=BaseModel)


# JSON allows U+0000 and lone surrogate escapes (\ud800) in strings; Postgres text and jsonb
# refuse both, so they are a 422 located at the string, not a 500 at insert time.
NUL_MESSAGE = "must not contain the NUL character (\\u0000)"
SURROGATE_MESSAGE = "must not contain unpaired surrogate escapes (\\ud800 to \\udfff)"


# Deep enough for any real input or metadata; shallow enough that every recursive walk of
# the body (the JSON parser, pydantic, jsonschema, ours, jsonb) stays far from its limit.
MAX_JSON_DEPTH = 64
DEPTH_MESSAGE = f"nested deeper than {MAX_JSON_DEPTH} levels of objects and arrays"
# Strings (so brackets inside them are not counted) and the structural characters.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')


def _too_deep(raw: bytes) -> str | None:
    """The JSON pointer of the first container nested past MAX_JSON_DEPTH, or None.

    A token scan, not a parse: Python's own parser raises RecursionError near 1,000 levels,
    and naming where the nesting went too deep needs the keys on the way down.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:  # the usual body: no scan at all
        return None
    path: list[list[Any]] = []  # per open container: [opening bracket, current key or index]
    last_string = b""
    for match in _JSON_TOKEN.finditer(raw):
        token = match.group()
        if token[0] == ord('"'):
            last_string = token
        elif token in (b"[", b"{"):
            if len(path) >= MAX_JSON_DEPTH:
                return "".join("/" + _escape(str(step)) for _, step in path) or "/"
            path.append([token, 0 if token == b"[" else ""])
        elif token in (b"]", b"}"):
            if path:
                path.pop()
        elif token == b":" and path:
            path[-1][1] = _json_key(last_string)
        elif token == b"," and path and path[-1][0] == b"[":
            path[-1][1] += 1
    return None


def _json_key(token: bytes) -> str:
    try:
        return str(json.loads(token))
    except ValueError:
        return token[1:-1].decode(errors="replace")


def _escape(step: str) -> str:
    return step.replace("~", "~0").replace("/", "~1")


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


async def read_body(
    request: web.Request,
    model: type[M],
    also: Callable[[Mapping[str, Any]], list[FieldError]] | None = None,
) -> M:
    """The JSON body parsed into `model`: 400 when not JSON, 422 with pointers when invalid.

    `also` holds the checks a service makes once the body is valid (a model's input schema,
    say); when the body is invalid they run on the raw object too, so one answer lists
    every mistake of the request.
    """
    raw = await request.read()  # raises 413 past client_max_size
    deep_at = _too_deep(raw)
    if deep_at is not None:
        raise InvalidRequest(
            f"the request body is nested deeper than {MAX_JSON_DEPTH} levels",
            [FieldError(deep_at, DEPTH_MESSAGE)],
        )
    try:
        data = (
            json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
            if raw
            else None
        )
    except RecursionError:  # the scan above should make this unreachable; never a 500
        raise InvalidRequest(
            f"the request body is nested deeper than {MAX_JSON_DEPTH} levels",
            [FieldError("/", DEPTH_MESSAGE)],
        ) from None
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
        errors += pydantic_errors(exc)
        if also is not None:
            seen = {e.loc for e in errors}
            errors += [e for e in also(data) if e.loc not in seen]
        raise InvalidRequest("the request is invalid", errors) from None
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
    return web.json_response(body, status=status, dumps=dumps)
