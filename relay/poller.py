"""The poller: claims due in-flight tasks, asks upstream, records what changed.

A pass claims a batch with one statement (the lease is `next_poll_at`, owned by this
process start), commits, calls upstream outside any transaction, then writes every
outcome of the batch in one transaction that only touches rows still leased to us.
Nothing about a task is kept in memory between passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from relay import metrics
from relay.config import Settings, settings_subset
from relay.loops import Loop, new_owner_id
from relay.outcomes import NewHistoryEntry, TaskOutcome, record_task_outcomes
from relay.store import Store
from relay.upstream.client import (
    UpstreamAuthError,
    UpstreamClient,
    UpstreamError,
    UpstreamMalformed,
    UpstreamUnavailable,
    number_field,
)
from relay.vocabulary import TASK_STATUSES, TERMINAL_STATUSES

log = structlog.get_logger(__name__)

# Each poll costs two upstream requests (status + events).
REQUESTS_PER_POLL = 2
# Claim no more than the rate ceiling lets us poll in this many seconds, so a batch
# finishes well inside its lease even when the limiter is the bottleneck.
CLAIM_WINDOW_S = 5.0
# While nothing changes, each poll waits this much longer than the last (up to the max).
BACKOFF_FACTOR = 1.5
# ±20% jitter keeps tasks created together from polling in lockstep.
JITTER = 0.2
# Batches in flight at once per replica: while one batch waits on upstream, another is
# being claimed or written, so neither the database nor upstream sits idle.
POLL_LANES = 4
_LIFECYCLE_RANK = {"queued": 0, "processing": 1, "succeeded": 2, "failed": 2, "cancelled": 2}
_TYPE_CHARS = re.compile(r"[^a-z0-9_.]+")


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


def _jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass
class PollResult:
    """What upstream said about one task (either part may be missing after an error)."""

    status_body: dict[str, Any] | None
    events: list[dict[str, Any]] | None
    retry_after: float | None = None
    failure: str | None = None


def diff_task(
    row: Mapping[str, Any], result: PollResult, known_keys: set[str]
) -> tuple[TaskOutcome, bool]:
    """Compare upstream's view with the stored task: the outcome and whether anything changed.

    Upstream events are recorded once each (by key). Status changes come from the status
    endpoint; a status seen only in the events (an intermediate step the status endpoint
    skipped) is recorded before the final one so the history shows every status entered.
    """
    current = row["status"]
    entries: list[NewHistoryEntry] = []
    seen_statuses: set[str] = set()
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
                entries.append(NewHistoryEntry.status_change(previous, status, "upstream"))
            previous = status
        outcome.status = target

    if target in TASK_STATUSES:
        outcome.cost_estimate = number_field(body.get("cost_estimate"), outcome.cost_estimate)
        outcome.cost_actual = number_field(body.get("cost_actual"), outcome.cost_actual)
        if isinstance(body.get("output"), dict):
            outcome.output = body["output"]
        if isinstance(body.get("error"), dict):
            outcome.error = body["error"]
    outcome.changed = bool(entries) or (
        outcome.status,
        outcome.cost_estimate,
        outcome.cost_actual,
        outcome.output,
        outcome.error,
    ) != (row["status"], row["cost_estimate"], row["cost_actual"], row["output"], row["error"])
    return outcome, outcome.changed


@dataclass(frozen=True)
class PollerSettings:
    """The settings the poller reads (named as in `Settings`)."""

    poll_interval_min_s: float
    poll_interval_max_s: float
    poll_batch_size: int
    poll_concurrency: int
    poll_lease_s: float
    upstream_max_rps: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PollerSettings:
        """Pick this loop's values out of the process settings."""
        return settings_subset(cls, settings)


