"""The buddy allocator: free physical memory as power-of-two blocks of page frames, sorted by
migrate type.

Mirrors the shape of mm/page_alloc.c: ``free_lists[order][migratetype]`` holds free blocks of
``2**order`` pages, ``order <= MAX_PAGE_ORDER`` (10, 4 MiB); an allocation takes the smallest
free block of its migrate type that fits and splits it, keeping the low half and freeing the
high halves on the same list (__rmqueue_smallest(), expand()); a free merges a block with its
buddy (``pfn ^ (1 << order)``) while the buddy is free and of the same order
(__free_one_page()).

Migrate types (include/linux/mmzone.h): memory is cut into pageblocks of ``2**PAGEBLOCK_ORDER``
pages (9: 2 MiB, pageblock_order = HPAGE_PMD_ORDER on x86-64), each with a migrate type, all
MIGRATE_MOVABLE at boot (memmap_init_zone()). A free block sits on the list of its
pageblock's type. When the lists of the wanted type are empty the allocation falls back as
__rmqueue() does in 6.18: first __rmqueue_claim() (from the largest free block of a fallback
type down: a block of a pageblock or more changes type whole; a smaller one claims its
pageblock if at least half of it is free; a movable allocation only claims from blocks of
order >= pageblock_order / 2), then __rmqueue_steal() (the smallest fallback block, its
pageblock keeps its type). Fallback order (fallbacks[]): unmovable -> reclaimable, movable;
movable -> reclaimable, unmovable; reclaimable -> unmovable, movable. The model allocates
unmovable pages for page tables and movable ones for user pages, so a page table that lands
in a movable pageblock (or claims one) is what fragments memory for huge pages, as in Linux.
The per-CPU page lists are not modelled: every free page is in a buddy list.

What differs, so that a 4 PiB machine costs nothing until used: memory above ``frontier`` has
never been handed out and is implicitly free: whole MAX_PAGE_ORDER blocks of movable
pageblocks (the tail of memory, if ragged, in smaller blocks). It is carved into blocks only
when the free lists run dry: host memory is proportional to the number of blocks ever split,
not to RAM.

Invariants (``check()``): free blocks are aligned to their order, lie below ``frontier``, do not
overlap, sit on the list of their pageblocks' migrate type, and no two free buddies of the same
order coexist below MAX_PAGE_ORDER (they would have merged); ``nr_free`` equals the pages in the
free lists plus the pages above ``frontier``. Allocation and free are O(MAX_PAGE_ORDER). Free
lists pop the most recently freed block first, so freed frames are reused hot, as the per-cpu
page lists do.
"""

from __future__ import annotations

import itertools

__all__ = [
    "MAX_PAGE_ORDER",
    "MIGRATETYPE_NAMES",
    "MIGRATE_MOVABLE",
    "MIGRATE_RECLAIMABLE",
    "MIGRATE_TYPES",
    "MIGRATE_UNMOVABLE",
    "PAGEBLOCK_ORDER",
    "BuddyAllocator",
]

MAX_PAGE_ORDER = 10  # include/linux/mmzone.h (CONFIG_ARCH_FORCE_MAX_ORDER default on x86-64)
PAGEBLOCK_ORDER = 9  # pageblock_order: HPAGE_PMD_ORDER with CONFIG_TRANSPARENT_HUGEPAGE
MIGRATE_UNMOVABLE = 0
MIGRATE_MOVABLE = 1
MIGRATE_RECLAIMABLE = 2
MIGRATE_TYPES = 3  # the three kinds the model uses (no HighAtomic, CMA, Isolate)
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable")  # migratetype_names[]
# fallbacks[] of mm/page_alloc.c
_FALLBACKS = (
    (MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE),
    (MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE),
    (MIGRATE_UNMOVABLE, MIGRATE_MOVABLE),
)


