"""The latency benchmark's oracle: its schedules meet the delays they are asked for, cheaply."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from poll_oracle import ClassTimes, Oracle, Schedule, oracle_line

KLING_STD_5 = ClassTimes(10.0, 30.0, 150.0, 0.22)


def test_a_fixed_spacing_window_detects_within_its_spacing() -> None:
    oracle = Oracle({"c": KLING_STD_5}, seed=2, draws_per_class=300)
    tasks = [("c", 20.0, 150.0), ("c", 11.0, 140.0), ("c", 29.0, 170.0)]
    result = oracle.evaluate(Schedule("from submit", 0.0, 0.997, 2.0), tasks)
    assert 0 <= result.p99 <= 2.0


def test_the_best_schedule_meets_the_targets_with_fewer_requests_than_polling_every_5s() -> None:
    oracle = Oracle({"c": KLING_STD_5}, seed=2, draws_per_class=300)
    best = oracle.best(2.0, 5.0, 10.0)
    assert best is not None
    assert best.p50 <= 2.0 and best.p95 <= 5.0 and best.p99 <= 10.0
    # Polling every 5 s from submit until a ~170 s task ends costs ~35 reads.
    assert best.requests_mean < 170 / 5


def test_tighter_targets_cost_more_requests() -> None:
    tasks = [(KLING_STD_5, 20.0, 150.0 * (0.8 + 0.004 * n)) for n in range(100)]
    loose = oracle_line(tasks, 2.5, 5.0, draws_per_class=300)
    tight = oracle_line(tasks, 1.0, 2.0, draws_per_class=300)
    assert loose["found"] and tight["found"]
    assert tight["requests_mean"] > loose["requests_mean"]
