"""The machine's memory hardware as the mm code sees it: RAM frames, the CPU's TLBs, PCIDs.

One ``Memory`` per machine (``MmConfig.memory``). The model has one CPU: every address space
runs on it in turn, and ``switch_to()`` is the context switch. PCIDs are handed out the way
arch/x86/mm/tlb.c does it: each CPU keeps ``TLB_NR_DYN_ASIDS`` (6) slots, an address space that
still owns a slot gets its PCID (ASID + 1) back without a flush, one that lost it takes the
next slot round-robin and the slot's PCID is flushed first (choose_new_asid() with
need_flush). A range flush of an address space that owns a slot invalidates its entries at
once (the kernel may defer that to the next switch; the outcome is the same); one that owns no
slot has nothing cached.

The paging-structure caches hold no PCID tag in this model, so they are emptied on every
switch and every flush (INVLPG empties them anyway, SDM 4.10.4.1).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from vmsim.hw.mmu import PagingStructureCache
from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, TlbConfig, TlbHierarchy, flush_tlb_range
from vmsim.mm.lru import Lru
from vmsim.mm.swap import Key, SwapSpace
from vmsim.phys.frames import FrameAllocator, OutOfMemory, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.ksm import Ksm
    from vmsim.mm.vma import Inode

TLB_NR_DYN_ASIDS = 6


@dataclass(slots=True)
class FaultStats:
    """Event counters of one address space, or of the whole machine (vmstat names)."""

    pgfault: int = 0  # every page fault handled (minor + major)
    pgmajfault: int = 0  # faults that had to read a file page from its backing store
    zero_page_maps: int = 0  # read faults answered with the shared zero page
    anon_faults: int = 0  # write faults that allocated a fresh anonymous page
    cow_faults: int = 0  # write faults that copied a page (wp_page_copy / do_cow_fault)
    cow_reuse: int = 0  # write faults on a read-only anonymous page mapped once: no copy
    file_faults: int = 0  # faults that mapped a page-cache page
    fault_around: int = 0  # extra page-cache pages mapped around a read fault
    spurious_faults: int = 0  # TLB entry stricter than the page tables: re-walked
    tlb_l1_hits: int = 0  # translations answered by an L1 TLB
    tlb_stlb_hits: int = 0  # ... by the STLB
    tlb_misses: int = 0  # ... by a page walk
    walks: int = 0  # page walks (TLB misses)
    walk_refs: int = 0  # memory references made by those walks
    pwc_hits: int = 0  # walks that started below the top thanks to a paging-structure cache
    cow_ksm: int = 0  # writes that copied a KSM page

    @property
    def translations(self) -> int:
        """User accesses translated (one per page touched)."""
        return self.tlb_l1_hits + self.tlb_stlb_hits + self.tlb_misses

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["translations"] = self.translations
        return d


class Memory:
    """RAM, the TLB hierarchy and the paging-structure caches of the machine's CPU."""

    def __init__(self, ram_bytes: int, tlb_config: TlbConfig = DEFAULT_TLB_CONFIG) -> None:
        self.frames = FrameAllocator(ram_bytes)
        self.tlb = TlbHierarchy(tlb_config)
        self.pwc = PagingStructureCache(strict=True)
        self.stats = FaultStats()
        self.current: AddressSpace | None = None
        self._slots: list[weakref.ref[AddressSpace] | None] = [None] * TLB_NR_DYN_ASIDS
        self._next_slot = 0
        # every live address space, by serial, in creation order (a WeakSet would iterate in
        # id() order, which changes from run to run)
        self.mms: weakref.WeakValueDictionary[int, AddressSpace] = weakref.WeakValueDictionary()
        self.mlock_count: dict[int, int] = {}  # folio->mlock_count, by pfn
        # reverse map: pfn -> the (address space, address) of every PTE that maps it
        # reverse map: pfn -> the (mm, address) pairs mapping it, in the order they were
        # added (a dict, not a set: a set of address spaces iterates in id() order, which
        # differs from run to run, and an rmap walk that stops early must not)
        self.rmap: dict[int, dict[tuple[AddressSpace, int], None]] = {}
        self.lru = Lru(self.frames)
        self.cache_owner: dict[int, tuple[Inode, int]] = {}  # page-cache pfn -> (inode, pgoff)
        # folio->mapping and folio->index of an anonymous swap-cache folio, as (anon_vma root,
        # linear page index): a fault from elsewhere must copy it (ksm_might_need_to_copy())
        self.swap_owner: dict[int, tuple[int, int]] = {}
        self.swap = SwapSpace()
        self.frames.on_free = self._freed
        self.vmstat: dict[str, int] = dict.fromkeys(VMSTAT_EVENTS, 0)
        self.wmark_min, self.wmark_low, self.wmark_high = watermarks(self.frames.total_pages)
        self.kswapd_wanted = False
        self.reclaiming = False
        # Called when an allocation cannot be satisfied even after reclaim: kills a process
        # (the OOM killer) and returns True, or returns False if there is nobody to kill.
        self.oom_handler: Callable[[], bool] | None = None
        self.task: AddressSpace | None = None  # whose syscall or fault is running
        self.ksm: Ksm | None = None
        # mlock_fbatch: folios mlocked (or munlocked) whose move to the unevictable list is
        # still pending on this CPU; PG_unevictable is set when the batch drains
        self.mlock_pending: set[int] = set()
        self.mlock_batch = 0
        self.nonresident_age = 0  # lruvec->nonresident_age (workingset.py)
        self.refaults_seen = (0, 0)  # lruvec->refaults[]: activations at the last reclaim
        self.swappiness = 60  # vm.swappiness
        self.anon_cost = 0  # lruvec->anon_cost / file_cost: recent reclaim cost per type
        self.file_cost = 0
        self.nr_pageout = 0  # pages reclaim has written out (swap or file writeback)
        self.ra_pages = 32  # the block device's read_ahead_kb / 4 (file read-around)
        self.flush_ceiling = 33  # /sys/kernel/debug/x86/tlb_single_page_flush_ceiling
        # Called when a VMA of a file goes away (the machine frees a deleted file's pages
        # once nothing maps or opens it).
        self.on_file_unmapped: Callable[[Inode], None] | None = None

    # -------------------------------------------------------------- PCIDs
    def _slot_of(self, mm: AddressSpace) -> int:
        for i, ref in enumerate(self._slots):
            if ref is not None and ref() is mm:
                return i
        return -1

    def pcid_of(self, mm: AddressSpace) -> int:
        """The PCID ``mm`` runs with now, or -1 if it owns no ASID slot."""
        i = self._slot_of(mm)
        return -1 if i < 0 else i + 1

    def switch_to(self, mm: AddressSpace) -> int:
        """switch_mm_irqs_off(): make ``mm`` current and return its PCID."""
        if self.current is mm:
            return mm.pcid
        if self.current is not None:
            self.current.fast = None
        i = self._slot_of(mm)
        if i < 0:
            i = self._next_slot
            self._next_slot = (i + 1) % TLB_NR_DYN_ASIDS
            old = self._slots[i]
            if old is not None and (prev := old()) is not None:
                prev.pcid = -1
                prev.fast = None
            self._slots[i] = weakref.ref(mm)
            self.tlb.flush_pcid(i + 1)
        mm.pcid = i + 1
        self.current = mm
        sets = self.tlb.l1d_4k_sets
        mm.fast = None if sets is None else (sets, self.tlb.l1d_4k_mask, mm.pcid)
        self.pwc.flush()
        return mm.pcid

    def release(self, mm: AddressSpace) -> None:
        """An address space is gone (exit, exec): its slot is free for the next one."""
        i = self._slot_of(mm)
        if i >= 0:
            self.tlb.flush_pcid(i + 1)
            self._slots[i] = None
        if self.current is mm:
            self.current = None
        mm.pcid = -1
        mm.fast = None
        self.pwc.flush()

    # ------------------------------------------------------------ flushes
    def flush_range(self, mm: AddressSpace, start: int, end: int) -> int:
        """flush_tlb_mm_range(): INVLPG per page up to the ceiling, else the whole PCID.
        Returns the pages invalidated one by one, -1 for a full flush, 0 if ``mm`` has
        nothing cached."""
        self.pwc.flush()
        pcid = self.pcid_of(mm)
        if pcid < 0 or end <= start:
            return 0
        return flush_tlb_range(self.tlb, start, end, pcid, ceiling=self.flush_ceiling)

    def flush_mm(self, mm: AddressSpace) -> None:
        """flush_tlb_mm(): everything cached for ``mm``."""
        self.pwc.flush()
        pcid = self.pcid_of(mm)
        if pcid >= 0:
            self.tlb.flush_pcid(pcid)
            self.tlb.nr_tlb_local_flush_all += 1

    # ------------------------------------------------------- pages and reclaim
    def _freed(self, pfn: int) -> None:
        self.lru.remove(pfn)
        self.rmap.pop(pfn, None)
        self.cache_owner.pop(pfn, None)
        self.swap_owner.pop(pfn, None)
        self.mlock_pending.discard(pfn)
        if self.ksm is not None:
            self.ksm.forget(pfn)
        self.mlock_count.pop(pfn, None)

    def mlock_batch_add(self, pfn: int, newly_locked: bool) -> None:
        """mlock_folio() / munlock_folio(): the folio joins the per-CPU batch, which drains
        when full (FOLIO_BATCH_SIZE = 31)."""
        if newly_locked:
            self.mlock_pending.add(pfn)
        self.mlock_batch += 1
        if self.mlock_batch >= 31:
            self.lru_add_drain()

    def lru_add_drain(self) -> None:
        """lru_add_drain() -> mlock_drain_local(): pending mlocked folios become
        unevictable, and lose PG_active (__mlock_folio())."""
        frames = self.frames
        for pfn in self.mlock_pending:
            if frames.flags(pfn) & _MLOCKED:
                frames.clear_flags(pfn, _ACTIVE)
                self.lru.update(pfn)
        self.mlock_pending.clear()
        self.mlock_batch = 0

    def rmap_add(self, pfn: int, mm: AddressSpace, addr: int) -> None:
        s = self.rmap.get(pfn)
        if s is None:
            self.rmap[pfn] = {(mm, addr): None}
        else:
            s[(mm, addr)] = None

    def rmap_remove(self, pfn: int, mm: AddressSpace, addr: int) -> None:
        s = self.rmap.get(pfn)
        if s is not None:
            s.pop((mm, addr), None)
            if not s:
                del self.rmap[pfn]

    def reap_swap_cache(self) -> int:
        """Free the swap-cache folios nobody needs any more: unmapped, unused, and their slot
        named by no PTE (a copy was mapped instead, ksm_might_need_to_copy()). Linux leaves
        them on the LRU, where reclaim frees them first (or __try_to_reclaim_swap() when
        swap fills up); this does it at once. Returns the folios freed."""
        frames = self.frames
        gone = [
            pfn
            for key, pfn in self.swap.cache.items()
            if not self.swap.count(key) and not frames.mapcount(pfn) and frames.refcount(pfn) == 1
        ]
        for pfn in gone:
            self.delete_from_swap_cache(pfn)
        return len(gone)

    def swap_entry_gone(self, key: Key) -> None:
        """free_swap_and_cache(): a swap PTE was zapped; if no one else names the slot and its
        swap-cache folio is mapped nowhere, the folio goes too."""
        swap = self.swap
        swap.put(key)
        pfn = swap.cache.get(key)
        frames = self.frames
        if (
            pfn is not None
            and not swap.count(key)
            and not frames.mapcount(pfn)
            and frames.refcount(pfn) == 1
        ):
            self.delete_from_swap_cache(pfn)

    def delete_from_swap_cache(self, pfn: int) -> None:
        """delete_from_swap_cache() + folio_put(): the folio leaves the swap cache (its slot is
        freed if nothing names it) and the cache's reference goes (freeing an unused folio)."""
        self.swap.remove_from_cache(pfn)
        self.swap_owner.pop(pfn, None)
        self.frames.clear_flags(pfn, _SWAPCACHE)
        self.frames.put(pfn)

    def alloc_folio(self, flags: int, noretry: bool = False) -> int:
        """The page allocator's view of a user page: below the low watermark kswapd is woken,
        at the min watermark the allocating task reclaims itself (direct reclaim), and when
        even that leaves nothing above min the OOM killer frees memory; OutOfMemory if nobody
        is left to kill. Reclaim itself allocates from the reserve below min. ``noretry``
        (__GFP_NORETRY, as readahead asks): one round of direct reclaim, never the OOM
        killer."""
        from vmsim.mm import vmscan

        frames = self.frames
        if self.reclaiming:
            return frames.alloc(flags)
        if frames.free_pages <= self.wmark_low and not self.kswapd_wanted:
            self.kswapd_wanted = True
            self.vmstat["kswapd_wake"] += 1
        for _ in range(64):
            if frames.free_pages > self.wmark_min:
                return frames.alloc(flags)
            self.vmstat["allocstall_normal"] += 1
            if vmscan.direct_reclaim(self) and not noretry:
                continue
            if noretry or self.oom_handler is None or not self.oom_handler():
                break
        if frames.free_pages > self.wmark_min:
            return frames.alloc(flags)
        raise OutOfMemory(0, frames.free_pages, frames.total_pages)


