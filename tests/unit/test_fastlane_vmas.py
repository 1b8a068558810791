"""The fast lane's VMA engine (vmsim.fastlane.vmas) against the Python model, its twin.

Every layout is made with the Python Process API (anonymous, NORESERVE, shared, file-backed
private and shared, a read-only open, a memfd, a SysV attach, a stack, special mappings,
anon_vmas from anon_vma_prepare(), a fork (anon_singular False), mseal, mlock2(ONFAULT));
then the same mprotect/munmap calls go to the engine and to the model, with random and
hostile arguments, at max_map_count values around the layout's map_count. After every call:
(return, errno, cause, detail), every VMA (start, end, flags, pgoff, file and anon_vma
identity, anon_singular, name, swap_ra), map_count, committed pages, map_count_needed,
locked_vm. A call the engine declines (BAIL) must leave it unchanged; the model runs it and
the engine is rebuilt from the model, as the replay will do.
"""

from __future__ import annotations

import errno
import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import vmsim
from vmsim import constants as C
from vmsim.errors import MmError, OomKilled
from vmsim.fastlane import _vmas as K
from vmsim.fastlane.vmas import BAIL, VmaArrays, VmaRecord
from vmsim.mm import flags as F
from vmsim.process import Process

PAGE = 4096
BASE = 0x7E0000000000
ANON = C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_FIXED
RW = C.PROT_READ | C.PROT_WRITE
U64 = (1 << 64) - 1

KINDS = (
    "anon",
    "anon",
    "anon",
    "noreserve",
    "shared_anon",
    "file",
    "file",
    "file_shared",
    "file_other_open",
    "file_ro_shared",
    "memfd",
    "stack",
    "sysv",
)


# ------------------------------------------------------------------ the model's side
def records(p: Process) -> list[VmaRecord]:
    return [
        (v.start, v.end, v.flags, v.pgoff, v.file, v.anon_vma, v.anon_singular, v.name, v.swap_ra)
        for v in p.mm.tree
    ]


def numbers(p: Process) -> tuple[int, int, int, int, int | None]:
    cfg = p.mm.cfg
    mm = p.mm
    return (p.map_count, cfg.committed_pages, cfg.map_count_needed, mm.locked_vm, mm.placement_hint)


def engine_numbers(e: VmaArrays) -> tuple[int, int, int, int, int | None]:
    return (e.map_count, e.committed_pages, e.map_count_needed, e.locked_vm, e.placement_hint)


def model_call(p: Process, name: str, args: tuple[int, ...]) -> tuple[Any, ...]:
    """(ret, errno, cause, detail) of the model's call, or the exception type it raised
    before reaching the kernel (OverflowError)."""
    try:
        ret = getattr(p, name)(*args)
    except MmError as err:
        return (-1, err.errno, err.cause, err.detail)
    except OverflowError:
        return ("overflow",)
    except OomKilled:  # MAP_LOCKED or MAP_POPULATE of more than RAM: the engine declines it
        return ("oom",)
    return (0 if ret is None else ret, 0, None, "")


def engine_call(e: VmaArrays, name: str, args: tuple[int, ...]) -> tuple[Any, ...] | None:
    """The same from the engine; None for BAIL."""
    try:
        code = getattr(e, name)(*args)
    except OverflowError:
        return ("overflow",)
    if code == BAIL:
        return None
    if code == 0:
        return (e.address if name == "mmap" else 0, 0, None, "")
    err = e.error(code)
    return (-1, err.errno, err.cause, err.detail)


class Twin:
    """A process and the engine built from it, driven in step."""

    def __init__(self, p: Process) -> None:
        self.p = p
        self.e = VmaArrays.from_mm(p.mm)
        self.bails = 0
        self.calls = 0
        self.dead = False  # the model's OOM killer took the process (on a call the engine declined)
        self.check()

    def check(self) -> None:
        assert self.e.vmas() == records(self.p)
        assert engine_numbers(self.e) == numbers(self.p)
        assert self.e.total_vm == self.p.mm.total_vm

    def call(self, name: str, *args: int) -> tuple[Any, ...]:
        before = self.e.vmas()
        before_numbers = engine_numbers(self.e)
        got = engine_call(self.e, name, args)
        want = model_call(self.p, name, args)
        self.calls += 1
        if currently_in_test_context():
            what = "BAIL" if got is None else want[:3] if want[0] in (-1, "overflow") else "ok"
            event(f"{name}: {what}")
        if got is None:  # BAIL: nothing changed; the model ran it, the engine starts again
            self.bails += 1
            assert self.e.vmas() == before
            assert engine_numbers(self.e) == before_numbers
            if want == ("oom",):
                self.dead = True
                return want
            self.e = VmaArrays.from_mm(self.p.mm)
        else:
            assert got == want, (name, [hex(a) for a in args])
        self.check()
        return want


