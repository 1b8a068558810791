"""Compaction (mm/compaction.c of Linux 6.18): the two scanners, migration through the
reverse map, direct compaction's counters and kcompactd on Machine.tick().

The scenario: 16 MiB of RAM (4 blocks of order 10) nearly filled by one process touching
3200 pages, then every other page unmapped: 1600 free order-0 holes, no free block of order
9 or 10 anywhere. Each remaining page holds a byte derived from its index, so a migration
that lost or swapped contents is seen.
"""

from __future__ import annotations

import pytest

from vmsim import Machine
from vmsim.mm import compaction

N = 3200
PAGE = 4096


def fragmented(**kw):
    m = Machine(ram="16M", **kw)
    p = m.spawn()
    a = p.mmap(0, N * PAGE, 3, 0x22)
    for i in range(N):
        p.write(a + i * PAGE, bytes([i % 251 + 1]))
    for i in range(0, N, 2):
        p.munmap(a + i * PAGE, PAGE)
    return m, p, a


def columns(m: Machine) -> list[int]:
    return [int(x) for x in m.buddyinfo().split()[4:]]


def vmstat(m: Machine) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())}


def frames_of(p, a) -> dict[int, int]:
    return {i: p.pagemap(a + i * PAGE, 1)[0] & ((1 << 55) - 1) for i in range(1, N, 2)}


def test_scenario_is_fragmented():
    m, _, _ = fragmented()
    cols = columns(m)
    assert cols[9] == cols[10] == 0
    assert cols[0] >= 1600
    # extfrag for order 9: nothing free in blocks of 2 MiB: 100%, times present/(present+1)
    assert compaction.fragmentation_score(m.memory) == 99


def test_direct_compaction_makes_an_order_9_block_and_keeps_every_page():
    """compact_zone(order 9): the migration scanner empties pageblocks from the bottom into
    free pages isolated from the top until a free order-9 block exists; every migrated page
    keeps its contents and is mapped at its new frame (pagemap), the reverse map, refcounts,
    mapcounts and TLB agree (check_memory, check_tlb), and the counters say it: one stall,
    one success, pgmigrate_success = pages whose frame changed."""
    m, p, a = fragmented()
    before = frames_of(p, a)
    assert compaction.try_to_compact_pages(m.memory, 9)
    after = frames_of(p, a)
    moved = sum(before[i] != after[i] for i in before)
    assert moved > 0
    assert columns(m)[9] + columns(m)[10] >= 1
    ev = vmstat(m)
    assert ev["compact_stall"] == 1 and ev["compact_success"] == 1 and ev["compact_fail"] == 0
    assert ev["pgmigrate_success"] == moved
    # each migrated page was isolated once, and a free page was isolated for it
    assert ev["compact_isolated"] >= 2 * moved
    assert ev["compact_migrate_scanned"] % 512 == 0 and ev["compact_migrate_scanned"] > 0
    for i in range(1, N, 2):
        assert p.read(a + i * PAGE, 1) == bytes([i % 251 + 1])
    m.check_memory()
    m.check_tlb()


def test_a_hugetlb_pool_grows_on_fragmented_memory_through_compaction():
    """alloc_buddy_hugetlb_folio() fails on fragmented memory, direct compaction runs
    (__GFP_RETRY_MAYFAIL) and the retry succeeds: htlb_buddy_alloc_success, compact_stall."""
    m, _, _ = fragmented()
    assert m.set_nr_hugepages("2M", 1) == 1
    ev = vmstat(m)
    assert ev["compact_stall"] == 1 and ev["compact_success"] == 1
    assert ev["htlb_buddy_alloc_success"] == 1 and ev["htlb_buddy_alloc_fail"] == 0
    m.check_memory()


def test_compaction_that_cannot_succeed_counts_a_failure_and_wakes_kcompactd():
    """With less than 1024 pages free no order-10 block can be made, whatever moves: the
    scanners meet (COMPACT_COMPLETE), compact_fail is counted and kcompactd is woken for
    the order (wakeup_kcompactd()): compact_daemon_wake on the next tick."""
    m, p, _ = fragmented()
    # fill the holes so that less than one order-10 block's worth of memory is free
    b = p.mmap(0, 1600 * PAGE, 3, 0x22)
    for i in range(1600):
        p.write(b + i * PAGE, b"f")
    assert m.memory.frames.free_pages < 1024
    assert not compaction.try_to_compact_pages(m.memory, 10)
    ev = vmstat(m)
    assert ev["compact_stall"] == 1 and ev["compact_fail"] == 1 and ev["compact_success"] == 0
    assert m.memory.kcompactd_order == 10
    m.tick()
    assert vmstat(m)["compact_daemon_wake"] == 1
    assert m.memory.kcompactd_order == 0
    m.check_memory()


def test_kcompactd_compacts_proactively_on_tick():
    """kcompactd's proactive compaction: score 99 > the high mark 90 (proactiveness 20) so
    tick() compacts the zone (daemon counters move) until the score is at most 80."""
    m, p, a = fragmented()
    m.tick()
    ev = vmstat(m)
    assert ev["compact_daemon_migrate_scanned"] > 0
    assert ev["compact_daemon_free_scanned"] > 0
    assert ev["compact_daemon_wake"] == 0  # not woken: proactive
    assert compaction.fragmentation_score(m.memory) <= 80
    for i in range(1, N, 2):
        assert p.read(a + i * PAGE, 1) == bytes([i % 251 + 1])
    m.check_memory()


def test_proactiveness_zero_turns_it_off():
    m, _, _ = fragmented()
    m.memory.compaction_proactiveness = 0
    m.tick()
    assert vmstat(m)["compact_migrate_scanned"] == 0


@pytest.mark.parametrize("shared", [False, True])
def test_pages_mapped_twice_move_in_both_mappings(shared):
    """A page mapped by parent and child (fork: COW-shared anonymous, or a MAP_SHARED
    memfd page): the reverse map names both PTEs and both are rewritten."""
    m, p, a = fragmented()
    if shared:
        fd = p.memfd_create("c")
        p.ftruncate(fd, 8 * PAGE)
        s = p.mmap(0, 8 * PAGE, 3, 0x01, fd)
        for i in range(8):
            p.write(s + i * PAGE, bytes([100 + i]))
    c = p.fork()
    assert compaction.try_to_compact_pages(m.memory, 9)
    for i in range(1, N, 2):
        assert c.read(a + i * PAGE, 1) == p.read(a + i * PAGE, 1) == bytes([i % 251 + 1])
        assert c.pagemap(a + i * PAGE, 1) == p.pagemap(a + i * PAGE, 1)
    m.check_memory()
    m.check_tlb()
