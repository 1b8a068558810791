"""The VMA budget of one snapshot: counts per kind and per file, headroom against
vm.max_map_count, and how many more threads, arena heaps, ... fit before the limit.

map_count is what the kernel compares with the limit (``mm->map_count``): every line of
/proc/PID/maps except ``[vsyscall]``, which ``show_map()`` prints from the gate area, not from
the process's VMA tree. A VMA is needed by every call that adds one (mmap, brk) and by every
split (mprotect/madvise/mlock on part of a VMA, munmap of its middle): once
``map_count >= max_map_count`` those fail with ENOMEM (field notes §0).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from vmsim.analysis.classify import KIND_TITLES, ClassifiedVma, Kind

# Verdict thresholds, in percent of vm.max_map_count used. Sourcegraph's alert fires within 5%
# of the limit (field notes §3); a process at 90% is one burst of threads away from ENOMEM.
DANGER_PERCENT = 90.0
WARNING_PERCENT = 75.0
# glibc: arena_get2() stops creating arenas at NARENAS_FROM_NCORES(ncores) = 8 x cores (64-bit)
# unless MALLOC_ARENA_MAX says otherwise.
ARENAS_PER_CORE = 8
# Each glibc arena heap is a rw-p part and a ---p rest (a full heap is a single VMA).
VMAS_PER_ARENA_HEAP = 2
# pthread_create: mmap of the stack (+1) and mprotect of its guard (+1, a split).
VMAS_PER_THREAD = 2
# Punching a PROT_NONE hole into a committed piece splits it in three.
VMAS_PER_HOLE = 2


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    DANGER = "danger"
    AT_LIMIT = "at_limit"


@dataclass(frozen=True)
class Verdict:
    level: Level
    text: str


@dataclass(frozen=True)
class KindSummary:
    """VMAs of one kind; ``units`` counts the things they make up (threads, libraries...)."""

    kind: Kind
    title: str
    vmas: int
    bytes: int
    units: int
    rss_kb: int | None = None
    """Sums of the VMAs' smaps Rss, Pss, Swap (None when the input has no smaps)."""
    pss_kb: int | None = None
    swap_kb: int | None = None


@dataclass(frozen=True)
class FileSummary:
    """VMAs that belong to one file (a library's bss counts for the library)."""

    path: str
    kind: Kind
    vmas: int
    bytes: int


@dataclass(frozen=True)
class Projection:
    """If only this grows: what one more costs in VMAs and how many more fit."""

    what: str
    now: int
    vmas_each: int
    more_fit: int
    note: str


@dataclass(frozen=True)
class MapsReport:
    source: str
    source_type: str  # "maps", "smaps", "hs_err" or "pid"
    pid: int | None
    comm: str | None
    program: str | None
    lines: int  # lines of /proc/PID/maps, [vsyscall] included
    map_count: int
    max_map_count: int
    max_map_count_source: str
    headroom: int  # max_map_count - map_count (negative past the limit)
    used_percent: float
    verdict: Verdict
    threads: int | None  # threads of the process, when the input says
    threads_source: str | None
    thread_stacks: int  # thread stacks recognised (with or without a guard)
    vmas_per_thread: int
    more_threads: int
    arena_heaps: int
    more_arena_heaps: int
    kinds: tuple[KindSummary, ...]
    files: tuple[FileSummary, ...]
    projections: tuple[Projection, ...]
    vmas: tuple[ClassifiedVma, ...]
    notes: tuple[str, ...]


def _vmas(n: int) -> str:
    return f"{n:,} VMA" if n == 1 else f"{n:,} VMAs"


