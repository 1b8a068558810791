"""/proc/kpageflags (fs/proc/page.c): the flags of one frame as stable_page_flags() gives them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel

_ANON = int(PageFlag.ANON)
_LRU_FLAG = int(PageFlag.LRU)
_HUGE_FLAG = int(PageFlag.HUGE)

# /proc/kpageflags bits (include/uapi/linux/kernel-page-flags.h, and the kernel-internal
# KPF_MLOCKED); PageFlag already uses these bit numbers for the flags it copies
KPF_MMAP = 1 << 11
KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16
KPF_HUGE = 1 << 17
KPF_NOPAGE = 1 << 20
KPF_THP = 1 << 22
KPF_ZERO_PAGE = 1 << 24
KPF_BUDDY = 1 << 10
KPF_RESERVED = 1 << 32
_KPF_COPIED = int(
    PageFlag.LOCKED
    | PageFlag.REFERENCED
    | PageFlag.UPTODATE
    | PageFlag.DIRTY
    | PageFlag.LRU
    | PageFlag.ACTIVE
    | PageFlag.WRITEBACK
    | PageFlag.RECLAIM
    | PageFlag.ANON
    | PageFlag.SWAPCACHE
    | PageFlag.SWAPBACKED
    | PageFlag.UNEVICTABLE
    | PageFlag.KSM
    | PageFlag.PAGETABLE
    | PageFlag.MLOCKED
    | PageFlag.HUGE
)


def kpageflags(mem: Kernel, pfn: int) -> int:
    """/proc/kpageflags: stable_page_flags() of frame ``pfn`` (fs/proc/page.c). The folio's
    flags for every page of it; KPF_MMAP while the folio is mapped (folio_mapped());
    COMPOUND_HEAD / COMPOUND_TAIL, and THP for a large anonymous folio or the huge zero
    page (with ZERO_PAGE), HUGE for a hugetlb folio; BUDDY for a free frame; NOPAGE past the end of RAM. PG_anon_exclusive
    (KPF_OWNER_2, bit 34) is not modelled."""
    frames = mem.frames
    if not 0 <= pfn < frames.nr_pages:
        return KPF_NOPAGE
    if pfn == frames.zero_pfn:
        return KPF_ZERO_PAGE | KPF_RESERVED
    if not frames.is_allocated(pfn):
        return KPF_BUDDY
    head = frames.head(pfn)
    flags = int(frames.flags(head))
    u = flags & _KPF_COPIED
    if frames.mapcount(head):
        u |= KPF_MMAP
    if frames.order(head):
        u |= KPF_COMPOUND_HEAD if pfn == head else KPF_COMPOUND_TAIL
        if head == mem.thp.huge_zero_pfn:
            u |= KPF_THP | KPF_ZERO_PAGE
        elif flags & (_ANON | _LRU_FLAG) and not flags & _HUGE_FLAG:  # hugetlb: KPF_HUGE
            u |= KPF_THP
    return u


__all__ = [
    "KPF_BUDDY",
    "KPF_COMPOUND_HEAD",
    "KPF_COMPOUND_TAIL",
    "KPF_HUGE",
    "KPF_MMAP",
    "KPF_NOPAGE",
    "KPF_RESERVED",
    "KPF_THP",
    "KPF_ZERO_PAGE",
    "kpageflags",
]
