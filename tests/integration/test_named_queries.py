"""Every named query is valid SQL against the migrated schema, with the parameters it names."""

from __future__ import annotations

from relay.store import MIGRATION_QUERIES, QUERIES, Store


async def test_every_named_query_prepares_with_one_parameter_per_name(store: Store) -> None:
    async with store.pool.acquire() as conn:
        for query in [*QUERIES.values(), *MIGRATION_QUERIES.values()]:
            statement = await conn.prepare(query.sql)
            assert len(statement.get_parameters()) == len(query.params), query.name
