"""The per-mm set of VMAs, ordered by address (the kernel's maple tree), and the free gaps
between them (which the maple tree also keeps, for O(log n) mmap placement).

Lookups are two bisections: VMA starts live in a ``SortedList`` and the VMAs in a dict keyed
by start. The floor/ceiling searches read the SortedList's sublists (``_lists``/``_maxes``,
stable internals of the pinned sortedcontainers 2.4.0) so that no positional index has to be
rebuilt after every insert: that index made lookups slower as the tree grew. For the same
reason a run of consecutive keys (an munmap of many VMAs) is cut out of those sublists
directly (``_Ordered.delete_between``), where ``SortedList`` would delete key by key.

Part of the VMA core: imports nothing but ``vma.py`` (and sortedcontainers).
"""

from __future__ import annotations

import copy
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedList

from vmsim.mm.vma import Vma

__all__ = ["FreeSpace", "VmaTree"]


class _Ordered:
    """A sorted set of ints with fast floor/ceiling (shared by VMA starts and gap starts)."""

    __slots__ = ("sl",)

    def __init__(self) -> None:
        self.sl = SortedList()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Ordered:
        """A copy of the keys (ints: nothing to copy deeper), in one sorted build."""
        new = _Ordered.__new__(_Ordered)
        new.sl = self.sl.copy()
        memo[id(self)] = new
        return new

    def add(self, x: int) -> None:
        """SortedList.add() with its common case inline: the sublist stays within twice the
        load factor and there is no positional index to keep up (we never build one)."""
        sl = self.sl
        maxes = sl._maxes
        if maxes and not sl._index:
            pos = bisect_right(maxes, x)
            lists = sl._lists
            if pos == len(maxes):
                pos -= 1
                sub = lists[pos]
                sub.append(x)
                maxes[pos] = x
            else:
                sub = lists[pos]
                insort(sub, x)
            sl._len += 1
            if len(sub) > sl._load << 1:
                sl._expand(pos)
            return
        sl.add(x)

    def add2(self, x: int, y: int) -> None:
        """Add ``x < y``, two keys with no key between them (the two new VMAs of a range cut
        out of the middle of one): one search, one slice insertion."""
        sl = self.sl
        maxes = sl._maxes
        if maxes and not sl._index:
            pos = bisect_right(maxes, x)
            lists = sl._lists
            if pos == len(maxes):
                pos -= 1
                sub = lists[pos]
                sub.append(x)
                sub.append(y)
                maxes[pos] = y
            else:
                sub = lists[pos]
                i = bisect_right(sub, x)
                sub[i:i] = (x, y)  # the next key (and so this sublist's max) is above y
            sl._len += 2
            if len(sub) > sl._load << 1:
                sl._expand(pos)
            return
        self.add(x)
        self.add(y)

    def remove(self, x: int) -> None:
        """SortedList.remove() of a present key, its common case inline (the sublist stays
        above half the load factor, no positional index)."""
        sl = self.sl
        maxes = sl._maxes
        pos = bisect_left(maxes, x)
        sub = sl._lists[pos]
        i = bisect_left(sub, x)
        assert sub[i] == x, x
        if len(sub) > (sl._load >> 1) + 1 and not sl._index:
            del sub[i]
            maxes[pos] = sub[-1]
            sl._len -= 1
            return
        sl._delete(pos, i)

    def floor(self, x: int) -> int | None:
        """Largest key <= x."""
        maxes = self.sl._maxes
        if not maxes:
            return None
        pos = bisect_right(maxes, x)
        lists = self.sl._lists
        if pos == len(maxes):
            k: int = lists[-1][-1]
            return k
        sub = lists[pos]
        i = bisect_right(sub, x)
        if i:
            k = sub[i - 1]
            return k
        if pos:
            k = lists[pos - 1][-1]
            return k
        return None

    def ceil(self, x: int) -> int | None:
        """Smallest key >= x."""
        maxes = self.sl._maxes
        pos = bisect_left(maxes, x)
        if pos == len(maxes):
            return None
        sub = self.sl._lists[pos]
        k: int = sub[bisect_left(sub, x)]
        return k

    def higher(self, x: int) -> int | None:
        """Smallest key > x."""
        maxes = self.sl._maxes
        pos = bisect_right(maxes, x)
        if pos == len(maxes):
            return None
        sub = self.sl._lists[pos]
        k: int = sub[bisect_right(sub, x)]
        return k

    def between(self, lo: int, hi: int) -> list[int]:
        """The keys k with ``lo <= k < hi``, in order."""
        maxes = self.sl._maxes
        lists = self.sl._lists
        pos = bisect_left(maxes, lo)
        n = len(maxes)
        if pos == n:
            return []
        sub = lists[pos]
        i = bisect_left(sub, lo)
        j = bisect_left(sub, hi)
        out: list[int] = sub[i:j]
        while j == len(sub) and pos + 1 < n:
            pos += 1
            sub = lists[pos]
            j = bisect_left(sub, hi)
            out.extend(sub[:j])
        return out

    def delete_between(self, lo: int, hi: int) -> int:
        """Delete the keys k with ``lo <= k < hi``; returns how many there were.

        Cuts the run out of the sublists in one slice each, keeping the SortedList's
        invariants: no empty sublist, ``_maxes[i] == _lists[i][-1]``, ``_len``, sublists of
        at least half the load factor (the two cut ends are merged into a neighbour when
        shorter, as SortedList._delete() does), and the positional index (``_index``)
        dropped, to be rebuilt if ever asked for.
        """
        sl = self.sl
        maxes = sl._maxes
        lists = sl._lists
        pos = first = bisect_left(maxes, lo)
        removed = 0
        while pos < len(maxes):
            sub = lists[pos]
            i = bisect_left(sub, lo)
            j = bisect_left(sub, hi)
            if i == j:
                break
            del sub[i:j]
            removed += j - i
            if not sub:
                del lists[pos]
                del maxes[pos]
                continue
            maxes[pos] = sub[-1]
            if sub[-1] >= hi:  # the run ended inside this sublist
                break
            pos += 1
        if removed:
            sl._len -= removed
            del sl._index[:]
            self._rebalance(pos)
            if first < pos:
                self._rebalance(first)
        return removed

    def _rebalance(self, pos: int) -> None:
        """Merge sublist ``pos`` into its left neighbour (the right one for the first) if it
        is shorter than half the load factor; split the result if it grew too long."""
        sl = self.sl
        lists = sl._lists
        if pos >= len(lists) or len(lists) < 2 or len(lists[pos]) >= sl._load >> 1:
            return
        if not pos:
            pos = 1
        maxes = sl._maxes
        lists[pos - 1].extend(lists[pos])
        maxes[pos - 1] = lists[pos - 1][-1]
        del lists[pos]
        del maxes[pos]
        sl._expand(pos - 1)


