"""Several relay processes on one database; a poller and a dispatcher die by SIGKILL mid-run."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.identity.clients import create_client
from tests.acceptance.conftest import RelayProcess, free_port
from tests.helpers import SAMPLE_INPUT, wait_for

TASKS = 12
EVENTS_PER_TASK = 3  # queued, processing, succeeded


class RecordingReceiver:
    """Answers 200 after a short delay (so deliveries are in flight when a process dies)."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(0.2)  # a receiver that takes its time, not synchronisation
        self.bodies[request.headers["webhook-id"]].append(body)
        return web.Response(status=200)


async def test_replicas_finish_the_work_of_killed_poller_and_dispatcher(
    relay_env: dict[str, str], store, sim, tmp_path
) -> None:
    receiver = RecordingReceiver()
    server = TestServer(receiver.app)
    await server.start_server()
    base_env = {
        **relay_env,
        # Short leases so the survivors take over within the test's patience.
        "RELAY_POLL_LEASE_S": "2",
        "RELAY_WEBHOOK_TIMEOUT_S": "2",
        "RELAY_DISPATCH_LEASE_MARGIN_S": "1",
        "RELAY_LOG_LEVEL": "info",
    }
    roles = {
        "api": "api,poller",
        "poller": "poller",
        "dispatcher-a": "dispatcher",
        "dispatcher-b": "dispatcher",
    }
    procs: dict[str, RelayProcess] = {}
    try:
        for name, role in roles.items():
            env = {**base_env, "RELAY_ROLES": role, "RELAY_PORT": str(free_port())}
            procs[name] = RelayProcess(env, tmp_path / f"{name}.log")
        for proc in procs.values():
            await proc.ready()
        key, _ = await create_client(store, "svc")
        api = procs["api"].base
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            async with http.post(
                f"{api}/v1/subscriptions", json={"url": str(server.make_url("/hook"))}
            ) as resp:
                assert resp.status == 201
            task_ids = []
            for _ in range(TASKS):
                async with http.post(
                    f"{api}/v1/tasks", json={"model": "kling-video-o1", "input": SAMPLE_INPUT}
                ) as resp:
                    assert resp.status == 202
                    task_ids.append((await resp.json())["id"])

        async def some_deliveries_done() -> bool:
            return bool(receiver.bodies)

        sim.advance(2)  # processing
        await wait_for(some_deliveries_done, timeout=20)
        procs["poller"].proc.kill()  # SIGKILL: no chance to release anything
        procs["dispatcher-a"].proc.kill()
        sim.advance(10)  # every task succeeds upstream

        async def everything_delivered() -> bool:
            done = await store.pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE status = 'succeeded'"
            )
            return done == TASKS * EVENTS_PER_TASK

        await wait_for(everything_delivered, timeout=60)
    finally:
        for proc in procs.values():
            proc.kill()
        await server.close()

    statuses = await store.pool.fetch("SELECT status FROM tasks")
    assert [r["status"] for r in statuses] == ["succeeded"] * TASKS
    for task_id in task_ids:
        rows = await store.pool.fetch(
            "SELECT type FROM task_events WHERE task_id = $1 AND type LIKE 'task.%'", task_id
        )
        assert sorted(r["type"] for r in rows) == [
            "task.processing",
            "task.queued",
            "task.succeeded",
        ]
    event_ids = {r["id"] for r in await store.pool.fetch("SELECT id FROM webhook_events")}
    assert set(receiver.bodies) == event_ids, "every event reached the receiver"
    for bodies in receiver.bodies.values():
        # At least once; a redelivery after a crash carries the same id and the same event.
        assert len({json.dumps(json.loads(b), sort_keys=True) for b in bodies}) == 1
