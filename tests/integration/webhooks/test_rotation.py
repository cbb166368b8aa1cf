"""Secret rotation: both secrets sign during the overlap, only the new one after it."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import standardwebhooks
import svix.webhooks
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import auth, get_json, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import advance, subscribe
from tests.receiver import Receiver

# RELAY's default overlap (Settings.secret_rotation_overlap_s) is 24 hours.
OVERLAP_S = 24 * 3600


async def test_rotated_secret_signs_alongside_the_old_one_until_the_window_ends(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    old_secret = subscription["secret"]
    resp = await relay_app.post(
        f"/v1/subscriptions/{subscription['id']}/rotate-secret", headers=auth(client)
    )
    assert resp.status == 200
    rotated = await resp.json()
    new_secret = rotated["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret
    assert rotated["id"] == subscription["id"]
    found = await get_json(relay_app, client, f"/v1/subscriptions/{subscription['id']}")
    assert "secret" not in found

    # Inside the window: two signatures; each secret verifies on its own.
    task = await submit_task(relay_app, client)
    assert await dispatchers.make().run_once() == 1
    (during,) = receiver.requests
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    for secret in (old_secret, new_secret):
        standardwebhooks.Webhook(secret).verify(during.body, during.headers)
        svix.webhooks.Webhook(secret).verify(during.body, during.headers)

    # A dispatcher whose clock is past the window signs with the new secret only.
    later = dispatchers.make(clock=lambda: time.time() + OVERLAP_S + 60)
    await advance(store, task["id"], "processing")
    assert await later.run_once() == 1
    after = receiver.requests[-1]
    sent_at = datetime.fromtimestamp(int(after.headers["webhook-timestamp"]), UTC)
    expected = standardwebhooks.Webhook(new_secret).sign(
        after.webhook_id, sent_at, after.body.decode()
    )
    old_signature = standardwebhooks.Webhook(old_secret).sign(
        after.webhook_id, sent_at, after.body.decode()
    )
    assert after.headers["webhook-signature"] == expected
    assert old_signature not in after.headers["webhook-signature"]


async def test_rotating_another_clients_subscription_is_404(
    relay_app: TestClient, new_client, receiver: Receiver
) -> None:
    owner, other = await new_client(), await new_client()
    subscription = await subscribe(relay_app, owner, receiver.url("/hooks"))
    resp = await relay_app.post(
        f"/v1/subscriptions/{subscription['id']}/rotate-secret", headers=auth(other)
    )
    await read_problem(resp, 404)
