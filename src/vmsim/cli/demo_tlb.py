"""``vmsim demo tlb``: the three regimes a program goes through as its working set grows past
the reach of the L1 dTLB (64 x 4 KiB = 256 KiB on Skylake), of the STLB (1536 x 4 KiB =
6 MiB) and of the paging-structure caches (32 PDEs x 2 MiB = 64 MiB), with 4 KiB against
2 MiB pages.

Each point is a generated trace (numpy): ``ACCESSES`` 8-byte loads at uniformly random
64-byte lines of a working set of the given size, run through the engine on the default CPU
after a warm-up that touches every page once (its faults and cold walks are not counted:
the figures are the steady state), then priced by the cycle model. The
program is taken to execute one instruction per load; its instruction fetches are not in the
trace (they would all hit the L1 iTLB), so the priced instruction count is the load count.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vmsim.cli.commands import add_command
from vmsim.cli.plot import figure
from vmsim.cli.render import add_story_modes, write_json
from vmsim.memtrace.cpus import DEFAULT_CPU, Reach, cpu_model, reach
from vmsim.memtrace.records import CpuModel
from vmsim.memtrace.report import PassResult, summary
from vmsim.scenarios.tlb import ACCESSES, Point, measure, regime, working_set_trace

KIB = 1 << 10
MIB = 1 << 20
SIZES = tuple(s * KIB for s in (64, 128, 256, 512)) + tuple(
    s * MIB for s in (1, 2, 4, 8, 16, 32, 64, 128, 256)
)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n // KIB} KiB"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _cycles_per_access(p: PassResult) -> float:
    return p.cost.translation_cycles / p.counters.accesses if p.counters.accesses else 0.0


def table(points: list[Point], r: Reach) -> Table:
    t = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
    for name in (
        "working",
        "regime",
        "hit 4K",
        "L1 4K",
        "refs/walk",
        "cyc/acc",
        "share 4K",
        "hit 2M",
        "share 2M",
    ):
        left = name in ("working", "regime")
        t.add_column(name, justify="left" if left else "right", no_wrap=True)
    for p in points:
        t.add_row(
            _size(p.size),
            regime(p.size, r),
            _pct(p.small.hit_rate),
            _pct(p.small.l1_hit_rate),
            f"{p.small.refs_per_walk:.2f}",
            f"{_cycles_per_access(p.small):.1f}",
            _pct(p.small.cost.translation_share),
            _pct(p.huge.hit_rate),
            _pct(p.huge.cost.translation_share),
        )
    return t


def explain(p: Point, r: Reach) -> str:
    return (
        f"{_size(p.size)} (regime {regime(p.size, r)}): 4 KiB pages hit the TLB "
        f"{_pct(p.small.hit_rate)} of the time ({_pct(p.small.l1_hit_rate)} in the L1), "
        f"{p.small.counters.walks:,} walks of {p.small.refs_per_walk:.2f} references, "
        f"translation {_pct(p.small.cost.translation_share)} of cycles; 2 MiB pages: hit rate "
        f"{_pct(p.huge.hit_rate)}, translation {_pct(p.huge.cost.translation_share)}"
    )


def plot(path: Path, points: list[Point], r: Reach, cpu: CpuModel) -> None:
    xs = [p.size / MIB for p in points]
    with figure(path, (10, 6)) as (_fig, ax):
        ax.plot(xs, [100 * p.small.hit_rate for p in points], "o-", label="TLB hit rate, 4 KiB")
        ax.plot(xs, [100 * p.small.l1_hit_rate for p in points], "o:", label="L1 dTLB hits, 4 KiB")
        ax.plot(xs, [100 * p.huge.hit_rate for p in points], "s-", label="TLB hit rate, 2 MiB")
        ax.plot(
            xs,
            [100 * p.small.cost.translation_share for p in points],
            "^--",
            label="translation share of cycles, 4 KiB",
        )
        ax.plot(
            xs,
            [100 * p.huge.cost.translation_share for p in points],
            "v--",
            label="translation share of cycles, 2 MiB",
        )
        for where, name in (
            (r.l1_4k, "L1 dTLB reach (4 KiB)"),
            (r.stlb_4k, "STLB reach (4 KiB)"),
            (r.pwc, "PDE cache reach = L1 dTLB reach (2 MiB)"),
        ):
            ax.axvline(where / MIB, color="grey", ls=":", lw=1)
            ax.annotate(name, (where / MIB, 60), rotation=90, va="center", ha="left", fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([_size(p.size) for p in points], rotation=45, ha="right")
        ax.minorticks_off()
        ax.set_xlabel("working set")
        ax.set_ylabel("percent")
        ax.set_ylim(-2, 102)
        ax.set_title(
            f"TLB regimes on {cpu.name}: {ACCESSES:,} uniform random loads per working set"
        )
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=8)


def register(subparsers: Any) -> None:
    """Add ``tlb`` to the ``vmsim demo`` subcommands."""
    parser = add_command(
        subparsers, "tlb", "TLB regimes as the working set grows, 4 KiB vs 2 MiB", __doc__, run
    )
    add_story_modes(parser, "one JSON object: every point's counters and cycles")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="hit rate against working set")


def run(args: argparse.Namespace, console: Console) -> int:
    cpu = cpu_model(DEFAULT_CPU)
    r = reach(cpu)
    points = [measure(size, cpu, ACCESSES) for size in SIZES]
    if args.plot is not None:
        plot(args.plot, points, r, cpu)
    if args.json:
        write_json(
            {
                "demo": "tlb",
                "cpu": cpu.name,
                "accesses": ACCESSES,
                "reach": {
                    "l1_dtlb_4k": r.l1_4k,
                    "stlb_4k": r.stlb_4k,
                    "pde_cache": r.pwc,
                    "l1_dtlb_2m": r.l1_2m,
                    "stlb_2m": r.stlb_2m,
                },
                "points": [
                    {
                        "working_set": p.size,
                        "regime": regime(p.size, r),
                        "4K": summary(p.small),
                        "2M": summary(p.huge),
                    }
                    for p in points
                ],
            }
        )
    elif args.explain:
        for number, p in enumerate(points, 1):
            console.print(f"{number}. {explain(p, r)}", markup=False, soft_wrap=True)
    else:
        console.print(
            f"[bold]{cpu.name}[/bold]: L1 dTLB reach {_size(r.l1_4k)} (4 KiB) / "
            f"{_size(r.l1_2m)} (2 MiB); STLB reach {_size(r.stlb_4k)} / {_size(r.stlb_2m)}; "
            f"PDE cache reach {_size(r.pwc)}. {ACCESSES:,} random loads per working set, "
            "after a warm-up. cyc/acc: translation cycles per load; share: of all cycles.",
            soft_wrap=True,
        )
        console.print(table(points, r))
    return 0


__all__ = ["Point", "Reach", "measure", "reach", "regime", "register", "run", "working_set_trace"]
