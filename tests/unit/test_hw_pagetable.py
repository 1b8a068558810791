"""Radix page tables: index math, table allocation and freeing, large leaves, 5 levels.

Indices are worked out by hand from the address bits (4-level: 47..39 | 38..30 | 29..21 |
20..12; 5-level adds 56..48 on top).
"""

from __future__ import annotations

import pytest

from vmsim.hw.pagetable import Leaf, Mapping, PageTables, WalkStep, level_size
from vmsim.hw.pte import PAGE_TABLE, make_pte, swp_entry

KiB4, MiB2, GiB1 = 1 << 12, 1 << 21, 1 << 30


def user_pte(pfn: int, *, writable: bool = True, huge: bool = False) -> int:
    return make_pte(
        pfn,
        present=True,
        writable=writable,
        user=True,
        nx=False,
        accessed=False,
        dirty=False,
        global_=False,
        huge=huge,
    )


class Frames:
    """An allocator that never reuses a frame and records what is live."""

    def __init__(self) -> None:
        self.next = 1000
        self.live: set[int] = set()
        self.freed: list[int] = []

    def alloc(self) -> int:
        self.next += 1
        self.live.add(self.next)
        return self.next

    def free(self, pfn: int) -> None:
        self.live.remove(pfn)
        self.freed.append(pfn)


def tables(levels: int = 4) -> tuple[PageTables, Frames]:
    f = Frames()
    return PageTables(levels, alloc_table=f.alloc, free_table=f.free), f


def test_level_sizes() -> None:
    assert [level_size(lv) for lv in (1, 2, 3, 4, 5)] == [4096, 2 << 20, 1 << 30, 1 << 39, 1 << 48]


@pytest.mark.parametrize(
    ("vaddr", "indices"),
    [
        (0x7FFF_FFFF_E000, (255, 511, 511, 510)),  # top of the 47-bit user space, last page - 1
        (0x0000_0000_0040_0000, (0, 0, 2, 0)),  # 4 MiB: PMD index 2
        (0x0000_5555_5555_4000, (170, 341, 170, 340)),  # 0x5555... alternates 01 bits
        (0x1234_5678_9000, (36, 209, 179, 393)),
        (0xFFFF_8000_0000_0000, (256, 0, 0, 0)),  # kernel half starts at PML4 index 256
        (0xFFFF_FFFF_FFFF_F000, (511, 511, 511, 511)),
    ],
)
def test_indices_4_level(vaddr: int, indices: tuple[int, ...]) -> None:
    pt, _ = tables(4)
    assert pt.indices(vaddr) == indices


@pytest.mark.parametrize(
    ("vaddr", "indices"),
    [
        (0x00FF_FFFF_FFFF_F000, (255, 511, 511, 511, 511)),  # top of the 56-bit user space
        (0x0000_8000_0000_0000, (0, 256, 0, 0, 0)),  # 2^47: first address past 4-level reach
        (0x0001_0000_0000_0000, (1, 0, 0, 0, 0)),  # 2^48: PGD index 1
        (0x7FFF_FFFF_E000, (0, 255, 511, 511, 510)),
        (0xFF00_0000_0000_0000, (256, 0, 0, 0, 0)),  # kernel half with LA57
    ],
)
def test_indices_5_level(vaddr: int, indices: tuple[int, ...]) -> None:
    pt, _ = tables(5)
    assert pt.indices(vaddr) == indices


def test_non_canonical_addresses_are_rejected() -> None:
    pt4, _ = tables(4)
    pt5, _ = tables(5)
    for va in (0x0000_8000_0000_0000, 0x0001_0000_0000_0000, 0xFFFF_7FFF_FFFF_F000):
        assert not pt4.canonical(va)
        with pytest.raises(ValueError):
            pt4.set(va, user_pte(1))
    assert pt5.canonical(0x0000_8000_0000_0000)
    assert not pt5.canonical(0x0100_0000_0000_0000)


def test_first_pte_allocates_one_table_per_level() -> None:
    pt, frames = tables()
    assert pt.table_pages == 1 and len(frames.live) == 1
    pt.set(0x7FFF_FFFF_E000, user_pte(0x42))
    # PGD (root) + PUD table + PMD table + PTE table
    assert pt.table_pages == 4 and len(frames.live) == 4
    pt.set(0x7FFF_FFFF_F000, user_pte(0x43))  # same PTE table, index 511
    assert pt.table_pages == 4
    pt.set(0x40_0000, user_pte(0x44))  # PGD index 0: a new PUD, PMD and PTE table
    assert pt.table_pages == 7 and len(frames.live) == 7
    pt.check_invariants()


