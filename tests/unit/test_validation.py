"""Argument validation: spec §3, one test per row, including which error wins (kernel-verified)."""

from __future__ import annotations

import errno

import pytest
from layout import BASE, PAGE, RW, anon, at, regions, shared, touch, vmflags

from vmsim import (
    MADV_DONTDUMP,
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_NONE,
    PROT_READ,
)

TASK_SIZE = (1 << 47) - PAGE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
U64 = (1 << 64) - 1


def errno_of(call, *args):
    with pytest.raises(OSError) as e:
        call(*args)
    return e.value.errno


# --- mmap ---------------------------------------------------------------------------------------


def test_mmap_len_zero(p):
    assert errno_of(p.mmap, 0, 0, RW, ANON) == errno.EINVAL


def test_mmap_without_private_or_shared(p):
    assert errno_of(p.mmap, 0, PAGE, RW, MAP_ANONYMOUS) == errno.EINVAL


def test_mmap_shared_validate_on_anon(p):
    assert errno_of(p.mmap, 0, PAGE, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS) == errno.EINVAL


def test_mmap_fixed_unaligned(p):
    assert errno_of(p.mmap, at(0) + 1, PAGE, RW, ANON | MAP_FIXED) == errno.EINVAL
    assert errno_of(p.mmap, at(0) + 1, PAGE, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EINVAL


def test_mmap_offset_unaligned(p):
    fd = p.memfd_create("f")
    p.ftruncate(fd, 4 * PAGE)
    assert errno_of(p.mmap, 0, PAGE, RW, MAP_SHARED, fd, 100) == errno.EINVAL


def test_mmap_unaligned_offset_beats_bad_fd(p):
    assert errno_of(p.mmap, 0, PAGE, RW, MAP_SHARED, 99, 100) == errno.EINVAL


def test_mmap_bad_fd(p):
    assert errno_of(p.mmap, 0, PAGE, RW, MAP_SHARED, 99, 0) == errno.EBADF


def test_mmap_bad_fd_beats_len_zero(p):
    # ksys_mmap_pgoff looks the fd up before do_mmap checks the length
    assert errno_of(p.mmap, 0, 0, RW, MAP_SHARED, 99, 0) == errno.EBADF


def test_mmap_closed_fd(p):
    fd = p.memfd_create("c")
    p.ftruncate(fd, PAGE)
    p.close(fd)
    assert errno_of(p.mmap, 0, PAGE, RW, MAP_SHARED, fd, 0) == errno.EBADF


def test_mmap_len_overflows_when_aligned(p):
    assert errno_of(p.mmap, 0, U64 - 100, RW, ANON) == errno.ENOMEM


def test_mmap_len_above_task_size(p):
    assert errno_of(p.mmap, 0, TASK_SIZE + PAGE, RW, ANON) == errno.ENOMEM


def test_mmap_fixed_end_above_task_size(p):
    assert errno_of(p.mmap, TASK_SIZE - PAGE, 2 * PAGE, RW, ANON | MAP_FIXED) == errno.ENOMEM


def test_mmap_fixed_ending_at_task_size_is_fine(p):
    assert p.mmap(TASK_SIZE - PAGE, PAGE, RW, ANON | MAP_FIXED) == TASK_SIZE - PAGE


def test_mmap_len_zero_beats_unaligned_fixed(p):
    assert errno_of(p.mmap, at(0) + 1, 0, RW, ANON | MAP_FIXED) == errno.EINVAL


def test_mmap_fixed_noreplace_overlap_is_eexist(p):
    anon(p, 4, 4)
    assert errno_of(p.mmap, at(0), 5 * PAGE, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert errno_of(p.mmap, at(7), PAGE, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST
    assert regions(p, BASE, 10) == ["[4,8) rw-p"]


def test_mmap_fixed_noreplace_adjacent_is_fine(p):
    anon(p, 4, 4)
    assert p.mmap(at(8), PAGE, RW, ANON | MAP_FIXED_NOREPLACE) == at(8)


def test_mmap_fixed_replaces_and_splits(p):
    anon(p, 0, 8)
    assert p.mmap(at(2), 2 * PAGE, PROT_READ, ANON | MAP_FIXED) == at(2)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) r--p", "[4,8) rw-p"]


def test_mmap_unaligned_length_rounds_up(p):
    assert p.mmap(at(0), PAGE + 1, RW, ANON | MAP_FIXED_NOREPLACE) == at(0)
    assert regions(p, BASE, 4) == ["[0,2) rw-p"]


def test_mmap_hint_unaligned_is_rounded_down(p):
    assert p.mmap(at(3) + 123, PAGE, RW, ANON) == at(3)


def test_mmap_hint_below_lsm_min_addr_rounds_up(p):
    assert p.mmap(0x1000, PAGE, RW, ANON) == 0x10000


def test_mmap_fixed_below_mmap_min_addr_as_root(p):
    assert p.mmap(0x1000, PAGE, RW, ANON | MAP_FIXED) == 0x1000


# --- munmap -------------------------------------------------------------------------------------


def test_munmap_unaligned(p):
    anon(p, 0, 4)
    assert errno_of(p.munmap, at(0) + 1, PAGE) == errno.EINVAL


def test_munmap_len_zero(p):
    anon(p, 0, 4)
    assert errno_of(p.munmap, at(0), 0) == errno.EINVAL


def test_munmap_end_above_task_size(p):
    assert errno_of(p.munmap, TASK_SIZE - PAGE, 2 * PAGE) == errno.EINVAL


def test_munmap_nothing_mapped_is_ok(p):
    p.munmap(at(0), 4 * PAGE)
    assert p.map_count == 0


def test_munmap_unaligned_length_rounds_up(p):
    anon(p, 0, 4)
    p.munmap(at(0), PAGE + 1)
    assert regions(p, BASE, 4) == ["[2,4) rw-p"]


def test_munmap_spanning_holes_and_vmas(p):
    anon(p, 0, 2)
    anon(p, 3, 2, PROT_READ)
    anon(p, 6, 3)
    p.munmap(at(1), 6 * PAGE)
    assert regions(p, BASE, 10) == ["[0,1) rw-p", "[7,9) rw-p"]
    assert p.map_count == 2


# --- mprotect -----------------------------------------------------------------------------------


def test_mprotect_unaligned(p):
    anon(p, 0, 4)
    assert errno_of(p.mprotect, at(0) + 1, PAGE, PROT_READ) == errno.EINVAL


def test_mprotect_unaligned_beats_len_zero(p):
    assert errno_of(p.mprotect, at(0) + 1, 0, PROT_READ) == errno.EINVAL


def test_mprotect_unknown_prot_bit(p):
    anon(p, 0, 4)
    assert errno_of(p.mprotect, at(0), PAGE, 0x10) == errno.EINVAL
    assert regions(p, BASE, 4) == ["[0,4) rw-p"]


def test_mprotect_len_zero_is_ok_even_unmapped(p):
    p.mprotect(at(0), 0, PROT_READ)
    assert p.map_count == 0


def test_mprotect_nothing_mapped(p):
    assert errno_of(p.mprotect, at(0), PAGE, PROT_READ) == errno.ENOMEM


def test_mprotect_hole_changes_vmas_before_it(p):
    anon(p, 0, 4)
    anon(p, 5, 3)
    assert errno_of(p.mprotect, at(2), 5 * PAGE, PROT_READ) == errno.ENOMEM
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) r--p", "[5,8) rw-p"]


def test_mprotect_hole_at_start_changes_nothing(p):
    anon(p, 2, 4)
    assert errno_of(p.mprotect, at(0), 4 * PAGE, PROT_READ) == errno.ENOMEM
    assert regions(p, BASE, 10) == ["[2,6) rw-p"]


def test_mprotect_unaligned_length_rounds_up(p):
    anon(p, 0, 4)
    p.mprotect(at(0), PAGE + 1, PROT_READ)
    assert regions(p, BASE, 4) == ["[0,2) r--p", "[2,4) rw-p"]


def test_mprotect_none_and_exec(p):
    anon(p, 0, 4)
    p.mprotect(at(0), PAGE, PROT_NONE)
    p.mprotect(at(3), PAGE, PROT_READ | PROT_EXEC)
    assert regions(p, BASE, 4) == ["[0,1) ---p", "[1,3) rw-p", "[3,4) r-xp"]


# --- madvise ------------------------------------------------------------------------------------


def test_madvise_unaligned(p):
    anon(p, 0, 4)
    assert errno_of(p.madvise, at(0) + 1, PAGE, MADV_DONTNEED) == errno.EINVAL


def test_madvise_len_rounds_past_end(p):
    anon(p, 0, 4)
    assert errno_of(p.madvise, at(0), U64 - 10, MADV_DONTNEED) == errno.EINVAL


def test_madvise_len_zero_is_ok(p):
    p.madvise(at(0), 0, MADV_DONTNEED)
    assert p.map_count == 0


def test_madvise_unknown_advice_beats_unmapped(p):
    assert errno_of(p.madvise, at(0), PAGE, 77) == errno.EINVAL


def test_madvise_hole_still_applies_to_mapped_parts(p):
    anon(p, 0, 2)
    anon(p, 3, 2)
    assert errno_of(p.madvise, at(0), 5 * PAGE, MADV_DONTDUMP) == errno.ENOMEM
    assert "dd" in vmflags(p.smaps(), at(0))
    assert "dd" in vmflags(p.smaps(), at(3))


def test_madvise_nothing_mapped(p):
    assert errno_of(p.madvise, at(0), PAGE, MADV_DONTNEED) == errno.ENOMEM


# --- mlock / munlock ----------------------------------------------------------------------------


def test_mlock_unaligned_start_is_rounded_down(p):
    anon(p, 0, 8)
    p.mlock(at(2) + 100, PAGE)  # covers [2, 4): len = PAGE_ALIGN(PAGE + 100)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) rw-p", "[4,8) rw-p"]
    assert "lo" in vmflags(p.smaps(), at(2))
    assert "lo" not in vmflags(p.smaps(), at(4))


def test_mlock_len_zero_is_ok(p):
    p.mlock(at(0), 0)
    p.munlock(at(0), 0)
    assert p.map_count == 0


def test_mlock_hole_locks_part_before_it(p):
    anon(p, 0, 2)
    anon(p, 3, 2)
    assert errno_of(p.mlock, at(0), 5 * PAGE) == errno.ENOMEM
    assert "lo" in vmflags(p.smaps(), at(0))
    assert "lo" not in vmflags(p.smaps(), at(3))


def test_munlock_unaligned_start(p):
    anon(p, 0, 8)
    p.mlock(at(0), 8 * PAGE)
    p.munlock(at(2) + 1, PAGE)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) rw-p", "[4,8) rw-p"]
    assert "lo" not in vmflags(p.smaps(), at(2))


