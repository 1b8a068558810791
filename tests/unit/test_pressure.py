"""Memory pressure: watermarks, second chance, swap, readahead, zswap, KSM, OOM, MADV_COLD and
MADV_PAGEOUT. Expected values are written by hand from the kernel's rules (mm/vmscan.c,
mm/swap_state.c, mm/zswap.c, mm/ksm.c, mm/oom_kill.c, mm/page_alloc.c)."""

from __future__ import annotations

import os

import pytest
from layout import PAGE, RW, at

import vmsim
from vmsim import (
    MADV_COLD,
    MADV_FREE,
    MADV_MERGEABLE,
    MADV_PAGEOUT,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
)
from vmsim.errors import OomKilled
from vmsim.mm import vmscan
from vmsim.mm.lru import INACTIVE_FILE
from vmsim.mm.page_alloc import watermarks
from vmsim.phys.frames import PageFlag

PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63


def anon(p, page, npages):
    return p.mmap(at(page), npages * PAGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)


def vmstat(m) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())}


def meminfo(m) -> dict[str, int]:
    return {k: int(v.split()[0]) for k, v in (line.split(":") for line in m.meminfo().splitlines())}


def smaps_field(p, start, field) -> int:
    lines = p.smaps().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(f"{start:08x}-"))
    for line in lines[i + 1 :]:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_watermarks_follow_setup_per_zone_wmarks():
    # 16 GiB: min_free_kbytes = sqrt(16 GiB in kB * 16) = 16384 kB = 4096 pages;
    # watermark_scale_factor 10: max(4096 / 4, 4194304 * 10 / 10000) = 4194 pages
    assert watermarks(4194304) == (4096, 4096 + 4194, 4096 + 2 * 4194)
    # 64 MiB: sqrt(65536 * 16) = 1024 kB = 256 pages; max(64, 16) = 64
    assert watermarks(16384) == (256, 320, 384)


def _file(p, npages, name="/data/f"):
    inode = p.machine.inode_for(name, (8, 1), 77, npages * PAGE)
    for pg in range(npages):
        inode.backing[pg] = bytes([(pg + 1) % 256]) * PAGE
    return p.open_inode(inode), inode


def test_second_chance_for_a_file_page():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd, inode = _file(p, 1)
    p.mmap(at(0), PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.read(at(0), 1)
    mem = m.memory
    pfn = inode.pages[0]
    # scan 1: the PTE was young -> PG_referenced, kept (rotated)
    assert vmscan.shrink_inactive(mem, INACTIVE_FILE, 8, kswapd=True) == 0
    assert mem.frames.flags(pfn) & PageFlag.REFERENCED
    # used again (a fresh TLB fill sets A again) -> scan 2 activates it
    mem.cpu.flush_mm(p.mm)
    p.read(at(0), 1)
    assert vmscan.shrink_inactive(mem, INACTIVE_FILE, 8, kswapd=True) == 0
    assert mem.frames.flags(pfn) & PageFlag.ACTIVE
    assert mem.node.lru.where[pfn] == "active_file"


def test_unused_file_page_goes_on_the_second_scan():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd, inode = _file(p, 1)
    p.mmap(at(0), PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.read(at(0), 1)
    mem = m.memory
    assert vmscan.shrink_inactive(mem, INACTIVE_FILE, 8, kswapd=True) == 0
    assert vmscan.shrink_inactive(mem, INACTIVE_FILE, 8, kswapd=True) == 1
    assert 0 not in inode.pages
    assert p.mincore(at(0), PAGE) == b"\0"
    assert p.read(at(0), 1) == b"\1"  # read back from the file: a major fault
    assert p.stats["majflt"] == 2
    m.check_memory()


def test_anonymous_pages_need_swap():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    anon(p, 0, 4)
    p.write(at(0), b"x" * (4 * PAGE))
    mem = m.memory
    # no swap: even at priority 0 the anonymous lists are not scanned (SCAN_FILE)
    assert vmscan.get_scan_count(mem, 0, 0)[0] == vmscan.SCAN_FILE
    assert vmscan.shrink_node(mem, 32, kswapd=True, priority=0) == (0, 0)
    assert smaps_field(p, at(0), "Rss") == 16


def test_swap_out_and_in_keeps_the_bytes():
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 4)
    data = os.urandom(4 * PAGE)
    p.write(at(0), data)
    p.madvise(at(0), 4 * PAGE, MADV_PAGEOUT)
    e = p.pagemap(at(0), 4)
    assert all(x & PM_SWAP and not x & PM_PRESENT for x in e)
    # swap entries: type 0, consecutive offsets from 1 (offset 0 is the header)
    assert [(x & 31, (x & ((1 << 55) - 1)) >> 5) for x in e] == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert smaps_field(p, at(0), "Rss") == 0
    assert smaps_field(p, at(0), "Swap") == 16
    assert p.mincore(at(0), 4 * PAGE) == b"\0\0\0\0"
    info = meminfo(m)
    assert info["SwapTotal"] - info["SwapFree"] == 16
    assert vmstat(m)["pswpout"] == 4
    assert p.read(at(0), 4 * PAGE) == data
    # one major fault read the whole (aligned 8-slot) cluster: the other three are minor
    assert p.stats["majflt"] == 1
    assert vmstat(m)["pswpin"] == 4
    m.check_memory()


def test_readahead_brings_the_cluster_into_the_swap_cache():
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 16)
    p.write(at(0), b"y" * (16 * PAGE))
    p.madvise(at(0), 16 * PAGE, MADV_PAGEOUT)  # slots 1..16
    p.read(at(9), 1)  # slot 10: cluster 8..15
    assert meminfo(m)["SwapCached"] == 8 * 4
    # mincore sees swap-cached pages as resident
    assert p.mincore(at(0), 16 * PAGE) == b"\0" * 7 + b"\1" * 8 + b"\0"
    m.check_memory()


