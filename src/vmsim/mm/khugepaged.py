"""khugepaged and MADV_COLLAPSE (mm/khugepaged.c of Linux 6.18): collapse the 512 PTEs of an
aligned 2 MiB range of anonymous memory into one PMD-mapped THP.

``hpage_collapse_scan_pmd`` looks at the PTEs first: a PMD already huge is done
(SCAN_PMD_MAPPED), no page table at all is SCAN_PMD_NULL; khugepaged (not MADV_COLLAPSE)
refuses more than ``max_ptes_none`` empty or zero-page PTEs, ``max_ptes_swap`` swap entries
and ``max_ptes_shared`` pages of folios other processes map too, each refusal counted in
vmstat (thp_scan_exceed_*), and wants at least one young or referenced page (half of them
when some are swapped out). Pages with references beyond their mappings (a pin, the swap
cache) are left alone (SCAN_PAGE_COUNT). ``collapse_huge_page`` then allocates the THP
(thp_collapse_alloc, or thp_collapse_alloc_failed), swaps in the swapped-out pages, copies
every page (zeros for the empty ones), frees the old pages and maps the THP by a dirty PMD
(writable in a VM_WRITE VMA): one touched page becomes 2 MiB of RSS.

khugepaged runs on ``Machine.tick()``: each wake-up scans up to ``pages_to_scan`` pages (512
per PMD range looked at) of the address spaces with THP-eligible VMAs, in creation order,
resuming where the last wake-up stopped; a pass over all of them is a full scan.
"""

from __future__ import annotations

import errno
from enum import Enum
from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SIZE, PMD_SIZE
from vmsim.errors import oserror
from vmsim.hw.pagetable import PUD_LEVEL
from vmsim.hw.pte import PAGE_ACCESSED, PAGE_PSE
from vmsim.mm import huge_memory
from vmsim.mm.flags import VM_HUGEPAGE, VM_LOCKED, VM_NOHUGEPAGE, VM_SHARED
from vmsim.mm.internal import entry_pfn, present
from vmsim.mm.memory import do_swap_page, zap_range
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

__all__ = ["Scan", "collapse_range", "khugepaged_scan", "madvise_collapse"]

_NR = huge_memory.HPAGE_PMD_NR
_ANON = int(PageFlag.ANON)
_LRU = int(PageFlag.LRU)
_KSM = int(PageFlag.KSM)
_REFERENCED = int(PageFlag.REFERENCED)
_LOCKED = int(PageFlag.LOCKED)


class Scan(Enum):
    """enum scan_result (the ones the anonymous path can give)."""

    SUCCEED = "succeed"
    PMD_NULL = "pmd_null"
    PMD_NONE = "pmd_none"
    PMD_MAPPED = "pmd_mapped"
    EXCEED_NONE_PTE = "exceed_none_pte"
    EXCEED_SWAP_PTE = "exceed_swap_pte"
    EXCEED_SHARED_PTE = "exceed_shared_pte"
    PAGE_ANON = "page_anon"
    PAGE_LRU = "page_lru"
    PAGE_LOCK = "page_lock"
    PAGE_COUNT = "page_count"
    LACK_REFERENCED_PAGE = "lack_referenced_page"
    ALLOC_HUGE_PAGE_FAIL = "alloc_huge_page_fail"
    FAIL = "fail"


# madvise_collapse(): results after which the walk goes on to the next PMD range
_CONTINUE = {
    Scan.PMD_NULL,
    Scan.LACK_REFERENCED_PAGE,
    Scan.PAGE_COUNT,
    Scan.PAGE_LOCK,
    Scan.PAGE_LRU,
}


def _count(mem: Kernel, name: str) -> None:
    mem.vmstat[name] += 1


def _maybe_shared(mem: Kernel, pfn: int, mm: AddressSpace) -> bool:
    """folio_maybe_mapped_shared(): some page of the folio is mapped by another mm."""
    frames = mem.frames
    head = frames.head(pfn)
    for p in range(head, head + frames.folio_nr_pages(head)):
        for owner, _va in mem.rmap.get(p, ()):
            if owner is not mm:
                return True
    return False


