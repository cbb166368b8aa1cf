"""Latency benchmark: upstream change -> webhook received, against the simulator's realistic timing.

    .venv/bin/python bench/latency_bench.py --scenario both

The simulator (`relay simulate-upstream --timing realistic --time-scale S`) and the relay
(`relay serve`, all roles, `--replicas K` processes) run as their own processes; this
process submits tasks through the relay's API on a planned schedule and runs the webhook
receiver, recording when each task's webhooks arrive. Afterwards the simulator's true
transition times (`GET /_sim/tasks`) give each task's detection delay, and its per-task
request counts the upstream requests per task. A client polling every 5 s is computed on
the same true times for comparison.

Time runs S times faster (default 0.1); every delay is reported in unscaled seconds
(divided by S), so figures compare with a real deployment. Fixed costs that do not scale
(the webhook hop, event-loop latency) are therefore inflated 1/S times in those figures.
Submit latency and arrival lateness are wall-clock milliseconds as measured; a submit
that queues behind the (scaled) upstream ceiling waits S times less than it would unscaled.

Scenarios: `ample` (ceiling 50 rps, 200 tasks at 2/s after 100 warm-up tasks) and `tight`
(ceiling 10 rps, 600 tasks over 60 s, far below what polling every task would want).
Postgres: --database-url / RELAY_DATABASE_URL, else an embedded one; a fresh database is
created per scenario and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from poll_oracle import ClassTimes, oracle_line, percentile

from relay.cli.localdev import child_process, free_port, postgres_server
from relay.core.config import Settings
from relay.core.store import scratch_database
from relay.delivery.signing import InvalidSignature, verify

SIM_KEY = "bench-sim-key"
MODEL = "kling-video-o1"
TERMINAL_TYPES = frozenset({"task.succeeded", "task.failed", "task.cancelled"})
# The comparison client: polls GET status every this many (unscaled) seconds from submit.
BASELINE_POLL_S = 5.0
# The delay targets (p50, p95, p99 of terminal change -> webhook, unscaled seconds):
# the second oracle line is the fewest requests that meet them.
ORACLE_TARGETS = (2.0, 5.0, 10.0)
# The relay's poll settings in unscaled seconds (its defaults), multiplied by the time scale.
POLL_INTERVAL_MIN_S = 1.0
POLL_INTERVAL_MAX_S = 30.0
DEFAULT_TARGET_DELAY_S = 1.75
# Loopback must be reachable for the in-process receiver; link-local stays denied.
DENY_CIDRS = "169.254.0.0/16"
# Start-up of a relay or the simulator (imports, migrations check) on a loaded machine.
STARTUP_TIMEOUT_S = 60.0
# How often the benchmark looks at its own receiver while waiting (wall seconds).
WAIT_STEP_S = 0.2
SIM_PAGE = 500
PROMPTS = (
    "a red fox trotting through fresh snow at dawn, slow tracking shot",
    "aerial shot over a foggy pine forest, camera gliding forward",
    "a barista pouring latte art in a sunlit cafe, shallow depth of field",
    "waves crashing on black volcanic rocks, long exposure feel",
    "a paper boat drifting down a rainy city gutter, macro lens",
    "timelapse of clouds rolling over mountain peaks at sunset",
)
ASPECT_RATIOS = ("16:9", "9:16", "1:1")


@dataclass(frozen=True)
class Scenario:
    """One workload: how many tasks, how fast they arrive, under which upstream ceiling."""

    name: str
    ceiling_rps: float  # unscaled upstream requests per second
    tasks: int
    rate_per_s: float  # unscaled task submissions per second
    warmup: int


SCENARIOS = {
    "ample": Scenario("ample", ceiling_rps=50, tasks=200, rate_per_s=2, warmup=100),
    # ~600 in flight: polling each every 5 s would want ~240 requests/s, 24x the ceiling.
    "tight": Scenario("tight", ceiling_rps=10, tasks=600, rate_per_s=10, warmup=100),
}


@dataclass
class Submission:
    """One POST /v1/tasks: when it was planned, when it went out, how long it took."""

    task_id: str | None
    upstream_task_id: str | None  # None when upstream had not accepted it at answer time
    planned: float  # monotonic
    sent: float  # monotonic
    sent_wall: float
    latency_s: float
    status: int  # 0: no HTTP answer


class Receiver:
    """The subscriber: first arrival time (time.time()) per (relay task id, event type)."""

    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.arrivals: dict[tuple[str, str], float] = {}
        self.upstream_ids: dict[str, str] = {}
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        """Record the arrival first, then verify and parse; always 204 (the figures tell)."""
        arrived = time.time()
        body = await request.read()
        try:
            verify(self.secret, request.headers, body, now=arrived)
        except InvalidSignature:
            self.bad_signatures += 1
            return web.Response(status=204)
        event = json.loads(body)
        task = event["data"]
        self.arrivals.setdefault((task["id"], event["type"]), arrived)
        if task.get("upstream_task_id"):
            self.upstream_ids[task["id"]] = task["upstream_task_id"]
        return web.Response(status=204)

    def terminal_at(self, task_id: str) -> float | None:
        """When the task's terminal webhook arrived, if it did."""
        times = [self.arrivals.get((task_id, kind)) for kind in TERMINAL_TYPES]
        return min((t for t in times if t is not None), default=None)


