"""What the simulator keeps per task and per request, and the upstream's error shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from relay.upstream.simulator.timings import TaskTimes, progress_percent

SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# MindVideo's published example prices kling-video-o1 pro at 0.0756 for 5 s; std is cheaper.
PRICE_PER_SECOND = {"pro": 0.01512, "std": 0.0084}
DEFAULT_DURATION_S = 5
DEFAULT_MODE = "std"
OUTPUT_URL = "https://cdn.sim.mindvideo.invalid/{task_id}.mp4"
# Codes MindVideo-like clients key on; other statuses get their reason phrase as a code.
SPECIAL_ERROR_CODES = {402: "insufficient_credits", 429: "rate_limited"}
# The endpoints counted per task, and the _Task slot holding each count.
TASK_COUNTERS = {"submit": "submits", "get": "gets", "events": "event_reads", "cancel": "cancels"}


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
    """The compact per-task record; status, events and bodies are derived on demand.

    Request counts are plain int slots rather than a list of requests, so 100,000 tasks
    polled for hours stay a few hundred bytes each.
    """

    task_id: str
    model: str
    created: float
    times: TaskTimes
    will_fail: bool
    cost: float
    # (at, status) appended by cancel / force_status; None in the common case saves memory.
    forced: list[tuple[float, str]] | None = None
    submits: int = 0
    gets: int = 0
    event_reads: int = 0
    cancels: int = 0

    @property
    def request_id(self) -> str:
        return "req_" + self.task_id.removeprefix("task_")

    def timeline(self) -> list[tuple[float, str, int | None]]:
        """All events (at, status, progress) in order, including ones still in the future."""
        c, t = self.created, self.times
        events: list[tuple[float, str, int | None]] = [
            (c, "queued", None),
            (c + t.processing_after, "processing", None),
            (c + t.progress_after, "processing", progress_percent(t)),
            (c + t.terminal_after, "failed" if self.will_fail else "succeeded", None),
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

    def transitions_until(self, when: float) -> tuple[float | None, float | None]:
        """When the task first became processing and terminal, if that happened by `when`."""
        processing_at = terminal_at = None
        for at, status, _ in self.timeline():
            if at > when:
                break
            if status == "processing" and processing_at is None:
                processing_at = at
            if status in TERMINAL_STATUSES:
                terminal_at = at
                break
        return processing_at, terminal_at

    def submit_view(self, status: str) -> dict[str, Any]:
        """The submit answer for this task in `status`."""
        return {
            "request_id": self.request_id,
            "task_id": self.task_id,
            "status": status,
            "cost_estimate": self.cost,
        }

    def api_view(self, status: str) -> dict[str, Any]:
        """The GET task (and cancel) answer for this task in `status`."""
        succeeded = status == "succeeded"
        return {
            "request_id": self.request_id,
            "task_id": self.task_id,
            "status": status,
            "cost_estimate": self.cost,
            "cost_actual": self.cost if succeeded else None,
            "output": (
                {"videos": [{"url": OUTPUT_URL.format(task_id=self.task_id)}]}
                if succeeded
                else None
            ),
            "error": (
                {"code": "generation_failed", "message": "simulated generation failure"}
                if status == "failed"
                else None
            ),
        }

    def request_counts(self) -> dict[str, int]:
        """Requests naming this task, per endpoint."""
        return {endpoint: getattr(self, slot) for endpoint, slot in TASK_COUNTERS.items()}


def error_code(status: int) -> str:
    """The error code the simulator puts in a body for this HTTP status."""
    if status in SPECIAL_ERROR_CODES:
        return SPECIAL_ERROR_CODES[status]
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(code: str, message: str) -> dict[str, Any]:
    """MindVideo's error body."""
    return {"error": {"code": code, "message": message}}


@cache
def validators() -> dict[str, Draft202012Validator]:
    """Input validators per model, keyed by schema file name minus `.schema.json`."""
    return {
        path.name.removesuffix(".schema.json"): Draft202012Validator(json.loads(path.read_text()))
        for path in sorted(SCHEMAS_DIR.glob("*.schema.json"))
    }


def price(model_input: dict[str, Any]) -> float:
    """The cost MindVideo would estimate for this input."""
    seconds = model_input.get("duration", DEFAULT_DURATION_S)
    per_second = PRICE_PER_SECOND.get(
        model_input.get("mode", DEFAULT_MODE), PRICE_PER_SECOND["std"]
    )
    return round(per_second * seconds, 4)


def fingerprint(model: str, model_input: dict[str, Any]) -> str:
    """What an Idempotency-Key is bound to: the canonical model and input."""
    return json.dumps({"model": model, "input": model_input}, sort_keys=True, separators=(",", ":"))
