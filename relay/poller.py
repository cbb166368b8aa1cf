"""The poller: claims due in-flight tasks, asks upstream, records what changed.

A pass takes tokens from the shared upstream budget, claims at most that many due tasks
with one statement (the lease is `next_poll_at`, owned by this process start), commits,
calls upstream outside any transaction, then writes every outcome of the batch in one
transaction that only touches rows still leased to us. Nothing about a task is kept in
memory between passes.

One request where one suffices: a poll reads the status; the events list is fetched only
when it can add something (the status moved, the task is terminal, or the events have not
been read for `EVENTS_REFRESH_S`). A terminal task stays due until its final events are
recorded (retried with backoff, bounded by `FINAL_EVENTS_RETRIES`). When to look next is
`relay.poll_schedule`'s decision, from the learned duration of the task's phase.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from relay import metrics
from relay.budget import UpstreamBudget
from relay.config import Settings, settings_subset
from relay.durations import DurationModel, record_phase_durations
from relay.loops import Loop, new_owner_id
from relay.outcomes import NewHistoryEntry, TaskOutcome, record_task_outcomes
from relay.poll_schedule import (
    DurationKnowledge,
    ScheduleSettings,
    next_poll,
    transition_estimate,
)
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

# Claim no more than the rate ceiling lets us poll in this many seconds, so a batch
# finishes well inside its lease even when the budget is the bottleneck.
CLAIM_WINDOW_S = 5.0
# Events that change no status (progress) are read at least this often; everything else
# about them is read when the status moves or the task ends.
EVENTS_REFRESH_S = 60.0
# A terminal task whose final events upstream does not serve is looked at again this many
# times (backoff from the minimum interval, doubling) before it is finished without them.
FINAL_EVENTS_RETRIES = 6
# Idle lanes wake at least this often (a task submitted by another replica is due soon).
IDLE_MAX_S = 1.0
# ...and never sooner than this after finding nothing due.
IDLE_MIN_S = 0.005
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


@dataclass(frozen=True)
class PollerSettings:
    """The settings the poller reads (named as in `Settings`)."""

    poll_interval_min_s: float
    poll_interval_max_s: float
    poll_target_delay_s: float
    poll_batch_size: int
    poll_concurrency: int
    poll_lease_s: float
    upstream_max_rps: float

    @classmethod
    def from_settings(cls, settings: Settings) -> PollerSettings:
        """Pick this loop's values out of the process settings."""
        return settings_subset(cls, settings)

    @property
    def schedule(self) -> ScheduleSettings:
        """The scheduler's knobs."""
        return ScheduleSettings(
            self.poll_interval_min_s, self.poll_interval_max_s, self.poll_target_delay_s
        )


@dataclass
class _Plan:
    """What one poll leads to: the outcome to write and the durations it taught us."""

    outcome: TaskOutcome
    samples: list[dict[str, Any]]
    finished: bool = False


