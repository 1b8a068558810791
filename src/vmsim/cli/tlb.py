"""``vmsim tlb TRACE``: how much address translation costs a program, from a memory trace of
it (Valgrind lackey, Intel Pin's pinatrace, ChampSim, vmsim ``.npz``), and what 2 MiB pages,
another CPU, 5-level paging or no paging-structure caches would change.

The command parses, reads the trace with :func:`vmsim.memtrace.readers.open_memtrace`, runs
the engine (:func:`vmsim.memtrace.engine.run`) once per configuration, prices the counters
with :func:`vmsim.memtrace.cost.cost` and hands them to :mod:`vmsim.memtrace.report`.

A trace of at most ``IN_MEMORY_RECORDS`` records is read once and kept in memory for every
pass; a longer one is read again for each pass (bounded memory, as the readers stream).
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from vmsim.cli.commands import add_command
from vmsim.cli.errors import CliError
from vmsim.cli.render import write_json
from vmsim.memtrace.cpus import CPU_NAMES, DEFAULT_CPU, cpu_model
from vmsim.memtrace.engine import run as engine_run
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.passes import inferred_layout, translate_windows
from vmsim.memtrace.readers import open_memtrace
from vmsim.memtrace.records import TraceChunk, TraceError
from vmsim.memtrace.report import (
    PassResult,
    Window,
    render,
    summary,
    sweep_chart,
    sweep_table,
)
from vmsim.memtrace.report import trace_plot as draw_trace_plot
from vmsim.trace import read_strace
from vmsim.trace.strace import open_trace as open_strace

FORMATS = ("auto", "lackey", "pinatrace", "champsim", "npz")
PAGE_SIZES = ("4K", "2M", "1G", "thp")
ENGINES = ("fast", "reference")
IN_MEMORY_RECORDS = 64 << 20  # ~700 MB of chunk arrays at 11 bytes a record
PLOT_WINDOWS = 200  # windows of --plot over the trace
MIN_WINDOW = 5_000  # records


@dataclass(frozen=True)
class Config:
    """One engine configuration: a pass over the trace."""

    cpu: str
    page_size: str
    five_level: bool = False
    pwc: bool = True


# --- the calls into the readers and the engine (the only ones) ------------------------------


def open_trace(path: Path, fmt: str) -> Iterator[TraceChunk]:
    """The trace's chunks, streamed by the readers."""
    return iter(open_memtrace(path, fmt))


def maps_layout(maps: Path) -> Layout:
    """The address space of a /proc/PID/maps snapshot of the traced run."""
    try:
        text = maps.read_text(errors="replace")
    except OSError as e:
        raise CliError(f"{maps}: {e.strerror or e}") from e
    try:
        return Layout.from_maps(text)
    except ValueError as e:
        raise CliError(f"{maps}: not a /proc/PID/maps snapshot: {e}") from e


def strace_layout(strace: Path, maps: Path | None) -> Layout:
    """The mappings of an strace log of the traced run (``vmsim record``'s OUT.strace),
    replayed by vmsim's strace replay, with the maps snapshot where given."""
    text = None
    if maps is not None:
        maps_layout(maps)  # the same one-line errors as --maps alone
        text = maps.read_text(errors="replace")
    try:
        with open_strace(strace) as f:
            return Layout.from_strace(read_strace(f), text)
    except OSError as e:
        raise CliError(f"{strace}: {e.strerror or e}") from e
    except (EOFError, zlib.error) as e:
        raise CliError(f"{strace}: corrupt or truncated compressed data ({e})") from e


def beside(trace: Path, suffix: str) -> Path | None:
    """``TRACE.strace`` / ``TRACE.maps`` as ``vmsim record`` writes them, if present."""
    p = trace.with_name(trace.name + suffix)
    return p if p.is_file() else None


# --- running passes ------------------------------------------------------------------------


class _Source:
    """The trace, in memory when it is short enough, else re-read for every pass."""

    def __init__(self, path: Path, fmt: str, progress: Progress | None) -> None:
        self.path = path
        self.fmt = fmt
        self.progress = progress
        self.kept: list[TraceChunk] | None = None
        self.records = 0  # after the first complete read
        self.read_once = False

    def _read(self, label: str) -> Iterator[TraceChunk]:
        task = None
        if self.progress is not None:
            task = self.progress.add_task(f"{label}: reading {self.path.name}", total=None)
        records = 0
        try:
            for chunk in open_trace(self.path, self.fmt):
                records += len(chunk.addr)
                if task is not None and self.progress is not None:
                    self.progress.update(task, description=f"{label}: {records:,} records")
                yield chunk
        except TraceError as e:
            raise CliError(str(e)) from e
        except (EOFError, zlib.error) as e:
            raise CliError(f"{self.path}: corrupt or truncated compressed data ({e})") from e
        finally:
            if task is not None and self.progress is not None:
                self.progress.remove_task(task)
        self.records = records

    def chunks(self, label: str) -> Iterator[TraceChunk]:
        """The trace once more: from memory if the first read kept it, else from the file (the
        first read keeps the chunks while they fit in ``IN_MEMORY_RECORDS``)."""
        if self.kept is not None:
            yield from self.kept
            return
        if self.read_once:
            yield from self._read(label)
            return
        kept: list[TraceChunk] | None = []
        records = 0
        for chunk in self._read(label):
            if kept is not None:
                records += len(chunk.addr)
                if records <= IN_MEMORY_RECORDS:
                    kept.append(chunk)
                else:
                    kept = None
            yield chunk
        self.kept = kept
        self.read_once = True


