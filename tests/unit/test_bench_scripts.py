"""The benchmark scripts still import and parse their flags (they run too long for the suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_latency_bench_help_lists_its_scenarios() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "latency_bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--scenario {ample,tight,both}" in done.stdout
    assert "--time-scale" in done.stdout


def test_submit_bench_help_lists_its_points() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "submit_bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--submissions", "--seconds", "--concurrency", "--replicas"):
        assert flag in done.stdout


def test_dispatcher_bench_help_offers_both_event_loops() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "dispatcher_bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--loop {asyncio,uvloop}" in done.stdout


def test_delivery_sql_bench_help_lists_its_flags() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "delivery_sql_bench.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for flag in ("--deliveries", "--batch", "--database-url"):
        assert flag in done.stdout