# --- mremap -------------------------------------------------------------------------------------


def test_mremap_unaligned(p):
    anon(p, 0, 4)
    assert errno_of(p.mremap, at(0) + 1, PAGE, 2 * PAGE) == errno.EINVAL


def test_mremap_new_len_zero(p):
    anon(p, 0, 4)
    assert errno_of(p.mremap, at(0), PAGE, 0) == errno.EINVAL


def test_mremap_unknown_flag(p):
    anon(p, 0, 4)
    assert errno_of(p.mremap, at(0), PAGE, PAGE, 8) == errno.EINVAL


def test_mremap_fixed_without_maymove(p):
    anon(p, 0, 4)
    assert errno_of(p.mremap, at(0), PAGE, PAGE, MREMAP_FIXED, at(8)) == errno.EINVAL


def test_mremap_dontunmap_with_different_sizes(p):
    anon(p, 0, 4)
    flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP
    assert errno_of(p.mremap, at(0), PAGE, 2 * PAGE, flags) == errno.EINVAL


def test_mremap_fixed_overlapping_ranges(p):
    anon(p, 0, 4)
    flags = MREMAP_MAYMOVE | MREMAP_FIXED
    assert errno_of(p.mremap, at(0), 2 * PAGE, 2 * PAGE, flags, at(1)) == errno.EINVAL


