"""Keeps submitting tasks upstream has not accepted yet, with the same Idempotency-Key."""

from __future__ import annotations

import asyncio
import time

import structlog

from relay.core.loops import Loop, new_owner_id
from relay.core.store import Store
from relay.intake.tasks import SUBMIT_LEASE_MARGIN_S, TaskService
from relay.upstream.budget import UpstreamBudget

log = structlog.get_logger(__name__)

# A small batch: resubmission only matters while upstream recovers from an outage.
RESUBMIT_BATCH = 50
# Expired idempotency keys are swept this often per replica: the delete is one indexed
# range scan, and keys are kept a day longer than promised anyway, so hourly is plenty.
PURGE_INTERVAL_S = 3600.0


class Resubmitter(Loop):
    """Claims tasks whose submission is due (first try failed, or its caller died)."""

    name = "resubmitter"

    def __init__(
        self,
        store: Store,
        tasks: TaskService,
        budget: UpstreamBudget,
        *,
        upstream_timeout_s: float,
        idle_s: float = 1.0,
    ) -> None:
        super().__init__(idle_s)
        self.store = store
        self.tasks = tasks
        self.budget = budget
        self.owner = new_owner_id("resubmitter")
        self.lease_s = upstream_timeout_s + SUBMIT_LEASE_MARGIN_S
        self._next_purge = 0.0

    async def run_pass(self) -> int:
        """Claim due submissions and send each upstream again (and sweep expired keys)."""
        await self._purge_idempotency_keys()
        due = await self.store.fetchval("count_due_submissions", limit=RESUBMIT_BATCH)
        if not due:
            return 0
        # Submissions are urgent: they take tokens before polls do, one per task claimed.
        paid = await self.budget.take(due, urgent=True)
        rows = await self.store.fetch(
            "claim_due_submissions",
            owner=self.owner,
            batch_size=paid,
            lease_s=self.lease_s,
        )
        await self.budget.give_back(paid - len(rows))
        if rows:
            await asyncio.gather(*(self._submit(row) for row in rows))
        return len(rows)

    async def _purge_idempotency_keys(self) -> None:
        now = time.monotonic()
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_INTERVAL_S
        status = await self.store.execute("purge_idempotency_keys")
        log.info("idempotency_keys_purged", result=status)

    async def _submit(self, row: object) -> None:
        try:
            await self.tasks.submit_upstream(row, owner=self.owner)  # type: ignore[arg-type]
        except Exception:
            # The lease expires and the task is tried again; never lose it, never crash.
            log.exception("resubmit_failed", task_id=row["id"])  # type: ignore[index]

    async def release(self) -> None:
        """Hand back claimed submissions."""
        await self.store.execute("release_task_leases", owner=self.owner)