def run_passes(
    path: Path,
    fmt: str,
    configs: Sequence[Config],
    *,
    engine: str,
    maps: Path | None,
    progress: Progress | None,
    windows: bool = False,
    strace: Path | None = None,
) -> tuple[list[PassResult], bool, list[Window], Layout]:
    """Run every configuration over the trace. Also returns whether the trace was kept in
    memory, with ``windows`` the first configuration's counters per window of records (about
    ``PLOT_WINDOWS`` of them), and the layout (``estimated``: inferred, or extended where
    the snapshot and the log missed a mapping)."""
    source = _Source(path, fmt, progress)
    if strace is not None:
        layout = strace_layout(strace, maps)
    elif maps is not None:
        layout = maps_layout(maps)
    else:
        layout = inferred_layout(source.chunks("layout"))
    results: list[PassResult] = []
    per_window: list[Window] = []
    for config in configs:
        cpu = cpu_model(config.cpu)
        label = f"{config.cpu} {config.page_size}"
        task = None
        if progress is not None:
            task = progress.add_task(f"{label}: translating", total=source.records or None)

        def advance(done: int, task: Any = task) -> None:
            if progress is not None and task is not None:
                progress.update(task, completed=done)

        try:
            counters = engine_run(
                source.chunks(label),
                layout,
                cpu,
                page_size=config.page_size,
                five_level=config.five_level,
                pwc=config.pwc,
                engine=engine,
                progress=advance,
            )
        except ValueError as e:  # the engine's word for a record it cannot translate
            raise CliError(f"{path}: {e}") from e
        if progress is not None and task is not None:
            progress.remove_task(task)
        results.append(
            PassResult.of(
                counters,
                cpu,
                page_size=config.page_size,
                five_level=config.five_level,
                pwc=config.pwc,
                engine=engine,
            )
        )
    if windows:
        first = configs[0]
        try:
            per_window = translate_windows(
                source.chunks("windows"),
                cpu_model(first.cpu),
                layout=layout,
                page_size=first.page_size,
                five_level=first.five_level,
                pwc=first.pwc,
                window=max(MIN_WINDOW, source.records // PLOT_WINDOWS),
            )
        except ValueError as e:
            raise CliError(f"{path}: {e}") from e
    return results, source.kept is not None, per_window, layout


def sweep_configs(base: Config) -> list[Config]:
    """The configurations ``--sweep`` compares: every CPU preset with 4 KiB, 2 MiB and THP
    pages, the chosen CPU with 1 GiB pages, with 5-level paging and without the PWC."""
    configs = [Config(cpu, size) for cpu in CPU_NAMES for size in ("4K", "2M", "thp")]
    configs.append(Config(base.cpu, "1G"))
    configs.append(Config(base.cpu, "4K", five_level=True))
    configs.append(Config(base.cpu, "4K", pwc=False))
    first = [c for c in configs if c == base]
    return first + [c for c in configs if c != base] if first else [base, *configs]


# --- the command ---------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add ``tlb`` to the ``vmsim`` subcommands."""
    parser = add_command(
        subparsers,
        "tlb",
        "TLB hit rate and translation cost of a memory trace",
        __doc__,
        run,
        epilog="Record a trace with `vmsim record -- CMD ARGS` or valgrind --tool=lackey "
        "--trace-mem=yes. The cycle model is in-order; see docs/translation.md.",
    )
    parser.add_argument("trace", type=Path, metavar="TRACE", help="the trace file")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="trace format")
    parser.add_argument(
        "--maps",
        type=Path,
        metavar="SNAPSHOT",
        help="/proc/PID/maps snapshot of the run (default: TRACE.maps with TRACE.strace)",
    )
    parser.add_argument(
        "--strace",
        type=Path,
        metavar="LOG",
        help="strace log of the same run: its mmap/munmap/mprotect/mremap/brk calls are "
        "replayed for the layout (default: TRACE.strace if it exists, as vmsim record writes)",
    )
    parser.add_argument(
        "--no-strace",
        action="store_true",
        help="do not use TRACE.strace / TRACE.maps found next to the trace",
    )
    parser.add_argument(
        "--page-size", choices=PAGE_SIZES, default="4K", help="page size of the mappings"
    )
    parser.add_argument("--cpu", choices=CPU_NAMES, default=DEFAULT_CPU, help="CPU preset")
    parser.add_argument("--five-level", action="store_true", help="5-level paging (LA57)")
    parser.add_argument(
        "--no-pwc", action="store_true", help="no paging-structure caches: every walk from CR3"
    )
    parser.add_argument("--engine", choices=ENGINES, default="fast", help="engine (same counts)")
    parser.add_argument(
        "--sweep", action="store_true", help="compare CPUs, page sizes, 5-level, no PWC"
    )
    parser.add_argument("--no-huge", action="store_true", help="skip the 2 MiB comparison pass")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="PNG: with --sweep a bar chart of the configurations, else miss rate over the "
        "trace and hit rate against working-set size",
    )
    parser.add_argument("--no-color", action="store_true", help="plain text, no colours")
    parser.set_defaults(markup=True)