class Poller(Loop):
    """Keeps every in-flight task's status, history and outbox up to date."""

    name = "poller"
    lanes = POLL_LANES

    def __init__(self, store: Store, upstream: UpstreamClient, settings: PollerSettings) -> None:
        super().__init__(idle_s=min(settings.poll_interval_min_s, 1.0))
        self.store = store
        self.upstream = upstream
        self.settings = settings
        self.owner = new_owner_id("poller")
        rate_bound = int(settings.upstream_max_rps * CLAIM_WINDOW_S / REQUESTS_PER_POLL)
        self.batch_size = max(1, min(settings.poll_batch_size, rate_bound // POLL_LANES))
        self._concurrency = asyncio.Semaphore(settings.poll_concurrency)

    async def run_pass(self) -> int:
        """Claim one batch of due tasks, poll them, write the outcomes in one transaction."""
        rows = await self.store.fetch(
            "claim_due_polls",
            owner=self.owner,
            batch_size=self.batch_size,
            lease_s=self.settings.poll_lease_s,
        )
        if not rows:
            return 0
        for row in rows:
            metrics.POLL_DUE_LAG.observe(max(row["due_lag_s"], 0.0))
        results = await asyncio.gather(*(self._poll(row) for row in rows))
        keys: dict[str, set[str]] = {row["id"]: set() for row in rows}
        for record in await self.store.fetch("history_keys", task_ids=list(keys)):
            keys[record["task_id"]].add(record["dedupe_key"])
        outcomes = [
            self._next_poll(row, result, keys[row["id"]])
            for row, result in zip(rows, results, strict=True)
        ]
        async with self.store.transaction() as db:
            written = await record_task_outcomes(db, self.owner, outcomes)
        if len(written) < len(outcomes):
            log.warning("poll_leases_lost", lost=len(outcomes) - len(written))
        return len(rows)

    async def _poll(self, row: Mapping[str, Any]) -> PollResult:
        upstream_id = row["upstream_task_id"]
        async with self._concurrency:
            status, events = await asyncio.gather(
                self.upstream.get_task(upstream_id),
                self.upstream.get_events(upstream_id),
                return_exceptions=True,
            )
        result = PollResult(
            status if isinstance(status, dict) else None,
            events if isinstance(events, list) else None,
        )
        for part in (status, events):
            if isinstance(part, BaseException):
                result.failure = type(part).__name__
                if isinstance(part, UpstreamUnavailable) and part.retry_after:
                    result.retry_after = max(result.retry_after or 0.0, part.retry_after)
                if isinstance(part, UpstreamMalformed):
                    log.warning("upstream_malformed", task_id=row["id"], error=str(part))
                elif isinstance(part, UpstreamAuthError):
                    pass  # logged by the client, once per answer, naming the key problem
                elif not isinstance(part, UpstreamError):
                    log.error("poll_failed", task_id=row["id"], error=repr(part))
        return result

    def _next_poll(
        self, row: Mapping[str, Any], result: PollResult, known_keys: set[str]
    ) -> TaskOutcome:
        outcome, changed = diff_task(row, result, known_keys)
        settings = self.settings
        if outcome.status in TERMINAL_STATUSES:
            outcome.poll_interval_s, outcome.poll_delay_s = None, None
            metrics.POLLS.labels("terminal").inc()
            log.info("task_polled", task_id=row["id"], outcome="terminal", status=outcome.status)
            return outcome
        if changed:
            interval = settings.poll_interval_min_s
        else:
            previous = row["poll_interval_s"] or settings.poll_interval_min_s
            interval = min(previous * BACKOFF_FACTOR, settings.poll_interval_max_s)
        outcome.poll_interval_s = interval
        outcome.poll_delay_s = max(_jittered(interval), result.retry_after or 0.0)
        outcome_label = "error" if result.failure else ("changed" if changed else "unchanged")
        metrics.POLLS.labels(outcome_label).inc()
        # Every poll is logged; the unchanged majority at debug so info stays readable.
        (log.debug if outcome_label == "unchanged" else log.info)(
            "task_polled",
            task_id=row["id"],
            outcome=outcome_label,
            status=outcome.status,
            new_entries=len(outcome.entries),
            next_poll_in_s=round(outcome.poll_delay_s, 3),
            error=result.failure,
        )
        return outcome

    async def release(self) -> None:
        """Hand back leased tasks so another replica polls them at once."""
        await self.store.execute("release_task_leases", owner=self.owner)
