"""A database that is down, missing or not migrated: 503 while serving, one line from the CLI."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from relay.cli.localdev import free_port
from relay.core.store import with_database
from tests.helpers import SAMPLE_INPUT, auth, read_problem, relay_env, run_relay, wait_for

NewClient = Callable[..., Awaitable[dict[str, str]]]


async def admin(postgres_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(with_database(postgres_url, "postgres"))
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def assert_every_route_is_503(relay_app: TestClient, headers: dict[str, str]) -> None:
    requests = [
        ("POST", "/v1/tasks", {"model": "kling-video-o1", "input": SAMPLE_INPUT}),
        ("GET", "/v1/tasks", None),
        ("GET", "/v1/tasks/tsk_x", None),
        ("POST", "/v1/subscriptions", {"url": "https://a.internal/h"}),
        ("GET", "/v1/deliveries", None),
        ("GET", "/v1/events", None),
    ]
    for method, path, body in requests:
        resp = await relay_app.request(method, path, json=body, headers=headers)
        problem = await read_problem(resp, 503)
        assert "database" in problem["detail"]
        assert int(resp.headers["Retry-After"]) > 0
    ready = await relay_app.get("/readyz")
    assert ready.status == 503
    assert (await relay_app.get("/healthz")).status == 200


async def test_dropped_database_answers_503_with_retry_after_never_500(
    relay_app: TestClient, new_client: NewClient, store, postgres_url: str, database_url: str
) -> None:
    client = await new_client()
    assert (await relay_app.get("/v1/tasks", headers=auth(client))).status == 200
    await store.close()
    await admin(postgres_url, f'DROP DATABASE "{db_name(database_url)}" WITH (FORCE)')
    await assert_every_route_is_503(relay_app, auth(client))


async def test_database_refusing_connections_answers_503(
    relay_app: TestClient, new_client: NewClient, store, postgres_url: str, database_url: str
) -> None:
    client = await new_client()
    assert (await relay_app.get("/v1/tasks", headers=auth(client))).status == 200
    await store.close()
    name = db_name(database_url)
    await admin(
        postgres_url,
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
    )
    try:
        await assert_every_route_is_503(relay_app, auth(client))
    finally:
        await admin(postgres_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


# The command line


@pytest.fixture
async def unmigrated_url(postgres_url: str) -> AsyncIterator[str]:
    name = f"relay_bare_{uuid.uuid4().hex[:10]}"
    await admin(postgres_url, f'CREATE DATABASE "{name}"')
    yield with_database(postgres_url, name)
    await admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def missing_database(postgres_url: str) -> str:
    return with_password(
        with_database(postgres_url, f"relay_nope_{uuid.uuid4().hex[:8]}"), "pw-secret-1"
    )


def unreachable(postgres_url: str) -> str:
    parts = urlsplit(with_password(postgres_url, "pw-secret-1"))
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{free_port()}"))


COMMANDS = [("migrate",), ("keys", "list"), ("keys", "create", "--name", "a"), ("serve",)]


def assert_one_line(run, *expected: str) -> None:
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "pw-secret-1" not in run.stderr + run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
async def test_missing_database_is_one_line_naming_relay_database_url(
    postgres_url: str, args: tuple[str, ...]
) -> None:
    env = relay_env(RELAY_DATABASE_URL=missing_database(postgres_url), RELAY_PORT=str(free_port()))
    run = await run_relay(*args, env=env, timeout=30)
    assert_one_line(run, "RELAY_DATABASE_URL", "does not exist")


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
async def test_unreachable_database_is_one_line_naming_relay_database_url(
    postgres_url: str, args: tuple[str, ...]
) -> None:
    env = relay_env(RELAY_DATABASE_URL=unreachable(postgres_url), RELAY_PORT=str(free_port()))
    run = await run_relay(*args, env=env, timeout=30)
    assert_one_line(run, "RELAY_DATABASE_URL", "unreachable")


async def test_refused_login_is_one_line_naming_relay_database_url(postgres_url: str) -> None:
    # A role that does not exist is refused even by a server that trusts loopback logins.
    parts = urlsplit(with_password(postgres_url, "pw-secret-1"))
    url = urlunsplit(
        parts._replace(netloc=f"nobody_{uuid.uuid4().hex[:6]}:" + parts.netloc.split(":", 1)[1])
    )
    run = await run_relay("keys", "list", env=relay_env(RELAY_DATABASE_URL=url), timeout=30)
    assert_one_line(run, "RELAY_DATABASE_URL", "refused")


@pytest.mark.parametrize("args", COMMANDS[1:], ids=" ".join)
async def test_unmigrated_database_says_run_relay_migrate(
    unmigrated_url: str, args: tuple[str, ...]
) -> None:
    env = relay_env(RELAY_DATABASE_URL=unmigrated_url, RELAY_PORT=str(free_port()))
    run = await run_relay(*args, env=env, timeout=30)
    assert_one_line(run, "relay migrate")


async def test_readyz_names_the_fix_when_the_schema_is_missing(
    relay_app: TestClient, store
) -> None:
    await store.pool.execute("DROP TABLE schema_migrations")
    ready = await relay_app.get("/readyz")
    assert ready.status == 503
    assert "relay migrate" in (await ready.json())["checks"]["schema"]


async def test_readyz_names_relay_database_url_when_the_database_is_gone(
    relay_app: TestClient, store, postgres_url: str, database_url: str
) -> None:
    await store.close()
    await admin(postgres_url, f'DROP DATABASE "{db_name(database_url)}" WITH (FORCE)')

    async def unavailable() -> str | None:
        resp = await relay_app.get("/readyz")
        check = (await resp.json())["checks"]["database"]
        return check if resp.status == 503 and "RELAY_DATABASE_URL" in check else None

    check = await wait_for(unavailable, timeout=10)
    assert "does not exist" in check
