"""Ports of Linux's own VMA tests that can be expressed through syscalls (spec §6).

tools/testing/vma/vma.c drives mm/vma.c directly; here the same layouts are built with mmap,
mprotect and mremap, with memfd mappings where the test checks vm_pgoff (the maps offset column).
tools/testing/selftests/mm/merge.c runs on a real kernel already; its cases are copied as-is.
All expectations kernel-verified.
"""

from __future__ import annotations

import pytest
from layout import BASE, PAGE, RW, anon, at, offsets, regions, shared, touch

from vmsim import MAP_NORESERVE, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_EXEC, PROT_READ


def memfd(p, npages: int = 64) -> int:
    fd = p.memfd_create("vma")
    p.ftruncate(fd, npages * PAGE)
    return fd


# --- tools/testing/vma ---------------------------------------------------------------------------


def test_simple_merge_anon(p):
    anon(p, 0, 1)
    anon(p, 2, 1)
    anon(p, 1, 1)
    assert regions(p, BASE, 4) == ["[0,3) rw-p"]
    assert p.map_count == 1


def test_simple_merge_file_keeps_pgoff_of_prev(p):
    fd = memfd(p)
    shared(p, 0, 1, fd, 0)
    shared(p, 2, 1, fd, 2)
    shared(p, 1, 1, fd, 1)
    assert regions(p, BASE, 4) == ["[0,3) rw-s"]
    assert offsets(p, BASE, 4) == [0]


def test_simple_modify_splits_with_pgoffs(p):
    fd = memfd(p)
    shared(p, 0, 3, fd, 0)
    p.mprotect(at(1), PAGE, PROT_READ)
    assert regions(p, BASE, 4) == ["[0,1) rw-s", "[1,2) r--s", "[2,3) rw-s"]
    assert offsets(p, BASE, 4) == [0, 1 * PAGE, 2 * PAGE]
    assert p.map_count == 3


def test_simple_expand_in_place(p):
    anon(p, 0, 1)
    assert p.mremap(at(0), PAGE, 3 * PAGE) == at(0)
    assert regions(p, BASE, 4) == ["[0,3) rw-p"]


def test_simple_shrink_in_place(p):
    anon(p, 0, 3)
    assert p.mremap(at(0), 3 * PAGE, PAGE) == at(0)
    assert regions(p, BASE, 4) == ["[0,1) rw-p"]


def test_merge_new_sequence(p):
    """Gaps filled one by one; map_count after each step (like merge_new's checks)."""
    fd = memfd(p)
    shared(p, 0, 2, fd, 0)  # A
    shared(p, 3, 2, fd, 3)  # B
    shared(p, 6, 2, fd, 6)  # C
    shared(p, 10, 2, fd, 10)  # D
    assert p.map_count == 4
    shared(p, 2, 1, fd, 2)  # A..B both merge
    assert regions(p, BASE, 12) == ["[0,5) rw-s", "[6,8) rw-s", "[10,12) rw-s"]
    assert p.map_count == 3
    shared(p, 8, 1, fd, 8)  # merge with prev (C) only
    assert regions(p, BASE, 12) == ["[0,5) rw-s", "[6,9) rw-s", "[10,12) rw-s"]
    shared(p, 9, 1, fd, 9)  # C..D both
    assert regions(p, BASE, 12) == ["[0,5) rw-s", "[6,12) rw-s"]
    assert p.map_count == 2
    shared(p, 5, 1, fd, 5)
    assert regions(p, BASE, 12) == ["[0,12) rw-s"]
    assert offsets(p, BASE, 12) == [0]
    assert p.map_count == 1


def test_merge_new_next_only(p):
    fd = memfd(p)
    shared(p, 4, 2, fd, 4)
    shared(p, 2, 2, fd, 2)
    assert regions(p, BASE, 8) == ["[2,6) rw-s"]
    assert offsets(p, BASE, 8) == [2 * PAGE]


