"""Usage and cost: tasks counted by status and their costs summed, per day, model or client.

Read from the tasks table itself (the same rows `GET /v1/tasks` shows), so the sums are the
tasks' own `cost_estimate` and `cost_actual`. A client sees its own tasks; an admin sees
everyone's. `group_by=client` is allowed for everyone: a client simply sees one group.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from relay.core.store import Store
from relay.core.vocabulary import TASK_STATUSES
from relay.identity.clients import Client

UsageGrouping = Literal["day", "model", "client"]


def _group_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "key": row["key"],
        "tasks": row["tasks"],
        "by_status": {status: row[status] for status in TASK_STATUSES},
        "cost_estimate": row["cost_estimate"],
        "cost_actual": row["cost_actual"],
    }


def _total(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "tasks": sum(g["tasks"] for g in groups),
        "by_status": {s: sum(g["by_status"][s] for g in groups) for s in TASK_STATUSES},
        "cost_estimate": sum(g["cost_estimate"] for g in groups),
        "cost_actual": sum(g["cost_actual"] for g in groups),
    }


async def usage(
    store: Store,
    client: Client,
    *,
    group_by: UsageGrouping,
    from_at: datetime | None,
    to_at: datetime | None,
) -> dict[str, Any]:
    """Tasks created in [from_at, to_at) the client may see, grouped, with a grand total.

    Groups are ordered by key (days ascending); a cost nobody reported yet counts as 0.
    """
    rows = await store.fetch(
        "usage", scope=client.scope, group_by=group_by, from_at=from_at, to_at=to_at
    )
    groups = [_group_json(row) for row in rows]
    return {"group_by": group_by, "data": groups, "total": _total(groups)}
