"""The only module that speaks to asyncpg: named queries, transactions, migrations."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.pool
import structlog

from relay.core.json_codec import dumps as _dumps

log = structlog.get_logger(__name__)

Row = Mapping[str, Any]

# Installed wheels carry the SQL inside the package; a source checkout keeps it at the top.
_PACKAGED_SQL = Path(__file__).resolve().parents[1] / "sql"
SQL_DIR = _PACKAGED_SQL if _PACKAGED_SQL.is_dir() else Path(__file__).resolve().parents[2] / "sql"

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Advisory lock keys share one namespace per database, so they are chosen here, together.
# Any fixed numbers work; each only has to be the same in every relay process.
_MIGRATION_LOCK_KEY = 7146032001
OUTBOX_CHANNEL = "relay_outbox"
# The janitor (partitions, retention, audit checkpoints): one replica at a time.
JANITOR_LOCK_KEY = 7146032203
# Rows fetched per round trip when streaming: large enough to amortise the trip, small
# enough that a million-row walk stays in constant memory.
STREAM_PREFETCH = 1000

# String literals, comments and quoted identifiers are copied untouched (a `:x` inside them is
# text); `::` is the cast operator, never a parameter; `:name` is a parameter; a positional
# `$n` is refused so one file never mixes the two styles.
_SQL_TOKEN = re.compile(
    r"'(?:[^']|'')*'"
    r"|--[^\n]*"
    r'|"(?:[^"]|"")*"'
    r"|::"
    r"|:([A-Za-z_]\w*)"
    r"|\$\d+"
)


@dataclass(frozen=True)
class Query:
    """One named query: asyncpg-ready SQL (`$n`) and the parameter name behind each `$n`."""

    name: str
    sql: str
    params: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, text: str) -> Query:
        """Turn `:name` parameters into `$n`, numbered by first use; a repeated name keeps its n."""
        params: list[str] = []

        def number(match: re.Match[str]) -> str:
            param = match.group(1)
            if param is None:
                if match.group(0).startswith("$"):
                    raise ValueError(f"query {name!r}: use :named parameters, not {match.group(0)}")
                return match.group(0)
            if param not in params:
                params.append(param)
            return f"${params.index(param) + 1}"

        return cls(name, _SQL_TOKEN.sub(number, text), tuple(params))

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for `sql`; TypeError names a missing or unknown parameter."""
        unknown = sorted(values.keys() - set(self.params))
        if unknown:
            raise TypeError(f"query {self.name!r} got unknown parameter(s): {', '.join(unknown)}")
        missing = [param for param in self.params if param not in values]
        if missing:
            raise TypeError(f"query {self.name!r} is missing parameter(s): {', '.join(missing)}")
        return [values[param] for param in self.params]


def load_queries(path: Path = SQL_DIR / "queries.sql") -> dict[str, Query]:
    """Parse the `-- name: x` sections of a .sql file into {name: Query}, once."""
    sections: dict[str, list[str]] = {}
    lines: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("-- name:"):
            name = line.removeprefix("-- name:").strip()
            if name in sections:
                raise ValueError(f"{path.name}: query {name!r} is defined twice")
            lines = sections[name] = []
        elif lines is not None:
            lines.append(line)
    return {name: Query.parse(name, "\n".join(body).strip()) for name, body in sections.items()}


