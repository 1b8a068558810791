"""Read what the exporter needs from /proc, and nothing else: ``/proc/PID/stat`` (comm,
threads, start time), the line count of ``/proc/PID/maps`` (and its text for the processes
whose VMAs are classified), ``/proc/PID/cgroup`` when grouping by cgroup, and
``/proc/sys/vm/max_map_count``. Never ``mem``, ``pagemap`` or ``smaps``: no memory contents.

Each process is read through a file descriptor of its ``/proc/PID`` directory (``openat``):
that descriptor stays bound to the process it was opened for, so if the process exits and its
PID is reused meanwhile, the reads fail (ENOENT/ESRCH) instead of returning the new process's
files. A process is named by (PID, start time): the pair the kernel never reuses.

Failures are never raised to the caller of :func:`scan`; they are tallied by reason in
:class:`ScanErrors` (``vanished``, ``permission``, ``parse``, ``other``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

REASONS = ("vanished", "permission", "parse", "other")
"""Why a process (or the limit) could not be read: it exited (or its PID was reused) while it
was read; the exporter may not read it (another user's process, without root: maps needs
PTRACE_MODE_READ); its text made no sense; anything else (EIO, ...)."""

PF_KTHREAD = 0x00200000  # include/linux/sched.h: a kernel thread has no mm
# Below glibc's mmap threshold (128 KiB), so a buffer is never an mmap of its own; the count
# pass reads into one reused buffer and allocates nothing per read.
_READ_CHUNK = 64 << 10
_STAT_MAX = 4096  # a stat line is far shorter: one read that returns less is all of it
_VSYSCALL = b" [vsyscall]\n"


class ProcessId(NamedTuple):
    """One process: its PID and its start time (clock ticks after boot, field 22 of
    /proc/PID/stat). A reused PID comes with a later start time."""

    pid: int
    starttime: int


@dataclass(frozen=True)
class ProcessSample:
    """What one scan read of one process."""

    id: ProcessId
    comm: str
    threads: int
    map_count: int
    cgroup: str | None = None  # only when asked for

    @property
    def pid(self) -> int:
        return self.id.pid


@dataclass
class ScanErrors:
    """Errors per reason, cumulative over the exporter's life (the counter behind
    ``vmsim_scrape_errors_total``)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))

    def add(self, reason: str) -> None:
        self.counts[reason] += 1

    def add_os_error(self, exc: OSError) -> None:
        self.add(reason_of(exc))


class StatParseError(ValueError):
    """A /proc/PID/stat line without the fields it always has."""


def reason_of(exc: OSError) -> str:
    """The ``reason`` label for an error reading /proc."""
    if isinstance(exc, FileNotFoundError | ProcessLookupError) or exc.errno == errno.ESRCH:
        return "vanished"
    if isinstance(exc, PermissionError):
        return "permission"
    return "other"


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the exporter uses (fs/proc/array.c do_task_stat())."""

    comm: str
    state: str
    flags: int
    threads: int
    starttime: int


def parse_stat(data: bytes) -> Stat:
    """Parse /proc/PID/stat. The comm is in parentheses and may itself hold spaces and
    parentheses, so the fields start after the *last* ``)``."""
    open_ = data.find(b"(")
    close = data.rfind(b")")
    if open_ < 0 or close < open_:
        raise StatParseError("no (comm) in /proc/PID/stat")
    rest = data[close + 1 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    if len(rest) < 20:
        raise StatParseError(f"/proc/PID/stat has {len(rest) + 2} fields, expected 22 or more")
    try:
        return Stat(
            comm=data[open_ + 1 : close].decode("utf-8", "replace"),
            state=rest[0].decode("ascii", "replace"),
            flags=int(rest[6]),  # field 9
            threads=int(rest[17]),  # field 20: num_threads
            starttime=int(rest[19]),  # field 22
        )
    except ValueError as exc:
        raise StatParseError(f"/proc/PID/stat: {exc}") from None


def _open_at(dirfd: int, name: str) -> int:
    return os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)


def read_at(dirfd: int, name: str) -> bytes:
    """The whole of file ``name`` in the directory ``dirfd``."""
    fd = _open_at(dirfd, name)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_stat_at(dirfd: int) -> bytes:
    """/proc/PID/stat: one read (the kernel prints the line whole: single_open())."""
    fd = _open_at(dirfd, "stat")
    try:
        data = os.read(fd, _STAT_MAX)
        if len(data) == _STAT_MAX:  # never seen: read the rest all the same
            while chunk := os.read(fd, _READ_CHUNK):
                data += chunk
        return data
    finally:
        os.close(fd)


class MapsCounter:
    """Counts the lines of /proc/PID/maps into one reused buffer (not thread-safe: one per
    scan)."""

    def __init__(self) -> None:
        self.buf = bytearray(_READ_CHUNK)

    def count_at(self, dirfd: int) -> int:
        """map_count: the lines of ``maps`` minus the [vsyscall] line, which is always last
        (the highest address). The text is not kept: a process near the limit prints ~5 MiB."""
        fd = _open_at(dirfd, "maps")
        try:
            buf = self.buf
            lines = 0
            tail = b""
            while n := os.readv(fd, [buf]):
                lines += buf.count(b"\n", 0, n)
                tail = (tail + buf[max(0, n - len(_VSYSCALL)) : n])[-len(_VSYSCALL) :]
            return lines - 1 if tail == _VSYSCALL else lines
        finally:
            os.close(fd)


def count_maps_at(dirfd: int) -> int:
    """map_count of the process of ``dirfd`` (see :meth:`MapsCounter.count_at`)."""
    return MapsCounter().count_at(dirfd)


def open_process(proc_root: Path | str, pid: int) -> int:
    """A descriptor of /proc/PID, bound to the process it names now."""
    return os.open(os.path.join(proc_root, str(pid)), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def parse_cgroup(data: bytes) -> str:
    """The cgroup path of a process: the cgroup v2 line (``0::PATH``), else systemd's
    ``name=systemd`` v1 hierarchy, else the first line's path; ``/`` when empty."""
    lines = data.decode("utf-8", "replace").splitlines()
    fields = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    for hid, controllers, path in fields:
        if hid == "0" and controllers == "":
            return path
    for _, controllers, path in fields:
        if controllers == "name=systemd":
            return path
    return fields[0][2] if fields else "/"


