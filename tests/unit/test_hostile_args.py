"""Hostile syscall arguments: the kernel's answer (checked on Linux 6.18 with raw syscalls
through ctypes, and in tests/differential/test_hostile.py), or a clear Python error for what no
C caller can pass.

Policy: every syscall argument is one 64-bit register. A Python int outside
``-2**63 .. 2**64 - 1`` raises OverflowError naming the argument (nothing is changed); a
negative one is its two's complement, as in C (``munmap(addr, -1)`` is a length of 2**64 - 1).
"""

from __future__ import annotations

import errno

import pytest
from layout import BASE, PAGE, RW, anon, at, regions

from vmsim import (
    MAP_ANONYMOUS,
    MAP_HUGE_SHIFT,
    MAP_HUGETLB,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    MS_ASYNC,
    MS_INVALIDATE,
    MS_SYNC,
    Machine,
)

TASK_SIZE = (1 << 47) - PAGE
U64 = (1 << 64) - 1
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def errno_of(call, *args):
    with pytest.raises(OSError) as e:
        call(*args)
    return e.value.errno


# --- brk ----------------------------------------------------------------------------------------


def test_brk_near_2p64_returns_the_old_break_and_changes_nothing(p):
    old = p.brk(0)
    before = p.maps()
    assert p.brk(U64) == old
    assert p.brk(U64 - PAGE) == old
    assert p.maps() == before
    assert p.brk(0) == old


def test_brk_past_task_size_returns_the_old_break(p):
    old = p.brk(0)
    assert p.brk(1 << 47) == old
    assert p.map_count == 0


# --- mremap: an old range past TASK_SIZE ----------------------------------------------------------


@pytest.mark.parametrize(
    "old_size", [1 << 47, U64 - PAGE + 1, (1 << 64) - at(0), (1 << 47) - at(0)]
)
def test_mremap_shrink_of_old_range_past_task_size_is_einval(p, old_size):
    anon(p, 0, 4)
    anon(p, 16, 4)
    before = p.maps()
    assert errno_of(p.mremap, at(0), old_size, PAGE) == errno.EINVAL
    assert errno_of(p.mremap, at(0), old_size, PAGE, MREMAP_MAYMOVE) == errno.EINVAL
    assert p.maps() == before


def test_mremap_old_range_ending_at_task_size_still_shrinks(p):
    anon(p, 0, 4)
    anon(p, 16, 4)
    assert p.mremap(at(0), TASK_SIZE - at(0), PAGE) == at(0)
    assert regions(p, BASE, 32) == ["[0,1) rw-p"]


# --- mremap: a move that spans the end of its VMA ------------------------------------------------


def test_mremap_fixed_shrinking_move_across_the_vma_end(p):
    """mremap_to() unmaps the tail of the old range first, across holes and VMAs; only
    [addr, addr + new_len) has to lie in one VMA."""
    anon(p, 0, 4)
    anon(p, 8, 4, prot=1)
    dest = at(0x100)
    assert p.mremap(at(2), 8 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, dest) == dest
    assert regions(p, BASE, 0x110) == ["[0,2) rw-p", "[10,12) r--p", "[256,258) rw-p"]


def test_mremap_fixed_shrinking_move_still_needs_new_len_inside_the_vma(p):
    anon(p, 0, 4)
    anon(p, 8, 4, prot=1)
    before = p.maps()
    flags = MREMAP_MAYMOVE | MREMAP_FIXED
    assert errno_of(p.mremap, at(2), 8 * PAGE, 3 * PAGE, flags, at(0x100)) == errno.EFAULT
    assert p.maps() == before


# --- mmap(MAP_HUGETLB) size bits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "err"),
    [(0, errno.ENOMEM), (21, errno.ENOMEM), (30, errno.ENOMEM)]
    + [(log, errno.EINVAL) for log in (1, 12, 20, 22, 29, 31, 40, 63)],
)
def test_mmap_hugetlb_size_bits(p, log, err):
    flags = ANON | MAP_HUGETLB | log << MAP_HUGE_SHIFT
    assert errno_of(p.mmap, 0, 2 << 20, RW, flags) == err


# --- msync --------------------------------------------------------------------------------------


