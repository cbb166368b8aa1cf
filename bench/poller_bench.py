"""Poller benchmark: N in-flight tasks in the simulator, one poller, polls/s and due-lag.

    .venv/bin/python bench/poller_bench.py --tasks 100000 --seconds 60

The simulator runs as its own process (`relay simulate-upstream`), so the poller's
process measures only the relay. Postgres: --database-url / RELAY_DATABASE_URL, else an
embedded one. A fresh database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from relay.cli.localdev import free_port, postgres_server
from relay.core.config import Settings
from relay.core.logs import configure_logging
from relay.core.store import Store, migrate, scratch_database
from relay.polling.durations import DurationModel
from relay.polling.poller import Poller, PollerSettings
from relay.upstream.budget import UpstreamBudget
from relay.upstream.client import UpstreamClient

SIM_KEY = "bench-key"
# What the simulator charges for the bulk tasks' default input (std, 5 s): stored up front
# so the first poll does not count as a change.
BENCH_TASK_COST = 0.042


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)


async def run(args: argparse.Namespace, server_url: str) -> None:
    """Everything in a scratch database on `server_url`."""
    async with scratch_database(server_url, "relay_bench") as dsn:
        await _measure(args, dsn)


async def _measure(args: argparse.Namespace, dsn: str) -> None:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "relay", "simulate-upstream", "--port", str(port),
         "--api-key", SIM_KEY, "--task-duration", str(args.task_duration), "--seed", "1"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await migrate(dsn)
        base = f"http://127.0.0.1:{port}"
        await _wait_http(base + "/_sim/stats")
        async with aiohttp.ClientSession() as http:
            ids: list[str] = []
            while len(ids) < args.tasks:
                count = min(20000, args.tasks - len(ids))
                async with http.post(base + "/_sim/bulk", json={"count": count}) as resp:
                    ids.extend((await resp.json())["task_ids"])
        store = await Store.open(dsn, size=4)
        client_id = await store.pool.fetchval(
            "INSERT INTO clients (name, signing_secret) VALUES ('bench', 'whsec_x') RETURNING id"
        )
        # Steady state: every task already at the max interval (nothing changed for a
        # while), first polls spread over that interval.
        rows = [
            (
                f"tsk_bench{n:08d}",
                client_id,
                upstream_id,
                random.uniform(0, args.spread or args.max_interval),
                args.max_interval,
                BENCH_TASK_COST,
            )
            for n, upstream_id in enumerate(ids)
        ]
        await store.pool.executemany(
            "INSERT INTO tasks (id, client_id, client_name, model, input, status, upstream_task_id,"
            " cost_estimate, next_poll_at, poll_interval_s) VALUES ($1, $2,"
            " (SELECT name FROM clients WHERE id = $2), 'kling-video-o1',"
            " '{}', 'queued', $3, $6, now() + make_interval(secs => $4), $5)",
            rows,
        )
        # Their history so far: entered queued, upstream's first event seen. Without it the
        # first poll of every task is a change and the run measures a warm-up, not the
        # steady state.
        # Chained like the relay chains them (relay_history_hash is what the migration uses).
        await store.pool.execute(
            "INSERT INTO task_events (id, task_id, task_created_at, seq, type, source,"
            " to_status, dedupe_key, created_at, prev_hash, hash)"
            " SELECT 'evt_s' || t.id, t.id, t.created_at, 1, 'task.queued', 'upstream',"
            " 'queued', 'status:queued', t.created_at, relay_history_genesis(),"
            " relay_history_hash(t.id, 'evt_s' || t.id, 1, 'task.queued', NULL, 'queued',"
            " 'upstream', NULL, t.created_at, relay_history_genesis()) FROM tasks t"
        )
        await store.pool.execute(
            "INSERT INTO task_events (id, task_id, task_created_at, seq, type, source,"
            " dedupe_key, created_at, prev_hash, hash)"
            " SELECT 'evt_e' || t.id, t.id, t.created_at, 2, 'upstream.status_changed',"
            " 'upstream', 'event:uev_' || t.upstream_task_id || '_1', t.created_at, e.hash,"
            " relay_history_hash(t.id, 'evt_e' || t.id, 2, 'upstream.status_changed', NULL,"
            " NULL, 'upstream', NULL, t.created_at, e.hash)"
            " FROM tasks t JOIN task_events e ON e.task_id = t.id AND e.seq = 1"
        )
        await store.pool.execute("UPDATE tasks SET event_seq = 2")
        await store.pool.execute("ANALYZE tasks")
        await store.pool.execute("ANALYZE task_events")
        settings = Settings(
            database_url=dsn,
            upstream_url=base,
            upstream_api_key=SIM_KEY,
            upstream_max_rps=args.max_rps,
            poll_interval_min_s=args.min_interval,
            poll_interval_max_s=args.max_interval,
            poll_concurrency=args.concurrency,
            poll_batch_size=args.batch,
            log_level="error",
        )
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency))
        budget = UpstreamBudget(store, rate=args.max_rps)
        upstream = UpstreamClient(session, base, SIM_KEY, budget=budget)
        poller = Poller(
            store,
            upstream,
            PollerSettings.from_settings(settings),
            budget=budget,
            durations=DurationModel(store),
        )
        from relay.core import metrics

        rss_start = _rss_mb()
        started = time.monotonic()
        lags: list[float] = []
        original_observe = metrics.POLL_DUE_LAG.observe

        def observe(value: float) -> None:
            lags.append(value)
            original_observe(value)

        metrics.POLL_DUE_LAG.observe = observe  # type: ignore[method-assign]
        runner = asyncio.create_task(poller.run())
        await asyncio.sleep(args.seconds)
        poller.stop()
        await runner
        elapsed = time.monotonic() - started
        polls = len(lags)
        rss_end = _rss_mb()
        overdue = await store.pool.fetchval(
            "SELECT count(*) FROM tasks WHERE next_poll_at < now() - interval '1 second'"
        )
        await session.close()
        await store.close()
        lags.sort()

        def pct(p: float) -> float:
            return lags[min(len(lags) - 1, int(len(lags) * p))] if lags else float("nan")

        print(
            f"tasks={args.tasks} seconds={elapsed:.1f} polls={polls} "
            f"polls_per_s={polls / elapsed:.0f} upstream_rps={2 * polls / elapsed:.0f}\n"
            f"due_lag_s p50={pct(0.5):.3f} p95={pct(0.95):.3f} p99={pct(0.99):.3f} "
            f"max={lags[-1] if lags else float('nan'):.3f} overdue_at_end={overdue}\n"
            f"rss_mb start={rss_start:.0f} end={rss_end:.0f}"
        )
    finally:
        sim.terminate()
        sim.wait(10)


def main() -> None:
    """Parse flags, find a Postgres, run."""
    configure_logging("json", "error")  # measure the relay, not the log renderer
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument(
        "--task-duration",
        type=float,
        default=36000,
        help="seconds each simulated task takes (short: tasks change, history is written)",
    )
    parser.add_argument("--max-rps", type=float, default=20000)
    parser.add_argument("--min-interval", type=float, default=1)
    parser.add_argument("--max-interval", type=float, default=30)
    parser.add_argument("--spread", type=float, default=0, help="first polls spread (s)")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--database-url", default=os.environ.get("RELAY_DATABASE_URL"))
    args = parser.parse_args()
    with postgres_server(args.database_url) as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