def pids(proc_root: Path) -> list[int]:
    """The PIDs listed in ``proc_root`` (processes only: /proc lists thread groups)."""
    return [int(name) for name in os.listdir(proc_root) if name.isdigit()]


def read_process(
    proc_root: Path | str,
    pid: int,
    errors: ScanErrors,
    *,
    cgroup: bool = False,
    counter: MapsCounter | None = None,
    wanted: Callable[[int, str], bool] | None = None,
) -> ProcessSample | None:
    """One process's sample, or None: a kernel thread or a zombie (no address space: not an
    error), a process ``wanted(pid, comm)`` refuses (its maps are not read), or a process
    that could not be read (counted in ``errors``)."""
    counter = counter or MapsCounter()
    try:
        dirfd = open_process(proc_root, pid)
    except OSError as exc:
        errors.add_os_error(exc)
        return None
    try:
        stat = parse_stat(read_stat_at(dirfd))
        if stat.flags & PF_KTHREAD or stat.state in ("Z", "X"):
            return None
        if wanted is not None and not wanted(pid, stat.comm):
            return None
        map_count = counter.count_at(dirfd)
        if map_count == 0:
            # the mm went away between stat and maps: the process is exiting
            errors.add("vanished")
            return None
        group = parse_cgroup(read_at(dirfd, "cgroup")) if cgroup else None
    except StatParseError:
        errors.add("parse")
        return None
    except OSError as exc:
        errors.add_os_error(exc)
        return None
    finally:
        os.close(dirfd)
    return ProcessSample(ProcessId(pid, stat.starttime), stat.comm, stat.threads, map_count, group)


def read_maps_text(proc_root: Path | str, who: ProcessId) -> bytes:
    """The text of /proc/PID/maps of process ``who``; ProcessLookupError if the PID now
    names another process (or none)."""
    dirfd = open_process(proc_root, who.pid)
    try:
        if parse_stat(read_stat_at(dirfd)).starttime != who.starttime:
            raise ProcessLookupError(errno.ESRCH, f"PID {who.pid} was reused")
        return read_at(dirfd, "maps")
    finally:
        os.close(dirfd)


def scan(
    proc_root: Path,
    errors: ScanErrors,
    *,
    cgroup: bool = False,
    wanted: Callable[[int, str], bool] | None = None,
) -> Iterator[ProcessSample]:
    """Every process with an address space under ``proc_root`` (that ``wanted(pid, comm)``
    accepts); the rest counted or skipped as :func:`read_process` says."""
    root = os.fspath(proc_root)
    counter = MapsCounter()
    for pid in pids(proc_root):
        sample = read_process(root, pid, errors, cgroup=cgroup, counter=counter, wanted=wanted)
        if sample is not None:
            yield sample


def read_max_map_count(proc_root: Path) -> int:
    """vm.max_map_count (read, never written)."""
    return int((proc_root / "sys/vm/max_map_count").read_bytes())


__all__ = [
    "PF_KTHREAD",
    "REASONS",
    "MapsCounter",
    "ProcessId",
    "ProcessSample",
    "ScanErrors",
    "Stat",
    "StatParseError",
    "count_maps_at",
    "open_process",
    "parse_cgroup",
    "parse_stat",
    "pids",
    "read_at",
    "read_maps_text",
    "read_max_map_count",
    "read_process",
    "read_stat_at",
    "reason_of",
    "scan",
]
