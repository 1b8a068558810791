"""Writeback of dirty page-cache pages (mm/page-writeback.c, and the flusher threads of
fs/fs-writeback.c): one page written (:func:`write_page`: folio_mkclean(), then the bytes to
the file, PG_dirty cleared), a range for fsync/msync (:func:`write_range`), the flusher
(:func:`flush`, run by ``Machine.tick()``) and the writer's throttle past
vm.dirty_background_ratio (:func:`balance_dirty_pages`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmsim.constants import PAGE_SIZE
from vmsim.hw.pte import PAGE_DIRTY, PAGE_RW
from vmsim.mm.internal import wants_writenotify
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel
    from vmsim.mm.vma import Inode
DEF_PRIORITY = 12

_SWAPBACKED = int(PageFlag.SWAPBACKED)
_DIRTY = int(PageFlag.DIRTY)
_ACTIVE = int(PageFlag.ACTIVE)
_RECLAIM = int(PageFlag.RECLAIM)


def write_page(mem: Kernel, pfn: int, inode: Inode, pg: int) -> None:
    """Write dirty page-cache page ``pfn`` (page ``pg`` of ``inode``) back, as
    folio_clear_dirty_for_io() then the filesystem's writepages do: folio_mkclean() cleans
    and write-protects every PTE mapping it (in VMAs that want write notification), so that
    the next write faults and dirties the folio again; then its bytes go to the disk and
    PG_dirty is cleared (and a folio reclaim flagged is rotated, see :func:`flush`)."""
    frames = mem.frames
    for mm, va in list(mem.rmap.get(pfn, ())):
        leaf = mm.pt.get(va)
        vma = mm.tree.lookup(va)
        if leaf is None or vma is None or not wants_writenotify(vma):
            continue
        e = leaf.entry
        if e & (PAGE_DIRTY | PAGE_RW):
            mm.pt.set(va, e & ~(PAGE_DIRTY | PAGE_RW))
            mem.cpu.flush_range(mm, va, va + PAGE_SIZE)
    inode.backing[pg] = frames.read(pfn)
    flags = frames.flags(pfn)
    frames.clear_flags(pfn, _DIRTY)
    if flags & _RECLAIM:
        # folio_end_writeback() -> folio_rotate_reclaimable(): a folio reclaim had flagged
        # goes to the reclaim end of the inactive list
        frames.clear_flags(pfn, _RECLAIM | _ACTIVE)
        mem.node.lru.update(pfn)
        mem.node.lru.make_oldest(pfn)
        mem.vmstat["pgrotated"] += 1


def write_range(mem: Kernel, inode: Inode, first: int, last: int) -> int:
    """__filemap_fdatawrite_range(WB_SYNC_ALL) of pages ``first``..``last`` of a file that
    writes back (file_write_and_wait_range(), as ext4's fsync calls it): each dirty page of
    its page cache in the range is written (:func:`write_page`). tmpfs (noop_fsync) and
    hugetlbfs write nothing. Returns the pages written (counted in nr_written)."""
    if inode.shmem or inode.huge_shift:
        return 0
    frames = mem.frames
    written = 0
    for pg, pfn in sorted(inode.pages.items()):
        if first <= pg <= last and frames.flags(pfn) & _DIRTY:
            write_page(mem, pfn, inode, pg)
            written += 1
    mem.vmstat["nr_written"] += written
    return written


def flush(mem: Kernel, skip: int = -1) -> int:
    """The flusher threads (wb_workfn()): write back every dirty page of regular files (as
    if each tick were a writeback period in which they all expired); a written folio that
    reclaim had flagged (PG_reclaim) is moved to the reclaim end of the inactive list
    (folio_end_writeback() -> folio_rotate_reclaimable()). Returns the pages written."""
    frames = mem.frames
    written = 0
    if not frames.nr_file_dirty:
        return 0
    for pfn, (inode, pg) in list(mem.cache_owner.items()):
        flags = frames.flags(pfn)
        if not flags & _DIRTY or flags & _SWAPBACKED or pfn == skip:
            continue
        write_page(mem, pfn, inode, pg)
        written += 1
    mem.vmstat["nr_written"] += written
    return written


DIRTY_BACKGROUND_RATIO = 10  # vm.dirty_background_ratio


def balance_dirty_pages(mem: Kernel, pfn: int) -> int:
    """balance_dirty_pages_ratelimited() after a page of a file was dirtied: past
    vm.dirty_background_ratio (10%) of the dirtyable memory (free pages and file pages,
    less the reserve: global_dirtyable_memory()) the flusher starts writing (here at once,
    all of them but ``pfn``, the page being written now, which the access that faulted is
    about to write: the kernel's flusher runs beside it; the kernel also throttles the
    writer at dirty_ratio while it catches up). Returns the pages written."""
    sizes = mem.node.lru.sizes()
    dirtyable = (
        mem.frames.free_pages + sizes["active_file"] + sizes["inactive_file"] - mem.node.wmark_high
    )
    if mem.frames.nr_file_dirty * 100 <= max(dirtyable, 0) * DIRTY_BACKGROUND_RATIO:
        return 0
    return flush(mem, skip=pfn)


__all__ = [
    "DIRTY_BACKGROUND_RATIO",
    "balance_dirty_pages",
    "flush",
    "write_page",
    "write_range",
]
