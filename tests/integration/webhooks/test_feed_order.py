"""The event feed without a global lock: events committed out of order are never skipped.

Writers no longer serialise on one lock; the feed orders events by the writing
transaction's id and shows only those below the oldest transaction still running.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.history.transitions import NewHistoryEntry, TaskOutcome, record_task_outcomes
from tests.helpers import get_json, submit_task

STATUSES = ("processing", "succeeded")


async def outcome_for(store: Store, task_id: str, status: str) -> TaskOutcome:
    row = await store.fetchrow("get_task", id=task_id, scope=None)
    assert row is not None
    return TaskOutcome.from_row(
        row,
        status=status,
        entries=[NewHistoryEntry.status_change(row["status"], status, "upstream")],
    )


async def read_feed(api: TestClient, client: dict[str, str], after: str | None) -> tuple:
    """One page after `after`; returns (event ids, the cursor to continue from)."""
    path = "/v1/events?limit=3" + (f"&after={after}" if after else "")
    page = await get_json(api, client, path)
    ids = [e["id"] for e in page["data"]]
    # At the end of the feed, resume from the last event seen (as a consumer would).
    return ids, page["next_cursor"] or (ids[-1] if ids else after)


async def test_an_event_committed_late_by_an_older_transaction_is_not_skipped(
    relay_app: TestClient, store: Store, new_client
) -> None:
    client = await new_client()
    first = await submit_task(relay_app, client)
    second = await submit_task(relay_app, client)
    seen, cursor = await read_feed(relay_app, client, None)
    assert len(seen) == 2  # the two task.queued events

    # T1 writes its event and stays open; T2 writes after it and commits first.
    async with store.transaction() as t1:
        await record_task_outcomes(t1, None, [await outcome_for(store, first["id"], "processing")])
        async with store.transaction() as t2:
            await record_task_outcomes(
                t2, None, [await outcome_for(store, second["id"], "processing")]
            )
        # T2 is committed, but T1 (older) is still running: nothing past it is shown yet,
        # so the reader's cursor cannot move beyond T1's event.
        ids, cursor = await read_feed(relay_app, client, cursor)
        assert ids == []
    ids, cursor = await read_feed(relay_app, client, cursor)
    seen += ids
    payloads = (await get_json(relay_app, client, "/v1/events"))["data"]
    assert [(e["type"], e["data"]["id"]) for e in payloads[2:]] == [
        ("task.processing", first["id"]),
        ("task.processing", second["id"]),
    ]
    assert seen == [e["id"] for e in payloads]


async def test_concurrent_writers_and_readers_see_every_event_once_in_one_order(
    relay_app: TestClient, store: Store, new_client
) -> None:
    client = await new_client()
    tasks = [await submit_task(relay_app, client) for _ in range(12)]
    rng = random.Random(5)
    writing = True

    async def write(task_ids: list[str]) -> None:
        for status in STATUSES:
            for task_id in task_ids:
                outcome = await outcome_for(store, task_id, status)
                async with store.transaction() as db:
                    await record_task_outcomes(db, None, [outcome])
                    # Hold the transaction open a while, so commits land out of xid order.
                    await asyncio.sleep(rng.uniform(0, 0.03))

    async def read() -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            still_writing = writing
            ids, cursor = await read_feed(relay_app, client, cursor)
            seen += ids
            if not ids and not still_writing:
                return seen

    groups = [[t["id"] for t in tasks[i::4]] for i in range(4)]
    readers = [asyncio.create_task(read()) for _ in range(3)]
    try:
        await asyncio.gather(*(write(group) for group in groups))
    finally:
        writing = False
    results: list[list[str]] = await asyncio.gather(*readers)

    everything: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await get_json(
            relay_app, client, "/v1/events?limit=200" + (f"&after={cursor}" if cursor else "")
        )
        everything += page["data"]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    order = [e["id"] for e in everything]
    assert len(order) == len(set(order)) == len(tasks) * (1 + len(STATUSES))
    for seen in results:
        assert seen == order  # every event exactly once, in the feed's one order
    # Per task, events appear in the order the task went through them.
    for task in tasks:
        types = [e["type"] for e in everything if e["data"]["id"] == task["id"]]
        assert types == ["task.queued", "task.processing", "task.succeeded"]
