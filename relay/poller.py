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
`relay.poll_schedule`'s decision, from the learned duration of the task's phase; what a poll
adds to the task is `relay.upstream_diff`'s.

Two ends come from the relay itself: a task upstream has answered 404 for since
`RELAY_UPSTREAM_NOT_FOUND_AFTER_S` fails with `upstream_not_found`, and a task not terminal
after `RELAY_TASK_TIMEOUT_S` is asked to cancel upstream and fails with `timed_out`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from relay import metrics, tracing
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
    UpstreamRejected,
    UpstreamUnavailable,
)
from relay.upstream_diff import PollResult, diff_task, final_events_recorded
from relay.vocabulary import TASK_STATUSES, TERMINAL_STATUSES

log = structlog.get_logger(__name__)

# Claim no more than the rate ceiling lets us poll in this many seconds, so a batch
# finishes well inside its lease even when the budget is the bottleneck.
CLAIM_WINDOW_S = 5.0
# Events that change no status (progress) are read at least this often; everything else
# about them is read when the status moves or the task ends.
EVENTS_REFRESH_S = 60.0
# A terminal task whose final events upstream does not serve is looked at again this many
# times (backoff from the minimum interval, doubling, capped at the maximum) before it is
# finished without them. Ten: with 40% of requests failing (a bad upstream day) a task
# still loses its final events only once in ~10,000 (0.4^11), within about three minutes.
FINAL_EVENTS_RETRIES = 10
# Idle lanes wake at least this often (a task submitted by another replica is due soon).
IDLE_MAX_S = 1.0
# ...and never sooner than this after finding nothing due.
IDLE_MIN_S = 0.005
# Batches in flight at once per replica: while one batch waits on upstream, another is
# being claimed or written, so neither the database nor upstream sits idle.
POLL_LANES = 4


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
    upstream_not_found_after_s: float
    task_timeout_s: float

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

    @tracing.poll_pass
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
                    result.not_found = isinstance(exc, UpstreamRejected) and exc.status == 404
                    self._note_failure(row, result, exc)
                if row["age_s"] >= self.settings.task_timeout_s and not _says_terminal(result):
                    await self._cancel_timed_out(row, result)
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
        elif isinstance(exc, UpstreamRejected):
            log.warning(
                "upstream_poll_rejected",
                task_id=row["id"],
                status=exc.status,
                code=exc.code,
                missing_for_s=row["missing_for_s"],
            )
        elif not isinstance(exc, UpstreamError):
            log.error("poll_failed", task_id=row["id"], error=repr(exc))

    async def _cancel_timed_out(self, row: Mapping[str, Any], result: PollResult) -> None:
        """Best effort: upstream may still be working on a task the relay gives up on."""
        result.timed_out = True
        result.requests += 1
        try:
            await self.upstream.cancel(row["upstream_task_id"])
        except UpstreamError as exc:
            log.warning("timed_out_cancel_failed", task_id=row["id"], error=str(exc))
        log.warning("task_timed_out", task_id=row["id"], age_s=round(row["age_s"]))

    def _plan(
        self,
        row: Mapping[str, Any],
        result: PollResult,
        known_keys: set[str],
        recorded_statuses: set[str],
        knowledge: DurationKnowledge,
    ) -> _Plan:
        given_up = self._given_up(row, result)
        if given_up is not None:
            return self._fail_by_relay(row, result, known_keys, recorded_statuses, *given_up)
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
        outcome.upstream_missing = _missing(result)
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
            interval = self._events_backoff(retries)
            outcome.poll_interval_s, outcome.poll_delay_s = row["poll_interval_s"], interval
            metrics.POLLS.labels("error").inc()
            log.info("task_polled", task_id=row["id"], outcome="final_events_missing")
            return plan
        self._schedule(row, result, outcome, changed, knowledge)
        return plan

    def _given_up(self, row: Mapping[str, Any], result: PollResult) -> tuple[str, str] | None:
        """Why the relay ends this task itself (error code, message), or None."""
        if result.timed_out:
            hours = self.settings.task_timeout_s / 3600
            return (
                "timed_out",
                f"the task was not finished after {hours:g} h (RELAY_TASK_TIMEOUT_S)",
            )
        missing_for = row["missing_for_s"]
        after = self.settings.upstream_not_found_after_s
        if result.not_found and missing_for is not None and missing_for >= after:
            return (
                "upstream_not_found",
                f"upstream has answered 404 for this task for {missing_for:.0f} s"
                " (RELAY_UPSTREAM_NOT_FOUND_AFTER_S)",
            )
        return None

    def _fail_by_relay(
        self,
        row: Mapping[str, Any],
        result: PollResult,
        known_keys: set[str],
        recorded_statuses: set[str],
        code: str,
        message: str,
    ) -> _Plan:
        """The task fails on the relay's word: its events so far, then task.failed (relay)."""
        result.status_body = None
        outcome, _ = diff_task(row, result, known_keys, recorded_statuses=recorded_statuses)
        outcome.status = "failed"
        outcome.error = {"code": code, "message": message}
        outcome.entries.append(NewHistoryEntry.status_change(row["status"], "failed", "relay"))
        outcome.changed = True
        outcome.requests = result.requests
        outcome.events_fetched = result.events is not None
        outcome.upstream_missing = _missing(result)
        outcome.poll_interval_s, outcome.poll_delay_s = None, None
        metrics.POLLS.labels("terminal").inc()
        log.warning("task_failed_by_relay", task_id=row["id"], code=code)
        return _Plan(outcome, [], finished=True)

    def _events_backoff(self, retries: int) -> float:
        """The wait before the next look for missing final events."""
        interval = self.settings.poll_interval_min_s * 2 ** min(retries, 30)
        return min(interval, self.settings.poll_interval_max_s)

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
                interval = self._events_backoff(retries)
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


def _says_terminal(result: PollResult) -> bool:
    body = result.status_body
    return body is not None and body.get("status") in TERMINAL_STATUSES


def _missing(result: PollResult) -> bool | None:
    """Whether upstream knows the task: False after a read status, True after a 404."""
    if result.looked_at is not None:
        return False
    return True if result.not_found else None


# Status moves whose old phase length is known exactly from two planned looks.
_ONE_STEP = frozenset(
    {("queued", "processing"), ("processing", "succeeded"), ("processing", "failed")}
)
