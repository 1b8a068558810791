"""The cycle model: how much of a program's time goes to address translation.

The engine counts events (:class:`~vmsim.memtrace.records.Counters`); this module prices them
with a :class:`~vmsim.memtrace.records.CpuModel`. Levels are ``[L1D, L2, LLC, DRAM]`` and
``lat[level]`` is the load-to-use latency of a hit there (``cpu.caches[i].latency``, then
``cpu.dram_latency``)::

    translation_cycles = stlb_hits * stlb_hit_latency
                       + walks * walk_overhead
                       + sum(walk_refs_by_level[l] * lat[l] for every level l)
    data_cycles        = sum(data_refs_by_level[l] * lat[l] for l in L2, LLC, DRAM)
    base_cycles        = instructions * base_cpi
    total_cycles       = base_cycles + data_cycles + translation_cycles
    translation_share  = translation_cycles / total_cycles

Overlap assumptions, stated plainly: the model is *in-order*. Nothing overlaps with anything:
every STLB hit, every walk and every reference that misses the L1D stalls the core for its
full latency, one after the other. A data reference that hits the L1D costs nothing beyond
``base_cpi`` (pipelines hide L1 hits), but a paging-structure reference that hits the L1D
costs its full L1 latency (walk references are dependent loads, each needing the one before).
An L1 TLB hit costs nothing. Real out-of-order cores overlap data misses with each other and
with walks (Skylake has two page walkers), so this model overstates the cost of both data
misses and walks; the *share* can err either way (it understates translation where data
misses dominate the cycles, overstates it where a core would hide STLB hits). Basu et al.
(ISCA 2013) and Bhattacharjee's
measurements count walk cycles with hardware counters (cycles a walker was busy), which is
the ``walks * walk_overhead + walk references`` term here. ``docs/translation.md`` puts the
figures side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vmsim.memtrace.records import Counters, CpuModel

__all__ = ["Cost", "access_cycles", "cost", "level_latencies"]


@dataclass(frozen=True)
class Cost:
    """The cycles of one engine pass, by cause. ``translation_cycles`` is the sum of the
    three ``*_cycles`` terms of translation; ``translation_share`` is 0.0 for an empty trace."""

    stlb_cycles: float  # L1 TLB misses that hit the STLB
    walk_overhead_cycles: float  # fixed cost of each walk
    walk_ref_cycles: float  # paging-structure references, by the level that held them
    translation_cycles: float
    data_cycles: float  # data references that missed the L1D
    base_cycles: float  # instructions * base_cpi
    total_cycles: float
    translation_share: float


def level_latencies(cpu: CpuModel) -> tuple[int, ...]:
    """``(L1D, L2, LLC, DRAM)`` hit latencies of ``cpu``, in cycles."""
    return (*(c.latency for c in cpu.caches), cpu.dram_latency)


def cost(counters: Counters, cpu: CpuModel) -> Cost:
    """Price ``counters`` with ``cpu``'s latencies (the formula in the module text)."""
    lat = level_latencies(cpu)
    if len(lat) != len(counters.walk_refs_by_level) or len(lat) != len(counters.data_refs_by_level):
        raise ValueError(
            f"{cpu.name}: {len(lat)} latency levels, counters have "
            f"{len(counters.walk_refs_by_level)} walk and {len(counters.data_refs_by_level)} "
            "data levels"
        )
    stlb = float(counters.stlb_hits * cpu.stlb_hit_latency)
    overhead = float(counters.walks * cpu.walk_overhead)
    walk_refs = float(sum(n * c for n, c in zip(counters.walk_refs_by_level, lat, strict=True)))
    translation = stlb + overhead + walk_refs
    data = float(sum(n * c for n, c in zip(counters.data_refs_by_level[1:], lat[1:], strict=True)))
    base = counters.instructions * cpu.base_cpi
    total = base + data + translation
    return Cost(
        stlb_cycles=stlb,
        walk_overhead_cycles=overhead,
        walk_ref_cycles=walk_refs,
        translation_cycles=translation,
        data_cycles=data,
        base_cycles=base,
        total_cycles=total,
        translation_share=translation / total if total else 0.0,
    )


def access_cycles(
    cpu: CpuModel, tlb: str | None, walk_levels: Sequence[int] = (), data_level: int | None = None
) -> int:
    """The stall cycles :func:`cost` charges one access: ``tlb`` is where its translation came
    from ("L1", "STLB", or None for a walk whose paging-structure references were found at
    ``walk_levels``: 0 L1D .. 3 DRAM), ``data_level`` where its data line was found (None for
    an instruction fetch). The same terms as the module formula, for a single access: an L1
    TLB hit 0, an STLB hit ``stlb_hit_latency``, a walk ``walk_overhead`` plus each
    reference's latency, and the data line's latency unless it hit the L1D."""
    lat = level_latencies(cpu)
    if tlb == "L1":
        cycles = 0
    elif tlb == "STLB":
        cycles = cpu.stlb_hit_latency
    elif tlb is None:
        cycles = cpu.walk_overhead + sum(lat[lv] for lv in walk_levels)
    else:
        raise ValueError(f"translation source {tlb!r} is not L1, STLB or None (a walk)")
    if data_level:
        cycles += lat[data_level]
    return cycles
