"""Who did what: every action is recorded once, read by admins only, and never changed."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from relay.core.store import Store
from relay.identity.clients import KEY_PREFIX_LENGTH
from tests.helpers import (
    TASK,
    auth,
    get_json,
    history,
    read_problem,
    relay_env,
    run_relay,
    submit_task,
)

NewClient = Callable[..., Awaitable[dict[str, str]]]


async def audit_log(api: TestClient, admin: dict[str, str], query: str = "") -> dict:
    return await get_json(api, admin, f"/v1/audit-log{query}")


async def test_task_creation_records_client_key_prefix_and_request_id(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client("svc-a")
    admin = await new_client("ops", admin=True)
    resp = await relay_app.post(
        "/v1/tasks", json=TASK, headers={**auth(client), "X-Request-Id": "req-audit-1"}
    )
    assert resp.status == 202, await resp.text()
    task = await resp.json()
    page = await audit_log(relay_app, admin, "?action=task.created")
    [entry] = page["data"]
    assert entry["actor"] == "svc-a"
    assert entry["actor_key_prefix"] == client["key"][:KEY_PREFIX_LENGTH]
    assert entry["request_id"] == "req-audit-1"
    assert entry["resource_type"] == "task" and entry["resource_id"] == task["id"]
    assert entry["details"]["model"] == TASK["model"]
    assert entry["id"].startswith("act_") and entry["at"].endswith("Z")


async def test_an_idempotent_replay_records_no_second_creation(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client()
    admin = await new_client(admin=True)
    headers = {**auth(client), "Idempotency-Key": "order-1"}
    assert (await relay_app.post("/v1/tasks", json=TASK, headers=headers)).status == 202
    assert (await relay_app.post("/v1/tasks", json=TASK, headers=headers)).status == 200
    page = await audit_log(relay_app, admin, "?action=task.created")
    assert len(page["data"]) == 1


async def test_a_cancel_request_is_in_the_log_and_in_the_task_history(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client("svc-a")
    admin = await new_client(admin=True)
    task = await submit_task(relay_app, client)
    resp = await relay_app.post(
        f"/v1/tasks/{task['id']}/cancel", headers={**auth(client), "X-Request-Id": "req-cancel"}
    )
    assert resp.status == 202, await resp.text()
    page = await audit_log(relay_app, admin, f"?resource_type=task&resource_id={task['id']}")
    assert [e["action"] for e in page["data"]] == ["task.cancel_requested", "task.created"]
    cancel = page["data"][0]
    assert cancel["actor"] == "svc-a" and cancel["request_id"] == "req-cancel"
    entries = await history(relay_app, client, task["id"])
    assert [(e["seq"], e["type"], e["source"]) for e in entries] == [
        (1, "task.queued", "upstream"),
        (2, "task.cancel_requested", "relay"),
    ]
    assert entries[1]["from_status"] is None and entries[1]["to_status"] is None


async def test_a_refused_cancel_records_nothing(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client = await new_client()
    task = await submit_task(relay_app, client)
    await store.pool.execute("UPDATE tasks SET status = 'succeeded' WHERE id = $1", task["id"])
    resp = await relay_app.post(f"/v1/tasks/{task['id']}/cancel", headers=auth(client))
    await read_problem(resp, 409)
    assert (
        await store.pool.fetchval(
            "SELECT count(*) FROM actions WHERE action = 'task.cancel_requested'"
        )
        == 0
    )
    assert [e["type"] for e in await history(relay_app, client, task["id"])] == ["task.queued"]


async def test_subscription_changes_are_recorded_without_secrets(
    relay_app: TestClient, new_client: NewClient
) -> None:
    client = await new_client("svc-a")
    admin = await new_client(admin=True)
    created = await relay_app.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook"}, headers=auth(client)
    )
    assert created.status == 201
    sub = await created.json()
    path = f"/v1/subscriptions/{sub['id']}"
    patched = await relay_app.patch(path, json={"description": "x"}, headers=auth(client))
    assert patched.status == 200
    rotated = await relay_app.post(f"{path}/rotate-secret", headers=auth(client))
    assert rotated.status == 200
    new_secret = (await rotated.json())["secret"]
    assert (await relay_app.delete(path, headers=auth(client))).status == 204
    page = await audit_log(relay_app, admin, f"?resource_id={sub['id']}")
    assert [e["action"] for e in page["data"]] == [
        "subscription.deleted",
        "subscription.secret_rotated",
        "subscription.updated",
        "subscription.created",
    ]
    assert {e["actor"] for e in page["data"]} == {"svc-a"}
    assert page["data"][2]["details"] == {"changes": {"description": "x"}}
    text = json.dumps(page)
    assert sub["secret"] not in text and new_secret not in text


async def test_a_delivery_retry_is_recorded(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    client = await new_client("svc-a")
    admin = await new_client(admin=True)
    await submit_task(relay_app, client, webhook_url="http://127.0.0.1:9/hook")
    delivery_id = await store.pool.fetchval("SELECT id FROM deliveries")
    await store.pool.execute("UPDATE deliveries SET status = 'dead' WHERE id = $1", delivery_id)
    resp = await relay_app.post(f"/v1/deliveries/{delivery_id}/retry", headers=auth(client))
    assert resp.status == 202, await resp.text()
    [entry] = (await audit_log(relay_app, admin, "?action=delivery.retried"))["data"]
    assert entry["resource_id"] == delivery_id and entry["actor"] == "svc-a"
    assert entry["details"]["previous_status"] == "dead"


async def test_a_client_key_gets_403(relay_app: TestClient, new_client: NewClient) -> None:
    client = await new_client()
    await read_problem(await relay_app.get("/v1/audit-log", headers=auth(client)), 403)


async def test_filters_and_keyset_pages_walk_the_log_newest_first(
    relay_app: TestClient, new_client: NewClient, store: Store
) -> None:
    a = await new_client("svc-a")
    b = await new_client("svc-b")
    admin = await new_client(admin=True)
    tasks_a = [await submit_task(relay_app, a) for _ in range(5)]
    await submit_task(relay_app, b)
    seen: list[str] = []
    cursor = ""
    while True:
        page = await audit_log(relay_app, admin, f"?actor=svc-a&limit=2{cursor}")
        assert len(page["data"]) <= 2
        seen += [e["resource_id"] for e in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [t["id"] for t in reversed(tasks_a)]
    # A time range: [from, to) on the action's time.
    times = [r["at"] for r in await store.pool.fetch("SELECT at FROM actions ORDER BY id")]
    assert len(set(times)) == len(times)  # one transaction each, so distinct times
    middle = times[2].isoformat()
    after = await get_json(relay_app, admin, f"/v1/audit-log?from={middle.replace('+', '%2B')}")
    assert len(after["data"]) == len(times) - 2
    before = await get_json(relay_app, admin, f"/v1/audit-log?to={middle.replace('+', '%2B')}")
    assert len(before["data"]) == 2


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ("cursor=nope", "/query/cursor"),
        ("limit=0", "/query/limit"),
        ("from=yesterday", "/query/from"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "/query/to"),
        ("colour=red", "/query/colour"),
    ],
)
async def test_bad_audit_log_parameters_are_422_naming_the_field(
    relay_app: TestClient, new_client: NewClient, query: str, loc: str
) -> None:
    admin = await new_client(admin=True)
    resp = await relay_app.get(f"/v1/audit-log?{query}", headers=auth(admin))
    body = await read_problem(resp, 422)
    assert loc in [e["loc"] for e in body["errors"]]


async def test_the_database_refuses_to_change_or_delete_an_action(store: Store) -> None:
    await store.pool.execute(
        "INSERT INTO actions (actor, action, resource_type) VALUES ('x', 'task.created', 'task')"
    )
    for sql in ("UPDATE actions SET actor = 'y'", "DELETE FROM actions", "TRUNCATE actions"):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await store.pool.execute(sql)
    assert await store.pool.fetchval("SELECT actor FROM actions") == "x"


async def test_the_cli_records_itself_creating_and_revoking_keys(
    database_url: str, store: Store
) -> None:
    env = relay_env(RELAY_DATABASE_URL=database_url, RELAY_LOG_LEVEL="warning")
    created = await run_relay("keys", "create", "--name", "svc-a", env=env)
    assert created.returncode == 0, created.stderr
    revoked = await run_relay("keys", "revoke", "svc-a", env=env)
    assert revoked.returncode == 0, revoked.stderr
    rows = await store.pool.fetch("SELECT * FROM actions ORDER BY id")
    assert [(r["action"], r["resource_type"], r["resource_id"]) for r in rows] == [
        ("client.created", "client", "svc-a"),
        ("client.key_revoked", "client", "svc-a"),
    ]
    for row in rows:
        assert row["actor"] == "cli" or row["actor"].startswith("cli:")
        assert row["request_id"] is None
    key = next(w for w in created.stdout.split() if w.startswith("rk_"))
    assert rows[0]["details"] == {"role": "client", "key_prefix": key[:KEY_PREFIX_LENGTH]}
    assert key not in str([dict(r) for r in rows])
