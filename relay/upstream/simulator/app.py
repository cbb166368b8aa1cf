"""The simulator's aiohttp app: MindVideo's task API under /api/v1, controls under /_sim."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from relay.upstream.simulator.config import SimulatorConfig
from relay.upstream.simulator.records import ApiError, RecordedRequest, error_body, error_code
from relay.upstream.simulator.state import SimulatorState

SIM_STATE: web.AppKey[SimulatorState] = web.AppKey("sim_state", SimulatorState)
# The task a submit answered with, so the middleware can count the request against it.
SUBMITTED_TASK_ID = web.RequestKey("sim_submitted_task_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_ENDPOINTS = frozenset({"submit", "get", "events", "cancel"})


def _error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response(error_body(code, message), status=status)


def _parse_json(raw: bytes) -> Any | None:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _authorized(request: web.Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), api_key)


async def _answer_api(
    request: web.Request, handler: Handler, state: SimulatorState, endpoint: str
) -> web.StreamResponse:
    if state.config.latency_s > 0:
        await asyncio.sleep(state.config.latency_s)
    if not _authorized(request, state.config.api_key):
        return _error_response(401, "unauthorized", "invalid API key")
    fault = state.take_fault(endpoint)
    if fault is not None:
        return fault
    response = await handler(request)
    if endpoint in ("get", "events") and response.status == 200:
        return state.draw_malformed(endpoint) or response
    return response


@web.middleware
async def _upstream_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Auth, latency and faults for /api/v1, error bodies, the request log and counts."""
    if request.path.startswith("/_sim/"):
        try:
            return await handler(request)
        except ApiError as exc:
            return _error_response(exc.status, exc.code, exc.message)
        except (KeyError, TypeError, ValueError) as exc:
            # A control body missing or mistyping a field: say which, rather than a bare 500.
            return _error_response(400, "invalid_request", f"bad control request: {exc!r}")
    state = request.app[SIM_STATE]
    received_at = state.now()
    route_name = getattr(request.match_info.route, "name", None)
    endpoint = route_name if route_name in API_ENDPOINTS else "other"
    # Read now: aiohttp caches the body for the handler, and after it `can_read_body` is False.
    body = _parse_json(await request.read()) if request.body_exists else None
    try:
        if request.path.startswith("/api/v1/"):
            response = await _answer_api(request, handler, state, endpoint)
        else:
            response = await handler(request)
    except ApiError as exc:
        response = _error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        response = _error_response(exc.status, error_code(exc.status), exc.reason)
    headers = {
        k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in request.headers.items()
    }
    state.requests.append(
        RecordedRequest(
            request.method, request.path, endpoint, headers, body, response.status, received_at
        )
    )
    task_id = request.match_info.get("task_id") or request.get(SUBMITTED_TASK_ID)
    state.count_request(endpoint, response.status, task_id)
    return response


async def _submit(request: web.Request) -> web.Response:
    body = _parse_json(await request.read())
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise ApiError(422, "invalid_request", 'body must be a JSON object {"model", "input"}')
    model_input = body.get("input") if body.get("input") is not None else {}
    if not isinstance(model_input, dict):
        raise ApiError(422, "invalid_input", "input must be an object")
    key = request.headers.get("Idempotency-Key")
    answer = request.app[SIM_STATE].submit(body["model"], model_input, key)
    request[SUBMITTED_TASK_ID] = answer["task_id"]
    return web.json_response(answer)


async def _get_task(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].task_body(request.match_info["task_id"]))


async def _get_events(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].events_body(request.match_info["task_id"]))


async def _cancel(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].cancel(request.match_info["task_id"]))


async def _control_json(request: web.Request) -> dict[str, Any]:
    body = _parse_json(await request.read())
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "expected a JSON object")
    return body


async def _sim_requests(request: web.Request) -> web.Response:
    return web.json_response([asdict(r) for r in request.app[SIM_STATE].requests])


async def _sim_config(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    state.update_config(await _control_json(request))
    return web.json_response(asdict(state.config))


async def _sim_fail(request: web.Request) -> web.Response:
    body = await _control_json(request)
    request.app[SIM_STATE].fail_next(
        str(body["endpoint"]),
        int(body.get("count", 1)),
        int(body["status"]),
        body.get("body"),
        body.get("retry_after"),
    )
    return web.json_response({"ok": True})


async def _sim_status(request: web.Request) -> web.Response:
    status, task_id = (await _control_json(request))["status"], request.match_info["task_id"]
    if not isinstance(status, str):
        raise ApiError(400, "invalid_request", "status must be a string")
    request.app[SIM_STATE].force_status(task_id, status)
    return web.json_response(request.app[SIM_STATE].task_body(task_id))


async def _sim_bulk(request: web.Request) -> web.Response:
    body = await _control_json(request)
    state = request.app[SIM_STATE]
    ids = state.create_tasks_bulk(int(body["count"]), duration_s=body.get("duration_s"))
    return web.json_response({"task_ids": ids})


async def _sim_stats(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    counts = state.request_counts()
    stats = {
        "tasks": state.task_count,
        "charges": state.charges,
        "requests": len(state.requests),
        "requests_by_endpoint": counts["requests"],
        "errors_by_endpoint": counts["errors"],
        "now": round(state.unix_time(), 6),
    }
    return web.json_response(stats)


def _query_int(request: web.Request, name: str, default: int | None) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, "invalid_request", f"{name} must be a whole number >= 0")
    return value


async def _sim_tasks(request: web.Request) -> web.Response:
    state = request.app[SIM_STATE]
    offset = _query_int(request, "offset", 0) or 0
    limit = _query_int(request, "limit", None)
    tasks = state.task_reports(offset, limit)
    return web.json_response({"now": round(state.unix_time(), 6), "tasks": tasks})


async def _sim_task(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_STATE].task_report(request.match_info["task_id"]))


def create_simulator_app(
    config: SimulatorConfig | None = None, *, clock: Callable[[], float] | None = None
) -> web.Application:
    """Build the simulator's aiohttp app; its state is at `app[SIM_STATE]`."""
    app = web.Application(middlewares=[_upstream_middleware])
    app[SIM_STATE] = SimulatorState(config or SimulatorConfig(), clock)
    app.router.add_post("/api/v1/tasks", _submit, name="submit")
    app.router.add_get("/api/v1/tasks/{task_id}", _get_task, name="get")
    app.router.add_get("/api/v1/tasks/{task_id}/events", _get_events, name="events")
    app.router.add_post("/api/v1/tasks/{task_id}/cancel", _cancel, name="cancel")
    app.router.add_get("/_sim/requests", _sim_requests)
    app.router.add_patch("/_sim/config", _sim_config)
    app.router.add_post("/_sim/fail", _sim_fail)
    app.router.add_get("/_sim/tasks", _sim_tasks)
    app.router.add_get("/_sim/tasks/{task_id}", _sim_task)
    app.router.add_post("/_sim/tasks/{task_id}/status", _sim_status)
    app.router.add_post("/_sim/bulk", _sim_bulk)
    app.router.add_get("/_sim/stats", _sim_stats)
    return app
