"""GET /v1/events: every webhook body the client may see, oldest first, resumable."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.http.schemas import EventPage
from tests.helpers import auth, get_json, read_problem, submit_task
from tests.integration.webhooks.helpers import advance


async def test_a_consumer_that_was_down_catches_up_page_by_page(
    relay_app: TestClient, store: Store, new_client
) -> None:
    client = await new_client()
    first = await submit_task(relay_app, client)
    second = await submit_task(relay_app, client)
    await advance(store, first["id"], "processing")
    await advance(store, first["id"], "succeeded")

    page = await get_json(relay_app, client, "/v1/events?limit=3")
    EventPage.model_validate(page)  # the shape /openapi.json documents
    assert [(e["type"], e["data"]["id"]) for e in page["data"]] == [
        ("task.queued", first["id"]),
        ("task.queued", second["id"]),
        ("task.processing", first["id"]),
    ]
    assert page["next_cursor"]
    rest = await get_json(relay_app, client, f"/v1/events?limit=3&after={page['next_cursor']}")
    assert [e["type"] for e in rest["data"]] == ["task.succeeded"]
    assert rest["next_cursor"] is None
    event = rest["data"][0]
    assert event["id"].startswith("evt_") and event["timestamp"].endswith("Z")
    assert event["data"]["status"] == "succeeded"

    # Resuming from the id of the last event seen, as a webhook consumer would.
    after_id = await get_json(relay_app, client, f"/v1/events?after={page['data'][1]['id']}")
    assert [e["id"] for e in after_id["data"]] == [page["data"][2]["id"], event["id"]]
    latest = await get_json(relay_app, client, f"/v1/events?after={event['id']}")
    assert latest == {"data": [], "next_cursor": None}


async def test_events_filter_by_type(relay_app: TestClient, store: Store, new_client) -> None:
    client = await new_client()
    task = await submit_task(relay_app, client)
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "failed", error={"code": "boom", "message": "no"})
    found = await get_json(relay_app, client, "/v1/events?types=task.failed,task.succeeded")
    assert [e["type"] for e in found["data"]] == ["task.failed"]


async def test_invalid_feed_parameters_are_422(relay_app: TestClient, new_client) -> None:
    owner, other = await new_client(), await new_client()
    await submit_task(relay_app, owner)
    (event,) = (await get_json(relay_app, owner, "/v1/events"))["data"]
    for query, pointer in [
        ("after=garbage", "/query/after"),
        ("after=evt_unknown", "/query/after"),
        (f"after={event['id']}", "/query/after"),  # another client's event
        ("types=task.exploded", "/query/types"),
        ("limit=0", "/query/limit"),
    ]:
        resp = await relay_app.get(f"/v1/events?{query}", headers=auth(other))
        problem = await read_problem(resp, 422)
        assert problem["errors"][0]["loc"] == pointer, (query, problem)