class FreeSpace:
    """The free ranges of an address space, ``[start, end)`` keyed by start, coalesced.

    Kept in step with the VMA tree through ``occupy``/``release`` at the few places where
    the mapped space changes (a new VMA, a merge into free space, an unmap, stack growth).
    ``_ends`` maps each free range's start to its end and ``_starts`` its end to its start,
    so a range freed next to free space finds its free neighbours without a search.
    """

    __slots__ = ("_ends", "_keys", "_starts", "used")

    def __init__(self, limit: int) -> None:
        self._keys = _Ordered()
        self._ends: dict[int, int] = {}
        self._starts: dict[int, int] = {}
        self._add(0, limit)
        self.used = 0  # bytes mapped

    def __deepcopy__(self, memo: dict[int, Any]) -> FreeSpace:
        """Ranges are ints: the copy shares nothing and copies no element one by one."""
        new = FreeSpace.__new__(FreeSpace)
        new._keys = copy.deepcopy(self._keys, memo)
        new._ends = dict(self._ends)
        new._starts = dict(self._starts)
        new.used = self.used
        memo[id(self)] = new
        return new

    def _add(self, start: int, end: int) -> None:
        self._keys.add(start)
        self._ends[start] = end
        self._starts[end] = start

    def _drop(self, start: int) -> int:
        self._keys.remove(start)
        end = self._ends.pop(start)
        del self._starts[end]
        return end

    def _set_end(self, start: int, old_end: int, end: int) -> None:
        """The free range at ``start`` now ends at ``end`` (its key stays)."""
        self._ends[start] = end
        del self._starts[old_end]
        self._starts[end] = start

    def occupy(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` mapped; it must lie inside one free range."""
        ends = self._ends
        fe = ends.get(start)
        fs: int | None = start
        if fe is None:
            fs = self._keys.floor(start)
            assert fs is not None, (hex(start), hex(end))
            fe = ends[fs]
        assert fs is not None and fe >= end, (hex(start), hex(end), hex(fe))
        self.used += end - start
        if fs < start:
            self._set_end(fs, fe, start)  # the free range keeps its start: no key moves
        else:
            self._drop(fs)
        if end < fe:
            self._add(end, fe)

    def release(self, start: int, end: int) -> None:
        """Mark ``[start, end)`` free, merging with free neighbours."""
        self.used -= end - start
        self._free(start, end)

    def release_span(self, start: int, end: int, mapped: int) -> None:
        """Mark ``[start, end)`` free where ``mapped`` bytes of it were mapped and the rest
        was free already (the gaps between a run of VMAs that all go away)."""
        self.used -= mapped
        ends = self._ends
        starts = self._starts
        keys = self._keys
        for k in keys.between(start, end):
            del starts[ends.pop(k)]
        keys.delete_between(start, end)
        self._free(start, end)

    def _free(self, start: int, end: int) -> None:
        """Add the free range ``[start, end)`` (no free range overlaps it), coalesced with
        the free ranges that touch it."""
        before = self._starts.get(start)  # a free range [before, start)
        after_end = self._ends.get(end)  # a free range [end, after_end)
        if after_end is not None:
            self._drop(end)
        new_end = end if after_end is None else after_end
        if before is None:
            self._add(start, new_end)
        else:
            self._set_end(before, start, new_end)  # grows the range before: its key stays

    def descending(self, below: int) -> Iterator[tuple[int, int]]:
        """Free ranges starting below ``below``, highest first."""
        sl = self._keys.sl
        for s in sl.irange(maximum=below, inclusive=(True, False), reverse=True):
            yield s, self._ends[s]

    def ascending(self, start: int) -> Iterator[tuple[int, int]]:
        """Free ranges ending above ``start``, lowest first."""
        sl = self._keys.sl
        first = self._keys.floor(start)
        lo = first if first is not None else start
        for s in sl.irange(minimum=lo):
            yield s, self._ends[s]

    def ranges(self) -> list[tuple[int, int]]:
        return [(s, self._ends[s]) for s in self._keys.sl]


class VmaTree:
    """Sorted, non-overlapping VMAs. ``len(tree)`` is the mm's ``map_count``.

    ``insert``/``remove`` keep the free-space index unchanged (splits and merges of space
    that is already mapped); ``insert_new``/``remove_unmapped`` and ``occupy`` change it.
    """

    __slots__ = ("_keys", "_vmas", "free")

    def __init__(self, limit: int = 1 << 64) -> None:
        self._keys = _Ordered()
        self._vmas: dict[int, Vma] = {}
        self.free = FreeSpace(limit)

    def __deepcopy__(self, memo: dict[int, Any]) -> VmaTree:
        """copy.deepcopy() of the tree (a replay's snapshot of its model): each VMA copied
        once (through ``memo``, so a VMA also referenced elsewhere stays one object), the
        keys and free ranges copied whole."""
        new = VmaTree.__new__(VmaTree)
        memo[id(self)] = new
        new._keys = copy.deepcopy(self._keys, memo)
        new.free = copy.deepcopy(self.free, memo)
        table: dict[int, Vma] = {}
        get = memo.get
        for start, vma in self._vmas.items():
            dup = get(id(vma))
            if dup is None:
                if vma.file is None and vma.anon_vma is None:
                    # Vma.__deepcopy__() inline: most VMAs point at nothing to copy
                    dup = Vma(
                        start,
                        vma.end,
                        vma.flags,
                        vma.pgoff,
                        None,
                        None,
                        vma.anon_singular,
                        vma.name,
                    )
                    dup.swap_ra = vma.swap_ra
                    memo[id(vma)] = dup
                else:
                    dup = vma.__deepcopy__(memo)
            table[start] = dup
        new._vmas = table
        return new

    @classmethod
    def from_sorted(cls, vmas: list[Vma], limit: int = 1 << 64) -> VmaTree:
        """A tree of ``vmas`` (in address order, not overlapping), built in one pass: the
        same tree as inserting each with ``insert_new``, without a search per VMA."""
        tree = cls.__new__(cls)
        starts = [v.start for v in vmas]
        keys = _Ordered.__new__(_Ordered)
        keys.sl = SortedList(starts)
        tree._keys = keys
        tree._vmas = dict(zip(starts, vmas, strict=True))
        free = FreeSpace.__new__(FreeSpace)
        gaps_start = []
        gaps_end = []
        cursor = 0
        used = 0
        for v in vmas:
            if v.start > cursor:
                gaps_start.append(cursor)
                gaps_end.append(v.start)
            cursor = v.end
            used += v.end - v.start
        if cursor < limit:
            gaps_start.append(cursor)
            gaps_end.append(limit)
        fkeys = _Ordered.__new__(_Ordered)
        fkeys.sl = SortedList(gaps_start)
        free._keys = fkeys
        free._ends = dict(zip(gaps_start, gaps_end, strict=True))
        free._starts = dict(zip(gaps_end, gaps_start, strict=True))
        free.used = used
        tree.free = free
        return tree

    def __len__(self) -> int:
        return len(self._vmas)

    def __iter__(self) -> Iterator[Vma]:
        vmas = self._vmas
        return (vmas[s] for s in self._keys.sl)

    # -------------------------------------------------------------- updates
    def insert(self, vma: Vma) -> None:
        self._keys.add(vma.start)
        self._vmas[vma.start] = vma

    def insert_pair(self, low: Vma, high: Vma) -> None:
        """Insert two VMAs that start inside the range of one VMA (a split in three)."""
        x = low.start
        y = high.start
        # self._keys.add2(x, y), its common case inline: the fill-to-limit hot path
        sl = self._keys.sl
        maxes = sl._maxes
        if maxes and not sl._index:
            pos = bisect_right(maxes, x)
            lists = sl._lists
            if pos == len(maxes):
                pos -= 1
                sub = lists[pos]
                sub.append(x)
                sub.append(y)
                maxes[pos] = y
            else:
                sub = lists[pos]
                i = bisect_right(sub, x)
                sub[i:i] = (x, y)
            sl._len += 2
            if len(sub) > sl._load << 1:
                sl._expand(pos)
        else:
            self._keys.add2(x, y)
        vmas = self._vmas
        vmas[x] = low
        vmas[y] = high

    def remove(self, vma: Vma) -> None:
        self._keys.remove(vma.start)
        del self._vmas[vma.start]

    def insert_new(self, vma: Vma) -> None:
        """Insert a VMA over free space."""
        self.free.occupy(vma.start, vma.end)
        self.insert(vma)

    def remove_unmapped(self, vma: Vma) -> None:
        """Remove a VMA whose range becomes free."""
        self.remove(vma)
        self.free.release(vma.start, vma.end)

    def remove_unmapped_many(self, vmas: list[Vma]) -> None:
        """Remove VMAs whose ranges become free: ``vmas`` in address order, as
        vms_gather_munmap_vmas() collects them. A run that is every VMA of its span (nothing
        else mapped between them) leaves the tree in one cut, the others one by one."""
        n = len(vmas)
        if n > 8:
            lo = vmas[0].start
            hi = vmas[-1].end
            keys = self._keys
            if len(keys.between(lo, hi)) == n:
                keys.delete_between(lo, hi)
                table = self._vmas
                mapped = 0
                for v in vmas:
                    del table[v.start]
                    mapped += v.end - v.start
                self.free.release_span(lo, hi, mapped)
                return
        keys = self._keys
        table = self._vmas
        free = self.free
        for v in vmas:
            start = v.start
            keys.remove(start)
            del table[start]
            free.release(start, v.end)

    def occupy(self, start: int, end: int) -> None:
        """A VMA grew over the free range ``[start, end)``."""
        self.free.occupy(start, end)

    def move_start(self, vma: Vma, new_start: int) -> None:
        """Change ``vma.start`` keeping the index consistent (space unchanged)."""
        self.remove(vma)
        vma.start = new_start
        self.insert(vma)

    # -------------------------------------------------------------- lookups
    def find(self, addr: int) -> Vma | None:
        """find_vma(): the first VMA with ``end > addr``."""
        k = self._keys.floor(addr)
        if k is not None:
            vma = self._vmas[k]
            if vma.end > addr:
                return vma
            k = self._keys.higher(k)
        else:
            k = self._keys.ceil(addr)
        return self._vmas[k] if k is not None else None

    def lookup(self, addr: int) -> Vma | None:
        """vma_lookup(): the VMA containing ``addr``."""
        # self._keys.floor(addr), inline: every replayed call looks up its address
        sl = self._keys.sl
        maxes = sl._maxes
        if not maxes:
            return None
        pos = bisect_right(maxes, addr)
        lists = sl._lists
        if pos == len(maxes):
            k: int = lists[-1][-1]
        else:
            sub = lists[pos]
            i = bisect_right(sub, addr)
            if i:
                k = sub[i - 1]
            elif pos:
                k = lists[pos - 1][-1]
            else:
                return None
        vma = self._vmas[k]
        return vma if vma.end > addr else None

    def find_intersection(self, start: int, end: int) -> Vma | None:
        """find_vma_intersection(): the first VMA overlapping ``[start, end)``."""
        vma = self.find(start)
        if vma is not None and vma.start < end:
            return vma
        return None

    def prev(self, vma: Vma) -> Vma | None:
        """The VMA before ``vma`` (not necessarily adjacent)."""
        return self.prev_of(vma.start)

    def next(self, vma: Vma) -> Vma | None:
        """The VMA after ``vma`` (not necessarily adjacent)."""
        k = self._keys.higher(vma.start)
        return self._vmas[k] if k is not None else None

    def prev_of(self, addr: int) -> Vma | None:
        """The last VMA that starts below ``addr``."""
        if addr <= 0:
            return None
        k = self._keys.floor(addr - 1)
        return self._vmas[k] if k is not None else None

    def range(self, start: int, end: int) -> list[Vma]:
        """All VMAs overlapping ``[start, end)``, in address order."""
        first = self.find(start)
        if first is None or first.start >= end:
            return []
        vmas = self._vmas
        return [vmas[key] for key in self._keys.between(first.start, end)]

    def first(self) -> Vma | None:
        sl = self._keys.sl
        return self._vmas[sl[0]] if sl else None

    def last(self) -> Vma | None:
        sl = self._keys.sl
        return self._vmas[sl[-1]] if sl else None

    def items_from(self, addr: int, reverse: bool = False) -> Iterator[Vma]:
        vmas = self._vmas
        sl = self._keys.sl
        if reverse:
            for key in sl.irange(maximum=addr, inclusive=(True, False), reverse=True):
                yield vmas[key]
        else:
            for key in sl.irange(minimum=addr):
                yield vmas[key]