def test_mremap_old_len_zero_on_private(p):
    anon(p, 0, 4)
    assert errno_of(p.mremap, at(0), 0, PAGE, MREMAP_MAYMOVE) == errno.EINVAL


def test_mremap_no_vma(p):
    assert errno_of(p.mremap, at(0), PAGE, 2 * PAGE) == errno.EFAULT


def test_mremap_range_crosses_vm_end(p):
    anon(p, 0, 2)
    anon(p, 2, 2, PROT_READ)
    assert errno_of(p.mremap, at(0), 3 * PAGE, 4 * PAGE, MREMAP_MAYMOVE) == errno.EFAULT


def test_mremap_grow_blocked_without_maymove(p):
    anon(p, 0, 2)
    anon(p, 2, 1, PROT_READ)
    assert errno_of(p.mremap, at(0), 2 * PAGE, 3 * PAGE) == errno.ENOMEM
    assert regions(p, BASE, 4) == ["[0,2) rw-p", "[2,3) r--p"]


def test_mremap_grow_blocked_with_maymove_moves(p):
    anon(p, 0, 2)
    anon(p, 2, 1, PROT_READ)
    p.write(at(0), b"moved")
    new = p.mremap(at(0), 2 * PAGE, 3 * PAGE, MREMAP_MAYMOVE)
    assert new != at(0)
    assert p.read(new, 5) == b"moved"
    assert regions(p, BASE, 4) == ["[2,3) r--p"]


