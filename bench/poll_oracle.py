"""The oracle line of the latency benchmark: the fewest status reads a schedule needs.

A *dense-window* schedule knows each class's true distributions (the simulator's: queue
uniform, processing lognormal per model input) and polls a task every `spacing` seconds
inside a window of its class's terminal-time distribution, once at the window's start and
with a backoff after its end. Two shapes are searched:

- `from submit`: no polls while queued; the window is on the distribution of
  queue + processing, counted from the submission;
- `processing seen`: the queue is polled every `queue_spacing` from its shortest length,
  and the window is on processing, counted from when processing was first seen (so a late
  sighting shifts it, as it shifts the relay's).

For each shape and window the smallest number of requests meeting the delay targets (p50
and p95 of terminal change -> detection) is found by bisection on the spacing, evaluated on
draws from the true distributions; the best is then replayed on the run's own true
durations. Requests count the submit and every status read, as the 5 s client's do; the
relay also reads events (at least once, at the end), which no status-read schedule needs.
Detection delay is the gap to the next poll: the webhook hop is not in it (as for the 5 s
client).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# Draws per class from the true distributions for the search (a fixed seed: repeatable).
DRAWS_PER_CLASS = 1000
# Window edges searched, as quantiles of the class's terminal-time distribution.
WINDOW_STARTS = (0.0, 0.003, 0.006, 0.01, 0.02, 0.035, 0.05, 0.08)
WINDOW_ENDS = (0.98, 0.997)
# Queue spacings of the `processing seen` shape (seconds).
QUEUE_SPACINGS = (5.0, 10.0, 20.0)
# After the window, intervals grow by this factor (a bounded backoff, as a client would).
TAIL_BACKOFF = 1.5
TAIL_MAX_S = 30.0
SPACING_RANGE = (0.5, 30.0)


@dataclass(frozen=True)
class ClassTimes:
    """A class's true distributions: queue uniform [lo, hi], processing lognormal."""

    queue_min_s: float
    queue_max_s: float
    processing_median_s: float
    sigma: float

    def draw(self, rng: random.Random) -> tuple[float, float]:
        """One (queue, processing) draw."""
        return (
            rng.uniform(self.queue_min_s, self.queue_max_s),
            rng.lognormvariate(math.log(self.processing_median_s), self.sigma),
        )


@dataclass(frozen=True)
class Schedule:
    """One dense-window schedule: shape, window quantiles and spacings."""

    shape: str  # "from submit" | "processing seen"
    start_q: float
    end_q: float
    spacing_s: float
    queue_spacing_s: float | None = None


@dataclass(frozen=True)
class Result:
    """What a schedule costs and achieves on a set of tasks."""

    schedule: Schedule
    requests_mean: float
    p50: float
    p95: float
    p99: float


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _detect(window_start: float, window_end: float, spacing: float, at: float) -> tuple[float, int]:
    """(detection time, polls) of a change at `at`, for polls from `window_start` on."""
    if at <= window_start:
        return window_start, 1
    k = math.ceil((at - window_start) / spacing - 1e-9)
    t = window_start + k * spacing
    if t <= window_end + 1e-9:
        return t, k + 1
    # Past the window: the last poll inside it, then a backoff.
    k = math.floor((window_end - window_start) / spacing + 1e-9)
    t = window_start + k * spacing
    polls = k + 1
    interval = spacing
    while t < at:
        interval = min(interval * TAIL_BACKOFF, TAIL_MAX_S)
        t += interval
        polls += 1
    return t, polls


