"""``vmsim demo enomem``: ENOMEM when trying to *free* memory (spec §1 and §7).

The story itself (the process, the splits, the failing munmap) is
:mod:`vmsim.scenarios.enomem`; this module parses the options and renders the steps as rich
text with a progress bar during the long splitting step, one line per step (--explain), or
JSON.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from vmsim.cli.commands import (
    add_command,
    disagreement,
    explain_flag,
    raise_deviations,
    scenario_errors,
)
from vmsim.cli.errors import UsageError
from vmsim.cli.render import add_story_modes, write_json
from vmsim.constants import DEFAULT_MAX_MAP_COUNT
from vmsim.scenarios.enomem import Step, story

OPTIONS = {"max_map_count": "--max-map-count"}  # the story's parameters, as options


# --- rendering ----------------------------------------------------------------------------


def _result(step: Step) -> str:
    if step.errno:
        return f"[bold red]-1 {step.errno}[/bold red]"
    return "[green]ok[/green]"


def render_step(console: Console, number: int, step: Step) -> None:
    """One step as a section: title, explanation, the call and its result, a maps excerpt."""
    console.rule(f"[bold]{number}. {escape(step.title)}[/bold]", align="left")
    console.print(escape(step.detail))
    console.print(f"[cyan]{escape(step.call)}[/cyan] -> {_result(step)}", soft_wrap=True)
    change = (
        "(unchanged)"
        if step.map_count == step.map_count_before
        else f"{step.map_count_before:,} -> [bold]{step.map_count:,}[/bold]"
    )
    console.print(f"map_count {change}  (max_map_count {step.max_map_count:,})")
    if step.maps:
        console.print("[dim]/proc/pid/maps:[/dim]")
        for line in step.maps:
            console.print(Text("  " + line, style="dim"), soft_wrap=True)
    disagreement(console, step)
    console.print()


def render_takeaway(console: Console, limit: int) -> None:
    """The moral, once every step has been shown."""
    console.print(
        Panel(
            f"vm.max_map_count ({limit:,}) counts VMAs, not bytes. Once a process holds that "
            "many, every call that has to split a VMA fails: mprotect or mlock on part of a VMA "
            "(ENOMEM; madvise reports EAGAIN), and munmap of a range strictly inside one "
            "(ENOMEM). Unmapping whole VMAs still works and makes room again.",
            title="takeaway",
            title_align="left",
            expand=False,
        )
    )


def explain_line(number: int, step: Step) -> str:
    """The --explain form: exactly one line per step."""
    result = f"-1 {step.errno}" if step.errno else "ok"
    return (
        f"{number}. {step.title}: {step.call} -> {result}; map_count "
        f"{step.map_count_before} -> {step.map_count}: {step.explain}{explain_flag(step)}"
    )


def register(subparsers: Any) -> None:
    """Add ``enomem`` to the ``vmsim demo`` subcommands."""
    parser = add_command(
        subparsers, "enomem", "why munmap can fail with ENOMEM at vm.max_map_count", __doc__, run
    )
    parser.add_argument(
        "--max-map-count",
        type=int,
        default=DEFAULT_MAX_MAP_COUNT,
        metavar="N",
        help=f"vm.max_map_count of the model machine (default {DEFAULT_MAX_MAP_COUNT})",
    )
    add_story_modes(parser, "machine-readable list of steps")


def _tell_plain(args: argparse.Namespace, console: Console) -> list[Step]:
    """--json and --explain: the steps, and with --explain one line each as they come."""
    steps: list[Step] = []
    for step in story(args.max_map_count):
        steps.append(step)
        if args.explain:
            console.print(explain_line(len(steps), step), markup=False, soft_wrap=True)
    return steps


def _tell_rich(args: argparse.Namespace, console: Console) -> list[Step]:
    """The rich form: a section per step, a progress bar while the VMAs are split."""
    steps: list[Step] = []
    console.print(
        Panel(
            "ENOMEM when trying to [i]free[/i] memory: why munmap() fails at "
            "vm.max_map_count, told by the model step by step.",
            expand=False,
        )
    )
    with Progress(
        TextColumn("splitting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("VMAs added"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("split", total=None, visible=False)

        def progress(added: int) -> None:
            bar.update(task, completed=added, visible=True)

        for step in story(args.max_map_count, progress):
            if step.id == "first-split":
                bar.update(task, total=step.max_map_count - step.map_count_before)
            if step.id == "split":
                bar.update(task, visible=False)
            steps.append(step)
            render_step(console, len(steps), step)
    render_takeaway(console, args.max_map_count)
    return steps


def run(args: argparse.Namespace, console: Console) -> int:
    """Tell the story in the requested form; ModelDeviation if the model strays from Linux."""
    if args.max_map_count < 1:
        raise UsageError(f"--max-map-count must be positive, got {args.max_map_count}")
    with scenario_errors(OPTIONS):
        if args.json or args.explain:
            steps = _tell_plain(args, console)
        else:
            steps = _tell_rich(args, console)
    if args.json:
        write_json(
            {
                "demo": "enomem",
                "max_map_count": args.max_map_count,
                "matches_linux": all(step.matches_linux for step in steps),
                "steps": [asdict(step) for step in steps],
            }
        )
    raise_deviations(steps)
    return 0


__all__ = ["Step", "register", "run", "story"]
