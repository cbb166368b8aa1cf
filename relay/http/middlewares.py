"""Request context and logging, authentication, and the one place errors become problems."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from pydantic import ValidationError

from relay.core import metrics
from relay.core.errors import (
    FieldError,
    Forbidden,
    InvalidRequest,
    NotFound,
    RelayError,
    Unauthorized,
    json_pointer,
    problem,
)
from relay.core.store import database_unavailable
from relay.identity import clients
from relay.identity import sessions as console_sessions
from relay.keys import CLIENT, REQUEST_ID, STORE

log = structlog.get_logger("relay.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM_JSON = "application/problem+json"
# Operational endpoints answer without a key (probes and scrapers have none).
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
# What a read-only (auditor) key may send.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The API, and the console's JSON summaries: a Bearer key or a console session cookie.
AUTHENTICATED_PREFIXES = ("/v1", "/console/api")
# While the database is unavailable clients are told to come back: a pool reconnects within
# seconds of the server returning, so a short wait beats hammering a recovering server.
DATABASE_RETRY_AFTER_S = 5


def problem_response(error: RelayError) -> web.Response:
    """An RFC 9457 body for a domain error."""
    body: dict[str, object] = {
        "type": error.type,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    if error.errors:
        body["errors"] = [{"loc": e.loc, "message": e.message} for e in error.errors]
    response = web.Response(
        status=error.status, text=json.dumps(body), content_type=PROBLEM_JSON, charset=None
    )
    if error.status == 401:
        # RFC 9110 (15.5.2): a 401 names the authentication scheme the server expects.
        response.headers["WWW-Authenticate"] = 'Bearer realm="mindvideo-relay"'
    return response


def pydantic_errors(exc: ValidationError, base: str = "") -> list[FieldError]:
    """pydantic errors located by JSON pointer."""
    found = []
    for err in exc.errors(include_url=False, include_input=False):
        # pydantic prefixes messages of our own validators ("Value error, must ..."):
        # problems read as sentences, so only the sentence is kept.
        message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        found.append(FieldError(base + json_pointer(err["loc"]) or "/", message))
    return found


_HTTP_TITLES = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
}


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id, log one line per request, count it."""
    request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id[:64])
    request[REQUEST_ID] = request_id[:64]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id[:64]
        return response
    finally:
        route = request.match_info.route.resource
        route_name = route.canonical if route is not None else "unmatched"
        elapsed = time.perf_counter() - started
        metrics.HTTP_REQUESTS.labels(request.method, route_name, str(status)).inc()
        metrics.HTTP_SECONDS.labels(route_name).observe(elapsed)
        client = request.get(CLIENT)
        if route_name != "/metrics":
            log.info(
                "http_request",
                method=request.method,
                route=route_name,
                status=status,
                latency_ms=round(elapsed * 1000, 2),
                client=client.name if client else None,
            )
        structlog.contextvars.clear_contextvars()


def _refuse_nul(request: web.Request) -> None:
    """Postgres text cannot hold U+0000: no id or filter containing it can match anything."""
    if "\x00" in request.path:
        raise NotFound("resource")
    bad = [name for name, value in request.query.items() if "\x00" in name + value]
    if bad:
        raise InvalidRequest(
            "query parameters may not contain NUL characters",
            [FieldError(f"/query/{name}", "contains a NUL character") for name in bad],
        )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map every error to problem+json; unexpected ones to a bare 500 (logged, not echoed)."""
    try:
        _refuse_nul(request)
        return await handler(request)
    except RelayError as exc:
        return problem_response(exc)
    except ValidationError as exc:
        return problem_response(InvalidRequest("the request is invalid", pydantic_errors(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        title = _HTTP_TITLES.get(exc.status, exc.reason)
        detail = exc.reason
        if exc.status == 413:
            detail = "request body exceeds 1 MiB"
        response = problem_response(
            RelayError(detail, exc.status, title, problem(title.lower().replace(" ", "-")))
        )
        if "Allow" in exc.headers:  # a 405 must say which methods the resource takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("database_unavailable", path=request.path, error=type(exc).__name__)
            response = problem_response(
                RelayError(
                    "the database is unavailable; retry later",
                    503,
                    "Service unavailable",
                    problem("database-unavailable"),
                )
            )
            response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
            return response
        log.exception("unhandled_error", path=request.path)
        return problem_response(
            RelayError("an internal error occurred", 500, "Internal error", problem("internal"))
        )


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every /v1 request carries `Authorization: Bearer rk_...` of an active client (or a
    console session cookie)."""
    if request.path in PUBLIC_PATHS or not request.path.startswith(AUTHENTICATED_PREFIXES):
        return await handler(request)
    # Without a key, the console's browser session stands for the client whose key signed
    # in: the same Client, so the console sees and does exactly what that key would.
    console_client = None
    if "Authorization" not in request.headers:
        console_client = await console_sessions.client_from_cookie(request.app[STORE], request)
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if console_client is None and (scheme.lower() != "bearer" or not key.strip()):
        raise Unauthorized("missing Authorization: Bearer <key>")
    client = console_client or await clients.authenticate(request.app[STORE], key.strip())
    if client is None:
        raise Unauthorized("unknown or revoked API key")
    request[CLIENT] = client
    structlog.contextvars.bind_contextvars(client=client.name)
    if not client.can_write and request.method not in READ_METHODS:
        # One rule for every route, present and future: an auditor reads, never writes.
        raise Forbidden(f"an {client.role} key may only read (GET); {request.method} refused")
    return await handler(request)
