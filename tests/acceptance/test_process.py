"""The relay as a real process: SIGTERM handling and secrets kept out of the logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.clients import create_client
from tests.conftest import SAMPLE_INPUT, SIM_KEY, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class RelayProcess:
    """`relay serve` in a subprocess, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = int(env["RELAY_PORT"])
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        async def answers() -> bool:
            try:
                async with aiohttp.ClientSession() as http, http.get(self.base + "/readyz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                assert self.proc.poll() is None, self.log_path.read_text()
                return False

        await wait_for(answers, timeout=20)

    async def terminate(self, timeout: float = 40) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def relay_env(database_url: str, simulator: TestServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        RELAY_DATABASE_URL=database_url,
        RELAY_UPSTREAM_URL=str(simulator.make_url("")).rstrip("/"),
        RELAY_UPSTREAM_API_KEY=SIM_KEY,
        RELAY_HOST="127.0.0.1",
        RELAY_PORT=str(_free_port()),
        RELAY_POLL_INTERVAL_MIN_S="0.1",
        RELAY_POLL_INTERVAL_MAX_S="0.5",
        RELAY_WEBHOOK_RETRY_SCHEDULE="1s,1s",
        RELAY_LOG_LEVEL="debug",
        RELAY_LOG_FORMAT="json",
    )
    return env


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
