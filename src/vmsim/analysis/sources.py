"""Where snapshots come from: a maps or smaps file, stdin, a JVM hs_err file, a live process;
and the machine-wide scan behind ``vmsim top``.

Everything is read once and parsed by :func:`vmsim.snapshot.parse`; parse errors name the
input and the line of the *input* (in an hs_err file, the line of the whole file).
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from vmsim.analysis.classify import classify
from vmsim.analysis.report import MapsReport, build_report
from vmsim.snapshot import MapsEntry, SnapshotError, parse

PROC = Path("/proc")
MAX_MAP_COUNT_PATH = PROC / "sys/vm/max_map_count"

# HotSpot's os::Linux::print_proc_sys_info(): the header, then the value on the next line
# (JDK 11) or on the same line (later JDKs).
_HS_MAX_MAP_COUNT = re.compile(
    r"^/proc/sys/vm/max_map_count \(maximum number of memory map areas a process may have\):"
    r"\s*(\d+)?\s*$"
)
_HS_DYNAMIC_LIBRARIES = "Dynamic libraries:"
# Thread list lines: `=>0x00007f5fc000f800 JavaThread "main" [...]`, `  0x... VMThread "VM Thread"`,
# `  0x... WatcherThread [stack: ...]`. Every thread listed runs on a pthread stack: the
# launcher's primordial thread, which has [stack], only waits for them and is not listed.
_HS_THREAD = re.compile(r"^\s*(?:=>)?0x[0-9a-fA-F]+\s+\w*Thread\b")
_MAPS_LINE_START = re.compile(r"^[0-9a-fA-F]+-[0-9a-fA-F]+\s")


class SnapshotInputError(SnapshotError):
    """A snapshot that cannot be read, naming the input and the line."""

    def __init__(self, source: str, lineno: int, message: str) -> None:
        ValueError.__init__(self, f"{source}: {message}")
        self.lineno = lineno
        self.source = source


@dataclass(frozen=True)
class Snapshot:
    """The maps entries of one process and what else the input says about it."""

    source: str
    source_type: str  # "maps", "smaps", "hs_err" or "pid"
    entries: list[MapsEntry]
    max_map_count: int | None = None  # as printed in the input (hs_err)
    threads: int | None = None
    threads_source: str | None = None
    stacks_expected: int | None = None  # threads that run on a thread stack (not on [stack])
    pid: int | None = None
    comm: str | None = None
    exe: str | None = None


def _parse(text: str, source: str) -> list[MapsEntry]:
    try:
        entries = parse(text)
    except SnapshotInputError:
        raise
    except SnapshotError as exc:
        raise SnapshotInputError(source, exc.lineno, str(exc)) from exc
    if not entries:
        raise SnapshotInputError(source, 0, "no /proc/PID/maps lines found")
    return entries


def parse_hs_err(text: str, source: str) -> Snapshot:
    """The maps dump of a HotSpot fatal error log (the ``Dynamic libraries:`` section), the
    ``/proc/sys/vm/max_map_count`` value it prints, and the number of threads it lists."""
    lines = text.splitlines()
    try:
        first = next(i for i, line in enumerate(lines) if line.strip() == _HS_DYNAMIC_LIBRARIES)
    except StopIteration:
        raise SnapshotInputError(
            source, 0, f"an hs_err file without a '{_HS_DYNAMIC_LIBRARIES}' section"
        ) from None
    end = first + 1
    while end < len(lines) and _MAPS_LINE_START.match(lines[end]):
        end += 1
    # Blank lines keep parse()'s line numbers equal to the file's.
    section = "\n" * (first + 1) + "\n".join(lines[first + 1 : end])
    entries = _parse(section, source)

    max_map_count = None
    for i, line in enumerate(lines):
        m = _HS_MAX_MAP_COUNT.match(line.strip())
        if m is None:
            continue
        value = m.group(1)
        if value is None:
            value = next((x.strip() for x in lines[i + 1 :] if x.strip()), "")
        if not value.isdigit():
            raise SnapshotInputError(source, i + 1, f"no number after {line.strip()!r}")
        max_map_count = int(value)
        break
    listed = sum(1 for line in lines[:first] if _HS_THREAD.match(line))
    return Snapshot(
        source,
        "hs_err",
        entries,
        max_map_count=max_map_count,
        threads=listed or None,
        threads_source="threads listed in the hs_err file" if listed else None,
        stacks_expected=listed or None,
    )


def parse_text(text: str, source: str) -> Snapshot:
    """maps, smaps, or a whole hs_err file (recognised by its ``Dynamic libraries:`` line)."""
    if any(line.strip() == _HS_DYNAMIC_LIBRARIES for line in text.splitlines()):
        return parse_hs_err(text, source)
    entries = _parse(text, source)
    smaps = any(
        e.vmflags is not None or e.anonymous_kb is not None or e.rss_kb is not None for e in entries
    )
    return Snapshot(source, "smaps" if smaps else "maps", entries)


def read_pid(pid: int) -> Snapshot:
    """A live process: /proc/PID/maps, its threads (/proc/PID/task) and its executable."""
    base = PROC / str(pid)
    try:
        text = (base / "maps").read_text()
        threads = len(os.listdir(base / "task"))
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"no process with PID {pid}") from None
    if not text:
        raise SnapshotInputError(f"pid {pid}", 0, "a kernel thread: it has no address space")
    comm: str | None = None
    exe: str | None = None
    try:
        comm = (base / "comm").read_text().rstrip("\n")
        exe = os.readlink(base / "exe")
    except OSError:
        pass  # exited meanwhile, or no permission: the maps text is what matters
    entries = _parse(text, f"/proc/{pid}/maps")
    return Snapshot(
        f"pid {pid}",
        "pid",
        entries,
        threads=threads,
        threads_source=f"/proc/{pid}/task",
        stacks_expected=threads - 1,  # the main thread runs on [stack]
        pid=pid,
        comm=comm,
        exe=exe,
    )


def read_snapshot(arg: str, stdin: TextIO | None = None) -> Snapshot:
    """``-`` is stdin, digits that name no file are a PID, anything else is a file path."""
    if arg == "-":
        return parse_text((stdin or sys.stdin).read(), "<stdin>")
    if arg.isdigit() and not os.path.exists(arg):
        return read_pid(int(arg))
    with open(arg, encoding="utf-8", errors="replace") as f:
        return parse_text(f.read(), arg)


def system_max_map_count() -> int:
    """This machine's vm.max_map_count (read, never written)."""
    return int(MAX_MAP_COUNT_PATH.read_text())


