"""``vmsim top``: every process on the machine by map_count, with its headroom under
vm.max_map_count, refreshing.

map_count is the number of lines of /proc/PID/maps minus the [vsyscall] line (the kernel has no
counter to read: field notes §0). Kernel threads have no address space and are not listed;
processes that exit while being read are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from vmsim.analysis import ProcessVmas, scan_processes, system_max_map_count
from vmsim.analysis.report import DANGER_PERCENT, WARNING_PERCENT
from vmsim.cli import options
from vmsim.cli.commands import add_command
from vmsim.cli.errors import UsageError
from vmsim.cli.render import write_json

DEFAULT_ROWS = 25
DEFAULT_INTERVAL = 2.0


@dataclass(frozen=True)
class TopRow:
    pid: int
    comm: str
    threads: int
    map_count: int
    percent: float  # of vm.max_map_count
    headroom: int


def snapshot(max_map_count: int, rows: int | None) -> tuple[list[TopRow], int]:
    """Processes by map_count, most first (ties by PID); ``rows`` None keeps them all.
    Returns the rows and how many processes were seen in total."""
    procs: list[ProcessVmas] = sorted(scan_processes(), key=lambda p: (-p.map_count, p.pid))
    shown = procs if rows is None else procs[:rows]
    return [
        TopRow(
            p.pid,
            p.comm,
            p.threads,
            p.map_count,
            100.0 * p.map_count / max_map_count,
            max_map_count - p.map_count,
        )
        for p in shown
    ], len(procs)


def top_json(rows: list[TopRow], total: int, max_map_count: int) -> dict[str, Any]:
    return {
        "max_map_count": max_map_count,
        "processes_seen": total,
        "processes": [
            {
                "pid": r.pid,
                "comm": r.comm,
                "threads": r.threads,
                "map_count": r.map_count,
                "percent": round(r.percent, 3),
                "headroom": r.headroom,
            }
            for r in rows
        ],
    }


def table(rows: list[TopRow], total: int, max_map_count: int, interval: float | None) -> Table:
    every = f", every {interval:g}s (Ctrl-C to quit)" if interval else ""
    t = Table(
        title=(
            f"Processes by map_count: {len(rows)} of {total} with an address space; "
            f"vm.max_map_count {max_map_count:,}{every}"
        ),
        title_justify="left",
    )
    t.add_column("PID", justify="right")
    t.add_column("command")
    t.add_column("threads", justify="right")
    t.add_column("map_count", justify="right")
    t.add_column("% of max", justify="right")
    t.add_column("headroom", justify="right")
    for r in rows:
        style = (
            "bold red"
            if r.percent >= DANGER_PERCENT
            else "yellow"
            if r.percent >= WARNING_PERCENT
            else ""
        )
        t.add_row(
            str(r.pid),
            escape(r.comm),
            f"{r.threads:,}",
            f"{r.map_count:,}",
            f"{r.percent:.1f}%",
            f"{r.headroom:,}",
            style=style,
        )
    return t


def register(subparsers: Any) -> None:
    """Add ``top`` to the ``vmsim`` subcommands."""
    parser = add_command(
        subparsers,
        "top",
        "every process by map_count, with headroom under vm.max_map_count",
        __doc__,
        run,
    )
    parser.add_argument(
        "--interval",
        type=options.interval,
        default=DEFAULT_INTERVAL,
        metavar="S",
        help=f"seconds between refreshes (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument("--once", action="store_true", help="one snapshot, then exit")
    parser.add_argument(
        "--json",
        action="store_true",
        help="JSON: one object with --once, else one line per refresh (JSON Lines)",
    )
    parser.add_argument(
        "-n",
        type=int,
        metavar="N",
        dest="rows",
        help=f"show the N processes with most VMAs (default {DEFAULT_ROWS}; all with --json)",
    )
    parser.add_argument(
        "--max-map-count",
        type=options.map_count(1),
        metavar="N",
        help="the limit to compare with, 1..2**31-1 (default: this machine's vm.max_map_count)",
    )
    parser.add_argument("--no-color", action="store_true", help="plain text, no colours")


def run(args: argparse.Namespace, console: Console) -> int:
    if args.interval <= 0:
        raise UsageError(f"--interval must be positive, got {args.interval:g}")
    if args.rows is not None and args.rows < 1:
        raise UsageError(f"-n must be positive, got {args.rows}")
    if args.max_map_count is not None and args.max_map_count < 1:
        raise UsageError(f"--max-map-count must be positive, got {args.max_map_count}")
    rows = args.rows if args.rows is not None or args.json else DEFAULT_ROWS

    def limit() -> int:  # re-read each refresh: root may change it meanwhile
        return args.max_map_count if args.max_map_count is not None else system_max_map_count()

    if args.once:
        lim = limit()
        shown, total = snapshot(lim, rows)
        if args.json:
            write_json(top_json(shown, total, lim))
        else:
            console.print(table(shown, total, lim, None))
        return 0
    try:
        if args.json:
            while True:
                lim = limit()
                shown, total = snapshot(lim, rows)
                sys.stdout.write(json.dumps(top_json(shown, total, lim)) + "\n")
                sys.stdout.flush()
                time.sleep(args.interval)
        lim = limit()
        with Live(
            table(*snapshot(lim, rows), lim, args.interval), console=console, auto_refresh=False
        ) as live:
            while True:
                time.sleep(args.interval)
                lim = limit()
                live.update(table(*snapshot(lim, rows), lim, args.interval), refresh=True)
    except KeyboardInterrupt:
        return 0  # quitting top is how top ends


__all__ = ["TopRow", "register", "run", "snapshot", "top_json"]
