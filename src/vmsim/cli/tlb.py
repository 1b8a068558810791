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
import importlib
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from vmsim.cli.commands import add_command
from vmsim.cli.errors import CliError
from vmsim.cli.render import write_json
from vmsim.memtrace.cpus import CPU_NAMES, DEFAULT_CPU, cpu_model
from vmsim.memtrace.records import Counters, CpuModel, TraceChunk, TraceError
from vmsim.memtrace.report import PassResult, Window, render, summary, sweep_chart, sweep_table
from vmsim.memtrace.report import trace_plot as draw_trace_plot

FORMATS = ("auto", "lackey", "pinatrace", "champsim", "npz")
PAGE_SIZES = ("4K", "2M", "1G", "thp")
ENGINES = ("fast", "reference")
IN_MEMORY_RECORDS = 32 << 20  # ~350 MB of chunk arrays at 11 bytes a record
PLOT_WINDOWS = 200  # windows of records in --plot

Chunks = Callable[[], Iterable[TraceChunk]]


@dataclass(frozen=True)
class Config:
    """One engine configuration: a pass over the trace."""

    cpu: str
    page_size: str
    five_level: bool = False
    pwc: bool = True


# --- the two calls into the readers and the engine (the only ones) -------------------------


def open_trace(path: Path, fmt: str) -> Iterator[TraceChunk]:
    """The trace's chunks, streamed by the readers."""
    readers = importlib.import_module("vmsim.memtrace.readers")  # until the readers merge
    chunks: Iterable[TraceChunk] = readers.open_memtrace(path, fmt)
    return iter(chunks)


def translate(
    chunks: Iterable[TraceChunk],
    cpu: CpuModel,
    *,
    layout: Any,
    page_size: str,
    five_level: bool,
    pwc: bool,
    engine: str,
) -> Counters:
    """One pass of the engine over ``chunks``."""
    engine_module = importlib.import_module("vmsim.memtrace.engine")  # until the engine merges
    counters: Counters = engine_module.run(
        chunks, layout, cpu, page_size=page_size, five_level=five_level, pwc=pwc, engine=engine
    )
    return counters


def load_layout(maps: Path | None) -> Any:
    """The address space the trace runs in: from a /proc/PID/maps snapshot, or None (the
    engine infers it from the touched regions and says so)."""
    if maps is None:
        return None
    layout_module = importlib.import_module("vmsim.memtrace.layout")  # until the engine merges
    try:
        text = maps.read_text(errors="replace")
    except OSError as e:
        raise CliError(f"{maps}: {e.strerror or e}") from e
    try:
        return layout_module.Layout.from_maps(text)
    except ValueError as e:
        raise CliError(f"{maps}: not a /proc/PID/maps snapshot: {e}") from e


# --- running passes ------------------------------------------------------------------------


class _Source:
    """The trace, in memory when it is short enough, else re-read for every pass."""

    def __init__(self, path: Path, fmt: str, progress: Progress | None) -> None:
        self.path = path
        self.fmt = fmt
        self.progress = progress
        self.kept: list[TraceChunk] | None = None

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

    def first_pass(self, label: str) -> Iterator[TraceChunk]:
        """The first pass: reads the file, keeping the chunks while they fit."""
        kept: list[TraceChunk] = []
        records = 0
        fits = True
        for chunk in self._read(label):
            if fits:
                records += len(chunk.addr)
                if records <= IN_MEMORY_RECORDS:
                    kept.append(chunk)
                else:
                    fits = False
                    kept = []
            yield chunk
        self.kept = kept if fits else None

    def again(self, label: str) -> Iterable[TraceChunk]:
        return self.kept if self.kept is not None else self._read(label)


def run_passes(
    path: Path,
    fmt: str,
    configs: Sequence[Config],
    *,
    engine: str,
    layout: Any,
    progress: Progress | None,
) -> tuple[list[PassResult], bool]:
    """Run every configuration over the trace; also say whether the trace was kept in memory."""
    source = _Source(path, fmt, progress)
    results: list[PassResult] = []
    for i, config in enumerate(configs):
        cpu = cpu_model(config.cpu)
        label = f"{config.cpu} {config.page_size}"
        chunks = source.first_pass(label) if i == 0 else source.again(label)
        counters = translate(
            chunks,
            cpu,
            layout=layout,
            page_size=config.page_size,
            five_level=config.five_level,
            pwc=config.pwc,
            engine=engine,
        )
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
    return results, source.kept is not None


def sweep_configs(base: Config) -> list[Config]:
    """The configurations ``--sweep`` compares: every CPU preset with 4 KiB, 2 MiB and THP
    pages, the chosen CPU with 1 GiB pages, with 5-level paging and without the PWC."""
    configs = [Config(cpu, size) for cpu in CPU_NAMES for size in ("4K", "2M", "thp")]
    configs.append(Config(base.cpu, "1G"))
    configs.append(Config(base.cpu, "4K", five_level=True))
    configs.append(Config(base.cpu, "4K", pwc=False))
    first = [c for c in configs if c == base]
    return first + [c for c in configs if c != base] if first else [base, *configs]


def _windows(results: PassResult) -> list[Window]:  # pragma: no cover - needs the engine API
    raise CliError("--plot needs the engine's per-window counters (not available yet)")


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
        "--maps", type=Path, metavar="SNAPSHOT", help="/proc/PID/maps snapshot of the run"
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
    layout = load_layout(args.maps)
    base = Config(args.cpu, args.page_size, args.five_level, not args.no_pwc)
    if args.sweep:
        configs = sweep_configs(base)
    elif args.no_huge or args.page_size != "4K":
        configs = [base]
    else:
        configs = [base, Config(args.cpu, "2M", args.five_level, not args.no_pwc)]
    progress = _progress(args)
    if progress is not None:
        with progress:
            results, kept = run_passes(
                path, args.format, configs, engine=args.engine, layout=layout, progress=progress
            )
    else:
        results, kept = run_passes(
            path, args.format, configs, engine=args.engine, layout=layout, progress=None
        )
    main = results[0]
    huge = results[1] if len(configs) == 2 else None
    if args.sweep:
        huge = next((r for r in results if r.page_size == "2M" and r.cpu.name == args.cpu), None)
    notes = _notes(main, layout, kept)
    if args.plot is not None:
        if args.sweep:
            sweep_chart(args.plot, results, f"{path.name}: translation by configuration")
        else:
            draw_trace_plot(args.plot, _windows(main), path.name)
    if args.json:
        out: dict[str, Any] = {"trace": str(path), **summary(main)}
        out["layout_estimated"] = layout is None
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


def _notes(main: PassResult, layout: Any, kept: bool) -> list[str]:
    notes = []
    if layout is None:
        notes.append(
            "layout estimated: no --maps given, each touched region is mapped as private "
            "anonymous memory"
        )
    if main.counters.instructions == 0:
        notes.append(
            "the trace has no instruction records: total cycles count memory time only, "
            "and MPKI is undefined"
        )
    if not kept:
        notes.append("the trace was read again for every pass (too long to keep in memory)")
    return notes


__all__ = ["Config", "open_trace", "register", "run", "run_passes", "sweep_configs", "translate"]
