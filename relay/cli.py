"""The `relay` command: argument parsing only; everything else is called from here."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from relay import __version__
from relay.config import ConfigError, Settings, load_settings

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
