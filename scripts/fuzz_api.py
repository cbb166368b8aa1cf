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
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from relay.cli.localdev import embedded_postgres, free_port
from relay.core.store import scratch_database

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


def main() -> int:
    """Run the fuzzing; returns schemathesis's exit code."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-examples", type=int, default=25)
    args = parser.parse_args()
    url = os.environ.get("RELAY_TEST_DATABASE_URL")
    if url:
        return asyncio.run(_fuzz(url, args.max_examples))
    with embedded_postgres() as url:
        return asyncio.run(_fuzz(url, args.max_examples))


async def _fuzz(server_url: str, max_examples: int) -> int:
    async with scratch_database(server_url, "relay_fuzz") as dsn:
        return _fuzz_database(dsn, max_examples)


def _fuzz_database(dsn: str, max_examples: int) -> int:
    sim_port, relay_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(
        RELAY_DATABASE_URL=dsn,
        RELAY_UPSTREAM_URL=f"http://127.0.0.1:{sim_port}",
        RELAY_UPSTREAM_API_KEY="sim",
        RELAY_HOST="127.0.0.1",
        RELAY_PORT=str(relay_port),
        RELAY_LOG_LEVEL="warning",
        # receivers listen on loopback, which the default deny list refuses
        RELAY_WEBHOOK_DENY_CIDRS="169.254.0.0/16,fe80::/10",
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
                str(max_examples),
                "--phases",
                "examples,coverage,fuzzing,stateful",
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


if __name__ == "__main__":
    sys.exit(main())
