"""`relay keys`: keys shown once, stored hashed, listed without secrets, revoked at once."""

from __future__ import annotations

import hashlib
import re

from aiohttp.test_utils import TestClient

from relay.core.store import Store
from tests.helpers import RelayRun, relay_env, run_relay

KEY = re.compile(r"\brk_[A-Za-z0-9_\-]{20,}")
SECRET = re.compile(r"\bwhsec_[A-Za-z0-9+/=]{32,}")


async def keys(database_url: str, *args: str) -> RelayRun:
    env = relay_env(RELAY_DATABASE_URL=database_url, RELAY_LOG_LEVEL="warning")
    return await run_relay("keys", *args, env=env)


async def create_key(database_url: str, name: str, *flags: str) -> tuple[str, str]:
    run = await keys(database_url, "create", "--name", name, *flags)
    assert run.returncode == 0, run.stderr
    [key] = KEY.findall(run.stdout)
    [secret] = SECRET.findall(run.stdout)
    return key, secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_keys_create_prints_a_working_key_and_a_signing_secret(
    database_url: str, relay_app: TestClient
) -> None:
    key, secret = await create_key(database_url, "a")
    resp = await relay_app.get("/v1/tasks", headers=bearer(key))
    assert resp.status == 200
    assert await resp.json() == {"data": [], "next_cursor": None}
    assert len(secret) > len("whsec_") + 32


async def test_database_stores_no_clear_key(database_url: str, store: Store) -> None:
    key, _ = await create_key(database_url, "a")
    # Keys live in client_keys (several per client); neither table holds the clear key.
    rows = await store.pool.fetch(
        "SELECT c::text || k::text AS row, k.key_hash FROM clients c"
        " JOIN client_keys k ON k.client_id = c.id"
    )
    assert len(rows) == 1
    assert key not in rows[0]["row"]
    assert key.removeprefix("rk_") not in rows[0]["row"]
    assert bytes(rows[0]["key_hash"]) == hashlib.sha256(key.encode()).digest()


async def test_keys_list_shows_clients_but_never_keys_or_secrets(database_url: str) -> None:
    key_a, secret_a = await create_key(database_url, "svc-a")
    key_b, secret_b = await create_key(database_url, "ops", "--admin")
    run = await keys(database_url, "list")
    assert run.returncode == 0, run.stderr
    assert "svc-a" in run.stdout and "ops" in run.stdout
    assert "admin" in run.stdout
    for secret in (key_a, key_b, secret_a, secret_b):
        assert secret not in run.stdout
    assert not KEY.search(run.stdout)
    assert not SECRET.search(run.stdout)


async def test_keys_revoke_makes_the_key_401_at_once(
    database_url: str, relay_app: TestClient
) -> None:
    key, _ = await create_key(database_url, "a")
    other, _ = await create_key(database_url, "b")
    assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 200
    run = await keys(database_url, "revoke", "a")
    assert run.returncode == 0, run.stderr
    assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 401
    assert (await relay_app.get("/v1/tasks", headers=bearer(other))).status == 200
    listing = await keys(database_url, "list")
    [line] = [ln for ln in listing.stdout.splitlines() if ln.startswith("a\t")]
    assert "revoked" in line


async def test_revoking_an_unknown_or_revoked_client_fails(database_url: str) -> None:
    assert (await keys(database_url, "revoke", "nobody")).returncode != 0
    await create_key(database_url, "a")
    assert (await keys(database_url, "revoke", "a")).returncode == 0
    again = await keys(database_url, "revoke", "a")
    assert again.returncode != 0
    assert "a" in again.stderr


async def test_creating_a_duplicate_name_fails_and_keeps_the_first_key(
    database_url: str, relay_app: TestClient
) -> None:
    key, _ = await create_key(database_url, "a")
    run = await keys(database_url, "create", "--name", "a")
    assert run.returncode != 0
    assert "'a'" in run.stderr
    assert not KEY.search(run.stdout + run.stderr)
    assert (await relay_app.get("/v1/tasks", headers=bearer(key))).status == 200


async def test_admin_key_from_cli_sees_other_clients_tasks(
    database_url: str, relay_app: TestClient
) -> None:
    admin, _ = await create_key(database_url, "ops", "--admin")
    client, _ = await create_key(database_url, "svc")
    body = {"model": "kling-video-o1", "input": {"prompt": "a lighthouse"}}
    resp = await relay_app.post("/v1/tasks", json=body, headers=bearer(client))
    assert resp.status == 202
    task_id = (await resp.json())["id"]
    resp = await relay_app.get(f"/v1/tasks/{task_id}", headers=bearer(admin))
    assert resp.status == 200


async def test_keys_create_with_an_unusable_name_is_a_usage_error(database_url: str) -> None:
    for name in ("", "x" * 201):
        run = await keys(database_url, "create", "--name", name)
        assert run.returncode == 2
        assert len(run.stderr.strip().splitlines()) == 1
        assert "--name" in run.stderr


async def test_keys_without_database_url_is_a_configuration_error() -> None:
    run = await run_relay("keys", "list", env=relay_env())
    assert run.returncode == 2
    assert "RELAY_DATABASE_URL" in run.stderr
