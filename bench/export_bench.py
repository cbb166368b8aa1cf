"""Export benchmark: `relay export` over ~1,000,000 history entries, its rate and peak memory.

    .venv/bin/python bench/export_bench.py --entries 1000000 [--per-task 5] [--format jsonl]

Creates a fresh database (--database-url / RELAY_DATABASE_URL's server, else an embedded
Postgres), fills it in SQL with generate_series (finished tasks, each with `--per-task`
history entries: the three status changes plus upstream events), runs `relay export` as its
own process and reports tasks/s, entries/s, the file size and the export process's peak
RSS. Everything is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from relay.cli.localdev import postgres_server
from relay.core.store import migrate, scratch_database

RELAY_BIN = str(Path(sys.executable).with_name("relay"))

# Finished tasks, one per millisecond of January 2026, looking like what the poller writes.
SEED_TASKS = """
INSERT INTO tasks (id, client_id, client_name, model, input, status, upstream_task_id,
                   upstream_request_id, cost_estimate, cost_actual, output, metadata,
                   created_at, updated_at, completed_at, event_seq)
SELECT 'tsk_' || lpad(i::text, 26, '0'), 1, (SELECT name FROM clients WHERE id = 1),
       'kling-video-o1',
       jsonb_build_object('prompt', 'a fox in snow, take ' || i, 'duration', 5, 'mode', 'std'),
       'succeeded', 'task_' || i, 'req_' || i, 0.042, 0.042,
       jsonb_build_object('video_url', 'https://cdn.example/v/' || i || '.mp4'),
       jsonb_build_object('order_id', 'A-' || i),
       t, t + interval '3 minutes', t + interval '3 minutes', $2::int
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond') AS c(t)
"""
# Each task's history: queued, processing, succeeded, and upstream events in between; one
# position ($3) at a time, chained onto the entry before it like the relay chains them
# (relay_history_hash is what the history migration uses).
SEED_EVENTS = """
INSERT INTO task_events (id, task_id, task_created_at, seq, type, from_status, to_status,
                         source, upstream_event, dedupe_key, created_at, prev_hash, hash)
SELECT e.id, e.task_id, e.task_created_at, e.seq, e.type, e.from_status, e.to_status, e.source,
       e.upstream_event, e.dedupe_key, e.created_at, e.prev_hash,
       relay_history_hash(e.task_id, e.id, e.seq, e.type, e.from_status, e.to_status, e.source,
                          e.upstream_event, e.created_at, e.prev_hash)
FROM (
    SELECT 'evt_' || lpad(i::text, 20, '0') || lpad(s::text, 6, '0') AS id,
           'tsk_' || lpad(i::text, 26, '0') AS task_id,
           timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond'
               AS task_created_at,
           s AS seq,
           CASE s WHEN 1 THEN 'task.queued' WHEN 2 THEN 'task.processing'
                  WHEN $2::int THEN 'task.succeeded' ELSE 'upstream.event' END AS type,
           CASE s WHEN 2 THEN 'queued' WHEN $2::int THEN 'processing' END AS from_status,
           CASE s WHEN 1 THEN 'queued' WHEN 2 THEN 'processing' WHEN $2::int THEN 'succeeded'
               END AS to_status,
           'upstream' AS source,
           jsonb_build_object('id', 'ev_' || i || '_' || s, 'status', 'processing',
                              'progress', s * 10) AS upstream_event,
           'event:' || s AS dedupe_key,
           timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond'
               + s * interval '1 s' AS created_at,
           coalesce(p.hash, relay_history_genesis()) AS prev_hash
    FROM generate_series(1, $1::int) AS i
    CROSS JOIN (SELECT $3::int) AS position(s)
    LEFT JOIN task_events p ON p.task_id = 'tsk_' || lpad(i::text, 26, '0') AND p.seq = s - 1
) e
"""


async def _seed(dsn: str, tasks: int, per_task: int) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO clients (name, signing_secret) VALUES ('bench', 'whsec_x')")
        await conn.execute(SEED_TASKS, tasks, per_task)
        for position in range(1, per_task + 1):
            await conn.execute(SEED_EVENTS, tasks, per_task, position)
        await conn.execute("ANALYZE tasks; ANALYZE task_events")
    finally:
        await conn.close()
    return time.perf_counter() - started


def _export(dsn: str, fmt: str, out: Path) -> tuple[float, float, str]:
    """Run `relay export`; (seconds, peak RSS of the export process in MB, its stderr)."""
    env = {"PATH": os.environ.get("PATH", ""), "RELAY_DATABASE_URL": dsn}
    started = time.perf_counter()
    done = subprocess.run(
        [RELAY_BIN, "export", "--out", str(out), "--format", fmt],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"relay export failed ({done.returncode}): {done.stderr}")
    # ru_maxrss of the children waited for: the export is the only child, and the largest.
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, peak_mb, done.stderr


async def _run(server_url: str, args: argparse.Namespace) -> None:
    tasks = args.entries // args.per_task
    async with scratch_database(server_url, "relay_export_bench") as dsn:
        await migrate(dsn)
        seeded = await _seed(dsn, tasks, args.per_task)
        entries = tasks * args.per_task
        print(f"seeded {tasks:,} tasks and {entries:,} history entries in {seeded:.1f} s")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"export.{args.format}"
            elapsed, peak_mb, stderr = await asyncio.to_thread(_export, dsn, args.format, out)
            size_mb = out.stat().st_size / 1e6
        print(stderr.strip().splitlines()[-1])
        print(
            f"relay export --format {args.format}: {entries:,} entries ({tasks:,} tasks) in "
            f"{elapsed:.1f} s = {entries / elapsed:,.0f} entries/s, {tasks / elapsed:,.0f} "
            f"tasks/s; {size_mb:,.0f} MB written; peak RSS of the export process "
            f"{peak_mb:.0f} MB"
        )


def main() -> None:
    """Parse flags, find a Postgres, run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="history entries")
    parser.add_argument("--per-task", type=int, default=5, help="history entries per task (>=3)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--database-url", default=os.environ.get("RELAY_DATABASE_URL"))
    args = parser.parse_args()
    if args.per_task < 3:
        parser.error("--per-task must be at least 3 (queued, processing, succeeded)")
    with postgres_server(args.database_url) as url:
        asyncio.run(_run(url, args))


if __name__ == "__main__":
    main()
