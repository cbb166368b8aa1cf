"""A client has several keys: rotating one keeps the tenant (tasks, subscriptions, name)."""

from __future__ import annotations

import re

from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import TASK
from tests.integration.test_cli import KEY, SECRET, bearer, create_key, keys

PREFIX = re.compile(r"\brk_[A-Za-z0-9_\-]{8}…")


async def add_key(database_url: str, name: str) -> str:
    run = await keys(database_url, "add", name)
    assert run.returncode == 0, run.stderr
    [key] = KEY.findall(run.stdout)
    assert not SECRET.search(run.stdout)  # the signing secret is the client's, not the key's
    return key


def key_lines(listing: str, name: str) -> list[list[str]]:
    return [ln.split("\t") for ln in listing.splitlines() if ln.startswith(f"{name}\t")]


async def test_rotating_a_key_keeps_the_clients_tasks_and_subscriptions(
    database_url: str, relay_app: TestClient
) -> None:
    old, _ = await create_key(database_url, "svc-a")
    resp = await relay_app.post("/v1/tasks", json=TASK, headers=bearer(old))
    assert resp.status == 202
    task = await resp.json()
    resp = await relay_app.post(
        "/v1/subscriptions", json={"url": "https://svc-a.internal/hooks"}, headers=bearer(old)
    )
    assert resp.status == 201
    subscription = await resp.json()

    new = await add_key(database_url, "svc-a")
    assert new != old
    # Both keys work until the old one is revoked.
    for key in (old, new):
        assert (await relay_app.get(f"/v1/tasks/{task['id']}", headers=bearer(key))).status == 200
    run = await keys(database_url, "revoke", "svc-a", "--key", old[:11])
    assert run.returncode == 0, run.stderr
    assert (await relay_app.get("/v1/tasks", headers=bearer(old))).status == 401

    resp = await relay_app.get(f"/v1/tasks/{task['id']}", headers=bearer(new))
    assert resp.status == 200
    assert (await resp.json())["client"] == "svc-a"
    resp = await relay_app.get(f"/v1/subscriptions/{subscription['id']}", headers=bearer(new))
    assert resp.status == 200


async def test_keys_list_shows_each_keys_prefix_creation_and_last_use_never_the_key(
    database_url: str, relay_app: TestClient
) -> None:
    first, secret = await create_key(database_url, "svc")
    second = await add_key(database_url, "svc")
    assert (await relay_app.get("/v1/tasks", headers=bearer(first))).status == 200

    run = await keys(database_url, "list")
    assert run.returncode == 0, run.stderr
    for hidden in (first, second, secret):
        assert hidden not in run.stdout
    assert not KEY.search(run.stdout) and not SECRET.search(run.stdout)
    lines = key_lines(run.stdout, "svc")
    assert [ln[2] for ln in lines] == [first[:11] + "…", second[:11] + "…"]
    (_, role, _, created, used, state), (*_, never, state2) = lines
    assert role == "client" and state == state2 == "active"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\dZ", created)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\dZ", used)  # the first key was used
    assert never == "never"


async def test_last_use_is_written_at_most_once_a_minute_per_key(
    database_url: str, relay_app: TestClient, store: Store
) -> None:
    key, _ = await create_key(database_url, "busy")

    async def last_used() -> object:
        return await store.pool.fetchval("SELECT last_used_at FROM client_keys")

    assert await last_used() is None
    assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 200
    first = await last_used()
    assert first is not None
    for _ in range(5):
        assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 200
    assert await last_used() == first  # no write per request
    # A minute on, the next request records the use again.
    await store.pool.execute("UPDATE client_keys SET last_used_at = now() - interval '61 s'")
    aged = await last_used()
    assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 200
    assert await last_used() > aged  # type: ignore[operator]


