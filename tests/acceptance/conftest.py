"""Fixtures for tests that run `relay serve` as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from relay.cli.localdev import free_port
from tests.helpers import SIM_KEY, wait_for


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
        RELAY_PORT=str(free_port()),
        RELAY_POLL_INTERVAL_MIN_S="0.1",
        RELAY_POLL_INTERVAL_MAX_S="0.5",
        RELAY_WEBHOOK_RETRY_SCHEDULE="1s,1s",
        # receivers listen on loopback, which the default deny list refuses
        RELAY_WEBHOOK_DENY_CIDRS="169.254.0.0/16,fe80::/10",
        RELAY_LOG_LEVEL="debug",
        RELAY_LOG_FORMAT="json",
    )
    return env
