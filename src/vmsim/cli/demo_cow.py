"""``vmsim demo cow``: copy-on-write after fork(), told frame by frame.

The story itself (the machine, the steps, the numbers) is :mod:`vmsim.scenarios.cow`; this
module parses the options and renders the steps as rich tables, one line per step
(--explain), or JSON.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from vmsim.cli import cow_plot
from vmsim.cli.commands import (
    add_command,
    disagreement,
    explain_flag,
    raise_deviations,
    scenario_errors,
)
from vmsim.cli.errors import UsageError
from vmsim.cli.render import add_story_modes, write_json
from vmsim.constants import PAGE_SIZE
from vmsim.scenarios.cow import DEFAULT_PAGES, MAX_PAGES, FrameView, PageRow, Step, story

PAGE = PAGE_SIZE


def _fmt(n: int) -> str:
    return f"{n:#x}"


# --- rendering ----------------------------------------------------------------------------


def pages_table(rows: tuple[PageRow, ...]) -> Table:
    """Who maps which frame: one row per page and process, a section per page. A frame both
    processes map is shown in bold."""
    forked = any(r.child is not None for r in rows)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("page", no_wrap=True)
    table.add_column("vaddr", no_wrap=True)
    table.add_column("who", no_wrap=True)
    table.add_column("pfn", justify="right", no_wrap=True)
    table.add_column("refs", justify="right", no_wrap=True)
    table.add_column("maps", justify="right", no_wrap=True)
    table.add_column("PTE", no_wrap=True)
    table.add_column("contents")
    for row in rows:
        views = [("parent", row.parent)]
        if forked:
            views.append(("child", row.child))
        same = row.parent is not None and row.child is not None and row.parent.pfn == row.child.pfn
        for k, (who, v) in enumerate(views):
            head = [row.label, _fmt(row.vaddr)] if k == 0 else ["", ""]
            if v is None:
                cells = ["-", "", "", "[dim]not mapped[/dim]", ""]
            else:
                pfn = f"[bold]{_fmt(v.pfn)}[/bold]" if same else _fmt(v.pfn)
                pte = "[green]writable[/green]" if v.writable else "[yellow]read-only[/yellow]"
                cells = [pfn, str(v.refcount), str(v.mapcount), pte, escape(v.data)]
            table.add_row(*head, who, *cells, end_section=k == len(views) - 1)
    return table


def render_step(console: Console, number: int, step: Step) -> None:
    """One step: title, explanation, what the kernel did, the frame table."""
    console.rule(f"[bold]{number}. {escape(step.title)}[/bold]", align="left")
    console.print(escape(step.detail))
    kernel = "; ".join(
        f"{who}: {', '.join(f) if f else 'no fault'}" for who, f in step.faults.items()
    )
    console.print(f"[cyan]{escape(step.call)}[/cyan]" + (f" -> {escape(kernel)}" if kernel else ""))
    if step.pages and not step.reads:  # the read-back step shows what was read instead
        console.print(pages_table(step.pages))
    if step.reads:
        reads = Table("page", "parent reads", "child reads", box=None, header_style="bold")
        for label, r in step.reads.items():
            style = "" if r["parent"] == r.get("child") else "bold"
            reads.add_row(label, escape(r["parent"]), escape(r.get("child", "-")), style=style)
        console.print(reads)
    if step.counters:
        names = list(next(iter(step.counters.values())))
        table = Table("counter", *step.counters, box=None, header_style="bold")
        for name in names:
            table.add_row(name, *(str(c[name]) for c in step.counters.values()))
        console.print(table)
    disagreement(console, step)
    console.print()


def explain_line(number: int, step: Step) -> str:
    """The --explain form: exactly one line per step."""
    return f"{number}. {step.explain}{explain_flag(step)}"


def register(subparsers: Any) -> None:
    """Add ``cow`` to the ``vmsim demo`` subcommands."""
    parser = add_command(
        subparsers, "cow", "copy-on-write after fork, frame by frame", __doc__, run
    )
    parser.add_argument(
        "--pages",
        type=int,
        default=DEFAULT_PAGES,
        metavar="N",
        help=f"private pages the parent maps (2..{MAX_PAGES}, default {DEFAULT_PAGES})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw the PTEs and frames before the fork, after it and after the copies (PNG)",
    )
    add_story_modes(parser, "machine-readable list of steps")


def run(args: argparse.Namespace, console: Console) -> int:
    """Tell the story in the requested form; ModelDeviation if the model strays from Linux."""
    if not 2 <= args.pages <= MAX_PAGES:
        raise UsageError(f"--pages must be between 2 and {MAX_PAGES}, got {args.pages}")
    steps: list[Step] = []
    if not (args.json or args.explain):
        console.print(
            Panel(
                "Copy-on-write: after fork() parent and child share every frame read-only; "
                "the first write to a page copies it, unless nobody else holds it any more.",
                expand=False,
            )
        )
    with scenario_errors():
        for step in story(args.pages):
            steps.append(step)
            if args.explain:
                console.print(explain_line(len(steps), step), markup=False, soft_wrap=True)
            elif not args.json:
                render_step(console, len(steps), step)
    if args.plot is not None:
        cow_plot.draw(cow_plot.cow_panels(steps), args.plot)
    if args.json:
        write_json(
            {
                "demo": "cow",
                "pages": args.pages,
                "page_size": PAGE,
                "matches_linux": all(step.matches_linux for step in steps),
                "steps": [asdict(step) for step in steps],
            }
        )
    raise_deviations(steps)
    return 0


__all__ = ["FrameView", "PageRow", "Step", "register", "run", "story"]
