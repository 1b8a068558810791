"""CPU presets for the access-trace engine: each core's TLB geometry, paging-structure caches,
data caches and the latencies the cycle model (:mod:`vmsim.memtrace.cost`) charges.

Every figure below names where it comes from. Geometry (entries, ways, page sizes) is
published by the vendors; latencies are measurements by others on real parts, in core cycles;
where nothing is published, the preset says what it assumes instead.

``skylake`` (the default; Intel Skylake client, e.g. Core i7-6700K)
    TLBs: exactly ``vmsim.hw.tlb.DEFAULT_TLB_CONFIG`` (L1 dTLB 64 x 4 KiB 4-way, 32 x 2 MiB
    4-way, 4 x 1 GiB; L1 iTLB 128 x 4 KiB 8-way, 8 x 2 MiB; STLB 1536 entries 12-way shared by
    4 KiB and 2 MiB, 16 x 1 GiB 4-way): Intel 64 and IA-32 Architectures Optimization
    Reference Manual, Skylake client microarchitecture, TLB parameters table; the same figures
    in AnandTech's Skylake-SP cache comparison ("4KB 64-entry 4-way TLB", "4KB 1536-entry
    12-way TLB"). Paging-structure caches: ``vmsim.hw.mmu.PagingStructureCache``'s defaults
    (32 PDE, 4 PDPTE, 2 PML4E entries), the sizes measured on recent Intel cores in the
    literature (Intel documents none). Caches: L1D 32 KiB 8-way, L2 256 KiB 4-way, LLC 8 MiB
    16-way (Optimization Reference Manual; AnandTech). Latencies from 7-cpu.com's Skylake page
    (i7-6700): L1 4 cycles, L2 12, L3 42, RAM 42 cycles + 51 ns (about 250 cycles at 4 GHz);
    an L1 dTLB miss that hits the STLB costs 9 cycles (7-cpu.com, "L1 TLB miss, L2 TLB hit").

``icelake`` (Intel Sunny Cove, Ice Lake client, e.g. Core i7-1065G7)
    TLBs (Optimization Reference Manual, Ice Lake client / Sunny Cove TLB parameters; the
    same in AnandTech's "Testing Intel Ice Lake 10nm" cache and TLB section): L1 dTLB 64 x
    4 KiB 4-way, 32 x 2 MiB 4-way, 8 x 1 GiB fully associative; L1 iTLB 128 x 4 KiB 8-way,
    16 x 2 MiB; STLB 2048 entries 16-way shared by 4 KiB and 2 MiB, plus 1024 x 1 GiB 8-way.
    Caches (AnandTech's core cache comparison): L1D 48 KiB 12-way, L2 512 KiB 8-way, LLC
    8 MiB (2 MiB per core) 16-way. Latencies (AnandTech's and chips-and-cheese's latency
    sweeps of Sunny Cove): L1 5 cycles, L2 13, LLC about 40, DRAM about 80 ns (about 300
    cycles at 3.9 GHz). The STLB hit latency is not published for this core: Skylake's 9
    cycles are assumed. Paging-structure caches: as Skylake (assumed, not published).

``zen4`` (AMD Zen 4, Ryzen 7000 / EPYC 9004)
    TLBs, as a Zen 4 core reports them through CPUID (read on an AMD EPYC, family 19h model
    11h, with :mod:`vmsim.hw.cpuid`; ``tests/unit/test_cpuid.py`` compares this preset with
    the host whenever it is a Zen 4 core): L1 dTLB 72 entries, fully associative, for 4 KiB
    and for 2 MiB pages (here: one array of 72 ways and one set holding 4 KiB, 2 MiB and
    1 GiB pages); L1 iTLB 64 entries fully associative; L2 dTLB 3072 entries for 4 KiB and
    for 2 MiB pages (associativity code 6 for 4 KiB, which the kernel's ``assocs[]`` reads
    as 8 ways); L2 iTLB 512 entries (code 4). The 1 GiB leaf (Fn8000_0019) read as zeros
    under the hypervisor; that 1 GiB pages are "smashed" into 2 MiB L2 entries is from the
    Zen 2 description below. Caches (CPUID Fn8000_001D, the same as the kernel's
    /sys/devices/system/cpu/cpu0/cache): L1D 32 KiB 8-way, L2 1 MiB 8-way, L3 32 MiB
    16-way. Latencies (chips-and-cheese's Zen 4 latency sweep; 7-cpu.com's
    Zen pages for the earlier cores): L1 4 cycles, L2 14, L3 about 50, DRAM about 75 ns
    (about 400 cycles at 5.4 GHz); an L1 dTLB miss that hits the L2 dTLB costs about 7 cycles.

Where the zen4 preset approximates (vmsim's ``TlbConfig`` has one second-level TLB shared by
data and instructions, set-indexed with a power-of-two set count):

* the STLB is the 3072-entry L2 dTLB, mapped as 12 ways x 256 sets: 3072 entries in 8 ways
  would need 384 sets, not a power of two (AMD documents its L2 dTLB as skewed-associative,
  not simply set-indexed); instruction fetches that miss the L1 iTLB use it too, where the
  hardware has its own 512-entry L2 iTLB;
* 1 GiB pages are kept whole in the unified L2 array instead of being smashed into 2 MiB
  entries;
* AMD's page-walk caches (a page directory cache and PDEs held in the L2 TLB) are modelled as
  Intel's paging-structure caches with Skylake's sizes; AMD publishes no sizes.

Checked against sources found (2026-12, with the project's search tool), and what is not:

* Ice Lake caches, verified: L1D 48 KB 12-way, L1I 32 KB 8-way, L2 512 KB 8-way, L3 2 MB per
  core 16-way -- AnandTech, "The Ice Lake Benchmark Preview: Inside Intel's 10nm", page
  "Cache and TLB Updates" (I. Cutress, 2019-08-01),
  https://www.anandtech.com/show/14664/testing-intel-ice-lake-10nm/2 . The preset's LLC is
  the 4-core part's 8 MiB.
* Skylake cache latencies, checked against the Optimization Reference Manual's Skylake client
  cache table as reproduced in https://blog.51cto.com/u_14850/6626242 (L1D 4 cycles, L2 12,
  L3 44 "fastest latency"); the preset keeps 7-cpu.com's measured 42 for L3.
* Zen 4's second-level TLB organisation, partly verified by its predecessors: WikiChip,
  "Zen 2 - Microarchitectures - AMD" (https://en.wikichip.org/wiki/amd/microarchitectures/zen_2):
  the L2 dTLB is 12-way set associative (2048 entries on Zen 2), holds 4 KiB and 2 MiB
  entries, and 1 GiB pages are smashed into 2 MiB entries; 7-cpu.com, "AMD Zen2"
  (https://7-cpu.com/cpu/Zen2.html): L1 iTLB 64 entries fully associative for all page sizes,
  L2 iTLB 512 entries 8-way. That supports the 12-way mapping of the 3072-entry Zen 4 array
  and the smashing noted above. Chips and Cheese, "AMD's Zen 4, Part 2: Memory Subsystem and
  Conclusion" (https://chipsandcheese.com/p/amds-zen-4-part-2-memory-subsystem-and-conclusion)
  is the source for the Zen 4 latencies; the excerpt reachable here does not show them.
* Zen 4 TLB sizes and cache geometry, verified on the core itself (CPUID, above; 2026-12).
* **Not verified** here (from the vendors' manuals and reviews as recalled, unchecked against
  a text): the Ice Lake TLB geometry (64/32/8 L1 dTLB entries, 128/16 L1 iTLB, 2048-entry
  16-way STLB, 1024 x 1 GiB 8-way), its latencies (L1 5, L2 13, LLC 40, DRAM 300 cycles) and
  STLB hit latency (assumed 9); the Zen 4 latencies (L1 4 cycles, L2 14, L3 50, DRAM 400
  cycles) and the 7-cycle L2 TLB hit.

The walk overhead (the fixed cost of a walk beyond its memory references) is charged as the
core's STLB lookup that found the miss; no published figure isolates the walker's own time.
``base_cpi`` is 1.0 for every core: the cycle model is in-order (see :mod:`vmsim.memtrace.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass

from vmsim.hw.tlb import (
    DEFAULT_TLB_CONFIG,
    PAGE_SIZE_1G,
    PAGE_SIZE_2M,
    PAGE_SIZE_4K,
    TlbArrayConfig,
    TlbConfig,
)
from vmsim.memtrace.records import CacheGeometry, CpuModel

__all__ = [
    "CPU_NAMES",
    "DEFAULT_CPU",
    "PWC_DEFAULT",
    "Reach",
    "cpu_model",
    "icelake",
    "reach",
    "skylake",
    "zen4",
]

KIB = 1 << 10
MIB = 1 << 20

# vmsim.hw.mmu.PagingStructureCache's defaults: 32 PDE, 4 PDPTE, 2 PML4E, no PML5E cache
PWC_DEFAULT: tuple[tuple[int, int], ...] = ((2, 32), (3, 4), (4, 2), (5, 0))


def skylake() -> CpuModel:
    """Intel Skylake client: today's ``DEFAULT_TLB_CONFIG`` and PWC (see the module text)."""
    return CpuModel(
        name="skylake",
        tlb=DEFAULT_TLB_CONFIG,
        pwc_sizes=PWC_DEFAULT,
        caches=(
            CacheGeometry(32 * KIB, 8, 4),
            CacheGeometry(256 * KIB, 4, 12),
            CacheGeometry(8 * MIB, 16, 42),
        ),
        dram_latency=250,
        stlb_hit_latency=9,
        walk_overhead=9,
        base_cpi=1.0,
        source="Intel Optimization Reference Manual (Skylake TLBs, caches); 7-cpu.com Skylake "
        "(latencies: L1 4, L2 12, L3 42, RAM 42 cycles + 51 ns; STLB hit 9 cycles)",
    )


