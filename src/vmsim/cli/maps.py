"""``vmsim maps SNAPSHOT|PID``: what every VMA of a process is for, and how much room is left
under vm.max_map_count.

SNAPSHOT is a /proc/PID/maps or smaps file, ``-`` for stdin, or a JVM ``hs_err_pid*.log``
(its ``Dynamic libraries:`` maps dump and the max_map_count it prints); digits that name no
file are a live PID. The command parses, calls :mod:`vmsim.analysis`, and renders the report.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vmsim.analysis import Level, MapsReport, SnapshotInputError, analyze, read_snapshot
from vmsim.analysis.classify import ClassifiedVma, human_size
from vmsim.cli import maps_plot, options
from vmsim.cli.commands import add_command
from vmsim.cli.errors import EXIT_LIMIT, EXIT_STATUS_HELP, CliError, ResultStatus, UsageError
from vmsim.cli.render import write_json

TOP_FILES = 10
LEVEL_STYLE = {
    Level.OK: "bold green",
    Level.WARNING: "bold yellow",
    Level.DANGER: "bold red",
    Level.AT_LIMIT: "bold white on red",
}


def vma_json(v: ClassifiedVma) -> dict[str, Any]:
    return {
        "start": f"{v.start:#x}",
        "end": f"{v.end:#x}",
        "size": v.size,
        "perms": v.perms,
        "offset": v.offset,
        "name": v.name,
        "line": v.lineno,
        "kind": str(v.kind),
        "reason": v.reason,
        "owner": v.owner,
        "unit": v.unit,
        "counted": v.counted,
    }


def report_json(report: MapsReport, all_vmas: bool) -> dict[str, Any]:
    """The report as plain JSON values; the per-VMA list only with --all (it can be long)."""
    # asdict() would deep-copy every VMA only to drop them: convert field by field.
    data = {f.name: getattr(report, f.name) for f in fields(report) if f.name != "vmas"}
    data["projections"] = [asdict(p) for p in report.projections]
    data["notes"] = list(report.notes)
    data["verdict"] = {"level": str(report.verdict.level), "text": report.verdict.text}
    data["kinds"] = [{**asdict(k), "kind": str(k.kind)} for k in report.kinds]
    data["files"] = [{**asdict(f), "kind": str(f.kind)} for f in report.files]
    data["counts"] = {str(k.kind): k.vmas for k in report.kinds}
    if all_vmas:
        data["vmas"] = [vma_json(v) for v in report.vmas]
    return data


def _header(report: MapsReport) -> str:
    who = escape(report.source)
    if report.comm:
        who += f" ({escape(report.comm)})"
    if report.program:
        who += f"  [dim]{escape(report.program)}[/dim]"
    skipped = report.lines - report.map_count
    extra = f"; {skipped} line not counted: {escape('[vsyscall]')}" if skipped == 1 else ""
    if skipped > 1:
        extra = f"; {skipped} lines not counted"
    return (
        f"[bold]{who}[/bold]\n"
        f"map_count [bold]{report.map_count:,}[/bold] ({report.lines:,} lines in maps{extra})"
    )


def _kinds_table(report: MapsReport) -> Table:
    table = Table(title="VMAs by kind", title_justify="left")
    table.add_column("kind")
    table.add_column("VMAs", justify="right")
    table.add_column("share", justify="right")
    table.add_column("size", justify="right")
    table.add_column("units", justify="right")
    usage = any(k.rss_kb is not None for k in report.kinds)  # smaps input: pmap -x columns
    if usage:
        for col in ("RSS", "PSS", "swap"):
            table.add_column(col, justify="right")

    def kb(v: int | None) -> str:
        return human_size(v * 1024) if v is not None else ""

    for k in sorted(report.kinds, key=lambda k: -k.vmas):
        share = 100.0 * k.vmas / report.map_count if report.map_count else 0.0
        row = [
            f"{escape(k.title)} [dim]({k.kind})[/dim]",
            f"{k.vmas:,}",
            f"{share:.1f}%",
            human_size(k.bytes),
            f"{k.units:,}",
        ]
        if usage:
            row += [kb(k.rss_kb), kb(k.pss_kb), kb(k.swap_kb)]
        table.add_row(*row)
    table.add_section()
    total = ["[bold]total[/bold]", f"[bold]{report.map_count:,}[/bold]", "", "", ""]
    if usage:
        total += [
            kb(sum(k.rss_kb or 0 for k in report.kinds)),
            kb(sum(k.pss_kb or 0 for k in report.kinds)),
            kb(sum(k.swap_kb or 0 for k in report.kinds)),
        ]
    table.add_row(*total)
    return table


def _projection_table(report: MapsReport) -> Table:
    table = Table(
        title=f"What fits in the {max(report.headroom, 0):,} VMA(s) left, if only one thing grows",
        title_justify="left",
    )
    table.add_column("what")
    table.add_column("now", justify="right")
    table.add_column("VMAs each", justify="right")
    table.add_column("more that fit", justify="right")
    table.add_column("why", style="dim")
    for p in report.projections:
        table.add_row(p.what, f"{p.now:,}", str(p.vmas_each), f"{p.more_fit:,}", p.note)
    return table


def _files_table(report: MapsReport, limit: int | None) -> Table:
    shown = report.files if limit is None else report.files[:limit]
    title = "VMAs by file" if limit is None else f"Files with the most VMAs (top {len(shown)})"
    table = Table(title=title, title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("kind")
    table.add_column("VMAs", justify="right")
    table.add_column("size", justify="right")
    for f in shown:
        table.add_row(escape(f.path), str(f.kind), f"{f.vmas:,}", human_size(f.bytes))
    return table


def _vmas_table(report: MapsReport) -> Table:
    table = Table(title="Every VMA", title_justify="left")
    table.add_column("line", justify="right", style="dim")
    table.add_column("range", no_wrap=True)
    table.add_column("perms")
    table.add_column("size", justify="right")
    table.add_column("kind")
    table.add_column("reason", overflow="fold")
    table.add_column("name", overflow="fold", style="dim")
    for v in report.vmas:
        kind = str(v.kind) if v.counted else f"{v.kind} (not counted)"
        table.add_row(
            str(v.lineno),
            f"{v.start:x}-{v.end:x}",
            v.perms,
            human_size(v.size),
            kind,
            escape(v.reason),
            escape(v.name or ""),
        )
    return table


def render(console: Console, report: MapsReport, all_vmas: bool) -> None:
    console.print(_header(report))
    console.print(_kinds_table(report))
    style = LEVEL_STYLE[report.verdict.level]
    console.print(f"[{style}]{escape(report.verdict.text)}[/{style}]")
    console.print(
        f"vm.max_map_count {report.max_map_count:,} [dim](from "
        f"{escape(report.max_map_count_source)})[/dim], headroom {report.headroom:,}"
    )
    threads = (
        f"{report.threads:,} threads [dim]({escape(report.threads_source or '')})[/dim], "
        if report.threads is not None
        else ""
    )
    console.print(
        f"Threads: {threads}{report.thread_stacks:,} thread stacks recognised, "
        f"{report.vmas_per_thread} VMAs per thread: "
        f"[bold]{report.more_threads:,}[/bold] more threads fit"
    )
    console.print(
        f"glibc malloc arena heaps: {report.arena_heaps:,}, 2 VMAs each: "
        f"[bold]{report.more_arena_heaps:,}[/bold] more fit"
    )
    console.print(_projection_table(report))
    if report.files:
        console.print(_files_table(report, None if all_vmas else TOP_FILES))
    if all_vmas:
        console.print(_vmas_table(report))
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def register(subparsers: Any) -> None:
    """Add ``maps`` to the ``vmsim`` subcommands."""
    parser = add_command(
        subparsers,
        "maps",
        "classify the VMAs of a maps/smaps/hs_err snapshot or a live PID; headroom",
        __doc__,
        run,
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument(
        "snapshot",
        metavar="SNAPSHOT|PID",
        help="maps or smaps file, '-' for stdin, hs_err_pid*.log, or a PID",
    )
    parser.add_argument(
        "--max-map-count",
        type=options.map_count(1),
        metavar="N",
        help="the limit to compare with, 1..2**31-1 (default: the hs_err file's, else this "
        "machine's)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--all", action="store_true", help="also list every VMA with its kind")
    parser.add_argument("--no-color", action="store_true", help="plain text, no colours")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw the address space (PNG): VMAs by kind, gaps, landmarks, 4- vs 5-level",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    if args.max_map_count is not None and args.max_map_count < 1:
        raise UsageError(f"--max-map-count must be positive, got {args.max_map_count}")
    try:
        snapshot = read_snapshot(args.snapshot)
    except SnapshotInputError as exc:
        raise CliError(str(exc)) from exc
    report = analyze(snapshot, args.max_map_count)
    if args.plot is not None:
        maps_plot.draw(maps_plot.space_data(report.vmas), report.source, args.plot)
    if args.json:
        write_json(report_json(report, args.all))
    else:
        render(console, report, args.all)
    if report.verdict.level is Level.AT_LIMIT:
        raise ResultStatus(EXIT_LIMIT)
    return 0


__all__ = ["register", "report_json", "run"]
