"""get_user_pages() (mm/gup.c): what a page found by follow_page_pte() gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_ACCESSED, PAGE_DIRTY
from vmsim.mm.lru import mark_accessed
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace

__all__ = ["gup_touch"]

_DIRTY = int(PageFlag.DIRTY)


def gup_touch(mm: AddressSpace, addr: int, pfn: int, write: bool) -> None:
    """follow_page_pte() with FOLL_TOUCH: a write dirties the folio unless the PTE or the
    folio is dirty already, and the folio is marked accessed."""
    frames = mm.mem.frames
    if pfn == frames.zero_pfn:
        return
    leaf = mm.pt.get(addr)
    if leaf is not None and leaf.level > 1:
        # follow_huge_pmd() with FOLL_TOUCH: touch_pmd() makes the PMD young (and dirty on a
        # write); the folio is not marked accessed
        e = leaf.entry | PAGE_ACCESSED | (PAGE_DIRTY if write else 0)
        if e != leaf.entry:
            mm.pt.set(addr & -(1 << 21), e, leaf.level)
        return
    if write and not frames.flags(pfn) & _DIRTY:
        leaf = mm.pt.get(addr)
        if leaf is None or not leaf.entry & PAGE_DIRTY:
            frames.set_flags(pfn, _DIRTY)
    mark_accessed(mm.mem, pfn)
