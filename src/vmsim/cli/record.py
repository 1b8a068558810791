"""``vmsim record -- CMD ARGS``: run a program under ``valgrind --tool=lackey
--trace-mem=yes`` with ASLR off and save its memory-access trace, with what the address
space of the trace needs (issue 12 item 2).

Valgrind runs the program (the *guest*) inside its own process and chooses where the guest's
mappings go: the addresses lackey prints are the guest's, in valgrind's layout (the program
near 0x108000, ld.so at 0x4000000, the stack below 0x1fff001000), not those of a native run
(0x555555554000, 0x7ffff7fc..., 0x7ffffffde000 with ASLR off). A layout to pair with the trace
must therefore come from this very run, never from ``strace`` of a native run, nor from
``strace -f`` around valgrind (that traces valgrind's own calls, its tool binary and heap).
The outputs are (OUT is ``-o``, default ``CMD.lackey.zst``):

- ``OUT``: the lackey trace, zstd-compressed, with the guest's system calls
  (``--trace-syscalls=yes``) interleaved at their place among the accesses.
- ``OUT.strace``: those calls as ``strace -f -o`` prints them, guest addresses
  (``vmsim replay``'s input format): the mmap/munmap/mprotect/brk of the run, in order.
- ``OUT.maps``: ``/proc/PID/maps`` of the valgrind process, sampled while it runs
  (``--interval``): the sample with the most mappings. Valgrind runs the guest in its own
  address space, so the guest's mappings are there at the addresses the trace uses, next to
  valgrind's own (the tool binary ``lackey-amd64-linux`` and valgrind's anonymous arenas),
  which the trace never touches. It is the only source of the mappings valgrind made before
  the program's first instruction (program, ld.so, stack), which no system call shows.
- ``OUT.json``: the command, pid, valgrind version, exit status, record counts, files.

Pair the trace with ``OUT.maps`` (initial layout, ``--maps``) and ``OUT.strace`` (the calls),
both in the guest's addresses: ``vmsim tlb OUT`` does so by default when both lie next to the
trace (the strace log replayed over the snapshot: ``vmsim.memtrace.layout_strace``). See
docs/memtrace.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zstandard
from rich.console import Console

from vmsim.cli.commands import add_command
from vmsim.cli.errors import CliError, UsageError
from vmsim.memtrace.aslr import no_aslr
from vmsim.memtrace.reader_valgrind import strace_lines
from vmsim.memtrace.readers import TraceEvent, open_memtrace
from vmsim.memtrace.records import KIND_NAMES, TraceError

__all__ = ["record", "register", "run"]

PIPE_READ = 1 << 20


class _MapsSampler(threading.Thread):
    """Reads /proc/PID/maps every ``interval`` seconds until the recorder stops it (after
    reaping the process); keeps the sample with the most lines (the latest among equals).
    A failed or empty read (the process mid-exec: valgrind's wrapper script execs the
    launcher, which execs the tool; or already a zombie) is skipped, never the end of
    sampling: ending there left .maps empty. A sample read while the child is still this
    Python between fork and exec is not the program's and is left out: it would win on line
    count."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.best = ""
        self.samples = 0
        self.stop = threading.Event()
        self.parent_exe = os.readlink("/proc/self/exe")

    def run(self) -> None:
        path = f"/proc/{self.pid}/maps"
        while not self.stop.is_set():
            exe = ""
            try:
                # before the read: once the exe is not this Python, the exec has happened and
                # every maps read after it is the program's (exec never goes back)
                exe = os.readlink(f"/proc/{self.pid}/exe")
                with open(path) as f:
                    text = f.read()
            except OSError:  # mid-exec (valgrind's wrapper execs the tool) or gone: the
                text = ""  # recorder stops the sampler once the process is reaped
            if not text or exe == self.parent_exe:  # no address space, or not exec'd yet
                self.stop.wait(self.interval)
                continue
            self.samples += 1
            if text.count("\n") >= self.best.count("\n"):
                self.best = text
            self.stop.wait(self.interval)


def record(
    cmd: list[str],
    out: Path,
    *,
    interval: float = 0.005,
    level: int = 3,
    valgrind: str = "valgrind",
) -> dict[str, Any]:
    """Run ``cmd`` under lackey (ASLR off), write ``out`` (zstd lackey trace with the guest's
    system calls) and ``out``.strace, .maps, .json beside it; return the summary (.json)."""
    exe = shutil.which(valgrind)
    if exe is None:
        raise CliError(
            f"{valgrind} not found: vmsim record runs the program under "
            "valgrind --tool=lackey (install valgrind)"
        )
    if not cmd:
        raise UsageError("no command to record: vmsim record [-o OUT] -- CMD ARGS")
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    read_fd, write_fd = os.pipe()
    argv = [
        exe,
        "--tool=lackey",
        "--trace-mem=yes",
        "--trace-syscalls=yes",
        "--child-silent-after-fork=yes",  # a forked child would interleave its lines
        f"--log-fd={write_fd}",
        *cmd,
    ]
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, pass_fds=(write_fd,), preexec_fn=no_aslr)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    os.close(write_fd)
    sampler = _MapsSampler(proc.pid, interval)
    sampler.start()
    raw_bytes = 0
    try:
        with (
            os.fdopen(read_fd, "rb", buffering=0) as pipe,
            open(part, "wb") as f,
            zstandard.ZstdCompressor(level=level).stream_writer(f, closefd=False) as z,
        ):
            while True:
                data = pipe.read(PIPE_READ)
                if not data:
                    break
                raw_bytes += len(data)
                z.write(data)
        status = proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if part.exists():
            part.unlink()
        raise
    finally:
        sampler.stop.set()
        sampler.join(timeout=5)
    seconds = time.monotonic() - started
    os.replace(part, out)
    return _finish(cmd, out, proc.pid, status, seconds, raw_bytes, sampler)