def test_walk_lists_every_level_and_links_tables_with_page_table_bits() -> None:
    pt, frames = tables()
    pt.set(0x7FFF_FFFF_E000, user_pte(0x42))
    steps = pt.walk(0x7FFF_FFFF_E123)
    assert [(s.level, s.idx) for s in steps] == [(4, 255), (3, 511), (2, 511), (1, 510)]
    for s in steps[:-1]:
        assert s.entry & 0xFFF == PAGE_TABLE == 0x67  # P RW US A D, as pgd_populate()
        assert s.entry >> 12 in frames.live
    assert steps[-1] == WalkStep(1, 510, 0x42007)  # P RW US, no A or D yet
    # the three upper entries point at three distinct tables, none of them the root
    pfns = {s.entry >> 12 for s in steps[:-1]}
    assert len(pfns) == 3 and pt.root_pfn not in pfns


def test_walk_stops_at_the_first_none_entry() -> None:
    pt, _ = tables()
    assert pt.walk(0x1000) == [WalkStep(4, 0, 0)]
    pt.set(0x1000, user_pte(7))
    assert [s.level for s in pt.walk(0x20_0000)] == [4, 3, 2]  # PMD index 1 is none
    assert pt.walk(0x20_0000)[-1].entry == 0


def test_get_returns_the_leaf_and_its_level() -> None:
    pt, _ = tables()
    assert pt.get(0x1000) is None
    e = user_pte(7)
    assert pt.set(0x1000, e) == 0
    assert pt.get(0x1FFF) == Leaf(e, 1)
    assert pt.get(0x2000) is None
    assert pt.set(0x1000, e | 0x40) == e  # replace returns the old entry
    assert pt.get(0x1000) == Leaf(e | 0x40, 1)


def test_non_present_entries_are_stored_like_any_other() -> None:
    pt, _ = tables()
    sw = swp_entry(1, 0x99)
    pt.set(0x5000, sw)
    assert pt.get(0x5000) == Leaf(sw, 1)
    assert list(pt.iter_leaves(0, 1 << 47)) == [Mapping(0x5000, sw, 1)]
    assert list(pt.iter_present(0, 1 << 47)) == []


def test_2mib_leaf() -> None:
    pt, _ = tables()
    e = user_pte(0x200, huge=True)
    pt.set(0x20_0000, e, level=2)
    assert pt.table_pages == 3  # PGD, PUD table, PMD table: no PTE table
    assert pt.get(0x20_0000) == Leaf(e, 2)
    assert pt.get(0x3F_FFFF) == Leaf(e, 2)
    assert pt.get(0x40_0000) is None
    assert [s.level for s in pt.walk(0x2A_BCDE)] == [4, 3, 2]
    assert list(pt.iter_present(0x30_0000, 0x30_1000)) == [Mapping(0x20_0000, e, 2)]
    # no 4 KiB entry under a 2 MiB leaf, no 2 MiB leaf over a PTE table
    with pytest.raises(ValueError):
        pt.set(0x20_1000, user_pte(1))
    pt.set(0x40_1000, user_pte(1))  # a PTE table under PMD index 2
    with pytest.raises(ValueError):
        pt.set(0x40_0000, user_pte(0x400, huge=True), level=2)
    # a present PMD leaf without PS would read as a table pointer
    with pytest.raises(ValueError):
        pt.set(0x80_0000, user_pte(0x800), level=2)
    with pytest.raises(ValueError):
        pt.set(0x81_0000, user_pte(0x800, huge=True), level=2)  # not 2 MiB aligned
    pt.check_invariants()


def test_1gib_leaf() -> None:
    pt, _ = tables()
    e = user_pte(0x40000, huge=True)
    pt.set(0x4000_0000, e, level=3)
    assert pt.table_pages == 2  # PGD and PUD table
    assert pt.get(0x7FFF_FFFF) == Leaf(e, 3)
    assert pt.get(0x8000_0000) is None
    assert [s.level for s in pt.walk(0x4000_0000)] == [4, 3]
    with pytest.raises(ValueError):
        pt.set(0x4020_0000, user_pte(0x200, huge=True), level=2)
    with pytest.raises(ValueError):
        pt.set(0x4000_0000, user_pte(0x40000, huge=True), level=4)


def test_clear_frees_emptied_tables_up_to_the_root() -> None:
    pt, frames = tables()
    pt.set(0x7FFF_FFFF_E000, user_pte(0x42))
    pt.set(0x40_0000, user_pte(0x44))
    assert pt.table_pages == 7
    assert pt.clear(0x40_0FFF) == user_pte(0x44)
    assert pt.table_pages == 4
    assert len(frames.freed) == 3 and len(frames.live) == 4
    assert pt.clear(0x40_0000) == 0
    pt.check_invariants()


def test_clear_without_freeing_keeps_the_empty_table() -> None:
    pt, _ = tables()
    pt.set(0x1000, user_pte(1))
    pt.clear(0x1000, free_tables=False)
    assert pt.table_pages == 4 and pt.get(0x1000) is None
    pt.check_invariants()
    pt.set(0x2000, user_pte(2))  # the empty table is reused
    assert pt.table_pages == 4
    pt.clear_range(0, 1 << 47)
    assert pt.table_pages == 1


