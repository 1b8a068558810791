"""vm.max_map_count: every row of spec §1's threshold table at M = 10, c = M-6 .. M+1.

c is the VMA count just before the call (target VMAs included); the test builds the target
VMAs, tops the count up with isolated one-page mappings, then makes the call.  Each row is
written like the spec's table: one cell per c, ``+n`` = success leaving c+n VMAs,
``ENOMEM`` / ``EAGAIN`` = failure leaving c VMAs, ``ENOMEM+1`` = failure that still added one.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest
from layout import BASE, PAGE, RW, anon, at, parse_maps, regions, touch

import vmsim
from vmsim import (
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_GUARD_INSTALL,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_READ,
)

M = 10
CS = list(range(M - 6, M + 2))  # 4 .. 11
FIXED = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
FILL_PAGE = 1000  # filler mappings live at pages 1000, 1002, ... (never adjacent to anything)


def count(p) -> int:
    """map_count; the maps text must agree with it (minus the [vsyscall] gate VMA, spec §0)."""
    n = len([v for v in parse_maps(p.maps()) if v.name != "[vsyscall]"])
    assert p.map_count == n
    return n


def fill(p, c: int) -> None:
    """Add isolated one-page VMAs until the count is exactly c."""
    k = 0
    while count(p) < c:
        anon(p, FILL_PAGE + 2 * k, 1)
        k += 1
    assert count(p) == c


def one(p) -> None:
    anon(p, 0, 8)


def two(p) -> None:
    anon(p, 0, 4)
    anon(p, 4, 4, PROT_READ)


def three(p) -> None:
    anon(p, 0, 4)
    anon(p, 4, 4, PROT_READ)
    anon(p, 8, 4)


def locked(p) -> None:
    anon(p, 0, 8)
    p.mlock(at(0), 8 * PAGE)


def blocked(p) -> None:
    anon(p, 0, 2)
    anon(p, 2, 1, PROT_READ)


Setup = Callable[[object], None]
Op = Callable[[object], object]

# name: (setup, operation, one cell per c = 4..11)
ROWS: dict[str, tuple[Setup, Op, str]] = {
    "mmap new VMA": (one, lambda p: anon(p, 20, 1), "+1 +1 +1 +1 +1 +1 +1 ENOMEM"),
    "mmap merging": (one, lambda p: anon(p, 8, 2), "+0 +0 +0 +0 +0 +0 +0 ENOMEM"),
    "MAP_FIXED middle": (
        one,
        lambda p: p.mmap(at(2), 2 * PAGE, PROT_READ, FIXED),
        "+2 +2 +2 +2 +2 +2 ENOMEM ENOMEM",
    ),
    "MAP_FIXED edge": (
        one,
        lambda p: p.mmap(at(0), 2 * PAGE, PROT_READ, FIXED),
        "+1 +1 +1 +1 +1 +1 +1 ENOMEM",
    ),
    "MAP_FIXED over 2 VMAs": (
        two,
        lambda p: p.mmap(at(2), 4 * PAGE, RW | PROT_EXEC, FIXED),
        "+1 +1 +1 +1 +1 +1 +1 ENOMEM",
    ),
    "munmap middle": (
        one,
        lambda p: p.munmap(at(2), 2 * PAGE),
        "+1 +1 +1 +1 +1 +1 ENOMEM ENOMEM",
    ),
    "munmap edge": (one, lambda p: p.munmap(at(0), 2 * PAGE), "+0 +0 +0 +0 +0 +0 +0 +0"),
    "munmap whole": (one, lambda p: p.munmap(at(0), 8 * PAGE), "-1 -1 -1 -1 -1 -1 -1 -1"),
    "munmap A-mid..B-mid": (two, lambda p: p.munmap(at(2), 4 * PAGE), "+0 +0 +0 +0 +0 +0 +0 +0"),
    "munmap A-mid..C-mid": (
        three,
        lambda p: p.munmap(at(2), 8 * PAGE),
        "-1 -1 -1 -1 -1 -1 -1 -1",
    ),
    "mprotect middle": (
        one,
        lambda p: p.mprotect(at(2), 2 * PAGE, PROT_READ),
        "+2 +2 +2 +2 +2 ENOMEM+1 ENOMEM ENOMEM",
    ),
    "mlock middle": (
        one,
        lambda p: p.mlock(at(2), 2 * PAGE),
        "+2 +2 +2 +2 +2 ENOMEM+1 ENOMEM ENOMEM",
    ),
    "munlock middle": (
        locked,
        lambda p: p.munlock(at(2), 2 * PAGE),
        "+2 +2 +2 +2 +2 ENOMEM+1 ENOMEM ENOMEM",
    ),
    "mseal middle": (
        one,
        lambda p: p.mseal(at(2), 2 * PAGE),
        "+2 +2 +2 +2 +2 ENOMEM+1 ENOMEM ENOMEM",
    ),
    "madvise DONTFORK middle": (
        one,
        lambda p: p.madvise(at(2), 2 * PAGE, MADV_DONTFORK),
        "+2 +2 +2 +2 +2 EAGAIN+1 EAGAIN EAGAIN",
    ),
    "mprotect one end": (
        one,
        lambda p: p.mprotect(at(0), 2 * PAGE, PROT_READ),
        "+1 +1 +1 +1 +1 +1 ENOMEM ENOMEM",
    ),
    "mlock one end": (
        one,
        lambda p: p.mlock(at(6), 2 * PAGE),
        "+1 +1 +1 +1 +1 +1 ENOMEM ENOMEM",
    ),
    "madvise DONTFORK one end": (
        one,
        lambda p: p.madvise(at(6), 2 * PAGE, MADV_DONTFORK),
        "+1 +1 +1 +1 +1 +1 EAGAIN EAGAIN",
    ),
    "mprotect whole": (
        one,
        lambda p: p.mprotect(at(0), 8 * PAGE, PROT_READ),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "mprotect merging into neighbour": (
        two,
        lambda p: p.mprotect(at(2), 2 * PAGE, PROT_READ),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "mprotect flags unchanged": (
        one,
        lambda p: p.mprotect(at(2), 2 * PAGE, RW),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "mprotect filling the gap between neighbours": (
        three,
        lambda p: p.mprotect(at(4), 4 * PAGE, RW),
        "-2 -2 -2 -2 -2 -2 -2 -2",
    ),
    "madvise DONTNEED middle": (
        one,
        lambda p: p.madvise(at(2), 2 * PAGE, MADV_DONTNEED),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "madvise GUARD_INSTALL middle": (
        one,
        lambda p: p.madvise(at(2), 2 * PAGE, MADV_GUARD_INSTALL),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "mremap shrink tail": (
        one,
        lambda p: p.mremap(at(0), 8 * PAGE, 4 * PAGE),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "mremap grow in place": (
        one,
        lambda p: p.mremap(at(0), 8 * PAGE, 12 * PAGE),
        "+0 +0 +0 +0 +0 +0 +0 +0",
    ),
    "mremap shrink with hole inside": (
        one,
        lambda p: p.mremap(at(0), 4 * PAGE, 2 * PAGE),
        "+1 +1 +1 +1 +1 +1 ENOMEM ENOMEM",
    ),
    "mremap grow that must move": (
        blocked,
        lambda p: p.mremap(at(0), 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE),
        "+0 +0 +0 ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM",
    ),
    "mremap MREMAP_FIXED": (
        blocked,
        lambda p: p.mremap(at(0), 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(20)),
        "+0 ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM",
    ),
    "mremap MREMAP_DONTUNMAP": (
        blocked,
        lambda p: p.mremap(at(0), 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP),
        "+1 ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM ENOMEM",
    ),
}

CASES = [
    pytest.param(name, c, cell, id=f"{name} c=M{c - M:+d}".replace("M+0", "M"))
    for name, (_, _, cells) in ROWS.items()
    for c, cell in zip(CS, cells.split(), strict=True)
]


@pytest.mark.parametrize(("row", "c", "cell"), CASES)
def test_threshold(row, c, cell):
    setup, op, _ = ROWS[row]
    p = vmsim.Machine(max_map_count=M).spawn()
    setup(p)
    fill(p, c)
    if cell[0] in "+-":
        op(p)
        assert count(p) == c + int(cell)
    else:
        name, _, extra = cell.partition("+")
        with pytest.raises(OSError) as e:
            op(p)
        assert e.value.errno == getattr(errno, name)
        assert count(p) == c + int(extra or 0)


# --- the states the table's cells leave behind ---------------------------------------------------


def test_partial_failure_of_middle_mprotect_at_m_minus_1():
    p = vmsim.Machine(max_map_count=M).spawn()
    one(p)
    fill(p, M - 1)
    with pytest.raises(OSError) as e:
        p.mprotect(at(2), 2 * PAGE, PROT_READ)
    assert e.value.errno == errno.ENOMEM
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,8) rw-p"]
    assert count(p) == M
    # the pieces do not re-merge; a same-flags mprotect is a no-op
    p.mprotect(at(0), 8 * PAGE, RW)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,8) rw-p"]
    # at c = M the first split of [0,2) is refused too; [2,8) can only change whole
    p.mprotect(at(2), 6 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,8) r--p"]


def test_partial_failure_of_middle_madvise_is_eagain():
    p = vmsim.Machine(max_map_count=M).spawn()
    one(p)
    fill(p, M - 1)
    with pytest.raises(OSError) as e:
        p.madvise(at(2), 2 * PAGE, MADV_DONTFORK)
    assert e.value.errno == errno.EAGAIN
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,8) rw-p"]


def test_multi_vma_mprotect_merging_instead_of_splitting_needs_no_slot():
    p = vmsim.Machine(max_map_count=M).spawn()
    three(p)  # [0,4) rw [4,8) r-- [8,12) rw, none written
    fill(p, M)
    # [2,4) drops VM_ACCOUNT (no anon_vma) and joins [4,8); [8,10) joins it too: no split at all
    p.mprotect(at(2), 8 * PAGE, PROT_READ)
    assert regions(p, BASE, 12) == ["[0,2) rw-p", "[2,10) r--p", "[10,12) rw-p"]
    assert count(p) == M


def test_multi_vma_mprotect_fails_part_way_leaving_earlier_vmas_changed():
    p = vmsim.Machine(max_map_count=M).spawn()
    three(p)
    touch(p, 0, 4)  # anon_vma: keeps VM_ACCOUNT when made r--, so no merge with [4,8)
    touch(p, 8, 4)
    fill(p, M - 1)
    # [0,4): split at 2 (c M-1 -> M); [4,8): flags unchanged; [8,12): split at 10 with c = M
    with pytest.raises(OSError) as e:
        p.mprotect(at(2), 8 * PAGE, PROT_READ)
    assert e.value.errno == errno.ENOMEM
    assert regions(p, BASE, 12) == ["[0,2) rw-p", "[2,4) r--p", "[4,8) r--p", "[8,12) rw-p"]
    assert count(p) == M


def test_mmap_reaches_m_plus_1_and_no_further():
    p = vmsim.Machine(max_map_count=M).spawn()
    fill(p, M)
    anon(p, 0, 1)
    assert count(p) == M + 1
    with pytest.raises(OSError) as e:
        anon(p, 4, 1)
    assert e.value.errno == errno.ENOMEM
    with pytest.raises(OSError) as e:
        anon(p, 1, 1)  # would merge, still refused: the check comes first
    assert e.value.errno == errno.ENOMEM
    p.munmap(at(0), PAGE)
    assert count(p) == M


def test_map_fixed_into_middle_at_m_minus_1_reaches_m_plus_1():
    p = vmsim.Machine(max_map_count=M).spawn()
    one(p)
    fill(p, M - 1)
    p.mmap(at(2), 2 * PAGE, PROT_READ, FIXED)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) r--p", "[4,8) rw-p"]
    assert count(p) == M + 1


def test_ravendb_munmap_middle_fails_but_whole_vma_munmap_succeeds():
    p = vmsim.Machine(max_map_count=M).spawn()
    one(p)
    fill(p, M)
    with pytest.raises(OSError) as e:
        p.munmap(at(2), 2 * PAGE)
    assert e.value.errno == errno.ENOMEM
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    p.munmap(at(0), 2 * PAGE)  # an edge never fails
    assert regions(p, BASE, 10) == ["[2,8) rw-p"]


def test_default_limit_is_65530():
    p = vmsim.Machine().spawn()
    anon(p, 0, 1)
    p.mprotect(at(0), PAGE, PROT_READ)
    assert vmsim.Machine().spawn().map_count == 0
    assert vmsim.constants.DEFAULT_MAX_MAP_COUNT == 65530


def _linux_with_limit(extra: int):
    """A "linux" layout process whose limit leaves ``extra`` VMAs of room."""
    n = vmsim.Machine().spawn(layout="linux").map_count
    return vmsim.Machine(max_map_count=n + extra).spawn(layout="linux"), n + extra


@pytest.mark.parametrize(("delta", "grows"), [(-2, True), (-1, True), (0, True), (1, False)])
def test_brk_grow_threshold(delta, grows):
    p, limit = _linux_with_limit(6)
    old = p.brk(0)
    k = 0
    while count(p) < limit + delta:
        anon(p, FILL_PAGE + 2 * k, 1)
        k += 1
    # grow by far more than any page left in the heap VMA: a new page is needed
    target = old + 64 * PAGE
    assert p.brk(target) == (target if grows else old)
    assert p.brk(0) == (target if grows else old)
    assert count(p) in ((limit + delta, limit + delta + 1) if grows else (limit + delta,))
