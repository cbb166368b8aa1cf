"""Dispatcher benchmark: deliveries/s against a bare aiohttp loop, and commit-to-receipt latency.

    .venv/bin/python bench/dispatcher_bench.py --deliveries 20000

1. Baseline: a bare aiohttp loop POSTs N bodies of the same size to the same receiver with
   the same concurrency (no database, no signing): the ceiling for this machine.
2. Throughput: N deliveries already in the outbox; one dispatcher drains them.
   Steps 1 and 2 alternate for --rounds rounds and the median ratio is the figure: on a
   shared machine the bare loop alone varies by half from one minute to the next.
   Postgres's CPU (its processes on this machine) and WAL per delivery are printed too.
3. Latency: status changes committed one at a time at --rate per second while the
   dispatcher idles on LISTEN; time from commit to the receiver's receipt.

The receiver runs in its own process. Postgres: --database-url / RELAY_DATABASE_URL, else
an embedded one; a fresh database is created and dropped. After loading the outbox the
bench runs ANALYZE, as autovacuum keeps a production database analyzed: without it a fresh
database has no statistics at all (and the shared bench server runs with autovacuum off),
so the planner would be measured guessing rather than the dispatcher working.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

import aiohttp

from relay.app import DISPATCH_POOL_SIZE
from relay.cli.localdev import free_port, postgres_server
from relay.cli.main import settle_gc
from relay.core.config import Settings
from relay.core.egress import create_webhook_session
from relay.core.logs import configure_logging
from relay.core.store import Store, migrate, scratch_database
from relay.delivery.dispatcher import Dispatcher, DispatcherSettings
from relay.history.transitions import NewHistoryEntry, TaskOutcome, record_task_outcomes
from relay.identity.clients import create_client

RECEIVER = """
import sys, time
from aiohttp import web
seen = {}
async def hook(request):
    await request.read()
    seen.setdefault(request.headers.get("webhook-id", ""), time.time())
    return web.Response(status=204)
async def stats(request):
    return web.json_response({"count": len(seen), "seen": seen if request.query.get("all") else {}})
async def reset(request):
    seen.clear()
    return web.Response(status=204)
app = web.Application()
app.router.add_post("/hook", hook)
app.router.add_get("/stats", stats)
app.router.add_post("/reset", reset)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _get(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url) as resp:
        return await resp.json()


async def _insert_tasks(store: Store, client_id: int, count: int) -> list[dict]:
    rows = await store.pool.fetch(
        "INSERT INTO tasks (id, client_id, client_name, model, input, status, upstream_task_id)"
        " SELECT 'tsk_b' || lpad(g::text, 9, '0') || $3, $1,"
        " (SELECT name FROM clients WHERE id = $1), 'kling-video-o1', '{}', 'queued',"
        " 'up_' || g || $3 FROM generate_series(1, $2) g RETURNING *",
        client_id,
        count,
        uuid.uuid4().hex[:6],
    )
    return [dict(r) for r in rows]


async def fill_outbox(store: Store, client_id: int, count: int) -> None:
    """`count` tasks turned `processing`: one delivery each in the outbox, then ANALYZE.

    ANALYZE is what autovacuum does for a production database (see the docstring).
    """
    tasks = await _insert_tasks(store, client_id, count)
    for start in range(0, len(tasks), 1000):
        async with store.transaction() as db:
            await record_task_outcomes(
                db, None, [_processing(r) for r in tasks[start : start + 1000]]
            )
    await store.pool.execute("ANALYZE")


def postgres_cpu_s() -> float:
    """CPU seconds used so far by this machine's postgres processes (0 when none is local)."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                text = f.read()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            fields = text[text.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _processing(row: dict) -> TaskOutcome:
    return TaskOutcome.from_row(
        row,
        status="processing",
        entries=[NewHistoryEntry.status_change("queued", "processing", "upstream")],
        poll_interval_s=1,
        poll_delay_s=3600,
    )


async def baseline(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, float]:
    """Requests per second of a bare aiohttp loop, and this process's CPU µs per request."""
    queue = list(bodies)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with http.post(url, data=body, headers={"webhook-id": str(len(queue))}) as r:
                    await r.read()

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu_us = (time.process_time() - cpu) / len(bodies) * 1e6
        return len(bodies) / (time.perf_counter() - started), cpu_us


async def run(args: argparse.Namespace, server_url: str) -> None:
    """Everything in a scratch database on `server_url`."""
    async with scratch_database(server_url, "relay_dbench") as dsn:
        await _measure(args, dsn)


