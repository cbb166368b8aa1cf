"""The subscriptions API: create (secret shown once), list, get, patch, delete, isolation."""

from __future__ import annotations

import base64

from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.core.vocabulary import EVENT_TYPES
from relay.http.schemas import Subscription, SubscriptionPage
from tests.helpers import auth, get_json, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import subscribe, task_deliveries
from tests.receiver import Receiver

# Standard Webhooks asks for secrets of 24 to 64 random bytes.
MIN_SECRET_BYTES = 24


async def test_create_answers_201_with_an_id_and_a_whsec_secret(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    resp = await relay_app.post(
        "/v1/subscriptions",
        json={"url": "https://svc-a.internal/hooks/video", "description": "video service"},
        headers=auth(client),
    )
    assert resp.status == 201
    created = await resp.json()
    Subscription.model_validate(created)  # the shape /openapi.json documents
    assert created["id"].startswith("sub_")
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) >= MIN_SECRET_BYTES
    assert created["url"] == "https://svc-a.internal/hooks/video"
    assert created["events"] == list(EVENT_TYPES)  # default: every event type
    assert created["models"] is None  # default: every model
    assert created["description"] == "video service"
    assert created["enabled"] is True
    assert created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")

    found = await get_json(relay_app, client, f"/v1/subscriptions/{created['id']}")
    assert "secret" not in found
    assert found == {k: v for k, v in created.items() if k != "secret"}
    other = await subscribe(relay_app, client, "https://svc-b.internal/hooks")
    assert other["secret"] != created["secret"]


async def test_list_is_newest_first_with_a_cursor(relay_app: TestClient, new_client) -> None:
    client = await new_client()
    ids = [
        (await subscribe(relay_app, client, f"https://svc.internal/{n}"))["id"] for n in range(3)
    ]
    first = await get_json(relay_app, client, "/v1/subscriptions?limit=2")
    SubscriptionPage.model_validate(first)
    assert [s["id"] for s in first["data"]] == ids[::-1][:2]
    assert all("secret" not in s for s in first["data"])
    rest = await get_json(
        relay_app, client, f"/v1/subscriptions?limit=2&cursor={first['next_cursor']}"
    )
    assert [s["id"] for s in rest["data"]] == ids[:1]
    assert rest["next_cursor"] is None


async def test_patch_changes_only_the_given_fields(relay_app: TestClient, new_client) -> None:
    client = await new_client()
    created = await subscribe(
        relay_app,
        client,
        "https://svc.internal/a",
        events=["task.succeeded"],
        models=["kling-video-o1"],
        description="first",
    )
    path = f"/v1/subscriptions/{created['id']}"

    resp = await relay_app.patch(
        path, json={"url": "https://svc.internal/b", "enabled": False}, headers=auth(client)
    )
    assert resp.status == 200
    patched = await resp.json()
    assert patched["url"] == "https://svc.internal/b"
    assert patched["enabled"] is False
    assert patched["events"] == ["task.succeeded"]
    assert patched["models"] == ["kling-video-o1"]
    assert patched["description"] == "first"

    resp = await relay_app.patch(
        path,
        # An explicit null is a value: every event type, every model (unknown models are 422).
        json={"events": None, "models": None, "description": None, "enabled": True},
        headers=auth(client),
    )
    patched = await resp.json()
    assert patched["events"] == list(EVENT_TYPES)
    assert patched["models"] is None
    assert patched["description"] is None
    assert patched["enabled"] is True
    assert patched["url"] == "https://svc.internal/b"


