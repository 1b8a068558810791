"""Compaction on the THP fault path, by the defrag setting (issue 13).

Hand-derived from Linux 6.18 (fragmentation cannot be forced on the live machine safely):
vma_thp_gfp_mask() (mm/huge_memory.c) picks the gfp mask by defrag and VM_HUGEPAGE;
__alloc_pages_slowpath() (mm/page_alloc.c) wakes kswapd for __GFP_KSWAPD_RECLAIM, and with
__GFP_DIRECT_RECLAIM compacts first (costly order), then reclaims once and compacts again
(costly orders never retry); __alloc_pages_direct_compact() counts compact_stall and
compact_success/compact_fail unless compaction was skipped (compaction_suit_allocation_order():
too little free memory above the min watermark plus compact_gap(), 2 << order);
wakeup_kswapd() (mm/vmscan.c) wakes kswapd, which wakes kcompactd for the order when it goes
back to sleep.

The scenario (as tests/unit/test_compaction.py): 16 MiB of RAM, 3200 pages touched, every
other one unmapped: about 1600 free order-0 holes and no free block of order 9.
"""

from __future__ import annotations

import pytest

import vmsim
from vmsim.constants import (
    MADV_COLLAPSE,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.hw.pagetable import PMD_LEVEL, PTE_LEVEL
from vmsim.mm import compaction
from vmsim.mm.huge_memory import ThpSettings, vma_thp_gfp_mask
from vmsim.mm.page_alloc import GFP_DIRECT_RECLAIM, GFP_KSWAPD_RECLAIM, GFP_NORETRY

N = 3200
P = 4096
M2 = 2 << 20
RW = PROT_READ | PROT_WRITE


def vmstat(m: vmsim.Machine) -> dict[str, int]:
    """/proc/vmstat, plus the model's event counters it does not show (kswapd_wake)."""
    out = dict(m.memory.vmstat)
    out.update({k: int(v) for k, v in (line.split() for line in m.vmstat().splitlines())})
    return out


def fragmented(
    defrag: str = "madvise",
    enabled: str = "madvise",
    lock: bool = False,
    khugepaged_defrag: bool = True,
) -> tuple[vmsim.Machine, vmsim.Process]:
    m = vmsim.Machine(
        ram="16M",
        thp={"enabled": enabled, "defrag": defrag, "khugepaged_defrag": khugepaged_defrag},
    )
    p = m.spawn()
    a = p.mmap(0, N * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.madvise(a, N * P, MADV_NOHUGEPAGE)  # small pages, whatever ``enabled`` says
    for i in range(N):
        p.write(a + i * P, bytes([i % 251 + 1]))
    for i in range(0, N, 2):
        p.munmap(a + i * P, P)
    if lock:  # mlocked pages do not move: compaction cannot make a block
        for i in range(1, N, 2):
            p.mlock(a + i * P, P)
    assert not any(m.memory.frames.free_blocks(o) for o in (9, 10))
    return m, p


def thp_fault(p: vmsim.Process, madvise: bool, unmap: bool = False) -> int:
    """Map 4 MiB, madvise it if asked, write into its aligned 2 MiB; the page-table level
    that maps the write (the mapping is removed after, if ``unmap``)."""
    b = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    if madvise:
        p.madvise(b, 2 * M2, MADV_HUGEPAGE)
    h = (b + M2 - 1) & -M2
    p.write(h, b"x")
    leaf = p.mm.pt.get(h)
    assert leaf is not None
    if unmap:
        p.munmap(b, 2 * M2)
    return leaf.level


COUNTERS = (
    "compact_stall",
    "compact_success",
    "compact_fail",
    "thp_fault_alloc",
    "thp_fault_fallback",
    "kswapd_wake",
    "allocstall_normal",
)


def deltas(m: vmsim.Machine, before: dict[str, int]) -> dict[str, int]:
    now = vmstat(m)
    return {k: now[k] - before[k] for k in COUNTERS}


@pytest.mark.parametrize(
    ("defrag", "madvised", "mask"),
    [
        ("always", True, GFP_DIRECT_RECLAIM),
        ("always", False, GFP_DIRECT_RECLAIM | GFP_NORETRY),
        ("defer", True, GFP_KSWAPD_RECLAIM),
        ("defer", False, GFP_KSWAPD_RECLAIM),
        ("defer+madvise", True, GFP_DIRECT_RECLAIM),
        ("defer+madvise", False, GFP_KSWAPD_RECLAIM),
        ("madvise", True, GFP_DIRECT_RECLAIM),
        ("madvise", False, 0),
        ("never", True, 0),
        ("never", False, 0),
    ],
)
def test_vma_thp_gfp_mask_table(defrag: str, madvised: bool, mask: int) -> None:
    """vma_thp_gfp_mask(): GFP_TRANSHUGE (= LIGHT | __GFP_DIRECT_RECLAIM) for always, with
    __GFP_NORETRY unless madvised; LIGHT | __GFP_KSWAPD_RECLAIM for defer; defer+madvise
    direct if madvised, else kswapd; madvise direct only if madvised; never: LIGHT."""
    m = vmsim.Machine(thp={"defrag": defrag})
    p = m.spawn()
    a = p.mmap(0, M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    if madvised:
        p.madvise(a, M2, MADV_HUGEPAGE)
    vma = p.mm.tree.lookup(a)
    assert vma is not None
    assert vma_thp_gfp_mask(ThpSettings(defrag=defrag), vma) == mask


def test_madvised_fault_on_fragmented_memory_compacts_and_gets_a_thp() -> None:
    """defrag=madvise, MADV_HUGEPAGE: the fast path finds no order-9 block, the slow path
    compacts directly (async), a block is free afterwards: one stall, one success, a THP;
    no fallback, no reclaim, kswapd not woken (GFP_TRANSHUGE has no __GFP_KSWAPD_RECLAIM)."""
    m, p = fragmented()
    before = vmstat(m)
    assert thp_fault(p, madvise=True) == PMD_LEVEL
    assert deltas(m, before) == {
        "compact_stall": 1,
        "compact_success": 1,
        "compact_fail": 0,
        "thp_fault_alloc": 1,
        "thp_fault_fallback": 0,
        "kswapd_wake": 0,
        "allocstall_normal": 0,
    }
    assert vmstat(m)["pgmigrate_success"] > 0
    m.check_memory()
    m.check_tlb()


def test_not_madvised_under_enabled_always_defrag_madvise_falls_back_without_compacting() -> None:
    """enabled=always makes the VMA eligible, but defrag=madvise gives an unmadvised VMA
    GFP_TRANSHUGE_LIGHT: no compaction, no reclaim, no kswapd; the fault falls back."""
    m, p = fragmented(enabled="always")
    before = vmstat(m)
    assert thp_fault(p, madvise=False) == PTE_LEVEL
    d = deltas(m, before)
    assert d == {
        "compact_stall": 0,
        "compact_success": 0,
        "compact_fail": 0,
        "thp_fault_alloc": 0,
        "thp_fault_fallback": 1,
        "kswapd_wake": 0,
        "allocstall_normal": 0,
    }
    assert vmstat(m)["pgmigrate_success"] == 0


@pytest.mark.parametrize(("defrag", "madvise"), [("defer", True), ("defer+madvise", False)])
def test_defer_wakes_kswapd_which_wakes_kcompactd_and_the_next_fault_gets_a_thp(
    defrag: str, madvise: bool
) -> None:
    """defer (and defer+madvise for an unmadvised VMA): __GFP_KSWAPD_RECLAIM only. The
    node is not balanced for order 9 (no free block), so kswapd is woken (kswapd_wake) with
    kswapd_order 9 and the fault falls back at once; on the next tick kswapd, with free
    memory above the high watermark, has nothing to reclaim and wakes kcompactd for order 9
    as it sleeps; kcompactd (compact_daemon_wake) makes a block; the next fault gets a THP
    without stalling."""
    m, p = fragmented(defrag=defrag, enabled="always")
    before = vmstat(m)
    # (unmapped, so that khugepaged does not collapse it on the tick)
    assert thp_fault(p, madvise, unmap=True) == PTE_LEVEL
    d = deltas(m, before)
    assert (d["thp_fault_fallback"], d["kswapd_wake"], d["compact_stall"]) == (1, 1, 0)
    assert m.memory.node.kswapd_order == 9
    m.tick()
    assert m.memory.node.kswapd_order == 0
    assert vmstat(m)["compact_daemon_wake"] - before["compact_daemon_wake"] == 1
    assert any(m.memory.frames.free_blocks(o) for o in (9, 10))
    before = vmstat(m)
    assert thp_fault(p, madvise) == PMD_LEVEL
    d = deltas(m, before)
    assert (d["thp_fault_alloc"], d["compact_stall"], d["kswapd_wake"]) == (1, 0, 0)
    m.check_memory()


@pytest.mark.parametrize(("defrag", "madvise"), [("madvise", True), ("always", False)])
def test_compaction_that_fails_reclaims_once_and_compacts_again_then_falls_back(
    defrag: str, madvise: bool
) -> None:
    """Every used page mlocked: nothing can move, compaction runs to the end and fails
    (COMPACT_COMPLETE, not SKIPPED), so even __GFP_NORETRY (defrag=always, unmadvised)
    goes on: one direct reclaim (allocstall_normal) and a second compaction, then a costly
    order gives up: two stalls, two failures, a fallback."""
    m, p = fragmented(defrag=defrag, enabled="always", lock=True)
    before = vmstat(m)
    assert thp_fault(p, madvise) == PTE_LEVEL
    assert deltas(m, before) == {
        "compact_stall": 2,
        "compact_success": 0,
        "compact_fail": 2,
        "thp_fault_alloc": 0,
        "thp_fault_fallback": 1,
        "kswapd_wake": 0,
        "allocstall_normal": 1,
    }
    m.check_memory()


def _fill_to_skip(m: vmsim.Machine, p: vmsim.Process) -> None:
    """Use free memory until free pages are at most min + compact_gap(9) (1024): direct
    compaction is then skipped (compaction_suit_allocation_order())."""
    node = m.memory.node
    target = node.wmark_min + compaction.compact_gap(9)
    assert target < node.wmark_high + compaction.compact_gap(9)
    n = m.memory.frames.free_pages - target + 8
    c = p.mmap(0, n * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(n):
        p.write(c + i * P, b"f")
    assert m.memory.frames.free_pages <= target
    assert m.memory.frames.free_pages > node.wmark_low + 512


def test_skipped_compaction_with_noretry_gives_up_without_reclaim() -> None:
    """defrag=always, unmadvised (__GFP_NORETRY): compaction skipped (too little free
    memory): no stall, and __GFP_NORETRY with COMPACT_SKIPPED goes straight to nopage: no
    reclaim either."""
    m, p = fragmented(defrag="always", enabled="always")
    _fill_to_skip(m, p)
    before = vmstat(m)
    assert thp_fault(p, madvise=False) == PTE_LEVEL
    d = deltas(m, before)
    assert (d["compact_stall"], d["allocstall_normal"], d["thp_fault_fallback"]) == (0, 0, 1)


def test_skipped_compaction_without_noretry_reclaims_once() -> None:
    """defrag=always, madvised (no __GFP_NORETRY): compaction skipped twice (no stall) but
    direct reclaim runs between (allocstall_normal), then the fault falls back."""
    m, p = fragmented(defrag="always", enabled="always")
    _fill_to_skip(m, p)
    before = vmstat(m)
    assert thp_fault(p, madvise=True) == PTE_LEVEL
    d = deltas(m, before)
    assert (d["compact_stall"], d["allocstall_normal"], d["thp_fault_fallback"]) == (0, 1, 1)


def test_fragmentation_index() -> None:
    """__fragmentation_index(): 1600 free order-0 pages for an order-9 request:
    1000 - (1000 + 1600 * 1000 / 512) / 1600 = 1000 - 4125 // 1600 = 998 (fragmentation,
    above vm.extfrag_threshold 500: compaction is suitable); -1000 once a block is free."""
    m, _ = fragmented()
    frames = m.memory.frames
    free = frames.free_pages
    blocks = sum(frames.free_blocks(o) for o in range(11))
    assert compaction.fragmentation_index(m.memory, 9) == 1000 - (1000 + free * 1000 // 512) // (
        blocks
    )
    assert compaction.fragmentation_index(m.memory, 9) > 500
    assert compaction.compaction_suitable(m.memory, 9, m.memory.node.wmark_min)
    assert compaction.try_to_compact_pages(m.memory, 9)
    assert compaction.fragmentation_index(m.memory, 9) == -1000


def test_madv_collapse_on_fragmented_memory_compacts() -> None:
    """MADV_COLLAPSE allocates with GFP_TRANSHUGE (alloc_charge_folio() when not
    khugepaged): direct compaction makes the block; one stall, one success, one collapse."""
    m, p = fragmented()
    b = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    h = (b + M2 - 1) & -M2
    p.write(h + 3 * P, b"c")
    before = vmstat(m)
    p.madvise(h, M2, MADV_COLLAPSE)
    now = vmstat(m)
    assert p.mm.pt.get(h).level == PMD_LEVEL
    assert (now["compact_stall"] - before["compact_stall"]) == 1
    assert (now["compact_success"] - before["compact_success"]) == 1
    assert (now["thp_collapse_alloc"] - before["thp_collapse_alloc"]) == 1
    assert p.read(h + 3 * P, 1) == b"c"
    m.check_memory()


@pytest.mark.parametrize("khugepaged_defrag", [True, False])
def test_khugepaged_compacts_only_with_its_defrag_setting(khugepaged_defrag: bool) -> None:
    """alloc_hugepage_khugepaged_gfpmask(): khugepaged/defrag 1 gives GFP_TRANSHUGE (direct
    compaction: the collapse succeeds), 0 GFP_TRANSHUGE_LIGHT (thp_collapse_alloc_failed).
    defrag=never keeps the fault itself from compacting; proactive compaction is off so
    that kcompactd does not make the block first."""
    m, p = fragmented(defrag="never", khugepaged_defrag=khugepaged_defrag)
    m.memory.compaction_proactiveness = 0
    b = p.mmap(0, 2 * M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    h = (b + M2 - 1) & -M2
    p.madvise(h, M2, MADV_HUGEPAGE)
    p.write(h + 3 * P, b"k")
    assert p.mm.pt.get(h + 3 * P).level == PTE_LEVEL  # the fault fell back, no compaction
    assert vmstat(m)["compact_stall"] == 0
    m.tick()
    v = vmstat(m)
    if khugepaged_defrag:
        assert p.mm.pt.get(h + 3 * P).level == PMD_LEVEL
        assert (v["compact_stall"], v["compact_success"], v["thp_collapse_alloc"]) == (1, 1, 1)
    else:
        assert p.mm.pt.get(h + 3 * P).level == PTE_LEVEL
        assert (v["compact_stall"], v["thp_collapse_alloc_failed"]) == (0, 1)
    m.check_memory()


@pytest.mark.parametrize(
    ("defrag", "madvise", "mask"),
    [
        ("madvise", True, GFP_DIRECT_RECLAIM),
        ("madvise", False, 0),
        ("defer", True, GFP_KSWAPD_RECLAIM),
        ("always", False, GFP_DIRECT_RECLAIM | GFP_NORETRY),
    ],
)
def test_mthp_fault_allocates_with_the_vmas_thp_gfp_mask(
    defrag: str, madvise: bool, mask: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alloc_anon_folio() (mm/memory.c) allocates every mTHP order with
    vma_thp_gfp_mask(vma), the mask of the PMD fault: so an mTHP fault compacts, wakes
    kswapd or does neither exactly as a THP fault in the same VMA would."""
    m = vmsim.Machine(ram="16M", thp={"enabled": "never", "defrag": defrag, "mthp": {64: "always"}})
    asked: list[tuple[int, int]] = []
    real = m.memory.alloc_costly

    def spy(flags: int, order: int, gfp: int) -> int | None:
        asked.append((order, gfp))
        return real(flags, order, gfp)

    monkeypatch.setattr(m.memory, "alloc_costly", spy)
    p = m.spawn()
    b = p.mmap(0, M2, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    if madvise:
        p.madvise(b, M2, MADV_HUGEPAGE)
    p.write((b + 0xFFFF) & -0x10000, b"x")  # a 64 kB block inside the VMA
    assert asked == [(4, mask)]
    assert m.thp_size_stats("64kB")["anon_fault_alloc"] == 1