def _finish(
    cmd: list[str],
    out: Path,
    pid: int,
    status: int,
    seconds: float,
    raw_bytes: int,
    sampler: _MapsSampler,
) -> dict[str, Any]:
    """Read the trace back (counts, the guest's system calls) and write .strace/.maps/.json."""
    if raw_bytes == 0:  # valgrind could not start the program: it said why on stderr
        raise CliError(
            f"valgrind recorded no access of {cmd[0]} (exit status {status}): "
            "it wrote no trace (its message, if any, is above)"
        )
    trace = open_memtrace(out, "lackey")
    counts = np.zeros(4, np.int64)
    said: deque[str] = deque(maxlen=3)  # valgrind's last words, should nothing be recorded

    def events() -> Iterator[TraceEvent]:
        for chunk, evs in trace.chunks_with_events():
            counts[:] += np.bincount(chunk.kind, minlength=4)[:4]
            for e in evs:
                if e.text.startswith("=="):
                    said.append(e.text.split("==", 2)[-1].strip())
                yield e

    strace_path = Path(str(out) + ".strace")
    try:
        with open(strace_path, "w") as s:
            s.writelines(line + "\n" for line in strace_lines(events()))
    except TraceError as exc:
        raise CliError(f"valgrind wrote a trace vmsim cannot read: {exc}") from None
    records = int(counts.sum())
    if records == 0:
        words = " ".join(t for t in said if t)
        raise CliError(
            f"valgrind recorded no access of {cmd[0]} (exit status {status})"
            + (f": {words}" if words else "")
        )
    maps_path = Path(str(out) + ".maps")
    maps_path.write_text(sampler.best)
    summary: dict[str, Any] = {
        "command": cmd,
        "pid": trace.header.get("pid", pid),
        "valgrind": trace.header.get("valgrind"),
        "exit_status": status,
        "aslr": "off (personality ADDR_NO_RANDOMIZE)",
        "seconds": round(seconds, 3),
        "trace": str(out),
        "trace_bytes": raw_bytes,
        "compressed_bytes": out.stat().st_size,
        "records": records,
        "records_by_kind": {KIND_NAMES[k]: int(counts[k]) for k in range(4)},
        "records_per_second": round(records / seconds) if seconds > 0 else None,
        "strace": str(strace_path),
        "maps": str(maps_path),
        "maps_samples": sampler.samples,
        "maps_lines": sampler.best.count("\n"),
        "layout": "guest addresses: pair the trace with the .maps snapshot (initial layout) "
        "and the .strace calls (vmsim tlb does so by default), never with a native run's",
    }
    Path(str(out) + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run(args: argparse.Namespace, console: Console) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command to record: vmsim record [-o OUT] -- CMD ARGS")
    if args.format != "lackey":
        raise UsageError(f"--format {args.format}: only lackey traces can be recorded")
    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    out = Path(args.output or f"{Path(cmd[0]).name}.lackey.zst")
    summary = record(cmd, out, interval=args.interval)
    if args.json:
        console.print_json(json.dumps(summary))
        return 0
    kinds = summary["records_by_kind"]
    console.print(
        f"recorded {summary['records']:,} accesses of {' '.join(cmd)} "
        f"(I {kinds['I']:,}, L {kinds['L']:,}, S {kinds['S']:,}, M {kinds['M']:,}) "
        f"in {summary['seconds']:.2f} s; exit status {summary['exit_status']}",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"trace:  {out} ({summary['compressed_bytes']:,} bytes)", markup=False, soft_wrap=True
    )
    console.print(
        f"layout: {summary['maps']} ({summary['maps_lines']} mappings of the valgrind "
        f"process, incl. valgrind's own) and {summary['strace']} (the guest's system calls)",
        markup=False,
        soft_wrap=True,
    )
    console.print(
        f"vmsim tlb {out} uses both by default (the calls replayed over the snapshot); the "
        "addresses are the guest's under valgrind: never pair the trace with a native run's",
        markup=False,
        soft_wrap=True,
    )
    return 0


EPILOG = (
    "Writes OUT (lackey trace, zstd, with the guest's system calls interleaved), "
    "OUT.strace (those calls as strace -f prints them), OUT.maps (/proc/PID/maps of the "
    "valgrind process, the sample with the most mappings: the guest's mappings plus "
    "valgrind's own) and OUT.json. Lackey prints the guest's addresses in valgrind's layout, "
    "which differs from a native run's: pair the trace with OUT.maps and OUT.strace, never "
    "with strace or maps of a native run, nor strace -f around valgrind (that is valgrind's "
    "own calls). ASLR is off (personality ADDR_NO_RANDOMIZE). Only the process started is traced: a forked child's accesses are not "
    "recorded (--child-silent-after-fork), an exec'd program is not followed. Expect a "
    "50-100x slowdown."
)


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers,
        "record",
        "run a program under valgrind lackey and save its memory-access trace",
        __doc__,
        run,
        epilog=EPILOG,
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="trace file, zstd-compressed whatever its name (default: CMD.lackey.zst)",
    )
    parser.add_argument(
        "--format", choices=["lackey"], default="lackey", help="trace format (lackey only)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.005,
        metavar="S",
        help="seconds between /proc/PID/maps samples (default 0.005)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "cmd",
        nargs=argparse.REMAINDER,
        metavar="-- CMD ARGS",
        help="the program to run and its arguments (its stdin/stdout/stderr are left alone)",
    )
