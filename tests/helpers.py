"""Helpers the tests import: API shortcuts, waiting, scratch databases, `relay` subprocesses.

Fixtures live in the conftest.py files; everything a test imports by name lives here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
from aiohttp.test_utils import TestClient

from relay.core.config import Settings
from relay.core.store import with_database

T = TypeVar("T")

# The upstream API key the simulator accepts in tests.
SIM_KEY = "sim-test-key-7f3a"
SAMPLE_INPUT = {"prompt": "A cinematic skyline at golden hour", "duration": 5, "mode": "pro"}
# A valid POST /v1/tasks body.
TASK = {"model": "kling-video-o1", "input": SAMPLE_INPUT}
PROBLEM_JSON = "application/problem+json"


def make_settings(database_url: str, upstream_url: str, **overrides: Any) -> Settings:
    """Test settings: API role only unless asked, fast intervals, the simulator's key."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "upstream_url": upstream_url,
        "upstream_api_key": SIM_KEY,
        "roles": "api",
        "poll_interval_min_s": 0.05,
        "poll_interval_max_s": 0.5,
        "upstream_max_rps": 1000,
        "upstream_timeout_s": 5,
        "webhook_timeout_s": 2,
        "webhook_retry_schedule": "1s,1s,1s",
        "webhook_deny_cidrs": "169.254.0.0/16,fe80::/10",
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


# --- scratch databases -------------------------------------------------------------------


async def admin_execute(url: str, sql: str) -> None:
    """Run one statement on the server's `postgres` database (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_database(postgres_url: str, prefix: str, *, template: str | None = None) -> str:
    """A new database with a unique `prefix`ed name (a clone of `template` if given); its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    clone = f' TEMPLATE "{template}"' if template else ""
    await admin_execute(postgres_url, f'CREATE DATABASE "{name}"{clone}')
    return with_database(postgres_url, name)


async def drop_database(postgres_url: str, database_url: str) -> None:
    """Drop the database `database_url` names, disconnecting whoever still uses it."""
    name = urlsplit(database_url).path.lstrip("/")
    await admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- the relay API -----------------------------------------------------------------------


def auth(client: dict[str, str]) -> dict[str, str]:
    """Only the Authorization header of a `new_client` result (or of such headers)."""
    return {"Authorization": client["Authorization"]}


async def submit(
    api: TestClient, client: dict[str, str], payload: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """POST /v1/tasks (`payload`, else TASK, with `extra` fields) as `client`; asserts 202."""
    body = {**(payload or TASK), **extra}
    resp = await api.post("/v1/tasks", json=body, headers=auth(client))
    assert resp.status == 202, await resp.text()
    return await resp.json()


async def submit_task(api: TestClient, client: dict[str, str], **extra: Any) -> dict[str, Any]:
    """`submit`, and check the simulator accepted it, so task.queued is recorded."""
    task = await submit(api, client, **extra)
    assert task["status"] == "queued" and task["upstream_task_id"], task
    return task


async def get_json(api: TestClient, client: dict[str, str], path: str, status: int = 200) -> Any:
    """GET a path as a client and return the JSON body."""
    resp = await api.get(path, headers=auth(client))
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


async def get_task(api: TestClient, client: dict[str, str], task_id: str) -> dict[str, Any]:
    """GET /v1/tasks/{id} as `client`; asserts 200 (and a JSON body)."""
    resp = await api.get(f"/v1/tasks/{task_id}", headers=auth(client))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def history(api: TestClient, client: dict[str, str], task_id: str) -> list[dict]:
    """GET /v1/tasks/{id}/events data: the task's history entries, oldest first."""
    resp = await api.get(f"/v1/tasks/{task_id}/events", headers=auth(client))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["data"]


async def read_problem(resp: Any, status: int) -> dict[str, Any]:
    """Assert an RFC 9457 answer with this status; return its body."""
    assert resp.status == status, await resp.text()
    assert resp.headers["Content-Type"].split(";")[0] == PROBLEM_JSON
    body = await resp.json(content_type=None)
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# --- waiting -----------------------------------------------------------------------------


async def wait_for(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, interval: float = 0.02
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


# --- `relay` subprocesses ----------------------------------------------------------------

# The `relay` console script of the venv running the tests.
RELAY_BIN = str(Path(sys.executable).with_name("relay"))


@dataclass(frozen=True)
class RelayRun:
    """What a `relay` subprocess did."""

    returncode: int
    stdout: str
    stderr: str


def relay_env(**variables: str) -> dict[str, str]:
    """A clean environment for a `relay` subprocess: PATH and exactly these variables."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **variables}


async def run_relay(*args: str, env: dict[str, str], timeout: float = 60.0) -> RelayRun:
    """Run `relay ARGS` to completion (killed and failed after `timeout` seconds)."""
    proc = await asyncio.create_subprocess_exec(
        RELAY_BIN,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"relay {' '.join(args)} still running after {timeout}s") from None
    assert proc.returncode is not None
    return RelayRun(proc.returncode, out.decode(), err.decode())
