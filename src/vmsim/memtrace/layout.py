"""The address space a trace runs in (issue 12, item 2).

A memory trace lists addresses, not mappings. The engines need the mappings because faults are
real: the first touch of a page goes through vmsim's fault path (demand zero, the zero page on
a read, COW on a later write), in the VMA the address lies in. A :class:`Layout` gives them:

* ``Layout.from_maps(text)``: a ``/proc/PID/maps`` (or smaps) snapshot of the traced program,
  rebuilt by ``vmsim.snapshot`` (file mappings stay file mappings: their faults read the page
  cache, with fault-around, as the kernel would);
* ``Layout.from_strace(events, maps)``: an strace log of the same run (``vmsim record``'s
  ``OUT.strace``), its memory calls replayed by vmsim's strace replay, over the maps snapshot
  when given (:mod:`vmsim.memtrace.layout_strace`: which VMA wins where); an access the log
  shows to have come before an mprotect of its page is allowed without marking the layout
  estimated (``restored``);
* ``Layout.infer(chunks)``: when no snapshot exists, each touched region is mapped as private
  anonymous memory, readable, writable and executable (so every record kind is allowed). The
  regions are the 64 KiB granules the trace touches, merged across gaps below ``gap`` bytes.
  ``estimated`` is then True and reports must say so.

Whatever the source, an access outside every VMA (a mapping the snapshot missed: the program
mapped it later, or unmapped it before the snapshot) does not end the run: the engines map the
64 KiB granule around it (clipped to the hole it lies in) as private anonymous memory, record
it in ``added`` and set ``estimated``. Both engines do this identically, so their counters
still agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmsim import snapshot
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED_NOREPLACE,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.machine import Machine
from vmsim.memtrace.huge import HUGE_SIZES, HugeRegion, map_hugetlb, plan
from vmsim.memtrace.layout_strace import merge, replay_log
from vmsim.memtrace.records import TraceChunk
from vmsim.mm.flags import VM_HUGETLB
from vmsim.process import Process

__all__ = ["GRANULE", "USER_LIMIT_4LEVEL", "USER_LIMIT_5LEVEL", "Layout", "Region"]

GRANULE_SHIFT = 16
GRANULE = 1 << GRANULE_SHIFT  # 64 KiB: the unit of an inferred or added region
USER_LIMIT_4LEVEL = 0x7FFFFFFFF000  # TASK_SIZE_MAX with 4-level paging
USER_LIMIT_5LEVEL = 0xFFFFFFFFFFF000  # ... with 5-level paging
RWX = PROT_READ | PROT_WRITE | PROT_EXEC
ANON_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE


@dataclass(frozen=True)
class Region:
    """A private anonymous region ``[start, end)`` mapped with ``prot``."""

    start: int
    end: int
    prot: int = RWX


@dataclass
class Layout:
    """Where a trace's addresses live: a maps snapshot or inferred regions (module doc)."""

    regions: tuple[Region, ...] = ()
    entries: tuple[snapshot.MapsEntry, ...] | None = None  # a snapshot's, or strace + maps
    estimated: bool = False
    source: str = "inferred"  # "maps" | "strace" | "maps+strace" | "inferred"
    added: set[tuple[int, int]] = field(default_factory=set)  # granules mapped on the fly
    notes: list[str] = field(default_factory=list)  # what the strace replay had to say
    strace_calls: int = 0  # memory calls of the strace log replayed
    mprotected: tuple[tuple[int, int], ...] = ()  # ranges the log shows an mprotect of
    restored: set[tuple[int, int]] = field(default_factory=set)  # permissions the log explains

    @classmethod
    def from_maps(cls, text: str) -> Layout:
        """A ``/proc/PID/maps`` or smaps snapshot. Raises ``vmsim.snapshot.SnapshotError``
        (a ValueError naming the line) on text that is not maps."""
        entries = snapshot.parse(text)  # fails with the line number
        return cls(entries=tuple(entries), estimated=False, source="maps")

    @classmethod
    def from_strace(cls, events: Iterable[Any], maps: str | None = None) -> Layout:
        """The mappings of an strace log of the traced run (``events``: as
        ``vmsim.trace.read_strace`` yields them), replayed, with a maps snapshot of the same
        run where given (:mod:`vmsim.memtrace.layout_strace` says which VMA wins where).
        Without a snapshot the layout misses what the program did not map itself (program,
        libraries ld.so got from the kernel, stack): accesses there are covered on the fly."""
        base = snapshot.parse(maps) if maps is not None else []
        log = replay_log(events)
        return cls(
            entries=tuple(merge(base, log)),
            estimated=maps is None,
            source="maps+strace" if maps is not None else "strace",
            notes=log.notes,
            strace_calls=log.calls,
            mprotected=tuple(log.mprotected),
        )

    @classmethod
    def infer(cls, chunks: Iterable[TraceChunk], gap: int = 1 << 20) -> Layout:
        """Private anonymous RWX regions over the 64 KiB granules the trace touches, merged
        where they are less than ``gap`` bytes apart. Consumes ``chunks``."""
        seen = np.zeros(0, dtype=np.uint64)
        for c in chunks:
            a = c.addr[c.addr < np.uint64(USER_LIMIT_5LEVEL)]
            if len(a):
                seen = np.union1d(seen, np.unique(a >> np.uint64(GRANULE_SHIFT)))
        return cls(regions=tuple(merge_granules(seen, gap)), estimated=True, source="inferred")

    @classmethod
    def of_regions(cls, regions: Iterable[tuple[int, int]], *, estimated: bool = False) -> Layout:
        """Explicit private anonymous RWX regions (tests, generated traces)."""
        return cls(regions=tuple(Region(s, e) for s, e in regions), estimated=estimated)

    def build(self, machine: Machine, page_size: str = "4K") -> Process:
        """A new ``vmsim.Process`` on ``machine`` with this layout. For the hugetlb what-ifs
        (``page_size`` "2M" / "1G") the anonymous mappings become MAP_HUGETLB mappings from
        a pool sized to fit (:mod:`vmsim.memtrace.huge`); inferred regions are then rounded
        out to the huge page size and merged."""
        size = HUGE_SIZES.get(page_size, 0)
        if self.entries is not None:
            entries, huge = plan(list(self.entries), size) if size else (list(self.entries), [])
            proc = machine.spawn()
            snapshot.build(proc.mm, entries)
            map_hugetlb(machine, proc, huge, size)
            return proc
        align = size or 4096
        proc = machine.spawn()
        spans: list[list[int]] = []
        for r in sorted(self.regions, key=lambda r: r.start):
            s, e = r.start & -align, (r.end + align - 1) & -align
            if spans and s <= spans[-1][1] and spans[-1][2] == r.prot:
                spans[-1][1] = max(spans[-1][1], e)
            elif not spans or e > spans[-1][1]:
                spans.append([max(s, spans[-1][1]) if spans else s, e, r.prot])
        if size:
            map_hugetlb(machine, proc, [HugeRegion(s, e, prot) for s, e, prot in spans], size)
            return proc
        for s, e, prot in spans:
            proc.mmap(s, e - s, prot, ANON_FLAGS | MAP_FIXED_NOREPLACE)
        return proc

    def cover(self, proc: Process, addr: int, access: str, user_limit: int) -> None:
        """Make an access the layout did not foresee possible, as the program's own history
        must have: an address in no VMA gets the 64 KiB granule around it (clipped to its
        hole) as private anonymous RWX memory; an access a VMA does not permit (a snapshot
        taken after an mprotect, like RELRO after ld.so wrote it) gets the permission back
        on that page with mprotect. Recorded in ``added``; sets ``estimated``."""
        if not 4096 <= addr < user_limit:
            raise ValueError(f"address {addr:#x} is outside the user address space")
        tree = proc.mm.tree
        vma = tree.lookup(addr)
        if vma is not None:
            need = {"read": PROT_READ, "write": PROT_WRITE, "exec": PROT_EXEC}[access]
            prot = (vma.flags & RWX) | need
            size = 1 << vma.file.inode.huge_shift if vma.flags & VM_HUGETLB and vma.file else 4096
            page = addr & -size
            try:
                proc.mprotect(page, size, prot)
            except OSError as exc:
                raise ValueError(
                    f"{access} at {addr:#x}: the mapping does not allow it and cannot be "
                    f"made to ({exc})"
                ) from None
            if any(s <= page and page + size <= e for s, e in self.mprotected):
                # the log shows the program changing this page's permissions: the access
                # came before that mprotect (the layout is the run's last state)
                self.restored.add((page, page + size))
                return
            self.added.add((page, page + size))
            self.estimated = True
            return
        start = addr & -GRANULE
        end = start + GRANULE
        nxt = tree.find(addr)
        if nxt is not None:
            end = min(end, nxt.start)
        prv = tree.prev_of(addr)
        if prv is not None:
            start = max(start, prv.end)
        start = max(start, 4096)
        end = min(end, user_limit)
        proc.mmap(start, end - start, RWX, ANON_FLAGS | MAP_FIXED_NOREPLACE)
        self.added.add((start, end))
        self.estimated = True


def merge_granules(granules: np.ndarray, gap: int) -> list[Region]:
    """Regions over sorted granule numbers, merged where less than ``gap`` bytes apart."""
    out: list[Region] = []
    if not len(granules):
        return out
    g = granules.astype(np.int64)
    starts = g << GRANULE_SHIFT
    breaks = np.nonzero(np.diff(starts) - GRANULE >= gap)[0]
    first = 0
    for b in [*breaks.tolist(), len(g) - 1]:
        lo = int(starts[first])
        hi = int(starts[b]) + GRANULE
        out.append(Region(max(lo, 4096), hi))
        first = b + 1
    return out
