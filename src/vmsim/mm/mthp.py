"""Multi-size anonymous THP (mTHP) on the 4 KiB fault path, and the per-size statistics of
/sys/kernel/mm/transparent_hugepage/hugepages-<size>kB/stats (Linux 6.18).

The fault (mm/memory.c: do_anonymous_page() -> alloc_anon_folio()): a write fault on an
empty PTE of a private anonymous VMA asks for the orders below PMD_ORDER that the per-size
settings allow (thp_vma_allowable_orders(): ``always`` sizes, ``madvise`` sizes in a
VM_HUGEPAGE VMA, ``inherit`` sizes when the top-level ``enabled`` is always, or madvise in a
VM_HUGEPAGE VMA), keeps those whose naturally aligned range lies inside the VMA
(thp_vma_suitable_orders(): no pgoff test for anonymous memory) and whose PTEs are all empty
(pte_range_none()), and allocates the highest of them, one order lower each time the buddy
allocator has no block (anon_fault_fallback of that size); order 0 is the last resort. The
folio is mapped by one PTE per page (set_ptes()): one reference and one page mapcount each,
young, dirty and writable in a VM_WRITE VMA, exclusive to the mm. A read fault still maps
the shared zero page (do_anonymous_page() uses it before alloc_anon_folio() is reached).

On x86-64 such a folio is nothing special to the hardware (no contiguous-PTE bit: 4 KiB TLB
entries), to smaps (AnonHugePages counts PMD mappings only: smaps_pmd_entry()) and to the
NR_ANON_THPS counter; /proc/kpageflags shows KPF_THP on it (stable_page_flags(): a large
rmappable folio) with COMPOUND_HEAD/TAIL. Fork, copy-on-write, zap, split and the deferred
split queue work on it as on a PMD-mapped THP whose PMD has been split (``vmsim.mm.memory``,
``vmsim.mm.huge_memory``).

The stats (``count_mthp_stat()``: mthp_stats[order][item]) are the model's API
``Machine.thp_size_stats("64kB")``; nr_anon and nr_anon_partially_mapped are read from the
folios themselves.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE
from vmsim.hw.pte import PAGE_DIRTY, PAGE_RW, pfn_pte
from vmsim.mm.flags import (
    VM_HUGEPAGE,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MIXEDMAP,
    VM_NOHUGEPAGE,
    VM_PFNMAP,
    VM_SHARED,
    VM_WRITE,
)
from vmsim.mm.internal import ANON_FLAGS, page_prot
from vmsim.mm.mlock import mlock_folio
from vmsim.mm.rmap import rmap_add
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.huge_memory import ThpSettings
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

__all__ = [
    "MTHP_STAT_ITEMS",
    "PMD_ORDER",
    "alloc_anon_folio",
    "alloc_order",
    "allowable_orders",
    "count_mthp_stat",
    "do_anonymous_mthp",
    "size_stats",
    "smaps_eligible",
    "suitable_orders",
]

PMD_ORDER = 9
_VM_SPECIAL = VM_IO | VM_PFNMAP | VM_MIXEDMAP | VM_HUGETLB
_ANON = int(PageFlag.ANON)
_HUGE = int(PageFlag.HUGE)

# hugepages-<size>kB/stats/, in the order of 6.18's stats_attrs[] (mm/huge_memory.c). The
# reference machine's kernel (6.18.44-fc) has one more file, anon_fault_declined, which
# upstream 6.18 does not have: its source is not public, so the model does not offer it rather
# than answer a figure it cannot compute.
MTHP_STAT_ITEMS = (
    "anon_fault_alloc",
    "anon_fault_fallback",
    "anon_fault_fallback_charge",
    "zswpout",
    "swpin",
    "swpin_fallback",
    "swpin_fallback_charge",
    "swpout",
    "swpout_fallback",
    "shmem_alloc",
    "shmem_fallback",
    "shmem_fallback_charge",
    "split",
    "split_failed",
    "split_deferred",
    "nr_anon",
    "nr_anon_partially_mapped",
)
_COUNTED = frozenset(MTHP_STAT_ITEMS[:15])


def count_mthp_stat(mem: Kernel, order: int, item: str, n: int = 1) -> None:
    """count_mthp_stat(): orders 1..PMD_ORDER only (an order-0 folio counts nothing)."""
    if order <= 0 or order > PMD_ORDER:
        return
    assert item in _COUNTED, f"no mTHP stat {item!r}"
    stats = mem.thp.mthp_stats
    stats[(order, item)] = stats.get((order, item), 0) + n


def size_stats(mem: Kernel, size: str | int) -> dict[str, int]:
    """hugepages-<size>kB/stats/*: ``size`` as "64kB" or 64 (kB), 8 .. 2048."""
    text = str(size)
    kb_text = text[:-2] if text.endswith("kB") else text
    if not kb_text.isdigit():
        raise ValueError(f"mTHP size must be like '64kB', not {size!r}")
    kb = int(kb_text)
    order = (kb // 4).bit_length() - 1
    if kb < 8 or kb > 2048 or 4 << order != kb:
        raise ValueError(f"no hugepages-{kb}kB: sizes are 8kB .. 2048kB, powers of two")
    stats = mem.thp.mthp_stats
    out = {item: stats.get((order, item), 0) for item in MTHP_STAT_ITEMS}
    frames = mem.frames
    nr_anon = 0
    for head in frames.allocated():
        if (
            frames.order(head) == order
            and frames.flags(head) & _ANON
            and not (frames.flags(head) & _HUGE)
        ):
            nr_anon += 1
    out["nr_anon"] = nr_anon
    out["nr_anon_partially_mapped"] = sum(
        1
        for head, partial in mem.thp.deferred.items()
        if partial and frames.is_allocated(head) and frames.order(head) == order
    )
    return out


# ------------------------------------------------------------------- order selection
@functools.cache
def _mode_masks(settings: ThpSettings) -> tuple[int, int]:
    """The order masks thp_vma_allowable_orders() builds from sysfs for an anonymous VMA
    without and with VM_HUGEPAGE: huge_anon_orders_always, plus _madvise with VM_HUGEPAGE,
    plus _inherit when the top-level mode says yes for the VMA (always; madvise with
    VM_HUGEPAGE). Settings are frozen: computed once per settings value."""
    glob = settings.enabled
    masks = []
    for hugepage in (False, True):
        inherit = glob == "always" or (hugepage and glob == "madvise")
        mask = 0
        for kb, mode in settings.mthp:
            order = (kb // 4).bit_length() - 1
            if (
                mode == "always"
                or (mode == "madvise" and hugepage)
                or (mode == "inherit" and inherit)
            ):
                mask |= 1 << order
        masks.append(mask)
    return masks[0], masks[1]


def _mode_orders(settings: ThpSettings, vm_flags: int) -> int:
    return _mode_masks(settings)[1 if vm_flags & VM_HUGEPAGE else 0]


def allowable_orders(mm: AddressSpace, vma: Vma, orders: int) -> int:
    """thp_vma_allowable_orders(vma, vm_flags, TVA_PAGEFAULT, orders) for private anonymous
    memory: the sysfs mask, then __thp_vma_allowable_orders()'s VMA tests
    (vma_thp_disabled(): VM_NOHUGEPAGE; anonymous VMAs only)."""
    flags = vma.flags
    orders &= _mode_orders(mm.mem.thp.settings, flags)
    if not orders or vma.file is not None or flags & (VM_SHARED | _VM_SPECIAL | VM_NOHUGEPAGE):
        return 0
    return orders


def _suitable(vma: Vma, addr: int, order: int) -> bool:
    """thp_vma_suitable_order() for an anonymous VMA: the aligned range inside it."""
    size = PAGE_SIZE << order
    start = addr & -size
    return start >= vma.start and start + size <= vma.end


def suitable_orders(vma: Vma, addr: int, orders: int) -> int:
    """thp_vma_suitable_orders(): drop the highest orders until one fits (all lower ones
    then fit too)."""
    while orders:
        order = orders.bit_length() - 1
        if _suitable(vma, addr, order):
            break
        orders &= ~(1 << order)
    return orders


def smaps_eligible(mm: AddressSpace, vma: Vma) -> bool:
    """THPeligible in smaps: thp_vma_allowable_orders(vma, TVA_SMAPS, THP_ORDERS_ALL) for a
    private anonymous VMA: some allowed order (2..PMD_ORDER) has an aligned block that fits
    in the VMA below its end (__thp_vma_allowable_orders()'s !in_pf test)."""
    orders = allowable_orders(mm, vma, ((1 << (PMD_ORDER + 1)) - 1) & ~3)
    while orders:
        order = orders.bit_length() - 1
        if _suitable(vma, vma.end - (PAGE_SIZE << order), order):
            return True
        orders &= ~(1 << order)
    return False


def _pte_range_none(mm: AddressSpace, start: int, nr: int) -> bool:
    """pte_range_none(): no entry at all (present, swap, marker) in the ``nr`` PTEs."""
    if mm.guards and any(mm.guards.irange(start >> PAGE_SHIFT, (start >> PAGE_SHIFT) + nr - 1)):
        return False
    return not any(m.entry for m in mm.pt.iter_leaves(start, start + nr * PAGE_SIZE))


def alloc_order(mm: AddressSpace, order: int, gfp: int) -> int | None:
    """vma_alloc_folio(gfp, order), ``gfp`` being vma_thp_gfp_mask() of the VMA as
    alloc_anon_folio() and alloc_swap_folio() pass it: the page allocator's slow path for the
    order (``Kernel.alloc_costly``: kswapd, direct compaction and reclaim as the mask and the
    defrag setting allow), or None. The non-costly orders (16 and 32 kB) get the same passes
    as the costly ones: their retry loop (should_reclaim_retry()) is not modelled."""
    return mm.mem.alloc_costly(ANON_FLAGS, order, gfp)


def alloc_anon_folio(mm: AddressSpace, vma: Vma, addr: int, gfp: int) -> tuple[int, int] | None:
    """alloc_anon_folio() without its order-0 fallback: (head pfn, order) of a new large
    folio for the fault at ``addr``, or None when no mTHP order applies or every allowed
    order failed (the caller then allocates one page: folio_prealloc())."""
    orders = allowable_orders(mm, vma, (1 << PMD_ORDER) - 1)
    orders = suitable_orders(vma, addr, orders)
    if not orders:
        return None
    # the highest order whose aligned range is all pte_none (the lower ones then are too)
    while orders:
        order = orders.bit_length() - 1
        nr = 1 << order
        if _pte_range_none(mm, addr & -(nr * PAGE_SIZE), nr):
            break
        orders &= ~(1 << order)
    mem = mm.mem
    while orders:
        order = orders.bit_length() - 1
        head = alloc_order(mm, order, gfp)
        if head is not None:
            return head, order
        count_mthp_stat(mem, order, "anon_fault_fallback")
        orders &= ~(1 << order)
    return None


def do_anonymous_mthp(mm: AddressSpace, vma: Vma, addr: int, gfp: int) -> bool:
    """do_anonymous_page() for a write fault, the large-folio part: allocate with
    alloc_anon_folio() and map every page of the folio (set_ptes(): young, dirty and
    writable in a VM_WRITE VMA; folio_ref_add(nr - 1): a reference per PTE;
    folio_add_new_anon_rmap(); folio_add_lru_vma()). Returns False when the 4 KiB path
    must run (no mTHP order applies, or all failed). The caller prepared the anon_vma and
    passes vma_thp_gfp_mask() of the VMA."""
    got = alloc_anon_folio(mm, vma, addr, gfp)
    if got is None:
        return False
    head, order = got
    mem = mm.mem
    frames = mem.frames
    nr = 1 << order
    start = addr & -(nr * PAGE_SIZE)
    prot = page_prot(vma)
    for _ in range(nr - 1):  # folio_ref_add(folio, nr_pages - 1)
        frames.get(head)
    mem.node.lru.add(head)
    for i in range(nr):
        pfn = head + i
        a = start + i * PAGE_SIZE
        entry = pfn_pte(pfn, prot)
        if vma.flags & VM_WRITE:
            entry |= PAGE_RW | PAGE_DIRTY
        frames.map(pfn)
        rmap_add(mem, pfn, mm, a)
        mm.pt.set(a, entry)
    if vma.flags & VM_LOCKED:  # folio_add_lru_vma() -> mlock_new_folio()
        mlock_folio(mm, head)
    count_mthp_stat(mem, order, "anon_fault_alloc")
    return True
