"""``vmsim demo hugepages``: the huge-page "mess", step by step: TLB reach of 4 KiB vs 2 MiB
pages, khugepaged's RSS bloat, a MADV_DONTNEED that frees nothing until the split,
fragmentation making THP fall back and compaction rescuing it, a hugetlbfs pool and its SIGBUS.

The steps (the machines, the calls, the figures) are :mod:`vmsim.scenarios.hugepages`; this
module renders them: a rule, a line and a table of figures per step, one line per step
(--explain), JSON, and a PNG (--plot). A step the model of this build cannot show yet says so.
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

from vmsim.cli.commands import add_command, scenario_errors
from vmsim.cli.plot import figure
from vmsim.cli.render import add_story_modes, write_json
from vmsim.scenarios.hugepages import Step, story


def explain_line(number: int, step: Step) -> str:
    """The --explain form: exactly one line per step."""
    return f"{number}. {step.explain}"


def render_step(console: Console, number: int, step: Step) -> None:
    console.rule(f"[bold]{number}. {escape(step.title)}[/bold]", align="left")
    console.print(escape(step.explain), soft_wrap=True)
    if not step.shown:
        console.print(f"[bold yellow]cannot show yet:[/bold yellow] {escape(step.missing)}")
    table = Table("figure", "value", box=None, header_style="bold")
    for name, value in step.figures.items():
        table.add_row(name, escape(str(value)))
    console.print(table)
    console.print()


def _figure(step: Step, name: str) -> float:
    value = step.figures.get(name, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def plot(path: Path, steps: list[Step]) -> None:
    """Three panels: TLB hit rates (step 1), free blocks per order before and after
    compaction (step 4), the hugetlb pool's free and reserved pages (step 5)."""
    by_key = {s.key: s for s in steps}
    with figure(path, (13, 4.5)) as (fig, ax):
        ax.remove()
        tlb_ax, buddy_ax, pool_ax = fig.subplots(1, 3)
        tlb = by_key["tlb"]
        rates = [100 * _figure(tlb, "hit_rate_4k"), 100 * _figure(tlb, "hit_rate_2m")]
        tlb_ax.bar(["4 KiB pages", "2 MiB pages"], rates, color=["tab:red", "tab:green"])
        tlb_ax.set_ylim(0, 105)
        tlb_ax.set_ylabel("TLB hit rate, %")
        ws = int(_figure(tlb, "working_set")) >> 20
        tlb_ax.set_title(f"1. random loads over {ws} MiB")
        frag = by_key["fragmentation"]
        orders = list(range(11))
        for name, label, shift in (
            ("buddy_fragmented", "fragmented", -0.2),
            ("buddy_after_compaction", "after the pool grew (compacted; its block taken)", 0.2),
        ):
            counts = frag.figures.get(name, [])
            if isinstance(counts, list):
                kib = [c * (4 << o) for o, c in enumerate(counts)]
                buddy_ax.bar([o + shift for o in orders], kib, width=0.4, label=label)
        buddy_ax.set_yscale("symlog")
        buddy_ax.set_xticks(orders)
        buddy_ax.set_xlabel("order (free block = 4 KiB << order)")
        buddy_ax.set_ylabel("free kB in blocks of the order")
        buddy_ax.set_title("4. free memory by block order")
        buddy_ax.legend(fontsize=8)
        pool = by_key["hugetlb"]
        stages = ["mmap", "touch", "NORESERVE\nmmap", "end"]
        free = [
            _figure(pool, n)
            for n in ("free_after_mmap", "free_after_touch", "free_after_touch", "free_at_end")
        ]
        rsvd = [
            _figure(pool, n)
            for n in ("rsvd_after_mmap", "rsvd_after_touch", "rsvd_after_noreserve_mmap")
        ] + [_figure(pool, "rsvd_at_end")]
        xs = range(len(stages))
        pool_ax.plot(xs, free, "o-", label="HugePages_Free")
        pool_ax.plot(xs, rsvd, "s--", label="HugePages_Rsvd")
        pool_ax.set_xticks(list(xs))
        pool_ax.set_xticklabels(stages, fontsize=8)
        pool_ax.set_ylim(-0.2, _figure(pool, "pool") + 0.5)
        pool_ax.set_ylabel("2 MiB pages")
        pool_ax.set_title(f"5. hugetlb pool of {int(_figure(pool, 'pool'))}: SIGBUS at the end")
        pool_ax.legend(fontsize=8)


def register(subparsers: Any) -> None:
    """Add ``hugepages`` to the ``vmsim demo`` subcommands."""
    parser = add_command(
        subparsers,
        "hugepages",
        "huge pages step by step: TLB reach, khugepaged, splits, fragmentation, hugetlbfs",
        __doc__,
        run,
    )
    add_story_modes(parser, "machine-readable list of steps and their figures")
    parser.add_argument(
        "--plot", type=Path, metavar="PNG", help="TLB hit rates, free blocks, the hugetlb pool"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    steps: list[Step] = []
    if not (args.json or args.explain):
        console.print(
            Panel(
                "Huge pages: fewer TLB misses, but more RSS, memory that does not come back, "
                "allocations that fail on fragmented memory, and pools reserved up front.",
                expand=False,
            )
        )
    with scenario_errors():
        for step in story():
            steps.append(step)
            if args.explain:
                console.print(explain_line(len(steps), step), markup=False, soft_wrap=True)
            elif not args.json:
                render_step(console, len(steps), step)
    if args.plot is not None:
        plot(args.plot, steps)
    if args.json:
        write_json(
            {
                "demo": "hugepages",
                "all_shown": all(s.shown for s in steps),
                "steps": [asdict(s) for s in steps],
            }
        )
    return 0


__all__ = ["Step", "explain_line", "plot", "register", "run", "story"]