def summary(values: Sequence[float], *points: float) -> dict[str, float | int]:
    """n, the given percentiles, max (and mean) of `values`, rounded for printing and JSON."""
    out: dict[str, float | int] = {"n": len(values)}
    for p in points:
        out[f"p{p:g}"] = round(percentile(values, p), 3)
    out["max"] = round(max(values), 3) if values else float("nan")
    out["mean"] = round(sum(values) / len(values), 3) if values else float("nan")
    return out


def task_inputs(count: int, rng: random.Random, tag: str) -> list[dict[str, Any]]:
    """Varied realistic task bodies: duration 5 or 10, mode std or pro, a prompt, a ratio."""
    return [
        {
            "model": MODEL,
            "input": {
                "prompt": f"{rng.choice(PROMPTS)} (take {n + 1})",
                "duration": rng.choice((5, 5, 10)),  # short clips are the common order
                "mode": rng.choice(("std", "std", "pro")),
                "aspect_ratio": rng.choice(ASPECT_RATIOS),
            },
            "metadata": {"bench": tag, "n": n},
        }
        for n in range(count)
    ]


def baseline_poll(
    created: float, processing: float, completed: float, poll_s: float
) -> tuple[float, float, int]:
    """A client polling every `poll_s` from `created`: (processing delay, terminal delay, requests).

    It sees a change at its first poll at or after the change; it sends one submit plus
    one GET per poll until it sees the terminal status.
    """

    def polls_until(at: float) -> int:
        return max(1, math.ceil((at - created) / poll_s - 1e-9))

    seen_processing = created + polls_until(processing) * poll_s
    terminal_polls = polls_until(completed)
    seen_terminal = created + terminal_polls * poll_s
    return seen_processing - processing, seen_terminal - completed, 1 + terminal_polls


def relay_env(args: argparse.Namespace, scenario: Scenario, dsn: str, sim_url: str) -> dict:
    """The relay's environment: the scratch database, the simulator, poll settings scaled by S."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    s = args.time_scale
    env.update(
        RELAY_DATABASE_URL=dsn,
        RELAY_UPSTREAM_URL=sim_url,
        RELAY_UPSTREAM_API_KEY=SIM_KEY,
        RELAY_WEBHOOK_DENY_CIDRS=DENY_CIDRS,
        RELAY_LOG_LEVEL="warning",
        RELAY_HOST="127.0.0.1",
        RELAY_POLL_INTERVAL_MIN_S=str(POLL_INTERVAL_MIN_S * s),
        RELAY_POLL_INTERVAL_MAX_S=str(POLL_INTERVAL_MAX_S * s),
        RELAY_UPSTREAM_MAX_RPS=str(scenario.ceiling_rps / s),
    )
    delay = target_delay(args)
    if delay is not None:
        env["RELAY_POLL_TARGET_DELAY_S"] = str(delay * s)
    return env


def target_delay(args: argparse.Namespace) -> float | None:
    """The unscaled target delay to pass: the flag's, or the default when the relay knows it."""
    if args.target_delay is not None:
        return args.target_delay
    if "poll_target_delay_s" in Settings.model_fields:
        return DEFAULT_TARGET_DELAY_S
    return None


def relay_command(*argv: str) -> list[str]:
    """`python -m relay ...` with this interpreter."""
    return [sys.executable, "-m", "relay", *argv]


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