def test_clear_range_returns_cleared_leaves_in_order() -> None:
    pt, _ = tables()
    for i in range(8):
        pt.set(0x10_0000 + i * KiB4, user_pte(0x100 + i))
    pt.set(0x20_0000, user_pte(0x200, huge=True), level=2)
    out = pt.clear_range(0x10_3000, 0x40_0000)
    assert [(m.vaddr, m.level) for m in out] == [
        (0x10_3000, 1),
        (0x10_4000, 1),
        (0x10_5000, 1),
        (0x10_6000, 1),
        (0x10_7000, 1),
        (0x20_0000, 2),
    ]
    assert pt.table_pages == 4  # the PTE table still holds 0x100000..0x102000
    assert [m.vaddr for m in pt.iter_present(0, 1 << 47)] == [0x10_0000, 0x10_1000, 0x10_2000]
    pt.check_invariants()


def test_clear_range_over_a_whole_table_frees_it() -> None:
    pt, frames = tables()
    for i in range(512):
        pt.set(0x20_0000 + i * KiB4, user_pte(i))
    pt.set(0x40_0000, user_pte(999))
    assert pt.table_pages == 5  # PGD PUD PMD + two PTE tables
    out = pt.clear_range(0x20_0000, 0x40_0000)
    assert len(out) == 512
    assert pt.table_pages == 4
    assert len(frames.freed) == 1


def test_clear_range_refuses_to_split_a_large_leaf() -> None:
    pt, _ = tables()
    e = user_pte(0x200, huge=True)
    pt.set(0x20_0000, e, level=2)
    with pytest.raises(ValueError):
        pt.clear_range(0x20_1000, 0x40_0000)
    with pytest.raises(ValueError):
        pt.clear_range(0x10_0000, 0x30_0000)
    assert pt.get(0x20_0000) == Leaf(e, 2)  # nothing was cleared
    assert pt.clear_range(0x20_0000, 0x40_0000) == [Mapping(0x20_0000, e, 2)]
    assert pt.table_pages == 1


def test_destroy_frees_every_table_including_the_root() -> None:
    pt, frames = tables()
    pt.set(0x1000, user_pte(1))
    pt.set(0x7FFF_FFFF_F000, user_pte(2))
    pt.set(0x4000_0000, user_pte(0x40000, huge=True), level=3)
    out = pt.destroy()
    assert [m.vaddr for m in out] == [0x1000, 0x4000_0000, 0x7FFF_FFFF_F000]
    assert frames.live == set()
    assert pt.table_pages == 0


def test_five_level_addresses_above_2_pow_47() -> None:
    pt, frames = tables(5)
    va = 0x00FF_FFFF_FFFF_F000
    pt.set(va, user_pte(0x77))
    assert pt.table_pages == 5  # PGD P4D PUD PMD PTE
    steps = pt.walk(va)
    assert [(s.level, s.idx) for s in steps] == [(5, 255), (4, 511), (3, 511), (2, 511), (1, 511)]
    pt.set(1 << 47, user_pte(0x78))  # PGD 0, P4D 256
    assert pt.table_pages == 9
    assert [m.vaddr for m in pt.iter_present(0, 1 << 56)] == [1 << 47, va]
    pt.clear_range(1 << 47, 1 << 56)
    assert pt.table_pages == 1 and len(frames.live) == 1


def test_kernel_half_addresses_round_trip_canonically() -> None:
    pt, _ = tables()
    va = 0xFFFF_8880_0000_0000  # the direct map
    kernel_pte = make_pte(
        5,
        present=True,
        writable=True,
        user=False,
        nx=True,
        accessed=True,
        dirty=True,
        global_=True,
    )
    pt.set(va, kernel_pte)
    (m,) = pt.iter_leaves(0xFFFF_8000_0000_0000, 0xFFFF_FFFF_FFFF_F000)
    assert m.vaddr == va
    assert pt.indices(va) == (273, 0, 0, 0)


def test_len_counts_leaves_of_every_level() -> None:
    pt, _ = tables()
    pt.set(0x1000, user_pte(1))
    pt.set(0x20_0000, user_pte(0x200, huge=True), level=2)
    pt.set(0x4000_0000, user_pte(0x40000, huge=True), level=3)
    assert len(pt) == 3


def test_default_allocator_and_argument_checks() -> None:
    pt = PageTables()
    pt.set(0x1000, user_pte(1))
    assert pt.table_pages == 4
    with pytest.raises(ValueError):
        PageTables(3)
    with pytest.raises(ValueError):
        PageTables(4, alloc_table=lambda: 1)
    with pytest.raises(ValueError):
        pt.set(0x1800, user_pte(1))
    with pytest.raises(ValueError):
        pt.clear_range(0x2000, 0x2000)
