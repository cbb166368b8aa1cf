"""Group commit for the API: the outcomes of concurrent requests written in shared transactions.

A submission ends by recording what upstream answered (`record_task_outcomes`: the task
row, `task.queued` in its history, the outbox event and its deliveries). Written one
request at a time, that is a transaction of about seven round trips and one WAL flush per
submission, and at high concurrency the requests queue behind each other's commits.

`OutcomeWriter` lets them share: a caller hands its outcome over and waits; one writer at a
time takes everything handed over meanwhile and writes it with one `record_task_outcomes`
call in one transaction. Nothing waits for a batch to fill: an idle relay writes a single
outcome at once, and under load a batch is whatever arrived while the previous one was
being written (the leader/follower group commit of databases, done one level up). Each
caller still gets its own row back, and its answer is sent only after its write committed.

Only unleased writes (owner None: the API's own) go through here; the loops already write
in batches of their own under their lease.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from relay.core import metrics
from relay.core.store import Store, database_unavailable
from relay.history.transitions import TaskOutcome, record_task_outcomes

log = structlog.get_logger(__name__)

# The most outcomes one transaction writes: large enough that a burst of submissions shares
# a handful of commits, small enough that one transaction's statements stay short.
MAX_BATCH = 128


class OutcomeWriter:
    """Writes unleased task outcomes of concurrent callers, a batch per transaction."""

    def __init__(self, store: Store, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[TaskOutcome, asyncio.Future[Mapping[str, Any] | None]]] = []
        self._writer: asyncio.Task[None] | None = None
        # Transactions committed so far (a batch split after a failure counts each part).
        self.transactions = 0

    async def record(self, outcome: TaskOutcome) -> dict[str, Any] | None:
        """Write `outcome` (with others' when they arrive together); its task row, or None.

        None means the task was not ours to write any more (a resubmitter leased it
        meanwhile), as with `record_task_outcomes`. Errors are the caller's own: a batch
        that fails for one outcome is written again outcome by outcome.
        """
        future: asyncio.Future[Mapping[str, Any] | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.append((outcome, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="relay-outcome-writer")
        row = await asyncio.shield(future)  # a caller that goes away leaves its write be
        return dict(row) if row is not None else None

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                await self._write(batch)
            except asyncio.CancelledError:  # shutting down: nobody is left waiting forever
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue = []
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def _write(
        self, batch: list[tuple[TaskOutcome, asyncio.Future[Mapping[str, Any] | None]]]
    ) -> None:
        try:
            rows = await self._transaction([outcome for outcome, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or database_unavailable(exc):
                raise  # the caller's own error, or the database's: every caller shares it
            # One outcome the database refuses (or a history written concurrently) must not
            # fail the others: each is written alone and keeps its own result.
            log.warning("outcome_batch_split", outcomes=len(batch), error=type(exc).__name__)
            for outcome, future in batch:
                try:
                    rows = await self._transaction([outcome])
                except Exception as single:
                    future.set_exception(single)
                else:
                    future.set_result(rows.get(outcome.task_id))
            return
        for outcome, future in batch:
            future.set_result(rows.get(outcome.task_id))

    async def _transaction(self, outcomes: list[TaskOutcome]) -> dict[str, Mapping[str, Any]]:
        async with self.store.transaction() as db:
            rows = await record_task_outcomes(db, None, outcomes)
        self.transactions += 1
        metrics.OUTCOME_BATCH_SIZE.observe(len(outcomes))
        return {row["id"]: row for row in rows}