VMSTAT_EVENTS = (
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgactivate",
    "pgdeactivate",
    "pgrefill",
    "pgrotated",
    "allocstall_normal",
    "kswapd_wake",
    "pageoutrun",
    "oom_kill",
    "thp_fault_alloc",
    "swap_ra",
    "swap_ra_hit",
    "swpin_zero",
    "swpout_zero",
    "ksm_swpin_copy",
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_anon",
    "pgsteal_file",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "nr_written",
)


# The lines of /proc/vmstat the model keeps, in the kernel's order (vmstat_text[] of 6.18;
# ksm_zero_pages is not one of them: it is in /sys/kernel/mm/ksm).
VMSTAT_ORDER = (
    "nr_free_pages",
    "nr_mlock",
    "nr_inactive_anon",
    "nr_active_anon",
    "nr_inactive_file",
    "nr_active_file",
    "nr_unevictable",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "nr_anon_pages",
    "nr_mapped",
    "nr_file_pages",
    "nr_dirty",
    "nr_shmem",
    "nr_written",
    "nr_page_table_pages",
    "nr_swapcached",
    "pswpin",
    "pswpout",
    "allocstall_normal",
    "pgactivate",
    "pgdeactivate",
    "pgfault",
    "pgmajfault",
    "pgrefill",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgscan_anon",
    "pgscan_file",
    "pgsteal_anon",
    "pgsteal_file",
    "pageoutrun",
    "pgrotated",
    "oom_kill",
    "swap_ra",
    "swap_ra_hit",
    "swpin_zero",
    "swpout_zero",
    "ksm_swpin_copy",
    "cow_ksm",
    "zswpin",
    "zswpout",
    "zswpwb",
)


def watermarks(managed: int) -> tuple[int, int, int]:
    """min/low/high watermarks in pages, as __setup_per_zone_wmarks() sets them for one
    zone: min_free_kbytes = sqrt(lowmem_kbytes * 16) within [128, 262144] kB; low and high
    add max(min/4, managed * watermark_scale_factor (10) / 10000) once and twice."""
    kb = managed * 4
    min_free_kb = min(max(math.isqrt(kb * 16), 128), 262144)
    wmin = min(min_free_kb // 4, max(managed // 8, 1))
    tmp = max(wmin // 4, managed * 10 // 10000)
    return wmin, wmin + tmp, wmin + 2 * tmp


_SWAPCACHE = int(PageFlag.SWAPCACHE)
_MLOCKED = int(PageFlag.MLOCKED)
_ACTIVE = int(PageFlag.ACTIVE)
