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

from vmsim.phys.frames import OutOfMemory

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel

__all__ = ["alloc_folio", "watermarks"]


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
        if reclaim(mem) and not noretry:
            continue
        if noretry or mem.oom_handler is None or not mem.oom_handler():
            break
    if frames.free_pages > node.wmark_min:
        return frames.alloc(flags)
    raise OutOfMemory(0, frames.free_pages, frames.total_pages)
