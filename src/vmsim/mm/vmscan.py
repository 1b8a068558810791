"""Page reclaim (mm/vmscan.c) for one node with the classic two-list LRU.

shrink_node() works in rounds of priority 12 down to 0, scanning ``list >> priority`` folios
(at least 32) of each inactive list, oldest first; before that, an active list whose inactive
partner is too small gives up its oldest folios (shrink_active_list()). Anonymous lists are
scanned only if swap has free slots. For each inactive folio (shrink_folio_list()):

* busy (a reference nobody's PTE or the page cache accounts for: a fault is using it) or
  mlocked: left alone;
* folio_check_references(): the accessed bits of every PTE mapping it are read and cleared
  (folio_referenced(), through the reverse map) and PG_referenced is tested and cleared:
  referenced by a PTE -> an anonymous folio is activated; a file folio is activated if it was
  referenced before (PG_referenced) or is mapped executable, or by more than one PTE,
  otherwise it gets PG_referenced and a second chance (back to the young end);
* then reclaimed: an anonymous folio gets a swap slot, every PTE becomes a swap entry, the
  contents go to zswap or the swap device, the folio is freed; a lazily freed (MADV_FREE)
  folio still clean is simply dropped; a file folio is unmapped and dropped from the page
  cache, after being written back if dirty (it is written now, reclaimed on a later pass).

kswapd (``balance_pgdat``) reclaims until free memory is above the high watermark; direct
reclaim (an allocation at the min watermark) reclaims 32 pages at most per attempt.
Not modelled: no
per-cgroup lists; swappiness is 60 only in spirit: file lists go first at every priority.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_ACCESSED
from vmsim.mm import fault as pf
from vmsim.mm.flags import VM_EXEC
from vmsim.mm.lru import ACTIVE_ANON, ACTIVE_FILE, INACTIVE_ANON, INACTIVE_FILE
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.memory import Memory

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12

_ANON = int(PageFlag.ANON)
_FILE = int(PageFlag.FILE)
_SWAPBACKED = int(PageFlag.SWAPBACKED)
_DIRTY = int(PageFlag.DIRTY)
_ACTIVE = int(PageFlag.ACTIVE)
_REFERENCED = int(PageFlag.REFERENCED)
_MLOCKED = int(PageFlag.MLOCKED)
_SWAPCACHE = int(PageFlag.SWAPCACHE)
_KSM = int(PageFlag.KSM)


def folio_referenced(mem: Memory, pfn: int) -> tuple[int, bool]:
    """How many PTEs map ``pfn`` with the accessed bit set (clearing it: x86 does not flush
    the TLB for that), and whether any mapping is executable."""
    young = 0
    exec_ = False
    for mm, va in list(mem.rmap.get(pfn, ())):
        leaf = mm.pt.get(va)
        if leaf is None:
            continue
        e = leaf.entry
        if e & PAGE_ACCESSED:
            young += 1
            mm.pt.set(va, e & ~PAGE_ACCESSED)
        vma = mm.tree.lookup(va)
        if vma is not None and vma.flags & VM_EXEC:
            exec_ = True
    return young, exec_


def _expected_refs(mem: Memory, pfn: int) -> int:
    """References a reclaimable folio has: one per PTE, one for the page or swap cache."""
    flags = mem.frames.flags(pfn)
    cache = 1 if flags & _FILE or pfn in mem.swap.entry_of else 0
    return mem.frames.mapcount(pfn) + cache


def _isolatable(mem: Memory, pfn: int) -> bool:
    """folio_isolate_lru() would take it: not mlocked, not busy (no reference beyond its
    PTEs and its page or swap cache: a fault is not using it)."""
    if mem.frames.flags(pfn) & _MLOCKED:
        return False
    return mem.frames.refcount(pfn) == _expected_refs(mem, pfn)


def _reclaim_one(mem: Memory, pfn: int) -> str:
    """shrink_folio_list() for one folio after the reference check said "reclaim".
    Returns "freed", "kept" (rotate), "activate" or "written" (write-back started)."""
    frames = mem.frames
    flags = frames.flags(pfn)
    if flags & _ANON:
        if not flags & _SWAPBACKED:  # MADV_FREE'd: drop it if still clean
            if flags & _DIRTY or not pf.try_to_unmap(mem, pfn, None):
                return "activate"
            return "freed" if not frames.is_allocated(pfn) else "kept"
        swap = mem.swap
        key = swap.entry_of.get(pfn)
        if key is None:
            key = swap.alloc()
            if key is None:
                return "activate"
            swap.add_to_cache(key, pfn)
            frames.get(pfn)  # the swap cache's reference
            frames.set_flags(pfn, _SWAPCACHE | _DIRTY)
            if not flags & _KSM:  # folio->mapping: the anon_vma family it belongs to
                for mm, va in mem.rmap.get(pfn, ()):
                    vma = mm.tree.lookup(va)
                    if vma is not None and vma.anon_vma is not None:
                        mem.swap_owner[pfn] = pf.anon_owner(vma, va)
                        break
        if not pf.try_to_unmap(mem, pfn, key):
            return "activate"
        if frames.flags(pfn) & _DIRTY:
            where = swap.write(key, frames.read(pfn))
            if where == "failed":
                return "activate"
            frames.clear_flags(pfn, _DIRTY)
        mem.delete_from_swap_cache(pfn)  # the cache's reference was the last: freed
        return "freed"
    # a file folio. A shmem folio never written holds only the zeros of a hole: it is
    # dropped like a clean page; a dirty one goes to swap (shmem_writeout()): its PTEs are
    # cleared and the page-cache slot names the swap entry instead
    owner = mem.cache_owner.get(pfn)
    if owner is None:
        return "kept"
    if flags & _SWAPBACKED and flags & _DIRTY and mem.swap.free == 0:
        return "activate"
    if not pf.try_to_unmap(mem, pfn, None):
        return "kept"
    inode, pg = owner
    if frames.flags(pfn) & _DIRTY and flags & _SWAPBACKED:
        key = mem.swap.alloc()
        if key is None:
            return "activate"
        data = frames.read(pfn)
        mem.swap.dup(key)  # the page cache's reference to the slot
        inode.swapped[pg] = key
        if mem.swap.write(key, data) == "failed":
            inode.swapped.pop(pg)
            mem.swap.put(key)
            return "activate"
        pf.cache_del(mem, inode, pg)
        return "freed"
    if frames.flags(pfn) & _DIRTY:  # pageout(): write it back, reclaim it next time
        inode.backing[pg] = frames.read(pfn)
        frames.clear_flags(pfn, _DIRTY)
        return "written"
    pf.cache_del(mem, inode, pg)
    return "freed"


def shrink_inactive(
    mem: Memory, name: str, nr: int, kswapd: bool, nr_to_reclaim: int | None = None
) -> int:
    """shrink_inactive_list(): scan ``nr`` folios of an inactive list, in batches of 32,
    stopping after the batch that reaches ``nr_to_reclaim``; returns pages freed."""
    frames = mem.frames
    lru = mem.lru
    freed = 0
    scanned = lru.oldest(name, nr)
    done = 0
    for i, pfn in enumerate(scanned):
        if nr_to_reclaim is not None and i % SWAP_CLUSTER_MAX == 0 and freed >= nr_to_reclaim:
            break
        done += 1
        if lru.where.get(pfn) != name:
            continue
        if not _isolatable(mem, pfn):
            lru.rotate(pfn)
            continue
        flags = frames.flags(pfn)
        young, exec_ = folio_referenced(mem, pfn)
        referenced = bool(flags & _REFERENCED)
        if referenced:
            frames.clear_flags(pfn, _REFERENCED)
        if young:
            if flags & _SWAPBACKED or referenced or young > 1 or exec_:
                frames.set_flags(pfn, _ACTIVE)
                lru.update(pfn)
                mem.vmstat["pgactivate"] += 1
                continue
            frames.set_flags(pfn, _REFERENCED)
            lru.rotate(pfn)
            continue
        outcome = _reclaim_one(mem, pfn)
        if outcome == "freed":
            freed += 1
        elif outcome == "activate":
            if frames.is_allocated(pfn):
                frames.set_flags(pfn, _ACTIVE)
                lru.update(pfn)
                mem.vmstat["pgactivate"] += 1
        elif frames.is_allocated(pfn):
            if outcome == "written":
                mem.vmstat["pgrotated"] += 1
            lru.rotate(pfn)
    mem.vmstat["pgscan_kswapd" if kswapd else "pgscan_direct"] += done
    mem.vmstat["pgsteal_kswapd" if kswapd else "pgsteal_direct"] += freed
    return freed


def shrink_active(mem: Memory, name: str, nr: int) -> None:
    """shrink_active_list(): the oldest active folios lose their accessed bits and move to
    the inactive list, except executable file folios referenced since the last look."""
    frames = mem.frames
    lru = mem.lru
    for pfn in lru.oldest(name, nr):
        mem.vmstat["pgrefill"] += 1
        young, exec_ = folio_referenced(mem, pfn)
        if young and exec_ and not frames.flags(pfn) & _SWAPBACKED:
            lru.rotate(pfn)
            continue
        frames.clear_flags(pfn, _ACTIVE)
        lru.update(pfn)
        mem.vmstat["pgdeactivate"] += 1


def inactive_is_low(mem: Memory, inactive: str, active: str) -> bool:
    """inactive_is_low(): inactive * ratio < active, ratio = sqrt(10 * GiB of the list)."""
    sizes = mem.lru.sizes()
    total_gb = (sizes[inactive] + sizes[active]) >> (30 - 12)
    ratio = math.isqrt(10 * total_gb) if total_gb else 1
    return sizes[inactive] * ratio < sizes[active]


def shrink_node(mem: Memory, nr_to_reclaim: int, kswapd: bool) -> int:
    """shrink_node(): reclaim up to ``nr_to_reclaim`` pages, priority 12 down to 0."""
    if mem.reclaiming:
        return 0
    mem.reclaiming = True
    try:
        freed = 0
        for priority in range(DEF_PRIORITY, -1, -1):
            pairs = [(INACTIVE_FILE, ACTIVE_FILE)]
            if mem.swap.free > 0:
                pairs.append((INACTIVE_ANON, ACTIVE_ANON))
            for inactive, active in pairs:
                size = len(mem.lru.lists[active])
                if inactive_is_low(mem, inactive, active):
                    shrink_active(mem, active, max(size >> priority, min(SWAP_CLUSTER_MAX, size)))
                size = len(mem.lru.lists[inactive])
                nr = max(size >> priority, min(SWAP_CLUSTER_MAX, size))
                if nr:
                    freed += shrink_inactive(mem, inactive, nr, kswapd, nr_to_reclaim - freed)
                if freed >= nr_to_reclaim:
                    return freed
        return freed
    finally:
        mem.reclaiming = False


def direct_reclaim(mem: Memory) -> int:
    """try_to_free_pages() from an allocation at the min watermark."""
    return shrink_node(mem, SWAP_CLUSTER_MAX, kswapd=False)


def balance_pgdat(mem: Memory) -> int:
    """kswapd: reclaim until free memory is above the high watermark (or no progress)."""
    mem.vmstat["pageoutrun"] += 1
    freed = 0
    while mem.frames.free_pages <= mem.wmark_high:
        got = shrink_node(mem, SWAP_CLUSTER_MAX, kswapd=True)
        if not got:
            break
        freed += got
    mem.kswapd_wanted = False
    return freed


def pageout(mem: Memory, pfns: list[int]) -> int:
    """reclaim_pages() for MADV_PAGEOUT: reclaim these folios now, references ignored; what
    cannot go (an anonymous folio with no swap slot to get) is activated."""
    if mem.reclaiming:
        return 0
    mem.reclaiming = True
    frames = mem.frames
    freed = 0
    try:
        for pfn in pfns:
            if not frames.is_allocated(pfn) or pfn not in mem.lru.where:
                continue
            if not _isolatable(mem, pfn):
                continue
            outcome = _reclaim_one(mem, pfn)
            if outcome == "freed":
                freed += 1
            elif outcome == "activate" and frames.is_allocated(pfn):
                frames.set_flags(pfn, _ACTIVE)
                mem.lru.update(pfn)
    finally:
        mem.reclaiming = False
    return freed