async def sim_clock_offset(http: aiohttp.ClientSession, sim_url: str) -> float:
    """Simulator unix time minus ours, from the quickest of a few round trips."""
    best: tuple[float, float] | None = None
    for _ in range(7):
        before = time.time()
        async with http.get(sim_url + "/_sim/stats") as resp:
            now = (await resp.json())["now"]
        after = time.time()
        sample = (after - before, now - (before + after) / 2)
        best = min(best or sample, sample)
    assert best is not None
    return best[1]


async def sim_tasks(http: aiohttp.ClientSession, sim_url: str) -> dict[str, dict]:
    """Every simulator task report, by upstream task id."""
    reports: dict[str, dict] = {}
    while True:
        url = f"{sim_url}/_sim/tasks?offset={len(reports)}&limit={SIM_PAGE}"
        async with http.get(url) as resp:
            page = (await resp.json())["tasks"]
        if not page:
            return reports
        reports.update((t["task_id"], t) for t in page)


async def submit_at_rate(
    http: aiohttp.ClientSession,
    api_urls: list[str],
    api_key: str,
    bodies: list[dict[str, Any]],
    rate_per_s: float,
) -> list[Submission]:
    """POST every body at its planned time (open loop: a slow answer delays nothing else)."""

    async def submit(n: int, body: dict[str, Any], planned: float) -> Submission:
        headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": uuid.uuid4().hex}
        sent, sent_wall = time.monotonic(), time.time()
        task_id = upstream_id = None
        status = 0
        try:
            async with http.post(
                api_urls[n % len(api_urls)] + "/v1/tasks", json=body, headers=headers
            ) as resp:
                status = resp.status
                answer = await resp.json()
                if status in (200, 202):
                    task_id, upstream_id = answer.get("id"), answer.get("upstream_task_id")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        latency = time.monotonic() - sent
        return Submission(task_id, upstream_id, planned, sent, sent_wall, latency, status)

    start = time.monotonic()
    pending = []
    for n, body in enumerate(bodies):
        planned = start + n / rate_per_s
        # Pacing the schedule, not synchronisation: the plan says when each task is sent.
        await asyncio.sleep(max(0.0, planned - time.monotonic()))
        pending.append(asyncio.create_task(submit(n, body, planned)))
    return list(await asyncio.gather(*pending))


async def wait_terminal(receiver: Receiver, task_ids: list[str], timeout: float) -> bool:
    """Until every task has its terminal webhook, or `timeout` wall seconds; whether all did."""
    deadline = time.monotonic() + timeout
    while True:
        if all(receiver.terminal_at(t) is not None for t in task_ids):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(WAIT_STEP_S)


def progress(text: str) -> None:
    """One line of progress on stderr (the figures go to stdout)."""
    print(f"[latency_bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def run_scenario(
    args: argparse.Namespace, scenario: Scenario, server_url: str, logs: Path
) -> dict[str, Any]:
    """One scenario in its own scratch database with its own simulator and relay processes."""
    started = time.monotonic()
    s = args.time_scale
    async with scratch_database(server_url, "relay_lbench") as dsn:
        with contextlib.ExitStack() as stack:
            sim_port = free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            sim_env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
            sim_cmd = relay_command(
                "simulate-upstream", "--port", str(sim_port), "--api-key", SIM_KEY,
                "--timing", "realistic", "--time-scale", str(s), "--seed", str(args.seed),
            )  # fmt: skip
            stack.enter_context(child_process(sim_cmd, sim_env, logs / f"{scenario.name}-sim.log"))
            env = relay_env(args, scenario, dsn, sim_url)
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
            for replica in range(args.replicas):
                port = free_port()
                api_urls.append(f"http://127.0.0.1:{port}")
                log = logs / f"{scenario.name}-relay{replica}.log"
                stack.enter_context(
                    child_process(relay_command("serve"), {**env, "RELAY_PORT": str(port)}, log)
                )
            timeout = aiohttp.ClientTimeout(total=60)
            connector = aiohttp.TCPConnector(limit=256)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                await wait_http(http, sim_url + "/_sim/stats", STARTUP_TIMEOUT_S)
                for url in api_urls:
                    await wait_http(http, url + "/readyz", STARTUP_TIMEOUT_S)
                return await _measure(args, scenario, http, sim_url, api_urls, api_key, started)


