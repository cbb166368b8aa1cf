"""A bad day upstream, end to end: `relay serve` against a simulator failing ~40% of calls.

30% 5xx, 10% 429 (Retry-After 0.2 s), 5% malformed bodies, and one 3 s outage while tasks
are being submitted. Every task must end terminal, charged once, with a complete history:
task.queued, task.processing, the terminal status, and every event upstream served.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from relay.identity.clients import create_client
from relay.upstream.simulator import SimulatorConfig
from tests.acceptance.conftest import RelayProcess
from tests.helpers import SAMPLE_INPUT, SIM_KEY, wait_for

TASKS = 30
OUTAGE_S = 3.0


@pytest.mark.parametrize(
    "sim_config",
    [
        SimulatorConfig(
            api_key=SIM_KEY,
            task_duration_s=4.0,
            rate_5xx=0.3,
            rate_429=0.1,
            malformed_rate=0.05,
            retry_after_s=0.2,
            seed=2026,
        )
    ],
)
async def test_every_task_ends_with_a_complete_history_despite_upstream_faults(
    relay_env, store, sim, tmp_path
):
    key, _ = await create_client(store, "svc-faults")
    headers = {"Authorization": f"Bearer {key}"}
    relay = RelayProcess(relay_env, tmp_path / "relay.log")
    try:
        await relay.ready()
        async with aiohttp.ClientSession(relay.base, headers=headers) as http:
            ids = []
            outage_ends = None
            for n in range(TASKS):
                if n == TASKS // 3:  # the outage starts a third of the way through
                    sim.config.rate_5xx, outage_ends = 1.0, time.monotonic() + OUTAGE_S
                if outage_ends is not None and time.monotonic() >= outage_ends:
                    sim.config.rate_5xx, outage_ends = 0.3, None
                body = {"model": "kling-video-o1", "input": SAMPLE_INPUT}
                async with http.post("/v1/tasks", json=body) as resp:
                    assert resp.status == 202, await resp.text()
                    ids.append((await resp.json())["id"])
                await asyncio.sleep(0.1)  # a client submitting over three seconds, not a wait
            if outage_ends is not None:
                await asyncio.sleep(max(outage_ends - time.monotonic(), 0))  # the outage's length
                sim.config.rate_5xx = 0.3

            async def all_finished() -> bool:
                rows = await store.pool.fetch(
                    "SELECT status, next_poll_at FROM tasks WHERE id = ANY($1::text[])", ids
                )
                return len(rows) == TASKS and all(
                    r["status"] in ("succeeded", "failed", "cancelled")
                    and r["next_poll_at"] is None
                    for r in rows
                )

            # ~8 s on an idle machine (tasks take 4 s); generous for a loaded CI box.
            await wait_for(all_finished, timeout=45, interval=0.25)

            # Upstream behaves again so the check itself reads everything.
            sim.config.rate_5xx = sim.config.rate_429 = sim.config.malformed_rate = 0.0
            assert sim.charges == TASKS
            for task_id in ids:
                async with http.get(f"/v1/tasks/{task_id}") as resp:
                    task = await resp.json()
                async with http.get(f"/v1/tasks/{task_id}/events") as resp:
                    entries = (await resp.json())["data"]
                statuses = [e["to_status"] for e in entries if e["type"].startswith("task.")]
                assert statuses == ["queued", "processing", task["status"]], (task_id, entries)
                served = sim.events_body(task["upstream_task_id"])
                recorded = [
                    e["upstream_event"]
                    for e in entries
                    if e["source"] == "upstream" and e["type"].startswith("upstream.")
                ]
                assert recorded == served, task_id
                assert "task.events_unavailable" not in [e["type"] for e in entries]
        assert await relay.terminate() == 0
    finally:
        relay.kill()
