"""Which driver errors mean "the database is unavailable" (503) rather than a bug (500)."""

from __future__ import annotations

import asyncpg
import pytest

from relay.core.store import database_unavailable


@pytest.mark.parametrize(
    "error",
    [
        # A pooled connection whose backend was terminated, used again (seen in outage tests).
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        ),
        asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
        ConnectionRefusedError(111, "Connection refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_lost_or_refused_connections_are_unavailability(error: BaseException) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InterfaceError("the server expects 2 arguments for this query, 1 was passed"),
        asyncpg.UniqueViolationError("duplicate key value violates unique constraint"),
        ValueError("not a database error"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_driver_misuse_and_query_errors_are_not(error: BaseException) -> None:
    assert not database_unavailable(error)
