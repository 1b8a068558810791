"""MADV_FREE / MADV_COLD / MADV_PAGEOUT on large folios (issue 13), from Linux 6.18's
madvise_free_pte_range() and madvise_cold_or_pageout_pte_range(): a PTE-mapped large folio
whose PTEs, from the first one the range meets, map all of it in order
(madvise_folio_pte_batch() == folio_nr_pages()) is handled whole; otherwise it is split
(split_folio()) unless another mm maps it (folio_maybe_mapped_shared()). folio_deactivate()
counts pgdeactivate in pages (lru_deactivate()). The same steps were compared with this
machine's kernel (tests/differential/test_thp.py, madv_*_pte_mapped_thp*)."""

from __future__ import annotations

import vmsim
from vmsim.constants import (
    MADV_COLD,
    MADV_FREE,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY
from vmsim.phys.frames import PageFlag

M2 = 2 << 20
P = 4096
RW = PROT_READ | PROT_WRITE
PFN = (1 << 55) - 1


def smaps_kb(p: vmsim.Process, key: str) -> int:
    return sum(int(x.split()[1]) for x in p.smaps().splitlines() if x.startswith(key + ":"))


def pte_mapped_thp(m: vmsim.Machine) -> tuple[vmsim.Process, int, int]:
    """A THP whose PMD was split by an mprotect of one page and back: one large folio
    mapped by 512 PTEs in one VMA. Returns the process, its address and head pfn."""
    p = m.spawn()
    b = p.mmap(0, 3 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    a = (b + M2 - 1) & -M2
    p.madvise(a, M2, MADV_HUGEPAGE)
    p.write(a, b"x")
    p.write(a + 300 * P, b"y")
    p.mprotect(a + 10 * P, P, PROT_READ)
    p.mprotect(a + 10 * P, P, RW)
    assert p.mm.pt.get(a).level == PTE_LEVEL
    head = p.pagemap(a, 1)[0] & PFN
    assert m.memory.frames.order(head) == 9
    return p, a, head


def test_free_of_a_whole_pte_mapped_thp_marks_it_lazyfree_without_splitting() -> None:
    m = vmsim.Machine()
    p, a, head = pte_mapped_thp(m)
    p.madvise(a, M2, MADV_FREE)
    frames = m.memory.frames
    assert frames.order(head) == 9
    assert m.memory.vmstat["thp_split_page"] == 0
    assert not frames.flags(head) & (PageFlag.SWAPBACKED | PageFlag.DIRTY)
    assert smaps_kb(p, "LazyFree") == 2048
    for addr in (a, a + 300 * P, a + M2 - P):
        assert not p.mm.pt.get(addr).entry & (PAGE_ACCESSED | PAGE_DIRTY)
    p.write(a + 7 * P, b"z")  # the written page's PTE is dirty: not lazily free in smaps
    assert smaps_kb(p, "LazyFree") == 2044
    m.check_memory()


def test_free_of_part_or_from_the_middle_splits_the_folio() -> None:
    for start, length in ((4 * P, 8 * P), (P, M2)):
        m = vmsim.Machine()
        p, a, _head = pte_mapped_thp(m)
        p.madvise(a + start, length, MADV_FREE)
        assert m.memory.vmstat["thp_split_page"] == 1
        assert m.memory.frames.order(p.pagemap(a, 1)[0] & PFN) == 0
        m.check_memory()


def test_cold_of_a_whole_pte_mapped_thp_deactivates_it_counting_its_pages() -> None:
    m = vmsim.Machine()
    p, a, head = pte_mapped_thp(m)
    frames = m.memory.frames
    frames.set_flags(head, PageFlag.ACTIVE)  # as if referenced twice
    m.memory.node.lru.update(head)
    before = m.memory.vmstat["pgdeactivate"]
    p.madvise(a, M2, MADV_COLD)
    assert frames.order(head) == 9
    assert not frames.flags(head) & (PageFlag.ACTIVE | PageFlag.REFERENCED)
    assert m.memory.vmstat["pgdeactivate"] - before == 512
    assert not p.mm.pt.get(a).entry & PAGE_ACCESSED
    m.check_memory()


def test_cold_of_a_pmd_thp_counts_its_pages_deactivated() -> None:
    m = vmsim.Machine()
    p = m.spawn()
    b = p.mmap(0, 3 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    a = (b + M2 - 1) & -M2
    p.madvise(a, M2, MADV_HUGEPAGE)
    p.write(a, b"x")
    assert p.mm.pt.get(a).level == PMD_LEVEL
    head = p.pagemap(a, 1)[0] & PFN
    m.memory.frames.set_flags(head, PageFlag.ACTIVE)
    m.memory.node.lru.update(head)
    before = m.memory.vmstat["pgdeactivate"]
    p.madvise(a, M2, MADV_COLD)
    assert m.memory.vmstat["pgdeactivate"] - before == 512
    m.check_memory()


def test_a_shared_folio_is_not_split_and_a_dirty_one_not_freed() -> None:
    m = vmsim.Machine()
    p, a, head = pte_mapped_thp(m)
    c = p.fork()
    p.madvise(a, M2, MADV_FREE)  # dirty, mapped by two mms: left as it is
    assert m.memory.frames.flags(head) & PageFlag.SWAPBACKED
    c.madvise(a + 4 * P, 8 * P, MADV_COLD)  # part of a shared folio: not split
    assert m.memory.vmstat["thp_split_page"] == 0
    assert m.memory.frames.order(head) == 9
    m.check_memory()