async def _measure(args: argparse.Namespace, dsn: str) -> None:
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    hook = f"http://127.0.0.1:{port}/hook"
    try:
        await migrate(dsn)
        store = await Store.open(dsn, size=6)
        _, _secret = await create_client(store, "bench")
        client_id = await store.pool.fetchval("SELECT id FROM clients WHERE name = 'bench'")
        await store.pool.execute(
            "INSERT INTO subscriptions (id, client_id, url, secret) VALUES ('sub_b', $1, $2, $3)",
            client_id,
            hook,
            "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
        )
        settings = Settings(
            database_url=dsn,
            dispatch_concurrency=args.concurrency,
            dispatch_per_target_concurrency=args.concurrency,
            dispatch_batch_size=args.concurrency,
            webhook_deny_cidrs="169.254.0.0/16",
            log_level="error",
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    await _get(http, f"http://127.0.0.1:{port}/stats")
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)

            session = create_webhook_session(settings)
            # As `relay serve` runs it: on connections of its own with generic plans.
            dispatch_store = await Store.open(dsn, size=DISPATCH_POOL_SIZE, generic_plans=True)
            dispatcher = Dispatcher(
                dispatch_store, session, DispatcherSettings.from_settings(settings)
            )
            if args.gc == "relay":
                settle_gc()  # as `relay serve` does once started; both loops run with it
            rounds = []
            for number in range(1, args.rounds + 1):
                await fill_outbox(store, client_id, args.deliveries)
                sample = await store.pool.fetchval("SELECT payload FROM webhook_events LIMIT 1")
                body = json.dumps(sample, separators=(",", ":")).encode()

                rps, base_cpu_us = await baseline(hook, [body] * args.deliveries, args.concurrency)
                async with http.post(f"http://127.0.0.1:{port}/reset"):
                    pass

                wal_start = await store.pool.fetchval("SELECT pg_current_wal_lsn()")
                pg_cpu = postgres_cpu_s()
                started, cpu = time.perf_counter(), time.process_time()
                runner = asyncio.create_task(dispatcher.run())
                # Cheap completion check (the partial index of waiting deliveries), rarely,
                # so the benchmark does not take Postgres time from the dispatcher it measures.
                while await store.pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'failed')"
                ):
                    await asyncio.sleep(0.2)
                drained = time.perf_counter() - started
                # CPU time is what the shared machine cannot steal: comparable between runs.
                cpu_us = (time.process_time() - cpu) / args.deliveries * 1e6
                pg_cpu_us = (postgres_cpu_s() - pg_cpu) / args.deliveries * 1e6
                wal_bytes = await store.pool.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", wal_start
                )
                dispatcher.stop()
                await runner
                dispatcher = Dispatcher(
                    dispatch_store, session, DispatcherSettings.from_settings(settings)
                )
                got = (await _get(http, f"http://127.0.0.1:{port}/stats"))["count"]
                async with http.post(f"http://127.0.0.1:{port}/reset"):
                    pass
                rate = args.deliveries / drained
                rounds.append(rate / rps)
                print(
                    f"round {number}: bare loop {rps:.0f} req/s ({base_cpu_us:.0f} µs CPU per "
                    f"request); dispatcher {rate:.0f} deliveries/s ({got} received in "
                    f"{drained:.1f}s), {rate / rps:.0%} of the bare loop, {cpu_us:.0f} µs CPU "
                    f"per delivery; Postgres {pg_cpu_us:.0f} µs CPU and "
                    f"{float(wal_bytes) / args.deliveries:.0f} bytes of WAL per delivery",
                    flush=True,
                )

            runner = asyncio.create_task(dispatcher.run())
            # Latency: one committed status change at a time, dispatcher idle on LISTEN.
            async with http.post(f"http://127.0.0.1:{port}/reset"):
                pass
            more = await _insert_tasks(store, client_id, args.latency_samples)
            committed: dict[str, float] = {}
            for row in more:
                async with store.transaction() as db:
                    await record_task_outcomes(db, None, [_processing(row)])
                committed[row["id"]] = time.time()
                await asyncio.sleep(1 / args.rate)

            async def all_received() -> dict:
                stats = await _get(http, f"http://127.0.0.1:{port}/stats?all=1")
                return stats if stats["count"] >= len(more) else {}

            deadline = time.monotonic() + 30
            stats: dict = {}
            while not stats and time.monotonic() < deadline:
                stats = await all_received()
                await asyncio.sleep(0.1)
            event_task = dict(
                await store.pool.fetch(
                    "SELECT id, task_id FROM webhook_events WHERE task_id = ANY($1)",
                    list(committed),
                )
            )
            latencies = sorted(
                (t - committed[event_task[eid]]) * 1000
                for eid, t in stats.get("seen", {}).items()
                if eid in event_task
            )
            dispatcher.stop()
            await runner
            await session.close()
            await dispatch_store.close()
            await store.close()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(len(latencies) * p))]

        print(
            f"dispatcher / bare loop, median of {len(rounds)} rounds of {args.deliveries} at "
            f"concurrency {args.concurrency}: {statistics.median(rounds):.0%} "
            f"(rounds: {', '.join(f'{r:.0%}' for r in rounds)})\n"
            f"commit->receipt latency ms (n={len(latencies)} at {args.rate}/s): "
            f"p50={pct(0.5):.1f} p95={pct(0.95):.1f} p99={pct(0.99):.1f} max={latencies[-1]:.1f}"
        )
    finally:
        receiver.terminate()
        receiver.wait(10)


def main() -> None:
    """Parse flags, find a Postgres, run."""
    configure_logging("json", "error")  # measure the relay, not the log renderer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="bare loop / dispatcher pairs")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50, help="status changes per second")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="event loop for both the bare loop and the dispatcher (`relay serve` uses uvloop "
        "when installed)",
    )
    parser.add_argument(
        "--gc",
        choices=("relay", "default"),
        default="relay",
        help="garbage collector settings for both loops: relay.cli.main.settle_gc, as "
        "`relay serve` "
        "runs, or CPython's defaults",
    )
    parser.add_argument("--database-url", default=os.environ.get("RELAY_DATABASE_URL"))
    args = parser.parse_args()
    factory = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    print(f"event loop: {args.loop}")
    with postgres_server(args.database_url) as url, asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(args, url))


if __name__ == "__main__":
    main()
