"""``vmsim estimate PID``: how much RAM KSM and zswap would save on a live process, from the
real contents of its anonymous pages (read as root from /proc/PID/pagemap and /proc/PID/mem).

Only statistics are shown, never page contents. The command parses, calls
:func:`vmsim.analysis.estimate.estimate`, and renders the result: rich tables, or one JSON
object with --json. A progress bar goes to stderr while pages are read and compressed.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

import vmsim
from vmsim.analysis.classify import human_size
from vmsim.analysis.estimate import (
    STAGE_PAGEMAP,
    STAGE_PAGES,
    EstimateError,
    EstimateResult,
    ProcessExitedError,
    ProgressFn,
    estimate,
    parse_range,
)
from vmsim.cli.commands import add_command, add_json_and_color
from vmsim.cli.errors import CliError, UsageError
from vmsim.cli.render import write_json
from vmsim.constants import PAGE_SIZE

COMPRESSORS = vmsim.Machine.ZSWAP_COMPRESSORS  # the names analysis.estimate accepts

STAGE_TITLES = {
    STAGE_PAGEMAP: "finding present pages (pagemap)",
    STAGE_PAGES: "reading and compressing pages",
}


def parse_compressors(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise UsageError("--compressors: give at least one of " + ", ".join(COMPRESSORS))
    for n in names:
        if n not in COMPRESSORS:
            raise UsageError(
                f"--compressors: unknown compressor {n!r} (use {', '.join(COMPRESSORS)})"
            )
    return tuple(dict.fromkeys(names))


def _pages(n: int) -> str:
    return f"{n:,} ({human_size(n * PAGE_SIZE)})"


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def _header(r: EstimateResult) -> str:
    who = f"PID {r.pid}" + (f" ({escape(r.comm)})" if r.comm else "")
    where = ""
    if r.ranges is not None:
        where = " within " + ", ".join(f"{lo:#x}-{hi:#x}" for lo, hi in r.ranges)
    vmas = "1 VMA" if r.vmas == 1 else f"{r.vmas:,} VMAs"
    return (
        f"[bold]{who}[/bold]: {r.present_pages:,} present private anonymous pages in "
        f"{vmas}{where}; scanned [bold]{_pages(r.stats.pages)}[/bold] in {r.seconds:.2f}s"
    )


def _pages_table(r: EstimateResult) -> Table:
    s = r.stats
    table = Table(title="Pages", title_justify="left")
    table.add_column("what")
    table.add_column("pages", justify="right")
    table.add_column("note", style="dim")
    table.add_row("scanned", _pages(s.pages), "present, private anonymous, read")
    table.add_row("  all-zero", f"{s.zero_pages:,}", _percent(s.zero_pages, s.pages))
    zero_note = "no RAM: not read"
    if not r.zero_page_detection:
        zero_note = "not detected (/proc/kpageflags unreadable): read as all-zero pages"
    table.add_row("mapped to the shared zero page", f"{r.zero_page_mapped:,}", zero_note)
    if r.truncated:
        table.add_row(
            "not scanned (--max-pages)",
            _pages(r.present_pages - r.stats.pages - r.vanished_pages),
            "present, after the first --max-pages in address order",
        )
    table.add_row("swapped out", _pages(r.swapped_pages), "not read (it would swap them in)")
    if r.vanished_pages:
        table.add_row("vanished", f"{r.vanished_pages:,}", "unmapped before they could be read")
    table.add_row(
        "skipped: file-backed, resident",
        _pages(r.file_pages),
        f"{r.file_anon_pages:,} of them anonymous copies (COW)"
        if r.file_anon_pages
        else "page cache",
    )
    table.add_row("skipped: shared, resident", _pages(r.shared_pages), "shmem, SysV, memfd")
    return table


def _what_table(title: str, values: list[str]) -> Table:
    """A table of figures: a "what" column, one right-aligned column per name in
    ``values``, and a dim "note" column."""
    table = Table(title=title, title_justify="left")
    table.add_column("what")
    for name in values:
        table.add_column(name, justify="right")
    table.add_column("note", style="dim")
    return table


def _ksm_table(r: EstimateResult) -> Table:
    k = r.stats.ksm
    table = _what_table(
        "KSM, if every scanned page were MADV_MERGEABLE (merging within this process)", ["value"]
    )
    table.add_row("non-zero pages", f"{k.nonzero_pages:,}", "")
    table.add_row("distinct contents", f"{k.distinct:,}", "")
    table.add_row("pages_shared", f"{k.pages_shared:,}", "KSM pages: contents seen twice or more")
    table.add_row("pages_sharing", f"{k.pages_sharing:,}", "mappings merged into them: pages saved")
    table.add_row("pages_unshared", f"{k.pages_unshared:,}", "contents seen once")
    table.add_row(
        "[bold]saved[/bold]",
        f"[bold]{human_size(k.saved_bytes)}[/bold]",
        _percent(k.pages_sharing, r.stats.pages) + " of the scanned pages",
    )
    table.add_section()
    table.add_row(
        "zero pages",
        f"{k.zero_pages:,}",
        "KSM use_zero_pages would map them to the zero page",
    )
    table.add_row(
        "  saved, use_zero_pages=1",
        human_size(k.zero_saved_bytes),
        "each zero page freed",
    )
    table.add_row(
        "  saved, use_zero_pages=0",
        human_size(k.zero_saved_bytes_merged),
        "they merge into one KSM page",
    )
    return table


def _ksmd_table(r: EstimateResult) -> Table:
    d = r.stats.ksmd
    k = r.stats.ksm
    table = _what_table(
        "KSM as Linux 6.18's ksmd runs it with its defaults, beside the ideal above "
        "(pages_to_scan 100, sleep 20 ms, max_page_sharing 256, use_zero_pages 0)",
        ["ksmd defaults", "ideal"],
    )
    if d is None:
        return table
    ideal_sharing = k.pages_sharing + max(k.zero_pages - 1, 0)
    ideal_shared = k.pages_shared + (1 if k.zero_pages > 1 else 0)
    table.add_row("pages_shared", f"{d.pages_shared:,}", f"{ideal_shared:,}", "KSM pages")
    table.add_row(
        "pages_sharing",
        f"{d.pages_sharing:,}",
        f"{ideal_sharing:,}",
        "a KSM page takes at most 256 mappings; zero pages merge like any page",
    )
    table.add_row("pages_unshared", f"{d.pages_unshared:,}", "", "left alone in the unstable tree")
    table.add_row(
        "stable_node_chains / dups",
        f"{d.stable_node_chains:,} / {d.stable_node_dups:,}",
        "",
        "contents needing more than one KSM page",
    )
    table.add_row(
        "[bold]saved[/bold]",
        f"[bold]{human_size(d.saved_bytes)}[/bold]",
        human_size(ideal_sharing * 4096),
        f"general_profit {d.general_profit:,} bytes (less 64 bytes per rmap_item)",
    )
    table.add_row(
        "reached after",
        f"{d.passes} full scans",
        "",
        f"{d.wakeups:,} wake-ups, at least {d.seconds:,.1f} s of ksmd sleeps",
    )
    return table


def _zswap_table(r: EstimateResult) -> Table:
    zs = r.stats.zswap
    table = _what_table(
        "zswap (Linux 6.18), if every scanned page were swapped out (zsmalloc size classes)",
        [z.compressor for z in zs],
    )

    def row(what: str, cells: list[str], note: str = "") -> None:
        table.add_row(what, *cells, note)

    row(
        "zero pages",
        [f"{z.zero_pages:,}" for z in zs],
        "swap zeromap: a bit each, no pool, no I/O",
    )
    row("stored", [f"{z.stored_pages:,}" for z in zs], "pages kept in the pool")
    row("  compressed", [f"{z.compressed_pages:,}" for z in zs], "below a page")
    row(
        "  stored as is",
        [f"{z.stored_incompressible_pages:,}" for z in zs],
        "not below a page: a whole page each",
    )
    row("stored size", [human_size(z.stored_bytes) for z in zs], "size classes summed")
    row(
        "ratio",
        ["-" if z.ratio is None else f"{z.ratio:.2f}" for z in zs],
        "original / stored",
    )
    row("pool", [f"{z.pool_pages:,}" for z in zs], "pages of RAM")
    row(
        "[bold]saved[/bold]",
        [f"[bold]{human_size(z.saved_bytes)}[/bold]" for z in zs],
        "zero and stored pages, less the pool",
    )
    row("time", [f"{z.seconds:.2f}s" for z in zs], "compressing")
    return table


def render(console: Console, r: EstimateResult) -> None:
    console.print(_header(r))
    if r.truncated:
        console.print(
            f"[yellow]truncated:[/yellow] --max-pages {r.max_pages:,}: scanned the first "
            f"{r.stats.pages:,} of {r.present_pages:,} present pages, in address order"
        )
    console.print(_pages_table(r))
    console.print(_ksm_table(r))
    console.print(_ksmd_table(r))
    console.print(_zswap_table(r))


@contextmanager
def progress_bar(enabled: bool, no_color: bool) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr, one task per stage; None when disabled."""
    if not enabled:
        yield None
        return
    errors = Console(stderr=True, no_color=no_color, highlight=False)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(STAGE_TITLES.get(stage, stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield update


def register(subparsers: Any) -> None:
    """Add ``estimate`` to the ``vmsim`` subcommands."""
    parser = add_command(
        subparsers,
        "estimate",
        "what KSM and zswap would save on a live process (reads its pages; root)",
        __doc__,
        run,
    )
    parser.add_argument("pid", type=int, metavar="PID", help="the process to read")
    parser.add_argument(
        "--compressors",
        default=",".join(COMPRESSORS),
        metavar="LIST",
        help=f"comma-separated, of {', '.join(COMPRESSORS)} (default: all)",
    )
    parser.add_argument(
        "--max-pages",
        type=int,
        metavar="N",
        help="read at most N pages, the first in address order (for huge processes)",
    )
    parser.add_argument(
        "--range",
        action="append",
        dest="ranges",
        metavar="START-END",
        help="only pages in this address range, hex, END exclusive (repeatable)",
    )
    add_json_and_color(parser)


def run(args: argparse.Namespace, console: Console) -> int:
    pid: int = args.pid
    if pid < 1:
        raise UsageError(f"PID must be positive, got {pid}")
    if args.max_pages is not None and args.max_pages < 1:
        raise UsageError(f"--max-pages must be positive, got {args.max_pages}")
    compressors = parse_compressors(args.compressors)
    ranges: list[tuple[int, int]] | None = None
    if args.ranges:
        try:
            ranges = [parse_range(text) for text in args.ranges]
        except ValueError as exc:
            raise UsageError(f"--range: {exc}") from None
    try:
        with progress_bar(not args.json, bool(args.no_color)) as progress:
            result = estimate(pid, compressors, args.max_pages, progress, ranges)
    except ProcessExitedError:
        raise CliError(f"PID {pid} exited while its memory was being read") from None
    except ProcessLookupError:
        raise CliError(f"no process with PID {pid}") from None
    except PermissionError as exc:
        raise CliError(exc.strerror or f"PID {pid}: permission denied") from None
    except EstimateError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # anything else the kernel says while reading /proc/PID
        raise CliError(f"PID {pid}: {exc.strerror or exc}") from None
    if args.json:
        write_json(result.as_dict())
    else:
        render(console, result)
    return 0


__all__ = ["parse_compressors", "register", "render", "run"]
