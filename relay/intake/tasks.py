"""Tasks: validate, store durably, submit upstream, read back, cancel."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from relay.audit import action_log as actions
from relay.audit.action_log import Actor, record_action
from relay.core import metrics
from relay.core.egress import Network
from relay.core.errors import (
    Conflict,
    NotFound,
    ServiceUnavailable,
    UpstreamFailed,
)
from relay.core.ids import new_id
from relay.core.pagination import id_cursor, keyset_page
from relay.core.store import Store
from relay.core.vocabulary import TERMINAL_STATUSES
from relay.history.transitions import (
    NewHistoryEntry,
    TaskOutcome,
    record_history_note,
    record_task_outcomes,
)
from relay.identity.clients import Client
from relay.intake.catalog import ModelCatalog
from relay.intake.group_commit import OutcomeWriter
from relay.intake.validation import NewTask, TaskValidation
from relay.upstream.budget import UpstreamBudget
from relay.upstream.client import (
    UpstreamAuthError,
    UpstreamClient,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
    number_field,
)

log = structlog.get_logger(__name__)

# Resubmission backoff: doubles from 1 s, capped at a minute. The first accepted submission
# after an outage pulls every deferred one forward (`pull_deferred_submissions`), but only
# in a replica that deferred something; the cap bounds recovery everywhere else (a replica
# restarted meanwhile) to a minute, while the budget, not this delay, protects upstream.
RESUBMIT_BASE_S = 1.0
RESUBMIT_MAX_S = 60.0
# How long a submission may be in flight before the resubmitter assumes its caller died.
SUBMIT_LEASE_MARGIN_S = 15.0


def resubmit_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next submission attempt: exponential, jittered, Retry-After wins."""
    delay = min(RESUBMIT_BASE_S * 2 ** max(attempts - 1, 0), RESUBMIT_MAX_S)
    delay *= random.uniform(0.8, 1.2)
    return max(delay, retry_after or 0.0)


