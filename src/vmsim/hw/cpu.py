"""The machine's CPU as the mm code sees it: its TLBs, paging-structure caches and PCIDs
(arch/x86/mm/tlb.c).

The model has one CPU: every address space runs on it in turn, and ``switch_to()`` is the
context switch. PCIDs are handed out the way arch/x86/mm/tlb.c does it: each CPU keeps
``TLB_NR_DYN_ASIDS`` (6) slots, an address space that still owns a slot gets its PCID
(ASID + 1) back without a flush, one that lost it takes the next slot round-robin and the
slot's PCID is flushed first (choose_new_asid() with need_flush). A range flush of an address
space that owns a slot invalidates its entries at once (the kernel may defer that to the next
switch; the outcome is the same); one that owns no slot has nothing cached.

The paging-structure caches hold no PCID tag in this model, so they are emptied on every
switch and every flush (INVLPG empties them anyway, SDM 4.10.4.1).

An address space is anything with the two fields below (``MmContext``): hw/ knows nothing of
VMAs or of ``vmsim.mm``.
"""

from __future__ import annotations

import weakref
from typing import Any, Protocol

from vmsim.hw.mmu import PagingStructureCache
from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, SetIndex, TlbConfig, TlbHierarchy, flush_tlb_range

__all__ = ["TLB_NR_DYN_ASIDS", "Cpu", "MmContext"]

TLB_NR_DYN_ASIDS = 6


class MmContext(Protocol):
    """mm_context_t: what the CPU side keeps in an address space."""

    pcid: int  # the PCID it runs with (-1: it owns no ASID slot); kept by ``Cpu``
    # (L1 dTLB 4 KiB sets, their index mask, pcid) while it is current: the fast path of a
    # user access; None otherwise. Kept by ``Cpu``
    fast: tuple[list[dict[int, Any]], int, int] | None


class Cpu:
    """The TLB hierarchy, the paging-structure caches and the PCID slots of the one CPU."""

    def __init__(
        self, tlb_config: TlbConfig = DEFAULT_TLB_CONFIG, stlb_set_index: SetIndex | None = None
    ) -> None:
        self.tlb = TlbHierarchy(
            tlb_config, stlb_set_index
        )  # the TLBs; filled by vmsim.mm.access, flushed here
        self.pwc = PagingStructureCache(strict=True)  # flushed here and by page-table frees
        self.current: MmContext | None = None  # cpu_tlbstate.loaded_mm; kept by switch_to()
        # cpu_tlbstate.ctxs[]: the address space owning each ASID slot (weak: an exited one
        # frees its slot in release()); kept by switch_to() / release()
        self._slots: list[weakref.ref[MmContext] | None] = [None] * TLB_NR_DYN_ASIDS
        self._next_slot = 0  # cpu_tlbstate.next_asid; kept by switch_to()
        self.flush_ceiling = 33  # /sys/kernel/debug/x86/tlb_single_page_flush_ceiling

    # -------------------------------------------------------------- PCIDs
    def _slot_of(self, mm: MmContext) -> int:
        for i, ref in enumerate(self._slots):
            if ref is not None and ref() is mm:
                return i
        return -1

    def pcid_of(self, mm: MmContext) -> int:
        """The PCID ``mm`` runs with now, or -1 if it owns no ASID slot."""
        i = self._slot_of(mm)
        return -1 if i < 0 else i + 1

    def switch_to(self, mm: MmContext) -> int:
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

    def release(self, mm: MmContext) -> None:
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
    def flush_range(self, mm: MmContext, start: int, end: int) -> int:
        """flush_tlb_mm_range(): INVLPG per page up to the ceiling, else the whole PCID.
        Returns the pages invalidated one by one, -1 for a full flush, 0 if ``mm`` has
        nothing cached."""
        self.pwc.flush()
        pcid = self.pcid_of(mm)
        if pcid < 0 or end <= start:
            return 0
        return flush_tlb_range(self.tlb, start, end, pcid, ceiling=self.flush_ceiling)

    def flush_mm(self, mm: MmContext) -> None:
        """flush_tlb_mm(): everything cached for ``mm``."""
        self.pwc.flush()
        pcid = self.pcid_of(mm)
        if pcid >= 0:
            self.tlb.flush_pcid(pcid)
            self.tlb.nr_tlb_local_flush_all += 1
