"""A MindVideo upstream simulator: a real aiohttp server imitating the async task API.

Tests, the demo and the benchmark all talk to it over HTTP, so the relay's client code
runs unchanged. Task state is never advanced by timers: each task keeps only its
creation time, duration and a few flags, and its status and events are derived from
the simulator clock whenever asked. That keeps 100,000 tasks cheap, and lets tests move
time with `SimulatorState.advance()` instead of sleeping.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"
EVENTS_SHAPES = ("array", "events", "data")
FAULT_ENDPOINTS = ("submit", "get", "events", "cancel", "any")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# MindVideo's published example prices kling-video-o1 pro at 0.0756 for 5 s; std is cheaper.
PRICE_PER_SECOND = {"pro": 0.01512, "std": 0.0084}
DEFAULT_DURATION_S = 5
DEFAULT_MODE = "std"
# Lifecycle milestones as shares of the task duration.
PROCESSING_AT = 0.25
PROGRESS_AT = 0.60
OUTPUT_URL = "https://cdn.sim.mindvideo.invalid/{task_id}.mp4"
# Codes MindVideo-like clients key on; other statuses get their reason phrase as a code.
SPECIAL_ERROR_CODES = {402: "insufficient_credits", 429: "rate_limited"}


@dataclass
class SimulatorConfig:
    """Knobs of the simulator; every field can be changed live via `PATCH /_sim/config`."""

    api_key: str = "sim-key"
    latency_s: float = 0.0
    task_duration_s: float = 6.0
    failure_rate: float = 0.0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    malformed_rate: float = 0.0
    retry_after_s: float = 1.0
    events_shape: str = "array"
    event_ids: bool = True
    events_lag_s: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.events_shape not in (*EVENTS_SHAPES, "rotate"):
            raise ValueError("events_shape must be one of array, events, data, rotate")


@dataclass
class RecordedRequest:
    """One request the simulator received, as tests assert on it."""

    method: str
    path: str
    endpoint: str
    headers: dict[str, str]
    json: Any | None
    status: int
    at: float

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup, since clients differ in header-name casing."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)


class ApiError(Exception):
    """An error answer in MindVideo's `{"error": {"code", "message"}}` shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(slots=True)
class _Task:
    """The compact per-task record; status, events and bodies are derived on demand."""

    task_id: str
    created: float
    duration: float
    will_fail: bool
    cost: float
    # (at, status) appended by cancel / force_status; None in the common case saves memory.
    forced: list[tuple[float, str]] | None = None

    @property
    def request_id(self) -> str:
        return "req_" + self.task_id.removeprefix("task_")

    def timeline(self) -> list[tuple[float, str, int | None]]:
        """All events (at, status, progress) in order, including ones still in the future."""
        c, d = self.created, self.duration
        events: list[tuple[float, str, int | None]] = [
            (c, "queued", None),
            (c + PROCESSING_AT * d, "processing", None),
            (c + PROGRESS_AT * d, "processing", round(PROGRESS_AT * 100)),
            (c + d, "failed" if self.will_fail else "succeeded", None),
        ]
        if self.forced:
            # A forced status freezes the natural lifecycle at that moment; events already
            # visible stay, so the list only ever grows.
            cut = self.forced[0][0]
            events = [e for e in events if e[0] <= cut]
            events.extend((at, status, None) for at, status in self.forced)
        return events

    def status_at(self, when: float) -> str:
        status = "queued"
        for at, event_status, _ in self.timeline():
            if at > when:
                break
            status = event_status
        return status


@dataclass
class _Fault:
    status: int
    body: dict[str, Any]
    retry_after: float | None
    remaining: int


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


CONFIG_FIELDS = frozenset(f.name for f in fields(SimulatorConfig))
# Fields that are not plain numbers, with what a JSON value must look like for each.
CONFIG_CHECKS: dict[str, Callable[[Any], bool]] = {
    "api_key": lambda v: isinstance(v, str),
    "events_shape": lambda v: v in (*EVENTS_SHAPES, "rotate"),
    "event_ids": lambda v: isinstance(v, bool),
    "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
}


def _error_code(status: int) -> str:
    if status in SPECIAL_ERROR_CODES:
        return SPECIAL_ERROR_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@cache
def _validators() -> dict[str, Draft202012Validator]:
    """Input validators per model, keyed by schema file name minus `.schema.json`."""
    return {
        path.name.removesuffix(".schema.json"): Draft202012Validator(json.loads(path.read_text()))
        for path in sorted(SCHEMAS_DIR.glob("*.schema.json"))
    }


