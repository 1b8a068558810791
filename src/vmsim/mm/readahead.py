"""File readahead for page faults (mm/filemap.c do_sync_mmap_readahead(),
do_async_mmap_readahead(); mm/readahead.c).

The window size comes from the file's block device (``Machine(read_ahead_kb=...)``, the
``queue/read_ahead_kb`` of the disk: ra_pages = read_ahead_kb / 4); the state is the open
file's (``struct file_ra_state``, one per open file description). A page-cache miss in a
fault (a major fault) reads:

* MADV_RANDOM (VM_RAND_READ, unless executable): the page alone;
* MADV_SEQUENTIAL (VM_SEQ_READ): what page_cache_sync_ra() reads for a stream;
* otherwise, once the file has missed more than MMAP_LOTSAMISS (100) times more than it hit
  (``mmap_miss``): the page alone; else for an executable mapping the ra_pages from the
  fault on, clipped to the VMA (6.18's VM_EXEC branch, no mark), and for any other mapping
  the read-around window of ra_pages centred on the fault, with the PG_readahead mark a
  quarter of the window before its end.

A fault that finds a page carrying the PG_readahead mark (fault-around never maps such a page,
so the access faults) starts the next window asynchronously (page_cache_async_ra(): the
window moves on and grows, get_next_ra_size()) and is retried, which counts it as a major
fault. Reads stop at end of file, skip pages already cached and are best effort when memory
runs out (__GFP_NORETRY: one round of direct reclaim, never the OOM killer; the faulting page
itself is then read on its own, and that allocation may go as far as the OOM killer). The model's page cache holds 4 KiB folios only: where the kernel reads ahead into
large folios, its mark covers the whole folio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.mm.filemap import eof_pages, read_page
from vmsim.mm.flags import VM_EXEC, VM_RAND_READ, VM_SEQ_READ
from vmsim.mm.vma import RaState
from vmsim.phys.frames import OutOfMemory, PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Inode, Vma

__all__ = [
    "RaState",
    "async_mmap_readahead",
    "async_ra",
    "get_init_ra_size",
    "get_next_ra_size",
    "read_pages",
    "sync_mmap_readahead",
    "sync_ra",
]

MMAP_LOTSAMISS = 100
ULONG_MAX = (1 << 64) - 1
READAHEAD = int(PageFlag.RECLAIM)  # PG_readahead shares PG_reclaim's bit (page-flags.h)


def get_init_ra_size(size: int, max_pages: int) -> int:
    """get_init_ra_size(): the first window of a stream."""
    new = 1 << max(size - 1, 0).bit_length()
    if new <= max_pages // 32:
        return new * 4
    if new <= max_pages // 4:
        return new * 2
    return max_pages


def get_next_ra_size(cur: int, max_pages: int) -> int:
    """get_next_ra_size(): the window grows fourfold while small, then twofold, up to max."""
    if cur < max_pages // 16:
        return 4 * cur
    if cur <= max_pages // 2:
        return 2 * cur
    return max_pages


def read_pages(mem: Kernel, inode: Inode, start: int, nr: int, mark: int) -> int:
    """page_cache_ra_order() / page_cache_ra_unbounded(): read the pages of [start, start +
    nr) that are not cached, up to end of file; the page at ``mark``, if read now, gets
    PG_readahead. Returns the pages read; stops quietly when memory runs out."""
    end = min(start + nr, eof_pages(inode))
    frames = mem.frames
    done = 0
    for pg in range(max(start, 0), end):
        if pg in inode.pages:
            continue
        try:
            new = read_page(mem, inode, pg, noretry=True)  # readahead_gfp_mask()
        except OutOfMemory:
            break
        if pg == mark:
            frames.set_flags(new, READAHEAD)
        done += 1
    return done


def _prev_miss(inode: Inode, index: int, max_scan: int) -> int:
    """page_cache_prev_miss(): the first uncached index at or below ``index`` within
    ``max_scan`` pages (ULONG_MAX if the file is cached down to page 0)."""
    for i in range(index, index - max_scan, -1):
        if i < 0:
            return ULONG_MAX
        if i not in inode.pages:
            return i
    return index - max_scan


def _next_miss(inode: Inode, index: int, max_scan: int) -> int:
    """page_cache_next_miss(): the first uncached index at or above ``index``."""
    for i in range(index, index + max_scan):
        if i not in inode.pages:
            return i
    return index + max_scan


def _ra_order(mem: Kernel, inode: Inode, ra: RaState) -> None:
    read_pages(mem, inode, ra.start, ra.size, ra.start + ra.size - ra.async_size)


def sync_ra(mem: Kernel, inode: Inode, ra: RaState, index: int, req_count: int) -> None:
    """page_cache_sync_ra(): a read miss at ``index`` in a sequential stream."""
    max_pages = mem.ra_pages
    prev_index = (ra.prev_pos if ra.prev_pos >= 0 else ULONG_MAX) >> 12
    if not index or req_count > max_pages or (index - prev_index) % (1 << 64) <= 1:
        ra.start = index
        ra.size = get_init_ra_size(req_count, max_pages)
        ra.async_size = ra.size - req_count if ra.size > req_count else ra.size >> 1
    else:
        miss = _prev_miss(inode, index - 1, max_pages)
        contig = (index - miss - 1) % (1 << 64)
        if contig <= req_count:  # a small random read: as is, the state untouched
            read_pages(mem, inode, index, req_count, index + req_count)
            return
        if miss == ULONG_MAX:  # cached from the start: a long stream
            contig *= 2
        ra.start = index
        ra.size = min(contig + req_count, max_pages)
        ra.async_size = 1
    ra.order = 0
    _ra_order(mem, inode, ra)


def async_ra(mem: Kernel, inode: Inode, ra: RaState, pfn: int, index: int, req: int) -> None:
    """page_cache_async_ra(): the marked page at ``index`` was reached: read the next
    window ahead of it."""
    max_pages = mem.ra_pages
    mem.frames.clear_flags(pfn, READAHEAD)
    if index == ra.start + ra.size - ra.async_size:  # the expected mark: push on, ramp up
        ra.start += ra.size
        ra.size = max(ra.size, get_next_ra_size(ra.size, max_pages))
    else:  # a mark without matching state (interleaved streams): start from the cache
        start = _next_miss(inode, index + 1, max_pages)
        if not start or start - index > max_pages:
            return
        ra.start = start
        ra.size = get_next_ra_size(start - index + req, max_pages)
    ra.order += 2
    align = 1 << min(ra.order, (max_pages & -max_pages).bit_length() - 1)
    end = ra.start + ra.size
    aligned_end = end & ~(align - 1)
    if aligned_end > ra.start:
        ra.size -= end - aligned_end
    ra.async_size = ra.size
    _ra_order(mem, inode, ra)


def sync_mmap_readahead(mem: Kernel, vma: Vma, ra: RaState, inode: Inode, pgoff: int) -> None:
    """do_sync_mmap_readahead(): the page at ``pgoff`` is not cached."""
    flags = vma.flags
    ra_pages = mem.ra_pages
    if flags & (VM_RAND_READ | VM_EXEC) == VM_RAND_READ or not ra_pages:
        return
    if flags & VM_SEQ_READ:
        sync_ra(mem, inode, ra, pgoff, ra_pages)
        return
    if ra.mmap_miss < MMAP_LOTSAMISS * 10:
        ra.mmap_miss += 1
    if ra.mmap_miss > MMAP_LOTSAMISS:
        return
    if flags & VM_EXEC:  # forward from the fault, inside the VMA, no mark
        ra.start = max(pgoff, vma.pgoff)
        ra.size = min(ra.start + ra_pages, vma.pgoff + vma.pages) - ra.start
        ra.async_size = 0
    else:  # read-around
        ra.start = max(0, pgoff - ra_pages // 2)
        ra.size = ra_pages
        ra.async_size = ra_pages // 4
    ra.order = 0
    _ra_order(mem, inode, ra)


def async_mmap_readahead(
    mem: Kernel, vma: Vma, ra: RaState, inode: Inode, pgoff: int, pfn: int
) -> bool:
    """do_async_mmap_readahead(): the page is cached; a hit lowers mmap_miss, a marked
    page starts the next window. True if it read ahead (the fault is then retried)."""
    if vma.flags & VM_RAND_READ or not mem.ra_pages:
        return False
    if ra.mmap_miss:
        ra.mmap_miss -= 1
    if mem.frames.flags(pfn) & READAHEAD:
        async_ra(mem, inode, ra, pfn, pgoff, mem.ra_pages)
        return True
    return False