def icelake() -> CpuModel:
    """Intel Sunny Cove (Ice Lake client): 2048-entry STLB, 1024 1 GiB entries."""
    return CpuModel(
        name="icelake",
        tlb=TlbConfig(
            l1d=(
                TlbArrayConfig(64, 4, (PAGE_SIZE_4K,)),
                TlbArrayConfig(32, 4, (PAGE_SIZE_2M,)),
                TlbArrayConfig(8, 8, (PAGE_SIZE_1G,)),
            ),
            l1i=(
                TlbArrayConfig(128, 8, (PAGE_SIZE_4K,)),
                TlbArrayConfig(16, 8, (PAGE_SIZE_2M,)),
            ),
            stlb=(
                TlbArrayConfig(2048, 16, (PAGE_SIZE_4K, PAGE_SIZE_2M)),
                TlbArrayConfig(1024, 8, (PAGE_SIZE_1G,)),
            ),
        ),
        pwc_sizes=PWC_DEFAULT,
        caches=(
            CacheGeometry(48 * KIB, 12, 5),
            CacheGeometry(512 * KIB, 8, 13),
            CacheGeometry(8 * MIB, 16, 40),
        ),
        dram_latency=300,
        stlb_hit_latency=9,
        walk_overhead=9,
        base_cpi=1.0,
        source="Intel Optimization Reference Manual (Sunny Cove TLBs); AnandTech and "
        "chips-and-cheese (caches, latencies); STLB hit latency assumed as Skylake's",
    )