def _price(model_input: dict[str, Any]) -> float:
    seconds = model_input.get("duration", DEFAULT_DURATION_S)
    per_second = PRICE_PER_SECOND.get(
        model_input.get("mode", DEFAULT_MODE), PRICE_PER_SECOND["std"]
    )
    return round(per_second * seconds, 4)


def _fingerprint(model: str, model_input: dict[str, Any]) -> str:
    return json.dumps({"model": model, "input": model_input}, sort_keys=True, separators=(",", ":"))


def _format_retry_after(seconds: float) -> str:
    # Whole seconds as the RFC wants; fractions survive so fast tests can use sub-second waits.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


class SimulatorState:
    """Everything the simulator knows: config, tasks, the request log and the fault queues."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.requests: list[RecordedRequest] = []
        self.charges = 0
        self._offset = 0.0
        self._rng = random.Random(config.seed)
        self._tasks: dict[str, _Task] = {}
        self._idempotency: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, task_id)
        self._faults: dict[str, deque[_Fault]] = {}
        self._rotation = 0
        self.clock = clock or time.monotonic

    @property
    def clock(self) -> Callable[[], float]:
        """The base clock; `now()` adds the offset moved by `advance()`."""
        return self._clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Event timestamps map simulator time onto wall time; re-anchor when the clock changes.
        self._wall_anchor = time.time() - self.now()

    def now(self) -> float:
        """Simulator time in seconds."""
        return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward, so tasks progress without sleeping."""
        self._offset += seconds

    def reseed(self, seed: int | None) -> None:
        """Restart the random sequence, e.g. after the seed changed through the control API."""
        self.config.seed = seed
        self._rng = random.Random(seed)

    @property
    def task_count(self) -> int:
        """How many tasks exist (submitted and bulk-created)."""
        return len(self._tasks)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        """Recorded requests to one endpoint: submit, get, events, cancel or other."""
        return [r for r in self.requests if r.endpoint == endpoint]

    def fail_next(
        self,
        endpoint: str,
        count: int,
        status: int,
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `count` requests to `endpoint` with `status` (before random faults)."""
        if endpoint not in FAULT_ENDPOINTS:
            raise ValueError(f"endpoint must be one of {', '.join(FAULT_ENDPOINTS)}")
        if body is None:
            body = _error_body(_error_code(status), f"simulated HTTP {status}")
        fault = _Fault(status, body, retry_after, count)
        if count > 0:
            self._faults.setdefault(endpoint, deque()).append(fault)

    def take_fault(self, endpoint: str) -> web.Response | None:
        """The queued or randomly drawn fault for this request, if any."""
        for key in (endpoint, "any"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.popleft()
                return _fault_response(fault.status, fault.body, fault.retry_after)
        cfg = self.config
        # Only draw when a rate is set, so enabling nothing keeps the task outcomes' sequence.
        if cfg.rate_429 > 0 and self._rng.random() < cfg.rate_429:
            body = _error_body("rate_limited", "too many requests")
            return _fault_response(429, body, cfg.retry_after_s)
        if cfg.rate_5xx > 0 and self._rng.random() < cfg.rate_5xx:
            body = _error_body("service_unavailable", "temporarily unavailable")
            return _fault_response(503, body, cfg.retry_after_s)
        return None

    def draw_malformed(self, endpoint: str) -> web.Response | None:
        """A malformed 200 to send instead of this GET answer, drawn at `malformed_rate`."""
        rate = self.config.malformed_rate
        if rate <= 0 or self._rng.random() >= rate:
            return None
        # Half non-JSON text (a proxy's error page), half JSON that is not the expected shape.
        if self._rng.random() < 0.5:
            text = "<html><body>502 upstream hiccup</body></html>"
            return web.Response(text=text, content_type="text/html")
        wrong: Any = (
            {"events": {"unexpected": True}} if endpoint == "events" else ["not", "a", "task"]
        )
        return web.json_response(wrong)

    def _new_task(self, cost: float, duration: float) -> _Task:
        task_id = f"task_{self._rng.getrandbits(64):016x}"
        while task_id in self._tasks:  # 64 random bits: a clash is rare but must not merge tasks
            task_id = f"task_{self._rng.getrandbits(64):016x}"
        rate = self.config.failure_rate
        will_fail = rate > 0 and self._rng.random() < rate
        task = self._tasks[task_id] = _Task(task_id, self.now(), duration, will_fail, cost)
        return task

    def submit(
        self, model: str, model_input: dict[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]:
        """Create (and charge) a task, or replay the one an Idempotency-Key already made."""
        fingerprint = _fingerprint(model, model_input)
        if idempotency_key is not None and idempotency_key in self._idempotency:
            known_fingerprint, task_id = self._idempotency[idempotency_key]
            if known_fingerprint != fingerprint:
                raise ApiError(
                    409, "idempotency_conflict", "Idempotency-Key reused with a different payload"
                )
            task = self._tasks[task_id]
            return self._submit_view(task, task.status_at(self._status_view_time()))
        validator = _validators().get(model)
        if validator is None:
            raise ApiError(404, "model_not_found", f"unknown model {model!r}")
        error = best_match(validator.iter_errors(model_input))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "input"
            raise ApiError(422, "invalid_input", f"{where}: {error.message}")
        task = self._new_task(_price(model_input), self.config.task_duration_s)
        self.charges += 1
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = (fingerprint, task.task_id)
        return self._submit_view(task, "queued")

    def create_tasks_bulk(
        self,
        count: int,
        model: str = "kling-video-o1",
        input: dict[str, Any] | None = None,
        duration_s: float | None = None,
    ) -> list[str]:
        """Create `count` tasks directly (no HTTP, no charge) for the benchmark; returns ids."""
        model_input = input if input is not None else {"prompt": "simulated benchmark task"}
        validator = _validators().get(model)
        if validator is None:
            raise ValueError(f"unknown model {model!r}")
        if (error := best_match(validator.iter_errors(model_input))) is not None:
            raise ValueError(f"invalid input: {error.message}")
        duration = self.config.task_duration_s if duration_s is None else duration_s
        cost = _price(model_input)
        return [self._new_task(cost, duration).task_id for _ in range(count)]

    def _task(self, task_id: str) -> _Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise ApiError(404, "task_not_found", f"task {task_id} not found")
        return task

    def force_status(self, task_id: str, status: str) -> None:
        """Set a task's status to any string from now on, appending its event."""
        task = self._task(task_id)
        if task.forced is None:
            task.forced = []
        task.forced.append((self.now(), status))

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Cancel a non-terminal task; 409 once it is terminal."""
        task = self._task(task_id)
        status = task.status_at(self.now())
        if status in TERMINAL_STATUSES:
            raise ApiError(409, "task_not_cancellable", f"task is already {status}")
        self.force_status(task_id, "cancelled")
        return self._task_view(task, "cancelled")

    # Negative events_lag_s means the status endpoint trails the events; positive, the reverse.
    def _status_view_time(self) -> float:
        return self.now() - max(0.0, -self.config.events_lag_s)

    def _events_view_time(self) -> float:
        return self.now() - max(0.0, self.config.events_lag_s)

    def task_body(self, task_id: str) -> dict[str, Any]:
        """The GET task answer as of now."""
        task = self._task(task_id)
        return self._task_view(task, task.status_at(self._status_view_time()))

    def events_body(self, task_id: str) -> Any:
        """The events answer as of now, shaped per `events_shape`."""
        task = self._task(task_id)
        when = self._events_view_time()
        events = []
        for n, (at, status, progress) in enumerate(task.timeline(), start=1):
            if at > when:
                break
            event: dict[str, Any] = {}
            if self.config.event_ids:
                event["id"] = f"uev_{task_id}_{n}"
            event["type"] = "progress" if progress is not None else "status_changed"
            event["status"] = status
            if progress is not None:
                event["progress"] = progress
            event["created_at"] = self._iso(at)
            events.append(event)
        shape = self.config.events_shape
        if shape == "rotate":
            shape = EVENTS_SHAPES[self._rotation % len(EVENTS_SHAPES)]
            self._rotation += 1
        return events if shape == "array" else {shape: events}

    def _iso(self, at: float) -> str:
        moment = datetime.fromtimestamp(self._wall_anchor + at, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @staticmethod
    def _submit_view(task: _Task, status: str) -> dict[str, Any]:
        return {
            "request_id": task.request_id,
            "task_id": task.task_id,
            "status": status,
            "cost_estimate": task.cost,
        }

    @staticmethod
    def _task_view(task: _Task, status: str) -> dict[str, Any]:
        succeeded = status == "succeeded"
        return {
            "request_id": task.request_id,
            "task_id": task.task_id,
            "status": status,
            "cost_estimate": task.cost,
            "cost_actual": task.cost if succeeded else None,
            "output": (
                {"videos": [{"url": OUTPUT_URL.format(task_id=task.task_id)}]}
                if succeeded
                else None
            ),
            "error": (
                {"code": "generation_failed", "message": "simulated generation failure"}
                if status == "failed"
                else None
            ),
        }

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply a partial config update from JSON; nothing changes unless all of it is valid."""
        for name, value in changes.items():
            if name not in CONFIG_FIELDS:
                raise ApiError(400, "unknown_field", f"no config field {name!r}")
            if not CONFIG_CHECKS.get(name, _is_number)(value):
                raise ApiError(400, "invalid_value", f"bad value for {name}: {value!r}")
        for name, value in changes.items():
            setattr(self.config, name, value if name in CONFIG_CHECKS else float(value))
        if "seed" in changes:
            self.reseed(changes["seed"])


def _fault_response(status: int, body: dict[str, Any], retry_after: float | None) -> web.Response:
    headers = {"Retry-After": _format_retry_after(retry_after)} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)


