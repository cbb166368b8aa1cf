"""The poller against real Postgres and the simulator: status tracking, history, leases."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import pytest

from relay.core.store import Store
from relay.history.transitions import record_task_outcomes
from relay.keys import BUDGET, DURATIONS, RUNTIME, UPSTREAM
from relay.polling.diff import diff_task
from relay.polling.poller import Poller, PollerSettings
from relay.upstream.simulator import SimulatorConfig, SimulatorState
from tests.helpers import SIM_KEY, auth, history, submit, wait_for


async def poll_until_status(
    poller: Poller, store: Store, task_id: str, wanted: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Run poller passes until the task reaches `wanted` (polls come due by themselves)."""

    async def reached() -> dict[str, Any] | None:
        await poller.run_once()
        row = await store.fetchrow("get_task", id=task_id, scope=None)
        return dict(row) if row["status"] == wanted else None

    return await wait_for(reached, timeout=timeout)


async def make_due(store: Store) -> None:
    """Let every unleased in-flight task be polled now instead of after its interval."""
    await store.pool.execute(
        "UPDATE tasks SET next_poll_at = now()"
        " WHERE lease_owner IS NULL AND next_poll_at IS NOT NULL"
    )


@pytest.fixture
def poller(app) -> Poller:
    return app[RUNTIME].loop("poller")


