"""Submit benchmark: `POST /v1/tasks` through the relay against the same loop straight upstream.

    .venv/bin/python bench/submit_bench.py --submissions 2000

The simulator (`relay simulate-upstream`) and the relay (`relay serve --roles api`, one or
two processes on different ports, one database) run as their own processes. At each client
concurrency (1, 8, 32) this process runs one closed loop (each worker sends its next
request when the previous answer arrives) three ways in the same run:

- `simulator`: straight to the simulator's `POST /api/v1/tasks`, the ceiling of the loop;
- `relay x1`: through one api replica;
- `relay x2`: through two replicas, requests round-robin between them.

Each point sends --submissions requests (or stops at --seconds, whichever comes first)
after a short warm-up, and prints requests/s, p50/p99 latency and the relay/simulator
ratio. On Linux it also prints what one request cost in CPU time: in the relay replicas
(`relay ms`), in every `postgres` process of the machine (`pg ms`), and the machine's idle
share during the point (`idle`): with two cores, a point with no idle time left measures
the machine, not the relay (two replicas cannot add what the cores do not have).
Every submission must be answered 202 (or 200); anything else is counted and shown.
RELAY_UPSTREAM_MAX_RPS is set far above what the loop reaches, so the shared upstream
budget never defers a submission: the figures are the relay's own cost.

Before the first point, --preload submissions go through the relay and the database is
ANALYZEd, as autovacuum keeps a production database: measured on tables that were empty a
second ago and never analyzed, Postgres plans lookups by id as sequential scans (and caches
those plans in every pooled connection), which measures a new database, not the relay.

Postgres: --database-url / RELAY_DATABASE_URL, else an embedded one; a fresh database is
created and dropped. Relay and simulator output goes to a temporary folder, kept (and named)
only when something failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from relay.cli.localdev import child_process, free_port, postgres_server
from relay.core.store import scratch_database

SIM_KEY = "bench-sim-key"
MODEL = "kling-video-o1"
# Far above anything two cores submit: the budget row is still taken, never waited on.
UPSTREAM_MAX_RPS = 100000
# Requests per point before the clock starts: connections opened, caches and pools warm.
WARMUP_PER_WORKER = 5
STARTUP_TIMEOUT_S = 30.0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def postgres_pids() -> list[int]:
    """Every process named `postgres` (the server and its backends), when /proc can tell."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().strip() == "postgres":
                pids.append(int(entry.name))
    return pids


def machine_cpu() -> tuple[float, float]:
    """(idle, total) jiffies of all cores since boot, from /proc/stat; (0, 0) elsewhere."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    return float(fields[3] + fields[4]), float(sum(fields[:8]))


@dataclass
class Cost:
    """CPU spent during one point: relay replicas, Postgres, and the machine's idle share."""

    relay_s: float = 0.0
    postgres_s: float = 0.0
    idle_share: float | None = None


@contextlib.contextmanager
def measured_cost(relay_pids: Sequence[int]) -> Iterator[Cost]:
    """CPU time used by the relay and Postgres while the block runs."""
    cost = Cost()
    pg = postgres_pids()
    relay_before, pg_before = process_cpu_s(relay_pids), process_cpu_s(pg)
    idle_before, total_before = machine_cpu()
    yield cost
    idle_after, total_after = machine_cpu()
    cost.relay_s = process_cpu_s(relay_pids) - relay_before
    # Backends started during the point (a pool growing) count from zero.
    cost.postgres_s = process_cpu_s(sorted(set(pg) | set(postgres_pids()))) - pg_before
    if total_after > total_before:
        cost.idle_share = (idle_after - idle_before) / (total_after - total_before)


@dataclass
class Point:
    """One measured point: who was called, at which concurrency, and what came back."""

    target: str
    concurrency: int
    sent: int
    seconds: float
    latencies_ms: list[float]
    failures: dict[int, int]
    cost: Cost

    @property
    def rps(self) -> float:
        """Answered requests per second."""
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        """The p-th percentile latency (nearest rank), ms."""
        values = sorted(self.latencies_ms)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * p / 100))]


def relay_command(*argv: str) -> list[str]:
    """`python -m relay ...` with this interpreter."""
    return [sys.executable, "-m", "relay", *argv]


