"""The `relay` command: argument parsing only; everything else is called from here."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from relay import __version__
from relay.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from relay.audit import Checkpoint

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
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
            f"{value!r} is not an ISO 8601 time such as 2026-11-01 or 2026-11-01T12:00:00Z"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    """The command line of contract section 2."""
    from relay.upstream.simulator import add_simulator_arguments

    # Every flag of the relay's own commands says what it does and its default.
    own = {"formatter_class": _HelpFormatter}
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
    create.add_argument("--admin", action="store_true", help="the client sees every task")
    key_commands.add_parser("list", help="list clients (never their keys)", **own)
    revoke = key_commands.add_parser("revoke", help="revoke a client's key at once", **own)
    revoke.add_argument("name", help="the name given to `relay keys create`")

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
    from relay.logs import configure_logging

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
        from relay.demo import run_demo

        return run_demo(settings, tasks=args.tasks, task_duration=args.task_duration)
    if not settings.database_url:
        print("relay: configuration error: RELAY_DATABASE_URL: is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "migrate":
            return asyncio.run(_migrate(settings.database_url))
        if args.command == "prune":
            return asyncio.run(_prune(settings, dry_run=args.dry_run))
        if args.command == "audit":
            return _audit_command(settings, args)
        return asyncio.run(_keys(settings, args))
    except Exception as exc:
        from relay.store import database_problem, redact_url

        problem = database_problem(exc)
        if problem is None:
            raise
        # A wrong URL, a stopped server or a missing migration is the operator's to fix:
        # one line saying which, not a driver traceback (and never the URL's password).
        where = redact_url(settings.database_url)
        print(f"relay: RELAY_DATABASE_URL ({where}): {problem}", file=sys.stderr)
        return EXIT_USAGE


def serve(settings: Settings) -> int:
    """Run the service until SIGTERM/SIGINT; exit 0 after a graceful stop, 1 if a loop died."""
    from aiohttp import web

    from relay.app import create_app
    from relay.keys import RUNTIME

    app = create_app(settings)
    died: list[str] = []

    async def on_startup(app: web.Application) -> None:
        def fatal(name: str) -> None:
            died.append(name)
            signal.raise_signal(signal.SIGTERM)  # run_app's handler stops the server cleanly

        app[RUNTIME].on_fatal = fatal

    app.on_startup.append(on_startup)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_grace_s,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return EXIT_FAILURE if died else EXIT_OK


async def _migrate(dsn: str) -> int:
    from relay.store import migrate

    applied = await migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))
    return EXIT_OK


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from relay import clients
    from relay.errors import Conflict
    from relay.store import Store

    assert settings.database_url
    store = await Store.open(settings.database_url, size=2)
    try:
        if args.keys_command == "create":
            try:
                key, secret = await clients.create_client(store, args.name, admin=args.admin)
            except Conflict as exc:
                print(f"relay: {exc.detail}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"client:         {args.name}{' (admin)' if args.admin else ''}")
            print(f"api key:        {key}")
            print(f"signing secret: {secret}")
            print("Store both now: they are not shown again.")
        elif args.keys_command == "list":
            for row in await clients.list_clients(store):
                state = f"revoked {row['revoked_at']:%Y-%m-%d}" if row["revoked_at"] else "active"
                role = "admin" if row["is_admin"] else "client"
                print(f"{row['name']}\t{role}\t{row['key_prefix']}…\t{state}")
        elif not await clients.revoke_client(store, args.name):
            print(f"relay: no active client named {args.name!r}", file=sys.stderr)
            return EXIT_FAILURE
        else:
            print(f"revoked {args.name}")
    finally:
        await store.close()
    return EXIT_OK


async def _prune(settings: Settings, *, dry_run: bool) -> int:
    from relay import retention
    from relay.store import Store

    if settings.retention_days is None:
        print("relay: RELAY_RETENTION_DAYS is not set: history is kept forever", file=sys.stderr)
        return EXIT_USAGE
    assert settings.database_url
    store = await Store.open(settings.database_url, size=2)
    try:
        plans = await retention.plan_prune(store, settings.retention_days, datetime.now(UTC))
        if not plans:
            print(f"nothing older than {settings.retention_days} days")
        for plan in plans:
            if plan.droppable and not dry_run:
                async with store.transaction() as db:
                    await retention.drop_month(db, plan)
                print(f"{plan.month:%Y-%m}: dropped ({plan.tasks} tasks)")
            else:
                print(plan.describe())
    finally:
        await store.close()
    return EXIT_OK


def _audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """`relay audit ...`: the checkpoint argument is read here, then the database work."""
    from relay.audit import Checkpoint

    checkpoint: Checkpoint | None = None
    if args.audit_command == "verify" and args.checkpoint is not None:
        text = args.checkpoint
        if not text.lstrip().startswith("{"):
            try:
                text = Path(text).read_text()
            except OSError as exc:
                print(f"relay: --checkpoint: cannot read {text!r}: {exc.strerror}", file=sys.stderr)
                return EXIT_USAGE
        try:
            checkpoint = Checkpoint.parse(text)
        except ValueError as exc:
            print(f"relay: --checkpoint: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if args.since is not None:
            print("relay: --checkpoint covers every task: drop --since", file=sys.stderr)
            return EXIT_USAGE
    return asyncio.run(_audit(settings, args, checkpoint))


async def _audit(
    settings: Settings, args: argparse.Namespace, checkpoint: Checkpoint | None
) -> int:
    from relay import audit
    from relay.store import Store

    assert settings.database_url
    store = await Store.open(settings.database_url, size=2)
    try:
        if args.audit_command == "checkpoint":
            at = audit.shown_time(args.at or datetime.now(UTC))
            taken = await audit.take_checkpoint(store, at)
            print(json.dumps(taken.as_json(), separators=(",", ":")))
            if args.heads:
                async for head in audit.checkpoint_heads(store, at):
                    print(head.line())
            return EXIT_OK
        result = await audit.verify(store, since=args.since, checkpoint=checkpoint)
    finally:
        await store.close()
    if result.finding is not None:
        print(f"relay: audit verify: {result.finding}", file=sys.stderr)
        return EXIT_FAILURE
    against = f" and match the checkpoint of {checkpoint.as_json()['at']}" if checkpoint else ""
    print(f"verified {result.entries} entries of {result.tasks} tasks: every chain holds{against}")
    return EXIT_OK
