"""What ``vmsim tlb`` and ``vmsim demo tlb`` say about an engine pass: the JSON fields, the
human report (the answer first: hit rate, share of time, what 2 MiB pages change), the
``--sweep`` table and bar chart, and the plots over the trace.

Every figure here is read from the engine's :class:`~vmsim.memtrace.records.Counters` and
priced by :func:`vmsim.memtrace.cost.cost`; nothing is recomputed another way. The library
never prints: renderers take a rich ``Console`` or a path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vmsim.memtrace.cost import Cost, cost
from vmsim.memtrace.records import Counters, CpuModel

__all__ = [
    "PassResult",
    "Window",
    "render",
    "summary",
    "sweep_chart",
    "sweep_table",
    "trace_plot",
]


@dataclass(frozen=True)
class PassResult:
    """One engine pass over a trace in one configuration, with its price."""

    cpu: CpuModel
    page_size: str  # "4K", "2M", "1G" or "thp"
    five_level: bool
    pwc: bool
    engine: str
    counters: Counters
    cost: Cost

    @classmethod
    def of(
        cls,
        counters: Counters,
        cpu: CpuModel,
        *,
        page_size: str,
        five_level: bool = False,
        pwc: bool = True,
        engine: str = "fast",
    ) -> PassResult:
        return cls(cpu, page_size, five_level, pwc, engine, counters, cost(counters, cpu))

    @property
    def label(self) -> str:
        extra = (" 5-level" if self.five_level else "") + ("" if self.pwc else " no-PWC")
        return f"{self.cpu.name} {self.page_size}{extra}"

    @property
    def hit_rate(self) -> float:
        """(L1 hits + STLB hits) / translations: the seed's "TLB hit rate"."""
        c = self.counters
        return (c.l1_hits + c.stlb_hits) / c.accesses if c.accesses else 0.0

    @property
    def l1_hit_rate(self) -> float:
        c = self.counters
        return c.l1_hits / c.accesses if c.accesses else 0.0

    @property
    def mpki(self) -> float | None:
        """Walks per 1,000 instructions; None for a trace without instruction records."""
        c = self.counters
        return 1000.0 * c.walks / c.instructions if c.instructions else None

    @property
    def refs_per_walk(self) -> float:
        c = self.counters
        return c.walk_refs / c.walks if c.walks else 0.0


def summary(r: PassResult) -> dict[str, Any]:
    """The ``--json`` object of one pass: every counter, the derived rates and the cycles."""
    c = r.counters
    return {
        "cpu": r.cpu.name,
        "page_size": r.page_size,
        "five_level": r.five_level,
        "pwc": r.pwc,
        "engine": r.engine,
        "records": c.records,
        "instructions": c.instructions,
        "accesses": c.accesses,
        "l1_hits": c.l1_hits,
        "stlb_hits": c.stlb_hits,
        "walks": c.walks,
        "walk_refs": c.walk_refs,
        "pwc_hits": c.pwc_hits,
        "faults": c.faults,
        "tlb_flushes": c.tlb_flushes,
        "touched_pages": c.touched_pages,
        "walk_refs_by_level": list(c.walk_refs_by_level),
        "data_refs_by_level": list(c.data_refs_by_level),
        "by_page_size": dict(c.by_page_size),
        "hit_rate": r.hit_rate,
        "l1_hit_rate": r.l1_hit_rate,
        "mpki": r.mpki,
        "translation_cycles": r.cost.translation_cycles,
        "data_cycles": r.cost.data_cycles,
        "base_cycles": r.cost.base_cycles,
        "total_cycles": r.cost.total_cycles,
        "translation_share": r.cost.translation_share,
        "cost": asdict(r.cost),
    }


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}%"


def _n(x: float) -> str:
    return f"{x:,.0f}"


