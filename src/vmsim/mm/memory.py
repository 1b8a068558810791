"""Page faults and the page-table side of munmap, fork and truncate (mm/memory.c).

handle_mm_fault() -> handle_pte_fault(): do_anonymous_page(), do_read_fault() with
do_fault_around(), do_cow_fault(), do_shared_fault(), do_wp_page(), do_swap_page(); zapping
(zap_pte_range(), unmap_mapping_pages()) and fork's copy_page_range(), on 4 KiB pages. The
fault side of the page cache (filemap_fault(), filemap_map_pages(): mm/filemap.c) is in
``vmsim.mm.filemap_fault``; installing a PTE with its rmap and mlock (set_pte_range()) is
``vmsim.mm.rmap.map_page``.

Ownership rules (as the kernel's): every present PTE that maps a frame holds one reference
and one map count on it, and is in the reverse map (``vmsim.mm.rmap``); the page cache holds
one more reference on each of its pages (``Inode.pages``: page offset -> pfn). The shared
zero page is mapped by special PTEs and never counted. After every change that removes or
narrows a translation the TLB is flushed for the range (``Cpu.flush_range``): a stale entry
can never grant more than the tables.

(Over the project's ~600 lines per module: the four parts of mm/memory.c kept here, the fault
handlers, zapping, fork's copy and swap-in, share the PTE-level helpers and FaultResult. What
is an idea of its own lives apart, as far as the kernel's own files allow: large folios on
the fault path in ``mthp``, THP swap in ``thp_swap``, PMD-level THP in ``huge_memory``, the
page-cache side in ``filemap_fault``, dirty-page writeback in ``page_writeback``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, SEGV_MAPERR
from vmsim.errors import BusError, Segfault
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.hw.pte import (
    PAGE_ACCESSED,
    PAGE_DIRTY,
    PAGE_PSE,
    PAGE_RW,
    PAGE_SPECIAL,
    PAGE_SWP_EXCLUSIVE,
    pfn_pte,
)
from vmsim.mm import huge_memory, mthp, page_writeback, thp_swap
from vmsim.mm.filemap import eof_pages
from vmsim.mm.filemap_fault import fault_around, find_or_create_page
from vmsim.mm.flags import (
    VM_HUGETLB,
    VM_LOCKED,
    VM_MAYBE_GUARD,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SHARED,
    VM_WRITE,
)
from vmsim.mm.hugetlb import hugetlb_fault
from vmsim.mm.internal import (
    ANON_FLAGS,
    entry_pfn,
    is_cow_mapping,
    page_prot,
    present,
)
from vmsim.mm.lru import mark_accessed
from vmsim.mm.mlock import munlock_folio
from vmsim.mm.rmap import anon_exclusive, anon_owner, map_page, rmap_add, rmap_remove
from vmsim.mm.swap_state import (
    SWAP_RA_HITS_MAX,
    SWAP_RA_INITIAL,
    SwapRa,
    delete_from_swap_cache,
    free_swap_and_cache,
    free_swap_cache,
    read_swap_page,
    swapin_readahead,
)
from vmsim.mm.swapops import pte_to_swp_entry
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Inode, Vma

__all__ = [
    "FAULT_KINDS",
    "FaultKind",
    "FaultResult",
    "copy_page_range",
    "do_swap_page",
    "handle_mm_fault",
    "reclaim_empty_pte_tables",
    "unmap_mapping_pages",
    "vma_needs_copy",
    "zap_mapped",
    "zap_range",
]

_ANON = int(PageFlag.ANON)
_DIRTY = int(PageFlag.DIRTY)
_MLOCKED = int(PageFlag.MLOCKED)
_KSM = int(PageFlag.KSM)
_HEAD = int(PageFlag.HEAD)
_READAHEAD = int(PageFlag.RECLAIM)  # PG_readahead is PG_reclaim's bit (page-flags.h)


class FaultResult(StrEnum):
    """What handle_mm_fault() did (the model's finer view of vm_fault_t: which handler ran,
    and VM_FAULT_MAJOR as the ``-major`` kinds). A str enum: it prints, compares and
    serialises as its value ("cow", "file-major", ...)."""

    ZERO_PAGE = "zero-page"  # do_anonymous_page(): the shared zero page, read-only
    ANON = "anon"  # do_anonymous_page(): a new anonymous page
    FILE = "file"  # do_read_fault(): a page-cache page (already cached)
    FILE_MAJOR = "file-major"  # do_read_fault() / do_shared_fault() that read the file
    COW = "cow"  # do_cow_fault() or wp_page_copy(): a private copy
    COW_MAJOR = "cow-major"  # do_cow_fault() that read the file first
    REUSE = "reuse"  # do_wp_page(): the anonymous page is ours alone, made writable
    SHARED_WRITE = "shared-write"  # do_shared_fault() / wp_page_shared()
    SPURIOUS = "spurious"  # the PTE allowed the access already
    SWAP = "swap"  # do_swap_page(): the page was in the swap cache
    SWAP_MAJOR = "swap-major"  # do_swap_page(): read from swap
    THP = "thp"  # do_huge_pmd_anonymous_page() / do_huge_zero_wp_pmd(): a new PMD-mapped THP
    HUGE_ZERO_PAGE = "huge-zero-page"  # do_huge_pmd_anonymous_page(): the huge zero page
    THP_REUSE = "thp-reuse"  # do_huge_pmd_wp_page(): the THP is ours alone, made writable
    MTHP = "mthp"  # do_anonymous_page() -> alloc_anon_folio(): a new PTE-mapped large folio


class FaultKind(StrEnum):
    """The per-kind counter of ``FaultStats`` a fault result adds to (mm_account_fault()
    counts pgfault / pgmajfault; the model also counts by handler)."""

    ZERO_PAGE = "zero_page_maps"
    ANON = "anon_faults"
    COW = "cow_faults"
    REUSE = "cow_reuse"
    FILE = "file_faults"


# For each result: whether it is a major fault, and the FaultStats counter it adds to (None:
# pgfault / pgmajfault only). AddressSpace.account_fault() reads this table.
FAULT_KINDS: dict[FaultResult, tuple[bool, FaultKind | None]] = {
    FaultResult.ZERO_PAGE: (False, FaultKind.ZERO_PAGE),
    FaultResult.ANON: (False, FaultKind.ANON),
    FaultResult.FILE: (False, FaultKind.FILE),
    FaultResult.FILE_MAJOR: (True, FaultKind.FILE),
    FaultResult.COW: (False, FaultKind.COW),
    FaultResult.COW_MAJOR: (True, FaultKind.COW),
    FaultResult.REUSE: (False, FaultKind.REUSE),
    FaultResult.SHARED_WRITE: (False, FaultKind.FILE),
    FaultResult.SPURIOUS: (False, None),
    FaultResult.SWAP: (False, None),
    FaultResult.SWAP_MAJOR: (True, None),
    FaultResult.THP: (False, FaultKind.ANON),
    FaultResult.HUGE_ZERO_PAGE: (False, FaultKind.ZERO_PAGE),
    FaultResult.THP_REUSE: (False, FaultKind.REUSE),
    FaultResult.MTHP: (False, FaultKind.ANON),
}
_THP_RESULTS = {"thp": FaultResult.THP, "huge-zero-page": FaultResult.HUGE_ZERO_PAGE}


# ---------------------------------------------------------------- mapping pages
def _set_pte(mm: AddressSpace, addr: int, entry: int) -> None:
    mm.pt.set(addr, entry)


def _new_anon_page(mm: AddressSpace, src: int | None = None) -> int:
    """A new anonymous folio on the LRU, zeroed or a copy of ``src`` (the caller holds a
    reference on ``src``, so reclaim run by this allocation leaves it alone)."""
    mem = mm.mem
    pfn = mem.alloc_folio(ANON_FLAGS)
    if src is not None:
        mem.frames.copy_into(src, pfn)
    mem.node.lru.add(pfn)
    return pfn


def handle_mm_fault(
    mm: AddressSpace, vma: Vma, addr: int, write: bool, *, remote: bool = False
) -> FaultResult:
    """handle_mm_fault() for a 4 KiB page: the VMA allows the access (the caller checked).
    Returns what was done: "zero-page", "anon", "file", "file-major", "cow", "reuse",
    "shared-write" or "spurious". Raises Segfault (guard marker) or BusError (past EOF)."""
    if vma.flags & VM_HUGETLB:  # is_vm_hugetlb_page(): hugetlb_fault()
        result = FaultResult(hugetlb_fault(mm, vma, addr, write))
        mm.account_fault(result, remote)
        return result
    fault_addr = addr
    addr &= ~(PAGE_SIZE - 1)
    if mm.guards and (addr >> PAGE_SHIFT) in mm.guards:
        raise Segfault(fault_addr, SEGV_MAPERR)
    # __handle_mm_fault(): the page tables down to the PTE table exist before any page is
    # allocated or referenced (their allocation may reclaim); a THP-eligible VMA first gets
    # a chance at a PMD-sized page (create_huge_pmd()) or a fault on its PMD leaf
    huge = _handle_pmd_fault(mm, vma, addr, write)
    if huge is not None:
        mm.account_fault(huge, remote)
        return huge
    mm.pt.prealloc(addr)
    try:
        what = _handle_pte_fault(mm, vma, addr, write)
    except BusError:
        raise BusError(fault_addr) from None
    mm.account_fault(what, remote)
    return what


def _handle_pmd_fault(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> FaultResult | None:
    """The PMD step of __handle_mm_fault(): an empty PMD in a THP-eligible VMA gets a THP
    or the huge zero page (create_huge_pmd()); a PMD leaf takes the write fault
    (do_huge_pmd_wp_page()) or is a spurious fault (huge_pmd_set_accessed()). None: go on
    to the PTEs (VM_FAULT_FALLBACK, or no PMD leaf)."""
    e = huge_memory.pmd_entry(mm, addr)
    if not e:
        if not huge_memory.thp_vma_allowable(mm, vma, addr):
            return None
        mm.pt.prealloc(addr, PMD_LEVEL)
        if huge_memory.pmd_entry(mm, addr):  # the table allocation reclaimed: look again
            return None
        done = huge_memory.do_huge_pmd_anonymous_page(mm, vma, addr, write)
        return None if done is None else _THP_RESULTS[done]
    if not e & PAGE_PSE or not present(e):
        return None
    if write and not e & PAGE_RW:
        done = huge_memory.do_huge_pmd_wp_page(mm, vma, addr)
        if done is None:
            return None
        return FaultResult.THP_REUSE if done == "reuse" else _THP_RESULTS[done]
    huge_memory.huge_pmd_set_accessed(mm, addr, write)
    return FaultResult.SPURIOUS


def _handle_pte_fault(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> FaultResult:
    leaf = mm.pt.get(addr)
    entry = leaf.entry if leaf is not None else 0
    if not entry:
        if vma.file is None:
            what = _do_anonymous_page(mm, vma, addr, write)
        elif not write:
            what = _do_read_fault(mm, vma, addr)
        elif not vma.flags & VM_SHARED:
            what = _do_cow_fault(mm, vma, addr)
        else:
            what = _do_shared_fault(mm, vma, addr)
    elif not present(entry):
        what = do_swap_page(mm, vma, addr, entry, write)
    elif write and not entry & PAGE_RW:
        what = _do_wp_page(mm, vma, addr, entry)
    else:
        new = entry | PAGE_ACCESSED | (PAGE_DIRTY if write else 0)
        if new != entry:
            _set_pte(mm, addr, new)
        what = FaultResult.SPURIOUS
    return what


def _do_anonymous_page(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> FaultResult:
    prot = page_prot(vma)
    if not write:
        zero = mm.mem.frames.zero_pfn
        _set_pte(mm, addr, pfn_pte(zero, prot & ~PAGE_RW) | PAGE_SPECIAL)
        return FaultResult.ZERO_PAGE
    mm.anon_vma_prepare(vma)
    gfp = huge_memory.vma_thp_gfp_mask(mm.mem.thp.settings, vma)
    if mthp.do_anonymous_mthp(mm, vma, addr, gfp):  # alloc_anon_folio() got a large folio
        return FaultResult.MTHP
    pfn = _new_anon_page(mm)
    entry = pfn_pte(pfn, prot)
    if vma.flags & VM_WRITE:
        entry |= PAGE_RW | PAGE_DIRTY
    map_page(mm, vma, addr, pfn, entry)
    return FaultResult.ANON


def _check_eof(vma: Vma, addr: int) -> int:
    assert vma.file is not None
    pgoff = vma.pgoff_at(addr)
    if pgoff >= eof_pages(vma.file.inode):
        raise BusError(addr)
    return pgoff


def _do_read_fault(mm: AddressSpace, vma: Vma, addr: int) -> FaultResult:
    """do_read_fault(): map the page-cache pages already there around ``addr`` (fault-around,
    up to 16 pages inside the VMA, the page table and the file); if the page itself was not
    among them, get it: tmpfs allocates it; a regular file reads it with its read-around
    window and the fault is retried (VM_FAULT_RETRY, then counted major), which maps the
    whole window through fault-around again."""
    assert vma.file is not None
    pgoff = vma.pgoff_at(addr)
    inode = vma.file.inode
    # fault-around runs first, so even a fault past EOF maps the cached pages before it
    if fault_around(mm, vma, addr, pgoff):
        return FaultResult.FILE
    _check_eof(vma, addr)
    _pfn, how = find_or_create_page(mm, vma, pgoff)
    # a retried fault (VM_FAULT_RETRY) runs fault-around again, which maps the new window,
    # the page itself too unless it carries the readahead mark (then it is mapped here)
    if how == "hit" or not fault_around(mm, vma, addr, pgoff):
        pfn = inode.pages[pgoff]
        mm.mem.frames.get(pfn)
        map_page(mm, vma, addr, pfn, pfn_pte(pfn, page_prot(vma)))
    return FaultResult.FILE_MAJOR if how == "major" else FaultResult.FILE


def _do_cow_fault(mm: AddressSpace, vma: Vma, addr: int) -> FaultResult:
    """do_cow_fault(): a write to a private file page copies it into a new anonymous page
    (the anon_vma is prepared first, so even a write past EOF creates it)."""
    assert vma.file is not None
    mm.anon_vma_prepare(vma)
    pgoff = _check_eof(vma, addr)
    src, how = find_or_create_page(mm, vma, pgoff)
    frames = mm.mem.frames
    frames.get(src)  # held across the allocation (reclaim skips busy folios)
    try:
        pfn = _new_anon_page(mm, src)
    finally:
        frames.put(src)
    entry = pfn_pte(pfn, page_prot(vma)) | PAGE_DIRTY
    if vma.flags & VM_WRITE:
        entry |= PAGE_RW
    else:  # FOLL_FORCE: the copy is written by the kernel, not through the PTE
        mm.mem.frames.set_flags(pfn, _DIRTY)
    map_page(mm, vma, addr, pfn, entry)
    return FaultResult.COW_MAJOR if how == "major" else FaultResult.COW


def _do_shared_fault(mm: AddressSpace, vma: Vma, addr: int) -> FaultResult:
    """do_shared_fault(): map the page-cache page writable and dirty it."""
    assert vma.file is not None
    pgoff = _check_eof(vma, addr)
    pfn, how = find_or_create_page(mm, vma, pgoff)
    frames = mm.mem.frames
    frames.get(pfn)
    frames.set_flags(pfn, _DIRTY)
    entry = pfn_pte(pfn, page_prot(vma)) | PAGE_RW | PAGE_DIRTY
    map_page(mm, vma, addr, pfn, entry)
    _dirtied(mm.mem, vma, pfn)
    return FaultResult.FILE_MAJOR if how == "major" else FaultResult.SHARED_WRITE


def _dirtied(mem: Kernel, vma: Vma, pfn: int) -> None:
    """fault_dirty_shared_page(): page ``pfn`` of a file that writes back was dirtied."""
    if vma.file is not None and not vma.file.inode.shmem:
        page_writeback.balance_dirty_pages(mem, pfn)


def _do_wp_page(mm: AddressSpace, vma: Vma, addr: int, entry: int) -> FaultResult:
    """do_wp_page(): a write to a present read-only page."""
    frames = mm.mem.frames
    pfn = entry_pfn(entry)
    if vma.flags & VM_SHARED:  # wp_page_shared(): write notification, then writable
        frames.set_flags(pfn, _DIRTY)
        _set_pte(mm, addr, entry | PAGE_RW | PAGE_DIRTY | PAGE_ACCESSED)
        _dirtied(mm.mem, vma, pfn)
        return FaultResult.SHARED_WRITE
    zero = pfn == frames.zero_pfn
    swap = mm.mem.swap
    if not zero and pfn in swap.entry_of and frames.refcount(pfn) == 2:
        # folio_free_swap() before the reuse check: the swap copy is no longer needed
        key = swap.entry_of[pfn]
        if not swap.count(key):
            frames.set_flags(pfn, _DIRTY)
            delete_from_swap_cache(mm.mem, pfn)
    ksm = not zero and frames.flags(pfn) & _KSM
    if ksm:
        mm.stats.cow_ksm += 1
        mm.mem.stats.cow_ksm += 1
    if not zero and not ksm and frames.flags(pfn) & _ANON and anon_exclusive(mm.mem, pfn, mm):
        # wp_can_reuse_anon_folio(): nobody else holds the page
        new = entry | PAGE_DIRTY | PAGE_ACCESSED
        if vma.flags & VM_WRITE:
            new |= PAGE_RW
        else:
            frames.set_flags(pfn, _DIRTY)
        _set_pte(mm, addr, new)
        return FaultResult.REUSE
    # wp_page_copy()
    mm.anon_vma_prepare(vma)
    if not zero:
        frames.get(pfn)
    try:
        new_pfn = _new_anon_page(mm, None if zero else pfn)
    finally:
        if not zero:
            frames.put(pfn)
    new_entry = pfn_pte(new_pfn, page_prot(vma)) | PAGE_DIRTY
    if vma.flags & VM_WRITE:
        new_entry |= PAGE_RW
    else:
        frames.set_flags(new_pfn, _DIRTY)
    _set_pte(mm, addr, 0)
    mm.mem.cpu.flush_range(mm, addr, addr + PAGE_SIZE)  # ptep_clear_flush()
    if not zero:
        _release(mm, addr, pfn, entry, bool(vma.flags & VM_LOCKED), zap=False)
    elif mm.mem.ksm is not None:
        mm.mem.ksm.unmap_zero(mm, entry)  # wp_page_copy(): ksm_might_unmap_zero_page()
    map_page(mm, vma, addr, new_pfn, new_entry)
    return FaultResult.COW


def _release(
    mm: AddressSpace,
    addr: int,
    pfn: int,
    entry: int,
    locked: bool = False,
    zap: bool = True,
    batched: bool = False,
) -> None:
    """Drop one mapping of ``pfn`` (folio_remove_rmap_pte() + the mapping's reference): a
    dirty PTE dirties a file page first; the last unmap clears mlock. A page of a large
    folio may leave it partly mapped (the deferred split queue), unless the caller zaps a
    batch of its PTEs and looks once the batch is done (``batched``)."""
    frames = mm.mem.frames
    flags = frames.flags(pfn)
    if zap and not flags & _ANON:  # zap_present_folio_ptes(); a COW replacement does not
        if entry & PAGE_DIRTY:
            frames.set_flags(pfn, _DIRTY)
        if entry & PAGE_ACCESSED:
            mark_accessed(mm.mem, pfn)
    frames.unmap(pfn)
    rmap_remove(mm.mem, pfn, mm, addr)
    if flags & _HEAD and not batched:
        huge_memory.note_pte_unmapped(mm.mem, pfn)
    if locked and flags & _MLOCKED:
        munlock_folio(mm, pfn)
    free_swap_cache(mm.mem, pfn)
    frames.put(pfn)


# ------------------------------------------------------------------- zapping
def zap_range(
    mm: AddressSpace, start: int, end: int, *, free_tables: bool, locked: bool = False
) -> int:
    """zap_page_range_single() / unmap_vmas(): clear every PTE of ``[start, end)``, release
    the pages, flush the TLB for the span of the entries cleared. With ``free_tables`` empty
    page tables go too (free_pgtables() after munmap). Returns the entries cleared."""
    if start >= end or not mm.pt_used:
        return 0
    huge = 0
    for haddr in huge_memory.pmd_leaves(mm, start, end):
        # zap_pmd_range(): a PMD leaf wholly inside goes whole, one straddling an edge is
        # split and its PTEs zapped below
        if start <= haddr and haddr + PMD_SIZE <= end:
            huge += huge_memory.zap_huge_pmd(mm, haddr, locked)
        else:
            huge_memory.split_huge_pmd(mm, None, haddr)
    tables = mm.pt.table_pages
    cleared = mm.pt.clear_range(start, end, free_tables=free_tables)
    if mm.pt.table_pages != tables:
        # freed page tables (tlb->freed_tables): the paging-structure caches must forget
        # them even when no leaf entry was cleared
        mm.mem.cpu.pwc.flush()
    if not cleared:
        return huge
    frames = mm.mem.frames
    zero = frames.zero_pfn
    ksm = mm.mem.ksm
    # zap_present_ptes() removes the rmap of a run of PTEs mapping consecutive pages of one
    # large folio (folio_pte_batch(): same PTE table, same write bit) at once: whether the
    # folio is left partly mapped is seen after each run, not after each page
    run: tuple[int, int, int, int] | None = None  # head, last pfn, last address, RW bit
    for m in cleared:
        e = m.entry
        if present(e):
            pfn = entry_pfn(e)
            if pfn == zero:
                if ksm is not None:
                    ksm.unmap_zero(mm, e)  # ksm_might_unmap_zero_page()
                continue
            large = bool(frames.flags(pfn) & _HEAD)
            if run is not None and not (
                large
                and frames.head(pfn) == run[0]
                and pfn == run[1] + 1
                and m.vaddr == run[2] + PAGE_SIZE
                and m.vaddr & (PMD_SIZE - 1)
                and e & PAGE_RW == run[3]
            ):
                _end_zap_run(mm, run[0])
                run = None
            if large:
                run = (frames.head(pfn), pfn, m.vaddr, e & PAGE_RW)
            _release(mm, m.vaddr, pfn, e, locked, batched=large)
        else:  # free_swap_and_cache()
            free_swap_and_cache(mm.mem, pte_to_swp_entry(e))
    if run is not None:
        _end_zap_run(mm, run[0])
    mm.mem.cpu.flush_range(mm, cleared[0].vaddr, cleared[-1].vaddr + PAGE_SIZE)
    return len(cleared) + huge


def _end_zap_run(mm: AddressSpace, head: int) -> None:
    if mm.mem.frames.is_allocated(head):
        huge_memory.note_pte_unmapped(mm.mem, head)


def reclaim_empty_pte_tables(mm: AddressSpace, start: int, end: int) -> None:
    """madvise_dontneed_single_vma() with reclaim_pt (CONFIG_PT_RECLAIM, on in the reference
    kernel): when the zapped range spans at least 2 MiB, every PTE table it covers whole that
    is now empty (no page, no swap entry, no guard marker) is freed and its PMD cleared; the
    tables above stay. A later fault there may then get a THP."""
    if end - start < PMD_SIZE or not mm.pt_used:
        return
    freed = False
    for a in range((start + PMD_SIZE - 1) & -PMD_SIZE, end & -PMD_SIZE, PMD_SIZE):
        if mm.guards and any(mm.guards.irange(a >> PAGE_SHIFT, ((a + PMD_SIZE) >> PAGE_SHIFT) - 1)):
            continue  # guard markers are PTEs in the kernel: the table is not empty
        freed |= mm.pt.free_table_if_empty(a, PTE_LEVEL)
    if freed:
        mm.mem.cpu.pwc.flush()


def zap_mapped(
    mm: AddressSpace, start: int, end: int, only: set[int] | None, locked: bool = False
) -> None:
    """Zap the present PTEs of ``[start, end)`` that map one of the frames ``only`` (every
    one if None), releasing their pages and flushing the TLB."""
    if start >= end or not mm.pt_used:
        return
    huge_memory.split_huge_pmd_range(mm, start, end)
    doomed = [
        m.vaddr
        for m in mm.pt.iter_leaves(start, end)
        if present(m.entry) and (only is None or entry_pfn(m.entry) in only)
    ]
    if not doomed:
        return
    zero = mm.mem.frames.zero_pfn
    ksm = mm.mem.ksm
    for a in doomed:
        e = mm.pt.clear(a, free_tables=False)
        pfn = entry_pfn(e)
        if pfn != zero:
            _release(mm, a, pfn, e, locked)
        elif ksm is not None:
            ksm.unmap_zero(mm, e)  # ksm_might_unmap_zero_page()
    mm.mem.cpu.flush_range(mm, doomed[0], doomed[-1] + PAGE_SIZE)


def unmap_mapping_pages(
    mms: Iterable[AddressSpace], inode: Inode, first: int, last: int, even_cows: bool
) -> None:
    """unmap_mapping_pages(): remove page offsets ``[first, last)`` of ``inode`` from every
    mapping of it, in every address space; private copies too with ``even_cows``."""
    cached = {pfn for pg, pfn in inode.pages.items() if first <= pg < last}
    for mm in mms:
        for v in list(mm.tree):
            if v.file is None or v.file.inode is not inode:
                continue
            lo = max(v.start, v.start + ((first - v.pgoff) << PAGE_SHIFT))
            hi = min(v.end, v.start + ((last - v.pgoff) << PAGE_SHIFT))
            if lo >= hi:
                continue
            every = even_cows and not v.flags & VM_SHARED
            zap_mapped(mm, lo, hi, None if every else cached, bool(v.flags & VM_LOCKED))


# ----------------------------------------------------------------------- fork
def vma_needs_copy(vma: Vma) -> bool:
    """vma_needs_copy(): fork copies the PTEs of VMAs with anonymous pages (or guard markers,
    or raw PFNs); file and shared pages are faulted in again by the child."""
    return bool(vma.anon_vma is not None or vma.flags & (VM_PFNMAP | VM_MIXEDMAP | VM_MAYBE_GUARD))


def copy_page_range(dst: AddressSpace, src: AddressSpace, vma: Vma) -> None:
    """copy_page_range() / copy_present_pte(): the child maps the same pages; in a private
    writable VMA both sides lose write permission (copy-on-write). The child's entries are
    old, and clean in a shared VMA. The parent's TLB is flushed by the caller."""
    if not src.pt_used or vma.start >= vma.end:
        return
    frames = src.mem.frames
    zero = frames.zero_pfn
    cow = is_cow_mapping(vma.flags)
    shared = vma.flags & VM_SHARED
    mem = src.mem
    for m in list(src.pt.iter_leaves(vma.start, vma.end)):
        if m.level == PMD_LEVEL:  # copy_huge_pmd()
            huge_memory.copy_huge_pmd(dst, src, vma, m.vaddr, m.entry)
            continue
        # pte_alloc() first: the allocation may reclaim, which may change the source entry
        dst.pt.prealloc(m.vaddr)
        leaf = src.pt.get(m.vaddr)
        if leaf is None or not leaf.entry:
            continue
        e = leaf.entry
        if not present(e):  # copy_nonpresent_pte(): a swap entry, one more reference
            mem.swap.dup(pte_to_swp_entry(e))
            if e & PAGE_SWP_EXCLUSIVE:
                e &= ~PAGE_SWP_EXCLUSIVE
                src.pt.set(m.vaddr, e)
            dst.pt.set(m.vaddr, e)
            continue
        pfn = entry_pfn(e)
        if pfn != zero:
            frames.get(pfn)
            frames.map(pfn)
            rmap_add(mem, pfn, dst, m.vaddr)
        if cow and e & PAGE_RW:
            e &= ~PAGE_RW
            src.pt.set(m.vaddr, e)
        child = e & ~PAGE_ACCESSED
        if shared:
            child &= ~PAGE_DIRTY
        dst.pt.set(m.vaddr, child)


# ------------------------------------------------------------------------ swap
def do_swap_page(mm: AddressSpace, vma: Vma, addr: int, entry: int, write: bool) -> FaultResult:
    """do_swap_page(): bring the page back (from the swap cache, else a major fault that
    reads the readahead window around it), map it, drop this PTE's swap reference.

    * ksm_might_need_to_copy(): a swap-cache folio that already belongs elsewhere (another
      anon_vma family, or another page index: both happen only to a page KSM had merged
      before it was swapped out) is copied for this mapping; a KSM folio still in the swap
      cache is mapped as it is, read-only;
    * the swap copy is given up (folio_free_swap(), the folio is dirty again) when swap is
      more than half full, in a locked VMA, or on a write fault when nobody else holds the
      folio, provided no other swap entry names the slot;
    * the page is mapped writable at once (dirty only on a write fault) when it is ours
      alone: the swap entry said so (PAGE_SWP_EXCLUSIVE), it is a fresh copy, or only this
      mapping holds it now."""
    mem = mm.mem
    swap = mem.swap
    key = pte_to_swp_entry(entry)
    frames = mem.frames
    major = False
    pfn = swap.cache.get(key)
    if pfn is None and swap.device(key).synchronous and swap.count(key) == 1:
        # SWP_SYNCHRONOUS_IO (zram) and nobody else names the slot: read it straight into a
        # new page of our own, no swap cache, no readahead; or a new mTHP (alloc_swap_folio())
        if vma.anon_vma is None:
            mm.anon_vma_prepare(vma)
        if thp_swap.swapin_mthp(mm, vma, addr, entry, write):
            return FaultResult.SWAP_MAJOR
        pfn = read_swap_page(mem, key, cache=False)
        swap.put(key)
        pte = pfn_pte(pfn, page_prot(vma))
        if vma.flags & VM_WRITE:
            pte |= PAGE_RW | (PAGE_DIRTY if write else 0)
        map_page(mm, vma, addr, pfn, pte)
        return FaultResult.SWAP_MAJOR
    if pfn is None:
        pfn = swapin_readahead(mm, vma, addr, key)  # returned with the mapping's reference held
        major = True
    else:
        frames.get(pfn)  # the mapping's reference
        # swap_update_readahead(): a readahead page used now is a hit
        hit = bool(frames.flags(pfn) & _READAHEAD)
        if hit:
            frames.clear_flags(pfn, _READAHEAD)
            mem.vmstat["swap_ra_hit"] += 1
        if swap.use_vma_readahead():
            _, win, hits = vma.swap_ra or SWAP_RA_INITIAL
            vma.swap_ra = SwapRa(addr, win, min(hits + hit, SWAP_RA_HITS_MAX))
        elif hit:
            swap.readahead_hits += 1
    if vma.anon_vma is None:
        mm.anon_vma_prepare(vma)
    ksm = bool(frames.flags(pfn) & _KSM)
    exclusive = False
    owner = anon_owner(vma, addr)
    if not ksm:
        exclusive = bool(entry & PAGE_SWP_EXCLUSIVE)
        had = mem.swap_owner.setdefault(pfn, owner) if pfn in swap.entry_of else owner
        if had != owner:  # ksm_might_need_to_copy(): a copy of our own
            try:
                new = _new_anon_page(mm, pfn)
            finally:
                frames.put(pfn)
            pfn = new
            exclusive = True
            mem.vmstat["ksm_swpin_copy"] += 1
    swap.put(key)
    if (
        pfn in swap.entry_of
        and not swap.count(key)
        and (
            swap.full()
            or vma.flags & VM_LOCKED
            or frames.flags(pfn) & _MLOCKED
            or (write and not ksm and frames.refcount(pfn) == 2)
        )
    ):
        frames.set_flags(pfn, _DIRTY)
        delete_from_swap_cache(mem, pfn)  # folio_free_swap()
    pte = pfn_pte(pfn, page_prot(vma))
    if not ksm and (exclusive or frames.refcount(pfn) == 1) and vma.flags & VM_WRITE:
        pte |= PAGE_RW
        if write:
            pte |= PAGE_DIRTY
    elif write and ksm:
        pte &= ~PAGE_RW
    map_page(mm, vma, addr, pfn, pte)
    if pfn in swap.entry_of and pfn not in mem.swap_owner and not ksm:
        mem.swap_owner[pfn] = owner
    return FaultResult.SWAP_MAJOR if major else FaultResult.SWAP
