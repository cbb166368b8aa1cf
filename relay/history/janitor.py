"""The janitor: partitions ahead of time, retention once a day, audit checkpoints.

Runs in every process with the poller role; each step takes a transaction-level advisory
lock, so while one replica does it the others skip it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import structlog

from relay.core import metrics
from relay.core.loops import Loop
from relay.core.store import JANITOR_LOCK_KEY, Store
from relay.history import chain as audit
from relay.history import retention

log = structlog.get_logger(__name__)

# Retention runs this often (the issue: daily).
PRUNE_EVERY = timedelta(days=1)
# A checkpoint covers entries created this long ago or earlier: an entry is timed before
# its transaction commits, and one still in flight must not appear in a later recount of
# the same instant when the checkpoint did not see it.
CHECKPOINT_SETTLE = timedelta(seconds=120)


class Janitor(Loop):
    """Creates future partitions, prunes by retention daily, publishes audit checkpoints."""

    name = "janitor"

    def __init__(
        self, store: Store, *, retention_days: int | None, checkpoint_interval_s: float
    ) -> None:
        super().__init__(idle_s=checkpoint_interval_s)
        self.store = store
        self.retention_days = retention_days
        self._last_prune: datetime | None = None

    async def run_pass(self) -> int:
        """One round: partitions, retention when due, a checkpoint. Always idles after."""
        now = datetime.now(UTC)
        async with self.store.transaction() as db:
            if not await db.fetchval("try_janitor_lock", lock_key=JANITOR_LOCK_KEY):
                return 0  # another replica is at it
            created = await retention.ensure_partitions(db, now.date())
        if created:
            log.info("history_partitions_created", count=created)
        if self.retention_days and (
            self._last_prune is None or now - self._last_prune >= PRUNE_EVERY
        ):
            await self.prune(now)
            self._last_prune = now
        await self.publish_checkpoint(now - CHECKPOINT_SETTLE)
        return 0

    async def prune(self, now: datetime) -> list[retention.MonthPlan]:
        """Drop every month retention allows, each in its own short transaction."""
        assert self.retention_days
        plans = await retention.plan_prune(self.store, self.retention_days, now)
        for plan in plans:
            if not plan.droppable:
                log.info("history_month_kept", month=plan.month.isoformat(), why=plan.reason_kept)
                continue
            async with self.store.transaction() as db:
                if not await db.fetchval("try_janitor_lock", lock_key=JANITOR_LOCK_KEY):
                    return plans
                await retention.drop_month(db, plan)
        return plans

    async def publish_checkpoint(self, at: datetime) -> audit.Checkpoint | None:
        """Digest the chain heads as of `at`; log it and expose it as a metric."""
        async with self.store.transaction() as db:
            if not await db.fetchval("try_janitor_lock", lock_key=JANITOR_LOCK_KEY):
                return None
            checkpoint = await audit.take_checkpoint(db, audit.shown_time(at))
        publish_checkpoint(checkpoint)
        return checkpoint


def publish_checkpoint(checkpoint: audit.Checkpoint) -> None:
    """Outside the tables it protects: one log line (the JSON `verify` accepts) and a metric."""
    body = checkpoint.as_json()
    log.info("audit_checkpoint", checkpoint=json.dumps(body, separators=(",", ":")), **body)
    metrics.AUDIT_CHECKPOINT.clear()
    metrics.AUDIT_CHECKPOINT.labels(body["at"], checkpoint.digest).set(checkpoint.heads)
    metrics.AUDIT_CHECKPOINT_TIME.set(checkpoint.at.timestamp())
