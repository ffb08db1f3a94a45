"""The ``emotrack`` command: one front door for every subcommand.

Subcommands are discovered through the ``emotrack.commands`` entry-point group: each package that
offers commands registers a function ``add_commands(subparsers)`` in ``pyproject.toml``
(``realtime`` the streaming ones, ``train`` training and evaluation), so this package imports no
other package's command code. Each subcommand sets ``handler`` (returns the exit code) and
``user_errors`` (the errors that mean bad input: one line on stderr, exit 2). The exit codes are
listed in :mod:`realtime.cli.exits` (and in ``emotrack --help``).

Configuration comes from built-in defaults, then ``--config FILE`` (TOML, see
``configs/default.toml``), then flags. Logging handlers are configured here and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from realtime.cli.exits import EPILOG, EXIT_INTERRUPTED, EXIT_USAGE
from realtime.cli.logs import LogFileError, configure_logging, print_error

logger = logging.getLogger(__name__)

COMMAND_GROUP = "emotrack.commands"


Registrar = Callable[[argparse._SubParsersAction], None]


def command_registrars() -> list[Registrar]:
    """Every installed package's ``add_commands``, the streaming commands first."""
    found = sorted(
        entry_points(group=COMMAND_GROUP), key=lambda ep: (ep.name != "realtime", ep.name)
    )
    if not any(ep.name == "realtime" for ep in found):  # run from a source tree not installed
        from realtime.cli.commands import add_commands

        return [add_commands, *(ep.load() for ep in found)]
    return [ep.load() for ep in found]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotrack",
        description="Streaming conversation emotion tracker: speech -> transcript -> emotion,\n"
        "live or from recordings, to a terminal dashboard, MQTT and JSON lines.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _logging_options(parser, default=None)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_commands in command_registrars():
        add_commands(commands)
    for command in _commands(parser):  # `emotrack replay F -q` as `emotrack -q replay F`
        _logging_options(command.add_argument_group("logging"), default=argparse.SUPPRESS)
    return parser


def _logging_options(parser: Any, *, default: Any) -> None:
    """-v, -q and --log-file; on a command with ``default`` SUPPRESS, so that where they are not
    given after the command, what was given before it stands."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if default is None else default,
        help="more log output (-v info, -vv debug)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=False if default is None else default,
        help="errors only (no warnings, no summary line)",
    )
    parser.add_argument(
        "--log-file", metavar="FILE", default=default, help="also write the log to FILE"
    )


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command's parser under ``parser``, subcommands (``bench latency``) included."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):  # aliases once
                found += [command, *_commands(command)]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(args.verbose, args.quiet, args.log_file)
    except LogFileError as exc:
        print_error(exc)
        return EXIT_USAGE
    try:
        return int(args.handler(args))
    except Exception as exc:
        # The error types are looked up only now: finding them imports the model code.
        if not isinstance(exc, args.user_errors()):
            raise
        print_error(exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("emotrack: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:
        print("emotrack: aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
