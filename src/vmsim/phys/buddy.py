"""The buddy allocator: free physical memory as power-of-two blocks of page frames.

Mirrors the shape of mm/page_alloc.c: ``free_area[order]`` holds free blocks of ``2**order``
pages, ``order <= MAX_PAGE_ORDER`` (10, 4 MiB); an allocation takes the smallest free block that
fits and splits it, keeping the low half and freeing the high halves (expand()); a free merges a
block with its buddy (``pfn ^ (1 << order)``) while the buddy is free and of the same order
(__free_one_page()).

What differs, so that a 4 PiB machine costs nothing until used: memory above ``frontier`` has
never been handed out and is implicitly free; it is carved into blocks only when the free lists
run dry. Host memory is therefore proportional to the number of blocks ever split, not to RAM.

Invariants (``check()``): free blocks are aligned to their order, lie below ``frontier``, do not
overlap, and no two free buddies of the same order coexist below MAX_PAGE_ORDER (they would have
merged); ``nr_free`` equals the pages in the free lists plus the pages above ``frontier``.
Allocation and free are O(MAX_PAGE_ORDER). Free lists pop the most recently freed block first,
so freed frames are reused hot, as the per-cpu page lists do.
"""

from __future__ import annotations

import itertools

__all__ = ["MAX_PAGE_ORDER", "BuddyAllocator"]

MAX_PAGE_ORDER = 10  # include/linux/mmzone.h (CONFIG_ARCH_FORCE_MAX_ORDER default on x86-64)


class BuddyAllocator:
    """Page frames ``[0, nr_pages)`` handed out in power-of-two blocks."""

    def __init__(self, nr_pages: int) -> None:
        if nr_pages <= 0:
            raise ValueError(f"{nr_pages} pages: need at least one")
        self.nr_pages = nr_pages
        # free_area[order]: head pfn -> None; a dict for O(1) buddy lookup and LIFO popitem().
        self.free_area: list[dict[int, None]] = [{} for _ in range(MAX_PAGE_ORDER + 1)]
        self.frontier = 0
        self.nr_free = nr_pages

    def _carve(self, order: int) -> tuple[int, int] | None:
        """Take the next block of order >= ``order`` from above the frontier; blocks too small
        (near the end of memory) go to the free lists. None if memory above is too small."""
        free_area = self.free_area
        while self.frontier < self.nr_pages:
            pfn = self.frontier
            o = MAX_PAGE_ORDER
            while o and (pfn & ((1 << o) - 1) or pfn + (1 << o) > self.nr_pages):
                o -= 1
            self.frontier = pfn + (1 << o)
            if o >= order:
                return pfn, o
            free_area[o][pfn] = None
        return None

    def alloc(self, order: int = 0) -> int | None:
        """The head pfn of a free block of ``2**order`` pages, or None if there is none."""
        if not 0 <= order <= MAX_PAGE_ORDER:
            raise ValueError(f"order {order} outside 0..{MAX_PAGE_ORDER}")
        free_area = self.free_area
        area = free_area[order]
        if area:
            pfn = area.popitem()[0]
            self.nr_free -= 1 << order
            return pfn
        for o in range(order + 1, MAX_PAGE_ORDER + 1):
            if free_area[o]:
                pfn = free_area[o].popitem()[0]
                break
        else:
            carved = self._carve(order)
            if carved is None:
                return None
            pfn, o = carved
        while o > order:  # expand(): free the high halves, keep the low one
            o -= 1
            free_area[o][pfn + (1 << o)] = None
        self.nr_free -= 1 << order
        return pfn

    def free(self, pfn: int, order: int = 0) -> None:
        """Return the block at ``pfn`` of ``2**order`` pages (the caller guarantees it was
        allocated with that order and is not already free)."""
        self.nr_free += 1 << order
        free_area = self.free_area
        while order < MAX_PAGE_ORDER:
            buddy = pfn ^ (1 << order)
            area = free_area[order]
            if buddy not in area:
                break
            del area[buddy]
            pfn &= ~(1 << order)
            order += 1
        free_area[order][pfn] = None

    def check(self) -> None:
        """Assert the invariants of the module docstring (a full scan: tests only)."""
        spans: list[tuple[int, int]] = []
        for order, area in enumerate(self.free_area):
            for pfn in area:
                assert pfn & ((1 << order) - 1) == 0, f"block {pfn:#x} misaligned for {order}"
                assert pfn + (1 << order) <= self.frontier, f"block {pfn:#x} above frontier"
                if order < MAX_PAGE_ORDER:
                    assert pfn ^ (1 << order) not in area, f"unmerged buddies at {pfn:#x}"
                spans.append((pfn, pfn + (1 << order)))
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"free blocks overlap at {start:#x}"
        listed = sum(end - start for start, end in spans)
        assert self.nr_free == listed + self.nr_pages - self.frontier, "nr_free mismatch"
