"""The page cache (mm/filemap.c): a file's pages by page offset (``Inode.pages``), who owns a
cached folio (``Kernel.cache_owner``: folio->mapping, folio->index), adding and removing
folios, and reading one page of a file in.

Ownership: the page cache holds one reference on each of its pages (the allocation's). The
fault side of filemap.c (filemap_fault(), filemap_map_pages()) is in
``vmsim.mm.filemap_fault``, because it reads ahead (``vmsim.mm.readahead``), which reads
pages in through this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SHIFT, PAGE_SIZE
from vmsim.mm import workingset
from vmsim.mm.internal import FILE_FLAGS

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Inode

__all__ = ["cache_add", "cache_del", "eof_pages", "read_page"]


def eof_pages(inode: Inode) -> int:
    """The pages of the file up to its end (DIV_ROUND_UP(i_size_read(), PAGE_SIZE))."""
    return (inode.size + PAGE_SIZE - 1) >> PAGE_SHIFT


def cache_add(mem: Kernel, inode: Inode, pg: int, pfn: int) -> None:
    """filemap_add_folio(): ``pfn`` becomes page ``pg`` of the file (the cache's reference
    is the allocation's), on the LRU."""
    inode.pages[pg] = pfn
    mem.cache_owner[pfn] = (inode, pg)
    mem.node.lru.add(pfn)
    shadow = inode.shadows.pop(pg, None)
    if shadow is not None:
        workingset.refault(mem, pfn, shadow)


def cache_del(mem: Kernel, inode: Inode, pg: int) -> None:
    """filemap_remove_folio(): the cache lets go of page ``pg`` (and of its reference)."""
    pfn = inode.pages.pop(pg)
    mem.cache_owner.pop(pfn, None)
    mem.frames.put(pfn)


def read_page(mem: Kernel, inode: Inode, pg: int, noretry: bool = False) -> int:
    """filemap_read_folio(): a new page-cache page ``pg`` of ``inode`` with the file's bytes (read from its
    backing store); OutOfMemory if no page can be had."""
    pfn = mem.alloc_folio(FILE_FLAGS, noretry=noretry)
    data = inode.backing.get(pg)
    if data is not None:
        mem.frames.write(pfn, 0, data)
    cache_add(mem, inode, pg, pfn)
    return pfn
