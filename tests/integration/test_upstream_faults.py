"""Upstream faults against real Postgres and the simulator: no history lost, no task stranded.

Each test injects the fault with the simulator's `fail_next` (or by moving stored times
back, which is how "600 s of 404s" or "24 h old" is reached without waiting).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from relay.core.store import Store
from relay.intake.tasks import RESUBMIT_MAX_S
from relay.keys import RUNTIME
from relay.polling.decisions import FINAL_EVENTS_RETRIES
from relay.polling.poller import Poller
from relay.upstream.simulator import SimulatorState
from tests.helpers import SAMPLE_INPUT, TASK, auth, history, submit, wait_for


@pytest.fixture
def poller(app) -> Poller:
    return app[RUNTIME].loop("poller")


async def make_due(store: Store) -> None:
    """Every unleased task with a planned look is due now (time passing, without waiting)."""
    await store.pool.execute(
        "UPDATE tasks SET next_poll_at = now()"
        " WHERE lease_owner IS NULL AND next_poll_at IS NOT NULL"
    )


async def poll_now(poller: Poller, store: Store) -> None:
    await make_due(store)
    await poller.run_once()


async def task_row(store: Store, task_id: str) -> dict[str, Any]:
    return dict(await store.fetchrow("get_task", id=task_id, scope=None))


async def outbox_types(store: Store, task_id: str) -> list[str]:
    rows = await store.pool.fetch(
        "SELECT type FROM webhook_events WHERE task_id = $1 ORDER BY seq", task_id
    )
    return [r["type"] for r in rows]


def statuses(entries: list[dict[str, Any]]) -> list[tuple[str | None, str | None, str]]:
    return [
        (e["from_status"], e["to_status"], e["source"])
        for e in entries
        if e["type"].startswith("task.") and e["to_status"]
    ]


def upstream_events(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["upstream_event"] for e in entries if e["type"].startswith("upstream.")]


async def reach_processing(relay_app, client, sim: SimulatorState, store, poller) -> dict:
    task = await submit(relay_app, auth(client))
    sim.advance(1.5)  # the simulator's 4 s task is processing from 1 s on

    async def processing() -> bool:
        await poll_now(poller, store)
        return (await task_row(store, task["id"]))["status"] == "processing"

    await wait_for(processing)
    return task


# --- item 1: a terminal task's final events are recorded before polling stops ------------


async def test_terminal_status_with_failing_events_stays_due_until_they_are_recorded(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await reach_processing(relay_app, client, sim, store, poller)
    sim.advance(5)  # succeeded
    sim.fail_next("events", 2, 503)

    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    # The status (and its webhook) is recorded at once; the task stays due for its events.
    assert row["status"] == "succeeded"
    assert row["next_poll_at"] is not None
    assert row["events_retries"] == 1
    assert "task.succeeded" in await outbox_types(store, task["id"])

    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert (row["next_poll_at"] is not None, row["events_retries"]) == (True, 2)

    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["next_poll_at"] is None
    entries = await history(relay_app, auth(client), task["id"])
    assert upstream_events(entries) == sim.events_body(task["upstream_task_id"])
    assert "task.events_unavailable" not in [e["type"] for e in entries]
    # Finished means finished: no more requests for it.
    requests = len(sim.requests)
    await poll_now(poller, store)
    assert len(sim.requests) == requests


async def test_final_events_never_served_end_in_events_unavailable(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await reach_processing(relay_app, client, sim, store, poller)
    sim.advance(5)
    sim.fail_next("events", 1000, 503)
    for _ in range(FINAL_EVENTS_RETRIES + 1):
        await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "succeeded"
    assert row["next_poll_at"] is None
    assert row["events_retries"] == FINAL_EVENTS_RETRIES
    entries = await history(relay_app, auth(client), task["id"])
    assert entries[-1]["type"] == "task.events_unavailable"
    assert entries[-1]["source"] == "relay"
    assert [s for _, s, _ in statuses(entries)] == ["queued", "processing", "succeeded"]


async def test_processing_recorded_earlier_is_a_status_when_terminal_events_fail(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    sim.config.events_lag_s = -2.0  # the status endpoint trails the events by 2 s
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(1.5)  # events: processing; status endpoint: still queued
    # Events that change no status are read at a low background rate: make this poll one.
    await store.pool.execute(
        "UPDATE tasks SET created_at = created_at - interval '10 minutes' WHERE id = $1",
        task["id"],
    )
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "queued"
    entries = await history(relay_app, auth(client), task["id"])
    assert "processing" in [e["status"] for e in upstream_events(entries)]

    sim.advance(10)  # terminal everywhere; this poll's events request fails
    sim.fail_next("events", 1, 503)
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "succeeded"
    entries = await history(relay_app, auth(client), task["id"])
    assert statuses(entries) == [
        (None, "queued", "upstream"),
        ("queued", "processing", "upstream"),
        ("processing", "succeeded", "upstream"),
    ]
    assert await outbox_types(store, task["id"]) == [
        "task.queued",
        "task.processing",
        "task.succeeded",
    ]


async def test_queued_task_seen_terminal_waits_for_its_events_before_finishing(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(10)  # went through processing to succeeded between two looks
    sim.fail_next("events", 2, 503)
    for retries in (1, 2):
        await poll_now(poller, store)
        row = await task_row(store, task["id"])
        # Not recorded as queued -> succeeded: the events would show processing.
        assert (row["status"], row["events_retries"]) == ("queued", retries)
        assert row["next_poll_at"] is not None
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "succeeded"
    assert row["next_poll_at"] is None
    entries = await history(relay_app, auth(client), task["id"])
    assert [s for _, s, _ in statuses(entries)] == ["queued", "processing", "succeeded"]
    assert upstream_events(entries) == sim.events_body(task["upstream_task_id"])


async def test_queued_task_whose_events_never_come_is_finished_after_the_bound(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.advance(10)
    sim.fail_next("events", 1000, 503)
    for _ in range(FINAL_EVENTS_RETRIES + 1):
        await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "succeeded"
    assert row["next_poll_at"] is None
    entries = await history(relay_app, auth(client), task["id"])
    assert entries[-1]["type"] == "task.events_unavailable"


# --- item 1: submissions -------------------------------------------------------------------


async def test_replayed_submission_answering_processing_still_starts_with_queued(
    relay_app, new_client, sim: SimulatorState, store, app
):
    client = await new_client()
    sim.fail_next("submit", 1, 503)
    task = await submit(relay_app, auth(client))
    assert task["upstream_task_id"] is None
    # Upstream did take a submission with this key (its answer was lost on the way back)...
    sim.submit(TASK["model"], SAMPLE_INPUT, task["id"])
    sim.advance(1.5)  # ...and has moved on: the replay answers `processing`.
    await store.pool.execute("UPDATE tasks SET next_submit_at = now() WHERE id = $1", task["id"])
    assert await app[RUNTIME].loop("resubmitter").run_once() == 1
    assert sim.charges == 1
    row = await task_row(store, task["id"])
    assert row["status"] == "processing"
    entries = await history(relay_app, auth(client), task["id"])
    assert statuses(entries) == [
        (None, "queued", "upstream"),
        ("queued", "processing", "upstream"),
    ]
    assert await outbox_types(store, task["id"]) == ["task.queued", "task.processing"]


async def test_after_an_outage_deferred_submissions_go_at_once_not_after_their_backoff(
    relay_app, new_client, sim: SimulatorState, store, app
):
    resubmitter = app[RUNTIME].loop("resubmitter")
    client = await new_client()
    count, rounds = 6, 6
    # The outage: every submission fails, the first tries and `rounds` retries of each.
    sim.fail_next("submit", count * (1 + rounds), 503)
    tasks = [await submit(relay_app, auth(client)) for _ in range(count)]
    assert all(t["upstream_task_id"] is None for t in tasks)
    for _ in range(rounds):  # time passes during the outage: every retry comes due, fails
        await store.pool.execute(
            "UPDATE tasks SET next_submit_at = now() WHERE upstream_task_id IS NULL"
        )
        assert await resubmitter.run_once() == count
    waits = await store.pool.fetch(
        "SELECT id, extract(epoch FROM next_submit_at - now())::float8 AS s FROM tasks"
    )
    # The backoff left over from the outage: without the pull-forward, recovery waits this.
    assert min(r["s"] for r in waits) > 20
    assert max(r["s"] for r in waits) <= RESUBMIT_MAX_S * 1.2 + 1

    # Upstream is back. The first retry that comes due is accepted...
    first = tasks[0]["id"]
    await store.pool.execute("UPDATE tasks SET next_submit_at = now() WHERE id = $1", first)
    recovered_at = time.monotonic()
    assert await resubmitter.run_once() == 1
    assert (await task_row(store, first))["upstream_task_id"] is not None

    # ...and every other deferred submission follows at once, paced only by the budget.
    async def all_accepted() -> bool:
        await resubmitter.run_once()
        rows = await store.pool.fetch("SELECT upstream_task_id FROM tasks")
        return all(r["upstream_task_id"] for r in rows)

    await wait_for(all_accepted, timeout=5)
    assert time.monotonic() - recovered_at < 5
    assert sim.charges == count


# --- item 2: tasks upstream no longer knows, tasks that never end -------------------------


async def test_task_upstream_answers_404_for_fails_after_the_configured_time(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.fail_next("get", 1000, 404)  # upstream forgot the task (restarted, purged)
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "queued"
    assert row["upstream_missing_since"] is not None
    # Not yet RELAY_UPSTREAM_NOT_FOUND_AFTER_S (600 s): still polled.
    await poll_now(poller, store)
    assert (await task_row(store, task["id"]))["status"] == "queued"

    await store.pool.execute(
        "UPDATE tasks SET upstream_missing_since = now() - interval '601 seconds' WHERE id = $1",
        task["id"],
    )
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "failed"
    assert row["error"]["code"] == "upstream_not_found"
    assert "RELAY_UPSTREAM_NOT_FOUND_AFTER_S" in row["error"]["message"]
    assert row["next_poll_at"] is None and row["completed_at"] is not None
    entries = await history(relay_app, auth(client), task["id"])
    assert statuses(entries)[-1] == ("queued", "failed", "relay")
    assert await outbox_types(store, task["id"]) == ["task.queued", "task.failed"]
    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=auth(client))
    assert (await resp.json())["error"]["code"] == "upstream_not_found"


async def test_a_status_read_resets_the_404_clock(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    sim.fail_next("get", 1, 404)
    await poll_now(poller, store)
    assert (await task_row(store, task["id"]))["upstream_missing_since"] is not None
    await poll_now(poller, store)  # upstream knows the task again
    row = await task_row(store, task["id"])
    assert row["upstream_missing_since"] is None
    assert row["status"] == "queued"


async def test_task_not_terminal_after_the_timeout_is_cancelled_upstream_and_fails(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await reach_processing(relay_app, client, sim, store, poller)
    await store.pool.execute(
        "UPDATE tasks SET created_at = now() - interval '24 hours 1 second' WHERE id = $1",
        task["id"],
    )
    await poll_now(poller, store)
    cancels = sim.requests_to("cancel")
    assert [r.path for r in cancels] == [f"/api/v1/tasks/{task['upstream_task_id']}/cancel"]
    row = await task_row(store, task["id"])
    assert row["status"] == "failed"
    assert row["error"]["code"] == "timed_out"
    assert row["next_poll_at"] is None
    entries = await history(relay_app, auth(client), task["id"])
    assert statuses(entries)[-1] == ("processing", "failed", "relay")
    assert (await outbox_types(store, task["id"]))[-1] == "task.failed"


async def test_timed_out_task_fails_even_when_the_cancel_request_fails(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await submit(relay_app, auth(client))
    await store.pool.execute(
        "UPDATE tasks SET created_at = now() - interval '2 days' WHERE id = $1", task["id"]
    )
    sim.fail_next("cancel", 1, 503)
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert (row["status"], row["error"]["code"]) == ("failed", "timed_out")


# --- item 3: upstream shapes ---------------------------------------------------------------


async def test_string_error_and_string_cost_are_kept_and_the_body_is_in_the_history(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await reach_processing(relay_app, client, sim, store, poller)
    body = {
        "request_id": "req_x",
        "task_id": task["upstream_task_id"],
        "status": "failed",
        "cost_estimate": 0.0756,
        "cost_actual": "0.0312",
        "output": None,
        "error": "GPU out of memory",
    }
    sim.fail_next("get", 1, 200, body=body)
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "failed"
    assert row["error"] == {"code": "upstream_error", "message": "GPU out of memory"}
    assert row["cost_actual"] == pytest.approx(0.0312)
    entries = await history(relay_app, auth(client), task["id"])
    [failed] = [e for e in entries if e["type"] == "task.failed"]
    assert failed["upstream_event"] == body
    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=auth(client))
    assert (await resp.json())["error"]["message"] == "GPU out of memory"


async def test_output_that_is_not_an_object_is_kept_wrapped(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await reach_processing(relay_app, client, sim, store, poller)
    sim.advance(5)
    body = sim.task_body(task["upstream_task_id"])
    body["output"] = ["https://cdn.example/v.mp4"]
    sim.fail_next("get", 1, 200, body=body)
    await poll_now(poller, store)
    row = await task_row(store, task["id"])
    assert row["status"] == "succeeded"
    assert row["output"] == {"value": ["https://cdn.example/v.mp4"]}
    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=auth(client))
    assert (await resp.json())["output"] == {"value": ["https://cdn.example/v.mp4"]}
    entries = await history(relay_app, auth(client), task["id"])
    [succeeded] = [e for e in entries if e["type"] == "task.succeeded"]
    assert succeeded["upstream_event"] == body


async def test_regular_status_bodies_are_not_copied_into_the_history(
    relay_app, new_client, sim: SimulatorState, store, poller
):
    client = await new_client()
    task = await reach_processing(relay_app, client, sim, store, poller)
    sim.advance(5)
    await poll_now(poller, store)
    entries = await history(relay_app, auth(client), task["id"])
    [succeeded] = [e for e in entries if e["type"] == "task.succeeded"]
    assert succeeded["upstream_event"] is None