def analyze(
    snapshot: Snapshot, max_map_count: int | None = None, cpus: int | None = None
) -> MapsReport:
    """Classify a snapshot and budget it against ``max_map_count``, else the value the input
    printed (hs_err), else this machine's."""
    if max_map_count is not None:
        limit, limit_source = max_map_count, "--max-map-count"
    elif snapshot.max_map_count is not None:
        limit, limit_source = snapshot.max_map_count, "hs_err file"
    else:
        limit, limit_source = system_max_map_count(), str(MAX_MAP_COUNT_PATH)
    notes = []
    if limit_source == str(MAX_MAP_COUNT_PATH) and snapshot.source_type != "pid":
        notes.append(
            "the limit is this machine's: pass --max-map-count for the machine the snapshot "
            "came from"
        )
    vmas = classify(snapshot.entries, snapshot.exe)
    program = next((v.owner for v in vmas if v.kind == "program"), None)
    return build_report(
        vmas,
        max_map_count=limit,
        max_map_count_source=limit_source,
        source=snapshot.source,
        source_type=snapshot.source_type,
        program=program,
        threads=snapshot.threads,
        threads_source=snapshot.threads_source,
        stacks_expected=snapshot.stacks_expected,
        pid=snapshot.pid,
        comm=snapshot.comm,
        cpus=cpus
        if cpus is not None
        else (os.cpu_count() if snapshot.source_type == "pid" else None),
        notes=notes,
    )


# --- every process: vmsim top -------------------------------------------------------------


@dataclass(frozen=True)
class ProcessVmas:
    """One process's VMA count, read from /proc/PID/maps."""

    pid: int
    comm: str
    threads: int
    map_count: int


def count_vmas(maps: bytes) -> int:
    """map_count from the text of /proc/PID/maps: its lines minus the [vsyscall] gate line,
    which is always last (it is the highest address)."""
    lines = maps.count(b"\n")
    return lines - 1 if maps.endswith(b" [vsyscall]\n") else lines


def _threads(status: bytes) -> int:
    for line in status.splitlines():
        if line.startswith(b"Threads:"):
            return int(line.split()[1])
    return 1


def scan_processes() -> Iterator[ProcessVmas]:
    """Every process with an address space (kernel threads have none and are left out).
    A process that exits while it is read is skipped."""
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        base = PROC / name
        try:
            maps = (base / "maps").read_bytes()
            if not maps:
                continue
            status = (base / "status").read_bytes()
            comm = (base / "comm").read_bytes().decode(errors="replace").rstrip("\n")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        yield ProcessVmas(int(name), comm, _threads(status), count_vmas(maps))


__all__ = [
    "ProcessVmas",
    "Snapshot",
    "SnapshotInputError",
    "analyze",
    "count_vmas",
    "parse_hs_err",
    "parse_text",
    "read_pid",
    "read_snapshot",
    "scan_processes",
    "system_max_map_count",
]