def render(
    console: Console,
    trace: str,
    main: PassResult,
    huge: PassResult | None,
    notes: Sequence[str] = (),
) -> None:
    """The human report: the answer first, then the counters, then the notes."""
    c = main.counters
    console.print(
        f"[bold]{escape(trace)}[/bold]: {c.records:,} records, {c.instructions:,} instructions, "
        f"{c.accesses:,} translations ({escape(main.label)}, {main.engine} engine)",
        soft_wrap=True,
    )
    console.print(
        f"  TLB hit rate [bold]{_pct(main.hit_rate)}[/bold] "
        f"(L1 {_pct(main.l1_hit_rate)}, STLB {_pct(c.stlb_hits / c.accesses if c.accesses else 0)})"
        f"; translation takes [bold]{_pct(main.cost.translation_share)}[/bold] of the modelled "
        "cycles",
        soft_wrap=True,
    )
    if huge is not None:
        h = huge.counters
        console.print(
            f"  with {huge.page_size} pages: hit rate {_pct(huge.hit_rate)}, translation "
            f"{_pct(huge.cost.translation_share)} of cycles; walks {c.walks:,} -> {h.walks:,}, "
            f"translation cycles {_n(main.cost.translation_cycles)} -> "
            f"{_n(huge.cost.translation_cycles)}, total {_n(main.cost.total_cycles)} -> "
            f"{_n(huge.cost.total_cycles)} (data misses differ too: the caches are physically "
            "indexed and the pages sit in other frames)",
            soft_wrap=True,
        )
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("counter")
    table.add_column("value", justify="right")
    mpki = main.mpki
    rows = [
        ("L1 TLB hits", f"{c.l1_hits:,}"),
        ("STLB hits", f"{c.stlb_hits:,}"),
        ("page walks", f"{c.walks:,}"),
        ("walks per 1,000 instructions (MPKI)", "-" if mpki is None else f"{mpki:.3f}"),
        ("paging-structure references", f"{c.walk_refs:,} ({main.refs_per_walk:.2f} per walk)"),
        ("walks started below the root (PWC)", f"{c.pwc_hits:,}"),
        ("walk references in L1D / L2 / LLC / DRAM", " / ".join(map(str, c.walk_refs_by_level))),
        ("data references in L1D / L2 / LLC / DRAM", " / ".join(map(str, c.data_refs_by_level))),
        ("page faults (model)", f"{c.faults:,}"),
        ("pages touched (4 KiB)", f"{c.touched_pages:,}"),
        ("translation cycles", _n(main.cost.translation_cycles)),
        (
            "  STLB hits / walk overhead / walk refs",
            f"{_n(main.cost.stlb_cycles)} / {_n(main.cost.walk_overhead_cycles)} / {_n(main.cost.walk_ref_cycles)}",
        ),
        ("data-miss cycles", _n(main.cost.data_cycles)),
        ("base cycles (instructions x CPI)", _n(main.cost.base_cycles)),
        ("total cycles (in-order model)", _n(main.cost.total_cycles)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for note in notes:
        console.print(f"[dim]note:[/dim] {escape(note)}")


def sweep_table(results: Sequence[PassResult]) -> Table:
    """One row per configuration of a ``--sweep``."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (
        ("configuration", "left"),
        ("hit rate", "right"),
        ("L1 hits", "right"),
        ("walks", "right"),
        ("refs/walk", "right"),
        ("MPKI", "right"),
        ("translation share", "right"),
        ("total cycles", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in results:
        mpki = r.mpki
        table.add_row(
            escape(r.label),
            _pct(r.hit_rate),
            _pct(r.l1_hit_rate),
            f"{r.counters.walks:,}",
            f"{r.refs_per_walk:.2f}",
            "-" if mpki is None else f"{mpki:.2f}",
            _pct(r.cost.translation_share),
            _n(r.cost.total_cycles),
        )
    return table


def _figure(rows: int, size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, 1, figsize=size)


def _save(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG at 100 dpi and close it; an unwritable path raises the OSError
    (the CLI prints it as one line)."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def sweep_chart(path: Path, results: Sequence[PassResult], title: str) -> None:
    """Bar chart of a sweep, one bar per configuration: the translation share of cycles
    (top) and page walks per 1,000 translations (bottom)."""
    labels = [r.label for r in results]
    share = [100.0 * r.cost.translation_share for r in results]
    walks = [
        1000.0 * r.counters.walks / r.counters.accesses if r.counters.accesses else 0.0
        for r in results
    ]
    xs = list(range(len(results)))
    fig, (top, bottom) = _figure(2, (max(8.0, 0.8 * len(results) + 2), 7))
    for ax, values, ylabel, fmt in (
        (top, share, "translation share of cycles (%)", "{:.2f}%"),
        (bottom, walks, "page walks per 1,000 translations", "{:.3g}"),
    ):
        ax.bar(xs, values, color=["C0" if r.page_size == "4K" else "C2" for r in results])
        for x, v in zip(xs, values, strict=True):
            ax.annotate(fmt.format(v), (x, v), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_xticks(xs)
        ax.set_xticklabels([])
        ax.margins(y=0.15)
    bottom.set_xticklabels(labels, rotation=30, ha="right")
    top.set_title(title)
    _save(fig, path)


@dataclass(frozen=True)
class Window:
    """The counters of one window of consecutive records (``first_record`` 0-based)."""

    first_record: int
    counters: Counters
    working_set: int  # bytes: distinct 4 KiB pages the window touched, x 4 KiB


def trace_plot(path: Path, windows: Sequence[Window], title: str) -> None:
    """Two panels: TLB miss rate per window over the trace, and hit rate against the window's
    working-set size."""
    xs = [w.first_record for w in windows]
    rates = [
        (w.counters.l1_hits + w.counters.stlb_hits) / w.counters.accesses
        if w.counters.accesses
        else 1.0
        for w in windows
    ]
    fig, (top, bottom) = _figure(2, (9, 7))
    top.plot(xs, [100.0 * (1 - r) for r in rates], lw=1, marker=".", ms=3)
    top.set_xlabel("record")
    top.set_ylabel("TLB miss rate (%)")
    top.set_title(title)
    bottom.scatter([w.working_set / (1 << 20) for w in windows], [100 * r for r in rates], s=8)
    bottom.set_xscale("log")
    bottom.set_xlabel("working set of the window (MiB, distinct 4 KiB pages)")
    bottom.set_ylabel("TLB hit rate (%)")
    _save(fig, path)
