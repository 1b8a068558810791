"""Transparent huge pages (issue 13): settings, the PMD fault path, splits, fork and COW,
the deferred split shrinker. Expected values come from the kernel's rules (mm/huge_memory.c
of 6.18) and from what this machine's kernel showed for the same steps (see
tests/differential/test_thp.py, which runs them against it)."""

from __future__ import annotations

import pytest
from thp_helpers import KPF_HEAD, KPF_TAIL, KPF_THP, KPF_ZERO, M2, PFN, RW, P
from thp_helpers import smaps as _smaps
from thp_helpers import vmstat as _vmstat

import vmsim
from vmsim.constants import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.mm.huge_memory import DEFAULT_THP, ThpSettings, deferred_split_scan, thp_settings


def _huge(m: vmsim.Machine, length: int = 2 * M2) -> tuple[vmsim.Process, int]:
    p = m.spawn()
    a = p.mmap(0, length, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.madvise(a, length, MADV_HUGEPAGE)
    return p, a


# --- settings ----------------------------------------------------------------------------
def test_default_settings_are_the_reference_machines() -> None:
    d = vmsim.Machine().memory.thp.settings
    assert d == DEFAULT_THP
    assert (d.enabled, d.defrag, d.use_zero_page, d.shmem_enabled) == (
        "madvise",
        "madvise",
        True,
        "never",
    )
    assert (d.max_ptes_none, d.max_ptes_swap, d.max_ptes_shared) == (511, 64, 256)
    assert (d.pages_to_scan, d.scan_sleep_millisecs) == (4096, 10000)
    assert d.mthp_mode(2048) == "inherit" and d.mthp_mode(64) == "never"


def test_settings_from_options() -> None:
    assert thp_settings("always").enabled == "always"
    s = thp_settings({"enabled": "never", "max_ptes_none": 0, "mthp": {2048: "always"}})
    assert s.enabled == "never" and s.max_ptes_none == 0 and s.pmd_mode() == "always"
    with pytest.raises(ValueError, match=r"max_ptes_none must be an integer within 0\.\.511"):
        thp_settings({"max_ptes_none": 512})
    with pytest.raises(ValueError, match="unknown thp setting"):
        thp_settings({"enabeld": "always"})
    with pytest.raises(ValueError, match="defrag must be one of"):
        ThpSettings(defrag="sometimes")
    with pytest.raises(ValueError, match="no size 8"):
        thp_settings({"mthp": {8: "always"}})
    with pytest.raises(ValueError, match="thp must be always, madvise or never"):
        vmsim.Machine(thp="maybe")


# --- the fault path ----------------------------------------------------------------------
def test_write_fault_in_a_madvised_vma_maps_a_pmd_thp() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    assert a % M2 == 0  # thp_get_unmapped_area(): a 2 MiB multiple is placed aligned
    p.write(a + 5 * P, b"x")
    leaf = p.mm.pt.get(a)
    assert leaf is not None and leaf.level == PMD_LEVEL
    e = p.pagemap(a, 512)
    head = e[0] & PFN
    assert head % 512 == 0 and [x & PFN for x in e] == list(range(head, head + 512))
    assert all(x >> 56 == 0x81 for x in e)  # present, exclusive
    st = _smaps(p, a)
    assert (st["Rss"], st["AnonHugePages"], st["Private_Dirty"], st["THPeligible"]) == (
        2048,
        2048,
        2048,
        1,
    )
    assert _vmstat(m)["thp_fault_alloc"] == 1
    assert m.kpageflags(head) & (KPF_THP | KPF_HEAD) == KPF_THP | KPF_HEAD
    assert m.kpageflags(head + 1) & (KPF_THP | KPF_TAIL) == KPF_THP | KPF_TAIL
    assert "AnonHugePages:      2048 kB" in m.meminfo()
    assert _vmstat(m)["nr_anon_transparent_hugepages"] == 1
    assert p.read(a + 5 * P, 1) == b"x" and p.read(a + 6 * P, 1) == b"\0"
    # one 2 MiB TLB entry covers the THP: another page of it translates without a walk
    t = p.translate(a + 300 * P + 5)
    assert (t.page_size, t.pfn, t.tlb, t.memory_refs) == (M2, head + 300, "L1", 0)
    assert [s.level for s in t.entries] == [4, 3, 2]  # the walk ended at the PMD leaf
    m.check_memory()
    m.check_tlb()


def test_read_fault_maps_the_huge_zero_page_then_a_write_replaces_it() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    assert p.read(a + 100, 4) == bytes(4)
    e = p.pagemap(a, 2)
    assert e[0] >> 56 == 0xA0  # present, file (the huge zero page is not anonymous)
    assert m.kpageflags(e[0] & PFN) == KPF_THP | KPF_ZERO | KPF_HEAD
    assert m.kpageflags(e[1] & PFN) == KPF_THP | KPF_ZERO | KPF_TAIL
    assert _smaps(p, a)["Rss"] == 0
    assert p.mm.tree.lookup(a).anon_vma is not None  # vmf_anon_prepare() on a read fault
    p.write(a, b"w")  # do_huge_zero_wp_pmd(): a THP in its place
    assert _smaps(p, a)["AnonHugePages"] == 2048
    v = _vmstat(m)
    assert (v["thp_zero_page_alloc"], v["thp_fault_alloc"], v["thp_split_pmd"]) == (1, 1, 0)
    m.check_memory()


def test_no_thp_without_madvise_or_with_nohugepage() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a, b"x")
    assert p.mm.pt.get(a).level == PTE_LEVEL
    p.madvise(a + M2, M2, MADV_NOHUGEPAGE)
    p.write(a + M2, b"x")
    assert p.mm.pt.get(a + M2).level == PTE_LEVEL
    assert _smaps(p, a + M2)["THPeligible"] == 0
    m2 = vmsim.Machine(thp="always")
    q = m2.spawn()
    b = q.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    q.write(b, b"x")
    assert q.mm.pt.get(b).level == PMD_LEVEL


