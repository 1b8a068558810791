"""The per-mm set of VMAs, ordered by address (the kernel's maple tree).

Every lookup is O(log n): the VMAs live in a ``SortedDict`` keyed by ``vm_start``.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from vmsim.mm.vma import Vma


class VmaTree:
    """Sorted, non-overlapping VMAs. ``len(tree)`` is the mm's ``map_count``."""

    __slots__ = ("_keys", "_map")

    def __init__(self) -> None:
        self._map: SortedDict = SortedDict()
        self._keys = self._map.keys()

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[Vma]:
        return iter(self._map.values())

    def insert(self, vma: Vma) -> None:
        self._map[vma.start] = vma

    def remove(self, vma: Vma) -> None:
        del self._map[vma.start]

    def move_start(self, vma: Vma, new_start: int) -> None:
        """Change ``vma.start`` keeping the index consistent."""
        del self._map[vma.start]
        vma.start = new_start
        self._map[new_start] = vma

    def find(self, addr: int) -> Vma | None:
        """find_vma(): the first VMA with ``end > addr``."""
        m = self._map
        i = m.bisect_right(addr) - 1
        if i >= 0:
            vma: Vma = m[self._keys[i]]
            if vma.end > addr:
                return vma
        i += 1
        if i < len(m):
            nxt: Vma = m[self._keys[i]]
            return nxt
        return None

    def lookup(self, addr: int) -> Vma | None:
        """vma_lookup(): the VMA containing ``addr``."""
        m = self._map
        i = m.bisect_right(addr) - 1
        if i >= 0:
            vma: Vma = m[self._keys[i]]
            if vma.end > addr:
                return vma
        return None

    def find_intersection(self, start: int, end: int) -> Vma | None:
        """find_vma_intersection(): the first VMA overlapping ``[start, end)``."""
        vma = self.find(start)
        if vma is not None and vma.start < end:
            return vma
        return None

    def prev(self, vma: Vma) -> Vma | None:
        """The VMA before ``vma`` (not necessarily adjacent)."""
        i = self._map.bisect_left(vma.start) - 1
        if i >= 0:
            p: Vma = self._map[self._keys[i]]
            return p
        return None

    def next(self, vma: Vma) -> Vma | None:
        """The VMA after ``vma`` (not necessarily adjacent)."""
        i = self._map.bisect_right(vma.start)
        if i < len(self._map):
            n: Vma = self._map[self._keys[i]]
            return n
        return None

    def prev_of(self, addr: int) -> Vma | None:
        """The last VMA that starts below ``addr``."""
        i = self._map.bisect_left(addr) - 1
        if i >= 0:
            p: Vma = self._map[self._keys[i]]
            return p
        return None

    def range(self, start: int, end: int) -> list[Vma]:
        """All VMAs overlapping ``[start, end)``, in address order."""
        first = self.find(start)
        if first is None or first.start >= end:
            return []
        out = [first]
        m = self._map
        for key in m.irange(first.start, end, inclusive=(False, False)):
            out.append(m[key])
        return out

    def highest_below(self, addr: int) -> Vma | None:
        """The VMA with the greatest start below ``addr``."""
        return self.prev_of(addr)

    def first(self) -> Vma | None:
        if not self._map:
            return None
        v: Vma = self._map.peekitem(0)[1]
        return v

    def last(self) -> Vma | None:
        if not self._map:
            return None
        v: Vma = self._map.peekitem(-1)[1]
        return v

    def items_from(self, addr: int, reverse: bool = False) -> Iterator[Vma]:
        m = self._map
        if reverse:
            for key in m.irange(maximum=addr, inclusive=(True, False), reverse=True):
                yield m[key]
        else:
            for key in m.irange(minimum=addr):
                yield m[key]
