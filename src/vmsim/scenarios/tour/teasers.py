"""Chapters 9-12 of the tour: the essay's four teasers.

9. 256 TiB address spaces: a process as the loader lays it out holds a few MiB of its
   128 TiB user half; touching pages far apart costs page tables, pages side by side do not.
10. Translation cost: the tlb demo's measurement (:func:`vmsim.scenarios.tlb.measure`: random
    loads through the access-trace engine, priced by its cycle model) at working sets past
    the STLB's reach, 4 KiB against 2 MiB pages.
11. TLB hit rates inside and past the STLB's reach (the same measurement), and the timing
    side channel those shared TLBs open (:func:`vmsim.scenarios.sidechannel.run`).
12. Huge pages: the hugepages demo's five steps (:func:`vmsim.scenarios.hugepages.story`).
"""

from __future__ import annotations

import itertools

import vmsim
from vmsim.constants import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
)
from vmsim.memtrace.cpus import DEFAULT_CPU, cpu_model, reach
from vmsim.scenarios import hugepages as hugepages_story
from vmsim.scenarios import sidechannel
from vmsim.scenarios.maps_text import parse_maps
from vmsim.scenarios.proctext import fields
from vmsim.scenarios.tlb import measure, regime
from vmsim.scenarios.tour.basics import first_refused
from vmsim.scenarios.tour.chapter import Chapter, Figures, pct, size

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
SPARSE = "Teaser: 256 TiB address spaces"
TRANSLATION = "Teaser: what translation costs"
TLB = "Teaser: TLB hit rates and a timing side channel"
HUGEPAGES = 'Teaser: huge pages, "a mess"'
MIB = 1 << 20
TOUCHES = 8  # pages touched, far apart and side by side
FAR = 1 << 39  # 512 GiB: one PML4 entry's reach, so each far page needs its own tables
FAR_BASE = 0x1000_0000_0000  # 16 TiB: free in a fresh process's layout
NEAR_BASE = 0x2000_0000_0000
TRANSLATION_SIZES = (16 * MIB, 256 * MIB)
HIT_RATE_SIZES = (1 * MIB, 4 * MIB, 8 * MIB)
ACCESSES = 100_000  # random loads per point (the tlb demo uses 200,000)
ESSAY_SHARE = 0.25  # the essay's "~25% of time" for translation
ESSAY_HIT_RATE = 0.96  # the essay's "96%+" TLB hit rates
SIDECHANNEL_TRIALS = 50
SIDECHANNEL_BITS = 16
SIDECHANNEL_SEED = 1
SIDECHANNEL_MISSING = (
    "attacker and victim take turns on one core (TLBleed's attacker runs on the sibling "
    "hyperthread, where flushing at a switch would not help), the STLB set index is page number "
    "mod 128 (not Skylake's hash), the cycle model is in-order with no timer noise, and the "
    "kernel's pages under kpti bypass the MMU (docs/sidechannel.md, 'What the model simplifies')"
)


def _page_tables_kb(m: vmsim.Machine) -> int:
    return fields(m.meminfo())["PageTables"]


