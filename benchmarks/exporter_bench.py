"""`vmsim exporter`: how long one scrape takes with N processes on the machine.

A scrape that finds its view stale refreshes it: every process's /proc/PID/stat and the line
count of its /proc/PID/maps, then the maps text of the --top processes, classified; then the
text format is rendered. That whole path (VmaCollector.refresh + render) is timed here, the
best and the median of --runs runs, first with the processes running now, then after spawning
sleeping processes (`sleep`, a real exec'd program with its own address space) until
--processes (5,000 by default) have an address space. Target (issue 15, item 4): a scrape of
5,000 processes under 1 s on this machine.

Then one process with --big-vmas VMAs (60,000 by default: near the default limit, where the
exporter matters most) is timed alone (--pid-filter): its first refresh classifies its VMAs,
the next ones find the same maps text and reuse the kinds, as for a process that does not
change; a growing one pays the first figure at every refresh.

If the machine has less than --min-free-mib of memory available per process to spawn, no
process is spawned: the per-process cost measured on what runs is extrapolated to
--processes, and the table says "extrapolated".

.venv/bin/python benchmarks/exporter_bench.py [--processes N] [--runs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from vmsim.exporter import ExporterConfig, VmaCollector, render

TARGET_SECONDS = 1.0


@dataclass
class Row:
    processes: int
    group_by: str
    best_s: float
    median_s: float
    cpu_s: float  # median CPU time of the exporter's process (user + system) per scrape
    per_process_us: float  # median wall time / processes
    how: str  # "measured" or "extrapolated"
    target: bool  # the row the 1 s target is about (--processes running)


def time_scrapes(config: ExporterConfig, runs: int) -> tuple[int, list[float], list[float]]:
    """Wall and CPU seconds of ``runs`` scrapes that each refresh (interval 0: every scrape
    is stale), on one collector (so the growth history and the kinds cache are warm after the
    first, as in a running exporter)."""
    collector = VmaCollector(config)
    wall, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        render(collector)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return collector.view().processes, wall, cpu


# mprotect(PROT_NONE) every other page of a read-write region: +2 VMAs per page
BIG_CHILD = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
holes = int(sys.argv[1])
region = mmap.mmap(-1, (2 * holes + 2) * mmap.PAGESIZE,
                   flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
base = ctypes.addressof(ctypes.c_char.from_buffer(region))
for k in range(holes):
    if libc.mprotect(base + (2 * k + 1) * mmap.PAGESIZE, mmap.PAGESIZE, 0):
        raise OSError(ctypes.get_errno(), "mprotect")
print("ready", flush=True)
sys.stdin.read()
"""


def big_process(vmas: int, runs: int) -> list[tuple[str, int, float, float]]:
    """(what, map_count, wall, CPU) of the first refresh and the median of the next ones."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BIG_CHILD, str(vmas // 2)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            return []
        config = ExporterConfig(pid_filter=re.compile(str(proc.pid)), interval=1e-9)
        collector = VmaCollector(config)
        out = []
        wall, cpu = [], []
        for i in range(runs + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            render(collector)
            if i == 0:
                n = collector.view().exported[0].map_count
                out.append(("first refresh: classifies", n, time.perf_counter() - t0,
                            time.process_time() - c0))  # fmt: skip
            else:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        out.append(("unchanged maps: kinds reused", n, statistics.median(wall),
                    statistics.median(cpu)))  # fmt: skip
        return out
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def mem_available_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def measure(runs: int, target: bool) -> list[Row]:
    rows = []
    for group_by in ("none", "cgroup"):
        config = ExporterConfig(group_by=group_by, interval=1e-9)  # type: ignore[arg-type]
        n, wall, cpu = time_scrapes(config, runs)
        median = statistics.median(wall)
        rows.append(
            Row(
                n,
                group_by,
                min(wall),
                median,
                statistics.median(cpu),
                1e6 * median / max(n, 1),
                "measured",
                target,
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--min-free-mib", type=float, default=2.0)
    ap.add_argument("--big-vmas", type=int, default=60000, help="0 skips the big process")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    rows = measure(args.runs, target=False)
    now = rows[0].processes
    spawned: list[subprocess.Popen[bytes]] = []
    try:
        need = args.processes - now
        if need > 0 and mem_available_mib() < need * args.min_free_mib:
            for r in list(rows):
                rows.append(
                    Row(
                        args.processes,
                        r.group_by,
                        r.best_s * args.processes / r.processes,
                        r.median_s * args.processes / r.processes,
                        r.cpu_s * args.processes / r.processes,
                        r.per_process_us,
                        "extrapolated",
                        True,
                    )
                )
        elif need > 0:
            t0 = time.perf_counter()
            for _ in range(need):
                spawned.append(subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL))
            spawn_s = time.perf_counter() - t0
            time.sleep(1.0)  # let the last ones exec
            rows += measure(args.runs, target=True)
            if not args.json:
                Console().print(f"spawned {need:,} sleep processes in {spawn_s:.1f} s")
    finally:
        for p in spawned:
            p.kill()
        for p in spawned:
            p.wait()

    big = big_process(args.big_vmas, args.runs) if args.big_vmas else []
    if args.json:
        print(
            json.dumps(
                {
                    "scrapes": [asdict(r) for r in rows],
                    "big_process": [
                        {"what": w, "map_count": n, "wall_s": t, "cpu_s": c} for w, n, t, c in big
                    ],
                },
                indent=2,
            )
        )
        return
    table = Table(
        title=f"vmsim exporter: one scrape (refresh + render), best/median of {args.runs}"
    )
    columns = ("processes", "group by", "best", "median", "CPU", "per process", "how", "< 1 s")
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        ok = ("met" if r.median_s < TARGET_SECONDS else "MISSED") if r.target else ""
        table.add_row(
            f"{r.processes:,}",
            r.group_by,
            f"{r.best_s * 1000:.0f} ms",
            f"{r.median_s * 1000:.0f} ms",
            f"{r.cpu_s * 1000:.0f} ms",
            f"{r.per_process_us:.0f} µs",
            r.how,
            ok,
        )
    Console(width=120).print(table)
    if big:
        t = Table(title="One process near the limit, alone (--pid-filter)")
        for col in ("refresh", "map_count", "wall", "CPU"):
            t.add_column(col, justify="right")
        for what, n, wall_s, cpu_s in big:
            t.add_row(what, f"{n:,}", f"{wall_s * 1000:.0f} ms", f"{cpu_s * 1000:.0f} ms")
        Console(width=120).print(t)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    Console().print(
        f"load average {load} on {len(os.sched_getaffinity(0))} CPUs (the machine is shared: "
        "wall time rises with load, CPU is the exporter's own user + system time)"
    )


if __name__ == "__main__":
    main()
