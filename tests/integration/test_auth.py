"""Authentication and tenancy: every /v1 call needs an active key; clients see only their own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.identity.clients import revoke_client
from relay.upstream.simulator import SimulatorState
from tests.helpers import TASK, auth, read_problem
from tests.helpers import submit as create

NewClient = Callable[..., Awaitable[dict[str, str]]]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer garbage"},
        {"Authorization": "Bearer rk_notarealkeynotarealkeynotarealkey0123456"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "rk_missing_scheme"},
    ],
    ids=[
        "none",
        "empty",
        "scheme_only",
        "blank_key",
        "garbage",
        "unknown_rk",
        "basic",
        "no_scheme",
    ],
)
async def test_missing_or_unknown_key_is_401_problem(
    relay_app: TestClient, sim: SimulatorState, store: Store, headers: dict[str, str]
) -> None:
    for method, path in [("GET", "/v1/tasks"), ("POST", "/v1/tasks"), ("GET", "/v1/tasks/x")]:
        resp = await relay_app.request(method, path, json=TASK, headers=headers)
        await read_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert sim.requests_to("submit") == []
    assert await store.pool.fetchval("SELECT count(*) FROM tasks") == 0


async def test_key_is_case_sensitive_but_the_bearer_scheme_is_not(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    key = client["key"]
    swapped = key[:3] + key[3:].swapcase()
    assert swapped != key
    resp = await relay_app.get("/v1/tasks", headers={"Authorization": f"Bearer {swapped}"})
    await read_problem(resp, 401)
    resp = await relay_app.get("/v1/tasks", headers={"Authorization": f"bearer {key}"})
    assert resp.status == 200  # the scheme is case-insensitive (RFC 9110), the key is not


async def test_revoked_key_is_401_at_once(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client = await new_client("revokee")
    assert (await relay_app.get("/v1/tasks", headers=auth(client))).status == 200
    assert await revoke_client(store, "revokee") is True
    resp = await relay_app.get("/v1/tasks", headers=auth(client))
    await read_problem(resp, 401)
    resp = await relay_app.post("/v1/tasks", json=TASK, headers=auth(client))
    await read_problem(resp, 401)


async def test_revoking_one_client_leaves_others_working(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    gone = await new_client("gone")
    kept = await new_client("kept")
    await revoke_client(store, "gone")
    assert (await relay_app.get("/v1/tasks", headers=auth(gone))).status == 401
    assert (await relay_app.get("/v1/tasks", headers=auth(kept))).status == 200


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/events"), ("POST", "/cancel")],
    ids=["get", "events", "cancel"],
)
async def test_another_clients_task_is_404_like_a_missing_one(
    relay_app: TestClient,
    new_client: NewClient,
    sim: SimulatorState,
    method: str,
    suffix: str,
) -> None:
    a, b = await new_client("a"), await new_client("b")
    task = await create(relay_app, a)
    resp = await relay_app.request(method, f"/v1/tasks/{task['id']}{suffix}", headers=auth(b))
    hidden = await read_problem(resp, 404)
    resp = await relay_app.request(method, f"/v1/tasks/tsk_missing{suffix}", headers=auth(b))
    missing = await read_problem(resp, 404)
    assert hidden == missing  # nothing tells B that A's task exists
    assert sim.requests_to("cancel") == []
    # A still sees (and may act on) its own task.
    resp = await relay_app.request(method, f"/v1/tasks/{task['id']}{suffix}", headers=auth(a))
    assert resp.status in (200, 202), await resp.text()


async def test_list_shows_only_the_clients_own_tasks(
    relay_app: TestClient, new_client: NewClient
) -> None:
    a, b = await new_client("a"), await new_client("b")
    a_ids = {(await create(relay_app, a))["id"] for _ in range(2)}
    b_ids = {(await create(relay_app, b))["id"] for _ in range(3)}
    for client, own in ((a, a_ids), (b, b_ids)):
        resp = await relay_app.get("/v1/tasks", headers=auth(client))
        assert {t["id"] for t in (await resp.json())["data"]} == own


async def test_paging_with_any_cursor_never_reveals_another_clients_tasks(
    relay_app: TestClient, new_client: NewClient
) -> None:
    a, b = await new_client("a"), await new_client("b")
    await create(relay_app, a)
    mine = await create(relay_app, b)
    await create(relay_app, a)
    resp = await relay_app.get(
        "/v1/tasks", params={"cursor": "tsk_zzzzzzzzzzzzzzzzzzzzzzzzzz"}, headers=auth(b)
    )
    assert [t["id"] for t in (await resp.json())["data"]] == [mine["id"]]


async def test_admin_key_sees_every_clients_tasks(
    relay_app: TestClient, new_client: NewClient
) -> None:
    a, b = await new_client("a"), await new_client("b")
    admin = await new_client("ops", admin=True)
    task_a, task_b = await create(relay_app, a), await create(relay_app, b)
    for task in (task_a, task_b):
        resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=auth(admin))
        assert resp.status == 200
        assert (await resp.json())["id"] == task["id"]
        resp = await relay_app.get(f"/v1/tasks/{task['id']}/events", headers=auth(admin))
        assert resp.status == 200
    resp = await relay_app.get("/v1/tasks", headers=auth(admin))
    assert {t["id"] for t in (await resp.json())["data"]} == {task_a["id"], task_b["id"]}


async def test_operational_endpoints_need_no_key(relay_app: TestClient) -> None:
    assert (await relay_app.get("/healthz")).status == 200
    assert (await relay_app.get("/readyz")).status == 200