async def test_revoke_without_key_revokes_every_key_and_add_brings_the_client_back(
    database_url: str, relay_app: TestClient
) -> None:
    one, _ = await create_key(database_url, "svc")
    two = await add_key(database_url, "svc")
    resp = await relay_app.post("/v1/tasks", json=TASK, headers=bearer(one))
    task_id = (await resp.json())["id"]
    run = await keys(database_url, "revoke", "svc")
    assert run.returncode == 0, run.stderr
    assert "2 key(s)" in run.stdout
    for key in (one, two):
        assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 401
    listing = (await keys(database_url, "list")).stdout
    assert all(line[-1].startswith("revoked") for line in key_lines(listing, "svc"))

    # The name stays the client's: a new key reaches the same tasks.
    again = await keys(database_url, "create", "--name", "svc")
    assert again.returncode != 0 and "keys add" in again.stderr
    three = await add_key(database_url, "svc")
    assert (await relay_app.get(f"/v1/tasks/{task_id}", headers=bearer(three))).status == 200


async def test_revoking_by_an_unknown_or_ambiguous_prefix_fails_and_revokes_nothing(
    database_url: str, relay_app: TestClient
) -> None:
    one, _ = await create_key(database_url, "svc")
    two = await add_key(database_url, "svc")
    unknown = await keys(database_url, "revoke", "svc", "--key", "rk_nosuchkey")
    assert unknown.returncode == 1
    assert "rk_nosuchkey" in unknown.stderr
    ambiguous = await keys(database_url, "revoke", "svc", "--key", "rk_")
    assert ambiguous.returncode == 1
    assert "2 live keys" in ambiguous.stderr
    nobody = await keys(database_url, "revoke", "nobody", "--key", one[:11])
    assert nobody.returncode == 1 and "nobody" in nobody.stderr
    for key in (one, two):
        assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 200
    # The prefix as `keys list` prints it (with its ellipsis) works too.
    run = await keys(database_url, "revoke", "svc", "--key", two[:11] + "…")
    assert run.returncode == 0, run.stderr
    assert (await relay_app.get("/v1/tasks", headers=bearer(two))).status == 401
    assert (await relay_app.get("/v1/tasks", headers=bearer(one))).status == 200


async def test_adding_a_key_to_an_unknown_client_fails(database_url: str) -> None:
    run = await keys(database_url, "add", "nobody")
    assert run.returncode == 1
    assert "nobody" in run.stderr and not KEY.search(run.stdout)


async def test_keys_create_takes_a_role_and_admin_stays_a_synonym(
    database_url: str, relay_app: TestClient
) -> None:
    await create_key(database_url, "ops", "--admin")
    await create_key(database_url, "boss", "--role", "admin")
    await create_key(database_url, "audit", "--role", "auditor")
    await create_key(database_url, "svc", "--role", "client")
    listing = (await keys(database_url, "list")).stdout
    roles = {name: key_lines(listing, name)[0][1] for name in ("ops", "boss", "audit", "svc")}
    assert roles == {"ops": "admin", "boss": "admin", "audit": "auditor", "svc": "client"}
    clash = await keys(database_url, "create", "--name", "x", "--admin", "--role", "auditor")
    assert clash.returncode == 2 and "--admin" in clash.stderr
    bad = await keys(database_url, "create", "--name", "y", "--role", "root")
    assert bad.returncode == 2 and "--role" in bad.stderr


async def test_rotate_secret_prints_a_new_signing_secret_once(
    database_url: str, store: Store
) -> None:
    _, old = await create_key(database_url, "svc")
    run = await keys(database_url, "rotate-secret", "svc")
    assert run.returncode == 0, run.stderr
    [new] = SECRET.findall(run.stdout)
    assert new != old and old not in run.stdout
    row = await store.pool.fetchrow(
        "SELECT signing_secret, previous_signing_secret,"
        " previous_signing_secret_until > now() + interval '23 h' AS in_window FROM clients"
    )
    assert (row["signing_secret"], row["previous_signing_secret"]) == (new, old)
    assert row["in_window"]
    assert (await keys(database_url, "rotate-secret", "nobody")).returncode == 1
