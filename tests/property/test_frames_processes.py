"""Random multi-process workloads against a naive content model (no page tables, no frames).

The naive model keeps, per process and region, the bytes the process must see: a private
region is one bytearray per process (fork copies it, WIPEONFORK gives zeros), a shared region
(anonymous MAP_SHARED or a memfd) is one bytearray shared by every process that maps it.
After every step the machine's frames are recounted from the page tables and page caches
(``Machine.check_memory``): refcounts, mapcounts, the frame layer's counters, no leak. Every
read compares whole regions, so data lost or leaked across processes shows up as a mismatch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import vmsim
from vmsim import (
    MADV_DONTNEED,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Segfault,
)
from vmsim.errors import OomKilled
from vmsim.mm.swap_state import reap_swap_cache
from vmsim.mm.truncate import drop_cache_pages

PAGE = 4096
NPAGES = 4
SLOTS = 3
FILE_PAGES = 48  # the regular files of the pressure tests: more than RAM's readahead share
FILE_AT = 20  # the page of the file the mappings start at
BASE = 0x1_0000_0000
RW = PROT_READ | PROT_WRITE


def slot_addr(slot: int) -> int:
    return BASE + slot * 16 * PAGE


@dataclass
class View:
    kind: str  # "private" | "shared" | "memfd"
    data: bytearray  # shared kinds: the same object in every process
    writable: bool = True
    wipe: bool = False


def oom_tolerant(fn: Callable[..., None]) -> Callable[..., None]:
    """A rule under memory pressure may cost a process its life (the OOM killer): that
    process and what it held are gone, the run goes on with the others."""

    @functools.wraps(fn)
    def wrapper(self: FramesMachine, *args: object, **kwargs: object) -> None:
        try:
            fn(self, *args, **kwargs)
        except OomKilled:
            # the process that died may have been writing to memory it shared
            if not hasattr(self, "unknown"):
                self.unknown = set()
            for pr in self.procs:
                if not pr.p.alive:
                    self.unknown.update(
                        id(v.data) for v in pr.views.values() if v.kind != "private"
                    )
        self.procs = [pr for pr in self.procs if pr.p.alive]
        if not self.procs:
            self.procs.append(Proc(self.m.spawn()))

    return wrapper


class Proc:
    def __init__(self, p: vmsim.Process) -> None:
        self.p = p
        self.views: dict[int, View] = {}


class FramesMachine(RuleBasedStateMachine):
    MACHINE: ClassVar[dict[str, object]] = {"ram": "8M"}

    def __init__(self) -> None:
        super().__init__()
        self.m = vmsim.Machine(**self.MACHINE)  # type: ignore[arg-type]
        self.procs = [Proc(self.m.spawn())]

    unknown: set[int]  # id() of shared contents a killed process may have half written

    def _check(self, pr: Proc, slot: int, v: View, got: bytes) -> None:
        """The bytes read must be the expected ones; shared contents a process was writing
        when the OOM killer took it are whatever it managed to write: taken as read."""
        unknown = getattr(self, "unknown", set())
        if id(v.data) in unknown:
            v.data[:] = got
            unknown.discard(id(v.data))
            return
        assert got == bytes(v.data), f"pid {pr.p.pid} slot {slot} ({v.kind}) lost data"

    def _proc(self, i: int) -> Proc:
        self.procs = [pr for pr in self.procs if pr.p.alive]  # the OOM killer took some
        if not self.procs:
            self.procs.append(Proc(self.m.spawn()))
        return self.procs[i % len(self.procs)]

    @rule(
        i=st.integers(0, 3),
        slot=st.integers(0, SLOTS - 1),
        kind=st.sampled_from(["private", "shared", "memfd"]),
        populate=st.booleans(),
    )
    @oom_tolerant
    def map_region(self, i: int, slot: int, kind: str, populate: bool) -> None:
        pr = self._proc(i)
        p = pr.p
        flags = MAP_FIXED | (MAP_POPULATE if populate else 0)
        size = NPAGES * PAGE
        if kind == "private":
            p.mmap(slot_addr(slot), size, RW, flags | MAP_PRIVATE | MAP_ANONYMOUS)
        elif kind == "shared":
            p.mmap(slot_addr(slot), size, RW, flags | MAP_SHARED | MAP_ANONYMOUS)
        else:
            fd = p.memfd_create(f"m{slot}")
            p.ftruncate(fd, size)
            p.mmap(slot_addr(slot), size, RW, flags | MAP_SHARED, fd, 0)
            p.close(fd)
        pr.views[slot] = View(kind, bytearray(size))

    @rule(
        i=st.integers(0, 3),
        slot=st.integers(0, SLOTS - 1),
        off=st.integers(0, NPAGES * PAGE - 1),
        data=st.binary(min_size=1, max_size=6000),
    )
    @oom_tolerant
    def write(self, i: int, slot: int, off: int, data: bytes) -> None:
        pr = self._proc(i)
        v = pr.views.get(slot)
        data = data[: NPAGES * PAGE - off]
        addr = slot_addr(slot) + off
        if v is None or not v.writable:
            try:
                pr.p.write(addr, data)
            except Segfault:
                return
            raise AssertionError(f"write to {addr:#x} should have faulted")
        pr.p.write(addr, data)
        v.data[off : off + len(data)] = data

    @rule(i=st.integers(0, 3), byte=st.integers(1, 255))
    @oom_tolerant
    def write_everything(self, i: int, byte: int) -> None:
        """The process writes one byte into every page it may write."""
        pr = self._proc(i)
        for slot, v in pr.views.items():
            if v.writable:
                for page in range(NPAGES):
                    off = page * PAGE + byte
                    pr.p.write(slot_addr(slot) + off, bytes([byte]))
                    v.data[off] = byte

    @rule()
    @oom_tolerant
    def read_everything(self) -> None:
        for pr in self.procs:
            for slot, v in pr.views.items():
                if not pr.p.alive:
                    break
                got = pr.p.read(slot_addr(slot), NPAGES * PAGE)
                self._check(pr, slot, v, got)

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1))
    @oom_tolerant
    def read(self, i: int, slot: int) -> None:
        pr = self._proc(i)
        v = pr.views.get(slot)
        if v is None:
            return
        got = pr.p.read(slot_addr(slot), NPAGES * PAGE)
        self._check(pr, slot, v, got)

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1))
    @oom_tolerant
    def peek(self, i: int, slot: int) -> None:
        pr = self._proc(i)
        v = pr.views.get(slot)
        if v is not None:
            self._check(pr, slot, v, pr.p.peek(slot_addr(slot), NPAGES * PAGE))

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), writable=st.booleans())
    @oom_tolerant
    def mprotect(self, i: int, slot: int, writable: bool) -> None:
        pr = self._proc(i)
        v = pr.views.get(slot)
        if v is None:
            return
        pr.p.mprotect(slot_addr(slot), NPAGES * PAGE, RW if writable else PROT_READ)
        v.writable = writable

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), lock=st.booleans())
    @oom_tolerant
    def mlock(self, i: int, slot: int, lock: bool) -> None:
        pr = self._proc(i)
        if slot not in pr.views:
            return
        if lock:
            pr.p.mlock(slot_addr(slot), NPAGES * PAGE)
        else:
            pr.p.munlock(slot_addr(slot), NPAGES * PAGE)

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1))
    @oom_tolerant
    def dontneed(self, i: int, slot: int) -> None:
        pr = self._proc(i)
        v = pr.views.get(slot)
        if v is None:
            return
        try:
            pr.p.madvise(slot_addr(slot), NPAGES * PAGE, MADV_DONTNEED)
        except OSError as e:
            assert e.errno == 22  # EINVAL: locked
            return
        if v.kind == "private":
            v.data[:] = bytes(len(v.data))  # shared pages stay in the page cache

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1))
    @oom_tolerant
    def wipeonfork(self, i: int, slot: int) -> None:
        pr = self._proc(i)
        v = pr.views.get(slot)
        if v is None or v.kind != "private":
            return
        pr.p.madvise(slot_addr(slot), NPAGES * PAGE, MADV_WIPEONFORK)
        v.wipe = True

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1))
    @oom_tolerant
    def munmap(self, i: int, slot: int) -> None:
        pr = self._proc(i)
        pr.p.munmap(slot_addr(slot), NPAGES * PAGE)
        pr.views.pop(slot, None)

    @precondition(lambda self: len(self.procs) < 5)
    @rule(i=st.integers(0, 3))
    @oom_tolerant
    def fork(self, i: int) -> None:
        pr = self._proc(i)
        child = Proc(pr.p.fork())
        for slot, v in pr.views.items():
            if v.kind == "private":
                data = bytearray(len(v.data)) if v.wipe else bytearray(v.data)
                child.views[slot] = View("private", data, v.writable, v.wipe)
            else:
                child.views[slot] = View(v.kind, v.data, v.writable)
        self.procs.append(child)

    @precondition(lambda self: len(self.procs) > 1)
    @rule(i=st.integers(0, 3))
    @oom_tolerant
    def exit(self, i: int) -> None:
        pr = self._proc(i)
        pr.p.exit()
        self.procs.remove(pr)

    @invariant()
    def frames_recount(self) -> None:
        self.m.check_memory()

    @invariant()
    def no_stale_tlb_entry(self) -> None:
        self.m.check_tlb()

    def _read_back_and_exit(self) -> None:
        """Every live process reads back what it must see, then exits."""
        for pr in self.procs:
            for slot, v in pr.views.items():
                if pr.p.alive:
                    try:
                        got = pr.p.read(slot_addr(slot), NPAGES * PAGE)
                    except OomKilled:
                        break  # reading needed memory and cost this process its life
                    self._check(pr, slot, v, got)
        for pr in self.procs:
            if pr.p.alive:
                pr.p.exit()

    def _no_leak(self) -> None:
        self.m.check_memory()
        assert self.m.memory.frames.used_pages == 0, "frames leaked after every exit"

    def teardown(self) -> None:
        self._read_back_and_exit()
        self._no_leak()


class PressureMachine(FramesMachine):
    """The same workloads on a machine too small for them: kswapd, direct reclaim, swap,
    zswap and KSM move pages around under the processes, which must never notice."""

    MACHINE: ClassVar[dict[str, object]] = {
        "ram": "256K",
        "swap": "2M",
        "zswap": "lz4",
        "zswap_max_pool_percent": 5,
        "ksm": True,
        "overcommit_memory": 1,
    }

    @initialize(seed=st.integers(0, 2**32 - 1))
    def fill(self, seed: int) -> None:
        """Start under pressure: three private regions of distinct, incompressible pages in
        process 0 and a forked child, more than RAM holds once both write."""
        import random

        rng = random.Random(seed)
        pr = self.procs[0]
        for slot in range(SLOTS):
            self.map_region(0, slot, "private", False)
            v = pr.views[slot]
            data = rng.randbytes(NPAGES * PAGE)
            pr.p.write(slot_addr(slot), data)
            v.data[:] = data
        self.fork(0)

    files: dict[int, tuple[object, bytearray]]

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), populate=st.booleans())
    @oom_tolerant
    def map_file(self, i: int, slot: int, populate: bool) -> None:
        """MAP_SHARED of pages FILE_AT.. of a regular file (one per slot, FILE_PAGES long):
        faults read it with readahead around them, reclaim drops clean pages and writes
        dirty ones back; what the processes wrote must be in the file at the end."""
        import random

        if not hasattr(self, "files"):
            self.files = {}
        if slot not in self.files:
            inode = self.m.inode_for(f"/data/f{slot}", (8, 1), 900 + slot, FILE_PAGES * PAGE)
            rng = random.Random(slot)
            for pg in range(FILE_PAGES):
                inode.backing[pg] = rng.randbytes(PAGE // 2) + bytes(PAGE // 2)
            data = bytearray(b"".join(inode.backing[FILE_AT + k] for k in range(NPAGES)))
            self.files[slot] = (inode, data)
        inode, data = self.files[slot]
        pr = self._proc(i)
        fd = pr.p.open_inode(inode)  # type: ignore[arg-type]
        flags = MAP_SHARED | MAP_FIXED | (MAP_POPULATE if populate else 0)
        pr.p.mmap(slot_addr(slot), NPAGES * PAGE, RW, flags, fd, FILE_AT * PAGE)
        pr.p.close(fd)
        pr.views[slot] = View("file", data)

    def teardown(self) -> None:
        """After the common checks, the files hold what was written (in the page cache or
        written back), and dropping their caches frees every frame."""
        self._read_back_and_exit()
        mem = self.m.memory
        for inode, data in getattr(self, "files", {}).values():
            if id(data) in getattr(self, "unknown", set()):
                continue  # a process was killed while it may have been writing it
            for k in range(NPAGES):
                pg = FILE_AT + k
                pfn = inode.pages.get(pg)  # type: ignore[attr-defined]
                page = (
                    mem.frames.read(pfn) if pfn is not None else inode.backing.get(pg, bytes(PAGE))  # type: ignore[attr-defined]
                )
                assert page == bytes(data[k * PAGE : (k + 1) * PAGE]), f"file page {pg} lost"
            drop_cache_pages(mem, inode, 0, FILE_PAGES)  # type: ignore[arg-type]
        reap_swap_cache(mem)  # what reclaim would free first: swap-cache folios nobody needs
        self._no_leak()

    @rule(n=st.integers(1, 3))
    @oom_tolerant
    def tick(self, n: int) -> None:
        self.m.tick(n)

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), advice=st.sampled_from([20, 21, 12]))
    @oom_tolerant
    def advise(self, i: int, slot: int, advice: int) -> None:
        """MADV_COLD (20), MADV_PAGEOUT (21), MADV_MERGEABLE (12): contents never change."""
        pr = self._proc(i)
        if slot in pr.views:
            try:
                pr.p.madvise(slot_addr(slot), NPAGES * PAGE, advice)
            except OSError as e:
                assert e.errno == 22  # EINVAL: locked

    @rule(i=st.integers(0, 3), slot=st.integers(0, SLOTS - 1), byte=st.integers(0, 3))
    @oom_tolerant
    def write_duplicates(self, i: int, slot: int, byte: int) -> None:
        """Whole pages of one repeated byte: work for KSM and same-filled zswap entries."""
        pr = self._proc(i)
        v = pr.views.get(slot)
        if v is None or not v.writable:
            return
        for page in range(NPAGES):
            data = bytes([byte]) * PAGE
            pr.p.write(slot_addr(slot) + page * PAGE, data)
            v.data[page * PAGE : (page + 1) * PAGE] = data


FramesMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFrames = FramesMachine.TestCase
# derandomize: CI runs the same examples every time; explore with --hypothesis-seed=N
PressureMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPressure = PressureMachine.TestCase


class PressureSsdMachine(PressureMachine):
    """Under pressure on a non-rotational device: swap readahead by VMA, zstd zswap."""

    MACHINE: ClassVar[dict[str, object]] = {
        **PressureMachine.MACHINE,
        "swap_device": "ssd",
        "zswap": "zstd",
    }


class PressureZramMachine(PressureMachine):
    """Under pressure with zram (compressed swap in RAM, synchronous: slots named once are
    read without the swap cache) and no zswap. zram keeps what it swaps in RAM, so the
    pages here compress (half random, half zeros) and RAM is a little larger: random
    pages would leave only the OOM killer."""

    MACHINE: ClassVar[dict[str, object]] = {
        **PressureMachine.MACHINE,
        "ram": "320K",
        "swap_device": "zram",
        "zswap": None,
    }

    @initialize(seed=st.integers(0, 2**32 - 1))
    def fill(self, seed: int) -> None:
        import random

        rng = random.Random(seed)
        pr = self.procs[0]
        for slot in range(SLOTS):
            self.map_region(0, slot, "private", False)
            v = pr.views[slot]
            data = b"".join(rng.randbytes(PAGE // 2) + bytes(PAGE // 2) for _ in range(NPAGES))
            pr.p.write(slot_addr(slot), data)
            v.data[:] = data
        self.fork(0)


class PressureLegacyZswapMachine(PressureMachine):
    """Under pressure with the zswap of Linux 6.11 (same-filled entries, no zeromap)."""

    MACHINE: ClassVar[dict[str, object]] = {
        **PressureMachine.MACHINE,
        "zswap_same_filled": True,
    }


for _cls in (PressureSsdMachine, PressureZramMachine, PressureLegacyZswapMachine):
    _cls.TestCase.settings = settings(
        max_examples=50,
        stateful_step_count=60,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
TestPressureSsd = PressureSsdMachine.TestCase
TestPressureZram = PressureZramMachine.TestCase
TestPressureLegacyZswap = PressureLegacyZswapMachine.TestCase
