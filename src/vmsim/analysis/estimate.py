"""What KSM and zswap would save on a live process: read its anonymous pages and count
duplicate contents and compressed sizes.

The pages come from the kernel, as root: ``/proc/PID/smaps`` says which VMAs exist (and how
many pages of the file-backed and shared ones are resident, which are only counted as
skipped), ``/proc/PID/pagemap`` which pages of the private anonymous VMAs (no path,
``[heap]``, ``[stack]``, ``[anon:...]``) are present, and ``/proc/PID/mem`` their contents.
Swapped-out and non-present pages are not read (reading them would fault them in). A present
page that maps the shared zero page (a read fault on untouched anonymous memory; the huge zero
page after a read fault in a THP-eligible range) uses no RAM: it is counted apart and not
read; /proc/kpageflags (KPF_ZERO_PAGE) tells them, and without it (not root) they read as
all-zero pages.

The arithmetic (what KSM would merge, what zswap would store) is in
:mod:`vmsim.analysis.savings`, a pure function of the page contents; this module reads the
pages and hands them to it.

The library never prints; ``vmsim estimate`` (:mod:`vmsim.cli.estimate`) renders.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from vmsim.analysis.savings import PageStats, PageTally
from vmsim.mm.zswap import COMPRESSORS, PAGE_SIZE
from vmsim.procfs import PM_FILE, PM_GUARD_REGION, PM_MMAP_EXCLUSIVE, PM_PFRAME_MASK

KPF_ZERO_PAGE = 24  # include/uapi/linux/kernel-page-flags.h
PAGEMAP_CHUNK = 8192  # pagemap entries per read (64 KiB)
READ_CHUNK = 64  # pages per read of /proc/PID/mem (256 KiB)
STAGE_PAGEMAP = "pagemap"
STAGE_PAGES = "pages"
SPECIAL_NAMES = frozenset(
    ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "[sigpage]", "[vectors]")
)

# The top byte of a little-endian pagemap entry holds bits 56-63: PM_PRESENT is 0x80 there,
# PM_SWAP 0x40. Translating that byte of every entry to 1 (interesting) or 0 finds the few
# present or swapped pages of a large, mostly empty VMA without a Python loop over all of it
# (and whatever PM_SOFT_DIRTY says about the holes).
_PRESENT_OR_SWAP = bytes(1 if b & 0xC0 else 0 for b in range(256))
_PRESENT = bytes(1 if b & 0x80 else 0 for b in range(256))
_SMAPS_HEAD = re.compile(
    r"^([0-9a-f]+)-([0-9a-f]+)\s+([r-][w-][x-][ps])\s+[0-9a-f]+\s+\S+\s+\d+ ?\s*(.*)$"
)

# progress(stage, done, total): STAGE_PAGEMAP counts virtual pages of the anonymous VMAs
# looked up in pagemap, STAGE_PAGES the present pages read and measured.
ProgressFn = Callable[[str, int, int], None]


class EstimateError(Exception):
    """The process cannot be estimated (it has no user address space)."""


class ProcessExitedError(ProcessLookupError):
    """The process went away while its memory was being read."""


@dataclass(frozen=True)
class SmapsVma:
    """One VMA of /proc/PID/smaps: its range, permissions, name and resident pages."""

    start: int
    end: int
    perms: str
    name: str | None
    rss_pages: int = 0
    anon_pages: int = 0  # the smaps "Anonymous" field: anonymous pages, also COW copies

    @property
    def kind(self) -> str:
        """``anon`` (private anonymous: what is estimated), ``file``, ``shared``, ``special``."""
        if self.name in SPECIAL_NAMES:
            return "special"
        if self.perms[3] == "s":
            return "shared"
        name = self.name
        if name is None or name in ("[heap]", "[stack]") or name.startswith(("[anon:", "[stack:")):
            return "anon"
        return "file"


def parse_smaps(text: str) -> list[SmapsVma]:
    """The VMAs of a /proc/PID/smaps text with their Rss and Anonymous sizes in pages."""
    vmas: list[SmapsVma] = []
    head: tuple[int, int, str, str | None] | None = None
    rss = anon = 0

    def flush() -> None:
        if head is not None:
            vmas.append(SmapsVma(*head, rss_pages=rss, anon_pages=anon))

    for line in text.splitlines():
        m = _SMAPS_HEAD.match(line)
        if m:
            flush()
            name = m.group(4).strip() or None
            head = (int(m.group(1), 16), int(m.group(2), 16), m.group(3), name)
            rss = anon = 0
        elif line.startswith("Rss:"):
            rss = int(line.split()[1]) * 1024 // PAGE_SIZE
        elif line.startswith("Anonymous:"):
            anon = int(line.split()[1]) * 1024 // PAGE_SIZE
    flush()
    return vmas


def parse_range(text: str) -> tuple[int, int]:
    """``START-END`` in hex (``0x`` optional), END exclusive, both page-aligned."""
    try:
        lo, hi = (int(part, 16) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"not a range: {text!r} (use START-END in hex)") from None
    if lo >= hi:
        raise ValueError(f"empty range: {text!r}")
    if lo % PAGE_SIZE or hi % PAGE_SIZE:
        raise ValueError(f"range not page-aligned: {text!r}")
    return lo, hi


def _clip(start: int, end: int, ranges: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    if ranges is None:
        return [(start, end)]
    out = [(max(start, lo), min(end, hi)) for lo, hi in sorted(ranges)]
    return [(lo, hi) for lo, hi in out if lo < hi]


@dataclass(frozen=True)
class EstimateResult:
    """What was read from a process, and :class:`PageStats` for its pages."""

    pid: int
    comm: str | None
    compressors: tuple[str, ...]
    ranges: tuple[tuple[int, int], ...] | None
    max_pages: int | None
    vmas: int  # private anonymous VMAs looked at
    present_pages: int  # present anonymous pages (zero-page mappings not included)
    zero_page_mapped: int  # present PTEs mapping the shared (or huge) zero page: no RAM
    zero_page_detection: bool  # False: /proc/kpageflags unreadable, they read as zero pages
    swapped_pages: int  # swapped out: not read
    vanished_pages: int  # present in pagemap, unmapped before they could be read
    file_pages: int  # resident pages of file-backed VMAs: skipped
    file_anon_pages: int  # of which anonymous copies (COW of a private file mapping)
    shared_pages: int  # resident pages of shared VMAs (shmem, SysV, memfd): skipped
    truncated: bool  # --max-pages stopped the read before every present page
    seconds: float
    stats: PageStats

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "compressors": list(self.compressors),
            "ranges": None
            if self.ranges is None
            else [{"start": f"{lo:#x}", "end": f"{hi:#x}"} for lo, hi in self.ranges],
            "max_pages": self.max_pages,
            "truncated": self.truncated,
            "vmas": self.vmas,
            "present_pages": self.present_pages,
            "pages_scanned": self.stats.pages,
            "bytes_scanned": self.stats.bytes,
            "zero_page_mapped": self.zero_page_mapped,
            "zero_page_detection": self.zero_page_detection,
            "swapped_pages": self.swapped_pages,
            "vanished_pages": self.vanished_pages,
            "skipped": {
                "file_pages": self.file_pages,
                "file_anon_pages": self.file_anon_pages,
                "shared_pages": self.shared_pages,
            },
            "seconds": round(self.seconds, 6),
            **{k: v for k, v in self.stats.as_dict().items() if k not in ("pages", "bytes")},
        }


class _Process:
    """The open /proc files of one process. Everything is opened relative to one
    /proc/PID directory descriptor, so a PID reused meanwhile is never read by mistake."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"no process with PID {pid}") from None
        self._fds: list[int] = [self.dirfd]
        self.kpageflags: int | None = None
        try:
            self.kpageflags = os.open("/proc/kpageflags", os.O_RDONLY)
            self._fds.append(self.kpageflags)
        except OSError:
            pass  # not root: zero-page mappings cannot be told from zero-filled pages

    def open(self, name: str) -> int:
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=self.dirfd)
        except FileNotFoundError:
            raise ProcessExitedError(
                errno.ESRCH, f"PID {self.pid} exited while its memory was being read"
            ) from None
        except PermissionError:
            raise PermissionError(
                errno.EACCES,
                f"permission denied reading /proc/{self.pid}/{name}: reading another "
                "process's memory needs root (or the same user and ptrace access)",
                f"/proc/{self.pid}/{name}",
            ) from None
        self._fds.append(fd)
        return fd

    def read_text(self, name: str) -> str:
        fd = self.open(name)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")

    def exited(self) -> ProcessExitedError:
        return ProcessExitedError(
            errno.ESRCH, f"PID {self.pid} exited while its memory was being read"
        )

    def is_zero_pfn(self, pfn: int) -> bool:
        """KPF_ZERO_PAGE: the shared zero page, or a page of the huge zero page."""
        if self.kpageflags is None or not pfn:
            return False
        raw = os.pread(self.kpageflags, 8, pfn * 8)
        return len(raw) == 8 and bool(int.from_bytes(raw, "little") >> KPF_ZERO_PAGE & 1)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


