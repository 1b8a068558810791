"""Page faults and the page-table side of munmap, mprotect, mremap, fork and truncate.

Mirrors mm/memory.c (handle_mm_fault() -> handle_pte_fault(): do_anonymous_page(),
do_read_fault() with do_fault_around(), do_cow_fault(), do_shared_fault(), do_wp_page(),
zap_pte_range(), copy_present_pte()), mm/mprotect.c (change_pte_range()) and mm/mremap.c
(move_ptes()), on 4 KiB pages.

Ownership rules (as the kernel's): every present PTE that maps a frame holds one reference
and one map count on it; the page cache holds one more reference on each of its pages
(``Inode.pages``: page offset -> pfn). The shared zero page is mapped by special PTEs and
never counted. After every change that removes or narrows a translation the TLB is flushed
for the range (``Memory.flush_range``): a stale entry can never grant more than the tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, SEGV_MAPERR
from vmsim.errors import BusError, Segfault
from vmsim.hw.pte import (
    PAGE_ACCESSED,
    PAGE_DIRTY,
    PAGE_PRESENT,
    PAGE_PROTNONE,
    PAGE_RW,
    PAGE_SPECIAL,
    PAGE_SWP_EXCLUSIVE,
    pfn_of,
    pfn_pte,
    swp_entry,
    swp_offset,
    swp_type,
    vm_get_page_prot,
)
from vmsim.mm import readahead, workingset
from vmsim.mm.flags import (
    VM_LOCKED,
    VM_MAYBE_GUARD,
    VM_MAYWRITE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SHARED,
    VM_WRITE,
)
from vmsim.phys.frames import OutOfMemory, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.memory import Memory
    from vmsim.mm.swap import SwapSpace
    from vmsim.mm.vma import Inode, Vma

ANON_FLAGS = int(PageFlag.ANON | PageFlag.SWAPBACKED | PageFlag.UPTODATE | PageFlag.LRU)
SHMEM_FLAGS = int(PageFlag.FILE | PageFlag.SWAPBACKED | PageFlag.UPTODATE | PageFlag.LRU)
FILE_FLAGS = int(PageFlag.FILE | PageFlag.UPTODATE | PageFlag.LRU)
_ANON = int(PageFlag.ANON)
_DIRTY = int(PageFlag.DIRTY)
_MLOCKED = int(PageFlag.MLOCKED)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
PAGE_DIRTY_FLAG = _DIRTY
_REFERENCED = int(PageFlag.REFERENCED)
_KSM = int(PageFlag.KSM)
_ACTIVE = int(PageFlag.ACTIVE)
_READAHEAD = int(PageFlag.RECLAIM)  # PG_readahead is PG_reclaim's bit (page-flags.h)
SWAP_RA_ORDER_CEILING = 5
SWAP_RA_HITS_MAX = 63
SWAP_RA_INITIAL = (0, 0, 4)  # GET_SWAP_RA_VAL() of a VMA never faulted: 4 hits
FAULT_AROUND_PAGES = 16  # fault_around_bytes = 64 KiB
_PRESENT = PAGE_PRESENT | PAGE_PROTNONE
# Bits pte_modify() keeps from the old entry when the protection changes (_PAGE_CHG_MASK):
# accessed and dirty come from the entry, never from the new protection.
_CHG_MASK = PAGE_ACCESSED | PAGE_DIRTY | PAGE_SPECIAL


def is_cow_mapping(flags: int) -> bool:
    """is_cow_mapping(): private and possibly writable."""
    return (flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE


def wants_writenotify(vma: Vma) -> bool:
    """vma_wants_writenotify(): a shared writable mapping of a file that writes back (not
    tmpfs) maps its pages read-only so the first write is seen and the page dirtied."""
    f = vma.file
    return (
        f is not None
        and (vma.flags & (VM_SHARED | VM_WRITE)) == (VM_SHARED | VM_WRITE)
        and not f.inode.shmem
    )


def page_prot(vma: Vma) -> int:
    """vma->vm_page_prot."""
    prot = vm_get_page_prot(vma.flags)
    if wants_writenotify(vma):
        prot &= ~PAGE_RW
    return prot


def present(entry: int) -> bool:
    return bool(entry & _PRESENT)


def entry_pfn(entry: int) -> int:
    return pfn_of(entry, 1)


# ------------------------------------------------------------------ page cache
def eof_pages(inode: Inode) -> int:
    return (inode.size + PAGE_SIZE - 1) >> PAGE_SHIFT


def find_or_create_page(mm: AddressSpace, vma: Vma, pgoff: int) -> tuple[int, str]:
    """filemap_fault() / shmem_fault(): the page-cache page at ``pgoff`` of the VMA's file,
    or a new zeroed page for tmpfs. Returns (pfn, how): "hit" (it was cached), "major" (a
    regular file read it with its readahead window, ``vmsim.mm.readahead``; the fault waits
    for the read and is retried, counted major), or "retry" (it was cached and carried the
    readahead mark: the next window is read asynchronously and the fault is retried after
    dropping the per-VMA lock; that retry is not a FAULT_FLAG_TRIED one, so the fault
    stays minor: kernel-verified)."""
    assert vma.file is not None
    inode = vma.file.inode
    mem = mm.mem
    pfn = inode.pages.get(pgoff)
    if pfn is not None:
        if inode.shmem:
            return pfn, "hit"
        mem.frames.get(pfn)  # held across the readahead's allocations (filemap_fault())
        try:
            ahead = readahead.async_mmap_readahead(mem, vma, vma.file.ra, inode, pgoff, pfn)
        finally:
            mem.frames.put(pfn)
        return pfn, "retry" if ahead else "hit"
    if inode.shmem:
        key = inode.swapped.get(pgoff)
        pfn = mem.alloc_folio(SHMEM_FLAGS)
        if key is None:
            cache_add(mem, inode, pgoff, pfn)
            return pfn, "hit"
        # shmem_swapin_folio(): read it back (from the swap cache if readahead brought it
        # there already), the slot is given up (a major fault)
        cached = mem.swap.cache.get(key)
        if cached is not None:
            page = mem.frames.read(cached)
        else:
            page, _where = mem.swap.read(key)
        mem.frames.write(pfn, 0, page)
        mem.frames.set_flags(pfn, _DIRTY)
        del inode.swapped[pgoff]
        shadow = mem.swap.shadows.pop(key, None)
        mem.swap_entry_gone(key)
        cache_add(mem, inode, pgoff, pfn)
        if shadow is not None:
            workingset.refault(mem, pfn, shadow)
        return pfn, "major"
    # a regular file: the readahead window, then the page itself if readahead did not
    # read it (no readahead, or memory ran out)
    readahead.sync_mmap_readahead(mem, vma, vma.file.ra, inode, pgoff)
    pfn = inode.pages.get(pgoff)
    if pfn is None:
        pfn = readahead.read_page(mem, inode, pgoff)
    return pfn, "major"


# ---------------------------------------------------------------- mapping pages
def _set_pte(mm: AddressSpace, addr: int, entry: int) -> None:
    mm.pt.set(addr, entry)


def _map_page(mm: AddressSpace, vma: Vma, addr: int, pfn: int, entry: int) -> None:
    """Install ``entry`` for frame ``pfn`` (taking a mapping reference) at ``addr``."""
    mem = mm.mem
    mem.frames.map(pfn)
    mem.rmap_add(pfn, mm, addr)
    if vma.flags & VM_LOCKED:
        mlock_folio(mm, pfn)
    _set_pte(mm, addr, entry)


def mlock_folio(mm: AddressSpace, pfn: int) -> None:
    """mlock_folio() / mlock_new_folio(): one more locked VMA maps the folio (the kernel's
    folio->mlock_count); PG_mlocked while the count is above 0."""
    counts = mm.mem.mlock_count
    n = counts.get(pfn, 0)
    counts[pfn] = n + 1
    if not n:
        mm.mem.frames.set_flags(pfn, _MLOCKED)
        mm.mem.lru.update(pfn)
    mm.mem.mlock_batch_add(pfn, not n)


def munlock_folio(mm: AddressSpace, pfn: int) -> None:
    """munlock_folio(): one locked VMA less maps it; the last one clears PG_mlocked."""
    mm.mem.mlock_batch_add(pfn, False)
    counts = mm.mem.mlock_count
    n = counts.get(pfn, 0)
    if n > 1:
        counts[pfn] = n - 1
        return
    counts.pop(pfn, None)
    if mm.mem.frames.flags(pfn) & _MLOCKED:
        mm.mem.frames.clear_flags(pfn, _MLOCKED)
        mm.mem.lru.update(pfn)


def _new_anon_page(mm: AddressSpace, src: int | None = None) -> int:
    """A new anonymous folio on the LRU, zeroed or a copy of ``src`` (the caller holds a
    reference on ``src``, so reclaim run by this allocation leaves it alone)."""
    mem = mm.mem
    pfn = mem.alloc_folio(ANON_FLAGS)
    if src is not None:
        mem.frames.copy_into(src, pfn)
    mem.lru.add(pfn)
    return pfn


def handle_mm_fault(
    mm: AddressSpace, vma: Vma, addr: int, write: bool, *, remote: bool = False
) -> str:
    """handle_mm_fault() for a 4 KiB page: the VMA allows the access (the caller checked).
    Returns what was done: "zero-page", "anon", "file", "file-major", "cow", "reuse",
    "shared-write" or "spurious". Raises Segfault (guard marker) or BusError (past EOF)."""
    fault_addr = addr
    addr &= ~(PAGE_SIZE - 1)
    if mm.guards and (addr >> PAGE_SHIFT) in mm.guards:
        raise Segfault(fault_addr, SEGV_MAPERR)
    # __handle_mm_fault(): the page tables down to the PTE table exist before any page is
    # allocated or referenced (their allocation may reclaim)
    mm.pt.prealloc(addr)
    try:
        what = _handle_pte_fault(mm, vma, addr, write)
    except BusError:
        raise BusError(fault_addr) from None
    mm.account_fault(what, remote)
    return what


def _handle_pte_fault(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> str:
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
        what = "spurious"
    return what


def _do_anonymous_page(mm: AddressSpace, vma: Vma, addr: int, write: bool) -> str:
    prot = page_prot(vma)
    if not write:
        zero = mm.mem.frames.zero_pfn
        _set_pte(mm, addr, pfn_pte(zero, prot & ~PAGE_RW) | PAGE_SPECIAL)
        return "zero-page"
    mm.anon_vma_prepare(vma)
    pfn = _new_anon_page(mm)
    entry = pfn_pte(pfn, prot)
    if vma.flags & VM_WRITE:
        entry |= PAGE_RW | PAGE_DIRTY
    _map_page(mm, vma, addr, pfn, entry)
    return "anon"


def _check_eof(vma: Vma, addr: int) -> int:
    assert vma.file is not None
    pgoff = vma.pgoff_at(addr)
    if pgoff >= eof_pages(vma.file.inode):
        raise BusError(addr)
    return pgoff


def _do_read_fault(mm: AddressSpace, vma: Vma, addr: int) -> str:
    """do_read_fault(): map the page-cache pages already there around ``addr`` (fault-around,
    up to 16 pages inside the VMA, the page table and the file); if the page itself was not
    among them, get it: tmpfs allocates it; a regular file reads it with its read-around
    window and the fault is retried (VM_FAULT_RETRY, then counted major), which maps the
    whole window through fault-around again."""
    assert vma.file is not None
    pgoff = vma.pgoff_at(addr)
    inode = vma.file.inode
    # fault-around runs first, so even a fault past EOF maps the cached pages before it
    if _fault_around(mm, vma, addr, pgoff):
        return "file"
    _check_eof(vma, addr)
    _pfn, how = find_or_create_page(mm, vma, pgoff)
    # a retried fault (VM_FAULT_RETRY) runs fault-around again, which maps the new window,
    # the page itself too unless it carries the readahead mark (then it is mapped here)
    if how == "hit" or not _fault_around(mm, vma, addr, pgoff):
        pfn = inode.pages[pgoff]
        mm.mem.frames.get(pfn)
        _map_page(mm, vma, addr, pfn, pfn_pte(pfn, page_prot(vma)))
    return "file-major" if how == "major" else "file"


def _fault_around(mm: AddressSpace, vma: Vma, addr: int, pgoff: int) -> bool:
    """do_fault_around() -> filemap_map_pages(): map every cached page of the window whose
    PTE is none; True if the page at ``addr`` was among them."""
    assert vma.file is not None
    inode = vma.file.inode
    prot = page_prot(vma)
    pte_off = (addr >> PAGE_SHIFT) & 511
    vma_off = pgoff - vma.pgoff
    from_pte = max(pte_off & ~(FAULT_AROUND_PAGES - 1), pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + FAULT_AROUND_PAGES, 512, pte_off + vma.pages - vma_off) - 1
    last_pg = min(pgoff + to_pte - pte_off, eof_pages(inode) - 1)
    base = addr - (pte_off << PAGE_SHIFT)
    around = 0
    visited = 0
    target_mapped = False
    pt = mm.pt
    frames = mm.mem.frames
    for off in range(from_pte, to_pte + 1):
        pg = pgoff + off - pte_off
        if pg > last_pg:
            break
        pfn = inode.pages.get(pg)
        if pfn is None or frames.flags(pfn) & _READAHEAD:  # next_uptodate_folio() skips it
            continue
        visited += 1
        a = base + (off << PAGE_SHIFT)
        if mm.guards and (a >> PAGE_SHIFT) in mm.guards:
            continue
        leaf = pt.get(a)
        if leaf is not None and leaf.entry:
            continue
        frames.get(pfn)
        _map_page(mm, vma, a, pfn, pfn_pte(pfn, prot))
        if a == addr:
            target_mapped = True
        else:
            around += 1
    mm.stats.fault_around += around
    mm.mem.stats.fault_around += around
    ra = vma.file.ra  # cached pages found count as hits against mmap_miss
    ra.mmap_miss = max(ra.mmap_miss - visited, 0)
    return target_mapped


def _do_cow_fault(mm: AddressSpace, vma: Vma, addr: int) -> str:
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
    _map_page(mm, vma, addr, pfn, entry)
    return "cow-major" if how == "major" else "cow"


def _do_shared_fault(mm: AddressSpace, vma: Vma, addr: int) -> str:
    """do_shared_fault(): map the page-cache page writable and dirty it."""
    assert vma.file is not None
    pgoff = _check_eof(vma, addr)
    pfn, how = find_or_create_page(mm, vma, pgoff)
    frames = mm.mem.frames
    frames.get(pfn)
    frames.set_flags(pfn, _DIRTY)
    entry = pfn_pte(pfn, page_prot(vma)) | PAGE_RW | PAGE_DIRTY
    _map_page(mm, vma, addr, pfn, entry)
    _dirtied(mm.mem, vma, pfn)
    return "file-major" if how == "major" else "shared-write"


def _dirtied(mem: Memory, vma: Vma, pfn: int) -> None:
    """fault_dirty_shared_page(): page ``pfn`` of a file that writes back was dirtied."""
    from vmsim.mm import vmscan

    if vma.file is not None and not vma.file.inode.shmem:
        vmscan.balance_dirty_pages(mem, pfn)


def _do_wp_page(mm: AddressSpace, vma: Vma, addr: int, entry: int) -> str:
    """do_wp_page(): a write to a present read-only page."""
    frames = mm.mem.frames
    pfn = entry_pfn(entry)
    if vma.flags & VM_SHARED:  # wp_page_shared(): write notification, then writable
        frames.set_flags(pfn, _DIRTY)
        _set_pte(mm, addr, entry | PAGE_RW | PAGE_DIRTY | PAGE_ACCESSED)
        _dirtied(mm.mem, vma, pfn)
        return "shared-write"
    zero = pfn == frames.zero_pfn
    swap = mm.mem.swap
    if not zero and pfn in swap.entry_of and frames.refcount(pfn) == 2:
        # folio_free_swap() before the reuse check: the swap copy is no longer needed
        key = swap.entry_of[pfn]
        if not swap.count(key):
            frames.set_flags(pfn, _DIRTY)
            mm.mem.delete_from_swap_cache(pfn)
    ksm = not zero and frames.flags(pfn) & _KSM
    if ksm:
        mm.stats.cow_ksm += 1
        mm.mem.stats.cow_ksm += 1
    if not zero and not ksm and frames.flags(pfn) & _ANON and frames.refcount(pfn) == 1:
        # wp_can_reuse_anon_folio(): nobody else holds the page
        new = entry | PAGE_DIRTY | PAGE_ACCESSED
        if vma.flags & VM_WRITE:
            new |= PAGE_RW
        else:
            frames.set_flags(pfn, _DIRTY)
        _set_pte(mm, addr, new)
        return "reuse"
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
    mm.mem.flush_range(mm, addr, addr + PAGE_SIZE)  # ptep_clear_flush()
    if not zero:
        _release(mm, addr, pfn, entry, bool(vma.flags & VM_LOCKED), zap=False)
    _map_page(mm, vma, addr, new_pfn, new_entry)
    return "cow"


def mark_accessed(mem: Memory, pfn: int) -> None:
    """folio_mark_accessed() with the classic two-list LRU (no MGLRU on the reference
    kernel): the first call sets PG_referenced; the next activates the folio and clears it,
    unless the folio is unevictable (an mlocked folio whose mlock batch has drained:
    nothing happens). One mlocked but still in the batch is activated, and the drain then
    takes PG_active away (__mlock_folio()): only PG_referenced goes (kernel-verified: the
    populate of a MAP_LOCKED mapping clears PG_referenced of a page referenced before).
    (The kernel activates through a per-CPU batch; flags read after a drain agree.)"""
    frames = mem.frames
    if pfn == frames.zero_pfn:
        return
    flags = frames.flags(pfn)
    if not flags & _REFERENCED:
        frames.set_flags(pfn, _REFERENCED)
    elif flags & _MLOCKED:
        if pfn in mem.mlock_pending and not flags & _ACTIVE:
            frames.clear_flags(pfn, _REFERENCED)
    elif not flags & _ACTIVE:
        frames.set_flags(pfn, _ACTIVE)
        frames.clear_flags(pfn, _REFERENCED)
        mem.lru.update(pfn)
        workingset.activation(mem)


def gup_touch(mm: AddressSpace, addr: int, pfn: int, write: bool) -> None:
    """follow_page_pte() with FOLL_TOUCH: a write dirties the folio unless the PTE or the
    folio is dirty already, and the folio is marked accessed."""
    frames = mm.mem.frames
    if pfn == frames.zero_pfn:
        return
    if write and not frames.flags(pfn) & _DIRTY:
        leaf = mm.pt.get(addr)
        if leaf is None or not leaf.entry & PAGE_DIRTY:
            frames.set_flags(pfn, _DIRTY)
    mark_accessed(mm.mem, pfn)


def _release(
    mm: AddressSpace, addr: int, pfn: int, entry: int, locked: bool = False, zap: bool = True
) -> None:
    """Drop one mapping of ``pfn`` (folio_remove_rmap_pte() + the mapping's reference): a
    dirty PTE dirties a file page first; the last unmap clears mlock."""
    frames = mm.mem.frames
    flags = frames.flags(pfn)
    if zap and not flags & _ANON:  # zap_present_folio_ptes(); a COW replacement does not
        if entry & PAGE_DIRTY:
            frames.set_flags(pfn, _DIRTY)
        if entry & PAGE_ACCESSED:
            mark_accessed(mm.mem, pfn)
    frames.unmap(pfn)
    mm.mem.rmap_remove(pfn, mm, addr)
    if locked and flags & _MLOCKED:
        munlock_folio(mm, pfn)
    free_swap_cache(mm.mem, pfn)
    frames.put(pfn)


def free_swap_cache(mem: Memory, pfn: int) -> None:
    """free_swap_cache() / folio_free_swap(): once no PTE maps a swap-cache folio and no
    swap entry names its slot, the swap cache lets go of it (and of its reference)."""
    swap = mem.swap
    key = swap.entry_of.get(pfn)
    if key is not None and not mem.frames.mapcount(pfn) and not swap.count(key):
        mem.delete_from_swap_cache(pfn)


# ------------------------------------------------------------------- zapping
def zap_range(
    mm: AddressSpace, start: int, end: int, *, free_tables: bool, locked: bool = False
) -> int:
    """zap_page_range_single() / unmap_vmas(): clear every PTE of ``[start, end)``, release
    the pages, flush the TLB for the span of the entries cleared. With ``free_tables`` empty
    page tables go too (free_pgtables() after munmap). Returns the entries cleared."""
    if start >= end or not mm.pt_used:
        return 0
    tables = mm.pt.table_pages
    cleared = mm.pt.clear_range(start, end, free_tables=free_tables)
    if mm.pt.table_pages != tables:
        # freed page tables (tlb->freed_tables): the paging-structure caches must forget
        # them even when no leaf entry was cleared
        mm.mem.pwc.flush()
    if not cleared:
        return 0
    zero = mm.mem.frames.zero_pfn
    for m in cleared:
        e = m.entry
        if present(e):
            pfn = entry_pfn(e)
            if pfn != zero:
                _release(mm, m.vaddr, pfn, e, locked)
        else:  # free_swap_and_cache()
            mm.mem.swap_entry_gone(swap_key(e))
    mm.mem.flush_range(mm, cleared[0].vaddr, cleared[-1].vaddr + PAGE_SIZE)
    return len(cleared)


def zap_mapped(
    mm: AddressSpace, start: int, end: int, only: set[int] | None, locked: bool = False
) -> None:
    """Zap the present PTEs of ``[start, end)`` that map one of the frames ``only`` (every
    one if None), releasing their pages and flushing the TLB."""
    if start >= end or not mm.pt_used:
        return
    doomed = [
        m.vaddr
        for m in mm.pt.iter_leaves(start, end)
        if present(m.entry) and (only is None or entry_pfn(m.entry) in only)
    ]
    if not doomed:
        return
    zero = mm.mem.frames.zero_pfn
    for a in doomed:
        e = mm.pt.clear(a, free_tables=False)
        pfn = entry_pfn(e)
        if pfn != zero:
            _release(mm, a, pfn, e, locked)
    mm.mem.flush_range(mm, doomed[0], doomed[-1] + PAGE_SIZE)


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


def cache_add(mem: Memory, inode: Inode, pg: int, pfn: int) -> None:
    """filemap_add_folio(): ``pfn`` becomes page ``pg`` of the file (the cache's reference
    is the allocation's), on the LRU."""
    inode.pages[pg] = pfn
    mem.cache_owner[pfn] = (inode, pg)
    mem.lru.add(pfn)
    shadow = inode.shadows.pop(pg, None)
    if shadow is not None:
        workingset.refault(mem, pfn, shadow)


def cache_del(mem: Memory, inode: Inode, pg: int) -> None:
    """filemap_remove_folio(): the cache lets go of page ``pg`` (and of its reference)."""
    pfn = inode.pages.pop(pg)
    mem.cache_owner.pop(pfn, None)
    mem.frames.put(pfn)


def drop_cache_pages(mem: Memory, inode: Inode, first: int, last: int) -> None:
    """truncate_inode_pages_range(): the page cache lets go of ``[first, last)``; the pages
    must be unmapped by now. The backing store forgets them too (a hole), and so does swap
    for shmem pages swapped out."""
    for pg in [p for p in inode.pages if first <= p < last]:
        cache_del(mem, inode, pg)
    for pg in [p for p in inode.swapped if first <= p < last]:
        mem.swap_entry_gone(inode.swapped.pop(pg))
    for pg in [p for p in inode.backing if first <= p < last]:
        del inode.backing[pg]
    for pg in [p for p in inode.shadows if first <= p < last]:
        del inode.shadows[pg]


# ------------------------------------------------------------ changing entries
def change_protection(mm: AddressSpace, vma: Vma, start: int, end: int) -> int:
    """change_pte_range(): give every present PTE of ``[start, end)`` the VMA's (new)
    protection. Write permission is kept only where the fault handler would grant it
    without a copy: an anonymous page nobody else holds in a writable private VMA, or a dirty
    page of a shared one; anything else waits for its write fault. Returns pages changed."""
    if not mm.pt_used or start >= end:
        return 0
    prot = page_prot(vma)
    frames = mm.mem.frames
    zero = frames.zero_pfn
    writable = vma.flags & VM_WRITE
    shared = vma.flags & VM_SHARED
    changed = []
    narrowed = False
    for m in mm.pt.iter_leaves(start, end):
        e = m.entry
        if not present(e):
            continue
        pfn = entry_pfn(e)
        new = (pfn_pte(pfn, prot) & ~_CHG_MASK) | (e & _CHG_MASK)  # pte_modify()
        if writable and not new & PAGE_RW:
            if shared:
                if e & PAGE_DIRTY:
                    new |= PAGE_RW
            elif pfn != zero and frames.flags(pfn) & _ANON and frames.refcount(pfn) == 1:
                new |= PAGE_RW
        if new != e:
            # anything the old entry allowed that the new does not needs a flush
            if (e & PAGE_PRESENT and not new & PAGE_PRESENT) or (e & ~new & PAGE_RW):
                narrowed = True
            if new & (1 << 63) and not e & (1 << 63):
                narrowed = True
            mm.pt.set(m.vaddr, new)
            changed.append(m.vaddr)
    if changed and narrowed:
        mm.mem.flush_range(mm, changed[0], changed[-1] + PAGE_SIZE)
    return len(changed)


def mlock_pages(mm: AddressSpace, start: int, end: int, lock: bool) -> None:
    """mlock_vma_pages_range(): a VMA range became locked (or unlocked): every page it maps
    gains (or loses) one lock."""
    if not mm.pt_used or start >= end:
        return
    zero = mm.mem.frames.zero_pfn
    for m in list(mm.pt.iter_leaves(start, end)):
        if present(m.entry) and (pfn := entry_pfn(m.entry)) != zero:
            if lock:
                mlock_folio(mm, pfn)
            else:
                munlock_folio(mm, pfn)
    mm.mem.lru_add_drain()


def move_ptes(mm: AddressSpace, old: int, new: int, length: int) -> None:
    """move_page_tables(): the entries of ``[old, old+length)`` move to ``new``, pages and
    counts untouched; the old range is flushed."""
    if not length or not mm.pt_used:
        return
    delta = new - old
    # the new page tables first (the allocation may reclaim, which must find every page
    # where its reverse map says it is)
    for m in list(mm.pt.iter_leaves(old, old + length)):
        mm.pt.prealloc(m.vaddr + delta)
    tables = mm.pt.table_pages
    moved = mm.pt.clear_range(old, old + length, free_tables=True)
    if mm.pt.table_pages != tables:
        mm.mem.pwc.flush()
    if not moved:
        return
    zero = mm.mem.frames.zero_pfn
    for m in moved:
        mm.pt.set(m.vaddr + delta, m.entry)
        if present(m.entry) and (pfn := entry_pfn(m.entry)) != zero:
            mm.mem.rmap_remove(pfn, mm, m.vaddr)
            mm.mem.rmap_add(pfn, mm, m.vaddr + delta)
    mm.mem.flush_range(mm, moved[0].vaddr, moved[-1].vaddr + PAGE_SIZE)


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
        # pte_alloc() first: the allocation may reclaim, which may change the source entry
        dst.pt.prealloc(m.vaddr)
        leaf = src.pt.get(m.vaddr)
        if leaf is None or not leaf.entry:
            continue
        e = leaf.entry
        if not present(e):  # copy_nonpresent_pte(): a swap entry, one more reference
            mem.swap.dup(swap_key(e))
            if e & PAGE_SWP_EXCLUSIVE:
                e &= ~PAGE_SWP_EXCLUSIVE
                src.pt.set(m.vaddr, e)
            dst.pt.set(m.vaddr, e)
            continue
        pfn = entry_pfn(e)
        if pfn != zero:
            frames.get(pfn)
            frames.map(pfn)
            mem.rmap_add(pfn, dst, m.vaddr)
        if cow and e & PAGE_RW:
            e &= ~PAGE_RW
            src.pt.set(m.vaddr, e)
        child = e & ~PAGE_ACCESSED
        if shared:
            child &= ~PAGE_DIRTY
        dst.pt.set(m.vaddr, child)


def lazyfree(mm: AddressSpace, start: int, end: int) -> None:
    """madvise_free_pte_range(): every anonymous page's PTE becomes clean and old; a dirty
    folio is cleaned only if mapped once (a shared one is skipped whole); then
    folio_mark_lazyfree() drops PG_swapbacked (and active, referenced) unless the folio is
    mlocked (unevictable): reclaim may then free it without swapping, until it is written
    again."""
    if not mm.pt_used or start >= end:
        return
    frames = mm.mem.frames
    zero = frames.zero_pfn
    touched = []
    for m in mm.pt.iter_leaves(start, end):
        e = m.entry
        if not present(e):
            continue
        pfn = entry_pfn(e)
        if pfn == zero or not frames.flags(pfn) & _ANON:
            continue
        flags = frames.flags(pfn)
        if flags & _DIRTY:
            if frames.mapcount(pfn) != 1:
                continue
            frames.clear_flags(pfn, _DIRTY)
        if e & (PAGE_ACCESSED | PAGE_DIRTY):
            mm.pt.set(m.vaddr, e & ~(PAGE_ACCESSED | PAGE_DIRTY))
            touched.append(m.vaddr)
        if flags & _SWAPBACKED and not flags & _MLOCKED:
            frames.clear_flags(pfn, _SWAPBACKED | _REFERENCED | _ACTIVE)
            mm.mem.lru.update(pfn)
    if touched:
        mm.mem.flush_range(mm, touched[0], touched[-1] + PAGE_SIZE)


def mincore(mm: AddressSpace, start: int, length: int) -> bytes:
    """mincore(2) (mm/mincore.c): for each page, 1 if a PTE maps it (the zero page too) or,
    for a file mapping without a PTE, if the page cache holds it; a guard marker counts as
    no PTE. EINVAL for an unaligned start, ENOMEM for a range beyond the address space or
    with a hole."""
    import errno

    from vmsim.errors import oserror

    if start & (PAGE_SIZE - 1):
        raise oserror(errno.EINVAL)
    npages = (length >> PAGE_SHIFT) + (1 if length & (PAGE_SIZE - 1) else 0)
    end = start + (npages << PAGE_SHIFT)
    if end > mm.cfg.task_size or end < start:
        raise oserror(errno.ENOMEM)
    out = bytearray()
    a = start
    while a < end:
        vma = mm.tree.lookup(a)
        if vma is None:
            raise oserror(errno.ENOMEM)
        stop = min(vma.end, end)
        while a < stop:
            leaf = mm.pt.get(a) if mm.pt_used else None
            e = leaf.entry if leaf is not None else 0
            if present(e):
                out.append(1)
            elif e:  # a swap entry: resident if in the swap cache
                out.append(1 if swap_key(e) in mm.mem.swap.cache else 0)
            elif vma.file is not None:
                out.append(1 if vma.pgoff_at(a) in vma.file.inode.pages else 0)
            else:
                out.append(0)
            a += PAGE_SIZE
    return bytes(out)


# ------------------------------------------------------------------------ swap
def swap_key(entry: int) -> tuple[int, int]:
    """The (type, offset) a swap PTE names."""
    return swp_type(entry), swp_offset(entry)


def swap_pte(key: tuple[int, int], exclusive: bool) -> int:
    e = swp_entry(key[0], key[1])
    return e | PAGE_SWP_EXCLUSIVE if exclusive else e


def swapin_nr_pages(prev_offset: int, offset: int, hits: int, max_pages: int, prev_win: int) -> int:
    """__swapin_nr_pages(): the readahead window from the hits since the last decision:
    none -> 1 page (2 if the fault is next to the previous one), else hits + 2 rounded up
    to a power of two (4 at least), at most ``max_pages``, and never below half the last
    window (it shrinks slowly)."""
    pages = hits + 2
    if pages == 2:
        if offset != prev_offset + 1 and offset != prev_offset - 1:
            pages = 1
    else:
        roundup = 4
        while roundup < pages:
            roundup <<= 1
        pages = roundup
    pages = min(pages, max_pages)
    return max(pages, prev_win // 2)


def _cluster_ra(swap: SwapSpace, key: tuple[int, int]) -> list[tuple[int, int]]:
    """swap_cluster_readahead(): the aligned block of swapin_nr_pages() slots around the
    faulting one (the global hit count decides its size)."""
    max_pages = 1 << swap.page_cluster
    if max_pages <= 1:
        return [key]
    hits, swap.readahead_hits = swap.readahead_hits, 0
    pages = swapin_nr_pages(swap.prev_offset, key[1], hits, max_pages, swap.last_ra_pages)
    if not hits:
        swap.prev_offset = key[1]
    swap.last_ra_pages = pages
    mask = pages - 1
    if not mask:
        return [key]
    start = max(key[1] & ~mask, 1)  # offset 0 is the header
    end = min(key[1] | mask, swap.device(key).pages - 1)
    return [(key[0], off) for off in range(start, end + 1)]


def _vma_ra(mm: AddressSpace, vma: Vma, addr: int, key: tuple[int, int]) -> list[tuple[int, int]]:
    """swap_vma_readahead(): the swap entries of the PTEs in a window around the fault
    (swap_vma_ra_win(): its size from the VMA's hits, placed ahead of a forward or behind a
    backward stream, centred otherwise; clipped to the VMA and the page table), the
    faulting entry last."""
    swap = mm.mem.swap
    prev_addr, prev_win, hits = vma.swap_ra or SWAP_RA_INITIAL
    max_win = 1 << min(swap.page_cluster, SWAP_RA_ORDER_CEILING)
    win = swapin_nr_pages(prev_addr >> PAGE_SHIFT, addr >> PAGE_SHIFT, hits, max_win, prev_win)
    vma.swap_ra = (addr, win, 0)
    if win == 1:
        return [key]
    if addr == prev_addr + PAGE_SIZE:
        left = addr
    elif prev_addr == addr + PAGE_SIZE:
        left = addr - (win << PAGE_SHIFT) + PAGE_SIZE
    else:
        left = addr - (((win - 1) // 2) << PAGE_SHIFT)
    right = left + (win << PAGE_SHIFT)
    pmd = addr & ~(PMD_SIZE - 1)
    start = max(left, vma.start, pmd)
    end = min(right, vma.end, pmd + PMD_SIZE)
    keys = []
    for m in mm.pt.iter_leaves(start, end):
        e = m.entry
        if m.vaddr != addr and e and not present(e):
            keys.append(swap_key(e))
    keys.append(key)
    return keys


def swapin_readahead(mm: AddressSpace, vma: Vma, addr: int, key: tuple[int, int]) -> int:
    """swapin_readahead(): read the faulting slot and its readahead window into the swap
    cache, by VMA (swap_vma_readahead()) or, while a rotational device is in use, by swap
    cluster (swap_cluster_readahead()). The other pages are best effort and marked
    PG_readahead (counted in swap_ra; a later fault that finds one counts a hit). Returns
    the faulting slot's folio with a reference held for the caller (so that reclaim, run by
    the allocations of the neighbours, cannot take it back meanwhile)."""
    mem = mm.mem
    swap = mem.swap
    keys = _vma_ra(mm, vma, addr, key) if swap.use_vma_readahead() else _cluster_ra(swap, key)
    keys = [k for k in keys if k != key] + [key]
    target = -1
    for k in keys:
        if k in swap.cache:
            if k == key:
                target = swap.cache[k]
                mem.frames.get(target)
            continue
        if not swap.count(k):
            continue
        try:
            pfn = _read_swap_page(mem, k)
        except OutOfMemory:
            if k == key:
                raise
            continue
        if k == key:  # the allocation's reference is the swap cache's; one more here
            target = pfn
            mem.frames.get(pfn)
        else:
            mem.frames.set_flags(pfn, _READAHEAD)
            mem.vmstat["swap_ra"] += 1
    assert target >= 0, f"swap slot {key} is not in use"
    return target


def _read_swap_page(mem: Memory, k: tuple[int, int], cache: bool = True) -> int:
    """A new folio with the slot's contents, in the swap cache (unless ``cache`` is False:
    the synchronous-device path) and on the LRU."""
    pfn = mem.alloc_folio(ANON_FLAGS)
    data, where = mem.swap.read(k)
    mem.frames.write(pfn, 0, data)
    if where == "zswap" or not cache:  # nobody else keeps a copy: the folio is the only one
        mem.frames.set_flags(pfn, _DIRTY)
    if cache:
        mem.swap.add_to_cache(k, pfn)
        mem.frames.set_flags(pfn, int(PageFlag.SWAPCACHE))
    mem.lru.add(pfn)
    shadow = mem.swap.shadows.pop(k, None)
    if shadow is not None:
        workingset.refault(mem, pfn, shadow)
    return pfn


def anon_owner(vma: Vma, addr: int) -> tuple[int, int]:
    """(anon_vma root, linear page index): where an anonymous folio mapped at ``addr`` in
    ``vma`` belongs (folio->mapping, folio->index)."""
    assert vma.anon_vma is not None
    return vma.anon_vma.root, vma.pgoff_at(addr)


def do_swap_page(mm: AddressSpace, vma: Vma, addr: int, entry: int, write: bool) -> str:
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
    key = swap_key(entry)
    frames = mem.frames
    major = False
    pfn = swap.cache.get(key)
    if pfn is None and swap.device(key).synchronous and swap.count(key) == 1:
        # SWP_SYNCHRONOUS_IO (zram) and nobody else names the slot: read it straight into a
        # new page of our own, no swap cache, no readahead
        if vma.anon_vma is None:
            mm.anon_vma_prepare(vma)
        pfn = _read_swap_page(mem, key, cache=False)
        swap.put(key)
        pte = pfn_pte(pfn, page_prot(vma))
        if vma.flags & VM_WRITE:
            pte |= PAGE_RW | (PAGE_DIRTY if write else 0)
        _map_page(mm, vma, addr, pfn, pte)
        return "swap-major"
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
            vma.swap_ra = (addr, win, min(hits + hit, SWAP_RA_HITS_MAX))
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
        mem.delete_from_swap_cache(pfn)  # folio_free_swap()
    pte = pfn_pte(pfn, page_prot(vma))
    if not ksm and (exclusive or frames.refcount(pfn) == 1) and vma.flags & VM_WRITE:
        pte |= PAGE_RW
        if write:
            pte |= PAGE_DIRTY
    elif write and ksm:
        pte &= ~PAGE_RW
    _map_page(mm, vma, addr, pfn, pte)
    if pfn in swap.entry_of and pfn not in mem.swap_owner and not ksm:
        mem.swap_owner[pfn] = owner
    return "swap-major" if major else "swap"


def try_to_unmap(mem: Memory, pfn: int, to: tuple[int, int] | None) -> bool:
    """try_to_unmap(): every PTE mapping ``pfn`` becomes the swap entry ``to`` (each one a
    swap reference), or none (a clean file page, a lazily freed page). A dirty PTE dirties
    the folio; for a lazily freed page that means it is in use again: False, nothing done
    to the remaining mappings."""
    frames = mem.frames
    anon = frames.flags(pfn) & _ANON
    # PageAnonExclusive, remembered in the entry: mapped once, and the slot not named by
    # another swap entry already
    exclusive = (
        frames.mapcount(pfn) == 1
        and not frames.flags(pfn) & _KSM  # a KSM page is never exclusive
        and (to is None or not mem.swap.count(to))
    )
    for mm, va in list(mem.rmap.get(pfn, ())):
        leaf = mm.pt.get(va)
        assert leaf is not None and entry_pfn(leaf.entry) == pfn, "rmap out of step"
        e = leaf.entry
        if e & PAGE_DIRTY:
            if anon and to is None:
                frames.set_flags(pfn, _SWAPBACKED | _DIRTY)
                mem.lru.update(pfn)
                return False
            frames.set_flags(pfn, _DIRTY)
        if to is not None:
            mem.swap.dup(to)
            mm.pt.set(va, swap_pte(to, exclusive))
        else:
            mm.pt.set(va, 0)
        frames.unmap(pfn)
        mem.rmap_remove(pfn, mm, va)
        frames.put(pfn)
        mem.flush_range(mm, va, va + PAGE_SIZE)
    return True


def cold_or_pageout(mm: AddressSpace, start: int, end: int, pageout: bool) -> None:
    """madvise_cold_or_pageout_pte_range(): folios mapped only here lose PG_referenced;
    MADV_COLD also ages their PTEs and moves them to the inactive list, MADV_PAGEOUT reclaims
    them at once (without swap an anonymous folio stays, activated; a clean file folio goes;
    the PTEs of what stays keep their accessed bit)."""
    from vmsim.mm import vmscan

    if not mm.pt_used or start >= end:
        return
    mem = mm.mem
    mem.lru_add_drain()  # madvise_cold() / madvise_pageout() start with it
    frames = mem.frames
    zero = frames.zero_pfn
    picked: list[int] = []
    aged: list[int] = []
    for m in list(mm.pt.iter_leaves(start, end)):
        e = m.entry
        if not present(e):
            continue
        pfn = entry_pfn(e)
        if pfn == zero or pfn not in mem.lru.where or frames.mapcount(pfn) != 1:
            continue
        if e & PAGE_ACCESSED and not pageout:  # PAGEOUT leaves the PTE young (kernel-verified)
            mm.pt.set(m.vaddr, e & ~PAGE_ACCESSED)
            aged.append(m.vaddr)
        frames.clear_flags(pfn, _REFERENCED)
        if pageout:
            picked.append(pfn)
        elif frames.flags(pfn) & _ACTIVE:
            frames.clear_flags(pfn, _ACTIVE)
            mem.lru.update(pfn)
            mem.vmstat["pgdeactivate"] += 1
    if aged:
        mem.flush_range(mm, aged[0], aged[-1] + PAGE_SIZE)
    if picked:
        vmscan.pageout(mem, picked)
