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
from typing import TYPE_CHECKING, Any, TextIO

from relay import __version__
from relay.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from relay.audit import Checkpoint
    from relay.store import Store

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
        if args.command == "export":
            return _export(settings.database_url, args)
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


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (measured faster for both the API and the
    dispatcher, see README "Measured"), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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


async def _migrate(dsn: str) -> int:
    from relay.store import migrate

    applied = await migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))
    return EXIT_OK


def _export(dsn: str, args: argparse.Namespace) -> int:
    import os

    if args.since is not None and args.until is not None and args.until <= args.since:
        print("relay: --until must be later than --since", file=sys.stderr)
        return EXIT_USAGE
    if args.out == "-":
        return asyncio.run(_export_to(dsn, args, sys.stdout))
    # Written aside and renamed at the end: FILE is either complete or untouched.
    partial = f"{args.out}.partial"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            code = asyncio.run(_export_to(dsn, args, out))
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    if code == EXIT_OK:
        os.replace(partial, args.out)
    else:
        os.remove(partial)
    return code


async def _export_to(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    import time

    from relay import export
    from relay.store import Store

    store = await Store.open(dsn, size=2)
    try:
        scope = None
        if args.client is not None:
            scope = await export.scope_of_client(store, args.client)
            if scope is None:
                print(f"relay: no client named {args.client!r}", file=sys.stderr)
                return EXIT_FAILURE
        what = export.ExportRange(scope, args.since, args.until)
        bar = export.TextProgressBar(
            await export.count_tasks(store, what), sys.stderr, time.monotonic
        )
        progress = await export.export_to_file(store, what, args.format, out, bar.update)
        bar.finish(progress)
        elapsed = time.monotonic() - bar.started
        print(
            f"exported {progress.tasks:,} tasks and {progress.entries:,} history entries "
            f"to {args.out} in {elapsed:.1f} s",
            file=sys.stderr,
        )
    finally:
        await store.close()
    return EXIT_OK


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from relay.errors import RelayError
    from relay.store import Store

    assert settings.database_url
    store = await Store.open(settings.database_url, size=2)
    try:
        return await _key_command(store, settings, args)
    except RelayError as exc:  # an unknown client, a taken name, an ambiguous prefix
        print(f"relay: {exc.detail}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await store.close()


def _when(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M}Z" if value else "never"


async def _key_command(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    from relay import actions, clients
    from relay.actions import Actor, record_action

    async def record(action: str, **details: object) -> None:
        # The command line is the actor; it never records a key or a secret, only prefixes.
        await record_action(store, Actor.cli(), action, "client", args.name, details or None)

    if args.keys_command == "create":
        role: clients.Role = args.role or ("admin" if args.admin else "client")
        if args.admin and role != "admin":
            print(f"relay: --admin contradicts --role {role}", file=sys.stderr)
            return EXIT_USAGE
        key, secret = await clients.create_client(store, args.name, role=role)
        await record(actions.CLIENT_CREATED, role=role, key_prefix=key[: clients.KEY_PREFIX_LENGTH])
        print(f"client:         {args.name}{'' if role == 'client' else f' ({role})'}")
        print(f"api key:        {key}")
        print(f"signing secret: {secret}")
        print("Store both now: they are not shown again.")
    elif args.keys_command == "add":
        key = await clients.add_key(store, args.name)
        await record(actions.CLIENT_KEY_ADDED, key_prefix=key[: clients.KEY_PREFIX_LENGTH])
        print(f"client:  {args.name}")
        print(f"api key: {key}")
        print(f"prefix:  {key[: clients.KEY_PREFIX_LENGTH]}")
        print("Store it now: it is not shown again. The client's other keys keep working")
        print(f"until revoked: relay keys revoke {args.name} --key PREFIX")
    elif args.keys_command == "list":
        print("client\trole\tkey\tcreated\tlast used\tstate")
        for row in await clients.list_keys(store):
            if row["key_prefix"] is None:
                print(f"{row['name']}\t{row['role']}\t-\t-\t-\tno keys")
                continue
            state = f"revoked {_when(row['revoked_at'])}" if row["revoked_at"] else "active"
            print(
                f"{row['name']}\t{row['role']}\t{row['key_prefix']}…\t{_when(row['created_at'])}"
                f"\t{_when(row['last_used_at'])}\t{state}"
            )
    elif args.keys_command == "revoke":
        prefix = args.key.rstrip("…") if args.key is not None else None
        revoked = await clients.revoke_keys(store, args.name, prefix)
        await record(actions.CLIENT_KEY_REVOKED, key_prefixes=revoked)
        print(f"revoked {len(revoked)} key(s) of {args.name}: {', '.join(revoked)}")
    else:
        secret, until = await clients.rotate_signing_secret_by_name(
            store, args.name, settings.secret_rotation_overlap_s
        )
        await record(actions.CLIENT_SECRET_ROTATED)
        print(f"client:         {args.name}")
        print(f"signing secret: {secret}")
        print(f"Store it now: it is not shown again. Until {_when(until)} webhooks carry")
        print("signatures by both the new and the previous secret.")
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
