"""When adjacent VMAs merge and when they stay apart: spec §2, experiments A..V.

Every expectation was checked on Linux 6.18 (kernel-verified) by running the same calls through
ctypes on /proc/self/maps.  Pages are relative to ``BASE``.
"""

from __future__ import annotations

import pytest
from layout import BASE, PAGE, RW, anon, at, draw, peek, regions, shared, touch, vmflags

from vmsim import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MAP_GROWSDOWN,
    MAP_NORESERVE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_EXEC,
    PROT_READ,
)


def move(p, src_page: int, npages: int, dst_page: int) -> None:
    """mremap(MAYMOVE|FIXED) npages from src_page to dst_page."""
    new = p.mremap(
        at(src_page), npages * PAGE, npages * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, at(dst_page)
    )
    assert new == at(dst_page)


# --- A..D: plain anonymous neighbours ----------------------------------------------------------


def test_A_adjacent_rw_merge(p):
    anon(p, 0, 4)
    anon(p, 4, 4)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    assert draw(p, BASE, 10) == "AAAAAAAA.."
    assert p.map_count == 1


def test_A_mapped_on_the_left_merges_too(p):
    anon(p, 4, 4)
    anon(p, 0, 4)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


def test_B_written_then_unfaulted_neighbour_merges(p):
    anon(p, 0, 4)
    touch(p, 0, 4)
    anon(p, 4, 4)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


def test_C_different_prot_does_not_merge(p):
    anon(p, 0, 4)
    anon(p, 4, 4, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) r--p"]
    assert draw(p, BASE, 10) == "AAAABBBB.."
    assert p.map_count == 2


def test_D_rwx_neighbour_reuses_anon_vma_then_merges(p):
    anon(p, 0, 4)
    touch(p, 0)
    anon(p, 4, 4, RW | PROT_EXEC)
    touch(p, 4)  # find_mergeable_anon_vma: flags differ only in EXEC -> shares A's anon_vma
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) rwxp"]
    p.mprotect(at(4), 4 * PAGE, RW)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


# --- E: anon_vma compatibility -----------------------------------------------------------------


def _e_setup(p) -> None:
    """B mapped r--, DONTFORK (so it cannot reuse A's anon_vma), made rw, written, DOFORK."""
    anon(p, 4, 4, PROT_READ)
    p.madvise(at(4), 4 * PAGE, MADV_DONTFORK)
    p.mprotect(at(4), 4 * PAGE, RW)
    touch(p, 4)
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) rw-p"]  # dc still differs
    p.madvise(at(4), 4 * PAGE, MADV_DOFORK)


def test_E2_both_written_with_different_anon_vmas_stay_apart(p):
    anon(p, 0, 4)
    touch(p, 0)
    _e_setup(p)
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) rw-p"]
    assert p.map_count == 2


def test_E3_unwritten_left_merges(p):
    anon(p, 0, 4)
    _e_setup(p)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


def test_E4_read_fault_gives_no_anon_vma(p):
    anon(p, 0, 4)
    peek(p, 0, 4)
    _e_setup(p)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


# --- G..I: mremap moves (copy_vma keeps pgoff only when there is an anon_vma) -------------------


def test_G_written_vma_moved_next_to_written_vma_stays_apart(p):
    anon(p, 0, 4)
    touch(p, 0)
    anon(p, 20, 4)
    touch(p, 20)
    move(p, 20, 4, 4)
    assert regions(p, BASE, 30) == ["[0,4) rw-p", "[4,8) rw-p"]


def test_H_unwritten_vma_moved_next_to_unwritten_vma_merges(p):
    anon(p, 0, 4)
    anon(p, 20, 4)
    move(p, 20, 4, 4)
    assert regions(p, BASE, 30) == ["[0,8) rw-p"]


def test_H_unwritten_vma_moved_next_to_written_vma_merges(p):
    anon(p, 0, 4)
    touch(p, 0)
    anon(p, 20, 4)
    move(p, 20, 4, 4)
    assert regions(p, BASE, 30) == ["[0,8) rw-p"]


