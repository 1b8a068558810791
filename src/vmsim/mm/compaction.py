"""Memory compaction (mm/compaction.c): move movable pages out of the way so that free pages
merge into blocks of a higher order.

``compact_zone()`` runs the two scanners of the kernel over the one zone: the migration
scanner walks pageblocks up from the start of memory and isolates the movable pages it finds
(isolate_migratepages_block()); the free scanner walks pageblocks down from the end and
isolates the free pages of movable pageblocks (isolate_freepages_block()); each isolated
page is migrated (migrate_pages() -> migrate_folio()) to the highest isolated free page, and
the old frame goes back to the buddy allocator, where it merges with its free buddies. The
run ends when the scanners meet (COMPACT_COMPLETE) or, after a pageblock, when a free block of
the requested order exists (__compact_finished(): COMPACT_SUCCESS).

What moves: an order-0 anonymous or page-cache folio on the LRU whose only references are its
mappings and the page cache (no swap cache, no GUP pin), not KSM, not mlocked, not a
hugetlb or page-table page. Migration keeps its contents, refcount, mapcount and flags
(``FrameAllocator.move_folio``); every PTE that mapped it (found through the reverse map,
``Kernel.rmap``) is rewritten to the new frame and its TLB entry flushed
(remove_migration_ptes() + the flush of try_to_migrate()); the page cache, the LRU (the new
folio is added as the newest, folio_add_lru()) and the other per-frame indices follow it.

Direct compaction (``try_to_compact_pages()``: __alloc_pages_direct_compact()) counts
compact_stall and then compact_success or compact_fail by whether a block of the order is
free afterwards; kcompactd (``kcompactd()``, run by ``Machine.tick()``) compacts when it was
woken for an order (``wakeup_kcompactd()``) and, proactively, when the fragmentation score
for huge pages passes the high mark set by vm.compaction_proactiveness (default 20: above 90,
until it is back at 80: fragmentation_score_wmark()). Scanned counts are pages of the
pageblocks each scanner walked.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING

from vmsim.hw.pte import PTE_PFN_MASK
from vmsim.mm.internal import present
from vmsim.mm.vmstat import COMPACT_VMSTAT_EVENTS
from vmsim.phys.buddy import MAX_PAGE_ORDER, MIGRATE_MOVABLE, PAGEBLOCK_ORDER
from vmsim.phys.frames import PageFlag

if TYPE_CHECKING:
    from vmsim.mm.kernel import Kernel

__all__ = [
    "COMPACTION_HPAGE_ORDER",
    "COMPACT_EVENTS",
    "COMPACT_SKIPPED",
    "compact_gap",
    "compact_zone",
    "compaction_suitable",
    "count_direct_compact",
    "direct_compact",
    "fragmentation_index",
    "fragmentation_score",
    "kcompactd",
    "try_to_compact_pages",
    "wakeup_kcompactd",
]

COMPACTION_HPAGE_ORDER = PAGEBLOCK_ORDER  # HPAGE_PMD_ORDER
COMPACT_EVENTS = COMPACT_VMSTAT_EVENTS  # the compact_* lines of /proc/vmstat
_PAGEBLOCK = 1 << PAGEBLOCK_ORDER
_NOT_MOVABLE = int(
    PageFlag.KSM
    | PageFlag.SWAPCACHE
    | PageFlag.MLOCKED
    | PageFlag.HUGE
    | PageFlag.PAGETABLE
    | PageFlag.HEAD
    | PageFlag.UNEVICTABLE
    | PageFlag.WRITEBACK
)
_USER = int(PageFlag.ANON | PageFlag.FILE)


def _suitable(mem: Kernel, order: int) -> bool:
    """A free block of ``order`` or more exists (what __compact_finished() looks for; the
    model's allocations of that order are movable, so any free block will do: a movable one
    directly, another by claiming it)."""
    frames = mem.frames
    return any(frames.free_blocks(o) for o in range(order, MAX_PAGE_ORDER + 1))


def fragmentation_score(mem: Kernel) -> int:
    """fragmentation_score_node() of the one zone: extfrag_for_order(COMPACTION_HPAGE_ORDER)
    (the share of free memory in blocks smaller than a huge page, in percent) times
    present / (present + 1), rounded down."""
    frames = mem.frames
    free = frames.free_pages
    if not free:
        return 0
    suitable = sum(
        frames.free_blocks(o) << (o - COMPACTION_HPAGE_ORDER)
        for o in range(COMPACTION_HPAGE_ORDER, MAX_PAGE_ORDER + 1)
    )
    extfrag = (free - (suitable << COMPACTION_HPAGE_ORDER)) * 100 // free
    present = frames.nr_pages
    return present * extfrag // (present + 1)


def _movable(mem: Kernel, pfn: int, busy: set[int]) -> bool:
    """isolate_migratepages_block()'s tests for one allocated frame."""
    frames = mem.frames
    flags = int(frames.flags(pfn))
    if flags & _NOT_MOVABLE or not flags & _USER or pfn in busy:
        return False
    if pfn not in mem.node.lru.where:
        return False
    expected = frames.mapcount(pfn) + (1 if pfn in mem.cache_owner else 0)
    return frames.refcount(pfn) == expected  # no extra pin (folio_expected_ref_count())


