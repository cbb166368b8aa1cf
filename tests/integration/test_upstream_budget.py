"""The upstream budget: one ceiling for every replica, and submissions before polls."""

from __future__ import annotations

import asyncio
import time

from relay.core.store import Store
from relay.keys import UPSTREAM
from relay.polling.durations import DurationModel
from relay.polling.poller import Poller, PollerSettings
from relay.upstream.budget import UpstreamBudget
from tests.helpers import auth, submit, wait_for


async def set_bucket(store: Store, tokens: float) -> None:
    """Put exactly `tokens` in the shared bucket, refilled as of now."""
    await store.pool.execute(
        "UPDATE upstream_budget SET tokens = $1, refilled_at = clock_timestamp()", tokens
    )


async def test_two_replicas_share_one_ceiling(store: Store, database_url: str) -> None:
    rate = 40.0
    other = await Store.open(database_url, size=4)
    try:
        budgets = [UpstreamBudget(store, rate=rate), UpstreamBudget(other, rate=rate)]
        await set_bucket(store, 0)
        granted = [0, 0]
        started = time.monotonic()

        async def spend(i: int) -> None:
            for _ in range(40):  # bounded: at 40 rps a replica alone would need a second
                granted[i] += await budgets[i].wait(1, urgent=False)

        await asyncio.gather(spend(0), spend(1))
        elapsed = time.monotonic() - started
    finally:
        await other.close()
    # A token bucket never grants more than the rate over the time plus one full bucket,
    # however many replicas take from it.
    assert sum(granted) <= rate * elapsed + budgets[0].burst + 1
    assert sum(granted) == 80
    assert all(n > 0 for n in granted)


async def test_concurrent_submissions_share_one_chunk_and_none_is_deferred(
    store: Store,
) -> None:
    """A burst of urgent takes costs the bucket one chunk, not a chunk per caller."""
    budget = UpstreamBudget(store, rate=1000.0)  # chunks of 50 tokens, a bucket of 1,000
    await set_bucket(store, budget.burst)
    granted = await asyncio.gather(*(budget.take(1, urgent=True) for _ in range(40)))
    assert granted == [1] * 40
    left = await store.pool.fetchval("SELECT tokens FROM upstream_budget")
    # Everything taken is spent or kept for the next callers: 40 used, 10 still local.
    assert left >= budget.burst - 50 - 1  # (plus what refilled meanwhile, capped at the burst)


async def test_background_takers_leave_the_reserve_to_urgent_ones(store: Store) -> None:
    budget = UpstreamBudget(store, rate=0.01, burst=8)  # barely refills while the test runs
    await set_bucket(store, budget.reserve + 0.5)
    assert await budget.take(1, urgent=False) == 0  # no whole token above the reserve
    assert await budget.take(1, urgent=True) == 1  # the reserve is there for this
    await set_bucket(store, budget.reserve + 1.0)
    assert await budget.take(5, urgent=False) == 1  # only what lies above the reserve
    await set_bucket(store, budget.reserve)
    assert await budget.take(1, urgent=False) == 0
    assert await budget.take(5, urgent=True) == 2


async def test_a_poll_pass_claims_only_what_the_budget_pays_for(
    relay_app, new_client, sim, store, app, settings
) -> None:
    client = await new_client()
    tasks = [await submit(relay_app, auth(client)) for _ in range(10)]
    budget = UpstreamBudget(store, rate=0.01, burst=8)
    poller = Poller(
        store,
        app[UPSTREAM],
        PollerSettings.from_settings(settings),
        budget=budget,
        durations=DurationModel(store),
    )
    await store.pool.execute("UPDATE tasks SET next_poll_at = now()")
    await set_bucket(store, budget.reserve + 3.0)
    gets_before = len(sim.requests_to("get"))
    assert await poller.run_once() == 3
    assert len(sim.requests_to("get")) - gets_before == 3
    polled = await store.pool.fetchval("SELECT count(*) FROM tasks WHERE upstream_requests > 1")
    assert polled == 3
    assert len(tasks) == 10


async def test_submission_answers_at_once_when_the_budget_is_spent(
    start_relay, new_client, sim, store
) -> None:
    # 0.2 requests/s: once the bucket is empty, the next token is 5 s away.
    api = await start_relay(roles="api,poller", upstream_max_rps=0.2)
    client = await new_client()
    await set_bucket(store, 0)
    submits_before = len(sim.requests_to("submit"))
    started = time.monotonic()
    task = await submit(api, auth(client))
    answered_in = time.monotonic() - started

    assert answered_in < 2.5  # never waits for the 5 s the budget would take
    assert task["status"] == "queued"
    assert task["upstream_task_id"] is None
    assert len(sim.requests_to("submit")) == submits_before
    # Accepted durably: submitted as soon as the budget allows (submissions before polls).
    await set_bucket(store, 1.0)

    async def submitted() -> bool:
        row = await store.fetchrow("get_task", id=task["id"], scope=None)
        return row["upstream_task_id"] is not None

    await wait_for(submitted, timeout=15)


async def test_waiting_callers_queue_in_the_replica_and_urgent_ones_go_first(
    store: Store,
) -> None:
    budget = UpstreamBudget(store, rate=0.01, burst=8)
    await set_bucket(store, 0)
    background = [asyncio.create_task(budget.wait(urgent=False)) for _ in range(3)]
    await asyncio.sleep(0)  # queued first
    urgent = [asyncio.create_task(budget.wait(urgent=True)) for _ in range(2)]
    try:
        await set_bucket(store, 2.0)  # two tokens: below the reserve, so urgent only
        await asyncio.wait_for(asyncio.gather(*urgent), timeout=5)
        assert not any(task.done() for task in background)
        await set_bucket(store, budget.reserve + 3.0)
        await asyncio.wait_for(asyncio.gather(*background), timeout=5)
    finally:
        for task in [*background, *urgent]:
            task.cancel()
