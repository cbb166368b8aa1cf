"""The relay as a real process: SIGTERM handling and secrets kept out of the logs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.identity.clients import create_client
from tests.acceptance.conftest import RelayProcess
from tests.helpers import SAMPLE_INPUT, SIM_KEY, wait_for


class SlowReceiver:
    """Answers 204 after `delay` seconds; records what it received."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.received: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.started.set()
        await asyncio.sleep(self.delay)  # the slow receiver under test, not synchronisation
        self.received.append({"headers": dict(request.headers), "body": json.loads(body)})
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[SlowReceiver, str]]:
    rec = SlowReceiver()
    server = TestServer(rec.app)
    await server.start_server()
    yield rec, str(server.make_url("/hook"))
    await server.close()


async def _api(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize(
    ("grace", "delay", "expect"), [("20", 2.0, "succeeded"), ("1", 8.0, "released")]
)
async def test_sigterm_mid_delivery_exits_0_and_loses_nothing(
    relay_env, receiver, store, sim, tmp_path, grace, delay, expect
):
    rec, url = receiver
    rec.delay = delay
    relay_env["RELAY_SHUTDOWN_GRACE_S"] = grace
    proc = RelayProcess(relay_env, tmp_path / "relay.log")
    try:
        await proc.ready()
        key, _ = await create_client(store, "svc")
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            status, _ = await _api(http, "POST", proc.base + "/v1/subscriptions", json={"url": url})
            assert status == 201
            status, _ = await _api(
                http,
                "POST",
                proc.base + "/v1/tasks",
                json={"model": "kling-video-o1", "input": SAMPLE_INPUT},
            )
            assert status == 202
        await asyncio.wait_for(rec.started.wait(), timeout=20)  # the delivery is in flight
        code = await proc.terminate()
    finally:
        proc.kill()
    assert code == 0, proc.log_path.read_text()[-3000:]
    rows = await store.pool.fetch("SELECT status, lease_owner FROM deliveries")
    assert rows, "the status change produced a delivery"
    first = rows[0]
    assert first["lease_owner"] is None, "no lease is left held by the stopped process"
    if expect == "succeeded":
        assert first["status"] == "succeeded"
    else:
        assert first["status"] in ("pending", "failed")
    log = proc.log_path.read_text()
    assert "runtime_stopped" in log


async def test_no_secret_reaches_the_logs_over_a_full_lifecycle(
    relay_env, receiver, store, sim, tmp_path
):
    rec, url = receiver
    proc = RelayProcess(relay_env, tmp_path / "relay.log")
    secrets: list[str] = [SIM_KEY]
    try:
        await proc.ready()
        key, client_secret = await create_client(store, "svc")
        secrets += [key, client_secret]
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            status, sub = await _api(
                http, "POST", proc.base + "/v1/subscriptions", json={"url": url}
            )
            assert status == 201
            secrets.append(sub["secret"])
            status, task = await _api(
                http,
                "POST",
                proc.base + "/v1/tasks",
                json={
                    "model": "kling-video-o1",
                    "input": SAMPLE_INPUT,
                    "webhook_url": url,
                    "metadata": {"note": f"client pasted {key} here"},
                },
            )
            assert status == 202
            sim.advance(30)

            async def finished() -> bool:
                _, body = await _api(http, "GET", proc.base + f"/v1/tasks/{task['id']}")
                return body["status"] == "succeeded"

            await wait_for(finished, timeout=20)
            status, rotated = await _api(
                http, "POST", proc.base + f"/v1/subscriptions/{sub['id']}/rotate-secret"
            )
            assert status == 200
            secrets.append(rotated["secret"])
            status, _ = await _api(
                http,
                "POST",
                proc.base + "/v1/tasks",
                json={"model": "kling-video-o1", "input": SAMPLE_INPUT},
            )
            assert status == 202
            sim.advance(30)
            await wait_for(lambda: _count(rec, 9), timeout=20)
            # A wrong key, secret-shaped, is refused and not echoed either.
            async with aiohttp.ClientSession() as anon:
                bad = {"Authorization": f"Bearer {key}x"}
                status, body = await _api(anon, "GET", proc.base + "/v1/tasks", headers=bad)
                assert status == 401
                assert key not in json.dumps(body)
        assert await proc.terminate() == 0
    finally:
        proc.kill()
    log = proc.log_path.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "http_request" for line in lines)
    for secret in secrets:
        assert secret not in log
        assert secret.removeprefix("whsec_") not in log


async def _count(rec: SlowReceiver, n: int) -> bool:
    return len(rec.received) >= n
