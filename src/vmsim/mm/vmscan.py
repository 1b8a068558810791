"""Page reclaim (mm/vmscan.c) for one node with the classic two-list LRU.

Reclaim runs in passes of falling priority, 12 down to 0 (do_try_to_free_pages() for an
allocation, balance_pgdat() for kswapd). Each pass (shrink_node() -> shrink_lruvec()) first
decides how hard to scan each list (get_scan_count()): ``size >> priority`` folios, split
between anonymous and file lists by the balance:

* no free swap: file lists only (SCAN_FILE);
* priority 0 with swappiness > 0: both in full (SCAN_EQUAL);
* file pages plus free memory at most the high watermark: anonymous only (file_is_tiny);
* plenty of inactive file pages and the file lists need no deactivation: file only
  (cache_trim_mode);
* otherwise in proportion (SCAN_FRACT): anonymous ``swappiness``, file ``200 - swappiness``,
  each divided by its recent reclaim cost (lru_note_cost(): 32 per page written out plus one
  per page scanned and not reclaimed, 32 per refault of a workingset page, both halved once
  they pass a quarter of the LRU).

The lists are then scanned in batches of 32, round robin; an active list gives up its oldest
folios to the inactive one only when that inactive list is too small (inactive_is_low()).
For each inactive folio (shrink_folio_list()):

* busy (a reference nobody's PTE or the page cache accounts for: a fault is using it) or
  mlocked: left alone;
* folio_check_references(): the accessed bits of every PTE mapping it are read and cleared
  (folio_referenced(), through the reverse map, KSM pages included) and PG_referenced is
  tested and cleared: referenced by a PTE -> an anonymous folio is activated; a file folio
  is activated if it was referenced before (PG_referenced) or is mapped executable, or by
  more than one PTE, otherwise it gets PG_referenced and a second chance;
* then reclaimed: an anonymous folio gets a swap slot, every PTE becomes a swap entry, the
  contents go to the zeromap, zswap or the swap device, the folio is freed; a lazily freed
  (MADV_FREE) folio still clean is simply dropped; a file folio is unmapped and dropped from
  the page cache if clean; a dirty one stays, activated with PG_reclaim, for the flusher
  (``vmsim.mm.page_writeback.flush()``, run by ``Machine.tick()``) to write back and rotate to the end of the
  inactive list.

kswapd reclaims until free memory is above the high watermark, raising the priority when a
pass scanned less than its target or freed nothing; direct reclaim stops after the pass that
reached 32 pages. A freed folio leaves a workingset shadow (``vmsim.mm.workingset``);
refaults since the last reclaim make the active lists give up folios. Not modelled:
per-cgroup lists, zones (one node, one zone).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_ACCESSED
from vmsim.mm import compaction, huge_memory, thp_swap, workingset
from vmsim.mm.filemap import cache_del
from vmsim.mm.flags import VM_EXEC
from vmsim.mm.lru import ACTIVE_ANON, ACTIVE_FILE, INACTIVE_ANON, INACTIVE_FILE, lru_add_drain
from vmsim.mm.mmzone import SWAP_CLUSTER_MAX, lru_note_cost
from vmsim.mm.mthp import count_mthp_stat
from vmsim.mm.rmap import anon_owner, try_to_unmap
from vmsim.mm.swap_state import delete_from_swap_cache
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel
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
_WORKINGSET = int(PageFlag.WORKINGSET)
_RECLAIM = int(PageFlag.RECLAIM)


def folio_referenced(mem: Kernel, pfn: int) -> tuple[int, bool]:
    """How many PTEs map ``pfn`` with the accessed bit set (clearing it: x86 does not flush
    the TLB for that), and whether any mapping is executable. A large folio's every page
    is looked at (the rmap walk covers the whole folio: a PTE-mapped THP or mTHP is young
    when any of its pages is)."""
    young = 0
    exec_ = False
    nr = mem.frames.folio_nr_pages(pfn)
    mappings = (
        list(mem.rmap.get(pfn, ()))
        if nr == 1
        else [m for p in range(pfn, pfn + nr) for m in mem.rmap.get(p, ())]
    )
    for mm, va in mappings:
        leaf = mm.pt.get(va)
        if leaf is None:
            continue
        e = leaf.entry
        if e & PAGE_ACCESSED:
            young += 1
            mm.pt.set(va, e & ~PAGE_ACCESSED, leaf.level)  # pmdp_clear_young_notify() too
        vma = mm.tree.lookup(va)
        if vma is not None and vma.flags & VM_EXEC:
            exec_ = True
    return young, exec_


def _expected_refs(mem: Kernel, pfn: int) -> int:
    """References a reclaimable folio has: one per PTE, one for the page or swap cache."""
    frames = mem.frames
    flags = frames.flags(pfn)
    entry_of = mem.swap.entry_of
    if frames.order(pfn) and pfn in entry_of:  # a large folio: a reference per cached page
        cache = sum(1 for p in range(pfn, pfn + frames.folio_nr_pages(pfn)) if p in entry_of)
    else:
        cache = 1 if flags & _FILE or pfn in entry_of else 0
    return frames.mapcount(pfn) + cache


def _isolatable(mem: Kernel, pfn: int) -> bool:
    """folio_isolate_lru() would take it: not mlocked, not busy (no reference beyond its
    PTEs and its page or swap cache: a fault is not using it)."""
    if mem.frames.flags(pfn) & _MLOCKED:
        return False
    return mem.frames.refcount(pfn) == _expected_refs(mem, pfn)


def _reclaim_one(mem: Kernel, pfn: int) -> str:
    """shrink_folio_list() for one folio after the reference check said "reclaim".
    Returns "freed", "kept" (rotate), "activate" or "written" (write-back started)."""
    frames = mem.frames
    if frames.order(pfn):
        return _reclaim_large(mem, pfn)
    flags = frames.flags(pfn)
    if flags & _ANON:
        if not flags & _SWAPBACKED:  # MADV_FREE'd: drop it if still clean
            if flags & _DIRTY or not try_to_unmap(mem, pfn, None):
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
                        mem.swap_owner[pfn] = anon_owner(vma, va)
                        break
        if not try_to_unmap(mem, pfn, key):
            return "activate"
        if frames.flags(pfn) & _DIRTY:
            where = swap.write(key, frames.read(pfn))
            if where == "failed":
                return "activate"
            mem.node.nr_pageout += 1
            frames.clear_flags(pfn, _DIRTY)
        swap.shadows[key] = workingset.eviction(mem, pfn)
        delete_from_swap_cache(mem, pfn)  # the cache's reference was the last: freed
        return "freed"
    # a file folio. A shmem folio never written holds only the zeros of a hole: it is
    # dropped like a clean page; a dirty one goes to swap (shmem_writeout()): its PTEs are
    # cleared and the page-cache slot names the swap entry instead
    owner = mem.cache_owner.get(pfn)
    if owner is None:
        return "kept"
    # unmapped first (try_to_unmap() comes before pageout()): a dirty shmem folio that then
    # finds no swap slot stays in the page cache, activated, but no longer mapped
    # (kernel-checked: MADV_PAGEOUT of a written shared anonymous page without swap)
    if not try_to_unmap(mem, pfn, None):
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
        mem.node.nr_pageout += 1
        mem.swap.shadows[key] = workingset.eviction(mem, pfn)
        cache_del(mem, inode, pg)
        return "freed"
    if frames.flags(pfn) & _DIRTY:
        # a dirty file folio: reclaim leaves the writing to the flusher (only kswapd may
        # write file folios, and only once the node is flagged as full of dirty ones): it
        # gets PG_reclaim, to be rotated for reclaim when written, and is activated,
        # unmapped (kernel-checked with MADV_PAGEOUT)
        frames.set_flags(pfn, _RECLAIM)
        return "activate"
    inode.shadows[pg] = workingset.eviction(mem, pfn)
    cache_del(mem, inode, pg)
    return "freed"


def _reclaim_large(mem: Kernel, head: int) -> str:
    """shrink_folio_list() for a large folio. An anonymous one is swapped out whole when
    the swap space has a cluster for it (``vmsim.mm.thp_swap``), unless it is partly mapped
    (split right away: the unmapped pages go without I/O). Otherwise it is split
    (split_folio_to_list(); for an anonymous folio that found no slots, counted as
    thp_swpout_fallback if PMD-sized and as the size's swpout_fallback) and its pages are
    reclaimed one by one; what the head page came to is returned, the other pages are freed
    or activated as they come."""
    frames = mem.frames
    flags = frames.flags(head)
    order = frames.order(head)
    if flags & _ANON and flags & _SWAPBACKED:
        if head in mem.swap.entry_of:
            return thp_swap.swap_out_folio(mem, head) or "activate"
        if not mem.thp.deferred.get(head):
            got = thp_swap.swap_out_folio(mem, head)
            if got is not None:
                return got
            if order >= huge_memory.HPAGE_PMD_ORDER:
                mem.vmstat["thp_swpout_fallback"] += 1
            count_mthp_stat(mem, order, "swpout_fallback")
    nr = frames.folio_nr_pages(head)
    if not huge_memory.split_folio_everywhere(mem, head):
        return "activate"
    lru = mem.node.lru
    outcome = "freed"
    for p in range(head, head + nr):
        if p not in lru.where or not _isolatable(mem, p):
            continue
        got = _reclaim_one(mem, p)
        if p == head:
            outcome = got
        elif got == "activate" and frames.is_allocated(p):
            frames.set_flags(p, _ACTIVE)
            lru.update(p)
            mem.vmstat["pgactivate"] += 1
    return outcome if frames.is_allocated(head) else "freed"


def shrink_inactive(mem: Kernel, name: str, nr: int, kswapd: bool) -> int:
    """shrink_inactive_list(): scan the ``nr`` oldest folios of an inactive list; returns
    pages freed."""
    frames = mem.frames
    lru = mem.node.lru
    lru_add_drain(mem)
    freed = 0
    # isolate_lru_folios(): folios from the tail until ``nr`` pages were taken (a large
    # folio counts all its pages)
    scanned = []
    pages = 0
    for pfn in lru.oldest(name, nr):
        if pages >= nr:
            break
        scanned.append(pfn)
        pages += frames.folio_nr_pages(pfn)
    pageout_before = mem.node.nr_pageout
    for pfn in scanned:
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
        nr = frames.folio_nr_pages(pfn)
        outcome = _reclaim_one(mem, pfn)
        if outcome == "freed":
            freed += nr  # nr_reclaimed counts pages: a large folio all of its own
        elif outcome == "activate":
            if frames.is_allocated(pfn):
                frames.set_flags(pfn, _ACTIVE)
                lru.update(pfn)
                mem.vmstat["pgactivate"] += 1
        elif frames.is_allocated(pfn):
            if outcome == "written":
                mem.vmstat["pgrotated"] += 1
            lru.rotate(pfn)
    done = pages
    file = name == INACTIVE_FILE
    vm = mem.vmstat
    vm["pgscan_kswapd" if kswapd else "pgscan_direct"] += done
    vm["pgsteal_kswapd" if kswapd else "pgsteal_direct"] += freed
    vm["pgscan_file" if file else "pgscan_anon"] += done
    vm["pgsteal_file" if file else "pgsteal_anon"] += freed
    lru_note_cost(mem, file, mem.node.nr_pageout - pageout_before, done - freed)
    return freed


def shrink_active(mem: Kernel, name: str, nr: int) -> None:
    """shrink_active_list(): the oldest active folios lose their accessed bits and move to
    the inactive list, except executable file folios referenced since the last look (their
    count is the list's rotation cost)."""
    frames = mem.frames
    lru = mem.node.lru
    lru_add_drain(mem)
    rotated = 0
    for pfn in lru.oldest(name, nr):
        mem.vmstat["pgrefill"] += 1
        young, exec_ = folio_referenced(mem, pfn)
        if young and exec_ and not frames.flags(pfn) & _SWAPBACKED:
            lru.rotate(pfn)
            rotated += 1
            continue
        frames.clear_flags(pfn, _ACTIVE)
        frames.set_flags(pfn, _WORKINGSET)  # it was in use: a refault will say so
        lru.update(pfn)
        mem.vmstat["pgdeactivate"] += 1
    lru_note_cost(mem, name == ACTIVE_FILE, 0, rotated)


def inactive_is_low(mem: Kernel, inactive: str, active: str) -> bool:
    """inactive_is_low(): inactive * ratio < active, ratio = sqrt(10 * GiB of the list)."""
    sizes = mem.node.lru.sizes()
    total_gb = (sizes[inactive] + sizes[active]) >> (30 - 12)
    ratio = math.isqrt(10 * total_gb) if total_gb else 1
    return sizes[inactive] * ratio < sizes[active]


SCAN_EQUAL, SCAN_FRACT, SCAN_ANON, SCAN_FILE = "equal", "fract", "anon", "file"
DEACTIVATE_ANON, DEACTIVATE_FILE = 1, 2
_EVICTABLE = (INACTIVE_ANON, ACTIVE_ANON, INACTIVE_FILE, ACTIVE_FILE)  # for_each_evictable_lru


def get_scan_count(mem: Kernel, priority: int, may_deactivate: int) -> tuple[str, dict[str, int]]:
    """get_scan_count() (with prepare_scan_control()'s file_is_tiny and cache_trim_mode):
    the balance chosen and how many folios of each evictable list to scan."""
    sizes = mem.node.lru.sizes()
    swappiness = mem.node.swappiness
    file = sizes[INACTIVE_FILE] + sizes[ACTIVE_FILE]
    fraction = (1, 1)
    if mem.swap.free <= 0:  # can_reclaim_anon_pages(): nowhere to put anonymous pages
        balance = SCAN_FILE
    elif not priority and swappiness:
        balance = SCAN_EQUAL
    elif (
        file + mem.frames.free_pages <= mem.node.wmark_high
        and not may_deactivate & DEACTIVATE_ANON
        and sizes[INACTIVE_ANON] >> priority
    ):
        balance = SCAN_ANON  # file_is_tiny
    elif sizes[INACTIVE_FILE] >> priority and not may_deactivate & DEACTIVATE_FILE:
        balance = SCAN_FILE  # cache_trim_mode
    else:
        balance = SCAN_FRACT  # calculate_pressure_balance()
        total = mem.node.anon_cost + mem.node.file_cost
        anon_cost = total + mem.node.anon_cost
        file_cost = total + mem.node.file_cost
        total = anon_cost + file_cost
        ap = swappiness * (total + 1) // (anon_cost + 1)
        fp = (200 - swappiness) * (total + 1) // (file_cost + 1)
        fraction = (ap, fp)
    denominator = fraction[0] + fraction[1]
    nr: dict[str, int] = {}
    for name in _EVICTABLE:
        is_file = name in (INACTIVE_FILE, ACTIVE_FILE)
        scan = sizes[name] >> priority
        if balance == SCAN_FRACT:
            scan = scan * fraction[is_file] // denominator if denominator else 0
        elif balance in (SCAN_FILE, SCAN_ANON) and (balance == SCAN_FILE) != is_file:
            scan = 0
        nr[name] = scan
    return balance, nr


def shrink_node(
    mem: Kernel,
    nr_to_reclaim: int,
    kswapd: bool,
    priority: int = DEF_PRIORITY,
    force_deactivate: bool = False,
) -> tuple[int, int]:
    """One reclaim pass at ``priority`` (shrink_node() -> shrink_lruvec()): returns (folios
    scanned on the inactive lists, pages freed). An active list it was told to scan but
    may not deactivate sets ``node.skipped_deactivate`` (sc->skipped_deactivate);
    ``force_deactivate`` allows both (sc->force_deactivate)."""
    if mem.node.reclaiming:
        return 0, 0
    mem.node.reclaiming = True
    try:
        # shrink_slab(): the deferred split shrinker splits the partly mapped THPs
        huge_memory.deferred_split_scan(mem)
        # prepare_scan_control(): refaults since the last reclaim (a new workingset forming)
        # or a small inactive list make the active list give up folios
        vm = mem.vmstat
        seen_anon, seen_file = mem.node.refaults_seen
        may = 0
        if force_deactivate:
            may = DEACTIVATE_ANON | DEACTIVATE_FILE
        if vm["workingset_activate_anon"] != seen_anon or inactive_is_low(
            mem, INACTIVE_ANON, ACTIVE_ANON
        ):
            may |= DEACTIVATE_ANON
        if vm["workingset_activate_file"] != seen_file or inactive_is_low(
            mem, INACTIVE_FILE, ACTIVE_FILE
        ):
            may |= DEACTIVATE_FILE
        _balance, nr = get_scan_count(mem, priority, may)
        targets = dict(nr)
        freed = 0
        scanned = 0
        proportional = not kswapd and priority == DEF_PRIORITY
        while nr[INACTIVE_ANON] or nr[ACTIVE_FILE] or nr[INACTIVE_FILE]:
            for name in _EVICTABLE:
                if not nr[name]:
                    continue
                n = min(nr[name], SWAP_CLUSTER_MAX)
                nr[name] -= n
                if name in (ACTIVE_ANON, ACTIVE_FILE):  # shrink_list()
                    if may & (DEACTIVATE_FILE if name == ACTIVE_FILE else DEACTIVATE_ANON):
                        shrink_active(mem, name, n)
                    else:
                        mem.node.skipped_deactivate = True
                    continue
                scanned += min(n, len(mem.node.lru.lists[name]))
                freed += shrink_inactive(mem, name, n, kswapd)
            if freed < nr_to_reclaim or proportional:
                continue
            # enough: stop the smaller type, trim the other to its share of the targets
            nr_file = nr[INACTIVE_FILE] + nr[ACTIVE_FILE]
            nr_anon = nr[INACTIVE_ANON] + nr[ACTIVE_ANON]
            if not nr_file or not nr_anon:
                break
            if nr_file > nr_anon:
                stop, other = (INACTIVE_ANON, ACTIVE_ANON), (INACTIVE_FILE, ACTIVE_FILE)
                pct = nr_anon * 100 // (targets[INACTIVE_ANON] + targets[ACTIVE_ANON] + 1)
            else:
                stop, other = (INACTIVE_FILE, ACTIVE_FILE), (INACTIVE_ANON, ACTIVE_ANON)
                pct = nr_file * 100 // (targets[INACTIVE_FILE] + targets[ACTIVE_FILE] + 1)
            for name in stop:
                nr[name] = 0
            for name in other:
                done = targets[name] - nr[name]
                nr[name] = targets[name] * (100 - pct) // 100
                nr[name] -= min(nr[name], done)
        # keep enough anonymous reclaim candidates for the next pass
        if mem.swap.free > 0 and inactive_is_low(mem, INACTIVE_ANON, ACTIVE_ANON):
            shrink_active(mem, ACTIVE_ANON, SWAP_CLUSTER_MAX)
        return scanned, freed
    finally:
        mem.node.reclaiming = False


def direct_reclaim(mem: Kernel) -> int:
    """try_to_free_pages() -> do_try_to_free_pages(): passes of falling priority until one
    has freed 32 pages in all. When they freed nothing and some pass skipped deactivating
    an active list, the passes run once more with forced deactivation (the retry of
    do_try_to_free_pages(): sc->skipped_deactivate -> sc->force_deactivate): a list of
    young folios that the last pass all activated is aged instead of ending in an OOM
    kill."""
    freed = 0
    force = False
    while True:
        mem.node.skipped_deactivate = False
        for priority in range(DEF_PRIORITY, -1, -1):
            freed += shrink_node(
                mem, SWAP_CLUSTER_MAX, kswapd=False, priority=priority, force_deactivate=force
            )[1]
            if freed >= SWAP_CLUSTER_MAX:
                break
        if freed or force or not mem.node.skipped_deactivate:
            break
        force = True
    snapshot_refaults(mem)
    return freed


def snapshot_refaults(mem: Kernel) -> None:
    """snapshot_refaults(): remember the workingset activations this reclaim has seen."""
    vm = mem.vmstat
    mem.node.refaults_seen = (vm["workingset_activate_anon"], vm["workingset_activate_file"])


MAX_RECLAIM_RETRIES = 16


def kswapd(mem: Kernel) -> int:
    """One wake-up of kswapd: balance_pgdat() runs until free memory is above the high
    watermark (kswapd_try_to_sleep() will not sleep before) or runs that free nothing have
    failed MAX_RECLAIM_RETRIES times (pgdat->kswapd_failures)."""
    freed = 0
    failures = 0
    while mem.frames.free_pages <= mem.node.wmark_high and failures < MAX_RECLAIM_RETRIES:
        got = balance_pgdat(mem)
        freed += got
        failures = 0 if got else failures + 1
    mem.node.kswapd_wanted = False
    # kswapd_try_to_sleep(): kcompactd is woken for the order kswapd was woken for
    order, mem.node.kswapd_order = mem.node.kswapd_order, 0
    if order:
        compaction.wakeup_kcompactd(mem, order)
    return freed


def balance_pgdat(mem: Kernel) -> int:
    """kswapd: passes until free memory is above the high watermark; the priority rises
    when a pass scanned less than its target (the high watermark) or freed nothing."""
    mem.vmstat["pageoutrun"] += 1
    freed = 0
    priority = DEF_PRIORITY
    while priority >= 1 and mem.frames.free_pages <= mem.node.wmark_high:
        target = max(mem.node.wmark_high, SWAP_CLUSTER_MAX)
        scanned, got = shrink_node(mem, target, kswapd=True, priority=priority)
        freed += got
        if scanned < target or not got:
            priority -= 1
    snapshot_refaults(mem)
    mem.node.kswapd_wanted = False
    return freed


def pageout(mem: Kernel, pfns: list[int]) -> int:
    """reclaim_pages() for MADV_PAGEOUT: reclaim these folios now, references ignored; what
    cannot go (an anonymous folio with no swap slot to get) is activated. Returns the pages
    freed."""
    if mem.node.reclaiming:
        return 0
    mem.node.reclaiming = True
    frames = mem.frames
    freed = 0
    try:
        for pfn in pfns:
            if not frames.is_allocated(pfn) or pfn not in mem.node.lru.where:
                continue
            if not _isolatable(mem, pfn):
                continue
            nr = frames.folio_nr_pages(pfn)
            outcome = _reclaim_one(mem, pfn)
            if outcome == "freed":
                freed += nr
            elif outcome == "activate" and frames.is_allocated(pfn):
                frames.set_flags(pfn, _ACTIVE)
                mem.node.lru.update(pfn)
    finally:
        mem.node.reclaiming = False
    return freed


__all__ = [
    "DEF_PRIORITY",
    "MAX_RECLAIM_RETRIES",
    "balance_pgdat",
    "direct_reclaim",
    "folio_referenced",
    "get_scan_count",
    "inactive_is_low",
    "kswapd",
    "pageout",
    "shrink_active",
    "shrink_inactive",
    "shrink_node",
    "snapshot_refaults",
]
