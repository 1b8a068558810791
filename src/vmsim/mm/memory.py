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

import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from vmsim.hw.mmu import PagingStructureCache
from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, TlbConfig, TlbHierarchy, flush_tlb_range
from vmsim.phys.frames import FrameAllocator

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
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
        self.mms: weakref.WeakSet[AddressSpace] = weakref.WeakSet()
        self.mlock_count: dict[int, int] = {}  # folio->mlock_count, by pfn
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