def verdict(map_count: int, max_map_count: int) -> Verdict:
    """One line a reader can act on."""
    left = max_map_count - map_count
    pct = 100.0 * map_count / max_map_count if max_map_count > 0 else math.inf
    if left < 0:
        return Verdict(
            Level.AT_LIMIT,
            f"OVER LIMIT: {map_count:,} VMAs > vm.max_map_count {max_map_count:,} "
            "(a limit lowered later, or mmap's old off-by-one): every new VMA and every split "
            "fails with ENOMEM",
        )
    if left == 0:
        return Verdict(
            Level.AT_LIMIT,
            f"AT LIMIT: {map_count:,} VMAs = vm.max_map_count: mmap, and mprotect/munmap that "
            "split a VMA, fail with ENOMEM",
        )
    # Never print "100%" while VMAs are left.
    shown = f"{pct:.0f}" if round(pct) < 100 else f"{pct:.1f}"
    if pct >= DANGER_PERCENT:
        return Verdict(
            Level.DANGER, f"DANGER: {shown}% of vm.max_map_count used, {_vmas(left)} left"
        )
    if pct >= WARNING_PERCENT:
        return Verdict(
            Level.WARNING, f"WARNING: {shown}% of vm.max_map_count used, {_vmas(left)} left"
        )
    return Verdict(Level.OK, f"OK: {_vmas(left)} left ({pct:.1f}% of vm.max_map_count used)")


def _units(vmas: Sequence[ClassifiedVma], kind: Kind) -> int:
    of_kind = [v for v in vmas if v.kind is kind]
    if kind in (Kind.PROGRAM, Kind.LIBRARY):
        return len({v.owner for v in of_kind})
    if kind in (Kind.THREAD_STACK, Kind.THREAD_GUARD, Kind.ARENA, Kind.DECOMMIT):
        return len({v.unit for v in of_kind})
    return len(of_kind)


def _usage(vmas: Sequence[ClassifiedVma], name: str) -> int | None:
    values: list[int | None] = [getattr(v, name) for v in vmas]
    known = [x for x in values if x is not None]
    return sum(known) if known else None