def test_fork_shares_swap_entries():
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 2)
    p.write(at(0), b"ab" * PAGE)
    c = p.fork()
    p.madvise(at(0), 2 * PAGE, MADV_PAGEOUT)  # shared with the child: not paged out
    assert vmstat(m)["pswpout"] == 0
    c.exit()
    p.madvise(at(0), 2 * PAGE, MADV_PAGEOUT)
    assert vmstat(m)["pswpout"] == 2
    c2 = p.fork()  # copies the swap entries: two references each
    assert smaps_field(c2, at(0), "Swap") == 8
    assert smaps_field(c2, at(0), "SwapPss") == 4
    c2.write(at(0), b"C")
    assert p.read(at(0), 2) == b"ab"
    m.check_memory()


def test_kswapd_wakes_at_low_and_reclaims_to_high():
    m = vmsim.Machine(ram="8M", swap="16M", overcommit_memory=1)
    p = m.spawn()
    mem = m.memory
    n = mem.frames.free_pages - mem.node.wmark_low + 8
    anon(p, 0, n)
    p.write(at(0), b"z" * (n * PAGE))
    assert mem.node.kswapd_wanted  # woken at the low watermark, not run yet
    assert vmstat(m)["pageoutrun"] == 0
    m.tick()
    # freshly written pages are young: the first passes activate them, the anonymous
    # lists are rebalanced, and kswapd does not sleep until the high watermark is met
    assert vmstat(m)["pageoutrun"] >= 1
    assert mem.frames.free_pages > mem.node.wmark_high
    assert not mem.node.kswapd_wanted
    assert vmstat(m)["pgsteal_kswapd"] > 0
    assert p.read(at(0), n * PAGE) == b"z" * (n * PAGE)
    m.check_memory()


def test_lazyfree_pages_are_dropped_not_swapped():
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 3)
    p.write(at(0), b"q" * (3 * PAGE))
    p.madvise(at(0), 3 * PAGE, MADV_FREE)
    assert smaps_field(p, at(0), "LazyFree") == 12
    p.write(at(2), b"again")  # written after MADV_FREE: must not be dropped
    p.madvise(at(0), 3 * PAGE, MADV_PAGEOUT)
    # the dirty one is swap-backed again and activated (shrink_folio_list), not swapped yet
    assert vmstat(m)["pswpout"] == 0
    assert smaps_field(p, at(0), "Rss") == 4
    assert p.read(at(0), 1) == b"\0"  # dropped: reads as zeros
    p.madvise(at(0), 3 * PAGE, MADV_PAGEOUT)
    assert vmstat(m)["pswpout"] == 1
    assert p.read(at(2), 5) == b"again"
    m.check_memory()


