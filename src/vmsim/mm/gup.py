"""get_user_pages() (mm/gup.c): what a page found by follow_page_pte() gets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.hw.pte import PAGE_DIRTY
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
    if write and not frames.flags(pfn) & _DIRTY:
        leaf = mm.pt.get(addr)
        if leaf is None or not leaf.entry & PAGE_DIRTY:
            frames.set_flags(pfn, _DIRTY)
    mark_accessed(mm.mem, pfn)
