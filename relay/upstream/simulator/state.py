"""The simulator's state: config, tasks, the request log and counts, and the fault queues.

Task state is never advanced by timers: each task keeps only its creation time, its
milestone offsets and a few flags, and its status and events are derived from the
simulator clock whenever asked. That keeps 100,000 tasks cheap, and lets tests move time
with `SimulatorState.advance()` instead of sleeping.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from jsonschema.exceptions import best_match

from relay.upstream.simulator.config import (
    CONFIG_FIELDS,
    EVENTS_SHAPES,
    FLOAT_FIELDS,
    SimulatorConfig,
    check_config_value,
)
from relay.upstream.simulator.records import (
    TASK_COUNTERS,
    TERMINAL_STATUSES,
    ApiError,
    RecordedRequest,
    _Task,
    error_body,
    error_code,
    fingerprint,
    price,
    validators,
)
from relay.upstream.simulator.timings import TaskTimes, draw_realistic_times, fixed_times

FAULT_ENDPOINTS = ("submit", "get", "events", "cancel", "any")
# Every endpoint the per-endpoint counts report, even before its first request.
COUNTED_ENDPOINTS = ("submit", "get", "events", "cancel", "other")


@dataclass
class _Fault:
    status: int
    body: dict[str, Any]
    retry_after: float | None
    remaining: int


def _format_retry_after(seconds: float) -> str:
    # Whole seconds as the RFC wants; fractions survive so fast tests can use sub-second waits.
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def fault_response(status: int, body: dict[str, Any], retry_after: float | None) -> web.Response:
    """An error answer with a Retry-After header when one is given."""
    headers = {"Retry-After": _format_retry_after(retry_after)} if retry_after is not None else None
    return web.json_response(body, status=status, headers=headers)


def _timing_rng(seed: int | None) -> random.Random:
    # Durations come from their own sequence: a task's draws then depend only on the seed
    # and the submit order, not on how many requests drew faults in between.
    return random.Random(None if seed is None else f"timings:{seed}")


class SimulatorState:
    """Everything the simulator knows: config, tasks, the request log and the fault queues."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.requests: list[RecordedRequest] = []
        self.charges = 0
        self._offset = 0.0
        self._rng = random.Random(config.seed)
        self._timings = _timing_rng(config.seed)
        self._tasks: dict[str, _Task] = {}
        self._idempotency: dict[str, tuple[str, str]] = {}  # key -> (fingerprint, task_id)
        self._faults: dict[str, deque[_Fault]] = {}
        self._rotation = 0
        self._requests_by_endpoint: Counter[str] = Counter()
        self._errors_by_endpoint: Counter[str] = Counter()
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

    def unix_time(self, at: float | None = None) -> float:
        """Simulator time `at` (default now) as unix seconds, the clock event timestamps use."""
        return self._wall_anchor + (self.now() if at is None else at)

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward, so tasks progress without sleeping."""
        self._offset += seconds

    def reseed(self, seed: int | None) -> None:
        """Restart the random sequences, e.g. after the seed changed through the control API."""
        self.config.seed = seed
        self._rng = random.Random(seed)
        self._timings = _timing_rng(seed)

    @property
    def task_count(self) -> int:
        """How many tasks exist (submitted and bulk-created)."""
        return len(self._tasks)

    def requests_to(self, endpoint: str) -> list[RecordedRequest]:
        """Recorded requests to one endpoint: submit, get, events, cancel or other."""
        return [r for r in self.requests if r.endpoint == endpoint]

    def count_request(self, endpoint: str, status: int, task_id: str | None = None) -> None:
        """Count one API request, and against its task when it names a known one."""
        self._requests_by_endpoint[endpoint] += 1
        if status >= 400:
            self._errors_by_endpoint[endpoint] += 1
        task = self._tasks.get(task_id) if task_id is not None else None
        slot = TASK_COUNTERS.get(endpoint)
        if task is not None and slot is not None:
            setattr(task, slot, getattr(task, slot) + 1)

    def request_counts(self) -> dict[str, dict[str, int]]:
        """Requests received per endpoint (`requests`) and how many were answered >= 400."""
        return {
            "requests": {e: self._requests_by_endpoint[e] for e in COUNTED_ENDPOINTS},
            "errors": {e: self._errors_by_endpoint[e] for e in COUNTED_ENDPOINTS},
        }

    def task_request_counts(self, task_id: str) -> dict[str, int]:
        """Requests naming one task, per endpoint (submit counts answers naming it)."""
        return self._task(task_id).request_counts()

    def task_report(self, task_id: str) -> dict[str, Any]:
        """A task's true lifecycle, for measuring how late a client noticed each change.

        Times are unix seconds on the clock the API's event timestamps use;
        `processing_at` and `completed_at` stay None until that transition happened.
        """
        task = self._task(task_id)
        now = self.now()
        processing_at, completed_at = task.transitions_until(now)
        return {
            "task_id": task.task_id,
            "model": task.model,
            "status": task.status_at(now),
            "created_at": self._unix_or_none(task.created),
            "processing_at": self._unix_or_none(processing_at),
            "completed_at": self._unix_or_none(completed_at),
            "queued_s": round(task.times.queued_s, 6),
            "processing_s": round(task.times.processing_s, 6),
            "requests": task.request_counts(),
        }

    def _unix_or_none(self, at: float | None) -> float | None:
        # Microseconds are plenty for measuring delays, and keep the JSON short.
        return None if at is None else round(self.unix_time(at), 6)

    def task_reports(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """`task_report` of tasks in creation order, from `offset`, at most `limit`."""
        ids = list(self._tasks)[offset : None if limit is None else offset + limit]
        return [self.task_report(task_id) for task_id in ids]

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
            body = error_body(error_code(status), f"simulated HTTP {status}")
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
                return fault_response(fault.status, fault.body, fault.retry_after)
        cfg = self.config
        # Only draw when a rate is set, so enabling nothing keeps the task outcomes' sequence.
        if cfg.rate_429 > 0 and self._rng.random() < cfg.rate_429:
            body = error_body("rate_limited", "too many requests")
            return fault_response(429, body, cfg.retry_after_s)
        if cfg.rate_5xx > 0 and self._rng.random() < cfg.rate_5xx:
            body = error_body("service_unavailable", "temporarily unavailable")
            return fault_response(503, body, cfg.retry_after_s)
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

    def _fixed_times(self) -> TaskTimes:
        return fixed_times(self.config.task_duration_s * self.config.time_scale)

    def _draw_times(self, model: str, model_input: dict[str, Any]) -> TaskTimes:
        if self.config.timing == "realistic":
            return draw_realistic_times(self._timings, model, model_input, self.config.time_scale)
        return self._fixed_times()

    def _new_task(self, model: str, cost: float, times: TaskTimes) -> _Task:
        task_id = f"task_{self._rng.getrandbits(64):016x}"
        while task_id in self._tasks:  # 64 random bits: a clash is rare but must not merge tasks
            task_id = f"task_{self._rng.getrandbits(64):016x}"
        rate = self.config.failure_rate
        will_fail = rate > 0 and self._rng.random() < rate
        task = self._tasks[task_id] = _Task(task_id, model, self.now(), times, will_fail, cost)
        return task

    def submit(
        self, model: str, model_input: dict[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]:
        """Create (and charge) a task, or replay the one an Idempotency-Key already made."""
        payload_fingerprint = fingerprint(model, model_input)
        if idempotency_key is not None and idempotency_key in self._idempotency:
            known_fingerprint, task_id = self._idempotency[idempotency_key]
            if known_fingerprint != payload_fingerprint:
                raise ApiError(
                    409, "idempotency_conflict", "Idempotency-Key reused with a different payload"
                )
            task = self._tasks[task_id]
            return task.submit_view(task.status_at(self._status_view_time()))
        validator = validators().get(model)
        if validator is None:
            raise ApiError(404, "model_not_found", f"unknown model {model!r}")
        error = best_match(validator.iter_errors(model_input))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "input"
            raise ApiError(422, "invalid_input", f"{where}: {error.message}")
        task = self._new_task(model, price(model_input), self._draw_times(model, model_input))
        self.charges += 1
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = (payload_fingerprint, task.task_id)
        return task.submit_view("queued")

    def create_tasks_bulk(
        self,
        count: int,
        model: str = "kling-video-o1",
        input: dict[str, Any] | None = None,
        duration_s: float | None = None,
    ) -> list[str]:
        """Create `count` tasks directly (no HTTP, no charge) for the benchmark; returns ids.

        `duration_s` gives them all that fixed duration as is; without it each task is
        timed as a submitted one would be (the configured timing and time_scale).
        """
        model_input = input if input is not None else {"prompt": "simulated benchmark task"}
        validator = validators().get(model)
        if validator is None:
            raise ValueError(f"unknown model {model!r}")
        if (error := best_match(validator.iter_errors(model_input))) is not None:
            raise ValueError(f"invalid input: {error.message}")
        cost = price(model_input)
        if duration_s is not None or self.config.timing == "fixed":
            # One shared TaskTimes for the lot: bulk tasks cost no more than their record.
            times = fixed_times(duration_s) if duration_s is not None else self._fixed_times()
            return [self._new_task(model, cost, times).task_id for _ in range(count)]
        return [
            self._new_task(model, cost, self._draw_times(model, model_input)).task_id
            for _ in range(count)
        ]

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
        return task.api_view("cancelled")

    # Negative events_lag_s means the status endpoint trails the events; positive, the reverse.
    def _status_view_time(self) -> float:
        return self.now() - max(0.0, -self.config.events_lag_s)

    def _events_view_time(self) -> float:
        return self.now() - max(0.0, self.config.events_lag_s)

    def task_body(self, task_id: str) -> dict[str, Any]:
        """The GET task answer as of now."""
        task = self._task(task_id)
        return task.api_view(task.status_at(self._status_view_time()))

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
        moment = datetime.fromtimestamp(self.unix_time(at), UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply a partial config update from JSON; nothing changes unless all of it is valid."""
        for name, value in changes.items():
            if name not in CONFIG_FIELDS:
                raise ApiError(400, "unknown_field", f"no config field {name!r}")
            if not check_config_value(name, value):
                raise ApiError(400, "invalid_value", f"bad value for {name}: {value!r}")
        for name, value in changes.items():
            setattr(self.config, name, float(value) if name in FLOAT_FIELDS else value)
        if "seed" in changes:
            self.reseed(changes["seed"])