def test_a_vma_smaller_than_the_aligned_2mib_gets_small_pages() -> None:
    m = vmsim.Machine()
    p, a = _huge(m, M2 + 8 * P)
    # [a, a + 2M + 32K) mapped where the 2 MiB multiple rule does not apply: only an
    # aligned 2 MiB wholly inside the VMA can be a THP
    aligned = (a + M2 - 1) & -M2
    for addr in range(a, a + M2 + 8 * P, 64 * P):
        p.write(addr, b"x")
    levels = {p.mm.pt.get(x).level for x in range(a, a + M2 + 8 * P, 64 * P)}
    inside = aligned + M2 <= a + M2 + 8 * P
    assert levels == ({PMD_LEVEL, PTE_LEVEL} if inside else {PTE_LEVEL})


def test_no_order9_block_falls_back_to_4k_pages() -> None:
    # 768 pages: the zero page sits in the only aligned 512-page block, and 512..767 is too
    # short to be one: there is no free block of order 9
    m = vmsim.Machine(ram="3M")
    p, a = _huge(m, M2)
    p.write(a, b"x")
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert _vmstat(m)["thp_fault_fallback"] == 1
    m.check_memory()


# --- splits -------------------------------------------------------------------------------
def test_partial_dontneed_splits_the_pmd_and_the_memory_stays_used() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"x")
    free = m.memory.frames.free_pages
    p.madvise(a + 3 * P, 2 * P, MADV_DONTNEED)
    st = _smaps(p, a)
    assert (st["Rss"], st["AnonHugePages"]) == (2040, 0)
    v = _vmstat(m)
    assert (v["thp_split_pmd"], v["thp_deferred_split_page"]) == (1, 1)
    # the two pages are unmapped but still in the THP: nothing was freed (the deposited
    # page table became the PTE table)
    assert m.memory.frames.free_pages == free
    e = p.pagemap(a, 6)
    head = e[0] & PFN
    assert e[3] == 0 and e[4] == 0 and e[5] & PFN == head + 5
    assert m.kpageflags(head + 3) & KPF_TAIL  # still a tail page of the large folio
    m.check_memory()
    # memory pressure: the deferred split shrinker splits it; the two unmapped pages are
    # freed, and so are the 509 that hold only zeros (remapped to the shared zero page:
    # RMP_USE_SHARED_ZEROPAGE), only page 0 (written) stays
    assert deferred_split_scan(m.memory) == 1
    assert _vmstat(m)["thp_split_page"] == 1
    assert m.memory.frames.free_pages == free + 511
    assert _smaps(p, a)["Rss"] == 4
    e = p.pagemap(a, 6)
    assert e[0] & PFN == head and e[5] & PFN == m.zero_pfn and e[5] >> 56 == 0x80
    assert not m.kpageflags(head) & (KPF_THP | KPF_HEAD)
    assert p.read(a, 1) == b"x" and p.read(a + 5 * P, 1) == b"\0"
    m.check_memory()


