"""``vmsim demo walk``: one virtual address translated by the page walker, level by level.

The walk itself (the machine, the mapping, both accesses, the entries read) is
:mod:`vmsim.scenarios.walk`; this module parses ADDRESS and the options and renders the
:class:`Walk` as rich tables, one line per step (--explain), or JSON.
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

from vmsim.cli import walk_plot
from vmsim.cli.commands import add_command, scenario_errors
from vmsim.cli.errors import ModelDeviation, UsageError
from vmsim.cli.render import add_story_modes, write_json
from vmsim.constants import PAGE_SHIFT
from vmsim.scenarios.walk import ACCESSES, Access, Level, Step, Walk, story, tlb_name

_U64 = (1 << 64) - 1
OPTIONS = {"access": "--access", "address": "ADDRESS"}  # the story's parameters, as options


def _fmt(n: int) -> str:
    return f"{n:#x}"


def parse_address(text: str) -> int:
    """ADDRESS as given: hex with 0x, or decimal. UsageError if it is not a 64-bit number."""
    try:
        addr = int(text, 0)
    except ValueError:
        raise UsageError(
            f"ADDRESS {text!r} is not a number: give it in hex (0x7ffff7ffb000) or decimal"
        ) from None
    if addr < 0:
        raise UsageError(f"ADDRESS {text} is negative: addresses are unsigned")
    if addr > _U64:
        raise UsageError(f"ADDRESS {text} does not fit in 64 bits")
    return addr


# --- rendering ----------------------------------------------------------------------------


def _flag(on: bool) -> str:
    return "[green]1[/green]" if on else "[dim]0[/dim]"


def va_table(walk: Walk) -> Table:
    """The virtual address cut into its fields: one column per level, then the offset."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    cells = []
    for lv in walk.levels:
        hi, lo = lv.bits
        table.add_column(f"{lv.name}\n{hi}-{lo}", justify="right")
        cells.append(str(lv.index))
    low = walk.levels[-1].bits[1] - 1  # the leaf's lowest index bit: the offset is below
    table.add_column(f"offset\n{low}-0", justify="right")
    cells.append(_fmt(walk.offset))
    table.add_row(*cells)
    return table


def levels_table(walk: Walk) -> Table:
    """The entries the walk read, top first, with their fields."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("table", no_wrap=True)
    table.add_column("index", justify="right")
    table.add_column("entry", no_wrap=True)
    for name in ("P", "RW", "US", "A", "D", "PS", "NX"):
        table.add_column(name, justify="center")
    table.add_column("pfn", justify="right", no_wrap=True)
    table.add_column("points to")
    for lv in walk.levels:
        ps = _flag(lv.huge) if lv.level in (2, 3) else ""
        target = (
            "next table" if lv.kind == "table" else ("the page" if lv.kind == "leaf" else lv.kind)
        )
        table.add_row(
            f"{lv.name} ({lv.linux_name})",
            str(lv.index),
            lv.entry_hex,
            _flag(lv.present),
            _flag(lv.writable),
            _flag(lv.user),
            _flag(lv.accessed),
            _flag(lv.dirty),
            ps,
            _flag(lv.nx),
            _fmt(lv.pfn),
            target,
        )
    return table


def _access_text(n: str, a: Access) -> str:
    faults = ", ".join(a.faults) if a.faults else "no fault"
    if a.tlb is None:
        return f"{n} {a.access}: [bold]TLB miss[/bold], page walk, {a.memory_refs} memory references ({faults})"
    return (
        f"{n} {a.access}: [bold]{tlb_name(a.access, a.tlb)} hit[/bold], "
        f"{a.memory_refs} memory references ({faults})"
    )


def render(console: Console, walk: Walk) -> None:
    console.print(
        Panel(
            f"Translating {_fmt(walk.address)} ({walk.access}) with {walk.paging_levels}-level "
            f"paging ({walk.va_bits}-bit virtual addresses): each level's index is 9 bits of "
            "the address, each entry gives the frame of the next table, the last one the page.",
            expand=False,
        )
    )
    console.print(f"[cyan]{escape(walk.mapping)}[/cyan]", soft_wrap=True)
    console.print(escape(walk.before))
    console.print()
    console.print(va_table(walk))
    console.print()
    console.print(_access_text("first", walk.first))
    console.print(levels_table(walk))
    console.print(
        f"physical address: pfn {_fmt(walk.levels[-1].pfn)} << {PAGE_SHIFT} | offset "
        f"{_fmt(walk.offset)} = [bold]{_fmt(walk.paddr)}[/bold]"
    )
    console.print(_access_text("second", walk.second))
    if not walk.matches_linux:
        console.print(
            f"[bold yellow]model disagrees with the hardware:[/bold yellow] {walk.expected}"
        )


def register(subparsers: Any) -> None:
    """Add ``walk`` to the ``vmsim demo`` subcommands."""
    parser = add_command(subparsers, "walk", "a page-table walk, level by level", __doc__, run)
    parser.add_argument(
        "address",
        nargs="?",
        metavar="ADDRESS",
        help="user address to translate, hex (0x...) or decimal; its page is mapped with "
        "MAP_FIXED (default: the first of a few freshly mapped pages)",
    )
    parser.add_argument(
        "--access", choices=ACCESSES, default="read", help="the kind of access (default read)"
    )
    parser.add_argument(
        "--five-level", action="store_true", help="5-level paging (57-bit addresses)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw the walk (PNG): CR3, each table and entry with its bits, the frame",
    )
    add_story_modes(parser, "machine-readable result")


def run(args: argparse.Namespace, console: Console) -> int:
    """Walk and tell it in the requested form; ModelDeviation if the model strays."""
    address = None if args.address is None else parse_address(args.address)
    with scenario_errors(OPTIONS):
        walk = story(address, args.access, args.five_level)
    if args.plot is not None:
        walk_plot.draw(walk_plot.walk_tree(walk), args.plot)
    if args.json:
        write_json({"demo": "walk", **asdict(walk)})
    elif args.explain:
        for number, step in enumerate(walk.steps, 1):
            console.print(f"{number}. {step.explain}", markup=False, soft_wrap=True)
    else:
        render(console, walk)
    if not walk.matches_linux:
        raise ModelDeviation(f"the model's walk disagrees with the hardware: {walk.expected}")
    return 0


__all__ = ["Access", "Level", "Step", "Walk", "parse_address", "register", "run", "story"]
