"""Random hugetlb workloads against a naive content model (hypothesis state machine).

Processes map private and shared (memfd) hugetlb regions of 1 to 3 huge pages, with or
without MAP_NORESERVE, write and read single bytes, fork, exit, unmap, resize the pool and
compact memory. The naive model keeps the bytes each process must see (a private region one
dict per process, copied at fork; a shared region one dict for everybody). A write may end
in SIGBUS only when the pool is dry (then nothing was written). After every step the
machine's frames, the pools and the reverse map are recounted (``Machine.check_memory``,
``HState`` invariants) and the buddy allocator is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmsim import (
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_NORESERVE,
    MAP_PRIVATE,
    MAP_SHARED,
    MFD_HUGETLB,
    PROT_READ,
    PROT_WRITE,
    BusError,
    Machine,
)
from vmsim.mm import compaction

M2 = 2 << 20
RW = PROT_READ | PROT_WRITE


@dataclass
class Region:
    addr: int
    pages: int
    shared: bool
    data: dict[int, int]  # offset -> byte (shared: one dict for every process)


@dataclass
class Proc:
    p: object
    regions: list[Region] = field(default_factory=list)


class HugetlbMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.m = Machine(ram="64M", hugepages={"2M": 6}, hugepages_overcommit={"2M": 2})
        self.procs = [Proc(self.m.spawn())]

    def _pool_dry(self) -> bool:
        h = self.m.memory.hugetlb
        assert h is not None
        s = h.default
        return (
            len(s.free) <= s.resv_huge_pages and s.surplus_huge_pages >= s.nr_overcommit_huge_pages
        )

    @rule(
        who=st.integers(0, 3),
        pages=st.integers(1, 3),
        shared=st.booleans(),
        noreserve=st.booleans(),
    )
    def map_region(self, who: int, pages: int, shared: bool, noreserve: bool) -> None:
        pr = self.procs[who % len(self.procs)]
        p = pr.p
        flags = MAP_NORESERVE if noreserve else 0
        try:
            if shared:
                fd = p.memfd_create("r", MFD_HUGETLB)  # type: ignore[attr-defined]
                p.ftruncate(fd, pages * M2)  # type: ignore[attr-defined]
                addr = p.mmap(0, pages * M2, RW, MAP_SHARED | flags, fd)  # type: ignore[attr-defined]
                p.close(fd)  # type: ignore[attr-defined]
            else:
                addr = p.mmap(  # type: ignore[attr-defined]
                    0, pages * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | flags
                )
        except OSError as e:
            assert e.errno == 12 and not noreserve  # only a reservation can fail
            return
        pr.regions.append(Region(addr, pages, shared, {}))

    @precondition(lambda self: any(pr.regions for pr in self.procs))
    @rule(
        who=st.integers(0, 3),
        which=st.integers(0, 9),
        off=st.integers(0, 3 * M2 - 1),
        val=st.integers(1, 255),
    )
    def write(self, who: int, which: int, off: int, val: int) -> None:
        pr = self.procs[who % len(self.procs)]
        if not pr.regions:
            return
        r = pr.regions[which % len(pr.regions)]
        off %= r.pages * M2
        dry = self._pool_dry()
        try:
            pr.p.write(r.addr + off, bytes([val]))  # type: ignore[attr-defined]
        except BusError:
            assert dry, "SIGBUS with pages left in the pool"
            return
        r.data[off] = val

    @precondition(lambda self: any(pr.regions for pr in self.procs))
    @rule(who=st.integers(0, 3), which=st.integers(0, 9))
    def read_back(self, who: int, which: int) -> None:
        pr = self.procs[who % len(self.procs)]
        if not pr.regions:
            return
        r = pr.regions[which % len(pr.regions)]
        for off, val in r.data.items():
            assert pr.p.read(r.addr + off, 1) == bytes([val])  # type: ignore[attr-defined]

    @precondition(lambda self: len(self.procs) < 4)
    @rule(who=st.integers(0, 3))
    def fork(self, who: int) -> None:
        pr = self.procs[who % len(self.procs)]
        child = pr.p.fork()  # type: ignore[attr-defined]
        regions = [
            Region(r.addr, r.pages, r.shared, r.data if r.shared else dict(r.data))
            for r in pr.regions
        ]
        self.procs.append(Proc(child, regions))

    @precondition(lambda self: len(self.procs) > 1)
    @rule(who=st.integers(0, 3))
    def exit(self, who: int) -> None:
        pr = self.procs.pop(who % len(self.procs))
        pr.p.exit()  # type: ignore[attr-defined]

    @precondition(lambda self: any(pr.regions for pr in self.procs))
    @rule(who=st.integers(0, 3), which=st.integers(0, 9))
    def unmap(self, who: int, which: int) -> None:
        pr = self.procs[who % len(self.procs)]
        if not pr.regions:
            return
        r = pr.regions.pop(which % len(pr.regions))
        pr.p.munmap(r.addr, r.pages * M2)  # type: ignore[attr-defined]

    @rule(n=st.integers(0, 8))
    def resize_pool(self, n: int) -> None:
        self.m.set_nr_hugepages("2M", n)

    @rule()
    def compact(self) -> None:
        compaction.compact_zone(self.m.memory, 9)

    @invariant()
    def consistent(self) -> None:
        self.m.check_memory()


TestHugetlbRandom = HugetlbMachine.TestCase
TestHugetlbRandom.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