def _migrate(mem: Kernel, old: int, new: int) -> None:
    """migrate_pages() of one folio to the isolated free frame ``new``."""
    frames = mem.frames
    lru = mem.node.lru
    lru.remove(old)
    frames.move_folio(old, new)
    lru.add(new)
    owner = mem.cache_owner.pop(old, None)
    if owner is not None:
        inode, pgoff = owner
        inode.pages[pgoff] = new
        mem.cache_owner[new] = owner
    if old in mem.mlock_count:
        mem.mlock_count[new] = mem.mlock_count.pop(old)
    users = mem.rmap.pop(old, None)
    if users:
        mem.rmap[new] = users
        for mm, addr in users:
            leaf = mm.pt.get(addr)
            assert leaf is not None and present(leaf.entry), f"rmap names {addr:#x}: no PTE"
            mm.pt.set(addr, (leaf.entry & ~PTE_PFN_MASK) | (new << 12))
            mem.cpu.flush_range(mm, addr, addr + 4096)


def compact_zone(mem: Kernel, order: int, *, daemon: bool = False) -> bool:
    """compact_zone(): run both scanners until a free block of ``order`` exists (order -1:
    proactive compaction, until the fragmentation score is at the low mark) or they meet.
    Returns whether the goal was reached. Direct compaction (``daemon`` False) migrates from
    movable pageblocks only (suitable_migration_source() in MIGRATE_ASYNC mode)."""
    frames = mem.frames
    buddy = frames.buddy
    ev = mem.vmstat

    def finished() -> bool:
        if order < 0:
            return fragmentation_score(mem) <= mem.compaction_wmark_low
        return _suitable(mem, order)

    if finished():
        return True
    # the zone as the scanners see it: the never-handed-out memory above the frontier is
    # free already, so the free scanner starts below it
    top = (buddy.frontier + _PAGEBLOCK - 1) // _PAGEBLOCK
    allocated = sorted(frames.allocated())
    busy: set[int] = set()
    if mem.ksm is not None:
        # KSM pages (stable nodes name their frame) stay; an unstable-tree item names a
        # page by mm and address, as in Linux, so its page may move
        busy = set(mem.ksm.node_of)
    targets: list[int] = []  # isolated free frames, the highest last
    free_block = top  # the free scanner's next pageblock (going down)
    migrated = False
    block = 0
    while block < free_block:
        start = block * _PAGEBLOCK
        block += 1
        if not daemon and buddy.migratetype(start) != MIGRATE_MOVABLE:
            continue
        i = bisect_left(allocated, start)
        candidates = []
        while i < len(allocated) and allocated[i] < start + _PAGEBLOCK:
            candidates.append(allocated[i])
            i += 1
        ev["compact_migrate_scanned"] += _PAGEBLOCK
        if daemon:
            ev["compact_daemon_migrate_scanned"] += _PAGEBLOCK
        for pfn in candidates:
            if not frames.is_allocated(pfn) or not _movable(mem, pfn, busy):
                continue
            while not targets and free_block > block:  # isolate_freepages()
                free_block -= 1
                fstart = free_block * _PAGEBLOCK
                ev["compact_free_scanned"] += _PAGEBLOCK
                if daemon:
                    ev["compact_daemon_free_scanned"] += _PAGEBLOCK
                got = buddy.isolate_free(fstart)
                ev["compact_isolated"] += len(got)
                targets.extend(sorted(got))
            if not targets:
                break
            ev["compact_isolated"] += 1
            _migrate(mem, pfn, targets.pop())
            ev["pgmigrate_success"] += 1
            migrated = True
        if migrated and finished():
            break
    for pfn in targets:  # release_free_list(): what was not used goes back
        buddy.free(pfn, 0)
    return finished()


