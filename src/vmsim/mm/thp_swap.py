"""Swapping a large anonymous folio out whole (Linux 6.18, CONFIG_THP_SWAP): the part of
shrink_folio_list() (mm/vmscan.c) from folio_alloc_swap() to the folio being freed.

* folio_alloc_swap() asks for 2**order slots of one swap cluster (``SwapSpace.alloc_folio``);
  when there are none the caller splits the folio and swaps its pages one by one, counting
  thp_swpout_fallback (PMD-sized folios) and the size's swpout_fallback;
* add_to_swap_cache(): the folio enters the swap cache whole, one slot and one reference per
  page (meminfo SwapCached counts its pages), PG_swapcache and dirty;
* try_to_unmap(TTU_SPLIT_HUGE_PMD | TTU_SYNC): a PMD mapping is split into PTEs first
  (thp_split_pmd), then every PTE becomes the swap entry of its page's slot, one PTE at a
  time (try_to_unmap_one() does not batch swap-backed folios): the folio is partly mapped
  on the way, but deferred_split_folio() leaves a swap-cache folio alone (no
  thp_deferred_split_page, no split_deferred);
* pageout() -> swap_writeout(): all zeros -> the zeromap (swpout_zero by pages); else
  zswap_store() of every page (zswpout, and the size's zswpout); else __swap_writepage()
  (count_swpout_vm_event(): thp_swpout for a PMD-sized folio, the size's swpout, pswpout by
  pages);
* __remove_mapping(): the clean folio leaves the swap cache (a workingset shadow per slot)
  and is freed.

Swap-in is per page (do_swap_page() reads the faulting page and its readahead window into
order-0 folios), except on a SWP_SYNCHRONOUS_IO device (zram) when the faulting slot has one
user: there alloc_swap_folio() may allocate an mTHP (``swapin_mthp()``), never a PMD-sized
folio (orders below PMD_ORDER only), and never once zswap was enabled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE
from vmsim.hw.pte import PAGE_DIRTY, PAGE_PSE, PAGE_RW, PAGE_SWP_EXCLUSIVE, pfn_pte
from vmsim.mm import huge_memory, mthp, workingset
from vmsim.mm.flags import VM_WRITE
from vmsim.mm.internal import page_prot, present
from vmsim.mm.mthp import count_mthp_stat
from vmsim.mm.rmap import anon_owner, rmap_add, rmap_remove
from vmsim.mm.swapops import SwpEntry, pte_to_swp_entry, swp_entry_to_pte
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.core import AddressSpace
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Vma

__all__ = ["swap_out_folio", "swapin_mthp"]

_DIRTY = int(PageFlag.DIRTY)
_SWAPCACHE = int(PageFlag.SWAPCACHE)
_HPAGE_PMD_ORDER = 9


def _owner(mem: Kernel, head: int) -> tuple[int, int] | None:
    """folio->mapping and folio->index of the head page (anon_vma root, page index)."""
    for mm, va in mem.rmap.get(head, ()):
        vma = mm.tree.lookup(va)
        if vma is not None and vma.anon_vma is not None:
            return anon_owner(vma, va)
    return None


def swap_out_folio(mem: Kernel, head: int) -> str | None:
    """Swap the large anonymous folio ``head`` out whole. Returns "freed", "activate" (the
    write failed: the folio stays in the swap cache, unmapped) or None when
    folio_alloc_swap() found no cluster (the caller falls back to a split)."""
    frames = mem.frames
    swap = mem.swap
    order = frames.order(head)
    nr = 1 << order
    if head in swap.entry_of:
        # already in the swap cache (an earlier write failed): unmap what was faulted back
        # in and write again, if the folio still holds all its slots
        cached = [swap.entry_of.get(head + i) for i in range(nr)]
        if any(k is None for k in cached):
            return "activate"
        keys = [k for k in cached if k is not None]
    else:
        got = swap.alloc_folio(order)
        if got is None:
            return None
        keys = got
        owner = _owner(mem, head)
        for i, key in enumerate(keys):
            swap.add_to_cache(key, head + i)
            frames.get(head)  # the swap cache's reference for this page
            if owner is not None:
                mem.swap_owner[head + i] = (owner[0], owner[1] + i)
        frames.set_flags(head, _SWAPCACHE | _DIRTY)
    # try_to_unmap(): TTU_SPLIT_HUGE_PMD first
    for mm, va in list(mem.rmap.get(head, ())):
        e = huge_memory.pmd_entry(mm, va)
        if not va & (PMD_SIZE - 1) and e & PAGE_PSE:
            huge_memory.split_huge_pmd(mm, None, va)
    for i, key in enumerate(keys):
        pfn = head + i
        # PageAnonExclusive, kept in the swap PTE: the page mapped once
        exclusive = frames.page_mapcount(pfn) == 1 and not swap.count(key)
        for mm, va in list(mem.rmap.get(pfn, ())):
            leaf = mm.pt.get(va)
            assert leaf is not None, "rmap out of step"
            if leaf.entry & PAGE_DIRTY:
                frames.set_flags(head, _DIRTY)
            swap.dup(key)
            mm.pt.set(va, swp_entry_to_pte(key, exclusive))
            frames.unmap(pfn)
            rmap_remove(mem, pfn, mm, va)
            frames.put(pfn)
            mem.cpu.flush_range(mm, va, va + PAGE_SIZE)
            huge_memory.note_pte_unmapped(mem, pfn)
    where = swap.write_folio(keys, [frames.read(head + i) for i in range(nr)])
    if where == "failed":
        return "activate"
    if where == "device":  # count_swpout_vm_event()
        if order >= _HPAGE_PMD_ORDER:
            mem.vmstat["thp_swpout"] += 1
        count_mthp_stat(mem, order, "swpout")
    elif where == "zswap":
        count_mthp_stat(mem, order, "zswpout")
    mem.node.nr_pageout += nr
    frames.clear_flags(head, _DIRTY)
    shadow = workingset.eviction(mem, head)
    for key in keys:
        swap.shadows[key] = shadow
    # __remove_mapping() -> __delete_from_swap_cache(): the cache lets go, the folio is freed
    for i in range(nr):
        swap.remove_from_cache(head + i)
        mem.swap_owner.pop(head + i, None)
    frames.clear_flags(head, _SWAPCACHE)
    for _ in range(nr):
        frames.put(head)
    return "freed"


# ----------------------------------------------------------------------------- swap-in
def _can_swapin(mm: AddressSpace, start: int, nr: int, orig: int, addr: int) -> bool:
    """can_swapin_thp(): the ``nr`` PTEs from ``start`` are swap entries of one device with
    consecutive offsets and the faulting entry's flags (swap_pte_batch()), all in the
    zeromap or none of it (swap_zeromap_batch()), none in the swap cache
    (non_swapcache_batch())."""
    swap = mm.mem.swap
    key = pte_to_swp_entry(orig)
    base = key.offset - ((addr - start) >> PAGE_SHIFT)
    if base < 1:
        return False
    dev = swap.device(key)
    zero = None
    for i in range(nr):
        leaf = mm.pt.get(start + i * PAGE_SIZE)
        e = leaf.entry if leaf is not None else 0
        if not e or present(e):
            return False
        k = pte_to_swp_entry(e)
        if k != SwpEntry(key.type, base + i) or (e ^ orig) & PAGE_SWP_EXCLUSIVE:
            return False
        if dev.cached[k.offset]:
            return False
        z = k in swap.zeromap
        if zero is None:
            zero = z
        elif z != zero:
            return False
    return True


def swapin_mthp(mm: AddressSpace, vma: Vma, addr: int, orig: int, write: bool) -> bool:
    """do_swap_page() on a SWP_SYNCHRONOUS_IO device, with alloc_swap_folio() finding a
    large order: the orders below PMD_ORDER the mTHP settings allow here
    (thp_vma_allowable_orders(), thp_vma_suitable_orders()) whose swap offset is aligned
    like the address (thp_swap_suitable_orders()), the highest one whose PTEs pass
    can_swapin_thp(), allocated from the highest down (swpin_fallback for each order that
    fails). The folio is read whole (swpin of its size unless it came from the zeromap),
    mapped by every PTE (set_ptes(): writable when the entry was exclusive, dirty on a write
    fault) and its slots freed (swap_free_nr()). False: swap in one page as usual (no order,
    zswap was enabled once: zswap_never_enabled(), or every order failed)."""
    mem = mm.mem
    swap = mem.swap
    if swap.zswap is not None:
        return False
    key = pte_to_swp_entry(orig)
    orders = mthp.allowable_orders(mm, vma, (1 << mthp.PMD_ORDER) - 1)
    orders = mthp.suitable_orders(vma, addr, orders)
    ok = 0
    page = addr >> PAGE_SHIFT
    while orders:  # thp_swap_suitable_orders()
        order = orders.bit_length() - 1
        nr = 1 << order
        if page % nr == key.offset % nr:
            ok |= 1 << order
        orders &= ~(1 << order)
    orders = ok
    while orders:
        order = orders.bit_length() - 1
        nr = 1 << order
        if _can_swapin(mm, addr & -(nr * PAGE_SIZE), nr, orig, addr):
            break
        orders &= ~(1 << order)
    head = None
    gfp = huge_memory.vma_thp_gfp_mask(mem.thp.settings, vma)
    while orders:
        order = orders.bit_length() - 1
        head = mthp.alloc_order(mm, order, gfp)
        if head is not None:
            break
        count_mthp_stat(mem, order, "swpin_fallback")
        orders &= ~(1 << order)
    if head is None:
        return False
    nr = 1 << order
    start = addr & -(nr * PAGE_SIZE)
    first = key.offset - ((addr - start) >> PAGE_SHIFT)
    keys = [SwpEntry(key.type, first + i) for i in range(nr)]
    frames = mem.frames
    device = False
    for i, k in enumerate(keys):
        data, where = swap.read(k)
        frames.write(head + i, 0, data)
        device = device or where == "device"
    if device:  # swap_read_folio_bdev_sync(): count_mthp_stat(order, MTHP_STAT_SWPIN)
        count_mthp_stat(mem, order, "swpin")
    frames.set_flags(head, _DIRTY)  # the only copy once the slots are freed
    mem.node.lru.add(head)
    shadow = swap.shadows.pop(keys[0], None)
    for k in keys[1:]:
        swap.shadows.pop(k, None)
    if shadow is not None:
        workingset.refault(mem, head, shadow)
    prot = page_prot(vma)
    for _ in range(nr - 1):  # folio_ref_add(folio, nr_pages - 1)
        frames.get(head)
    for i, k in enumerate(keys):
        pfn = head + i
        a = start + i * PAGE_SIZE
        pte = pfn_pte(pfn, prot)
        if vma.flags & VM_WRITE:  # a new folio of our own (refcount 1): writable
            pte |= PAGE_RW | (PAGE_DIRTY if write else 0)
        frames.map(pfn)
        rmap_add(mem, pfn, mm, a)
        mm.pt.set(a, pte)
        swap.put(k)
    return True
