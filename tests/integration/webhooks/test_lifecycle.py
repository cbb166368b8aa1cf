"""A task's webhooks arrive in order, signed so any Standard Webhooks library verifies them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import standardwebhooks
import svix.webhooks
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import get_json, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import advance, subscribe
from tests.receiver import Receiver

LIFECYCLE = ["task.queued", "task.processing", "task.succeeded"]


async def test_lifecycle_arrives_in_order_and_verifies_with_standardwebhooks_and_svix(
    relay_app: TestClient, store: Store, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    await dispatchers.start()

    task = await submit_task(relay_app, client, metadata={"order_id": "A-17"})
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")

    got = await receiver.wait_for_requests(3)
    assert [r.event_type for r in got] == LIFECYCLE
    for request in got:
        assert (
            standardwebhooks.Webhook(subscription["secret"]).verify(request.body, request.headers)
            == request.json
        )
        svix.webhooks.Webhook(subscription["secret"]).verify(request.body, request.headers)
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("mindvideo-relay/")
        assert request.webhook_id == request.json["id"]
        assert request.webhook_id.startswith("evt_")
        body = request.json
        assert body["data"]["id"] == task["id"]
        assert body["data"]["status"] == body["type"].removeprefix("task.")
        assert body["data"]["metadata"] == {"order_id": "A-17"}
    assert got[0].json["data"]["output"] is None
    assert got[2].json["data"]["output"] == {"video_url": f"https://cdn.example/{task['id']}.mp4"}
    assert got[2].json["data"]["completed_at"] is not None
    # The same bodies are what the event feed serves.
    feed = await get_json(relay_app, client, "/v1/events")
    assert feed["data"] == [r.json for r in got]


async def test_tampered_body_or_old_timestamp_fails_verification(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    subscription = await subscribe(relay_app, client, receiver.url("/hooks"))
    await dispatchers.start()
    await submit_task(relay_app, client)
    (request,) = await receiver.wait_for_requests(1)
    secret = subscription["secret"]

    tampered = request.body.replace(b'"queued"', b'"succeeded"')
    assert tampered != request.body
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(tampered, request.headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(secret).verify(tampered, request.headers)

    # A captured request replayed later: re-signing is impossible without the secret, and
    # the original signature does not cover another timestamp.
    old = str(int(request.headers["webhook-timestamp"]) - 3600)
    replayed = {**request.headers, "webhook-timestamp": old}
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(request.body, replayed)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(secret).verify(request.body, replayed)
    # Even correctly signed, an hour-old timestamp is refused.
    signed_old = {
        **replayed,
        "webhook-signature": standardwebhooks.Webhook(secret).sign(
            request.webhook_id, datetime.fromtimestamp(int(old), UTC), request.body.decode()
        ),
    }
    with pytest.raises(standardwebhooks.WebhookVerificationError, match="too old"):
        standardwebhooks.Webhook(secret).verify(request.body, signed_old)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(secret).verify(request.body, signed_old)
