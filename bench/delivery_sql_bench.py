"""Postgres's cost of one delivery: the claim and the completion statements, nothing else.

    .venv/bin/python bench/delivery_sql_bench.py --deliveries 12000

The dispatcher benchmark measures the whole loop on a shared machine, where the bare
aiohttp loop it is compared with varies by half from one minute to the next. This one
isolates what every replica's deliveries cost the one database they share: on one
connection, with the dispatcher's generic plans, it claims batches of --batch due
deliveries and completes them as succeeded (--in-flight-batches behind, as in flight), and reads
the CPU time of that connection's backend from /proc around each statement (Postgres must
run on this machine), with the WAL written. Nothing else runs meanwhile.

Postgres: --database-url / RELAY_DATABASE_URL, else an embedded one; a fresh database is
created and dropped. The outbox is filled and ANALYZEd first, as in the dispatcher bench.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dispatcher_bench import fill_outbox

from relay.cli.localdev import postgres_server
from relay.core.store import QUERIES, Store, migrate, scratch_database
from relay.identity.clients import create_client


def backend_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by one Postgres backend."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bind(name: str, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """A named query with the values its version takes (older ones take fewer)."""
    query = QUERIES[name]
    return query.sql, query.args({k: v for k, v in values.items() if k in query.params})


async def measure(dsn: str, args: argparse.Namespace) -> None:
    """Fill the outbox, then claim and complete it statement by statement."""
    await migrate(dsn)
    store = await Store.open(dsn, size=2)
    try:
        _, _secret = await create_client(store, "bench")
        client_id = await store.pool.fetchval("SELECT id FROM clients WHERE name = 'bench'")
        await store.pool.execute(
            "INSERT INTO subscriptions (id, client_id, url, secret) VALUES ('sub_b', $1, $2, $3)",
            client_id,
            "http://127.0.0.1:9/hook",
            "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
        )
        await fill_outbox(store, client_id, args.deliveries)

        conn = await store.pool.acquire()
        try:
            await conn.execute("SET plan_cache_mode = force_generic_plan")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            wal_start = await conn.fetchval("SELECT pg_current_wal_lsn()")
            cpu = {"claim": 0.0, "complete": 0.0}
            wall = {"claim": 0.0, "complete": 0.0}
            in_flight: deque[list[Any]] = deque()
            completed = 0

            async def timed(kind: str, sql: str, values: list[Any]) -> list[Any]:
                cpu0, wall0 = backend_cpu_s(pid), time.perf_counter()
                rows = await conn.fetch(sql, *values)
                wall[kind] += time.perf_counter() - wall0
                cpu[kind] += backend_cpu_s(pid) - cpu0
                return rows

            while True:
                claimed = await timed(
                    "claim",
                    *bind(
                        "claim_due_deliveries",
                        {
                            "owner": "bench",
                            "batch_size": args.batch,
                            "lease_s": 60.0,
                            "now": datetime.now(UTC),
                            "per_target_limit": 1_000_000,
                            "in_flight": {},
                        },
                    ),
                )
                if claimed:
                    in_flight.append(claimed)
                    if len(in_flight) <= args.in_flight_batches:
                        continue  # more batches go out before the oldest comes back
                elif not in_flight:
                    break  # all claimed and completed
                batch = in_flight.popleft()
                n = len(batch)
                await timed(
                    "complete",
                    *bind(
                        "complete_deliveries",
                        {
                            "owner": "bench",
                            "ids": [r["id"] for r in batch],
                            "task_created_ats": [r["task_created_at"] for r in batch],
                            "attempts": [r["attempt_count"] for r in batch],
                            "statuses": ["succeeded"] * n,
                            "status_codes": [204] * n,
                            "response_excerpts": [""] * n,
                            "errors": [None] * n,
                            "latencies_ms": [1.0] * n,
                            "started_at_s": [time.time()] * n,
                            "retry_delays_s": [None] * n,
                            "retry_indexes": [0] * n,
                            "oldest": min(r["task_created_at"] for r in batch),
                            "newest": max(r["task_created_at"] for r in batch),
                            "succeeded": ["sub_b"],
                            "failed": [],
                            "disable_after_s": 3600.0,
                        },
                    ),
                )
                completed += n
            wal_bytes = await conn.fetchval(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_start
            )
        finally:
            await store.pool.release(conn)
    finally:
        await store.close()

    per = 1e6 / completed
    print(
        f"{completed} deliveries in batches of {args.batch}, {args.in_flight_batches} batches in "
        f"flight: Postgres CPU per delivery "
        f"claim {cpu['claim'] * per:.0f} µs + completion {cpu['complete'] * per:.0f} µs "
        f"= {(cpu['claim'] + cpu['complete']) * per:.0f} µs "
        f"(wall {wall['claim'] * per:.0f} + {wall['complete'] * per:.0f} µs), "
        f"WAL {float(wal_bytes) / completed:.0f} bytes per delivery"
    )


async def run(args: argparse.Namespace, server_url: str) -> None:
    """Everything in a scratch database on `server_url`."""
    async with scratch_database(server_url, "relay_sqlbench") as dsn:
        await measure(dsn, args)


def main() -> None:
    """Parse flags, find a Postgres, run."""
    from relay.core.logs import configure_logging

    configure_logging("json", "error")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=21, help="deliveries per claim")
    parser.add_argument(
        "--in-flight-batches",
        type=int,
        default=3,
        help="claimed batches not yet completed (what the replicas have in flight)",
    )
    parser.add_argument("--database-url", default=os.environ.get("RELAY_DATABASE_URL"))
    args = parser.parse_args()
    with postgres_server(args.database_url) as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
