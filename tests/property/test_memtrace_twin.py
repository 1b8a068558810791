"""The compiled access-trace engine and the reference engine (the Python model) agree counter
for counter, and leave identical page tables, on hypothesis-generated traces (issue 12).

A trace is a few thousand records over a layout of several anonymous regions: hot pages
(TLB hits), page ranges beyond the STLB's reach (walks, PWC use), reads before writes (zero
page, then COW), instruction fetches (iTLB), records outside every region (the layout is
extended on the fly), under every what-if: page size, five-level paging, PWC off.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmsim.hw.tlb import PAGE_SIZE_2M, PAGE_SIZE_4K, TlbArrayConfig, TlbConfig
from vmsim.memtrace.engine import EngineConfig, run_full
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import CacheGeometry, TraceChunk

PAGE = 4096
# Region bases: 2 MiB-aligned and not, low and high in the address space.
BASES = (0x10000000, 0x10A03000, 0x7F0000000000, 0x7FFF00100000, 0x2000000000)
# A small TLB and small caches as well as the default ones: evictions everywhere.
SMALL_TLB = TlbConfig(
    l1d=(TlbArrayConfig(8, 2, (PAGE_SIZE_4K,)), TlbArrayConfig(4, 2, (PAGE_SIZE_2M,))),
    l1i=(TlbArrayConfig(4, 4, (PAGE_SIZE_4K,)),),
    stlb=(TlbArrayConfig(32, 4, (PAGE_SIZE_4K, PAGE_SIZE_2M)),),
)
SMALL_CACHES = (
    CacheGeometry(1024, 2, 4),
    CacheGeometry(4096, 4, 12),
    CacheGeometry(3 * 4096, 4, 40),  # 48 sets: not a power of two
)


@st.composite
def traces(draw: st.DrawFn) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    nreg = draw(st.integers(1, 4))
    regions = []
    for b in draw(st.permutations(BASES))[:nreg]:
        regions.append((b, b + draw(st.integers(1, 3000)) * PAGE))
    if draw(st.booleans()):  # room for a 1 GiB page (and 512 2 MiB ones)
        regions.append((0x40000000, 0x80000000))
        nreg += 1
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 4000))
    rng = np.random.default_rng(seed)
    which = rng.integers(0, nreg, n)
    starts = np.array([r[0] for r in regions], dtype=np.int64)[which]
    sizes = np.array([r[1] - r[0] for r in regions], dtype=np.int64)[which]
    hot = rng.random(n) < draw(st.floats(0, 1))
    offs = np.where(hot, rng.integers(0, 8 * PAGE, n) % sizes, rng.integers(0, 1 << 40, n) % sizes)
    addrs = starts + offs
    stray = rng.random(n) < draw(st.sampled_from([0.0, 0.01]))
    addrs = np.where(stray, 0x30000000 + rng.integers(0, 1 << 24, n), addrs)
    kinds = rng.choice(
        4, n, p=draw(st.sampled_from([(0.25,) * 4, (0.1, 0.6, 0.2, 0.1), (0, 1, 0, 0)]))
    )
    return regions, addrs.astype(np.uint64), kinds.astype(np.uint8)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    trace=traces(),
    page_size=st.sampled_from(["4K", "4K", "2M", "thp", "1G"]),
    five_level=st.booleans(),
    pwc=st.booleans(),
    small=st.booleans(),
    chunk=st.sampled_from([1 << 20, 333]),
)
def test_fast_and_reference_engines_agree(
    trace: tuple[list[tuple[int, int]], np.ndarray, np.ndarray],  # type: ignore[type-arg]
    page_size: str,
    five_level: bool,
    pwc: bool,
    small: bool,
    chunk: int,
) -> None:
    regions, addrs, kinds = trace
    cfg = EngineConfig(
        tlb=SMALL_TLB if small else TlbConfig(),
        caches=SMALL_CACHES if small else EngineConfig().caches,
        pwc_sizes=((2, 4), (3, 2), (4, 1)) if small else EngineConfig().pwc_sizes,
        page_size=page_size,
        five_level=five_level,
        pwc=pwc,
    )
    sizes = np.zeros(len(addrs), dtype=np.uint16)
    chunks = [
        TraceChunk(addrs[i : i + chunk], kinds[i : i + chunk], sizes[i : i + chunk], i + 1)
        for i in range(0, len(addrs), chunk)
    ]
    lay_f, lay_r = Layout.of_regions(regions), Layout.of_regions(regions)
    f = run_full(chunks, lay_f, cfg, engine="fast")
    r = run_full(chunks, lay_r, cfg, engine="reference")
    assert asdict(f.counters) == asdict(r.counters)
    assert [dict(d) for d in f.process.mm.pt.entries] == [dict(d) for d in r.process.mm.pt.entries]
    assert lay_f.added == lay_r.added
    assert f.counters.touched_pages == len(np.unique(addrs >> np.uint64(12)))
