"""Every named query is valid SQL against the migrated schema, with the parameters it names."""

from __future__ import annotations

from typing import Any

from relay.core.store import MIGRATION_QUERIES, QUERIES, Store
from relay.identity.clients import create_client


async def test_every_named_query_prepares_with_one_parameter_per_name(store: Store) -> None:
    async with store.pool.acquire() as conn:
        for query in [*QUERIES.values(), *MIGRATION_QUERIES.values()]:
            statement = await conn.prepare(query.sql)
            assert len(statement.get_parameters()) == len(query.params), query.name


def scans(plan: Any) -> set[tuple[str, str]]:
    """(node type, table) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    found = set()
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        if "Relation Name" in node:
            found.add((node["Node Type"], node["Relation Name"]))
        nodes.extend(node.get("Plans", []))
    return found


async def test_task_updates_find_their_rows_by_primary_key_before_any_analyze(
    store: Store,
) -> None:
    """A young table has no statistics: the write must not scan it (it did, once per write)."""
    await create_client(store, "plans")
    await store.pool.execute(
        "INSERT INTO tasks (id, client_id, client_name, model, input, status) "
        "SELECT 'tsk_' || g, (SELECT id FROM clients), 'plans', 'm', '{}', 'queued' "
        "FROM generate_series(1, 3000) g"
    )
    query = QUERIES["apply_task_updates"]
    update = {
        "id": "tsk_7", "status": "processing", "changed": True, "new_events": 0, "requests": 1,
    }  # fmt: skip
    args = query.args({"owner": None, "updates": [update]})
    plan = await store.pool.fetchval(f"EXPLAIN (FORMAT JSON) {query.sql}", *args)
    tasks_scans = {node for node, table in scans(plan) if table == "tasks"}
    assert tasks_scans and "Seq Scan" not in tasks_scans
