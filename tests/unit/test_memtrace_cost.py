"""The cycle model (vmsim.memtrace.cost) and the CPU presets (vmsim.memtrace.cpus): expected
cycles computed by hand from the formula in the module text; geometry from the vendors'
tables (Skylake: 64-entry 4-way L1 dTLB, 1536-entry 12-way STLB; Sunny Cove: 2048-entry
16-way STLB; Zen 4: 72-entry fully associative L1 dTLB, 3072-entry L2 dTLB)."""

from __future__ import annotations

import pytest

from vmsim.hw.mmu import PagingStructureCache
from vmsim.hw.tlb import DEFAULT_TLB_CONFIG, PAGE_SIZE_1G, PAGE_SIZE_2M, PAGE_SIZE_4K, TlbConfig
from vmsim.memtrace.cost import cost, level_latencies
from vmsim.memtrace.cpus import CPU_NAMES, DEFAULT_CPU, cpu_model, icelake, skylake, zen4
from vmsim.memtrace.records import CacheGeometry, Counters, CpuModel


def _counters() -> Counters:
    return Counters(
        instructions=1000,
        stlb_hits=10,
        walks=5,
        walk_refs_by_level=[8, 4, 2, 1],
        data_refs_by_level=[500, 20, 5, 2],
    )


def test_skylake_cycles_by_hand() -> None:
    # Skylake: L1 4, L2 12, L3 42, DRAM 250; STLB hit 9, walk overhead 9, base CPI 1.0
    c = cost(_counters(), skylake())
    assert c.stlb_cycles == 10 * 9
    assert c.walk_overhead_cycles == 5 * 9
    assert c.walk_ref_cycles == 8 * 4 + 4 * 12 + 2 * 42 + 1 * 250  # 414
    assert c.translation_cycles == 90 + 45 + 414  # 549
    assert c.data_cycles == 20 * 12 + 5 * 42 + 2 * 250  # 950: L1D hits cost nothing extra
    assert c.base_cycles == 1000
    assert c.total_cycles == 1000 + 950 + 549  # 2499
    assert c.translation_share == pytest.approx(549 / 2499)


def test_custom_cpu_cycles_by_hand() -> None:
    cpu = CpuModel(
        name="toy",
        tlb=DEFAULT_TLB_CONFIG,
        pwc_sizes=(),
        caches=(CacheGeometry(1024, 2, 1), CacheGeometry(4096, 4, 10), CacheGeometry(8192, 4, 100)),
        dram_latency=1000,
        stlb_hit_latency=3,
        walk_overhead=20,
        base_cpi=0.5,
        source="hand-made",
    )
    counters = Counters(
        instructions=400,
        stlb_hits=7,
        walks=2,
        walk_refs_by_level=[3, 2, 1, 1],
        data_refs_by_level=[90, 4, 3, 1],
    )
    c = cost(counters, cpu)
    # 7*3 + 2*20 + (3*1 + 2*10 + 1*100 + 1*1000) = 21 + 40 + 1123 = 1184
    assert c.translation_cycles == 1184
    # 4*10 + 3*100 + 1*1000 = 1340 ; base 400*0.5 = 200
    assert c.data_cycles == 1340
    assert c.base_cycles == 200
    assert c.total_cycles == 1184 + 1340 + 200
    assert c.translation_share == pytest.approx(1184 / 2724)


def test_no_translation_cost_when_every_access_hits_the_l1_tlb() -> None:
    counters = Counters(instructions=50, accesses=80, l1_hits=80, data_refs_by_level=[30, 0, 0, 0])
    c = cost(counters, skylake())
    assert c.translation_cycles == 0
    assert c.total_cycles == 50
    assert c.translation_share == 0.0


def test_empty_trace_has_share_zero() -> None:
    c = cost(Counters(), skylake())
    assert (c.total_cycles, c.translation_share) == (0.0, 0.0)


def test_level_count_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="latency levels"):
        cost(Counters(walk_refs_by_level=[0, 0, 0]), skylake())


def test_level_latencies_of_skylake() -> None:
    assert level_latencies(skylake()) == (4, 12, 42, 250)


def test_skylake_is_todays_default_tlb_and_pwc() -> None:
    cpu = cpu_model(DEFAULT_CPU)
    assert DEFAULT_CPU == "skylake"
    assert cpu.tlb == DEFAULT_TLB_CONFIG
    assert dict(cpu.pwc_sizes) == PagingStructureCache().sizes == {2: 32, 3: 4, 4: 2, 5: 0}


def _reach(cfg: TlbConfig, level: str, size: int) -> int:
    return sum(a.entries * size for a in getattr(cfg, level) if size in a.page_sizes)


def test_skylake_reaches() -> None:
    tlb = skylake().tlb
    assert isinstance(tlb, TlbConfig)
    assert _reach(tlb, "l1d", PAGE_SIZE_4K) == 256 << 10  # 64 x 4 KiB
    assert _reach(tlb, "stlb", PAGE_SIZE_4K) == 6 << 20  # 1536 x 4 KiB
    assert _reach(tlb, "stlb", PAGE_SIZE_2M) == 3 << 30  # 1536 x 2 MiB


def test_icelake_geometry() -> None:
    tlb = icelake().tlb
    assert isinstance(tlb, TlbConfig)
    shared = next(a for a in tlb.stlb if PAGE_SIZE_4K in a.page_sizes)
    assert (shared.entries, shared.ways, shared.page_sizes) == (
        2048,
        16,
        (PAGE_SIZE_4K, PAGE_SIZE_2M),
    )
    huge = next(a for a in tlb.stlb if PAGE_SIZE_1G in a.page_sizes)
    assert (huge.entries, huge.ways) == (1024, 8)
    assert icelake().caches[0].size == 48 << 10


def test_zen4_l1_dtlb_is_one_fully_associative_set_for_every_size() -> None:
    tlb = zen4().tlb
    assert isinstance(tlb, TlbConfig)
    (l1d,) = tlb.l1d
    assert (l1d.entries, l1d.sets) == (72, 1)
    assert set(l1d.page_sizes) == {PAGE_SIZE_4K, PAGE_SIZE_2M, PAGE_SIZE_1G}
    (l2,) = tlb.stlb
    assert l2.entries == 3072


def test_every_preset_is_complete() -> None:
    for name in CPU_NAMES:
        cpu = cpu_model(name)
        assert cpu.name == name
        assert len(cpu.caches) == 3
        lat = level_latencies(cpu)
        assert list(lat) == sorted(lat), name  # farther is slower
        assert cpu.source


def test_unknown_cpu_names_the_presets() -> None:
    with pytest.raises(ValueError, match="skylake, icelake, zen4"):
        cpu_model("pentium")