def test_msync_outcomes(p):
    anon(p, 0, 4)
    anon(p, 8, 4)
    a = at(0)
    assert p.msync(a, PAGE, MS_SYNC) is None
    assert p.msync(a, PAGE, MS_ASYNC) is None
    assert p.msync(a, PAGE, 0) is None
    assert p.msync(a, 1, MS_INVALIDATE) is None
    assert p.msync(a, U64, MS_SYNC) is None  # the length rounds up to 0
    assert p.msync(at(4), 0, MS_SYNC) is None  # nothing to do, even unmapped
    assert p.msync(a, PAGE, 1 << 32) is None  # flags is an int: the high bits are gone
    assert errno_of(p.msync, a, PAGE, MS_ASYNC | MS_SYNC) == errno.EINVAL
    assert errno_of(p.msync, a, PAGE, 8) == errno.EINVAL
    assert errno_of(p.msync, a, PAGE, -1) == errno.EINVAL
    assert errno_of(p.msync, a + 1, PAGE, MS_SYNC) == errno.EINVAL
    assert errno_of(p.msync, at(4), PAGE, 8) == errno.EINVAL  # flags before the range
    assert errno_of(p.msync, at(4), PAGE, MS_SYNC) == errno.ENOMEM
    assert errno_of(p.msync, at(3), 2 * PAGE, MS_SYNC) == errno.ENOMEM
    assert errno_of(p.msync, a, 12 * PAGE, MS_ASYNC) == errno.ENOMEM
    assert errno_of(p.msync, a, U64 - PAGE + 1, MS_SYNC) == errno.ENOMEM  # wraps
    assert errno_of(p.msync, 1 << 47, PAGE, MS_SYNC) == errno.ENOMEM


def test_msync_invalidate_on_locked_vma_is_ebusy(p):
    anon(p, 0, 4)
    anon(p, 8, 4)
    p.mlock(at(0), 2 * PAGE)
    assert errno_of(p.msync, at(0), PAGE, MS_INVALIDATE) == errno.EBUSY
    assert errno_of(p.msync, at(0), PAGE, MS_INVALIDATE | MS_SYNC) == errno.EBUSY
    assert p.msync(at(0), PAGE, MS_SYNC) is None
    # the unlocked rest of the VMA, then a hole: ENOMEM, not EBUSY
    assert errno_of(p.msync, at(3), 2 * PAGE, MS_INVALIDATE) == errno.ENOMEM
    # a hole first, then a locked VMA: EBUSY wins over the hole's ENOMEM
    p.mlock(at(8), PAGE)
    assert errno_of(p.msync, at(3), 6 * PAGE, MS_INVALIDATE) == errno.EBUSY


# --- integers no C caller can pass ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("mmap", (1 << 64, PAGE, RW, ANON)),
        ("mmap", (0, 1 << 64, RW, ANON)),
        ("mmap", (0, PAGE, 1 << 64, ANON)),
        ("mmap", (0, PAGE, RW, ANON | 1 << 64)),
        ("mmap", (0, PAGE, RW, ANON, -1, 1 << 64)),
        ("mmap", (0, PAGE, RW, ANON, -(1 << 63) - 1)),
        ("munmap", (BASE + (1 << 64), PAGE)),
        ("munmap", (BASE, -(1 << 64))),
        ("mprotect", (BASE, PAGE, 1 << 70)),
        ("mremap", (BASE, PAGE, (1 << 64) + PAGE)),
        ("madvise", (BASE, PAGE, 1 << 64)),
        ("mlock", (BASE, 1 << 64)),
        ("munlock", (1 << 64, PAGE)),
        ("mlock2", (BASE, PAGE, 1 << 64)),
        ("mseal", (BASE, PAGE, 1 << 64)),
        ("msync", (BASE, PAGE, 1 << 64)),
        ("brk", (1 << 64,)),
        ("read", (1 << 64, 1)),
        ("write", (1 << 64, b"x")),
        ("mincore", (BASE, 1 << 64)),
    ],
)
def test_argument_wider_than_64_bits_is_refused(p, call, args):
    anon(p, 0, 1)
    before = p.maps()
    with pytest.raises(OverflowError, match="64-bit"):
        getattr(p, call)(*args)
    assert p.maps() == before


