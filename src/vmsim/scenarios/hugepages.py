"""The huge-page "mess", step by step, on model machines (``vmsim demo hugepages``).

Five steps, each a fresh machine or trace; every figure is read from the model (the trace
engine's counters, smaps, meminfo, vmstat, buddyinfo, the hugetlb pool), never written in:

1. TLB reach: the same random loads over a working set past the STLB's 4 KiB reach, through
   the access-trace engine (:func:`vmsim.memtrace.engine.run`) with 4 KiB and with 2 MiB pages.
2. khugepaged's RSS bloat: one touched page, then ``MADV_HUGEPAGE``, then khugepaged
   (``Machine.tick()``): with ``max_ptes_none`` = 511 the range is collapsed into a THP and
   the process's RSS grows from 4 kB to 2048 kB (collapse_huge_page()).
3. ``MADV_DONTNEED`` of 511 of the 512 pages of a THP: the PMD is split, the folio stays
   allocated, partly mapped, on the deferred split queue (no memory comes back) until memory
   pressure runs the deferred split shrinker (deferred_split_scan()).
4. Fragmentation: every other page of memory in use leaves no free order-9 block, so a THP
   fault falls back (thp_fault_fallback); compaction (compact_zone()) moves the movable
   pages and makes a 2 MiB block again (here: growing the hugetlb pool, which compacts).
5. A hugetlbfs pool: ``mmap(MAP_HUGETLB)`` reserves its pages at mmap time (HugePages_Rsvd,
   hugetlb_reserve_pages()); under ``MAP_NORESERVE`` nothing is reserved and a fault that
   finds the pool dry gets SIGBUS (hugetlb_no_page() -> VM_FAULT_SIGBUS).

A step the model of this build cannot show says so in ``missing`` (and ``shown`` is False):
steps 2 and 3 need the THP model (the fault path, splits, khugepaged), and step 4's fallback
needs the THP fault path. Nothing here prints: :mod:`vmsim.cli.demo_hugepages` renders it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

import vmsim
from vmsim.constants import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_HUGETLB,
    MAP_NORESERVE,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.errors import BusError, OomKilled
from vmsim.memtrace.cpus import DEFAULT_CPU, cpu_model, reach
from vmsim.memtrace.engine import run as run_trace
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import KIND_LOAD, KIND_STORE, Counters, TraceChunk
from vmsim.scenarios.proctext import fields, vmstat

KB = 1 << 10
MB = 1 << 20
HPAGE = 2 * MB  # HPAGE_PMD_SIZE
HPAGE_NR = HPAGE // PAGE_SIZE  # 512
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS

TLB_WORKING_SET = 16 * MB  # past the STLB's 4 KiB reach (6 MiB on Skylake), inside 2 MiB's
TLB_ACCESSES = 50_000
TLB_BASE = 0x7F00_0000_0000
TLB_SEED = 13
KHUGEPAGED_TICKS = 16  # khugepaged wake-ups to wait for a collapse
FRAG_RAM = "32M"
FRAG_LEFT_KB = 1024  # memory left unwritten: less than one 2 MiB block
PRESSURE = 96 * MB  # what step 3's second process may write (RAM 64 MiB)
POOL = 4  # 2 MiB pages in step 5's pool
POOL_RESERVED = 2  # pages mapped with a reservation
POOL_NORESERVE = 4  # pages mapped with MAP_NORESERVE


@dataclass(frozen=True)
class Step:
    """One step: a title, one line of explanation (``explain``), whether the model of this
    build could show it (``shown``; ``missing`` says what it cannot show yet), and the
    figures read from the model."""

    key: str
    title: str
    explain: str
    shown: bool
    missing: str = ""
    figures: dict[str, int | float | str | list[int]] = field(default_factory=dict)


# --- reading the model --------------------------------------------------------------------


def _rss_kb(p: vmsim.Process) -> int:
    return fields(p.smaps_rollup()).get("Rss", 0)


def _anon_huge_kb(p: vmsim.Process) -> int:
    return fields(p.smaps_rollup()).get("AnonHugePages", 0)


def buddy_counts(m: vmsim.Machine) -> list[int]:
    """/proc/buddyinfo's free blocks per order 0..10 (the model's one zone)."""
    line = m.buddyinfo().splitlines()[0]
    return [int(w) for w in line.split()[4:]]


def _free_kb(m: vmsim.Machine) -> int:
    return fields(m.meminfo())["MemFree"]


def _aligned_region(p: vmsim.Process, size: int) -> int:
    """A private anonymous mapping with a 2 MiB-aligned range of ``size`` in it."""
    addr = p.mmap(0, size + HPAGE, RW, ANON)
    return (addr + HPAGE - 1) & -HPAGE


def _has_thp(m: vmsim.Machine) -> bool:
    """Whether this build models THPs: /proc/vmstat has the thp_* event lines."""
    return "thp_fault_alloc" in vmstat(m)


# --- the steps ----------------------------------------------------------------------------


def _chunk(addr: np.ndarray, kind: int) -> TraceChunk:
    n = len(addr)
    return TraceChunk(addr, np.full(n, kind, dtype=np.uint8), np.full(n, 8, dtype=np.uint16), 1)


def _minus(a: Counters, b: Counters) -> tuple[int, int, int]:
    """(accesses, TLB hits, walks) of ``a`` beyond ``b``."""
    hits = a.l1_hits + a.stlb_hits - b.l1_hits - b.stlb_hits
    return a.accesses - b.accesses, hits, a.walks - b.walks


def tlb_reach(size: int = TLB_WORKING_SET, accesses: int = TLB_ACCESSES) -> Step:
    """Step 1: ``accesses`` random 8-byte loads over ``size`` bytes, after a warm-up that
    stores once to every 4 KiB page (the faults and cold walks): the loads' TLB hits and
    walks with 4 KiB and with 2 MiB pages (the warm-up pass's counters subtracted)."""
    cpu = cpu_model(DEFAULT_CPU)
    r = reach(cpu)
    base = np.uint64(TLB_BASE)
    warm = _chunk(base + np.arange(0, size, PAGE_SIZE, dtype=np.uint64), KIND_STORE)
    rng = np.random.default_rng(TLB_SEED)
    loads = _chunk(base + rng.integers(0, size // 64, accesses, dtype=np.uint64) * 64, KIND_LOAD)
    layout = Layout.of_regions([(TLB_BASE, TLB_BASE + size)])
    figures: dict[str, int | float | str | list[int]] = {
        "cpu": cpu.name,
        "working_set": size,
        "loads": accesses,
        "l1_dtlb_reach_4k": r.l1_4k,
        "stlb_reach_4k": r.stlb_4k,
        "l1_dtlb_reach_2m": r.l1_2m,
        "stlb_reach_2m": r.stlb_2m,
    }
    rate: dict[str, float] = {}
    walked: dict[str, int] = {}
    for page_size in ("4k", "2m"):
        before = run_trace([warm], layout, cpu, page_size=page_size.upper())
        after = run_trace([warm, loads], layout, cpu, page_size=page_size.upper())
        n, hits, walked[page_size] = _minus(after, before)
        rate[page_size] = round(hits / n, 4) if n else 0.0
        figures[f"hit_rate_{page_size}"] = rate[page_size]
        figures[f"walks_{page_size}"] = walked[page_size]
    explain = (
        f"TLB reach: {accesses:,} random loads over {size // MB} MiB on {cpu.name} "
        f"(STLB reach {r.stlb_4k // MB} MiB with 4 KiB pages, {r.stlb_2m // MB} MiB with "
        f"2 MiB): 4 KiB pages hit the TLB {100 * rate['4k']:.1f}% "
        f"({walked['4k']:,} page walks), 2 MiB pages "
        f"{100 * rate['2m']:.1f}% ({walked['2m']:,} walks)"
    )
    return Step("tlb", "TLB reach of 4 KiB and 2 MiB pages", explain, True, "", figures)


def khugepaged_bloat(ticks: int = KHUGEPAGED_TICKS) -> Step:
    """Step 2: touch one page of a 2 MiB-aligned range, then ``MADV_HUGEPAGE`` it, then let
    khugepaged run (``tick()``) until it collapses the range (or ``ticks`` wake-ups)."""
    m = vmsim.Machine(ram="64M")
    p = m.spawn()
    a = _aligned_region(p, HPAGE)
    p.write(a, b"x")
    touched = _rss_kb(p)
    p.madvise(a, HPAGE, MADV_HUGEPAGE)
    waited = 0
    while waited < ticks and _anon_huge_kb(p) == 0:
        m.tick()
        waited += 1
    after = _rss_kb(p)
    huge = _anon_huge_kb(p)
    figures: dict[str, int | float | str | list[int]] = {
        "rss_kb_after_touch": touched,
        "ticks": waited,
        "rss_kb_after_khugepaged": after,
        "anon_huge_kb_after_khugepaged": huge,
        "thp_collapse_alloc": vmstat(m).get("thp_collapse_alloc", 0),
    }
    if huge:
        explain = (
            f"khugepaged bloat: one page touched = {touched} kB RSS; after MADV_HUGEPAGE and "
            f"{waited} khugepaged wake-up(s) (max_ptes_none 511) the range is one THP: "
            f"RSS {after} kB, AnonHugePages {huge} kB"
        )
        return Step("khugepaged", "khugepaged's RSS bloat", explain, True, "", figures)
    missing = (
        "khugepaged is not in this build's model (no THP collapse): "
        f"RSS stayed {after} kB after {waited} wake-ups"
    )
    explain = f"khugepaged bloat: one page touched = {touched} kB RSS; cannot show yet: {missing}"
    return Step("khugepaged", "khugepaged's RSS bloat", explain, False, missing, figures)


def _pressure(m: vmsim.Machine, size: int) -> tuple[int, bool]:
    """Memory pressure: a second process writes up to ``size`` bytes, 1 MiB at a time, until
    reclaim has split a THP (the deferred split shrinker, or reclaim finding no swap cluster:
    thp_split_page grew) or swapped one out whole (thp_swpout grew), or the OOM killer ends
    it; then it exits. Returns (kB it wrote, whether it was OOM-killed)."""
    q = m.spawn()
    b = q.mmap(0, size, RW, ANON)

    def gone() -> int:
        vm = vmstat(m)
        return vm.get("thp_split_page", 0) + vm.get("thp_swpout", 0)

    before = gone()
    written = 0
    killed = False
    try:
        while written < size and gone() == before:
            for off in range(written, written + MB, PAGE_SIZE):
                q.write(b + off, b"p")
            written += MB
            m.tick()
    except OomKilled:
        killed = True
    if q.alive:
        q.exit()
    return written // KB, killed


def dontneed_split() -> Step:
    """Step 3: a THP written at fault in a ``MADV_HUGEPAGE`` range, then ``MADV_DONTNEED``
    of all but its first page: free memory before and after, the deferred split counters,
    then memory pressure (the deferred split shrinker) and the split count."""
    m = vmsim.Machine(ram="64M", swap="128M")
    p = m.spawn()
    a = _aligned_region(p, HPAGE)
    p.madvise(a, HPAGE, MADV_HUGEPAGE)
    free0 = _free_kb(m)
    p.write(a, b"x")
    rss = _rss_kb(p)
    huge = _anon_huge_kb(p)
    free1 = _free_kb(m)
    p.madvise(a + PAGE_SIZE, HPAGE - PAGE_SIZE, MADV_DONTNEED)
    free2 = _free_kb(m)
    rss2 = _rss_kb(p)
    vm = vmstat(m)
    figures: dict[str, int | float | str | list[int]] = {
        "rss_kb_after_write": rss,
        "anon_huge_kb_after_write": huge,
        "used_kb_by_write": free0 - free1,
        "dontneed_pages": HPAGE_NR - 1,
        "rss_kb_after_dontneed": rss2,
        "freed_kb_by_dontneed": free2 - free1,
        "thp_split_pmd": vm.get("thp_split_pmd", 0),
        "thp_deferred_split_page": vm.get("thp_deferred_split_page", 0),
    }
    if not huge:
        missing = (
            "the THP fault path is not in this build's model: the write mapped one 4 KiB "
            f"page (RSS {rss} kB, AnonHugePages 0 kB), so there is no THP to split"
        )
        explain = f"MADV_DONTNEED of a THP: cannot show yet: {missing}"
        return Step("dontneed", "MADV_DONTNEED frees nothing", explain, False, missing, figures)
    written, killed = _pressure(m, PRESSURE)
    figures["pressure_written_kb"] = written
    figures["pressure_oom_killed"] = int(killed)
    figures["thp_split_page_after_pressure"] = vmstat(m).get("thp_split_page", 0)
    figures["thp_swpout_after_pressure"] = vmstat(m).get("thp_swpout", 0)
    figures["free_kb_after_pressure_exit_minus_before"] = _free_kb(m) - free2
    explain = (
        f"MADV_DONTNEED of {HPAGE_NR - 1} of a THP's {HPAGE_NR} pages: one write made a "
        f"{huge} kB THP ({free0 - free1} kB of memory); DONTNEED split the PMD "
        f"(thp_split_pmd {figures['thp_split_pmd']}), RSS {rss2} kB, but freed "
        f"{free2 - free1} kB: the folio waits on the deferred split queue "
        f"(thp_deferred_split_page {figures['thp_deferred_split_page']}) until memory "
        f"pressure splits it or swaps it out (thp_split_page "
        f"{figures['thp_split_page_after_pressure']}, thp_swpout "
        f"{figures['thp_swpout_after_pressure']}, "
        f"after {written} kB written by another process"
        + (", which the OOM killer ended)" if killed else ")")
    )
    return Step("dontneed", "MADV_DONTNEED frees nothing", explain, True, "", figures)


def fragmentation() -> Step:
    """Step 4: fill most of memory with one process's pages, free every other page
    (``MADV_DONTNEED``): the free blocks of order 9 and up before and after; a THP fault in
    a fresh ``MADV_HUGEPAGE`` range (when the build has THPs); then growing the hugetlb pool
    by one 2 MiB page, which compacts (compact_stall / compact_success) to get its block."""
    m = vmsim.Machine(ram=FRAG_RAM)
    p = m.spawn()
    start = buddy_counts(m)
    fill = (_free_kb(m) - FRAG_LEFT_KB) * KB & -PAGE_SIZE  # less than 2 MiB left free
    a = p.mmap(0, fill, RW, ANON)
    for off in range(0, fill, PAGE_SIZE):
        p.write(a + off, b"f")
    for off in range(PAGE_SIZE, fill, 2 * PAGE_SIZE):
        p.madvise(a + off, PAGE_SIZE, MADV_DONTNEED)
    frag = buddy_counts(m)
    figures: dict[str, int | float | str | list[int]] = {
        "buddy_at_boot": start,
        "filled_kb": fill // KB,
        "freed_every_other_kb": fill // KB // 2,
        "free_kb_fragmented": _free_kb(m),
        "buddy_fragmented": frag,
        "order9_blocks_fragmented": sum(frag[9:]),
    }
    thp = _has_thp(m)
    if thp:
        before = vmstat(m)
        b = _aligned_region(p, HPAGE)
        p.madvise(b, HPAGE, MADV_HUGEPAGE)
        p.write(b, b"t")
        after = vmstat(m)
        figures["thp_fault_alloc"] = after["thp_fault_alloc"] - before["thp_fault_alloc"]
        figures["thp_fault_fallback"] = after.get("thp_fault_fallback", 0) - before.get(
            "thp_fault_fallback", 0
        )
        figures["thp_fault_compact_stall"] = after["compact_stall"] - before["compact_stall"]
        figures["thp_fault_anon_huge_kb"] = _anon_huge_kb(p)
    before = vmstat(m)
    got = m.set_nr_hugepages("2M", 1)
    after = vmstat(m)
    figures["pool_pages_got"] = got
    for name in ("compact_stall", "compact_success", "compact_fail", "compact_isolated"):
        figures[name] = after.get(name, 0) - before.get(name, 0)
    figures["buddy_after_compaction"] = buddy_counts(m)
    head = (
        f"fragmentation: {fill // KB} kB written then every other page freed: "
        f"{figures['free_kb_fragmented']} kB free but {figures['order9_blocks_fragmented']} "
        "free blocks of 2 MiB"
    )
    tail = (
        f"; growing the hugetlb pool compacted (compact_stall {figures['compact_stall']}, "
        f"compact_success {figures['compact_success']}, {figures['compact_isolated']} pages "
        f"isolated) and got {got} huge page(s)"
    )
    if thp:
        mid = (
            f"; a THP fault there: thp_fault_alloc {figures['thp_fault_alloc']}, "
            f"thp_fault_fallback {figures['thp_fault_fallback']} (direct compaction stalls "
            f"{figures['thp_fault_compact_stall']})"
        )
        explain = head + mid + tail
        return Step("fragmentation", "Fragmentation and compaction", explain, True, "", figures)
    missing = (
        "the THP fault path is not in this build's model, so a THP fault's fallback to "
        "4 KiB pages (thp_fault_fallback) cannot be shown; the compaction that makes a 2 MiB "
        "block again is shown through the hugetlb pool"
    )
    explain = f"{head}{tail}; cannot show yet: {missing}"
    return Step("fragmentation", "Fragmentation and compaction", explain, False, missing, figures)


def hugetlb_pool(
    pool: int = POOL, reserved: int = POOL_RESERVED, noreserve: int = POOL_NORESERVE
) -> Step:
    """Step 5: a pool of ``pool`` 2 MiB pages; a ``MAP_HUGETLB`` mapping of ``reserved``
    pages (reserved at mmap), one of them touched; a ``MAP_NORESERVE`` mapping of
    ``noreserve`` pages touched page by page until a fault gets SIGBUS."""
    m = vmsim.Machine(ram="64M", hugepages={"2M": pool})
    p = m.spawn()
    s0 = m.hugepage_stats("2M")
    a = p.mmap(0, reserved * HPAGE, RW, ANON | MAP_HUGETLB)
    s1 = m.hugepage_stats("2M")
    p.write(a, b"h")
    s2 = m.hugepage_stats("2M")
    b = p.mmap(0, noreserve * HPAGE, RW, ANON | MAP_HUGETLB | MAP_NORESERVE)
    s3 = m.hugepage_stats("2M")
    ok = 0
    sigbus = ""
    for i in range(noreserve):
        try:
            p.write(b + i * HPAGE, b"n")
        except BusError as e:
            sigbus = str(e)
            break
        ok += 1
    s4 = m.hugepage_stats("2M")
    mi = fields(m.meminfo())
    figures: dict[str, int | float | str | list[int]] = {
        "pool": s0["nr_hugepages"],
        "rsvd_after_mmap": s1["resv_hugepages"],
        "free_after_mmap": s1["free_hugepages"],
        "rsvd_after_touch": s2["resv_hugepages"],
        "free_after_touch": s2["free_hugepages"],
        "rsvd_after_noreserve_mmap": s3["resv_hugepages"],
        "noreserve_faults_ok": ok,
        "sigbus": sigbus,
        "free_at_end": s4["free_hugepages"],
        "rsvd_at_end": s4["resv_hugepages"],
        "meminfo_hugepages_rsvd": mi["HugePages_Rsvd"],
        "meminfo_hugepages_free": mi["HugePages_Free"],
    }
    explain = (
        f"hugetlbfs: pool of {pool} x 2 MiB; mmap(MAP_HUGETLB) of {reserved} pages reserves "
        f"them (HugePages_Rsvd {s1['resv_hugepages']}, Free {s1['free_hugepages']}), a touch "
        f"uses one (Rsvd {s2['resv_hugepages']}, Free {s2['free_hugepages']}); "
        f"MAP_NORESERVE of {noreserve} pages reserves nothing (Rsvd "
        f"{s3['resv_hugepages']}): {ok} fault(s) succeed, then "
        + (sigbus if sigbus else "no SIGBUS")
    )
    return Step("hugetlb", "A hugetlbfs pool and its SIGBUS", explain, True, "", figures)


def story() -> Iterator[Step]:
    """The five steps, in order."""
    yield tlb_reach()
    yield khugepaged_bloat()
    yield dontneed_split()
    yield fragmentation()
    yield hugetlb_pool()


__all__ = [
    "Step",
    "buddy_counts",
    "dontneed_split",
    "fragmentation",
    "hugetlb_pool",
    "khugepaged_bloat",
    "story",
    "tlb_reach",
]
