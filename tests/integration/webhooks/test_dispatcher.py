"""The dispatcher role: crash safety, shutdown, NOTIFY wake-ups, independent targets."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import structlog
import structlog.testing
from aiohttp.test_utils import TestClient

from relay.core.store import Db, Store
from relay.keys import DISPATCH_STORE, RUNTIME, STORE
from tests.helpers import get_json, submit_task, wait_for
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import (
    advance,
    claim_as,
    expire_leases,
    listen_backends,
    subscribe,
    task_deliveries,
    wait_for_delivery,
)
from tests.receiver import Receiver, Reply

LIFECYCLE = ["task.queued", "task.processing", "task.succeeded"]
# Far longer than any test: only a NOTIFY (not the backstop poll) can wake the dispatcher.
NO_BACKSTOP = {"dispatch_idle_poll_s": "1h"}


async def test_dispatcher_killed_mid_delivery_leaves_it_to_another_with_same_webhook_id(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    first, second = dispatchers.make(), dispatchers.make()
    receiver.script(Reply(200, delay_s=60))  # the first attempt hangs: "mid-delivery"
    task = await submit_task(relay_app, client)

    killed = asyncio.create_task(first.run_once())
    await receiver.wait_for_requests(1)
    killed.cancel()  # the process dies: nothing recorded, nothing released
    await asyncio.gather(killed, return_exceptions=True)

    (leased,) = await task_deliveries(relay_app, client, task["id"])
    assert leased["status"] == "pending" and leased["attempts"] == []
    assert await second.run_once() == 0  # still leased: nobody sends it twice at once

    await expire_leases(store)
    assert await second.run_once() == 1
    (done,) = await task_deliveries(relay_app, client, task["id"])
    assert done["status"] == "succeeded"
    assert [a["status_code"] for a in done["attempts"]] == [200]
    assert len(receiver.requests) == 2
    assert receiver.requests[0].webhook_id == receiver.requests[1].webhook_id


async def test_abandoned_claim_is_delivered_by_another_dispatcher_after_its_lease(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    abandoned, successor = dispatchers.make(), dispatchers.make()
    task = await submit_task(relay_app, client)

    (claimed,) = await abandoned.claim_due()  # claimed, never sent nor completed
    assert await successor.run_once() == 0
    await expire_leases(store)
    assert await successor.run_once() == 1

    (request,) = receiver.requests
    assert request.webhook_id == claimed["event_id"]
    (done,) = await task_deliveries(relay_app, client, task["id"])
    assert done["status"] == "succeeded"


async def test_a_claim_touches_no_index_and_its_lease_alone_keeps_others_off(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    """The lease is an unindexed column: claiming is a HOT update (0013, docs/benchmarks.md)."""
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    task = await submit_task(relay_app, client)
    partition = await store.pool.fetchval(
        "SELECT relay_history_partition_name('deliveries', date_trunc('month', created_at)::date)"
        " FROM tasks WHERE id = $1",
        task["id"],
    )
    async with store.pool.acquire() as conn, conn.transaction():
        (claimed,) = await claim_as(Db(conn), "test-dispatcher")
        # Counted for this transaction alone: the claim wrote a heap-only tuple.
        hot = await conn.fetchval(
            "SELECT pg_stat_get_xact_tuples_hot_updated($1::regclass)", partition
        )
        assert hot == 1
    row = await store.pool.fetchrow(
        "SELECT next_attempt_at, leased_until, lease_owner FROM deliveries WHERE id = $1",
        claimed["id"],
    )
    assert row["lease_owner"] == "test-dispatcher"
    assert row["next_attempt_at"] <= datetime.now(UTC) < row["leased_until"]

    other = dispatchers.make()
    assert await other.run_once() == 0  # due, but leased: not sent twice at once
    await store.pool.execute(
        "UPDATE deliveries SET leased_until = now() - interval '1 second' WHERE id = $1",
        claimed["id"],
    )
    assert await other.run_once() == 1  # the lease ran out: due again, same webhook-id
    (request,) = receiver.requests
    assert request.webhook_id == claimed["event_id"]
    (done,) = await task_deliveries(relay_app, client, task["id"])
    assert done["status"] == "succeeded" and done["attempt_count"] == 2


async def test_an_attempt_whose_lease_ran_out_mid_send_is_still_in_the_history(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    slow, successor = dispatchers.make(webhook_timeout_s="60s"), dispatchers.make()
    receiver.script(Reply(200, delay_s=60))  # the first answer is held until released
    task = await submit_task(relay_app, client)

    first = asyncio.create_task(slow.run_once())
    await receiver.wait_for_requests(1)
    await store.pool.execute("UPDATE deliveries SET leased_until = now() - interval '1 second'")
    assert await successor.run_once() == 1  # the lease ran out: sent again, same webhook-id
    (done,) = await task_deliveries(relay_app, client, task["id"])
    assert done["status"] == "succeeded" and [a["attempt"] for a in done["attempts"]] == [2]

    receiver.release()  # the first attempt ends too, after its lease: history, not state
    await first
    (done,) = await task_deliveries(relay_app, client, task["id"])
    assert done["status"] == "succeeded" and done["attempt_count"] == 2
    assert [(a["attempt"], a["status_code"]) for a in done["attempts"]] == [(1, 200), (2, 200)]
    assert receiver.requests[0].webhook_id == receiver.requests[1].webhook_id


async def test_each_delivery_is_logged_at_debug_and_not_above(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make()
    config = structlog.get_config()
    seen = {}
    try:
        for level in (logging.DEBUG, logging.INFO):  # RELAY_LOG_LEVEL, as configured
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
            with structlog.testing.capture_logs() as logs:
                await submit_task(relay_app, client)
                assert await dispatcher.run_once() == 1
            seen[level] = [e for e in logs if e["event"] == "webhook_delivered"]
    finally:
        structlog.configure(**config)
    assert [e["status_code"] for e in seen[logging.DEBUG]] == [200]
    assert seen[logging.INFO] == []


async def test_release_on_shutdown_hands_leases_back_at_once(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    stopping, other = dispatchers.make(), dispatchers.make()
    task = await submit_task(relay_app, client)

    assert len(await stopping.claim_due()) == 1
    await stopping.release()
    (released,) = await task_deliveries(relay_app, client, task["id"])
    assert released["status"] == "pending" and released["attempt_count"] == 0

    assert await other.run_once() == 1  # no lease to wait out
    assert len(receiver.requests) == 1


async def test_notify_wakes_the_dispatcher_and_its_listen_connection_reconnects(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    await dispatchers.start(**NO_BACKSTOP)
    (listener,) = await wait_for(lambda: listen_backends(store))

    await submit_task(relay_app, client)
    await receiver.wait_for_requests(1, timeout=5)

    await store.pool.execute("SELECT pg_terminate_backend($1)", listener)

    async def replaced() -> list[int] | None:
        pids = await listen_backends(store)
        return pids if pids and listener not in pids else None

    await wait_for(replaced)
    await submit_task(relay_app, client)
    await receiver.wait_for_requests(2, timeout=5)


async def test_a_stopped_dispatcher_leaves_no_listen_wait_behind(
    store: Store, dispatchers: Dispatchers
) -> None:
    """Stopping used to leave the LISTEN loop's pending queue read for asyncio to complain of."""
    dispatcher = await dispatchers.start(**NO_BACKSTOP)
    await wait_for(lambda: listen_backends(store))
    waiting = {t for t in asyncio.all_tasks() if "Queue.get" in repr(t.get_coro())}
    assert waiting  # the LISTEN loop is waiting for a notification

    dispatcher.stop()

    async def ended() -> bool | None:
        return all(t.done() for t in waiting) or None

    await wait_for(ended)
    assert all(t.cancelled() for t in waiting)


