"""When to poll a task next, from how long tasks like it take: pure functions, no I/O.

A task waits in a phase (`queued`, then `processing`) until upstream moves it on. The
relay learns the length of each phase per model and input class from its own finished
tasks (`relay.polling.durations` keeps the samples in Postgres, so every replica shares them).
From that distribution and the time the task has spent in its phase, the next poll is
the moment when the probability that the status changed since the last look reaches
`CHANGE_PROBABILITY`, clamped between the dense interval and the sparse maximum:

- early in a phase a change is unlikely, so polls are sparse;
- around the expected transition the hazard is high, so polls come every
  `dense_interval_s` (twice the operator's `RELAY_POLL_TARGET_DELAY_S`: a change is then
  seen on average `target_delay_s` after it happens);
- a task that outlives the distribution goes back to a bounded backoff.

Without enough samples (cold start) the schedule is the adaptive backoff the relay has
always used: the minimum interval after a change, growing by `BACKOFF_FACTOR` up to the
maximum while nothing changes.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Below this many samples a class's distribution is not trusted on its own: it borrows its
# spread from its model's well-learned classes (next constant), else the model's pooled
# distribution is tried, then the cold-start backoff.
MIN_SAMPLES = 12
# From this many samples a class's own median is used with the spread its model's
# well-learned classes share (inputs move a generation's length, hardly its relative
# spread). Pooling the classes instead would mix their medians: a pro 10 s clip scheduled by
# a distribution centred on std 5 s clips is polled densely for minutes before it can end.
MIN_LOCATION_SAMPLES = 3
# At most this many pooled residuals shape a borrowed distribution (smoothing cost).
BORROWED_SHAPE_POINTS = 400
# The probability of a change since the last look that is always worth a request.
# Small enough that ~95% of transitions fall where polls are dense (docs/architecture.md).
CHANGE_PROBABILITY = 0.04
# Polls never come closer than this share of the dense interval, even late in the
# distribution where the hazard climbs: those transitions are few, and closer polls there
# cost more requests than they save delay.
DENSE_FLOOR = 1.0
# Tasks still queued are polled for a delay this many times the target: leaving the queue
# only fires task.processing; the result is what callers wait for.
QUEUED_TARGET_FACTOR = 2.0
# Past this quantile of the distribution the task has outlived what was learned.
OUTLIVED_QUANTILE = 0.995
# While nothing changes (cold start, or an outlived distribution), each interval grows so.
BACKOFF_FACTOR = 1.5
# Learned schedules may wait this many times the configured maximum interval while a
# change is still very unlikely (the cold-start backoff never exceeds the maximum).
SPARSE_MAX_FACTOR = 4.0
# Jitter keeps tasks submitted together from polling in lockstep; small, so the dense
# interval (and with it the detection delay) stays what the operator asked for.
JITTER = 0.05
# The smoothed CDF is tabulated on this many log-spaced points per distribution.
GRID_POINTS = 256
# Smallest kernel bandwidth in log-seconds (a 3% spread): samples are transition times
# estimated between two polls, never exact, so a distribution is never a single spike.
MIN_BANDWIDTH = 0.03
PHASES = ("queued", "processing")


@dataclass(frozen=True)
class PhaseDistribution:
    """The learned length of one phase: a kernel-smoothed CDF tabulated on a log grid."""

    times: tuple[float, ...]
    cdf: tuple[float, ...]
    samples: int

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> PhaseDistribution:
        """Smooth `samples` (seconds) with a Gaussian kernel in log space (Silverman's rule)."""
        logs = [math.log(max(s, 0.01)) for s in samples]
        n = len(logs)
        mean = sum(logs) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / max(n - 1, 1))
        bandwidth = max(MIN_BANDWIDTH, 1.06 * sd * n ** (-0.2))
        lo, hi = min(logs) - 4 * bandwidth, max(logs) + 4 * bandwidth
        step = (hi - lo) / (GRID_POINTS - 1)
        grid = [lo + i * step for i in range(GRID_POINTS)]
        scale = bandwidth * math.sqrt(2)
        cdf = [sum(1 + math.erf((g - x) / scale) for x in logs) / (2 * n) for g in grid]
        return cls(tuple(math.exp(g) for g in grid), tuple(cdf), n)

    @classmethod
    def borrowed(
        cls, log_centre: float, residuals: Sequence[float], *, samples: int
    ) -> PhaseDistribution:
        """A class's own centre (mean log length) with a spread borrowed from other classes:
        `residuals` are their samples' log distances from their own class centres."""
        step = max(1, len(residuals) // BORROWED_SHAPE_POINTS)
        shape = sorted(residuals)[::step]
        smoothed = cls.from_samples([math.exp(log_centre + r) for r in shape])
        return cls(smoothed.times, smoothed.cdf, samples)

    def cdf_at(self, seconds: float) -> float:
        """P(phase length <= seconds), interpolated."""
        times = self.times
        if seconds <= times[0]:
            return 0.0
        if seconds >= times[-1]:
            return 1.0
        i = bisect.bisect_right(times, seconds)
        t0, t1 = times[i - 1], times[i]
        f0, f1 = self.cdf[i - 1], self.cdf[i]
        return f0 + (f1 - f0) * (seconds - t0) / (t1 - t0)

    def change_within(self, elapsed_s: float, window_s: float) -> float:
        """P(the phase ends within `window_s` | it lasted `elapsed_s`)."""
        survived = self.cdf_at(elapsed_s)
        if survived >= 1.0:
            return 1.0
        return (self.cdf_at(elapsed_s + window_s) - survived) / (1.0 - survived)

    def quantile(self, p: float) -> float:
        """The phase length below which a share `p` of tasks leave the phase."""
        cdf = self.cdf
        if p <= cdf[0]:
            return self.times[0]
        if p >= cdf[-1]:
            return self.times[-1]
        i = bisect.bisect_left(cdf, p)
        f0, f1 = cdf[i - 1], cdf[i]
        t0, t1 = self.times[i - 1], self.times[i]
        return t0 if f1 == f0 else t0 + (t1 - t0) * (p - f0) / (f1 - f0)


def _log_mean(values: Sequence[float]) -> float:
    return sum(math.log(max(v, 0.01)) for v in values) / len(values)


@dataclass(frozen=True)
class DurationKnowledge:
    """Every learned distribution, by (model, input class, phase) and by (model, phase)."""

    by_class: Mapping[tuple[str, str, str], PhaseDistribution]
    by_model: Mapping[tuple[str, str], PhaseDistribution]

    @classmethod
    def empty(cls) -> DurationKnowledge:
        """Nothing learned yet: every task is scheduled by the cold-start backoff."""
        return cls({}, {})

    @classmethod
    def from_samples(
        cls,
        by_class: Mapping[tuple[str, str, str], Sequence[float]],
    ) -> DurationKnowledge:
        """Distributions for every class with enough samples (or borrowing a spread), and per
        model (classes pooled)."""
        pooled: dict[tuple[str, str], list[float]] = {}
        residuals: dict[tuple[str, str], list[float]] = {}
        for (model, _, phase), values in by_class.items():
            pooled.setdefault((model, phase), []).extend(values)
            if len(values) >= MIN_SAMPLES:
                centre = _log_mean(values)
                residuals.setdefault((model, phase), []).extend(
                    math.log(max(v, 0.01)) - centre for v in values
                )
        classes: dict[tuple[str, str, str], PhaseDistribution] = {}
        for (model, input_class, phase), values in by_class.items():
            shape = residuals.get((model, phase))
            if len(values) >= MIN_SAMPLES:
                classes[(model, input_class, phase)] = PhaseDistribution.from_samples(values)
            elif len(values) >= MIN_LOCATION_SAMPLES and shape:
                classes[(model, input_class, phase)] = PhaseDistribution.borrowed(
                    _log_mean(values), shape, samples=len(values)
                )
        return cls(
            classes,
            {
                k: PhaseDistribution.from_samples(v)
                for k, v in pooled.items()
                if len(v) >= MIN_SAMPLES
            },
        )

    def lookup(self, model: str, input_class: str | None, phase: str) -> PhaseDistribution | None:
        """The most specific trusted distribution for a task's phase, or None (cold start)."""
        found = self.by_class.get((model, input_class or "", phase))
        return found or self.by_model.get((model, phase))


@dataclass(frozen=True)
class ScheduleSettings:
    """The operator's knobs, in seconds."""

    min_interval_s: float
    max_interval_s: float
    target_delay_s: float

    @property
    def dense_interval_s(self) -> float:
        """Polls this far apart around the expected transition: delay averages the target."""
        return max(self.min_interval_s, 2 * self.target_delay_s)


@dataclass(frozen=True)
class NextPoll:
    """When to look again, and the interval to remember for the next backoff step."""

    delay_s: float
    interval_s: float
    reason: str


def next_poll(
    distribution: PhaseDistribution | None,
    *,
    elapsed_s: float,
    changed: bool,
    previous_interval_s: float | None,
    settings: ScheduleSettings,
    rng: random.Random | None = None,
) -> NextPoll:
    """The next poll of a task that has spent `elapsed_s` in its phase, just looked at.

    `changed`: this poll saw something new. `previous_interval_s`: the interval stored at
    the last poll (None for a fresh task).

    With a learned distribution, polls are spaced in inverse proportion to the square root
    of the chance of a change in the next dense interval: the spacing that minimises the
    mean detection delay for a given number of requests. At the median transition they
    are `dense_interval_s` apart; never closer than `DENSE_FLOOR` of that, never further
    than the point where a change since this look has become `CHANGE_PROBABILITY` likely,
    nor than the sparse maximum.
    """
    jitter = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    if distribution is None:
        interval = _backoff(changed, previous_interval_s, settings)
        return NextPoll(interval * jitter, interval, "backoff")
    dense = settings.dense_interval_s
    survived = distribution.cdf_at(elapsed_s)
    if survived >= OUTLIVED_QUANTILE:
        # Longer than nearly every task like it: nothing learned helps; back off, bounded.
        base = None if changed else previous_interval_s
        interval = _backoff(False, base or dense / BACKOFF_FACTOR, settings)
        return NextPoll(interval * jitter, interval, "outlived")
    chance = distribution.change_within(elapsed_s, dense)
    reference = distribution.change_within(distribution.quantile(0.5), dense)
    interval = dense * math.sqrt(reference / max(chance, 1e-9))
    likely_by = distribution.quantile(survived + CHANGE_PROBABILITY * (1.0 - survived))
    sparse_max = max(settings.max_interval_s * SPARSE_MAX_FACTOR, dense)
    interval = min(interval, max(likely_by - elapsed_s, dense), sparse_max)
    interval = max(interval, dense * DENSE_FLOOR, settings.min_interval_s)
    return NextPoll(interval * jitter, interval, "dense" if interval <= dense else "sparse")


def _backoff(changed: bool, previous: float | None, settings: ScheduleSettings) -> float:
    if changed or previous is None:
        return settings.min_interval_s
    return min(max(previous, settings.min_interval_s) * BACKOFF_FACTOR, settings.max_interval_s)


def transition_estimate(last_look: datetime, seen: datetime) -> datetime:
    """When a change seen at `seen` happened: the middle of the window since the last look."""
    return last_look + max(seen - last_look, timedelta(0)) / 2
