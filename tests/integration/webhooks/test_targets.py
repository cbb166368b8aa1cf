"""Who receives what: event-type and model filters, per-task URLs, client isolation."""

from __future__ import annotations

import standardwebhooks
import svix.webhooks
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import auth, get_json, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import advance, deliver_all, subscribe, task_deliveries
from tests.receiver import Receiver

MODEL = "kling-video-o1"


async def test_subscription_receives_only_its_event_types_and_models(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    await subscribe(relay_app, client, receiver.url("/finished"), events=["task.succeeded"])
    await subscribe(relay_app, client, receiver.url("/kling"), models=["kling-video-o1"])
    other = await subscribe(relay_app, client, receiver.url("/other-model"), models=[MODEL])
    # The API accepts known models only; a subscription to a model this relay does not
    # serve (one whose schema was since removed) must still receive nothing.
    await store.pool.execute(
        "UPDATE subscriptions SET models = $1 WHERE id = $2", ["other-model"], other["id"]
    )
    dispatcher = dispatchers.make()

    task = await submit_task(relay_app, client)
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")
    await deliver_all(dispatcher)

    assert [r.event_type for r in receiver.on("/finished")] == ["task.succeeded"]
    assert [r.event_type for r in receiver.on("/kling")] == [
        "task.queued",
        "task.processing",
        "task.succeeded",
    ]
    assert receiver.on("/other-model") == []
    assert len(await task_deliveries(relay_app, client, task["id"])) == 4


async def test_per_task_url_receives_its_events_signed_with_the_client_secret(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    dispatcher = dispatchers.make()

    only_final = await submit_task(
        relay_app,
        client,
        webhook_url=receiver.url("/task-final"),
        webhook_events=["task.succeeded", "task.failed"],
    )
    every = await submit_task(relay_app, client, webhook_url=receiver.url("/task-all"))
    for task in (only_final, every):
        await advance(store, task["id"], "processing")
        await advance(store, task["id"], "failed", error={"code": "x", "message": "y"})
    await deliver_all(dispatcher)

    assert [r.event_type for r in receiver.on("/task-final")] == ["task.failed"]
    assert [r.event_type for r in receiver.on("/task-all")] == [
        "task.queued",
        "task.processing",
        "task.failed",
    ]
    for request in receiver.requests:
        standardwebhooks.Webhook(client["secret"]).verify(request.body, request.headers)
        svix.webhooks.Webhook(client["secret"]).verify(request.body, request.headers)
    (delivery,) = await task_deliveries(relay_app, client, only_final["id"])
    assert delivery["subscription_id"] is None
    assert delivery["url"] == receiver.url("/task-final")


async def test_clients_see_only_their_own_webhooks_and_admins_see_everyones(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    alice, bob, admin = await new_client(), await new_client(), await new_client(admin=True)
    await subscribe(relay_app, alice, receiver.url("/alice"))
    bob_sub = await subscribe(relay_app, bob, receiver.url("/bob"))
    await subscribe(relay_app, admin, receiver.url("/admin"))
    dispatcher = dispatchers.make()

    task = await submit_task(relay_app, alice)
    await deliver_all(dispatcher)

    assert [r.json["data"]["id"] for r in receiver.on("/alice")] == [task["id"]]
    assert [r.json["data"]["id"] for r in receiver.on("/admin")] == [task["id"]]
    assert receiver.on("/bob") == []
    listed = await get_json(relay_app, admin, f"/v1/deliveries?subscription_id={bob_sub['id']}")
    assert listed["data"] == []  # never even queued for bob

    # Alice sees her own delivery only; the admin sees both; bob sees nothing of it.
    (alice_delivery,) = await task_deliveries(relay_app, alice, task["id"])
    assert len(await task_deliveries(relay_app, admin, task["id"])) == 2
    await get_json(relay_app, bob, f"/v1/tasks/{task['id']}/deliveries", status=404)
    await get_json(relay_app, bob, f"/v1/deliveries/{alice_delivery['id']}", status=404)
    resp = await relay_app.post(f"/v1/deliveries/{alice_delivery['id']}/retry", headers=auth(bob))
    await read_problem(resp, 404)
    assert (await get_json(relay_app, bob, "/v1/deliveries"))["data"] == []
    assert (await get_json(relay_app, bob, "/v1/events"))["data"] == []
    assert len((await get_json(relay_app, alice, "/v1/events"))["data"]) == 1
    assert len((await get_json(relay_app, admin, "/v1/events"))["data"]) == 1
