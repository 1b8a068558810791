"""What every subcommand does the same way, written once: registering its parser, turning a
scenario engine's errors into CLI errors, and reporting where the model strayed from Linux.

A subcommand module calls :func:`add_command` from its ``register(subparsers)``, adds its own
options, and hands the parsed options to its ``run(args, console)``; main() maps the errors.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console

from vmsim.cli.errors import CliError, ModelDeviation, UsageError
from vmsim.scenarios import ScenarioDeviation, ScenarioError, ScenarioParameterError

Handler = Callable[[argparse.Namespace, Console], int]


def add_command(
    subparsers: Any,
    name: str,
    help: str,
    doc: str | None,
    handler: Handler,
    *,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """Add subcommand ``name``: ``help`` in the parent's list, the first paragraph of the
    command module's docstring ``doc`` as its description, ``epilog`` (if any) after the
    options, ``handler`` to run it."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=doc.split("\n\n")[0] if doc else None, epilog=epilog
    )
    parser.set_defaults(handler=handler)
    return parser


def add_json_and_color(parser: argparse.ArgumentParser) -> None:
    """--json (one JSON object on stdout) and --no-color, for commands without --explain."""
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--no-color", action="store_true", help="plain text, no colours")


@contextmanager
def scenario_errors(options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Run a scenario engine: its parameter errors become usage errors (exit 2) naming the
    option the parameter came from (``options``: parameter -> option, e.g. ``{"access":
    "--access"}``), a deviation from Linux a ModelDeviation (exit 1), any other end of the
    story a CliError (exit 1)."""
    try:
        yield
    except ScenarioParameterError as exc:
        option = (options or {}).get(exc.parameter, exc.parameter)
        raise UsageError(f"{option} {exc.problem}") from exc
    except ScenarioDeviation as exc:
        raise ModelDeviation(str(exc)) from exc
    except ScenarioError as exc:
        raise CliError(str(exc)) from exc


class CheckedStep(Protocol):
    """A story step that says whether the model did what Linux does."""

    @property
    def id(self) -> str: ...

    @property
    def expected(self) -> str: ...

    @property
    def matches_linux(self) -> bool: ...


def explain_flag(step: CheckedStep) -> str:
    """What --explain appends to a step where the model disagrees with Linux ("" if none)."""
    return "" if step.matches_linux else f"  [MODEL DISAGREES: Linux: {step.expected}]"


def disagreement(console: Console, step: CheckedStep) -> None:
    """The rich form's warning under a step where the model disagrees with Linux."""
    if not step.matches_linux:
        console.print(f"[bold yellow]model disagrees with Linux:[/bold yellow] {step.expected}")


def raise_deviations(steps: Iterable[CheckedStep]) -> None:
    """ModelDeviation naming every step where the model disagreed with Linux, if any."""
    deviations = [step for step in steps if not step.matches_linux]
    if deviations:
        raise ModelDeviation(
            "the model disagrees with Linux at step(s): "
            + ", ".join(f"{step.id} (expected {step.expected})" for step in deviations)
        )


__all__ = [
    "CheckedStep",
    "Handler",
    "add_command",
    "add_json_and_color",
    "disagreement",
    "explain_flag",
    "raise_deviations",
    "scenario_errors",
]