async def _measure(
    args: argparse.Namespace,
    scenario: Scenario,
    http: aiohttp.ClientSession,
    sim_url: str,
    api_urls: list[str],
    api_key: str,
    started: float,
) -> dict[str, Any]:
    s = args.time_scale
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        auth = {"Authorization": f"Bearer {api_key}"}
        sub = {"url": f"http://127.0.0.1:{port}/hooks", "description": "latency bench"}
        async with http.post(api_urls[0] + "/v1/subscriptions", json=sub, headers=auth) as resp:
            if resp.status != 201:
                raise RuntimeError(f"subscription: {resp.status} {await resp.text()}")
            receiver.secret = (await resp.json())["secret"]
        rng = random.Random(args.seed)
        rate = scenario.rate_per_s / s
        deadline_s = args.deadline * s

        if scenario.warmup:
            progress(f"{scenario.name}: {scenario.warmup} warm-up tasks")
            warm = await submit_at_rate(
                http, api_urls, api_key, task_inputs(scenario.warmup, rng, "warmup"), rate
            )
            warm_ids = [w.task_id for w in warm if w.task_id]
            if not await wait_terminal(receiver, warm_ids, deadline_s):
                progress(f"{scenario.name}: warm-up deadline passed, measuring anyway")

        progress(f"{scenario.name}: {scenario.tasks} measured tasks at {scenario.rate_per_s:g}/s")
        bodies = task_inputs(scenario.tasks, rng, "measured")
        subs = await submit_at_rate(http, api_urls, api_key, bodies, rate)
        ids = [x.task_id for x in subs if x.task_id]
        all_terminal = await wait_terminal(receiver, ids, deadline_s)
        progress(f"{scenario.name}: {'all' if all_terminal else 'NOT all'} terminal, computing")
        offset = await sim_clock_offset(http, sim_url)
        reports = await sim_tasks(http, sim_url)
    finally:
        await runner.cleanup()
    return figures(args, scenario, receiver, subs, reports, offset, all_terminal, started, bodies)


