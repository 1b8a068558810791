"""Large folios swapped out whole (issue 13). This machine has no swap and its settings must
not change, so the expected values are derived by hand from Linux 6.18:

* mm/vmscan.c shrink_folio_list(): a partly mapped large folio is split right away; else
  folio_alloc_swap() of the folio's order; when it fails the folio is split and
  THP_SWPOUT_FALLBACK (PMD-sized) and MTHP_STAT_SWPOUT_FALLBACK counted; try_to_unmap() with
  TTU_SPLIT_HUGE_PMD for a PMD-mappable folio (THP_SPLIT_PMD);
* mm/rmap.c try_to_unmap_one(): swap-backed folios are unmapped one PTE at a time, so
  __folio_remove_rmap() sees the folio partly mapped, but mm/huge_memory.c
  deferred_split_folio() returns at once for a swap-cache folio ("Exclude swapcache"): no
  THP_DEFERRED_SPLIT_PAGE, no split_deferred;
* mm/swapfile.c: large allocations take an aligned run inside one cluster of
  SWAPFILE_CLUSTER = 512 slots serving that order (never cluster 0, which holds the header);
* mm/page_io.c swap_writeout(): a zero-filled folio only sets zeromap bits (SWPOUT_ZERO by
  pages); zswap_store() takes a large folio page by page (ZSWPOUT by pages, the size's
  zswpout); count_swpout_vm_event(): THP_SWPOUT for a PMD-mappable folio, the size's swpout,
  PSWPOUT by pages;
* mm/memory.c do_swap_page(): swap-in of those entries is per page on a non-synchronous
  device (swapin_readahead() allocates order-0 folios).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

import vmsim
from vmsim.constants import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_PAGEOUT,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.mm import vmscan
from vmsim.mm.huge_memory import thp_settings
from vmsim.mm.swapops import pte_to_swp_entry

M2 = 2 << 20
P = 4096
RW = PROT_READ | PROT_WRITE
PFN = (1 << 55) - 1
PM_SWAP = 1 << 62
KPF_THP = 1 << 22


def _vmstat(m: vmsim.Machine) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())}


def _meminfo(m: vmsim.Machine) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1]) for line in m.meminfo().splitlines()}


def _delta(before: dict[str, int], after: dict[str, int], *names: str) -> tuple[int, ...]:
    return tuple(after.get(n, 0) - before.get(n, 0) for n in names)


def _thp(m: vmsim.Machine, length: int = M2) -> tuple[vmsim.Process, int]:
    p = m.spawn()
    a = p.mmap(0, length, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.madvise(a, length, MADV_HUGEPAGE)
    return p, a


def _slots(p: vmsim.Process, addr: int, n: int) -> list[int]:
    out = []
    for i in range(n):
        leaf = p.mm.pt.get(addr + i * P)
        assert leaf is not None and leaf.level == PTE_LEVEL
        out.append(pte_to_swp_entry(leaf.entry).offset)
    return out


def test_pageout_of_a_pmd_thp_swaps_it_out_whole() -> None:
    m = vmsim.Machine(ram="256M", swap="64M")
    p, a = _thp(m)
    p.write(a, b"x")
    p.write(a + 300 * P, b"y")
    assert p.mm.pt.get(a).level == PMD_LEVEL
    before = _vmstat(m)
    free = m.memory.frames.free_pages
    p.madvise(a, M2, MADV_PAGEOUT)
    after = _vmstat(m)
    names = (
        "thp_swpout",
        "thp_swpout_fallback",
        "thp_split_pmd",
        "thp_deferred_split_page",
        "thp_split_page",
        "pswpout",
        "swpout_zero",
    )
    # the folio is not all zeros: every page is written, zero-filled ones too
    assert _delta(before, after, *names) == (1, 0, 1, 0, 0, 512, 0)
    st = m.thp_size_stats("2048kB")
    assert (st["swpout"], st["swpout_fallback"], st["split_deferred"]) == (1, 0, 0)
    # the PMD became 512 swap PTEs naming one aligned run of one cluster
    slots = _slots(p, a, 512)
    assert slots[0] % 512 == 0 and slots[0] >= 512
    assert slots == list(range(slots[0], slots[0] + 512))
    assert all(e & PM_SWAP for e in p.pagemap(a, 512))
    # the folio and the deposited page table are freed; nothing stays in the swap cache
    assert m.memory.frames.free_pages >= free + 512
    mi = _meminfo(m)
    assert (mi["SwapCached"], mi["AnonHugePages"]) == (0, 0)
    assert mi["SwapTotal"] - mi["SwapFree"] == 2048
    m.check_memory()
    # swap-in is per page: an order-0 folio with the data
    assert p.read(a + 300 * P, 1) == b"y"
    pfn = p.pagemap(a + 300 * P, 1)[0] & PFN
    assert m.kpageflags(pfn) & KPF_THP == 0
    assert p.read(a, 1) == b"x" and p.read(a + 5 * P, 1) == b"\0"
    m.check_memory()
    p.exit()
    m.check_memory()
    assert _meminfo(m)["SwapFree"] == _meminfo(m)["SwapTotal"]
    assert m.memory.swap.devices[0].cluster_order == {}


def test_a_zero_filled_thp_goes_to_the_zeromap() -> None:
    m = vmsim.Machine(ram="256M", swap="64M")
    p, a = _thp(m)
    p.write(a, b"\0")
    before = _vmstat(m)
    p.madvise(a, M2, MADV_PAGEOUT)
    after = _vmstat(m)
    assert _delta(before, after, "thp_swpout", "pswpout", "swpout_zero") == (0, 0, 512)
    assert m.thp_size_stats("2048kB")["swpout"] == 0
    assert p.read(a + 7 * P, 1) == b"\0"
    assert _vmstat(m)["swpin_zero"] - before.get("swpin_zero", 0) >= 1
    m.check_memory()


def test_no_free_cluster_falls_back_to_a_split() -> None:
    # 2 MiB of swap: 512 slots, all in cluster 0, which holds the header
    m = vmsim.Machine(ram="256M", swap="2M")
    p, a = _thp(m)
    p.write(a, b"x")
    before = _vmstat(m)
    p.madvise(a, M2, MADV_PAGEOUT)
    after = _vmstat(m)
    # split: the zero-filled pages go to the shared zero page, the written one is swapped
    assert _delta(before, after, "thp_swpout", "thp_swpout_fallback", "thp_split_page") == (
        0,
        1,
        1,
    )
    assert _delta(before, after, "pswpout") == (1,)
    st = m.thp_size_stats("2048kB")
    assert (st["swpout"], st["swpout_fallback"], st["split"]) == (0, 1, 1)
    assert p.read(a, 1) == b"x"
    m.check_memory()


def test_no_swap_at_all_counts_the_fallback_as_this_machine_does() -> None:
    m = vmsim.Machine(ram="256M")
    p, a = _thp(m)
    p.write(a, b"x")
    p.madvise(a, M2, MADV_PAGEOUT)
    assert _vmstat(m)["thp_swpout_fallback"] == 1
    assert m.thp_size_stats("2048kB")["swpout_fallback"] == 1
    m.check_memory()


def test_a_forked_thp_is_swapped_out_from_both_processes() -> None:
    m = vmsim.Machine(ram="256M", swap="64M")
    p, a = _thp(m)
    p.write(a + P, b"p")
    c = p.fork()
    head = p.pagemap(a, 1)[0] & PFN
    assert vmscan.pageout(m.memory, [head]) == 512
    assert _vmstat(m)["thp_swpout"] == 1
    assert _vmstat(m)["thp_split_pmd"] == 2  # each process's PMD
    assert _slots(p, a, 512) == _slots(c, a, 512)
    key = pte_to_swp_entry(p.mm.pt.get(a).entry)
    assert m.memory.swap.count(key) == 2
    assert c.read(a + P, 1) == b"p" and p.read(a + P, 1) == b"p"
    c.write(a + P, b"c")
    assert p.read(a + P, 1) == b"p"
    m.check_memory()


def test_mthp_folios_take_aligned_runs_of_a_cluster_serving_their_order() -> None:
    m = vmsim.Machine(ram="256M", swap="64M", thp={"mthp": {64: "always"}})
    p = m.spawn()
    a = p.mmap(0, M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a, b"1")
    p.write(a + 16 * P, b"2")
    h1 = p.pagemap(a, 1)[0] & PFN
    h2 = p.pagemap(a + 16 * P, 1)[0] & PFN
    before = _vmstat(m)
    assert vmscan.pageout(m.memory, [h1, h2]) == 32
    after = _vmstat(m)
    assert _delta(before, after, "thp_swpout", "thp_swpout_fallback", "pswpout") == (0, 0, 32)
    st = m.thp_size_stats("64kB")
    assert (st["swpout"], st["swpout_fallback"], st["split_deferred"], st["nr_anon"]) == (
        2,
        0,
        0,
        0,
    )
    s1, s2 = _slots(p, a, 16), _slots(p, a + 16 * P, 16)
    assert s1[0] % 16 == 0 and s1 == list(range(s1[0], s1[0] + 16))
    assert s2 == list(range(s1[0] + 16, s1[0] + 32))  # the same cluster, serving order 4
    dev = m.memory.swap.devices[0]
    assert dev.cluster_order == {s1[0] // 512: 4}
    # an order-0 swap-out keeps out of that cluster
    q = m.spawn()
    b = q.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    q.write(b, b"z")
    assert vmscan.pageout(m.memory, [q.pagemap(b, 1)[0] & PFN]) == 1
    (s0,) = _slots(q, b, 1)
    assert s0 // 512 != s1[0] // 512
    assert p.read(a + 16 * P, 1) == b"2" and q.read(b, 1) == b"z"
    m.check_memory()


def test_zswap_stores_a_large_folio_page_by_page() -> None:
    m = vmsim.Machine(ram="256M", swap="64M", zswap="lz4")
    p, a = _thp(m)
    for i in range(0, 512, 8):
        p.write(a + i * P, bytes([i % 251 + 1]) * 64)
    before = _vmstat(m)
    p.madvise(a, M2, MADV_PAGEOUT)
    after = _vmstat(m)
    assert _delta(before, after, "thp_swpout", "pswpout", "zswpout") == (0, 0, 512)
    assert m.thp_size_stats("2048kB")["zswpout"] == 1
    assert p.read(a + 8 * P, 64) == bytes([9]) * 64
    m.check_memory()


def test_memory_pressure_swaps_thps_out_whole() -> None:
    m = vmsim.Machine(ram="64M", swap="256M")
    p, a = _thp(m, 96 << 20)
    for off in range(0, 96 << 20, P):
        p.write(a + off, off.to_bytes(8, "little") + b"\1")
    v = _vmstat(m)
    assert v["thp_swpout"] > 0 and v["oom_kill"] == 0
    # direct reclaim stops once 32 pages are freed: one THP is enough each time, and
    # pgsteal counts its pages
    assert v["pgsteal_direct"] >= 512 * v["thp_swpout"]
    for off in range(0, 96 << 20, M2):
        assert p.read(a + off, 9) == off.to_bytes(8, "little") + b"\1"
    m.check_memory()


def _zram_mthp(**kw: Any) -> tuple[vmsim.Machine, vmsim.Process, int, int]:
    m = vmsim.Machine(ram="256M", swap="64M", swap_device="zram", **kw)
    p = m.spawn()
    a = p.mmap(0, M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.write(a + 16 * P, b"A" * 100)
    p.write(a + 20 * P, b"B")
    head = p.pagemap(a + 16 * P, 1)[0] & PFN
    assert vmscan.pageout(m.memory, [head]) == 16
    return m, p, a, head


def test_zram_swaps_an_mthp_back_in_whole() -> None:
    # alloc_swap_folio(): SWP_SYNCHRONOUS_IO, one user of the slot, 64kB enabled, the 16
    # PTEs name 16 consecutive slots aligned like the address, none cached, zswap never on
    m, p, a, _ = _zram_mthp(thp={"mthp": {64: "always"}})
    before = _vmstat(m)
    assert p.read(a + 20 * P, 1) == b"B"  # a read fault in the middle of the folio
    after = _vmstat(m)
    pf = [e & PFN for e in p.pagemap(a + 16 * P, 16)]
    assert pf[0] % 16 == 0 and pf == list(range(pf[0], pf[0] + 16))
    assert m.kpageflags(pf[0]) & KPF_THP
    assert all(e >> 63 for e in p.pagemap(a + 16 * P, 16))
    st = m.thp_size_stats("64kB")
    assert (st["swpin"], st["swpin_fallback"]) == (1, 0)
    assert _delta(before, after, "pswpin", "pgmajfault") == (16, 1)
    assert p.read(a + 16 * P, 100) == b"A" * 100
    mi = _meminfo(m)
    assert (mi["SwapCached"], mi["SwapTotal"] - mi["SwapFree"]) == (0, 0)
    p.write(a + 17 * P, b"w")  # writable already: no copy
    assert p.pagemap(a + 17 * P, 1)[0] & PFN == pf[1]
    m.check_memory()


def test_zram_swapin_is_per_page_when_a_slot_is_gone() -> None:
    # one PTE of the range no longer names its slot: can_swapin_thp() fails for 64 KiB, and
    # with only that size on, the fault reads one page
    m, p, a, _ = _zram_mthp(thp={"mthp": {64: "always"}})
    p.madvise(a + 18 * P, P, MADV_DONTNEED)  # the swap PTE goes, its slot is freed
    assert p.read(a + 20 * P, 1) == b"B"
    assert m.thp_size_stats("64kB")["swpin"] == 0
    assert m.kpageflags(p.pagemap(a + 20 * P, 1)[0] & PFN) & KPF_THP == 0
    assert p.pagemap(a + 21 * P, 1)[0] & PM_SWAP  # the others stay swapped out
    m.check_memory()


def test_zram_swapin_is_per_page_once_zswap_is_on_or_the_size_is_off() -> None:
    # zswap_never_enabled() is false: alloc_swap_folio() falls back to order 0
    m, p, a, _ = _zram_mthp(thp={"mthp": {64: "always"}}, zswap="lz4")
    assert p.read(a + 20 * P, 1) == b"B"
    assert m.kpageflags(p.pagemap(a + 20 * P, 1)[0] & PFN) & KPF_THP == 0
    m.check_memory()
    # the size turned off after the swap-out (echo never > hugepages-64kB/enabled)
    m, p, a, _ = _zram_mthp(thp={"mthp": {64: "always"}})
    m.memory.thp.settings = thp_settings({"mthp": {64: "never"}})
    assert p.read(a + 20 * P, 1) == b"B"
    assert m.kpageflags(p.pagemap(a + 20 * P, 1)[0] & PFN) & KPF_THP == 0
    assert m.thp_size_stats("64kB")["swpin"] == 0
    m.check_memory()


@pytest.mark.parametrize("seed", range(12))
def test_random_mthp_and_swap_sequences_keep_every_count_right(seed: int) -> None:
    # invariants only (check_memory(): refcounts, mapcounts, rmap, swap counts, swap
    # clusters, the LRU) over random faults, zaps, forks, page-outs and swap-ins of
    # PMD-sized and smaller large folios; and every byte written reads back
    rng = random.Random(seed)
    device = ("disk", "zram")[seed % 2]
    m = vmsim.Machine(
        ram="64M",
        swap="32M",
        swap_device=device,
        thp={"mthp": {16: "always", 64: "always", 256: "madvise"}},
    )
    procs = [m.spawn()]
    size = 2 * M2
    base = procs[0].mmap(0, size, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    if seed % 3 == 0:
        procs[0].madvise(base, size, MADV_HUGEPAGE)
    want: list[dict[int, int]] = [{}]
    for _step in range(50):
        i = rng.randrange(len(procs))
        p, w = procs[i], want[i]
        op = rng.choice(
            ("write", "write", "read", "dontneed", "pageout", "fork", "exit", "reclaim")
        )
        page = rng.randrange(size // P)
        addr = base + page * P
        if op == "write":
            v = rng.randrange(1, 256)
            p.write(addr, bytes([v]))
            w[page] = v
        elif op == "read":
            assert p.read(addr, 1)[0] == w.get(page, 0)
        elif op == "dontneed":
            n = rng.choice((1, 3, 16, 64))
            n = min(n, size // P - page)
            p.madvise(addr, n * P, MADV_DONTNEED)
            for q in range(page, page + n):
                w.pop(q, None)
        elif op == "pageout":
            n = min(rng.choice((16, 64, 512)), size // P - page)
            p.madvise(addr, n * P, MADV_PAGEOUT)
        elif op == "fork" and len(procs) < 3:
            procs.append(p.fork())
            want.append(dict(w))
        elif op == "exit" and len(procs) > 1 and i:
            p.exit()
            del procs[i], want[i]
        elif op == "reclaim":
            heads = [h for h in m.memory.node.lru.where if m.memory.frames.order(h)]
            if heads:
                vmscan.pageout(m.memory, rng.sample(heads, min(2, len(heads))))
        m.check_memory()
    for p, w in zip(procs, want, strict=True):
        for page, v in w.items():
            assert p.read(base + page * P, 1)[0] == v
    m.check_memory()
