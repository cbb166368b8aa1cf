"""A client's signing secret (per-task webhook_url), and what revoking its keys leaves running."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import standardwebhooks
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.identity.clients import revoke_client
from tests.helpers import auth, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import advance, deliver_all, subscribe, task_deliveries
from tests.receiver import Receiver

# RELAY's default overlap (Settings.secret_rotation_overlap_s) is 24 hours.
OVERLAP_S = 24 * 3600


async def test_rotated_client_secret_signs_task_webhooks_alongside_the_old_one_for_24h(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    old_secret = client["secret"]
    resp = await relay_app.post("/v1/client/rotate-secret", headers=auth(client))
    assert resp.status == 200, await resp.text()
    rotated = await resp.json()
    new_secret = rotated["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert abs(until.timestamp() - (time.time() + OVERLAP_S)) < 60

    # Inside the window: two signatures on a per-task webhook; each secret verifies alone.
    task = await submit_task(relay_app, client, webhook_url=receiver.url("/task"))
    assert await dispatchers.make().run_once() == 1
    (during,) = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old_secret, new_secret):
        standardwebhooks.Webhook(secret).verify(during.body, during.headers)

    # After the window, the new secret alone signs.
    later = dispatchers.make(clock=lambda: time.time() + OVERLAP_S + 60)
    await advance(store, task["id"], "processing")
    assert await later.run_once() == 1
    after = receiver.requests[-1]
    sent_at = datetime.fromtimestamp(int(after.headers["webhook-timestamp"]), UTC)
    expected = standardwebhooks.Webhook(new_secret).sign(
        after.webhook_id, sent_at, after.body.decode()
    )
    assert after.headers["webhook-signature"] == expected


async def test_rotating_the_client_secret_leaves_subscription_secrets_alone(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/sub"))
    assert (await relay_app.post("/v1/client/rotate-secret", headers=auth(client))).status == 200
    await submit_task(relay_app, client)
    assert await dispatchers.make().run_once() == 1
    (received,) = receiver.requests
    assert received.headers["webhook-signature"].count("v1,") == 1
    standardwebhooks.Webhook(subscription["secret"]).verify(received.body, received.headers)


async def test_rotate_secret_is_refused_to_an_auditor(relay_app: TestClient, new_client) -> None:
    auditor = await new_client(role="auditor")
    resp = await relay_app.post("/v1/client/rotate-secret", headers=auth(auditor))
    await read_problem(resp, 403)


async def test_a_client_whose_keys_are_all_revoked_keeps_receiving_for_accepted_tasks(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    # Documented choice: revoking keys stops the client's API calls; webhooks for tasks it
    # already submitted keep coming, through its subscriptions and per-task URLs alike.
    client = await new_client("leaving")
    await subscribe(relay_app, client, receiver.url("/sub"))
    task = await submit_task(relay_app, client, webhook_url=receiver.url("/task"))
    assert await revoke_client(store, "leaving")
    assert (await relay_app.get("/v1/tasks", headers=auth(client))).status == 401

    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")
    await deliver_all(dispatchers.make())

    for path in ("/sub", "/task"):
        types = [r.event_type for r in receiver.on(path)]
        assert types == ["task.queued", "task.processing", "task.succeeded"], path
    for received in receiver.on("/task"):
        standardwebhooks.Webhook(client["secret"]).verify(received.body, received.headers)
    admin = await new_client(admin=True)
    deliveries = await task_deliveries(relay_app, admin, task["id"])
    assert len(deliveries) == 6 and {d["status"] for d in deliveries} == {"succeeded"}
