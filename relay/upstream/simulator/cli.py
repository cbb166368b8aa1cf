"""`relay simulate-upstream`: flags (each with a MINDVIDEO_SIM_* env default) and the runner."""

from __future__ import annotations

import argparse
import os
from typing import Any

from aiohttp import web

from relay.upstream.simulator.app import create_simulator_app
from relay.upstream.simulator.config import EVENTS_SHAPES, TIMINGS, SimulatorConfig

ENV_PREFIX = "MINDVIDEO_SIM_"
TRUTHY = ("1", "true", "yes", "on")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {raw}")
    return value


def _one_of(options: tuple[str, ...] | list[str]) -> Any:
    # A `type` as well as `choices`: argparse checks choices only for values given on the
    # command line, but runs `type` over env defaults too, making a bad env a usage error.
    def check(raw: str) -> str:
        if raw not in options:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(options)}, not {raw!r}")
        return raw

    return check


def add_simulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's flags; each defaults to env MINDVIDEO_SIM_<NAME>, then a constant."""

    def add(flag: str, env: str, default: str | None, text: str, **kwargs: Any) -> None:
        # argparse runs `type` over string defaults too, so a bad env value is a usage error.
        name = ENV_PREFIX + env
        value = os.environ.get(name, default)
        parser.add_argument(flag, default=value, help=f"{text} (env {name})", **kwargs)

    add("--host", "HOST", "127.0.0.1", "listen address")
    add("--port", "PORT", "8090", "listen port", type=int)
    add("--api-key", "API_KEY", "sim-key", "bearer key clients must send")
    add("--latency", "LATENCY", "0", "seconds per response", type=float)
    add("--task-duration", "TASK_DURATION", "6", "seconds per task, fixed timing", type=float)
    add("--failure-rate", "FAILURE_RATE", "0", "share of tasks failing", type=float)
    add("--rate-429", "RATE_429", "0", "share answered 429", type=float)
    add("--rate-5xx", "RATE_5XX", "0", "share answered 503", type=float)
    add("--malformed-rate", "MALFORMED_RATE", "0", "share of malformed GET bodies", type=float)
    add("--retry-after", "RETRY_AFTER", "1", "Retry-After seconds", type=float)
    shapes = [*EVENTS_SHAPES, "rotate"]
    add(
        "--events-shape",
        "EVENTS_SHAPE",
        "array",
        "events wrapping",
        choices=shapes,
        type=_one_of(shapes),
    )
    no_ids = (os.environ.get(ENV_PREFIX + "NO_EVENT_IDS") or "").lower() in TRUTHY
    parser.add_argument(
        "--no-event-ids",
        action="store_true",
        default=no_ids,
        help=f"events carry no id field (env {ENV_PREFIX}NO_EVENT_IDS=1)",
    )
    add("--events-lag", "EVENTS_LAG", "0", "seconds; <0: events early", type=float)
    add("--seed", "SEED", None, "seed for every random choice", type=int)
    add(
        "--timing",
        "TIMING",
        "fixed",
        "fixed: every task takes --task-duration; realistic: per-task Kling-like draws",
        choices=TIMINGS,
        type=_one_of(TIMINGS),
    )
    add(
        "--time-scale",
        "TIME_SCALE",
        "1",
        "multiplies task times, e.g. 0.05 runs 20x faster",
        type=_positive_float,
    )


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Turn parsed `add_simulator_arguments` flags into a SimulatorConfig."""
    return SimulatorConfig(
        api_key=args.api_key,
        latency_s=args.latency,
        task_duration_s=args.task_duration,
        failure_rate=args.failure_rate,
        rate_429=args.rate_429,
        rate_5xx=args.rate_5xx,
        malformed_rate=args.malformed_rate,
        retry_after_s=args.retry_after,
        events_shape=args.events_shape,
        event_ids=not args.no_event_ids,
        events_lag_s=args.events_lag,
        seed=args.seed,
        timing=args.timing,
        time_scale=args.time_scale,
    )


def run_simulator_from_args(args: argparse.Namespace) -> None:
    """Run the simulator until interrupted, printing the URL once it listens."""
    url = f"http://{args.host}:{args.port}"
    web.run_app(
        create_simulator_app(config_from_args(args)),
        host=args.host,
        port=args.port,
        # run_app calls this once the sockets are bound; one line instead of its banner.
        print=lambda *_: print(f"MindVideo simulator listening on {url}", flush=True),
        access_log=None,
    )
