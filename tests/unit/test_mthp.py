"""Multi-size anonymous THP (mTHP) on the fault path (issue 13). This machine has every mTHP
size at ``never``, and its settings must not be changed, so the expected values are derived
by hand from Linux 6.18:

* mm/memory.c do_anonymous_page(): a read fault maps the shared zero page before
  alloc_anon_folio() is reached; a write fault calls alloc_anon_folio(), which takes
  thp_vma_allowable_orders(vma, TVA_PAGEFAULT, BIT(PMD_ORDER) - 1) (include/linux/huge_mm.h:
  huge_anon_orders_always | _madvise if VM_HUGEPAGE | _inherit if the top-level mode allows
  the VMA), thp_vma_suitable_orders() (the aligned range inside the VMA; no pgoff test for
  anonymous memory), the highest order whose PTEs are all pte_none(), then allocates from
  the highest order down, count_mthp_stat(order, MTHP_STAT_ANON_FAULT_FALLBACK) for each
  order that failed; success maps every page by set_ptes() and counts anon_fault_alloc;
* fs/proc/page.c stable_page_flags(): KPF_THP for any large anonymous (rmappable) folio;
  fs/proc/task_mmu.c: AnonHugePages from PMD mappings only, THPeligible from
  thp_vma_allowable_orders(vma, TVA_SMAPS, THP_ORDERS_ALL);
* mm/huge_memory.c deferred_split_folio(): a partly unmapped folio of order >= 2 is queued,
  counting split_deferred of its size, and THP_DEFERRED_SPLIT_PAGE only when it is
  PMD-sized; __folio_split(): THP_SPLIT_PAGE only for PMD-sized folios, split per size;
* mm/memory.c wp_can_reuse_anon_folio(): a large folio is reused when every reference is a
  mapping of this mm.
"""

from __future__ import annotations

import pytest
from thp_helpers import KPF_HEAD, KPF_TAIL, KPF_THP, M2, PFN, RW, P
from thp_helpers import smaps as _smaps
from thp_helpers import vmstat as _vmstat

