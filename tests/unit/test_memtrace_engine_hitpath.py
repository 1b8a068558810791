"""The fast engine's hit path (vmsim.memtrace._core.run_chunk: the loop over records whose
translation is an L1 hit, the memo of each L1 structure's most recent entry) against the
reference engine: the same counters, the same page tables, and the same TLB contents, set by
set in recency order (the model's state; only the slot an entry occupies inside a set is the
engine's own). Traces are built to stay on and leave that path at its boundaries: the memo'd
entry hit again, evicted from its set, its page stored to while clean, fetched from as well as
loaded from, and large pages whose 4 KiB pages are not counted as touched yet.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from memtrace_helpers import SKYLAKE, chunk, diff, page_tables

from vmsim.memtrace.engine import EngineConfig, FastEngine, Model
from vmsim.memtrace.layout import Layout
from vmsim.memtrace.records import KIND_INSTR, KIND_LOAD, KIND_MODIFY, KIND_STORE, TraceChunk
from vmsim.memtrace.reference import run_reference

PAGE = 4096
BASE = 0x10000000
L1D_SETS = 16  # TlbConfig(): L1 dTLB 64 entries, 4-way; a stride of 16 pages shares a set
REGION = 96 * PAGE
_CODE = {1 << 12: 0, 1 << 21: 1, 1 << 30: 2}

Entry = tuple[int, int, int]  # (key, first pfn, rights as the engine's int64)


# A shared writable mapping: a read fault maps its page writable but clean (RW set, D clear),
# so a store through that TLB entry is no hit: the CPU must set D (INVLPG, a re-walk).
SHARED_MAPS = f"{BASE:x}-{BASE + REGION:x} rw-s 00000000 00:01 1234 /dev/shm/hitpath\n"


def _layout(regions: tuple[tuple[int, int], ...] | str) -> Layout:
    if isinstance(regions, str):
        return Layout.from_maps(regions)
    return Layout.of_regions(regions or ((BASE, BASE + REGION),))


def _run(
    trace: list[TraceChunk], page_size: str, regions: tuple[tuple[int, int], ...] | str
) -> Any:
    cfg = EngineConfig.of(SKYLAKE, page_size=page_size)
    eng = FastEngine(Model(_layout(regions), cfg))
    for c in trace:
        eng.run_chunk(c)
    eng.finish()
    ref = run_reference(trace, _layout(regions), cfg)
    return eng, ref


def _fast_tlb(eng: FastEngine) -> dict[str, list[list[list[Entry]]]]:
    """The engine's TLB arrays as the model's contents(): structure, array, set, LRU first."""
    out: dict[str, list[list[list[Entry]]]] = {"l1d": [], "l1i": [], "stlb": []}
    tlb = eng.model.cfg.tlb
    a = 0
    for name, arrays in zip(out, (tlb.l1d, tlb.l1i, tlb.stlb), strict=True):
        for _ in arrays:
            first, sets, ways = (int(x) for x in eng.arr[a])
            rows = []
            for s in range(sets):
                slots = range(first + s * ways, first + (s + 1) * ways)
                used = sorted((int(eng.tstamp[w]), w) for w in slots if eng.tkey[w] != -1)
                if name == "stlb":
                    # its recency list: every way once, the used ones most recent first
                    # (the stamps' order), then the empty ones
                    order = [slots[0] + int(eng.tord[w]) for w in slots]
                    assert sorted(order) == list(slots)
                    assert order[: len(used)] == [w for _, w in reversed(used)]
                rows.append(
                    [(int(eng.tkey[w]), int(eng.tpfn[w]), int(eng.tperm[w])) for _, w in used]
                )
            out[name].append(rows)
            a += 1
    return out


def _ref_tlb(proc: Any) -> dict[str, list[list[list[Entry]]]]:
    def entry(e: Any) -> Entry:
        code = _CODE[e.page_size]
        tag = 4096 if e.global_ else e.pcid
        key = ((e.vbase >> (12 + 9 * code)) << 15) | (code << 13) | tag
        perms = e.perms - (1 << 64) if e.perms >> 63 else e.perms
        return key, e.pfn, perms

    contents = proc.machine.memory.cpu.tlb.contents()
    return {
        name: [[[entry(e) for e in s] for s in sets] for sets in arrays]
        for name, arrays in contents.items()
    }


def _check(
    addrs: list[int],
    kinds: list[int],
    page_size: str = "4K",
    regions: tuple[tuple[int, int], ...] | str = (),
) -> Any:
    trace = [chunk(addrs, kinds)]
    eng, ref = _run(trace, page_size, regions)
    assert diff(eng.counters(), ref.counters) == {}
    assert _fast_tlb(eng) == _ref_tlb(ref.process)
    assert page_tables(eng.model.proc) == page_tables(ref.process)
    return eng.counters()


def _page(i: int) -> int:
    """Page ``i`` of 24 in 4 L1 dTLB sets, 6 pages per 4-way set: set ``i % 4``."""
    return BASE + ((i // 4) * L1D_SETS + i % 4) * PAGE


def test_memo_entry_evicted_from_its_set_then_hit_again() -> None:
    # Pages 0, 4, 8, 12, 16 share L1 dTLB set 0 (4 ways). Warm all five with stores (page 0
    # is evicted by page 16), then: page 16 again and again (the memo: no probe, no recency
    # change), page 0 (an L1 miss, an STLB hit refilling the L1 and evicting page 4, the LRU),
    # page 16 (no longer the most recent: a probe hit that must make it so again), page 4
    # (STLB hit evicting page 8, not page 16).
    warm = [_page(i) for i in (0, 4, 8, 12, 16)]
    seq = [_page(16) + 8 * j for j in range(5)] + [_page(0), _page(16), _page(4), _page(16)]
    kinds = [KIND_STORE] * len(warm) + [KIND_LOAD] * len(seq)
    c = _check(warm + seq, kinds)
    # 5 warm walks; then 5 memo hits, STLB (page 0), L1 (16), STLB (page 4), L1 (16)
    assert (c.walks, c.stlb_hits, c.l1_hits) == (5, 2, 7)


def test_store_to_a_clean_memo_entry_leaves_the_hit_path() -> None:
    # A load fills the L1 with a clean entry (D clear; the zero page, read-only, on a fresh
    # anonymous page); the memo then holds it. A store to it must not be a hit: INVLPG, a COW
    # fault, a walk, a dirty entry; the next stores are memo hits on the new entry.
    p = _page(1)
    addrs = [p, p + 8, p + 16, p + 24, p + 32]
    kinds = [KIND_LOAD, KIND_LOAD, KIND_STORE, KIND_STORE, KIND_MODIFY]
    c = _check(addrs, kinds)
    assert c.faults == 2  # the read (zero page), then the write (COW)
    assert c.l1_hits == 3  # the second load and the last two stores


def test_store_through_a_writable_clean_entry_leaves_the_hit_path() -> None:
    # A shared writable page read first: its TLB entry is writable but clean. The store
    # after the memo'd loads must take the CPU's D-bit path: INVLPG and a re-walk that sets
    # D (no fault); only then are stores hits.
    p = _page(3)
    addrs = [p, p + 8, p + 16, p + 24, p + 32, p + 40]
    kinds = [KIND_LOAD, KIND_LOAD, KIND_STORE, KIND_STORE, KIND_LOAD, KIND_MODIFY]
    c = _check(addrs, kinds, regions=SHARED_MAPS)
    assert (c.faults, c.walks, c.tlb_flushes, c.l1_hits) == (1, 2, 2, 4)


def test_fetches_and_loads_of_one_page_keep_one_memo_each() -> None:
    # The iTLB and the dTLB each keep their own memo. The fetches fault first (the layout's
    # anonymous region is not executable: the layout is extended, as for any trace).
    p = _page(2)
    addrs = [p, p + 64, p + 128, p + 192] * 6
    kinds = [KIND_STORE, KIND_INSTR, KIND_LOAD, KIND_INSTR] * 6
    _check(addrs, kinds)


def test_two_mib_pages_count_each_touched_4k_page_once() -> None:
    # One 2 MiB TLB entry (the memo) serves 4 KiB pages not yet counted as touched: each
    # such record leaves the hit path once, to count its page.
    base = 0x40000000
    region = ((base, base + (8 << 20)),)
    rng = np.random.default_rng(7)
    addrs = (base + rng.integers(0, 6, 3000) * PAGE + rng.integers(0, PAGE, 3000)).tolist()
    kinds = rng.integers(1, 4, 3000).tolist()
    c = _check([base, *addrs], [KIND_STORE, *kinds], "2M", region)
    assert c.by_page_size == {"2M": 3001}
    assert c.touched_pages == 6


STLB_SETS = 128  # TlbConfig(): STLB 1536 entries, 12-way; a stride of 128 pages shares a set


def test_stlb_recency_with_hits_evictions_and_invalidations() -> None:
    # 16 pages in one STLB set (12 ways) and one L1 dTLB set (4 ways: 128 % 16 == 0): most
    # records miss the L1 and hit the STLB (each hit makes its entry the set's most recent),
    # the rest walk and evict the STLB set's LRU entry; a store to a page mapped read-only
    # (its first access a load: the zero page) removes its entries (INVLPG) before the walk.
    # Which entry an eviction takes depends on the set's whole recency order.
    stride = STLB_SETS * PAGE
    region = ((BASE, BASE + 16 * stride),)
    rng = np.random.default_rng(12)
    hot = rng.integers(0, 13, 4000)  # 13 pages: one more than the set holds
    cold = rng.integers(0, 16, 4000)
    pages = np.where(rng.random(4000) < 0.9, hot, cold)
    addrs = (BASE + pages * stride + rng.integers(0, PAGE, 4000)).tolist()
    kinds = np.where(rng.random(4000) < 0.05, KIND_STORE, KIND_LOAD).tolist()
    c = _check(addrs, kinds, "4K", region)
    assert c.stlb_hits > 2000 and c.walks > 500 and c.tlb_flushes > 0


_records = st.lists(
    st.tuples(st.integers(0, 23), st.integers(0, PAGE - 1), st.integers(0, 3), st.booleans()),
    min_size=1,
    max_size=250,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(_records)
def test_engines_agree_on_set_colliding_traces(records: list[tuple[int, int, int, bool]]) -> None:
    # 24 pages in 4 L1 dTLB sets (6 per 4-way set): evictions in every set; the flag repeats
    # the previous record's page (a memo hit when the kind's structure answered last). The
    # pages are faulted in first (stored to, fetched from), so that the records are mostly
    # TLB hits: the hit path's regime.
    addrs = [_page(i) for i in range(24)] * 2
    kinds = [KIND_STORE] * 24 + [KIND_INSTR] * 24
    for page, off, kind, again in records:
        base = addrs[-1] & ~(PAGE - 1) if again and addrs else _page(page)
        addrs.append(base + off)
        kinds.append(kind)
    _check(addrs, kinds)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_records)
def test_engines_agree_on_a_shared_writable_mapping(
    records: list[tuple[int, int, int, bool]],
) -> None:
    # the same shapes over a shared mapping, its pages read first: writable clean entries
    addrs = [_page(i) for i in range(24)]
    kinds = [KIND_LOAD] * 24
    for page, off, kind, again in records:
        base = addrs[-1] & ~(PAGE - 1) if again and addrs else _page(page)
        addrs.append(base + off)
        kinds.append(kind)
    _check(addrs, kinds, regions=SHARED_MAPS)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(_records, st.sampled_from(["2M", "thp"]))
def test_engines_agree_on_large_page_traces(
    records: list[tuple[int, int, int, bool]], page_size: str
) -> None:
    # the same shapes over 2 MiB pages: 24 4 KiB pages spread over 3 of them
    base = 0x40000000
    region = ((base, base + (8 << 20)),)
    addrs: list[int] = []
    kinds: list[int] = []
    for page, off, kind, again in records:
        va = addrs[-1] & ~(PAGE - 1) if again and addrs else base + (page % 3 << 21) + page * PAGE
        addrs.append(va + off)
        kinds.append(kind)
    _check(addrs, kinds, page_size, region)


def test_stlb_recency_list_after_a_pcid_flush() -> None:
    # A flush of one PCID leaves the other PCID's entries in their order; the STLB set's
    # recency list must then name them first, most recent (largest stamp) first, then the
    # empty ways. Set 5 of the 4 KiB STLB array, filled by hand: PCID 1 in ways 2, 7, 9
    # (stamps 30, 10, 20), PCID 2 in ways 4, 11 (stamps 40, 5).
    from vmsim.memtrace import _core as core

    eng = FastEngine(Model(_layout(()), EngineConfig.of(SKYLAKE)))
    a = int(eng.probe[core.S_STLB, 0])
    first, sets, ways = (int(x) for x in eng.arr[a])
    assert (sets, ways) == (STLB_SETS, 12)
    b = first + 5 * ways
    for k, (way, pcid, stamp) in enumerate(
        [(2, 1, 30), (7, 1, 10), (9, 1, 20), (4, 2, 40), (11, 2, 5)]
    ):
        eng.tkey[b + way] = ((5 + STLB_SETS * k) << 15) | pcid
        eng.tstamp[b + way] = stamp
    core.tlb_flush(eng.tkey, eng.tstamp, eng.tord, eng.arr, eng.probe, 1)
    order = eng.tord[b : b + ways].tolist()
    assert order[:2] == [4, 11]
    assert sorted(order[2:]) == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    core.tlb_flush(eng.tkey, eng.tstamp, eng.tord, eng.arr, eng.probe, -2)  # everything
    assert sorted(eng.tord[b : b + ways].tolist()) == list(range(12))
    assert (eng.tkey[b : b + ways] == -1).all()