def test_merge_existing_right_partial(p):
    anon(p, 2, 4)  # V rw
    anon(p, 6, 3, PROT_READ)  # N r--
    p.mprotect(at(4), 2 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[2,4) rw-p", "[4,9) r--p"]
    assert p.map_count == 2


def test_merge_existing_right_full(p):
    anon(p, 2, 4)
    anon(p, 6, 3, PROT_READ)
    p.mprotect(at(2), 4 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[2,9) r--p"]
    assert p.map_count == 1


def test_merge_existing_left_partial(p):
    anon(p, 0, 3, PROT_READ)  # P r--
    anon(p, 3, 4)  # V rw
    p.mprotect(at(3), 2 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,5) r--p", "[5,7) rw-p"]


def test_merge_existing_left_full(p):
    anon(p, 0, 3, PROT_READ)
    anon(p, 3, 4)
    p.mprotect(at(3), 4 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,7) r--p"]


def test_merge_existing_both(p):
    anon(p, 0, 2, PROT_READ)
    anon(p, 2, 3)
    anon(p, 5, 2, PROT_READ)
    assert p.map_count == 3
    p.mprotect(at(2), 3 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,7) r--p"]
    assert p.map_count == 1


@pytest.mark.parametrize(("start", "end"), [(3, 4), (3, 5), (4, 5), (4, 6), (3, 6), (5, 6)])
def test_merge_existing_strictly_inside_does_not_merge(p, start, end):
    """Ranges not touching V's ends split V; neighbours with the new flags are not merged."""
    anon(p, 0, 2, PROT_READ)
    anon(p, 2, 5)  # V = [2,7)
    anon(p, 7, 2, PROT_READ)
    p.mprotect(at(start), (end - start) * PAGE, PROT_READ)
    want = ["[0,2) r--p"]
    if start > 2:
        want.append(f"[2,{start}) rw-p")
    want.append(f"[{start},{end}) r--p")
    if end < 7:
        want.append(f"[{end},7) rw-p")
    want.append("[7,9) r--p")
    assert regions(p, BASE, 10) == want


def test_anon_vma_non_mergeable_new_range_merges_with_prev_only(p):
    anon(p, 0, 2)
    touch(p, 0)
    anon(p, 4, 2)
    touch(p, 4)  # not adjacent to prev: gets its own anon_vma
    anon(p, 2, 2)
    assert regions(p, BASE, 8) == ["[0,4) rw-p", "[4,6) rw-p"]
    assert p.map_count == 2


def test_anon_vma_non_mergeable_modify_merges_with_prev_only(p):
    anon(p, 0, 2)
    touch(p, 0)
    anon(p, 2, 2, PROT_READ)
    anon(p, 4, 2)
    touch(p, 4)
    p.mprotect(at(2), 2 * PAGE, RW)
    assert regions(p, BASE, 8) == ["[0,4) rw-p", "[4,6) rw-p"]


def test_merge_extend_grows_into_gap_and_merges_next(p):
    anon(p, 0, 1)
    anon(p, 3, 1)
    assert p.mremap(at(0), PAGE, 3 * PAGE) == at(0)
    assert regions(p, BASE, 5) == ["[0,4) rw-p"]
    assert p.map_count == 1


def test_copy_vma_backwards_without_neighbour_does_not_merge(p):
    anon(p, 10, 2)
    touch(p, 10)
    anon(p, 0, 2, PROT_READ)
    new = p.mremap(at(10), 2 * PAGE, 2 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(4))
    assert new == at(4)
    assert regions(p, BASE, 12) == ["[0,2) r--p", "[4,6) rw-p"]


def test_mmap_region_basic(p):
    for page in (0x300, 0x250, 0x303, 0x24D):
        anon(p, page, 3)
    assert regions(p, BASE, 0x400) == ["[589,595) rw-p", "[768,774) rw-p"]
    assert p.map_count == 2


# --- tools/testing/selftests/mm/merge.c ----------------------------------------------------------


def test_mprotect_unfaulted_left(p):
    anon(p, 1, 10, RW, MAP_NORESERVE)
    p.mprotect(at(1), 5 * PAGE, PROT_READ)
    touch(p, 6, 5)
    p.mprotect(at(1), 5 * PAGE, RW)
    assert regions(p, BASE, 12) == ["[1,11) rw-p"]


def test_mprotect_unfaulted_right(p):
    anon(p, 1, 10, RW, MAP_NORESERVE)
    p.mprotect(at(6), 5 * PAGE, PROT_READ)
    touch(p, 1, 5)
    p.mprotect(at(6), 5 * PAGE, RW)
    assert regions(p, BASE, 12) == ["[1,11) rw-p"]


def test_mprotect_unfaulted_both(p):
    anon(p, 1, 15, RW, MAP_NORESERVE)
    p.mprotect(at(1), 5 * PAGE, PROT_READ)
    p.mprotect(at(11), 5 * PAGE, PROT_READ)
    touch(p, 6, 5)
    assert regions(p, BASE, 17) == ["[1,6) r--p", "[6,11) rw-p", "[11,16) r--p"]
    p.mprotect(at(1), 15 * PAGE, RW)
    assert regions(p, BASE, 17) == ["[1,16) rw-p"]


def test_mprotect_faulted_left_unfaulted_right(p):
    anon(p, 1, 10, RW, MAP_NORESERVE)
    p.mprotect(at(6), 5 * PAGE, PROT_READ)
    touch(p, 1, 5)
    p.mprotect(at(6), 5 * PAGE, RW)
    assert regions(p, BASE, 12) == ["[1,11) rw-p"]


def test_mprotect_unfaulted_left_faulted_right(p):
    anon(p, 1, 10, RW, MAP_NORESERVE)
    p.mprotect(at(1), 5 * PAGE, PROT_READ)
    touch(p, 6, 5)
    p.mprotect(at(1), 5 * PAGE, RW)
    assert regions(p, BASE, 12) == ["[1,11) rw-p"]


def test_forked_target_vma(p):
    anon(p, 1, 5)
    touch(p, 1)
    c = p.fork()
    anon(c, 6, 5)
    touch(c, 6)
    assert regions(c, BASE, 12) == ["[1,6) rw-p", "[6,11) rw-p"]


def test_forked_source_vma(p):
    anon(p, 1, 5, RW, MAP_NORESERVE)
    touch(p, 1, 5)
    c = p.fork()
    anon(c, 6, 5, RW, MAP_NORESERVE)
    c.mprotect(at(1), 5 * PAGE, RW | PROT_EXEC)
    c.mprotect(at(1), 5 * PAGE, RW)
    assert regions(c, BASE, 12) == ["[1,6) rw-p", "[6,11) rw-p"]


def test_mremap_unfaulted_to_faulted(p):
    anon(p, 1, 5)
    anon(p, 20, 5)
    touch(p, 1, 5)
    assert p.mremap(at(20), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(6)) == at(6)
    assert regions(p, BASE, 30) == ["[1,11) rw-p"]


def test_mremap_unfaulted_behind_faulted(p):
    anon(p, 6, 5)
    anon(p, 20, 5)
    touch(p, 6, 5)
    assert p.mremap(at(20), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(1)) == at(1)
    assert regions(p, BASE, 30) == ["[1,11) rw-p"]


def test_mremap_unfaulted_between_faulted(p):
    anon(p, 1, 5)
    anon(p, 11, 5)
    touch(p, 1, 5)
    touch(p, 11, 5)
    anon(p, 20, 5)
    assert p.mremap(at(20), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(6)) == at(6)
    assert regions(p, BASE, 30) == ["[1,11) rw-p", "[11,16) rw-p"]


def test_mremap_unfaulted_between_correctly_placed_faulted(p):
    anon(p, 1, 15)
    touch(p, 1, 15)
    p.munmap(at(6), 5 * PAGE)
    anon(p, 20, 5)
    assert p.mremap(at(20), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(6)) == at(6)
    assert regions(p, BASE, 30) == ["[1,16) rw-p"]


def test_mremap_correct_placed_faulted(p):
    anon(p, 1, 15)
    touch(p, 1, 15)
    assert p.mremap(at(6), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(20)) == at(20)
    assert regions(p, BASE, 30) == ["[1,6) rw-p", "[11,16) rw-p", "[20,25) rw-p"]
    assert p.mremap(at(20), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(6)) == at(6)
    assert regions(p, BASE, 30) == ["[1,16) rw-p"]
