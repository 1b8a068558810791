"""Replay speed: trace lines per second, end to end (read, parse, model, report).

Each real fixture in tests/fixtures/traces is repeated until the file has at least
--lines lines (1,000,000 by default), then replayed in-process as `vmsim replay` would,
timed with time.perf_counter. The parser alone is timed on the same file, so the table
shows where the time goes. Target (issue 11, item 4): at least 200,000 lines per second
for the split-only fill trace.

The fill trace is also replayed as recorded (one process, ~32,770 lines, the best of
--runs runs): that is the trace the target names. Repeated, it is a different workload:
31 processes that each hit the limit, so the unlimited replay (for min_max_map_count)
runs from the first repetition's failure to the end; as recorded, the limit is hit once.
The "passes" column says which replays ran: limited (always), unlimited (the trace hit the
limit), written (the peak_map_count_range replay, skipped when the limited replay proved
it could not differ).

.venv/bin/python benchmarks/replay_bench.py [--lines N] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vmsim.fastlane.stream import lane_events
from vmsim.trace import sniff_and_read
from vmsim.trace.replay import replay

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "fixtures" / "traces"
PROGRAMS = ROOT / "tests" / "fixtures" / "programs"
TARGET = 200_000
CASES = (
    ("python.strace.gz", "python3 -c ... with -k stacks (recommended capture)"),
    ("arenas.strace.gz", "8 threads of glibc malloc, -k stacks"),
    ("threads.strace", "20 pthreads, -k stacks"),
    ("fill_map_count.exec.strace.gz", "mprotect every other page to the limit (no -k)"),
)
AS_RECORDED = (
    ("fill_map_count.exec.strace.gz", "the fill trace itself, best of --runs", "python"),
    ("fill_map_count.strace.gz", "the same, recorded without its execve", "python"),
    ("fill_map_count.exec.strace.gz", "the fill trace through the fast lane", "lane"),
    ("fill_map_count.strace.gz", "the same, without its execve, through the lane", "lane"),
)


def _read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:  # type: ignore[operator]
        return list(fh)


def build_programs(out: Path) -> bool:
    if shutil.which("gcc") is None:
        return False
    for prog in ("threads", "arenas", "fill_map_count"):
        subprocess.run(
            ["gcc", "-O1", "-g", "-pthread", "-o", str(out / prog), str(PROGRAMS / f"{prog}.c")],
            check=True,
        )
    return True


def run_case(
    name: str, lines_wanted: int, work: Path, cwd: Path, runs: int = 1, engine: str = "python"
) -> dict[str, object]:
    """Replay ``name`` repeated to ``lines_wanted`` lines (0: once, as recorded); the best
    of ``runs`` runs, with the Python reader and replay (``engine`` "python") or through
    the fast lane ("lane", as ``vmsim replay --engine lane``: its first run, which loads
    numba's compiled code, is reported apart as ``first_run_seconds``)."""
    lines = _read(TRACES / name)
    reps = max(1, -(-lines_wanted // len(lines)))
    big = work / (name.removesuffix(".gz") + (".big" if lines_wanted else ""))
    with open(big, "w") as fh:
        for _ in range(reps):
            fh.writelines(lines)
    total = len(lines) * reps
    parse = full = cpu = float("inf")
    read = (lambda: lane_events(big)) if engine == "lane" else (lambda: sniff_and_read(big))
    first = None
    if engine == "lane":
        t0 = time.perf_counter()
        replay(read, cwd=cwd)
        first = time.perf_counter() - t0
    for _ in range(runs):
        t0 = time.perf_counter()
        deque(read(), maxlen=0)
        parse = min(parse, time.perf_counter() - t0)
        t0 = time.perf_counter()
        c0 = time.process_time()
        rep = replay(read, cwd=cwd)
        cpu = min(cpu, time.process_time() - c0)
        full = min(full, time.perf_counter() - t0)
    return {
        "trace": (name if lines_wanted else f"{name} (as recorded)")
        + (" (lane)" if engine == "lane" else ""),
        "engine": engine,
        "first_run_seconds": round(first, 2) if first is not None else None,
        "lines": total,
        "calls": rep.calls,
        "divergences": len(rep.divergences),
        "parse_lines_per_s": round(total / parse),
        "replay_lines_per_s": round(total / full),
        "replay_cpu_lines_per_s": round(total / cpu),
        "replay_calls_per_s": round(rep.calls / full),
        "seconds": round(full, 2),
        "passes": "+".join(rep.passes),
        "target_met": total / cpu >= TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines per benchmark trace")
    parser.add_argument("--runs", type=int, default=3, help="runs of each as-recorded trace")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        have_bins = build_programs(work)
        for name, what in CASES:
            if not have_bins and name != "python.strace.gz":
                console.print(f"[yellow]skipping {name}: gcc is needed to rebuild its program")
                continue
            with console.status(f"replaying {name} x{args.lines:,} lines"):
                r = run_case(name, args.lines, work, work)
            r["what"] = what
            results.append(r)
        for name, what, engine in AS_RECORDED:
            if not have_bins:
                continue
            with console.status(f"replaying {name} as recorded ({engine})"):
                r = run_case(name, 0, work, work, runs=args.runs, engine=engine)
            r["what"] = what
            results.append(r)
    if args.json:
        json.dump({"target_lines_per_s": TARGET, "results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    t = Table(title=f"vmsim replay speed (target {TARGET:,} lines/s end to end)")
    cols = (
        "trace",
        "lines",
        "calls",
        "parse lines/s",
        "replay lines/s",
        "CPU lines/s",
        "calls/s",
        "passes",
    )
    for col in (*cols, "met"):
        t.add_column(col, justify="left" if col == "trace" else "right")
    for r in results:
        t.add_row(
            f"{r['trace']}\n[dim]{r['what']}[/dim]",
            f"{r['lines']:,}",
            f"{r['calls']:,}",
            f"{r['parse_lines_per_s']:,}",
            f"{r['replay_lines_per_s']:,}",
            f"{r['replay_cpu_lines_per_s']:,}",
            f"{r['replay_calls_per_s']:,}",
            str(r["passes"]),
            "yes" if r["target_met"] else "no",
        )
    console.print(t)
    console.print(
        "The fill trace is all split-heavy mprotect calls (no -k frames) and hits the default "
        "limit, so it is also replayed without a limit to find the smallest one (from a copy "
        "of the model made just before the call that hit it); the target is for the trace as "
        "recorded. CPU lines/s counts this process's CPU "
        "time only (time.process_time): on a loaded machine it moves less than the wall clock. "
        "(lane): read with the fast lane's runs (vmsim replay --engine lane), the same report; "
        "its first run in a process also loads numba's compiled code: "
        + ", ".join(
            f"{r['trace']} {r['first_run_seconds']} s"
            for r in results
            if r.get("first_run_seconds") is not None
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
