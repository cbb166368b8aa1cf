"""Retention: history partitions older than RELAY_RETENTION_DAYS go, whole, with their tasks.

History, webhook events, deliveries and attempts are partitioned by the month their task
was created in, so "a terminal task and everything about it" is a set of whole partitions.
A month is dropped when it ended more than the retention ago and every task created in it
is terminal, completed more than the retention ago, with no delivery still waiting; a
month that does not qualify is kept whole, and `plan_prune` says why. Rows are never
deleted one by one from history (the database refuses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import structlog

from relay.core import metrics
from relay.core.store import Db

log = structlog.get_logger(__name__)

# Partitions are created this many months ahead, so an insert never meets a missing month.
MONTHS_AHEAD = 3


@dataclass(frozen=True)
class MonthPlan:
    """One month of history older than the retention: dropped, or kept and why."""

    month: date
    tasks: int
    reason_kept: str | None

    @property
    def droppable(self) -> bool:
        """Whether the month's partitions and tasks may go."""
        return self.reason_kept is None

    def describe(self) -> str:
        """One line for `relay prune` and the log."""
        label = self.month.strftime("%Y-%m")
        if self.droppable:
            return f"{label}: drop ({self.tasks} tasks)"
        return f"{label}: keep ({self.tasks} tasks): {self.reason_kept}"


def add_months(month: date, count: int) -> date:
    """The first day of the month `count` months after `month`'s."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


async def ensure_partitions(db: Db, today: date) -> int:
    """Partitions for this month and MONTHS_AHEAD after it; returns how many were created."""
    first = today.replace(day=1)
    return await db.fetchval(
        "ensure_history_partitions", first_month=first, last_month=add_months(first, MONTHS_AHEAD)
    )


async def plan_prune(db: Db, retention_days: int, now: datetime) -> list[MonthPlan]:
    """Every month that ended more than `retention_days` ago, with what may be dropped."""
    cutoff = now - timedelta(days=retention_days)
    plans = []
    for row in await db.fetch("history_months", cutoff=cutoff):
        reason = None
        if row["not_terminal"]:
            reason = (
                f"{row['not_terminal']} task(s) not terminal yet "
                f"(first: {row['first_not_terminal']})"
            )
        elif row["completed_recently"]:
            reason = f"{row['completed_recently']} task(s) completed within the retention"
        elif row["deliveries_waiting"]:
            reason = f"{row['deliveries_waiting']} webhook delivery(ies) still waiting"
        plans.append(MonthPlan(row["month"], row["tasks"], reason))
    return plans


async def drop_month(db: Db, plan: MonthPlan) -> int:
    """Drop one month's partitions and tasks (in the caller's transaction); its task count."""
    dropped = await db.fetchval("drop_history_month", month=plan.month)
    metrics.RETENTION_MONTHS_DROPPED.inc()
    log.info("history_month_dropped", month=plan.month.isoformat(), tasks=dropped)
    return dropped
