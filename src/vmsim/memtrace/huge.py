"""The huge-page what-ifs of the access-trace engine (``page_size`` "2M", "1G", "thp").

vmsim's fault path maps 4 KiB pages only (it has no THP fault handler and no hugetlb pool), so
the what-if adds one, installed for the run's address space through
``vmsim.mm.access.what_if_faults`` and therefore taken by both engines alike. It mirrors
do_huge_pmd_anonymous_page() (mm/huge_memory.c) for an anonymous private VMA:

* only where the aligned huge page lies wholly inside the VMA and no page table of the smaller
  size exists there yet (once 4 KiB pages are mapped in a block the what-if leaves the block
  to the 4 KiB path, as the kernel does until khugepaged collapses it);
* a read fault on a 2 MiB block maps the huge zero page read-only (use_zero_page, the
  default); a write fault, or a write to the huge zero page, maps a fresh huge page, writable
  and dirty if the VMA is writable (do_huge_zero_wp_pmd(): the zero mapping is flushed with
  one INVLPG of the 2 MiB page, flush_tlb_range() with the PMD stride). 1 GiB pages have no
  zero page: every first fault allocates;
* the leaf is the VMA's page protection with PSE (and ``_PAGE_SPECIAL`` for the zero page),
  like mk_huge_pmd().

Huge frames are numbered from ``HUGE_PFN_BASE`` (above any RAM the machine has) and are not
known to the model's frame allocator: a run never unmaps them (the trace has no munmap), and
the process is not torn down afterwards.
"""

from __future__ import annotations

import weakref
from typing import Any

from vmsim.hw.pte import PAGE_DIRTY, PAGE_PRESENT, PAGE_PSE, PAGE_RW, pfn_pte
from vmsim.hw.tlb import flush_tlb_range
from vmsim.mm.access import what_if_faults
from vmsim.mm.flags import VM_SHARED, VM_WRITE
from vmsim.mm.internal import page_prot
from vmsim.mm.vma import Vma

__all__ = ["HUGE_PFN_BASE", "HugeFaults"]

HUGE_PFN_BASE = 1 << 34  # 64 TiB: above any modelled RAM (ram="1T")
PAGE_SPECIAL = 1 << 9


class HugeFaults:
    """The what-if fault handler of one address space (module docstring)."""

    def __init__(self, mm: Any, cfg: Any) -> None:
        # weak: the hook lives in a WeakKeyDictionary keyed by ``mm``; a strong reference
        # from the value would keep every run's address space alive
        self._mm = weakref.ref(mm)
        self.size: int = cfg.huge_size
        self.level = 2 if self.size == 1 << 21 else 3
        self.next_pfn = HUGE_PFN_BASE
        self.zero_pfn = self._alloc() if self.level == 2 else -1
        self.faults = 0
        what_if_faults[mm] = self.fault

    def _alloc(self) -> int:
        pages = self.size >> 12
        pfn = (self.next_pfn + pages - 1) & -pages
        self.next_pfn = pfn + pages
        return pfn

    def fault(self, vma: Vma, addr: int, access: str) -> str | None:
        """do_huge_pmd_anonymous_page() / do_huge_pmd_wp_page() for the what-if, or None
        when the block is not eligible (the 4 KiB path handles the fault)."""
        if vma.file is not None or vma.flags & VM_SHARED or vma.name is not None:
            return None
        size = self.size
        haddr = addr & -size
        if haddr < vma.start or haddr + size > vma.end:
            return None
        mm = self._mm()
        assert mm is not None
        pt = mm.pt
        m = haddr & pt.va_mask
        level = self.level
        for lv in range(pt.levels, level, -1):  # a larger leaf above: not ours to change
            up = pt.entries[lv].get(m >> pt.shifts[lv], 0)
            if up & PAGE_PRESENT and up & PAGE_PSE:
                return None
        e = pt.entries[level].get(m >> pt.shifts[level], 0)
        if e and not e & PAGE_PSE:
            return None  # a table of smaller pages is there already
        write = access == "write"
        prot = page_prot(vma)
        writable = bool(vma.flags & VM_WRITE)
        if e & PAGE_PRESENT:
            if write and not e & PAGE_RW and writable:
                # the huge zero page (or a read-only huge page): a fresh page replaces it
                pt.set(haddr, self._fresh(prot, writable), level)
                mm.mem.cpu.pwc.flush()
                if mm.pcid >= 0:
                    flush_tlb_range(mm.mem.cpu.tlb, haddr, haddr + size, mm.pcid, stride=size)
                self.faults += 1
                return "thp-cow"
            return None  # spurious or a permission the VMA lacks: the 4 KiB path decides
        if not write and self.zero_pfn >= 0:
            pt.set(haddr, pfn_pte(self.zero_pfn, prot & ~PAGE_RW) | PAGE_PSE | PAGE_SPECIAL, level)
            self.faults += 1
            return "thp-zero"
        pt.set(haddr, self._fresh(prot, writable), level)
        self.faults += 1
        return "thp"

    def _fresh(self, prot: int, writable: bool) -> int:
        entry = pfn_pte(self._alloc(), prot) | PAGE_PSE
        if writable:
            entry |= PAGE_RW | PAGE_DIRTY
        return entry
