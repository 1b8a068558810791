"""``vmsim demo pressure``: a machine with little RAM under a workload bigger than it, step by
step: reclaim, swap, zswap, KSM, the OOM killer, and every byte read back as written.

The workload, the machine and the read-back check are :mod:`vmsim.scenarios.pressure`
(:class:`Pressure` yields one :class:`Sample` per step and never prints). This module parses
the options into :class:`Settings` and renders the run: a live rich table, one line per step
(--explain, or off a terminal), JSON, and a PNG plot (:func:`plot`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

import vmsim
from vmsim.cli.commands import add_command, scenario_errors
from vmsim.cli.errors import ModelDeviation, UsageError
from vmsim.cli.plot import figure
from vmsim.cli.render import add_story_modes, write_json
from vmsim.constants import PAGE_SIZE
from vmsim.scenarios.pressure import (
    KB,
    MB,
    PAGE_KB,
    LostPage,
    Pressure,
    Sample,
    Settings,
    Verification,
    run_workload,
    totals,
)

PAGE = PAGE_SIZE

DEFAULT_RAM = "16M"
DEFAULT_SWAP = "32M"
DEFAULT_STEPS = 24
DEFAULT_SEED = 1
DEFAULT_ZSWAP = "zstd"
DEFAULT_PLOT = "vmsim-pressure.png"
ZSWAP_CHOICES = ("zstd", "lz4", "deflate", "none")
MIN_RAM = 1 * MB  # below this the watermarks leave nothing to run in
MAX_RAM = 4 << 30
MIN_WORKLOAD = 256 * KB  # a few dozen pages per process
MAX_WORKLOAD = 256 * MB  # a demo: about a minute of model time at most
MAX_STEPS = 1000
WORKLOAD_RATIO = 1.5  # the default workload: RAM x 1.5


# --- rendering ----------------------------------------------------------------------------


def _mib(kb: int) -> str:
    return f"{kb / 1024:.1f}M"


def _delta(samples: list[Sample], i: int, name: str) -> int:
    now: int = getattr(samples[i], name)
    return now - (getattr(samples[i - 1], name) if i else 0)


WIDE = 110  # narrower consoles get the events under the table instead of in a column


def table(
    samples: list[Sample], settings: Settings, width: int = WIDE, final: bool = False
) -> Table:
    """One row per step. Sizes after the step; faults and swap traffic during it. On a console
    narrower than WIDE the events go in the caption (fork, exit, OOM kills)."""
    zs = settings.zswap or "off"
    wide = width >= WIDE
    notes = []
    if final:
        notes.append(
            "free, swap, zswap, KSM: after the step; faults, swap in/out, zero out (zero pages "
            "to the swap zeromap: swpout_zero): during it"
        )
    if not wide:
        marks = _marks(samples)
        notes += [f"step {step}: {text}" for step, text in marks.items()]
    t = Table(
        title=(
            f"Memory pressure: RAM {settings.ram // MB} MiB, swap {settings.swap // MB} MiB, "
            f"zswap {zs}, KSM {'on' if settings.ksm else 'off'}, seed {settings.seed}"
        ),
        title_justify="left",
        caption="\n".join(notes) or None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 0),
    )
    t.add_column("step", justify="right", no_wrap=True, min_width=4)
    if wide:
        t.add_column("event", overflow="fold", max_width=30)
    for header in (
        "free",
        "swap\nused",
        "zswap\npool/pages",
        "KSM\nshared/sharing",
        "KSM\nsaved",
        "faults\n(major)",
        "swap\nin/out",
        "zero\nout",
        "oom\nkill",
    ):
        t.add_column(header, justify="right", no_wrap=True)
    for i, s in enumerate(samples):
        oom = _delta(samples, i, "oom_kill")
        cells = [
            str(s.step),
            _mib(s.mem_free_kb),
            _mib(s.swap_used_kb),
            f"{_mib(s.zswap_pool_kb)}/{s.zswap_stored_pages:,}",
            f"{s.ksm_pages_shared:,}/{s.ksm_pages_sharing:,}",
            _mib(s.ksm_saved_kb),
            f"{_delta(samples, i, 'pgfault'):,} ({_delta(samples, i, 'pgmajfault'):,})",
            f"{_delta(samples, i, 'pswpin'):,}/{_delta(samples, i, 'pswpout'):,}",
            f"{_delta(samples, i, 'swpout_zero'):,}",
            f"[bold red]{oom}[/bold red]" if oom else "0",
        ]
        if wide:
            cells.insert(1, s.event)
        t.add_row(*cells)
    return t


def explain_line(samples: list[Sample]) -> str:
    """The --explain form (and the plain form off a terminal): one line per step."""
    i = len(samples) - 1
    s = samples[i]
    return (
        f"step {s.step}: {s.event}; free {_mib(s.mem_free_kb)}, swap used "
        f"{_mib(s.swap_used_kb)}, zswap {_mib(s.zswap_pool_kb)} holding "
        f"{s.zswap_stored_pages} pages ({s.zswap_incompressible_pages} stored as is), KSM "
        f"{s.ksm_pages_shared} shared / "
        f"{s.ksm_pages_sharing} sharing (saves {_mib(s.ksm_saved_kb)}); pgfault "
        f"+{_delta(samples, i, 'pgfault')} (major +{_delta(samples, i, 'pgmajfault')}), "
        f"pswpin +{_delta(samples, i, 'pswpin')}, pswpout +{_delta(samples, i, 'pswpout')}, "
        f"swpout_zero +{_delta(samples, i, 'swpout_zero')}, oom_kill {s.oom_kill}"
    )


def summary_text(
    settings: Settings, t: dict[str, Any], plot_path: Path | None, markup: bool = True
) -> str:
    """The summary after the last step (rich markup unless ``markup`` is False)."""
    v = t["verification"]
    z, k = t["zswap"], t["ksm"]
    ratio = t["zswap_compression_ratio"]
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in t["written_by_kind"].items())
    lines = [
        f"{t['steps']} steps: {t['pages_written']:,} pages written ({kinds}), "
        f"{t['pages_read']:,} read back during the steps.",
        f"Free memory fell to {_mib(t['min_mem_free_kb'])} of {settings.ram // MB} MiB; swap "
        f"use peaked at {_mib(t['max_swap_used_kb'])}; pswpout {t['pswpout']:,}, pswpin "
        f"{t['pswpin']:,}; zero pages in the swap zeromap (no I/O): swpout_zero "
        f"{t['swpout_zero']:,}, swpin_zero {t['swpin_zero']:,}; pgfault {t['pgfault']:,}, of "
        f"them major {t['pgmajfault']:,}; oom_kill {t['oom_kill']}.",
    ]
    if settings.zswap:
        lines.append(
            f"zswap ({settings.zswap}): pool peaked at {_mib(t['max_zswap_pool_kb'])} holding "
            f"up to {t['max_zswap_stored_pages']:,} pages; now {z['stored_pages']:,} pages "
            f"({z['stored_incompressible_pages']:,} incompressible, stored as is) in "
            f"{_mib(z['pool_total_size'] // KB)}"
            + (f", {ratio}x compressed" if ratio else "")
            + f"; {z['written_back_pages']:,} written back, pool limit hit "
            f"{z['pool_limit_hit']:,}x."
        )
    if settings.ksm:
        lines.append(
            f"KSM: {k['pages_shared']:,} pages shared by {k['pages_sharing']:,} more mappings "
            f"(saving {_mib(k['pages_sharing'] * PAGE_KB)}, peak "
            f"{_mib(t['max_ksm_saved_kb'])}) after {k['full_scans']:,} full scans."
        )
    if v["no_byte_lost"]:
        lines.append(
            ("[bold green]no byte lost[/bold green]" if markup else "no byte lost")
            + f": {v['pages_checked']:,} pages of {v['processes']} "
            f"process{'es' if v['processes'] != 1 else ''} read back as written "
            f"({v['majfaults']:,} major faults), "
            "and every frame, swap slot and map count checks out."
        )
    elif v["lost"]:
        first = LostPage(**v["lost"][0]).describe()
        lost = f"DATA LOST: {len(v['lost']):,} pages came back wrong; the first: {first}"
        lines.append(f"[bold red]{escape(lost)}[/bold red]" if markup else lost)
    else:
        problem = f"the model's invariants fail: {v['check_memory']}"
        lines.append(f"[bold red]{escape(problem)}[/bold red]" if markup else problem)
    if plot_path is not None:
        lines.append(f"plot: {escape(str(plot_path)) if markup else plot_path}")
    return "\n".join(lines)


def plot(samples: list[Sample], settings: Settings, events: dict[int, str], path: Path) -> None:
    """Free memory, swap used, the zswap pool and KSM's savings over the steps, as a PNG."""
    with figure(path, (9, 4.5)) as (_fig, ax):
        _draw(ax, samples, settings, events)