class Oracle:
    """Searches dense-window schedules for classes with known true distributions."""

    def __init__(
        self,
        classes: Mapping[str, ClassTimes],
        *,
        seed: int = 1,
        draws_per_class: int = DRAWS_PER_CLASS,
    ) -> None:
        self.classes = dict(classes)
        rng = random.Random(seed)
        self.draws = {
            name: [c.draw(rng) for _ in range(draws_per_class)] for name, c in classes.items()
        }
        # Sorted terminal times from submit, and processing minus a uniform sighting lag.
        self._total = {n: sorted(q + p for q, p in d) for n, d in self.draws.items()}
        self._lagged: dict[tuple[str, float], list[float]] = {}
        for name, draws in self.draws.items():
            for dq in QUEUE_SPACINGS:
                lag_rng = random.Random(seed + int(dq * 10))
                self._lagged[(name, dq)] = sorted(p - lag_rng.uniform(0, dq) for _, p in draws)

    def evaluate(self, schedule: Schedule, tasks: Sequence[tuple[str, float, float]]) -> Result:
        """Apply `schedule` to tasks (class, queue_s, processing_s)."""
        delays: list[float] = []
        requests: list[int] = []
        for name, queue_s, processing_s in tasks:
            c = self.classes[name]
            if schedule.shape == "from submit":
                ordered = self._total[name]
                start = _quantile(ordered, schedule.start_q)
                end = _quantile(ordered, schedule.end_q)
                seen, polls = _detect(start, end, schedule.spacing_s, queue_s + processing_s)
                delays.append(seen - queue_s - processing_s)
                requests.append(1 + polls)
                continue
            dq = schedule.queue_spacing_s or QUEUE_SPACINGS[0]
            j = max(0, math.ceil((queue_s - c.queue_min_s) / dq - 1e-9))
            sighted = c.queue_min_s + j * dq
            ordered = self._lagged[(name, dq)]
            start = sighted + _quantile(ordered, schedule.start_q)
            end = sighted + _quantile(ordered, schedule.end_q)
            terminal = queue_s + processing_s
            seen, polls = _detect(max(start, sighted), end, schedule.spacing_s, terminal)
            delays.append(seen - terminal)
            requests.append(1 + (j + 1) + polls)
        return Result(
            schedule,
            sum(requests) / max(len(requests), 1),
            percentile(delays, 50),
            percentile(delays, 95),
            percentile(delays, 99),
        )

    def _drawn_tasks(self) -> list[tuple[str, float, float]]:
        return [(n, q, p) for n, d in self.draws.items() for q, p in d]

    def best(self, p50_s: float, p95_s: float, p99_s: float = math.inf) -> Result | None:
        """The dense-window schedule with the fewest requests meeting the targets."""
        tasks = self._drawn_tasks()
        shapes: list[tuple[str, float | None]] = [("from submit", None)]
        shapes += [("processing seen", dq) for dq in QUEUE_SPACINGS]
        best: Result | None = None
        for shape, dq in shapes:
            for start_q in WINDOW_STARTS:
                for end_q in WINDOW_ENDS:

                    def at(spacing: float, s=shape, a=start_q, b=end_q, q=dq) -> Result:
                        return self.evaluate(Schedule(s, a, b, spacing, q), tasks)

                    found = self._widest_meeting(at, p50_s, p95_s, p99_s)
                    if found is not None and (
                        best is None or found.requests_mean < best.requests_mean
                    ):
                        best = found
        return best

    @staticmethod
    def _widest_meeting(
        at: Callable[[float], Result], p50_s: float, p95_s: float, p99_s: float
    ) -> Result | None:
        """Bisect the spacing: the widest (cheapest) one that still meets the targets."""

        def meets(r: Result) -> bool:
            return r.p50 <= p50_s and r.p95 <= p95_s and r.p99 <= p99_s

        lo, hi = SPACING_RANGE
        first = at(lo)
        if not meets(first):
            return None
        found = first
        for _ in range(12):
            mid = (lo + hi) / 2
            result = at(mid)
            if meets(result):
                found, lo = result, mid
            else:
                hi = mid
        return found


def class_times_of(inputs: Mapping[str, Mapping[str, object]], model: str) -> dict[str, ClassTimes]:
    """The simulator's true distributions for each task input (by task id)."""
    from relay.upstream.simulator.timings import GENERIC, PROFILES

    profile = PROFILES.get(model, GENERIC)
    out: dict[str, ClassTimes] = {}
    for task_id, model_input in inputs.items():
        out[task_id] = ClassTimes(
            profile.queue_min_s,
            profile.queue_max_s,
            profile.processing_median_s(dict(model_input)),
            profile.sigma,
        )
    return out


def oracle_line(
    tasks: Sequence[tuple[ClassTimes, float, float]],
    p50_s: float,
    p95_s: float,
    p99_s: float = math.inf,
    *,
    draws_per_class: int = DRAWS_PER_CLASS,
) -> dict[str, object]:
    """The oracle's figures for the run's own tasks (true class, queue, processing)."""
    names: dict[ClassTimes, str] = {}
    for c, _, _ in tasks:
        names.setdefault(c, f"class{len(names)}")
    oracle = Oracle({n: c for c, n in names.items()}, draws_per_class=draws_per_class)
    best = oracle.best(p50_s, p95_s, p99_s)
    if best is None:
        return {"p50_target": p50_s, "p95_target": p95_s, "p99_target": p99_s, "found": False}
    own = oracle.evaluate(best.schedule, [(names[c], q, p) for c, q, p in tasks])
    return {
        "p50_target": p50_s,
        "p95_target": p95_s,
        "p99_target": p99_s,
        "found": True,
        "schedule": best.schedule.__dict__,
        "requests_mean_drawn": round(best.requests_mean, 2),
        "requests_mean": round(own.requests_mean, 2),
        "p50": round(own.p50, 2),
        "p95": round(own.p95, 2),
        "p99": round(own.p99, 2),
    }


__all__ = ["ClassTimes", "Oracle", "Result", "Schedule", "class_times_of", "oracle_line"]
