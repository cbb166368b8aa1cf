"""The poller: claims due in-flight tasks, asks upstream, records what changed.

A pass takes tokens from the shared upstream budget, claims at most that many due tasks
with one statement (the lease is `next_poll_at`, owned by this process start), commits,
calls upstream outside any transaction, then writes every outcome of the batch in one
transaction that only touches rows still leased to us. Nothing about a task is kept in
memory between passes.

One request where one suffices: a poll reads the status; the events list is fetched only
when it can add something (the status moved, the task is terminal, or the events have not
been read for `EVENTS_REFRESH_MAX_INTERVALS` maximum poll intervals). A terminal task stays
due until its final events are recorded (retried with backoff, bounded by
`FINAL_EVENTS_RETRIES`). When to look next is `relay.polling.schedule`'s decision, from
the learned duration of the task's phase; what a poll adds to the task is
`relay.polling.diff`'s.

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

from relay.core import metrics, tracing
from relay.core.config import Settings, settings_subset
from relay.core.loops import Loop, new_owner_id
from relay.core.store import Store
from relay.core.vocabulary import TASK_STATUSES, TERMINAL_STATUSES
from relay.history.transitions import record_task_outcomes
from relay.polling.decisions import PollOutcomes, says_terminal
from relay.polling.diff import PollResult
from relay.polling.durations import DurationModel, record_phase_durations
from relay.polling.schedule import (
    QUEUED_TARGET_FACTOR,
    ScheduleSettings,
)
from relay.upstream.budget import UpstreamBudget
from relay.upstream.client import (
    UpstreamAuthError,
    UpstreamClient,
    UpstreamError,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamUnavailable,
)

log = structlog.get_logger(__name__)

# Claim no more than the rate ceiling lets us poll in this many seconds, so a batch
# finishes well inside its lease even when the budget is the bottleneck.
CLAIM_WINDOW_S = 5.0
# Events are read when the status moves and when the task ends: those reads hold every
# event upstream has (the list only grows). Progress events that change no status are read
# in between only in a phase longer than this many maximum poll intervals (5 min by
# default), so a long task's history shows its progress: a fixed minute cost ~4 reads per
# Kling task for events nobody is waiting for, and did not scale with the poll settings.
EVENTS_REFRESH_MAX_INTERVALS = 10.0
# A terminal task whose final events upstream does not serve is looked at again this many
# times (backoff from the minimum interval, doubling, capped at the maximum) before it is
# finished without them. Ten: with 40% of requests failing (a bad upstream day) a task
# still loses its final events only once in ~10,000 (0.4^11), within about three minutes.
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

    def schedule(self, status: str) -> ScheduleSettings:
        """The scheduler's knobs for a task in `status`: the queue is watched less closely
        (leaving it only means `task.processing`; the result is what callers wait for)."""
        target = self.poll_target_delay_s
        if status == "queued":
            target *= QUEUED_TARGET_FACTOR
        return ScheduleSettings(self.poll_interval_min_s, self.poll_interval_max_s, target)


class Poller(PollOutcomes, Loop):
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
            written_row = ours.get(plan.outcome.task_id)
            if plan.finished and written_row is not None:
                metrics.UPSTREAM_REQUESTS_PER_TASK.observe(written_row["upstream_requests"])
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
                if row["age_s"] >= self.settings.task_timeout_s and not says_terminal(result):
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

    def _events_wanted(self, row: Mapping[str, Any], body: Mapping[str, Any] | None) -> str | None:
        if body is None:
            return None  # the status read failed: look again soon, events with it
        if body.get("status") in TASK_STATUSES and body.get("status") != row["status"]:
            return "moved"
        # A new task's events hold nothing the submission did not say: count from its creation.
        fetched = row["events_fetched_at"] or row["created_at"]
        refresh_s = EVENTS_REFRESH_MAX_INTERVALS * self.settings.poll_interval_max_s
        if (datetime.now(UTC) - fetched).total_seconds() >= refresh_s:
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

    async def release(self) -> None:
        """Hand back leased tasks so another replica polls them at once."""
        await self.store.execute("release_task_leases", owner=self.owner)
