"""Random workloads on transparent huge pages against a naive content model.

Private anonymous 4 MiB regions, advised MADV_HUGEPAGE or not, see random stores, loads,
partial MADV_DONTNEED / mprotect / munmap, MADV_COLLAPSE, fork, exit, khugepaged ticks and
the deferred split shrinker. The naive model is the bytes each process must read (fork copies
them). After every step the frames are recounted from the page tables (``check_memory``:
refcount and mapcount of every folio, PMD mappings and their deposited tables, per-page
mapcounts of large folios, the frame layer's counters including AnonPages and
AnonHugePages, the reverse map, no leak) and no TLB entry may grant more than its entry.
"""

from __future__ import annotations

import errno

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import vmsim
from vmsim import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    Segfault,
)
from vmsim.mm.huge_memory import deferred_split_scan

P = 4096
M2 = 2 << 20
REGION = 2 * M2
NPAGES = REGION // P
SLOTS = 2
BASE = 0x2000_0000_0000
RW = PROT_READ | PROT_WRITE
MADV_COLLAPSE = 25
pages = st.integers(0, NPAGES - 1)


def slot_addr(slot: int) -> int:
    return BASE + slot * 2 * REGION


class Proc:
    def __init__(self, p: vmsim.Process) -> None:
        self.p = p
        # slot -> (page -> the byte every byte of the page's first 8 must read; absent: 0),
        # and per page whether it is mapped and writable
        self.data: dict[int, dict[int, int]] = {}
        self.mapped: dict[int, list[bool]] = {}
        self.writable: dict[int, list[bool]] = {}


class ThpMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = vmsim.Machine(ram="64M")
        self.procs = [Proc(self.m.spawn())]

    def _proc(self, i: int) -> Proc:
        return self.procs[i % len(self.procs)]

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), huge=st.booleans())
    def map_region(self, i: int, slot: int, huge: bool) -> None:
        pr = self._proc(i)
        a = slot_addr(slot)
        pr.p.mmap(a, REGION, RW, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS)
        if huge:
            pr.p.madvise(a, REGION, MADV_HUGEPAGE)
        pr.data[slot] = {}
        pr.mapped[slot] = [True] * NPAGES
        pr.writable[slot] = [True] * NPAGES

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), page=pages, byte=st.integers(1, 255))
    def store(self, i: int, slot: int, page: int, byte: int) -> None:
        pr = self._proc(i)
        addr = slot_addr(slot) + page * P
        ok = slot in pr.mapped and pr.mapped[slot][page] and pr.writable[slot][page]
        try:
            pr.p.write(addr, bytes([byte]) * 8)
        except Segfault:
            assert not ok, f"store to {addr:#x} faulted"
            return
        assert ok, f"store to {addr:#x} should have faulted"
        pr.data[slot][page] = byte

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), page=pages)
    def load(self, i: int, slot: int, page: int) -> None:
        pr = self._proc(i)
        if slot not in pr.mapped or not pr.mapped[slot][page]:
            return
        got = pr.p.read(slot_addr(slot) + page * P, 8)
        assert got == bytes([pr.data[slot].get(page, 0)]) * 8, f"slot {slot} page {page}"

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), first=pages, n=st.integers(1, 600))
    def dontneed(self, i: int, slot: int, first: int, n: int) -> None:
        pr = self._proc(i)
        if slot not in pr.mapped or not all(pr.mapped[slot][first : first + n]):
            return
        n = min(n, NPAGES - first)
        pr.p.madvise(slot_addr(slot) + first * P, n * P, MADV_DONTNEED)
        for pg in range(first, first + n):
            pr.data[slot].pop(pg, None)

    @rule(
        i=st.integers(0, 3),
        slot=st.integers(0, SLOTS - 1),
        first=pages,
        n=st.integers(1, 600),
        writable=st.booleans(),
    )
    def mprotect(self, i: int, slot: int, first: int, n: int, writable: bool) -> None:
        pr = self._proc(i)
        if slot not in pr.mapped or not all(pr.mapped[slot][first : first + n]):
            return
        n = min(n, NPAGES - first)
        pr.p.mprotect(slot_addr(slot) + first * P, n * P, RW if writable else PROT_READ)
        for pg in range(first, first + n):
            pr.writable[slot][pg] = writable

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), first=pages, n=st.integers(1, 600))
    def munmap(self, i: int, slot: int, first: int, n: int) -> None:
        pr = self._proc(i)
        if slot not in pr.mapped:
            return
        n = min(n, NPAGES - first)
        pr.p.munmap(slot_addr(slot) + first * P, n * P)
        for pg in range(first, first + n):
            pr.mapped[slot][pg] = False
            pr.data[slot].pop(pg, None)

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), half=st.integers(0, 1))
    def collapse(self, i: int, slot: int, half: int) -> None:
        pr = self._proc(i)
        if slot not in pr.mapped:
            return
        try:
            pr.p.madvise(slot_addr(slot) + half * M2, M2, MADV_COLLAPSE)
        except OSError as e:
            assert e.errno in (errno.EINVAL, errno.ENOMEM, errno.EAGAIN, errno.ENOMEM), e

    @rule()
    def khugepaged(self) -> None:
        self.m.tick()

    @rule()
    def shrink(self) -> None:
        deferred_split_scan(self.m.memory)

    @precondition(lambda self: len(self.procs) < 4)
    @rule(i=st.integers(0, 3))
    def fork(self, i: int) -> None:
        pr = self._proc(i)
        child = Proc(pr.p.fork())
        child.data = {s: dict(d) for s, d in pr.data.items()}
        child.mapped = {s: list(v) for s, v in pr.mapped.items()}
        child.writable = {s: list(v) for s, v in pr.writable.items()}
        self.procs.append(child)

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=st.integers(0, 3))
    def exit(self, i: int) -> None:
        pr = self._proc(i)
        pr.p.exit()
        self.procs.remove(pr)

    @invariant()
    def frames_recount(self) -> None:
        self.m.check_memory()
        self.m.check_tlb()

    def teardown(self) -> None:
        for pr in self.procs:
            for slot, d in pr.data.items():
                for page, byte in d.items():
                    if pr.mapped[slot][page]:
                        got = pr.p.read(slot_addr(slot) + page * P, 8)
                        assert got == bytes([byte]) * 8, f"slot {slot} page {page} lost data"
        for pr in self.procs:
            pr.p.exit()
        self.m.check_memory()
        assert self.m.memory.frames.used_pages <= 512 + 1, "frames leaked"  # the huge zero


TestThpFrames = ThpMachine.TestCase
TestThpFrames.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