def _progress(args: argparse.Namespace) -> Progress | None:
    errors = Console(stderr=True, no_color=args.no_color, highlight=False)
    if args.json or not errors.is_terminal:
        return None
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the passes the options ask for and report them."""
    path: Path = args.trace
    if not path.exists():
        raise CliError(f"{path}: No such file or directory")
    if path.is_dir():
        raise CliError(f"{path}: is a directory, not a trace")
    base = Config(args.cpu, args.page_size, args.five_level, not args.no_pwc)
    if args.sweep:
        configs = sweep_configs(base)
    elif args.no_huge or args.page_size != "4K":
        configs = [base]
    else:
        configs = [base, Config(args.cpu, "2M", args.five_level, not args.no_pwc)]
    maps: Path | None = args.maps
    strace: Path | None = args.strace
    auto = False
    if strace is None and not args.no_strace:
        strace = beside(path, ".strace")
        auto = strace is not None
        if auto and maps is None:
            maps = beside(path, ".maps")
    progress = _progress(args)
    with progress if progress is not None else nullcontext():
        results, kept, windows, layout = run_passes(
            path,
            args.format,
            configs,
            engine=args.engine,
            maps=maps,
            progress=progress,
            windows=args.plot is not None and not args.sweep,
            strace=strace,
        )
    estimated = layout.estimated
    main = results[0]
    huge = None
    if args.sweep:
        huge = next((r for r in results if r.page_size == "2M" and r.cpu.name == args.cpu), None)
    elif len(results) == 2:
        huge = results[1]
    notes = [layout_line(layout, maps, strace, auto), *layout.notes]
    notes += _notes(main, estimated, kept, maps is not None or strace is not None)
    if args.plot is not None:
        if args.sweep:
            sweep_chart(args.plot, results, f"{path.name}: translation by configuration")
        else:
            draw_trace_plot(args.plot, windows, f"{path.name}: {main.label}")
    if args.json:
        out: dict[str, Any] = {"trace": str(path), **summary(main)}
        out["layout_estimated"] = estimated
        out["layout"] = {
            "source": layout.source,
            "maps": None if maps is None else str(maps),
            "strace": None if strace is None else str(strace),
            "strace_calls": layout.strace_calls,
            "found_next_to_trace": auto,
        }
        out["huge_2M"] = None if huge is None else summary(huge)
        if args.sweep:
            out["sweep"] = [summary(r) for r in results]
        out["notes"] = notes
        write_json(out)
        return 0
    render(console, str(path), main, huge, notes)
    if args.sweep:
        console.print()
        console.print(sweep_table(results))
    return 0


def layout_line(layout: Layout, maps: Path | None, strace: Path | None, auto: bool) -> str:
    """Where the mappings came from (the report's layout line)."""
    found = " (found next to the trace: vmsim record's output)" if auto else ""
    if strace is not None:
        what = f"{strace} replayed ({layout.strace_calls:,} memory calls)"
        if maps is not None:
            return f"layout: {what} over the snapshot {maps}{found}"
        return f"layout: {what}{found}; no maps snapshot"
    if maps is not None:
        return f"layout: the maps snapshot {maps}"
    return "layout: inferred from the trace"


def _notes(main: PassResult, estimated: bool, kept: bool, given: bool) -> list[str]:
    notes = []
    if not given:
        notes.append(
            "layout estimated: no --maps or --strace given, each touched region is mapped as "
            "private anonymous memory"
        )
    elif estimated:
        notes.append(
            "layout estimated in part: the trace touched memory the snapshot and the log do "
            "not map (mapped as private anonymous memory)"
        )
    if main.counters.instructions == 0:
        notes.append(
            "the trace has no instruction records: total cycles count memory time only, "
            "and MPKI is undefined"
        )
    if not kept:
        notes.append("the trace was read again for every pass (too long to keep in memory)")
    return notes


__all__ = [
    "Config",
    "open_trace",
    "register",
    "run",
    "run_passes",
    "sweep_configs",
]