def figures(
    args: argparse.Namespace,
    scenario: Scenario,
    receiver: Receiver,
    subs: list[Submission],
    reports: dict[str, dict],
    sim_offset: float,
    all_terminal: bool,
    started: float,
    bodies: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The scenario's figures; delays in unscaled seconds, HTTP timings in wall milliseconds."""
    s = args.time_scale
    by_endpoint: dict[str, list[int]] = {}
    true_times: list[tuple[ClassTimes, float, float]] = []
    ids = [x.task_id for x in subs if x.task_id]
    relay_processing, relay_terminal, relay_requests = [], [], []
    base_processing, base_terminal, base_requests = [], [], []
    last_arrival = last_completion = None
    for n, x in enumerate(subs):
        task_id = x.task_id
        if task_id is None:
            continue
        report = reports.get(receiver.upstream_ids.get(task_id) or x.upstream_task_id or "")
        if report is None or report["completed_at"] is None:
            continue
        # The simulator's clock onto ours.
        created, processing, completed = (
            report[k] - sim_offset for k in ("created_at", "processing_at", "completed_at")
        )
        arrived_processing = receiver.arrivals.get((task_id, "task.processing"))
        arrived_terminal = receiver.terminal_at(task_id)
        if arrived_processing is not None:
            relay_processing.append((arrived_processing - processing) / s)
        if arrived_terminal is not None:
            relay_terminal.append((arrived_terminal - completed) / s)
            last_arrival = max(last_arrival or arrived_terminal, arrived_terminal)
        last_completion = max(last_completion or completed, completed)
        relay_requests.append(sum(report["requests"].values()))
        for endpoint, count in report["requests"].items():
            by_endpoint.setdefault(endpoint, []).append(count)
        if n < len(bodies):
            true_times.append(
                (true_class(bodies[n]), (processing - created) / s, (completed - processing) / s)
            )
        bp, bt, br = baseline_poll(created, processing, completed, BASELINE_POLL_S * s)
        base_processing.append(bp / s)
        base_terminal.append(bt / s)
        base_requests.append(br)
    first_sent = min((x.sent_wall for x in subs), default=time.time())
    measured = summary(relay_terminal, 50, 95, 99)
    oracles = []
    if true_times and relay_terminal:
        progress(f"{scenario.name}: searching the oracle's schedules")
        # At the relay's own delays (the yardstick), then at the targets.
        oracles.append(oracle_line(true_times, measured["p50"], measured["p95"]))
        oracles.append(oracle_line(true_times, *ORACLE_TARGETS))
    received = sum(receiver.terminal_at(t) is not None for t in ids)
    return {
        "scenario": scenario.name,
        "settings": {
            **asdict(scenario),
            "time_scale": s,
            "seed": args.seed,
            "replicas": args.replicas,
            "target_delay_s": target_delay(args),
            "relay_max_rps_scaled": scenario.ceiling_rps / s,
        },
        "relay": {
            "processing_delay_s": summary(relay_processing, 50, 95, 99),
            "terminal_delay_s": measured,
            "upstream_requests_per_task": summary(relay_requests, 50, 95),
            "requests_by_endpoint": {
                k: round(sum(v) / len(v), 2) for k, v in sorted(by_endpoint.items())
            },
        },
        "oracle": oracles,
        "poll_every_5s": {
            "processing_delay_s": summary(base_processing, 50, 95, 99),
            "terminal_delay_s": summary(base_terminal, 50, 95, 99),
            "upstream_requests_per_task": summary(base_requests, 50, 95),
        },
        "submit_latency_ms": summary([x.latency_s * 1000 for x in subs], 50, 95, 99),
        "submit_errors": sum(x.task_id is None for x in subs),
        "arrival_lateness_ms": summary([(x.sent - x.planned) * 1000 for x in subs], 50, 99),
        "terminal_webhooks": {"received": received, "expected": len(subs), "all": all_terminal},
        "last_terminal_after_first_submit_s": (
            round((last_arrival - first_sent) / s, 1) if last_arrival else None
        ),
        "last_terminal_after_last_completion_s": (
            round((last_arrival - last_completion) / s, 1)
            if last_arrival and last_completion
            else None
        ),
        "bad_signatures": receiver.bad_signatures,
        "wall_s": round(time.monotonic() - started, 1),
    }


def true_class(body: dict[str, Any]) -> ClassTimes:
    """The simulator's true timing distributions for one submitted body (unscaled)."""
    from relay.upstream.simulator.timings import GENERIC, PROFILES

    profile = PROFILES.get(body["model"], GENERIC)
    return ClassTimes(
        profile.queue_min_s,
        profile.queue_max_s,
        profile.processing_median_s(body["input"]),
        profile.sigma,
    )


def oracle_text(o: dict[str, Any], baseline_requests: float) -> str:
    """One oracle line: the fewest requests per task meeting the given delays."""
    goal = f"p50 <= {o['p50_target']:.2f}, p95 <= {o['p95_target']:.2f}"
    if o.get("p99_target", math.inf) != math.inf:
        goal += f", p99 <= {o['p99_target']:.2f}"
    if not o["found"]:
        return f"{'oracle (' + goal + ')':26}no dense-window schedule meets it"
    sch = o["schedule"]
    shape = sch["shape"] + (
        f" every {sch['queue_spacing_s']:g} s" if sch.get("queue_spacing_s") else ""
    )
    return (
        f"{'oracle':26}{o['requests_mean']:.1f} requests/task "
        f"({o['requests_mean'] / baseline_requests:.2f} of the 5 s client) for {goal}: "
        f"p50 {o['p50']:.2f} p95 {o['p95']:.2f} p99 {o['p99']:.2f}; window "
        f"q{sch['start_q']:g}-q{sch['end_q']:g} every {sch['spacing_s']:.2f} s, {shape}"
    )


def render(fig: dict[str, Any]) -> str:
    """A compact table of one scenario's figures."""
    st = fig["settings"]
    target = "not set" if st["target_delay_s"] is None else f"{st['target_delay_s']:g} s"

    def three(d: dict[str, Any], unit: str = "") -> str:
        return f"p50 {d['p50']:>7.2f}  p95 {d['p95']:>7.2f}  p99 {d['p99']:>7.2f}{unit}"

    def reqs(d: dict[str, Any]) -> str:
        return f"mean {d['mean']:>6.1f}  p95 {d['p95']:>6.1f}"

    relay, base = fig["relay"], fig["poll_every_5s"]
    sub, late, hooks = (
        fig["submit_latency_ms"],
        fig["arrival_lateness_ms"],
        fig["terminal_webhooks"],
    )
    lines = [
        f"== {fig['scenario']}: {st['tasks']} tasks at {st['rate_per_s']:g}/s after "
        f"{st['warmup']} warm-up, ceiling {st['ceiling_rps']:g} rps, "
        f"time scale {st['time_scale']:g}, "
        f"{st['replicas']} replica(s), target delay {target}, seed {st['seed']} "
        f"(wall {fig['wall_s']:.0f} s) ==",
        f"{'':26}{'relay':<40}poll every 5 s",
        f"{'processing delay (s)':26}{three(relay['processing_delay_s']):<40}"
        f"{three(base['processing_delay_s'])}",
        f"{'terminal delay (s)':26}{three(relay['terminal_delay_s']):<40}"
        f"{three(base['terminal_delay_s'])}",
        f"{'upstream requests/task':26}{reqs(relay['upstream_requests_per_task']):<40}"
        f"{reqs(base['upstream_requests_per_task'])}",
        f"{'requests by endpoint':26}"
        + ", ".join(f"{k} {v:g}" for k, v in relay.get("requests_by_endpoint", {}).items()),
        *(oracle_text(o, base["upstream_requests_per_task"]["mean"]) for o in fig["oracle"]),
        f"{'submit latency (ms)':26}{three(sub)}  max {sub['max']:.1f}  "
        f"errors {fig['submit_errors']}",
        f"{'arrival lateness (ms)':26}p50 {late['p50']:>7.2f}  p99 {late['p99']:>7.2f}  "
        f"max {late['max']:.1f}",
        f"{'terminal webhooks':26}{hooks['received']}/{hooks['expected']}"
        f"{' (all)' if hooks['all'] else ' (NOT all)'}; last one "
        f"{fig['last_terminal_after_first_submit_s']} s after the first submit, "
        f"{fig['last_terminal_after_last_completion_s']} s after the last true completion",
        f"{'':26}(n: processing {relay['processing_delay_s']['n']}, terminal "
        f"{relay['terminal_delay_s']['n']}; bad signatures {fig['bad_signatures']})",
    ]
    return "\n".join(lines)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The chosen scenarios with any size flags applied."""
    names = ["ample", "tight"] if args.scenario == "both" else [args.scenario]
    chosen = []
    for name in names:
        overrides = {
            field: value
            for field, value in (
                ("tasks", args.tasks),
                ("warmup", args.warmup),
                ("ceiling_rps", args.ceiling),
                ("rate_per_s", args.rate),
            )
            if value is not None
        }
        chosen.append(replace(SCENARIOS[name], **overrides))
    return chosen


async def run(args: argparse.Namespace, server_url: str) -> None:
    """Every chosen scenario, one after the other, printing each table as it is done."""
    logs = Path(tempfile.mkdtemp(prefix="latency_bench_"))
    results = []
    try:
        for scenario in scenarios(args):
            fig = await run_scenario(args, scenario, server_url, logs)
            results.append(fig)
            print(render(fig) + "\n", flush=True)
    finally:
        noisy = [p for p in logs.iterdir() if p.stat().st_size and "-relay" in p.name]
        if noisy:
            progress(f"relay warnings/errors kept in {logs}")
        else:
            shutil.rmtree(logs, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"scenarios": results}, indent=2) + "\n")


def main() -> None:
    """Parse flags, find a Postgres, run."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=("ample", "tight", "both"), default="ample")
    parser.add_argument("--time-scale", type=float, default=0.1, help="simulated time factor S")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--replicas", type=int, default=1, help="`relay serve` processes")
    parser.add_argument(
        "--target-delay",
        type=float,
        help="unscaled RELAY_POLL_TARGET_DELAY_S (default 1.75 when the relay has the setting)",
    )
    parser.add_argument("--tasks", type=int, help="measured tasks (ample 200, tight 600)")
    parser.add_argument("--warmup", type=int, help="warm-up tasks (100)")
    parser.add_argument("--ceiling", type=float, help="unscaled upstream rps (ample 50, tight 10)")
    parser.add_argument("--rate", type=float, help="unscaled submissions/s (ample 2, tight 10)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=1800,
        help="unscaled seconds after the last submit to wait for terminal webhooks",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--database-url", default=os.environ.get("RELAY_DATABASE_URL"))
    args = parser.parse_args()
    with postgres_server(args.database_url) as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
