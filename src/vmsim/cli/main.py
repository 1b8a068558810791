"""Entry point of the ``vmsim`` console script (and of ``python -m vmsim``): the parser and
the dispatch.

Each subcommand module provides ``register(subparsers)``, which adds its parser and sets
``handler`` (a function ``(args, console) -> int``) as a default. Exceptions become exit
statuses through :func:`vmsim.cli.errors.exit_code` only (the statuses are listed there).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rich.console import Console

import vmsim
from vmsim.cli import (
    demo_cow,
    demo_enomem,
    demo_hugepages,
    demo_pressure,
    demo_sidechannel,
    demo_tlb,
    demo_walk,
    estimate,
    exporter,
    maps,
    record,
    replay,
    tlb,
    top,
    tour,
)
from vmsim.cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_LIMIT,
    EXIT_NO_INPUT,
    EXIT_OK,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    HANDLED,
    ResultStatus,
    exit_code,
    message_of,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_LIMIT",
    "EXIT_NO_INPUT",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "exit_code",
    "main",
    "version",
]


def version() -> str:
    """The installed package's version (its metadata; ``vmsim.__version__`` reads it too)."""
    return vmsim.__version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vmsim",
        description="An executable model of Linux x86-64 virtual memory.",
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="guided stories told by the model")
    demos = demo.add_subparsers(dest="demo", metavar="DEMO", required=True)
    demo_enomem.register(demos)
    demo_cow.register(demos)
    demo_walk.register(demos)
    demo_pressure.register(demos)
    demo_tlb.register(demos)
    demo_sidechannel.register(demos)
    demo_hugepages.register(demos)
    maps.register(commands)
    estimate.register(commands)
    replay.register(commands)
    top.register(commands)
    exporter.register(commands)
    record.register(commands)
    tlb.register(commands)
    tour.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the console script passes it to sys.exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    no_color = bool(getattr(args, "no_color", False))
    # user text (trace lines, file names) must print as is: no emoji codes, no highlighting;
    # a command whose output holds no markup of its own turns markup off (``markup=False``)
    console = Console(
        no_color=no_color,
        highlight=False,
        emoji=False,
        markup=getattr(args, "markup", True),
        color_system=None if no_color else "auto",
    )
    errors = Console(stderr=True, no_color=no_color, highlight=False, emoji=False)
    try:
        code: int = args.handler(args, console)
    except BrokenPipeError:
        # the reader went away (``vmsim ... | head``): stop quietly, like other tools do;
        # point stdout at /dev/null so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except ResultStatus as exc:  # the report is out; its result sets the status
        return exit_code(exc)
    except HANDLED as exc:
        errors.print(f"vmsim: {message_of(exc)}", markup=False, soft_wrap=True)
        return exit_code(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
