"""The access-trace engine (issue 12 items 2, 3): the compiled engine against the reference
engine (the Python model), the cache model's twins, layouts, what-ifs, and the checks that
cannot be tuned (LRU hit rates on uniform random streams).

Expected values come from the hardware rules the model implements (SDM walk lengths, the TLB
geometry of vmsim.hw.tlb's default Skylake config), worked out in the comments; the engines are
never asked for their own expectations.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from memtrace_helpers import SKYLAKE, anon, both, chunk, diff, page_tables, split

from vmsim.memtrace.cache import CacheModel, cache_arrays, cache_lines, cache_run
from vmsim.memtrace.cpus import cpu_model
from vmsim.memtrace.engine import EngineConfig, run, run_full
from vmsim.memtrace.layout import GRANULE, Layout
from vmsim.memtrace.records import (
    KIND_INSTR,
    KIND_LOAD,
    KIND_MODIFY,
    KIND_STORE,
    CacheGeometry,
    TraceChunk,
)
from vmsim.snapshot import LINUX_LAYOUT

PAGE = 4096
BASE = 0x10000000

# --------------------------------------------------------------------------- the cache model

TINY_CACHES = (
    CacheGeometry(4 * 64, 2, 4),
    CacheGeometry(16 * 64, 4, 12),
    CacheGeometry(64 * 64, 4, 40),
)


def test_cache_lru_by_hand() -> None:
    # L1: 2 sets x 2 ways. Lines 0, 2, 4 all map to L1 set 0 (line % 2).
    c = CacheModel(TINY_CACHES)
    assert c.access(0 * 64) == 3  # cold: DRAM, filled everywhere
    assert c.access(2 * 64) == 3
    assert c.access(0 * 64) == 0  # L1 hit; line 2 is now the LRU of set 0
    assert c.access(4 * 64) == 3  # evicts line 2 from L1 set 0
    assert c.access(2 * 64) == 1  # L2 still has it (L2: 4 sets x 4 ways)
    assert c.contents()[0][0] == [4, 2]  # L1 set 0, LRU first: 0 was evicted by the L2 refill


# The model's RAM (vmsim.memtrace.model: Machine(ram="1T")): with it, the cache arrays keep
# 32-bit tags where every level has enough sets (none: no bound, whole 64-bit line numbers).
MODEL_RAM = 1 << 40


def test_cache_twins_agree_on_random_lines() -> None:
    rng = random.Random(5)
    for geoms in (TINY_CACHES, SKYLAKE.caches):
        for bound in (None, MODEL_RAM):
            py = CacheModel(geoms)
            tags, desc = cache_arrays(geoms, bound)
            lines = [rng.randrange(0, 300) * 64 + rng.randrange(64) for _ in range(3000)]
            lines += [rng.randrange(0, 1 << 20) * 64 for _ in range(3000)]
            # and lines near the top of the model's RAM (the largest tags)
            lines += [MODEL_RAM - 64 * rng.randrange(1, 1 << 16) for _ in range(3000)]
            want = [py.access(a) for a in lines]
            out = np.zeros(len(lines), dtype=np.int64)
            cache_run(tags, desc, np.asarray(lines, dtype=np.int64), out)
            assert out.tolist() == want
            # same contents, set by set, in LRU order (the arrays keep most recent first)
            assert _twin_contents(tags, desc) == py.contents()


def test_cache_tag_width() -> None:
    # Skylake's levels have 64, 1024 and 8192 sets: with 2**40 bytes of RAM (2**34 lines)
    # the largest tag is 2**34 // 64 - 1 = 2**28 - 1: int32. The tiny caches' L1D has 2
    # sets: 2**33 - 1 does not fit 2**31 - 1, so int64. 8 sets over 2**40 bytes: the largest
    # tag is (2**34 - 1) // 8 = 2**31 - 1, the largest int32 that is a tag; one more line
    # of RAM and it does not fit.
    assert cache_arrays(SKYLAKE.caches, MODEL_RAM)[0].dtype == np.int32
    assert cache_arrays(SKYLAKE.caches)[0].dtype == np.int64
    assert cache_arrays(TINY_CACHES, MODEL_RAM)[0].dtype == np.int64
    eight = (CacheGeometry(8 * 2 * 64, 2, 4), *SKYLAKE.caches[1:])
    assert cache_arrays(eight, MODEL_RAM)[0].dtype == np.int32
    assert cache_arrays(eight, MODEL_RAM + 64)[0].dtype == np.int64
    # the int32 arrays start on a 64-byte boundary: a 16-way set is one host line
    for bound in (None, MODEL_RAM):
        assert cache_arrays(SKYLAKE.caches, bound)[0].ctypes.data % 64 == 0


def test_engine_refuses_a_frame_past_the_ram() -> None:
    # The fast engine's cache tags are sized for the model's RAM (1 TiB): an entry mapping a
    # frame at or past it would not fit them; it is refused, never wrapped. One below is fine.
    from vmsim.memtrace.engine import FastEngine, Model

    eng = FastEngine(Model(Layout.of_regions([(BASE, BASE + 16 * PAGE)]), EngineConfig()))
    assert eng.ctags.dtype == np.int32
    key = BASE >> 12
    eng._mirror([1], [key], [MODEL_RAM - PAGE | 0x67])
    with pytest.raises(ValueError, match="past the model's 1099511627776-byte RAM"):
        eng._mirror([1], [key], [MODEL_RAM | 0x67])


@pytest.mark.parametrize("bound", [None, 1 << 36])
def test_cache_non_power_of_two_sets(bound: int | None) -> None:
    # 48, 5 and 11 sets; with 2**36 bytes the largest tag is (2**30 - 1) // 5: int32
    geoms = (
        CacheGeometry(3 * 16 * 64, 2, 4),
        CacheGeometry(5 * 4 * 64, 4, 12),
        CacheGeometry(11 * 64 * 4, 4, 40),
    )
    py = CacheModel(geoms)
    tags, desc = cache_arrays(geoms, bound)
    assert tags.dtype == (np.int64 if bound is None else np.int32)
    rng = random.Random(9)
    lines = [rng.randrange(0, 200) * 64 for _ in range(4000)]
    lines += [(1 << 36) - 64 * rng.randrange(1, 4000) for _ in range(4000)]  # large tags
    out = np.zeros(len(lines), dtype=np.int64)
    cache_run(tags, desc, np.asarray(lines, dtype=np.int64), out)
    assert out.tolist() == [py.access(a) for a in lines]
    assert _twin_contents(tags, desc) == py.contents()


def _twin_contents(tags: np.ndarray, desc: np.ndarray) -> list[list[list[int]]]:  # type: ignore[type-arg]
    """The array twin's sets as line numbers, least recently used first
    (CacheModel.contents()'s order)."""
    return [[row[::-1] for row in level] for level in cache_lines(tags, desc)]


@pytest.mark.parametrize("bound", [None, 1 << 32])
@pytest.mark.parametrize(
    "ways",
    [(1, 1, 1), (2, 3, 5), (4, 4, 4), (8, 4, 16), (12, 8, 16), (16, 16, 16), (8, 12, 24)],
)
def test_cache_twins_every_set_size(ways: tuple[int, int, int], bound: int | None) -> None:
    # Sets of 4, 8, 12 and 16 ways take the vector code (12: a masked vector of 16), the
    # others the scalar loops. The stream mixes the cases each must get right: the line that
    # is already the most recent of its L1D set (including right after that set evicted),
    # a hit at every position of a set (a working set a little over each level's size), and
    # misses that evict; the levels' contents are compared set by set after every segment.
    # Both tag widths: whole line numbers in int64 (no bound), tags in int32 (2**32 bytes:
    # the largest tag, 2**26 // 2, fits).
    geoms = (
        CacheGeometry(2 * ways[0] * 64, ways[0], 4),
        CacheGeometry(4 * ways[1] * 64, ways[1], 12),
        CacheGeometry(8 * ways[2] * 64, ways[2], 40),
    )
    py = CacheModel(geoms)
    tags, desc = cache_arrays(geoms, bound)
    assert tags.dtype == (np.int64 if bound is None else np.int32)
    rng = random.Random(sum(ways))
    spans = [2 * ways[0] + 1, 4 * ways[1] + 3, 8 * ways[2] + 5, 40 * ways[2]]
    seen: set[int] = set()
    for _segment in range(12):
        lines: list[int] = []
        for _ in range(400):
            r = rng.random()
            if r < 0.2 and lines:
                line = lines[-1]  # the L1D set's most recent line again
            elif r < 0.3 and lines:
                line = lines[-1] + 2 * rng.randrange(1, 4)  # same L1D set (2 sets): evicts
            else:
                line = rng.randrange(rng.choice(spans))
            lines.append(line)
        want = [py.access(line * 64 + rng.randrange(64)) for line in lines]
        out = np.zeros(len(lines), dtype=np.int64)
        cache_run(tags, desc, np.asarray(lines, dtype=np.int64) * 64, out)
        assert out.tolist() == want
        assert _twin_contents(tags, desc) == py.contents()
        seen |= set(want)
    assert seen == {0, 1, 2, 3}  # every level answered


def test_cache_geometry_errors() -> None:
    with pytest.raises(ValueError, match="three levels"):
        CacheModel(TINY_CACHES[:2])
    with pytest.raises(ValueError, match="do not divide"):
        CacheModel((CacheGeometry(100, 3, 1), *TINY_CACHES[1:]))


# --------------------------------------------------------------------------- the two engines


def test_read_then_write_faults_twice_through_the_zero_page() -> None:
    # A read of a fresh anonymous page maps the zero page (fault 1, then a walk); the write
    # finds a read-only L1 entry: INVLPG, COW fault (fault 2), a second walk.
    trace = [chunk([BASE + 8, BASE + 16], [KIND_LOAD, KIND_STORE])]
    f, r, fp, rp = both(trace, anon((BASE, BASE + 16 * PAGE)))
    assert diff(f, r) == {}
    assert (f.faults, f.walks, f.l1_hits, f.stlb_hits) == (2, 2, 0, 0)
    assert f.accesses == f.records == 2 and f.touched_pages == 1
    assert page_tables(fp) == page_tables(rp)


def test_walk_lengths_four_and_five_levels_without_pwc() -> None:
    # With the PWC off, every walk reads one entry per level: 4 (48-bit) or 5 (57-bit).
    trace = [chunk([BASE + i * PAGE for i in range(3)], KIND_STORE)]
    for five, refs in ((False, 4), (True, 5)):
        f, r, _, _ = both(trace, anon((BASE, BASE + 16 * PAGE)), five_level=five, pwc=False)
        assert diff(f, r) == {}
        assert f.walks == 3 and f.walk_refs == 3 * refs and f.pwc_hits == 0


def test_pwc_shortens_walks_in_the_same_table() -> None:
    # Three pages under one PTE table: the first walk (after its fault) reads 4 entries; the
    # later ones hit the PDE cache and read the PTE only. The fault path flushes the PWC, so
    # the walk right after each fault starts from the root again: 3 x 4 refs.
    trace = [chunk([BASE + i * PAGE for i in range(3)], KIND_STORE)]
    f, r, _, _ = both(trace, anon((BASE, BASE + 16 * PAGE)))
    assert diff(f, r) == {}
    assert f.walk_refs == 12 and f.pwc_hits == 0
    # once the pages exist, a second round of walks (the TLB flushed by evicting) hits the PWC
    pages = 2000  # > 1536 STLB entries + 64 L1: cycling through them evicts everything
    trace = [chunk([BASE + i * PAGE for i in range(pages)] * 2, KIND_STORE)]
    f, r, _, _ = both(trace, anon((BASE, BASE + pages * PAGE)))
    assert diff(f, r) == {}
    assert f.walks == 2 * pages  # nothing survives a cycle longer than the TLB reach
    # Second round: every walk hits a PWC. The last fault of round 1 flushed the PWC, whose
    # retry walk cached only the PDE of the 4th PTE table; the first pages of tables 0, 1, 2
    # find the PDPTE cache instead (PMD + PTE: 2 refs), every other walk reads the PTE only.
    assert f.pwc_hits == pages
    assert f.walk_refs == 4 * pages + pages + 3


def test_engines_agree_on_a_mixed_random_trace_and_chunking_does_not_matter() -> None:
    rng = np.random.default_rng(3)
    n = 30000
    region = 3000 * PAGE
    addrs = np.concatenate(
        [BASE + rng.integers(0, region, n), 0x7F0000000000 + rng.integers(0, 1 << 22, n // 3)]
    )
    kinds = rng.integers(0, 4, len(addrs))
    trace = chunk(addrs, kinds)
    factory = anon((BASE, BASE + region), (0x7F0000000000, 0x7F0000000000 + (1 << 22)))
    f, r, fp, rp = both([trace], factory)
    assert diff(f, r) == {}
    assert page_tables(fp) == page_tables(rp)
    assert f.instructions == int((kinds == KIND_INSTR).sum())
    assert f.l1_hits + f.stlb_hits + f.walks == f.accesses == len(addrs)
    assert sum(f.walk_refs_by_level) == f.walk_refs
    assert sum(f.data_refs_by_level) == len(addrs) - f.instructions
    g = run(split(trace, 777), factory(), SKYLAKE)
    assert diff(g, f) == {}


@pytest.mark.parametrize("page_size", ["2M", "1G", "thp"])
def test_engines_agree_with_huge_pages(page_size: str) -> None:
    rng = np.random.default_rng(4)
    n = 20000
    addrs = np.concatenate(
        [BASE + rng.integers(0, 5000 * PAGE, n), 0x7F0000123000 + rng.integers(0, 1 << 23, n)]
    )
    kinds = rng.integers(0, 4, len(addrs))
    trace = [chunk(addrs, kinds)]
    factory = anon((BASE, BASE + 5000 * PAGE), (0x7F0000123000, 0x7F0000123000 + (1 << 23)))
    f, r, fp, rp = both(trace, factory, page_size=page_size)
    assert diff(f, r) == {}
    assert page_tables(fp) == page_tables(rp)
    assert f.touched_pages == len(np.unique(addrs >> 12))
    assert f.by_page_size.get({"thp": "2M"}.get(page_size, page_size), 0) > 0


@pytest.mark.parametrize("cpu", ["icelake", "zen4"])
@pytest.mark.parametrize("page_size", ["4K", "2M"])
def test_engines_agree_on_every_cpu_preset(cpu: str, page_size: str) -> None:
    # the presets' geometries differ from Skylake's: 16-way and 8-way arrays, Zen 4's fully
    # associative 72-entry L1 dTLB holding all three page sizes in one array
    rng = np.random.default_rng(5)
    n = 20000
    addrs = np.concatenate(
        [BASE + rng.integers(0, 6000 * PAGE, n), BASE + rng.integers(0, 40 * PAGE, n)]
    )
    kinds = rng.integers(0, 4, len(addrs))
    factory = anon((BASE, BASE + 6000 * PAGE))
    f, r, fp, rp = both([chunk(addrs, kinds)], factory, cpu_model(cpu), page_size=page_size)
    assert diff(f, r) == {}
    assert page_tables(fp) == page_tables(rp)


def test_maps_snapshot_layout_and_accesses_outside_it() -> None:
    # Fetches from the program's text, loads from libc's data, stores to the heap, and a few
    # stores to an address no line of the snapshot maps (covered on the fly).
    text = 0x555555556000
    heap = 0x555555560000
    libc_rw = 0x7FFFF7F55000
    stray = 0x600000000000
    addrs = [text + 0x10, text + 0x2000, libc_rw + 8, heap + 0x100, heap + 0x5000, stray + 4]
    kinds = [KIND_INSTR, KIND_INSTR, KIND_LOAD, KIND_STORE, KIND_MODIFY, KIND_STORE]
    trace = [chunk(addrs * 50, kinds * 50)]
    lay_f = Layout.from_maps(LINUX_LAYOUT)
    lay_r = Layout.from_maps(LINUX_LAYOUT)
    f = run(trace, lay_f, SKYLAKE)
    r = run(trace, lay_r, SKYLAKE, engine="reference")
    assert diff(f, r) == {}
    assert lay_f.estimated and lay_f.added == lay_r.added == {(stray, stray + GRANULE)}
    assert f.instructions == 100 and f.touched_pages == 6


def test_relro_write_after_snapshot_is_allowed_and_recorded() -> None:
    # 55555555e000 is r--p in the snapshot (RELRO after ld.so's mprotect): a store there is
    # what ld.so did before; the layout gives the page write permission back.
    trace = [chunk([0x55555555E010, 0x55555555E020], KIND_STORE)]
    lay = Layout.from_maps(LINUX_LAYOUT)
    f = run(trace, lay, SKYLAKE)
    lay2 = Layout.from_maps(LINUX_LAYOUT)
    r = run(trace, lay2, SKYLAKE, engine="reference")
    assert diff(f, r) == {}
    assert lay.added == {(0x55555555E000, 0x55555555F000)}


def test_inferred_layout_merges_granules() -> None:
    addrs = [0x1000_0000, 0x1000_0000 + 3 * GRANULE + 5, 0x1000_0000 + (4 << 20), 0x7FFF_0000_0000]
    lay = Layout.infer([chunk(addrs)])
    assert lay.estimated and lay.source == "inferred"
    spans = [(r.start, r.end) for r in lay.regions]
    assert spans == [
        (0x1000_0000, 0x1000_0000 + 4 * GRANULE),  # 3 granules apart (< 1 MiB): merged
        (0x1000_0000 + (4 << 20), 0x1000_0000 + (4 << 20) + GRANULE),
        (0x7FFF_0000_0000, 0x7FFF_0000_0000 + GRANULE),
    ]


def test_address_outside_user_space_is_a_one_line_error() -> None:
    trace = [chunk([BASE, 0xFFFFFFFFFF600000], KIND_LOAD)]
    for engine in ("fast", "reference"):
        with pytest.raises(ValueError, match=r"record 2: address 0xffffffffff600000 is outside"):
            run(trace, Layout.of_regions([(BASE, BASE + PAGE)]), SKYLAKE, engine=engine)


def test_malformed_chunks_are_one_line_errors() -> None:
    lay = Layout.of_regions([(BASE, BASE + PAGE)])
    for engine in ("fast", "reference"):
        bad_kind = chunk([BASE, BASE + 8], [KIND_LOAD, 7])
        with pytest.raises(ValueError, match=r"record 2: kind 7 is not I/L/S/M"):
            run([bad_kind], Layout.of_regions([(BASE, BASE + PAGE)]), SKYLAKE, engine=engine)
        short = TraceChunk(bad_kind.addr, bad_kind.kind[:1], bad_kind.size, 1)
        with pytest.raises(ValueError, match=r"record 1: a chunk of 2 addresses has 1 kinds"):
            run([short], lay, SKYLAKE, engine=engine)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="page size"):
        EngineConfig(page_size="4M")
    with pytest.raises(ValueError, match="engine must be"):
        run([], Layout(), SKYLAKE, engine="turbo")


def test_engine_state_is_small_per_touched_page() -> None:
    pages = 4000
    trace = [chunk([BASE + i * PAGE for i in range(pages)], KIND_STORE)]
    res = run_full(trace, Layout.of_regions([(BASE, BASE + pages * PAGE)]), SKYLAKE)
    assert res.counters.touched_pages == pages
    # the page-table mirror: one hash table per level, 16-byte slots, at most twice as many
    # slots as keys (plus SLACK) once past MIN_SLOTS: 32 bytes a key or less
    from vmsim.memtrace.engine import FastEngine, Model

    eng = FastEngine(Model(Layout.of_regions([(BASE, BASE + pages * PAGE)]), EngineConfig()))
    eng.run_chunk(trace[0])
    assert eng.mirror_bytes() / pages <= 72


def test_mirror_state_per_page_at_the_sparse_extreme() -> None:
    """One touched page in each of 256 page tables (2 MiB apart): the model has 256 PTEs, 256
    PMD entries, one PUD and one PGD entry; the mirror keeps one key for each, in tables of
    at most max(MIN_SLOTS, 2 * (keys + SLACK)) 16-byte slots: under 72 bytes a page."""
    from vmsim.memtrace import _core as core
    from vmsim.memtrace.engine import FastEngine, Model

    n = 256
    base = 1 << 32  # 1 GiB aligned: the 256 page tables share one PMD table
    eng = FastEngine(Model(Layout.of_regions([(base, base + n * (2 << 20))]), EngineConfig()))
    eng.run_chunk(chunk([base + i * (2 << 20) for i in range(n)], KIND_STORE))
    assert eng.counters().touched_pages == n
    used = [int(eng.meta[lv, core.M_USED]) for lv in (1, 2, 3, 4)]
    assert used == [n, n, 1, 1]
    for lv in (1, 2, 3, 4):
        slots = int(eng.meta[lv, core.M_SLOTS])
        assert slots <= max(core.MIN_SLOTS, 2 * (used[lv - 1] + core.SLACK))
    assert eng.mirror_bytes() == eng.ent.nbytes + eng.meta.nbytes
    assert eng.mirror_bytes() / n <= 72


# --------------------------------------------------------------------------- checks that cannot be tuned


def _measured(trace_warm: list, trace_all: list, factory, **kw):  # type: ignore[no-untyped-def]
    """Counters of the measured part: a run of warm-up + measurement minus a run of the
    warm-up alone (both deterministic, so the common prefix counts the same)."""
    a = run(trace_all, factory(), SKYLAKE, **kw)
    w = run(trace_warm, factory(), SKYLAKE, **kw)
    return a.l1_hits - w.l1_hits, a.stlb_hits - w.stlb_hits, a.accesses - w.accesses


def test_uniform_random_hit_rate_matches_lru_expectation() -> None:
    # N = 12288 pages, uniform: each STLB set (128 sets x 12 ways) sees N/128 = 96 pages and
    # holds the 12 most recent, so a random access finds its page with probability 12/96 =
    # 1536/N = 12.5%. The L1 dTLB (64 entries) holds pages accessed very recently, which are
    # nearly all in the STLB too: it adds well under a point.
    n_pages = 12288
    rng = np.random.default_rng(11)
    warm = chunk([BASE + i * PAGE for i in range(n_pages)], KIND_STORE)  # every page faulted in
    rand = chunk(BASE + rng.integers(0, n_pages, 120000) * PAGE + 64, KIND_LOAD)
    factory = anon((BASE, BASE + n_pages * PAGE))
    l1, stlb, n = _measured([warm], [warm, rand], factory)
    assert n == 120000
    assert abs((l1 + stlb) / n - 1536 / n_pages) < 0.01


def test_two_mib_pages_over_64_mib_nearly_always_hit() -> None:
    # 32 huge pages: the L1 dTLB's 2 MiB array (32 entries, 8 sets x 4 ways) holds them all;
    # only the 32 first touches walk.
    rng = np.random.default_rng(12)
    size = 64 << 20
    trace = [chunk(BASE + rng.integers(0, size, 100000), KIND_STORE)]
    c = run(trace, Layout.of_regions([(BASE, BASE + size)]), SKYLAKE, page_size="2M")
    assert c.by_page_size == {"2M": 100000}
    assert c.walks == 32
    assert (c.l1_hits + c.stlb_hits) / c.accesses > 0.999