def _draw(ax: Any, samples: list[Sample], settings: Settings, events: dict[int, str]) -> None:
    """The four series, RAM as a line, and the events as vertical lines."""
    xs = [s.step for s in samples]
    series = (
        ("free memory", "mem_free_kb", "tab:green"),
        ("swap used", "swap_used_kb", "tab:red"),
        ("zswap pool", "zswap_pool_kb", "tab:blue"),
        ("KSM savings", "ksm_saved_kb", "tab:purple"),
    )
    for label, name, color in series:
        ax.plot(xs, [getattr(s, name) / 1024 for s in samples], label=label, color=color)
    ax.axhline(settings.ram / MB, color="grey", linestyle="--", linewidth=1, label="RAM")
    for step, text in events.items():
        ax.axvline(step, color="tab:orange", linestyle=":", linewidth=1)
        ax.annotate(
            text,
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="tab:orange",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    zs = settings.zswap or "off"
    ax.set_title(
        f"vmsim demo pressure: {settings.ram // MB} MiB RAM, {settings.swap // MB} MiB swap, "
        f"zswap {zs}, KSM {'on' if settings.ksm else 'off'}, seed {settings.seed}",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=8)


def _marks(samples: list[Sample]) -> dict[int, str]:
    """Steps worth a vertical line on the plot: fork, exit, OOM kills."""
    out = {}
    for s in samples:
        keep = [e for e in s.event.split(", ") if e.startswith("fork") or " exits" in e]
        keep += [e for e in s.event.split(", ") if "oom-killed" in e]
        if keep:
            out[s.step] = "; ".join(e.split(" (pid")[0] for e in keep)
    return out


# --- command line -------------------------------------------------------------------------


def _size(text: str) -> int:
    try:
        return vmsim.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(subparsers: Any) -> None:
    """Add ``pressure`` to the ``vmsim demo`` subcommands."""
    parser = add_command(
        subparsers,
        "pressure",
        "little RAM, a bigger workload: reclaim, swap, zswap, KSM, OOM, step by step",
        __doc__,
        run,
    )
    parser.add_argument(
        "--ram", type=_size, default=DEFAULT_RAM, metavar="SIZE", help="RAM (default 16M)"
    )
    parser.add_argument(
        "--swap", type=_size, default=DEFAULT_SWAP, metavar="SIZE", help="swap (default 32M)"
    )
    parser.add_argument(
        "--workload",
        type=_size,
        metavar="SIZE",
        help=f"memory the processes write (default {WORKLOAD_RATIO:g} x --ram)",
    )
    parser.add_argument(
        "--zswap",
        choices=ZSWAP_CHOICES,
        default=DEFAULT_ZSWAP,
        help=f"zswap compressor, or none (default {DEFAULT_ZSWAP})",
    )
    parser.add_argument(
        "--swap-device",
        choices=("disk", "ssd", "zram"),
        default="disk",
        help="disk (rotational: swap readahead by cluster), ssd (readahead by VMA) or zram "
        "(compressed in RAM; default disk)",
    )
    parser.add_argument(
        "--swappiness",
        type=int,
        default=60,
        metavar="N",
        help="vm.swappiness, 0..200: how readily anonymous pages are swapped rather than "
        "the page cache dropped (default 60)",
    )
    parser.add_argument(
        "--ksm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run ksmd (default: on)",
    )
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, metavar="N", help="steps (default 24)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, metavar="S", help="workload seed (default 1)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help=f"where to write the plot (default {DEFAULT_PLOT} in the current directory)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    add_story_modes(parser, "the time series and the totals as JSON")


def settings_from(args: argparse.Namespace) -> Settings:
    """The options, checked; UsageError for values the demo cannot run with."""
    ram = args.ram if isinstance(args.ram, int) else _size(args.ram)
    swap = args.swap if isinstance(args.swap, int) else _size(args.swap)
    if not MIN_RAM <= ram <= MAX_RAM:
        raise UsageError(
            f"--ram must be within {MIN_RAM // MB} MiB..{MAX_RAM >> 30} GiB, got {ram:,} bytes"
        )
    if swap > MAX_RAM:
        raise UsageError(f"--swap must be at most {MAX_RAM >> 30} GiB, got {swap:,} bytes")
    workload = args.workload if args.workload is not None else int(ram * WORKLOAD_RATIO)
    if not MIN_WORKLOAD <= workload <= MAX_WORKLOAD:
        raise UsageError(
            f"--workload must be within {MIN_WORKLOAD // KB} KiB..{MAX_WORKLOAD // MB} MiB, "
            f"got {workload:,} bytes"
        )
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be within 1..{MAX_STEPS}, got {args.steps}")
    if args.plot is not None and args.no_plot:
        raise UsageError("--plot and --no-plot exclude each other")
    if not 0 <= args.swappiness <= 200:
        raise UsageError(f"--swappiness must be within 0..200, got {args.swappiness}")
    return Settings(
        ram=ram,
        swap=swap,
        zswap=None if args.zswap == "none" else args.zswap,
        ksm=args.ksm,
        steps=args.steps,
        seed=args.seed,
        workload=workload,
        swap_device=args.swap_device,
        swappiness=args.swappiness,
    )


def _run_steps(
    pressure: Pressure, settings: Settings, args: argparse.Namespace, console: Console
) -> list[Sample]:
    """Run the workload, showing each step as it ends: nothing (--json), a line (--explain,
    or off a terminal), or a live table."""
    samples: list[Sample] = []
    if args.json:
        samples.extend(pressure.steps())
    elif args.explain or not console.is_terminal:
        for s in pressure.steps():
            samples.append(s)
            console.print(explain_line(samples), markup=False, soft_wrap=True)
    else:
        with Live(
            table(samples, settings, console.width), console=console, auto_refresh=False
        ) as live:
            for s in pressure.steps():
                samples.append(s)
                live.update(table(samples, settings, console.width), refresh=True)
            live.update(table(samples, settings, console.width, final=True), refresh=True)
    return samples


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the workload, show it, write the plot; ModelDeviation if a byte was lost."""
    settings = settings_from(args)
    with scenario_errors():
        pressure = Pressure(settings)
        samples = _run_steps(pressure, settings, args, console)
        verification = pressure.verify()
    plot_path: Path | None = None
    if not args.no_plot:
        plot_path = args.plot if args.plot is not None else Path(DEFAULT_PLOT)
        plot(samples, settings, _marks(samples), plot_path)
    summary = totals(pressure, samples, verification)
    if args.json:
        write_json(
            {
                "demo": "pressure",
                "settings": asdict(settings),
                "series": [asdict(s) for s in samples],
                "totals": summary,
                "plot": str(plot_path) if plot_path is not None else None,
            }
        )
    elif args.explain or not console.is_terminal:
        text = summary_text(settings, summary, plot_path, markup=False)
        console.print(text, markup=False, soft_wrap=True)
    else:
        text = summary_text(settings, summary, plot_path)
        console.print(Panel(text, title="summary", title_align="left", expand=False))
    if verification.lost:
        more = len(verification.lost) - 1
        raise ModelDeviation(
            "data lost: "
            + verification.lost[0].describe()
            + (f" (and {more} more page{'s' if more > 1 else ''})" if more else "")
        )
    if verification.check_memory is not None:
        raise ModelDeviation(f"the model's memory invariants fail: {verification.check_memory}")
    return 0


__all__ = [
    "LostPage",
    "Pressure",
    "Sample",
    "Settings",
    "Verification",
    "register",
    "run",
    "run_workload",
    "settings_from",
    "totals",
]
