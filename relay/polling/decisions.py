"""What one poll's answer leads to: the outcome to write, what it teaches, the next look.

`PollOutcomes` is mixed into `Poller` (relay/poller.py), which does the I/O; everything
here is decided from the claimed row, upstream's answer and what has been learned:
the diff (relay/upstream_diff.py), the end of a task (terminal, or given up on by the
relay), the phase durations it teaches, and when to look again (relay/poll_schedule.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from relay.core import metrics
from relay.core.vocabulary import TERMINAL_STATUSES
from relay.history.transitions import NewHistoryEntry, TaskOutcome
from relay.polling.diff import PollResult, diff_task, final_events_recorded
from relay.polling.schedule import DurationKnowledge, next_poll, transition_estimate

if TYPE_CHECKING:
    from relay.polling.poller import PollerSettings

log = structlog.get_logger(__name__)

FINAL_EVENTS_RETRIES = 10


@dataclass
class _Plan:
    """What one poll leads to: the outcome to write and the durations it taught us."""

    outcome: TaskOutcome
    samples: list[dict[str, Any]]
    finished: bool = False


class PollOutcomes:
    """The poller's decisions about one polled task (no I/O)."""

    settings: PollerSettings

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
            settings=self.settings.schedule(outcome.status),
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


def says_terminal(result: PollResult) -> bool:
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
