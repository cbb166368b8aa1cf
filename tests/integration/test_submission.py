"""Durable submission: stored before upstream is called, resubmitted until accepted, never twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.keys import RUNTIME
from relay.upstream.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
)
from tests.helpers import get_task, history, submit, wait_for

NewClient = Callable[..., Awaitable[dict[str, str]]]
CREDITS_ERROR = {"error": {"code": "insufficient_credits", "message": "balance is 0.00"}}


async def make_due(store: Store, task_id: str) -> None:
    """Skip the backoff: the task's next submission is due now."""
    await store.pool.execute("UPDATE tasks SET next_submit_at = now() WHERE id = $1", task_id)


async def seconds_until_next_submit(store: Store, task_id: str) -> float:
    return await store.pool.fetchval(
        "SELECT extract(epoch FROM next_submit_at - now())::float8 FROM tasks WHERE id = $1",
        task_id,
    )


def submit_keys(state: SimulatorState) -> list[str | None]:
    return [r.header("Idempotency-Key") for r in state.requests_to("submit")]


@pytest.fixture
def resubmit(app: web.Application) -> Callable[[], Awaitable[int]]:
    """One pass of the resubmitter."""
    return app[RUNTIME].loop("resubmitter").run_once


async def test_accepted_task_history_has_one_queued_entry_from_upstream(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState
) -> None:
    client = await new_client()
    task = await submit(relay_app, client)
    assert task["status"] == "queued"
    [upstream_task] = sim.requests_to("submit")
    assert upstream_task.header("Idempotency-Key") == task["id"]
    entries = await history(relay_app, client, task["id"])
    assert len(entries) == 1
    entry = entries[0]
    assert entry["id"].startswith("evt_")
    assert (entry["seq"], entry["type"], entry["source"]) == (1, "task.queued", "upstream")
    assert (entry["from_status"], entry["to_status"]) == (None, "queued")