class Poller(Loop):
    """Keeps every in-flight task's status, history and outbox up to date."""

    name = "poller"
    lanes = POLL_LANES

    def __init__(
        self,
        store: Store,
        upstream: UpstreamClient,
        settings: PollerSettings,
        *,
        budget: UpstreamBudget,
        durations: DurationModel,
    ) -> None:
        super().__init__(idle_s=min(settings.poll_interval_min_s, IDLE_MAX_S))
        self.store = store
        self.upstream = upstream
        self.settings = settings
        self.budget = budget
        self.durations = durations
        self.owner = new_owner_id("poller")
        rate_bound = int(settings.upstream_max_rps * CLAIM_WINDOW_S)
        self.batch_size = max(1, min(settings.poll_batch_size, rate_bound // POLL_LANES))
        self._concurrency = asyncio.Semaphore(settings.poll_concurrency)
        self._starved = False

    async def run_pass(self) -> int:
        """Pay for a batch, claim that many due tasks, poll them, write the outcomes."""
        paid = await self.budget.take(self.batch_size, urgent=False)
        self._starved = paid == 0
        if not paid:
            return 0
        rows = await self.store.fetch(
            "claim_due_polls",
            owner=self.owner,
            batch_size=paid,
            lease_s=self.settings.poll_lease_s,
        )
        await self.budget.give_back(paid - len(rows))
        if not rows:
            return 0
        for row in rows:
            metrics.POLL_DUE_LAG.observe(max(row["due_lag_s"], 0.0))
        knowledge = await self.durations.current()
        results = await asyncio.gather(*(self._poll(row) for row in rows))
        keys: dict[str, set[str]] = {row["id"]: set() for row in rows}
        statuses: dict[str, set[str]] = {row["id"]: set() for row in rows}
        for record in await self.store.fetch("history_keys", task_ids=list(keys)):
            keys[record["task_id"]].add(record["dedupe_key"])
            if record["event_status"]:
                statuses[record["task_id"]].add(record["event_status"])
        plans = [
            self._plan(row, result, keys[row["id"]], statuses[row["id"]], knowledge)
            for row, result in zip(rows, results, strict=True)
        ]
        async with self.store.transaction() as db:
            written = await record_task_outcomes(db, self.owner, [p.outcome for p in plans])
            ours = {row["id"]: row for row in written}
            await record_phase_durations(
                db, [s for p in plans if p.outcome.task_id in ours for s in p.samples]
            )
        if len(written) < len(plans):
            log.warning("poll_leases_lost", lost=len(plans) - len(written))
        for plan in plans:
            row = ours.get(plan.outcome.task_id)
            if plan.finished and row is not None:
                metrics.UPSTREAM_REQUESTS_PER_TASK.observe(row["upstream_requests"])
        return len(rows)

    async def idle_for(self) -> float:
        """Nothing was claimed: sleep until the earliest planned poll (or budget) is due."""
        if self._starved:
            # The budget left nothing above the reserve: come back when the bucket should
            # hold a token more than that (asking sooner only queues on the budget row).
            refill = (self.budget.reserve + 1.0) / self.settings.upstream_max_rps
            return min(max(refill, IDLE_MIN_S), IDLE_MAX_S)
        due_in = await self.store.fetchval("next_poll_due_in")
        if due_in is None:
            return self.idle_s
        return min(max(due_in, IDLE_MIN_S), self.idle_s)

    async def _poll(self, row: Mapping[str, Any]) -> PollResult:
        """Read the status (the claim paid for it), then the events when they can add something."""
        upstream_id = row["upstream_task_id"]
        result = PollResult(None, None)
        # A terminal task is only due while its final events are missing: events alone.
        finished = row["status"] in TERMINAL_STATUSES
        async with self._concurrency:
            if not finished:
                result.requests += 1
                try:
                    result.status_body = await self.upstream.get_task(upstream_id, paid=True)
                    result.looked_at = datetime.now(UTC)
                except Exception as exc:
                    self._note_failure(row, result, exc)
            wanted = "final" if finished else self._events_wanted(row, result.status_body)
            if wanted == "background" and not await self.budget.take(1, urgent=False):
                wanted = None  # the budget is better spent on polls now; read them later
            if wanted is not None:
                result.requests += 1
                try:
                    # A moved status waits for its token (behind submissions and cancels);
                    # the others are paid for already.
                    result.events = await self.upstream.get_events(
                        upstream_id, paid=wanted != "moved", urgent=False
                    )
                except Exception as exc:
                    result.events_failed = True
                    self._note_failure(row, result, exc)
        return result

    @staticmethod
    def _events_wanted(row: Mapping[str, Any], body: Mapping[str, Any] | None) -> str | None:
        if body is None:
            return None  # the status read failed: look again soon, events with it
        if body.get("status") in TASK_STATUSES and body.get("status") != row["status"]:
            return "moved"
        # A new task's events hold nothing the submission did not say: count from its creation.
        fetched = row["events_fetched_at"] or row["created_at"]
        if (datetime.now(UTC) - fetched).total_seconds() >= EVENTS_REFRESH_S:
            return "background"
        return None

    @staticmethod
    def _note_failure(row: Mapping[str, Any], result: PollResult, exc: BaseException) -> None:
        result.failure = type(exc).__name__
        if isinstance(exc, UpstreamUnavailable) and exc.retry_after:
            result.retry_after = max(result.retry_after or 0.0, exc.retry_after)
        if isinstance(exc, UpstreamMalformed):
            log.warning("upstream_malformed", task_id=row["id"], error=str(exc))
        elif isinstance(exc, UpstreamAuthError):
            pass  # logged by the client, once per answer, naming the key problem
        elif not isinstance(exc, UpstreamError):
            log.error("poll_failed", task_id=row["id"], error=repr(exc))

    def _plan(
        self,
        row: Mapping[str, Any],
        result: PollResult,
        known_keys: set[str],
        recorded_statuses: set[str],
        knowledge: DurationKnowledge,
    ) -> _Plan:
        body = result.status_body
        retries = row["events_retries"]
        target = body.get("status") if body else None
        if (
            target in TERMINAL_STATUSES
            and row["status"] == "queued"
            and result.events is None
            and "processing" not in recorded_statuses
            and retries < FINAL_EVENTS_RETRIES
        ):
            # Upstream says it ended but its events (which would show whether it went
            # through processing) did not come: look again shortly rather than record a
            # history that skips a status.
            result.status_body = None
        outcome, changed = diff_task(row, result, known_keys, recorded_statuses=recorded_statuses)
        outcome.requests = result.requests
        outcome.events_fetched = result.events is not None
        if result.status_body is not None:
            outcome.looked_at = result.looked_at
        plan = _Plan(outcome, [])
        if outcome.status != row["status"]:
            plan.samples = self._learn(row, outcome, recorded_statuses)
        if outcome.status in TERMINAL_STATUSES:
            self._finish(row, result, outcome, plan, recorded_statuses)
            return plan
        if target in TERMINAL_STATUSES and result.status_body is None:
            outcome.events_retries = retries + 1
            interval = self.settings.poll_interval_min_s * 2**retries
            outcome.poll_interval_s, outcome.poll_delay_s = row["poll_interval_s"], interval
            metrics.POLLS.labels("error").inc()
            log.info("task_polled", task_id=row["id"], outcome="final_events_missing")
            return plan
        self._schedule(row, result, outcome, changed, knowledge)
        return plan

    def _learn(
        self, row: Mapping[str, Any], outcome: TaskOutcome, recorded_statuses: set[str]
    ) -> list[dict[str, Any]]:
        """The moved task's new phase start, and its old phase's length when it is known."""
        seen = outcome.looked_at or datetime.now(UTC)
        last = row["last_polled_at"]
        outcome.phase_started_at = seen if last is None else transition_estimate(last, seen)
        if last is not None:
            window = max((seen - last).total_seconds(), 0.0)
            metrics.DETECTION_WINDOW.labels(outcome.status).observe(window)
        started = row["phase_started_at"]
        one_step = (row["status"], outcome.status) in _ONE_STEP
        if started is None or not one_step:
            return []
        seconds = (outcome.phase_started_at - started).total_seconds()
        if seconds < 0:
            return []
        return [
            {
                "model": row["model"],
                "input_class": row["input_class"],
                "phase": row["status"],
                "seconds": seconds,
            }
        ]

    def _finish(
        self,
        row: Mapping[str, Any],
        result: PollResult,
        outcome: TaskOutcome,
        plan: _Plan,
        recorded_statuses: set[str],
    ) -> None:
        retries = row["events_retries"]
        if not final_events_recorded(result, outcome.status, recorded_statuses):
            if retries < FINAL_EVENTS_RETRIES:
                # The status change (and its webhook) is recorded now; polling stops only
                # once upstream has served the final events too.
                outcome.events_retries = retries + 1
                interval = self.settings.poll_interval_min_s * 2**retries
                outcome.poll_interval_s = interval
                outcome.poll_delay_s = max(interval, result.retry_after or 0.0)
                metrics.POLLS.labels("final_events_missing").inc()
                log.info("task_polled", task_id=row["id"], outcome="final_events_missing")
                return
            outcome.entries.append(
                NewHistoryEntry("task.events_unavailable", "relay", "events_unavailable")
            )
            log.warning("upstream_final_events_unavailable", task_id=row["id"], tries=retries)
        outcome.poll_interval_s, outcome.poll_delay_s = None, None
        plan.finished = True
        metrics.POLLS.labels("terminal").inc()
        log.info("task_polled", task_id=row["id"], outcome="terminal", status=outcome.status)

    def _schedule(
        self,
        row: Mapping[str, Any],
        result: PollResult,
        outcome: TaskOutcome,
        changed: bool,
        knowledge: DurationKnowledge,
    ) -> None:
        started = outcome.phase_started_at or row["phase_started_at"]
        distribution = None
        elapsed = 0.0
        if started is not None:
            distribution = knowledge.lookup(row["model"], row["input_class"], outcome.status)
            elapsed = max((datetime.now(UTC) - started).total_seconds(), 0.0)
        decision = next_poll(
            distribution,
            elapsed_s=elapsed,
            changed=changed,
            previous_interval_s=row["poll_interval_s"],
            settings=self.settings.schedule,
        )
        outcome.poll_interval_s = decision.interval_s
        outcome.poll_delay_s = max(decision.delay_s, result.retry_after or 0.0)
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
            schedule=decision.reason,
            requests=result.requests,
            error=result.failure,
        )

    async def release(self) -> None:
        """Hand back leased tasks so another replica polls them at once."""
        await self.store.execute("release_task_leases", owner=self.owner)


# Status moves whose old phase length is known exactly from two planned looks.
_ONE_STEP = frozenset(
    {("queued", "processing"), ("processing", "succeeded"), ("processing", "failed")}
)