def sparse(number: int) -> Chapter:
    """Chapter 9: how little of 256 TiB a process uses, and what sparseness costs."""
    m = vmsim.Machine()
    top = first_refused(m.spawn())  # an empty process: the probe's MAP_FIXED replaces nothing
    p = m.spawn(layout="linux")
    vmas = [v for v in parse_maps(p.maps()) if v.end <= top]  # [vsyscall] is above
    mapped = sum(v.end - v.start for v in vmas)
    gaps = [b.start - a.end for a, b in itertools.pairwise(vmas)]
    base = _page_tables_kb(m)
    for i in range(TOUCHES):
        addr = p.mmap(FAR_BASE + i * FAR, PAGE_SIZE, RW, ANON | MAP_FIXED)
        p.write(addr, b"far")
    far = _page_tables_kb(m)
    addr = p.mmap(NEAR_BASE, TOUCHES * PAGE_SIZE, RW, ANON | MAP_FIXED)
    for i in range(TOUCHES):
        p.write(addr + i * PAGE_SIZE, b"near")
    near = _page_tables_kb(m)
    figures: Figures = {
        "user_space_bytes": top + PAGE_SIZE,
        "vmas": len(vmas),
        "mapped_bytes": mapped,
        "mapped_fraction": mapped / (top + PAGE_SIZE),
        "largest_gap": max(gaps, default=0),
        "page_tables_kb_at_start": base,
        "far_pages": TOUCHES,
        "far_spacing": FAR,
        "page_tables_kb_far": far - base,
        "near_pages": TOUCHES,
        "page_tables_kb_near": near - far,
    }
    f = figures
    lines = (
        f"a process as the loader lays it out: {f['vmas']} VMAs, {f['mapped_bytes'] / MIB:.1f} "
        f"MiB mapped of {size(f['user_space_bytes'])}: {100 * f['mapped_fraction']:.2e}% of its "
        f"address space; the largest gap is {f['largest_gap'] / (1 << 40):.1f} TiB",
        f"{TOUCHES} pages touched {size(FAR)} apart cost {f['page_tables_kb_far']} kB of page "
        f"tables; {TOUCHES} pages side by side cost {f['page_tables_kb_near']} kB (one set of "
        "tables for all of them)",
    )
    explain = (
        "Page tables are allocated on demand, one 4 KiB table per level as a fault needs it "
        "(__pud_alloc(), __pmd_alloc(), __pte_alloc()): an empty 256 TiB space costs nothing.",
        "A page far from every other one needs a PDPT, a PD and a PT of its own; the "
        "next page beside it reuses them. Sparse layouts (ASLR, guard gaps, per-thread "
        "arenas) pay in page tables and in walks that the paging-structure caches miss.",
    )
    return Chapter(
        number,
        "256tib",
        SPARSE,
        "256 TiB per process is more than any machine has; what matters is how sparsely a "
        "process uses it.",
        lines,
        explain,
        figures,
        "vmsim maps PID [--plot FILE]",
    )


def _point(size_: int, accesses: int) -> Figures:
    cpu = cpu_model(DEFAULT_CPU)
    p = measure(size_, cpu, accesses)
    return {
        "working_set": size_,
        "regime": regime(size_, reach(cpu)),
        "hit_rate_4k": round(p.small.hit_rate, 4),
        "hit_rate_2m": round(p.huge.hit_rate, 4),
        "walks_4k": p.small.counters.walks,
        "walks_2m": p.huge.counters.walks,
        "translation_share_4k": round(p.small.cost.translation_share, 4),
        "translation_share_2m": round(p.huge.cost.translation_share, 4),
    }


def translation(number: int) -> Chapter:
    """Chapter 10: translation's share of cycles past the STLB's reach."""
    cpu = cpu_model(DEFAULT_CPU)
    points = [_point(s, ACCESSES) for s in TRANSLATION_SIZES]
    peak = max(points, key=lambda x: x["translation_share_4k"])
    figures: Figures = {"cpu": cpu.name, "accesses": ACCESSES, "points": points}
    lines = [
        f"{size(x['working_set'])} of random loads on {cpu.name}: 4 KiB pages hit the TLB "
        f"{pct(x['hit_rate_4k'])}, {x['walks_4k']:,} walks, translation "
        f"{pct(x['translation_share_4k'])} of cycles; 2 MiB pages {pct(x['translation_share_2m'])}"
        for x in points
    ]
    verdict = "reaches" if peak["translation_share_4k"] >= ESSAY_SHARE else "stays below"
    lines.append(
        f"the essay's ~{ESSAY_SHARE:.0%}: the model {verdict} it here (at most "
        f"{pct(peak['translation_share_4k'])}, at {size(peak['working_set'])} of uniform random "
        "loads, one instruction per load)"
    )
    explain = (
        "Every load needs a translation; a TLB miss costs a walk (the PMH reads up to 4 "
        "entries, each a memory access that may miss the data caches). The cycle model prices "
        "L1 dTLB hits, STLB hits and walks by the latencies of the CPU model.",
        "2 MiB pages cut a level off every walk and multiply the TLB's reach by 512: the same "
        "loads hardly walk at all.",
    )
    return Chapter(
        number,
        "translation-cost",
        TRANSLATION,
        "Address translation is not free: on big working sets a large share of the time "
        "(the essay says ~25%) goes to TLB misses and page walks.",
        tuple(lines),
        explain,
        figures,
        "vmsim demo tlb [--plot FILE]; vmsim tlb TRACE",
    )