class TaskService(TaskValidation):
    """Every task operation the API and the background loops perform."""

    def __init__(
        self,
        store: Store,
        upstream: UpstreamClient,
        catalog: ModelCatalog,
        *,
        budget: UpstreamBudget,
        submit_lease_s: float,
        poll_interval_min_s: float,
        webhook_deny_cidrs: Sequence[Network] = (),
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.catalog = catalog
        self.budget = budget
        self.submit_lease_s = submit_lease_s
        self.poll_interval_min_s = poll_interval_min_s
        self.webhook_deny_cidrs = webhook_deny_cidrs
        self.outcomes = OutcomeWriter(store)
        # Set when this process deferred a submission: the next accepted one pulls every
        # deferred task forward, so recovery after an outage is paced by the budget, not
        # by backoff accumulated during it.
        self._deferred = False

    async def create_task(
        self,
        client: Client,
        task: NewTask,
        idempotency_key: str | None,
        *,
        request_id: str | None = None,
        traceparent: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a task and submit it upstream. Returns (task row, created).

        The action log records who created it (key prefix, `request_id`) in the same
        transaction; an idempotent replay creates nothing and records nothing.
        `traceparent` (W3C, validated) goes with every webhook of the task; it is not part
        of the request's identity, so a replay with another one is still a replay.
        """
        self.validate(task)
        task_id = new_id("tsk")
        request_hash = task.request_hash()
        actor = Actor.of(client, request_id)
        # One statement: the task, its idempotency key and the action log's entry commit
        # together (the action is recorded by the query, as `record_action` would).
        row = await self.store.fetchrow(
            "create_task",
            id=task_id,
            client_id=client.id,
            client_name=client.name,
            model=task.model,
            input=task.input,
            metadata=task.metadata,
            webhook_url=task.webhook_url,
            webhook_events=task.webhook_events,
            submit_lease_s=self.submit_lease_s,
            traceparent=traceparent,
            key=idempotency_key,
            request_hash=request_hash,
            actor=actor.name,
            actor_key_prefix=actor.key_prefix,
            request_id=actor.request_id,
            action=actions.TASK_CREATED,
            details={"model": task.model, "idempotency_key": idempotency_key},
        )
        if row is None:  # the key was claimed before: nothing was written
            return await self._replay(client, idempotency_key or "", request_hash), False
        metrics.TASKS_SUBMITTED.labels(task.model).inc()
        log.info("task_created", task_id=task_id, model=task.model, client=client.name)
        paused_for = self.upstream.paused_for
        if paused_for > 0:
            # Upstream asked this replica to wait: answer now, the resubmitter sends it later.
            metrics.SUBMISSIONS.labels("retry").inc()
            deferred = await self._retry_later(row, None, 1, paused_for, requests=0)
            return deferred or dict(row), True
        if not await self.budget.take(1, urgent=True):
            # The deployment's upstream budget is spent for this instant: never make the
            # caller wait for it. The task is durable; the resubmitter sends it when a token
            # is free (submissions go before polls).
            metrics.SUBMISSIONS.labels("deferred").inc()
            return await self._retry_later(
                row, None, 1, None, requests=0, upstream_failed=False
            ) or dict(row), True
        return await self.submit_upstream(row, owner=None) or dict(row), True

    async def _replay(self, client: Client, key: str, request_hash: str) -> dict[str, Any]:
        existing = await self.store.fetchrow("get_idempotency_key", client_id=client.id, key=key)
        if existing is None:  # purged between our insert and this read: vanishingly rare
            raise Conflict("idempotency key is being reused; retry", "idempotency-conflict")
        if existing["request_hash"] != request_hash:
            raise Conflict(
                "this Idempotency-Key was already used with a different request body",
                "idempotency-conflict",
            )
        row = await self.store.fetchrow("get_task", id=existing["task_id"], scope=client.id)
        assert row is not None
        return dict(row)

    async def submit_upstream(
        self, row: Mapping[str, Any], owner: str | None
    ) -> dict[str, Any] | None:
        """Send a stored task upstream (key = relay task id) and record the result.

        The caller has taken the request's token from the upstream budget. Transient
        failures schedule a retry; a definitive 4xx fails the task. Returns the updated
        row, or None when the row was not ours to write any more.
        """
        log_ = log.bind(task_id=row["id"])
        attempts = row["submit_attempts"]
        try:
            answer = await self.upstream.submit(row["id"], row["model"], row["input"], paid=True)
        except UpstreamRejected as exc:
            if exc.status == 409:
                # Upstream holds our key with another payload: it cannot be ours to fail;
                # keep retrying slowly and let an operator look.
                log_.error("upstream_idempotency_conflict", code=exc.code)
                return await self._retry_later(row, owner, attempts, None)
            metrics.SUBMISSIONS.labels("rejected").inc()
            log_.warning("upstream_rejected", status=exc.status, code=exc.code)
            outcome = TaskOutcome.from_row(
                row,
                status="failed",
                error=exc.as_task_error(),
                entries=[NewHistoryEntry.status_change(None, "failed", "relay")],
                requests=1,
            )
            return await self._record(outcome, owner)
        except (UpstreamUnavailable, UpstreamAuthError) as exc:
            metrics.SUBMISSIONS.labels("retry").inc()
            log_.warning("upstream_submit_deferred", reason=str(exc), attempts=attempts)
            retry_after = getattr(exc, "retry_after", None)
            return await self._retry_later(row, owner, attempts, retry_after)
        except UpstreamError as exc:
            metrics.SUBMISSIONS.labels("retry").inc()
            log_.warning("upstream_submit_malformed", reason=str(exc))
            return await self._retry_later(row, owner, attempts, None)
        metrics.SUBMISSIONS.labels("accepted").inc()
        status = answer.get("status")
        if status not in ("queued", "processing"):
            status = "queued"
        # Every task's history starts with task.queued, even when upstream's answer (say, a
        # replay of a submission whose first answer was lost) has already moved on.
        entries = [NewHistoryEntry.status_change(None, "queued", "upstream")]
        if status == "processing":
            entries.append(NewHistoryEntry.status_change("queued", "processing", "upstream"))
        accepted_at = datetime.now(UTC)
        outcome = TaskOutcome.from_row(
            row,
            status=status,
            upstream_task_id=answer["task_id"],
            upstream_request_id=answer.get("request_id"),
            cost_estimate=number_field(answer.get("cost_estimate")),
            entries=entries,
            poll_interval_s=self.poll_interval_min_s,
            poll_delay_s=self.poll_interval_min_s,
            phase_started_at=accepted_at,
            looked_at=accepted_at,
            requests=1,
        )
        log_.info("upstream_accepted", upstream_task_id=answer["task_id"])
        recorded = await self._record(outcome, owner)
        if self._deferred:
            self._deferred = False
            pulled = await self.store.execute("pull_deferred_submissions")
            log.info("deferred_submissions_pulled_forward", result=pulled)
        return recorded

    async def _record(self, outcome: TaskOutcome, owner: str | None) -> dict[str, Any] | None:
        if owner is None:  # the API's own write: shares a transaction with concurrent ones
            return await self.outcomes.record(outcome)
        async with self.store.transaction() as db:
            rows = await record_task_outcomes(db, owner, [outcome])
        return dict(rows[0]) if rows else None

    async def _retry_later(
        self,
        row: Mapping[str, Any],
        owner: str | None,
        attempts: int,
        retry_after: float | None,
        *,
        requests: int = 1,
        upstream_failed: bool = True,
    ) -> dict[str, Any] | None:
        self._deferred = self._deferred or upstream_failed
        delay = resubmit_delay(attempts, retry_after)
        found = await self.store.fetchrow(
            "schedule_resubmit", id=row["id"], owner=owner, delay_s=delay, requests=requests
        )
        if found is None:  # taken over meanwhile: answer with the task as it stands
            found = await self.store.fetchrow("get_task", id=row["id"], scope=None)
        return dict(found) if found else None

    async def get_task(self, client: Client, task_id: str) -> dict[str, Any]:
        """One task the client may see, or NotFound."""
        row = await self.store.fetchrow("get_task", id=task_id, scope=client.scope)
        if row is None:
            raise NotFound("task")
        return dict(row)

    async def list_tasks(
        self,
        client: Client,
        *,
        status: str | None,
        model: str | None,
        created_after: datetime | None,
        cursor: str | None,
        limit: int,
        created_before: datetime | None = None,
        client_name: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of tasks, newest first, and the cursor of the next page (or None).

        `client_name` narrows to one client's tasks, within what the caller may see.
        A cursor that is not a task id is a 422 at `/query/cursor`.
        """
        rows = await self.store.fetch(
            "list_tasks",
            scope=client.scope,
            status=status,
            model=model,
            created_after=created_after,
            created_before=created_before,
            client=client_name,
            cursor=id_cursor(cursor, "tsk"),
            limit=limit + 1,
        )
        return keyset_page(rows, limit)

    async def task_history(self, client: Client, task_id: str) -> list[dict[str, Any]]:
        """The task's audit history, oldest first."""
        await self.get_task(client, task_id)
        return [dict(r) for r in await self.store.fetch("task_history", task_id=task_id)]

    async def cancel_task(
        self, client: Client, task_id: str, *, request_id: str | None = None
    ) -> dict[str, Any]:
        """Ask upstream to cancel; the resulting status arrives through polling.

        Once upstream took the request, the action log and the task's own history (a
        `task.cancel_requested` entry) say who asked, in one transaction.
        """
        row = await self.get_task(client, task_id)
        if row["status"] in TERMINAL_STATUSES:
            raise Conflict(f"task is already {row['status']}", "task-terminal")
        if row["upstream_task_id"] is None:
            raise Conflict(
                "upstream has not accepted the task yet; cancel again once it has",
                "task-not-submitted",
            )
        try:
            await self.upstream.cancel(row["upstream_task_id"])
        except UpstreamRejected as exc:
            if exc.status == 409:
                await self.store.execute("poll_soon", id=task_id)
                raise Conflict(
                    "upstream reports the task already finished", "task-terminal"
                ) from None
            raise UpstreamFailed(f"upstream refused the cancellation: {exc.code}") from None
        except UpstreamError:
            raise ServiceUnavailable("upstream is unavailable; try again") from None
        async with self.store.transaction() as db:
            await db.execute("poll_soon", id=task_id)
            action_id = await record_action(
                db,
                Actor.of(client, request_id),
                actions.TASK_CANCEL_REQUESTED,
                "task",
                task_id,
                {"status": row["status"]},
            )
            # The action id makes the entry unique: every cancel request appears once.
            await record_history_note(
                db,
                task_id,
                NewHistoryEntry("task.cancel_requested", "relay", f"cancel:{action_id}"),
            )
        log.info("cancel_requested", task_id=task_id)
        return row