COMPACT_SKIPPED = "skipped"  # compaction did not run: too little free memory to work with
COMPACT_SUCCESS = "success"  # a free block of the order exists
COMPACT_COMPLETE = "complete"  # the scanners met without making one
EXTFRAG_THRESHOLD = 500  # vm.extfrag_threshold


def compact_gap(order: int) -> int:
    """compact_gap(): the free pages compaction wants beyond the watermark (twice the
    request: migration needs targets while the block is emptied)."""
    return 2 << order


def fragmentation_index(mem: Kernel, order: int) -> int:
    """fragmentation_index() of the zone for ``order`` (__fragmentation_index()): 0 when
    there are no free blocks, -1000 when a block of the order is free, else
    1000 - (1000 + free pages * 1000 / 2**order) / free blocks, in thousandths: towards 0
    an allocation fails for lack of memory, towards 1000 for fragmentation."""
    frames = mem.frames
    blocks = sum(frames.free_blocks(o) for o in range(MAX_PAGE_ORDER + 1))
    if not blocks:
        return 0
    if _suitable(mem, order):
        return -1000
    return 1000 - (1000 + frames.free_pages * 1000 // (1 << order)) // blocks


def compaction_suitable(mem: Kernel, order: int, mark: int) -> bool:
    """compaction_suitable(): enough order-0 free memory above ``mark`` plus compact_gap()
    for the scanners to work (__compaction_suitable()), and, for a costly order, a failure
    that is due to fragmentation rather than lack of memory (fragmentation_index() above
    vm.extfrag_threshold, or negative)."""
    if mem.frames.free_pages <= mark + compact_gap(order):
        return False
    if order > 3:  # PAGE_ALLOC_COSTLY_ORDER
        index = fragmentation_index(mem, order)
        if 0 <= index <= EXTFRAG_THRESHOLD:
            return False
    return True


def direct_compact(mem: Kernel, order: int, mark: int) -> str:
    """try_to_compact_pages() in async mode (a THP fault's priority, which never defers
    compaction) for an allocation of ``order`` at watermark ``mark``:
    compaction_suit_allocation_order() skips it when compaction is not suitable, else
    compact_zone() runs. Counted by the caller (``count_direct_compact``) once it has tried
    the free lists again."""
    if _suitable(mem, order) and mem.frames.free_pages - ((1 << order) - 1) > mark:
        return COMPACT_SUCCESS
    if not compaction_suitable(mem, order, mark):
        return COMPACT_SKIPPED
    return COMPACT_SUCCESS if compact_zone(mem, order) else COMPACT_COMPLETE


def count_direct_compact(mem: Kernel, result: str, got: bool) -> None:
    """The counting of __alloc_pages_direct_compact(): nothing when compaction was skipped;
    else compact_stall, then compact_success if the allocation now succeeded, else
    compact_fail."""
    if result == COMPACT_SKIPPED:
        return
    ev = mem.vmstat
    ev["compact_stall"] += 1
    ev["compact_success" if got else "compact_fail"] += 1


def try_to_compact_pages(mem: Kernel, order: int) -> bool:
    """__alloc_pages_direct_compact(): direct compaction for an allocation of ``order``
    that found no free block (compact_stall), then compact_success if a block of the order
    is free now, else compact_fail (and kcompactd is woken for it)."""
    ev = mem.vmstat
    ev["compact_stall"] += 1
    ok = compact_zone(mem, order)
    if ok:
        ev["compact_success"] += 1
    else:
        ev["compact_fail"] += 1
        wakeup_kcompactd(mem, order)
    return ok


def wakeup_kcompactd(mem: Kernel, order: int) -> None:
    """wakeup_kcompactd(): kcompactd will compact for ``order`` on its next run."""
    mem.kcompactd_order = max(mem.kcompactd_order, order)


def kcompactd(mem: Kernel) -> None:
    """One run of kcompactd (what ``Machine.tick()`` does for it): the order it was woken
    for (kcompactd_do_work(): compact_daemon_wake), then proactive compaction when the
    fragmentation score is above the high mark (proactiveness 0 turns it off)."""
    order = mem.kcompactd_order
    if order > 0:
        mem.kcompactd_order = 0
        mem.vmstat["compact_daemon_wake"] += 1
        compact_zone(mem, order, daemon=True)
    if mem.compaction_proactiveness and fragmentation_score(mem) > mem.compaction_wmark_high:
        compact_zone(mem, -1, daemon=True)
