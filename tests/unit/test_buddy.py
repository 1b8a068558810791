"""The buddy allocator's migrate types and /proc/buddyinfo, worked out by hand from
mm/page_alloc.c (__rmqueue(), __rmqueue_claim(), try_to_claim_block(), __rmqueue_steal(),
__free_one_page()) and mm/vmstat.c (frag_show_print(), pagetypeinfo_show*()) of Linux 6.18."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmsim import Machine
from vmsim.phys.buddy import (
    MIGRATE_MOVABLE,
    MIGRATE_RECLAIMABLE,
    MIGRATE_UNMOVABLE,
    BuddyAllocator,
)


def test_unmovable_allocation_claims_a_whole_max_order_block():
    """No unmovable block is free: __rmqueue_claim() looks from MAX_PAGE_ORDER down, finds
    a movable order-10 block (never used memory), takes ownership of it whole
    (current_order >= pageblock_order: both of its pageblocks become unmovable) and expands
    it on the unmovable lists; the next movable allocation gets the next block."""
    b = BuddyAllocator(4096)
    assert b.alloc(0, MIGRATE_UNMOVABLE) == 0
    assert b.migratetype(0) == b.migratetype(511) == b.migratetype(512) == MIGRATE_UNMOVABLE
    assert [b.nr_free_blocks_mt(o, MIGRATE_UNMOVABLE) for o in range(11)] == [1] * 10 + [0]
    assert b.alloc(0, MIGRATE_MOVABLE) == 1024
    assert b.migratetype(1024) == MIGRATE_MOVABLE
    # the unmovable leftovers serve unmovable allocations, smallest first
    assert b.alloc(0, MIGRATE_UNMOVABLE) == 1
    b.check()


def _fill(b: BuddyAllocator, n: int) -> list[int]:
    got = [b.alloc(0, MIGRATE_MOVABLE) for _ in range(n)]
    assert None not in got
    return [p for p in got if p is not None]


def test_unmovable_allocation_steals_a_lone_movable_page():
    """One free movable page in a full pageblock: try_to_claim_block() needs half the
    pageblock free (256 pages), so the claim fails; __rmqueue_steal() takes the page and
    the pageblock stays movable."""
    b = BuddyAllocator(2048)
    _fill(b, 2048)
    b.free(5)
    assert b.alloc(0, MIGRATE_UNMOVABLE) == 5
    assert b.migratetype(5) == MIGRATE_MOVABLE
    assert b.alloc(0, MIGRATE_UNMOVABLE) is None
    b.check()


def test_unmovable_allocation_claims_a_half_free_pageblock():
    """300 free pages at the start of pageblock 0 (blocks of order 8 at 0, 5 at 256, 3 at
    288, 2 at 296): the claim starts at order 8, finds 300 >= 256 pages free in the
    pageblock, moves them all to the unmovable lists and retypes the pageblock; then
    __rmqueue_smallest() takes the smallest unmovable block (order 2 at 296)."""
    b = BuddyAllocator(2048)
    _fill(b, 2048)
    for p in range(300):
        b.free(p)
    assert b.alloc(0, MIGRATE_UNMOVABLE) == 296
    assert b.migratetype(0) == MIGRATE_UNMOVABLE
    assert b.migratetype(512) == MIGRATE_MOVABLE
    assert [b.nr_free_blocks_mt(o, MIGRATE_UNMOVABLE) for o in range(9)] == [
        1, 1, 0, 1, 0, 1, 0, 0, 1
    ]  # fmt: skip
    assert b.nr_free == 299
    b.check()


def test_movable_allocation_does_not_claim_small_blocks():
    """should_try_claim_block(): a movable allocation claims only from blocks of order
    >= pageblock_order / 2 (4); a free order-0 page in an unmovable pageblock is stolen
    and the pageblock stays unmovable."""
    b = BuddyAllocator(1024)
    got = [b.alloc(0, MIGRATE_UNMOVABLE) for _ in range(1024)]
    assert sorted(p for p in got if p is not None) == list(range(1024))
    b.free(700)
    assert b.migratetype(700) == MIGRATE_UNMOVABLE
    assert b.alloc(0, MIGRATE_MOVABLE) == 700
    assert b.migratetype(700) == MIGRATE_UNMOVABLE
    b.check()


def test_reclaimable_falls_back_to_unmovable_first():
    """fallbacks[MIGRATE_RECLAIMABLE] = {UNMOVABLE, MOVABLE}: with a free unmovable page
    and a free movable page, a reclaimable allocation that cannot claim steals the
    unmovable one."""
    b = BuddyAllocator(2048)
    got = [b.alloc(0, MIGRATE_UNMOVABLE) for _ in range(1024)]  # block 0 unmovable
    _fill(b, 1024)  # block 1024 movable
    b.free(got[10])
    b.free(1500)
    assert b.alloc(0, MIGRATE_RECLAIMABLE) == got[10]
    b.check()


def test_freeing_merges_pageblocks_of_different_types():
    """__free_one_page(): at order >= pageblock_order a buddy of another type merges and
    its pageblock takes the type of the freed block (change_pageblock_range())."""
    b = BuddyAllocator(1024)
    assert b.alloc(9, MIGRATE_UNMOVABLE) == 0  # claims block 0: both pageblocks unmovable
    assert b.migratetype(512) == MIGRATE_UNMOVABLE
    b.free(0, 9)
    assert b.nr_free_blocks(10) == 1
    assert b.migratetype(0) == b.migratetype(512) == MIGRATE_UNMOVABLE
    b.check()


def test_buddyinfo_of_a_fresh_machine():
    """64 MiB = 16 blocks of order 10; the zero page (pfn 0) split block 0 into one free
    block of each order 0..9 (expand()); 15 order-10 blocks are untouched. Format:
    "Node %d, zone %8s " then "%6lu " per order (frag_show_print())."""
    m = Machine(ram="64M")
    assert m.buddyinfo() == (
        "Node 0, zone   Normal      1      1      1      1      1      1      1      1"
        "      1      1     15 \n"
    )


def test_page_tables_live_in_unmovable_pageblocks():
    """The first page table (the process's PGD) is an unmovable allocation: it claims a
    whole order-10 block (2 pageblocks) for the unmovable type."""
    m = Machine(ram="64M")
    m.spawn()
    info = m.pagetypeinfo().splitlines()
    blocks = info[-1].split()
    assert blocks[4:] == ["2", "30", "0", "0", "0"]  # Unmovable Movable Reclaimable ...
    assert info[4].split()[6:] == ["1"] * 10 + ["0"]  # the unmovable lists: orders 0..9


@pytest.mark.parametrize("ram", ["64M", "4095M"])
def test_buddy_invariants_after_alloc_free_mix(ram):
    m = Machine(ram=ram)
    f = m.memory.frames
    pfns = [f.alloc(0, 0) for _ in range(3000)]
    tables = [f.alloc(1 << 26, 0) for _ in range(50)]  # PageFlag.PAGETABLE
    for p in pfns[::3] + tables[::2]:
        f.put(p)
    f.check()


def test_buddyinfo_format_matches_this_machine():
    """Every /proc/buddyinfo line here is 'Node N, zone %8s' and 11 '%6lu ' columns; the
    model's line has the same shape (checked against the live file where there is one)."""
    path = Path("/proc/buddyinfo")
    ours = Machine(ram="64M").buddyinfo()
    # "Node %d, zone %8s " then 11 x "%6lu " (numbers below a million fill exactly 6)
    pattern = re.compile(r"^Node \d+, zone [ A-Za-z0-9]{8} (?:(?=[ \d]{5}\d )[ \d]{6} ){11}$")
    assert pattern.match(ours.rstrip("\n"))
    if path.exists():
        live = path.read_text().splitlines()
        normal = next((line for line in live if "zone   Normal" in line), None)
        assert all(pattern.match(line) for line in live)
        if normal is not None:
            assert normal[:21] == ours[:21] == "Node 0, zone   Normal"