def test_zswap_pool_6_18_zeromap_incompressible_and_limit():
    m = vmsim.Machine(ram="4M", swap="8M", zswap="zstd", zswap_max_pool_percent=1)
    p = m.spawn()
    anon(p, 0, 11)
    # incompressible (stored as is: a whole page of pool), same-filled (compressed like any
    # page since 6.12), zeros (the swap zeromap: never offered to zswap, no I/O), and 8
    # pages whose halves compress (about 2 KiB each): 1 + 1 + 8 entries, pool under its
    # limit of 1% of 4 MiB = 10 pages
    pages = [os.urandom(PAGE), bytes([7]) * PAGE, bytes(PAGE)]
    pages += [os.urandom(PAGE // 2) + bytes(PAGE // 2) for _ in range(8)]
    for i, data in enumerate(pages):
        p.write(at(i), data)
    p.madvise(at(0), 11 * PAGE, MADV_PAGEOUT)
    z = m.zswap_stats()
    assert "same_filled_pages" not in z
    assert (z["stored_pages"], z["stored_incompressible_pages"]) == (10, 1)
    assert (z["reject_compress_poor"], z["pool_limit_hit"], z["written_back_pages"]) == (0, 0, 0)
    # 4096 + 32 + 8 objects of 2 KiB and a little: 6 pages
    assert z["pool_total_size"] == 6 * PAGE
    v = vmstat(m)
    assert (v["swpout_zero"], v["zswpout"], v["pswpout"]) == (1, 10, 0)
    assert p.read(at(0), 11 * PAGE) == b"".join(pages)
    v = vmstat(m)
    assert (v["swpin_zero"], v["zswpin"], v["pswpin"]) == (1, 10, 0)
    # 32 more such pages do not fit in 10 pages of pool: the limit is hit, the oldest
    # entries are written back to the device until the pool is under 90% of its limit
    anon(p, 16, 32)
    more = [os.urandom(PAGE // 2) + bytes(PAGE // 2) for _ in range(32)]
    p.write(at(16), b"".join(more))
    p.madvise(at(16), 32 * PAGE, MADV_PAGEOUT)
    z = m.zswap_stats()
    assert z["pool_limit_hit"] >= 1 and z["written_back_pages"] >= 1
    assert z["pool_total_size"] <= 10 * PAGE
    v = vmstat(m)
    # every page went to the pool or to the device; the written back ones went to both
    assert v["zswpout"] - 10 + v["pswpout"] - z["written_back_pages"] == 32
    assert p.read(at(16), 32 * PAGE) == b"".join(more)
    m.check_memory()


def test_zswap_pool_6_11_same_filled_and_poor_compression():
    m = vmsim.Machine(
        ram="4M", swap="8M", zswap="zstd", zswap_max_pool_percent=1, zswap_same_filled=True
    )
    p = m.spawn()
    anon(p, 0, 35)
    pages = [os.urandom(PAGE // 2) + bytes(PAGE // 2) for _ in range(32)]
    pages += [bytes([7]) * PAGE, bytes(PAGE), os.urandom(PAGE)]
    for i, data in enumerate(pages):
        p.write(at(i), data)
    p.madvise(at(0), 35 * PAGE, MADV_PAGEOUT)
    z = m.zswap_stats()
    assert z["same_filled_pages"] == 2  # the 7s and the zeros: one word each, no data
    assert z["reject_compress_poor"] == 1
    assert z["stored_incompressible_pages"] == 0
    assert vmstat(m)["swpout_zero"] == 0  # no zeromap before 6.12
    assert z["pool_limit_hit"] >= 1
    assert z["pool_total_size"] <= 10 * PAGE
    assert p.read(at(0), 35 * PAGE) == b"".join(pages)
    m.check_memory()


def test_ksm_merges_identical_pages_and_breaks_on_write():
    m = vmsim.Machine(ram="64M", ksm=True)
    p = m.spawn()
    anon(p, 0, 6)
    for page in range(4):
        p.write(at(page), b"same" * 1024)
    p.write(at(4), b"other" * 800)
    p.madvise(at(0), 6 * PAGE, MADV_MERGEABLE)
    m.tick(3)  # first pass records checksums; the second merges
    s = m.ksm_stats()
    assert (s["pages_shared"], s["pages_sharing"]) == (1, 3)
    assert smaps_field(p, at(0), "KSM") == 16
    pfns = {e & ((1 << 55) - 1) for e in p.pagemap(at(0), 4)}
    assert len(pfns) == 1
    p.write(at(1), b"mine")
    assert p.read(at(0), 4) == b"same" and p.read(at(1), 8) == b"minesame"
    assert p.stats["cow_ksm"] == 1
    # 6.18: the counters move when ksmd visits the rmap_item again (cmp_and_merge_page():
    # no stable node -> remove_rmap_item_from_tree()), not at the COW
    assert m.ksm_stats()["pages_sharing"] == 3
    m.tick()
    assert m.ksm_stats()["pages_sharing"] == 2
    # a new identical page joins through the stable tree
    p.write(at(5), b"same" * 1024)
    m.tick(3)
    assert m.ksm_stats()["pages_sharing"] == 3
    m.check_memory()


def test_oom_killer_picks_the_biggest_and_respects_minus_1000():
    m = vmsim.Machine(ram="2M", overcommit_memory=1)
    small = m.spawn()
    anon(small, 0, 8)
    small.write(at(0), b"s" * (8 * PAGE))
    big = m.spawn()
    anon(big, 0, 200)
    big.write(at(0), b"b" * (200 * PAGE))
    protected = m.spawn()
    protected.oom_score_adj = -1000
    anon(protected, 0, 100)
    protected.write(at(0), b"p" * (100 * PAGE))
    third = m.spawn()
    anon(third, 0, 400)
    # RAM runs out while third writes: first big (200 pages) is the biggest and is killed;
    # later third itself (by then the biggest) dies in its own fault
    with pytest.raises(OomKilled):
        third.write(at(0), b"t" * (400 * PAGE))
    assert not big.alive and not third.alive
    assert small.alive and protected.alive
    assert vmstat(m)["oom_kill"] == 2
    assert small.read(at(0), 8 * PAGE) == b"s" * (8 * PAGE)
    m.check_memory()


def test_madvise_cold_deactivates_and_clears_referenced():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd, inode = _file(p, 2)
    p.mmap(at(0), 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.read(at(0), 1)
    pfn = inode.pages[0]
    mem = m.memory
    mem.frames.set_flags(pfn, PageFlag.ACTIVE)
    mem.node.lru.update(pfn)
    assert smaps_field(p, at(0), "Referenced") == 8
    p.madvise(at(0), 2 * PAGE, MADV_COLD)
    assert mem.node.lru.where[pfn] == "inactive_file"
    assert smaps_field(p, at(0), "Referenced") == 0
    assert smaps_field(p, at(0), "Rss") == 8


def test_madvise_pageout_evicts_clean_file_pages_without_swap():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd, inode = _file(p, 2)
    p.mmap(at(0), 2 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.read(at(0), 2 * PAGE)
    anon(p, 4, 1)
    p.write(at(4), b"anon")
    p.madvise(at(0), 2 * PAGE, MADV_PAGEOUT)
    p.madvise(at(4), PAGE, MADV_PAGEOUT)
    assert p.mincore(at(0), 2 * PAGE) == b"\0\0"
    assert not inode.pages
    assert smaps_field(p, at(4), "Rss") == 4  # no swap: anonymous memory stays
    # ... activated, PG_referenced cleared, its PTE still young (kernel-verified)
    pfn = p.pagemap(at(4), 1)[0] & ((1 << 55) - 1)
    flags = m.memory.frames.flags(pfn)
    assert flags & PageFlag.ACTIVE and not flags & PageFlag.REFERENCED
    assert smaps_field(p, at(4), "Referenced") == 4
    m.check_memory()


def test_cow_survives_swap_of_a_page_shared_after_fork():
    # Regression: try_to_unmap() marked the last PTE of a shared page "exclusive" once the
    # first was unmapped, so a write after swap-in went to the page the other process
    # still mapped. The exclusive bit must reflect the folio before the unmap.
    m = vmsim.Machine(ram="256K", swap="2M", overcommit_memory=1)
    p = m.spawn()
    anon(p, 0, 12)
    p.write(at(0), bytes(12 * PAGE))
    children = []
    for k in range(4):
        c = p.fork()
        children.append(c)
        for page in range(12):
            c.write(at(page) + 8 + k, bytes([0x70 + k]))
    assert vmstat(m)["pswpout"] > 0
    assert p.read(at(0), 12 * PAGE) == bytes(12 * PAGE)
    for k, c in enumerate(children):
        page = bytearray(PAGE)
        page[8 + k] = 0x70 + k
        assert c.read(at(0), 12 * PAGE) == bytes(page) * 12
    m.check_memory()


def test_dirty_shmem_pages_go_to_swap_and_come_back():
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    fd = p.memfd_create("shm")
    p.ftruncate(fd, 4 * PAGE)
    p.mmap(at(0), 4 * PAGE, RW, vmsim.MAP_SHARED | MAP_FIXED, fd, 0)
    data = os.urandom(3 * PAGE)
    p.write(at(0), data)  # pages 0-2 dirty
    p.read(at(3), 1)  # page 3 read only: clean, just the zeros of a hole
    p.madvise(at(0), 4 * PAGE, MADV_PAGEOUT)
    assert vmstat(m)["pswpout"] == 3  # the clean one is dropped, not written
    assert smaps_field(p, at(0), "Rss") == 0
    assert smaps_field(p, at(0), "Swap") == 12
    assert p.mincore(at(0), 4 * PAGE) == bytes(4)
    assert p.read(at(0), 3 * PAGE) == data
    assert p.read(at(3), 1) == b"\0"
    assert smaps_field(p, at(0), "Swap") == 0
    m.check_memory()
    p.close(fd)
    p.munmap(at(0), 4 * PAGE)
    m.check_memory()
    assert meminfo(m)["SwapFree"] == meminfo(m)["SwapTotal"]


def test_shmem_slot_read_ahead_by_an_anonymous_fault():
    # Regression: cluster readahead of an anonymous swap fault reads neighbouring slots,
    # a shmem page's among them, into the swap cache (taking zswap's only copy); the shmem
    # swap-in must take the page from the swap cache, not from the device.
    m = vmsim.Machine(ram="64M", swap="1M", zswap="lz4")
    p = m.spawn()
    anon(p, 0, 1)
    fd = p.memfd_create("shm")
    p.ftruncate(fd, PAGE)
    p.mmap(at(4), PAGE, RW, vmsim.MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"anon" * 1024)
    p.write(at(4), b"shm!" * 1024)
    p.madvise(at(0), PAGE, MADV_PAGEOUT)  # slot 1
    p.madvise(at(4), PAGE, MADV_PAGEOUT)  # slot 2
    assert p.read(at(0), 4) == b"anon"  # reads slots 1-2 into the swap cache
    assert p.read(at(4), 8) == b"shm!shm!"
    m.check_memory()
    p.close(fd)
    p.munmap(at(4), PAGE)
    m.check_memory()


def _pfn(p, page) -> int:
    return p.pagemap(at(page), 1)[0] & ((1 << 55) - 1)


def _swap_slot(p, page) -> tuple[int, int]:
    e = p.pagemap(at(page), 1)[0]
    assert e & PM_SWAP and not e & PM_PRESENT
    return e & 31, (e & ((1 << 55) - 1)) >> 5


def test_a_ksm_page_is_swapped_out_and_copied_for_other_families_on_swap_in():
    # two unrelated processes (two anon_vma roots) and, in p, two pages with the same bytes
    m = vmsim.Machine(ram="64M", swap="1M", ksm=True)
    p, q = m.spawn(), m.spawn()
    data = b"twin" * 1024
    for proc, pages in ((p, 2), (q, 1)):
        anon(proc, 0, pages)
        proc.write(at(0), data * pages)
        proc.madvise(at(0), pages * PAGE, MADV_MERGEABLE)
    m.tick(3)
    assert (m.ksm_stats()["pages_shared"], m.ksm_stats()["pages_sharing"]) == (1, 2)
    kpfn = _pfn(p, 0)
    assert vmscan.pageout(m.memory, [kpfn]) == 1  # rmap_walk_ksm(): all three PTEs
    # one slot, written once, named by three PTEs; the stable node went with the folio
    assert _swap_slot(p, 0) == _swap_slot(p, 1) == _swap_slot(q, 0) == (0, 1)
    assert vmstat(m)["pswpout"] == 1
    # the stable node is stale now, but its rmap_items keep their counts until ksmd
    # visits one of them (remove_rmap_item_from_tree() -> ksm_get_folio())
    assert m.ksm_stats()["pages_shared"] == 1
    assert smaps_field(p, at(0), "Swap") == 8 and smaps_field(p, at(0), "SwapPss") == 2
    # p's first page reads it back (major fault): that folio is p's page 0 now
    assert p.read(at(0), 4) == b"twin"
    assert p.stats["majflt"] == 1 and vmstat(m)["ksm_swpin_copy"] == 0
    # p's second page: same family, other index -> a copy; q: another family -> a copy
    assert p.read(at(1), 4) == b"twin" and q.read(at(0), 4) == b"twin"
    assert vmstat(m)["ksm_swpin_copy"] == 2
    assert len({_pfn(p, 0), _pfn(p, 1), _pfn(q, 0)}) == 3
    # no PTE names the slot now, but p's folio still holds it in the swap cache until a
    # write frees it (do_wp_page(): folio_free_swap() before the reuse)
    info = meminfo(m)
    assert (info["SwapTotal"] - info["SwapFree"], info["SwapCached"]) == (4, 4)
    p.write(at(0), b"t")  # the same byte: the contents stay those of the twins
    info = meminfo(m)
    assert (info["SwapTotal"] - info["SwapFree"], info["SwapCached"]) == (0, 0)
    # ksmd merges them again
    m.tick(3)
    assert (m.ksm_stats()["pages_shared"], m.ksm_stats()["pages_sharing"]) == (1, 2)
    assert p.read(at(0), 2 * PAGE) == data * 2 and q.read(at(0), PAGE) == data
    m.check_memory()


def test_swapped_in_page_shared_by_fork_is_not_copied():
    # parent and child are one anon_vma family: the swapped-in folio is mapped by both
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 1)
    p.write(at(0), b"fam")
    c = p.fork()
    kpfn = _pfn(p, 0)
    assert vmscan.pageout(m.memory, [kpfn]) == 1
    assert _swap_slot(p, 0) == _swap_slot(c, 0)
    assert p.read(at(0), 3) == b"fam" and c.read(at(0), 3) == b"fam"
    assert _pfn(p, 0) == _pfn(c, 0)
    assert vmstat(m)["ksm_swpin_copy"] == 0
    m.check_memory()


def test_read_fault_maps_an_exclusive_swap_entry_writable():
    # do_swap_page(): an exclusive entry is mapped writable at once, so the next write does
    # not fault; a page shared after fork (not exclusive) is mapped read-only
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 1)
    p.write(at(0), b"x")
    p.madvise(at(0), PAGE, MADV_PAGEOUT)
    before = p.stats["pgfault"]
    p.read(at(0), 1)
    p.write(at(0), b"y")
    assert p.stats["pgfault"] - before == 1
    assert p.stats["majflt"] == 1
    m.check_memory()


def _resident(p, first, n) -> list[int]:
    return [first + i for i, b in enumerate(p.mincore(at(first), n * PAGE)) if b]


def _swapped_out(m, pages, device):
    p = m.spawn()
    anon(p, 0, pages)
    p.write(at(0), b"".join(bytes([i + 1]) * PAGE for i in range(pages)))
    p.madvise(at(0), pages * PAGE, MADV_PAGEOUT)  # page i -> slot i + 1
    return p


def test_vma_readahead_window_follows_hits_and_direction():
    # an SSD: swap_vma_readahead(); page-cluster 3 -> at most 8 pages
    m = vmsim.Machine(ram="64M", swap="1M", swap_device="ssd")
    p = _swapped_out(m, 64, "ssd")
    # first fault (hits start at 4): 4 + 2 -> 8 pages, centred: 3 before, 4 after
    assert p.read(at(20), 1) == b"\x15"
    assert _resident(p, 0, 64) == list(range(17, 25))
    assert (vmstat(m)["swap_ra"], p.stats["majflt"]) == (7, 1)
    p.read(at(21), 1)  # a readahead page used: one hit
    assert vmstat(m)["swap_ra_hit"] == 1
    # page 25, not next to 21: 1 hit -> 3 -> 4 pages (half the last window is 4 too),
    # centred: from 24 (already there) to 27
    p.read(at(25), 1)
    assert _resident(p, 0, 64) == list(range(17, 28))
    assert (vmstat(m)["swap_ra"], p.stats["majflt"]) == (9, 2)
    # a forward stream: 26, 27 are hits (2); 28 follows 27 -> 4 pages from 28 on
    p.read(at(26), 1)
    p.read(at(27), 1)
    p.read(at(28), 1)
    assert _resident(p, 0, 64) == list(range(17, 32))
    assert (vmstat(m)["swap_ra"], vmstat(m)["swap_ra_hit"]) == (12, 3)
    # backward: a fault at 15 after 16? 16 is not there; fault at 16 right after 17 was
    # touched: the window ends at the fault
    p.read(at(17), 1)  # hit (prev = 17)
    p.read(at(16), 1)  # 1 hit -> 4 pages, backward: 13..16
    assert _resident(p, 0, 64) == list(range(13, 32))
    assert p.read(at(0), 64 * PAGE) == b"".join(bytes([i + 1]) * PAGE for i in range(64))
    m.check_memory()


def test_cluster_readahead_shrinks_without_hits():
    # a rotational disk: swap_cluster_readahead(), window from the global hit count
    m = vmsim.Machine(ram="64M", swap="1M", swap_device="disk")
    p = _swapped_out(m, 64, "disk")
    p.read(at(20), 1)  # slot 21, hits 4 -> 8: the aligned block of slots 16..23
    assert _resident(p, 0, 64) == list(range(15, 23))
    assert vmstat(m)["swap_ra"] == 7
    p.read(at(40), 1)  # slot 41, no hits: 1, but not below half of 8: slots 40..43
    assert _resident(p, 32, 32) == [39, 40, 41, 42]
    p.read(at(50), 1)  # half of 4: slots 50..51
    assert _resident(p, 48, 16) == [49, 50]
    p.read(at(60), 1)  # half of 2 is 1: no readahead
    assert _resident(p, 56, 8) == [60]
    assert (vmstat(m)["swap_ra"], vmstat(m)["swap_ra_hit"]) == (11, 0)
    m.check_memory()


def test_zram_reads_a_slot_named_once_without_the_swap_cache():
    m = vmsim.Machine(ram="64M", swap="1M", swap_device="zram")
    p = _swapped_out(m, 2, "zram")
    assert p.read(at(0), 1) == b"\x01"
    info = meminfo(m)
    # SWP_SYNCHRONOUS_IO: no swap cache, no readahead, the slot is freed at once
    assert info["SwapCached"] == 0 and info["SwapTotal"] - info["SwapFree"] == 4
    assert (vmstat(m)["swap_ra"], p.stats["majflt"], vmstat(m)["pswpin"]) == (0, 1, 1)
    p.write(at(0), b"z")  # mapped writable at once: no second fault
    assert p.stats["pgfault"] == 3  # the two first writes and the swap-in
    # a slot named twice (after fork) goes through the swap cache as usual
    c = p.fork()
    p.madvise(at(0), PAGE, MADV_PAGEOUT)  # shared with the child: stays
    c.exit()
    p.madvise(at(0), PAGE, MADV_PAGEOUT)
    c2 = p.fork()
    assert p.read(at(0), 1) == b"z"
    # and reads ahead by VMA (zram is not rotational): page 1, named by both too
    assert meminfo(m)["SwapCached"] == 8 and vmstat(m)["swap_ra"] == 1
    assert c2.read(at(0), 1) == b"z" and c2.read(at(1), 1) == b"\x02"
    assert vmstat(m)["swap_ra_hit"] == 1
    m.check_memory()


def _lists_of_400(swappiness=60):
    """400 anonymous and 400 file pages, all on the inactive lists."""
    m = vmsim.Machine(ram="64M", swap="8M", swappiness=swappiness)
    p = m.spawn()
    anon(p, 0, 400)
    p.write(at(0), b"a" * (400 * PAGE))
    fd, _inode = _file(p, 400)
    p.mmap(at(512), 400 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.read(at(512), 400 * PAGE)
    sizes = m.memory.node.lru.sizes()
    assert (sizes["inactive_anon"], sizes["inactive_file"]) == (400, 400)
    return m


def test_get_scan_count_balances_by_swappiness_and_cost():
    both = vmscan.DEACTIVATE_ANON | vmscan.DEACTIVATE_FILE  # no cache_trim_mode
    m = _lists_of_400()
    mem = m.memory
    # priority 2: 100 of each list; no cost yet: anon 60 / 200, file 140 / 200
    balance, nr = vmscan.get_scan_count(mem, 2, both)
    assert balance == vmscan.SCAN_FRACT
    assert (nr["inactive_anon"], nr["inactive_file"]) == (30, 70)
    # anonymous reclaim has cost 100 (e.g. 3 pages swapped out and 4 rotated):
    # total 100; anon 200, file 100; total 300; ap = 60 * 301 // 201 = 89,
    # fp = 140 * 301 // 101 = 417 -> anon 100 * 89 // 506 = 17, file 100 * 417 // 506 = 82
    mem.node.anon_cost = 100
    assert vmscan.get_scan_count(mem, 2, both)[1]["inactive_anon"] == 17
    assert vmscan.get_scan_count(mem, 2, both)[1]["inactive_file"] == 82
    # priority 0 with swappiness > 0: everything, equally
    assert vmscan.get_scan_count(mem, 0, both) == (
        vmscan.SCAN_EQUAL,
        {"inactive_anon": 400, "active_anon": 0, "inactive_file": 400, "active_file": 0},
    )
    # plenty of inactive file pages that need no deactivation: file only
    balance, nr = vmscan.get_scan_count(mem, 2, 0)
    assert (balance, nr["inactive_anon"], nr["inactive_file"]) == (vmscan.SCAN_FILE, 0, 100)
    # swappiness 200: anonymous only; 0: file only
    assert vmscan.get_scan_count(_lists_of_400(200).memory, 2, both)[1]["inactive_file"] == 0
    assert vmscan.get_scan_count(_lists_of_400(0).memory, 2, both)[1]["inactive_anon"] == 0


def test_lru_note_cost_counts_writes_and_rotations_and_decays():
    m = _lists_of_400()
    mem = m.memory
    vmscan.lru_note_cost(mem, False, 3, 4)  # 3 * 32 + 4
    vmscan.lru_note_cost(mem, True, 0, 50)
    assert (mem.node.anon_cost, mem.node.file_cost) == (100, 50)
    # past a quarter of the 800 LRU pages (200): both halve
    vmscan.lru_note_cost(mem, True, 0, 51)
    assert (mem.node.anon_cost, mem.node.file_cost) == (50, 50)


def test_kswapd_reclaims_file_before_anon_while_the_cache_is_large():
    # cache_trim_mode: a large inactive file list that needs no deactivation is reclaimed
    # alone; anonymous pages are not swapped
    m = _lists_of_400()
    mem = m.memory
    # priority 2: 100 file pages a pass. Each was read through a young PTE: the first look
    # gives it PG_referenced and a second chance (four passes go round the 400), the next
    # look finds the PTE old and reclaims it; kswapd stops after the batch of 32 that
    # reached its target (nothing is left to scan of the other type)
    passes = [vmscan.shrink_node(mem, 32, kswapd=True, priority=2) for _ in range(5)]
    assert passes == [(100, 0)] * 4 + [(32, 32)]
    v = vmstat(m)
    assert (v["pgscan_file"], v["pgsteal_file"], v["pgscan_anon"], v["pswpout"]) == (432, 32, 0, 0)


def test_memavailable_follows_si_mem_available():
    # 64 MiB less the zero page: 16383 managed pages, min_free_kbytes isqrt(65532 * 16) =
    # 1023 -> min 255, low 318, high 381 pages; 100 cached file pages:
    # available = free - high + (100 - min(50, 318))
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd, _inode = _file(p, 100)
    p.mmap(at(0), 100 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.read(at(0), 100 * PAGE)
    info = meminfo(m)
    free = m.memory.frames.free_pages
    assert info["MemAvailable"] == (free - 381 + 50) * 4
    assert list(info)[:5] == ["MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached"]


def test_fork_charges_the_child_and_fails_cleanly_under_strict_overcommit():
    # overcommit_memory=2: CommitLimit = 50% of RAM + swap. A private writable mapping of
    # 60% of the limit fits once; fork must charge it again and fails with ENOMEM, leaving
    # nothing behind (no child, no frame, the charge unchanged)
    m = vmsim.Machine(ram="8M", overcommit_memory=2)
    p = m.spawn()
    limit = meminfo(m)["CommitLimit"] // 4  # pages
    n = limit * 6 // 10
    base = meminfo(m)["Committed_AS"]
    anon(p, 0, n)
    p.write(at(0), b"x" * PAGE)
    used = m.memory.frames.used_pages
    assert meminfo(m)["Committed_AS"] == base + n * 4
    with pytest.raises(OSError) as e:
        p.fork()
    assert e.value.errno == 12
    assert len(m.processes) == 1
    assert m.memory.frames.used_pages == used
    assert meminfo(m)["Committed_AS"] == base + n * 4
    m.check_memory()
    # half of it fits twice
    p.munmap(at(n // 2), (n - n // 2) * PAGE)
    c = p.fork()
    assert meminfo(m)["Committed_AS"] == base + 2 * (n // 2) * 4
    c.exit()
    assert meminfo(m)["Committed_AS"] == base + (n // 2) * 4
    m.check_memory()


def test_readahead_gives_up_quietly_when_memory_is_short():
    # with RAM nearly all mlocked, a file fault cannot get its 32-page readahead window
    # (its own pages are reclaimed as it goes, or it gives up: __GFP_NORETRY); the page it
    # needs is read all the same, nobody is killed
    m = vmsim.Machine(ram="1M", overcommit_memory=1)
    p = m.spawn()
    mem = m.memory
    n = mem.frames.free_pages - mem.node.wmark_min - 12
    anon(p, 0, n)
    p.mlock(at(0), n * PAGE)
    fd, inode = _file(p, 64)
    p.mmap(at(1024), 64 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    assert p.read(at(1024 + 40), 1) == bytes([41])
    assert vmstat(m)["oom_kill"] == 0 and p.alive
    assert 40 in inode.pages and len(inode.pages) < 32
    m.check_memory()


def test_pageout_of_a_dirty_shmem_page_without_swap_unmaps_it_and_keeps_it_cached():
    # kernel-checked (page fuzzer seed 7065): try_to_unmap() before pageout(); with no swap,
    # shmem_writeout() redirties the folio and it is activated, in the page cache, unmapped
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    p.mmap(at(0), 2 * PAGE, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED)
    p.write(at(0), b"dirty")
    p.read(at(1), 1)  # a hole read in: clean
    p.madvise(at(0), 2 * PAGE, MADV_PAGEOUT)
    assert [e & PM_PRESENT for e in p.pagemap(at(0), 2)] == [0, 0]
    assert smaps_field(p, at(0), "Rss") == 0
    assert p.mincore(at(0), 2 * PAGE) == b"\1\0"  # the clean one was dropped
    assert p.read(at(0), 5) == b"dirty"
    m.check_memory()


def _activate_file(p, page, npages, fd):
    """Map, touch and unmap twice: each unmap of a young PTE marks the page accessed, the
    second time activates it (one nonresident_age tick each)."""
    for _ in range(2):
        p.mmap(at(page), npages * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
        p.read(at(page), npages * PAGE)
        p.munmap(at(page), npages * PAGE)


def test_refaults_within_the_workingset_are_activated():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd_b, _ = _file(p, 20, "/data/b")
    _activate_file(p, 0, 20, fd_b)  # 20 active file pages, nonresident_age 20
    assert meminfo(m)["Active(file)"] == 80
    fd_a, inode_a = _file(p, 8, "/data/a")
    p.mmap(at(100), 8 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd_a, 0)
    p.read(at(100), 8 * PAGE)
    p.madvise(at(100), 8 * PAGE, MADV_PAGEOUT)  # 8 evictions: shadows 20..27, age 28
    assert inode_a.pages == {} and len(inode_a.shadows) == 8
    # reading page 0 reads all 8 back (read-around); page k: distance 28 + k - (20 + k) = 8,
    # within the 20 active file pages: each is activated (and ticks the age)
    assert p.read(at(100), 1) == b"\1"
    v = vmstat(m)
    assert (v["workingset_refault_file"], v["workingset_activate_file"]) == (8, 8)
    assert v["workingset_restore_file"] == 0  # none had been active before
    assert meminfo(m)["Active(file)"] == (20 + 8) * 4
    m.check_memory()


def test_refaults_too_far_apart_stay_inactive_and_workingset_ones_count_as_cost():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    mem = m.memory
    fd, inode = _file(p, 4)
    _activate_file(p, 0, 4, fd)  # 4 active pages, age 4
    vmscan.shrink_active(mem, "active_file", 4)  # deactivated: PG_workingset
    p.mmap(at(0), 4 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0)
    p.madvise(at(0), 4 * PAGE, MADV_PAGEOUT)  # not mapped: nothing to page out
    assert len(inode.pages) == 4
    vmscan.pageout(mem, list(inode.pages.values()))  # evicted: shadows 4..7, age 8
    assert len(inode.shadows) == 4
    cost = mem.node.file_cost
    # no active file pages are left: the workingset is empty, every distance is too far
    assert p.read(at(0), 1) == b"\1"
    v = vmstat(m)
    assert (v["workingset_refault_file"], v["workingset_activate_file"]) == (4, 0)
    assert v["workingset_restore_file"] == 0 and mem.node.file_cost == cost
    m.check_memory()


def test_swapped_pages_leave_shadows_and_refault_as_anon():
    m = vmsim.Machine(ram="64M", swap="1M")
    p = m.spawn()
    anon(p, 0, 4)
    p.write(at(0), b"s" * (4 * PAGE))
    p.madvise(at(0), 4 * PAGE, MADV_PAGEOUT)
    assert len(m.memory.swap.shadows) == 4
    assert p.read(at(0), 4 * PAGE) == b"s" * (4 * PAGE)
    v = vmstat(m)
    # workingset for an anonymous refault: file pages (none) and active anon (none)
    assert (v["workingset_refault_anon"], v["workingset_activate_anon"]) == (4, 0)
    assert not m.memory.swap.shadows
    m.check_memory()


def test_refault_of_a_workingset_page_is_a_restore_and_a_reclaim_cost():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    mem = m.memory
    fd_a, inode_a = _file(p, 4, "/data/a")
    _activate_file(p, 0, 4, fd_a)  # age 4
    vmscan.shrink_active(mem, "active_file", 4)  # A deactivated: PG_workingset
    fd_b, _ = _file(p, 20, "/data/b")
    _activate_file(p, 100, 20, fd_b)  # 20 active pages, age 24
    vmscan.pageout(mem, list(inode_a.pages.values()))  # A's shadows 24..27, age 28
    assert mem.node.file_cost == 0
    assert p.mmap(at(200), 4 * PAGE, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd_a, 0)
    p.read(at(200), 1)
    # distances 4 each, within the 20 active pages; all were in the workingset
    v = vmstat(m)
    assert (v["workingset_activate_file"], v["workingset_restore_file"]) == (4, 4)
    assert mem.node.file_cost > 0  # lru_note_cost_refault(): 32 a page, decayed
    m.check_memory()


def test_the_flusher_writes_dirty_file_pages_and_reclaim_then_drops_them():
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    mem = m.memory
    fd, inode = _file(p, 2)
    p.mmap(at(0), 2 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"new!")
    pfn = inode.pages[0]
    # reclaim does not write file pages: unmapped, PG_reclaim, activated, still dirty
    p.madvise(at(0), 2 * PAGE, MADV_PAGEOUT)
    flags = mem.frames.flags(pfn)
    assert flags & PageFlag.DIRTY and flags & PageFlag.RECLAIM and flags & PageFlag.ACTIVE
    # (page 1, read around the fault but never mapped, is not MADV_PAGEOUT's business)
    assert p.mincore(at(0), 2 * PAGE) == b"\1\1"
    assert inode.backing[0][:4] == bytes([1]) * 4  # the disk still has the old bytes
    # the flusher (each tick) writes it back and rotates it to the reclaim end
    m.tick()
    assert inode.backing[0][:4] == b"new!"
    flags = mem.frames.flags(pfn)
    assert not flags & (PageFlag.DIRTY | PageFlag.RECLAIM | PageFlag.ACTIVE)
    assert vmstat(m)["nr_written"] == 1 and vmstat(m)["pgrotated"] == 1
    assert mem.node.lru.oldest("inactive_file", 1) == [pfn]
    # clean now: mapped again (a read: fault-around maps both), the next page-out evicts
    # them, and the bytes come back from the file
    assert p.read(at(0), 4) == b"new!"
    p.madvise(at(0), 2 * PAGE, MADV_PAGEOUT)
    assert p.mincore(at(0), 2 * PAGE) == b"\0\0"
    assert p.read(at(0), 4) == b"new!"
    m.check_memory()


def test_writeback_write_protects_the_mapping_so_the_next_write_dirties_again():
    # folio_mkclean(): the PTE is cleaned and made read-only; the next write faults
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    fd, inode = _file(p, 1)
    p.mmap(at(0), PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.write(at(0), b"one")
    m.tick()
    assert not m.memory.frames.flags(inode.pages[0]) & PageFlag.DIRTY
    faults = p.stats["pgfault"]
    p.write(at(0), b"two")
    assert p.stats["pgfault"] == faults + 1
    assert m.memory.frames.flags(inode.pages[0]) & PageFlag.DIRTY
    m.tick()
    assert inode.backing[0][:3] == b"two"
    m.check_memory()


def test_dirtying_past_the_background_ratio_starts_writeback():
    # 4 MiB less the zero page: 1023 pages, min_free_kbytes isqrt(4092 * 16) = 255 -> min 63,
    # low 78, high 93 pages. A shared
    # mapping of a 200-page file is written page by page: once the dirty pages pass 10% of
    # the dirtyable memory (free + file pages - high), the flusher writes them all
    m = vmsim.Machine(ram="4M")
    p = m.spawn()
    fd, inode = _file(p, 200)
    p.mmap(at(0), 200 * PAGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    written = []
    for pg in range(200):
        p.write(at(pg), b"w")
        written.append(vmstat(m)["nr_written"])
        info = meminfo(m)
        dirtyable = (info["MemFree"] + info["Active(file)"] + info["Inactive(file)"]) // 4 - 93
        # never past the threshold, but for the page being written at the time
        assert (info["Dirty"] // 4 - 1) * 100 <= max(dirtyable, 0) * 10
    assert written[0] == 0 and written[-1] > 0
    assert all(inode.backing[pg][:1] == b"w" or inode.pages.get(pg) for pg in range(200))
    m.tick()
    assert all(inode.backing[pg][:1] == b"w" for pg in range(200))
    m.check_memory()


def test_a_process_chosen_by_the_oom_killer_during_mlock_dies_instead_of_getting_enomem():
    # mlock's populate runs out of memory with nothing else to kill: the OOM killer picks
    # the caller itself; the call does not return ENOMEM to a process that is dying
    m = vmsim.Machine(ram="1M", overcommit_memory=1)
    p = m.spawn()
    n = m.memory.frames.free_pages + 8
    anon(p, 0, n)
    with pytest.raises(OomKilled):
        p.mlock(at(0), n * PAGE)
    assert not p.alive and vmstat(m)["oom_kill"] == 1
    assert m.memory.frames.used_pages == 0
    m.check_memory()


def _workload() -> tuple[str, list[list[int]]]:
    """Forks, KSM, MADV_FREE of pages shared after fork (one side writes again), swap and
    zswap under pressure: the final /proc/vmstat and every page's pagemap entry."""
    import random

    rng = random.Random(7)
    m = vmsim.Machine(ram="512K", swap="4M", zswap="lz4", ksm=True, overcommit_memory=1)
    p = m.spawn()
    anon(p, 0, 24)
    p.write(at(0), b"".join(rng.randbytes(PAGE // 2) + bytes(PAGE // 2) for _ in range(24)))
    p.madvise(at(0), 24 * PAGE, MADV_MERGEABLE)
    kids = [p.fork() for _ in range(3)]
    for i, c in enumerate(kids):
        c.madvise(at(0), 12 * PAGE, MADV_FREE)
        c.write(at(i), b"again")
        c.write(at(12 + i), bytes(PAGE))
    m.tick(5)
    p.madvise(at(0), 24 * PAGE, MADV_PAGEOUT)
    for c in kids:
        c.read(at(0), 24 * PAGE)
    m.tick(5)
    return m.vmstat(), [q.pagemap(at(0), 24) for q in [p, *kids]]


def test_the_same_workload_gives_the_same_machine():
    """Runs repeat exactly: nothing depends on where Python put an object (id() order)."""
    first = _workload()
    ballast = [object() for _ in range(10_000)]  # move later objects elsewhere
    second = _workload()
    del ballast
    assert first == second
