"""``vmsim tour``: one guided walk through every mechanism of the essay behind vmsim, in its
order, each chapter run on the model as it is shown.

The chapters (what they run, the figures they read) are :mod:`vmsim.scenarios.tour`; this
module picks them (``--step``), renders them as rich text (``--explain`` adds the kernel
functions and the why), lists them (``--list``) or prints one JSON object (``--json``), and
pauses between chapters when both stdin and stdout are a terminal (``--no-pause`` for scripts;
never with ``--json``).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from vmsim.cli.commands import add_command, disagreement, raise_deviations, scenario_errors
from vmsim.cli.render import write_json
from vmsim.scenarios.tour import CHAPTERS, Chapter, find, run_chapter

OPTIONS = {"step": "--step"}  # the tour's parameters, as options
STOP = "q"  # typed at the pause: end the tour


def _bullets(console: Console, lines: tuple[str, ...], mark: str, style: str = "") -> None:
    """Lines as a list with a hanging indent (wrapped lines stay under their text), wrapped
    here so that no line carries trailing blanks into a pipe."""
    width = max(console.width, 40)
    for line in lines:
        text = textwrap.fill(
            line,
            width=width,
            initial_indent=f"  {mark} " if mark else "",
            subsequent_indent="    " if mark else "",
            break_long_words=False,
            break_on_hyphens=False,
        )
        console.print(Text(text, style=style), soft_wrap=True)


def render_chapter(console: Console, chapter: Chapter, explain: bool) -> None:
    """One chapter: its title, the essay's point, what the model showed, and with
    ``explain`` the kernel functions and the why; what it cannot show yet; the demo."""
    console.rule(
        f"[bold]{chapter.number}/{len(CHAPTERS)}. {escape(chapter.title)}[/bold]", align="left"
    )
    _bullets(console, (chapter.essay,), "", style="italic")
    _bullets(console, chapter.lines, "•")
    if explain:
        console.print("[bold]how the kernel does it[/bold]")
        _bullets(console, chapter.explain, "-", style="dim")
    if chapter.missing:
        console.print(f"[bold yellow]cannot show yet:[/bold yellow] {escape(chapter.missing)}")
    if chapter.demo:
        console.print(f"[dim]at length: {escape(chapter.demo)}[/dim]")
    disagreement(console, chapter)
    console.print()


def list_chapters(console: Console, as_json: bool) -> None:
    """--list: the chapters, one line each (or as JSON)."""
    if as_json:
        write_json(
            {
                "tour": "chapters",
                "chapters": [
                    {"number": n, "key": s.key, "title": s.title, "summary": s.summary}
                    for n, s in enumerate(CHAPTERS, 1)
                ],
            }
        )
        return
    width = max(len(s.key) for s in CHAPTERS)
    for n, s in enumerate(CHAPTERS, 1):
        console.print(f"{n:>2}. {s.key:<{width}}  {escape(s.summary)}", soft_wrap=True)


def pauses(args: argparse.Namespace) -> bool:
    """Whether to wait for Enter between chapters: only for a person at a terminal."""
    return (
        not args.no_pause
        and not args.json
        and sys.stdin is not None
        and sys.stdin.isatty()
        and sys.stdout.isatty()
    )


def wait(console: Console, next_number: int) -> bool:
    """The pause before chapter ``next_number``; False if the reader asked to stop."""
    try:
        answer = console.input(
            f"[dim]Enter: chapter {next_number} of {len(CHAPTERS)}; {STOP} + Enter: stop[/dim] "
        )
    except EOFError:
        return False
    return answer.strip().lower() != STOP


def register(subparsers: Any) -> None:
    """Add ``tour`` to the ``vmsim`` commands."""
    parser = add_command(
        subparsers, "tour", "a guided walk through every mechanism, on the model", __doc__, run
    )
    parser.add_argument(
        "--step",
        metavar="N",
        help=f"run only chapter N (1..{len(CHAPTERS)}, or its name: see --list)",
    )
    parser.add_argument("--list", action="store_true", help="the chapters, one line each")
    parser.add_argument(
        "--no-pause", action="store_true", help="do not wait for Enter between chapters"
    )
    # the demos' --explain (add_story_modes) is one line per step; the tour's adds detail
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--explain", action="store_true", help="add the kernel functions and the why")
    mode.add_argument(
        "--json", action="store_true", help="one JSON object: every chapter with its figures"
    )
    parser.add_argument("--no-color", action="store_true", help="plain text, no colours")


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the chosen chapters in order and show them; ModelDeviation (exit 1) at the end if
    a demo engine a chapter ran strayed from Linux."""
    if args.list:
        list_chapters(console, args.json)
        return 0
    with scenario_errors(OPTIONS):
        numbers = [find(args.step)] if args.step is not None else list(range(1, len(CHAPTERS) + 1))
    pause = pauses(args)
    if not args.json and args.step is None:
        console.print(
            Panel(
                f"A tour of Linux virtual memory in {len(CHAPTERS)} chapters, in the essay's "
                "order. Every figure below is read from the model as the chapter runs.",
                expand=False,
            )
        )
    chapters: list[Chapter] = []
    for k, number in enumerate(numbers):
        if pause and k > 0 and not wait(console, number):
            break
        with scenario_errors(OPTIONS):
            if args.json:
                chapter = run_chapter(number)
            else:
                title = CHAPTERS[number - 1].title
                with console.status(f"chapter {number}: {escape(title)}", spinner="dots"):
                    chapter = run_chapter(number)
        chapters.append(chapter)
        if not args.json:
            render_chapter(console, chapter, args.explain)
    if args.json:
        write_json(
            {
                "tour": "vmsim",
                "chapters_total": len(CHAPTERS),
                "matches_linux": all(c.matches_linux for c in chapters),
                "chapters": [asdict(c) for c in chapters],
            }
        )
    raise_deviations(chapters)
    return 0


__all__ = ["list_chapters", "pauses", "register", "render_chapter", "run", "wait"]