def tlb_sidechannel(number: int) -> Chapter:
    """Chapter 11: hit rates inside and past the STLB's reach; the side channel."""
    cpu = cpu_model(DEFAULT_CPU)
    r = reach(cpu)
    points = [_point(s, ACCESSES) for s in HIT_RATE_SIZES]
    side = sidechannel.run(trials=SIDECHANNEL_TRIALS, bits=SIDECHANNEL_BITS, seed=SIDECHANNEL_SEED)
    figures: Figures = {
        "cpu": cpu.name,
        "stlb_reach_4k": r.stlb_4k,
        "points": points,
        "sidechannel": {
            "trials": side.trials,
            "bits": side.bits,
            "seed": side.seed,
            "accuracy": {m.name: m.accuracy for m in side.mitigations.values()},
            "extra_walks": {m.name: m.extra_walks for m in side.mitigations.values()},
        },
    }
    lines = [
        f"{size(x['working_set'])} of random loads: TLB hit rate {pct(x['hit_rate_4k'])} "
        f"({'inside' if x['working_set'] <= r.stlb_4k else 'past'} the STLB's "
        f"{size(r.stlb_4k)} reach; the essay's {ESSAY_HIT_RATE:.0%}+ "
        f"{'holds' if x['hit_rate_4k'] >= ESSAY_HIT_RATE else 'does not hold'})"
        for x in points
    ]
    lines.append(
        f"side channel ({side.trials} trials of a {side.bits}-bit secret): accuracy per bit "
        + ", ".join(
            f"{m.name} {m.accuracy:.2f} ({m.extra_walks:+,} walks)"
            for m in side.mitigations.values()
        )
        + "; 0.5 is a coin toss"
    )
    explain = (
        "The TLB is shared by everything that runs on a core. An attacker fills STLB sets with "
        "its own pages (prime), the victim runs, and the attacker times its pages again "
        "(probe): a set the victim used is slower. TLBleed (Gras et al., USENIX Security 2018) "
        "did this across hyperthreads.",
        "PCIDs tag entries (arch/x86/mm/tlb.c choose_new_asid()) but tagged entries still "
        "share sets; a full flush at every switch (no PCID) empties the sets, and partitioning "
        "or hashing the sets per PCID hides the victim, each at a cost in walks.",
    )
    return Chapter(
        number,
        "tlb-sidechannel",
        TLB,
        "TLBs hit 96%+ of the time, which is why translation is affordable; but a cache "
        "shared by processes opens timing side channels.",
        tuple(lines),
        explain,
        figures,
        "vmsim demo tlb; vmsim demo sidechannel",
        missing=SIDECHANNEL_MISSING,
    )


HUGEPAGES_EXPLAIN = (
    "A 2 MiB page is one PMD entry (a leaf one level up): one TLB entry covers 512 times "
    "more, and a walk stops a level early.",
    "An anonymous fault in a THP-enabled VMA allocates a whole huge page "
    "(do_huge_pmd_anonymous_page()); khugepaged later collapses ranges that have up to "
    "max_ptes_none empty PTEs (collapse_huge_page()): memory the program never touched "
    "becomes RSS.",
    "Unmapping part of a THP splits the PMD (__split_huge_pmd()) but the folio is only "
    "queued (deferred_split_folio()); the shrinker frees its unused pages under pressure "
    "(deferred_split_scan()).",
    "A huge page needs 512 free contiguous frames (an order-9 buddy block): on fragmented "
    "memory the fault falls back to 4 KiB pages until compaction (compact_zone()) moves "
    "movable pages out of the way.",
    "hugetlbfs pages come from a pool reserved up front: mmap reserves them "
    "(hugetlb_reserve_pages()), and a MAP_NORESERVE fault that finds the pool empty gets "
    "SIGBUS (hugetlb_no_page()).",
)


def hugepages(number: int) -> Chapter:
    """Chapter 12: the hugepages demo's five steps."""
    steps = list(hugepages_story.story())
    figures: Figures = {
        s.key: {"title": s.title, "shown": s.shown, "figures": s.figures} for s in steps
    }
    missing = "; ".join(f"{s.title}: {s.missing}" for s in steps if not s.shown)
    # the demo's own one-line account of each step, built from its figures
    lines = tuple(s.explain if s.shown else f"{s.title}: cannot show yet" for s in steps)
    return Chapter(
        number,
        "hugepages",
        HUGEPAGES,
        "Huge pages fix the TLB's reach, but bring their own trouble: bloat, memory that does "
        "not come back, allocations that fail on fragmented memory, pools reserved up front.",
        lines,
        HUGEPAGES_EXPLAIN,
        figures,
        "vmsim demo hugepages [--plot FILE]",
        missing=missing,
    )


__all__ = [
    "HUGEPAGES",
    "SPARSE",
    "TLB",
    "TRANSLATION",
    "hugepages",
    "sparse",
    "tlb_sidechannel",
    "translation",
]
