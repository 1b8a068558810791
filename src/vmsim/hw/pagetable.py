"""x86-64 radix page tables, 4-level (48-bit) or 5-level (57-bit), stored sparsely.

Level numbers follow the hardware depth, leaf upwards: 1 PTE (4 KiB), 2 PMD (2 MiB),
3 PUD (1 GiB), 4 P4D (512 GiB), 5 PGD (256 TiB). With 4 levels the top table sits at level 4
and Linux calls it the PGD (the P4D is folded into it), as the CPU calls it the PML4.

Storage: one ``dict`` per level, ``entries[L][va >> shift(L)] = entry``: the key of an entry is
the virtual address it translates, shifted, so the index inside its table is ``key & 511`` and
the table holding it is ``key >> 9`` (the key of the upper entry that points to the table).
Entries are plain ints in the real bit layout; a table page exists only as the frame number
in its parent's entry (and ``root_pfn`` for the top one), obtained from ``alloc_table()`` and
returned with ``free_table()`` so that the frame layer can count ``PageTables``.

Invariants (``check_invariants()``): every stored entry is non-zero; an entry below the top
has a parent entry that is a table pointer (P set, PS clear); ``occupancy[L][t]`` is the number
of entries of table ``t`` at level ``L``; ``table_pages`` is 1 + the number of table pointers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

from vmsim.hw.pte import (
    PAGE_PRESENT,
    PAGE_PROTNONE,
    PAGE_PSE,
    PAGE_SHIFT,
    PAGE_TABLE,
    PTE_PFN_MASK,
)

__all__ = [
    "LEVEL_NAMES",
    "P4D_LEVEL",
    "PGD_LEVEL",
    "PMD_LEVEL",
    "PTE_LEVEL",
    "PUD_LEVEL",
    "Leaf",
    "Mapping",
    "PageTables",
    "WalkStep",
    "level_shift",
    "level_size",
]

PTE_LEVEL = 1
PMD_LEVEL = 2
PUD_LEVEL = 3
P4D_LEVEL = 4
PGD_LEVEL = 5
LEVEL_NAMES = {1: "PTE", 2: "PMD", 3: "PUD", 4: "P4D", 5: "PGD"}
PTRS_PER_TABLE = 512
_U64 = (1 << 64) - 1


def level_shift(level: int) -> int:
    """PAGE_SHIFT, PMD_SHIFT, PUD_SHIFT, P4D_SHIFT, PGDIR_SHIFT(5-level): 12, 21, 30, 39, 48."""
    return PAGE_SHIFT + 9 * (level - 1)


def level_size(level: int) -> int:
    """Bytes one entry at ``level`` maps: 4 KiB, 2 MiB, 1 GiB, 512 GiB, 256 TiB."""
    return 1 << level_shift(level)


class Leaf(NamedTuple):
    """The entry that ends a walk, and the level it sits at (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB)."""

    entry: int
    level: int


class WalkStep(NamedTuple):
    """One level of a walk: the table level, the index inside that table (``idx``: ``index``
    would shadow ``tuple.index``), the entry there."""

    level: int
    idx: int
    entry: int


class Mapping(NamedTuple):
    """A leaf with the (canonical) virtual address of the first byte it maps."""

    vaddr: int
    entry: int
    level: int


def _is_table(entry: int, level: int) -> bool:
    """An upper-level entry that points to a table (pmd_leaf()/pud_leaf() false, present)."""
    return level > PTE_LEVEL and bool(entry & PAGE_PRESENT) and not entry & PAGE_PSE


def _kernel_present(entry: int, level: int) -> bool:
    """pte_present() and pmd_present()/pud_present() for a leaf."""
    mask = PAGE_PRESENT | PAGE_PROTNONE
    if level > PTE_LEVEL:
        mask |= PAGE_PSE
    return bool(entry & mask)


class _SequentialFrames:
    """Default table allocator when none is injected: frame numbers 1, 2, 3, ... (0 is
    never handed out, so a table frame number is never mistaken for "none")."""

    def __init__(self) -> None:
        self.next = 1
        self.free: list[int] = []

    def alloc(self) -> int:
        if self.free:
            return self.free.pop()
        pfn = self.next
        self.next += 1
        return pfn

    def release(self, pfn: int) -> None:
        self.free.append(pfn)


class PageTables:
    """One address space's page tables (an ``mm->pgd`` and everything under it).

    ``alloc_table()`` returns the frame number of a fresh, zeroed table page;
    ``free_table(pfn)`` gives one back. The top table is allocated at construction
    (pgd_alloc()) and freed by :meth:`destroy` (pgd_free()).
    """

    __slots__ = (
        "_alloc",
        "_free",
        "entries",
        "levels",
        "occupancy",
        "root_pfn",
        "shifts",
        "table_pages",
        "va_bits",
        "va_mask",
    )

    def __init__(
        self,
        levels: int = 4,
        alloc_table: Callable[[], int] | None = None,
        free_table: Callable[[int], None] | None = None,
    ) -> None:
        if levels not in (4, 5):
            raise ValueError(f"x86-64 paging has 4 or 5 levels, not {levels}")
        if alloc_table is None or free_table is None:
            if alloc_table is not None or free_table is not None:
                raise ValueError("pass both alloc_table and free_table, or neither")
            frames = _SequentialFrames()
            alloc_table, free_table = frames.alloc, frames.release
        self._alloc = alloc_table
        self._free = free_table
        self.levels = levels
        self.va_bits = PAGE_SHIFT + 9 * levels  # 48 or 57
        self.va_mask = (1 << self.va_bits) - 1
        # Index 0 unused, so that entries[level] reads like the kernel's level names.
        self.shifts: tuple[int, ...] = tuple(level_shift(lv) for lv in range(levels + 1))
        self.entries: list[dict[int, int]] = [{} for _ in range(levels + 1)]
        self.occupancy: list[dict[int, int]] = [{} for _ in range(levels + 1)]
        self.root_pfn = self._alloc()
        self.table_pages = 1

    # --- addresses ----------------------------------------------------------------------
    def canonical(self, vaddr: int) -> bool:
        """Bits 63..va_bits-1 all equal (the CPU raises #GP, not #PF, otherwise)."""
        top = (vaddr & _U64) >> (self.va_bits - 1)
        return top == 0 or top == (1 << (65 - self.va_bits)) - 1

    def _masked(self, vaddr: int) -> int:
        if not 0 <= vaddr <= _U64 or not self.canonical(vaddr):
            raise ValueError(f"{vaddr:#x} is not a canonical {self.va_bits}-bit address")
        return vaddr & self.va_mask

    def _canon(self, masked: int) -> int:
        """Sign-extend a masked address back to its canonical 64-bit form."""
        if masked >> (self.va_bits - 1):
            return masked | (_U64 ^ self.va_mask)
        return masked

    def indices(self, vaddr: int) -> tuple[int, ...]:
        """The table index at every level, top first (pgd_index(), ..., pte_index())."""
        m = self._masked(vaddr)
        return tuple((m >> self.shifts[lv]) & 511 for lv in range(self.levels, 0, -1))

    # --- lookups ------------------------------------------------------------------------
    def get(self, vaddr: int) -> Leaf | None:
        """The leaf entry covering ``vaddr`` (present or not), or None if every slot on the
        way is none. Reads bottom-up: an entry can only exist under a valid parent."""
        m = self._masked(vaddr)
        ent = self.entries
        e = ent[1].get(m >> 12)
        if e is not None:
            return Leaf(e, 1)
        for lv in range(2, self.levels + 1):
            e = ent[lv].get(m >> self.shifts[lv])
            if e is not None:
                return None if _is_table(e, lv) else Leaf(e, lv)
        return None

    def walk(self, vaddr: int) -> list[WalkStep]:
        """Every entry a walk reads, top first, ending at a leaf or at a none entry."""
        m = self._masked(vaddr)
        steps: list[WalkStep] = []
        for lv in range(self.levels, 0, -1):
            key = m >> self.shifts[lv]
            e = self.entries[lv].get(key, 0)
            steps.append(WalkStep(lv, key & 511, e))
            if not _is_table(e, lv):
                break
        return steps

    # --- updates ------------------------------------------------------------------------
    def set(self, vaddr: int, entry: int, level: int = PTE_LEVEL) -> int:
        """Store ``entry`` as the leaf at ``level`` for the aligned ``vaddr``; return the old
        leaf entry (0 if none). Missing tables on the way are allocated and linked with
        PAGE_TABLE entries, as __pte_alloc()/__pmd_alloc()/pud_populate() do.

        A present PMD or PUD leaf must have PS set; a leaf cannot replace a table pointer,
        nor can a table be put under a large leaf: split or clear first. ``entry == 0``
        clears the slot without freeing tables.
        """
        if not PTE_LEVEL <= level <= PUD_LEVEL:
            raise ValueError(f"leaves live at levels 1..3, not {level}")
        if not 0 <= entry <= _U64:
            raise ValueError(f"entry {entry:#x} is not a 64-bit value")
        m = self._masked(vaddr)
        shifts = self.shifts
        if m & ((1 << shifts[level]) - 1):
            raise ValueError(f"{vaddr:#x} is not aligned to a level-{level} page")
        if _is_table(entry, level):
            raise ValueError(f"a present level-{level} leaf needs PS: {entry:#x}")
        ent = self.entries
        occ = self.occupancy
        if not self._tables(vaddr, m, level, bool(entry)):
            return 0  # clearing under a missing table: nothing to do
        key = m >> shifts[level]
        d = ent[level]
        old = d.get(key, 0)
        if _is_table(old, level):
            raise ValueError(f"{vaddr:#x}: level-{level} slot holds a table pointer {old:#x}")
        t = key >> 9
        if entry:
            if not old:
                occ[level][t] = occ[level].get(t, 0) + 1
            d[key] = entry
        elif old:
            del d[key]
            occ[level][t] -= 1
        return old

    def _tables(self, vaddr: int, m: int, level: int, create: bool) -> bool:
        """Walk (allocating with ``create``) the tables above a level-``level`` slot; False
        if one is missing and ``create`` is not set."""
        ent = self.entries
        occ = self.occupancy
        shifts = self.shifts
        for lv in range(self.levels, level, -1):
            key = m >> shifts[lv]
            e = ent[lv].get(key)
            if e is None:
                if not create:
                    return False
                pfn = self._alloc()
                e = ent[lv].get(key)  # the allocator may have run reclaim: look again
                if e is not None:
                    self._free(pfn)  # pragma: no cover - nobody creates tables meanwhile
                    continue
                ent[lv][key] = (pfn << PAGE_SHIFT) | PAGE_TABLE
                t = key >> 9
                occ[lv][t] = occ[lv].get(t, 0) + 1
                self.table_pages += 1
            elif not _is_table(e, lv):
                raise ValueError(
                    f"{vaddr:#x}: a level-{lv} leaf {e:#x} is in the way of a level-{level} entry"
                )
        return True

    def prealloc(self, vaddr: int, level: int = PTE_LEVEL) -> None:
        """Allocate the tables a level-``level`` entry at ``vaddr`` needs (pte_alloc()), so
        that a later ``set`` there allocates nothing."""
        self._tables(vaddr, self._masked(vaddr), level, True)

    def clear(self, vaddr: int, *, free_tables: bool = True) -> int:
        """Clear the leaf covering ``vaddr`` (whatever its level); return the old entry or 0.
        With ``free_tables``, tables left empty on the way up are freed."""
        leaf = self.get(vaddr)
        if leaf is None:
            return 0
        m = self._masked(vaddr)
        key = m >> self.shifts[leaf.level]
        del self.entries[leaf.level][key]
        self.occupancy[leaf.level][key >> 9] -= 1
        if free_tables:
            self._free_empty_upwards(leaf.level, key >> 9)
        return leaf.entry

    def free_pgd_range(self, start: int, end: int, floor: int, ceiling: int) -> int:
        """free_pgd_range() after a munmap of ``[start, end)``: free the tables (bottom up)
        whose whole span lies inside ``[floor, ceiling)`` (``ceiling`` 0: no limit), the
        neighbouring VMAs' ends; a table a neighbour's range shares stays, even empty.
        Only empty tables are freed (the caller zapped the range). Returns tables freed."""
        top = ceiling if ceiling else self.va_mask + 1
        freed = 0
        for level in range(PTE_LEVEL, self.levels):
            sh = self.shifts[level + 1]
            span = 1 << sh
            parents = self.entries[level + 1]
            lo = max(start & ~(span - 1), (floor + span - 1) & ~(span - 1))
            hi = min(end, top & ~(span - 1))
            if lo >= hi:
                continue
            nkeys = (hi - lo + span - 1) >> sh
            if nkeys <= len(parents):
                keys = [k for k in range(lo >> sh, (lo >> sh) + nkeys) if k in parents]
            else:
                keys = sorted(k for k in parents if lo >> sh <= k < (hi + span - 1) >> sh)
            for key in keys:
                if (key << sh) + span > top:
                    continue
                e = parents.get(key)
                if e is not None and _is_table(e, level + 1) and not self.occupancy[level].get(key):
                    self._free_table(level + 1, key)
                    freed += 1
        return freed

    def free_table_if_empty(self, vaddr: int, level: int) -> bool:
        """Free the level-``level`` table covering ``vaddr`` if none of its entries is set,
        clearing the entry above that points to it (try_get_and_clear_pmd() + free_pte():
        the tables above stay). Returns whether it was freed."""
        m = self._masked(vaddr)
        key = m >> self.shifts[level + 1]
        e = self.entries[level + 1].get(key)
        if e is None or not _is_table(e, level + 1) or self.occupancy[level].get(key, 0):
            return False
        self._free_table(level + 1, key)
        return True

    def _free_empty_upwards(self, level: int, table: int) -> None:
        """Free table ``table`` at ``level`` if it is empty, then its parent, and so on."""
        while level < self.levels and self.occupancy[level].get(table, 0) == 0:
            self._free_table(level + 1, table)
            level += 1
            table >>= 9

    def _free_table(self, parent_level: int, key: int) -> None:
        """Unlink and free the (empty) table pointed to by entries[parent_level][key]."""
        occ = self.occupancy[parent_level - 1]
        occ.pop(key, None)
        e = self.entries[parent_level].pop(key)
        self.occupancy[parent_level][key >> 9] -= 1
        self.table_pages -= 1
        self._free((e & PTE_PFN_MASK) >> PAGE_SHIFT)

    def _range_keys(self, level: int, table: int, start: int, end: int) -> range:
        """Keys of table ``table`` at ``level`` whose span meets masked [start, end)."""
        sh = self.shifts[level]
        first = max(table << 9, start >> sh)
        last = min((table << 9) | 511, (end - 1) >> sh)
        return range(first, last + 1)

    def _check_range(self, start: int, end: int) -> tuple[int, int]:
        if start >= end:
            raise ValueError(f"empty range [{start:#x}, {end:#x})")
        m_start = self._masked(start)
        m_end = self._masked(end - 1) + 1
        if m_end <= m_start:
            raise ValueError(f"[{start:#x}, {end:#x}) crosses the non-canonical hole")
        return m_start, m_end

    def clear_range(self, start: int, end: int, *, free_tables: bool = True) -> list[Mapping]:
        """Clear every leaf in [start, end) and return them, in address order.

        Mirrors the zap (zap_pte_range() and up) plus, with ``free_tables``, the freeing of
        table pages left empty (free_pgtables()); without it, emptied tables stay, as after
        MADV_DONTNEED. A large leaf that straddles ``start`` or ``end`` is an error: the
        kernel splits it first (split_huge_pmd()), and so must the caller.
        """
        m_start, m_end = self._check_range(start, end)
        for edge in (start, end - 1):
            leaf = self.get(edge)
            if leaf is not None and leaf.level > PTE_LEVEL:
                size = 1 << self.shifts[leaf.level]
                base = (edge & self.va_mask) & ~(size - 1)
                if base < m_start or base + size > m_end:
                    raise ValueError(
                        f"[{start:#x}, {end:#x}) splits the level-{leaf.level} leaf at "
                        f"{self._canon(base):#x}"
                    )
        out: list[Mapping] = []
        self._clear_table(self.levels, 0, m_start, m_end, free_tables, out)
        return out

    def _clear_table(
        self, level: int, table: int, start: int, end: int, free: bool, out: list[Mapping]
    ) -> None:
        d = self.entries[level]
        occ = self.occupancy[level]
        sh = self.shifts[level]
        for key in self._range_keys(level, table, start, end):
            e = d.get(key)
            if e is None:
                continue
            if _is_table(e, level):
                self._clear_table(level - 1, key, start, end, free, out)
                if free and self.occupancy[level - 1].get(key, 0) == 0:
                    self._free_table(level, key)
            else:
                del d[key]
                occ[table] -= 1
                out.append(Mapping(self._canon(key << sh), e, level))

    def destroy(self) -> list[Mapping]:
        """Tear everything down, the top table included (exit_mmap() then pgd_free());
        return the leaves that were still mapped. The object is unusable afterwards."""
        out: list[Mapping] = []
        self._clear_table(self.levels, 0, 0, self.va_mask + 1, True, out)
        self._free(self.root_pfn)
        self.table_pages -= 1
        self.root_pfn = -1
        return out

    # --- iteration ----------------------------------------------------------------------
    def iter_leaves(self, start: int, end: int) -> Iterator[Mapping]:
        """Every non-none leaf meeting [start, end), in address order (a large leaf that
        straddles an edge is reported once, at its own start)."""
        m_start, m_end = self._check_range(start, end)
        return self._iter_table(self.levels, 0, m_start, m_end)

    def iter_present(self, start: int, end: int) -> Iterator[Mapping]:
        """The leaves of :meth:`iter_leaves` that the kernel calls present: P set, or
        PROT_NONE (pte_present(); a PMD/PUD leaf also counts PSE, as pmd_present() does)."""
        for leaf in self.iter_leaves(start, end):
            if _kernel_present(leaf.entry, leaf.level):
                yield leaf

    def _iter_table(self, level: int, table: int, start: int, end: int) -> Iterator[Mapping]:
        d = self.entries[level]
        sh = self.shifts[level]
        for key in self._range_keys(level, table, start, end):
            e = d.get(key)
            if e is None:
                continue
            if _is_table(e, level):
                yield from self._iter_table(level - 1, key, start, end)
            else:
                yield Mapping(self._canon(key << sh), e, level)

    def __len__(self) -> int:
        """Number of non-none leaf entries, all levels."""
        n = len(self.entries[1])
        for lv in range(2, self.levels + 1):
            n += sum(1 for k, e in self.entries[lv].items() if not _is_table(e, lv))
        return n

    # --- self-check ---------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if the structure is inconsistent (tests call this)."""
        pointers = 0
        for lv in range(1, self.levels + 1):
            counts: dict[int, int] = {}
            for key, e in self.entries[lv].items():
                assert e != 0, f"stored none entry at level {lv} key {key:#x}"
                counts[key >> 9] = counts.get(key >> 9, 0) + 1
                if lv < self.levels:
                    parent = self.entries[lv + 1].get(key >> 9, 0)
                    assert _is_table(parent, lv + 1), (
                        f"level-{lv} entry {key:#x} has no table pointer above it"
                    )
                else:
                    assert key >> 9 == 0, f"top-level key {key:#x} beyond the root table"
                if _is_table(e, lv):
                    pointers += 1
                    assert lv > 1
            nonzero = {t: c for t, c in self.occupancy[lv].items() if c}
            assert nonzero == counts, f"occupancy at level {lv}: {nonzero} != {counts}"
            assert all(c >= 0 for c in self.occupancy[lv].values())
        assert self.table_pages == 1 + pointers, (self.table_pages, pointers)