# ------------------------------------------------------------------ layouts
segment = st.tuples(
    st.integers(0, 2),  # gap before, pages
    st.integers(1, 6),  # pages
    st.sampled_from(KINDS),
    st.sampled_from([C.PROT_NONE, C.PROT_READ, RW, RW, C.PROT_READ | C.PROT_EXEC]),
    # 1: anon_vma_prepare, 2: mseal, 4: mlock2(MLOCK_ONFAULT), 8: the sticky VM_MAYBE_GUARD
    # (what MADV_GUARD_INSTALL + REMOVE leave, without their page tables), 16: swap_ra
    st.integers(0, 31),
    st.integers(0, 3),  # file page offset, in pages (continuity decides merges)
)


def build(
    segments: list[tuple[int, int, str, int, int, int]],
    *,
    fork: bool = False,
    overcommit: int = 0,
    big: bool = False,
    thp: str = "madvise",
) -> Process:
    """A process holding ``segments`` from BASE on (see ``segment``)."""
    ram = "16M" if overcommit != 1 else "64M"
    m = vmsim.Machine(overcommit_memory=overcommit, ram=ram, thp=thp)
    p = m.spawn("linux")
    inode = m.inode_for("/data/file", (8, 1), 77, 64 * PAGE)
    fd = p.open_inode(inode)
    fd2 = p.open_inode(inode)
    fd_ro = p.open_inode(inode, writable=False)
    memfd = p.memfd_create("buf")
    p.ftruncate(memfd, 64 * PAGE)
    shmid = p.shmget(0, 64 * PAGE, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    addr = BASE
    prepare = []
    for gap, npages, kind, prot, extra, off in segments:
        addr += gap * PAGE
        length = npages * PAGE
        shared = C.MAP_SHARED | C.MAP_FIXED
        private = C.MAP_PRIVATE | C.MAP_FIXED
        if kind == "anon":
            p.mmap(addr, length, prot, ANON)
        elif kind == "noreserve":
            p.mmap(addr, length, prot, ANON | C.MAP_NORESERVE)
        elif kind == "shared_anon":
            p.mmap(addr, length, prot, C.MAP_SHARED | C.MAP_ANONYMOUS | C.MAP_FIXED)
        elif kind == "stack":
            p.mmap(addr, length, prot, ANON | C.MAP_GROWSDOWN)
        elif kind == "file":
            p.mmap(addr, length, prot, private, fd, off * PAGE)
        elif kind == "file_shared":
            p.mmap(addr, length, prot, shared, fd, off * PAGE)
        elif kind == "file_other_open":
            p.mmap(addr, length, prot, private, fd2, off * PAGE)
        elif kind == "file_ro_shared":
            p.mmap(addr, length, prot & ~C.PROT_WRITE, shared, fd_ro, off * PAGE)
        elif kind == "memfd":
            p.mmap(addr, length, prot, shared, memfd, off * PAGE)
        else:  # a SysV attach (read-only when the segment asks for no write)
            p.shmat(shmid, addr, 0 if prot & C.PROT_WRITE else 0o10000)  # SHM_RDONLY
            length = 64 * PAGE
        if extra & 1:
            prepare.append(addr)
        if extra & 2:
            p.mseal(addr, length)
        if extra & 4:
            p.mlock2(addr, length, C.MLOCK_ONFAULT)
        if extra & 24:
            vma = p.mm.tree.lookup(addr)
            assert vma is not None
            if extra & 8:
                vma.flags |= F.VM_MAYBE_GUARD
            if extra & 16:
                vma.swap_ra = (addr, 4, extra)
        addr += length
    if big:  # a read-only mapping larger than RAM + swap: PROT_WRITE charges it
        p.mmap(addr + PAGE, 5000 * PAGE, C.PROT_READ, ANON)
    for a in prepare:
        vma = p.mm.tree.lookup(a)
        if vma is not None and not vma.flags & F.VM_SHARED:
            p.mm.anon_vma_prepare(vma)
    if fork:
        child = p.fork()
        p.exit()
        p = child
        # a VMA given its own anon_vma after the fork has a singular chain again
        if prepare:
            vma = p.mm.tree.lookup(prepare[-1])
            if vma is not None and vma.anon_vma is None and not vma.flags & F.VM_SHARED:
                p.mm.anon_vma_prepare(vma)
    assert p.mm.pt.table_pages <= 1  # no page tables: the engine models every call
    return p


HOSTILE_ADDRS = (0, 1, PAGE - 1, 1 << 47, (1 << 47) - PAGE, 1 << 63, U64, U64 - PAGE + 1, -1)
HOSTILE_LENGTHS = (0, 1, PAGE - 1, PAGE + 1, 1 << 63, U64, U64 - PAGE + 1, 1 << 47, -1, -PAGE)
PROTS = (
    C.PROT_NONE,
    C.PROT_READ,
    C.PROT_WRITE,
    RW,
    RW | C.PROT_EXEC,
    C.PROT_EXEC,
    C.PROT_READ | C.PROT_SEM,
    C.PROT_GROWSDOWN | C.PROT_READ,
    C.PROT_GROWSDOWN | RW,
    C.PROT_GROWSUP | C.PROT_READ,
    C.PROT_GROWSDOWN | C.PROT_GROWSUP,
    0x10,
    (1 << 32) | C.PROT_READ,  # & U32: PROT_READ
    -1,
)


@st.composite
def call(draw: st.DrawFn, p: Process) -> tuple[str, tuple[int, ...]]:
    vmas = list(p.mm.tree)
    bounds = sorted({v.start for v in vmas} | {v.end for v in vmas})
    near = [v for v in vmas if v.start >= BASE - PAGE] or vmas
    how = draw(st.integers(0, 9))
    if how <= 5 and near:  # around the layout's boundaries, inside or across VMAs
        v = draw(st.sampled_from(near))
        addr = v.start + draw(st.integers(-2, (v.end - v.start) // PAGE + 1)) * PAGE
        if draw(st.integers(0, 3)) == 0:
            end = draw(st.sampled_from(bounds))
            length = end - addr
        else:
            length = draw(st.integers(0, 9)) * PAGE
    elif how <= 7:
        addr = draw(st.sampled_from(bounds)) + draw(st.sampled_from((0, 0, 1, PAGE, -PAGE)))
        length = draw(st.sampled_from((*HOSTILE_LENGTHS, PAGE, 3 * PAGE)))
    else:
        addr = draw(st.sampled_from(HOSTILE_ADDRS))
        length = draw(st.sampled_from((*HOSTILE_LENGTHS, PAGE)))
    if draw(st.integers(0, 40)) == 0:
        addr = draw(st.sampled_from((1 << 64, -(1 << 63) - 1)))  # fits no register
    what = draw(st.integers(0, 4))
    if what <= 1:
        return ("mprotect", (addr, length, draw(st.sampled_from(PROTS))))
    if what <= 3:
        return ("munmap", (addr, length))
    flags = draw(st.sampled_from(MAP_TYPES)) | draw(st.sampled_from(MAP_EXTRAS))
    if draw(st.booleans()):
        flags |= C.MAP_FIXED
    elif draw(st.integers(0, 3)) == 0:
        flags |= C.MAP_FIXED_NOREPLACE
    if draw(st.integers(0, 2)) == 0:
        addr = 0
    if draw(st.integers(0, 3)) == 0:
        length = draw(st.sampled_from((C.PMD_SIZE, 2 * C.PMD_SIZE, 5000 * PAGE)))
    offset = draw(st.sampled_from((0, 0, 0, PAGE, 1, 1 << 64)))
    prot = draw(st.sampled_from((C.PROT_NONE, C.PROT_READ, RW, RW, C.PROT_EXEC | RW, -1)))
    return ("mmap", (addr, length, prot, flags, -1, offset))


MAP_TYPES = (C.MAP_PRIVATE | C.MAP_ANONYMOUS,) * 6 + (
    C.MAP_SHARED | C.MAP_ANONYMOUS,  # BAIL: shmem
    C.MAP_SHARED_VALIDATE | C.MAP_ANONYMOUS,  # EINVAL
    C.MAP_ANONYMOUS,  # EINVAL
    C.MAP_DROPPABLE | C.MAP_ANONYMOUS,
    C.MAP_PRIVATE,  # BAIL: a file (fd -1: EBADF in the model)
)
MAP_EXTRAS = (0, 0, 0, 0, C.MAP_NORESERVE, C.MAP_GROWSDOWN, C.MAP_STACK, C.MAP_SYNC)
MAP_EXTRAS += (C.MAP_POPULATE | C.MAP_NONBLOCK, C.MAP_POPULATE, C.MAP_LOCKED, C.MAP_32BIT)


_SETTINGS = settings(
    max_examples=int(os.environ.get("VMSIM_FASTLANE_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@_SETTINGS
@given(
    segments=st.lists(segment, min_size=1, max_size=9),
    fork=st.booleans(),
    overcommit=st.sampled_from([0, 0, 1, 2]),
    big=st.booleans(),
    slack=st.sampled_from([0, 1, 2, 3, 5, 1000]),
    thp=st.sampled_from(["madvise", "never"]),
    data=st.data(),
)
def test_twin_random_layouts_and_calls(
    segments: list[tuple[int, int, str, int, int, int]],
    fork: bool,
    overcommit: int,
    big: bool,
    slack: int,
    thp: str,
    data: st.DataObject,
) -> None:
    p = build(segments, fork=fork, overcommit=overcommit, big=big, thp=thp)
    cfg = p.mm.cfg
    p.machine.max_map_count = p.map_count + slack  # at the limit, and just above it
    if overcommit == 2:  # the commit limit a few pages above what is charged
        limit = cfg.ram_pages * cfg.overcommit_ratio // 100 + cfg.swap_pages
        cfg.committed_pages = max(0, limit - data.draw(st.integers(0, 12)))
    t = Twin(p)
    for _ in range(data.draw(st.integers(1, 14))):
        name, args = data.draw(call(p))
        if name == "mmap" and data.draw(st.integers(0, 3)) == 0:  # the replay's hint
            near = args[0] if 0 <= args[0] < 1 << 62 else BASE  # an address, as ev.ret is
            hint = data.draw(st.sampled_from((BASE, BASE + 64 * PAGE, near, 1 << 47, 1)))
            t.e.placement_hint = p.mm.placement_hint = hint
        t.call(name, *args)
        if t.dead:
            return


@st.composite
def mmap_call(draw: st.DrawFn, p: Process) -> tuple[str, tuple[int, ...]]:
    """Mostly valid anonymous private mmaps: no address, a hint, MAP_FIXED(_NOREPLACE)
    over or beside the layout; 2 MiB multiples (the THP-aligned search)."""
    vmas = [v for v in p.mm.tree if BASE - (64 << 20) <= v.start < BASE + (64 << 20)]
    bounds = sorted({v.start for v in vmas} | {v.end for v in vmas}) or [BASE]
    length = draw(
        st.sampled_from((PAGE, 2 * PAGE, 5 * PAGE, 64 * PAGE, C.PMD_SIZE, 2 * C.PMD_SIZE))
    )
    flags = C.MAP_PRIVATE | C.MAP_ANONYMOUS | draw(st.sampled_from(MAP_EXTRAS[:8]))
    how = draw(st.integers(0, 5))
    addr = 0
    if how == 1:
        addr = draw(st.sampled_from(bounds)) + draw(st.sampled_from((0, PAGE, -PAGE, 1)))
    elif how >= 2:
        addr = draw(st.sampled_from(bounds)) + draw(st.integers(-3, 3)) * PAGE
        flags |= C.MAP_FIXED if how <= 4 else C.MAP_FIXED_NOREPLACE
    prot = draw(st.sampled_from((C.PROT_NONE, C.PROT_READ, RW, RW)))
    return ("mmap", (addr, length, prot, flags))


@_SETTINGS
@given(
    segments=st.lists(segment, min_size=0, max_size=6),
    overcommit=st.sampled_from([0, 1, 2]),
    slack=st.sampled_from([0, 1, 2, 1000]),
    thp=st.sampled_from(["madvise", "never"]),
    data=st.data(),
)
def test_twin_mmap_sequences(
    segments: list[tuple[int, int, str, int, int, int]],
    overcommit: int,
    slack: int,
    thp: str,
    data: st.DataObject,
) -> None:
    """mmap-heavy sequences: placement (top-down gaps, hints, stack guard gaps, THP
    alignment), MAP_FIXED over VMAs (gather, accounting carried over), merges with the
    neighbours, at and below the map_count limit."""
    p = build(segments, overcommit=overcommit, thp=thp)
    p.machine.max_map_count = p.map_count + slack
    if overcommit == 2:
        cfg = p.mm.cfg
        limit = cfg.ram_pages * cfg.overcommit_ratio // 100 + cfg.swap_pages
        cfg.committed_pages = max(0, limit - data.draw(st.integers(0, 600)))
    t = Twin(p)
    for _ in range(data.draw(st.integers(1, 20))):
        if data.draw(st.integers(0, 4)) < 3:
            name, args = data.draw(mmap_call(p))
            if data.draw(st.integers(0, 4)) == 0:
                near = args[0] if 0 < args[0] < 1 << 62 else BASE
                hint = data.draw(st.sampled_from((BASE, BASE + 64 * PAGE, near)))
                t.e.placement_hint = p.mm.placement_hint = hint
        else:
            name, args = data.draw(call(p))
        t.call(name, *args)
        if t.dead:
            return
    p.mm.check()


# ------------------------------------------------------------------ fixed cases
def fresh(**machine: Any) -> Process:
    return vmsim.Machine(**machine).spawn("linux")


@pytest.mark.parametrize("slack", [0, 1, 2, 3, 4, 5, 6])
def test_split_thresholds_at_the_limit(slack: int) -> None:
    """split_vma_twice()'s two checks, split_vma()'s, and munmap's gather check, each at
    max_map_count = map_count + slack: a call needing more fails with ENOMEM map_count,
    split_vma_twice() leaving its first split when only the second check fails."""
    p = fresh()
    a = p.mmap(BASE, 64 * PAGE, C.PROT_READ, ANON)
    base = p.map_count
    p.machine.max_map_count = base + slack
    t = Twin(p)
    outcomes = [
        t.call("mprotect", a + 8 * PAGE, PAGE, RW),  # in the middle: +2
        t.call("mprotect", a + 20 * PAGE, 2 * PAGE, RW),  # +2
        t.call("mprotect", a, PAGE, C.PROT_NONE),  # at the start: +1
        t.call("munmap", a + 40 * PAGE, PAGE),  # in the middle: +1
        t.call("munmap", a + 63 * PAGE, PAGE),  # at the end: no check, net 0
    ]
    ok = {0: "----+", 1: "----+", 2: "+---+", 3: "+---+", 4: "++--+", 5: "+++-+", 6: "+++++"}
    assert "".join("+" if o[0] == 0 else "-" for o in outcomes) == ok[slack]
    assert all(o[2] == "map_count" for o in outcomes if o[0] == -1)
    assert p.map_count == base + slack  # the half-done splits stay
    assert t.bails == 0


def test_merges_of_every_case() -> None:
    """vma_merge_existing_range()'s five cases, and the refusals (anon_vmas, pgoff)."""
    p = fresh()
    a = p.mmap(BASE, 12 * PAGE, C.PROT_READ, ANON)
    t = Twin(p)
    t.call("mprotect", a + 4 * PAGE, 4 * PAGE, RW)  # split twice
    t.call("mprotect", a + 3 * PAGE, PAGE, RW)  # next grows down over the tail of vma
    t.call("mprotect", a + 8 * PAGE, PAGE, RW)  # prev grows over the head of vma
    t.call("mprotect", a + 9 * PAGE, 3 * PAGE, RW)  # prev + whole vma
    t.call("mprotect", a + 3 * PAGE, 6 * PAGE, C.PROT_READ)  # whole vma + next
    t.call("mprotect", a + 3 * PAGE, 6 * PAGE, RW)
    t.call("mprotect", a, 3 * PAGE, RW)  # prev... none: vma + next
    assert len([v for v in p.mm.tree if BASE <= v.start < BASE + (1 << 30)]) == 1
    t.call("mprotect", a + 5 * PAGE, PAGE, C.PROT_READ)
    p.mm.anon_vma_prepare(p.mm.tree.lookup(a))
    p.mm.anon_vma_prepare(p.mm.tree.lookup(a + 11 * PAGE))  # a second, different anon_vma
    t = Twin(p)
    t.call("mprotect", a + 5 * PAGE, PAGE, RW)  # prev and next incompatible: left only
    assert t.bails == 0


def test_fork_keeps_inherited_anon_vmas_apart() -> None:
    p = fresh()
    a = p.mmap(BASE, 8 * PAGE, RW, ANON)
    p.mm.anon_vma_prepare(p.mm.tree.lookup(a))
    p.mprotect(a + 4 * PAGE, 4 * PAGE, C.PROT_READ)
    child = p.fork()
    child.mm.anon_vma_prepare(child.mm.tree.lookup(a + 4 * PAGE))
    t = Twin(child)
    t.call("mprotect", a + 4 * PAGE, 2 * PAGE, RW)
    t.call("mprotect", a, 2 * PAGE, C.PROT_READ)
    assert t.bails == 0


def test_an_inherited_anon_vma_is_not_shared_with_a_neighbour() -> None:
    """is_mergeable_anon_vma(): a neighbour whose anon_vma came through fork (chain not
    singular) does not give it to the range (left), a neighbour without one takes the
    range (right)."""
    p = fresh()
    a = p.mmap(BASE, 2 * PAGE, RW, ANON)
    p.mmap(BASE + 2 * PAGE, 2 * PAGE, C.PROT_READ, ANON)
    p.mmap(BASE + 4 * PAGE, 2 * PAGE, RW | C.PROT_EXEC, ANON)
    d = p.mmap(BASE + 16 * PAGE, 2 * PAGE, RW, ANON)
    p.mmap(BASE + 18 * PAGE, 2 * PAGE, C.PROT_READ, ANON)
    p.mm.anon_vma_prepare(p.mm.tree.lookup(a))
    p.mm.anon_vma_prepare(p.mm.tree.lookup(d + 2 * PAGE))
    child = p.fork()
    t = Twin(child)
    t.call("mprotect", a + 2 * PAGE, 2 * PAGE, RW)  # prev inherited: no merge
    t.call("mprotect", a + 4 * PAGE, 2 * PAGE, RW)  # next without anon_vma: merges
    t.call("mprotect", d + 2 * PAGE, 2 * PAGE, RW)  # the range's own is inherited: no merge
    starts = [(v.start - BASE) // PAGE for v in child.mm.tree if BASE <= v.start < BASE + PAGE * 32]
    assert starts == [0, 2, 16, 18]
    assert t.bails == 0


def test_a_sysv_attach_is_not_merged_away() -> None:
    """can_merge_remove_vma(): a SysV attach split by mprotect and made whole again keeps
    its pieces (a merge would delete one without shm_close())."""
    p = fresh()
    shmid = p.shmget(0, 16 * PAGE, 0o1000 | 0o600)
    a = p.shmat(shmid, BASE)
    p.mprotect(a + 4 * PAGE, 4 * PAGE, C.PROT_READ)
    t = Twin(p)
    t.call("mprotect", a + 4 * PAGE, 4 * PAGE, RW)
    t.call("mprotect", a, 4 * PAGE, C.PROT_READ)
    t.call("mprotect", a, 4 * PAGE, RW)
    assert len([v for v in p.mm.tree if BASE <= v.start < BASE + 16 * PAGE]) == 3
    assert t.bails == 0


def test_merge_refusals_and_sticky_flags() -> None:
    """Page-offset continuity with prev (a file mapped at offsets 0 and 4 stays two VMAs,
    at 0 and 2 merges), the sticky VM_MAYBE_GUARD of a neighbour kept by the merge."""
    m = vmsim.Machine()
    p = m.spawn("linux")
    fd = p.open_inode(m.inode_for("/data/f", (8, 1), 9, 64 * PAGE))
    fixed = C.MAP_PRIVATE | C.MAP_FIXED
    p.mmap(BASE, 2 * PAGE, RW, fixed, fd, 0)
    p.mmap(BASE + 2 * PAGE, 2 * PAGE, C.PROT_READ, fixed, fd, 4 * PAGE)
    p.mmap(BASE + 8 * PAGE, 2 * PAGE, RW, fixed, fd, 0)
    p.mmap(BASE + 10 * PAGE, 2 * PAGE, C.PROT_READ, fixed, fd, 2 * PAGE)
    g = p.mmap(BASE + 32 * PAGE, 2 * PAGE, RW, ANON)
    vma = p.mm.tree.lookup(g)
    assert vma is not None
    vma.flags |= F.VM_MAYBE_GUARD  # what MADV_GUARD_INSTALL + REMOVE leave
    p.mmap(BASE + 34 * PAGE, 2 * PAGE, C.PROT_READ, ANON)
    t = Twin(p)
    t.call("mprotect", BASE + 2 * PAGE, 2 * PAGE, RW)  # pgoff 2 != 4: no merge
    t.call("mprotect", BASE + 10 * PAGE, 2 * PAGE, RW)  # continuous: merges
    t.call("mprotect", BASE + 34 * PAGE, 2 * PAGE, RW)  # merges into the guard-marked one
    mine = [v for v in p.mm.tree if BASE <= v.start < BASE + 64 * PAGE]
    assert [(v.start - BASE) // PAGE for v in mine] == [0, 2, 8, 32]
    assert mine[-1].end == BASE + 36 * PAGE and mine[-1].flags & F.VM_MAYBE_GUARD
    assert t.bails == 0


def test_mmap_beside_a_moved_vma() -> None:
    """vma_merge_new_range(): a VMA with an anon_vma moved by mremap keeps its page offset,
    so a new mapping just below or just above it does not merge with it."""
    p = fresh()
    a = p.mmap(BASE + 64 * PAGE, 2 * PAGE, RW, ANON)
    p.mm.anon_vma_prepare(p.mm.tree.lookup(a))  # (unfaulted, the move would relocate pgoff)
    moved = p.mremap(a, 2 * PAGE, 2 * PAGE, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, BASE + 10 * PAGE)
    assert moved == BASE + 10 * PAGE
    p.mmap(BASE + 20 * PAGE, 2 * PAGE, RW, ANON)
    t = Twin(p)
    t.call("mmap", BASE + 8 * PAGE, 2 * PAGE, RW, ANON)  # next's pgoff does not follow
    t.call("mmap", BASE + 12 * PAGE, 2 * PAGE, RW, ANON)  # nor prev's
    t.call("mmap", BASE + 18 * PAGE, 2 * PAGE, RW, ANON)  # merges with next
    mine = [v for v in p.mm.tree if BASE <= v.start < BASE + 64 * PAGE]
    assert [(v.start - BASE) // PAGE for v in mine] == [8, 10, 12, 18]
    assert t.bails == 0


def test_mmap_bottom_up_when_nothing_is_free_below_mmap_base() -> None:
    """arch_get_unmapped_area() after the top-down search fails: the lowest gap from
    mmap_legacy_base, then ENOMEM address_space when no gap is large enough."""
    p = vmsim.Machine().spawn()
    low = 0x10000
    p.mmap(low, p.mm.mmap_base - low, C.PROT_NONE, ANON | C.MAP_NORESERVE)
    t = Twin(p)
    first = t.call("mmap", 0, 4 * PAGE, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
    assert first[0] == p.mm.mmap_base  # the lowest free byte above legacy base
    t.call("mmap", 0, C.PMD_SIZE, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
    t.call("mmap", 0, 1 << 46, C.PROT_READ, C.MAP_PRIVATE | C.MAP_ANONYMOUS)
    assert t.bails == 0


SMAPS_NAMED_NEIGHBOUR = """\
00000000-00002000 r--p 00000000 00:00 0                                  [uprobes]
VmFlags: rd mr mw me
00002000-00004000 rw-p 00000000 00:00 0
Anonymous:             0 kB
VmFlags: rd wr mr mw me
"""


def test_a_named_neighbour_never_merges() -> None:
    """is_mergeable_vma(): a neighbour with a name (a special mapping) does not take the
    range, flags, file, anon_vma and page offset all matching."""
    p = vmsim.Machine().spawn(maps=SMAPS_NAMED_NEIGHBOUR)
    t = Twin(p)
    t.call("mprotect", 0x2000, 0x2000, C.PROT_READ)
    assert [v.start for v in p.mm.tree] == [0, 0x2000]
    first, last = p.mm.tree.first(), p.mm.tree.last()
    assert first is not None and last is not None and first.flags == last.flags
    assert t.bails == 0


def test_special_mappings_and_the_stack() -> None:
    """[vvar] (VM_PFNMAP|VM_IO: no VM_MAYWRITE), [vdso], the stack with PROT_GROWSDOWN."""
    p = fresh()
    t = Twin(p)
    named = {v.name: v for v in p.mm.tree if v.name}
    vdso = named["[vdso]"]
    vvar = named["[vvar]"]
    assert t.call("mprotect", vvar.start, PAGE, RW)[1] == errno.EACCES
    t.call("mprotect", vdso.start, PAGE, C.PROT_READ)
    t.call("mprotect", vdso.start, PAGE, C.PROT_READ | C.PROT_EXEC)
    t.call("munmap", vdso.start + PAGE, PAGE)
    stack = p.mm.tree.last()
    assert stack is not None
    t.call("mprotect", stack.end - PAGE, PAGE, C.PROT_READ | C.PROT_GROWSDOWN)
    t.call("mprotect", stack.end - PAGE, PAGE, C.PROT_READ | C.PROT_GROWSUP)
    assert t.bails == 0


def test_overcommit_refusal_and_detail() -> None:
    for mode in (0, 2):
        p = fresh(overcommit_memory=mode, ram="16M")
        a = p.mmap(BASE, 5000 * PAGE, C.PROT_READ, ANON)
        cfg = p.mm.cfg
        if mode == 2:
            cfg.committed_pages = cfg.ram_pages * cfg.overcommit_ratio // 100 - 3
        t = Twin(p)
        got = t.call("mprotect", a, 5000 * PAGE, RW)
        assert got[:3] == (-1, errno.ENOMEM, "overcommit")
        t.call("mprotect", a + PAGE, 3 * PAGE, RW)  # mode 2: fits exactly
        t.call("mprotect", a + 8 * PAGE, PAGE, RW)  # mode 2: one page over
        t.call("munmap", a, 5000 * PAGE)  # the charge given back


def test_munmap_many_vmas_and_locked_vm() -> None:
    p = fresh()
    a = p.mmap(BASE, 600 * PAGE, C.PROT_READ, ANON)
    for i in range(1, 600, 2):
        p.mprotect(a + i * PAGE, PAGE, RW)
    p.mlock2(a + 100 * PAGE, 50 * PAGE, C.MLOCK_ONFAULT)
    t = Twin(p)
    t.call("munmap", a + 5 * PAGE + 0, 400 * PAGE)  # across blocks of the engine
    t.call("munmap", a + 3 * PAGE, PAGE)
    t.call("mprotect", a, 600 * PAGE, C.PROT_READ)
    t.call("munmap", a, 600 * PAGE)
    assert t.bails == 0


def test_descending_and_random_splits_past_block_size() -> None:
    """Thousands of splits in the engine's blocks (block splits, the index shifting)."""
    p = fresh()
    n = 3000
    a = p.mmap(BASE, 2 * n * PAGE, C.PROT_READ, ANON)
    t = Twin(p)
    rng = np.random.default_rng(7)
    order = list(range(n - 1, 0, -1))[:1200] + [int(i) for i in rng.permutation(n)[:1200]]
    for i in order:
        got = engine_call(t.e, "mprotect", (a + 2 * i * PAGE, PAGE, RW))
        want = model_call(p, "mprotect", (a + 2 * i * PAGE, PAGE, RW))
        assert got == want
    t.check()
    for i in rng.permutation(2 * n)[:800]:
        assert engine_call(t.e, "munmap", (a + int(i) * PAGE, PAGE)) == model_call(
            p, "munmap", (a + int(i) * PAGE, PAGE)
        )
    t.check()


def test_the_recorded_fill_trace() -> None:
    """The fill trace (tests/fixtures/traces/fill_map_count.exec.strace.gz): its layout as
    the replay builds it up to the first mprotect of the fill, then every mprotect and munmap
    of the trace (32,7xx splits to ENOMEM at 65,530, munmaps at the limit), through the
    engine and the model, which must agree call by call and end with the same VMAs."""
    from vmsim.trace import read_strace
    from vmsim.trace.replay import Replayer

    path = Path(__file__).parent.parent / "fixtures" / "traces" / "fill_map_count.exec.strace.gz"
    with gzip.open(path, "rt") as f:
        events = list(read_strace(f))
    big = next(i for i, ev in enumerate(events) if ev.name == "mmap" and ev.args[1] == 573440000)
    first = big + 1
    r = Replayer(max_map_count=65530)
    r.feed(iter(events[:first]))
    p = r.machine.processes[-1]
    assert events[first].name == "mprotect" and p.mm.pt.table_pages <= 1
    recorded = events[big].ret
    assert recorded is not None
    vma = next(v for v in p.mm.tree if v.end - v.start == 573440000)
    delta = vma.start - recorded
    e = VmaArrays.from_mm(p.mm)
    calls = 0
    causes: list[str | None] = []
    for ev in events[first:]:
        if getattr(ev, "name", None) not in ("mprotect", "munmap"):
            continue
        args = (int(ev.args[0]) + delta, *(int(a) for a in ev.args[1:]))
        got = engine_call(e, ev.name, args)
        want = model_call(p, ev.name, args)
        assert got == want, ev
        calls += 1
        causes.append(want[2])
    assert calls > 32_000
    # the model's layout (without the recorded binaries) is not the process's to the VMA, so
    # its limit comes a few calls off the kernel's: the twins agree with each other
    assert causes.count("map_count") >= 2  # the fill's last mprotect and the munmap after it
    assert p.map_count == e.map_count
    assert e.vmas() == records(p)
    assert engine_numbers(e) == numbers(p)


# ------------------------------------------------------------------ BAIL
def test_bail_with_page_tables() -> None:
    p = fresh()
    a = p.mmap(BASE, 4 * PAGE, RW, ANON)
    p.write(a, b"x")
    e = VmaArrays.from_mm(p.mm)
    before = e.vmas()
    assert e.mprotect(a, PAGE, C.PROT_READ) == BAIL
    assert e.munmap(a, PAGE) == BAIL
    assert e.vmas() == before


def test_bail_hugetlb_locked_and_deleted() -> None:
    p = fresh(hugepages={"2M": 2})
    h = p.mmap(0, 2 << 20, RW, C.MAP_PRIVATE | C.MAP_ANONYMOUS | C.MAP_HUGETLB)
    a = p.mmap(BASE, 4 * PAGE, C.PROT_READ, ANON)
    p.mlock2(a, 2 * PAGE, C.MLOCK_ONFAULT)
    memfd = p.memfd_create("x")
    p.ftruncate(memfd, 4 * PAGE)
    b = p.mmap(BASE + 8 * PAGE, 4 * PAGE, RW, C.MAP_SHARED | C.MAP_FIXED, memfd)
    t = Twin(p)
    for name, args in (
        ("mprotect", (h, 2 << 20, C.PROT_READ)),
        ("munmap", (h, 2 << 20)),
        ("mprotect", (a, PAGE, RW)),  # a locked private VMA made writable: populate
        ("munmap", (b + PAGE, PAGE)),  # a deleted file: on_file_unmapped
    ):
        n = t.bails
        t.call(name, *args)
        assert t.bails == n + 1, name
    # the same VMAs where the engine does model the call
    n = t.bails
    t.call("mprotect", a, PAGE, C.PROT_NONE)
    t.call("mprotect", b, PAGE, C.PROT_READ)
    t.call("munmap", a, PAGE)
    assert t.bails == n


# ------------------------------------------------------------------ round trip
@_SETTINGS
@given(segments=st.lists(segment, min_size=1, max_size=7), fork=st.booleans(), data=st.data())
def test_round_trip_to_mm(
    segments: list[tuple[int, int, str, int, int, int]], fork: bool, data: st.DataObject
) -> None:
    """from_mm -> calls -> to_mm gives the address space the model made with the same
    calls (the same Vma fields, the same OpenFile/AnonVma objects, a consistent tree),
    and the model carries on from it as from its own."""
    p = build(segments, fork=fork)
    e = VmaArrays.from_mm(p.mm)
    for _ in range(data.draw(st.integers(1, 8))):
        name, args = data.draw(call(p))
        if engine_call(e, name, args) is None:
            return  # BAIL: no round trip to check
        model_call(p, name, args)
    want = records(p)
    want_numbers = numbers(p)
    p.mm.tree = type(p.mm.tree)()  # forget the model's VMAs: to_mm() must bring them all
    p.mm.cfg.committed_pages = p.mm.cfg.map_count_needed = p.mm.locked_vm = 0
    e.to_mm(p.mm)
    p.mm.check()
    assert records(p) == want
    assert numbers(p) == want_numbers
    assert p.mm.total_vm == e.total_vm
    name, args = data.draw(call(p))
    Twin(p).call(name, *args)


# ------------------------------------------------------------------ the constants
def test_constants_match_the_model() -> None:
    """_vmas keeps its own copies (numba freezes globals): each must be the model's."""
    for n in (
        "VM_WRITE",
        "VM_SHARED",
        "VM_GROWSDOWN",
        "VM_PFNMAP",
        "VM_MAYBE_GUARD",
        "VM_LOCKED",
        "VM_IO",
        "VM_DONTEXPAND",
        "VM_ACCOUNT",
        "VM_NORESERVE",
        "VM_HUGETLB",
        "VM_MIXEDMAP",
        "VM_SEALED",
        "VM_ACCESS_FLAGS",
        "VM_SPECIAL",
        "VM_IGNORE_MERGE",
        "VM_NOHUGEPAGE",
        "VM_DATA_DEFAULT_FLAGS",
    ):
        assert getattr(K, n) == getattr(F, n), n
    for n in (
        "PROT_READ",
        "PROT_WRITE",
        "PROT_EXEC",
        "PROT_SEM",
        "PROT_GROWSDOWN",
        "PROT_GROWSUP",
        "PAGE_SHIFT",
    ):
        assert getattr(K, n) == getattr(C, n), n
    assert (K.EPERM, K.ENOMEM, K.EACCES, K.EINVAL) == (
        errno.EPERM,
        errno.ENOMEM,
        errno.EACCES,
        errno.EINVAL,
    )
