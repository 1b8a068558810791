"""The fast lane's strace scanner (issue 11, FASTLANE part 1) against the Python reader,
side by side in one run, on the fill trace (``fill_map_count.exec.strace.gz``, decompressed
in memory once: the timings are of parsing, not of gzip).

- scanner: ``vmsim.fastlane.scan.scan_block`` over the trace in blocks of --block-bytes
  bytes of whole lines (default 1 MiB, as the reader's blocks; 0: the whole trace at
  once), the clock handed on; the arrays are the output.
- reader: ``read_strace_stream`` of the same text (an in-memory text stream), every event
  built, as ``vmsim replay`` reads a file.

Both best of --repeat passes, in CPU time of this process (``time.process_time``: the
machine is shared, and wall time counts the waits for a core; --wall for wall time), in
lines/s and ns/line, and the ratio; also the share of lines taken and the numba compile
time of a cold start (a fresh process with numba's cache directory empty, --compile).
Target (FASTLANE.md): the scanner well under 0.5 us a line. Nothing is asserted on times.

.venv/bin/python benchmarks/fastlane_scan_bench.py [--repeat R] [--block-bytes N]
    [--compile] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmsim.fastlane.scan import Clock, scan_block
from vmsim.trace.strace import read_strace_stream

FILL = Path(__file__).resolve().parents[1] / "tests/fixtures/traces/fill_map_count.exec.strace.gz"


def scan_all(data: bytes, block_bytes: int) -> tuple[int, int]:
    """(lines, taken) of ``data`` scanned in blocks of about ``block_bytes`` bytes (whole
    lines, as the reader's blocks; 0: one block), the clock and carry handed on."""
    if block_bytes <= 0:
        block = scan_block(data, 1)
        return len(block), int(block.taken.sum())
    clock = Clock.fresh()
    carry = False
    lines = taken = 0
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos + block_bytes)
        end = len(data) if nl < 0 else nl + 1
        block = scan_block(data[pos:end], lines + 1, clock, carry)
        clock, carry = block.clock, block.carry
        lines += len(block)
        taken += int(block.taken.sum())
        pos = end
    return lines, taken


def read_all(text: str) -> int:
    n = 0
    for _ in read_strace_stream(io.StringIO(text)):
        n += 1
    return n


def best(fn: object, repeat: int, wall: bool = False) -> float:
    clock = time.perf_counter if wall else time.process_time
    times = []
    for _ in range(repeat):
        t = clock()
        fn()  # type: ignore[operator]
        times.append(clock() - t)
    return min(times)


def cold_compile() -> float:
    """Seconds of the import and first scan_block() in a fresh process with an empty numba
    cache (the compile of every kernel)."""
    code = (
        "import time; t = time.perf_counter();"
        "from vmsim.fastlane.scan import scan_block;"
        "scan_block(b'1 mmap(NULL, 1, PROT_READ, MAP_SHARED, 3, 0) = 0x1000\\n', 1);"
        "print(time.perf_counter() - t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
    return float(out.stdout.strip())


def fixture_shares() -> dict[str, tuple[int, int]]:
    """(lines, taken) of every strace fixture (as tests/unit/test_fastlane_scan.py finds
    them), each scanned in 1 MiB blocks."""
    traces = FILL.parent
    out = {}
    for path in sorted(traces.rglob("*")):
        if path.is_dir() or "ltrace" in path.name:
            continue
        if ".strace" not in path.name and path.parent.name != "threads-ff":
            continue
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        out[str(path.relative_to(traces))] = scan_all(data, 1 << 20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--block-bytes", type=int, default=1 << 20)
    ap.add_argument("--compile", action="store_true", help="measure a cold numba compile")
    ap.add_argument("--wall", action="store_true", help="wall time, not CPU time")
    ap.add_argument(
        "--fixtures", action="store_true", help="also the share taken of each strace fixture"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    data = gzip.decompress(FILL.read_bytes())
    text = data.decode("utf-8", "surrogateescape")
    lines, taken = scan_all(data, args.block_bytes)  # compiles (or loads the cache)
    t_scan = best(lambda: scan_all(data, args.block_bytes), args.repeat * 4, args.wall)
    t_read = best(lambda: read_all(text), args.repeat, args.wall)
    result = {
        "lines": lines,
        "taken": taken,
        "taken_share": taken / lines,
        "scanner_lines_per_s": lines / t_scan,
        "scanner_ns_per_line": t_scan / lines * 1e9,
        "reader_lines_per_s": lines / t_read,
        "reader_ns_per_line": t_read / lines * 1e9,
        "ratio": t_read / t_scan,
    }
    if args.compile:
        result["cold_compile_s"] = cold_compile()
    if args.fixtures:
        result["fixtures"] = fixture_shares()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"fill trace: {lines} lines, {taken} taken ({taken / lines:.2%})")
    print(f"({'wall' if args.wall else 'CPU'} time, best of the passes)")
    print(
        f"scanner: {result['scanner_lines_per_s'] / 1e6:.2f} M lines/s "
        f"({result['scanner_ns_per_line']:.0f} ns/line)"
    )
    print(
        f"reader:  {result['reader_lines_per_s'] / 1e6:.3f} M lines/s "
        f"({result['reader_ns_per_line']:.0f} ns/line)"
    )
    print(f"ratio:   {result['ratio']:.1f}x")
    if args.fixtures:
        print("share of lines taken per strace fixture:")
        for name, (n, k) in result["fixtures"].items():  # type: ignore[union-attr]
            print(f"  {name:42s} {k:6d} / {n:6d}  {k / n:6.1%}")
    if args.compile:
        print(
            f"cold numba compile (first scan_block, empty cache): {result['cold_compile_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
