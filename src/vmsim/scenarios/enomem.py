"""ENOMEM when trying to *free* memory (spec §1 and §7): the engine of ``vmsim demo enomem``.

The story, on a model process: map a region, split it with mprotect until the process holds
``max_map_count`` VMAs, then watch munmap of one page in the middle of a VMA fail with ENOMEM
(it would have to split that VMA, and split needs a free VMA slot), while munmap of a whole VMA
still works and frees the slot the first call needed.

:func:`story` drives the model and yields :class:`Step` values holding what the model
reported; each step is one function (``_spawn`` ... ``_munmap_retry``) over the shared
:class:`_Story` state. Every number in a step is read back from the model; the expected
outcomes (from the spec) only set ``matches_linux``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import vmsim
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.scenarios import ScenarioDeviation, ScenarioParameterError
from vmsim.scenarios.maps_text import MapsLine, excerpt, new_lines, vma_at

PAGE = PAGE_SIZE
# Pages beyond max_map_count: the splits use at most (max_map_count - map_count) + 1 pages, so
# the read-write tail left after them always has pages strictly inside it to unmap.
SPARE_PAGES = 16
PROGRESS_EVERY = 512  # mprotect calls between progress-bar updates

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class Step:
    """One step of the story, with the values the model reported."""

    id: str
    title: str
    call: str  # the syscall(s) made, C-like; "" if none
    ok: bool  # every call succeeded
    errno: str | None  # errno name of the failing call, e.g. "ENOMEM"
    map_count_before: int
    map_count: int
    max_map_count: int
    explain: str  # the one-line explanation (--explain)
    detail: str  # the longer explanation (rich output)
    maps: tuple[str, ...]  # excerpt of /proc/pid/maps after the step
    expected: str  # what Linux does here, per the spec
    matches_linux: bool
    facts: dict[str, int] = field(default_factory=dict)


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def _fmt(addr: int) -> str:
    return f"{addr:#x}"


def _munmap_call(addr: int) -> str:
    return f"munmap({_fmt(addr)}, 4096)"


def _size(nbytes: int) -> str:
    """Bytes in the largest binary unit that keeps a whole number (4096 -> 4 KiB)."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift:,} {unit}"
    return f"{nbytes:,} bytes"


class _Story:
    """The process and what the steps learnt about its region, for the steps after them."""

    def __init__(self, max_map_count: int) -> None:
        machine = vmsim.Machine(max_map_count=max_map_count)
        try:
            self.proc = machine.spawn(layout="linux")
        except OSError as exc:
            raise ScenarioParameterError(
                "max_map_count", f"{max_map_count} is too small for a fresh process: {exc}"
            ) from exc
        self.limit = max_map_count
        self.start = self.proc.map_count  # VMAs of the fresh process
        self.text = self.proc.maps()  # /proc/pid/maps after the last step that read it
        # set by the steps, in order
        self.region = self.end = 0  # the mapped region [region, end)
        self.mapped = 0  # map_count after the mmap
        self.first = 0  # the page made read-only by the first split
        self.full = 0  # map_count once split to the limit
        self.tail_start = 0  # the read-write tail left after the splits
        self.hole = 0  # the page strictly inside the tail that munmap tries to free
        self.tail = MapsLine(0, 0, "")  # the tail's maps line
        self.after = 0  # map_count after the failed munmap
        self.freed = 0  # map_count after unmapping a whole VMA


# --- the steps, in order: each acts on the story's process and reports what it saw --------


def _spawn(s: _Story) -> Step:
    """A fresh process and its VMAs."""
    limit, start, text = s.limit, s.start, s.text
    return Step(
        id="spawn",
        title="A fresh process",
        call="execve()",
        ok=True,
        errno=None,
        map_count_before=0,
        map_count=start,
        max_map_count=limit,
        explain=f"a new process starts with {start} VMAs (program, libraries, heap, stack, vdso)",
        detail=(
            "The kernel tracks a process's memory as VMAs: one per contiguous range with the "
            "same protection and backing. Each line of /proc/pid/maps is one VMA (the last "
            "one, [vsyscall], is not in the process's tree and is not counted). "
            f"vm.max_map_count caps the count per process at {limit:,}."
        ),
        maps=tuple(text.splitlines()),
        expected="map_count = lines of /proc/pid/maps - 1",
        matches_linux=True,
    )