import vmsim
from vmsim.constants import (
    MADV_COLLAPSE,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.mm.huge_memory import deferred_split_scan
from vmsim.phys.frames import OutOfMemory


def _machine(ram: str = "256M", **mthp: str) -> vmsim.Machine:
    """A machine whose mTHP sizes (kB -> mode, given as k16="always") differ from here."""
    return vmsim.Machine(ram=ram, thp={"mthp": {int(k[1:]): v for k, v in mthp.items()}})


def _anon(m: vmsim.Machine, length: int = M2) -> tuple[vmsim.Process, int]:
    p = m.spawn()
    a = p.mmap(0, length, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    return p, a


def _pfns(p: vmsim.Process, addr: int, n: int) -> list[int]:
    return [e & PFN for e in p.pagemap(addr, n)]


# --- settings and the default configuration ------------------------------------------------
def test_default_configuration_has_no_mthp() -> None:
    m = vmsim.Machine()
    p, a = _anon(m)
    p.write(a + 5 * P, b"x")
    assert _smaps(p, a)["Rss"] == 4
    assert m.kpageflags(_pfns(p, a + 5 * P, 1)[0]) & KPF_THP == 0
    for size in ("16kB", "64kB", "2048kB"):
        assert set(m.thp_size_stats(size).values()) == {0}
    assert _smaps(p, a)["THPeligible"] == 0  # enabled=madvise, no MADV_HUGEPAGE


def test_stats_api_names_the_sysfs_files() -> None:
    st = vmsim.Machine().thp_size_stats("64kB")
    for name in (
        "anon_fault_alloc",
        "anon_fault_fallback",
        "anon_fault_fallback_charge",
        "swpout",
        "swpout_fallback",
        "split",
        "split_failed",
        "split_deferred",
        "nr_anon",
        "nr_anon_partially_mapped",
        "zswpout",
        "swpin",
    ):
        assert name in st
    assert "anon_fault_declined" not in st  # not upstream 6.18: not modelled, so not offered
    assert vmsim.Machine().thp_size_stats(64) == st
    for bad in ("63kB", "4kB", "4096kB", "big"):
        with pytest.raises(ValueError, match="kB"):
            vmsim.Machine().thp_size_stats(bad)


def test_the_pmd_path_counts_in_the_2048kb_stats() -> None:
    # map_anon_folio_pmd_pf(): count_mthp_stat(HPAGE_PMD_ORDER, MTHP_STAT_ANON_FAULT_ALLOC)
    m = vmsim.Machine()
    p, a = _anon(m, 2 * M2)
    p.madvise(a, 2 * M2, MADV_HUGEPAGE)
    p.write(a, b"x")
    st = m.thp_size_stats("2048kB")
    assert (st["anon_fault_alloc"], st["nr_anon"]) == (1, 1)
    assert m.thp_size_stats("1024kB")["anon_fault_alloc"] == 0


# --- the fault ---------------------------------------------------------------------------
def test_write_fault_maps_a_pte_mapped_64k_folio() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)  # no MADV_HUGEPAGE: "always" sizes apply anyway
    assert a % M2 == 0
    p.write(a + 21 * P, b"x")  # in the aligned 64 KiB block a+16P .. a+32P
    pf = _pfns(p, a + 16 * P, 16)
    head = pf[0]
    assert head % 16 == 0 and pf == list(range(head, head + 16))
    assert all(e >> 56 == 0x81 for e in p.pagemap(a + 16 * P, 16))  # present, exclusive
    assert p.pagemap(a + 15 * P, 1)[0] == 0 and p.pagemap(a + 32 * P, 1)[0] == 0
    leaf = p.mm.pt.get(a + 16 * P)
    assert leaf is not None and leaf.level == PTE_LEVEL
    st = _smaps(p, a)
    assert (st["Rss"], st["AnonHugePages"], st["Private_Dirty"], st["THPeligible"]) == (
        64,
        0,
        64,
        1,
    )
    assert m.kpageflags(head) & (KPF_THP | KPF_HEAD) == KPF_THP | KPF_HEAD
    assert m.kpageflags(head + 3) & (KPF_THP | KPF_TAIL) == KPF_THP | KPF_TAIL
    assert m.page_refcount(head) == 16  # one reference per PTE
    ms = m.thp_size_stats("64kB")
    assert (ms["anon_fault_alloc"], ms["anon_fault_fallback"], ms["nr_anon"]) == (1, 0, 1)
    v = _vmstat(m)
    assert (v["thp_fault_alloc"], v["nr_anon_transparent_hugepages"]) == (0, 0)
    assert "AnonHugePages:         0 kB" in m.meminfo()
    # x86 has no contiguous-PTE bit: a 4 KiB TLB entry, the walk ends at the PTE
    t = p.translate(a + 17 * P)
    assert (t.page_size, t.pfn) == (P, head + 1)
    assert p.read(a + 21 * P, 1) == b"x" and p.read(a + 22 * P, 1) == b"\0"
    # the next write in the folio is a spurious fault: no new allocation
    p.write(a + 30 * P, b"y")
    assert m.thp_size_stats("64kB")["anon_fault_alloc"] == 1
    m.check_memory()
    m.check_tlb()
    p.exit()
    m.check_memory()
    assert m.thp_size_stats("64kB")["nr_anon"] == 0


def test_read_fault_maps_the_zero_page_not_an_mthp() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    p.read(a, 1)
    assert p.pagemap(a, 1)[0] & PFN == m.zero_pfn
    assert p.pagemap(a + P, 1)[0] == 0
    assert m.thp_size_stats("64kB")["anon_fault_alloc"] == 0


def test_madvise_and_inherit_sizes_follow_vm_hugepage_and_the_top_level_mode() -> None:
    # 32kB=madvise: only in a MADV_HUGEPAGE VMA; 16kB=inherit with enabled=madvise: likewise
    m = vmsim.Machine(thp={"mthp": {32: "madvise", 16: "inherit", 2048: "never"}})
    p, a = _anon(m)
    p.write(a, b"x")
    assert _smaps(p, a)["Rss"] == 4
    p.madvise(a, M2, MADV_HUGEPAGE)
    p.write(a + 64 * P, b"x")
    assert _smaps(p, a)["Rss"] == 4 + 32
    assert m.thp_size_stats("32kB")["anon_fault_alloc"] == 1
    # enabled=never: inherit sizes are off even with MADV_HUGEPAGE, madvise ones are not
    m2 = vmsim.Machine(thp={"enabled": "never", "mthp": {32: "never", 16: "inherit"}})
    p2, a2 = _anon(m2)
    p2.madvise(a2, M2, MADV_HUGEPAGE)
    p2.write(a2, b"x")
    assert _smaps(p2, a2)["Rss"] == 4
    # enabled=always: inherit sizes apply without MADV_HUGEPAGE (2048 never: no PMD THP)
    m3 = vmsim.Machine(thp={"enabled": "always", "mthp": {16: "inherit", 2048: "never"}})
    p3, a3 = _anon(m3)
    p3.write(a3, b"x")
    assert _smaps(p3, a3)["Rss"] == 16
    assert p3.mm.pt.get(a3).level == PTE_LEVEL


def test_the_vma_bounds_choose_the_order() -> None:
    m = _machine(k64="always", k16="always")
    p, a = _anon(m)
    p.munmap(a + 12 * P, M2 - 12 * P)  # the VMA is a .. a+48K: no 64 KiB block fits
    p.write(a + P, b"x")
    assert _smaps(p, a)["Rss"] == 16
    assert _pfns(p, a, 4)[0] % 4 == 0
    p.write(a + 10 * P, b"y")  # a+8P .. a+12P
    assert _smaps(p, a)["Rss"] == 32
    st64, st16 = m.thp_size_stats("64kB"), m.thp_size_stats("16kB")
    assert (st64["anon_fault_alloc"], st64["anon_fault_fallback"]) == (0, 0)
    assert st16["anon_fault_alloc"] == 2
    # THPeligible: a 16 KiB block fits below the end
    assert _smaps(p, a)["THPeligible"] == 1


def test_thpeligible_needs_an_allowed_size_that_fits() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    p.munmap(a + 8 * P, M2 - 8 * P)  # 32 KiB: the 64 KiB size cannot fit
    assert _smaps(p, a)["THPeligible"] == 0
    q, b = _anon(m)
    assert _smaps(q, b)["THPeligible"] == 1


def test_a_non_empty_pte_in_the_range_picks_a_smaller_order() -> None:
    m = _machine(k64="always", k16="always")
    p, a = _anon(m)
    p.read(a + 20 * P, 1)  # the zero page in a+16P .. a+32P
    p.write(a + 17 * P, b"x")  # pte_range_none() fails for 64 KiB, holds for a+16P .. a+20P
    assert _smaps(p, a)["Rss"] == 16
    pf = _pfns(p, a + 16 * P, 4)
    assert pf == list(range(pf[0], pf[0] + 4))
    p.write(a + 20 * P, b"z")  # the zero page is copied by wp_page_copy(): one page
    assert _smaps(p, a)["Rss"] == 20
    assert m.kpageflags(_pfns(p, a + 20 * P, 1)[0]) & KPF_THP == 0
    m.check_memory()


def test_no_free_block_falls_back_order_by_order() -> None:
    m = _machine("32M", k64="always", k16="always")
    p, a = _anon(m)
    frames = m.memory.frames
    taken = []
    while True:
        try:
            taken.append(frames.alloc(0))
        except OutOfMemory:
            break
    # free only aligned groups of 4 pages: order-2 blocks, nothing of order 3 or more
    for pfn in taken:
        if pfn % 16 < 4:
            frames.put(pfn)
    p.write(a, b"x")
    assert _smaps(p, a)["Rss"] == 16
    st64, st16 = m.thp_size_stats("64kB"), m.thp_size_stats("16kB")
    assert (st64["anon_fault_alloc"], st64["anon_fault_fallback"]) == (0, 1)
    assert (st16["anon_fault_alloc"], st16["anon_fault_fallback"]) == (1, 0)
    assert _vmstat(m)["thp_fault_fallback"] == 0  # that one is the PMD path's
    for pfn in taken:
        if pfn % 16 >= 4:
            frames.put(pfn)
    m.check_memory()


# --- fork, copy-on-write, splits, collapse ----------------------------------------------
def test_fork_copies_one_page_then_the_folio_is_reused_when_alone_again() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    p.write(a, b"p")
    head = _pfns(p, a, 1)[0]
    c = p.fork()
    assert m.page_refcount(head) == 32
    c.write(a + P, b"c")  # wp_page_copy(): the folio is shared, one page is copied
    pe, ce = _pfns(p, a, 2), _pfns(c, a, 2)
    assert pe[0] == ce[0] and pe[1] == head + 1 and ce[1] != head + 1
    assert m.kpageflags(ce[1]) & KPF_THP == 0
    assert c.read(a + P, 1) == b"c" and p.read(a + P, 1) == b"\0"
    assert m.page_refcount(head) == 31
    m.check_memory()
    c.exit()
    p.write(a + 2 * P, b"q")  # every reference is a mapping of p: reused, no copy
    assert _pfns(p, a, 3) == [head, head + 1, head + 2]
    assert p.pagemap(a + 2 * P, 1)[0] >> 56 == 0x81 and p.read(a + 2 * P, 1) == b"q"
    m.check_memory()


def test_partial_unmap_queues_the_folio_and_the_shrinker_splits_it() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    p.write(a, b"x")
    head = _pfns(p, a, 1)[0]
    free = m.memory.frames.free_pages
    p.madvise(a + 3 * P, P, MADV_DONTNEED)
    st = m.thp_size_stats("64kB")
    assert (st["split_deferred"], st["nr_anon_partially_mapped"]) == (1, 1)
    v = _vmstat(m)
    assert (v["thp_deferred_split_page"], v["thp_split_pmd"]) == (0, 0)
    assert m.memory.frames.free_pages == free  # nothing freed yet
    assert _smaps(p, a)["Rss"] == 60
    assert deferred_split_scan(m.memory) == 1
    st = m.thp_size_stats("64kB")
    assert (st["split"], st["nr_anon"], st["nr_anon_partially_mapped"]) == (1, 0, 0)
    assert _vmstat(m)["thp_split_page"] == 0
    # the unmapped page and the 14 zero-filled ones are freed (RMP_USE_SHARED_ZEROPAGE)
    assert m.memory.frames.free_pages == free + 15
    assert _pfns(p, a, 1) == [head] and _pfns(p, a + P, 1) == [m.zero_pfn]
    assert p.read(a, 1) == b"x"
    m.check_memory()


def test_a_whole_unmap_is_not_a_partial_one() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    p.write(a, b"x")
    free = m.memory.frames.free_pages
    p.madvise(a, 16 * P, MADV_DONTNEED)
    assert m.thp_size_stats("64kB")["split_deferred"] == 0
    assert m.memory.frames.free_pages == free + 16
    m.check_memory()


def test_madvise_collapse_turns_mthps_into_a_pmd_thp() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    for i in range(0, 512, 64):
        p.write(a + i * P, bytes([i // 64 + 1]))
    assert m.thp_size_stats("64kB")["nr_anon"] == 8
    p.madvise(a, M2, MADV_COLLAPSE)
    assert p.mm.pt.get(a).level == PMD_LEVEL
    assert m.thp_size_stats("64kB")["nr_anon"] == 0
    assert m.thp_size_stats("2048kB")["nr_anon"] == 1
    assert _smaps(p, a)["AnonHugePages"] == 2048
    assert [p.read(a + i * P, 1)[0] for i in range(0, 512, 64)] == list(range(1, 9))
    m.check_memory()


def test_nohugepage_turns_every_size_off() -> None:
    # vma_thp_disabled(): VM_NOHUGEPAGE, whatever the per-size settings say
    m = _machine(k64="always", k16="always")
    p, a = _anon(m)
    p.madvise(a, M2, MADV_NOHUGEPAGE)
    p.write(a, b"x")
    assert _smaps(p, a)["Rss"] == 4
    assert _smaps(p, a)["THPeligible"] == 0
    assert m.thp_size_stats("64kB")["anon_fault_alloc"] == 0


def test_a_pmd_fallback_goes_on_to_the_mthp_sizes() -> None:
    # 768 pages of RAM: no free order-9 block (the zero page sits in the only aligned one),
    # so do_huge_pmd_anonymous_page() falls back and do_anonymous_page() tries 64 KiB
    m = vmsim.Machine(ram="3M", thp={"mthp": {64: "madvise"}})
    p, a = _anon(m)
    p.madvise(a, M2, MADV_HUGEPAGE)
    p.write(a, b"x")
    assert p.mm.pt.get(a).level == PTE_LEVEL
    assert _smaps(p, a)["Rss"] == 64
    assert _vmstat(m)["thp_fault_fallback"] == 1
    st2m, st64 = m.thp_size_stats("2048kB"), m.thp_size_stats("64kB")
    assert (st2m["anon_fault_alloc"], st2m["anon_fault_fallback"]) == (0, 1)
    assert (st64["anon_fault_alloc"], st64["anon_fault_fallback"]) == (1, 0)
    m.check_memory()


def test_mprotect_and_mremap_of_part_of_an_mthp_keep_it_consistent() -> None:
    m = _machine(k64="always")
    p, a = _anon(m)
    p.write(a, b"x")
    head = _pfns(p, a, 1)[0]
    p.mprotect(a + 4 * P, 4 * P, PROT_READ)
    assert p.read(a + 5 * P, 1) == b"\0"
    b = p.mremap(a + 8 * P, 8 * P, 8 * P, 3, a + M2 // 2)  # MREMAP_MAYMOVE | MREMAP_FIXED
    assert _pfns(p, b, 8) == list(range(head + 8, head + 16))
    assert m.kpageflags(head + 8) & KPF_TAIL
    m.check_memory()
    p.munmap(a, 16 * P)
    assert m.thp_size_stats("64kB")["split_deferred"] == 1  # still mapped at b: partly
    m.check_memory()
    p.exit()
    m.check_memory()


def test_reclaim_sees_a_young_tail_page_of_the_folio() -> None:
    # folio_referenced() walks the rmap of the whole folio: a young PTE of any page counts
    from vmsim.hw.pte import PAGE_ACCESSED
    from vmsim.mm.vmscan import folio_referenced

    m = _machine(k64="always")
    p, a = _anon(m)
    p.write(a, b"x")
    head = _pfns(p, a, 1)[0]
    assert folio_referenced(m.memory, head)[0] == 16  # every PTE was young: all cleared
    assert folio_referenced(m.memory, head)[0] == 0
    leaf = p.mm.pt.get(a + 9 * P)
    assert leaf is not None
    p.mm.pt.set(a + 9 * P, leaf.entry | PAGE_ACCESSED)
    assert folio_referenced(m.memory, head)[0] == 1


def test_mlock_populates_with_an_mthp() -> None:
    # populate_vma_page_range() faults a writable private VMA with FOLL_WRITE: the first
    # fault gets the 64 KiB folio, the other 15 pages are then present. (Whether the folio
    # is mlocked, mlock_new_folio(), is for vmsim.mm.mlock, which leaves large folios alone.)
    m = _machine(k64="always")
    p, a = _anon(m)
    p.mlock(a, 16 * P)
    assert _smaps(p, a)["Rss"] == 64
    assert m.thp_size_stats("64kB")["anon_fault_alloc"] == 1
    m.check_memory()
