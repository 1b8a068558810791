"""The reverse map (mm/rmap.c): from a folio to every PTE that maps it.

Linux finds the PTEs of a folio through its anon_vma chain or its file's i_mmap tree and the
folio's index; the model keeps the answer directly: ``Kernel.rmap`` maps a pfn to the
(address space, address) pairs of the PTEs mapping it, in the order they were added (a dict,
not a set: a set of address spaces iterates in id() order, which differs from run to run,
and an rmap walk that stops early must not). Every function that installs or clears a
present PTE of a counted folio keeps it in step through ``rmap_add()`` / ``rmap_remove()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SIZE
from vmsim.hw.pte import PAGE_DIRTY
from vmsim.mm.flags import VM_LOCKED
from vmsim.mm.internal import entry_pfn
from vmsim.mm.mlock import mlock_folio
from vmsim.mm.swapops import SwpEntry, swp_entry_to_pte
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

__all__ = ["anon_exclusive", "anon_owner", "map_page", "rmap_add", "rmap_remove", "try_to_unmap"]

_ANON = int(PageFlag.ANON)
_DIRTY = int(PageFlag.DIRTY)
_KSM = int(PageFlag.KSM)
_SWAPBACKED = int(PageFlag.SWAPBACKED)


def rmap_add(mem: Kernel, pfn: int, mm: AddressSpace, addr: int) -> None:
    """folio_add_*_rmap_pte(): ``addr`` of ``mm`` maps ``pfn`` now."""
    s = mem.rmap.get(pfn)
    if s is None:
        mem.rmap[pfn] = {(mm, addr): None}
    else:
        s[(mm, addr)] = None


def map_page(mm: AddressSpace, vma: Vma, addr: int, pfn: int, entry: int) -> None:
    """set_pte_range() for one page: install ``entry`` for frame ``pfn`` at ``addr``, taking
    a mapping reference and adding it to the reverse map (folio_add_*_rmap_pte(), which
    mlocks a small folio in a VM_LOCKED VMA: mlock_vma_folio())."""
    mem = mm.mem
    mem.frames.map(pfn)
    rmap_add(mem, pfn, mm, addr)
    # __folio_add_anon_rmap(): a large folio is not mlocked by mapping some of its pages
    # (mlock_pte_range() does it once every page is mapped in the locked range)
    if vma.flags & VM_LOCKED and not mem.frames.order(mem.frames.head(pfn)):
        mlock_folio(mm, pfn)
    mm.pt.set(addr, entry)


def rmap_remove(mem: Kernel, pfn: int, mm: AddressSpace, addr: int) -> None:
    """folio_remove_rmap_pte(): ``addr`` of ``mm`` maps ``pfn`` no more."""
    s = mem.rmap.get(pfn)
    if s is not None:
        s.pop((mm, addr), None)
        if not s:
            del mem.rmap[pfn]


def anon_exclusive(mem: Kernel, pfn: int, mm: AddressSpace) -> bool:
    """Whether the anonymous page ``pfn`` may be written through ``mm`` without a copy:
    nobody else holds its folio (refcount 1: the one mapping), or, in a large folio, every
    reference is a mapping and every mapping is in ``mm`` (PageAnonExclusive after a PMD
    split, or wp_can_reuse_anon_folio()'s large-folio test: folio_large_mapcount() ==
    folio_ref_count() and not folio_maybe_mapped_shared())."""
    frames = mem.frames
    if frames.refcount(pfn) == 1:
        return True
    head = frames.head(pfn)
    order = frames.order(head)
    if not order or frames.flags(head) & _KSM or frames.refcount(head) != frames.mapcount(head):
        return False
    rmap = mem.rmap
    for p in range(head, head + (1 << order)):
        for owner, _va in rmap.get(p, ()):
            if owner is not mm:
                return False
    return True


def anon_owner(vma: Vma, addr: int) -> tuple[int, int]:
    """(anon_vma root, linear page index): where an anonymous folio mapped at ``addr`` in
    ``vma`` belongs (folio->mapping, folio->index)."""
    assert vma.anon_vma is not None
    return vma.anon_vma.root, vma.pgoff_at(addr)


def try_to_unmap(mem: Kernel, pfn: int, to: SwpEntry | None) -> bool:
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
                mem.node.lru.update(pfn)
                return False
            frames.set_flags(pfn, _DIRTY)
        if to is not None:
            mem.swap.dup(to)
            mm.pt.set(va, swp_entry_to_pte(to, exclusive))
        else:
            mm.pt.set(va, 0)
        frames.unmap(pfn)
        rmap_remove(mem, pfn, mm, va)
        frames.put(pfn)
        mem.cpu.flush_range(mm, va, va + PAGE_SIZE)
    return True
