"""Trace reading speed (issue 12 item 1): vmsim's lackey reader against a plain Python loop,
side by side in one run, on a generated trace and on a real one; decompression apart.

- ``generated``: --lines lackey lines (default 20 M: ``I``/`` L``/`` S``/`` M`` in lackey's
  proportions, random addresses of 7 to 10 hex digits, sizes 1-8), written once to a
  temporary file (the page cache holds it: the timings are of parsing, not of the disk).
- ``real``: a lackey trace recorded with ``vmsim record`` of ``sqlite3 :memory:`` building a
  table (--real PATH uses that trace instead; skipped, with a note, without valgrind/sqlite3).

vmsim side: ``open_memtrace(path)``, one full pass over every chunk (records into numpy
arrays). Baseline: ``for line in f: line.split()`` on the same file opened in binary mode, the
least any Python reader must do, which keeps nothing. Both best of --repeat passes;
reported in lines/s and the ratio. Target: at least 20 M lines/s for vmsim on the generated
trace. Also: peak memory of one vmsim pass (tracemalloc: bounded by one block and one chunk,
whatever the trace's size), ChampSim decoding speed, and the throughput of reading the first
--compressed-lines lines through gzip, xz and zstd (decompression, not parsing, is then the
bound). Nothing is asserted on times.

.venv/bin/python benchmarks/memtrace_read_bench.py [--lines N] [--repeat R]
    [--compressed-lines N] [--real PATH] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from rich.console import Console
from rich.table import Table

from vmsim.memtrace.readers import CHAMPSIM_DTYPE, open_memtrace

UNIQUE_LINES = 2_000_000  # generated once, repeated to reach --lines
SQLITE_SQL = (
    "create table t(a integer primary key, b text);"
    "with recursive c(x) as (select 1 union all select x + 1 from c where x < 5000)"
    " insert into t select x, hex(randomblob(16)) from c;"
    "select count(*), sum(length(b)) from t;"
)


def generate_lackey(path: Path, lines: int, seed: int = 12) -> None:
    """``lines`` lackey records: a block of UNIQUE_LINES random ones, repeated."""
    rng = np.random.default_rng(seed)
    n = min(lines, UNIQUE_LINES)
    # lackey on real programs: about 3/4 I, then L, S, a few M
    kind = rng.choice(4, n, p=[0.74, 0.16, 0.09, 0.01])
    addr = rng.integers(0x108000, 0x1FFF000000, n)
    size = rng.integers(1, 9, n)
    prefix = ("I  ", " L ", " S ", " M ")
    block = "".join(
        f"{prefix[k]}{a:08x},{s}\n"
        for k, a, s in zip(kind.tolist(), addr.tolist(), size.tolist(), strict=True)
    ).encode()
    with open(path, "wb") as f:
        f.write(b"==4242== Command: generated\n")
        for _ in range(lines // n):
            f.write(block)
        rest = lines % n
        if rest:
            f.write(b"".join(block.splitlines(keepends=True)[:rest]))


def record_real(workdir: Path, console: Console) -> tuple[Path | None, str]:
    if shutil.which("valgrind") is None or shutil.which("sqlite3") is None:
        return None, "skipped: valgrind or sqlite3 missing"
    from vmsim.cli.record import record

    out = workdir / "sqlite.lackey.zst"
    with console.status("recording sqlite3 under valgrind lackey"):
        summary = record([str(shutil.which("sqlite3")), ":memory:", SQLITE_SQL], out)
    plain = workdir / "sqlite.lackey"
    with open(out, "rb") as src, open(plain, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)
    return plain, (
        f"sqlite3 :memory: (5,000-row insert), recorded by vmsim record: "
        f"{summary['records']:,} records in {summary['seconds']:.1f} s "
        f"({summary['records_per_second']:,} records/s under lackey)"
    )


def best_of(repeat: int, fn: Callable[[], int]) -> tuple[float, float, int]:
    """Best wall time and best CPU time (time.process_time: what the reader itself used,
    less exposed to other processes on a shared machine) of ``repeat`` calls, and what the
    last call returned."""
    wall = cpu = float("inf")
    result = 0
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
    return wall, cpu, result


def vmsim_pass(path: Path) -> Callable[[], int]:
    def go() -> int:
        trace = open_memtrace(path)
        for _chunk in trace:
            pass
        return trace.lines

    return go


def python_pass(path: Path) -> Callable[[], int]:
    def go() -> int:
        n = 0
        with open(path, "rb") as f:
            for line in f:
                line.split()
                n += 1
        return n

    return go


def peak_memory(path: Path) -> int:
    tracemalloc.start()
    try:
        for _chunk in open_memtrace(path):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    out: dict[str, Any] = {
        "lines": args.lines,
        "repeat": args.repeat,
        "inputs": [],
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="vmsim-memtrace-bench-") as tmp:
        work = Path(tmp)
        gen = work / "generated.lackey"
        with console.status(f"writing {args.lines:,} lackey lines"):
            generate_lackey(gen, args.lines)
        with console.status("compiling the parser (cached after the first run)"):
            t = time.perf_counter()
            open_memtrace(gen, chunk_records=1 << 10).__iter__().__next__()
            out["first_call_seconds"] = round(time.perf_counter() - t, 3)
        inputs: list[tuple[str, Path, str]] = [
            ("generated", gen, f"{args.lines:,} random lackey lines")
        ]
        if args.real:
            inputs.append(("real", Path(args.real), args.real))
        elif not args.quick:
            real, note = record_real(work, console)
            if real is not None:
                inputs.append(("real", real, note))
            else:
                out["real_note"] = note
        for name, path, note in inputs:
            with console.status(f"{name}: vmsim and the Python loop, {args.repeat} passes each"):
                v_s, v_cpu, v_lines = best_of(args.repeat, vmsim_pass(path))
                p_s, p_cpu, p_lines = best_of(args.repeat, python_pass(path))
            row = {
                "input": name,
                "note": note,
                "bytes": path.stat().st_size,
                "lines": v_lines,
                "vmsim_seconds": round(v_s, 4),
                "vmsim_lines_per_s": round(v_lines / v_s),
                "vmsim_mb_per_s": round(path.stat().st_size / v_s / 1e6, 1),
                "python_seconds": round(p_s, 4),
                "python_lines_per_s": round(p_lines / p_s),
                "ratio": round((v_lines / v_s) / (p_lines / p_s), 1),
                "vmsim_cpu_lines_per_s": round(v_lines / v_cpu),
                "python_cpu_lines_per_s": round(p_lines / p_cpu),
                "cpu_ratio": round(p_cpu / v_cpu, 1),
                "peak_memory_bytes": peak_memory(path),
            }
            out["inputs"].append(row)
        out["compressed"] = compressed(gen, work, args, console)
        out["champsim"] = champsim(work, args, console)
    out["load_after"] = os.getloadavg()[0]
    return out


def compressed(
    gen: Path, work: Path, args: argparse.Namespace, console: Console
) -> list[dict[str, Any]]:
    """Read the first --compressed-lines lines through each decompressor."""
    with open(gen, "rb") as f:
        data = b"".join(f.readline() for _ in range(args.compressed_lines))
    rows = []
    compressors: list[tuple[str, Callable[[bytes], bytes]]] = [
        ("zst", zstandard.ZstdCompressor(level=3).compress),
        ("gz", lambda b: gzip.compress(b, compresslevel=6)),
        ("xz", lambda b: lzma.compress(b, preset=1)),
    ]
    for name, compress in compressors:
        path = work / f"head.lackey.{name}"
        with console.status(f"compressing {len(data) / 1e6:.0f} MB with {name}"):
            path.write_bytes(compress(data))
            seconds, cpu, lines = best_of(args.repeat, vmsim_pass(path))
        rows.append(
            {
                "cpu_lines_per_s": round(lines / cpu),
                "compression": name,
                "lines": lines,
                "bytes": len(data),
                "compressed_bytes": path.stat().st_size,
                "seconds": round(seconds, 4),
                "lines_per_s": round(lines / seconds),
                "mb_per_s": round(len(data) / seconds / 1e6, 1),
            }
        )
    return rows


def champsim(work: Path, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    n = args.compressed_lines
    rng = np.random.default_rng(3)
    recs = np.zeros(n, CHAMPSIM_DTYPE)
    recs["ip"] = rng.integers(0x400000, 0x500000, n)
    loads = rng.random(n) < 0.3
    stores = rng.random(n) < 0.1
    recs["source_memory"][loads, 0] = rng.integers(1, 1 << 40, int(loads.sum()))
    recs["destination_memory"][stores, 0] = rng.integers(1, 1 << 40, int(stores.sum()))
    path = work / "gen.champsim"
    recs.tofile(path)

    def go() -> int:
        total = 0
        for chunk in open_memtrace(path, "champsim"):
            total += len(chunk.addr)
        return total

    with console.status("ChampSim"):
        seconds, _cpu, records = best_of(args.repeat, go)
    return {
        "instructions": n,
        "records": records,
        "seconds": round(seconds, 4),
        "instructions_per_s": round(n / seconds),
        "records_per_s": round(records / seconds),
    }


def render(console: Console, s: dict[str, Any]) -> None:
    t = Table(title="Reading lackey text: vmsim against `for line in f: line.split()`")
    for col in ("input", "lines", "MB", "vmsim lines/s", "MB/s", "Python lines/s", "ratio"):
        t.add_column(col, justify="left" if col == "input" else "right")
    t.add_column("peak memory", justify="right")
    for r in s["inputs"]:
        t.add_row(
            r["input"],
            f"{r['lines']:,}",
            f"{r['bytes'] / 1e6:,.0f}",
            f"{r['vmsim_lines_per_s'] / 1e6:.1f} M",
            f"{r['vmsim_mb_per_s']:,.0f}",
            f"{r['python_lines_per_s'] / 1e6:.2f} M",
            f"{r['ratio']:.1f}x",
            f"{r['peak_memory_bytes'] / 2**20:.1f} MiB",
        )
    console.print(t)
    for r in s["inputs"]:
        console.print(
            f"  {r['input']}, CPU time (process_time): vmsim "
            f"{r['vmsim_cpu_lines_per_s'] / 1e6:.1f} M lines/s, Python "
            f"{r['python_cpu_lines_per_s'] / 1e6:.2f} M lines/s, ratio {r['cpu_ratio']:.1f}x"
        )
    for r in s["inputs"]:
        console.print(f"  {r['input']}: {r['note']}", markup=False)
    if "real_note" in s:
        console.print(f"  real: {s['real_note']}", markup=False)
    target = s["inputs"][0]["vmsim_lines_per_s"]
    cpu = s["inputs"][0]["vmsim_cpu_lines_per_s"]
    console.print(
        f"target >= 20 M lines/s on the generated trace: {target / 1e6:.1f} M wall-clock "
        f"({'met' if target >= 20e6 else 'NOT met'}), {cpu / 1e6:.1f} M in CPU time "
        f"({'met' if cpu >= 20e6 else 'NOT met'}); load average during the run "
        f"{s['load_before']:.1f} -> {s['load_after']:.1f} on {s['cpus']} CPUs; first call "
        f"(compile or cache load): {s['first_call_seconds']} s"
    )
    c = Table(title="Compressed input (the same lines through each decompressor)")
    for col in ("compression", "lines", "ratio", "lines/s", "MB/s (uncompressed)", "CPU lines/s"):
        c.add_column(col, justify="left" if col == "compression" else "right")
    for r in s["compressed"]:
        c.add_row(
            r["compression"],
            f"{r['lines']:,}",
            f"{r['bytes'] / r['compressed_bytes']:.1f}x",
            f"{r['lines_per_s'] / 1e6:.1f} M",
            f"{r['mb_per_s']:,.0f}",
            f"{r['cpu_lines_per_s'] / 1e6:.1f} M",
        )
    console.print(c)
    ch = s["champsim"]
    console.print(
        f"ChampSim: {ch['instructions']:,} 64-byte records -> {ch['records']:,} accesses in "
        f"{ch['seconds']:.3f} s ({ch['instructions_per_s'] / 1e6:.1f} M instructions/s, "
        f"{ch['records_per_s'] / 1e6:.1f} M accesses/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=20_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compressed-lines", type=int, default=4_000_000)
    parser.add_argument("--real", metavar="PATH", help="a lackey trace to read instead")
    parser.add_argument(
        "--quick", action="store_true", help="2 M lines, 1 pass, no real trace recorded"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.quick:
        args.lines = min(args.lines, 2_000_000)
        args.compressed_lines = min(args.compressed_lines, 500_000)
        args.repeat = 1
    console = Console(stderr=args.json)
    summary = run(args, console)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        render(console, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