async def test_delete_answers_204_and_the_subscription_is_gone(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    created = await subscribe(relay_app, client, "https://svc.internal/a")
    path = f"/v1/subscriptions/{created['id']}"
    resp = await relay_app.delete(path, headers=auth(client))
    assert resp.status == 204
    await read_problem(await relay_app.get(path, headers=auth(client)), 404)
    await read_problem(await relay_app.delete(path, headers=auth(client)), 404)
    assert (await get_json(relay_app, client, "/v1/subscriptions"))["data"] == []


async def test_deleting_a_subscription_kills_its_waiting_deliveries(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    created = await subscribe(relay_app, client, receiver.url("/hooks"))
    receiver.script(500)
    task = await submit_task(relay_app, client)
    await dispatchers.make(webhook_retry_schedule="1h").run_once()
    (failed,) = await task_deliveries(relay_app, client, task["id"])
    assert failed["status"] == "failed"

    await relay_app.delete(f"/v1/subscriptions/{created['id']}", headers=auth(client))
    (dead,) = await task_deliveries(relay_app, client, task["id"])
    assert dead["status"] == "dead"
    assert dead["last_error"] == "subscription deleted"
    resp = await relay_app.post(f"/v1/deliveries/{dead['id']}/retry", headers=auth(client))
    await read_problem(resp, 409)


async def test_another_clients_subscription_answers_404_and_an_admin_sees_all(
    relay_app: TestClient, new_client
) -> None:
    owner, other, admin = await new_client(), await new_client(), await new_client(admin=True)
    created = await subscribe(relay_app, owner, "https://svc.internal/a")
    path = f"/v1/subscriptions/{created['id']}"
    await read_problem(await relay_app.get(path, headers=auth(other)), 404)
    resp = await relay_app.patch(path, json={"enabled": False}, headers=auth(other))
    await read_problem(resp, 404)
    await read_problem(await relay_app.delete(path, headers=auth(other)), 404)
    assert (await get_json(relay_app, other, "/v1/subscriptions"))["data"] == []

    assert (await get_json(relay_app, admin, path))["id"] == created["id"]
    listed = await get_json(relay_app, admin, "/v1/subscriptions")
    assert [s["id"] for s in listed["data"]] == [created["id"]]


async def test_invalid_subscriptions_are_422_with_pointers(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    cases = [
        ({"url": "not a url"}, "/url"),
        ({"url": "ftp://svc.internal/a"}, "/url"),
        ({"url": "https://svc.internal/a", "events": ["task.exploded"]}, "/events/0"),
        ({"url": "https://svc.internal/a", "events": []}, "/events"),
        ({"url": "https://svc.internal/a", "colour": "blue"}, "/colour"),
        ({}, "/url"),
    ]
    for body, pointer in cases:
        resp = await relay_app.post("/v1/subscriptions", json=body, headers=auth(client))
        problem = await read_problem(resp, 422)
        assert pointer in [e["loc"] for e in problem["errors"]], (body, problem)
    resp = await relay_app.post("/v1/subscriptions", data=b"{nope", headers=auth(client))
    await read_problem(resp, 400)


async def test_a_literal_address_in_a_denied_network_is_refused_at_creation(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    for url in ("http://169.254.169.254/latest/meta-data", "http://[fe80::1]/hooks"):
        resp = await relay_app.post("/v1/subscriptions", json={"url": url}, headers=auth(client))
        problem = await read_problem(resp, 422)
        assert problem["errors"][0]["loc"] == "/url"
    created = await subscribe(relay_app, client, "https://svc.internal/a")
    resp = await relay_app.patch(
        f"/v1/subscriptions/{created['id']}",
        json={"url": "http://169.254.169.254/"},
        headers=auth(client),
    )
    await read_problem(resp, 422)


async def test_subscription_routes_need_a_key(relay_app: TestClient, store: Store) -> None:
    for method, path in [
        ("POST", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions/sub_x"),
        ("PATCH", "/v1/subscriptions/sub_x"),
        ("DELETE", "/v1/subscriptions/sub_x"),
        ("POST", "/v1/subscriptions/sub_x/rotate-secret"),
        ("GET", "/v1/deliveries"),
        ("GET", "/v1/deliveries/dlv_x"),
        ("POST", "/v1/deliveries/dlv_x/retry"),
        ("GET", "/v1/tasks/tsk_x/deliveries"),
        ("GET", "/v1/events"),
    ]:
        resp = await relay_app.request(method, path)
        await read_problem(resp, 401)