async def test_slow_subscriber_does_not_hold_up_other_subscribers(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/slow"))
    await subscribe(relay_app, client, receiver.url("/fast"))
    receiver.script(Reply(200, delay_s=60), path="/slow")
    await dispatchers.start(webhook_timeout_s="60s")

    task = await submit_task(relay_app, client)
    await receiver.wait_for_requests(1, path="/slow")
    await receiver.wait_for_requests(1, path="/fast")
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")

    fast = await receiver.wait_for_requests(3, path="/fast")
    assert [r.event_type for r in fast] == ["task.queued", "task.processing", "task.succeeded"]
    # Meanwhile the slow subscriber's first event is still in flight, and its later events
    # wait for it (order per subscriber and task).
    assert len(receiver.on("/slow")) == 1
    receiver.release()
    await wait_for_delivery(relay_app, client, task["id"], "succeeded", count=6)
    assert [r.event_type for r in receiver.on("/slow")] == [
        "task.queued",
        "task.processing",
        "task.succeeded",
    ]


async def test_replicas_share_the_outbox_sending_each_event_once_and_in_order(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    paths = ("/one", "/two")
    for path in paths:
        await subscribe(relay_app, client, receiver.url(path))
    for _ in range(3):
        await dispatchers.start(dispatch_batch_size=4)

    tasks = [await submit_task(relay_app, client) for _ in range(8)]
    for status in ("processing", "succeeded"):
        for task in tasks:
            await advance(store, task["id"], status)

    expected = len(paths) * len(tasks) * len(LIFECYCLE)

    async def all_succeeded() -> bool:
        page = await get_json(relay_app, client, "/v1/deliveries?status=succeeded&limit=200")
        return len(page["data"]) == expected

    await wait_for(all_succeeded)
    sent = [(r.path, r.webhook_id) for r in receiver.requests]
    assert len(sent) == len(set(sent)) == expected
    for path in paths:
        for task in tasks:
            seen = [r.event_type for r in receiver.on(path) if r.json["data"]["id"] == task["id"]]
            assert seen == LIFECYCLE


async def test_never_more_requests_at_once_than_dispatch_concurrency(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    receiver.default = Reply(200, delay_s=0.2)  # slow enough for requests to overlap
    tasks = [await submit_task(relay_app, client) for _ in range(6)]
    await dispatchers.start(dispatch_concurrency=2, dispatch_per_target_concurrency=8)

    for task in tasks:
        await wait_for_delivery(relay_app, client, task["id"], "succeeded")
    assert len(receiver.requests) == 6
    assert receiver.max_active == 2


async def test_the_dispatcher_role_claims_on_connections_that_keep_one_plan(
    start_relay: Any,
) -> None:
    """Planning the claim anew each call cost more than running it (docs/benchmarks.md)."""
    api = await start_relay(roles="api,dispatcher")
    app = api.server.app
    dispatcher = app[RUNTIME].loop("dispatcher")
    assert dispatcher.store is app[DISPATCH_STORE]
    assert await app[DISPATCH_STORE].pool.fetchval("SHOW plan_cache_mode") == ("force_generic_plan")
    assert await app[STORE].pool.fetchval("SHOW plan_cache_mode") == "auto"