def build_report(
    vmas: Sequence[ClassifiedVma],
    *,
    max_map_count: int,
    max_map_count_source: str,
    source: str,
    source_type: str,
    program: str | None = None,
    threads: int | None = None,
    threads_source: str | None = None,
    stacks_expected: int | None = None,
    pid: int | None = None,
    comm: str | None = None,
    cpus: int | None = None,
    notes: Sequence[str] = (),
) -> MapsReport:
    """Count, compare with the limit, and project. ``cpus`` bounds the glibc arena count;
    ``stacks_expected`` (threads not on the main stack) is checked against the stacks found."""
    counted = [v for v in vmas if v.counted]
    map_count = len(counted)
    headroom = max_map_count - map_count
    spare = max(headroom, 0)

    kinds = []
    for kind in Kind:
        of_kind = [v for v in counted if v.kind is kind]
        if of_kind:
            kinds.append(
                KindSummary(
                    kind,
                    KIND_TITLES[kind],
                    len(of_kind),
                    sum(v.size for v in of_kind),
                    _units(of_kind, kind),
                    _usage(of_kind, "rss_kb"),
                    _usage(of_kind, "pss_kb"),
                    _usage(of_kind, "swap_kb"),
                )
            )

    per_file: dict[str, list[ClassifiedVma]] = defaultdict(list)
    for v in counted:
        if v.owner is not None:
            per_file[v.owner].append(v)
    files = sorted(
        (
            FileSummary(path, group[0].kind, len(group), sum(v.size for v in group))
            for path, group in per_file.items()
        ),
        key=lambda f: (-f.vmas, f.path),
    )

    # Threads: what the recognised stacks cost, unless there are none to look at.
    stack_units = {v.unit for v in counted if v.kind in (Kind.THREAD_STACK, Kind.THREAD_GUARD)}
    stack_vmas = sum(1 for v in counted if v.kind in (Kind.THREAD_STACK, Kind.THREAD_GUARD))
    thread_stacks = len(stack_units)
    vmas_per_thread = (
        max(1, round(stack_vmas / thread_stacks)) if thread_stacks else VMAS_PER_THREAD
    )
    arena_heaps = len({v.unit for v in counted if v.kind is Kind.ARENA})
    more_arena_heaps = spare // VMAS_PER_ARENA_HEAP

    by_kind = Counter(v.kind for v in counted)
    projections = [
        Projection(
            "thread (stack + guard)",
            thread_stacks,
            vmas_per_thread,
            spare // vmas_per_thread,
            "pthread_create(): mmap of the stack, mprotect of its guard"
            if vmas_per_thread == VMAS_PER_THREAD
            else f"{vmas_per_thread} VMA(s) per thread stack seen in this snapshot",
        ),
        Projection(
            "glibc malloc arena heap (64 MiB)",
            arena_heaps,
            VMAS_PER_ARENA_HEAP,
            more_arena_heaps,
            "a new arena, or one more heap for a full arena"
            + (f"; glibc stops at {ARENAS_PER_CORE * cpus} arenas (8 x CPUs)" if cpus else ""),
        ),
    ]
    libraries = _units(counted, Kind.LIBRARY)
    if libraries:
        each = math.ceil(by_kind[Kind.LIBRARY] / libraries)
        projections.append(
            Projection(
                "shared library (dlopen)",
                libraries,
                each,
                spare // each,
                "segments per library as loaded here (text, rodata, relro, data, bss)",
            )
        )
    holes = sum(1 for v in counted if v.kind is Kind.DECOMMIT and v.perms == "---p")
    if holes:
        projections.append(
            Projection(
                "PROT_NONE hole in committed memory",
                holes,
                VMAS_PER_HOLE,
                spare // VMAS_PER_HOLE,
                "an allocator decommits a piece in the middle of a rw-p region: split in 3",
            )
        )
    for kind, what, note in (
        (Kind.FILE, "file mapping", "each mmap() of a file (shard, segment, memfd)"),
        (Kind.JIT, "JIT code region", "each executable anonymous mapping"),
        (Kind.RESERVATION, "PROT_NONE reservation", "each reserved, uncommitted range"),
        (Kind.ANON, "anonymous mapping", "each mmap() that does not merge with a neighbour"),
    ):
        if by_kind[kind]:
            projections.append(Projection(what, by_kind[kind], 1, spare, note))

    all_notes = list(notes)
    if threads is not None and stacks_expected is not None:
        expected = stacks_expected
        if thread_stacks < expected:
            all_notes.append(
                f"{threads} threads ({expected} off the main stack) but {thread_stacks} thread "
                "stacks recognised: the others "
                "may have stacks of an unusual size, guards that take no VMA "
                "(MADV_GUARD_INSTALL) or stacks the runtime allocates itself (Go)"
            )
        elif thread_stacks > expected:
            all_notes.append(
                f"{thread_stacks} thread stacks for {threads} threads: glibc keeps the stacks "
                "of exited threads in a cache (up to 40 MiB) for reuse"
            )
    elif thread_stacks:
        all_notes.append(
            f"the {thread_stacks} thread stacks counted include any that glibc keeps cached "
            "after their threads exited (up to 40 MiB, reused by new threads): maps alone "
            "cannot tell them from live ones (give a pid to compare with its thread count)"
        )

    return MapsReport(
        source=source,
        source_type=source_type,
        pid=pid,
        comm=comm,
        program=program,
        lines=len(vmas),
        map_count=map_count,
        max_map_count=max_map_count,
        max_map_count_source=max_map_count_source,
        headroom=headroom,
        used_percent=100.0 * map_count / max_map_count if max_map_count > 0 else math.inf,
        verdict=verdict(map_count, max_map_count),
        threads=threads,
        threads_source=threads_source,
        thread_stacks=thread_stacks,
        vmas_per_thread=vmas_per_thread,
        more_threads=spare // vmas_per_thread,
        arena_heaps=arena_heaps,
        more_arena_heaps=more_arena_heaps,
        kinds=tuple(kinds),
        files=tuple(files),
        projections=tuple(projections),
        vmas=tuple(vmas),
        notes=tuple(all_notes),
    )


__all__ = [
    "FileSummary",
    "KindSummary",
    "Level",
    "MapsReport",
    "Projection",
    "Verdict",
    "build_report",
    "verdict",
]