def test_partial_munmap_and_mprotect_split_but_whole_ones_do_not() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"x")
    p.write(a + M2, b"y")
    p.mprotect(a + M2, M2, PROT_READ)  # a whole PMD: change_huge_pmd()
    assert p.mm.pt.get(a + M2).level == PMD_LEVEL
    p.mprotect(a + M2, M2, RW)
    p.write(a + M2 + P, b"z")  # the THP is ours alone: written without a copy
    assert p.mm.pt.get(a + M2).level == PMD_LEVEL
    p.munmap(a + 10 * P, P)
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert _vmstat(m)["thp_split_pmd"] == 1
    p.mprotect(a + M2 + 7 * P, P, PROT_READ)
    assert _vmstat(m)["thp_split_pmd"] == 2
    p.munmap(a + M2, M2)
    assert p.mm.pt.get(a + M2) is None
    m.check_memory()
    p.exit()
    m.check_memory()
    assert m.memory.thp.deposit.get(p.mm.serial, {}) == {}


# --- fork and copy-on-write --------------------------------------------------------------
def test_fork_shares_the_thp_and_a_write_splits_then_copies_one_page() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"p")
    c = p.fork()
    assert c.mm.pt.get(a).level == PMD_LEVEL
    assert m.page_refcount(p.pagemap(a, 1)[0] & PFN) == 2
    c.write(a + P, b"c")  # do_huge_pmd_wp_page(): shared, so split and copy one page
    assert c.mm.pt.get(a).level == PTE_LEVEL and p.mm.pt.get(a).level == PMD_LEVEL
    pe, ce = p.pagemap(a, 2), c.pagemap(a, 2)
    assert pe[0] & PFN == ce[0] & PFN and pe[1] & PFN != ce[1] & PFN
    assert p.read(a + P, 1) == b"\0" and c.read(a + P, 1) == b"c"
    assert pe[1] >> 56 == 0x80  # the head page is mapped twice: not exclusive
    st = _smaps(c, a)
    assert (st["Rss"], st["AnonHugePages"]) == (2048, 0)
    assert _smaps(p, a)["AnonHugePages"] == 2048
    m.check_memory()
    c.exit()
    p.write(a + 2 * P, b"q")  # alone again: the PMD is reused, made writable
    assert p.mm.pt.get(a).level == PMD_LEVEL
    m.check_memory()


# --- khugepaged and MADV_COLLAPSE ----------------------------------------------------------
def test_khugepaged_rss_bloat_one_touched_page_becomes_2mib() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a + 9 * P, b"x")  # a 4 KiB page: the VMA was not advised yet
    p.madvise(a, 2 * M2, MADV_HUGEPAGE)
    assert _smaps(p, a)["Rss"] == 4
    m.tick()  # khugepaged: 1 present PTE, 511 empty <= max_ptes_none (511), and it is young
    st = _smaps(p, a)
    assert (st["Rss"], st["AnonHugePages"]) == (2048, 2048)
    assert p.read(a + 9 * P, 1) == b"x" and p.read(a + 10 * P, 1) == b"\0"
    assert _vmstat(m)["thp_collapse_alloc"] == 1
    assert m.memory.thp.pages_collapsed == 1 and m.memory.thp.full_scans == 1
    m.check_memory()


def test_khugepaged_limits() -> None:
    m = vmsim.Machine(thp={"max_ptes_none": 510})
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a, b"x")
    p.madvise(a, 2 * M2, MADV_HUGEPAGE)
    m.tick()  # 511 empty PTEs > 510: thp_scan_exceed_none_pte, no collapse
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert _vmstat(m)["thp_scan_exceed_none_pte"] == 1
    p.write(a + P, b"y")
    m.tick()
    assert p.mm.pt.get(a).level == PMD_LEVEL
    # a shared folio counts against max_ptes_shared
    m2 = vmsim.Machine(thp={"max_ptes_shared": 1})
    q = m2.spawn()
    b = q.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(3):
        q.write(b + i * P, b"s")
    q.fork()
    q.madvise(b, 2 * M2, MADV_HUGEPAGE)
    m2.tick()
    assert _vmstat(m2)["thp_scan_exceed_share_pte"] == 1
    assert q.mm.pt.get(b).level == PTE_LEVEL
    m2.check_memory()


