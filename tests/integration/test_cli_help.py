"""`relay --help`: every flag of the relay's own commands explains itself and shows its default."""

from __future__ import annotations

import argparse

from relay.cli.main import build_parser
from tests.helpers import relay_env, run_relay

# The simulator documents its own flags (it is a separate program that happens to ship here).
OWN_FLAGS_ELSEWHERE = {"simulate-upstream"}


def subcommands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(subcommands(sub, prefix + name + " "))
    return found


def test_every_flag_of_every_command_has_help() -> None:
    parsers = {"": build_parser(), **subcommands(build_parser())}
    missing = [
        f"{command} {action.dest}".strip()
        for command, parser in parsers.items()
        if command not in OWN_FLAGS_ELSEWHERE
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


async def test_help_shows_defaults() -> None:
    run = await run_relay("demo", "--help", env=relay_env(), timeout=30)
    assert run.returncode == 0
    assert "(default: 3)" in run.stdout
    assert "(default: 6.0)" in run.stdout
    serve = await run_relay("serve", "--help", env=relay_env(), timeout=30)
    assert "RELAY_ROLES" in serve.stdout
