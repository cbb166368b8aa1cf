"""How long a simulated task queues and processes.

Fixed timing (the default, what tests and the demo rely on) gives every task the same
duration and places the milestones at fixed shares of it. Realistic timing draws each
task's queue and processing time from distributions shaped like Kling's observed ones,
keyed by the model and the inputs that drive the cost of a generation.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

# Fixed timing: lifecycle milestones as shares of the task duration.
PROCESSING_AT = 0.25
PROGRESS_AT = 0.60
# Realistic timing: the progress event comes halfway through processing.
PROGRESS_SHARE_OF_PROCESSING = 0.5


@dataclass(frozen=True, slots=True)
class TaskTimes:
    """Offsets in seconds from a task's creation to each of its natural milestones."""

    processing_after: float
    progress_after: float
    terminal_after: float

    @property
    def queued_s(self) -> float:
        """Time spent queued."""
        return self.processing_after

    @property
    def processing_s(self) -> float:
        """Time spent processing."""
        return self.terminal_after - self.processing_after


@dataclass(frozen=True, slots=True)
class Profile:
    """A model's timing: queue uniform in [queue_min_s, queue_max_s], processing lognormal.

    The processing median is `base_s + per_output_second_s * duration`, times the mode's
    factor; `sigma` is the lognormal's shape (0.22 puts ~68% of draws within about ±25%).
    """

    queue_min_s: float
    queue_max_s: float
    base_s: float
    per_output_second_s: float
    sigma: float
    mode_factors: dict[str, float]
    default_duration: float
    default_mode: str

    def processing_median_s(self, model_input: dict[str, Any]) -> float:
        """The median processing time for this input."""
        duration = model_input.get("duration", self.default_duration)
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            duration = self.default_duration
        factor = self.mode_factors.get(model_input.get("mode", self.default_mode), 1.0)
        return (self.base_s + self.per_output_second_s * duration) * factor


# Kling: ~150 s median for a 5 s std video, ~240 s for 10 s (so 60 s + 18 s per output
# second), pro ~1.4x longer; queueing 10-30 s whatever the input.
KLING = Profile(
    queue_min_s=10.0,
    queue_max_s=30.0,
    base_s=60.0,
    per_output_second_s=18.0,
    sigma=0.22,
    mode_factors={"std": 1.0, "pro": 1.4},
    default_duration=5,
    default_mode="std",
)
# Models without a profile: a shorter queue, a two-minute median, a wider spread.
GENERIC = Profile(
    queue_min_s=5.0,
    queue_max_s=20.0,
    base_s=120.0,
    per_output_second_s=0.0,
    sigma=0.3,
    mode_factors={},
    default_duration=0,
    default_mode="",
)
PROFILES = {"kling-video-o1": KLING}


def fixed_times(duration_s: float) -> TaskTimes:
    """Milestones at PROCESSING_AT and PROGRESS_AT of a fixed duration."""
    return TaskTimes(PROCESSING_AT * duration_s, PROGRESS_AT * duration_s, duration_s)


def draw_realistic_times(
    rng: random.Random, model: str, model_input: dict[str, Any], time_scale: float = 1.0
) -> TaskTimes:
    """One task's draw: always exactly two draws from `rng`, so a seed fixes the sequence."""
    profile = PROFILES.get(model, GENERIC)
    queued = rng.uniform(profile.queue_min_s, profile.queue_max_s)
    processing = rng.lognormvariate(
        math.log(profile.processing_median_s(model_input)), profile.sigma
    )
    queued, processing = queued * time_scale, processing * time_scale
    return TaskTimes(
        queued, queued + PROGRESS_SHARE_OF_PROCESSING * processing, queued + processing
    )


def progress_percent(times: TaskTimes) -> int:
    """The progress event's percentage: how far along the whole task it comes."""
    if times.terminal_after <= 0:
        return round(PROGRESS_AT * 100)
    return round(100 * times.progress_after / times.terminal_after)