async def test_task_row_is_written_before_upstream_is_called(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    sim.config.latency_s = 1.0  # upstream takes its time answering
    pending = asyncio.ensure_future(submit(relay_app, client))
    row = await wait_for(lambda: store.pool.fetchrow("SELECT * FROM tasks"), timeout=5)
    assert not pending.done()
    assert (row["status"], row["upstream_task_id"]) == ("queued", None)
    task = await pending
    assert task["id"] == row["id"]
    assert task["upstream_task_id"] is not None


async def test_upstream_5xx_is_202_queued_and_resubmitted_until_accepted_once(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    store: Store,
    resubmit: Callable[[], Awaitable[int]],
) -> None:
    client = await new_client()
    sim.fail_next("submit", 3, 503)
    task = await submit(relay_app, client)
    assert (task["status"], task["upstream_task_id"], task["error"]) == ("queued", None, None)
    assert await history(relay_app, client, task["id"]) == []
    # The backoff is honoured: nothing is due straight away.
    assert await seconds_until_next_submit(store, task["id"]) > 0.5
    assert await resubmit() == 0
    assert len(sim.requests_to("submit")) == 1
    for attempt in (2, 3, 4):
        await make_due(store, task["id"])
        assert await resubmit() == 1
        assert len(sim.requests_to("submit")) == attempt
    # Accepted on the fourth try: one upstream task, one charge, every try with the same key.
    accepted = await get_task(relay_app, client, task["id"])
    assert accepted["status"] == "queued"
    assert accepted["upstream_task_id"] is not None
    assert sim.task_count == 1
    assert sim.charges == 1
    assert submit_keys(sim) == [task["id"]] * 4
    assert [r.status for r in sim.requests_to("submit")] == [503, 503, 503, 200]
    entries = await history(relay_app, client, task["id"])
    assert [(e["type"], e["source"]) for e in entries] == [("task.queued", "upstream")]
    # Nothing left to submit.
    await make_due(store, task["id"])
    assert await resubmit() == 0
    assert len(sim.requests_to("submit")) == 4


async def test_backoff_grows_with_each_failed_attempt(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    store: Store,
    resubmit: Callable[[], Awaitable[int]],
) -> None:
    client = await new_client()
    sim.fail_next("submit", 4, 500)
    task = await submit(relay_app, client)
    delays = [await seconds_until_next_submit(store, task["id"])]
    for _ in range(3):
        await make_due(store, task["id"])
        assert await resubmit() == 1
        delays.append(await seconds_until_next_submit(store, task["id"]))
    assert delays == sorted(delays)
    assert delays[-1] > 2 * delays[0]


async def test_retries_the_relay_pulls_forward_do_not_double_the_backoff(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    store: Store,
    resubmit: Callable[[], Awaitable[int]],
) -> None:
    """After an outage every deferred task is pulled forward on each accepted submission;
    those retries are the relay's initiative, not evidence that upstream needs more time."""
    client = await new_client()
    sim.fail_next("submit", 6, 503)
    task = await submit(relay_app, client)  # attempt 1 fails: deferred, about 1 s
    await make_due(store, task["id"])
    assert await resubmit() == 1  # attempt 2 fails: about 2 s
    for _ in range(4):  # four pulls forward, four more failures
        await store.execute("pull_deferred_submissions")
        assert await resubmit() == 1
    assert len(sim.requests_to("submit")) == 6
    # Backoff as after two failures (2 s, jittered), not after six (32 s).
    assert await seconds_until_next_submit(store, task["id"]) < 2 * 1.2 + 0.5


class LoopbackSimulator:
    """A simulator the test can stop and start again on the same port.

    Unlike aiohttp's TestServer it lets handlers finish when the caller hangs up, as a real
    upstream does: a request can be accepted even though its answer never arrives.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.state: SimulatorState | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SimulatorState:
        app = create_simulator_app(self.config)
        runner = web.AppRunner(app, handler_cancellation=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self.runner, self.state = runner, app[SIM_STATE]
        return self.state

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def loopback_sim(sim_config: SimulatorConfig) -> AsyncIterator[LoopbackSimulator]:
    simulator = LoopbackSimulator(sim_config)
    await simulator.start()
    yield simulator
    await simulator.stop()


async def test_upstream_unreachable_is_202_and_submitted_once_it_is_back(
    start_relay: Callable[..., Awaitable[TestClient]],
    loopback_sim: LoopbackSimulator,
    new_client: NewClient,
    store: Store,
) -> None:
    relay = await start_relay(upstream_url=loopback_sim.url)
    resubmit = relay.server.app[RUNTIME].loop("resubmitter").run_once
    client = await new_client()
    await loopback_sim.stop()  # connection refused from now on
    task = await submit(relay, client)
    assert (task["status"], task["upstream_task_id"]) == ("queued", None)
    await make_due(store, task["id"])
    assert await resubmit() == 1  # tried again, still refused
    assert (await get_task(relay, client, task["id"]))["upstream_task_id"] is None

    back = await loopback_sim.start()  # same port, fresh upstream

    async def accepted() -> dict[str, Any] | None:
        await make_due(store, task["id"])
        await resubmit()
        current = await get_task(relay, client, task["id"])
        return current if current["upstream_task_id"] else None

    done = await wait_for(accepted, timeout=10)
    assert done["status"] == "queued"
    assert back.task_count == 1
    assert back.charges == 1
    assert set(submit_keys(back)) == {task["id"]}
    entries = await history(relay, client, task["id"])
    assert [(e["type"], e["source"]) for e in entries] == [("task.queued", "upstream")]


async def test_submission_that_timed_out_after_upstream_accepted_is_not_charged_twice(
    start_relay: Callable[..., Awaitable[TestClient]],
    loopback_sim: LoopbackSimulator,
    new_client: NewClient,
    store: Store,
) -> None:
    relay = await start_relay(upstream_url=loopback_sim.url, upstream_timeout_s=0.3)
    sim = loopback_sim.state
    assert sim is not None
    client = await new_client()
    sim.config.latency_s = 1.0  # upstream accepts, but answers after the relay gave up
    started = time.monotonic()
    task = await submit(relay, client)
    assert time.monotonic() - started < 1.0
    assert task["upstream_task_id"] is None

    async def charged() -> bool:
        return sim.charges == 1

    await wait_for(charged, timeout=5)
    sim.config.latency_s = 0.0
    await make_due(store, task["id"])
    assert await relay.server.app[RUNTIME].loop("resubmitter").run_once() == 1
    accepted = await get_task(relay, client, task["id"])
    # The retry found the task upstream already made for this key: no second task or charge.
    assert sim.task_body(accepted["upstream_task_id"])["task_id"] == accepted["upstream_task_id"]
    assert sim.charges == 1
    assert sim.task_count == 1
    assert submit_keys(sim) == [task["id"], task["id"]]


async def test_upstream_429_defers_submission_past_retry_after(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    store: Store,
    resubmit: Callable[[], Awaitable[int]],
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, 429, retry_after=30)
    task = await submit(relay_app, client)
    assert (task["status"], task["upstream_task_id"], task["error"]) == ("queued", None, None)
    assert await seconds_until_next_submit(store, task["id"]) > 25  # not the ~1 s backoff
    assert await resubmit() == 0
    assert len(sim.requests_to("submit")) == 1


async def test_while_upstream_asks_to_wait_new_submissions_answer_at_once_deferred(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, store: Store
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, 429, retry_after=30)
    await submit(relay_app, client)
    started = time.monotonic()
    second = await submit(relay_app, client)
    assert time.monotonic() - started < 5, "the API does not sit out upstream's Retry-After"
    assert (second["status"], second["upstream_task_id"]) == ("queued", None)
    assert len(sim.requests_to("submit")) == 1, "nothing was sent while upstream asked to wait"
    assert await seconds_until_next_submit(store, second["id"]) > 25


# Upstream answers that are no verdict on the task: the submission is deferred (resubmitted
# later with the same key), never failed. (HTTP status, body the simulator answers with.)
DEFERRING_ANSWERS = {
    **{str(status): (status, None) for status in (408, 500, 502, 503, 504)},  # transient
    "200-without-task-id": (200, {"accepted": True}),  # malformed: no task_id
    "401-key-refused": (401, None),  # our key, not the task, is at fault
    "409-idempotency-conflict": (409, None),  # upstream is still deciding on this key
}


@pytest.mark.parametrize(
    ("status", "answer"), DEFERRING_ANSWERS.values(), ids=DEFERRING_ANSWERS.keys()
)
async def test_upstream_answer_that_is_no_verdict_defers_submission_without_failing_the_task(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    status: int,
    answer: dict[str, Any] | None,
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, status, answer)
    task = await submit(relay_app, client)
    assert (task["status"], task["upstream_task_id"], task["error"]) == ("queued", None, None)
    assert task["completed_at"] is None


async def test_upstream_402_fails_the_task_with_upstream_error_and_history(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    store: Store,
    resubmit: Callable[[], Awaitable[int]],
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, 402, CREDITS_ERROR)
    task = await submit(relay_app, client)
    assert task["status"] == "failed"
    assert task["error"] == {
        "code": "insufficient_credits",
        "message": "balance is 0.00",
        "upstream_status": 402,
    }
    assert task["upstream_task_id"] is None
    assert task["completed_at"] is not None
    entries = await history(relay_app, client, task["id"])
    assert [(e["type"], e["to_status"]) for e in entries] == [("task.failed", "failed")]
    assert await get_task(relay_app, client, task["id"]) == task
    # A failed task is final: the resubmitter never sends it again.
    await make_due(store, task["id"])
    assert await resubmit() == 0
    assert len(sim.requests_to("submit")) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_definitive_upstream_4xx_fails_the_task_with_its_status(
    relay_app: TestClient, new_client: NewClient, sim: SimulatorState, status: int
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, status)
    task = await submit(relay_app, client)
    assert task["status"] == "failed"
    assert task["error"]["upstream_status"] == status
    assert task["error"]["message"] == f"simulated HTTP {status}"


async def test_resubmitter_failing_a_task_on_402_records_it_once(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    store: Store,
    resubmit: Callable[[], Awaitable[int]],
) -> None:
    client = await new_client()
    sim.fail_next("submit", 1, 503)
    task = await submit(relay_app, client)
    sim.fail_next("submit", 1, 402, CREDITS_ERROR)
    await make_due(store, task["id"])
    assert await resubmit() == 1
    failed = await get_task(relay_app, client, task["id"])
    assert failed["status"] == "failed"
    assert failed["error"]["upstream_status"] == 402
    entries = await history(relay_app, client, task["id"])
    assert [e["type"] for e in entries] == ["task.failed"]
    lease = await store.pool.fetchval("SELECT lease_owner FROM tasks WHERE id = $1", task["id"])
    assert lease is None