async def test_task_goes_from_queued_to_succeeded_with_full_history(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(1.5)  # processing
    await poll_until_status(poller, store, task["id"], "processing")
    sim.advance(5)  # past the end: succeeded
    row = await poll_until_status(poller, store, task["id"], "succeeded")

    assert row["completed_at"] is not None
    assert row["cost_actual"] == pytest.approx(0.0756)
    assert row["output"]["videos"][0]["url"].endswith(".mp4")
    entries = await history(relay_app, auth(client), task["id"])
    status_changes = [
        (e["from_status"], e["to_status"]) for e in entries if e["type"].startswith("task.")
    ]
    assert status_changes == [
        (None, "queued"),
        ("queued", "processing"),
        ("processing", "succeeded"),
    ]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    upstream_events = [e for e in entries if e["type"].startswith("upstream.")]
    assert len(upstream_events) == len(sim.events_body(task["upstream_task_id"]))

    # A terminal task is never polled again.
    polls_before = len(sim.requests_to("get"))
    await make_due(store)
    await poller.run_once()
    assert len(sim.requests_to("get")) == polls_before
    assert (await store.fetchrow("get_task", id=task["id"], scope=None))["next_poll_at"] is None


@pytest.mark.parametrize("sim_config", [SimulatorConfig(api_key=SIM_KEY, failure_rate=1.0, seed=3)])
async def test_failed_upstream_task_records_error_and_history(
    relay_app, new_client, sim, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(60)
    row = await poll_until_status(poller, store, task["id"], "failed")
    assert row["error"]["code"] == "generation_failed"
    assert row["completed_at"] is not None
    entries = await history(relay_app, auth(client), task["id"])
    assert [e["to_status"] for e in entries if e["type"].startswith("task.")] == [
        "queued",
        "processing",
        "failed",
    ]


@pytest.mark.parametrize(
    "sim_config",
    [
        SimulatorConfig(api_key=SIM_KEY, seed=1, events_shape=shape, event_ids=ids)
        for shape in ("array", "events", "data", "rotate")
        for ids in (True, False)
    ],
    ids=lambda c: f"{c.events_shape}-{'ids' if c.event_ids else 'noids'}",
)
async def test_each_events_shape_records_each_event_once(relay_app, new_client, sim, store, poller):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    for step in (0.5, 1.0, 1.0, 1.0, 0.2, 0.2, 3.0):  # poll repeatedly while events grow
        sim.advance(step)
        await make_due(store)
        await poller.run_once()
        await make_due(store)
        await poller.run_once()
    row = await store.fetchrow("get_task", id=task["id"], scope=None)
    assert row["status"] == "succeeded"
    events = sim.events_body(task["upstream_task_id"])
    events = events if isinstance(events, list) else next(iter(events.values()))
    entries = await history(relay_app, auth(client), task["id"])
    recorded = [
        e["upstream_event"]
        for e in entries
        if e["source"] == "upstream" and e["upstream_event"] and e["type"].startswith("upstream.")
    ]
    assert recorded == events


async def test_events_seen_before_status_endpoint_still_record_every_status_once(
    relay_app, new_client, sim, store, poller
):
    sim.config.events_lag_s = -2.0  # the status endpoint trails the events by 2 s
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(4.5)  # events say succeeded; status endpoint says processing
    await make_due(store)
    await poller.run_once()
    assert (await store.fetchrow("get_task", id=task["id"], scope=None))["status"] == "processing"
    sim.advance(3)
    await poll_until_status(poller, store, task["id"], "succeeded")
    entries = await history(relay_app, auth(client), task["id"])
    types = Counter(e["type"] for e in entries)
    assert types["task.queued"] == types["task.processing"] == types["task.succeeded"] == 1


async def test_two_pollers_never_record_an_event_twice_nor_poll_a_task_at_once(
    relay_app, new_client, sim, store, app, settings
):
    sim.config.latency_s = 0.02
    client = await new_client()
    tasks = [await submit(relay_app, auth(client)) for _ in range(12)]
    first = app[RUNTIME].loop("poller")
    second = Poller(
        store,
        app[UPSTREAM],
        PollerSettings.from_settings(settings),
        budget=app[BUDGET],
        durations=app[DURATIONS],
    )
    assert first.owner != second.owner
    sim.advance(1.0)

    async def drive(p: Poller) -> None:
        while not p.stopping:
            await p.run_once()
            await asyncio.sleep(0)

    runners = [asyncio.create_task(drive(p)) for p in (first, second)]
    try:
        for _ in range(8):
            sim.advance(1.0)
            await asyncio.sleep(0.1)

        async def all_done() -> bool:
            rows = await store.pool.fetch("SELECT status FROM tasks")
            return all(r["status"] == "succeeded" for r in rows)

        await wait_for(all_done, timeout=15)
    finally:
        first.stop()
        second.stop()
        await asyncio.gather(*runners)

    for task in tasks:
        entries = await history(relay_app, auth(client), task["id"])
        keys = Counter(e["id"] for e in entries)
        assert all(n == 1 for n in keys.values())
        assert sum(e["type"] == "task.succeeded" for e in entries) == 1
        upstream = [e for e in entries if e["type"].startswith("upstream.")]
        assert len(upstream) == len(sim.events_body(task["upstream_task_id"]))
        # One poll at a time: a task's GETs are at least one upstream latency apart.
        times = sorted(
            r.at for r in sim.requests_to("get") if r.path.endswith(task["upstream_task_id"])
        )
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= sim.config.latency_s * 0.9 for gap in gaps), gaps


async def test_abandoned_lease_is_taken_over_and_the_late_write_is_ignored(
    relay_app, new_client, sim, store, app, settings
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    dead = Poller(
        store,
        app[UPSTREAM],
        PollerSettings.from_settings(settings),
        budget=app[BUDGET],
        durations=app[DURATIONS],
    )
    await make_due(store)
    claimed = await store.fetch("claim_due_polls", owner=dead.owner, batch_size=10, lease_s=30.0)
    assert [r["id"] for r in claimed] == [task["id"]]
    # The owner dies mid-poll. Nobody else can take the task until the lease expires...
    survivor = app[RUNTIME].loop("poller")
    assert await survivor.run_once() == 0
    # ...which we let happen now rather than waiting 30 s.
    await store.pool.execute("UPDATE tasks SET next_poll_at = now() WHERE id = $1", task["id"])
    sim.advance(10)
    row = await poll_until_status(survivor, store, task["id"], "succeeded")
    assert row["lease_owner"] is None
    # The dead owner's write, arriving late, changes nothing.
    stale, _ = diff_task(claimed[0], _empty_result(), set())
    stale.status = "failed"
    async with store.transaction() as db:
        assert await record_task_outcomes(db, dead.owner, [stale]) == []
    assert (await store.fetchrow("get_task", id=task["id"], scope=None))["status"] == "succeeded"


def _empty_result():
    from relay.polling.diff import PollResult

    return PollResult(None, None)


async def test_unknown_upstream_status_is_recorded_and_task_stays_in_flight(
    relay_app, new_client, sim, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.force_status(task["upstream_task_id"], "paused_for_review")
    for _ in range(3):
        await make_due(store)
        await poller.run_once()
    row = await store.fetchrow("get_task", id=task["id"], scope=None)
    assert row["status"] == "queued"
    assert row["next_poll_at"] is not None
    entries = await history(relay_app, auth(client), task["id"])
    unknown = [e for e in entries if e["type"] == "task.status_unknown"]
    assert len(unknown) == 1
    assert unknown[0]["to_status"] == "paused_for_review"
    assert unknown[0]["from_status"] == "queued"


async def test_retry_after_429_slows_the_whole_replica(relay_app, new_client, sim, store, poller):
    client = await new_client()
    first = await submit(relay_app, auth(client))
    second = await submit(relay_app, auth(client))
    await make_due(store)
    await store.pool.execute(
        "UPDATE tasks SET next_poll_at = now() + interval '1 hour' WHERE id = $1", second["id"]
    )
    sim.fail_next("get", 1, 429, retry_after=1)
    await poller.run_once()
    throttled = sim.requests_to("get")[-1]
    assert throttled.status == 429
    row = await store.fetchrow("get_task", id=first["id"], scope=None)
    delay = await store.pool.fetchval(
        "SELECT extract(epoch FROM next_poll_at - now()) FROM tasks WHERE id = $1", first["id"]
    )
    assert delay >= 0.9, "the throttled task waits at least Retry-After"
    assert row["status"] == "queued"
    # Another task, due now, does not reach upstream before Retry-After has passed.
    await store.pool.execute("UPDATE tasks SET next_poll_at = now() WHERE id = $1", second["id"])
    await poller.run_once()
    later = [r for r in sim.requests_to("get") if r.path.endswith(second["upstream_task_id"])]
    assert later and later[0].at - throttled.at >= 0.9


async def test_malformed_upstream_bodies_are_retried_without_crashing(
    relay_app, new_client, sim, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.config.malformed_rate = 1.0
    sim.advance(10)
    for _ in range(4):
        await make_due(store)
        assert await poller.run_once() == 1
    assert (await store.fetchrow("get_task", id=task["id"], scope=None))["status"] == "queued"
    sim.config.malformed_rate = 0.0
    await make_due(store)
    await poll_until_status(poller, store, task["id"], "succeeded")


async def test_upstream_auth_failure_fails_no_task_and_is_an_alert_for_the_api_role(
    relay_app, new_client, sim, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.fail_next("any", 100, 401)
    for _ in range(3):
        await make_due(store)
        await poller.run_once()
    assert (await store.fetchrow("get_task", id=task["id"], scope=None))["status"] == "queued"
    # The API stays in the Service (reads and the event feed need no upstream) and says why.
    ready = await relay_app.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"]["upstream_auth"].startswith("failing")
    assert "relay_upstream_auth_failing 1.0" in await (await relay_app.get("/metrics")).text()
    read = await relay_app.get(f"/v1/tasks/{task['id']}", headers=auth(client))
    assert read.status == 200


async def test_upstream_auth_failure_turns_a_poller_only_pod_unready(
    relay_app, new_client, sim, store, start_relay
):
    client = await new_client()
    await submit(relay_app, auth(client))
    sim.fail_next("any", 1000, 401)
    poller_pod = await start_relay(roles="poller")

    async def unready() -> dict[str, Any] | None:
        await make_due(store)  # its own poller loop polls the task and hears 401s
        ready = await poller_pod.get("/readyz")
        return await ready.json() if ready.status == 503 else None

    body = await wait_for(unready, timeout=15)
    assert body["checks"]["upstream_auth"].startswith("failing")
    assert body["checks"]["database"] == "ok"


async def test_history_refuses_update_and_delete(relay_app, new_client, store):
    import asyncpg

    client = await new_client()
    await submit(relay_app, auth(client))
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await store.pool.execute("UPDATE task_events SET type = 'x'")
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await store.pool.execute("DELETE FROM task_events")


async def test_cancel_forwards_upstream_and_status_arrives_by_polling(
    relay_app, new_client, sim, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    resp = await relay_app.post(f"/v1/tasks/{task['id']}/cancel", headers=auth(client))
    assert resp.status == 202
    assert len(sim.requests_to("cancel")) == 1
    await poll_until_status(poller, store, task["id"], "cancelled")
    entries = await history(relay_app, auth(client), task["id"])
    assert [e["to_status"] for e in entries if e["type"].startswith("task.")][-1] == "cancelled"
    again = await relay_app.post(f"/v1/tasks/{task['id']}/cancel", headers=auth(client))
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    assert len(sim.requests_to("cancel")) == 1


async def test_progress_events_are_read_between_moves_only_in_a_long_phase(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    """Events are read with each status move; in between only after ten maximum intervals."""
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(1.5)  # processing
    await poll_until_status(poller, store, task["id"], "processing")
    refresh_s = 10 * poller.settings.poll_interval_max_s

    async def unchanged_poll_reads_events(fetched_ago_s: float) -> bool:
        await store.pool.execute(
            "UPDATE tasks SET events_fetched_at = now() - make_interval(secs => $1),"
            " next_poll_at = now() WHERE id = $2",
            fetched_ago_s,
            task["id"],
        )
        reads, gets = len(sim.requests_to("events")), len(sim.requests_to("get"))
        await wait_for(lambda: _polled_since(poller, sim, gets), timeout=10)
        return len(sim.requests_to("events")) > reads

    assert not await unchanged_poll_reads_events(refresh_s * 0.6)
    assert await unchanged_poll_reads_events(refresh_s * 1.2)


async def _polled_since(poller: Poller, sim: SimulatorState, gets: int) -> bool | None:
    await poller.run_once()
    return True if len(sim.requests_to("get")) > gets else None