class BuddyAllocator:
    """Page frames ``[0, nr_pages)`` handed out in power-of-two blocks."""

    def __init__(self, nr_pages: int) -> None:
        if nr_pages <= 0:
            raise ValueError(f"{nr_pages} pages: need at least one")
        self.nr_pages = nr_pages
        # free_lists[order][migratetype]: head pfn -> None; a dict for O(1) buddy lookup and
        # LIFO popitem()
        self.free_lists: list[list[dict[int, None]]] = [
            [{} for _ in range(MIGRATE_TYPES)] for _ in range(MAX_PAGE_ORDER + 1)
        ]
        # pageblock index (pfn >> PAGEBLOCK_ORDER) -> migrate type; absent: MIGRATE_MOVABLE
        self.block_mt: dict[int, int] = {}
        self.frontier = 0
        self.nr_free = nr_pages

    # -- views ---------------------------------------------------------------------------
    @property
    def free_area(self) -> list[dict[int, None]]:
        """The free blocks of each order, every migrate type together (the blocks above the
        frontier not included)."""
        return [{p: None for d in lists for p in d} for lists in self.free_lists]

    def migratetype(self, pfn: int) -> int:
        """get_pfnblock_migratetype(): the migrate type of the pageblock holding ``pfn``."""
        return self.block_mt.get(pfn >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)

    def nr_free_blocks(self, order: int) -> int:
        """zone->free_area[order].nr_free: free blocks of ``order`` (what /proc/buddyinfo
        prints), the never-carved memory above the frontier included."""
        n = sum(len(d) for d in self.free_lists[order])
        if order == MAX_PAGE_ORDER:
            n += self._frontier_blocks()
        return n

    def nr_free_blocks_mt(self, order: int, mt: int) -> int:
        """Free blocks of ``order`` on the lists of ``mt`` (/proc/pagetypeinfo)."""
        n = len(self.free_lists[order][mt])
        if order == MAX_PAGE_ORDER and mt == MIGRATE_MOVABLE:
            n += self._frontier_blocks()
        return n

    def _frontier_blocks(self) -> int:
        """Whole MAX_PAGE_ORDER blocks above the frontier (the frontier stays aligned to
        MAX_PAGE_ORDER until the ragged tail of memory is reached)."""
        if self.frontier & ((1 << MAX_PAGE_ORDER) - 1):
            return 0
        return (self.nr_pages - self.frontier) >> MAX_PAGE_ORDER

    def _flush_tail(self) -> None:
        """Once only the ragged tail of memory (less than a max-order block, when RAM is
        not a multiple of 4 MiB) is left above the frontier, put it on the free lists, so
        that the fallback paths, which look only at the lists, see it."""
        if self.frontier < self.nr_pages and not self._frontier_blocks():
            while (carved := self._carve()) is not None:
                self.free_lists[carved[1]][MIGRATE_MOVABLE][carved[0]] = None

    # -- allocation ----------------------------------------------------------------------
    def _set_block_mt(self, pfn: int, order: int, mt: int) -> None:
        """set_pageblock_migratetype() over every pageblock of the block (or the one
        holding it)."""
        first = pfn >> PAGEBLOCK_ORDER
        n = 1 << (order - PAGEBLOCK_ORDER) if order >= PAGEBLOCK_ORDER else 1
        for b in range(first, first + n):
            if mt == MIGRATE_MOVABLE:
                self.block_mt.pop(b, None)
            else:
                self.block_mt[b] = mt

    def _carve(self) -> tuple[int, int] | None:
        """The next block above the frontier (max order unless near the end of memory),
        taken off it; None once memory above is used up. Its pageblocks are movable (a
        carved block was never handed out, so nobody changed their type)."""
        if self.frontier >= self.nr_pages:
            return None
        pfn = self.frontier
        o = MAX_PAGE_ORDER
        while o and (pfn & ((1 << o) - 1) or pfn + (1 << o) > self.nr_pages):
            o -= 1
        self.frontier = pfn + (1 << o)
        return pfn, o

    def _take(self, order: int, mt: int) -> tuple[int, int] | None:
        """Remove and return the first free block (pfn, order) of ``mt`` at ``order`` or
        above (smallest first); the frontier counts as the movable max-order list."""
        free_lists = self.free_lists
        for o in range(order, MAX_PAGE_ORDER + 1):
            area = free_lists[o][mt]
            if area:
                return area.popitem()[0], o
        if mt == MIGRATE_MOVABLE:
            while True:
                carved = self._carve()
                if carved is None:
                    return None
                pfn, o = carved
                if o >= order:
                    return pfn, o
                free_lists[o][MIGRATE_MOVABLE][pfn] = None  # a ragged tail piece
        return None

    def _expand(self, pfn: int, low: int, high: int, mt: int) -> None:
        """expand(): free the high halves down to ``low`` on the lists of ``mt``."""
        free_lists = self.free_lists
        while high > low:
            high -= 1
            free_lists[high][mt][pfn + (1 << high)] = None

    def alloc(self, order: int = 0, mt: int = MIGRATE_MOVABLE) -> int | None:
        """The head pfn of a free block of ``2**order`` pages for an allocation of migrate
        type ``mt`` (__rmqueue()), or None if there is none."""
        if not 0 <= order <= MAX_PAGE_ORDER:
            raise ValueError(f"order {order} outside 0..{MAX_PAGE_ORDER}")
        area = self.free_lists[order][mt]
        if area:  # the common case: a block of the right size and type
            pfn = area.popitem()[0]
            self.nr_free -= 1 << order
            return pfn
        got = self._take(order, mt)
        if got is None:
            got = self._claim(order, mt)
            if got is None:
                stolen = self._steal(order, mt)
                if stolen is None:
                    return None
                pfn, o, fallback = stolen
                self._expand(pfn, order, o, fallback)
                self.nr_free -= 1 << order
                return pfn
        pfn, o = got
        self._expand(pfn, order, o, mt)
        self.nr_free -= 1 << order
        return pfn

    def _has(self, order: int, mt: int) -> bool:
        if self.free_lists[order][mt]:
            return True
        return order == MAX_PAGE_ORDER and mt == MIGRATE_MOVABLE and self._frontier_blocks() > 0

    def _pop(self, order: int, mt: int) -> int:
        area = self.free_lists[order][mt]
        if area:
            return area.popitem()[0]
        carved = self._carve()
        assert carved is not None and carved[1] == MAX_PAGE_ORDER
        return carved[0]

    def _claim(self, order: int, mt: int) -> tuple[int, int] | None:
        """__rmqueue_claim() + try_to_claim_block(): from the largest free block of a
        fallback type down; returns the block now of type ``mt`` (pfn, its order) or None."""
        self._flush_tail()
        for current in range(MAX_PAGE_ORDER, order - 1, -1):
            fallback = next((f for f in _FALLBACKS[mt] if self._has(current, f)), None)
            if fallback is None:
                continue
            # should_try_claim_block(): a movable allocation claims only from blocks of
            # pageblock_order / 2 and up (find_suitable_fallback() returns -2: give up)
            if current < PAGEBLOCK_ORDER // 2 and mt == MIGRATE_MOVABLE:
                return None
            if current >= PAGEBLOCK_ORDER:  # take ownership of the whole block
                pfn = self._pop(current, fallback)
                self._set_block_mt(pfn, current, mt)
                return pfn, current
            # a block below pageblock size: claim its pageblock if half of it is free
            # (alike pages: the model counts none, as for an unmovable allocation from a
            # movable block)
            head = next(iter(self.free_lists[current][fallback]))
            start = head & -(1 << PAGEBLOCK_ORDER)
            blocks = self._free_in_pageblock(start, fallback)
            if sum(1 << o for _, o in blocks) < 1 << (PAGEBLOCK_ORDER - 1):
                continue  # try_to_claim_block() fails: a smaller order may still do
            for p, o in blocks:  # __move_freepages_block()
                del self.free_lists[o][fallback][p]
                self.free_lists[o][mt][p] = None
            self._set_block_mt(start, 0, mt)
            return self._take(order, mt)
        return None

    def _free_in_pageblock(self, start: int, mt: int) -> list[tuple[int, int]]:
        """The free blocks (pfn, order) inside the pageblock at ``start`` (on ``mt``'s
        lists: a free block sits on its pageblock's list)."""
        out: list[tuple[int, int]] = []
        free_lists = self.free_lists
        for o in range(PAGEBLOCK_ORDER):
            area = free_lists[o][mt]
            if not area:
                continue
            step = 1 << o
            if len(area) < (1 << PAGEBLOCK_ORDER) >> o:
                out.extend((p, o) for p in area if start <= p < start + (1 << PAGEBLOCK_ORDER))
            else:
                out.extend(
                    (p, o) for p in range(start, start + (1 << PAGEBLOCK_ORDER), step) if p in area
                )
        return out

    def _steal(self, order: int, mt: int) -> tuple[int, int, int] | None:
        """__rmqueue_steal(): the smallest block of a fallback type; its pageblock keeps its
        type (the halves go back to that type's lists). Returns (pfn, order, its type)."""
        self._flush_tail()
        for current in range(order, MAX_PAGE_ORDER + 1):
            for fallback in _FALLBACKS[mt]:
                if self._has(current, fallback):
                    return self._pop(current, fallback), current, fallback
        return None

    # -- freeing -------------------------------------------------------------------------
    def free(self, pfn: int, order: int = 0) -> None:
        """Return the block at ``pfn`` of ``2**order`` pages (the caller guarantees it was
        allocated with that order and is not already free) to its pageblock's list."""
        self.nr_free += 1 << order
        free_lists = self.free_lists
        block_mt = self.block_mt
        mt = block_mt.get(pfn >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)
        while order < MAX_PAGE_ORDER:
            buddy = pfn ^ (1 << order)
            if order < PAGEBLOCK_ORDER:
                area = free_lists[order][mt]
                if buddy not in area:
                    break
                del area[buddy]
            else:
                # a buddy in another pageblock may have another type: merging makes the
                # whole block ours (change_pageblock_range())
                bmt = block_mt.get(buddy >> PAGEBLOCK_ORDER, MIGRATE_MOVABLE)
                area = free_lists[order][bmt]
                if buddy not in area:
                    break
                del area[buddy]
                if bmt != mt:
                    self._set_block_mt(buddy, order, mt)
            pfn &= ~(1 << order)
            order += 1
        free_lists[order][mt][pfn] = None

    def isolate_free(self, start: int) -> list[int]:
        """isolate_freepages_block() for the pageblock at ``start``: if it is a suitable
        migration target (movable, or inside a free block of a pageblock or more:
        suitable_migration_target()), take every free page in it off the free lists and
        return them as order-0 frames (split_free_pages()); else nothing."""
        if start >= self.frontier:
            return []
        for o in range(PAGEBLOCK_ORDER, MAX_PAGE_ORDER + 1):
            head = start & -(1 << o)
            for mt in range(MIGRATE_TYPES):
                if head in self.free_lists[o][mt]:
                    # a free block covering the pageblock: take the pageblock, give back
                    # the rest of the block (it stays free, split like expand())
                    del self.free_lists[o][mt][head]
                    self.nr_free -= 1 << o
                    for b in range(head, head + (1 << o), 1 << PAGEBLOCK_ORDER):
                        if b != start:
                            self.free(b, PAGEBLOCK_ORDER)
                    return list(range(start, start + (1 << PAGEBLOCK_ORDER)))
        if self.migratetype(start) != MIGRATE_MOVABLE:
            return []
        out: list[int] = []
        for p, o in self._free_in_pageblock(start, MIGRATE_MOVABLE):
            del self.free_lists[o][MIGRATE_MOVABLE][p]
            self.nr_free -= 1 << o
            out.extend(range(p, p + (1 << o)))
        return out

    def alloc_contig(self, order: int) -> int | None:
        """alloc_contig_pages() for a gigantic folio (``order > MAX_PAGE_ORDER``, a 1 GiB
        hugetlb page): the head of a free, naturally aligned run of ``2**order`` pages made
        of whole free max-order blocks, lowest candidate first, or None. The kernel
        isolates and migrates what is in the way (alloc_contig_range()); here the run must
        already be free."""
        if order <= MAX_PAGE_ORDER:
            raise ValueError(f"order {order}: alloc_contig() is for orders above {MAX_PAGE_ORDER}")
        n = 1 << order
        step = 1 << MAX_PAGE_ORDER
        tops = self.free_lists[MAX_PAGE_ORDER]
        top = {p: mt for mt, d in enumerate(tops) for p in d}
        candidates = sorted(p for p in top if not p & (n - 1))
        candidates.append((self.frontier + n - 1) & -n)
        for pfn in candidates:
            if pfn + n > self.nr_pages:
                continue
            blocks = range(pfn, pfn + n, step)
            if not all(b in top or b >= self.frontier for b in blocks):
                continue
            while self.frontier < pfn + n:  # carve what lies above the frontier up to the end
                carved = self._carve()
                assert carved is not None
                self.free_lists[carved[1]][MIGRATE_MOVABLE][carved[0]] = None
                top[carved[0]] = MIGRATE_MOVABLE
            for b in blocks:
                del tops[top[b]][b]
            self.nr_free -= n
            return pfn
        return None

    def free_contig(self, pfn: int, order: int) -> None:
        """free_contig_range(): a gigantic run goes back as max-order blocks."""
        for b in range(pfn, pfn + (1 << order), 1 << MAX_PAGE_ORDER):
            self.free(b, MAX_PAGE_ORDER)

    def check(self) -> None:
        """Assert the invariants of the module docstring (a full scan: tests only)."""
        spans: list[tuple[int, int]] = []
        for order, lists in enumerate(self.free_lists):
            every = {p for d in lists for p in d}
            for mt, area in enumerate(lists):
                for pfn in area:
                    assert pfn & ((1 << order) - 1) == 0, f"block {pfn:#x} misaligned for {order}"
                    assert pfn + (1 << order) <= self.frontier, f"block {pfn:#x} above frontier"
                    if order < MAX_PAGE_ORDER:
                        assert pfn ^ (1 << order) not in every, f"unmerged buddies at {pfn:#x}"
                    last = pfn + max(1 << order, 1 << PAGEBLOCK_ORDER)
                    for b in range(pfn >> PAGEBLOCK_ORDER, last >> PAGEBLOCK_ORDER):
                        assert self.block_mt.get(b, MIGRATE_MOVABLE) == mt, (
                            f"free block {pfn:#x} on the {MIGRATETYPE_NAMES[mt]} list of a "
                            f"{MIGRATETYPE_NAMES[self.block_mt.get(b, MIGRATE_MOVABLE)]} pageblock"
                        )
                    spans.append((pfn, pfn + (1 << order)))
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"free blocks overlap at {start:#x}"
        listed = sum(end - start for start, end in spans)
        assert self.nr_free == listed + self.nr_pages - self.frontier, "nr_free mismatch"