@dataclass
class _Scan:
    """Present anonymous pages found in pagemap, as runs of consecutive pages to read."""

    runs: list[tuple[int, int]]
    selected: int = 0
    present: int = 0
    zero_page_mapped: int = 0
    swapped: int = 0
    file: int = 0


def _pagemap_chunks(proc: _Process, fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(address, entries) for [start, end), PAGEMAP_CHUNK entries at a time."""
    addr = start
    while addr < end:
        n = min(PAGEMAP_CHUNK, (end - addr) // PAGE_SIZE)
        buf = os.pread(fd, n * 8, addr // PAGE_SIZE * 8)
        if len(buf) < 8:
            raise proc.exited()  # pagemap_read() returns 0 once the mm is gone
        buf = buf[: len(buf) // 8 * 8]
        yield addr, buf
        addr += len(buf) // 8 * PAGE_SIZE


def _scan_anon(
    proc: _Process,
    fd: int,
    start: int,
    end: int,
    scan: _Scan,
    max_pages: int | None,
    tick: Callable[[int], None],
) -> None:
    for addr, buf in _pagemap_chunks(proc, fd, start, end):
        marks = buf[7::8].translate(_PRESENT_OR_SWAP)
        entries = memoryview(buf).cast("Q")
        i = marks.find(1)
        while i >= 0:
            e = entries[i]
            va = addr + i * PAGE_SIZE
            i = marks.find(1, i + 1)
            if not e >> 63:
                if not e & PM_GUARD_REGION:  # a guard marker is no swap entry
                    scan.swapped += 1
                continue
            # The zero page has no struct page to be exclusive or anonymous
            # (vm_normal_page() is NULL); the huge zero page shows as a file page.
            if (e & PM_FILE or not e & PM_MMAP_EXCLUSIVE) and proc.is_zero_pfn(e & PM_PFRAME_MASK):
                scan.zero_page_mapped += 1
                continue
            if e & PM_FILE:
                scan.file += 1
                continue
            scan.present += 1
            if max_pages is not None and scan.selected >= max_pages:
                continue
            scan.selected += 1
            runs = scan.runs
            if runs and runs[-1][0] + runs[-1][1] * PAGE_SIZE == va:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((va, 1))
        tick(len(entries))


def _count_present(proc: _Process, fd: int, start: int, end: int) -> int:
    return sum(
        buf[7::8].translate(_PRESENT).count(1) for _a, buf in _pagemap_chunks(proc, fd, start, end)
    )


class _Reader:
    """The contents of the selected pages from /proc/PID/mem, READ_CHUNK pages per read."""

    def __init__(self, proc: _Process, fd: int, progress: ProgressFn | None, total: int) -> None:
        self.proc = proc
        self.fd = fd
        self.progress = progress
        self.total = total
        self.done = 0
        self.vanished = 0

    def _read(self, addr: int, npages: int) -> bytes:
        try:
            buf = os.pread(self.fd, npages * PAGE_SIZE, addr)
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: nothing mapped at addr any more
                raise
            return b""
        if not buf and npages:
            # mem_rw() reads nothing once the mm is gone; an unmapped page is EIO instead
            raise self.proc.exited()
        return buf

    def pages(self, runs: Iterable[tuple[int, int]]) -> Iterator[bytes]:
        for start, npages in runs:
            for first in range(0, npages, READ_CHUNK):
                n = min(READ_CHUNK, npages - first)
                addr = start + first * PAGE_SIZE
                buf = self._read(addr, n)
                if len(buf) == n * PAGE_SIZE:
                    for k in range(n):
                        yield buf[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]
                else:  # part of the run was unmapped meanwhile: page by page
                    for k in range(n):
                        page = self._read(addr + k * PAGE_SIZE, 1)
                        if len(page) == PAGE_SIZE:
                            yield page
                        else:
                            self.vanished += 1
                self.done += n
                if self.progress is not None:
                    self.progress(STAGE_PAGES, self.done, self.total)


def estimate(
    pid: int,
    compressors: Sequence[str] = COMPRESSORS,
    max_pages: int | None = None,
    progress: ProgressFn | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> EstimateResult:
    """Read the present private anonymous pages of process ``pid`` (only those inside
    ``ranges``, [start, end) pairs, if given; the first ``max_pages`` in address order, if
    given) and estimate what KSM and zswap would save on them.

    Raises ProcessLookupError (no such process), PermissionError, ProcessExitedError (it
    exited during the read), EstimateError (no user address space: a kernel thread or a
    zombie), ValueError (unknown compressor)."""
    if max_pages is not None and max_pages < 1:
        raise ValueError(f"max_pages must be positive, got {max_pages}")
    tally = PageTally(compressors)  # checks the names before any reading
    t0 = time.perf_counter()
    proc = _Process(pid)
    try:
        comm: str | None
        try:
            comm = proc.read_text("comm").rstrip("\n")
        except OSError:
            comm = None
        smaps = parse_smaps(proc.read_text("smaps"))
        if not smaps:
            raise EstimateError(
                f"PID {pid} has no user address space (a kernel thread, or a process "
                "that has exited and not been reaped)"
            )
        pagemap = proc.open("pagemap")
        mem = proc.open("mem")
        anon: list[tuple[int, int]] = []
        scan = _Scan(runs=[])
        file_anon = shared = 0
        for v in smaps:
            kind = v.kind
            if kind == "special":
                continue
            parts = _clip(v.start, v.end, ranges)
            if kind == "anon":
                anon.extend(parts)
                continue
            whole = parts == [(v.start, v.end)]
            resident = (
                v.rss_pages if whole else sum(_count_present(proc, pagemap, *p) for p in parts)
            )
            if kind == "shared":
                shared += resident
            else:
                scan.file += resident
                file_anon += v.anon_pages if whole else 0
        vm_total = sum(hi - lo for lo, hi in anon) // PAGE_SIZE
        vm_done = 0

        def tick(n: int) -> None:
            nonlocal vm_done
            vm_done += n
            if progress is not None:
                progress(STAGE_PAGEMAP, vm_done, vm_total)

        for lo, hi in anon:
            _scan_anon(proc, pagemap, lo, hi, scan, max_pages, tick)
        reader = _Reader(proc, mem, progress, scan.selected)
        for page in reader.pages(scan.runs):
            tally.add(page)
        stats = tally.result()
    finally:
        proc.close()
    return EstimateResult(
        pid=pid,
        comm=comm,
        compressors=tuple(compressors),
        ranges=None if ranges is None else tuple(sorted(ranges)),
        max_pages=max_pages,
        vmas=sum(1 for v in smaps if v.kind == "anon" and _clip(v.start, v.end, ranges)),
        present_pages=scan.present,
        zero_page_mapped=scan.zero_page_mapped,
        zero_page_detection=proc.kpageflags is not None,
        swapped_pages=scan.swapped,
        vanished_pages=reader.vanished,
        file_pages=scan.file,
        file_anon_pages=file_anon,
        shared_pages=shared,
        truncated=scan.selected < scan.present,
        seconds=time.perf_counter() - t0,
        stats=stats,
    )


__all__ = [
    "EstimateError",
    "EstimateResult",
    "ProcessExitedError",
    "SmapsVma",
    "estimate",
    "parse_range",
    "parse_smaps",
]