def test_I1_unwritten_half_written_elsewhere_and_moved_back_stays_apart(p):
    anon(p, 0, 8)
    move(p, 4, 4, 20)
    touch(p, 20)
    move(p, 20, 4, 4)
    assert regions(p, BASE, 30) == ["[0,4) rw-p", "[4,8) rw-p"]


def test_I2_written_half_moved_away_and_back_merges(p):
    anon(p, 0, 8)
    touch(p, 0, 8)
    move(p, 4, 4, 20)
    assert regions(p, BASE, 30) == ["[0,4) rw-p", "[20,24) rw-p"]
    move(p, 20, 4, 4)
    assert regions(p, BASE, 30) == ["[0,8) rw-p"]


# --- J..L: hidden flags ------------------------------------------------------------------------


def test_J_hidden_vm_account_blocks_merge(p):
    anon(p, 0, 4, PROT_READ)
    anon(p, 4, 4)
    touch(p, 4)  # anon_vma: mprotect r-- may no longer clear VM_ACCOUNT
    p.mprotect(at(4), 4 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,4) r--p", "[4,8) r--p"]
    assert "ac" not in vmflags(p.smaps(), at(0))
    assert "ac" in vmflags(p.smaps(), at(4))


def test_K_unwritten_loses_vm_account_and_merges(p):
    anon(p, 0, 4, PROT_READ)
    anon(p, 4, 4)
    assert "ac" in vmflags(p.smaps(), at(4))
    p.mprotect(at(4), 4 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,8) r--p"]
    assert "ac" not in vmflags(p.smaps(), at(0))


def test_mprotect_adding_write_sets_vm_account(p):
    anon(p, 0, 4, PROT_READ)
    assert "ac" not in vmflags(p.smaps(), at(0))
    p.mprotect(at(0), 4 * PAGE, RW)
    assert vmflags(p.smaps(), at(0)) == ["rd", "wr", "mr", "mw", "me", "ac"]


def test_L_noreserve_does_not_merge_with_plain(p):
    anon(p, 0, 4, RW, MAP_NORESERVE)
    anon(p, 4, 4)
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) rw-p"]
    assert vmflags(p.smaps(), at(0)) == ["rd", "wr", "mr", "mw", "me", "nr"]
    assert vmflags(p.smaps(), at(4)) == ["rd", "wr", "mr", "mw", "me", "ac"]


def test_L_two_noreserve_merge(p):
    anon(p, 0, 4, RW, MAP_NORESERVE)
    anon(p, 4, 4, RW, MAP_NORESERVE)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


# --- M..O: file (memfd) mappings ---------------------------------------------------------------


def test_M_same_memfd_contiguous_offsets_merge(p):
    fd = p.memfd_create("m")
    p.ftruncate(fd, 16 * PAGE)
    shared(p, 0, 4, fd, 0)
    shared(p, 4, 4, fd, 4)
    assert regions(p, BASE, 10) == ["[0,8) rw-s"]


def test_N_same_memfd_non_contiguous_offsets_stay_apart(p):
    fd = p.memfd_create("n")
    p.ftruncate(fd, 16 * PAGE)
    shared(p, 0, 4, fd, 0)
    shared(p, 4, 4, fd, 8)
    assert regions(p, BASE, 10) == ["[0,4) rw-s", "[4,8) rw-s"]


def test_N_same_memfd_reversed_offsets_stay_apart(p):
    fd = p.memfd_create("n")
    p.ftruncate(fd, 16 * PAGE)
    shared(p, 0, 4, fd, 4)
    shared(p, 4, 4, fd, 0)
    assert regions(p, BASE, 10) == ["[0,4) rw-s", "[4,8) rw-s"]


def test_O_two_memfds_stay_apart(p):
    fd1 = p.memfd_create("o")
    fd2 = p.memfd_create("o")
    p.ftruncate(fd1, 16 * PAGE)
    p.ftruncate(fd2, 16 * PAGE)
    shared(p, 0, 4, fd1, 0)
    shared(p, 4, 4, fd2, 4)
    assert regions(p, BASE, 10) == ["[0,4) rw-s", "[4,8) rw-s"]