def test_negative_length_is_the_c_two_complement(p):
    """munmap(addr, -1) is munmap(addr, 2**64 - 1): its end is past TASK_SIZE, EINVAL."""
    anon(p, 0, 1)
    assert errno_of(p.munmap, at(0), -1) == errno.EINVAL
    assert errno_of(p.mprotect, at(0), -PAGE, RW) == errno.ENOMEM


def test_read_of_a_negative_count_is_an_error(p):
    anon(p, 0, 1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        p.read(at(0), -1)
    with pytest.raises(ValueError, match="n must be >= 0"):
        p.peek(at(0), -1)
    assert p.read(at(0), 0) == b""


# --- machine options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"ram": "0"}, "ram must be within 8K..4P"),
        ({"ram": 0}, "ram must be within 8K..4P"),
        ({"ram": "4K"}, "ram must be within 8K..4P"),
        ({"ram": "5P"}, "ram must be within 8K..4P"),
        ({"ram": "lots"}, "ram: not a size"),
        ({"swap": "4K"}, "swap must be 0 (none) or within 8K..16T"),
        ({"swap": "4P"}, "swap must be within 0..16T"),
        ({"swap": -4096}, "swap must be within 0..16T"),
    ],
)
def test_machine_sizes_out_of_range_are_refused(options, words):
    import vmsim

    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        vmsim.Machine(**options)


def test_a_huge_swap_costs_nothing_up_front():
    """1 TiB of swap (2**28 slots) used to allocate two per-slot arrays (2.3 GB, 5 s)."""
    import tracemalloc

    import vmsim

    tracemalloc.start()
    try:
        m = vmsim.Machine(ram="1M", swap="1T", overcommit_memory=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    assert "SwapTotal:      1073741824 kB" in m.meminfo()
    # and it swaps: 2 MiB of written anonymous memory in 1 MiB of RAM
    p = m.spawn()
    a = p.mmap(0, 2 << 20, RW, ANON)
    for off in range(0, 2 << 20, PAGE):
        p.write(a + off, off.to_bytes(4, "little"))
    for off in range(0, 2 << 20, 64 * PAGE):
        assert p.read(a + off, 4) == off.to_bytes(4, "little")
    m.check_memory()


def test_oom_with_every_process_exempt_is_a_kernel_panic():
    """out_of_memory() finds no process to kill: Linux panics ("System is deadlocked on
    memory"); the model raises KernelPanic, not an internal exception."""
    import vmsim

    m = vmsim.Machine(ram="1M", overcommit_memory=1)
    p = m.spawn()
    p.oom_score_adj = -1000
    a = p.mmap(0, 8 << 20, RW, ANON)
    with pytest.raises(vmsim.KernelPanic, match="System is deadlocked on memory"):
        for off in range(0, 8 << 20, PAGE):
            p.write(a + off, b"x")


def test_oom_kills_the_process_that_is_not_exempt():
    import vmsim

    m = vmsim.Machine(ram="1M", overcommit_memory=1)
    keep = m.spawn()
    keep.oom_score_adj = -1000
    victim = m.spawn()
    b = victim.mmap(0, 512 << 10, RW, ANON)
    for off in range(0, 512 << 10, PAGE):
        victim.write(b + off, b"v")
    a = keep.mmap(0, 8 << 20, RW, ANON)
    with pytest.raises(vmsim.KernelPanic):
        for off in range(0, 8 << 20, PAGE):
            keep.write(a + off, b"x")
    assert not victim.alive  # killed first; only then was nobody left


@pytest.mark.parametrize("value", [-1, 2**31, 2**40, 2**70])
def test_max_map_count_outside_the_int_sysctl_range_is_refused(value):
    """vm.max_map_count is an int sysctl with minimum 0 (proc_dointvec_minmax): a value
    outside 0..2**31-1 is refused, at construction and when set later."""
    with pytest.raises(ValueError, match=r"max_map_count must be within 0\.\.2147483647"):
        Machine(max_map_count=value)
    m = Machine()
    with pytest.raises(ValueError, match="max_map_count"):
        m.max_map_count = value
    assert m.max_map_count == 65530  # unchanged


def test_max_map_count_at_int_max_is_accepted():
    m = Machine(max_map_count=2**31 - 1)
    m.max_map_count = 0
    assert m.max_map_count == 0
