"""What one poll of upstream adds to a stored task: the pure part of the poller.

`diff_task` compares upstream's answers (`PollResult`) with the stored task and returns
the task's new state and the history entries to append; `upstream_event_key` is an
upstream event's identity; `normalise_status` turns upstream's status body into the
shapes the relay's task object promises. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from relay.core.vocabulary import TASK_STATUSES
from relay.history.transitions import NewHistoryEntry, TaskOutcome
from relay.upstream.client import number_field

_LIFECYCLE_RANK = {"queued": 0, "processing": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
_TYPE_CHARS = re.compile(r"[^a-z0-9_.]+")
# Upstream's error text kept in a task's error.message is bounded like a rejection's.
ERROR_MESSAGE_MAX = 1000


def upstream_event_key(event: Mapping[str, Any], position: int) -> str:
    """An event's identity: its id/event_id, else a hash of its canonical JSON plus position."""
    for field in ("id", "event_id"):
        value = event.get(field)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return f"event:{value}"
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return f"hash:{hashlib.sha256(canonical.encode()).hexdigest()[:32]}:{position}"


def _event_type(event: Mapping[str, Any]) -> str:
    raw = event.get("type") or event.get("event") or "event"
    cleaned = _TYPE_CHARS.sub("_", str(raw).lower()).strip("_")[:64]
    return f"upstream.{cleaned or 'event'}"


@dataclass
class PollResult:
    """What upstream said about one task (either part may be missing after an error)."""

    status_body: dict[str, Any] | None
    events: list[dict[str, Any]] | None
    retry_after: float | None = None
    failure: str | None = None
    # When upstream's status was read (None: it was not), and requests spent on this poll.
    looked_at: datetime | None = None
    requests: int = 0
    events_failed: bool = False
    # Upstream answered 404 for the task's status: it does not know the task (any more).
    not_found: bool = False
    # The task outlived RELAY_TASK_TIMEOUT_S; upstream was asked to cancel it.
    timed_out: bool = False


@dataclass(frozen=True)
class NormalisedStatus:
    """Upstream's cost, output and error in the task object's shapes.

    `irregular` names the fields that needed more than a copy (a string error, a numeric
    string cost, an output that is not an object): the status change then keeps upstream's
    body verbatim in its history entry, so nothing upstream said is lost.
    """

    cost_estimate: float | None
    cost_actual: float | None
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    irregular: tuple[str, ...]


def normalise_status(
    body: Mapping[str, Any],
    *,
    cost_estimate: float | None,
    cost_actual: float | None,
    output: dict[str, Any] | None,
    error: dict[str, Any] | None,
) -> NormalisedStatus:
    """Upstream's status body in the task's shapes; absent fields keep the stored values.

    - cost: a number, or a string holding a finite number (`"0.0756"`);
    - output: an object as is; any other non-null value is wrapped as `{"value": ...}`
      (the task object's `output` is an object or null);
    - error: an object as is; a string becomes `{"code": "upstream_error", "message": s}`;
      any other non-null value is that too, with its JSON as the message.
    """
    irregular: list[str] = []
    costs = []
    for name, stored in (("cost_estimate", cost_estimate), ("cost_actual", cost_actual)):
        raw = body.get(name)
        value = number_field(raw, stored)
        if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float)):
            irregular.append(name)
        costs.append(value)
    raw_output = body.get("output")
    if isinstance(raw_output, dict):
        output = raw_output
    elif raw_output is not None:
        output = {"value": raw_output}
        irregular.append("output")
    raw_error = body.get("error")
    if isinstance(raw_error, dict):
        error = raw_error
    elif raw_error is not None:
        text = raw_error if isinstance(raw_error, str) else json.dumps(raw_error, default=str)
        error = {"code": "upstream_error", "message": text[:ERROR_MESSAGE_MAX]}
        irregular.append("error")
    return NormalisedStatus(costs[0], costs[1], output, error, tuple(irregular))


def diff_task(
    row: Mapping[str, Any],
    result: PollResult,
    known_keys: set[str],
    *,
    recorded_statuses: Iterable[str] = (),
) -> tuple[TaskOutcome, bool]:
    """Compare upstream's view with the stored task: the outcome and whether anything changed.

    Upstream events are recorded once each (by key). Status changes come from the status
    endpoint; a status seen only in the events (an intermediate step the status endpoint
    skipped), in this poll's or in events recorded earlier (`recorded_statuses`), is
    recorded before the final one so the history shows every status entered.
    """
    current = row["status"]
    entries: list[NewHistoryEntry] = []
    seen_statuses: set[str] = set(recorded_statuses)
    for position, event in enumerate(result.events or []):
        if isinstance(event.get("status"), str):
            seen_statuses.add(event["status"])
        key = upstream_event_key(event, position)
        if key in known_keys:
            continue
        known_keys.add(key)
        entries.append(NewHistoryEntry(_event_type(event), "upstream", key, upstream_event=event))

    outcome = TaskOutcome.from_row(row, entries=entries, changed=False)
    body = result.status_body
    if body is None:
        outcome.changed = bool(entries)
        return outcome, bool(entries)

    target = body.get("status")
    shapes = None
    if target in TASK_STATUSES:
        shapes = normalise_status(
            body,
            cost_estimate=outcome.cost_estimate,
            cost_actual=outcome.cost_actual,
            output=outcome.output,
            error=outcome.error,
        )
    if isinstance(target, str) and target not in TASK_STATUSES:
        key = f"status:{target}"
        if key not in known_keys:
            known_keys.add(key)
            entries.append(
                NewHistoryEntry("task.status_unknown", "upstream", key, current, target, body)
            )
    elif target in TASK_STATUSES and _LIFECYCLE_RANK[target] > _LIFECYCLE_RANK[current]:
        steps = [
            s
            for s in ("processing",)
            if s in seen_statuses and _LIFECYCLE_RANK[current] < _LIFECYCLE_RANK[s]
        ]
        previous = current
        for status in [*steps, target]:
            key = f"status:{status}"
            if key not in known_keys:
                known_keys.add(key)
                entry = NewHistoryEntry.status_change(previous, status, "upstream")
                if status == target and shapes is not None and shapes.irregular:
                    # Upstream's own words, verbatim, where the task object normalised them.
                    entry = NewHistoryEntry(
                        entry.type, entry.source, key, previous, status, dict(body)
                    )
                entries.append(entry)
            previous = status
        outcome.status = target

    if shapes is not None:
        outcome.cost_estimate = shapes.cost_estimate
        outcome.cost_actual = shapes.cost_actual
        outcome.output = shapes.output
        outcome.error = shapes.error
    outcome.changed = bool(entries) or (
        outcome.status,
        outcome.cost_estimate,
        outcome.cost_actual,
        outcome.output,
        outcome.error,
    ) != (row["status"], row["cost_estimate"], row["cost_actual"], row["output"], row["error"])
    return outcome, outcome.changed


def final_events_recorded(
    result: PollResult, status: str, recorded_statuses: Iterable[str] = ()
) -> bool:
    """Whether a terminal task's final events are in hand: upstream named the final status in
    an event (now or earlier), or served events that carry no statuses at all."""
    if status in set(recorded_statuses):
        return True
    if result.events is None:
        return False
    statuses = {e["status"] for e in result.events if isinstance(e.get("status"), str)}
    return not statuses or status in statuses
