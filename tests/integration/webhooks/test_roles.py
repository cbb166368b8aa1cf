"""Roles: a client sees its own, an admin sees and changes everything, an auditor reads
everything and changes nothing."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.delivery.dispatcher import Dispatcher
from relay.upstream.simulator import SimulatorState
from tests.helpers import TASK, auth, get_json, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import subscribe
from tests.receiver import Receiver

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


async def two_clients_with_everything(
    relay_app: TestClient, new_client, receiver: Receiver, dispatcher: Dispatcher
) -> tuple[dict, dict, list[dict], list[dict]]:
    """Clients a and b, each with a subscription, a task and its delivered webhook."""
    a, b = await new_client("a"), await new_client("b")
    tasks, subscriptions = [], []
    for client in (a, b):
        subscriptions.append(await subscribe(relay_app, client, receiver.url(f"/{client}")))
        tasks.append(await submit_task(relay_app, client))
    assert await dispatcher.run_once() == 2
    return a, b, tasks, subscriptions


async def test_an_auditor_reads_every_clients_tasks_histories_deliveries_and_events(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    _, _, tasks, subscriptions = await two_clients_with_everything(
        relay_app, new_client, receiver, dispatchers.make()
    )
    auditor = await new_client("audit", role="auditor")
    listed = await get_json(relay_app, auditor, "/v1/tasks")
    assert {t["id"] for t in listed["data"]} == {t["id"] for t in tasks}
    assert {t["client"] for t in listed["data"]} == {"a", "b"}
    for task in tasks:
        assert (await get_json(relay_app, auditor, f"/v1/tasks/{task['id']}"))["id"] == task["id"]
        history = await get_json(relay_app, auditor, f"/v1/tasks/{task['id']}/events")
        assert [e["type"] for e in history["data"]] == ["task.queued"]
        deliveries = await get_json(relay_app, auditor, f"/v1/tasks/{task['id']}/deliveries")
        assert len(deliveries["data"]) == 1
        delivery_id = deliveries["data"][0]["id"]
        assert (await get_json(relay_app, auditor, f"/v1/deliveries/{delivery_id}"))["id"]
    assert len((await get_json(relay_app, auditor, "/v1/deliveries"))["data"]) == 2
    subs = await get_json(relay_app, auditor, "/v1/subscriptions")
    assert {s["id"] for s in subs["data"]} == {s["id"] for s in subscriptions}
    for subscription in subscriptions:
        found = await get_json(relay_app, auditor, f"/v1/subscriptions/{subscription['id']}")
        assert "secret" not in found
    feed = await get_json(relay_app, auditor, "/v1/events")
    assert {e["data"]["id"] for e in feed["data"]} == {t["id"] for t in tasks}


async def test_every_write_route_answers_403_to_an_auditor_and_changes_nothing(
    relay_app: TestClient,
    app: web.Application,
    store: Store,
    sim: SimulatorState,
    new_client,
    receiver: Receiver,
    dispatchers: Dispatchers,
) -> None:
    a, _, tasks, subscriptions = await two_clients_with_everything(
        relay_app, new_client, receiver, dispatchers.make()
    )
    delivery = (await get_json(relay_app, a, f"/v1/tasks/{tasks[0]['id']}/deliveries"))["data"][0]
    ids = {
        "task_id": tasks[0]["id"],
        "subscription_id": subscriptions[0]["id"],
        "delivery_id": delivery["id"],
    }
    auditor = await new_client("audit", role="auditor")
    before = await store.pool.fetchval(
        "SELECT md5(string_agg(t::text, '' ORDER BY 1)) FROM (SELECT s::text AS t FROM"
        " subscriptions s UNION ALL SELECT k::text FROM tasks k UNION ALL"
        " SELECT d::text FROM deliveries d UNION ALL SELECT c::text FROM clients c) x"
    )
    submits = len(sim.requests_to("submit"))

    writes = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if route.method in WRITE_METHODS and path.startswith("/v1"):
            writes.append((route.method, path.format(**ids)))
    assert len(writes) >= 7  # tasks, cancel, subscriptions x4, retry, client secret
    for method, path in writes:
        resp = await relay_app.request(method, path, json=TASK, headers=auth(auditor))
        problem = await read_problem(resp, 403)
        assert "auditor" in problem["detail"], (method, path)

    after = await store.pool.fetchval(
        "SELECT md5(string_agg(t::text, '' ORDER BY 1)) FROM (SELECT s::text AS t FROM"
        " subscriptions s UNION ALL SELECT k::text FROM tasks k UNION ALL"
        " SELECT d::text FROM deliveries d UNION ALL SELECT c::text FROM clients c) x"
    )
    assert after == before
    assert len(sim.requests_to("submit")) == submits
    assert sim.requests_to("cancel") == []


async def test_an_admin_still_sees_and_writes_everything(
    relay_app: TestClient, new_client, sim: SimulatorState
) -> None:
    a = await new_client("a")
    admin = await new_client("ops", role="admin")
    task = await submit_task(relay_app, a)
    resp = await relay_app.post(f"/v1/tasks/{task['id']}/cancel", headers=auth(admin))
    assert resp.status == 202, await resp.text()
    assert len(sim.requests_to("cancel")) == 1
    mine = await submit_task(relay_app, admin)
    assert mine["client"] == "ops"


async def test_admins_and_auditors_filter_tasks_by_client_and_clients_only_see_their_own(
    relay_app: TestClient, new_client
) -> None:
    a, b = await new_client("a"), await new_client("b")
    a_ids = {(await submit_task(relay_app, a))["id"] for _ in range(2)}
    b_ids = {(await submit_task(relay_app, b))["id"]}
    for role in ("admin", "auditor"):
        viewer = await new_client(f"v-{role}", role=role)
        for name, expected in (("a", a_ids), ("b", b_ids), ("nobody", set())):
            page = await get_json(relay_app, viewer, f"/v1/tasks?client={name}")
            assert {t["id"] for t in page["data"]} == expected, (role, name)
    # A client naming itself sees its tasks; naming another sees nothing of it.
    assert {t["id"] for t in (await get_json(relay_app, a, "/v1/tasks?client=a"))["data"]} == a_ids
    assert (await get_json(relay_app, a, "/v1/tasks?client=b"))["data"] == []
    resp = await relay_app.get("/v1/tasks?client=", headers=auth(a))
    problem = await read_problem(resp, 422)
    assert problem["errors"][0]["loc"] == "/query/client"
