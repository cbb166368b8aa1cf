"""Group commit: concurrent API requests record their outcomes in shared transactions."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from relay.core.ids import new_id
from relay.core.store import Store
from relay.history.transitions import NewHistoryEntry, TaskOutcome
from relay.identity.clients import create_client
from relay.intake.group_commit import OutcomeWriter
from relay.upstream.simulator import SimulatorState
from tests.helpers import history, submit


async def stored_tasks(store: Store, count: int) -> list[Any]:
    """`count` tasks as the API stores them before upstream has answered."""
    await create_client(store, "writer-test")
    client_id = await store.pool.fetchval("SELECT id FROM clients WHERE name = 'writer-test'")
    rows = []
    for n in range(count):
        rows.append(
            await store.fetchrow(
                "create_task",
                id=new_id("tsk"),
                client_id=client_id,
                client_name="writer-test",
                model="kling-video-o1",
                input={"prompt": f"take {n}"},
                metadata=None,
                webhook_url=None,
                webhook_events=None,
                submit_lease_s=15.0,
                traceparent=None,
                key=None,
                request_hash="h",
                actor="writer-test",
                actor_key_prefix=None,
                request_id=None,
                action="task.created",
                details={},
            )
        )
    return rows


def accepted(row: Any, *, status: str = "queued") -> TaskOutcome:
    """What the API records when upstream accepts the task."""
    return TaskOutcome.from_row(
        row,
        status=status,
        upstream_task_id=f"up_{row['id']}",
        entries=[NewHistoryEntry.status_change(None, "queued", "upstream")],
        requests=1,
    )


async def test_outcomes_handed_over_together_are_written_in_one_transaction(
    store: Store,
) -> None:
    rows = await stored_tasks(store, 12)
    writer = OutcomeWriter(store)
    written = await asyncio.gather(*(writer.record(accepted(row)) for row in rows))
    assert writer.transactions == 1
    assert [r["id"] for r in written if r] == [row["id"] for row in rows]
    assert {r["upstream_task_id"] for r in written if r} == {f"up_{row['id']}" for row in rows}
    queued = await store.pool.fetchval(
        "SELECT count(*) FROM task_events WHERE type = 'task.queued' AND seq = 1"
    )
    assert queued == 12


async def test_a_refused_outcome_fails_alone_and_the_others_are_written(store: Store) -> None:
    good, bad, other = await stored_tasks(store, 3)
    writer = OutcomeWriter(store)
    results = await asyncio.gather(
        writer.record(accepted(good)),
        writer.record(accepted(bad, status="bogus")),  # the status CHECK refuses it
        writer.record(accepted(other)),
        return_exceptions=True,
    )
    assert isinstance(results[1], asyncpg.CheckViolationError)
    assert isinstance(results[0], dict) and isinstance(results[2], dict)
    assert (results[0]["status"], results[2]["status"]) == ("queued", "queued")
    statuses = dict(await store.pool.fetch("SELECT id, upstream_task_id FROM tasks"))
    assert statuses[bad["id"]] is None
    assert statuses[good["id"]] == f"up_{good['id']}"


async def test_a_task_leased_meanwhile_is_not_written(store: Store) -> None:
    mine, taken = await stored_tasks(store, 2)
    await store.pool.execute(
        "UPDATE tasks SET lease_owner = 'resubmitter' WHERE id = $1", taken["id"]
    )
    writer = OutcomeWriter(store)
    results = await asyncio.gather(writer.record(accepted(mine)), writer.record(accepted(taken)))
    assert results[0] is not None and results[0]["upstream_task_id"] == f"up_{mine['id']}"
    assert results[1] is None
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM task_events WHERE task_id = $1", taken["id"]
        )
        == 0
    )


async def test_an_idle_writer_writes_a_lone_outcome_at_once(store: Store) -> None:
    [row] = await stored_tasks(store, 1)
    writer = OutcomeWriter(store)
    written = await asyncio.wait_for(writer.record(accepted(row)), timeout=5)
    assert written is not None and written["upstream_task_id"] == f"up_{row['id']}"
    assert writer.transactions == 1


async def test_concurrent_submissions_each_get_their_task_and_history(
    relay_app: TestClient, new_client: Any, sim: SimulatorState
) -> None:
    count = 24
    client = await new_client()
    tasks = await asyncio.gather(*(submit(relay_app, client) for _ in range(count)))
    assert len({t["id"] for t in tasks}) == count
    assert all(t["upstream_task_id"] for t in tasks)
    assert len(sim.requests_to("submit")) == count
    for task in tasks:
        entries = await history(relay_app, client, task["id"])
        assert [(e["seq"], e["type"]) for e in entries] == [(1, "task.queued")]
