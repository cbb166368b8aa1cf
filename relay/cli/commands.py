"""What the `relay` subcommands do (relay/cli.py parses their arguments and calls these).

Each command opens what it needs (a pool, one connection), does its work, and returns the
process exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from relay.core.config import Settings

if TYPE_CHECKING:
    from relay.core.store import Store
    from relay.history.chain import Checkpoint

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


async def migrate_command(dsn: str) -> int:
    from relay.core.store import migrate

    applied = await migrate(dsn)
    print(f"applied {len(applied)} migration(s)" + (f": {applied}" if applied else ""))
    return EXIT_OK


def export_command(dsn: str, args: argparse.Namespace) -> int:
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

    from relay.audit import export
    from relay.core.store import Store

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


async def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    from relay.core.errors import RelayError
    from relay.core.store import Store

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
    from relay.audit import action_log as actions
    from relay.audit.action_log import Actor, record_action
    from relay.identity import clients

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


async def prune_command(settings: Settings, *, dry_run: bool) -> int:
    from relay.core.store import Store
    from relay.history import retention

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


def audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """`relay audit ...`: the checkpoint argument is read here, then the database work."""
    from relay.history.chain import Checkpoint

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
    from relay.core.store import Store
    from relay.history import chain as audit

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