def test_memfd_private_and_shared_of_same_file_stay_apart(p):
    fd = p.memfd_create("ps")
    p.ftruncate(fd, 16 * PAGE)
    shared(p, 0, 4, fd, 0)
    p.mmap(at(4), 4 * PAGE, RW, 0x02 | 0x100000, fd, 4 * PAGE)  # MAP_PRIVATE|FIXED_NOREPLACE
    assert regions(p, BASE, 10) == ["[0,4) rw-s", "[4,8) rw-p"]


# --- P..S: split and revert, fill ---------------------------------------------------------------


@pytest.mark.parametrize("written", [False, True])
def test_P_mprotect_split_then_revert_remerges(p, written):
    anon(p, 0, 8)
    if written:
        touch(p, 0, 8)
    p.mprotect(at(2), 2 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) r--p", "[4,8) rw-p"]
    assert p.map_count == 3
    p.mprotect(at(2), 2 * PAGE, RW)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]
    assert p.map_count == 1


@pytest.mark.parametrize("written", [False, True])
def test_Q_mlock_split_then_munlock_remerges(p, written):
    anon(p, 0, 8)
    if written:
        touch(p, 0, 8)
    p.mlock(at(2), 2 * PAGE)
    assert draw(p, BASE, 10) == "AABBCCCC.."
    assert "lo" in vmflags(p.smaps(), at(2))
    p.munlock(at(2), 2 * PAGE)
    assert draw(p, BASE, 10) == "AAAAAAAA.."


def test_R_mprotect_tail_split_then_revert_remerges(p):
    anon(p, 0, 8)
    touch(p, 7)
    p.mprotect(at(4), 4 * PAGE, PROT_READ)
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) r--p"]
    p.mprotect(at(4), 4 * PAGE, RW)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


@pytest.mark.parametrize("written", [False, True])
def test_S_filling_the_hole_merges_three_ways(p, written):
    anon(p, 0, 8)
    if written:
        touch(p, 0, 8)
    p.munmap(at(3), 2 * PAGE)
    assert draw(p, BASE, 10) == "AAA..BBB.."
    anon(p, 3, 2)
    assert draw(p, BASE, 10) == "AAAAAAAA.."
    assert p.map_count == 1


def test_S_filling_the_hole_between_unwritten_separate_mappings(p):
    anon(p, 0, 3)
    anon(p, 5, 3)
    anon(p, 3, 2)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


def test_T_growsdown_does_not_merge_with_plain_anon(p):
    anon(p, 4, 4, RW, MAP_GROWSDOWN)
    anon(p, 0, 4)
    assert regions(p, BASE, 10) == ["[0,4) rw-p", "[4,8) rw-p"]
    assert "gd" in vmflags(p.smaps(), at(4))


# --- V: fork -----------------------------------------------------------------------------------


def test_V_child_neighbour_of_inherited_written_vma_stays_apart(p):
    anon(p, 0, 4)
    touch(p, 0)
    c = p.fork()
    anon(c, 4, 4)
    assert regions(c, BASE, 10) == ["[0,4) rw-p", "[4,8) rw-p"]
    anon(p, 4, 4)
    assert regions(p, BASE, 10) == ["[0,8) rw-p"]


def test_V_child_neighbour_of_inherited_unwritten_vma_merges(p):
    anon(p, 0, 4)
    c = p.fork()
    anon(c, 4, 4)
    assert regions(c, BASE, 10) == ["[0,8) rw-p"]


def test_fork_copies_the_vma_list(p):
    anon(p, 0, 4)
    anon(p, 6, 2, PROT_READ)
    touch(p, 0)
    c = p.fork()
    assert c.maps() == p.maps()
    assert c.map_count == p.map_count == 2


def test_fork_drops_dontfork_vmas_in_the_child(p):
    anon(p, 0, 8)
    p.madvise(at(2), 2 * PAGE, MADV_DONTFORK)
    c = p.fork()
    assert regions(p, BASE, 10) == ["[0,2) rw-p", "[2,4) rw-p", "[4,8) rw-p"]
    assert regions(c, BASE, 10) == ["[0,2) rw-p", "[4,8) rw-p"]
    assert c.map_count == 2
