"""Migrations: applied in order, once each, safely from many processes; history is append-only."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from relay.core.store import Store, migrate, migrations
from tests.helpers import SAMPLE_INPUT, auth, relay_env, run_relay

# What "the schema" is for comparison: columns, constraints, indexes and triggers.
SCHEMA_FINGERPRINT = """
SELECT 'column' AS kind, table_name || '.' || column_name || ' ' || data_type
       || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS what
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'trigger', event_object_table || ' ' || trigger_name || ' ' || event_manipulation
FROM information_schema.triggers WHERE trigger_schema = 'public'
ORDER BY 1, 2
"""


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def recorded_versions(dsn: str) -> list[tuple[int, str]]:
    rows = await fetch(dsn, "SELECT version, name FROM schema_migrations ORDER BY version")
    return [(r["version"], r["name"]) for r in rows]


async def fingerprint(dsn: str) -> list[tuple[str, str]]:
    return [(r["kind"], r["what"]) for r in await fetch(dsn, SCHEMA_FINGERPRINT)]


# Numbers handed to branches developed in parallel, whose files are not on this branch yet.
# Empty this set once they are merged: then no number may be missing. 0008 was handed out
# but never used; later migrations are released, so they keep their numbers and 8 stays here.
RESERVED_ON_OTHER_BRANCHES = {8}


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations()]
    present = sorted(set(versions) | RESERVED_ON_OTHER_BRANCHES)
    assert len(set(versions)) == len(versions)
    assert present == list(range(1, max(present) + 1))
    assert len(versions) >= 2


async def test_stairway_applies_each_migration_once_in_order(
    empty_database_url: str, database_url: str
) -> None:
    expected: list[tuple[int, str]] = []
    for migration in migrations():
        applied = await migrate(empty_database_url, target=migration.version)
        assert applied == [migration.version]
        expected.append((migration.version, migration.name))
        assert await recorded_versions(empty_database_url) == expected
        # Applying up to the same target again changes nothing.
        assert await migrate(empty_database_url, target=migration.version) == []
    # Step by step ends where one `migrate` on a fresh database (the test template) ends.
    assert await fingerprint(empty_database_url) == await fingerprint(database_url)


async def test_migrate_twice_is_a_no_op(empty_database_url: str) -> None:
    first = await migrate(empty_database_url)
    assert first == [m.version for m in migrations()]
    before = await fetch(empty_database_url, "SELECT * FROM schema_migrations ORDER BY version")
    schema = await fingerprint(empty_database_url)
    assert await migrate(empty_database_url) == []
    after = await fetch(empty_database_url, "SELECT * FROM schema_migrations ORDER BY version")
    assert [dict(r) for r in after] == [dict(r) for r in before]
    assert await fingerprint(empty_database_url) == schema


async def test_concurrent_relay_migrate_processes_all_succeed_with_one_schema(
    empty_database_url: str, database_url: str
) -> None:
    env = relay_env(RELAY_DATABASE_URL=empty_database_url, RELAY_LOG_LEVEL="warning")
    runs = await asyncio.gather(*(run_relay("migrate", env=env) for _ in range(3)))
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    versions = [m.version for m in migrations()]
    assert [v for v, _ in await recorded_versions(empty_database_url)] == versions
    # Exactly one process applied everything; the others found nothing left to do.
    summaries = sorted(line for r in runs for line in r.stdout.splitlines() if "migration" in line)
    assert summaries == [
        "applied 0 migration(s)",
        "applied 0 migration(s)",
        f"applied {len(versions)} migration(s): {versions}",
    ]
    assert await fingerprint(empty_database_url) == await fingerprint(database_url)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE task_events SET type = 'task.succeeded'",
        "DELETE FROM task_events",
        "TRUNCATE task_events",
    ],
    ids=["update", "delete", "truncate"],
)
async def test_database_refuses_to_change_task_history(
    relay_app: TestClient, new_client: Any, store: Store, statement: str
) -> None:
    client = await new_client()
    resp = await relay_app.post(
        "/v1/tasks", json={"model": "kling-video-o1", "input": SAMPLE_INPUT}, headers=auth(client)
    )
    assert resp.status == 202
    before = [dict(r) for r in await store.pool.fetch("SELECT * FROM task_events")]
    assert len(before) == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await store.pool.execute(statement)
    after = [dict(r) for r in await store.pool.fetch("SELECT * FROM task_events")]
    assert after == before


async def test_client_keys_migration_keeps_every_key_role_and_task_owner(
    empty_database_url: str,
) -> None:
    from relay.identity.clients import authenticate, hash_key

    # A database as 0003 left it: an admin, a client with tasks, a revoked client.
    await migrate(empty_database_url, target=3)
    keys = {"ops": "rk_" + "o" * 43, "svc": "rk_" + "s" * 43, "gone": "rk_" + "g" * 43}
    conn = await asyncpg.connect(empty_database_url)
    try:
        for name, key in keys.items():
            await conn.execute(
                "INSERT INTO clients (name, key_hash, key_prefix, signing_secret, is_admin,"
                " created_at, revoked_at) VALUES ($1, $2, $3, $4, $5,"
                " now() - interval '30 days', CASE WHEN $1 = 'gone' THEN now() END)",
                name, hash_key(key), key[:7], f"whsec_{name}", name == "ops",
            )  # fmt: skip
        for n in range(3):
            await conn.execute(
                "INSERT INTO tasks (id, client_id, model, input, status)"
                " SELECT $1, id, 'kling-video-o1', '{}', 'queued' FROM clients WHERE name = $2",
                f"tsk_{n}", "svc" if n < 2 else "gone",
            )  # fmt: skip
    finally:
        await conn.close()

    assert await migrate(empty_database_url) == [m.version for m in migrations()][3:]

    rows = await fetch(
        empty_database_url,
        "SELECT c.name, c.role, c.is_admin, c.signing_secret, k.key_hash, k.key_prefix,"
        " k.created_at = c.created_at AS same_created, k.revoked_at IS NOT NULL AS revoked"
        " FROM clients c JOIN client_keys k ON k.client_id = c.id ORDER BY c.id",
    )
    assert [(r["name"], r["role"], r["is_admin"], r["revoked"]) for r in rows] == [
        ("ops", "admin", True, False),
        ("svc", "client", False, False),
        ("gone", "client", False, True),
    ]
    for row in rows:
        assert bytes(row["key_hash"]) == hash_key(keys[row["name"]])
        assert row["key_prefix"] == keys[row["name"]][:7]
        assert row["signing_secret"] == f"whsec_{row['name']}"
        assert row["same_created"]
    owners = await fetch(empty_database_url, "SELECT id, client_name FROM tasks ORDER BY id")
    assert [(r["id"], r["client_name"]) for r in owners] == [
        ("tsk_0", "svc"),
        ("tsk_1", "svc"),
        ("tsk_2", "gone"),
    ]
    # The old keys still sign in (the revoked one does not), with their roles.
    store = await Store.open(empty_database_url, size=2)
    try:
        ops, svc = await authenticate(store, keys["ops"]), await authenticate(store, keys["svc"])
        assert ops is not None and ops.role == "admin" and ops.scope is None
        assert svc is not None and svc.name == "svc" and svc.scope is not None
        assert await authenticate(store, keys["gone"]) is None
    finally:
        await store.close()


async def test_delivery_lease_migration_keeps_deliveries_in_flight_leased(
    empty_database_url: str,
) -> None:
    """0013 moves the lease out of next_attempt_at: a lease taken before it still holds."""
    from datetime import date

    from relay.history.transitions import NewHistoryEntry, TaskOutcome, record_task_outcomes
    from relay.identity.clients import create_client
    from tests.integration.webhooks.helpers import claim_as

    await migrate(empty_database_url, target=12)
    store = await Store.open(empty_database_url, size=2)
    try:
        await create_client(store, "svc")
        client_id = await store.pool.fetchval("SELECT id FROM clients WHERE name = 'svc'")
        await store.pool.execute(
            "INSERT INTO subscriptions (id, client_id, url, secret)"
            " VALUES ('sub_m', $1, 'http://127.0.0.1:9/hook', 'whsec_QUFBQUFBQUFBQUFBQUFBQUFB')",
            client_id,
        )
        tasks = await store.pool.fetch(
            "INSERT INTO tasks (id, client_id, client_name, model, input, status)"
            " SELECT 'tsk_m' || g, $1, 'svc', 'kling-video-o1', '{}', 'queued'"
            " FROM generate_series(1, 2) g RETURNING *",
            client_id,
        )
        async with store.transaction() as db:
            await record_task_outcomes(
                db,
                None,
                [
                    TaskOutcome.from_row(
                        row,
                        status="processing",
                        entries=[NewHistoryEntry.status_change("queued", "processing", "upstream")],
                        poll_interval_s=1,
                        poll_delay_s=3600,
                    )
                    for row in tasks
                ],
            )
        # Claimed the 0012 way: the lease's expiry in next_attempt_at.
        leased = await store.pool.fetchval(
            "UPDATE deliveries SET lease_owner = 'old-dispatcher', attempt_count = 1,"
            " next_attempt_at = now() + interval '1 minute'"
            " WHERE task_id = 'tsk_m1' RETURNING id"
        )
    finally:
        await store.close()

    assert await migrate(empty_database_url) == [13]

    rows = await fetch(
        empty_database_url,
        "SELECT id, leased_until = next_attempt_at AS carried, leased_until FROM deliveries",
    )
    assert {r["id"]: r["carried"] for r in rows if r["leased_until"] is not None} == {leased: True}
    store = await Store.open(empty_database_url, size=2)
    try:
        claimed = await claim_as(store, "new-dispatcher")
        assert [r["id"] for r in claimed] == [r["id"] for r in rows if r["id"] != leased]
        # Every deliveries partition, those made later included, leaves room for HOT claims.
        await store.execute(
            "ensure_history_partitions", first_month=date(2100, 1, 1), last_month=date(2100, 1, 1)
        )
        options = await store.pool.fetch(
            "SELECT c.relname, c.reloptions FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'deliveries'::regclass"
        )
        assert "deliveries_p2100_01" in {r["relname"] for r in options}
        assert all(r["reloptions"] == ["fillfactor=75"] for r in options)
    finally:
        await store.close()
