"""Shared helpers of the access-trace engine tests: a Skylake CpuModel (until
vmsim.memtrace.cpus lands), trace construction and engine comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from vmsim.hw.tlb import TlbConfig
from vmsim.memtrace.engine import run_full
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import CacheGeometry, Counters, CpuModel, TraceChunk

# Intel Skylake client: TlbConfig() (vmsim.hw.tlb's default geometry), the PWC sizes of
# vmsim.hw.mmu.PagingStructureCache, 32 KiB 8-way L1D, 256 KiB 4-way L2, 8 MiB 16-way LLC.
SKYLAKE = CpuModel(
    name="skylake-test",
    tlb=TlbConfig(),
    pwc_sizes=((2, 32), (3, 4), (4, 2)),
    caches=(
        CacheGeometry(32 << 10, 8, 4),
        CacheGeometry(256 << 10, 4, 12),
        CacheGeometry(8 << 20, 16, 42),
    ),
    dram_latency=250,
    stlb_hit_latency=9,
    walk_overhead=20,
    base_cpi=0.5,
    source="test helper",
)


def chunk(
    addrs: Sequence[int] | np.ndarray, kinds: Sequence[int] | np.ndarray | int = 1
) -> TraceChunk:  # type: ignore[type-arg]
    a = np.asarray(addrs, dtype=np.uint64)
    if isinstance(kinds, int):
        k = np.full(len(a), kinds, dtype=np.uint8)
    else:
        k = np.asarray(kinds, dtype=np.uint8)
    return TraceChunk(a, k, np.zeros(len(a), dtype=np.uint16), 1)


def split(c: TraceChunk, size: int) -> list[TraceChunk]:
    """The same trace in chunks of ``size`` records (chunk boundaries must not matter)."""
    return [
        TraceChunk(c.addr[i : i + size], c.kind[i : i + size], c.size[i : i + size], 1 + i)
        for i in range(0, len(c.addr), size)
    ]


def both(
    chunks: list[TraceChunk], layout_factory: Any, cpu: CpuModel = SKYLAKE, **kw: Any
) -> tuple[Counters, Counters, Any, Any]:
    """Run the fast and the reference engine on fresh layouts; return both counters and
    both processes."""
    f = run_full(chunks, layout_factory(), cpu, engine="fast", **kw)
    r = run_full(chunks, layout_factory(), cpu, engine="reference", **kw)
    return f.counters, r.counters, f.process, r.process


def page_tables(proc: Any) -> list[dict[int, int]]:
    """The model's page tables, every level, as plain dicts (A/D bits included)."""
    return [dict(d) for d in proc.mm.pt.entries]


def diff(a: Counters, b: Counters) -> dict[str, tuple[Any, Any]]:
    da, db = asdict(a), asdict(b)
    return {k: (da[k], db[k]) for k in da if da[k] != db[k]}


def anon(*regions: tuple[int, int]) -> Any:
    return lambda: Layout.of_regions(regions)
