"""The fault side of the page cache (mm/filemap.c, mm/shmem.c): filemap_fault() /
shmem_fault(), which find or bring in the page a file fault needs, and filemap_map_pages(),
which maps the cached pages around the faulting address (do_fault_around(), mm/memory.c).

It sits between the page cache proper (``vmsim.mm.filemap``) and the fault handlers
(``vmsim.mm.memory``): it reads ahead (``vmsim.mm.readahead``), which reads pages in through
``vmsim.mm.filemap``, so it cannot live there without an import cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT
from vmsim.hw.pte import pfn_pte
from vmsim.mm import readahead, workingset
from vmsim.mm.filemap import cache_add, eof_pages, read_page
from vmsim.mm.internal import SHMEM_FLAGS, page_prot
from vmsim.mm.rmap import map_page
from vmsim.mm.swap_state import free_swap_and_cache
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.vma import Vma

__all__ = ["FAULT_AROUND_PAGES", "fault_around", "find_or_create_page"]

_DIRTY = int(PageFlag.DIRTY)
_READAHEAD = int(PageFlag.RECLAIM)  # PG_readahead is PG_reclaim's bit (page-flags.h)
FAULT_AROUND_PAGES = 16  # fault_around_bytes = 64 KiB


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
        free_swap_and_cache(mem, key)
        cache_add(mem, inode, pgoff, pfn)
        if shadow is not None:
            workingset.refault(mem, pfn, shadow)
        return pfn, "major"
    # a regular file: the readahead window, then the page itself if readahead did not
    # read it (no readahead, or memory ran out)
    readahead.sync_mmap_readahead(mem, vma, vma.file.ra, inode, pgoff)
    pfn = inode.pages.get(pgoff)
    if pfn is None:
        pfn = read_page(mem, inode, pgoff)
    return pfn, "major"


def fault_around(mm: AddressSpace, vma: Vma, addr: int, pgoff: int) -> bool:
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
        map_page(mm, vma, a, pfn, pfn_pte(pfn, prot))
        if a == addr:
            target_mapped = True
        else:
            around += 1
    mm.stats.fault_around += around
    mm.mem.stats.fault_around += around
    ra = vma.file.ra  # cached pages found count as hits against mmap_miss
    ra.mmap_miss = max(ra.mmap_miss - visited, 0)
    return target_mapped
