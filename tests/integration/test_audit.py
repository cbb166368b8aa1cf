"""Tamper evidence: history chains anyone can recompute, and `relay audit verify` naming the
first entry a superuser changed, inserted or removed (triggers bypassed)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from relay.core.store import Store
from relay.history.chain import GENESIS, entry_hash
from relay.history.janitor import Janitor
from relay.history.retention import MONTHS_AHEAD, add_months
from relay.history.transitions import NewHistoryEntry, TaskOutcome, record_task_outcomes
from tests.helpers import auth, history, relay_env, run_relay, submit_task
from tests.integration.webhooks.helpers import advance

# An upstream event that exercises the canonical form: unicode, nesting, floats that jsonb
# prints differently from Python, key order.
ODD_EVENT = {
    "id": "uev_odd",
    "status": "processing",
    "zeta": {"b": 1.5, "a": [1e16, 0.1, -0.0, 100.0, 7, None, True]},
    "note": 'caf\u00e9 \u2603 \U0001f3ac\n\t"quoted"',
}


def recompute(entry: dict[str, Any], task_id: str) -> str:
    """An auditor's few lines over the API output (the recipe in docs/audit.md)."""
    shown = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps({**shown, "task_id": task_id}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def task_with_history(api: TestClient, client: dict[str, str], store: Store) -> str:
    """A task with five entries: queued, an odd upstream event, processing, succeeded."""
    task = await submit_task(api, client)
    row = await store.fetchrow("get_task", id=task["id"], scope=None)
    assert row is not None
    odd = NewHistoryEntry("upstream.event", "upstream", "event:uev_odd", upstream_event=ODD_EVENT)
    outcome = TaskOutcome.from_row(row, entries=[odd])
    async with store.transaction() as db:
        await record_task_outcomes(db, None, [outcome])
    await advance(store, task["id"], "processing")
    await advance(store, task["id"], "succeeded")
    return task["id"]


async def superuser(database_url: str, sql: str, *args: Any) -> None:
    """Run `sql` as a superuser would to rewrite history: with the triggers switched off."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def verify(database_url: str, *args: str) -> tuple[int, str]:
    run = await run_relay("audit", "verify", *args, env=relay_env(RELAY_DATABASE_URL=database_url))
    return run.returncode, run.stdout + run.stderr


async def checkpoint(database_url: str, *args: str) -> str:
    run = await run_relay(
        "audit", "checkpoint", *args, env=relay_env(RELAY_DATABASE_URL=database_url)
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


async def test_history_entries_form_a_chain_an_auditor_recomputes_from_the_api(
    relay_app: TestClient, new_client: Any, store: Store, database_url: str
) -> None:
    client = await new_client()
    task_id = await task_with_history(relay_app, client, store)
    entries = await history(relay_app, client, task_id)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[0]["prev_hash"] == GENESIS
    for previous, entry in zip([None, *entries], entries, strict=False):
        if previous is not None:
            assert entry["prev_hash"] == previous["hash"]
        assert entry["hash"] == recompute(entry, task_id)
    assert entries[1]["upstream_event"]["zeta"]["a"][0] == 10**16
    # The migration's SQL hash (used for rows written before it) computes the same thing.
    same = await store.pool.fetchval(
        "SELECT bool_and(hash = relay_history_hash(task_id, id, seq, type, from_status,"
        " to_status, source, upstream_event, created_at, prev_hash)) FROM task_events"
    )
    assert same is True
    code, out = await verify(database_url)
    assert code == 0, out
    assert "verified 4 entries of 1 tasks" in out


async def test_a_cancel_request_note_is_chained_between_status_changes(
    relay_app: TestClient, new_client: Any, store: Store, database_url: str
) -> None:
    # The note is written outside record_task_outcomes (the action log's cancel entry), yet
    # chains like every entry, and the next status change chains onto it.
    client = await new_client()
    task = await submit_task(relay_app, client)
    resp = await relay_app.post(f"/v1/tasks/{task['id']}/cancel", headers=auth(client))
    assert resp.status == 202, await resp.text()
    await advance(store, task["id"], "processing")
    entries = await history(relay_app, client, task["id"])
    assert [(e["seq"], e["type"]) for e in entries] == [
        (1, "task.queued"),
        (2, "task.cancel_requested"),
        (3, "task.processing"),
    ]
    assert entries[0]["prev_hash"] == GENESIS
    for previous, entry in pairwise(entries):
        assert entry["prev_hash"] == previous["hash"]
    for entry in entries:
        assert entry["hash"] == recompute(entry, task["id"])
    code, out = await verify(database_url)
    assert code == 0, out
    assert "verified 3 entries of 1 tasks" in out


async def entry_id(store: Store, task_id: str, seq: int) -> str:
    return await store.pool.fetchval(
        "SELECT id FROM task_events WHERE task_id = $1 AND seq = $2", task_id, seq
    )


@pytest.mark.parametrize(
    ("tampering", "named_seq", "problem"),
    [
        ("UPDATE task_events SET to_status = 'failed' WHERE task_id = $1 AND seq = 3", 3,
         "modified"),
        ("UPDATE task_events SET upstream_event = '{\"id\": \"uev_forged\"}'"
         " WHERE task_id = $1 AND seq = 2", 2, "modified"),
        ("DELETE FROM task_events WHERE task_id = $1 AND seq = 2", 3, "seq 2 was removed"),
        ("DELETE FROM task_events WHERE task_id = $1 AND seq = 1", 2, "first entry"),
        ("INSERT INTO task_events (id, task_id, task_created_at, seq, type, source, dedupe_key,"
         " created_at, prev_hash, hash) SELECT 'evt_forged', task_id, task_created_at, 5, type,"
         " source, 'forged', created_at, hash, repeat('f', 64)"
         " FROM task_events WHERE task_id = $1 AND seq = 4", 5, "modified"),
    ],
    ids=["modify-status", "modify-event", "remove-middle", "remove-first", "insert"],
)  # fmt: skip
async def test_verify_names_the_entry_a_superuser_tampered_with(
    relay_app: TestClient,
    new_client: Any,
    store: Store,
    database_url: str,
    tampering: str,
    named_seq: int,
    problem: str,
) -> None:
    client = await new_client()
    untouched = await task_with_history(relay_app, client, store)
    task_id = await task_with_history(relay_app, client, store)
    named_id = await entry_id(store, task_id, named_seq)
    await superuser(database_url, tampering, task_id)
    code, out = await verify(database_url)
    assert code == 1, out
    assert f"task {task_id} entry {named_id or 'evt_forged'} (seq {named_seq})" in out
    assert problem in out
    assert untouched not in out
    # Scoped to tasks created later than both: nothing to find.
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    assert (await verify(database_url, "--since", later))[0] == 0


async def test_a_removed_last_entry_is_caught_against_a_checkpoint(
    relay_app: TestClient, new_client: Any, store: Store, database_url: str, tmp_path: Any
) -> None:
    client = await new_client()
    task_id = await task_with_history(relay_app, client, store)
    other = await task_with_history(relay_app, client, store)
    digest_only = (await checkpoint(database_url)).strip()
    with_heads = tmp_path / "checkpoint.txt"
    with_heads.write_text(await checkpoint(database_url, "--heads"))
    assert (await verify(database_url, "--checkpoint", digest_only))[0] == 0
    assert (await verify(database_url, "--checkpoint", str(with_heads)))[0] == 0

    # A careful superuser removes the last entry and winds the task's counter back too.
    await superuser(database_url, "DELETE FROM task_events WHERE task_id = $1 AND seq = 4", task_id)
    await store.pool.execute("UPDATE tasks SET event_seq = 3 WHERE id = $1", task_id)
    code, out = await verify(database_url)
    assert code == 0, out  # every remaining chain is intact: only a checkpoint tells
    code, out = await verify(database_url, "--checkpoint", str(with_heads))
    assert code == 1, out
    assert f"task {task_id} entry seq 4: removed (the chain now ends at seq 3)" in out
    assert other not in out
    code, out = await verify(database_url, "--checkpoint", digest_only)
    assert code == 1 and "do not match the checkpoint" in out, out


async def test_a_forged_entry_appended_with_a_valid_hash_is_caught_against_a_checkpoint(
    relay_app: TestClient, new_client: Any, store: Store, database_url: str, tmp_path: Any
) -> None:
    client = await new_client()
    task_id = await task_with_history(relay_app, client, store)
    with_heads = tmp_path / "checkpoint.txt"
    with_heads.write_text(await checkpoint(database_url, "--heads"))
    head = await store.pool.fetchrow(
        "SELECT * FROM task_events WHERE task_id = $1 AND seq = 4", task_id
    )
    forged = {"id": "evt_forged", "seq": 5, "type": "task.failed", "from_status": "succeeded",
              "to_status": "failed", "source": "relay", "upstream_event": None,
              "created_at": "2026-01-01T00:00:00.000Z"}  # fmt: skip
    await superuser(
        database_url,
        "INSERT INTO task_events (id, task_id, task_created_at, seq, type, from_status,"
        " to_status, source, dedupe_key, created_at, prev_hash, hash) VALUES ($1, $2, $3, 5,"
        " 'task.failed', 'succeeded', 'failed', 'relay', 'forged', '2026-01-01T00:00:00Z', $4, $5)",
        "evt_forged",
        task_id,
        head["task_created_at"],
        head["hash"],
        entry_hash(task_id, forged, head["hash"]),
    )
    assert (await verify(database_url))[0] == 0  # a forger who knows the recipe
    code, out = await verify(database_url, "--checkpoint", str(with_heads))
    assert code == 1 and f"task {task_id} entry seq 4: differs" in out, out


async def test_verify_rejects_a_malformed_checkpoint(database_url: str) -> None:
    code, out = await verify(database_url, "--checkpoint", '{"at": 1}')
    assert code == 2 and "--checkpoint" in out


async def test_janitor_creates_partitions_ahead_and_publishes_a_checkpoint(
    relay_app: TestClient, new_client: Any, store: Store, database_url: str
) -> None:
    client = await new_client()
    await task_with_history(relay_app, client, store)
    janitor = Janitor(store, retention_days=None, checkpoint_interval_s=600)
    assert await janitor.run_once() == 0
    months = {
        r["relname"]
        for r in await store.pool.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'task_events'::regclass"
        )
    }
    first = datetime.now(UTC).date().replace(day=1)
    for ahead in range(MONTHS_AHEAD + 1):
        assert f"task_events_p{add_months(first, ahead):%Y_%m}" in months
    published = await janitor.publish_checkpoint(datetime.now(UTC))
    assert published is not None and published.heads == 1
    body = json.dumps(published.as_json())
    labels = {"at": published.as_json()["at"], "digest": published.digest}
    assert REGISTRY.get_sample_value("relay_audit_checkpoint_info", labels) == 1
    code, out = await verify(database_url, "--checkpoint", body)
    assert code == 0, out


@pytest.mark.parametrize(
    "statement",
    ["UPDATE {p} SET type = 'x'", "DELETE FROM {p}", "TRUNCATE {p}"],
    ids=["update", "delete", "truncate"],
)
async def test_each_history_partition_refuses_changes(
    relay_app: TestClient, new_client: Any, store: Store, statement: str
) -> None:
    client = await new_client()
    await task_with_history(relay_app, client, store)
    partition = await store.pool.fetchval(
        "SELECT DISTINCT tableoid::regclass::text FROM task_events"
    )
    # Row triggers need rows (webhook events have them); TRUNCATE is refused on any partition
    # (webhook_events' is also refused for the deliveries referencing it).
    other = "delivery_attempts" if statement.startswith("TRUNCATE") else "webhook_events"
    for table in (partition, partition.replace("task_events", other)):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await store.pool.execute(statement.format(p=table))