def hpage_collapse_scan_pmd(
    mm: AddressSpace, vma: Vma, haddr: int, khugepaged: bool
) -> tuple[Scan, int, int]:
    """hpage_collapse_scan_pmd() up to the collapse: (result, referenced, unmapped)."""
    e = huge_memory.pmd_entry(mm, haddr)
    if not e:
        # find_pmd_or_thp_or_none(): no PMD table at all is SCAN_PMD_NULL, an empty slot in
        # one SCAN_PMD_NONE (which stops MADV_COLLAPSE; kernel-checked)
        pud = mm.pt.entries[PUD_LEVEL].get((haddr & mm.pt.va_mask) >> 30, 0)
        return (Scan.PMD_NONE if pud else Scan.PMD_NULL), 0, 0
    if e & PAGE_PSE:
        return Scan.PMD_MAPPED, 0, 0
    mem = mm.mem
    frames = mem.frames
    settings = mem.thp.settings
    zero = frames.zero_pfn
    swap = mem.swap
    none_or_zero = unmapped = shared = referenced = 0
    for i in range(_NR):
        a = haddr + i * PAGE_SIZE
        leaf = mm.pt.get(a)
        pte = leaf.entry if leaf is not None else 0
        if pte and not present(pte):
            unmapped += 1
            if khugepaged and unmapped > settings.max_ptes_swap:
                _count(mem, "thp_scan_exceed_swap_pte")
                return Scan.EXCEED_SWAP_PTE, referenced, unmapped
            continue
        if not pte or entry_pfn(pte) == zero:
            none_or_zero += 1
            if khugepaged and none_or_zero > settings.max_ptes_none:
                _count(mem, "thp_scan_exceed_none_pte")
                return Scan.EXCEED_NONE_PTE, referenced, unmapped
            continue
        pfn = entry_pfn(pte)
        flags = frames.flags(pfn)
        if not flags & _ANON or flags & _KSM:
            return Scan.PAGE_ANON, referenced, unmapped
        if _maybe_shared(mem, pfn, mm):
            shared += 1
            if khugepaged and shared > settings.max_ptes_shared:
                _count(mem, "thp_scan_exceed_share_pte")
                return Scan.EXCEED_SHARED_PTE, referenced, unmapped
        if not flags & _LRU:
            return Scan.PAGE_LRU, referenced, unmapped
        if flags & _LOCKED:
            return Scan.PAGE_LOCK, referenced, unmapped
        head = frames.head(pfn)
        expected = frames.mapcount(head) + (
            frames.folio_nr_pages(head) if head in swap.entry_of else 0
        )
        if frames.refcount(head) != expected:
            return Scan.PAGE_COUNT, referenced, unmapped
        if khugepaged and (pte & PAGE_ACCESSED or flags & _REFERENCED):
            referenced += 1
    if khugepaged and (not referenced or (unmapped and referenced < _NR // 2)):
        return Scan.LACK_REFERENCED_PAGE, referenced, unmapped
    return Scan.SUCCEED, referenced, unmapped


def collapse_huge_page(
    mm: AddressSpace, vma: Vma, haddr: int, unmapped: int, khugepaged: bool = True
) -> Scan:
    """collapse_huge_page(): allocate (alloc_charge_folio(), with khugepaged's gfp mask or
    MADV_COLLAPSE's GFP_TRANSHUGE: huge_memory.collapse_gfp_mask()), swap in, copy, free
    the old pages, map by a PMD."""
    mem = mm.mem
    frames = mem.frames
    head = huge_memory.alloc_thp(
        mm, gfp=huge_memory.collapse_gfp_mask(mem.thp.settings, khugepaged)
    )
    if head is None:
        _count(mem, "thp_collapse_alloc_failed")
        return Scan.ALLOC_HUGE_PAGE_FAIL
    _count(mem, "thp_collapse_alloc")
    if unmapped:  # __collapse_huge_page_swapin()
        for i in range(_NR):
            a = haddr + i * PAGE_SIZE
            leaf = mm.pt.get(a)
            if leaf is not None and leaf.entry and not present(leaf.entry):
                do_swap_page(mm, vma, a, leaf.entry, False)
    zero = frames.zero_pfn
    for i in range(_NR):  # __collapse_huge_page_copy(): empty and zero pages stay zeros
        leaf = mm.pt.get(haddr + i * PAGE_SIZE)
        pte = leaf.entry if leaf is not None else 0
        if pte and present(pte) and (pfn := entry_pfn(pte)) != zero:
            frames.copy_into(pfn, head + i)
    # pmdp_collapse_flush() and __collapse_huge_page_copy_succeeded(): the PTEs go with their
    # pages and the PTE table (the deposit below stands for it), then the PMD maps the THP
    zap_range(mm, haddr, haddr + PMD_SIZE, free_tables=True, locked=bool(vma.flags & VM_LOCKED))
    huge_memory.install_collapsed(mm, vma, haddr, head)
    return Scan.SUCCEED


def collapse_range(mm: AddressSpace, vma: Vma, haddr: int, khugepaged: bool) -> Scan:
    result, _referenced, unmapped = hpage_collapse_scan_pmd(mm, vma, haddr, khugepaged)
    if result is Scan.SUCCEED:
        result = collapse_huge_page(mm, vma, haddr, unmapped, khugepaged)
    return result


def _collapse_errno(result: Scan) -> int:
    """madvise_collapse_errno()."""
    if result is Scan.ALLOC_HUGE_PAGE_FAIL:
        return errno.ENOMEM
    if result is Scan.EXCEED_NONE_PTE:
        return errno.EBUSY
    if result in (Scan.PAGE_COUNT, Scan.PAGE_LOCK, Scan.PAGE_LRU):
        return errno.EAGAIN
    return errno.EINVAL


def madvise_collapse(mm: AddressSpace, vma: Vma, start: int, end: int) -> None:
    """madvise_collapse() for the part ``[start, end)`` of an anonymous ``vma`` (the caller
    checked what thp_vma_allowable_order(TVA_FORCED_COLLAPSE) asks of the VMA itself): every
    aligned 2 MiB inside becomes a THP, or the call fails with the errno of the last range
    that could not (ENOMEM: no THP to allocate; EAGAIN: a page busy; EINVAL otherwise)."""
    if vma.anon_vma is None:  # __thp_vma_allowable_orders(): no anon_vma, no orders
        raise oserror(errno.EINVAL)
    mm.mem.lru_add_drain()
    hstart = (start + PMD_SIZE - 1) & -PMD_SIZE
    hend = end & -PMD_SIZE
    if hstart > hend:  # (hend - hstart) >> PMD_SHIFT in unsigned arithmetic: never equal
        raise oserror(errno.EINVAL)
    thps = 0
    last = Scan.FAIL
    for haddr in range(hstart, hend, PMD_SIZE):
        result = collapse_range(mm, vma, haddr, khugepaged=False)
        if result in (Scan.SUCCEED, Scan.PMD_MAPPED):
            thps += 1
            continue
        last = result
        if result not in _CONTINUE:
            break
    if thps != (hend - hstart) // PMD_SIZE:
        raise oserror(_collapse_errno(last))


def _khugepaged_eligible(mm: AddressSpace, vma: Vma) -> bool:
    """thp_vma_allowable_order(TVA_KHUGEPAGED, PMD_ORDER) for an anonymous VMA."""
    if vma.file is not None or vma.flags & (VM_SHARED | VM_NOHUGEPAGE) or vma.anon_vma is None:
        return False
    mode = mm.mem.thp.settings.pmd_mode()
    if mode == "never" or (mode == "madvise" and not vma.flags & VM_HUGEPAGE):
        return False
    return huge_memory.thp_vma_allowable(mm, vma, (vma.start + PMD_SIZE - 1) & -PMD_SIZE)


def khugepaged_scan(mem: Kernel) -> int:
    """One khugepaged wake-up (khugepaged_do_scan() -> khugepaged_scan_mm_slot()): look at
    up to pages_to_scan pages' worth of PMD ranges, collapsing what qualifies; returns the
    number of THPs made."""
    st = mem.thp
    budget = mem.thp.settings.pages_to_scan
    progress = 0
    made = 0
    cur_serial, cur_addr = st.cursor
    for serial in sorted(s for s in mem.mms if s >= cur_serial):
        mm = mem.mms.get(serial)
        if mm is None or not mm.alive:
            continue
        start_at = cur_addr if serial == cur_serial else 0
        for vma in list(mm.tree):
            if vma.end <= start_at:
                continue
            if not _khugepaged_eligible(mm, vma):
                progress += 1
                continue
            hstart = max((vma.start + PMD_SIZE - 1) & -PMD_SIZE, start_at)
            for haddr in range(hstart, vma.end & -PMD_SIZE, PMD_SIZE):
                if progress >= budget:
                    st.cursor = (serial, haddr)
                    return made
                live = mm.tree.lookup(haddr)
                if live is not vma or haddr + PMD_SIZE > vma.end:
                    break
                if collapse_range(mm, vma, haddr, khugepaged=True) is Scan.SUCCEED:
                    made += 1
                    st.pages_collapsed += 1  # MADV_COLLAPSE does not count here (checked)
                progress += _NR
        cur_addr = 0
    st.cursor = (0, 0)
    st.full_scans += 1
    return made
