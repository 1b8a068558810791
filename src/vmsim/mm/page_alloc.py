"""The page allocator's policy for user pages (mm/page_alloc.c): watermarks, waking kswapd,
direct reclaim and the OOM killer. The free lists themselves are ``vmsim.phys`` (the buddy
allocator behind ``FrameAllocator``).

Reclaim is passed in (``reclaim``: vmscan's try_to_free_pages()), so that this module, which
every allocating path needs, depends on nothing above it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from vmsim.mm import compaction
from vmsim.phys.buddy import MAX_PAGE_ORDER
from vmsim.phys.frames import OutOfMemory

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel

__all__ = [
    "GFP_DIRECT_RECLAIM",
    "GFP_KSWAPD_RECLAIM",
    "GFP_NORETRY",
    "PAGE_ALLOC_COSTLY_ORDER",
    "alloc_costly",
    "alloc_folio",
    "wakeup_kswapd",
    "watermarks",
    "zone_watermark_ok",
]

# The gfp bits the costly-order slow path looks at (include/linux/gfp_types.h); the rest of a
# gfp mask (movable, no warn, ...) is implied by the caller
GFP_DIRECT_RECLAIM = 0x1  # __GFP_DIRECT_RECLAIM: the caller may compact and reclaim
GFP_KSWAPD_RECLAIM = 0x2  # __GFP_KSWAPD_RECLAIM: the caller may wake kswapd
GFP_NORETRY = 0x4  # __GFP_NORETRY
PAGE_ALLOC_COSTLY_ORDER = 3


def watermarks(managed: int) -> tuple[int, int, int]:
    """min/low/high watermarks in pages, as __setup_per_zone_wmarks() sets them for one
    zone: min_free_kbytes = sqrt(lowmem_kbytes * 16) within [128, 262144] kB; low and high
    add max(min/4, managed * watermark_scale_factor (10) / 10000) once and twice."""
    kb = managed * 4
    min_free_kb = min(max(math.isqrt(kb * 16), 128), 262144)
    wmin = min(min_free_kb // 4, max(managed // 8, 1))
    tmp = max(wmin // 4, managed * 10 // 10000)
    return wmin, wmin + tmp, wmin + 2 * tmp


def alloc_folio(mem: Kernel, flags: int, noretry: bool, reclaim: Callable[[Kernel], int]) -> int:
    """__alloc_pages_slowpath() for a user page: below the low watermark kswapd is woken, at
    the min watermark the allocating task reclaims itself (direct reclaim, ``reclaim``), and
    when even that leaves nothing above min the OOM killer (``mem.oom_handler``) frees
    memory; OutOfMemory if nobody is left to kill. Reclaim itself allocates from the reserve
    below min. ``noretry`` (__GFP_NORETRY, as readahead asks): one round of direct reclaim,
    never the OOM killer."""
    frames = mem.frames
    node = mem.node
    if node.reclaiming:
        return frames.alloc(flags)
    if frames.free_pages <= node.wmark_low and not node.kswapd_wanted:
        node.kswapd_wanted = True
        mem.vmstat["kswapd_wake"] += 1
    for _ in range(64):
        if frames.free_pages > node.wmark_min:
            return frames.alloc(flags)
        mem.vmstat["allocstall_normal"] += 1
        progress = reclaim(mem)
        # get_page_from_freelist() again, whatever reclaim counted as progress: a shrinker
        # frees pages nr_reclaimed does not count (the deferred split shrinker's split of a
        # partly mapped THP gives back its unmapped pages), and should_reclaim_retry() goes
        # round once they are free, before any OOM kill
        if frames.free_pages > node.wmark_min:
            continue
        if progress and not noretry:
            continue
        if noretry or mem.oom_handler is None or not mem.oom_handler():
            break
    if frames.free_pages > node.wmark_min:
        return frames.alloc(flags)
    raise OutOfMemory(0, frames.free_pages, frames.total_pages)


def zone_watermark_ok(mem: Kernel, order: int, mark: int) -> bool:
    """__zone_watermark_ok() of the one zone: free pages, less those of the block asked for
    beyond its first page, above ``mark``, and (order > 0) a free block of ``order`` or more
    (the model's user allocations are movable and may claim a block of any type)."""
    frames = mem.frames
    if frames.free_pages - ((1 << order) - 1) <= mark:
        return False
    return not order or any(frames.free_blocks(o) for o in range(order, MAX_PAGE_ORDER + 1))


def wakeup_kswapd(mem: Kernel, order: int, gfp: int) -> None:
    """wakeup_kswapd() for an allocation of ``order``: kswapd's order is raised to it; a
    node already balanced for the order (free memory above the high watermark and a free
    block of the order) is left alone, except that a caller that will not compact itself
    (no __GFP_DIRECT_RECLAIM) wakes kcompactd; otherwise kswapd is woken (kswapd_wake), and
    it wakes kcompactd for the order when it goes back to sleep (kswapd_try_to_sleep())."""
    node = mem.node
    node.kswapd_order = max(node.kswapd_order, order)
    if zone_watermark_ok(mem, order, node.wmark_high):
        if not gfp & GFP_DIRECT_RECLAIM:
            compaction.wakeup_kcompactd(mem, order)
        return
    if not node.kswapd_wanted:
        node.kswapd_wanted = True
        mem.vmstat["kswapd_wake"] += 1


def alloc_costly(
    mem: Kernel, flags: int, order: int, gfp: int, reclaim: Callable[[Kernel], int]
) -> int | None:
    """__alloc_pages() of a costly order (above PAGE_ALLOC_COSTLY_ORDER) without
    __GFP_RETRY_MAYFAIL, as a THP fault asks (vma_thp_gfp_mask()); None when it fails.

    The fast path takes a free block above the low watermark (get_page_from_freelist());
    then __alloc_pages_slowpath(): kswapd is woken if the mask allows it (ALLOC_KSWAPD), the
    min watermark is tried; without __GFP_DIRECT_RECLAIM that is all. Otherwise direct
    compaction runs first (costly order, async priority); if it fails and the mask says
    __GFP_NORETRY, a COMPACT_SKIPPED result (too little free memory to compact) ends it;
    else one round of direct reclaim (try_to_free_pages(): allocstall_normal; shrink_zones()
    skips the zone when compaction_ready(), free memory above the high watermark plus
    compact_gap()), then direct compaction again, and a costly order gives up
    (``costly_order && !__GFP_RETRY_MAYFAIL``: no retry loop, never the OOM killer)."""
    frames = mem.frames
    node = mem.node

    def take(mark: int) -> int | None:
        if not zone_watermark_ok(mem, order, mark):
            return None
        try:
            return frames.alloc(flags, order=order)
        except OutOfMemory:
            return None

    got = take(node.wmark_low)
    if got is not None or node.reclaiming:
        return got
    if gfp & GFP_KSWAPD_RECLAIM:
        wakeup_kswapd(mem, order, gfp)
    got = take(node.wmark_min)
    if got is not None or not gfp & GFP_DIRECT_RECLAIM:
        return got
    result = compaction.direct_compact(mem, order, node.wmark_min)
    got = take(node.wmark_min)
    compaction.count_direct_compact(mem, result, got is not None)
    if got is not None:
        return got
    if gfp & GFP_NORETRY and result == compaction.COMPACT_SKIPPED:
        return None
    if gfp & GFP_KSWAPD_RECLAIM:
        wakeup_kswapd(mem, order, gfp)
    mem.vmstat["allocstall_normal"] += 1
    if frames.free_pages <= node.wmark_high + compaction.compact_gap(order):
        reclaim(mem)
    got = take(node.wmark_min)
    if got is not None:
        return got
    result = compaction.direct_compact(mem, order, node.wmark_min)
    got = take(node.wmark_min)
    compaction.count_direct_compact(mem, result, got is not None)
    return got
