"""The swap cache and swap-in (mm/swap_state.c): readahead around a swap fault, reading a
slot into a folio, and letting go of swap-cache folios nobody needs.

The swap cache's index itself (slot -> folio, ``SwapSpace.cache`` / ``entry_of``) lives with
the devices in ``vmsim.mm.swapfile``. A folio in the swap cache holds one reference (the
cache's) and PG_swapcache; ``Kernel.swap_owner`` remembers the anon_vma and index it
belongs to (folio->mapping, folio->index) so that a fault from elsewhere copies it
(ksm_might_need_to_copy()).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE
from vmsim.mm import workingset
from vmsim.mm.internal import ANON_FLAGS, present
from vmsim.mm.swapops import SwpEntry, pte_to_swp_entry
from vmsim.phys.frames import OutOfMemory, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.swapfile import SwapSpace
    from vmsim.mm.vma import Vma

_DIRTY = int(PageFlag.DIRTY)
_SWAPCACHE = int(PageFlag.SWAPCACHE)
_READAHEAD = int(PageFlag.RECLAIM)  # PG_readahead is PG_reclaim's bit (page-flags.h)

__all__ = [
    "SWAP_RA_HITS_MAX",
    "SWAP_RA_INITIAL",
    "SwapRa",
    "delete_from_swap_cache",
    "free_swap_and_cache",
    "free_swap_cache",
    "read_swap_page",
    "reap_swap_cache",
    "swapin_nr_pages",
    "swapin_readahead",
]

SWAP_RA_ORDER_CEILING = 5
SWAP_RA_HITS_MAX = 63


class SwapRa(NamedTuple):
    """vma->swap_readahead_info (SWAP_RA_ADDR / SWAP_RA_WIN / SWAP_RA_HITS)."""

    addr: int  # the address of the last swap fault in the VMA
    win: int  # the window that fault read
    hits: int  # readahead pages used since (at most SWAP_RA_HITS_MAX)


SWAP_RA_INITIAL = SwapRa(0, 0, 4)  # GET_SWAP_RA_VAL() of a VMA never faulted: 4 hits


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


def _cluster_ra(swap: SwapSpace, key: SwpEntry) -> list[SwpEntry]:
    """swap_cluster_readahead(): the aligned block of swapin_nr_pages() slots around the
    faulting one (the global hit count decides its size)."""
    max_pages = 1 << swap.page_cluster
    if max_pages <= 1:
        return [key]
    hits, swap.readahead_hits = swap.readahead_hits, 0
    pages = swapin_nr_pages(swap.prev_offset, key.offset, hits, max_pages, swap.last_ra_pages)
    if not hits:
        swap.prev_offset = key.offset
    swap.last_ra_pages = pages
    mask = pages - 1
    if not mask:
        return [key]
    start = max(key.offset & ~mask, 1)  # offset 0 is the header
    end = min(key.offset | mask, swap.device(key).pages - 1)
    return [SwpEntry(key.type, off) for off in range(start, end + 1)]


def _vma_ra(mm: AddressSpace, vma: Vma, addr: int, key: SwpEntry) -> list[SwpEntry]:
    """swap_vma_readahead(): the swap entries of the PTEs in a window around the fault
    (swap_vma_ra_win(): its size from the VMA's hits, placed ahead of a forward or behind a
    backward stream, centred otherwise; clipped to the VMA and the page table), the
    faulting entry last."""
    swap = mm.mem.swap
    prev_addr, prev_win, hits = vma.swap_ra or SWAP_RA_INITIAL
    max_win = 1 << min(swap.page_cluster, SWAP_RA_ORDER_CEILING)
    win = swapin_nr_pages(prev_addr >> PAGE_SHIFT, addr >> PAGE_SHIFT, hits, max_win, prev_win)
    vma.swap_ra = SwapRa(addr, win, 0)
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
            keys.append(pte_to_swp_entry(e))
    keys.append(key)
    return keys


def swapin_readahead(mm: AddressSpace, vma: Vma, addr: int, key: SwpEntry) -> int:
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
            pfn = read_swap_page(mem, k)
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


def read_swap_page(mem: Kernel, k: SwpEntry, cache: bool = True) -> int:
    """A new folio with the slot's contents, in the swap cache (unless ``cache`` is False:
    the synchronous-device path) and on the LRU."""
    pfn = mem.alloc_folio(ANON_FLAGS)
    data, where = mem.swap.read(k)
    mem.frames.write(pfn, 0, data)
    if where == "zswap" or not cache:  # nobody else keeps a copy: the folio is the only one
        mem.frames.set_flags(pfn, _DIRTY)
    if cache:
        mem.swap.add_to_cache(k, pfn)
        mem.frames.set_flags(pfn, _SWAPCACHE)
    mem.node.lru.add(pfn)
    shadow = mem.swap.shadows.pop(k, None)
    if shadow is not None:
        workingset.refault(mem, pfn, shadow)
    return pfn


def free_swap_cache(mem: Kernel, pfn: int) -> None:
    """free_swap_cache() / folio_free_swap(): once no PTE maps a swap-cache folio and no
    swap entry names its slot, the swap cache lets go of it (and of its reference)."""
    swap = mem.swap
    key = swap.entry_of.get(pfn)
    if key is not None and not mem.frames.mapcount(pfn) and not swap.count(key):
        delete_from_swap_cache(mem, pfn)


def delete_from_swap_cache(mem: Kernel, pfn: int) -> None:
    """delete_from_swap_cache() + folio_put(): the folio leaves the swap cache (its slot is
    freed if nothing names it) and the cache's reference goes (freeing an unused folio)."""
    mem.swap.remove_from_cache(pfn)
    mem.swap_owner.pop(pfn, None)
    mem.frames.clear_flags(pfn, _SWAPCACHE)
    mem.frames.put(pfn)


def free_swap_and_cache(mem: Kernel, key: SwpEntry) -> None:
    """free_swap_and_cache(): a swap PTE was zapped; if no one else names the slot and its
    swap-cache folio is mapped nowhere, the folio goes too."""
    swap = mem.swap
    swap.put(key)
    pfn = swap.cache.get(key)
    frames = mem.frames
    if (
        pfn is not None
        and not swap.count(key)
        and not frames.mapcount(pfn)
        and frames.refcount(pfn) == 1
    ):
        delete_from_swap_cache(mem, pfn)


def reap_swap_cache(mem: Kernel) -> int:
    """Free the swap-cache folios nobody needs any more: unmapped, unused, and their slot
    named by no PTE (a copy was mapped instead, ksm_might_need_to_copy()). Linux leaves
    them on the LRU, where reclaim frees them first (or __try_to_reclaim_swap() when
    swap fills up); this does it at once. Returns the folios freed."""
    frames = mem.frames
    gone = [
        pfn
        for key, pfn in mem.swap.cache.items()
        if not mem.swap.count(key) and not frames.mapcount(pfn) and frames.refcount(pfn) == 1
    ]
    for pfn in gone:
        delete_from_swap_cache(mem, pfn)
    return len(gone)
