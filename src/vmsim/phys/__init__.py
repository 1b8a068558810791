"""What RAM does: page frames, the buddy allocator (later: reclaim, swap, zswap, KSM, THP)."""

from vmsim.phys.frames import (
    MAX_PHYS_BYTES,
    PAGE_SIZE,
    BadPage,
    FrameAllocator,
    OutOfMemory,
    PageFlag,
)

__all__ = [
    "MAX_PHYS_BYTES",
    "PAGE_SIZE",
    "BadPage",
    "FrameAllocator",
    "OutOfMemory",
    "PageFlag",
]