def test_khugepaged_needs_a_young_or_referenced_page() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a, b"x")
    p.madvise(a, 2 * M2, MADV_HUGEPAGE)
    leaf = p.mm.pt.get(a)
    p.mm.pt.set(a, leaf.entry & ~(1 << 5))  # old, as after reclaim cleared the A bit
    m.tick()
    assert p.mm.pt.get(a).level == PTE_LEVEL  # SCAN_LACK_REFERENCED_PAGE
    with pytest.raises(OSError) as e:
        p.madvise(a, 2 * M2, 25)  # the second 2 MiB has no page table: SCAN_PMD_NULL
    assert e.value.errno == 22
    # but the first one was collapsed: MADV_COLLAPSE does not ask for a young page
    assert p.mm.pt.get(a).level == PMD_LEVEL
    assert m.memory.thp.pages_collapsed == 0  # only khugepaged's collapses count there
    m.check_memory()


def test_madvise_collapse_errors() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    with pytest.raises(OSError) as e:
        p.madvise(a + M2 - P, 2 * P, 25)  # no anon_vma: no THP orders at all
    assert e.value.errno == 22
    p.write(a + M2, b"x")
    p.madvise(a + M2 - P, 2 * P, 25)  # straddles a boundary: nothing to do, success
    with pytest.raises(OSError) as e:
        p.madvise(a + P, P, 25)  # inside one PMD (hstart > hend): fails
    assert e.value.errno == 22
    tiny = vmsim.Machine(ram="3M")  # no free block of order 9: ENOMEM
    q = tiny.spawn()
    b = q.mmap(0, M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    q.write(b, b"x")
    if b % M2 == 0:
        with pytest.raises(OSError) as e:
            q.madvise(b, M2, 25)
        assert e.value.errno == 12
        assert _vmstat(tiny)["thp_collapse_alloc_failed"] == 1


# --- page tables and the deferred split count (found by the random differential runs) ------
def test_dontneed_of_2mib_frees_the_empty_pte_table_then_a_read_gets_the_huge_zero_page() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a, b"x")  # a 4 KiB page (not advised yet): a PTE table for [a, a + 2 MiB)
    tables = p.mm.pt.table_pages
    p.madvise(a, P, MADV_DONTNEED)  # under 2 MiB: the empty table stays
    assert p.mm.pt.table_pages == tables
    p.madvise(a, M2, MADV_DONTNEED)  # CONFIG_PT_RECLAIM: the table it emptied goes
    assert p.mm.pt.table_pages == tables - 1
    p.madvise(a, 2 * M2, MADV_HUGEPAGE)
    p.read(a + P, 1)
    assert p.mm.pt.get(a).level == PMD_LEVEL  # the huge zero page


def test_munmap_keeps_a_page_table_a_neighbour_shares() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a + M2 + 100 * P, b"x")
    tables = p.mm.pt.table_pages
    # the PTE table of [a + 2M, a + 4M) is shared with what is left of the VMA above a + 3M
    # (free_pgtables()'s ceiling): it stays, empty
    p.munmap(a + M2, M2 // 2)
    assert p.mm.pt.table_pages == tables
    p.madvise(a + M2 + M2 // 2, M2 // 2, MADV_HUGEPAGE)
    p.munmap(a + M2 + M2 // 2, M2 // 2)  # now nothing shares it: freed
    assert p.mm.pt.table_pages == tables - 1
    m.check_memory()


def test_madvise_collapse_stops_at_an_empty_pmd_slot() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    a = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a + M2 + 5 * P, b"x")  # the PMD table exists, the first slot is empty
    with pytest.raises(OSError) as e:
        p.madvise(a, 2 * M2, 25)  # SCAN_PMD_NONE ends the walk: the second half stays
    assert e.value.errno == 22
    assert p.mm.pt.get(a + M2 + 5 * P).level == PTE_LEVEL
    p.madvise(a + M2, M2, 25)
    assert p.mm.pt.get(a + M2 + 5 * P).level == PMD_LEVEL


def test_a_thp_unmapped_in_one_zap_is_never_partly_mapped() -> None:
    m = vmsim.Machine()
    p, a = _huge(m)
    p.write(a, b"x")
    p.mprotect(a + 100 * P, P, PROT_READ)  # a VMA boundary: the PMD is split
    p.mprotect(a + 100 * P, P, RW)  # one VMA again, the PTEs writable again
    assert _vmstat(m)["thp_split_pmd"] == 1 and p.map_count == 1
    p.munmap(a, 2 * M2)  # one run of 512 PTEs of one folio: never partly mapped
    assert _vmstat(m)["thp_deferred_split_page"] == 0
    q, b = _huge(m)
    q.write(b, b"x")
    q.madvise(b + 100 * P, P, MADV_NOHUGEPAGE)  # three VMAs: zapped one after the other
    q.munmap(b, 2 * M2)
    assert _vmstat(m)["thp_deferred_split_page"] == 1
    m.check_memory()
