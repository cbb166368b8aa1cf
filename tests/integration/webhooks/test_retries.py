"""Failed attempts: recorded, retried on schedule with the same webhook-id, dead after it."""

from __future__ import annotations

import time
from datetime import datetime

import standardwebhooks
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import auth, get_json, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import (
    advance,
    deliver_all,
    expire_leases,
    subscribe,
    task_deliveries,
    wait_for_delivery,
)
from tests.receiver import Receiver, Reply

# Long enough that a failed delivery is never due again by itself during a test: the test
# decides when it is due (expire_leases), so nothing depends on timing.
NEVER_DUE = {"webhook_retry_schedule": "1h,1h"}


async def test_receiver_failing_twice_then_succeeding_gets_same_webhook_id_each_time(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    receiver.script(Reply(500, b"boom"), Reply(503, b"busy"))
    await dispatchers.start()

    task = await submit_task(relay_app, client)
    got = await receiver.wait_for_requests(3)
    (delivery,) = await wait_for_delivery(relay_app, client, task["id"], "succeeded")

    assert len({r.webhook_id for r in got}) == 1
    for request in got:
        standardwebhooks.Webhook(subscription["secret"]).verify(request.body, request.headers)
    assert delivery["attempt_count"] == 3
    assert delivery["delivered_at"] is not None
    attempts = delivery["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert [a["response_excerpt"] for a in attempts] == ["boom", "busy", "ok"]
    assert [a["error"] for a in attempts] == ["HTTP 500", "HTTP 503", None]
    assert all(a["latency_ms"] >= 0 and a["started_at"].endswith("Z") for a in attempts)


async def test_later_event_waits_while_earlier_event_of_same_task_is_retried(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(**NEVER_DUE)
    receiver.script(500)

    first = await submit_task(relay_app, client)
    assert await dispatcher.run_once() == 1  # task.queued fails: retry in an hour
    await advance(store, first["id"], "processing")
    await advance(store, first["id"], "succeeded")
    assert await dispatcher.run_once() == 0  # processing waits behind the failed queued

    # Another task is not held up by the first one's failing event.
    second = await submit_task(relay_app, client)
    assert await dispatcher.run_once() == 1
    assert receiver.requests[-1].json["data"]["id"] == second["id"]

    await expire_leases(store)  # the retry of task.queued comes due
    await deliver_all(dispatcher)
    first_events = [r.event_type for r in receiver.requests if r.json["data"]["id"] == first["id"]]
    assert first_events == ["task.queued", "task.queued", "task.processing", "task.succeeded"]


async def test_dead_delivery_is_sent_again_by_manual_retry_with_same_webhook_id(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    receiver.default = Reply(500, b"down")
    await dispatchers.start(webhook_retry_schedule="50ms")

    task = await submit_task(relay_app, client)
    (dead,) = await wait_for_delivery(relay_app, client, task["id"], "dead")
    assert dead["attempt_count"] == 2  # the first attempt and one retry from the schedule
    assert dead["last_status_code"] == 500
    assert dead["next_attempt_at"] is None

    receiver.default = Reply(200)
    resp = await relay_app.post(f"/v1/deliveries/{dead['id']}/retry", headers=auth(client))
    assert resp.status == 202
    assert (await resp.json())["status"] == "pending"
    (done,) = await wait_for_delivery(relay_app, client, task["id"], "succeeded")

    assert len(receiver.requests) == 3
    assert len({r.webhook_id for r in receiver.requests}) == 1
    assert [a["status_code"] for a in done["attempts"]] == [500, 500, 200]

    # A succeeded delivery is not retried.
    resp = await relay_app.post(f"/v1/deliveries/{dead['id']}/retry", headers=auth(client))
    await read_problem(resp, 409)


async def test_failed_delivery_retry_makes_it_due_now(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(**NEVER_DUE)
    receiver.script(500)
    task = await submit_task(relay_app, client)
    await dispatcher.run_once()
    (failed,) = await task_deliveries(relay_app, client, task["id"])
    assert failed["status"] == "failed"
    assert await dispatcher.run_once() == 0

    resp = await relay_app.post(f"/v1/deliveries/{failed['id']}/retry", headers=auth(client))
    assert resp.status == 202
    assert await dispatcher.run_once() == 1
    (done,) = await task_deliveries(relay_app, client, task["id"])
    assert done["status"] == "succeeded"


async def test_pending_delivery_cannot_be_retried(
    relay_app: TestClient, new_client, receiver: Receiver
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    task = await submit_task(relay_app, client)
    (pending,) = await task_deliveries(relay_app, client, task["id"])
    resp = await relay_app.post(f"/v1/deliveries/{pending['id']}/retry", headers=auth(client))
    await read_problem(resp, 409)
    resp = await relay_app.post("/v1/deliveries/dlv_unknown/retry", headers=auth(client))
    await read_problem(resp, 404)


async def test_410_gone_disables_the_subscription_until_patched_enabled(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make()
    receiver.script(410)

    task = await submit_task(relay_app, client)
    assert await dispatcher.run_once() == 1
    (gone,) = await task_deliveries(relay_app, client, task["id"])
    assert gone["status"] == "dead" and gone["last_status_code"] == 410
    found = await get_json(relay_app, client, f"/v1/subscriptions/{subscription['id']}")
    assert found["enabled"] is False
    assert "410" in found["disabled_reason"]

    # Events while disabled are queued for it and wait (issue 10 item 8: they used to be lost).
    await advance(store, task["id"], "processing")
    _, waiting = await task_deliveries(relay_app, client, task["id"])
    assert waiting["status"] == "pending" and waiting["next_attempt_at"] is None
    assert await dispatcher.run_once() == 0

    resp = await relay_app.patch(
        f"/v1/subscriptions/{subscription['id']}", json={"enabled": True}, headers=auth(client)
    )
    assert resp.status == 200
    assert (await resp.json())["enabled"] is True
    await advance(store, task["id"], "succeeded")
    await deliver_all(dispatcher)
    assert [r.event_type for r in receiver.requests] == [
        "task.queued",
        "task.processing",
        "task.succeeded",
    ]


async def test_a_410_is_recorded_and_disables_its_subscription_in_one_transaction(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    """No crash can fall between them: the attempt saying 410 and the disabled subscription."""
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    receiver.script(410)
    task = await submit_task(relay_app, client)
    assert await dispatchers.make().run_once() == 1

    (gone,) = await task_deliveries(relay_app, client, task["id"])
    assert gone["status"] == "dead"
    writers = await store.pool.fetchrow(
        "SELECT (SELECT xmin::text FROM deliveries WHERE id = $1) AS delivery,"
        " (SELECT xmin::text FROM delivery_attempts WHERE delivery_id = $1) AS attempt,"
        " (SELECT xmin::text FROM subscriptions WHERE id = $2 AND NOT enabled) AS subscription",
        gone["id"],
        subscription["id"],
    )
    assert writers["subscription"] is not None
    assert writers["delivery"] == writers["attempt"] == writers["subscription"]


async def test_redirect_is_a_failed_attempt_and_is_not_followed(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(**NEVER_DUE)
    receiver.script(Reply(307, b"", {"Location": receiver.url("/elsewhere")}))

    task = await submit_task(relay_app, client)
    await dispatcher.run_once()
    (delivery,) = await task_deliveries(relay_app, client, task["id"])
    assert delivery["status"] == "failed"
    assert delivery["last_status_code"] == 307
    assert receiver.on("/elsewhere") == []


async def test_timeout_is_a_failed_attempt(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(webhook_timeout_s="200ms", **NEVER_DUE)
    receiver.script(Reply(200, delay_s=30))

    task = await submit_task(relay_app, client)
    await dispatcher.run_once()
    (delivery,) = await task_deliveries(relay_app, client, task["id"])
    assert delivery["status"] == "failed"
    assert delivery["last_status_code"] is None
    assert delivery["last_error"] == "timed out after 0.2s"
    (attempt,) = delivery["attempts"]
    assert attempt["status_code"] is None
    assert 150 <= attempt["latency_ms"] < 5000


async def test_retry_after_on_429_is_honoured_when_longer_than_the_schedule(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(webhook_retry_schedule="1s")
    receiver.script(Reply(429, b"slow down", {"Retry-After": "120"}))

    task = await submit_task(relay_app, client)
    await dispatcher.run_once()
    (delivery,) = await task_deliveries(relay_app, client, task["id"])
    assert delivery["status"] == "failed"
    due = datetime.fromisoformat(delivery["next_attempt_at"]).timestamp()
    assert due - time.time() > 100


async def test_response_body_is_kept_only_as_a_bounded_excerpt(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/hooks"))
    dispatcher = dispatchers.make(**NEVER_DUE)
    receiver.script(Reply(500, b"x" * (4 * 1024 * 1024)))

    task = await submit_task(relay_app, client)
    await dispatcher.run_once()
    (delivery,) = await task_deliveries(relay_app, client, task["id"])
    (attempt,) = delivery["attempts"]
    assert attempt["response_excerpt"] == "x" * 1024