def _mmap(s: _Story) -> Step:
    """One big read-write region: one VMA, however large."""
    proc, limit, start = s.proc, s.limit, s.start
    if start + 3 > limit:
        raise ScenarioParameterError(
            "max_map_count",
            f"{limit} leaves no room: the fresh process already holds {start} "
            f"VMAs (need at least {start + 3})",
        )
    npages = -(-(limit + SPARE_PAGES) // 256) * 256  # whole MiB
    before = s.text
    region = proc.mmap(
        0, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
    )
    end = region + npages * PAGE
    mapped = proc.map_count
    text = proc.maps()
    s.region, s.end, s.mapped, s.text = region, end, mapped, text
    return Step(
        id="mmap",
        title="The process maps memory",
        call=f"mmap(NULL, {npages * PAGE:,}, PROT_READ|PROT_WRITE, "
        "MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0)",
        ok=True,
        errno=None,
        map_count_before=start,
        map_count=mapped,
        max_map_count=limit,
        explain=f"one {_size(npages * PAGE)} read-write region at {_fmt(region)} is one VMA",
        detail=(
            f"{npages:,} pages, {_size(npages * PAGE)}, but a single VMA: the size of a "
            "mapping does not matter to the count, only how many pieces it is in."
        ),
        maps=new_lines(before, text),
        expected="a new mapping adds 1 VMA",
        matches_linux=mapped == start + 1,
    )


def _first_split(s: _Story) -> Step:
    """The first split on its own, to show the three pieces."""
    proc, limit, mapped, region, end = s.proc, s.limit, s.mapped, s.region, s.end
    first = region + PAGE
    proc.mprotect(first, PAGE, PROT_READ)
    count = proc.map_count
    s.first = first
    return Step(
        id="first-split",
        title="Splitting: one page made read-only",
        call=f"mprotect({_fmt(first)}, 4096, PROT_READ)",
        ok=True,
        errno=None,
        map_count_before=mapped,
        map_count=count,
        max_map_count=limit,
        explain=(
            "read-only page in the middle of the region: 1 VMA becomes 3 (two splits), "
            f"{count - mapped:+d} VMAs"
        ),
        detail=(
            "A VMA has one protection, so changing one page in its middle cuts it in three: "
            "rw- | r-- | rw-. split_vma() runs twice and each split costs one VMA. Allocators, "
            "garbage collectors and JITs do this all the time (guard pages, W^X, decommit)."
        ),
        maps=excerpt(proc.maps(), region, end),
        expected="a middle split adds 2 VMAs",
        matches_linux=count == mapped + 2,
    )


def _split_to_limit(s: _Story, progress: ProgressFn | None) -> Step:
    """Keep splitting: page 2k+1 read-only, +2 each, until one slot or none is left; then,
    if one slot is left, one edge split (+1)."""
    proc, limit, mapped, region, end = s.proc, s.limit, s.mapped, s.region, s.end
    k, calls, middle, edge = 1, 1, 1, 0
    while proc.map_count <= limit - 2:
        c = proc.map_count
        proc.mprotect(region + (2 * k + 1) * PAGE, PAGE, PROT_READ)
        calls += 1
        middle += 1
        k += 1
        if proc.map_count != c + 2:
            raise ScenarioDeviation(
                f"mprotect of page {2 * k - 1} moved map_count {c} -> {proc.map_count}; "
                "Linux splits the middle of a VMA into 3 (+2)"
            )
        if progress is not None and calls % PROGRESS_EVERY == 0:
            progress(proc.map_count - mapped)
    if proc.map_count == limit - 1:
        # One slot left: a change at the *edge* of a VMA splits it once (+1). Page 2k starts
        # the read-write tail and its left neighbour is read-only, so PROT_NONE cannot merge.
        c = proc.map_count
        proc.mprotect(region + 2 * k * PAGE, PAGE, PROT_NONE)
        calls += 1
        edge += 1
        if proc.map_count != c + 1:
            raise ScenarioDeviation(f"edge mprotect moved map_count {c} -> {proc.map_count}")
    if progress is not None:
        progress(proc.map_count - mapped)
    full = proc.map_count
    tail_start = region + (2 * k + edge) * PAGE
    text = proc.maps()
    s.full, s.tail_start, s.text = full, tail_start, text
    return Step(
        id="split",
        title="Splitting until the limit",
        call=f"mprotect(page 2k+1, 4096, PROT_READ) x {middle:,}"
        + (" + mprotect(page 2k, 4096, PROT_NONE)" if edge else ""),
        ok=True,
        errno=None,
        map_count_before=mapped,
        map_count=full,
        max_map_count=limit,
        explain=(
            f"{calls:,} mprotect calls ({middle:,} middle splits at +2"
            + (f", {edge} edge split at +1" if edge else "")
            + f"): map_count {full:,}, max_map_count {limit:,}"
        ),
        detail=(
            f"Every other page of the region is now read-only. The process holds {full:,} "
            f"VMAs, exactly vm.max_map_count, while using almost no RAM: the limit counts "
            "pieces, not bytes."
            + (
                " The last step changed a page at the edge of a VMA, which splits it once "
                "(+1), since a middle split (+2) no longer fits."
                if edge
                else ""
            )
        ),
        maps=excerpt(text, region, end),
        expected="map_count reaches max_map_count; each middle split +2, each edge split +1",
        matches_linux=full == limit,
        facts={"calls": calls, "middle_splits": middle, "edge_splits": edge},
    )


def _munmap_middle(s: _Story) -> Step:
    """Free one page in the middle of the read-write tail: munmap must split that VMA, and
    the limit is reached: ENOMEM."""
    proc, limit, full = s.proc, s.limit, s.full
    hole = s.tail_start + PAGE
    tail = vma_at(s.text, hole)
    if tail is None or not (tail.start < hole and hole + PAGE < tail.end):
        raise ScenarioDeviation(f"expected a VMA strictly around {_fmt(hole)}, found {tail}")
    s.hole, s.tail = hole, tail
    failed_errno: str | None = None
    try:
        proc.munmap(hole, PAGE)
    except OSError as exc:
        failed_errno = _errno_name(exc)
    after = proc.map_count
    s.after = after
    return Step(
        id="munmap-middle",
        title="Freeing one page fails",
        call=_munmap_call(hole),
        ok=failed_errno is None,
        errno=failed_errno,
        map_count_before=full,
        map_count=after,
        max_map_count=limit,
        explain=(
            "munmap of a page strictly inside a VMA must split it (one more VMA); "
            f"map_count {full:,} >= max_map_count {limit:,}: {failed_errno or 'succeeded'}"
        ),
        detail=(
            f"The page at {_fmt(hole)} lies strictly inside the VMA "
            f"{tail.start:x}-{tail.end:x}. Unmapping it leaves two VMAs where there was one, "
            "so munmap needs one more VMA. vms_gather_munmap_vmas() checks map_count >= "
            "max_map_count before it splits and returns ENOMEM, 'Cannot allocate memory': "
            "freeing memory fails with out-of-memory, whatever the RAM (RavenDB, jemalloc#970, "
            "OCaml#14865)."
        ),
        maps=(tail.text,),
        expected="ENOMEM, map_count unchanged",
        matches_linux=failed_errno == "ENOMEM" and after == full,
    )


def _munmap_whole(s: _Story) -> Step:
    """Free a whole VMA instead (the first read-only page): no split, no check."""
    proc, limit, first, after = s.proc, s.limit, s.first, s.after
    whole = vma_at(proc.maps(), first)
    if whole is None or (whole.start, whole.end) != (first, first + PAGE):
        raise ScenarioDeviation(f"expected a one-page VMA at {_fmt(first)}, found {whole}")
    proc.munmap(first, PAGE)
    freed = proc.map_count
    s.freed = freed
    return Step(
        id="munmap-whole",
        title="Freeing a whole VMA works",
        call=f"munmap({_fmt(first)}, 4096)",
        ok=True,
        errno=None,
        map_count_before=after,
        map_count=freed,
        max_map_count=limit,
        explain=f"munmap of one whole VMA needs no split, so no check: {freed - after:+d} VMA",
        detail=(
            "Removing a whole VMA (or trimming one at its edge) never needs a new VMA, so "
            "the kernel does not check the limit. One slot is free again."
        ),
        maps=(whole.text + "   <- unmapped",),
        expected="succeeds, map_count - 1",
        matches_linux=freed == after - 1,
    )


def _munmap_retry(s: _Story) -> Step:
    """The failed munmap again, one free slot later: it succeeds."""
    proc, limit, freed, hole, tail = s.proc, s.limit, s.freed, s.hole, s.tail
    retry_errno: str | None = None
    try:
        proc.munmap(hole, PAGE)
    except OSError as exc:
        retry_errno = _errno_name(exc)
    final = proc.map_count
    text = proc.maps()
    return Step(
        id="munmap-retry",
        title="The failed call now succeeds",
        call=_munmap_call(hole),
        ok=retry_errno is None,
        errno=retry_errno,
        map_count_before=freed,
        map_count=final,
        max_map_count=limit,
        explain=(
            f"with map_count {freed:,} < {limit:,} the same munmap splits the VMA: "
            f"{retry_errno or 'succeeds'}, map_count {final:,}"
        ),
        detail=(
            "The same call, one free slot later: the VMA is split around the hole and the "
            "page is freed. Fixes in the wild: unmap whole mappings, avoid partial unmaps and "
            "protection changes, or raise vm.max_map_count (sysctl, as root)."
        ),
        maps=excerpt(text, tail.start, tail.end),
        expected="succeeds, map_count + 1",
        matches_linux=retry_errno is None and final == freed + 1,
    )


def story(max_map_count: int, progress: ProgressFn | None = None) -> Iterator[Step]:
    """Run the story on a fresh model machine, yielding each step as soon as it is done.

    ``progress(vmas_added)`` is called now and then during the long splitting step.
    ScenarioParameterError if ``max_map_count`` leaves a fresh process no room for the story
    (it needs 3 VMAs more than the process starts with); ScenarioDeviation if a split does
    not change map_count as Linux's does.
    """
    s = _Story(max_map_count)
    yield _spawn(s)
    yield _mmap(s)
    yield _first_split(s)
    yield _split_to_limit(s, progress)
    yield _munmap_middle(s)
    yield _munmap_whole(s)
    yield _munmap_retry(s)


__all__ = ["PROGRESS_EVERY", "ProgressFn", "Step", "story"]
