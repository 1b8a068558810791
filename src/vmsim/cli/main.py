"""Entry point of the ``vmsim`` console script: the parser, the dispatch, and the exit codes.

Each subcommand module provides ``register(subparsers)``, which adds its parser and sets
``handler`` (a function ``(args, console) -> int``) as a default. Exceptions become exit codes
here and only here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

from vmsim.cli import demo_cow, demo_enomem, demo_pressure, demo_walk, estimate, maps, replay, top
from vmsim.cli.errors import CliError, UsageError

EXIT_OK = 0
EXIT_FAILURE = 1  # a command failed, or the model disagreed with the spec
EXIT_USAGE = 2  # bad options (argparse uses 2 as well)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmsim", description="An executable model of Linux x86-64 virtual memory."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="guided stories told by the model")
    demos = demo.add_subparsers(dest="demo", metavar="DEMO", required=True)
    demo_enomem.register(demos)
    demo_cow.register(demos)
    demo_walk.register(demos)
    demo_pressure.register(demos)
    maps.register(commands)
    estimate.register(commands)
    replay.register(commands)
    top.register(commands)
    return parser


def exit_code(exc: BaseException) -> int:
    """The one place where failures become exit statuses."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, CliError | OSError):  # ModelDeviation is a CliError
        return EXIT_FAILURE
    raise exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the console script passes it to sys.exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    no_color = bool(getattr(args, "no_color", False))
    console = Console(no_color=no_color, highlight=False, color_system=None if no_color else "auto")
    errors = Console(stderr=True, no_color=no_color, highlight=False)
    try:
        code: int = args.handler(args, console)
    except BrokenPipeError:
        # the reader went away (``vmsim ... | head``): stop quietly, like other tools do;
        # point stdout at /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (CliError, OSError, KeyboardInterrupt) as exc:
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        errors.print(f"vmsim: {message}", markup=False, soft_wrap=True)
        return exit_code(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
