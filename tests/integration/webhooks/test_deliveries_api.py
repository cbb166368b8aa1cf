"""GET /v1/deliveries: filters and cursor; GET /v1/deliveries/{id} with attempts."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from relay.http.schemas import Delivery, DeliveryPage
from relay.http.webhooks import TaskDeliveryList
from tests.helpers import auth, get_json, read_problem, submit_task
from tests.integration.webhooks.conftest import Dispatchers
from tests.integration.webhooks.helpers import deliver_all, subscribe
from tests.receiver import Receiver


async def test_deliveries_filter_by_status_subscription_and_task_with_a_cursor(
    relay_app: TestClient, new_client, receiver: Receiver, dispatchers: Dispatchers
) -> None:
    client = await new_client()
    first = await subscribe(relay_app, client, receiver.url("/one"))
    second = await subscribe(relay_app, client, receiver.url("/two"))
    tasks = [await submit_task(relay_app, client) for _ in range(2)]  # 2 tasks x 2 subs
    receiver.script(500, path="/two")
    dispatcher = dispatchers.make(webhook_retry_schedule="1h")
    await deliver_all(dispatcher)

    everything = await get_json(relay_app, client, "/v1/deliveries")
    DeliveryPage.model_validate(everything)  # the shape /openapi.json documents
    assert len(everything["data"]) == 4 and everything["next_cursor"] is None
    ids = [d["id"] for d in everything["data"]]
    assert ids == sorted(ids, reverse=True)  # newest first

    page = await get_json(relay_app, client, "/v1/deliveries?limit=3")
    rest = await get_json(relay_app, client, f"/v1/deliveries?limit=3&cursor={page['next_cursor']}")
    assert [d["id"] for d in page["data"] + rest["data"]] == ids
    assert rest["next_cursor"] is None

    failed = await get_json(relay_app, client, "/v1/deliveries?status=failed")
    assert [d["subscription_id"] for d in failed["data"]] == [second["id"]]
    assert failed["data"][0]["last_status_code"] == 500
    by_sub = await get_json(relay_app, client, f"/v1/deliveries?subscription_id={first['id']}")
    assert {d["status"] for d in by_sub["data"]} == {"succeeded"}
    assert len(by_sub["data"]) == 2
    by_task = await get_json(relay_app, client, f"/v1/deliveries?task_id={tasks[0]['id']}")
    assert {d["task_id"] for d in by_task["data"]} == {tasks[0]["id"]}
    assert len(by_task["data"]) == 2
    assert all("attempts" not in d for d in everything["data"])

    one = await get_json(relay_app, client, f"/v1/deliveries/{failed['data'][0]['id']}")
    Delivery.model_validate(one)
    TaskDeliveryList.model_validate(
        await get_json(relay_app, client, f"/v1/tasks/{tasks[1]['id']}/deliveries")
    )
    assert one["event_type"] == "task.queued"
    assert [a["status_code"] for a in one["attempts"]] == [500]


async def test_invalid_delivery_filters_are_422(relay_app: TestClient, new_client) -> None:
    client = await new_client()
    for query in ("status=lost", "limit=0", "limit=500", "colour=blue"):
        resp = await relay_app.get(f"/v1/deliveries?{query}", headers=auth(client))
        await read_problem(resp, 422)
    await read_problem(await relay_app.get("/v1/deliveries/dlv_x", headers=auth(client)), 404)
    resp = await relay_app.get("/v1/tasks/tsk_unknown/deliveries", headers=auth(client))
    await read_problem(resp, 404)


async def test_ids_or_cursors_holding_nul_are_404_or_422_not_500(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    for path in (
        "/v1/subscriptions/sub_%00",
        "/v1/deliveries/dlv_%00",
        "/v1/tasks/t%00/deliveries",
    ):
        await read_problem(await relay_app.get(path, headers=auth(client)), 404)
    for path in ("/v1/deliveries?cursor=a%00", "/v1/events?after=evt_%00"):
        await read_problem(await relay_app.get(path, headers=auth(client)), 422)
