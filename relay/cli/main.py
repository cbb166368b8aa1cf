"""The `relay` command: argument parsing only; everything else is called from here."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from relay import __version__
from relay.cli.commands import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from relay.core.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    pass

# The clients table takes names of 1 to 200 characters; checked here so a bad name is a
# usage error, not a database traceback (which would print the new signing secret).
CLIENT_NAME_MAX = 200


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """Bad usage: one line naming the problem, exit 2."""
        self.exit(EXIT_USAGE, f"relay: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: X)` where a flag has a real default (not None, not an on/off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool) or action.required:
            return action.help
        return super()._get_help_string(action)


def _client_name(value: str) -> str:
    if not 1 <= len(value) <= CLIENT_NAME_MAX:
        raise argparse.ArgumentTypeError(f"must be 1 to {CLIENT_NAME_MAX} characters")
    return value


def _timestamp(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO 8601 time such as 2026-01-31 or 2026-01-31T12:00:00Z"
        ) from None
    # Like the API: a time without an offset is UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    """The command line of contract section 2."""
    from relay.upstream.simulator import add_simulator_arguments

    # Every flag of the relay's own commands says what it does and its default.
    own: dict[str, Any] = {"formatter_class": _HelpFormatter}
    parser = _Parser(prog="relay", description="MindVideo generations without polling.", **own)
    parser.add_argument(
        "--version", action="version", version=f"relay {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the service (all roles by default)", **own)
    serve.add_argument(
        "--roles",
        help="comma-separated subset of api,poller,dispatcher this process runs "
        "(default: RELAY_ROLES, else all three)",
    )
    commands.add_parser("migrate", help="apply missing sql/NNNN_*.sql migrations", **own)

    keys = commands.add_parser("keys", help="manage client API keys", **own)
    key_commands = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    create = key_commands.add_parser("create", help="create a client; prints its key once", **own)
    create.add_argument(
        "--name",
        required=True,
        type=_client_name,
        help=f"the client's unique name, 1 to {CLIENT_NAME_MAX} characters",
    )
    create.add_argument(
        "--role",
        choices=("client", "admin", "auditor"),
        default=None,
        help="client: sees and changes its own resources; admin: every client's; "
        "auditor: reads every client's, changes nothing (default: client)",
    )
    create.add_argument("--admin", action="store_true", help="the same as --role admin")
    add = key_commands.add_parser(
        "add", help="print a new API key for an existing client (rotation: add, then revoke)", **own
    )
    add.add_argument("name", help="the name given to `relay keys create`")
    key_commands.add_parser(
        "list", help="list each client's keys: prefix, creation, last use (never the keys)", **own
    )
    revoke = key_commands.add_parser(
        "revoke", help="revoke one key of a client (--key) or all of them, at once", **own
    )
    revoke.add_argument("name", help="the name given to `relay keys create`")
    revoke.add_argument(
        "--key",
        metavar="PREFIX",
        help="revoke only the live key starting with this prefix, as `relay keys list` shows it "
        "(default: every key of the client)",
    )
    rotate = key_commands.add_parser(
        "rotate-secret",
        help="new webhook signing secret; the old one also signs for 24 h "
        "(RELAY_SECRET_ROTATION_OVERLAP_S)",
        **own,
    )
    rotate.add_argument("name", help="the name given to `relay keys create`")

    export = commands.add_parser(
        "export",
        help="write tasks created in a time range, with their history, to a file",
        description="Every task created in [--since, --until) with its whole history, as JSON "
        "lines (one task per line) or CSV (one row per history entry); a progress bar on stderr.",
        **own,
    )
    export.add_argument(
        "--since", type=_timestamp, help="created at or after this time (default: the first task)"
    )
    export.add_argument(
        "--until", type=_timestamp, help="created before this time (default: no limit)"
    )
    export.add_argument("--out", required=True, help="the file to write ('-': standard output)")
    export.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="JSON lines or CSV"
    )
    export.add_argument("--client", help="only this client's tasks (default: every client's)")

    prune = commands.add_parser(
        "prune", help="drop history months older than RELAY_RETENTION_DAYS with their tasks", **own
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="show what would be dropped or kept, and why"
    )
    audit = commands.add_parser("audit", help="verify the tamper-evident task history", **own)
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    verify = audit_commands.add_parser(
        "verify", help="recompute every history hash chain; exit 1 naming the first mismatch", **own
    )
    verify.add_argument(
        "--since",
        type=_timestamp,
        help="only tasks created at or after this ISO 8601 time (e.g. 2026-11-01)",
    )
    verify.add_argument(
        "--checkpoint",
        help="a checkpoint to check the chain heads against: its JSON (as the "
        "audit_checkpoint log line prints it) or a file holding it, optionally followed by "
        "its heads (`relay audit checkpoint --heads`)",
    )
    checkpoint = audit_commands.add_parser(
        "checkpoint", help="print the checkpoint (digest over every chain head) as of now", **own
    )
    checkpoint.add_argument("--at", type=_timestamp, help="as of this ISO 8601 time instead")
    checkpoint.add_argument(
        "--heads",
        action="store_true",
        help="also print every head (task_id:seq:hash), so verify can name the task at fault",
    )

    demo = commands.add_parser("demo", help="zero-config end-to-end run on this machine", **own)
    demo.add_argument("--tasks", type=int, default=3, help="how many sample tasks to submit")
    demo.add_argument(
        "--task-duration", type=float, default=6.0, help="seconds each simulated task takes"
    )

    simulate = commands.add_parser("simulate-upstream", help="run the MindVideo simulator")
    add_simulator_arguments(simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `relay` and `python -m relay`."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "simulate-upstream":
            from relay.upstream.simulator import run_simulator_from_args

            run_simulator_from_args(args)
            return EXIT_OK
        overrides = {"roles": args.roles} if getattr(args, "roles", None) else {}
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"relay: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from relay.core.logs import configure_logging

    upstream_key = settings.upstream_api_key
    if args.command == "demo":
        # The demo prints its own story; only warnings from the service itself.
        configure_logging("console", "warning")
    else:
        configure_logging(
            settings.log_format,
            settings.log_level,
            [upstream_key.get_secret_value() if upstream_key else None],
        )
    if args.command == "demo":
        from relay.cli.demo import run_demo

        return run_demo(settings, tasks=args.tasks, task_duration=args.task_duration)
    from relay.cli import commands

    if not settings.database_url:
        print("relay: configuration error: RELAY_DATABASE_URL: is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "migrate":
            return asyncio.run(commands.migrate_command(settings.database_url))
        if args.command == "export":
            return commands.export_command(settings.database_url, args)
        if args.command == "prune":
            return asyncio.run(commands.prune_command(settings, dry_run=args.dry_run))
        if args.command == "audit":
            return commands.audit_command(settings, args)
        return asyncio.run(commands.keys_command(settings, args))
    except Exception as exc:
        from relay.core.store import database_problem, redact_url

        problem = database_problem(exc)
        if problem is None:
            raise
        # A wrong URL, a stopped server or a missing migration is the operator's to fix:
        # one line saying which, not a driver traceback (and never the URL's password).
        where = redact_url(settings.database_url)
        print(f"relay: RELAY_DATABASE_URL ({where}): {problem}", file=sys.stderr)
        return EXIT_USAGE


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (measured faster for both the API and the
    dispatcher, see docs/benchmarks.md), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# The cyclic garbage collector's thresholds for a running service (CPython's are 700, 10,
# 10). A webhook attempt or an API request allocates hundreds of objects, so with 700 a
# young collection ran every request or two and the older generations, which hold the
# whole process, were walked far more often than they change. See settle_gc().
GC_THRESHOLDS = (20_000, 50, 100)


def settle_gc() -> None:
    """Once started: move what exists now out of the collector's way and collect less often.

    Everything alive at this point (modules, the app, pools, compiled schemas) lives as
    long as the process; `gc.freeze()` keeps later collections from walking it again. The
    thresholds then let young objects die by reference count before a collection looks at
    them. Measured with `bench/dispatcher_bench.py` (docs/benchmarks.md "Deliveries"): about a fifth
    less CPU per delivery. Cycles are still collected, only in larger batches.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM/SIGINT; exit 0 after a graceful stop, 1 if a loop died."""
    from aiohttp import web

    from relay.app import create_app
    from relay.keys import RUNTIME

    loop = new_event_loop()
    asyncio.set_event_loop(loop)  # create_app and run_app both use this loop
    app = create_app(settings)
    died: list[str] = []

    async def on_startup(app: web.Application) -> None:
        def fatal(name: str) -> None:
            died.append(name)
            signal.raise_signal(signal.SIGTERM)  # run_app's handler stops the server cleanly

        app[RUNTIME].on_fatal = fatal
        settle_gc()  # after the cleanup contexts above: pools and loops exist now

    app.on_startup.append(on_startup)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_grace_s,
        print=None,
        access_log=None,
        handle_signals=True,
        loop=loop,
    )
    return EXIT_FAILURE if died else EXIT_OK
