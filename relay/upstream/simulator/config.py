"""The simulator's knobs: one dataclass, and how a JSON update of it is checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

EVENTS_SHAPES = ("array", "events", "data")
# fixed: every task takes task_duration_s; realistic: per-task draws (see timings.py).
TIMINGS = ("fixed", "realistic")


@dataclass
class SimulatorConfig:
    """Knobs of the simulator; every field can be changed live via `PATCH /_sim/config`."""

    api_key: str = "sim-key"
    latency_s: float = 0.0
    task_duration_s: float = 6.0
    failure_rate: float = 0.0
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    malformed_rate: float = 0.0
    retry_after_s: float = 1.0
    events_shape: str = "array"
    event_ids: bool = True
    events_lag_s: float = 0.0
    seed: int | None = None
    timing: str = "fixed"
    # Multiplies every task's queue and processing time (both timings); 0.05 runs 20x faster.
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.events_shape not in (*EVENTS_SHAPES, "rotate"):
            raise ValueError("events_shape must be one of array, events, data, rotate")
        if self.timing not in TIMINGS:
            raise ValueError(f"timing must be one of {', '.join(TIMINGS)}")
        if not _is_positive(self.time_scale):
            raise ValueError("time_scale must be a number above 0")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_positive(value: Any) -> bool:
    return _is_number(value) and value > 0


CONFIG_FIELDS = frozenset(f.name for f in fields(SimulatorConfig))
# Fields that are not plain numbers, or numbers with a narrower range, with what a JSON
# value must look like for each; every other field takes any number.
CONFIG_CHECKS: dict[str, Callable[[Any], bool]] = {
    "api_key": lambda v: isinstance(v, str),
    "events_shape": lambda v: v in (*EVENTS_SHAPES, "rotate"),
    "event_ids": lambda v: isinstance(v, bool),
    "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "timing": lambda v: v in TIMINGS,
    "time_scale": _is_positive,
}
# Numeric fields are stored as floats whatever JSON number they came as.
FLOAT_FIELDS = frozenset(f.name for f in fields(SimulatorConfig) if f.type == "float")


def check_config_value(name: str, value: Any) -> bool:
    """Whether `value` (decoded JSON) is acceptable for config field `name`."""
    return CONFIG_CHECKS.get(name, _is_number)(value)
