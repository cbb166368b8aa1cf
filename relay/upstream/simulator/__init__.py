"""A MindVideo upstream simulator: a real aiohttp server imitating the async task API.

Tests, the demo and the benchmark all talk to it over HTTP, so the relay's client code
runs unchanged. `state` holds the tasks and derives everything from the simulator clock,
`timings` says how long tasks take, `app` serves it, `cli` parses its flags.
"""

from relay.upstream.simulator.app import SIM_STATE, create_simulator_app
from relay.upstream.simulator.cli import (
    add_simulator_arguments,
    config_from_args,
    run_simulator_from_args,
)
from relay.upstream.simulator.config import EVENTS_SHAPES, TIMINGS, SimulatorConfig
from relay.upstream.simulator.records import ApiError, RecordedRequest
from relay.upstream.simulator.state import FAULT_ENDPOINTS, SimulatorState
from relay.upstream.simulator.timings import TaskTimes, draw_realistic_times

__all__ = [
    "EVENTS_SHAPES",
    "FAULT_ENDPOINTS",
    "SIM_STATE",
    "TIMINGS",
    "ApiError",
    "RecordedRequest",
    "SimulatorConfig",
    "SimulatorState",
    "TaskTimes",
    "add_simulator_arguments",
    "config_from_args",
    "create_simulator_app",
    "draw_realistic_times",
    "run_simulator_from_args",
]