def _error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response(_error_body(code, message), status=status)


SIM_STATE: web.AppKey[SimulatorState] = web.AppKey("sim_state", SimulatorState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_ENDPOINTS = frozenset({"submit", "get", "events", "cancel"})


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
    """Auth, latency and faults for /api/v1, error bodies, and the request log."""
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
        response = _error_response(exc.status, _error_code(exc.status), exc.reason)
    headers = {
        k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in request.headers.items()
    }
    state.requests.append(
        RecordedRequest(
            request.method, request.path, endpoint, headers, body, response.status, received_at
        )
    )
    return response


async def _submit(request: web.Request) -> web.Response:
    body = _parse_json(await request.read())
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise ApiError(422, "invalid_request", 'body must be a JSON object {"model", "input"}')
    model_input = body.get("input") if body.get("input") is not None else {}
    if not isinstance(model_input, dict):
        raise ApiError(422, "invalid_input", "input must be an object")
    key = request.headers.get("Idempotency-Key")
    return web.json_response(request.app[SIM_STATE].submit(body["model"], model_input, key))


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
    stats = {"tasks": state.task_count, "charges": state.charges, "requests": len(state.requests)}
    return web.json_response(stats)


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
    app.router.add_post("/_sim/tasks/{task_id}/status", _sim_status)
    app.router.add_post("/_sim/bulk", _sim_bulk)
    app.router.add_get("/_sim/stats", _sim_stats)
    return app


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(f"MINDVIDEO_SIM_{name}", default)


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags; each defaults to env MINDVIDEO_SIM_<NAME>, then a constant."""
    # argparse runs `type` over string defaults too, so a bad env value is a usage error.
    add = parser.add_argument
    add("--host", default=_env("HOST", "127.0.0.1"), help="listen address")
    add("--port", type=int, default=_env("PORT", "8090"), help="listen port")
    add("--api-key", default=_env("API_KEY", "sim-key"), help="bearer key clients must send")
    add("--latency", type=float, default=_env("LATENCY", "0"), help="seconds per response")
    add("--task-duration", type=float, default=_env("TASK_DURATION", "6"), help="seconds")
    add("--failure-rate", type=float, default=_env("FAILURE_RATE", "0"), help="share failing")
    add("--rate-429", type=float, default=_env("RATE_429", "0"), help="share answered 429")
    add("--rate-5xx", type=float, default=_env("RATE_5XX", "0"), help="share answered 503")
    add("--malformed-rate", type=float, default=_env("MALFORMED_RATE", "0"), help="share")
    add("--retry-after", type=float, default=_env("RETRY_AFTER", "1"), help="Retry-After secs")
    shapes = [*EVENTS_SHAPES, "rotate"]
    add("--events-shape", choices=shapes, default=_env("EVENTS_SHAPE", "array"), help="wrapping")
    no_ids = (_env("NO_EVENT_IDS", "") or "").lower() in ("1", "true", "yes", "on")
    add("--no-event-ids", action="store_true", default=no_ids, help="events carry no id field")
    add("--events-lag", type=float, default=_env("EVENTS_LAG", "0"), help="seconds; <0: early")
    add("--seed", type=int, default=_env("SEED", None), help="seed for every random choice")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Turn parsed `add_simulator_arguments` flags into a SimulatorConfig."""
    return SimulatorConfig(
        api_key=args.api_key,
        latency_s=args.latency,
        task_duration_s=args.task_duration,
        failure_rate=args.failure_rate,
        rate_429=args.rate_429,
        rate_5xx=args.rate_5xx,
        malformed_rate=args.malformed_rate,
        retry_after_s=args.retry_after,
        events_shape=args.events_shape,
        event_ids=not args.no_event_ids,
        events_lag_s=args.events_lag,
        seed=args.seed,
    )


def run_simulator_from_args(args: argparse.Namespace) -> None:
    """Run the simulator until interrupted, printing the URL once it listens."""
    url = f"http://{args.host}:{args.port}"
    web.run_app(
        create_simulator_app(config_from_args(args)),
        host=args.host,
        port=args.port,
        # run_app calls this once the sockets are bound; one line instead of its banner.
        print=lambda *_: print(f"MindVideo simulator listening on {url}", flush=True),
        access_log=None,
    )
