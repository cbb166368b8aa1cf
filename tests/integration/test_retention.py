"""Retention: whole months of history go with their terminal tasks; the migration keeps
every row of an existing database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from relay.core.store import Store, migrate, migrations
from relay.history.chain import verify
from relay.history.retention import add_months
from tests.helpers import relay_env, run_relay, submit_task
from tests.integration.webhooks.helpers import advance

AUDIT_MIGRATION = 6


async def task_created_in(store: Store, client_id: int, month: date, status: str) -> str:
    """A task created in `month` with its history up to `status` (completed that month)."""
    task_id = f"tsk_old{month:%Y%m}{status}"
    created = datetime(month.year, month.month, 10, tzinfo=UTC)
    await store.pool.execute(
        "INSERT INTO tasks (id, client_id, client_name, model, input, status, upstream_task_id,"
        " created_at) VALUES ($1, $2, (SELECT name FROM clients WHERE id = $2), 'kling-video-o1',"
        " '{}', 'queued', $3, $4)",
        task_id,
        client_id,
        f"task_{task_id}",
        created,
    )
    await advance(store, task_id, "processing")
    if status != "processing":
        await advance(store, task_id, status)
        await store.pool.execute(
            "UPDATE tasks SET completed_at = $2 WHERE id = $1",
            task_id,
            created + timedelta(hours=1),
        )
    return task_id


async def count(store: Store, sql: str, *args: Any) -> int:
    return await store.pool.fetchval(sql, *args)


async def test_prune_drops_old_terminal_months_whole_and_keeps_a_month_with_a_live_task(
    relay_app: TestClient, new_client: Any, store: Store, database_url: str
) -> None:
    client = await new_client()
    current = await submit_task(relay_app, client)
    client_id = await store.pool.fetchval(
        "SELECT client_id FROM tasks WHERE id = $1", current["id"]
    )
    this_month = datetime.now(UTC).date().replace(day=1)
    old, older = add_months(this_month, -3), add_months(this_month, -4)
    await store.pool.execute(
        "SELECT relay_ensure_history_partitions($1, $2)", older, add_months(this_month, -1)
    )
    gone = [
        await task_created_in(store, client_id, older, "succeeded"),
        await task_created_in(store, client_id, older, "failed"),
    ]
    live = await task_created_in(store, client_id, old, "processing")
    kept_done = await task_created_in(store, client_id, old, "succeeded")
    env = relay_env(RELAY_DATABASE_URL=database_url, RELAY_RETENTION_DAYS="30")

    dry = await run_relay("prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert f"{older:%Y-%m}: drop (2 tasks)" in dry.stdout
    assert f"{old:%Y-%m}: keep (2 tasks): 1 task(s) not terminal yet (first: {live})" in dry.stdout
    assert await count(store, "SELECT count(*) FROM tasks WHERE id = ANY($1)", gone) == 2

    pruned = await run_relay("prune", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert f"{older:%Y-%m}: dropped (2 tasks)" in pruned.stdout
    assert await count(store, "SELECT count(*) FROM tasks WHERE id = ANY($1)", gone) == 0
    for table in ("task_events", "webhook_events", "deliveries", "delivery_attempts"):
        assert await count(store, "SELECT count(*) FROM pg_class WHERE relname = $1",
                           f"{table}_p{older:%Y_%m}") == 0  # fmt: skip
    # The kept month and the current one are whole, and every chain still verifies.
    for task_id in (live, kept_done, current["id"]):
        assert await count(store, "SELECT count(*) FROM task_events WHERE task_id = $1", task_id)
    assert (await verify(store)).finding is None
    again = await run_relay("prune", env=env)
    assert f"{older:%Y-%m}" not in again.stdout


async def test_prune_without_retention_says_history_is_kept(database_url: str) -> None:
    run = await run_relay("prune", env=relay_env(RELAY_DATABASE_URL=database_url))
    assert run.returncode == 2 and "RELAY_RETENTION_DAYS" in run.stderr


async def test_the_migration_partitions_a_database_with_data_without_losing_a_row(
    empty_database_url: str,
) -> None:
    before_audit = max(m.version for m in migrations() if m.version < AUDIT_MIGRATION)
    await migrate(empty_database_url, target=before_audit)
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute(
            """
            INSERT INTO clients (name, signing_secret) VALUES ('a', 'whsec_x');
            INSERT INTO client_keys (client_id, key_hash, key_prefix)
                VALUES (1, '\\x01', 'rk_');
            INSERT INTO subscriptions (id, client_id, url, secret)
                VALUES ('sub_1', 1, 'http://x', 'whsec_y');
            INSERT INTO tasks (id, client_id, client_name, model, input, status, event_seq,
                               created_at)
            SELECT 'tsk_' || n, 1, 'a', 'kling-video-o1', '{}', 'succeeded', 3,
                   now() - make_interval(days => n * 20)
            FROM generate_series(1, 12) n;
            INSERT INTO task_events (id, task_id, seq, type, source, to_status, dedupe_key,
                                     upstream_event)
            SELECT 'evt_' || n || '_' || s, 'tsk_' || n, s, 'task.x', 'upstream', 'queued',
                   'k' || s, CASE WHEN s = 2 THEN
                       jsonb_build_object('n', n, 'f', 1.50, 'u', 'caf' || chr(233))
                   END
            FROM generate_series(1, 12) n, generate_series(1, 3) s;
            INSERT INTO webhook_events (id, task_id, client_id, type, payload)
            SELECT 'evt_' || n || '_1', 'tsk_' || n, 1, 'task.queued', '{"x": 1}'
            FROM generate_series(1, 12) n;
            INSERT INTO deliveries (id, event_id, event_seq, task_id, client_id,
                                    subscription_id, url, target, status)
            SELECT 'dlv_' || n, 'evt_' || n || '_1', n, 'tsk_' || n, 1, 'sub_1', 'http://x',
                   'sub:sub_1', 'succeeded'
            FROM generate_series(1, 12) n;
            INSERT INTO delivery_attempts (delivery_id, attempt, latency_ms, started_at)
            SELECT 'dlv_' || n, a, 1.5, now() FROM generate_series(1, 12) n,
                   generate_series(1, 2) a;
            """
        )
        # An index another migration put on a history table comes along.
        await conn.execute("CREATE INDEX webhook_events_by_type ON webhook_events (type)")
        tables = ("task_events", "webhook_events", "deliveries", "delivery_attempts")
        before = {
            t: [dict(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY 1, 2")]
            for t in tables
        }
        await migrate(empty_database_url)
        for table in tables:
            after = [dict(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]
            assert len(after) == len(before[table]) > 0
            # every old column unchanged; the partition key is the task's creation time
            for old, new in zip(before[table], after, strict=True):
                assert {k: new[k] for k in old} == old
            owner = (
                "(SELECT task_id FROM deliveries d WHERE d.id = x.delivery_id)"
                if table == "delivery_attempts"
                else "x.task_id"
            )
            created = await conn.fetchval(
                f"SELECT bool_and(x.task_created_at = t.created_at) FROM {table} x"
                f" JOIN tasks t ON t.id = {owner}"
            )
            assert created is True
        carried = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'webhook_events_by_type'"
        )
        assert carried == (
            "CREATE INDEX webhook_events_by_type ON ONLY public.webhook_events USING btree (type)"
        )
        spread = await conn.fetchval(
            "SELECT count(DISTINCT tableoid) FROM task_events WHERE tableoid::regclass::text"
            " NOT LIKE '%pdefault'"
        )
        assert spread >= 8  # 12 tasks 20 days apart: one partition per month they span
        # New rows keep their sequences going; the chains were sealed by the migration.
        seq = await conn.fetchval(
            "INSERT INTO webhook_events (id, task_id, task_created_at, client_id, type, payload)"
            " SELECT 'evt_new', id, created_at, 1, 'task.queued', '{}' FROM tasks"
            " WHERE id = 'tsk_1' RETURNING seq"
        )
        assert seq == 13
    finally:
        await conn.close()
    store = await Store.open(empty_database_url, size=2)
    try:
        result = await verify(store)
    finally:
        await store.close()
    assert result.finding is None and (result.tasks, result.entries) == (12, 36)