def progress(text: str) -> None:
    """One line of progress on stderr (the figures go to stdout)."""
    print(f"[submit_bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def wait_http(http: aiohttp.ClientSession, url: str, timeout: float) -> None:
    """Until `url` answers 200, or raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become ready in {timeout:.0f} s")
        await asyncio.sleep(0.2)


def task_body(n: int) -> dict[str, Any]:
    """A realistic submission: a prompt that differs per request, the common options."""
    return {
        "model": MODEL,
        "input": {"prompt": f"a red kite over a beach at dusk, take {n}", "duration": 5},
        "metadata": {"bench": "submit", "n": n},
    }


async def closed_loop(
    http: aiohttp.ClientSession,
    urls: Sequence[str],
    key: str,
    *,
    concurrency: int,
    submissions: int,
    seconds: float,
    upstream_shape: bool,
) -> tuple[int, float, list[float], dict[int, int]]:
    """`concurrency` workers, each POSTing its next body when the last one is answered.

    Returns (sent, elapsed s, latencies ms of accepted requests, {status: count} of others).
    Requests go round-robin over `urls`.
    """
    latencies: list[float] = []
    failures: dict[int, int] = {}
    counter = iter(range(10**9))

    async def one(n: int) -> None:
        body = task_body(n)
        if upstream_shape:
            body = {"model": body["model"], "input": body["input"]}
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
        started = time.perf_counter()
        try:
            async with http.post(urls[n % len(urls)], json=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        if status in (200, 201, 202):
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            failures[status] = failures.get(status, 0) + 1

    async def warm_up() -> None:
        for _ in range(WARMUP_PER_WORKER):
            await one(submissions + next(counter))  # numbered apart from the measured ones

    async def worker() -> None:
        while time.monotonic() < deadline:
            n = next(counter, None)
            if n is None:
                return
            await one(n)

    # Warm-up (not timed), then the measured loop sharing one counter.
    await asyncio.gather(*(warm_up() for _ in range(concurrency)))
    latencies.clear()
    failures.clear()
    counter = iter(range(submissions))
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return len(latencies) + sum(failures.values()), elapsed, latencies, failures


def render(points: list[Point]) -> str:
    """The figures as a table, with each relay point's ratio to the simulator at its concurrency."""
    base = {p.concurrency: p.rps for p in points if p.target == "simulator"}
    lines = [
        f"{'target':<10} {'conc':>4} {'sent':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'vs sim':>7} {'relay ms':>8} {'pg ms':>6} {'idle':>5}  failures"
    ]
    for p in points:
        ratio = f"{p.rps / base[p.concurrency]:.2f}" if p.target != "simulator" else "-"
        failed = ", ".join(f"{s or 'error'}: {c}" for s, c in sorted(p.failures.items()))
        answered = len(p.latencies_ms) or 1
        relay_ms = f"{1000 * p.cost.relay_s / answered:.2f}" if p.target != "simulator" else "-"
        pg_ms = f"{1000 * p.cost.postgres_s / answered:.2f}"
        idle = f"{100 * p.cost.idle_share:.0f}%" if p.cost.idle_share is not None else "-"
        lines.append(
            f"{p.target:<10} {p.concurrency:>4} {p.sent:>6} {p.rps:>8.0f} {p.pct(50):>8.1f} "
            f"{p.pct(99):>8.1f} {ratio:>7} {relay_ms:>8} {pg_ms:>6} {idle:>5}  {failed or '-'}"
        )
    one = {p.concurrency: p.rps for p in points if p.target == "relay x1"}
    for p in points:
        if p.target == "relay x2" and one.get(p.concurrency):
            lines.append(
                f"two replicas / one at concurrency {p.concurrency}: "
                f"{p.rps / one[p.concurrency]:.2f}x"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace, server_url: str) -> None:
    """Everything in a scratch database on `server_url`."""
    logs = Path(tempfile.mkdtemp(prefix="submit_bench_"))
    failed = True
    try:
        async with scratch_database(server_url, "relay_sbench") as dsn:
            points = await _measure(args, dsn, logs)
        print(render(points), flush=True)
        failed = any(p.failures for p in points)
    finally:
        if failed:
            progress(f"process output kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)


async def _measure(args: argparse.Namespace, dsn: str, logs: Path) -> list[Point]:
    with contextlib.ExitStack() as stack:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        clean_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "MINDVIDEO_"))
        }
        sim_cmd = relay_command(
            "simulate-upstream", "--port", str(sim_port), "--api-key", SIM_KEY,
            "--task-duration", "36000", "--seed", "1",
        )  # fmt: skip
        sim = stack.enter_context(child_process(sim_cmd, clean_env, logs / "sim.log"))
        env = {
            **clean_env,
            "RELAY_DATABASE_URL": dsn,
            "RELAY_UPSTREAM_URL": sim_url,
            "RELAY_UPSTREAM_API_KEY": SIM_KEY,
            "RELAY_UPSTREAM_MAX_RPS": str(UPSTREAM_MAX_RPS),
            "RELAY_LOG_LEVEL": "warning",
            "RELAY_HOST": "127.0.0.1",
        }
        subprocess.run(relay_command("migrate"), env=env, check=True, capture_output=True)
        created = subprocess.run(
            relay_command("keys", "create", "--name", "bench"),
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        match = re.search(r"\brk_\S+", created.stdout)
        if not match:
            raise RuntimeError("`relay keys create` printed no rk_ key")
        api_key = match.group(0)
        api_urls = []
        relay_pids = []
        for replica in range(max(args.replicas)):
            port = free_port()
            api_urls.append(f"http://127.0.0.1:{port}")
            proc = stack.enter_context(
                child_process(
                    relay_command("serve", "--roles", "api"),
                    {**env, "RELAY_PORT": str(port)},
                    logs / f"relay{replica}.log",
                )
            )
            relay_pids.append(proc.pid)
            progress(f"relay replica {replica} on port {port}, pid {proc.pid}")
        progress(f"simulator on port {sim_port}, pid {sim.pid}")
        timeout = aiohttp.ClientTimeout(total=60)
        connector = aiohttp.TCPConnector(limit=0)
        points = []
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
            await wait_http(http, sim_url + "/_sim/stats", STARTUP_TIMEOUT_S)
            for url in api_urls:
                await wait_http(http, url + "/readyz", STARTUP_TIMEOUT_S)
            if args.preload:
                await closed_loop(
                    http, [api_urls[0] + "/v1/tasks"], api_key, concurrency=32,
                    submissions=args.preload, seconds=120, upstream_shape=False,
                )  # fmt: skip
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute("ANALYZE")
                finally:
                    await conn.close()
                progress(f"preloaded {args.preload} submissions, database analyzed")
            targets: list[tuple[str, list[str], str, bool, list[int]]] = [
                ("simulator", [sim_url + "/api/v1/tasks"], SIM_KEY, True, [])
            ]
            for replicas in args.replicas:
                targets.append(
                    (f"relay x{replicas}", [u + "/v1/tasks" for u in api_urls[:replicas]],
                     api_key, False, relay_pids[:replicas])
                )  # fmt: skip
            for concurrency in args.concurrency:
                for name, urls, key, upstream_shape, pids in targets:
                    with measured_cost(pids) as cost:
                        sent, elapsed, latencies, failures = await closed_loop(
                            http,
                            urls,
                            key,
                            concurrency=concurrency,
                            submissions=args.submissions,
                            seconds=args.seconds,
                            upstream_shape=upstream_shape,
                        )
                    point = Point(name, concurrency, sent, elapsed, latencies, failures, cost)
                    progress(f"{name} at concurrency {concurrency}: {point.rps:.0f}/s")
                    points.append(point)
        return points


def main() -> None:
    """Parse flags, find a Postgres, run."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submissions", type=int, default=2000, help="requests per point")
    parser.add_argument("--seconds", type=float, default=30, help="time cap per point")
    parser.add_argument(
        "--preload", type=int, default=2000, help="submissions made (and analyzed) first"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2], choices=(1, 2))
    parser.add_argument("--database-url", default=os.environ.get("RELAY_DATABASE_URL"))
    args = parser.parse_args()
    with postgres_server(args.database_url) as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
