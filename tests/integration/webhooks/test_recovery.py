"""Disabled subscriptions keep their events; recover, bulk retry, auto-disable, test events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import standardwebhooks
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.delivery.dispatcher import Dispatcher
from relay.http.schemas import BulkQueued, Delivery, SubscriptionTestEvent
from relay.keys import WEBHOOKS
from tests.helpers import auth, get_json, read_problem, submit_task, wait_for
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import (
    advance,
    deliver_all,
    expire_leases,
    subscribe,
    task_deliveries,
)
from tests.receiver import Receiver, Reply, running_receiver

# One quick retry, then dead: failed deliveries turn dead within a test's deadline.
ONE_RETRY = {"webhook_retry_schedule": "1ms"}
# Enough quick retries that a failing subscription keeps failing for the whole test.
MANY_RETRIES = {"webhook_retry_schedule": ",".join(["1ms"] * 200)}


async def post(api: TestClient, client: dict[str, str], path: str, body: Any = None) -> Any:
    """POST (with a JSON body when given) as `client`; the response."""
    return await api.post(path, json=body, headers=auth(client))


async def drain_until(dispatcher: Dispatcher, check: Any) -> Any:
    """Make every waiting delivery due and run passes until `check()` holds."""

    async def step() -> Any:
        await expire_leases(dispatcher.store)
        await dispatcher.run_once()
        return await check()

    return await wait_for(step)


async def subscription_state(store: Store, subscription_id: str) -> dict[str, Any]:
    """The subscription row as stored (failing_since is not part of the API)."""
    row = await store.pool.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)
    assert row is not None
    return dict(row)


# Events while a subscription is disabled


async def test_events_while_disabled_wait_and_are_sent_in_order_after_reenable(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    path = f"/v1/subscriptions/{subscription['id']}"
    dispatcher = dispatchers.make()
    resp = await relay_app.patch(path, json={"enabled": False}, headers=auth(client))
    assert resp.status == 200

    task = await submit_task(relay_app, client)
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")
    waiting = await task_deliveries(relay_app, client, task["id"])
    assert [d["status"] for d in waiting] == ["pending"] * 3
    assert all(d["next_attempt_at"] is None for d in waiting)  # nothing planned while disabled
    await expire_leases(store)  # even "due now", a disabled subscription's delivery waits
    assert await dispatcher.run_once() == 0
    assert receiver.requests == []

    resp = await relay_app.patch(path, json={"enabled": True}, headers=auth(client))
    assert resp.status == 200
    await deliver_all(dispatcher)
    assert [(r.event_type, r.json["data"]["id"]) for r in receiver.requests] == [
        ("task.queued", task["id"]),
        ("task.processing", task["id"]),
        ("task.succeeded", task["id"]),
    ]
    assert [r.webhook_id for r in receiver.requests] == [d["event_id"] for d in waiting]


# Recover


async def test_recover_queues_failed_dead_and_missing_events_since_a_time(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client, other = await new_client(), await new_client()
    start = datetime.now(UTC) - timedelta(seconds=1)
    await submit_task(relay_app, client)  # before the subscription existed: never owed
    subscription = await subscribe(
        relay_app, client, receiver.url("/hooks"), events=["task.succeeded"]
    )
    path = f"/v1/subscriptions/{subscription['id']}"
    dispatcher = dispatchers.make(**ONE_RETRY)

    receiver.default = Reply(500)
    lost = await submit_task(relay_app, client)  # task.queued: not subscribed to (yet)
    await advance(store, lost["id"], "succeeded")

    async def dead() -> Any:
        found = await task_deliveries(relay_app, client, lost["id"])
        return found if found[0]["status"] == "dead" else None

    (dead_delivery,) = await drain_until(dispatcher, dead)
    receiver.default = Reply(200)
    fine = await submit_task(relay_app, client)
    await advance(store, fine["id"], "succeeded")
    await deliver_all(dispatcher)
    await submit_task(relay_app, other)  # another client's: never this subscription's
    # Widen the filter: the task.queued events are now owed, and were never queued.
    resp = await relay_app.patch(path, json={"events": None}, headers=auth(client))
    assert resp.status == 200
    receiver.requests.clear()

    resp = await post(relay_app, client, f"{path}/recover", {"since": start.isoformat()})
    assert resp.status == 202
    assert BulkQueued.model_validate(await resp.json()) == BulkQueued(queued=3, more=False)
    # Queued now: pending again, so a second call finds nothing more to do.
    resp = await post(relay_app, client, f"{path}/recover", {"since": start.isoformat()})
    assert await resp.json() == {"queued": 0, "more": False}

    await deliver_all(dispatcher)
    got = [(r.event_type, r.json["data"]["id"]) for r in receiver.requests]
    # fine's task.succeeded was delivered already; lost's events go in the task's order.
    assert sorted(got) == sorted(
        [("task.queued", lost["id"]), ("task.succeeded", lost["id"]), ("task.queued", fine["id"])]
    )
    assert got.index(("task.queued", lost["id"])) < got.index(("task.succeeded", lost["id"]))
    after = await task_deliveries(relay_app, client, lost["id"])
    assert {d["status"] for d in after} == {"succeeded"}
    # The dead delivery was sent again as itself: same delivery, same webhook-id.
    again = next(d for d in after if d["id"] == dead_delivery["id"])
    assert again["attempt_count"] == dead_delivery["attempt_count"] + 1
    (fine_queued, _) = await task_deliveries(relay_app, client, fine["id"])
    assert fine_queued["event_type"] == "task.queued"
    assert {r.webhook_id for r in receiver.requests} == {d["event_id"] for d in after} | {
        fine_queued["event_id"]
    }


async def test_recover_since_bounds_the_events_and_an_admin_subscription_covers_everyone(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver
) -> None:
    client, admin = await new_client(), await new_client(admin=True)
    subscription = await subscribe(relay_app, admin, receiver.url("/hooks"), events=["task.failed"])
    path = f"/v1/subscriptions/{subscription['id']}"
    early = await submit_task(relay_app, client)
    (early_created,) = await store.pool.fetch(
        "SELECT created_at FROM webhook_events WHERE task_id = $1", early["id"]
    )
    late = await submit_task(relay_app, client)
    resp = await relay_app.patch(path, json={"events": None}, headers=auth(admin))
    assert resp.status == 200

    since = early_created["created_at"] + timedelta(microseconds=1)
    resp = await post(relay_app, admin, f"{path}/recover", {"since": since.isoformat()})
    assert await resp.json() == {"queued": 1, "more": False}  # late's task.queued only
    (queued,) = await task_deliveries(relay_app, admin, late["id"])
    assert queued["subscription_id"] == subscription["id"] and queued["status"] == "pending"
    assert await task_deliveries(relay_app, admin, early["id"]) == []

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    resp = await post(relay_app, admin, f"{path}/recover", {"since": future})
    assert await resp.json() == {"queued": 0, "more": False}
    # The client may not recover the admin's subscription: it does not exist for them.
    await read_problem(await post(relay_app, client, f"{path}/recover", {"since": future}), 404)


async def test_recover_is_bounded_per_call_and_says_more(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver
) -> None:
    client = await new_client()
    subscription = await subscribe(
        relay_app, client, receiver.url("/hooks"), events=["task.failed"]
    )
    path = f"/v1/subscriptions/{subscription['id']}"
    for _ in range(3):
        await submit_task(relay_app, client)
    await relay_app.patch(path, json={"events": None}, headers=auth(client))
    relay_app.server.app[WEBHOOKS].bulk_limit = 2
    since = {"since": "2000-01-01T00:00:00Z"}
    assert await (await post(relay_app, client, f"{path}/recover", since)).json() == {
        "queued": 2,
        "more": True,
    }
    assert await (await post(relay_app, client, f"{path}/recover", since)).json() == {
        "queued": 1,
        "more": False,
    }


async def test_recover_refuses_a_bad_body_and_unknown_subscriptions(
    relay_app: TestClient, new_client, receiver: Receiver
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    path = f"/v1/subscriptions/{subscription['id']}/recover"
    for body, loc in [({}, "/since"), ({"since": "yesterday"}, "/since"), ({"x": 1}, "/x")]:
        problem = await read_problem(await post(relay_app, client, path, body), 422)
        assert loc in [e["loc"] for e in problem["errors"]], problem
    unknown = "/v1/subscriptions/sub_unknown/recover"
    await read_problem(await post(relay_app, client, unknown, {"since": "2026-01-01"}), 404)


# Bulk retry


async def test_bulk_retry_by_filter_is_bounded_and_resends_with_the_same_webhook_ids(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client, stranger = await new_client(), await new_client()
    first = await subscribe(relay_app, client, receiver.url("/a"))
    second = await subscribe(relay_app, client, receiver.url("/b"))
    dispatcher = dispatchers.make(**ONE_RETRY)
    receiver.default = Reply(500)
    tasks = [await submit_task(relay_app, client) for _ in range(3)]

    async def all_dead() -> Any:
        found = [d for t in tasks for d in await task_deliveries(relay_app, client, t["id"])]
        return found if all(d["status"] == "dead" for d in found) else None

    dead = await drain_until(dispatcher, all_dead)
    assert len(dead) == 6
    receiver.default = Reply(200)
    receiver.requests.clear()

    wanted = {"subscription_id": first["id"], "status": "dead"}
    # Another client's filter on this subscription matches nothing of it.
    resp = await post(relay_app, stranger, "/v1/deliveries/retry", wanted)
    assert await resp.json() == {"queued": 0, "more": False}
    failed_only = {"subscription_id": first["id"], "status": "failed"}
    resp = await post(relay_app, client, "/v1/deliveries/retry", failed_only)
    assert await resp.json() == {"queued": 0, "more": False}
    future = {**wanted, "since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    resp = await post(relay_app, client, "/v1/deliveries/retry", future)
    assert await resp.json() == {"queued": 0, "more": False}

    relay_app.server.app[WEBHOOKS].bulk_limit = 2
    resp = await post(relay_app, client, "/v1/deliveries/retry", wanted)
    assert resp.status == 202
    assert BulkQueued.model_validate(await resp.json()) == BulkQueued(queued=2, more=True)
    resp = await post(relay_app, client, "/v1/deliveries/retry", wanted)
    assert await resp.json() == {"queued": 1, "more": False}

    await deliver_all(dispatcher)
    assert receiver.on("/b") == []
    ours = [d for d in dead if d["subscription_id"] == first["id"]]
    assert sorted(r.webhook_id for r in receiver.on("/a")) == sorted(d["event_id"] for d in ours)
    theirs = await get_json(relay_app, client, f"/v1/deliveries?subscription_id={second['id']}")
    assert {d["status"] for d in theirs["data"]} == {"dead"}


async def test_bulk_retry_refuses_statuses_it_cannot_retry(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    for body, loc in [({"status": "pending"}, "/status"), ({"since": "soon"}, "/since")]:
        resp = await post(relay_app, client, "/v1/deliveries/retry", body)
        problem = await read_problem(resp, 422)
        assert [e["loc"] for e in problem["errors"]] == [loc]


# Auto-disable


async def test_a_subscription_failing_for_the_disable_window_is_disabled_with_a_reason(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    failing = await subscribe(relay_app, client, receiver.url("/hooks"))
    async with running_receiver() as healthy_receiver:
        healthy = await subscribe(relay_app, client, healthy_receiver.url("/hooks"))
        dispatcher = dispatchers.make(webhook_disable_after_s="300ms", **MANY_RETRIES)
        receiver.default = Reply(500)
        task = await submit_task(relay_app, client)

        async def disabled() -> Any:
            found = await get_json(relay_app, client, f"/v1/subscriptions/{failing['id']}")
            return found if not found["enabled"] else None

        found = await drain_until(dispatcher, disabled)
        assert found["disabled_reason"].startswith(
            "every delivery attempt failed for more than 0.3s (since "
        )
        assert (await subscription_state(store, healthy["id"]))["failing_since"] is None
        still = await get_json(relay_app, client, f"/v1/subscriptions/{healthy['id']}")
        assert still["enabled"] is True and len(healthy_receiver.requests) == 1

        # Disabled, its deliveries wait; re-enabled, they are sent and the failure run is over.
        await advance(store, task["id"], "processing")
        receiver.default = Reply(200)
        receiver.requests.clear()
        resp = await relay_app.patch(
            f"/v1/subscriptions/{failing['id']}", json={"enabled": True}, headers=auth(client)
        )
        assert resp.status == 200
        assert (await subscription_state(store, failing["id"]))["failing_since"] is None
        await deliver_all(dispatcher)
        assert [r.event_type for r in receiver.requests] == ["task.queued", "task.processing"]


async def test_a_success_ends_the_run_of_failures(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(**MANY_RETRIES)
    receiver.script(500)
    task = await submit_task(relay_app, client)
    assert await dispatcher.run_once() == 1
    assert (await subscription_state(store, subscription["id"]))["failing_since"] is not None
    await drain_until(
        dispatcher,
        lambda: _delivered(relay_app, client, task["id"]),
    )
    assert (await subscription_state(store, subscription["id"]))["failing_since"] is None


async def _delivered(api: TestClient, client: dict[str, str], task_id: str) -> bool:
    return all(d["status"] == "succeeded" for d in await task_deliveries(api, client, task_id))


# Test events


async def test_test_event_goes_signed_to_that_subscription_only(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client, stranger = await new_client(), await new_client()
    target = await subscribe(relay_app, client, receiver.url("/a"))
    await subscribe(relay_app, client, receiver.url("/b"))
    path = f"/v1/subscriptions/{target['id']}/test"

    resp = await post(relay_app, client, path)
    assert resp.status == 202
    queued = Delivery.model_validate(await resp.json())
    assert resp.headers["Location"] == f"/v1/deliveries/{queued.id}"
    assert queued.event_type == "webhook.test" and queued.task_id is None
    assert queued.subscription_id == target["id"] and queued.status == "pending"

    await deliver_all(dispatchers.make())
    (got,) = receiver.requests
    assert got.path == "/a" and got.webhook_id == queued.event_id
    standardwebhooks.Webhook(target["secret"]).verify(got.body, got.headers)
    body = SubscriptionTestEvent.model_validate(got.json)
    assert body.id == queued.event_id and body.data.subscription_id == target["id"]

    listed = await get_json(relay_app, client, f"/v1/deliveries?subscription_id={target['id']}")
    assert [(d["id"], d["status"]) for d in listed["data"]] == [(queued.id, "succeeded")]
    # Not a task event: the event feed leaves it out.
    assert (await get_json(relay_app, client, "/v1/events"))["data"] == []

    await read_problem(await post(relay_app, stranger, path), 404)
    await relay_app.patch(
        f"/v1/subscriptions/{target['id']}", json={"enabled": False}, headers=auth(client)
    )
    await read_problem(await post(relay_app, client, path), 409)
