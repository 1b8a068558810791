"""Truncating the page cache (mm/truncate.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.mm.filemap import cache_del
from vmsim.mm.swap_state import free_swap_and_cache

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Inode

__all__ = ["drop_cache_pages"]


def drop_cache_pages(mem: Kernel, inode: Inode, first: int, last: int) -> None:
    """truncate_inode_pages_range(): the page cache lets go of ``[first, last)``; the pages
    must be unmapped by now. The backing store forgets them too (a hole), and so does swap
    for shmem pages swapped out."""
    for pg in [p for p in inode.pages if first <= p < last]:
        cache_del(mem, inode, pg)
    for pg in [p for p in inode.swapped if first <= p < last]:
        free_swap_and_cache(mem, inode.swapped.pop(pg))
    for pg in [p for p in inode.backing if first <= p < last]:
        del inode.backing[pg]
    for pg in [p for p in inode.shadows if first <= p < last]:
        del inode.shadows[pg]
