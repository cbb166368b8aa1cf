"""A burst of concurrent submissions through two api replicas; one dies by SIGKILL mid-burst.

Outcomes of concurrent requests are written in shared transactions (`OutcomeWriter`), so a
replica killed mid-burst dies holding outcomes that upstream accepted but that were never
committed. Nothing may be lost: every task the database holds (every answered one among
them) is sent upstream once, ends terminal with its whole history, and the event feed
carries each of its status changes exactly once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp

from relay.identity.clients import create_client
from tests.acceptance.conftest import RelayProcess, free_port
from tests.helpers import TASK, wait_for

WORKERS = 24
PER_WORKER = 8
# The survivor's answers counted before the other replica is killed: the burst is under way.
KILL_AFTER_ANSWERS = 40
STATUS_CHANGES = ["task.queued", "task.processing", "task.succeeded"]


async def read_feed(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    """Every event of `GET /v1/events`, paged by cursor to the end."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "100", **({"after": cursor} if cursor else {})}
        async with http.get(f"{base}/v1/events", params=params) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
        events.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return events


async def test_a_replica_killed_mid_burst_loses_no_task_and_no_status_change(
    relay_env: dict[str, str], store: Any, sim: Any, tmp_path: Any
) -> None:
    sim.config.latency_s = 0.05  # answers in flight upstream when the replica dies
    base_env = {
        **relay_env,
        # A submission whose caller died is taken over after timeout + 15 s.
        "RELAY_UPSTREAM_TIMEOUT_S": "1",
        "RELAY_UPSTREAM_MAX_RPS": "5000",
        "RELAY_LOG_LEVEL": "info",
    }
    survivor = RelayProcess(
        {**base_env, "RELAY_ROLES": "api,poller,dispatcher", "RELAY_PORT": str(free_port())},
        tmp_path / "survivor.log",
    )
    victim = RelayProcess(
        {**base_env, "RELAY_ROLES": "api", "RELAY_PORT": str(free_port())},
        tmp_path / "victim.log",
    )
    answered: list[str] = []
    from_victim = 0
    killed = asyncio.Event()
    try:
        await survivor.ready()
        await victim.ready()
        key, _ = await create_client(store, "svc-burst")
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as http:

            async def worker(n: int) -> None:
                nonlocal from_victim
                for i in range(PER_WORKER):
                    replica = victim if (n + i) % 2 else survivor
                    try:
                        async with http.post(f"{replica.base}/v1/tasks", json=TASK) as resp:
                            assert resp.status == 202, await resp.text()
                            answered.append((await resp.json())["id"])
                    except aiohttp.ClientError:
                        assert replica is victim and killed.is_set()
                        continue
                    if replica is victim:
                        from_victim += 1
                        if from_victim == KILL_AFTER_ANSWERS:
                            victim.proc.kill()  # SIGKILL: outcomes it holds are never written
                            killed.set()

            await asyncio.gather(*(worker(n) for n in range(WORKERS)))
            assert killed.is_set()

            async def all_succeeded() -> bool:
                sim.advance(1)  # upstream's clock runs ahead: every task finishes soon
                left = await store.pool.fetchval(
                    "SELECT count(*) FROM tasks WHERE status <> 'succeeded'"
                )
                return left == 0

            await wait_for(all_succeeded, timeout=60, interval=0.25)
            task_ids = {r["id"] for r in await store.pool.fetch("SELECT id FROM tasks")}
            assert set(answered) <= task_ids

            async def feed_complete() -> list[dict[str, Any]] | None:
                events = await read_feed(http, survivor.base)
                return events if len(events) >= len(task_ids) * len(STATUS_CHANGES) else None

            events = await wait_for(feed_complete, timeout=20, interval=0.25)
    finally:
        victim.kill()
        survivor.kill()

    assert sim.charges == len(task_ids), "every task was sent upstream (and charged) once"
    for task_id in task_ids:
        rows = await store.pool.fetch(
            "SELECT type FROM task_events WHERE task_id = $1 AND type LIKE 'task.%' ORDER BY seq",
            task_id,
        )
        assert [r["type"] for r in rows] == STATUS_CHANGES, task_id
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "no event twice in the feed"
    per_task = Counter((e["data"]["id"], e["type"]) for e in events)
    assert per_task == Counter({(t, s): 1 for t in task_ids for s in STATUS_CHANGES})
