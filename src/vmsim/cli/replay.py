"""``vmsim replay TRACE``: replay a recorded strace (or ltrace -S) log through the model and
explain the VMA budget: peak map_count, the first call that fails at a limit and why, the
smallest vm.max_map_count that lets the whole trace succeed, and who creates the VMAs."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vmsim.cli import options as cli_options
from vmsim.cli.commands import add_command, add_json_and_color
from vmsim.cli.errors import (
    EXIT_LIMIT,
    EXIT_NO_INPUT,
    EXIT_STATUS_HELP,
    CliError,
    ResultStatus,
    UsageError,
)
from vmsim.cli.plot import figure
from vmsim.cli.render import write_json
from vmsim.constants import DEFAULT_MAX_MAP_COUNT
from vmsim.errors import (
    CAUSE_ADDRESS_SPACE,
    CAUSE_MAP_COUNT,
    CAUSE_OVERCOMMIT,
    CAUSE_RLIMIT_AS,
    CAUSE_RLIMIT_DATA,
)
from vmsim.fastlane.stream import lane_events, lane_may_take
from vmsim.trace import (
    detect_format,
    open_trace,
    read_ltrace,
    read_strace_files,
    read_strace_stream,
)
from vmsim.trace.replay import ReplayError, ReplayReport, replay

VERDICTS = {
    CAUSE_MAP_COUNT: "the process reached vm.max_map_count: the call had to create a VMA "
    "(a split, or a new mapping) and the kernel refused. RAM is irrelevant.",
    CAUSE_OVERCOMMIT: "the overcommit policy refused to commit the memory "
    "(vm.overcommit_memory / CommitLimit), not the VMA count.",
    CAUSE_RLIMIT_AS: "RLIMIT_AS (ulimit -v) caps the process's total mapped size.",
    CAUSE_RLIMIT_DATA: "RLIMIT_DATA (ulimit -d) caps private writable mappings.",
    CAUSE_ADDRESS_SPACE: "no free range of that size is left in the address space.",
}


def register(subparsers: Any) -> None:
    """Add ``replay`` to the ``vmsim`` subcommands."""
    parser = add_command(
        subparsers,
        "replay",
        "replay an strace log through the model: VMA budget and ENOMEM verdicts",
        __doc__,
        run,
        epilog=EXIT_STATUS_HELP,
    )
    parser.add_argument(
        "trace",
        nargs="+",
        type=Path,
        help="strace output (-o FILE; several files for -ff; .gz accepted) or ltrace -S; "
        "'-' (or a pipe) reads standard input",
    )
    parser.add_argument(
        "--max-map-count",
        type=cli_options.map_count(0),
        default=DEFAULT_MAX_MAP_COUNT,
        metavar="N",
        help=f"vm.max_map_count to replay at, 0..2**31-1 (default {DEFAULT_MAX_MAP_COUNT})",
    )
    parser.add_argument(
        "--from-maps",
        action="append",
        metavar="[PID=]SNAPSHOT",
        help="start from this maps/smaps snapshot; for a trace of several processes attached "
        "together (strace -f -p A -p B), one PID=SNAPSHOT per process",
    )
    parser.add_argument(
        "--cwd",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="resolve the traced program's relative paths here (for execve)",
    )
    parser.add_argument(
        "--exe",
        type=Path,
        metavar="BINARY",
        help="the traced program's binary, for its first execve (else the path in the trace, "
        "resolved against --cwd)",
    )
    parser.add_argument(
        "--overcommit-memory",
        type=int,
        choices=(0, 1, 2),
        default=0,
        metavar="MODE",
        help="vm.overcommit_memory of the traced machine: 0 heuristic (default), 1 always, "
        "2 never (CommitLimit = RAM * ratio + swap)",
    )
    parser.add_argument(
        "--ram",
        type=cli_options.ram_size,
        default="16G",
        help="RAM of the traced machine, e.g. 64G (default 16G): with overcommit 0 a private "
        "writable mapping larger than RAM + swap fails",
    )
    parser.add_argument(
        "--swap",
        type=cli_options.swap_size,
        default="0",
        help="swap of the traced machine: 0 (default) or 8K..16T",
    )
    parser.add_argument(
        "--rlimit-as", type=cli_options.rlimit_size, metavar="SIZE", help="RLIMIT_AS to apply"
    )
    parser.add_argument(
        "--rlimit-data", type=cli_options.rlimit_size, metavar="SIZE", help="RLIMIT_DATA to apply"
    )
    parser.add_argument(
        "--no-recorded-addresses",
        action="store_true",
        help="place mappings where the model chooses, not where the trace shows",
    )
    parser.add_argument(
        "--no-written-range",
        action="store_true",
        help="skip the second replay (as if every writable private VMA was written) that "
        "gives peak_map_count_range: about half the time",
    )
    parser.add_argument("--strict", action="store_true", help="a malformed line is fatal")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="write a plot of map_count over the trace: a .png, .svg or .pdf file (default: "
        "TRACE.map_count.png; none for standard input or a pipe)",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    add_json_and_color(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--engine",
        choices=("auto", "python", "lane"),
        default="auto",
        help="how to replay: 'python' (the model as it is written), 'lane' (the same model "
        "compiled for runs of mprotect/munmap lines: the same report, faster on long traces, "
        "after ~0.6 s of start-up), 'auto' (the lane for a single strace file of at least "
        f"{LANE_AUTO_BYTES >> 20} MiB, uncompressed, without -ttt/-r timestamps or -k frames; "
        "default)",
    )
    # nothing this command prints is markup: user text (trace lines, paths) prints as is
    parser.set_defaults(markup=False)


PLOT_FORMATS = (".png", ".svg", ".pdf")
# --engine auto: a trace this long (~50,000 lines) pays back the lane's start-up (loading its
# compiled code: about 0.6 s here, against ~11 us saved per line it takes), if its calls
# carry no -ttt/-r timestamps and no -k frames (the lane takes neither yet)
LANE_AUTO_BYTES = 4 << 20


def _events(paths: list[Path], progress: Progress | None, engine: str = "python") -> Iterator[Any]:
    """The events of the trace file(s), advancing the progress bar as lines are read; an
    input that cannot be read or decompressed ends the command with its name. ``engine``
    "lane": a single strace file is read with the fast lane's runs (vmsim.fastlane)."""
    try:
        yield from _read_events(paths, progress, engine)
    except (OSError, EOFError, zlib.error) as e:
        where = getattr(e, "filename", None) or (paths[0] if len(paths) == 1 else "trace")
        what = getattr(e, "strerror", None) or str(e) or type(e).__name__
        if isinstance(e, EOFError | zlib.error | gzip.BadGzipFile):
            what = f"corrupt or truncated gzip data ({what})"
        raise CliError(f"{where}: {what}") from e


