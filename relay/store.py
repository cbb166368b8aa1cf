"""The only module that speaks to asyncpg: named queries, transactions, migrations."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

Row = Mapping[str, Any]

# Installed wheels carry the SQL inside the package; a source checkout keeps it at the top.
_PACKAGED_SQL = Path(__file__).resolve().parent / "sql"
SQL_DIR = (
    _PACKAGED_SQL if _PACKAGED_SQL.is_dir() else Path(__file__).resolve().parent.parent / "sql"
)

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any fixed number works; it only has to be the same in every relay process.
_MIGRATION_LOCK_KEY = 7146032001
OUTBOX_CHANNEL = "relay_outbox"


def load_queries(path: Path = SQL_DIR / "queries.sql") -> dict[str, str]:
    """Parse `-- name: x` sections of a .sql file into {name: sql}."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.removeprefix("-- name:").strip(), []
        elif name is not None:
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


Q = load_queries()


@dataclass(frozen=True)
class Migration:
    """One `sql/NNNN_name.sql` file."""

    version: int
    name: str
    sql: str


def migrations(sql_dir: Path = SQL_DIR) -> list[Migration]:
    """Every migration file, in version order."""
    found = []
    for path in sorted(sql_dir.iterdir()):
        match = _MIGRATION_FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    return found


def latest_migration_version() -> int:
    """The version a fully migrated database reports."""
    return max((m.version for m in migrations()), default=0)


async def migrate(dsn: str, *, target: int | None = None) -> list[int]:
    """Apply missing migrations in order, each in its own transaction, under an advisory lock.

    Returns the versions applied by this call. Safe to run from many processes at once:
    the others wait for the lock, then find nothing left to do.
    """
    conn = await asyncpg.connect(dsn)
    applied: list[int] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations():
                if migration.version in done or (target is not None and migration.version > target):
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration.version)
                log.info("migration_applied", version=migration.version, name=migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def as_json_param(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A batch of rows as one jsonb parameter (consumed by jsonb_to_recordset)."""
    return list(rows)


class Db:
    """Named queries over a pool or one connection (inside a transaction)."""

    def __init__(self, executor: asyncpg.Pool | asyncpg.Connection) -> None:
        self._x = executor

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        """All rows of a named query."""
        return await self._x.fetch(Q[name], *args)

    async def fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None:
        """The first row of a named query, or None."""
        return await self._x.fetchrow(Q[name], *args)

    async def fetchval(self, name: str, *args: Any) -> Any:
        """The first value of a named query."""
        return await self._x.fetchval(Q[name], *args)

    async def execute(self, name: str, *args: Any) -> str:
        """Run a named query; returns the command status (e.g. `UPDATE 3`)."""
        return await self._x.execute(Q[name], *args)


class Store(Db):
    """The relay's database: a pool, transactions and LISTEN connections."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        super().__init__(pool)
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def open(cls, dsn: str, *, size: int = 10) -> Store:
        """Connect a pool; every connection decodes json/jsonb to Python values."""
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=size, init=_init_connection, command_timeout=60
        )
        return cls(pool, dsn)

    async def close(self) -> None:
        """Close the pool, waiting briefly for connections in use."""
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            self.pool.terminate()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Db]:
        """One transaction on one pooled connection."""
        async with self.pool.acquire() as conn, conn.transaction():
            yield Db(conn)

    async def listen(self, channel: str) -> AsyncIterator[None]:
        """Yield once per notification on `channel`; raises when the connection drops."""
        conn = await asyncpg.connect(self.dsn)
        queue: asyncio.Queue[None] = asyncio.Queue()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_notify(*_: object) -> None:
            queue.put_nowait(None)

        def on_lost(*_: object) -> None:
            if not lost.done():
                lost.set_exception(ConnectionError("listen connection lost"))

        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(channel, on_notify)
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, lost}, return_when=asyncio.FIRST_COMPLETED)
                if lost.done():
                    getter.cancel()
                    lost.result()
                yield None
        finally:
            if not lost.done():
                lost.cancel()
            await conn.close(timeout=5)


@asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "relay_scratch") -> AsyncIterator[str]:
    """A new empty database on `server_url` (demo, benchmarks, CI), dropped on exit."""
    from relay.localdev import with_database

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server_url, name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# Database availability, for the error middleware, /readyz and the CLI (which must not
# import asyncpg): what "the database is down" looks like, and one line saying what to fix.

# Raised by the pool or a query when the server is unreachable, restarting, full, dropping
# our connections, or the database itself is gone; each clears up without a code change.
DATABASE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08: connection lost or never made
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,  # the database was dropped (or never existed)
    asyncpg.InvalidAuthorizationSpecificationError,  # role refused (28000, 28P01)
    OSError,  # refused, reset, unresolvable host (and asyncpg's connect timeouts)
    TimeoutError,
)
# Postgres raises the generic 55000 when a database is `ALLOW_CONNECTIONS false`; its
# subclasses (object in use, lock not available) are ordinary query errors, not an outage.
_NOT_ACCEPTING_CONNECTIONS = asyncpg.ObjectNotInPrerequisiteStateError


NOT_MIGRATED = "the database is not migrated: run `relay migrate`"


class SchemaBehind(Exception):
    """The database's schema is older than this code: `relay migrate` has not been run."""

    def __init__(self, version: int, expected: int) -> None:
        super().__init__(f"the database schema is at {version}, expected {expected}")
        self.version = version
        self.expected = expected


async def check_schema(db: Db) -> None:
    """Raise SchemaBehind (or UndefinedTableError) unless every migration has been applied."""
    version = await db.fetchval("schema_version")
    expected = latest_migration_version()
    if version < expected:
        raise SchemaBehind(version, expected)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database cannot be used right now (answer 503, not 500)."""
    return isinstance(exc, DATABASE_UNAVAILABLE) or type(exc) is _NOT_ACCEPTING_CONNECTIONS


def database_problem(exc: BaseException) -> str | None:
    """One line saying what is wrong with the database, or None when `exc` is something else.

    Never includes the URL (it may hold a password); callers name RELAY_DATABASE_URL.
    """
    if isinstance(exc, asyncpg.UndefinedTableError):
        return NOT_MIGRATED
    if isinstance(exc, SchemaBehind):
        return f"{exc}: run `relay migrate`"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return "the database does not exist"
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return "the database refused the login (authentication failed)"
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        return "the database refuses more connections (too many clients)"
    if type(exc) is _NOT_ACCEPTING_CONNECTIONS:
        return "the database is not accepting connections"
    if database_unavailable(exc):
        return "the database is unreachable"
    return None


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