def test_mremap_shrink_unmaps_across_anything(p):
    anon(p, 0, 2)
    anon(p, 3, 2, PROT_READ)
    anon(p, 6, 2)
    assert p.mremap(at(0), 8 * PAGE, PAGE) == at(0)
    assert regions(p, BASE, 10) == ["[0,1) rw-p"]


def test_mremap_fixed_multi_vma_move_keeps_gaps(p):
    anon(p, 0, 2)
    anon(p, 3, 2)
    p.write(at(3), b"r")
    p.mprotect(at(3), 2 * PAGE, PROT_READ)
    new = p.mremap(at(0), 5 * PAGE, 5 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(10))
    assert new == at(10)
    assert regions(p, BASE, 20) == ["[10,12) rw-p", "[13,15) r--p"]
    assert p.read(at(13), 1) == b"r"


def test_mremap_dontunmap_leaves_empty_source(p):
    anon(p, 0, 4)
    p.write(at(0), b"data")
    new = p.mremap(at(0), 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, at(10))
    assert p.read(new, 4) == b"data"
    assert p.read(at(0), 4) == b"\0\0\0\0"
    assert new == at(10)
    assert regions(p, BASE, 20) == ["[0,4) rw-p", "[10,14) rw-p"]


# --- mseal and sealed VMAs ----------------------------------------------------------------------


def test_mseal_unaligned(p):
    anon(p, 0, 4)
    assert errno_of(p.mseal, at(0) + 1, PAGE) == errno.EINVAL


def test_mseal_flags_nonzero(p):
    anon(p, 0, 4)
    assert errno_of(p.mseal, at(0), PAGE, 1) == errno.EINVAL


def test_mseal_len_zero(p):
    p.mseal(at(0), 0)
    assert p.map_count == 0


def test_mseal_hole_changes_nothing(p):
    anon(p, 0, 2)
    anon(p, 3, 2)
    assert errno_of(p.mseal, at(0), 5 * PAGE) == errno.ENOMEM
    assert regions(p, BASE, 6) == ["[0,2) rw-p", "[3,5) rw-p"]
    assert "sl" not in vmflags(p.smaps(), at(0))


def test_mseal_splits_like_mprotect(p):
    anon(p, 0, 8)
    p.mseal(at(2), 2 * PAGE)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) rw-p", "[4,8) rw-p"]
    assert vmflags(p.smaps(), at(2)) == ["rd", "wr", "mr", "mw", "me", "ac", "sl"]
    assert "sl" not in vmflags(p.smaps(), at(0))


def _sealed(p):
    anon(p, 0, 2)
    anon(p, 2, 4, PROT_READ)
    anon(p, 6, 2)
    p.mseal(at(2), 4 * PAGE)
    return regions(p, BASE, 10)


def test_sealed_munmap_is_eperm_even_spanning(p):
    before = _sealed(p)
    assert errno_of(p.munmap, at(0), 8 * PAGE) == errno.EPERM
    assert errno_of(p.munmap, at(3), PAGE) == errno.EPERM
    assert regions(p, BASE, 10) == before