def _uncompressed_size(path: Path) -> int:
    """The trace's size once decompressed: a .gz file's ISIZE (its last four bytes: the size
    modulo 2**32), else the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(2) != b"\x1f\x8b" or size < 18:
            return size
        fh.seek(-4, 2)
        return max(size, int.from_bytes(fh.read(4), "little"))


def _read_events(paths: list[Path], progress: Progress | None, engine: str) -> Iterator[Any]:
    if len(paths) > 1 or paths[0].is_dir():
        files = sorted(paths[0].iterdir()) if paths[0].is_dir() else paths
        yield from read_strace_files(files)
        return
    path = paths[0]
    try:
        fh = open_trace(path)
    except OSError as e:
        raise CliError(f"{path}: {e.strerror or e}") from e
    with fh:
        total = max(1, path.stat().st_size)
        task = progress.add_task(path.name, total=total) if progress is not None else None

        def lines() -> Iterator[str]:
            for n, line in enumerate(fh, 1):
                if task is not None and progress is not None and n % 8192 == 0:
                    raw = getattr(fh, "buffer", None)
                    pos = raw.tell() if raw is not None and hasattr(raw, "tell") else 0
                    progress.update(task, completed=min(pos, total))
                yield line
            if task is not None and progress is not None:
                progress.update(task, completed=total)

        def block_read() -> None:
            if task is not None and progress is not None:
                raw = getattr(fh, "buffer", None)
                pos = raw.tell() if raw is not None and hasattr(raw, "tell") else 0
                progress.update(task, completed=min(pos, total))

        it = lines()
        head = list(itertools.islice(it, 20))
        if detect_format(head) == "ltrace":
            yield from read_ltrace(itertools.chain(head, it))
        elif engine == "lane" or (
            engine == "auto" and _uncompressed_size(path) >= LANE_AUTO_BYTES and lane_may_take(head)
        ):
            size = max(1, _uncompressed_size(path))
            if task is not None and progress is not None:
                progress.update(task, total=size, completed=0)

            def done(n: int) -> None:
                if task is not None and progress is not None:
                    progress.update(task, completed=min(n, size))

            yield from lane_events(path, on_block=done)
            if task is not None and progress is not None:
                progress.update(task, completed=size)
        else:
            # the rest in blocks of lines (read_strace_stream: the same events, faster)
            yield from read_strace_stream(fh, head, on_block=block_read)
            if task is not None and progress is not None:
                progress.update(task, completed=total)


def _task_files(paths: list[Path]) -> dict[int, str]:
    """-ff: the file of each task (its pid is the file's suffix), for file:line locations."""
    if len(paths) == 1 and not paths[0].is_dir():
        return {}
    files = sorted(paths[0].iterdir()) if paths[0].is_dir() else paths
    out = {}
    for f in files:
        m = re.search(r"\.(\d+)(?:\.gz)?$", f.name)
        if m:
            out[int(m.group(1))] = f.name
    return out


def _spool(path: Path, stack: contextlib.ExitStack) -> Path:
    """Standard input (``-``) or a pipe copied to a temporary file: the trace is read twice
    (at the limit and unlimited), and sniffing its format must lose nothing."""
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="vmsim-replay-"))
    copy = Path(tmp) / "stdin"
    with open(copy, "wb") as out:
        if str(path) == "-":
            shutil.copyfileobj(sys.stdin.buffer, out)
        else:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, out)
    return copy