QUERIES = load_queries()
# Kept apart from the numbered migrations: `migrations()` only picks up NNNN_name.sql.
MIGRATION_QUERIES = load_queries(SQL_DIR / "migrations.sql")


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
    db = Db(conn, MIGRATION_QUERIES)
    applied: list[int] = []
    try:
        await db.execute("lock_migrations", lock_key=_MIGRATION_LOCK_KEY)
        try:
            await db.execute("create_schema_migrations")
            done = {r["version"] for r in await db.fetch("applied_migrations")}
            for migration in migrations():
                if migration.version in done or (target is not None and migration.version > target):
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await db.execute(
                        "record_migration", version=migration.version, name=migration.name
                    )
                applied.append(migration.version)
                log.info("migration_applied", version=migration.version, name=migration.name)
        finally:
            await db.execute("unlock_migrations", lock_key=_MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Before a connection goes back to the pool: only roll back a transaction left open.

    asyncpg's default reset costs a round trip per use (unlisten, unlock, reset settings);
    the relay keeps no session state on pooled connections (LISTEN and the migration lock
    use their own connections, settings are SET LOCAL), so that round trip buys nothing.
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK;")  # a protocol statement, not a named query


class Db:
    """Named queries over a pool or one connection (inside a transaction).

    Parameters are keyword arguments named as in the .sql file; a missing or unknown one is a
    TypeError. The query name is positional-only, so a query may have a parameter `name`.
    """

    def __init__(
        self,
        executor: asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        queries: Mapping[str, Query] = QUERIES,
    ) -> None:
        self._x = executor
        self._queries = queries

    def _bind(self, name: str, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
        query = self._queries[name]
        return query.sql, query.args(params)

    async def fetch(self, name: str, /, **params: Any) -> list[Row]:
        """All rows of a named query."""
        sql, args = self._bind(name, params)
        # A Record reads as a Row ([name], get, keys, items, dict(row)), though its stubs do
        # not say Mapping; only iterating one differs (values, not keys): nothing here does.
        return cast("list[Row]", await self._x.fetch(sql, *args))

    async def fetchrow(self, name: str, /, **params: Any) -> Row | None:
        """The first row of a named query, or None."""
        sql, args = self._bind(name, params)
        return cast("Row | None", await self._x.fetchrow(sql, *args))

    async def fetchval(self, name: str, /, **params: Any) -> Any:
        """The first value of a named query."""
        sql, args = self._bind(name, params)
        return await self._x.fetchval(sql, *args)

    async def execute(self, name: str, /, **params: Any) -> str:
        """Run a named query; returns the command status (e.g. `UPDATE 3`)."""
        sql, args = self._bind(name, params)
        return await self._x.execute(sql, *args)

    async def stream(
        self, name: str, /, *, prefetch: int = STREAM_PREFETCH, **params: Any
    ) -> AsyncGenerator[Row, None]:
        """The rows of a named query through a server-side cursor: constant memory.

        Inside a transaction (a `Db` from `Store.transaction()`), the cursor reads in it;
        `Store.stream` gives the walk its own connection and read-only snapshot.
        """
        sql, args = self._bind(name, params)
        if isinstance(self._x, asyncpg.Pool):
            async with self._x.acquire() as conn, conn.transaction():
                async for row in conn.cursor(sql, *args, prefetch=prefetch):
                    yield cast("Row", row)
        else:
            async for row in self._x.cursor(sql, *args, prefetch=prefetch):
                yield cast("Row", row)


class Store(Db):
    """The relay's database: a pool, transactions and LISTEN connections."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        super().__init__(pool)
        self.pool = pool
        self.dsn = dsn

    @classmethod
    async def open(cls, dsn: str, *, size: int = 10, generic_plans: bool = False) -> Store:
        """Connect a pool; every connection decodes json/jsonb to Python values.

        `generic_plans`: every statement on these connections runs the plan Postgres made
        once for it (`plan_cache_mode = force_generic_plan`) instead of planning it again
        per call. Only for a pool whose few statements have one good plan whatever their
        parameters (the dispatcher's claim was planned anew on every call: 1.35 ms of
        planning for 1.2 ms of execution). Such plans rely on statistics, which
        autovacuum keeps (a plan is made again after each ANALYZE).
        """
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=size,
            init=_init_connection,
            reset=_reset_connection,
            command_timeout=60,
            server_settings={"plan_cache_mode": "force_generic_plan"} if generic_plans else None,
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

    async def stream(
        self, name: str, /, *, prefetch: int = STREAM_PREFETCH, **params: Any
    ) -> AsyncGenerator[Row, None]:
        """Every row of a named query, read `prefetch` at a time through a server-side cursor.

        The rows come from one read-only snapshot (a repeatable-read transaction), so a long
        read sees one consistent state, and memory holds one batch whatever the result size.
        Close the iterator (`contextlib.aclosing`) when stopping early: it holds a connection.
        """
        sql, args = self._bind(name, params)
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            async for row in conn.cursor(sql, *args, prefetch=prefetch):
                yield cast("Row", row)

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

        getter: asyncio.Future[None] | None = None
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
            # Closed or cancelled while waiting (a loop stopping): the pending get goes too,
            # or asyncio logs "Task was destroyed but it is pending" when it is collected.
            if getter is not None:
                getter.cancel()
            if not lost.done():
                lost.cancel()
            await conn.close(timeout=5)


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "relay_scratch") -> AsyncIterator[str]:
    """A new empty database on `server_url` (demo, benchmarks, CI), dropped on exit."""
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


async def check_schema(store: Store) -> None:
    """Raise SchemaBehind (or UndefinedTableError) unless every migration has been applied."""
    version = await Db(store.pool, MIGRATION_QUERIES).fetchval("schema_version")
    expected = latest_migration_version()
    if version < expected:
        raise SchemaBehind(version, expected)


# A pooled connection whose backend was just terminated can fail its next use with a client
# state error ("connection is closed", "cannot switch to state ...; another operation is in
# progress") instead of a connection error: the same outage, seen from the driver.
_LOST_CONNECTION_WORDS = ("connection is closed", "another operation", "connection was closed")


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` means the database cannot be used right now (answer 503, not 500)."""
    if isinstance(exc, asyncpg.exceptions.InternalClientError | asyncpg.InterfaceError):
        return any(words in str(exc) for words in _LOST_CONNECTION_WORDS)
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