def test_sealed_mprotect_is_eperm(p):
    before = _sealed(p)
    assert errno_of(p.mprotect, at(2), 4 * PAGE, RW) == errno.EPERM
    assert errno_of(p.mprotect, at(3), PAGE, RW) == errno.EPERM
    assert regions(p, BASE, 10) == before


def test_sealed_mprotect_spanning_changes_the_vmas_before_it(p):
    # kernel-verified (6.18): the seal is checked per VMA in mprotect_fixup, left to right, so
    # the VMA before the sealed one is already changed when EPERM comes back (the spec's
    # "nothing changed" holds only when the sealed VMA is the first one in the range).
    _sealed(p)
    assert errno_of(p.mprotect, at(0), 8 * PAGE, PROT_READ) == errno.EPERM
    assert regions(p, BASE, 10) == ["[0,2) r--p", "[2,6) r--p", "[6,8) rw-p"]


def test_sealed_mremap_is_eperm(p):
    before = _sealed(p)
    assert errno_of(p.mremap, at(2), 4 * PAGE, 2 * PAGE) == errno.EPERM
    flags = MREMAP_MAYMOVE | MREMAP_FIXED
    assert errno_of(p.mremap, at(2), 4 * PAGE, 4 * PAGE, flags, at(20)) == errno.EPERM
    assert regions(p, BASE, 10) == before


def test_sealed_mremap_onto_it_is_eperm(p):
    before = _sealed(p)
    flags = MREMAP_MAYMOVE | MREMAP_FIXED
    assert errno_of(p.mremap, at(7), PAGE, PAGE, flags, at(4)) == errno.EPERM
    assert regions(p, BASE, 10) == before


def test_sealed_map_fixed_over_it_is_eperm(p):
    before = _sealed(p)
    assert errno_of(p.mmap, at(2), 2 * PAGE, RW, ANON | MAP_FIXED) == errno.EPERM
    assert regions(p, BASE, 10) == before


def test_sealed_map_fixed_from_the_left_neighbour_leaves_its_split(p):
    # kernel-verified: vms_gather_munmap_vmas splits the first VMA at the range start, then
    # meets the sealed VMA and fails; the split is not undone.
    _sealed(p)
    assert errno_of(p.mmap, at(1), 2 * PAGE, RW, ANON | MAP_FIXED) == errno.EPERM
    assert regions(p, BASE, 10) == ["[0,1) rw-p", "[1,2) rw-p", "[2,6) r--p", "[6,8) rw-p"]


def test_sealed_munmap_from_the_left_neighbour_leaves_its_split(p):
    _sealed(p)  # kernel-verified, as above
    assert errno_of(p.munmap, at(1), 2 * PAGE) == errno.EPERM
    assert regions(p, BASE, 10) == ["[0,1) rw-p", "[1,2) rw-p", "[2,6) r--p", "[6,8) rw-p"]


def test_sealed_vma_accepts_flag_advice(p):
    _sealed(p)  # kernel-verified: DONTDUMP is not a destructive advice
    p.madvise(at(0), 8 * PAGE, MADV_DONTDUMP)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,6) r--p", "[6,8) rw-p"]
    assert "dd" in vmflags(p.smaps(), at(2))


def test_sealed_dontneed_on_rw_anon_is_ok(p):
    anon(p, 0, 4)
    p.write(at(0), b"x")
    p.mseal(at(0), 4 * PAGE)
    p.madvise(at(0), 4 * PAGE, MADV_DONTNEED)
    assert p.read(at(0), 1) == b"\0"


def test_sealed_dontneed_on_readonly_anon_is_eperm(p):
    anon(p, 0, 4)
    touch(p, 0)
    p.mprotect(at(0), 4 * PAGE, PROT_READ)
    p.mseal(at(0), 4 * PAGE)
    assert errno_of(p.madvise, at(0), 4 * PAGE, MADV_DONTNEED) == errno.EPERM
    assert p.read(at(0), 1) == b"x"


def test_sealed_shared_memfd_dontneed_is_ok(p):
    fd = p.memfd_create("s")
    p.ftruncate(fd, 4 * PAGE)
    shared(p, 0, 4, fd, 0, PROT_READ)
    p.mseal(at(0), 4 * PAGE)
    p.madvise(at(0), 4 * PAGE, MADV_DONTNEED)
    assert regions(p, BASE, 4) == ["[0,4) r--s"]
