"""A malformed cursor is the same 422 on every list, naming the parameter (issue 10 item 10)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.helpers import auth, get_json, read_problem, submit_task

# Before: 200 with an empty page on /v1/tasks, the first page on /v1/deliveries.
GARBAGE = ("garbage", "tsk_", "dlv_123", "sub_" + "!" * 26, "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz")


async def test_a_malformed_cursor_is_422_at_query_cursor_on_every_list(
    relay_app: TestClient, new_client
) -> None:
    client = await new_client()
    task = await submit_task(relay_app, client)
    for path in ("/v1/tasks", "/v1/deliveries", "/v1/subscriptions"):
        for cursor in (*GARBAGE, task["id"] if path != "/v1/tasks" else "dlv_" + "0" * 32):
            resp = await relay_app.get(path, params={"cursor": cursor}, headers=auth(client))
            problem = await read_problem(resp, 422)
            assert [e["loc"] for e in problem["errors"]] == ["/query/cursor"], (path, cursor)
    for after in GARBAGE:
        resp = await relay_app.get("/v1/events", params={"after": after}, headers=auth(client))
        problem = await read_problem(resp, 422)
        assert [e["loc"] for e in problem["errors"]] == ["/query/after"], after


async def test_id_cursors_and_an_empty_cursor_still_page(relay_app: TestClient, new_client) -> None:
    client = await new_client()
    older, newer = await submit_task(relay_app, client), await submit_task(relay_app, client)
    page = await get_json(relay_app, client, "/v1/tasks?limit=1")
    assert [t["id"] for t in page["data"]] == [newer["id"]]
    assert page["next_cursor"] == newer["id"]  # a cursor is the last id of the page
    rest = await get_json(relay_app, client, f"/v1/tasks?limit=1&cursor={page['next_cursor']}")
    assert [t["id"] for t in rest["data"]] == [older["id"]]
    first = await get_json(relay_app, client, "/v1/tasks?cursor=")
    assert [t["id"] for t in first["data"]] == [newer["id"], older["id"]]
    deliveries = await get_json(relay_app, client, "/v1/deliveries?cursor=")
    assert deliveries == {"data": [], "next_cursor": None}