def zen4() -> CpuModel:
    """AMD Zen 4: 72-entry fully associative L1 dTLB, 3072-entry L2 dTLB (approximated)."""
    return CpuModel(
        name="zen4",
        tlb=TlbConfig(
            l1d=(TlbArrayConfig(72, 72, (PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G)),),
            l1i=(TlbArrayConfig(64, 64, (PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G)),),
            stlb=(TlbArrayConfig(3072, 12, (PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G)),),
        ),
        pwc_sizes=PWC_DEFAULT,
        caches=(
            CacheGeometry(32 * KIB, 8, 4),
            CacheGeometry(1 * MIB, 8, 14),
            CacheGeometry(32 * MIB, 16, 50),
        ),
        dram_latency=400,
        stlb_hit_latency=7,
        walk_overhead=7,
        base_cpi=1.0,
        source="CPUID of a Zen 4 core (TLB sizes, caches: vmsim.hw.cpuid); "
        "chips-and-cheese Zen 4 memory subsystem (latencies); see vmsim.memtrace.cpus for "
        "where the TLB mapping approximates",
    )


_PRESETS = {"skylake": skylake, "icelake": icelake, "zen4": zen4}
CPU_NAMES: tuple[str, ...] = tuple(_PRESETS)
DEFAULT_CPU = "skylake"


def cpu_model(name: str) -> CpuModel:
    """The preset called ``name`` (one of :data:`CPU_NAMES`); ValueError naming them if not."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown CPU {name!r}: one of {', '.join(CPU_NAMES)}") from None


@dataclass(frozen=True)
class Reach:
    """How much memory each structure of a CPU covers, in bytes: the L1 dTLB and the STLB
    with 4 KiB and with 2 MiB pages, and the PDE cache (each entry maps a 2 MiB range whose
    walks then read one entry, the PTE)."""

    l1_4k: int
    stlb_4k: int
    pwc: int
    l1_2m: int
    stlb_2m: int


def reach(cpu: CpuModel) -> Reach:
    """The reach of ``cpu``'s TLB arrays and PDE cache (entries x page size)."""
    tlb = cpu.tlb
    if not isinstance(tlb, TlbConfig):
        raise TypeError(f"{cpu.name}: tlb is not a vmsim.hw.tlb.TlbConfig")

    def total(arrays: tuple[TlbArrayConfig, ...], size: int) -> int:
        return sum(a.entries * size for a in arrays if size in a.page_sizes)

    return Reach(
        l1_4k=total(tlb.l1d, PAGE_SIZE_4K),
        stlb_4k=total(tlb.stlb, PAGE_SIZE_4K),
        pwc=dict(cpu.pwc_sizes).get(2, 0) * PAGE_SIZE_2M,
        l1_2m=total(tlb.l1d, PAGE_SIZE_2M),
        stlb_2m=total(tlb.stlb, PAGE_SIZE_2M),
    )
