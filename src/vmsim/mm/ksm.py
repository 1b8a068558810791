"""Kernel samepage merging (mm/ksm.c): ksmd, the stable and unstable trees, COW on write.

Address spaces join with MADV_MERGEABLE. Each ``scan()`` is one wake-up of ksmd: it looks at
``pages_to_scan`` pages of the mergeable VMAs, in address order, going round all of them (a
full scan, after which the unstable tree is emptied). For a page (cmp_and_merge_page()):

* already a KSM page: nothing to do;
* all zeros and ``use_zero_pages``: its PTE maps the shared zero page instead;
* its contents are in the stable tree: the PTE now maps that KSM page, read-only, and the
  page is freed (pages_sharing);
* its checksum changed since ksmd last saw it: it is volatile, left alone this time;
* the unstable tree holds another page with the same contents: that page becomes a KSM page
  (write-protected, moved to the stable tree) and this one is merged into it;
* otherwise it goes into the unstable tree (pages_unshared).

Trees are keyed by the page contents themselves (the kernel compares contents with
memcmp() while walking its rbtrees, so the result is the same). A write to a KSM page
faults and copies (do_wp_page() never reuses a KSM page); a KSM page mapped by nobody is
freed and leaves the stable tree.

Reclaim swaps KSM pages out like any anonymous page (rmap_walk_ksm() finds every mapping):
each PTE gets the same swap entry, and the stable node goes with the freed folio. Read back,
the page belongs to the first mapping that faults; every other one gets a copy
(ksm_might_need_to_copy()), and ksmd may merge them again.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_ACCESSED, PAGE_RW, PAGE_SPECIAL, pfn_pte
from vmsim.mm.flags import VM_MERGEABLE
from vmsim.mm.internal import entry_pfn, page_prot, present
from vmsim.mm.memory import handle_mm_fault
from vmsim.mm.rmap import rmap_add, rmap_remove
from vmsim.mm.swap_state import free_swap_cache
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel

PAGE_SIZE = 4096
ZERO = bytes(PAGE_SIZE)
_ANON = int(PageFlag.ANON)
_KSM = int(PageFlag.KSM)
_HEAD = int(PageFlag.HEAD)
_MLOCKED = int(PageFlag.MLOCKED)


class Ksm:
    """ksmd and its counters (/sys/kernel/mm/ksm)."""

    def __init__(self, mem: Kernel, pages_to_scan: int = 100, use_zero_pages: bool = False):
        self.mem = mem  # the machine's memory-management globals
        self.pages_to_scan = pages_to_scan  # /sys/kernel/mm/ksm/pages_to_scan
        self.use_zero_pages = use_zero_pages  # /sys/kernel/mm/ksm/use_zero_pages
        self.mms: list[AddressSpace] = []  # ksm_mm_head: registered by register() (madvise)
        self.stable: dict[bytes, int] = {}  # the stable tree: contents -> KSM pfn
        self.stable_of: dict[int, bytes] = {}  # its inverse (stable_node of a folio); forget()
        # the unstable tree: contents -> (mm, address, pfn) of a candidate seen this scan
        self.unstable: dict[bytes, tuple[AddressSpace, int, int]] = {}
        self.checksums: dict[tuple[int, int], int] = {}  # rmap_item->oldchecksum, by (mm, addr)
        self.queue: list[tuple[AddressSpace, int]] = []  # what is left of this full scan
        self.full_scans = 0  # /sys/kernel/mm/ksm/full_scans
        self.ksm_zero_pages = 0  # /sys/kernel/mm/ksm/ksm_zero_pages
        self.pages_scanned = 0  # /sys/kernel/mm/ksm/pages_scanned

    # ------------------------------------------------------------------ bookkeeping
    def register(self, mm: AddressSpace) -> None:
        """__ksm_enter(): the address space has mergeable VMAs."""
        if all(m is not mm for m in self.mms):
            self.mms.append(mm)

    def forget(self, pfn: int) -> None:
        """A KSM page was freed: its stable node goes."""
        data = self.stable_of.pop(pfn, None)
        if data is not None and self.stable.get(data) == pfn:
            del self.stable[data]

    def _refill(self) -> None:
        """Start a full scan: every present anonymous page of every mergeable VMA."""
        self.queue = []
        self.mms = [mm for mm in self.mms if mm.alive]
        for mm in self.mms:
            if not mm.pt_used:
                continue
            for vma in mm.tree:
                if not vma.flags & VM_MERGEABLE or vma.file is not None:
                    continue
                for m in mm.pt.iter_present(vma.start, vma.end):
                    if m.level == 1:  # the model's KSM leaves THPs alone
                        self.queue.append((mm, m.vaddr))
        self.queue.reverse()  # pop() from the end: address order

    # ------------------------------------------------------------------------ scan
    def scan(self) -> None:
        """One ksmd wake-up: up to pages_to_scan pages."""
        todo = self.pages_to_scan
        while todo > 0:
            if not self.queue:
                if self.pages_scanned or self.unstable:
                    self.full_scans += 1
                    self.unstable.clear()
                self._refill()
                if not self.queue:
                    return
            mm, va = self.queue.pop()
            todo -= 1
            self.pages_scanned += 1
            self._cmp_and_merge(mm, va)

    def _page(self, mm: AddressSpace, va: int) -> int | None:
        """The anonymous, unpinned, unlocked page mapped at ``va``, or None."""
        if not mm.alive:
            return None
        vma = mm.tree.lookup(va)
        if vma is None or not vma.flags & VM_MERGEABLE:
            return None
        leaf = mm.pt.get(va)
        if leaf is None or not present(leaf.entry):
            return None
        pfn = entry_pfn(leaf.entry)
        frames = self.mem.frames
        if pfn == frames.zero_pfn:
            return None
        flags = frames.flags(pfn)
        if not flags & _ANON or flags & _MLOCKED or flags & _HEAD or frames.order(pfn):
            return None
        if frames.refcount(pfn) != frames.mapcount(pfn) + (
            1 if pfn in self.mem.swap.entry_of else 0
        ):
            return None  # pinned or in use
        return pfn

    def _cmp_and_merge(self, mm: AddressSpace, va: int) -> None:
        pfn = self._page(mm, va)
        if pfn is None:
            return
        frames = self.mem.frames
        if frames.flags(pfn) & _KSM:
            return
        data = frames.read(pfn)
        if self.use_zero_pages and data == ZERO:
            self._replace(mm, va, pfn, frames.zero_pfn)
            self.ksm_zero_pages += 1
            return
        kpfn = self.stable.get(data)
        if kpfn is not None and frames.is_allocated(kpfn):
            self._replace(mm, va, pfn, kpfn)
            return
        key = (mm.serial, va)
        checksum = zlib.crc32(data)
        if self.checksums.get(key) != checksum:
            self.checksums[key] = checksum
            return  # volatile (or seen for the first time)
        other = self.unstable.get(data)
        if other is not None:
            omm, ova, opfn = other
            if self._page(omm, ova) == opfn and opfn != pfn and frames.read(opfn) == data:
                del self.unstable[data]
                self._make_ksm(omm, ova, opfn, data)
                self._replace(mm, va, pfn, opfn)
                return
        self.unstable[data] = (mm, va, pfn)

    def _make_ksm(self, mm: AddressSpace, va: int, pfn: int, data: bytes) -> None:
        """stable_tree_insert() after try_to_merge_two_pages(): the page becomes KSM, every
        PTE mapping it read-only."""
        frames = self.mem.frames
        frames.set_flags(pfn, _KSM)
        for omm, ova in list(self.mem.rmap.get(pfn, ())):
            leaf = omm.pt.get(ova)
            if leaf is not None and leaf.entry & PAGE_RW:
                omm.pt.set(ova, leaf.entry & ~PAGE_RW)
                self.mem.cpu.flush_range(omm, ova, ova + PAGE_SIZE)
        self.stable[data] = pfn
        self.stable_of[pfn] = data

    def _replace(self, mm: AddressSpace, va: int, old: int, new: int) -> None:
        """replace_page(): the PTE at ``va`` maps ``new`` read-only; ``old`` is released."""
        frames = self.mem.frames
        leaf = mm.pt.get(va)
        assert leaf is not None
        vma = mm.tree.lookup(va)
        assert vma is not None
        entry = pfn_pte(new, page_prot(vma) & ~PAGE_RW) | PAGE_ACCESSED
        if new == frames.zero_pfn:
            entry |= PAGE_SPECIAL
        else:
            frames.get(new)
            frames.map(new)
            rmap_add(self.mem, new, mm, va)
        mm.pt.set(va, entry)
        self.mem.cpu.flush_range(mm, va, va + PAGE_SIZE)
        frames.unmap(old)
        rmap_remove(self.mem, old, mm, va)
        free_swap_cache(self.mem, old)  # replace_page(): folio_free_swap() if unmapped
        frames.put(old)

    def unmerge(self, mm: AddressSpace, start: int, end: int) -> None:
        """MADV_UNMERGEABLE -> break_ksm(): every KSM page mapped in the range is copied."""
        if not mm.pt_used or start >= end:
            return
        frames = self.mem.frames
        for m in list(mm.pt.iter_present(start, end)):
            pfn = entry_pfn(m.entry)
            if pfn != frames.zero_pfn and frames.flags(pfn) & _KSM:
                vma = mm.tree.lookup(m.vaddr)
                assert vma is not None
                handle_mm_fault(mm, vma, m.vaddr, True, remote=True)

    def stats(self) -> dict[str, int]:
        """pages_shared (KSM pages), pages_sharing (further mappings of them),
        pages_unshared (unstable tree), pages_volatile (tracked pages in neither),
        full_scans, ksm_zero_pages."""
        frames = self.mem.frames
        shared = 0
        sharing = 0
        for pfn in self.stable_of:
            if frames.is_allocated(pfn):
                shared += 1
                sharing += max(frames.mapcount(pfn) - 1, 0)
        unshared = len(self.unstable)
        volatile = max(len(self.checksums) - shared - sharing - unshared, 0)
        return {
            "pages_shared": shared,
            "pages_sharing": sharing,
            "pages_unshared": unshared,
            "pages_volatile": volatile,
            "full_scans": self.full_scans,
            "ksm_zero_pages": self.ksm_zero_pages,
            "pages_to_scan": self.pages_to_scan,
            "use_zero_pages": int(self.use_zero_pages),
        }


__all__ = [
    "PAGE_SIZE",
    "ZERO",
    "Ksm",
]