def _check_inputs(args: argparse.Namespace) -> None:
    """Every named input exists and has the right kind, before anything is replayed."""
    for p in args.trace:
        if str(p) != "-" and not p.exists():
            raise CliError(f"{p}: no such file")
    if str(args.trace[0]) == "-" and len(args.trace) > 1:
        raise UsageError("'-' (standard input) must be the only trace")
    if args.exe is not None:
        if not args.exe.exists():
            raise CliError(f"--exe {args.exe}: no such file")
        if not args.exe.is_file():
            raise CliError(f"--exe {args.exe}: not a regular file")
    if not args.cwd.exists():
        raise CliError(f"--cwd {args.cwd}: no such directory")
    if not args.cwd.is_dir():
        raise CliError(f"--cwd {args.cwd}: not a directory")
    if args.plot is not None and args.plot.suffix.lower() not in PLOT_FORMATS:
        raise UsageError(f"--plot {args.plot}: the file name must end in {', '.join(PLOT_FORMATS)}")


def _read_maps(path: Path) -> str:
    """A --from-maps snapshot: UTF-8 text, else a clear error."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CliError(f"--from-maps {path}: {e.strerror}") from e
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise CliError(
            f"--from-maps {path}: not a maps/smaps text file (byte {data[e.start]:#04x} at "
            f"offset {e.start:,} is not UTF-8)"
        ) from None


def run(args: argparse.Namespace, console: Console) -> int:
    _check_inputs(args)
    first = args.trace[0]
    name = "stdin" if str(first) == "-" else first.name
    with contextlib.ExitStack() as stack:
        if str(first) == "-" or not (first.is_file() or first.is_dir()):  # stdin, a pipe
            args.trace = [_spool(first, stack)]
            if args.plot is None:
                args.no_plot = True  # no file to put a plot next to
        return _run(args, console, name)


def _from_maps(values: list[str]) -> str | dict[int, str]:
    """--from-maps: one SNAPSHOT (the trace's first process), or PID=SNAPSHOT for each of
    several attached processes."""
    if len(values) == 1 and (Path(values[0]).exists() or "=" not in values[0]):
        return _read_maps(Path(values[0]))
    out: dict[int, str] = {}
    for value in values:
        pid, sep, path = value.partition("=")
        if not sep or not pid.isdigit() or not path:
            raise UsageError(
                f"--from-maps {value}: with several snapshots each must be PID=FILE "
                "(the pid of the process it was taken from)"
            )
        if int(pid) in out:
            raise UsageError(f"--from-maps {value}: pid {pid} given twice")
        out[int(pid)] = _read_maps(Path(path))
    return out


def _run(args: argparse.Namespace, console: Console, name: str) -> int:
    from_maps = None
    if args.from_maps:
        from_maps = _from_maps(args.from_maps)
    files = _task_files(args.trace)
    options: dict[str, Any] = {
        "files": files,
        "from_maps": from_maps,
        "cwd": args.cwd,
        "exe": args.exe,
        "use_recorded_addresses": not args.no_recorded_addresses,
        "strict": args.strict,
        "machine_options": {
            "overcommit_memory": args.overcommit_memory,
            "ram": args.ram,
            "swap": args.swap,
            "rlimit_as": args.rlimit_as,
            "rlimit_data": args.rlimit_data,
        },
    }
    engine = args.engine
    if len(args.trace) > 1 or args.trace[0].is_dir():
        engine = "python"  # -ff files: the lane reads one file (the report says the same)
    show_progress = not (args.json or args.no_progress) and console.is_terminal
    try:
        if show_progress:
            with Progress(
                TextColumn("replaying {task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            ) as progress:
                report = replay(
                    lambda: _events(args.trace, progress, engine),
                    max_map_count=args.max_map_count,
                    written_range=not args.no_written_range,
                    **options,
                )
        else:
            report = replay(
                lambda: _events(args.trace, None, engine),
                max_map_count=args.max_map_count,
                written_range=not args.no_written_range,
                **options,
            )
    except ReplayError as e:
        raise CliError(str(e)) from e
    except ValueError as e:
        raise CliError(str(e)) from e
    plot_path = None
    if not args.no_plot:
        plot_path = args.plot or args.trace[0].with_name(args.trace[0].name + ".map_count.png")
        plot(report, plot_path, name)
    if args.json:
        data = report.to_json()
        data["plot"] = str(plot_path) if plot_path else None
        write_json(data)
    else:
        render(report, console, plot_path)
    if not report.calls:
        raise ResultStatus(EXIT_NO_INPUT)
    if report.first_failure is not None:
        raise ResultStatus(EXIT_LIMIT)
    return 0


def verdict(report: ReplayReport) -> str:
    f = report.first_failure
    if f is None and report.failures_anyway:
        return (
            "no call failed because of a limit; the calls that failed in the trace too fail "
            "at any limit (see 'failed as recorded')"
        )
    if f is None:
        return "no call failed in the model at this limit"
    why = VERDICTS.get(f.cause or "", "the kernel's argument checks refused it")
    return f"{f.call} failed with {f.errno} at {f.where}: {why}"


def render(report: ReplayReport, console: Console, plot_path: Path | None) -> None:
    t = Table(title="vmsim replay", show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    t.add_row("calls replayed", f"{report.calls:,} (of {report.lines:,} lines)")
    t.add_row("processes", f"{report.processes:,} (the first program, each fork, each execve)")
    t.add_row("malformed lines", f"{len(report.problems):,}")
    t.add_row("dropped (not replayed)", f"{report.dropped_count:,}")
    t.add_row("divergences", f"{len(report.divergences):,}")
    t.add_row(
        "peak map_count",
        f"{report.peak_map_count:,} at line {report.peak_line}"
        + (f" (pid {report.peak_pid})" if report.peak_pid is not None else ""),
    )
    rng = report.peak_map_count_range
    if rng is not None:
        t.add_row(
            "peak if nothing / all was written",
            f"{rng[0]:,} .. {rng[1]:,} ({report.write_dependent_calls:,} calls depend on "
            "writes strace cannot show)",
        )
    t.add_row("max_map_count", f"{report.max_map_count:,}")
    t.add_row("smallest limit that succeeds", f"{report.min_max_map_count:,}")
    if report.placements:
        pct = 100 * report.placements_agreed / report.placements
        t.add_row(
            "model placement agreed",
            f"{report.placements_agreed:,} of {report.placements:,} ({pct:.0f}%)",
        )
    t.add_row("verdict", verdict(report))
    if report.failures_anyway:
        t.add_row(
            "failed as recorded",
            f"{len(report.failures_anyway):,} calls failed in the trace too, at any limit "
            f"(first: {report.failures_anyway[0].call} {report.failures_anyway[0].errno} at "
            f"{report.failures_anyway[0].where})",
        )
    if report.first_failure is not None and report.first_failure.detail:
        t.add_row("kernel check", report.first_failure.detail)
    console.print(t)
    if report.vmas_by_cause:
        c = Table(title="VMAs created, by cause", title_justify="left")
        c.add_column("cause")
        c.add_column("VMAs", justify="right")
        for cause, n in report.vmas_by_cause.most_common():
            c.add_row(cause, f"{n:,}")
        console.print(c)
    if report.vmas_by_site:
        s = Table(title="VMAs created, by call site (-k stacks)", title_justify="left")
        s.add_column("call site")
        s.add_column("VMAs", justify="right")
        for site, n in report.vmas_by_site.most_common(10):
            s.add_row(site, f"{n:,}")
        console.print(s)
    for d in report.divergences[:10]:
        console.print(
            f"{d.where}: {d.call}: recorded {d.recorded}, model {d.model} ({d.why})",
            markup=False,
        )
    if len(report.divergences) > 10:
        console.print(f"... {len(report.divergences) - 10:,} more divergences (see --json)")
    for dropped in report.dropped[:10]:
        console.print(f"dropped {dropped.where}: {dropped.reason}", markup=False)
    if report.dropped_count > 10:
        console.print(f"... {report.dropped_count - 10:,} more dropped (see --json)")
    for note in report.estimates:
        console.print(f"note: {note}", markup=False)
    if plot_path is not None:
        console.print(f"plot: {plot_path}", markup=False)


def y_limit(peak: int, limit: int) -> float:
    """The plot's y-axis top: the data with 10% headroom, or the limit when the data come
    within half of it (then the limit line is in view)."""
    if peak >= limit / 2:
        return limit * 1.05
    return max(peak * 1.1, 10)


def plot(report: ReplayReport, path: Path, title: str) -> None:
    """map_count over the trace lines, the limit when in view, the first failure."""
    with figure(path, (9, 4)) as (_fig, ax):
        xs = [s[0] for s in report.series]
        ys = [s[2] for s in report.series]
        ax.step(xs, ys, where="post", color="tab:blue", label="map_count")
        top = max(ys, default=0)
        ax.set_ylim(0, y_limit(top, report.max_map_count))
        if report.max_map_count <= y_limit(top, report.max_map_count):
            # drawn only when in view: a 200-VMA program under a 65,530 limit is a flat line
            ax.axhline(report.max_map_count, color="tab:red", linestyle="--", label="max_map_count")
        f = report.first_failure
        if f is not None:
            ax.axvline(f.lineno, color="tab:orange", linestyle=":", label=f"first {f.errno}")
        ax.set_xlabel("trace line")
        ax.set_ylabel("VMAs (map_count)")
        ax.set_title(f"map_count over {title}")
        ax.legend(loc="upper left")


__all__ = [
    "PLOT_FORMATS",
    "VERDICTS",
    "plot",
    "register",
    "render",
    "run",
    "verdict",
    "y_limit",
]
